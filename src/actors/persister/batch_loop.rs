//! The commit loop: one task that takes queued submissions as batches, keeps at most a front
//! and a back in flight ([`super::pipeline`]), acknowledges what commits in order, and hands
//! what fails to the failure protocol ([`super::failure`], [`super::fencing`]).

use super::batch::{acknowledged_seq, record, Batch};
use super::failure::{fail_front, isolate, Retry};
use super::fencing::{fence_out, Claims};
use super::marker::{committed, outcome_unknown};
use super::pipeline::{next_event, promote, send, stage_behind, Back, BackState, Event, Front};
use super::{lock, Shared, Submission, Unavailable, MAX_BATCH};
use crate::store::{Staged, Store, StoreError, Writes};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an idle persister checks the database after a failed commit.
pub(super) const HEALTH_PROBE_EVERY: Duration = Duration::from_millis(500);

/// The loop's state between two turns: what is in flight, and what is to be sent again.
struct CommitLoop {
    shared: Arc<Shared>,
    store: Arc<Store>,
    front: Option<Front>,
    back: Option<Back>,
    /// Submissions of a refused batch, to be committed again without the offender before
    /// anything newer (see `isolate`): one group per batch, in order.
    retry: VecDeque<Retry>,
}

/// Runs until the persister is closed and everything it took has an outcome.
pub(super) async fn commit_loop(shared: Arc<Shared>, store: Arc<Store>) {
    let mut state = CommitLoop {
        shared,
        store,
        front: None,
        back: None,
        retry: VecDeque::new(),
    };
    while state.turn().await {}
    tracing::info!("persister drained");
}

impl CommitLoop {
    /// One step of the loop; `false` once it is drained.
    async fn turn(&mut self) -> bool {
        let Some(current) = self.front.as_mut() else {
            return self.start_front().await;
        };
        if self.back.is_none() && self.retry.is_empty() && current.statements_done() {
            if let Some(batch) = take_batch(&self.shared) {
                let ahead = current.batch.writes.clone();
                self.back = Some(stage_behind(&self.shared, &self.store, batch, &ahead));
            }
        }
        let event = next_event(current, &mut self.back, &self.shared).await;
        self.on_event(event).await;
        true
    }

    /// Nothing in flight (a back always moves up when its front resolves): a group to retry
    /// goes first, then whatever is queued. `false` once closed and drained.
    async fn start_front(&mut self) -> bool {
        if let Some(group) = self.retry.pop_front() {
            let batch = batch_of(&self.shared, group.submissions, group.last_seq);
            self.send_or_acknowledge(batch, false);
            return true;
        }
        let Some((batch, waited)) = next_when_idle(&self.shared, &self.store).await else {
            return !finished(&self.shared);
        };
        // A batch that was already waiting means load: staged, so the next one can be staged
        // behind it while it commits. One that had to be waited for takes the fast path
        // (docs/BENCHMARKS.md): nothing else is in flight to overlap with it.
        let staged = !waited && self.shared.pipeline && self.store.pipelines();
        self.send_or_acknowledge(batch, staged);
        true
    }

    /// Sends `batch` as the front; one with no rows (a flush, or every submission answered
    /// while it was formed) has nothing to commit and is acknowledged at once.
    fn send_or_acknowledge(&mut self, batch: Batch, staged: bool) {
        if batch.writes.is_empty() {
            record(&self.shared, &batch);
            acknowledge(&self.shared, batch);
        } else {
            self.front = Some(send(&self.shared, &self.store, batch, staged));
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::FrontStaged(Ok(staged)) => self.front_staged(staged),
            Event::FrontDone(Ok(())) => self.front_committed(),
            Event::FrontStaged(Err(error)) | Event::FrontDone(Err(error)) => {
                self.front_failed(error).await;
            }
            Event::FrontTimedOut => {
                let failed = self.take_front();
                tracing::error!(rows = failed.batch.writes.len(), "batch commit timed out");
                // Dropped unfinished, its transaction may still commit: its marker decides.
                self.resolve_unknown(failed).await;
            }
            Event::BackStaged(result) => self.back_staged(result),
            Event::Woken => {}
        }
    }

    fn take_front(&mut self) -> Front {
        self.front
            .take()
            .expect("a front event: next_event only reports on a front in flight")
    }

    /// The front's statements are done: its `COMMIT` goes.
    fn front_staged(&mut self, staged: Staged) {
        self.front
            .as_mut()
            .expect("a front event: next_event only reports on a front in flight")
            .commit(staged);
    }

    /// The front committed: it is acknowledged, and the back moves up.
    fn front_committed(&mut self) {
        let done = self.take_front();
        record(&self.shared, &done.batch);
        acknowledge(&self.shared, done.batch);
        if let Some(next) = self.back.take() {
            self.front = promote(&self.shared, &self.store, next);
        }
    }

    /// The front was not committed: refused by the fence, refused for its content, or lost.
    async fn front_failed(&mut self, error: StoreError) {
        let failed = self.take_front();
        let (shared, back) = (&*self.shared, self.back.take());
        if let StoreError::Fenced(stale) = &error {
            tracing::warn!(
                ?stale,
                "fenced: a shard moved; refusing what was decided under it"
            );
            fence_out(shared, failed, back, stale, &mut self.retry).await;
        } else if error.is_refusal_of_content() {
            tracing::warn!(error = ?error, submissions = failed.batch.submissions.len(), "the database refused a batch's content; isolating the offender");
            isolate(shared, failed, back, &mut self.retry).await;
        } else {
            tracing::error!(error = ?error, rows = failed.batch.writes.len(), "batch commit failed");
            if outcome_unknown(&error) {
                self.back = back;
                self.resolve_unknown(failed).await;
            } else {
                fail_front(shared, failed, back).await;
            }
        }
    }

    /// The front's outcome is unknown (its connection was lost or its commit timed out): its
    /// marker says whether it committed. Committed, it is acknowledged and the back moves up as
    /// after any commit (the back's own connection may have been lost too; then its commit
    /// fails and takes this same path). Not committed, or no answer, the failure protocol.
    async fn resolve_unknown(&mut self, failed: Front) {
        let answer = match failed.batch.writes.marker {
            Some(marker) => committed(&self.shared, &self.store, marker).await,
            None => None,
        };
        if answer == Some(true) {
            tracing::warn!(
                submissions = failed.batch.submissions.len(),
                "a commit whose answer was lost had committed: acknowledged"
            );
            self.front = Some(failed);
            self.front_committed();
        } else {
            fail_front(&self.shared, failed, self.back.take()).await;
        }
    }

    /// The back's statements are done, or failed (it fails once the front has an outcome).
    fn back_staged(&mut self, result: Result<Staged, StoreError>) {
        let behind = self
            .back
            .as_mut()
            .expect("a back event: next_event polls the back only while it is staging");
        behind.state = match result {
            Ok(staged) => BackState::Staged(staged),
            Err(error) => {
                tracing::error!(error = ?error, rows = behind.batch.writes.len(), "staging a batch failed");
                BackState::Failed
            }
        };
    }
}

/// With nothing in flight: the queued submissions as a batch, and whether the loop had to wait
/// for them; `None` when it woke to nothing (a health probe, a close).
async fn next_when_idle(shared: &Shared, store: &Store) -> Option<(Batch, bool)> {
    if let Some(batch) = take_batch(shared) {
        return Some((batch, false));
    }
    if finished(shared) {
        return None;
    }
    if shared.healthy.load(Ordering::Relaxed) {
        shared.wake.notified().await;
    } else if tokio::time::timeout(HEALTH_PROBE_EVERY, shared.wake.notified())
        .await
        .is_err()
    {
        // Idle after a failure: find out by ourselves when the database is back, so
        // readiness recovers without waiting for traffic.
        if let Ok(Ok(())) = tokio::time::timeout(HEALTH_PROBE_EVERY, store.ping()).await {
            tracing::info!("database reachable again");
            shared.healthy.store(true, Ordering::Relaxed);
        }
        return None;
    }
    take_batch(shared).map(|batch| (batch, true))
}

/// Closed, nothing queued and no permit left that could still submit.
fn finished(shared: &Shared) -> bool {
    let pending = lock(shared);
    pending.queue.is_empty() && pending.closed && pending.reserved == 0
}

/// Up to [`MAX_BATCH`] queued submissions as a batch; `None` if none is queued.
fn take_batch(shared: &Shared) -> Option<Batch> {
    let taken: Vec<Submission> = {
        let mut pending = lock(shared);
        let n = pending.queue.len().min(MAX_BATCH);
        pending.queue.drain(..n).collect()
    };
    let last_seq = taken.last()?.seq;
    Some(batch_of(shared, taken, last_seq))
}

/// `taken` as one batch: their rows merged in order and their claims collected. A submission
/// built on state a refusal has undone since it was queued (its actor is stale) is answered
/// now instead. The batch may end up with no submission; it still resolves up to `last_seq`.
fn batch_of(shared: &Shared, taken: Vec<Submission>, last_seq: u64) -> Batch {
    // Rows are merged in this order and the batch resolves everything up to `last_seq`: a
    // submission out of order would be overwritten by an older one, or answered too early.
    debug_assert!(
        taken.windows(2).all(|pair| pair[0].seq < pair[1].seq)
            && taken.last().is_none_or(|s| s.seq <= last_seq),
        "a batch's sequence numbers strictly increase, up to its last"
    );
    let fence = shared.fence.get();
    let mut writes = Writes {
        marker: shared.markers.as_ref().map(|m| m.next()),
        ..Writes::default()
    };
    let mut claims = Claims::default();
    let mut submissions = Vec::with_capacity(taken.len());
    for s in taken {
        if s.deps.iter().any(|dep| shared.refuses(*dep)) {
            if let Some(done) = s.done {
                done(Err(Unavailable::Rebuilding));
            }
            continue;
        }
        // A clone, not a move: the submission's own rows are what a retry is rebuilt from.
        writes.merge(s.writes.clone());
        if let Some(fence) = fence {
            fence.claim(&s, &mut claims);
        }
        submissions.push(s);
    }
    Batch {
        submissions,
        writes: Arc::new(writes),
        fences: claims.fences,
        last_seq,
        started: Instant::now(),
    }
}

/// A committed batch: every submission in it is durable, answered Ok in order.
fn acknowledge(shared: &Shared, batch: Batch) {
    // Batches commit in order, and a submission is answered once: one acknowledged at or below
    // the last would have committed out of order (its rows under a newer batch's) or twice.
    // One comparison a batch; what it guards is data loss.
    if let (Some(first), Some(last)) = (batch.submissions.first(), batch.submissions.last()) {
        assert!(
            first.seq > acknowledged_seq(shared),
            "acknowledged sequence numbers strictly increase"
        );
        shared.acknowledged_seq.store(last.seq, Ordering::Relaxed);
    }
    shared.healthy.store(true, Ordering::Relaxed);
    shared
        .resolved_seq
        .fetch_max(batch.last_seq, Ordering::AcqRel);
    for s in batch.submissions {
        if let Some(done) = s.done {
            done(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rig::*;
    use super::super::*;
    use super::HEALTH_PROBE_EVERY;
    use std::time::Instant;

    /// With no traffic after a failure, the persister probes the store by itself, so readiness
    /// recovers without waiting for a request to commit.
    #[tokio::test]
    async fn an_idle_persister_finds_a_recovered_store_by_itself() {
        let mut rig = Rig::start(16).await;
        rig.fail_a_batch(&[&[(schedule(1), 0)]]).await;
        assert!(!rig.persister.is_healthy());
        // The memory store answers pings while its commits fail: the first probe succeeds.
        let deadline = Instant::now() + HEALTH_PROBE_EVERY * 10;
        while !rig.persister.is_healthy() {
            assert!(Instant::now() < deadline, "no probe found the store again");
            tokio::time::sleep(HEALTH_PROBE_EVERY / 5).await;
        }
        rig.stop().await;
    }

    /// Batches are answered in sequence order, each submission once: the high-water mark the
    /// commit loop's assertions hold every batch to follows the last one acknowledged.
    #[tokio::test]
    async fn acknowledged_sequence_numbers_strictly_increase() {
        let mut rig = Rig::start(16).await;
        let first = rig.submit(&[(schedule(1), 0)], 1);
        let second = rig.submit(&[(schedule(2), 0)], 2);
        assert!(first < second);
        assert_eq!(rig.answers(2).await, vec![Ok(()), Ok(())]);
        assert_eq!(acknowledged_seq_of(&rig.persister), second);
        let third = rig.submit(&[(schedule(1), 0)], 3);
        assert_eq!(rig.answers(1).await, vec![Ok(())]);
        assert_eq!(acknowledged_seq_of(&rig.persister), third);
        rig.stop().await;
    }

    fn acknowledged_seq_of(persister: &Persister) -> u64 {
        super::acknowledged_seq(&persister.shared)
    }
}
