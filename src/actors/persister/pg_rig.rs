//! A persister on a real PostgreSQL for the tests of its pipeline and its markers: a database
//! of its own per test, with a deferred constraint trigger on `reservations` that, at COMMIT,
//! waits for an advisory lock named by the reservation's id (and refuses a reservation of total
//! price 13). Holding a reservation's lock holds its batch "committing" — its statements done,
//! its COMMIT in flight, as during a slow WAL flush — for as long as the test likes. A TCP proxy
//! between the store and PostgreSQL cuts connections as a network does.

use super::rig::*;
use super::*;
use crate::domain::schedule::{Reservation, ReservationStatus, Seat};
use crate::domain::ReservationId;
use crate::store::temp_databases::TempPostgres;
use crate::store::{NewConcert, NewSchedule};
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
pub(super) struct Proxy {
    address: String,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    pub(super) async fn start() -> Proxy {
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
    pub(super) fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

pub(super) struct PgRig {
    pub(super) rig: Rig,
    pub(super) store: Arc<Store>,
    /// The test's own session: it holds the gates and watches the persister's backends.
    pub(super) admin: PgConnection,
    pub(super) user: UserId,
    pub(super) schedule: ScheduleId,
    pub(super) seats: Vec<Seat>,
    /// Declared last: the store's connections close before the database is dropped.
    _database: TempPostgres,
}

impl PgRig {
    pub(super) async fn start() -> PgRig {
        PgRig::start_via(None).await
    }

    /// The rig with the store's connections through `proxy` (the test's own session
    /// connects directly).
    pub(super) async fn start_via(proxy: Option<&Proxy>) -> PgRig {
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

    pub(super) fn reservation(
        &self,
        id: i64,
        seat: usize,
        status: ReservationStatus,
    ) -> Reservation {
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

    pub(super) fn submit(&self, deps: &[Dependency], writes: Writes) {
        self.rig
            .persister
            .reserve(deps)
            .expect("the rig's persister has room, and the test's deps are valid")
            .submit(writes, self.rig.completion());
    }

    pub(super) async fn sql(&mut self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&mut self.admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The persister's backends on this database that match `condition`.
    pub(super) async fn backends(&mut self, condition: &str) -> i64 {
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
    pub(super) async fn until_backend(&mut self, what: &str, condition: &str) {
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
    pub(super) async fn hold_n_committing(
        &mut self,
        n: Writes,
        n_deps: &[Dependency],
        n_gate: i64,
    ) {
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

    pub(super) fn staged_behind(&self) -> u64 {
        self.rig
            .persister
            .stats()
            .staged_behind
            .load(Ordering::Relaxed)
    }

    pub(super) async fn stop(self) {
        self.rig.stop().await;
        self.store.close().await;
    }
}
