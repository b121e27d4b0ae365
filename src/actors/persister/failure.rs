//! The failure protocol of the module doc: a batch the database did not commit fails with
//! everything queued behind it, its actors marked stale and asked to rebuild; a batch whose
//! *content* the database refused is bisected instead, so only the offender is refused.

use super::batch::record;
use super::pipeline::{roll_back, Back, Front};
use super::unavailable::{fail, mark_stale};
use super::{ActorKey, Shared, Submission, Unavailable};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// Submissions to commit again, and the sequence number they resolve up to.
pub(super) struct Retry {
    pub(super) submissions: Vec<Submission>,
    pub(super) last_seq: u64,
}

/// The front failed or timed out: it, the back and everything queued are answered unavailable
/// (the failure protocol), then the back is rolled back before anything new is sent, so no
/// later batch can meet its uncommitted rows.
pub(super) async fn fail_front(shared: &Shared, failed: Front, back: Option<Back>) {
    record(shared, &failed.batch);
    shared.healthy.store(false, Ordering::Relaxed);
    shared.stats.failures.fetch_add(1, Ordering::Relaxed);
    let mut submissions = failed.batch.submissions;
    let behind = back.map(|back| {
        submissions.extend(back.batch.submissions);
        back.state
    });
    // Its work is dropped here: a timed-out commit is abandoned, as it always was; the rebuild
    // reads whatever the database kept.
    drop(failed.state);
    fail(shared, submissions);
    if let Some(state) = behind {
        roll_back(state).await;
    }
}

/// The batch behind a front that is being retried in parts: rolled back, and queued to be
/// committed again after them (pushed first, so the parts pushed after it go ahead of it).
pub(super) async fn requeue_behind(back: Option<Back>, retry: &mut VecDeque<Retry>) {
    if let Some(back) = back {
        roll_back(back.state).await;
        retry.push_front(Retry {
            submissions: back.batch.submissions,
            last_seq: back.batch.last_seq,
        });
    }
}

/// The front's content was refused (a constraint, a value): nothing of it was written, and
/// the database says nothing about which submission was at fault. Bisect: the halves go back
/// as batches of their own, ahead of anything newer, until the offender is alone; only it is
/// refused, and only its actors rebuild. The innocent commit a few round trips late (about
/// two per halving) instead of being answered 503 with it. The back, rolled back, follows.
pub(super) async fn isolate(
    shared: &Shared,
    failed: Front,
    back: Option<Back>,
    retry: &mut VecDeque<Retry>,
) {
    record(shared, &failed.batch);
    drop(failed.state);
    requeue_behind(back, retry).await;
    let mut suspects = failed.batch.submissions;
    let last_seq = failed.batch.last_seq;
    if suspects.len() <= 1 {
        if let Some(offender) = suspects.pop() {
            tracing::warn!(seq = offender.seq, "one submission refused by the database");
            refuse_alone(shared, vec![offender], Unavailable::CommitFailed, false);
        }
        shared.resolved_seq.fetch_max(last_seq, Ordering::AcqRel);
        return;
    }
    let second = suspects.split_off(suspects.len() / 2);
    let first_last = suspects.last().map_or(0, |s| s.seq);
    // The halves keep the batch's order (first before second, both before the back): the
    // retries commit in sequence order, as the batch would have.
    debug_assert!(
        second.first().is_some_and(|s| s.seq > first_last),
        "the second half follows the first"
    );
    retry.push_front(Retry {
        submissions: second,
        last_seq,
    });
    retry.push_front(Retry {
        submissions: suspects,
        last_seq: first_last,
    });
}

/// Refuses `refused` alone (nothing queued behind them is touched): their actors are marked
/// stale so nothing further built on them commits, and handed to the rebuild hook, or to the
/// fenced hook when the state moved to another node.
pub(super) fn refuse_alone(
    shared: &Shared,
    refused: Vec<Submission>,
    why: Unavailable,
    fenced: bool,
) {
    let mut actors: Vec<(ActorKey, u64)> = Vec::new();
    for s in &refused {
        mark_stale(shared, &s.deps, &mut actors);
    }
    if let Some(last) = refused.iter().map(|s| s.seq).max() {
        shared.resolved_seq.fetch_max(last, Ordering::AcqRel);
    }
    for s in refused {
        if let Some(done) = s.done {
            done(Err(why));
        }
    }
    // Refused by the fence: the actors of shards gone to another node are dropped; those of
    // shards this node still holds (a payment refused for its claim on another node's
    // schedule debited a wallet held here) rebuild, as after any failed commit.
    let (gone, kept) = match (fenced, shared.fence.get()) {
        (true, Some(fence)) => fence.split_gone(actors),
        _ => (Vec::new(), actors),
    };
    if let (Some(hook), false) = (
        shared.fenced.get().or(shared.rebuild.get()),
        gone.is_empty(),
    ) {
        hook(gone);
    }
    if let (Some(hook), false) = (shared.rebuild.get(), kept.is_empty()) {
        hook(kept);
    }
}

#[cfg(test)]
mod tests;
