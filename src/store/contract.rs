//! The store contract: every behaviour the actors rely on from a [`Store`], written once and run
//! against each backend (memory, SQLite on a temp file, PostgreSQL on a database of its own).
//!
//! The memory store stands in for the databases in benchmarks and fast tests; these tests are
//! what keeps it honest. A behaviour that only one backend's mechanics explain (SQLite's
//! pragmas and url forms) stays in that backend's file.

use super::temp_databases::{TempPostgres, TempSqlite};
use super::{
    IdempotencyRecord, LedgerEntry, LedgerKind, NewConcert, NewSchedule, PaymentRecord, Store,
    StoreError, WalletRecord, Writes,
};
use crate::domain::queue::{TokenRecord, TokenState};
use crate::domain::schedule::{Reservation, ReservationStatus, Seat};
use crate::domain::seat_plan::{SeatPlan, MAX_GRADE_CHARS};
use crate::domain::{Money, PaymentId, ReservationId, ScheduleId, Timestamp, TokenId, UserId};

/// Which backend a contract test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// Where a test store's rows live, kept until the test ends.
enum Place {
    Memory,
    Sqlite(TempSqlite),
    Postgres(TempPostgres),
}

/// A fresh, migrated store of one backend for one test, removed after it.
struct TestStore {
    /// Declared first, so the store's connections go before the file or database they use.
    store: Store,
    backend: Backend,
    place: Place,
}

impl TestStore {
    async fn open(backend: Backend) -> TestStore {
        let place = match backend {
            Backend::Memory => Place::Memory,
            Backend::Sqlite => Place::Sqlite(TempSqlite::new("contract")),
            Backend::Postgres => Place::Postgres(TempPostgres::create().await),
        };
        let url = match &place {
            // Unnamed: private to this test.
            Place::Memory => "memory://".to_string(),
            Place::Sqlite(file) => file.url(),
            Place::Postgres(database) => database.url(),
        };
        let store = Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("open the {backend:?} test store: {e}"));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrate the {backend:?} test store: {e}"));
        TestStore {
            store,
            backend,
            place,
        }
    }

    /// One value read with raw SQL from the rows under the store, for what the store's own
    /// interface does not show (how a row is encoded). `None` for the memory store, which has
    /// no rows underneath.
    async fn sql_value<T>(&self, sql: &str) -> Option<T>
    where
        T: Send + Unpin,
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        match &self.place {
            Place::Memory => None,
            Place::Sqlite(file) => Some(sql_value::<sqlx::Sqlite, T>(&file.url(), sql).await),
            Place::Postgres(database) => {
                Some(sql_value::<sqlx::Postgres, T>(&database.url(), sql).await)
            }
        }
    }

    /// How a batch that breaks a constraint is reported: the SQL stores pass the database's
    /// own error on; the memory store, which has no database to quote, names the constraint.
    fn assert_refused_by_a_constraint(&self, error: &StoreError) {
        match self.backend {
            Backend::Memory => assert!(
                matches!(error, StoreError::Corrupt(m) if m.starts_with("constraint violated")),
                "{error}"
            ),
            Backend::Sqlite | Backend::Postgres => {
                assert!(matches!(error, StoreError::Database(_)), "{error}")
            }
        }
    }
}

/// One value from `sql` on the database at `url`, over a connection of its own: the store's
/// pools are private to its backend, and a second reader is what WAL mode and PostgreSQL are for.
async fn sql_value<Db, T>(url: &str, sql: &str) -> T
where
    Db: sqlx::Database,
    for<'c> &'c mut Db::Connection: sqlx::Executor<'c, Database = Db>,
    for<'q> Db::Arguments<'q>: sqlx::IntoArguments<'q, Db>,
    (T,): for<'r> sqlx::FromRow<'r, Db::Row>,
    T: Send + Unpin,
{
    let pool = sqlx::Pool::<Db>::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to the test database: {e}"));
    let value = sqlx::query_scalar::<Db, T>(sql)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    value
}

/// One `#[tokio::test]` per behaviour and backend, named `contract::BACKEND::BEHAVIOUR`, so a
/// failure says at once which backend broke which promise.
macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {
        contract!(@backend memory, Memory, $($behaviour),*);
        contract!(@backend sqlite, Sqlite, $($behaviour),*);
        contract!(@backend postgres, Postgres, $($behaviour),*);
    };
    (@backend $module:ident, $backend:ident, $($behaviour:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let db = super::TestStore::open(super::Backend::$backend).await;
                    super::$behaviour(&db).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

contract!(
    a_created_user_has_a_wallet,
    concurrent_user_creations_all_succeed,
    created_seats_keep_the_order_they_were_given,
    seat_plan_labels_come_back_with_their_seats,
    a_seat_number_twice_in_a_schedule_is_refused_and_creates_nothing,
    migrating_again_keeps_the_data,
    a_held_seat_refuses_a_second_live_hold,
    a_seat_released_and_taken_again_in_one_batch_commits,
    a_batch_that_breaks_a_constraint_writes_nothing,
    a_batch_without_money_is_all_or_nothing_too,
    a_users_token_ended_and_renewed_in_one_batch_commits,
    batched_rows_keep_every_character_null_and_integer,
    a_missing_wallet_is_corrupt_and_rolls_back,
    a_payment_settles_and_ids_and_owners_are_found,
    a_reservation_is_loaded_with_its_seats_in_the_order_asked,
    only_each_users_latest_token_is_loaded,
    replaced_tokens_of_the_last_joins_are_loaded_with_their_replacement,
    the_first_idempotent_answer_stays_and_old_keys_are_forgotten,
    a_ledger_page_is_the_users_newest_entries_below_the_cursor,
    a_staged_batch_is_invisible_until_committed_and_gone_if_rolled_back,
    the_opening_and_the_draws_moves_are_stored_in_one_batch,
);

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn won(amount: i64) -> Money {
    Money::new(amount).expect("test amounts are not negative")
}

/// A concert named "drop" with a schedule per list of (seat number, price): the first at
/// 2,000 ms, each next one a second later, all open for reservations from 1,000 ms.
fn concert(seat_lists: Vec<Vec<(i32, Money)>>) -> NewConcert {
    NewConcert {
        name: "drop".into(),
        schedules: (0..)
            .zip(seat_lists)
            .map(|(i, seats)| NewSchedule {
                concert_at: ts(2_000 + 1_000 * i),
                reservation_at: ts(1_000),
                seats,
                plan: Vec::new(),
            })
            .collect(),
    }
}

/// A user with 10,000 won, and a concert with one schedule of seats 1..=`seats` at 1000 won.
async fn fixture(store: &Store, seats: i32) -> (UserId, ScheduleId, Vec<Seat>) {
    let user = store
        .create_user("ada", won(10_000), ts(1))
        .await
        .expect("create user");
    let created = store
        .create_concert(&concert(vec![(1..=seats)
            .map(|n| (n, won(1_000)))
            .collect()]))
        .await
        .expect("create concert");
    let schedule = created
        .schedules
        .into_iter()
        .next()
        .expect("one schedule was created");
    (user, schedule.info.id, schedule.seats)
}

fn reservation(
    id: i64,
    user: UserId,
    schedule: ScheduleId,
    seats: &[&Seat],
    status: ReservationStatus,
) -> Reservation {
    Reservation {
        id: ReservationId::new(id).expect("test ids are positive"),
        user,
        schedule,
        seats: seats.iter().map(|s| s.id).collect(),
        total: won(1_000 * seats.len() as i64),
        created_at: ts(10),
        expires_at: ts(10_000),
        status,
        updated_at: ts(10 + id),
        pinned: false,
    }
}

fn token(id: i64, user: UserId, position: u64, state: TokenState) -> TokenRecord {
    TokenRecord {
        id: TokenId::new(id).expect("test token ids are in range"),
        user,
        position,
        created_at: ts(position as i64),
        state,
    }
}

async fn latest_tokens(store: &Store) -> Vec<TokenRecord> {
    let mut tokens = Vec::new();
    store
        .load_tokens(&mut |t| tokens.push(t))
        .await
        .expect("load tokens");
    tokens
}

async fn a_created_user_has_a_wallet(db: &TestStore) {
    let store = &db.store;
    let user = store
        .create_user("ada", won(500), ts(1))
        .await
        .expect("create user");
    assert_eq!(store.load_wallet(user).await.expect("load"), Some(won(500)));
    let stranger = UserId::new(user.get() + 1).expect("positive");
    assert_eq!(store.load_wallet(stranger).await.expect("load"), None);
    assert_eq!(
        store.load_catalog().await.expect("catalog").users,
        vec![user]
    );
}

/// Writes from many tasks at once all land (SQLite queues them for its one writer).
async fn concurrent_user_creations_all_succeed(db: &TestStore) {
    let creates = (0..32).map(|i| {
        let store = db.store.clone();
        tokio::spawn(async move { store.create_user(&format!("u{i}"), won(i), ts(i)).await })
    });
    for create in futures_util::future::join_all(creates).await {
        create
            .expect("the task ran")
            .expect("no write fails for want of the lock");
    }
    assert_eq!(
        db.store.load_catalog().await.expect("catalog").users.len(),
        32
    );
}

async fn created_seats_keep_the_order_they_were_given(db: &TestStore) {
    let store = &db.store;
    let created = store
        .create_concert(&concert(vec![
            vec![(3, won(30)), (1, won(10)), (2, won(20))],
            vec![(1, won(5))],
        ]))
        .await
        .expect("create concert");
    assert_eq!(created.schedules.len(), 2);
    let (info, seats) = (&created.schedules[0].info, &created.schedules[0].seats);
    assert_eq!(
        seats.iter().map(|s| s.number).collect::<Vec<_>>(),
        vec![3, 1, 2]
    );
    assert_eq!(
        seats.iter().map(|s| s.price).collect::<Vec<_>>(),
        vec![won(30), won(10), won(20)]
    );
    // Ids ascend in input order.
    assert!(seats.windows(2).all(|w| w[0].id < w[1].id));

    let snapshot = store.load_schedule(info.id).await.expect("load schedule");
    let mut by_number = seats.clone();
    by_number.sort_by_key(|s| s.number);
    assert_eq!(snapshot.seats, by_number);
    assert!(snapshot.plan.is_empty(), "no labels given, no plan");
    assert!(snapshot.reservations.is_empty());

    let catalog = store.load_catalog().await.expect("catalog");
    assert_eq!(catalog.concerts, vec![(created.id, "drop".to_string())]);
    assert_eq!(catalog.schedules.len(), 2);
    assert_eq!(&catalog.schedules[0], info);
}

/// Every plan label comes back with its own seat, in the snapshot's seat order (by number),
/// character for character; a seat given without labels has none, and a schedule without any
/// labelled seat has no plan at all.
async fn seat_plan_labels_come_back_with_their_seats(db: &TestStore) {
    let store = &db.store;
    let labels = |grade: Option<&str>, row: Option<&str>, at: Option<(i64, i64)>| {
        SeatPlan::new(
            grade.map(str::to_owned),
            row.map(str::to_owned),
            at.map(|a| a.0),
            at.map(|a| a.1),
        )
        .expect("the test's labels are valid")
    };
    let longest_grade = "가".repeat(MAX_GRADE_CHARS);
    let given = vec![
        labels(Some("VIP"), Some("A"), Some((0, 0))),
        labels(Some(&longest_grade), Some("12345678"), Some((999, 999))),
        SeatPlan::default(),
        labels(Some("R \"quoted\" \\ é"), None, None),
        labels(None, Some("Box 1"), Some((7, 3))),
    ];
    let mut planned = concert(vec![
        vec![
            (3, won(30)),
            (1, won(10)),
            (2, won(20)),
            (5, won(50)),
            (4, won(40)),
        ],
        vec![(1, won(5))],
    ]);
    planned.schedules[0].plan = given.clone();
    let created = store
        .create_concert(&planned)
        .await
        .expect("create concert");
    assert_eq!(created.schedules[0].plan, given);

    let snapshot = store
        .load_schedule(created.schedules[0].info.id)
        .await
        .expect("load schedule");
    let numbers: Vec<i32> = snapshot.seats.iter().map(|s| s.number).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    // Seat numbers 3, 1, 2, 5, 4 were given labels 0..5 in that order.
    let expected = [1, 2, 0, 4, 3].map(|i| given[i].clone());
    assert_eq!(snapshot.plan, expected);

    let unplanned = store
        .load_schedule(created.schedules[1].info.id)
        .await
        .expect("load schedule");
    assert!(unplanned.plan.is_empty());

    // The SQL stores keep them in the seats table's own columns (the migrations' names).
    if let Some(grade) = db
        .sql_value::<String>("SELECT grade FROM seats WHERE seat_number = 1 AND grade IS NOT NULL")
        .await
    {
        assert_eq!(grade, longest_grade);
    }
}

/// The admin route answers a duplicate seat number with its own error, and nothing of the
/// concert stays behind: not the concert, not the schedule before the bad one.
async fn a_seat_number_twice_in_a_schedule_is_refused_and_creates_nothing(db: &TestStore) {
    let store = &db.store;
    let error = store
        .create_concert(&concert(vec![
            vec![(1, won(10)), (2, won(10))],
            vec![(1, won(10)), (2, won(10)), (1, won(10))],
        ]))
        .await
        .expect_err("seat 1 appears twice in the second schedule");
    assert!(matches!(error, StoreError::DuplicateSeatNumber), "{error}");
    let catalog = store.load_catalog().await.expect("catalog");
    assert!(catalog.concerts.is_empty(), "{:?}", catalog.concerts);
    assert!(catalog.schedules.is_empty(), "{:?}", catalog.schedules);
    // The store is usable after the refusal.
    let (_, schedule, seats) = fixture(store, 2).await;
    assert_eq!(
        store.load_schedule(schedule).await.expect("load").seats,
        seats
    );
}

/// Every start migrates: a second run must leave what is stored alone.
async fn migrating_again_keeps_the_data(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 2).await;
    store.migrate().await.expect("a second migrate is a no-op");
    store.ping().await.expect("ping");
    assert_eq!(
        store.load_wallet(user).await.expect("load"),
        Some(won(10_000))
    );
    assert_eq!(
        store.load_schedule(schedule).await.expect("load").seats,
        seats
    );
}

async fn a_held_seat_refuses_a_second_live_hold(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 2).await;
    let first = reservation(1, user, schedule, &[&seats[0]], ReservationStatus::Pending);
    store
        .commit(&Writes::default().created_reservation(&first))
        .await
        .expect("a free seat is held");
    let clash = reservation(
        2,
        user,
        schedule,
        &[&seats[1], &seats[0]],
        ReservationStatus::Pending,
    );
    let error = store
        .commit(&Writes::default().created_reservation(&clash))
        .await
        .expect_err("seat 1 is held");
    db.assert_refused_by_a_constraint(&error);
    assert_eq!(store.max_ids().await.expect("ids").reservation, 1);
    // Released and re-taken in one batch: the release goes first.
    let released = Reservation {
        status: ReservationStatus::Expired,
        ..first
    };
    let batch = Writes::default()
        .reservation(&released)
        .created_reservation(&clash);
    store.commit(&batch).await.expect("released first");
    let snapshot = store.load_schedule(schedule).await.expect("loads");
    assert_eq!(snapshot.reservations.len(), 2);
}

async fn a_seat_released_and_taken_again_in_one_batch_commits(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 3).await;
    let first = reservation(
        1,
        user,
        schedule,
        &[&seats[1], &seats[0]],
        ReservationStatus::Pending,
    );
    store
        .commit(&Writes::default().created_reservation(&first))
        .await
        .expect("hold two seats");

    // The expiry of the first and the hold that takes one of its seats, in one batch: the
    // second reservation has the higher id, so a naive order would take the seat first.
    let mut expired = first.clone();
    expired.status = ReservationStatus::Expired;
    expired.updated_at = ts(500);
    let second = reservation(2, user, schedule, &[&seats[0]], ReservationStatus::Pending);
    let batch = Writes::default()
        .created_reservation(&second)
        .reservation(&expired);
    store
        .commit(&batch)
        .await
        .expect("the released seat is freed before it is taken");

    let snapshot = store.load_schedule(schedule).await.expect("load schedule");
    assert_eq!(snapshot.reservations, vec![expired, second]);
    // Seats come back in the order the reservation asked for them.
    assert_eq!(
        snapshot.reservations[0].seats,
        vec![seats[1].id, seats[0].id]
    );
}

async fn a_batch_that_breaks_a_constraint_writes_nothing(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 2).await;
    let a = reservation(1, user, schedule, &[&seats[0]], ReservationStatus::Pending);
    let b = reservation(
        2,
        user,
        schedule,
        &[&seats[1], &seats[0]],
        ReservationStatus::Pending,
    );
    let batch = Writes::default()
        .created_reservation(&a)
        .created_reservation(&b)
        .wallet(WalletRecord {
            user,
            balance: won(1),
            at: ts(20),
        })
        .ledger(LedgerEntry {
            id: 1,
            user,
            kind: LedgerKind::Recharge,
            amount: won(5),
            balance_after: won(1),
            payment: None,
            at: ts(20),
        });
    let error = store
        .commit(&batch)
        .await
        .expect_err("two live holds on one seat");
    db.assert_refused_by_a_constraint(&error);

    let snapshot = store.load_schedule(schedule).await.expect("load schedule");
    assert!(
        snapshot.reservations.is_empty(),
        "{:?}",
        snapshot.reservations
    );
    assert_eq!(
        store.load_wallet(user).await.expect("load"),
        Some(won(10_000))
    );
    let ids = store.max_ids().await.expect("max ids");
    assert_eq!((ids.reservation, ids.payment, ids.ledger), (0, 0, 0));
    assert!(store
        .ledger_page(user, 10, None)
        .await
        .expect("ledger")
        .is_empty());

    // The store is usable again after the rollback.
    store
        .commit(&Writes::default().created_reservation(&a))
        .await
        .expect("a valid batch commits");
    assert_eq!(
        store
            .load_schedule(schedule)
            .await
            .expect("load")
            .reservations,
        vec![a]
    );
}

/// Holds, queue tokens and idempotency keys with no money in the batch: PostgreSQL sends such a
/// batch as one statement (store/postgres_writes.rs). One clashing hold must still keep every
/// other row of it out, and the same rows without the clash must all be stored.
async fn a_batch_without_money_is_all_or_nothing_too(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 3).await;
    let held = reservation(1, user, schedule, &[&seats[0]], ReservationStatus::Pending);
    store
        .commit(&Writes::default().created_reservation(&held))
        .await
        .expect("a free seat is held");
    let fine = reservation(2, user, schedule, &[&seats[1]], ReservationStatus::Pending);
    let clash = reservation(
        3,
        user,
        schedule,
        &[&seats[2], &seats[0]],
        ReservationStatus::Pending,
    );
    let key = IdempotencyRecord {
        user,
        key: "k".into(),
        fingerprint: "POST /v1/x".into(),
        status: 201,
        body: "{}".into(),
        at: ts(50),
    };
    let with = |r: &[&Reservation]| {
        let mut w = Writes::default().created_token(token(7, user, 1, TokenState::Waiting));
        for r in r {
            w = w.created_reservation(r);
        }
        w.idempotency.push(key.clone());
        w
    };
    let error = store
        .commit(&with(&[&fine, &clash]))
        .await
        .expect_err("seat 1 is held by reservation 1");
    db.assert_refused_by_a_constraint(&error);
    let snapshot = store.load_schedule(schedule).await.expect("load schedule");
    assert_eq!(snapshot.reservations, vec![held.clone()]);
    assert!(latest_tokens(store).await.is_empty());
    assert!(store
        .load_idempotency(ts(0))
        .await
        .expect("keys")
        .is_empty());

    store
        .commit(&with(&[&fine]))
        .await
        .expect("without the clash the batch commits");
    let snapshot = store.load_schedule(schedule).await.expect("load schedule");
    assert_eq!(snapshot.reservations, vec![held, fine]);
    assert_eq!(latest_tokens(store).await.len(), 1);
    assert_eq!(
        store.load_idempotency(ts(0)).await.expect("keys"),
        vec![key]
    );
}

/// A user's token ended and a new one taken in one batch: the one-live-token index needs the
/// end first, whatever order the rows were given in (PostgreSQL then uses a transaction).
async fn a_users_token_ended_and_renewed_in_one_batch_commits(db: &TestStore) {
    let store = &db.store;
    let (user, _, _) = fixture(store, 1).await;
    store
        .commit(&Writes::default().created_token(token(1, user, 1, TokenState::Waiting)))
        .await
        .expect("a first token");
    let batch = Writes::default()
        .created_token(token(2, user, 2, TokenState::Waiting))
        .token(token(1, user, 1, TokenState::Expired { at: ts(9) }));
    store
        .commit(&batch)
        .await
        .expect("the old token ends before the new one starts");
    let latest = latest_tokens(store).await;
    assert_eq!(latest, vec![token(2, user, 2, TokenState::Waiting)]);
}

/// Every character of a text column, a NULL, and 64-bit integers come back as they went in
/// (SQLite binds a batch as JSON, PostgreSQL as arrays: both encodings must be lossless).
async fn batched_rows_keep_every_character_null_and_integer(db: &TestStore) {
    let store = &db.store;
    let (user, _, _) = fixture(store, 1).await;
    let tricky = [
        r#"{"reservationId":1,"concertName":"콘서트 \"live\""}"#,
        "back\\slash, tab\t, newline\n, NUL-free \u{1F3AB}",
        "' OR 1=1; --",
        "",
    ];
    let mut batch = Writes::default();
    for (i, body) in tricky.iter().enumerate() {
        batch.idempotency.push(IdempotencyRecord {
            user,
            key: format!("key-{i}-{body}"),
            fingerprint: format!("POST /v1/x {body}"),
            status: 201,
            body: (*body).to_string(),
            at: ts(i64::MAX / 2 + i as i64),
        });
    }
    let batch = batch
        .ledger(LedgerEntry {
            id: i64::MAX - 1,
            user,
            kind: LedgerKind::Recharge,
            amount: won(i64::MAX / 4),
            balance_after: won(i64::MAX / 2),
            payment: None,
            at: ts(5),
        })
        .wallet(WalletRecord {
            user,
            balance: won(i64::MAX / 2),
            at: ts(5),
        });
    store.commit(&batch).await.expect("the batch commits");
    let mut loaded = store.load_idempotency(ts(0)).await.expect("load keys");
    loaded.sort_by_key(|k| k.at);
    assert_eq!(loaded, batch.idempotency);
    let ledger = store.ledger_page(user, 10, None).await.expect("ledger");
    assert_eq!(ledger.first(), batch.ledger.first());
    assert_eq!(
        store.load_wallet(user).await.expect("load"),
        Some(won(i64::MAX / 2))
    );
}

async fn a_missing_wallet_is_corrupt_and_rolls_back(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 1).await;
    let r = reservation(1, user, schedule, &[&seats[0]], ReservationStatus::Pending);
    let ghost = UserId::new(user.get() + 100).expect("positive");
    let batch = Writes::default()
        .created_reservation(&r)
        .wallet(WalletRecord {
            user,
            balance: won(7),
            at: ts(20),
        })
        .wallet(WalletRecord {
            user: ghost,
            balance: won(7),
            at: ts(20),
        });
    let error = store
        .commit(&batch)
        .await
        .expect_err("the ghost has no wallet");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    assert_eq!(
        store.load_wallet(user).await.expect("load"),
        Some(won(10_000))
    );
    assert_eq!(store.load_reservation(r.id).await.expect("load"), None);
}

async fn a_payment_settles_and_ids_and_owners_are_found(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 1).await;
    let mut r = reservation(7, user, schedule, &[&seats[0]], ReservationStatus::Pending);
    store
        .commit(&Writes::default().created_reservation(&r))
        .await
        .expect("hold");
    r.status = ReservationStatus::Paid;
    r.updated_at = ts(99);
    let payment = PaymentId::new(3).expect("positive");
    let batch = Writes::default()
        .reservation(&r)
        .payment(PaymentRecord {
            id: payment,
            reservation: r.id,
            user,
            amount: won(1_000),
            at: ts(99),
        })
        .wallet(WalletRecord {
            user,
            balance: won(9_000),
            at: ts(99),
        })
        .ledger(LedgerEntry {
            id: 11,
            user,
            kind: LedgerKind::Payment,
            amount: won(1_000),
            balance_after: won(9_000),
            payment: Some(payment),
            at: ts(99),
        });
    store.commit(&batch).await.expect("pay");

    let ids = store.max_ids().await.expect("max ids");
    assert_eq!((ids.reservation, ids.payment, ids.ledger), (7, 3, 11));
    assert_eq!(
        store
            .load_reservation(r.id)
            .await
            .expect("load")
            .map(|stored| stored.reservation),
        Some(r.clone())
    );
    let unknown = ReservationId::new(8).expect("positive");
    assert_eq!(store.load_reservation(unknown).await.expect("load"), None);
    assert_eq!(
        store.load_wallet(user).await.expect("load"),
        Some(won(9_000))
    );
    assert_eq!(
        store
            .load_schedule(schedule)
            .await
            .expect("load")
            .reservations,
        vec![r]
    );
    assert_eq!(
        store.ledger_page(user, 10, None).await.expect("ledger"),
        batch.ledger
    );
    // A paid reservation's seat is sold: its hold row says so.
    if let Some(state) = db
        .sql_value::<String>("SELECT state FROM holds WHERE reservation_id = 7")
        .await
    {
        assert_eq!(state, "POSTED");
    }
}

/// One reservation read back alone, as a settled one gone from memory is answered: its final
/// state, and its seats' numbers and prices in the order the client asked for them.
async fn a_reservation_is_loaded_with_its_seats_in_the_order_asked(db: &TestStore) {
    let store = &db.store;
    let user = store
        .create_user("ada", won(10_000), ts(1))
        .await
        .expect("create user");
    // Another schedule first, so this one's seat ids do not start at 1.
    let created = store
        .create_concert(&concert(vec![
            vec![(1, won(5))],
            vec![(1, won(100)), (2, won(200)), (3, won(300))],
        ]))
        .await
        .expect("create concert");
    let (info, seats) = (
        created.schedules[1].info.clone(),
        created.schedules[1].seats.clone(),
    );
    let mut r = reservation(
        5,
        user,
        info.id,
        &[&seats[2], &seats[0]],
        ReservationStatus::Pending,
    );
    r.total = won(400);
    store
        .commit(&Writes::default().created_reservation(&r))
        .await
        .expect("hold");
    r.status = ReservationStatus::Cancelled;
    r.updated_at = ts(50);
    store
        .commit(&Writes::default().reservation(&r))
        .await
        .expect("cancel");

    let stored = store
        .load_reservation(r.id)
        .await
        .expect("load")
        .expect("the reservation is stored");
    assert_eq!(stored.reservation, r);
    assert_eq!(stored.seats, vec![seats[2].clone(), seats[0].clone()]);
    let shown: Vec<(i32, i64)> = stored
        .seats
        .iter()
        .map(|s| (s.number, s.price.won()))
        .collect();
    assert_eq!(shown, vec![(3, 300), (1, 100)]);
    let unknown = ReservationId::new(6).expect("positive");
    assert_eq!(store.load_reservation(unknown).await.expect("load"), None);
}

async fn only_each_users_latest_token_is_loaded(db: &TestStore) {
    let store = &db.store;
    let ada = store
        .create_user("ada", won(0), ts(1))
        .await
        .expect("create user");
    let bob = store
        .create_user("bob", won(0), ts(1))
        .await
        .expect("create user");
    let waiting = token(100, ada, 1, TokenState::Waiting);
    let active = TokenState::Active {
        admitted_at: ts(5),
        expires_at: ts(50),
    };
    let bobs = token(200, bob, 2, active);
    store
        .commit(&Writes::default().created_token(waiting).created_token(bobs))
        .await
        .expect("join");

    // Ada's token expires and she joins again, in one batch: the new token's id sorts
    // first, so a naive order would make her hold two live tokens for a moment.
    let expired = token(100, ada, 1, TokenState::Expired { at: ts(60) });
    let again = token(50, ada, 3, TokenState::Waiting);
    // Bob's active token expires: its admission times must survive (COALESCE).
    let bob_expired = token(200, bob, 2, TokenState::Expired { at: ts(61) });
    let batch = Writes::default()
        .token(expired)
        .created_token(again)
        .token(bob_expired);
    store
        .commit(&batch)
        .await
        .expect("the expired token is written first");

    assert_eq!(latest_tokens(store).await, vec![bob_expired, again]);
    let admitted = db
        .sql_value::<Option<i64>>("SELECT admitted_at_ms FROM queue_tokens WHERE id = 200")
        .await;
    let expires = db
        .sql_value::<Option<i64>>("SELECT active_expires_at_ms FROM queue_tokens WHERE id = 200")
        .await;
    if db.backend != Backend::Memory {
        assert_eq!((admitted, expires), (Some(Some(5)), Some(Some(50))));
    }

    // Two live tokens for one user in one batch is refused, and writes nothing.
    let twin = token(300, bob, 4, TokenState::Waiting);
    let other = token(301, bob, 5, TokenState::Waiting);
    let error = store
        .commit(&Writes::default().created_token(twin).created_token(other))
        .await
        .expect_err("bob would hold two live tokens");
    db.assert_refused_by_a_constraint(&error);
    assert_eq!(latest_tokens(store).await, vec![bob_expired, again]);
}

/// Each replaced token comes with the position of its user's next token, in that order, and
/// only those replaced by one of the last `window` positions.
async fn replaced_tokens_of_the_last_joins_are_loaded_with_their_replacement(db: &TestStore) {
    let store = &db.store;
    let ada = store
        .create_user("ada", won(0), ts(1))
        .await
        .expect("create user");
    let bob = store
        .create_user("bob", won(0), ts(1))
        .await
        .expect("create user");
    let gone = |id, user, position| token(id, user, position, TokenState::Expired { at: ts(90) });
    // Ada: 1 → 3 → 6 (live); Bob: 2 → 5 (live); no token holds 4. Replaced: 1 by 3, 2 by 5,
    // 3 by 6.
    let rows = [
        gone(101, ada, 1),
        gone(201, bob, 2),
        gone(103, ada, 3),
        token(205, bob, 5, TokenState::Waiting),
        token(106, ada, 6, TokenState::Waiting),
    ];
    for row in rows {
        store
            .commit(&Writes::default().created_token(row))
            .await
            .expect("one token at a time");
    }
    let load = |window| async move {
        let mut seen = Vec::new();
        store
            .load_superseded_tokens(window, &mut |t, by| seen.push((t.id.get(), by)))
            .await
            .expect("load replaced tokens");
        seen
    };
    assert_eq!(load(100).await, vec![(101, 3), (201, 5), (103, 6)]);
    // The last 3 positions are 4..=6: position 3 replaced token 101 before the window.
    assert_eq!(load(3).await, vec![(201, 5), (103, 6)]);
    assert_eq!(load(1).await, vec![(103, 6)]);
    let mut loaded = Vec::new();
    store
        .load_superseded_tokens(100, &mut |t, _| loaded.push(t))
        .await
        .expect("load replaced tokens");
    assert_eq!(loaded[0], rows[0], "the whole stored record");
}

/// A retried request finds the first answer, never a later one; keys older than the window
/// are forgotten when the service loads them.
async fn the_first_idempotent_answer_stays_and_old_keys_are_forgotten(db: &TestStore) {
    let store = &db.store;
    let (user, _, _) = fixture(store, 1).await;
    let record = |key: &str, body: &str, at: i64| IdempotencyRecord {
        user,
        key: key.into(),
        fingerprint: format!("POST /v1/x {key}"),
        status: 201,
        body: body.into(),
        at: ts(at),
    };
    let first = record("fresh", "first", 1_000);
    let old = record("old", "old", 10);
    let batch = Writes {
        idempotency: vec![first.clone(), old.clone()],
        ..Writes::default()
    };
    store.commit(&batch).await.expect("the keys are stored");
    let again = Writes {
        idempotency: vec![record("fresh", "second", 1_001)],
        ..Writes::default()
    };
    store
        .commit(&again)
        .await
        .expect("a repeated key is not an error");

    let mut kept = store.load_idempotency(ts(0)).await.expect("load keys");
    kept.sort_by_key(|k| k.at);
    assert_eq!(kept, vec![old, first.clone()]);
    assert_eq!(
        store.load_idempotency(ts(500)).await.expect("load keys"),
        vec![first.clone()]
    );
    // Forgotten for good, not only filtered out of one answer.
    assert_eq!(
        store.load_idempotency(ts(0)).await.expect("load keys"),
        vec![first]
    );
}

/// The ledger pages newest first, only the asking user's entries, below the cursor.
async fn a_ledger_page_is_the_users_newest_entries_below_the_cursor(db: &TestStore) {
    let store = &db.store;
    let ada = store
        .create_user("ada", won(0), ts(1))
        .await
        .expect("create user");
    let bob = store
        .create_user("bob", won(0), ts(1))
        .await
        .expect("create user");
    let entry = |id: i64, user: UserId| LedgerEntry {
        id,
        user,
        kind: LedgerKind::Recharge,
        amount: won(10),
        balance_after: won(10 * id),
        payment: None,
        at: ts(id),
    };
    let mut batch = Writes::default();
    for id in 1..=5 {
        batch = batch.ledger(entry(id, ada));
    }
    batch = batch.ledger(entry(6, bob));
    store.commit(&batch).await.expect("the ledger is written");

    let ids = |page: Vec<LedgerEntry>| page.iter().map(|l| l.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.ledger_page(ada, 2, None).await.expect("page")),
        vec![5, 4]
    );
    assert_eq!(
        ids(store.ledger_page(ada, 2, Some(4)).await.expect("page")),
        vec![3, 2]
    );
    assert_eq!(
        ids(store.ledger_page(ada, 10, Some(2)).await.expect("page")),
        vec![1]
    );
    assert_eq!(
        store.ledger_page(bob, 10, None).await.expect("page"),
        vec![entry(6, bob)]
    );
}

/// The persister's pipeline (`Store::stage`): a staged batch is nothing until its commit, all of
/// it after, and nothing ever if rolled back; on every backend (SQLite and memory only defer).
async fn a_staged_batch_is_invisible_until_committed_and_gone_if_rolled_back(db: &TestStore) {
    let store = &db.store;
    let (user, schedule, seats) = fixture(store, 3).await;
    let kept = reservation(1, user, schedule, &[&seats[0]], ReservationStatus::Pending);
    let dropped = reservation(2, user, schedule, &[&seats[1]], ReservationStatus::Pending);
    let first = Writes::default()
        .created_reservation(&kept)
        .created_token(token(2, user, 1, TokenState::Waiting));
    let staged = store
        .stage(std::sync::Arc::new(first))
        .await
        .expect("stages");
    assert!(
        store
            .load_schedule(schedule)
            .await
            .expect("loads")
            .reservations
            .is_empty(),
        "not visible before its commit"
    );
    staged.commit().await.expect("commits");
    let second = Writes::default().created_reservation(&dropped);
    let rolled_back = store
        .stage(std::sync::Arc::new(second))
        .await
        .expect("stages");
    rolled_back.rollback().await.expect("rolls back");
    assert_eq!(
        store
            .load_schedule(schedule)
            .await
            .expect("loads")
            .reservations,
        vec![kept]
    );
    assert_eq!(latest_tokens(store).await.len(), 1);
    // The connection a rollback ended is usable again.
    store
        .commit(&Writes::default().created_reservation(&dropped))
        .await
        .expect("commits after the rollback");
    assert_eq!(
        store
            .load_schedule(schedule)
            .await
            .expect("loads")
            .reservations
            .len(),
        2
    );
}

/// The fair opening's row (scheduled, then drawn with the moves of the drawn tokens and an
/// admission in the same batch, as the queue actor writes them), and its removal.
async fn the_opening_and_the_draws_moves_are_stored_in_one_batch(db: &TestStore) {
    use crate::domain::queue::{DrawSeed, DrawnRecord, OpeningRecord};
    use crate::store::OpeningWrite;
    let store = &db.store;
    assert_eq!(store.load_opening().await.expect("load"), None);
    let users: Vec<UserId> =
        futures_util::future::join_all((0..3).map(|_| store.create_user("early", won(0), ts(1))))
            .await
            .into_iter()
            .map(|u| u.expect("create user"))
            .collect();
    let scheduled = OpeningRecord {
        opens_at: ts(1_000),
        seed: DrawSeed::from_bytes([9; 32]),
        drawn: None,
    };
    let joins = (0..3).fold(
        Writes::default().opening(OpeningWrite::Store(scheduled.clone())),
        |w, i| {
            w.created_token(token(
                10 + i,
                users[i as usize],
                1 + i as u64,
                TokenState::Waiting,
            ))
        },
    );
    store.commit(&joins).await.expect("scheduled and joined");
    assert_eq!(
        store.load_opening().await.expect("load"),
        Some(scheduled.clone())
    );

    // The draw: token 12 first, then 10, then 11, at fresh positions 4, 5, 6; the first one
    // admitted in the same batch.
    let drawn = OpeningRecord {
        drawn: Some(DrawnRecord {
            at: ts(1_000),
            first_position: 4,
            participants: 3,
            participants_digest: "ab".repeat(32),
        }),
        ..scheduled
    };
    let id = |n| TokenId::new(n).expect("in range");
    let admitted = TokenState::Active {
        admitted_at: ts(1_000),
        expires_at: ts(9_000),
    };
    let batch = Writes::default()
        .opening(OpeningWrite::Store(drawn.clone()))
        .moved(id(12), 4)
        .moved(id(10), 5)
        .moved(id(11), 6)
        .token(token(12, users[2], 4, admitted));
    store.commit(&batch).await.expect("drawn");
    assert_eq!(store.load_opening().await.expect("load"), Some(drawn));
    assert_eq!(
        store.load_tokens_at(4, 3).await.expect("load"),
        vec![id(12), id(10), id(11)]
    );
    let positions: Vec<(i64, u64)> = latest_tokens(store)
        .await
        .iter()
        .map(|t| (t.id.get(), t.position))
        .collect();
    assert_eq!(positions, vec![(12, 4), (10, 5), (11, 6)]);

    store
        .commit(&Writes::default().opening(OpeningWrite::Remove))
        .await
        .expect("removed");
    assert_eq!(store.load_opening().await.expect("load"), None);
}
