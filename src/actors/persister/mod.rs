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

use super::live_stats::LatencyHistogram;
use crate::domain::{ScheduleId, UserId};
use crate::store::{Fence, Staged, StoreError};
use crate::store::{Store, Writes};
use dashmap::DashMap;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
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

/// How often an idle persister checks the database after a failed commit.
const HEALTH_PROBE_EVERY: Duration = Duration::from_millis(500);

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
    /// Claims on shards other nodes hold (see [`Permit::claiming`]).
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
    pub commit_micros: AtomicU64,
    /// Every batch's commit time, for the dashboard's p50/p99 (`http::live`).
    pub commit_latency: LatencyHistogram,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Every submission with a sequence number up to this one has an outcome.
    resolved_seq: AtomicU64,
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
    /// Cluster mode: whose claims every batch is fenced on.
    fencing: OnceLock<Fencing>,
    /// Cluster mode: the shards this node holds, at the epoch it took each one under. An
    /// actor of a shard not in here, or of an older epoch, is stale: its writes are refused
    /// before they are queued, and the database's fence refuses any that get further.
    held: DashMap<String, u64>,
    stats: PersisterStats,
}

/// How a cluster node fences its batches: its id, and the shard each actor's state lives in.
pub struct Fencing {
    pub node: String,
    pub shard_of: Box<dyn Fn(ActorKey) -> String + Send + Sync>,
}

/// In cluster mode an actor's generation carries the epoch of the shard lease it was loaded
/// under in its high bits, and rebuilds count in the low bits: so a dependency names the
/// epoch its decision was made under (what the fence checks), and a state loaded under a
/// newer epoch is always a newer generation than any before it.
pub const EPOCH_SHIFT: u32 = 32;

/// The first generation of an actor loaded under shard epoch `epoch`.
pub fn generation_under(epoch: u64) -> u64 {
    epoch << EPOCH_SHIFT
}

/// The shard epoch a generation was loaded under (0 outside cluster mode).
pub fn epoch_of(generation: u64) -> u64 {
    generation >> EPOCH_SHIFT
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
            stale: DashMap::new(),
            any_stale: AtomicBool::new(false),
            capacity,
            pipeline,
            healthy: AtomicBool::new(true),
            rebuild: OnceLock::new(),
            fenced: OnceLock::new(),
            fencing: OnceLock::new(),
            held: DashMap::new(),
            stats: PersisterStats::default(),
        });
        let task = runtime.spawn(commit_loop(shared.clone(), store));
        (Persister { shared }, task)
    }

    /// Installs what to call when actors must rebuild (set once, at startup).
    pub fn on_rebuild(&self, hook: RebuildHook) {
        // A second install would be a startup bug; the first hook stays.
        let _ = self.shared.rebuild.set(hook);
    }

    /// Installs what to call with the actors of submissions the fence refused: their shard
    /// belongs to another node now, so they are dropped, not rebuilt (set once, at startup).
    /// Without it they go to the rebuild hook.
    pub fn on_fenced(&self, hook: RebuildHook) {
        // A second install would be a startup bug; the first hook stays.
        let _ = self.shared.fenced.set(hook);
    }

    /// Fences every batch from now on (cluster mode; set once, at startup, before any write):
    /// each dependency's shard must still be held at the epoch in its generation when the
    /// batch commits. Dependencies of generation below [`generation_under`]`(1)` carry no
    /// claim.
    pub fn fence_with(&self, fencing: Fencing) {
        // A second install would be a startup bug; the first stays.
        let _ = self.shared.fencing.set(fencing);
    }

    /// Cluster mode: this node now holds `shard` at `epoch` (its lease was just taken). Actors
    /// of the shard must be at [`generation_under`]`(epoch)` or above to write.
    pub fn hold_shard(&self, shard: &str, epoch: u64) {
        self.shared.held.insert(shard.to_string(), epoch);
    }

    /// Cluster mode: this node no longer holds `shard` (released, or found taken over), unless
    /// it was retaken under a newer epoch meanwhile.
    pub fn lose_shard(&self, shard: &str, epoch: u64) {
        self.shared.held.remove_if(shard, |_, held| *held <= epoch);
    }

    /// Cluster mode: every shard this node holds, with its epoch.
    pub fn held_shards(&self) -> Vec<(String, u64)> {
        self.shared
            .held
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    /// Whether an actor of `key` may write at all: always outside cluster mode, and in it
    /// only while this node holds the actor's shard.
    pub fn may_write(&self, key: ActorKey) -> bool {
        match self.shared.fencing.get() {
            Some(fencing) => self.shared.held.contains_key(&(fencing.shard_of)(key)),
            None => true,
        }
    }

    /// Cluster mode: this node's id (`None` outside cluster mode).
    pub fn node_id(&self) -> Option<String> {
        self.shared.fencing.get().map(|f| f.node.clone())
    }

    /// Cluster mode: the epoch this node holds `shard` at, if it does.
    pub fn held_epoch(&self, shard: &str) -> Option<u64> {
        self.shared.held.get(shard).map(|e| *e)
    }

    /// Reserves room for one submission built on `deps`, before the caller changes anything.
    pub fn reserve(&self, deps: &[Dependency]) -> Result<Permit, Unavailable> {
        if let Some(stale) = deps.iter().find(|d| self.is_stale(**d)) {
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
        match self.shared.fencing.get() {
            Some(fencing) => {
                let epoch = self.held_epoch(&(fencing.shard_of)(key)).unwrap_or(0);
                failed.max(generation_under(epoch))
            }
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
    fn is_stale(&self, (key, generation): Dependency) -> bool {
        if let Some(fencing) = self.fencing.get() {
            // Cluster mode: state loaded under an epoch this node does not hold now (never
            // took, lost, or retook since) may not write.
            let shard = (fencing.shard_of)(key);
            if self.held.get(&shard).map(|e| *e) != Some(epoch_of(generation)) {
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
        let stale = self.deps.iter().any(|dep| shared.is_stale(*dep));
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

/// Submissions taken from the queue together, and their rows merged.
struct Batch {
    submissions: Vec<Submission>,
    writes: Arc<Writes>,
    /// The ownership claims its submissions were decided under (cluster mode; else empty).
    fences: Vec<Fence>,
    /// Every submission up to this one has an outcome once this batch has: it may be past the
    /// last of `submissions` (some were answered while the batch was formed).
    last_seq: u64,
    /// When its first statement was sent.
    started: Instant,
}

/// The oldest batch in flight: its outcome decides the fate of everything behind it.
struct Front {
    batch: Batch,
    state: FrontState,
    /// [`COMMIT_TIMEOUT`] from when it became the front: time spent behind another batch, whose
    /// own deadline bounds it, does not count against it.
    deadline: tokio::time::Instant,
}

enum FrontState {
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
    fn statements_done(&self) -> bool {
        matches!(
            self.state,
            FrontState::Committing {
                statements_done: true,
                ..
            }
        )
    }
}

/// The batch behind the front, never committed before the front has.
struct Back {
    batch: Batch,
    state: BackState,
}

enum BackState {
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
enum Event {
    FrontStaged(Result<Staged, StoreError>),
    FrontDone(Result<(), StoreError>),
    FrontTimedOut,
    BackStaged(Result<Staged, StoreError>),
    /// New submissions, with room for them behind the front.
    Woken,
}

async fn commit_loop(shared: Arc<Shared>, store: Arc<Store>) {
    let mut front: Option<Front> = None;
    let mut back: Option<Back> = None;
    // Submissions of a refused batch, to be committed again without the offender before
    // anything newer (see `isolate`): one group per batch, in order.
    let mut retry: VecDeque<Retry> = VecDeque::new();
    loop {
        let Some(current) = front.as_mut() else {
            if let Some(group) = retry.pop_front() {
                let batch = batch_of(&shared, group.submissions, group.last_seq);
                if batch.writes.is_empty() {
                    record(&shared, &batch);
                    acknowledge(&shared, batch);
                } else {
                    front = Some(send(&shared, &store, batch, false));
                }
                continue;
            }
            // Nothing in flight (a back always moves up when its front resolves).
            let Some((batch, waited)) = next_when_idle(&shared, &store).await else {
                if finished(&shared) {
                    break;
                }
                continue;
            };
            if batch.writes.is_empty() {
                record(&shared, &batch);
                acknowledge(&shared, batch);
                continue;
            }
            // A batch that was already waiting means load: staged, so the next one can be
            // staged behind it while it commits. One that had to be waited for takes the fast
            // path (docs/BENCHMARKS.md): nothing else is in flight to overlap with it.
            front = Some(send(
                &shared,
                &store,
                batch,
                !waited && shared.pipeline && store.pipelines(),
            ));
            continue;
        };
        if back.is_none() && retry.is_empty() && current.statements_done() {
            if let Some(batch) = take_batch(&shared) {
                back = Some(stage_behind(&shared, &store, batch));
            }
        }
        match next_event(current, &mut back, &shared).await {
            Event::FrontStaged(Ok(staged)) => {
                current.state = FrontState::Committing {
                    work: Box::pin(staged.commit()),
                    statements_done: true,
                };
            }
            Event::FrontDone(Ok(())) => {
                let done = front
                    .take()
                    .expect("a front event: next_event only reports on a front in flight");
                record(&shared, &done.batch);
                acknowledge(&shared, done.batch);
                if let Some(next) = back.take() {
                    front = promote(&shared, &store, next);
                }
            }
            Event::FrontStaged(Err(error)) | Event::FrontDone(Err(error)) => {
                let failed = front
                    .take()
                    .expect("a front event: next_event only reports on a front in flight");
                if let StoreError::Fenced(stale) = &error {
                    tracing::warn!(
                        ?stale,
                        "fenced: a shard moved; refusing what was decided under it"
                    );
                    fence_out(&shared, failed, back.take(), stale, &mut retry).await;
                } else if error.is_refusal_of_content() {
                    tracing::warn!(error = ?error, submissions = failed.batch.submissions.len(), "the database refused a batch's content; isolating the offender");
                    isolate(&shared, failed, back.take(), &mut retry).await;
                } else {
                    tracing::error!(error = ?error, rows = failed.batch.writes.len(), "batch commit failed");
                    fail_front(&shared, failed, back.take()).await;
                }
            }
            Event::FrontTimedOut => {
                let failed = front
                    .take()
                    .expect("a front event: next_event only reports on a front in flight");
                tracing::error!(rows = failed.batch.writes.len(), "batch commit timed out");
                fail_front(&shared, failed, back.take()).await;
            }
            Event::BackStaged(result) => {
                let behind = back
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
            Event::Woken => {}
        }
    }
    tracing::info!("persister drained");
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
    let fencing = shared.fencing.get();
    let mut writes = Writes::default();
    let mut fences: Vec<Fence> = Vec::new();
    let mut submissions = Vec::with_capacity(taken.len());
    for s in taken {
        if s.deps.iter().any(|dep| shared.is_stale(*dep)) {
            if let Some(done) = s.done {
                done(Err(Unavailable::Rebuilding));
            }
            continue;
        }
        // A clone, not a move: the submission's own rows are what a retry is rebuilt from.
        writes.merge(s.writes.clone());
        if let Some(fencing) = fencing {
            for &(key, generation) in &s.deps {
                let epoch = epoch_of(generation);
                if epoch == 0 {
                    continue;
                }
                let fence = Fence::own((fencing.shard_of)(key), epoch);
                if !fences.contains(&fence) {
                    fences.push(fence);
                }
            }
            for fence in &s.remote {
                if !fences.contains(fence) {
                    fences.push(fence.clone());
                }
            }
        }
        submissions.push(s);
    }
    Batch {
        submissions,
        writes: Arc::new(writes),
        fences,
        last_seq,
        started: Instant::now(),
    }
}

/// Sends `batch` as the front: staged (its `COMMIT` follows its statements) or the fast path;
/// a fenced batch is always one transaction of its own, its claims checked inside it.
fn send(shared: &Shared, store: &Arc<Store>, mut batch: Batch, staged: bool) -> Front {
    batch.started = Instant::now();
    let (store, writes) = (store.clone(), batch.writes.clone());
    let fencing = shared.fencing.get().filter(|_| !batch.fences.is_empty());
    let state = if let Some(fencing) = fencing {
        let (node, fences) = (fencing.node.clone(), batch.fences.clone());
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

/// Stages `batch` behind a front whose statements are done, if the store's rule allows it.
fn stage_behind(shared: &Shared, store: &Arc<Store>, mut batch: Batch) -> Back {
    if !batch.fences.is_empty() || !store.may_stage_behind(&batch.writes) {
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
fn promote(shared: &Shared, store: &Arc<Store>, back: Back) -> Option<Front> {
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
async fn next_event(front: &mut Front, back: &mut Option<Back>, shared: &Shared) -> Event {
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

/// The front failed or timed out: it, the back and everything queued are answered unavailable
/// (the failure protocol), then the back is rolled back before anything new is sent, so no
/// later batch can meet its uncommitted rows.
async fn fail_front(shared: &Shared, failed: Front, back: Option<Back>) {
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

/// Submissions to commit again, and the sequence number they resolve up to.
struct Retry {
    submissions: Vec<Submission>,
    last_seq: u64,
}

/// The front's content was refused (a constraint, a value): nothing of it was written, and
/// the database says nothing about which submission was at fault. Bisect: the halves go back
/// as batches of their own, ahead of anything newer, until the offender is alone; only it is
/// refused, and only its actors rebuild. The innocent commit a few round trips late (about
/// two per halving) instead of being answered 503 with it. The back, rolled back, follows.
async fn isolate(shared: &Shared, failed: Front, back: Option<Back>, retry: &mut VecDeque<Retry>) {
    record(shared, &failed.batch);
    drop(failed.state);
    if let Some(back) = back {
        roll_back(back.state).await;
        retry.push_front(Retry {
            submissions: back.batch.submissions,
            last_seq: back.batch.last_seq,
        });
    }
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
    retry.push_front(Retry {
        submissions: second,
        last_seq,
    });
    retry.push_front(Retry {
        submissions: suspects,
        last_seq: first_last,
    });
}

/// The fence refused the front: the submissions decided under a claim that no longer holds
/// are refused and their actors handed to the fenced hook (dropped: another node owns them
/// now); the rest go back as a batch of their own, ahead of anything newer.
async fn fence_out(
    shared: &Shared,
    failed: Front,
    back: Option<Back>,
    stale: &[Fence],
    retry: &mut VecDeque<Retry>,
) {
    record(shared, &failed.batch);
    drop(failed.state);
    if let Some(back) = back {
        roll_back(back.state).await;
        retry.push_front(Retry {
            submissions: back.batch.submissions,
            last_seq: back.batch.last_seq,
        });
    }
    let fencing = shared
        .fencing
        .get()
        .expect("only a fenced batch is refused by the fence, and only with fencing installed");
    // The database says these are not ours at these epochs any more: refuse at once whatever
    // else is built on them, until the shard is taken again (under a newer epoch).
    // (Another node's claim going stale says nothing about what this node holds.)
    for fence in stale.iter().filter(|f| f.owner.is_none()) {
        shared
            .held
            .remove_if(&fence.shard, |_, held| *held <= fence.epoch);
    }
    let decided_under_stale = |s: &Submission| {
        s.deps.iter().any(|&(key, generation)| {
            stale.contains(&Fence::own((fencing.shard_of)(key), epoch_of(generation)))
        }) || s.remote.iter().any(|f| stale.contains(f))
    };
    let (refused, kept): (Vec<Submission>, Vec<Submission>) = failed
        .batch
        .submissions
        .into_iter()
        .partition(decided_under_stale);
    shared
        .stats
        .fence_refusals
        .fetch_add(refused.len() as u64, Ordering::Relaxed);
    metrics::counter!("boxoffice_fence_refusals_total").increment(refused.len() as u64);
    let last_seq = failed.batch.last_seq;
    if kept.is_empty() {
        refuse_alone(shared, refused, Unavailable::Fenced, true);
        shared.resolved_seq.fetch_max(last_seq, Ordering::AcqRel);
    } else {
        // Answered before the rest commits: nothing the rest holds can depend on them (a
        // dependency on the same actor would carry the same stale claim).
        refuse_alone(shared, refused, Unavailable::Fenced, true);
        retry.push_front(Retry {
            submissions: kept,
            last_seq,
        });
    }
}

/// Refuses `refused` alone (nothing queued behind them is touched): their actors are marked
/// stale so nothing further built on them commits, and handed to the rebuild hook, or to the
/// fenced hook when the state moved to another node.
fn refuse_alone(shared: &Shared, refused: Vec<Submission>, why: Unavailable, fenced: bool) {
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
    let (gone, kept): (Vec<_>, Vec<_>) = match (fenced, shared.fencing.get()) {
        (true, Some(fencing)) => actors
            .into_iter()
            .partition(|(key, _)| !shared.held.contains_key(&(fencing.shard_of)(*key))),
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

/// Marks every actor of `deps` stale past its generation, and notes it in `actors` (once per
/// actor, at the highest generation it must reach).
fn mark_stale(shared: &Shared, deps: &[Dependency], actors: &mut Vec<(ActorKey, u64)>) {
    for &(key, generation) in deps {
        let next = generation + 1;
        shared.any_stale.store(true, Ordering::Release);
        let mut min = shared.stale.entry(key).or_insert(0);
        if *min < next {
            *min = next;
        }
        if let Some(existing) = actors.iter_mut().find(|(k, _)| *k == key) {
            existing.1 = existing.1.max(next);
        } else {
            actors.push((key, next));
        }
    }
}

/// Rolls back a batch staged behind one that failed, whatever its statements did.
async fn roll_back(state: BackState) {
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

/// A committed batch: every submission in it is durable, answered Ok in order.
fn acknowledge(shared: &Shared, batch: Batch) {
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

/// A batch has an outcome from the database: its size, rows and commit time, for metrics and
/// benchmarks.
fn record(shared: &Shared, batch: &Batch) {
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

/// Fails `failed` and everything queued behind it, marks their actors stale, asks them to rebuild.
fn fail(shared: &Shared, mut failed: Vec<Submission>) {
    let mut rebuild: Vec<(ActorKey, u64)> = Vec::new();
    {
        let mut pending = lock(shared);
        failed.extend(pending.queue.drain(..));
        for s in &failed {
            mark_stale(shared, &s.deps, &mut rebuild);
        }
        let last = failed.iter().map(|s| s.seq).max().unwrap_or(0);
        shared.resolved_seq.fetch_max(last, Ordering::AcqRel);
    }
    tracing::warn!(
        submissions = failed.len(),
        actors = rebuild.len(),
        "answering unavailable and rebuilding"
    );
    for s in failed {
        if let Some(done) = s.done {
            done(Err(Unavailable::CommitFailed));
        }
    }
    if let Some(hook) = shared.rebuild.get() {
        hook(rebuild);
    }
}

/// The failure protocol of the module doc, statement by statement, over a memory store whose
/// commits fail on request. Each test runs on the current-thread runtime of `#[tokio::test]`:
/// the commit loop only runs while the test awaits, so everything submitted between two
/// awaits is queued together, deterministically.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Money, Timestamp};
    use crate::store::{MemoryStore, WalletRecord};
    use tokio::sync::mpsc;

    type Outcome = Result<(), Unavailable>;

    /// A persister over a fresh memory store holding one user with 100 won, and the answers
    /// to what the test submits, in the order they were given.
    struct Rig {
        persister: Persister,
        task: tokio::task::JoinHandle<()>,
        memory: MemoryStore,
        user: UserId,
        outcome_sender: mpsc::UnboundedSender<Outcome>,
        outcomes: mpsc::UnboundedReceiver<Outcome>,
        rebuilds: mpsc::UnboundedReceiver<Vec<(ActorKey, u64)>>,
    }

    impl Rig {
        async fn start(capacity: usize) -> Rig {
            Rig::start_with(capacity, true).await
        }

        /// [`Rig::start`], with pipelining on or off (`--pipeline-commits`).
        async fn start_with(capacity: usize, pipeline: bool) -> Rig {
            let memory = MemoryStore::connect("memory://")
                .await
                .expect("an unnamed memory store always opens");
            let user = memory
                .create_user("kim", won(100), Timestamp::from_millis(0))
                .await
                .expect("the memory store creates users");
            let store = Arc::new(Store::Memory(memory.clone()));
            let (persister, task) = Persister::start(
                store,
                &tokio::runtime::Handle::current(),
                capacity,
                pipeline,
            );
            let (rebuild_sender, rebuilds) = mpsc::unbounded_channel();
            persister.on_rebuild(Box::new(move |keys| {
                // The receiver lives as long as the test that reads it.
                let _ = rebuild_sender.send(keys);
            }));
            let (outcome_sender, outcomes) = mpsc::unbounded_channel();
            // Let the spawned loop run once and park on an empty queue, so the first batch of
            // every test is one it had to wait for, whatever the scheduler did first.
            tokio::task::yield_now().await;
            Rig {
                persister,
                task,
                memory,
                user,
                outcome_sender,
                outcomes,
                rebuilds,
            }
        }

        /// Writes that set the user's balance: one row the memory store accepts.
        fn balance(&self, amount: i64) -> Writes {
            Writes::default().wallet(WalletRecord {
                user: self.user,
                balance: won(amount),
                at: Timestamp::from_millis(1),
            })
        }

        /// What the submission is answered, as a completion that reports to `outcomes`.
        fn completion(&self) -> Completion {
            let sender = self.outcome_sender.clone();
            Box::new(move |outcome| {
                let _ = sender.send(outcome);
            })
        }

        /// Submits a balance of `amount` built on `deps`.
        fn submit(&self, deps: &[Dependency], amount: i64) -> u64 {
            self.persister
                .reserve(deps)
                .expect("the rig's persister has room, and the test's deps are valid")
                .submit(self.balance(amount), self.completion())
        }

        /// The next `count` answers.
        async fn answers(&mut self, count: usize) -> Vec<Outcome> {
            let mut all = Vec::with_capacity(count);
            for _ in 0..count {
                all.push(
                    self.outcomes
                        .recv()
                        .await
                        .expect("the rig holds a sender: the channel stays open"),
                );
            }
            all
        }

        /// Submits one write on each of `deps` as one batch whose commit fails.
        async fn fail_a_batch(&mut self, deps: &[&[Dependency]]) {
            self.memory.fail_next_commits(1);
            for (amount, deps) in (1..).zip(deps) {
                self.submit(deps, amount);
            }
            let answers = self.answers(deps.len()).await;
            assert!(
                answers.iter().all(|a| *a == Err(Unavailable::CommitFailed)),
                "{answers:?}"
            );
        }

        async fn stored_balance(&self) -> Option<Money> {
            self.memory
                .load_wallet(self.user)
                .await
                .expect("the memory store loads wallets")
        }

        async fn stop(self) {
            self.persister.close();
            self.task
                .await
                .expect("the commit loop ends without a panic");
        }
    }

    fn won(amount: i64) -> Money {
        Money::new(amount).expect("test amounts are not negative")
    }

    fn schedule(id: i64) -> ActorKey {
        ActorKey::Schedule(ScheduleId::new(id).expect("test ids are positive"))
    }

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

    #[tokio::test]
    async fn a_failed_commit_answers_its_batch_and_everything_queued_behind_it_unavailable() {
        let mut rig = Rig::start(MAX_BATCH * 2).await;
        rig.memory.fail_next_commits(1);
        // One batch more than fits: the last submission waits behind the failing batch.
        for _ in 0..MAX_BATCH {
            rig.submit(&[(schedule(1), 0)], 1);
        }
        let behind = rig.submit(&[(ActorKey::Queue, 0)], 2);
        let answers = rig.answers(MAX_BATCH + 1).await;
        assert!(
            answers.iter().all(|a| *a == Err(Unavailable::CommitFailed)),
            "{:?}",
            answers
                .iter()
                .find(|a| **a != Err(Unavailable::CommitFailed))
        );
        // The one behind was answered with the batch, not committed in one of its own (only
        // one commit was set to fail, so a second batch would have succeeded).
        assert_eq!(rig.persister.stats().batches.load(Ordering::Relaxed), 1);
        assert_eq!(rig.persister.stats().failures.load(Ordering::Relaxed), 1);
        assert_eq!(rig.stored_balance().await, Some(won(100)));
        assert!(rig.persister.is_resolved(behind));
        assert!(!rig.persister.is_healthy());
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_failed_commit_marks_each_actor_with_a_write_stale_at_its_generation() {
        let mut rig = Rig::start(16).await;
        let wallet = ActorKey::Wallet(rig.user);
        rig.fail_a_batch(&[
            &[(schedule(1), 0)],
            &[(schedule(1), 2)],
            &[(wallet, 5)],
            &[],
        ])
        .await;

        // Stale up to the highest generation among the failed writes, valid from the next.
        assert_eq!(rig.persister.min_generation(schedule(1)), 3);
        assert!(rig.persister.is_stale((schedule(1), 0)));
        assert!(rig.persister.is_stale((schedule(1), 2)));
        assert!(!rig.persister.is_stale((schedule(1), 3)));
        assert_eq!(rig.persister.min_generation(wallet), 6);
        assert!(rig.persister.is_stale((wallet, 5)));
        assert!(!rig.persister.is_stale((wallet, 6)));
        // Actors with no write in the failed batch keep their state.
        assert_eq!(rig.persister.min_generation(schedule(2)), 0);
        assert!(!rig.persister.is_stale((schedule(2), 0)));
        assert!(!rig.persister.is_stale((ActorKey::Queue, 0)));
        rig.stop().await;
    }

    #[tokio::test]
    async fn submissions_built_on_a_stale_generation_are_refused() {
        let mut rig = Rig::start(16).await;
        // Reserved before the failure, on the generation the failure invalidates.
        let early = rig
            .persister
            .reserve(&[(schedule(1), 0)])
            .expect("nothing is stale yet");
        rig.fail_a_batch(&[&[(schedule(1), 0)]]).await;

        assert!(matches!(
            rig.persister.reserve(&[(schedule(1), 0)]),
            Err(Unavailable::Rebuilding)
        ));
        // Any stale dependency refuses the whole submission.
        assert!(matches!(
            rig.persister.reserve(&[(schedule(2), 0), (schedule(1), 0)]),
            Err(Unavailable::Rebuilding)
        ));
        let seq = early.submit(rig.balance(9), rig.completion());
        assert_eq!(seq, 0, "refused without a sequence number");
        assert_eq!(rig.answers(1).await, vec![Err(Unavailable::Rebuilding)]);
        rig.persister
            .flush()
            .await
            .expect("an empty flush is acknowledged");
        assert_eq!(rig.stored_balance().await, Some(won(100)));
        // The rebuilt generation is accepted.
        assert!(rig.persister.reserve(&[(schedule(1), 1)]).is_ok());
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_failed_commit_asks_each_stale_actor_once_to_rebuild_to_its_new_generation() {
        let mut rig = Rig::start(16).await;
        let wallet = ActorKey::Wallet(rig.user);
        rig.fail_a_batch(&[
            &[(schedule(1), 0)],
            &[(schedule(1), 2), (wallet, 5)],
            &[(schedule(1), 1)],
        ])
        .await;

        // Bounded: a hook that is never called must fail the test, not hang it.
        let mut keys = tokio::time::timeout(Duration::from_secs(5), rig.rebuilds.recv())
            .await
            .expect("the rebuild hook is called after a failed commit")
            .expect("the hook's sender lives in the persister");
        keys.sort_by_key(|(key, _)| format!("{key:?}"));
        assert_eq!(keys, vec![(schedule(1), 3), (wallet, 6)]);
        assert!(rig.rebuilds.try_recv().is_err(), "one call per failure");
        rig.stop().await;
    }

    #[tokio::test]
    async fn commits_are_acknowledged_again_once_the_store_recovers() {
        let mut rig = Rig::start(16).await;
        rig.fail_a_batch(&[&[(schedule(1), 0)]]).await;
        // The actor rebuilt at generation 1; the store is still failing.
        rig.fail_a_batch(&[&[(schedule(1), 1)]]).await;
        assert_eq!(rig.persister.min_generation(schedule(1)), 2);
        assert!(!rig.persister.is_healthy());
        // Rebuilt again, and the store is back.
        rig.submit(&[(schedule(1), 2)], 3);
        assert_eq!(rig.answers(1).await, vec![Ok(())]);
        assert_eq!(rig.stored_balance().await, Some(won(3)));
        assert!(rig.persister.is_healthy());
        assert_eq!(rig.persister.stats().failures.load(Ordering::Relaxed), 2);
        rig.stop().await;
    }

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

    /// Polls `done` while the commit loop runs, failing the test (not hanging it) after 5 s.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A rig whose store pipelines and holds every commit at a gate, with batch N committing
    /// (held at the gate, its statements staged) and nothing behind it: the first batch takes
    /// the fast path, and N, queued behind it, is staged as load would have it. Returns the
    /// gate; N set the balance to `n_amount` and has been answered nothing yet.
    async fn committing(
        capacity: usize,
        n_deps: &[Dependency],
        n_amount: i64,
    ) -> (Rig, Arc<tokio::sync::Semaphore>) {
        let mut rig = Rig::start(capacity).await;
        rig.memory.pipeline(true);
        let gate = rig.memory.gate_commits();
        rig.submit(&[], 1);
        eventually("the first batch reaches the gate", || {
            rig.memory.commits_at_gate() == 1
        })
        .await;
        rig.submit(n_deps, n_amount);
        gate.add_permits(1);
        assert_eq!(rig.answers(1).await, vec![Ok(())]);
        eventually("batch N reaches the gate", || {
            rig.memory.commits_at_gate() == 2
        })
        .await;
        assert_eq!(
            rig.memory.staged(),
            (1, 0),
            "N was staged, not sent the fast way"
        );
        assert_eq!(
            rig.persister.stats().staged_behind.load(Ordering::Relaxed),
            0
        );
        (rig, gate)
    }

    /// Pipelining happens: a batch is staged while the one ahead of it is still committing,
    /// neither is answered before its commit, and they commit in order.
    #[tokio::test]
    async fn without_pipelining_one_batch_is_in_flight_at_a_time() {
        let mut rig = Rig::start_with(16, false).await;
        rig.memory.pipeline(true);
        let gate = rig.memory.gate_commits();
        rig.submit(&[(schedule(1), 0)], 2);
        eventually("N reaches the gate", || rig.memory.commits_at_gate() == 1).await;
        rig.submit(&[(schedule(2), 0)], 3);
        // However long N takes, nothing is sent behind it.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(rig.memory.staged().0, 0, "nothing staged");
        assert_eq!(rig.memory.commits_at_gate(), 1, "N+1 not sent");
        gate.add_permits(2);
        assert_eq!(rig.answers(2).await, vec![Ok(()), Ok(())]);
        assert_eq!(rig.stored_balance().await, Some(won(3)));
        assert_eq!(
            rig.persister.stats().staged_behind.load(Ordering::Relaxed),
            0
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn the_next_batch_is_staged_while_the_one_ahead_commits() {
        let (mut rig, gate) = committing(16, &[(schedule(1), 0)], 2).await;
        rig.submit(&[(schedule(2), 0)], 3);
        eventually("N+1 is staged while N commits", || {
            rig.memory.staged().0 == 2
        })
        .await;
        assert_eq!(
            rig.persister.stats().staged_behind.load(Ordering::Relaxed),
            1
        );
        assert!(
            rig.outcomes.try_recv().is_err(),
            "nothing answered before its commit"
        );
        assert_eq!(
            rig.stored_balance().await,
            Some(won(1)),
            "N has not committed"
        );
        gate.add_permits(2);
        assert_eq!(rig.answers(2).await, vec![Ok(()), Ok(())]);
        // N+1 committed last: its balance is the one that stays.
        assert_eq!(rig.stored_balance().await, Some(won(3)));
        assert_eq!(rig.memory.commits_at_gate(), 3);
        assert!(rig.persister.is_healthy());
        rig.stop().await;
    }

    /// N commits, N+1 (staged behind it) fails: N is acknowledged; N+1 and everything behind it
    /// are answered unavailable, their actors (and only theirs) marked stale and rebuilt, and
    /// the batch that was staged behind N+1 meanwhile is rolled back.
    #[tokio::test]
    async fn when_the_batch_ahead_commits_and_the_one_behind_fails_only_the_first_is_acknowledged()
    {
        let (mut rig, gate) = committing(16, &[(schedule(1), 0)], 2).await;
        rig.submit(&[(schedule(2), 0)], 3);
        eventually("N+1 is staged", || rig.memory.staged().0 == 2).await;
        // The pipeline is full: this one waits in the queue.
        let behind = rig.submit(&[(ActorKey::Queue, 0)], 4);
        gate.add_permits(1);
        assert_eq!(rig.answers(1).await, vec![Ok(())], "N is acknowledged");
        eventually("N+1 reaches the gate", || rig.memory.commits_at_gate() == 3).await;
        // Behind N+1, now the front, the queued batch is staged in turn.
        eventually("the last one is staged behind N+1", || {
            rig.memory.staged().0 == 3
        })
        .await;
        rig.memory.fail_next_commits(1);
        gate.add_permits(1);
        assert_eq!(
            rig.answers(2).await,
            vec![
                Err(Unavailable::CommitFailed),
                Err(Unavailable::CommitFailed)
            ]
        );
        assert_eq!(
            rig.memory.staged(),
            (3, 1),
            "the one behind N+1 is rolled back"
        );
        assert_eq!(rig.stored_balance().await, Some(won(2)), "N's write stays");
        assert!(rig.persister.is_resolved(behind));
        assert!(!rig.persister.is_healthy());
        assert!(
            !rig.persister.is_stale((schedule(1), 0)),
            "N's actor keeps its state"
        );
        assert!(rig.persister.is_stale((schedule(2), 0)));
        assert!(rig.persister.is_stale((ActorKey::Queue, 0)));
        let mut keys = rig
            .rebuilds
            .recv()
            .await
            .expect("the hook's sender lives on");
        keys.sort_by_key(|(key, _)| format!("{key:?}"));
        assert_eq!(keys, vec![(ActorKey::Queue, 1), (schedule(2), 1)]);
        // Nothing more was sent after the failure.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(rig.memory.commits_at_gate(), 3);
        rig.stop().await;
    }

    /// N fails after N+1's statements were sent: N+1 is rolled back though nothing was wrong
    /// with it, and N, N+1 and everything queued behind them are answered unavailable.
    #[tokio::test]
    async fn when_the_batch_ahead_fails_the_one_staged_behind_it_is_rolled_back() {
        let (mut rig, gate) = committing(16, &[(schedule(1), 0)], 2).await;
        rig.submit(&[(schedule(2), 0)], 3);
        eventually("N+1 is staged", || rig.memory.staged().0 == 2).await;
        let behind = rig.submit(&[(ActorKey::Queue, 0)], 4);
        rig.memory.fail_next_commits(1);
        gate.add_permits(1);
        assert_eq!(
            rig.answers(3).await,
            vec![Err(Unavailable::CommitFailed); 3],
            "N, N+1 and the one queued behind"
        );
        assert_eq!(rig.memory.staged(), (2, 1), "N+1 is rolled back");
        assert_eq!(
            rig.stored_balance().await,
            Some(won(1)),
            "neither N nor N+1 stays"
        );
        assert!(rig.persister.is_resolved(behind));
        for key in [schedule(1), schedule(2), ActorKey::Queue] {
            assert!(rig.persister.is_stale((key, 0)), "{key:?}");
        }
        // N+1 never reached the store's commit, and nothing else was sent.
        gate.add_permits(10);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(rig.memory.commits_at_gate(), 2);
        assert_eq!(rig.persister.stats().failures.load(Ordering::Relaxed), 1);
        rig.stop().await;
    }

    /// A commit that never answers fails its batch after COMMIT_TIMEOUT, and takes the batch
    /// staged behind it along (rolled back), as one that fails outright does.
    /// Takes COMMIT_TIMEOUT of real time: tokio's paused clock is not among the dev features.
    #[tokio::test]
    async fn a_front_that_times_out_fails_and_rolls_back_the_batch_behind_it() {
        let (mut rig, _gate) = committing(16, &[(schedule(1), 0)], 2).await;
        rig.submit(&[(schedule(2), 0)], 3);
        eventually("N+1 is staged", || rig.memory.staged().0 == 2).await;
        // The gate never opens again: N's commit hangs until its deadline.
        assert_eq!(
            rig.answers(2).await,
            vec![Err(Unavailable::CommitFailed); 2]
        );
        assert_eq!(rig.memory.staged(), (2, 1));
        assert_eq!(rig.stored_balance().await, Some(won(1)));
        rig.stop().await;
    }

    /// The pipeline on a real PostgreSQL: each test has a database of its own, with a deferred
    /// constraint trigger on `reservations` that, at COMMIT, waits for an advisory lock named
    /// by the reservation's id (and refuses a reservation of total price 13). Holding a
    /// reservation's lock holds its batch "committing" — its statements done, its COMMIT in
    /// flight, as during a slow WAL flush — for as long as the test likes.
    mod on_postgres {
        use super::*;
        use crate::domain::schedule::{Reservation, ReservationStatus, Seat};
        use crate::domain::{PaymentId, ReservationId};
        use crate::store::temp_databases::TempPostgres;
        use crate::store::{LedgerEntry, LedgerKind, NewConcert, NewSchedule, PaymentRecord};
        use sqlx::{Connection, PgConnection};

        const GATE: &str = "
            CREATE FUNCTION pipeline_gate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock_shared(7, NEW.id::int4);
                IF NEW.total_price = 13 THEN
                    RAISE EXCEPTION 'reservation % refused on purpose', NEW.id;
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER pipeline_gate AFTER INSERT OR UPDATE ON reservations
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pipeline_gate();";

        struct PgRig {
            rig: Rig,
            store: Arc<Store>,
            /// The test's own session: it holds the gates and watches the persister's backends.
            admin: PgConnection,
            user: UserId,
            schedule: ScheduleId,
            seats: Vec<Seat>,
            /// Declared last: the store's connections close before the database is dropped.
            _database: TempPostgres,
        }

        impl PgRig {
            async fn start() -> PgRig {
                let database = TempPostgres::create().await;
                let store = Store::connect(&database.url())
                    .await
                    .expect("the test database accepts connections");
                store.migrate().await.expect("the migrations apply");
                let mut admin = PgConnection::connect(&database.url())
                    .await
                    .expect("a second session on the test database");
                sqlx::raw_sql(GATE)
                    .execute(&mut admin)
                    .await
                    .expect("the gate trigger is valid SQL");
                let user = store
                    .create_user("kim", won(100), Timestamp::from_millis(0))
                    .await
                    .expect("a user");
                let concert = store
                    .create_concert(&NewConcert {
                        name: "pipeline".into(),
                        schedules: vec![NewSchedule {
                            concert_at: Timestamp::from_millis(2_000),
                            reservation_at: Timestamp::from_millis(1_000),
                            seats: (1..=6).map(|n| (n, won(10))).collect(),
                            plan: Vec::new(),
                        }],
                    })
                    .await
                    .expect("a concert");
                let schedule = concert
                    .schedules
                    .into_iter()
                    .next()
                    .expect("one schedule was asked for");
                let store = Arc::new(store);
                let (persister, task) =
                    Persister::start(store.clone(), &tokio::runtime::Handle::current(), 64, true);
                let (rebuild_sender, rebuilds) = mpsc::unbounded_channel();
                persister.on_rebuild(Box::new(move |keys| {
                    let _ = rebuild_sender.send(keys);
                }));
                let (outcome_sender, outcomes) = mpsc::unbounded_channel();
                tokio::task::yield_now().await;
                PgRig {
                    rig: Rig {
                        persister,
                        task,
                        // Unused here: the rig's balance helpers are for the memory tests.
                        memory: MemoryStore::connect("memory://")
                            .await
                            .expect("an unnamed memory store always opens"),
                        user,
                        outcome_sender,
                        outcomes,
                        rebuilds,
                    },
                    store,
                    admin,
                    user,
                    schedule: schedule.info.id,
                    seats: schedule.seats,
                    _database: database,
                }
            }

            fn reservation(&self, id: i64, seat: usize, status: ReservationStatus) -> Reservation {
                Reservation {
                    id: ReservationId::new(id).expect("test ids are positive"),
                    user: self.user,
                    schedule: self.schedule,
                    seats: vec![self.seats[seat].id],
                    total: won(10),
                    created_at: Timestamp::from_millis(1_500),
                    expires_at: Timestamp::from_millis(9_000),
                    status,
                    updated_at: Timestamp::from_millis(1_500 + id),
                    pinned: false,
                }
            }

            fn submit(&self, deps: &[Dependency], writes: Writes) {
                self.rig
                    .persister
                    .reserve(deps)
                    .expect("the rig's persister has room, and the test's deps are valid")
                    .submit(writes, self.rig.completion());
            }

            async fn sql(&mut self, sql: &str) {
                sqlx::raw_sql(sql)
                    .execute(&mut self.admin)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }

            /// The persister's backends on this database that match `condition`.
            async fn backends(&mut self, condition: &str) -> i64 {
                let sql = format!(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND application_name = 'boxoffice'
                       AND {condition}"
                );
                sqlx::query_scalar(&sql)
                    .fetch_one(&mut self.admin)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }

            /// Waits (bounded) until a backend matches `condition`, letting the loop run.
            async fn until_backend(&mut self, what: &str, condition: &str) {
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.backends(condition).await == 0 {
                    assert!(Instant::now() < deadline, "never seen: {what}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }

            /// Batch W0 takes the fast path and is held at its commit; `n`, submitted behind
            /// it, is therefore staged when W0 commits, and held at its own COMMIT by the gate
            /// of reservation `n_gate` (which `n` must write).
            async fn hold_n_committing(&mut self, n: Writes, n_deps: &[Dependency], n_gate: i64) {
                self.sql(&format!(
                    "SELECT pg_advisory_lock(7, 1), pg_advisory_lock(7, {n_gate})"
                ))
                .await;
                let w0 = self.reservation(1, 0, ReservationStatus::Pending);
                self.submit(&[(schedule(9), 0)], Writes::default().reservation(&w0));
                self.until_backend(
                    "W0's autocommitted statement waiting at its commit",
                    "wait_event = 'advisory' AND query <> 'COMMIT'",
                )
                .await;
                self.submit(n_deps, n);
                self.sql("SELECT pg_advisory_unlock(7, 1)").await;
                assert_eq!(self.rig.answers(1).await, vec![Ok(())], "W0 commits");
                self.until_backend(
                    "N's COMMIT in flight",
                    "wait_event = 'advisory' AND query = 'COMMIT'",
                )
                .await;
                assert_eq!(self.staged_behind(), 0, "N was the front, not behind W0");
            }

            fn staged_behind(&self) -> u64 {
                self.rig
                    .persister
                    .stats()
                    .staged_behind
                    .load(Ordering::Relaxed)
            }

            async fn stop(self) {
                self.rig.stop().await;
                self.store.close().await;
            }
        }

        fn ledger(id: i64, user: UserId, kind: LedgerKind, amount: i64, after: i64) -> LedgerEntry {
            LedgerEntry {
                id,
                user,
                kind,
                amount: won(amount),
                balance_after: won(after),
                payment: None,
                at: Timestamp::from_millis(1_600 + id),
            }
        }

        /// The orders the visibility rules of the module doc are about, pipelined for real: in
        /// N a seat is released, a reservation inserted and a wallet recharged; N+1, staged while
        /// N's COMMIT is held (seen waiting on N's row), takes the released seat again and
        /// cancels the inserted reservation; N+2 spends what only the recharge made room for.
        /// The database ends exactly as the writes, applied in order, say.
        #[tokio::test]
        async fn pipelined_batches_land_in_the_database_in_order() {
            let mut pg = PgRig::start().await;
            let user = pg.user;
            let released = pg.reservation(10, 1, ReservationStatus::Pending);
            pg.store
                .commit(&Writes::default().reservation(&released))
                .await
                .expect("seat 2 held before the pipeline starts");
            let released = Reservation {
                status: ReservationStatus::Expired,
                updated_at: Timestamp::from_millis(1_700),
                ..released
            };
            let inserted = pg.reservation(2, 2, ReservationStatus::Pending);
            let n = Writes::default()
                .reservation(&released)
                .reservation(&inserted)
                .wallet(WalletRecord {
                    user,
                    balance: won(150),
                    at: Timestamp::from_millis(1_700),
                })
                .ledger(ledger(1, user, LedgerKind::Recharge, 50, 150));
            pg.hold_n_committing(n, &[(schedule(1), 0), (ActorKey::Wallet(user), 0)], 2)
                .await;

            let cancelled = Reservation {
                status: ReservationStatus::Cancelled,
                updated_at: Timestamp::from_millis(1_800),
                ..inserted.clone()
            };
            let retaken = pg.reservation(3, 1, ReservationStatus::Pending);
            pg.submit(
                &[(schedule(1), 0)],
                Writes::default()
                    .reservation(&cancelled)
                    .reservation(&retaken),
            );
            pg.until_backend(
                "N+1's statements sent, waiting on N's uncommitted rows",
                "wait_event_type = 'Lock' AND wait_event = 'transactionid'",
            )
            .await;
            assert_eq!(pg.staged_behind(), 1);
            // 140 of 150: only fits after N's recharge. Money: queued, not staged early.
            pg.submit(
                &[(ActorKey::Wallet(user), 0)],
                Writes::default()
                    .wallet(WalletRecord {
                        user,
                        balance: won(10),
                        at: Timestamp::from_millis(1_900),
                    })
                    .ledger(ledger(2, user, LedgerKind::Payment, 140, 10)),
            );
            assert!(
                pg.rig.outcomes.try_recv().is_err(),
                "nothing answered before N commits"
            );
            pg.sql("SELECT pg_advisory_unlock(7, 2)").await;
            assert_eq!(pg.rig.answers(3).await, vec![Ok(()); 3]);

            let snapshot = pg.store.load_schedule(pg.schedule).await.expect("loads");
            let w0 = pg.reservation(1, 0, ReservationStatus::Pending);
            assert_eq!(
                snapshot.reservations,
                vec![w0, cancelled, retaken, released]
            );
            assert_eq!(
                pg.store.load_wallet(user).await.expect("loads"),
                Some(won(10))
            );
            let ledger = pg.store.ledger_page(user, 10, None).await.expect("loads");
            assert_eq!(ledger.len(), 2);
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM holds WHERE state IN ('PENDING', 'POSTED')",
            )
            .fetch_one(&mut pg.admin)
            .await
            .expect("counts");
            assert_eq!(
                live, 2,
                "seat 1 (W0) and seat 2 (re-taken) are held, seat 3 is free"
            );
            assert!(pg.rig.persister.is_healthy());
            pg.stop().await;
        }

        /// A payment for the reservation the batch ahead inserted: money waits for the batch
        /// ahead (nothing of it sent until then) and commits after it. (Staged early it would
        /// happen to work too, as the payment's own reservation upsert comes first, waits for N,
        /// and the foreign-key check then runs in a later statement that sees N committed; the
        /// rule does not lean on that order, and this test holds the rule.)
        #[tokio::test]
        async fn a_payment_for_a_reservation_still_committing_waits_for_it() {
            let mut pg = PgRig::start().await;
            let user = pg.user;
            let held = pg.reservation(2, 2, ReservationStatus::Pending);
            pg.hold_n_committing(Writes::default().reservation(&held), &[(schedule(1), 0)], 2)
                .await;
            let paid = Reservation {
                status: ReservationStatus::Paid,
                updated_at: Timestamp::from_millis(1_800),
                ..held.clone()
            };
            let payment = PaymentId::new(1).expect("test ids are positive");
            pg.submit(
                &[(schedule(1), 0), (ActorKey::Wallet(user), 0)],
                Writes::default()
                    .reservation(&paid)
                    .payment(PaymentRecord {
                        id: payment,
                        reservation: held.id,
                        user,
                        amount: won(10),
                        at: Timestamp::from_millis(1_800),
                    })
                    .wallet(WalletRecord {
                        user,
                        balance: won(90),
                        at: Timestamp::from_millis(1_800),
                    })
                    .ledger(LedgerEntry {
                        payment: Some(payment),
                        ..ledger(1, user, LedgerKind::Payment, 10, 90)
                    }),
            );
            // Time for the loop to take it behind N: it must send nothing of it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(pg.staged_behind(), 0);
            assert_eq!(
                pg.backends("xact_start IS NOT NULL").await,
                1,
                "only N's transaction is open"
            );
            pg.sql("SELECT pg_advisory_unlock(7, 2)").await;
            assert_eq!(pg.rig.answers(2).await, vec![Ok(()), Ok(())]);
            let snapshot = pg.store.load_schedule(pg.schedule).await.expect("loads");
            assert_eq!(
                snapshot.reservations,
                vec![pg.reservation(1, 0, ReservationStatus::Pending), paid]
            );
            assert_eq!(
                pg.store.load_wallet(user).await.expect("loads"),
                Some(won(90))
            );
            assert_eq!(pg.store.max_ids().await.expect("loads").payment, 1);
            pg.stop().await;
        }

        /// N+1's statements fail while N is still committing (it takes a seat W0 holds): N+1 is
        /// failed only once N has committed — answered, marked stale and rebuilt after N's
        /// acknowledgement, never while N could still change the database a rebuild reads.
        #[tokio::test]
        async fn a_batch_that_fails_to_stage_is_failed_only_after_the_one_ahead_commits() {
            let mut pg = PgRig::start().await;
            let n = pg.reservation(2, 2, ReservationStatus::Pending);
            pg.hold_n_committing(Writes::default().reservation(&n), &[(schedule(1), 0)], 2)
                .await;
            let clash = pg.reservation(3, 0, ReservationStatus::Pending);
            pg.submit(&[(schedule(2), 0)], Writes::default().reservation(&clash));
            let deadline = Instant::now() + Duration::from_secs(10);
            while pg.staged_behind() == 0 {
                assert!(Instant::now() < deadline, "N+1 was never staged");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Its staging fails at once (seat 1 is W0's, committed); N is still held.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(pg.rig.outcomes.try_recv().is_err(), "nothing answered yet");
            assert!(
                pg.rig.rebuilds.try_recv().is_err(),
                "no rebuild while N is unresolved"
            );
            pg.sql("SELECT pg_advisory_unlock(7, 2)").await;
            assert_eq!(
                pg.rig.answers(2).await,
                vec![Ok(()), Err(Unavailable::CommitFailed)]
            );
            let keys = pg
                .rig
                .rebuilds
                .recv()
                .await
                .expect("the hook's sender lives on");
            assert_eq!(keys, vec![(schedule(2), 1)], "only N+1's actor rebuilds");
            assert!(!pg.rig.persister.is_stale((schedule(1), 0)));
            let snapshot = pg.store.load_schedule(pg.schedule).await.expect("loads");
            assert_eq!(
                snapshot.reservations,
                vec![pg.reservation(1, 0, ReservationStatus::Pending), n]
            );
            pg.stop().await;
        }

        /// How the test makes batch N fail once N+1's statements are in.
        #[derive(Debug, Clone, Copy)]
        enum Failure {
            /// N's COMMIT runs the gate trigger, which refuses it.
            Refused,
            /// N's backend is terminated while its COMMIT waits.
            Terminated,
        }

        async fn n_fails_after_the_one_behind_it_was_staged(failure: Failure) {
            let mut pg = PgRig::start().await;
            let mut n = pg.reservation(2, 2, ReservationStatus::Pending);
            if let Failure::Refused = failure {
                n.total = won(13);
            }
            pg.hold_n_committing(Writes::default().reservation(&n), &[(schedule(1), 0)], 2)
                .await;
            let staged = pg.reservation(3, 3, ReservationStatus::Pending);
            pg.submit(&[(schedule(2), 0)], Writes::default().reservation(&staged));
            pg.until_backend(
                "N+1 staged: its transaction open, its statements done",
                "state = 'idle in transaction'",
            )
            .await;
            assert_eq!(pg.staged_behind(), 1);
            let queued = pg.reservation(4, 4, ReservationStatus::Pending);
            pg.submit(
                &[(ActorKey::Queue, 0)],
                Writes::default().reservation(&queued),
            );
            match failure {
                Failure::Refused => pg.sql("SELECT pg_advisory_unlock(7, 2)").await,
                Failure::Terminated => {
                    pg.sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = current_database() AND application_name = 'boxoffice'
                           AND query = 'COMMIT' AND wait_event = 'advisory'",
                    )
                    .await
                }
            }
            assert_eq!(
                pg.rig.answers(3).await,
                vec![Err(Unavailable::CommitFailed); 3],
                "N, N+1 and the one queued behind"
            );
            for key in [schedule(1), schedule(2), ActorKey::Queue] {
                assert!(pg.rig.persister.is_stale((key, 0)), "{key:?}");
            }
            // N+1 was rolled back, not left open: no transaction of the persister's stays.
            let deadline = Instant::now() + Duration::from_secs(10);
            while pg.backends("state LIKE 'idle in transaction%'").await > 0 {
                assert!(Instant::now() < deadline, "N+1's transaction was left open");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM reservations ORDER BY id")
                .fetch_all(&mut pg.admin)
                .await
                .expect("reads");
            assert_eq!(ids, vec![1], "only W0 is in the database");
            let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM holds")
                .fetch_one(&mut pg.admin)
                .await
                .expect("counts");
            assert_eq!(holds, 1);
            // The persister goes on: a batch from the rebuilt actors commits.
            pg.sql("SELECT pg_advisory_unlock_all()").await;
            pg.submit(&[(schedule(2), 1)], Writes::default().reservation(&staged));
            assert_eq!(pg.rig.answers(1).await, vec![Ok(())]);
            pg.stop().await;
        }

        #[tokio::test]
        async fn a_refused_commit_rolls_back_the_batch_staged_behind_it() {
            n_fails_after_the_one_behind_it_was_staged(Failure::Refused).await;
        }

        #[tokio::test]
        async fn a_terminated_commit_rolls_back_the_batch_staged_behind_it() {
            n_fails_after_the_one_behind_it_was_staged(Failure::Terminated).await;
        }
    }
}

#[cfg(test)]
mod refusals;
