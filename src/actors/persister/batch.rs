//! A batch: the submissions taken from the queue together and their merged rows, and what is
//! recorded when one has an outcome. Below the loop, the pipeline and the failure protocol,
//! which all pass batches around.

use super::{Shared, Submission};
use crate::store::{Fence, Writes};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Submissions taken from the queue together, and their rows merged.
pub(super) struct Batch {
    pub(super) submissions: Vec<Submission>,
    pub(super) writes: Arc<Writes>,
    /// The ownership claims its submissions were decided under (cluster mode; else empty).
    pub(super) fences: Vec<Fence>,
    /// Every submission up to this one has an outcome once this batch has: it may be past the
    /// last of `submissions` (some were answered while the batch was formed).
    pub(super) last_seq: u64,
    /// When its first statement was sent.
    pub(super) started: Instant,
}

/// The highest sequence number answered Ok so far.
pub(super) fn acknowledged_seq(shared: &Shared) -> u64 {
    shared.acknowledged_seq.load(Ordering::Relaxed)
}

/// A batch has an outcome from the database: its size, rows and commit time, for metrics and
/// benchmarks.
pub(super) fn record(shared: &Shared, batch: &Batch) {
    let elapsed = batch.started.elapsed();
    metrics::histogram!("boxoffice_persister_batch_submissions")
        .record(batch.submissions.len() as f64);
    metrics::histogram!("boxoffice_persister_batch_rows").record(batch.writes.len() as f64);
    metrics::histogram!("boxoffice_persister_commit_seconds").record(elapsed.as_secs_f64());
    let stats = &shared.stats;
    stats.commit_latency.record(elapsed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats
        .submissions
        .fetch_add(batch.submissions.len() as u64, Ordering::Relaxed);
    stats
        .rows
        .fetch_add(batch.writes.len() as u64, Ordering::Relaxed);
    stats
        .commit_micros
        .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
}
