//! The failure protocol, statement by statement, over a memory store whose commits fail on
//! request; then the bisection that refuses one offender alone, on the memory store and on
//! PostgreSQL.

use super::super::rig::*;
use super::super::*;

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

#[tokio::test]
async fn one_refused_submission_is_refused_alone_and_the_rest_of_its_batch_commits() {
    let (memory, user) = store_with_a_user().await;
    let mut node = Node::start(&memory, None).await;
    // Eight submissions in one batch; the fourth writes a wallet that does not exist.
    for tag in 1..=8 {
        let writes = if tag == 4 {
            balance(nobody(), 1)
        } else {
            balance(user, i64::from(tag))
        };
        node.submit(tag, &[(schedule(i64::from(tag)), 0)], writes);
    }
    let answers = node.answers(8).await;
    for (tag, outcome) in &answers {
        let expected = if *tag == 4 {
            Err(Unavailable::CommitFailed)
        } else {
            Ok(())
        };
        assert_eq!(*outcome, expected, "submission {tag}: {answers:?}");
    }
    // The last innocent write is the one stored: the others committed in order around it.
    assert_eq!(memory.load_wallet(user).await.expect("loads"), Some(won(8)));
    // Only the offender's actor rebuilds; the persister stays healthy.
    let rebuilt = node.rebuilt.recv().await.expect("the hook is called");
    assert_eq!(rebuilt, vec![(schedule(4), 1)]);
    assert!(node.rebuilt.try_recv().is_err(), "one actor, one call");
    assert!(node.persister.is_healthy());
    assert!(!node.persister.is_stale((schedule(3), 0)));
    // Bisection, not one commit per submission: 8 → 4 → 2 → 1 is at most 7 more batches.
    let batches = node.persister.stats().batches.load(Ordering::Relaxed);
    assert!((2..=8).contains(&batches), "{batches} batches");
    node.stop().await;
}

#[tokio::test]
async fn a_write_built_on_a_refused_one_is_refused_with_it_and_nothing_else() {
    let (memory, user) = store_with_a_user().await;
    let mut node = Node::start(&memory, None).await;
    node.submit(1, &[(schedule(1), 0)], balance(user, 1));
    node.submit(2, &[(schedule(2), 0)], balance(nobody(), 2));
    node.submit(3, &[(schedule(3), 0)], balance(user, 3));
    // Built on schedule 2's state, which included the refused write.
    node.submit(4, &[(schedule(2), 0)], balance(user, 4));
    node.submit(5, &[(schedule(5), 0)], balance(user, 5));
    let answers = node.answers(5).await;
    assert_eq!(
        answers,
        vec![
            (1, Ok(())),
            (2, Err(Unavailable::CommitFailed)),
            (3, Ok(())),
            (4, Err(Unavailable::Rebuilding)),
            (5, Ok(())),
        ]
    );
    assert_eq!(memory.load_wallet(user).await.expect("loads"), Some(won(5)));
    node.stop().await;
}

#[tokio::test]
async fn a_lost_database_still_fails_the_whole_batch() {
    // The ambiguous failure is not isolated: nobody can tell what was written.
    let (memory, user) = store_with_a_user().await;
    let mut node = Node::start(&memory, None).await;
    memory.fail_next_commits(1);
    for tag in 1..=4 {
        node.submit(tag, &[(schedule(i64::from(tag)), 0)], balance(user, 1));
    }
    let answers = node.answers(4).await;
    assert!(
        answers
            .iter()
            .all(|(_, a)| *a == Err(Unavailable::CommitFailed)),
        "{answers:?}"
    );
    assert!(!node.persister.is_healthy());
    node.stop().await;
}

/// Pipelined: a front refused for its content while the next batch is staged behind it. The
/// one behind is rolled back and committed again after the offender is isolated, never left
/// unanswered (nor answered with it).
#[tokio::test]
async fn the_batch_staged_behind_a_refused_one_is_rolled_back_and_committed_after_it() {
    let mut rig = Rig::start(16).await;
    rig.memory.pipeline(true);
    let gate = rig.memory.gate_commits();
    rig.submit(&[], 1);
    eventually("the first batch reaches the gate", || {
        rig.memory.commits_at_gate() == 1
    })
    .await;
    // N writes a wallet that does not exist: the commit refuses its content.
    rig.persister
        .reserve(&[(schedule(1), 0)])
        .expect("room")
        .submit(balance(nobody(), 2), rig.completion());
    gate.add_permits(1);
    assert_eq!(rig.answers(1).await, vec![Ok(())]);
    eventually("N reaches the gate, staged", || {
        rig.memory.commits_at_gate() == 2
    })
    .await;
    rig.submit(&[(schedule(2), 0)], 3);
    eventually("N+1 is staged behind N", || rig.memory.staged().0 == 2).await;
    gate.add_permits(16);
    let answers = tokio::time::timeout(Duration::from_secs(5), rig.answers(2))
        .await
        .expect("N and the batch staged behind it are both answered");
    assert_eq!(answers, vec![Err(Unavailable::CommitFailed), Ok(())]);
    assert_eq!(rig.stored_balance().await, Some(won(3)));
    assert!(
        rig.memory.staged().1 >= 1,
        "N+1's first staging was rolled back"
    );
    assert!(rig.persister.is_healthy());
    assert!(!rig.persister.is_stale((schedule(2), 0)));
    rig.stop().await;
}

/// The same refusal on PostgreSQL: its own check that every wallet written exists.
mod on_postgres {
    use super::*;
    use crate::actors::persister::rig::open_postgres as open;

    #[tokio::test]
    async fn one_refused_submission_is_refused_alone() {
        let (_database, store, user) = open().await;
        let mut node = Node::start_on(store.clone(), None).await;
        for tag in 1..=6 {
            let writes = if tag == 3 {
                balance(nobody(), 1)
            } else {
                balance(user, i64::from(tag))
            };
            node.submit(tag, &[(schedule(i64::from(tag)), 0)], writes);
        }
        let answers = node.answers(6).await;
        for (tag, outcome) in &answers {
            let expected = if *tag == 3 {
                Err(Unavailable::CommitFailed)
            } else {
                Ok(())
            };
            assert_eq!(*outcome, expected, "submission {tag}: {answers:?}");
        }
        assert_eq!(store.load_wallet(user).await.expect("loads"), Some(won(6)));
        assert!(node.persister.is_healthy());
        node.stop().await;
    }
}
