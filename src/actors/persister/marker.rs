//! A batch's marker (PostgreSQL): the id each batch commits with, when old markers go, and the
//! question the loop asks when a commit's outcome is unknown.
//!
//! New rows are plain `INSERT`s, so a batch must never be sent again once it may have
//! committed, and an answer of "unavailable" to a batch that did commit would tell a buyer
//! their paid order failed. When the connection is lost during `COMMIT` (or the commit times
//! out), the loop asks the store whether the batch's marker is there
//! ([`Store::batch_committed`], which waits for the batch's transaction if it is still
//! running), and acknowledges the batch if it is; only a batch known not to have committed, or
//! whose question found no answer either, takes the failure protocol.

use super::Shared;
use crate::domain::Timestamp;
use crate::store::{BatchMarker, Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One batch in this many trims the markers written more than [`KEPT_FOR`] ago.
pub(super) const TRIM_EVERY: u64 = 1024;
/// How long a marker is kept: far past the longest a question can come after its batch was
/// formed ([`super::COMMIT_TIMEOUT`] in flight, then [`ASK_TIMEOUT`]).
pub(super) const KEPT_FOR: Duration = Duration::from_secs(60);
/// How long the question may wait (for the batch's own transaction to end, or for a
/// connection): past it the outcome stays unknown and the failure protocol takes the batch.
pub(super) const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Marker ids: a random base per process, then a counter, so that ids never repeat across
/// restarts and nodes (two processes share a range with odds of about 2⁻³⁰ per billion
/// batches).
pub(super) struct Markers {
    base: i64,
    next: AtomicU64,
}

impl Markers {
    pub(super) fn new() -> Markers {
        // Below 2⁶²: a counter added to it cannot overflow i64 in any process's life.
        let base = (rand::random::<u64>() >> 2) as i64;
        Markers {
            base,
            next: AtomicU64::new(0),
        }
    }

    /// The next batch's marker; every [`TRIM_EVERY`]th also trims the old ones.
    pub(super) fn next(&self) -> BatchMarker {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let at = Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
        BatchMarker {
            id: self.base.saturating_add(n as i64),
            at,
            trim_before: (n % TRIM_EVERY == TRIM_EVERY - 1).then(|| {
                Timestamp::from_millis(at.millis().saturating_sub(KEPT_FOR.as_millis() as i64))
            }),
        }
    }
}

/// Whether the batch of `marker` committed: `Some(answer)`, or `None` when the question itself
/// failed or timed out (the outcome stays unknown).
pub(super) async fn committed(shared: &Shared, store: &Store, marker: BatchMarker) -> Option<bool> {
    let answer = match tokio::time::timeout(ASK_TIMEOUT, store.batch_committed(marker)).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(error)) => {
            tracing::error!(error = ?error, "could not ask whether a batch committed");
            None
        }
        Err(_) => {
            tracing::error!("asking whether a batch committed timed out");
            None
        }
    };
    let outcome = match answer {
        Some(true) => "committed",
        Some(false) => "not_committed",
        None => "unknown",
    };
    metrics::counter!("boxoffice_persister_uncertain_commits_total", "outcome" => outcome)
        .increment(1);
    shared
        .stats
        .uncertain_commits
        .fetch_add(1, Ordering::Relaxed);
    answer
}

/// Whether `error`, from a batch's commit, leaves its outcome unknown: the connection was
/// lost or failed while the commit may have reached the database. A refusal by the database
/// (a constraint, a value, the fence) says the batch did not commit.
pub(super) fn outcome_unknown(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::Database(_)) => false,
        StoreError::Database(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
