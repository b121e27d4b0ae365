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

    const POSTGRES: &str = "127.0.0.1:5432";

    /// A backend's state, wait and query, as a failed wait prints them.
    type Session = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );

    /// A TCP proxy to PostgreSQL whose connections the test can cut at once, as a network
    /// does: both sides see their socket closed, and new connections go through again.
    struct Proxy {
        address: String,
        cuts: tokio::sync::watch::Sender<u64>,
    }

    impl Proxy {
        async fn start() -> Proxy {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a free loopback port");
            let address = listener.local_addr().expect("bound").to_string();
            let (cuts, _) = tokio::sync::watch::channel(0u64);
            let watch = cuts.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let mut cut = watch.subscribe();
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(POSTGRES).await else {
                            return;
                        };
                        let (mut client_read, mut client_write) = client.into_split();
                        let (mut server_read, mut server_write) = server.into_split();
                        let seen = *cut.borrow_and_update();
                        // Whichever ends first, both sockets are dropped: closed.
                        tokio::select! {
                            _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                            _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                            _ = cut.wait_for(|n| *n != seen) => {}
                        }
                    });
                }
            });
            Proxy { address, cuts }
        }

        /// Closes every connection open now.
        fn cut(&self) {
            self.cuts.send_modify(|n| *n += 1);
        }
    }

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
            PgRig::start_via(None).await
        }

        /// The rig with the store's connections through `proxy` (the test's own session
        /// connects directly).
        async fn start_via(proxy: Option<&Proxy>) -> PgRig {
            let database = TempPostgres::create().await;
            let mut url = database.url();
            if let Some(proxy) = proxy {
                assert!(url.contains(POSTGRES), "{url}");
                url = url.replace(POSTGRES, &proxy.address);
            }
            let store = Store::connect(&url)
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
                if Instant::now() >= deadline {
                    let seen: Vec<Session> = sqlx::query_as(
                        "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity
                             WHERE datname = current_database() AND application_name = 'boxoffice'",
                    )
                    .fetch_all(&mut self.admin)
                    .await
                    .unwrap_or_default();
                    panic!("never seen: {what}; the persister's sessions: {seen:#?}");
                }
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
            self.submit(
                &[(schedule(9), 0)],
                Writes::default().created_reservation(&w0),
            );
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

    /// How the test ends batch N after cutting its connection during its COMMIT.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum AfterTheCut {
        /// The gate opens: N commits, though nobody hears it.
        Commits,
        /// N's backend is terminated: N never commits.
        Terminated,
    }

    /// N's connection is cut while its COMMIT waits at the gate: the persister cannot know
    /// whether N committed. It asks N's marker, and the question waits for N's transaction
    /// (seen waiting on it) until N ends one way or the other. Committed, N is acknowledged
    /// once and stored once; not committed, it is refused, its actor rebuilt, nothing stored,
    /// and the persister goes on.
    async fn a_commit_cut_off(after: AfterTheCut) {
        let proxy = Proxy::start().await;
        let mut pg = PgRig::start_via(Some(&proxy)).await;
        pg.sql("SELECT pg_advisory_lock(7, 2)").await;
        let n = pg.reservation(2, 2, ReservationStatus::Pending);
        pg.submit(
            &[(schedule(1), 0)],
            Writes::default().created_reservation(&n),
        );
        let committing =
            "wait_event = 'advisory' AND query NOT LIKE '%batch_markers (id, at_ms) VALUES%'";
        pg.until_backend("N waiting at its commit", committing)
            .await;
        proxy.cut();
        pg.until_backend(
            "the question waiting for N's transaction",
            "wait_event_type = 'Lock' AND query LIKE '%batch_markers (id, at_ms) VALUES%'",
        )
        .await;
        assert!(pg.rig.outcomes.try_recv().is_err(), "nothing answered yet");
        match after {
            AfterTheCut::Commits => pg.sql("SELECT pg_advisory_unlock(7, 2)").await,
            AfterTheCut::Terminated => {
                pg.sql(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND {committing}"
                ))
                .await
            }
        }
        match after {
            AfterTheCut::Commits => {
                assert_eq!(pg.rig.answers(1).await, vec![Ok(())]);
                assert!(pg.rig.rebuilds.try_recv().is_err(), "nothing to rebuild");
            }
            AfterTheCut::Terminated => {
                assert_eq!(
                    pg.rig.answers(1).await,
                    vec![Err(Unavailable::CommitFailed)]
                );
                assert!(pg.rig.persister.is_stale((schedule(1), 0)));
            }
        }
        assert_eq!(
            pg.rig
                .persister
                .stats()
                .uncertain_commits
                .load(Ordering::Relaxed),
            1
        );
        let rows: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM reservations WHERE id = 2),
                    (SELECT count(*) FROM holds WHERE reservation_id = 2)",
        )
        .fetch_one(&mut pg.admin)
        .await
        .expect("counts");
        let expected = match after {
            AfterTheCut::Commits => (1, 1),
            AfterTheCut::Terminated => (0, 0),
        };
        assert_eq!(rows, expected);
        // The persister goes on, through new connections, once the pool has found the cut ones
        // dead (each is found by the first statement sent on it).
        pg.sql("SELECT pg_advisory_unlock_all()").await;
        let mut tries = 0;
        while pg.store.ping().await.is_err() {
            tries += 1;
            assert!(tries < 16, "the pool never reached the database again");
        }
        let next = pg.reservation(3, 3, ReservationStatus::Pending);
        let generation = u64::from(after == AfterTheCut::Terminated);
        pg.submit(
            &[(schedule(1), generation)],
            Writes::default().created_reservation(&next),
        );
        assert_eq!(pg.rig.answers(1).await, vec![Ok(())]);
        pg.stop().await;
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_cut_off_is_acknowledged_from_its_marker() {
        a_commit_cut_off(AfterTheCut::Commits).await;
    }

    #[tokio::test]
    async fn a_cut_commit_that_did_not_happen_is_refused_and_rebuilt() {
        a_commit_cut_off(AfterTheCut::Terminated).await;
    }
}
