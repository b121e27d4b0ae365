//! Contention benchmarks: boxoffice's actors against the row-lock designs, side by side in one
//! run, each scenario reported as decisions (or charges) per second.
//!
//! Groups:
//! - `hold_one_schedule`: one schedule of 1,000 seats, 10,000 concurrent clients each holding
//!   1–4 random seats. boxoffice on the in-memory sink, boxoffice on PostgreSQL (answer after
//!   the commit), and the baselines the peers use, from this same harness on the same
//!   database: `SELECT … FOR UPDATE` then `INSERT` + `UPDATE` per reservation, and the
//!   conditional `UPDATE … WHERE status = 'AVAILABLE'`.
//! - `hold_one_schedule_40k_seats`: the same four, on one schedule with seats to spare
//!   (40,000), so most decisions are successful, durable holds.
//! - `hold_100_schedules`: the same 10,000 clients spread over 100 schedules of 100 seats.
//! - `wallet_charges`: 10,000 concurrent recharges on one hot user, or one each on 10,000 users.
//!
//! Run: `cargo bench --bench contention` (needs PostgreSQL at `postgres://postgres@127.0.0.1:5432`
//! or `BOXOFFICE_TEST_POSTGRES`; a fresh database is created and dropped). After criterion's
//! own report, a table of every scenario's rate and the ratios to the baselines is printed.
//! `BOXOFFICE_BENCH_CLIENTS` changes the 10,000 clients (for a quick look).
//!
//! How it is driven: criterion cannot drive actix actors through `to_async`, so every
//! measurement is an `iter_custom` that runs inside one `actix::SystemRunner`: per iteration a
//! fresh schedule (or set of wallets) is set up untimed, then all clients are started at once
//! and the clock stops when the last one has its answer. Hold clients hand their holds to the
//! engine all at once and await their answers in turn (each on its own reply channel); wallet
//! clients run as futures in one `FuturesUnordered`. A client refused with "busy" (a full
//! intake or mailbox: backpressure, not a decision) yields and asks again, as an HTTP client
//! does after a 503; those retries are counted and reported.

use actix::SystemRunner;
use boxoffice::actors::{BookingError, WalletError};
use boxoffice::actors::{Engine, EngineSettings, Persister, Unavailable};
use boxoffice::clock::SystemClock;
use boxoffice::domain::schedule::HoldRequest;
use boxoffice::domain::{ConcertId, Money, ScheduleId, SeatId, Timestamp, UserId};
use boxoffice::store::{NewConcert, NewSchedule, Store, StoreHandle};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::unconstrained;

/// Concurrent clients per measured batch.
fn clients() -> usize {
    std::env::var("BOXOFFICE_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10_000)
}

const SEATS_ONE_SCHEDULE: usize = 1_000;
/// Seats to spare: 10,000 clients want about 25,000, so most holds succeed.
const SEATS_SPARE: usize = 40_000;
const SCHEDULES_PARALLEL: usize = 100;
const SEATS_PER_PARALLEL_SCHEDULE: usize = 100;
const PRICE: i64 = 1_000;
/// Connections of the baseline's pool: as many clients as the peers' pgbench runs had.
const BASELINE_CONNECTIONS: u32 = 64;

// --- results ------------------------------------------------------------------------------

/// What one scenario did over all its measured batches.
#[derive(Debug, Default, Clone)]
struct Tally {
    decisions: u64,
    held: u64,
    refused: u64,
    busy_retries: u64,
    failed: u64,
    elapsed: Duration,
    /// CPU time of this process's threads over the batches (not the database's).
    cpu: Duration,
    /// Persister batches and submissions over the scenario (boxoffice only).
    batches: u64,
    submissions: u64,
    /// Rows written and time spent committing, over those batches.
    rows: u64,
    commit: Duration,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.decisions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, other: &Tally) {
        self.decisions += other.decisions;
        self.held += other.held;
        self.refused += other.refused;
        self.busy_retries += other.busy_retries;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
    }
}

/// CPU time of every thread of this process so far, from the scheduler's own accounting
/// (nanoseconds in `/proc/self/task/*/schedstat`). Unlike wall time, it hardly moves when
/// another process shares the machine, so it compares in-process variants on a busy host.
/// Zero where that file does not exist.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Every scenario's tally, for the table printed at the end.
static RESULTS: Mutex<Vec<(String, Tally)>> = Mutex::new(Vec::new());

fn record(name: &str, tally: &Tally) {
    let mut results = RESULTS.lock().unwrap_or_else(|p| p.into_inner());
    match results.iter_mut().find(|(n, _)| n == name) {
        Some((_, t)) => {
            t.add(tally);
            t.batches += tally.batches;
            t.submissions += tally.submissions;
            t.rows += tally.rows;
            t.commit += tally.commit;
        }
        None => results.push((name.to_string(), tally.clone())),
    }
}

fn print_summary() {
    let results = RESULTS.lock().unwrap_or_else(|p| p.into_inner());
    if results.is_empty() {
        return;
    }
    let rate_of = |name: &str| {
        results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.rate())
    };
    println!("\n## contention summary (all measured batches of this run, setup excluded)\n");
    println!(
        "| scenario | decisions | decisions/s | held / ok | held/s | refused | busy retries | \
         failed | submissions per commit | rows per commit | ms per commit | \
         CPU µs per decision (this process) | ÷ FOR UPDATE | ÷ conditional UPDATE |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, t) in results.iter() {
        // Ratios against the baselines of the same group (same seats, same clients).
        let group = name.split('/').next().unwrap_or_default();
        let ratio = |baseline: &str| match rate_of(&format!("{group}/{baseline}")) {
            Some(b) if b > 0.0 => format!("{:.1}×", t.rate() / b),
            _ => "–".into(),
        };
        let per_commit = |x: f64| {
            if t.batches > 0 {
                format!("{:.0}", x / t.batches as f64)
            } else {
                "–".into()
            }
        };
        let batch = per_commit(t.submissions as f64);
        let rows = per_commit(t.rows as f64);
        let commit_ms = if t.batches > 0 {
            format!("{:.2}", t.commit.as_secs_f64() * 1e3 / t.batches as f64)
        } else {
            "–".into()
        };
        println!(
            "| {name} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {batch} | {rows} | {commit_ms} | {:.2} | {} | {} |",
            t.decisions,
            t.rate(),
            t.held,
            t.held as f64 / t.elapsed.as_secs_f64().max(1e-9),
            t.refused,
            t.busy_retries,
            t.failed,
            t.cpu.as_secs_f64() * 1e6 / t.decisions.max(1) as f64,
            ratio("baseline_pg_for_update"),
            ratio("baseline_pg_conditional_update"),
        );
    }
}

// --- PostgreSQL: one fresh database per run -----------------------------------------------

fn postgres_server() -> String {
    std::env::var("BOXOFFICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database that exists for this run only (dropped `WITH (FORCE)` at the end).
struct BenchDb {
    name: String,
    url: String,
}

impl BenchDb {
    fn create(runtime: &tokio::runtime::Runtime) -> BenchDb {
        let server = postgres_server();
        let name = format!(
            "boxoffice_bench_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() % 1_000_000_000)
        );
        runtime.block_on(async {
            let pool = PgPool::connect(&format!("{server}/postgres"))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {server} ({e}); start it or point \
                         BOXOFFICE_TEST_POSTGRES at one"
                    )
                });
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&pool)
                .await
                .expect("create the bench database");
            pool.close().await;
        });
        let url = format!("{server}/{name}");
        BenchDb { name, url }
    }

    fn drop_now(&self, runtime: &tokio::runtime::Runtime) {
        let admin = format!("{}/postgres", postgres_server());
        runtime.block_on(async {
            if let Ok(pool) = PgPool::connect(&admin).await {
                let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
                let _ = sqlx::query(&sql).execute(&pool).await;
                pool.close().await;
            }
        });
    }
}

// --- boxoffice, in-process ----------------------------------------------------------------

/// The engine as `Application::build` wires it, without the HTTP server: a store runtime of
/// two threads, the persister on it, the actors on the engine's arbiters.
struct Rig {
    engine: Engine,
    store_runtime: Option<tokio::runtime::Runtime>,
    users: Vec<UserId>,
    next_concert: u64,
}

impl Rig {
    fn start(system: &SystemRunner, url: &str, users: usize) -> Rig {
        let store_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store")
            .enable_all()
            .build()
            .expect("the store runtime starts");
        let owned = url.to_string();
        let store = store_runtime
            .block_on(async move {
                let store = Store::connect(&owned).await?;
                store.migrate().await?;
                Ok::<_, boxoffice::store::StoreError>(store)
            })
            .expect("the store opens and migrates");
        let handle = StoreHandle::new(store, store_runtime.handle().clone());
        let settings = EngineSettings {
            // Every client's hold must be decided, not capped by the per-user rule.
            max_seats_per_user: 4,
            // Room for every client at once: the bench measures decisions, and a client
            // refused for a full mailbox only asks again (the bound itself is tested in
            // `tests/`).
            mailbox_capacity: clients().max(boxoffice::actors::MAILBOX_CAPACITY),
            ..EngineSettings::default()
        };
        let (persister, _task) = Persister::start(
            handle.store().clone(),
            store_runtime.handle(),
            settings.persister_capacity,
            settings.pipeline_commits,
        );
        let engine = system
            .block_on(Engine::start(
                settings,
                Arc::new(SystemClock),
                handle,
                persister,
            ))
            .expect("the engine starts");
        let created = system.block_on(async {
            let mut created = Vec::with_capacity(users);
            // In chunks: the store's pool is small and its acquire timeout short.
            for chunk in (0..users).collect::<Vec<_>>().chunks(64) {
                let made = join_all(chunk.iter().map(|_| {
                    engine.create_user("bench".into(), Money::new(0).expect("zero is money"))
                }))
                .await;
                for user in made {
                    created.push(user.expect("a user is created"));
                }
            }
            created
        });
        Rig {
            engine,
            store_runtime: Some(store_runtime),
            users: created,
            next_concert: 0,
        }
    }

    /// A concert with `schedules` schedules of `seats` seats, booking open now.
    async fn concert(
        &mut self,
        schedules: usize,
        seats: usize,
    ) -> (ConcertId, Vec<(ScheduleId, Vec<SeatId>)>) {
        self.next_concert += 1;
        let now = Timestamp::from_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        );
        let day = Duration::from_secs(86_400);
        let concert = NewConcert {
            name: format!("bench {}", self.next_concert),
            schedules: (0..schedules)
                .map(|_| NewSchedule {
                    concert_at: now.plus(day * 30),
                    reservation_at: Timestamp::from_millis(now.millis() - 60_000),
                    seats: (1..=seats as i32)
                        .map(|n| (n, Money::new(PRICE).expect("a positive price")))
                        .collect(),
                    plan: Vec::new(),
                })
                .collect(),
        };
        let created = self
            .engine
            .create_concert(concert)
            .await
            .expect("the concert is created");
        let schedules = created
            .schedules
            .iter()
            .map(|s| (s.info.id, s.seats.iter().map(|seat| seat.id).collect()))
            .collect();
        (created.id, schedules)
    }

    /// The persister's counters so far: batches, submissions, rows, commit time.
    fn persister_counts(&self) -> Tally {
        let stats = self.engine.persister().stats();
        Tally {
            batches: stats.batches.load(Ordering::Relaxed),
            submissions: stats.submissions.load(Ordering::Relaxed),
            rows: stats.rows.load(Ordering::Relaxed),
            commit: Duration::from_micros(stats.commit_micros.load(Ordering::Relaxed)),
            ..Tally::default()
        }
    }

    /// Records in `tally` what the persister did since `before`.
    fn persisted_since(&self, before: &Tally, tally: &mut Tally) {
        let now = self.persister_counts();
        tally.batches = now.batches - before.batches;
        tally.submissions = now.submissions - before.submissions;
        tally.rows = now.rows - before.rows;
        tally.commit = now.commit.saturating_sub(before.commit);
    }

    fn stop(mut self, system: &SystemRunner) {
        system.block_on(self.engine.shutdown());
        if let Some(runtime) = self.store_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// 1–4 distinct random seats of `seats`.
fn pick(rng: &mut SmallRng, seats: &[SeatId]) -> Vec<SeatId> {
    let n = rng.random_range(1..=4usize).min(seats.len());
    rand::seq::index::sample(rng, seats.len(), n)
        .iter()
        .map(|i| seats[i])
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Held,
    Refused,
    Failed,
}

/// One measured batch of holds: `clients()` clients over the schedules of a fresh concert.
async fn hold_batch(rig: &mut Rig, schedules: usize, seats: usize, rng: &mut SmallRng) -> Tally {
    let (concert, created) = rig.concert(schedules, seats).await;
    let n = clients();
    let requests: Vec<(UserId, ScheduleId, Vec<SeatId>)> = (0..n)
        .map(|i| {
            let (schedule, seat_ids) = &created[i % created.len()];
            (
                rig.users[i % rig.users.len()],
                *schedule,
                pick(rng, seat_ids),
            )
        })
        .collect();
    let engine = rig.engine.clone();
    let (started, cpu) = (Instant::now(), process_cpu());
    let mut tally = Tally::default();
    // Every client's hold is handed to the engine at once (`hold` submits before its future
    // is polled), then the answers are awaited one after another: each client has its own
    // reply channel, and no client waits for another's answer to be sent. (Driving 10,000
    // client futures through `FuturesUnordered` cost more CPU than the actor's decisions.)
    let submit = |i: usize| {
        let (user, schedule, seats) = &requests[i];
        (
            i,
            engine.hold(
                HoldRequest {
                    user: *user,
                    concert,
                    schedule: *schedule,
                    seats: seats.clone(),
                },
                None,
            ),
        )
    };
    let mut waiting: Vec<(usize, _)> = (0..requests.len()).map(submit).collect();
    while !waiting.is_empty() {
        let mut again = Vec::new();
        for (i, answer) in waiting {
            match answer.await {
                Ok(_) => tally.held += 1,
                Err(BookingError::Refused(_)) => tally.refused += 1,
                // A full intake: backpressure, not a decision; that client asks again.
                Err(BookingError::Unavailable(Unavailable::Busy)) => {
                    tally.busy_retries += 1;
                    again.push(i);
                }
                Err(_) => tally.failed += 1,
            }
        }
        if !again.is_empty() {
            tokio::task::yield_now().await;
        }
        waiting = again.into_iter().map(submit).collect();
    }
    Tally {
        decisions: n as u64,
        elapsed: started.elapsed(),
        cpu: process_cpu().saturating_sub(cpu),
        ..tally
    }
}

/// Starts every client at once and counts their outcomes as they finish.
async fn run_clients(clients: impl Iterator<Item = impl Future<Output = Outcome>>) -> Tally {
    let mut running: FuturesUnordered<_> = clients.collect();
    let mut tally = Tally::default();
    // Unconstrained: 10,000 futures in one task exhaust tokio's cooperative budget at once,
    // after which every reply channel answers "pending, poll me again" and the harness spins
    // (seen in the profile: a third of the driver thread in FuturesUnordered re-polling).
    // Counted as they finish rather than collected in order (`join_all`), which reordered
    // 10,000 outputs through a heap.
    unconstrained(async {
        while let Some(outcome) = running.next().await {
            tally.decisions += 1;
            match outcome {
                Outcome::Held => tally.held += 1,
                Outcome::Refused => tally.refused += 1,
                Outcome::Failed => tally.failed += 1,
            }
        }
    })
    .await;
    tally
}

/// Measures holds on `rig` as criterion asks, recording the tally under `name`.
#[allow(clippy::too_many_arguments)]
fn bench_holds(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    name: &str,
    system: &SystemRunner,
    rig: &mut Option<Rig>,
    make: &dyn Fn() -> Rig,
    schedules: usize,
    seats: usize,
) {
    let full = format!("{prefix}/{name}");
    group.bench_function(name, |b| {
        let rig = rig.get_or_insert_with(make);
        let mut rng = SmallRng::seed_from_u64(7);
        b.iter_custom(|iters| {
            let before = rig.persister_counts();
            let mut tally = system.block_on(async {
                let mut tally = Tally::default();
                for _ in 0..iters {
                    tally.add(&hold_batch(rig, schedules, seats, &mut rng).await);
                }
                tally
            });
            rig.persisted_since(&before, &mut tally);
            record(&full, &tally);
            tally.elapsed
        });
    });
}

// --- the baseline: one PostgreSQL transaction per reservation -----------------------------

/// The peers' design, on the same database: seats with a status column, a reservation row.
struct Baseline {
    runtime: tokio::runtime::Runtime,
    pool: PgPool,
    next_schedule: AtomicI64,
    next_seat: AtomicI64,
}

#[derive(Debug, Clone, Copy)]
enum Locking {
    /// `SELECT … FOR UPDATE` on the seats, then `INSERT` the reservation and `UPDATE` the seats.
    ForUpdate,
    /// `INSERT` the reservation, then `UPDATE … WHERE status = 'AVAILABLE'`; all rows or rollback.
    Conditional,
}

impl Baseline {
    fn start(url: &str) -> Baseline {
        // The clients' own runtime: two workers, as many as the machine has cores.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("baseline")
            .enable_all()
            .build()
            .expect("the baseline runtime starts");
        let pool = runtime
            .block_on(async {
                let pool = PgPoolOptions::new()
                    .max_connections(BASELINE_CONNECTIONS)
                    .min_connections(BASELINE_CONNECTIONS)
                    // 10,000 clients queue for 64 connections: waiting is the design under test.
                    .acquire_timeout(Duration::from_secs(120))
                    .connect(url)
                    .await?;
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS bench_seats (
                         id BIGINT PRIMARY KEY,
                         schedule_id BIGINT NOT NULL,
                         price BIGINT NOT NULL,
                         status TEXT NOT NULL,
                         reservation_id BIGINT);
                     CREATE INDEX IF NOT EXISTS bench_seats_by_schedule ON bench_seats (schedule_id);
                     CREATE TABLE IF NOT EXISTS bench_reservations (
                         id BIGSERIAL PRIMARY KEY,
                         user_id BIGINT NOT NULL,
                         schedule_id BIGINT NOT NULL,
                         seat_ids BIGINT[] NOT NULL,
                         total_price BIGINT NOT NULL,
                         status TEXT NOT NULL,
                         created_at TIMESTAMPTZ NOT NULL DEFAULT now());",
                )
                .execute(&pool)
                .await?;
                Ok::<_, sqlx::Error>(pool)
            })
            .expect("the baseline tables are created");
        Baseline {
            runtime,
            pool,
            next_schedule: AtomicI64::new(0),
            next_seat: AtomicI64::new(0),
        }
    }

    /// A fresh schedule of `seats` available seats (untimed).
    async fn schedule(&self, seats: usize) -> (i64, Vec<i64>) {
        let schedule = self.next_schedule.fetch_add(1, Ordering::Relaxed) + 1;
        let first = self.next_seat.fetch_add(seats as i64, Ordering::Relaxed) + 1;
        let last = first + seats as i64 - 1;
        sqlx::query(
            "INSERT INTO bench_seats (id, schedule_id, price, status)
             SELECT g, $1, $2, 'AVAILABLE' FROM generate_series($3::int8, $4::int8) g",
        )
        .bind(schedule)
        .bind(PRICE)
        .bind(first)
        .bind(last)
        .execute(&self.pool)
        .await
        .expect("the baseline seats are created");
        // Fresh statistics, as a long-running database has: without them the planner reads
        // every seat of the schedule through `bench_seats_by_schedule` (a bitmap AND with the
        // primary key) on every reservation, which made the baselines several times slower
        // than they deserve at 40,000 seats.
        sqlx::query("ANALYZE bench_seats")
            .execute(&self.pool)
            .await
            .expect("the baseline seats are analyzed");
        (schedule, (first..=last).collect())
    }

    /// One reservation as one transaction; `Ok(true)` held, `Ok(false)` refused.
    async fn reserve(
        pool: &PgPool,
        locking: Locking,
        user: i64,
        schedule: i64,
        seats: &[i64],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = pool.begin().await?;
        match locking {
            Locking::ForUpdate => {
                let rows = sqlx::query(
                    "SELECT id, status, price FROM bench_seats
                     WHERE schedule_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
                )
                .bind(schedule)
                .bind(seats)
                .fetch_all(&mut *tx)
                .await?;
                let free = rows.len() == seats.len()
                    && rows.iter().all(|r| {
                        r.try_get::<String, _>("status")
                            .is_ok_and(|s| s == "AVAILABLE")
                    });
                if !free {
                    tx.rollback().await?;
                    return Ok(false);
                }
                let total: i64 = rows
                    .iter()
                    .map(|r| r.try_get::<i64, _>("price").unwrap_or(0))
                    .sum();
                let reservation: i64 = sqlx::query(
                    "INSERT INTO bench_reservations (user_id, schedule_id, seat_ids, total_price, status)
                     VALUES ($1, $2, $3, $4, 'PAYMENT_PENDING') RETURNING id",
                )
                .bind(user)
                .bind(schedule)
                .bind(seats)
                .bind(total)
                .fetch_one(&mut *tx)
                .await?
                .try_get("id")?;
                sqlx::query(
                    "UPDATE bench_seats SET status = 'HELD', reservation_id = $1 WHERE id = ANY($2)",
                )
                .bind(reservation)
                .bind(seats)
                .execute(&mut *tx)
                .await?;
            }
            Locking::Conditional => {
                let reservation: i64 = sqlx::query(
                    "INSERT INTO bench_reservations (user_id, schedule_id, seat_ids, total_price, status)
                     VALUES ($1, $2, $3, $4, 'PAYMENT_PENDING') RETURNING id",
                )
                .bind(user)
                .bind(schedule)
                .bind(seats)
                .bind(PRICE * seats.len() as i64)
                .fetch_one(&mut *tx)
                .await?
                .try_get("id")?;
                let updated = sqlx::query(
                    "UPDATE bench_seats SET status = 'HELD', reservation_id = $1
                     WHERE schedule_id = $2 AND id = ANY($3) AND status = 'AVAILABLE'",
                )
                .bind(reservation)
                .bind(schedule)
                .bind(seats)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated != seats.len() as u64 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// One measured batch: `clients()` tasks, one transaction each (retried on deadlock).
    fn batch(&self, locking: Locking, seats: usize, rng: &mut SmallRng) -> Tally {
        let (schedule, seat_ids) = self.runtime.block_on(self.schedule(seats));
        let seat_ids: Vec<SeatId> = seat_ids
            .iter()
            .map(|s| SeatId::new(*s).expect("positive seat ids"))
            .collect();
        let n = clients();
        let requests: Vec<Vec<i64>> = (0..n)
            .map(|_| pick(rng, &seat_ids).iter().map(|s| s.get()).collect())
            .collect();
        let retries = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(requests);
        let next = Arc::new(AtomicU64::new(0));
        let (started, cpu) = (Instant::now(), process_cpu());
        // One client per connection, each taking the next reservation when its last one is
        // done, as pgbench's clients do: 10,000 tasks queueing on the pool instead cost the
        // harness more CPU than the transactions did, and the baseline deserves its best.
        let outcomes = self.runtime.block_on(async {
            let clients: Vec<_> = (0..BASELINE_CONNECTIONS)
                .map(|_| {
                    let (pool, retries) = (self.pool.clone(), retries.clone());
                    let (requests, next) = (requests.clone(), next.clone());
                    tokio::spawn(async move {
                        let mut outcomes = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                            let Some(seats) = requests.get(i) else {
                                return outcomes;
                            };
                            let outcome = loop {
                                match Self::reserve(&pool, locking, i as i64 + 1, schedule, seats)
                                    .await
                                {
                                    Ok(true) => break Outcome::Held,
                                    Ok(false) => break Outcome::Refused,
                                    // A deadlock (40P01) between two multi-seat updates: the
                                    // peers retry it, and so do we.
                                    Err(sqlx::Error::Database(e))
                                        if e.code().as_deref() == Some("40P01") =>
                                    {
                                        retries.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(e) => {
                                        eprintln!("baseline transaction failed: {e}");
                                        break Outcome::Failed;
                                    }
                                }
                            };
                            outcomes.push(outcome);
                        }
                    })
                })
                .collect();
            join_all(clients).await
        });
        let (elapsed, cpu) = (started.elapsed(), process_cpu().saturating_sub(cpu));
        let mut outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .flat_map(|o| o.unwrap_or_default())
            .collect();
        // A client that panicked took its reservations with it: count them as failed.
        outcomes.resize(n, Outcome::Failed);
        let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count() as u64;
        Tally {
            decisions: n as u64,
            held: count(Outcome::Held),
            refused: count(Outcome::Refused),
            failed: count(Outcome::Failed),
            busy_retries: retries.load(Ordering::Relaxed),
            elapsed,
            cpu,
            ..Tally::default()
        }
    }
}

fn bench_baseline(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    name: &str,
    baseline: &mut Option<Baseline>,
    url: &dyn Fn() -> String,
    locking: Locking,
    seats: usize,
) {
    let full = format!("{prefix}/{name}");
    group.bench_function(name, |b| {
        let baseline = baseline.get_or_insert_with(|| Baseline::start(&url()));
        let mut rng = SmallRng::seed_from_u64(7);
        b.iter_custom(|iters| {
            let mut tally = Tally::default();
            for _ in 0..iters {
                tally.add(&baseline.batch(locking, seats, &mut rng));
            }
            record(&full, &tally);
            tally.elapsed
        });
    });
}

// --- wallets ------------------------------------------------------------------------------

/// One client's recharge, asking again while the wallet's mailbox is full.
async fn recharge_client(engine: &Engine, user: UserId, busy: &AtomicU64) -> Outcome {
    loop {
        match engine.recharge(user, PRICE, None).await {
            Ok(_) => return Outcome::Held,
            Err(WalletError::Refused(_)) => return Outcome::Refused,
            Err(WalletError::Unavailable(Unavailable::Busy)) => {
                busy.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            Err(_) => return Outcome::Failed,
        }
    }
}

fn bench_wallets(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    system: &SystemRunner,
    rig: &mut Option<Rig>,
    make: &dyn Fn() -> Rig,
    hot: bool,
) {
    let full = format!("wallet_charges/{name}");
    group.bench_function(name, |b| {
        let rig = rig.get_or_insert_with(make);
        // Wallet actors start on first use and load their balance: warm them, untimed.
        system.block_on(async {
            for chunk in rig.users.chunks(256) {
                join_all(chunk.iter().map(|u| rig.engine.balance(*u))).await;
            }
        });
        b.iter_custom(|iters| {
            let before = rig.persister_counts();
            let n = clients();
            let mut tally = system.block_on(async {
                let mut tally = Tally::default();
                for _ in 0..iters {
                    let targets: Vec<UserId> = (0..n)
                        .map(|i| {
                            if hot {
                                rig.users[0]
                            } else {
                                rig.users[i % rig.users.len()]
                            }
                        })
                        .collect();
                    let busy = AtomicU64::new(0);
                    let (started, cpu) = (Instant::now(), process_cpu());
                    let clients = targets
                        .iter()
                        .map(|u| recharge_client(&rig.engine, *u, &busy));
                    let counted = run_clients(clients).await;
                    tally.add(&Tally {
                        busy_retries: busy.load(Ordering::Relaxed),
                        elapsed: started.elapsed(),
                        cpu: process_cpu().saturating_sub(cpu),
                        ..counted
                    });
                }
                tally
            });
            rig.persisted_since(&before, &mut tally);
            record(&full, &tally);
            tally.elapsed
        });
    });
}

// --- main ---------------------------------------------------------------------------------

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let system = actix::System::new();
    let admin_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for creating and dropping the database");
    // Created on first use, so a filter that selects only in-memory scenarios needs no server.
    let db: std::cell::OnceCell<BenchDb> = std::cell::OnceCell::new();
    let pg_url = || {
        db.get_or_init(|| BenchDb::create(&admin_runtime))
            .url
            .clone()
    };
    let n = clients();
    let memory_rig = || Rig::start(&system, "memory://", n);
    let pg_rig = || Rig::start(&system, &pg_url(), n);

    let mut memory: Option<Rig> = None;
    let mut postgres: Option<Rig> = None;
    let mut baseline: Option<Baseline> = None;

    // One schedule, contended: 1,000 seats for 10,000 clients, most decisions are refusals.
    // Then one schedule with seats to spare (40,000): most decisions are durable holds.
    for (prefix, seats) in [
        ("hold_one_schedule", SEATS_ONE_SCHEDULE),
        ("hold_one_schedule_40k_seats", SEATS_SPARE),
    ] {
        let mut group = criterion.benchmark_group(prefix);
        group.throughput(Throughput::Elements(n as u64));
        // Flat: a batch takes up to seconds (the baselines); a linear plan would need 55.
        group.sampling_mode(SamplingMode::Flat);
        let mem = &mut memory;
        bench_holds(
            &mut group,
            prefix,
            "boxoffice_memory",
            &system,
            mem,
            &memory_rig,
            1,
            seats,
        );
        let pg = &mut postgres;
        bench_holds(
            &mut group,
            prefix,
            "boxoffice_pg",
            &system,
            pg,
            &pg_rig,
            1,
            seats,
        );
        let (base, url) = (&mut baseline, &pg_url);
        bench_baseline(
            &mut group,
            prefix,
            "baseline_pg_for_update",
            base,
            url,
            Locking::ForUpdate,
            seats,
        );
        let base = &mut baseline;
        bench_baseline(
            &mut group,
            prefix,
            "baseline_pg_conditional_update",
            base,
            url,
            Locking::Conditional,
            seats,
        );
        group.finish();
    }
    {
        let prefix = "hold_100_schedules";
        let mut group = criterion.benchmark_group(prefix);
        group.throughput(Throughput::Elements(n as u64));
        group.sampling_mode(SamplingMode::Flat);
        let (schedules, seats) = (SCHEDULES_PARALLEL, SEATS_PER_PARALLEL_SCHEDULE);
        let mem = &mut memory;
        bench_holds(
            &mut group,
            prefix,
            "boxoffice_memory",
            &system,
            mem,
            &memory_rig,
            schedules,
            seats,
        );
        let pg = &mut postgres;
        bench_holds(
            &mut group,
            prefix,
            "boxoffice_pg",
            &system,
            pg,
            &pg_rig,
            schedules,
            seats,
        );
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("wallet_charges");
        group.throughput(Throughput::Elements(n as u64));
        // Flat: a batch takes up to seconds (the baselines); a linear plan would need 55.
        group.sampling_mode(SamplingMode::Flat);
        bench_wallets(
            &mut group,
            "hot_user_memory",
            &system,
            &mut memory,
            &memory_rig,
            true,
        );
        bench_wallets(
            &mut group,
            "spread_memory",
            &system,
            &mut memory,
            &memory_rig,
            false,
        );
        bench_wallets(
            &mut group,
            "hot_user_pg",
            &system,
            &mut postgres,
            &pg_rig,
            true,
        );
        bench_wallets(
            &mut group,
            "spread_pg",
            &system,
            &mut postgres,
            &pg_rig,
            false,
        );
        group.finish();
    }

    for rig in [memory.take(), postgres.take()].into_iter().flatten() {
        rig.stop(&system);
    }
    if let Some(baseline) = baseline.take() {
        baseline.runtime.block_on(baseline.pool.close());
        baseline.runtime.shutdown_background();
    }
    if let Some(db) = db.get() {
        db.drop_now(&admin_runtime);
    }
    criterion.final_summary();
    print_summary();
}
