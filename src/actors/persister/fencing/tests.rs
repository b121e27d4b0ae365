//! Fencing (cluster mode): a submission decided under a shard epoch that has moved on is
//! refused by the fence alone, a node writes nothing of a shard it does not hold, and two
//! owners of one shard never commit under a stale epoch. Run on the memory store, whose
//! fenced commit checks the claims and applies the batch under one lock (as PostgreSQL does
//! in one transaction), and on PostgreSQL.

use super::super::rig::*;
use super::super::*;
use proptest::prelude::*;

#[tokio::test]
async fn a_paused_ex_owner_finds_its_commit_refused_and_the_rest_of_its_batch_commits() {
    let (memory, user) = store_with_a_user().await;
    let mut a = Node::start(&memory, Some("a")).await;
    let mut b = Node::start(&memory, Some("b")).await;
    let (hot, other) = (schedule(1), schedule(2));
    let epoch = a.take(&memory, hot, "a");
    let other_epoch = a.take(&memory, other, "a");
    a.submit(1, &[(hot, generation_under(epoch))], balance(user, 1));
    assert_eq!(a.answers(1).await, vec![(1, Ok(()))]);

    // a pauses; its lease runs out and b takes the shard under the next epoch.
    // a is not told: it still believes it holds the shard at the old epoch.
    let taken = b.take(&memory, hot, "b");
    assert_eq!(taken, epoch + 1);
    // a wakes up and commits what it decided under its old epoch, beside a write of a shard
    // it still holds: only the first is refused.
    a.submit(2, &[(hot, generation_under(epoch))], balance(user, 2));
    a.submit(
        3,
        &[(other, generation_under(other_epoch))],
        balance(user, 3),
    );
    assert_eq!(
        a.answers(2).await,
        vec![(2, Err(Unavailable::Fenced)), (3, Ok(()))]
    );
    let fenced = hooked(a.fenced.recv())
        .await
        .expect("the fenced hook is called");
    assert_eq!(fenced, vec![(hot, generation_under(epoch) + 1)]);
    assert!(
        a.rebuilt.try_recv().is_err(),
        "fenced actors are not rebuilt"
    );
    assert_eq!(
        a.persister.stats().fence_refusals.load(Ordering::Relaxed),
        1
    );
    // The new owner commits under its epoch.
    b.submit(4, &[(hot, generation_under(taken))], balance(user, 4));
    assert_eq!(b.answers(1).await, vec![(4, Ok(()))]);
    assert_eq!(memory.load_wallet(user).await.expect("loads"), Some(won(4)));
    assert_eq!(
        memory.fence_audit(),
        vec![
            (shard_of(hot), 1, "a".to_string()),
            (shard_of(other), 1, "a".to_string()),
            (shard_of(hot), 2, "b".to_string()),
        ]
    );
    a.stop().await;
    b.stop().await;
}

/// A payment committed at the wallet's owner for a schedule another node holds: its claim on
/// that node's epoch is checked in the same commit; once the schedule moves, that submission
/// alone is refused, and the committing node keeps the shards it holds itself.
#[tokio::test]
async fn a_claim_on_another_nodes_shard_holds_until_that_shard_moves() {
    let (memory, user) = store_with_a_user().await;
    let mut w = Node::start(&memory, Some("w")).await;
    let wallet = ActorKey::Wallet(user);
    let wallet_epoch = w.take(&memory, wallet, "w");
    let schedule_epoch = memory.take_lease(&shard_of(schedule(1)), "o");
    let claim = |epoch: u64| crate::store::Fence {
        shard: shard_of(schedule(1)),
        epoch,
        owner: Some("o".into()),
    };
    let submit_claiming = |w: &Node, tag: u32, claim: crate::store::Fence, amount: i64| {
        let to = w.answer_to.clone();
        w.persister
            .reserve(&[(wallet, generation_under(wallet_epoch))])
            .expect("room")
            .claiming(vec![claim])
            .submit(
                balance(user, amount),
                Box::new(move |outcome| {
                    let _ = to.send((tag, outcome));
                }),
            );
    };
    submit_claiming(&w, 1, claim(schedule_epoch), 1);
    assert_eq!(w.answers(1).await, vec![(1, Ok(()))]);
    // The schedule moves on (o lost it); the next payment claiming o's epoch is refused, its
    // neighbour built on another shard w holds commits, and w still holds its wallet: the
    // wallet rebuilds (its debit was not written) rather than being dropped.
    let own = w.take(&memory, schedule(2), "w");
    let moved = memory.take_lease(&shard_of(schedule(1)), "p");
    submit_claiming(&w, 2, claim(schedule_epoch), 2);
    w.submit(3, &[(schedule(2), generation_under(own))], balance(user, 3));
    assert_eq!(
        w.answers(2).await,
        vec![(2, Err(Unavailable::Fenced)), (3, Ok(()))]
    );
    assert_eq!(
        w.persister.held_epoch(&shard_of(wallet)),
        Some(wallet_epoch)
    );
    assert_eq!(
        hooked(w.rebuilt.recv())
            .await
            .expect("the rebuild hook is called"),
        vec![(wallet, generation_under(wallet_epoch) + 1)]
    );
    assert!(w.fenced.try_recv().is_err(), "nothing of w's is dropped");
    assert_eq!(memory.load_wallet(user).await.expect("loads"), Some(won(3)));
    // Audited under the claim's owner: whose epoch the write was decided under.
    assert_eq!(
        memory.fence_audit(),
        vec![
            (shard_of(wallet), wallet_epoch, "w".to_string()),
            (shard_of(schedule(1)), schedule_epoch, "o".to_string()),
            (shard_of(schedule(2)), own, "w".to_string()),
        ]
    );
    assert!(moved > schedule_epoch);
    w.stop().await;
}

#[tokio::test]
async fn a_fenced_node_writes_nothing_of_a_shard_it_does_not_hold() {
    // Never taken, or state loaded under an older epoch than the one held: refused before it
    // is queued, and the database is never asked.
    let (memory, user) = store_with_a_user().await;
    let mut a = Node::start(&memory, Some("a")).await;
    a.submit(1, &[(schedule(1), 0)], balance(user, 1));
    assert_eq!(a.answers(1).await, vec![(1, Err(Unavailable::Rebuilding))]);
    let first = a.take(&memory, schedule(1), "a");
    let second = a.take(&memory, schedule(1), "a");
    assert_eq!(
        a.persister.min_generation(schedule(1)),
        generation_under(second)
    );
    a.submit(
        2,
        &[(schedule(1), generation_under(first))],
        balance(user, 2),
    );
    a.submit(
        3,
        &[(schedule(1), generation_under(second))],
        balance(user, 3),
    );
    assert_eq!(
        a.answers(2).await,
        vec![(2, Err(Unavailable::Rebuilding)), (3, Ok(()))]
    );
    assert_eq!(memory.load_wallet(user).await.expect("loads"), Some(won(3)));
    assert_eq!(
        memory.fence_audit(),
        vec![(shard_of(schedule(1)), second, "a".to_string())]
    );
    // Once the fence has refused a shard, the node stops sending its writes at all.
    b_takes_it_and_a_finds_out(&memory, &mut a, user).await;
    a.stop().await;
}

/// Letting a shard go (released, or found taken over) stops its writes before they are
/// queued, unless the node took it again under a newer epoch meanwhile: the database's fence
/// would refuse them too, but only after a round trip each.
#[tokio::test]
async fn a_lost_shard_is_not_written_unless_it_was_retaken_since() {
    let (memory, user) = store_with_a_user().await;
    let mut a = Node::start(&memory, Some("a")).await;
    let shard = shard_of(schedule(1));
    assert_eq!(a.persister.node_id().as_deref(), Some("a"));
    assert!(a.persister.held_shards().is_empty(), "nothing taken yet");
    let first = a.take(&memory, schedule(1), "a");
    let second = a.take(&memory, schedule(1), "a");
    assert_eq!(a.persister.held_shards(), vec![(shard.clone(), second)]);
    // News of the first epoch's end, arriving after the retake: the newer hold stays.
    a.persister.lose_shard(&shard, first);
    assert_eq!(a.persister.held_epoch(&shard), Some(second));
    assert!(a.persister.may_write(schedule(1)));
    a.persister.lose_shard(&shard, second);
    assert_eq!(a.persister.held_epoch(&shard), None);
    assert!(
        a.persister.held_shards().is_empty(),
        "nothing held any more"
    );
    assert!(!a.persister.may_write(schedule(1)));
    a.submit(
        1,
        &[(schedule(1), generation_under(second))],
        balance(user, 1),
    );
    assert_eq!(a.answers(1).await, vec![(1, Err(Unavailable::Rebuilding))]);
    assert!(
        memory.fence_audit().is_empty(),
        "the database was never asked"
    );
    a.stop().await;
}

async fn b_takes_it_and_a_finds_out(memory: &MemoryStore, a: &mut Node, user: UserId) {
    let held = a
        .persister
        .held_epoch(&shard_of(schedule(1)))
        .expect("a holds it");
    memory.take_lease(&shard_of(schedule(1)), "b");
    a.submit(
        4,
        &[(schedule(1), generation_under(held))],
        balance(user, 4),
    );
    assert_eq!(a.answers(1).await, vec![(4, Err(Unavailable::Fenced))]);
    assert_eq!(a.persister.held_epoch(&shard_of(schedule(1))), None);
    a.submit(
        5,
        &[(schedule(1), generation_under(held))],
        balance(user, 5),
    );
    assert_eq!(a.answers(1).await, vec![(5, Err(Unavailable::Rebuilding))]);
}

/// One step of two nodes sharing one shard.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The node takes the shard (the other's lease has run out), under the next epoch.
    Take(usize),
    /// The node commits a write decided under the epoch it last took.
    Write(usize),
    /// Both nodes' commit loops run until everything submitted is answered.
    Settle,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..2usize).prop_map(Step::Take),
        3 => (0..2usize).prop_map(Step::Write),
        1 => Just(Step::Settle),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Two owners of one shard, any interleaving of takeovers and writes: every commit is
    /// made under the epoch that held at that moment (epochs in the audit never go back, and
    /// each one is its taker's), and a write decided under an epoch that was taken over
    /// before it was submitted is never acknowledged.
    #[test]
    fn two_owners_of_one_shard_never_commit_under_a_stale_epoch(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        runtime.block_on(async {
            let (memory, user) = store_with_a_user().await;
            let names = ["a", "b"];
            let mut nodes = vec![
                Node::start(&memory, Some(names[0])).await,
                Node::start(&memory, Some(names[1])).await,
            ];
            let shard = schedule(1);
            // Epoch each node last took (0: never), who took each epoch, the newest epoch.
            let mut held = [0u64; 2];
            let mut taker: Vec<usize> = vec![usize::MAX];
            let mut newest = 0u64;
            // Per submission: the node, its epoch, and whether it was stale when submitted.
            let mut sent: Vec<(usize, u64, bool)> = Vec::new();
            let mut waiting = [0usize; 2];
            let mut outcomes: Vec<(u32, Outcome)> = Vec::new();
            for step in steps {
                match step {
                    Step::Take(n) => {
                        newest = nodes[n].take(&memory, shard, names[n]);
                        held[n] = newest;
                        taker.push(n);
                    }
                    Step::Write(n) if held[n] > 0 => {
                        let tag = u32::try_from(sent.len()).expect("under 40 steps");
                        sent.push((n, held[n], held[n] != newest));
                        waiting[n] += 1;
                        nodes[n].submit(tag, &[(shard, generation_under(held[n]))], balance(user, 1));
                    }
                    Step::Write(_) => {}
                    Step::Settle => {
                        for (n, node) in nodes.iter_mut().enumerate() {
                            outcomes.extend(node.answers(std::mem::take(&mut waiting[n])).await);
                        }
                    }
                }
            }
            for (n, node) in nodes.iter_mut().enumerate() {
                outcomes.extend(node.answers(waiting[n]).await);
            }
            for (tag, outcome) in &outcomes {
                let (_, _, stale_when_sent) = sent[*tag as usize];
                prop_assert!(
                    !(stale_when_sent && outcome.is_ok()),
                    "submission {tag} decided under a taken-over epoch was acknowledged"
                );
                prop_assert!(
                    outcome.is_ok() || *outcome == Err(Unavailable::Fenced)
                        || *outcome == Err(Unavailable::Rebuilding),
                    "{outcome:?}"
                );
            }
            let audit = memory.fence_audit();
            let acknowledged = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
            // One row per fenced batch: several acknowledged writes may share one.
            prop_assert!(audit.len() <= acknowledged && (acknowledged == 0) == audit.is_empty());
            for pair in audit.windows(2) {
                prop_assert!(pair[0].1 <= pair[1].1, "epochs went back: {:?}", pair);
            }
            for (_, epoch, node) in &audit {
                prop_assert_eq!(node.as_str(), names[taker[*epoch as usize]], "epoch {} committed by a node that did not take it", epoch);
            }
            for node in nodes {
                node.stop().await;
            }
            Ok(())
        })?;
    }
}

/// The same refusal on PostgreSQL: its fence, the lease rows read `FOR SHARE` in the batch's
/// transaction.
mod on_postgres {
    use super::*;
    use crate::actors::persister::rig::open_postgres as open;

    #[tokio::test]
    async fn a_stale_epoch_is_refused_alone_and_audited_never() {
        let (_database, store, user) = open().await;
        let cluster = store.cluster().expect("PostgreSQL has a cluster store");
        let (hot, other) = (schedule(1), schedule(2));
        let epoch = cluster
            .acquire(&shard_of(hot), "a")
            .await
            .expect("acquire")
            .expect("free");
        let other_epoch = cluster
            .acquire(&shard_of(other), "a")
            .await
            .expect("acquire")
            .expect("free");
        let mut a = Node::start_on(store.clone(), Some("a")).await;
        a.persister.hold_shard(&shard_of(hot), epoch);
        a.persister.hold_shard(&shard_of(other), other_epoch);
        // a lets the hot shard go (as a graceful leave would) and b takes it.
        assert!(cluster
            .release(&shard_of(hot), "a", epoch)
            .await
            .expect("release"));
        let newer = cluster
            .acquire(&shard_of(hot), "b")
            .await
            .expect("acquire")
            .expect("released");
        a.submit(1, &[(hot, generation_under(epoch))], balance(user, 1));
        a.submit(
            2,
            &[(other, generation_under(other_epoch))],
            balance(user, 2),
        );
        assert_eq!(
            a.answers(2).await,
            vec![(1, Err(Unavailable::Fenced)), (2, Ok(()))]
        );
        assert_eq!(store.load_wallet(user).await.expect("loads"), Some(won(2)));
        let fenced = hooked(a.fenced.recv())
            .await
            .expect("the fenced hook is called");
        assert_eq!(fenced, vec![(hot, generation_under(epoch) + 1)]);
        assert_eq!(cluster.audit_violations().await.expect("audit"), 0);
        let leases = cluster.leases().await.expect("leases");
        let hot_lease = leases
            .iter()
            .find(|l| l.shard == shard_of(hot))
            .expect("the hot shard has a lease");
        assert_eq!(
            (hot_lease.owner.as_deref(), hot_lease.epoch),
            (Some("b"), newer)
        );
        a.stop().await;
    }
}

/// A single node never installs the fence: no fencing state is built, every actor may write,
/// and its batches carry no claim (the commit loop asserts it of every batch it sends).
#[tokio::test]
async fn a_single_node_builds_nothing_of_fencing_and_fences_nothing() {
    let (memory, user) = store_with_a_user().await;
    let mut node = Node::start(&memory, None).await;
    node.submit(1, &[(schedule(1), 0)], balance(user, 1));
    node.submit(2, &[(ActorKey::Wallet(user), 0)], balance(user, 2));
    assert_eq!(node.answers(2).await, vec![(1, Ok(())), (2, Ok(()))]);
    assert!(node.persister.shared.fence.get().is_none());
    assert!(node.persister.may_write(schedule(1)));
    assert_eq!(node.persister.node_id(), None);
    assert!(node.persister.held_shards().is_empty());
    assert_eq!(node.persister.min_generation(schedule(1)), 0);
    assert!(memory.fence_audit().is_empty(), "no fenced commit was made");
    node.stop().await;
}

/// The fence state alone, as `fence_with` builds it, holding nothing.
fn fence_state() -> super::FenceState {
    super::FenceState {
        fencing: Fencing {
            node: "a".to_string(),
            shard_of: Box::new(shard_of),
        },
        held: dashmap::DashMap::new(),
    }
}

/// A submission decided on `deps`, with claims on other nodes' shards `remote`.
fn decided(seq: u64, deps: &[Dependency], remote: Vec<crate::store::Fence>) -> Submission {
    Submission {
        seq,
        writes: Writes::default(),
        deps: deps.iter().copied().collect(),
        remote,
        done: None,
    }
}

/// What a batch is fenced on: each claim once, whichever submissions share it, nothing for a
/// dependency loaded outside cluster mode (epoch 0), and the claims on other nodes' shards.
#[test]
fn a_batch_claims_each_epoch_once_and_nothing_for_epoch_zero() {
    let state = fence_state();
    let remote = crate::store::Fence {
        shard: shard_of(schedule(9)),
        epoch: 4,
        owner: Some("o".into()),
    };
    let (hot, other) = (schedule(1), schedule(2));
    let mut claims = super::Claims::default();
    state.claim(
        &decided(1, &[(hot, generation_under(3))], Vec::new()),
        &mut claims,
    );
    state.claim(
        &decided(2, &[(hot, generation_under(3) + 1)], vec![remote.clone()]),
        &mut claims,
    );
    state.claim(
        &decided(3, &[(other, 7)], vec![remote.clone()]),
        &mut claims,
    );
    assert_eq!(
        claims.fences,
        vec![crate::store::Fence::own(shard_of(hot), 3), remote]
    );
}

/// The commit loop's assertion that no write leaves without the claim it was decided under:
/// it must tell a batch missing one (its own shard's, or another node's) from one carrying all.
#[test]
fn a_batch_missing_a_claim_is_told_from_one_that_carries_them_all() {
    let state = fence_state();
    let remote = crate::store::Fence {
        shard: shard_of(schedule(9)),
        epoch: 4,
        owner: Some("o".into()),
    };
    let own = crate::store::Fence::own(shard_of(schedule(1)), 3);
    use super::super::batch::Batch;
    let batch = |submissions: Vec<Submission>, fences: Vec<crate::store::Fence>| Batch {
        submissions,
        writes: Arc::new(Writes::default()),
        fences,
        last_seq: 0,
        started: Instant::now(),
    };
    let paying = || {
        decided(
            1,
            &[(schedule(1), generation_under(3))],
            vec![remote.clone()],
        )
    };
    let unfenced = || decided(2, &[(schedule(2), 5)], Vec::new());
    assert!(state.carries_its_epochs(&batch(
        vec![paying(), unfenced()],
        vec![own.clone(), remote.clone()]
    )));
    assert!(state.carries_its_epochs(&batch(vec![unfenced()], Vec::new())));
    assert!(!state.carries_its_epochs(&batch(vec![paying()], vec![remote.clone()])));
    assert!(!state.carries_its_epochs(&batch(vec![paying()], vec![own.clone()])));
    // Which submissions a refusal of `own` names: those decided under it, by their own shard
    // or by their claim on another node's.
    assert!(state.decided_under(&paying(), std::slice::from_ref(&own)));
    assert!(state.decided_under(&paying(), std::slice::from_ref(&remote)));
    assert!(!state.decided_under(&unfenced(), &[own, remote]));
}

/// A hook's call, awaited within the rig's answer deadline: a hook never called fails the
/// test instead of hanging it.
async fn hooked<T>(call: impl std::future::Future<Output = Option<T>>) -> Option<T> {
    tokio::time::timeout(ANSWER_DEADLINE, call)
        .await
        .unwrap_or_else(|_| panic!("the hook was not called within {ANSWER_DEADLINE:?}"))
}
