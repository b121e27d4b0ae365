//! The persister: takes row writes from every actor, commits them in order in batches (one
//! transaction per batch), and only then completes the callers' replies.
//!
//! Failure protocol. When a commit fails, every submission of that batch *and every one queued
//! behind it* is answered "unavailable" (they may build on the failed writes), and every actor
//! with a write among them is marked stale at its current generation: the persister refuses
//! anything further that actor built on the undone state until it has rebuilt itself from the
//! database under a new generation. No later decision outlives the change it was built on.

use super::live_stats::LatencyHistogram;
use crate::domain::{ScheduleId, UserId};
use crate::store::{Store, Writes};
use dashmap::DashMap;
use smallvec::SmallVec;
use std::collections::VecDeque;
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
    writes: Writes,
    deps: Deps,
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
    pub submissions: AtomicU64,
    pub rows: AtomicU64,
    pub failures: AtomicU64,
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
    healthy: AtomicBool,
    rebuild: OnceLock<RebuildHook>,
    stats: PersisterStats,
}

/// A handle to the persister; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Persister {
    shared: Arc<Shared>,
}

impl Persister {
    /// Starts the commit loop on `runtime`. `capacity` bounds submissions in flight: past it,
    /// callers get a prompt "unavailable" instead of an unbounded queue.
    pub fn start(
        store: Arc<Store>,
        runtime: &tokio::runtime::Handle,
        capacity: usize,
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
            healthy: AtomicBool::new(true),
            rebuild: OnceLock::new(),
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
        })
    }

    /// Whether state at `dep`'s generation has been invalidated by a failed commit.
    pub fn is_stale(&self, dep: Dependency) -> bool {
        self.shared.is_stale(dep)
    }

    /// The generation an actor of `key` must be at for its writes to be accepted.
    pub fn min_generation(&self, key: ActorKey) -> u64 {
        self.shared.stale.get(&key).map_or(0, |g| *g)
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
}

impl Permit {
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

async fn commit_loop(shared: Arc<Shared>, store: Arc<Store>) {
    loop {
        let batch: Vec<Submission> = {
            let mut pending = lock(&shared);
            let n = pending.queue.len().min(MAX_BATCH);
            let finished = n == 0 && pending.closed && pending.reserved == 0;
            let batch = pending.queue.drain(..n).collect();
            drop(pending);
            if finished {
                break;
            }
            batch
        };
        if batch.is_empty() {
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
            }
            continue;
        }
        let last_seq = batch.last().map_or(0, |s| s.seq);
        let mut writes = Writes::default();
        let mut submissions = Vec::with_capacity(batch.len());
        for mut s in batch {
            writes.merge(std::mem::take(&mut s.writes));
            submissions.push(s);
        }
        let started = Instant::now();
        let outcome = if writes.is_empty() {
            Ok(())
        } else {
            match tokio::time::timeout(COMMIT_TIMEOUT, store.commit(&writes)).await {
                Ok(result) => result.map_err(|e| {
                    tracing::error!(error = ?e, rows = writes.len(), "batch commit failed");
                }),
                Err(_) => {
                    tracing::error!(rows = writes.len(), "batch commit timed out");
                    Err(())
                }
            }
        };
        let elapsed = started.elapsed();
        metrics::histogram!("boxoffice_persister_batch_submissions")
            .record(submissions.len() as f64);
        metrics::histogram!("boxoffice_persister_batch_rows").record(writes.len() as f64);
        metrics::histogram!("boxoffice_persister_commit_seconds").record(elapsed.as_secs_f64());
        let stats = &shared.stats;
        stats.commit_latency.record(elapsed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .submissions
            .fetch_add(submissions.len() as u64, Ordering::Relaxed);
        stats.rows.fetch_add(writes.len() as u64, Ordering::Relaxed);
        stats
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                shared.healthy.store(true, Ordering::Relaxed);
                shared.resolved_seq.fetch_max(last_seq, Ordering::AcqRel);
                for s in submissions {
                    if let Some(done) = s.done {
                        done(Ok(()));
                    }
                }
            }
            Err(()) => {
                shared.healthy.store(false, Ordering::Relaxed);
                stats.failures.fetch_add(1, Ordering::Relaxed);
                fail(&shared, submissions);
            }
        }
    }
    tracing::info!("persister drained");
}

/// Fails `failed` and everything queued behind it, marks their actors stale, asks them to rebuild.
fn fail(shared: &Shared, mut failed: Vec<Submission>) {
    let mut rebuild: Vec<(ActorKey, u64)> = Vec::new();
    {
        let mut pending = lock(shared);
        failed.extend(pending.queue.drain(..));
        for (key, generation) in failed.iter().flat_map(|s| s.deps.iter().copied()) {
            let next = generation + 1;
            shared.any_stale.store(true, Ordering::Release);
            let mut min = shared.stale.entry(key).or_insert(0);
            if *min < next {
                *min = next;
            }
            if let Some(existing) = rebuild.iter_mut().find(|(k, _)| *k == key) {
                existing.1 = existing.1.max(next);
            } else {
                rebuild.push((key, next));
            }
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
            let memory = MemoryStore::connect("memory://")
                .await
                .expect("an unnamed memory store always opens");
            let user = memory
                .create_user("kim", won(100), Timestamp::from_millis(0))
                .await
                .expect("the memory store creates users");
            let store = Arc::new(Store::Memory(memory.clone()));
            let (persister, task) =
                Persister::start(store, &tokio::runtime::Handle::current(), capacity);
            let (rebuild_sender, rebuilds) = mpsc::unbounded_channel();
            persister.on_rebuild(Box::new(move |keys| {
                // The receiver lives as long as the test that reads it.
                let _ = rebuild_sender.send(keys);
            }));
            let (outcome_sender, outcomes) = mpsc::unbounded_channel();
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
}
