//! Test rigs shared by the persister's tests: a persister over a memory store whose commits
//! fail on request ([`Rig`]), and a node of tagged submissions, fenced or not ([`Node`]). Each
//! test runs on the current-thread runtime of `#[tokio::test]`: the commit loop only runs
//! while the test awaits, so everything submitted between two awaits is queued together,
//! deterministically.

use super::*;
pub(super) use crate::domain::{Money, Timestamp};
use crate::store::temp_databases::TempPostgres;
pub(super) use crate::store::{MemoryStore, WalletRecord};
pub(super) use std::sync::atomic::Ordering;
pub(super) use std::time::{Duration, Instant};
pub(super) use tokio::sync::mpsc;

pub(super) type Outcome = Result<(), Unavailable>;

/// How long a test waits for one answer: past every timeout the persister itself has (a
/// commit's 5 s, then the marker question's 5 s), with room for a loaded machine.
pub(super) const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

/// A persister over a fresh memory store holding one user with 100 won, and the answers
/// to what the test submits, in the order they were given.
pub(super) struct Rig {
    pub(super) persister: Persister,
    pub(super) task: tokio::task::JoinHandle<()>,
    pub(super) memory: MemoryStore,
    pub(super) user: UserId,
    pub(super) outcome_sender: mpsc::UnboundedSender<Outcome>,
    pub(super) outcomes: mpsc::UnboundedReceiver<Outcome>,
    pub(super) rebuilds: mpsc::UnboundedReceiver<Vec<(ActorKey, u64)>>,
}

impl Rig {
    pub(super) async fn start(capacity: usize) -> Rig {
        Rig::start_with(capacity, true).await
    }

    /// [`Rig::start`], with pipelining on or off (`--pipeline-commits`).
    pub(super) async fn start_with(capacity: usize, pipeline: bool) -> Rig {
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
    pub(super) fn balance(&self, amount: i64) -> Writes {
        Writes::default().wallet(WalletRecord {
            user: self.user,
            balance: won(amount),
            at: Timestamp::from_millis(1),
        })
    }

    /// What the submission is answered, as a completion that reports to `outcomes`.
    pub(super) fn completion(&self) -> Completion {
        let sender = self.outcome_sender.clone();
        Box::new(move |outcome| {
            let _ = sender.send(outcome);
        })
    }

    /// Submits a balance of `amount` built on `deps`.
    pub(super) fn submit(&self, deps: &[Dependency], amount: i64) -> u64 {
        self.persister
            .reserve(deps)
            .expect("the rig's persister has room, and the test's deps are valid")
            .submit(self.balance(amount), self.completion())
    }

    /// The next `count` answers.
    /// The next `count` answers, each within [`ANSWER_DEADLINE`]: a submission never answered
    /// fails the test instead of hanging it (a mutant that drops answers was only a timeout).
    pub(super) async fn answers(&mut self, count: usize) -> Vec<Outcome> {
        let mut all = Vec::with_capacity(count);
        for _ in 0..count {
            all.push(
                tokio::time::timeout(ANSWER_DEADLINE, self.outcomes.recv())
                    .await
                    .unwrap_or_else(|_| panic!("answer {} of {count} never came", all.len() + 1))
                    .expect("the rig holds a sender: the channel stays open"),
            );
        }
        all
    }

    /// Submits one write on each of `deps` as one batch whose commit fails.
    pub(super) async fn fail_a_batch(&mut self, deps: &[&[Dependency]]) {
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

    pub(super) async fn stored_balance(&self) -> Option<Money> {
        self.memory
            .load_wallet(self.user)
            .await
            .expect("the memory store loads wallets")
    }

    pub(super) async fn stop(self) {
        self.persister.close();
        self.task
            .await
            .expect("the commit loop ends without a panic");
    }
}

pub(super) fn won(amount: i64) -> Money {
    Money::new(amount).expect("test amounts are not negative")
}

pub(super) fn schedule(id: i64) -> ActorKey {
    ActorKey::Schedule(ScheduleId::new(id).expect("test ids are positive"))
}

/// Polls `done` while the commit loop runs, failing the test (not hanging it) after 5 s.
pub(super) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The shard names of these tests: one shard per actor.
pub(super) fn shard_of(key: ActorKey) -> String {
    format!("{key:?}")
}

/// One persister over a shared memory store, with what it answered (tagged by the test) and
/// whom it handed to its rebuild and fenced hooks.
pub(super) struct Node {
    pub(super) persister: Persister,
    pub(super) task: tokio::task::JoinHandle<()>,
    pub(super) answers: mpsc::UnboundedReceiver<(u32, Outcome)>,
    pub(super) answer_to: mpsc::UnboundedSender<(u32, Outcome)>,
    pub(super) rebuilt: mpsc::UnboundedReceiver<Vec<(ActorKey, u64)>>,
    pub(super) fenced: mpsc::UnboundedReceiver<Vec<(ActorKey, u64)>>,
}

impl Node {
    /// A persister on `memory`; fenced as `node` when one is given.
    pub(super) async fn start(memory: &MemoryStore, node: Option<&str>) -> Node {
        Node::start_on(Arc::new(Store::Memory(memory.clone())), node).await
    }

    /// A persister on any store; fenced as `node` when one is given.
    pub(super) async fn start_on(store: Arc<Store>, node: Option<&str>) -> Node {
        let (persister, task) =
            Persister::start(store, &tokio::runtime::Handle::current(), 1024, false);
        let (rebuild_to, rebuilt) = mpsc::unbounded_channel();
        persister.on_rebuild(Box::new(move |keys| {
            // The receiver lives as long as the test that reads it.
            let _ = rebuild_to.send(keys);
        }));
        let (fenced_to, fenced) = mpsc::unbounded_channel();
        persister.on_fenced(Box::new(move |keys| {
            let _ = fenced_to.send(keys);
        }));
        if let Some(node) = node {
            persister.fence_with(Fencing {
                node: node.to_string(),
                shard_of: Box::new(shard_of),
            });
        }
        let (answer_to, answers) = mpsc::unbounded_channel();
        // Let the loop park on an empty queue first, whatever the scheduler did.
        tokio::task::yield_now().await;
        Node {
            persister,
            task,
            answers,
            answer_to,
            rebuilt,
            fenced,
        }
    }

    /// Takes `key`'s shard on the memory store's lease table, under the next epoch, and holds
    /// it: what a takeover does before the shard's actors load.
    pub(super) fn take(&self, memory: &MemoryStore, key: ActorKey, name: &str) -> u64 {
        let epoch = memory.take_lease(&shard_of(key), name);
        self.persister.hold_shard(&shard_of(key), epoch);
        epoch
    }

    /// Submits `writes` built on `deps`, its answer tagged `tag`.
    pub(super) fn submit(&self, tag: u32, deps: &[Dependency], writes: Writes) {
        let to = self.answer_to.clone();
        match self.persister.reserve(deps) {
            Ok(permit) => {
                permit.submit(
                    writes,
                    Box::new(move |outcome| {
                        let _ = to.send((tag, outcome));
                    }),
                );
            }
            // Refused at once (its actor is stale): answered like any other refusal.
            Err(refused) => {
                let _ = to.send((tag, Err(refused)));
            }
        }
    }

    /// The next `count` answers, sorted by tag.
    pub(super) async fn answers(&mut self, count: usize) -> Vec<(u32, Outcome)> {
        let mut all = Vec::with_capacity(count);
        for _ in 0..count {
            let answer = tokio::time::timeout(Duration::from_secs(5), self.answers.recv())
                .await
                .expect("every submission is answered within 5 s")
                .expect("the node holds a sender: the channel stays open");
            all.push(answer);
        }
        all.sort_by_key(|(tag, _)| *tag);
        all
    }

    pub(super) async fn stop(self) {
        self.persister.close();
        self.task
            .await
            .expect("the commit loop ends without a panic");
    }
}

/// A memory store with one user of 100 won, and that user.
pub(super) async fn store_with_a_user() -> (MemoryStore, UserId) {
    let memory = MemoryStore::connect("memory://")
        .await
        .expect("an unnamed memory store always opens");
    let user = memory
        .create_user("kim", won(100), Timestamp::from_millis(0))
        .await
        .expect("the memory store creates users");
    (memory, user)
}

/// A balance write the store accepts (the user exists) or refuses (it does not).
pub(super) fn balance(user: UserId, amount: i64) -> Writes {
    Writes::default().wallet(WalletRecord {
        user,
        balance: won(amount),
        at: Timestamp::from_millis(1),
    })
}

pub(super) fn nobody() -> UserId {
    UserId::new(999).expect("a positive id")
}

/// A migrated database with one user, and the cluster tables' two nodes registered.
pub(super) async fn open_postgres() -> (TempPostgres, Arc<Store>, UserId) {
    let database = TempPostgres::create().await;
    let store = Store::connect_cluster(&database.url(), Duration::from_secs(5))
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    let user = store
        .create_user("kim", won(100), Timestamp::from_millis(0))
        .await
        .expect("create a user");
    let cluster = store.cluster().expect("PostgreSQL has a cluster store");
    for node in ["a", "b"] {
        cluster
            .register(node, "http://127.0.0.1:1", Duration::from_secs(60))
            .await
            .expect("register");
    }
    (database, Arc::new(store), user)
}
