//! The staged pipeline (`--pipeline-commits`): the front batch committing and the back batch
//! staged behind it, how each is sent, and what the loop waits for while they are in flight.

use super::batch::{acknowledged_seq, record, Batch};
use super::unavailable::fail;
use super::{Shared, COMMIT_TIMEOUT};
use crate::store::{Staged, Store, StoreError, Writes};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Batches in flight at once: the oldest one committing and the next one's statements sent
/// behind it (see the module doc). The loop keeps exactly a front and a back; a deeper pipeline
/// would hold row locks longer for a gain the one `COMMIT` it hides already bounds.
pub const MAX_IN_FLIGHT: usize = 2;
const _: () = assert!(
    MAX_IN_FLIGHT == 2,
    "the commit loop keeps a front and a back batch"
);

/// A batch's database work, boxed so the loop can keep it across its waits.
type DbWork<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The oldest batch in flight: its outcome decides the fate of everything behind it.
pub(super) struct Front {
    pub(super) batch: Batch,
    pub(super) state: FrontState,
    /// [`COMMIT_TIMEOUT`] from when it became the front: time spent behind another batch, whose
    /// own deadline bounds it, does not count against it.
    deadline: tokio::time::Instant,
}

pub(super) enum FrontState {
    /// `BEGIN` and its statements on their way; its `COMMIT` goes as soon as they are done.
    Staging(DbWork<Staged>),
    /// Its outcome on its way: the `COMMIT` of a staged batch (`statements_done`), or the fast
    /// path (`Store::commit`: usually one autocommitted statement), whose statements the loop
    /// cannot see finish before its commit does.
    Committing {
        work: DbWork<()>,
        statements_done: bool,
    },
}

impl Front {
    /// Whether a batch may be staged behind this one: only once its statements have all run.
    pub(super) fn statements_done(&self) -> bool {
        matches!(
            self.state,
            FrontState::Committing {
                statements_done: true,
                ..
            }
        )
    }

    /// Its statements are done: its `COMMIT` goes now.
    pub(super) fn commit(&mut self, staged: Staged) {
        self.state = FrontState::Committing {
            work: Box::pin(staged.commit()),
            statements_done: true,
        };
    }
}

/// The batch behind the front, never committed before the front has.
pub(super) struct Back {
    pub(super) batch: Batch,
    pub(super) state: BackState,
}

pub(super) enum BackState {
    /// Taken from the queue, nothing sent: the store's rule keeps it from being staged behind
    /// an uncommitted batch (on PostgreSQL: it moves money). Sent when it becomes the front.
    Held,
    Staging(DbWork<Staged>),
    /// Statements done, transaction open, waiting for the front's outcome.
    Staged(Staged),
    /// Its statements failed (the store rolled it back). It is failed once the front has an
    /// outcome: failing it now would rebuild actors from a database the front may still change.
    Failed,
}

/// What the loop waited for.
pub(super) enum Event {
    FrontStaged(Result<Staged, StoreError>),
    FrontDone(Result<(), StoreError>),
    FrontTimedOut,
    BackStaged(Result<Staged, StoreError>),
    /// New submissions, with room for them behind the front.
    Woken,
}

/// Holds what every batch sent must satisfy: none of its submissions was acknowledged
/// already, and, fenced, each carries the epoch it was decided under.
fn check_sendable(shared: &Shared, batch: &Batch) {
    // Cheap, and the alternative is data loss: an acknowledged write sent again would land on
    // top of every newer one committed since (a wallet's balance set back).
    assert!(
        batch
            .submissions
            .first()
            .is_none_or(|s| s.seq > acknowledged_seq(shared)),
        "an acknowledged submission is never sent again"
    );
    match shared.fence.get() {
        // A claim missing from the batch's fences would let a write decided under a lost
        // epoch commit unchecked.
        Some(fence) => debug_assert!(
            fence.carries_its_epochs(batch),
            "a fenced write carries the epoch it was decided under"
        ),
        // A single node fences nothing (and so never takes the fenced commit).
        None => debug_assert!(batch.fences.is_empty(), "fences only in cluster mode"),
    }
}

/// Sends `batch` as the front: staged (its `COMMIT` follows its statements) or the fast path;
/// a fenced batch is always one transaction of its own, its claims checked inside it.
pub(super) fn send(shared: &Shared, store: &Arc<Store>, mut batch: Batch, staged: bool) -> Front {
    check_sendable(shared, &batch);
    batch.started = Instant::now();
    let (store, writes) = (store.clone(), batch.writes.clone());
    let fence = shared.fence.get().filter(|_| !batch.fences.is_empty());
    let state = if let Some(fence) = fence {
        let (node, fences) = (fence.node().to_string(), batch.fences.clone());
        FrontState::Committing {
            work: Box::pin(async move { store.commit_fenced(&writes, &node, &fences).await }),
            statements_done: false,
        }
    } else if staged {
        FrontState::Staging(Box::pin(async move { store.stage(writes).await }))
    } else {
        FrontState::Committing {
            work: Box::pin(async move { store.commit(&writes).await }),
            statements_done: false,
        }
    };
    Front {
        batch,
        state,
        deadline: tokio::time::Instant::now() + COMMIT_TIMEOUT,
    }
}

/// Stages `batch` behind a front (writing `ahead`) whose statements are done, if the store's
/// rule allows it.
pub(super) fn stage_behind(
    shared: &Shared,
    store: &Arc<Store>,
    mut batch: Batch,
    ahead: &Writes,
) -> Back {
    check_sendable(shared, &batch);
    if !batch.fences.is_empty() || !store.may_stage_behind(&batch.writes, ahead) {
        return Back {
            batch,
            state: BackState::Held,
        };
    }
    batch.started = Instant::now();
    shared.stats.staged_behind.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("boxoffice_persister_staged_behind_total").increment(1);
    let (store, writes) = (store.clone(), batch.writes.clone());
    Back {
        batch,
        state: BackState::Staging(Box::pin(async move { store.stage(writes).await })),
    }
}

/// The back becomes the front once the front committed; `None` if it had failed (it is failed
/// now, with everything queued behind it).
pub(super) fn promote(shared: &Shared, store: &Arc<Store>, back: Back) -> Option<Front> {
    let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
    let state = match back.state {
        BackState::Held => {
            return Some(send(
                shared,
                store,
                back.batch,
                shared.pipeline && store.pipelines(),
            ))
        }
        BackState::Staging(work) => FrontState::Staging(work),
        BackState::Staged(staged) => FrontState::Committing {
            work: Box::pin(staged.commit()),
            statements_done: true,
        },
        BackState::Failed => {
            record(shared, &back.batch);
            shared.healthy.store(false, Ordering::Relaxed);
            shared.stats.failures.fetch_add(1, Ordering::Relaxed);
            fail(shared, back.batch.submissions);
            return None;
        }
    };
    Some(Front {
        batch: back.batch,
        state,
        deadline,
    })
}

/// Waits for the next thing that moves the pipeline: the front's statements or outcome, its
/// deadline, the back's statements, or (with room behind a front whose statements are done)
/// new submissions.
pub(super) async fn next_event(
    front: &mut Front,
    back: &mut Option<Back>,
    shared: &Shared,
) -> Event {
    let deadline = front.deadline;
    let wants_work = back.is_none() && front.statements_done();
    let front_work = async {
        match &mut front.state {
            FrontState::Staging(work) => Event::FrontStaged(work.await),
            FrontState::Committing { work, .. } => Event::FrontDone(work.await),
        }
    };
    let back_staging = matches!(
        back,
        Some(Back {
            state: BackState::Staging(_),
            ..
        })
    );
    let back_work = async {
        match back {
            Some(Back {
                state: BackState::Staging(work),
                ..
            }) => work.await,
            // Not polled: the branch below is disabled unless the back is staging.
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        // The front first: its outcome is what everything else waits for.
        biased;
        event = front_work => event,
        () = tokio::time::sleep_until(deadline) => Event::FrontTimedOut,
        staged = back_work, if back_staging => Event::BackStaged(staged),
        () = shared.wake.notified(), if wants_work => Event::Woken,
    }
}

/// Rolls back a batch staged behind one that failed, whatever its statements did.
pub(super) async fn roll_back(state: BackState) {
    let staged = match state {
        BackState::Staging(work) => match tokio::time::timeout(COMMIT_TIMEOUT, work).await {
            Ok(Ok(staged)) => staged,
            // The store rolled a failed staging back itself.
            Ok(Err(_)) => return,
            Err(_) => {
                // Dropped unfinished: the transaction never sees a COMMIT, so the database
                // rolls it back when the connection goes.
                tracing::warn!("a batch staged behind a failed one did not finish in time");
                return;
            }
        },
        BackState::Staged(staged) => staged,
        BackState::Held | BackState::Failed => return,
    };
    match tokio::time::timeout(COMMIT_TIMEOUT, staged.rollback()).await {
        Ok(Ok(())) => {}
        // Not committed either way: a rollback that fails leaves the transaction to die with
        // its connection.
        Ok(Err(error)) => tracing::warn!(error = ?error, "rollback of a staged batch failed"),
        Err(_) => tracing::warn!("rollback of a staged batch timed out"),
    }
}

#[cfg(test)]
mod tests;
