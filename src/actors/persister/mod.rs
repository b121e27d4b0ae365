//! The persister: takes row writes from every actor, commits them in order in batches (one
//! transaction per batch), and only then completes the callers' replies.
//!
//! Pipeline. Under load at most [`MAX_IN_FLIGHT`] (two) batches are in flight: while batch N's
//! `COMMIT` is on its way, batch N+1 is taken from the queue and staged (`Store::stage`: its
//! statements sent in an open transaction on a second connection); N+1's `COMMIT` is sent only
//! once N's has returned, so batches commit in order. N+1 is staged only after N's statements
//! are all done, and only if the store says it may be (`Store::may_stage_behind`: on PostgreSQL,
//! not if it moves money; `store/postgres_writes.rs` argues why that is enough); otherwise it
//! waits for N's outcome with nothing sent. A batch that finds nothing in flight and had to be
//! waited for takes the fast path (`Store::commit`, usually one autocommitted statement). If N
//! fails, N+1 is rolled back, even if its statements succeeded, and the protocol below takes
//! both; if N commits and N+1 fails, N is acknowledged and N+1 is where the failure starts. A
//! failure is only acted on once nothing ahead of it is unresolved: a rebuild must read a
//! database no earlier batch will still change. [`COMMIT_TIMEOUT`] bounds each batch from when
//! it is the oldest in flight. SQLite and the memory store do not pipeline (one writer).
//!
//! Failure protocol. When a commit fails, every submission of that batch *and every one queued
//! behind it* is answered "unavailable" (they may build on the failed writes), and every actor
//! with a write among them is marked stale at its current generation: the persister refuses
//! anything further that actor built on the undone state until it has rebuilt itself from the
//! database under a new generation. No later decision outlives the change it was built on.
//!
//! The files, each one idea:
//! - this one: the handle ([`Persister`]), what a submission is, and the permit that queues it;
//! - `batch`: a batch of submissions and what is recorded when it has an outcome;
//! - `batch_loop`: the commit loop, one named step per turn, and how queued submissions
//!   become a batch;
//! - `pipeline`: the front and back batches in flight (`--pipeline-commits`);
//! - `failure`: the failure protocol, and the bisection that refuses one offender alone;
//! - `marker`: each batch's marker, and the question asked when a commit's outcome is unknown
//!   (a batch found committed is acknowledged, not failed);
//! - `unavailable`: answering submissions unavailable and marking their actors stale;
//! - `fencing`: cluster mode only (held shards, epochs packed into generations, the fence);
//!   a single node never builds its state nor takes its branches.

mod batch;
mod batch_loop;
mod failure;
mod fencing;
mod marker;
#[cfg(test)]
mod pg_rig;
mod pipeline;
#[cfg(test)]
mod rig;
mod unavailable;

pub use fencing::{epoch_of, generation_under, Fencing, EPOCH_SHIFT};
pub use pipeline::MAX_IN_FLIGHT;

use super::live_stats::LatencyHistogram;
use crate::domain::{ScheduleId, UserId};
use crate::store::Fence;
use crate::store::{Store, Writes};
use dashmap::DashMap;
use fencing::FenceState;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Submissions merged into one transaction at most: bounds transaction size and latency.
pub const MAX_BATCH: usize = 4096;
/// A commit that takes longer than this counts as failed (the database is unreachable); the
/// actors rebuild from whatever the database did keep, so an ambiguous commit stays consistent.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Who owns the state a write came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKey {
    Queue,
    Schedule(ScheduleId),
    Wallet(UserId),
}

/// A write (or a reply that depends on earlier writes) that will not be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the persister's queue is full")]
    Overloaded,
    #[error("state is being rebuilt after a failed commit")]
    Rebuilding,
    #[error("the database did not commit the batch")]
    CommitFailed,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("an actor's mailbox is full or it stopped")]
    Busy,
    /// Cluster mode: the shard moved to another node after this decision was made, and the
    /// fenced commit refused it. Nothing of it was written.
    #[error("this node no longer owns the shard")]
    Fenced,
    /// Cluster mode: the node that owns a shard this request needs could not be asked, or
    /// answered that it cannot decide now.
    #[error("the shard's owner could not be asked")]
    PeerUnreachable,
}

/// Called with the outcome once the submission is durable (or will never be).
pub type Completion = Box<dyn FnOnce(Result<(), Unavailable>) + Send>;

/// Called after a failed commit with every actor that must rebuild, and the generation it
/// must reach.
pub type RebuildHook = Box<dyn Fn(Vec<(ActorKey, u64)>) + Send + Sync>;

/// A dependency of a submission: the state of `key` at `generation`.
pub type Dependency = (ActorKey, u64);

/// A submission's dependencies: one actor's state in practice, so kept inline (no allocation
/// per write).
type Deps = SmallVec<[Dependency; 2]>;

struct Submission {
    seq: u64,
    /// Kept after its rows are merged into a batch: a batch the database refuses for its
    /// content is retried without the offender, rebuilt from its submissions.
    writes: Writes,
    deps: Deps,
    /// Claims on shards other nodes hold (see [`Permit::claiming`]); empty, and so never
    /// allocated, outside cluster mode.
    remote: Vec<Fence>,
    done: Option<Completion>,
}

struct Pending {
    queue: VecDeque<Submission>,
    next_seq: u64,
    /// Permits handed out and not yet submitted: they count against the capacity.
    reserved: usize,
    closed: bool,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct PersisterStats {
    pub batches: AtomicU64,
    /// Batches whose statements were sent while the batch ahead of them was still committing.
    pub staged_behind: AtomicU64,
    pub submissions: AtomicU64,
    pub rows: AtomicU64,
    pub failures: AtomicU64,
    /// Submissions the fence refused (cluster mode).
    pub fence_refusals: AtomicU64,
    /// Batches whose commit's outcome was unknown (a connection lost during `COMMIT`), and so
    /// asked of their marker.
    pub uncertain_commits: AtomicU64,
    pub commit_micros: AtomicU64,
    /// Every batch's commit time, for the dashboard's p50/p99 (`http::live`).
    pub commit_latency: LatencyHistogram,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Every submission with a sequence number up to this one has an outcome.
    resolved_seq: AtomicU64,
    /// The highest sequence number answered Ok. Written by the commit loop alone; its
    /// assertions hold every batch sent or acknowledged to be past it.
    acknowledged_seq: AtomicU64,
    /// Minimum valid generation of actors whose writes failed.
    stale: DashMap<ActorKey, u64>,
    /// Whether `stale` has ever had an entry: until a commit fails, every actor's check that
    /// it is still valid is one load instead of a map lookup.
    any_stale: AtomicBool,
    capacity: usize,
    /// Two batches in flight where the store can (`--pipeline-commits`).
    pipeline: bool,
    healthy: AtomicBool,
    rebuild: OnceLock<RebuildHook>,
    /// Called with the actors of fenced submissions (cluster mode): their shard has moved.
    fenced: OnceLock<RebuildHook>,
    /// Cluster mode: whose claims every batch is fenced on, and the shards held. Built by
    /// [`Persister::fence_with`] only, so a single node allocates none of it.
    fence: OnceLock<FenceState>,
    /// Every batch's marker, where the store writes them (PostgreSQL).
    markers: Option<marker::Markers>,
    stats: PersisterStats,
}

/// A handle to the persister; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Persister {
    shared: Arc<Shared>,
}

impl Persister {
    /// Starts the commit loop on `runtime`. `capacity` bounds submissions in flight: past it,
    /// callers get a prompt "unavailable" instead of an unbounded queue. With `pipeline`, a
    /// store that can (PostgreSQL) keeps two batches in flight; without it every batch is the
    /// one-statement fast path where it fits, one at a time.
    pub fn start(
        store: Arc<Store>,
        runtime: &tokio::runtime::Handle,
        capacity: usize,
        pipeline: bool,
    ) -> (Persister, tokio::task::JoinHandle<()>) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                queue: VecDeque::new(),
                next_seq: 1,
                reserved: 0,
                closed: false,
            }),
            wake: Notify::new(),
            resolved_seq: AtomicU64::new(0),
            acknowledged_seq: AtomicU64::new(0),
            stale: DashMap::new(),
            any_stale: AtomicBool::new(false),
            capacity,
            pipeline,
            healthy: AtomicBool::new(true),
            rebuild: OnceLock::new(),
            fenced: OnceLock::new(),
            fence: OnceLock::new(),
            markers: store.writes_markers().then(marker::Markers::new),
            stats: PersisterStats::default(),
        });
        let task = runtime.spawn(batch_loop::commit_loop(shared.clone(), store));
        (Persister { shared }, task)
    }

    /// Installs what to call when actors must rebuild (set once, at startup).
    pub fn on_rebuild(&self, hook: RebuildHook) {
        // A second install would be a startup bug; the first hook stays.
        let _ = self.shared.rebuild.set(hook);
    }

    /// Reserves room for one submission built on `deps`, before the caller changes anything.
    pub fn reserve(&self, deps: &[Dependency]) -> Result<Permit, Unavailable> {
        if let Some(stale) = deps.iter().find(|d| self.shared.refuses(**d)) {
            tracing::debug!(actor = ?stale.0, "refused: actor is rebuilding");
            return Err(Unavailable::Rebuilding);
        }
        let mut pending = self.lock();
        if pending.closed {
            return Err(Unavailable::ShuttingDown);
        }
        if pending.queue.len() + pending.reserved >= self.shared.capacity {
            return Err(Unavailable::Overloaded);
        }
        pending.reserved += 1;
        Ok(Permit {
            shared: Some(self.shared.clone()),
            deps: Deps::from_slice(deps),
            remote: Vec::new(),
        })
    }

    /// Whether state at `dep`'s generation has been invalidated by a failed commit.
    pub fn is_stale(&self, dep: Dependency) -> bool {
        self.shared.is_stale(dep)
    }

    /// The generation an actor of `key` must be at for its writes to be accepted.
    pub fn min_generation(&self, key: ActorKey) -> u64 {
        let failed = self.shared.stale.get(&key).map_or(0, |g| *g);
        match self.shared.fence.get() {
            Some(fence) => failed.max(fence.min_generation(key)),
            None => failed,
        }
    }

    /// Every submission up to `seq` has an outcome.
    pub fn is_resolved(&self, seq: u64) -> bool {
        self.resolved_seq() >= seq
    }

    /// Every submission up to the returned one has an outcome.
    pub fn resolved_seq(&self) -> u64 {
        self.shared.resolved_seq.load(Ordering::Acquire)
    }

    /// Whether the last commit succeeded.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> &PersisterStats {
        &self.shared.stats
    }

    /// Submissions waiting to be committed.
    pub fn depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// Waits until everything submitted so far has an outcome.
    pub async fn flush(&self) -> Result<(), Unavailable> {
        let permit = self.reserve(&[])?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        permit.submit(
            Writes::default(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.unwrap_or(Err(Unavailable::ShuttingDown))
    }

    /// Stops taking submissions; the loop drains what it has and ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        lock(&self.shared)
    }
}

impl Shared {
    /// [`Shared::is_stale`], for a submission this refuses: one refused because this node no
    /// longer holds its shard at the epoch it was decided under is counted (the node's side of
    /// the fence; the store's side is `boxoffice_fence_refusals_total`).
    fn refuses(&self, dep: Dependency) -> bool {
        let (key, generation) = dep;
        if self
            .fence
            .get()
            .is_some_and(|f| f.is_stale(key, generation))
        {
            metrics::counter!("boxoffice_epoch_refusals_total").increment(1);
            return true;
        }
        self.is_stale(dep)
    }

    fn is_stale(&self, (key, generation): Dependency) -> bool {
        // Cluster mode: state loaded under an epoch this node does not hold now (never took,
        // lost, or retook since) may not write.
        if let Some(fence) = self.fence.get() {
            if fence.is_stale(key, generation) {
                return true;
            }
        }
        // Set before the entry and the resolved sequence number that follow a failure, so
        // whoever sees either sees this.
        if !self.any_stale.load(Ordering::Acquire) {
            return false;
        }
        self.stale.get(&key).is_some_and(|min| generation < *min)
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    // A panic while holding this lock would be a bug in a few lines of queue bookkeeping; the
    // queue itself is still consistent, so keep serving rather than poisoning every caller.
    shared
        .pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Room for one submission. Dropping it unused gives the room back.
pub struct Permit {
    shared: Option<Arc<Shared>>,
    deps: Deps,
    remote: Vec<Fence>,
}

impl Permit {
    /// Cluster mode: the writes were also decided under `claims` on shards other nodes hold
    /// (each naming its owner): a payment's schedule side, pinned at the schedule's owner and
    /// committed here. The batch's transaction checks them with this node's own claims, and a
    /// stale one refuses this submission alone.
    pub fn claiming(mut self, claims: Vec<Fence>) -> Permit {
        self.remote = claims;
        self
    }

    /// Queues `writes`; `done` runs once they are committed or will never be. Returns the
    /// submission's sequence number (0 when refused at once).
    pub fn submit(mut self, writes: Writes, done: Completion) -> u64 {
        self.enqueue(writes, Some(done))
    }

    /// Queues writes nobody waits for (background transitions such as expiry).
    pub fn submit_detached(mut self, writes: Writes) -> u64 {
        self.enqueue(writes, None)
    }

    fn enqueue(&mut self, writes: Writes, done: Option<Completion>) -> u64 {
        let shared = self
            .shared
            .take()
            .expect("a permit is consumed once, by value");
        let stale = self.deps.iter().any(|dep| shared.refuses(*dep));
        let mut pending = lock(&shared);
        pending.reserved -= 1;
        if stale || pending.closed {
            // Built on undone state (or too late): refused without a sequence number, so it
            // never holds back the resolved watermark.
            drop(pending);
            if let Some(done) = done {
                done(Err(if stale {
                    Unavailable::Rebuilding
                } else {
                    Unavailable::ShuttingDown
                }));
            }
            return 0;
        }
        let seq = pending.next_seq;
        pending.next_seq += 1;
        // The queue is in sequence order (the commit loop takes batches from its front and
        // acknowledges them in that order): a number handed out twice would answer one
        // submission with another's outcome.
        debug_assert!(
            pending.queue.back().is_none_or(|last| last.seq < seq),
            "sequence numbers are handed out in increasing order"
        );
        pending.queue.push_back(Submission {
            seq,
            writes,
            deps: std::mem::take(&mut self.deps),
            remote: std::mem::take(&mut self.remote),
            done,
        });
        drop(pending);
        shared.wake.notify_one();
        seq
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            lock(&shared).reserved -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rig::*;

    /// The baseline the failure tests are measured against: a commit that works answers Ok
    /// only once the rows are in the store, and marks nobody stale.
    #[tokio::test]
    async fn a_committed_batch_is_acknowledged_after_it_is_stored() {
        let mut rig = Rig::start(16).await;
        let seq = rig.submit(&[(schedule(1), 0)], 7);
        assert_eq!(rig.answers(1).await, vec![Ok(())]);
        assert_eq!(rig.stored_balance().await, Some(won(7)));
        assert!(rig.persister.is_resolved(seq));
        assert!(rig.persister.is_healthy());
        assert!(!rig.persister.is_stale((schedule(1), 0)));
        assert!(
            rig.rebuilds.try_recv().is_err(),
            "no rebuild without a failure"
        );
        rig.stop().await;
    }
}
