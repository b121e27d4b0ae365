//! The staged pipeline on a memory store that pipelines and gates its commits, then on a real
//! PostgreSQL.

use super::super::rig::*;
use super::super::*;

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
async fn when_the_batch_ahead_commits_and_the_one_behind_fails_only_the_first_is_acknowledged() {
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

/// The pipeline on a real PostgreSQL (see `pg_rig` for the gate that holds a batch at its
/// COMMIT).
mod on_postgres {
    use super::super::super::pg_rig::PgRig;
    use super::*;
    use crate::domain::schedule::{Reservation, ReservationStatus};
    use crate::domain::PaymentId;
    use crate::store::{LedgerEntry, LedgerKind, PaymentRecord};

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
    /// cancels a reservation stored before N; N+2 spends what only the recharge made room for.
    /// The database ends exactly as the writes, applied in order, say.
    #[tokio::test]
    async fn pipelined_batches_land_in_the_database_in_order() {
        let mut pg = PgRig::start().await;
        let user = pg.user;
        let released = pg.reservation(10, 1, ReservationStatus::Pending);
        let kept = pg.reservation(4, 3, ReservationStatus::Pending);
        pg.store
            .commit(
                &Writes::default()
                    .created_reservation(&released)
                    .created_reservation(&kept),
            )
            .await
            .expect("seats 2 and 4 held before the pipeline starts");
        let released = Reservation {
            status: ReservationStatus::Expired,
            updated_at: Timestamp::from_millis(1_700),
            ..released
        };
        let inserted = pg.reservation(2, 2, ReservationStatus::Pending);
        let n = Writes::default()
            .reservation(&released)
            .created_reservation(&inserted)
            .wallet(WalletRecord {
                user,
                balance: won(150),
                at: Timestamp::from_millis(1_700),
            })
            .ledger(ledger(1, user, LedgerKind::Recharge, 50, 150));
        pg.hold_n_committing(n, &[(schedule(1), 0), (ActorKey::Wallet(user), 0)], 2)
            .await;

        // N+1 cancels a reservation stored before N (an update of a row N does not insert:
        // an update of one it does would not wait for it, so such a batch is not staged) and
        // takes the seat N releases.
        let cancelled = Reservation {
            status: ReservationStatus::Cancelled,
            updated_at: Timestamp::from_millis(1_800),
            ..kept.clone()
        };
        let retaken = pg.reservation(3, 1, ReservationStatus::Pending);
        pg.submit(
            &[(schedule(1), 0)],
            Writes::default()
                .reservation(&cancelled)
                .created_reservation(&retaken),
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
            vec![w0, inserted, retaken, cancelled, released]
        );
        assert_eq!(
            pg.store.load_wallet(user).await.expect("loads"),
            Some(won(10))
        );
        let ledger = pg.store.ledger_page(user, 10, None).await.expect("loads");
        assert_eq!(ledger.len(), 2);
        let live: i64 =
            sqlx::query_scalar("SELECT count(*) FROM holds WHERE state IN ('PENDING', 'POSTED')")
                .fetch_one(&mut pg.admin)
                .await
                .expect("counts");
        assert_eq!(
            live, 3,
            "seat 1 (W0), seat 2 (re-taken) and seat 3 (inserted) are held, seat 4 is free"
        );
        assert!(pg.rig.persister.is_healthy());
        pg.stop().await;
    }

    /// A status change of the reservation the batch ahead inserts: a plain `UPDATE` staged
    /// behind N would not wait for N's uncommitted row, find nothing and change nothing. It is
    /// held instead (nothing sent) until N commits, then lands.
    #[tokio::test]
    async fn a_status_change_of_a_reservation_the_batch_ahead_creates_waits_for_it() {
        let mut pg = PgRig::start().await;
        let held = pg.reservation(2, 2, ReservationStatus::Pending);
        pg.hold_n_committing(
            Writes::default().created_reservation(&held),
            &[(schedule(1), 0)],
            2,
        )
        .await;
        let cancelled = Reservation {
            status: ReservationStatus::Cancelled,
            updated_at: Timestamp::from_millis(1_800),
            ..held.clone()
        };
        pg.submit(
            &[(schedule(1), 0)],
            Writes::default().reservation(&cancelled),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pg.staged_behind(), 0, "not staged behind the insert");
        assert_eq!(
            pg.backends("state LIKE 'idle in transaction%'").await,
            0,
            "nothing of it sent"
        );
        pg.sql("SELECT pg_advisory_unlock(7, 2)").await;
        assert_eq!(pg.rig.answers(2).await, vec![Ok(()); 2]);
        let stored = pg
            .store
            .load_reservation(held.id)
            .await
            .expect("loads")
            .expect("stored");
        assert_eq!(stored.reservation, cancelled);
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM holds WHERE reservation_id = 2 AND state = 'VOIDED'",
        )
        .fetch_one(&mut pg.admin)
        .await
        .expect("counts");
        assert_eq!(live, 1, "its hold row was updated too");
        pg.stop().await;
    }

    /// A payment for the reservation the batch ahead inserted: money waits for the batch
    /// ahead (nothing of it sent until then) and commits after it. (Staged early, its status
    /// update of that reservation would find no row to change: the rule keeps it out twice
    /// over, as money and as an update of a row the batch ahead inserts.)
    #[tokio::test]
    async fn a_payment_for_a_reservation_still_committing_waits_for_it() {
        let mut pg = PgRig::start().await;
        let user = pg.user;
        let held = pg.reservation(2, 2, ReservationStatus::Pending);
        pg.hold_n_committing(
            Writes::default().created_reservation(&held),
            &[(schedule(1), 0)],
            2,
        )
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
        pg.hold_n_committing(
            Writes::default().created_reservation(&n),
            &[(schedule(1), 0)],
            2,
        )
        .await;
        let clash = pg.reservation(3, 0, ReservationStatus::Pending);
        pg.submit(
            &[(schedule(2), 0)],
            Writes::default().created_reservation(&clash),
        );
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
        pg.hold_n_committing(
            Writes::default().created_reservation(&n),
            &[(schedule(1), 0)],
            2,
        )
        .await;
        let staged = pg.reservation(3, 3, ReservationStatus::Pending);
        pg.submit(
            &[(schedule(2), 0)],
            Writes::default().created_reservation(&staged),
        );
        pg.until_backend(
            "N+1 staged: its transaction open, its statements done",
            "state = 'idle in transaction'",
        )
        .await;
        assert_eq!(pg.staged_behind(), 1);
        let queued = pg.reservation(4, 4, ReservationStatus::Pending);
        pg.submit(
            &[(ActorKey::Queue, 0)],
            Writes::default().created_reservation(&queued),
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
        pg.submit(
            &[(schedule(2), 1)],
            Writes::default().created_reservation(&staged),
        );
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
