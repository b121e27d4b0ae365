//! Waiting-room benchmarks at ticket-drop size: the pure `WaitingLine` holding a million
//! waiters (memory, join, poll, tick, restore), and durable joins through the whole engine
//! (actor + persister group commit) on PostgreSQL, with a restart that reloads the line.
//!
//! Groups (criterion):
//! - `line_1m/join_and_advance`: one join into a line of 1,000,000 waiters, followed by the
//!   `advance` the actor runs on every join (rate-capped admission): the per-join cost, flat
//!   in the size of the line.
//! - `line_1m/poll`: `touch` + `status` of a random waiter of the 1,000,000 (what a status
//!   poll does under the read lock), including the Fenwick "waiters ahead".
//! - `line_1m/tick`: one 50 ms tick, one in one out at 2,000/s: ~100 expiries and ~100
//!   admissions from the front of a line of 1,000,000.
//! - `line_1m/restore`: rebuilding the line from 1,000,000 stored records (boot).
//! - `draw_1m/draw`: the fair opening's draw of a pre-queue of 1,000,000 (names, digest,
//!   keys, sort; API.md §11), whose target is ≤ 2 s.
//! - `join_pow/verify`: checking one join's proof of work (`X-Queue-Pow`): its shape, the
//!   challenge's HMAC tag, its expiry and the work (target ≤ 5 µs); `join_pow/spend`:
//!   remembering it as spent in a memory holding two minutes of spends at 1,000 joins/s.
//!
//! Printed before criterion starts, in this order: the process RSS for a line of 1,000,000
//! waiters (from `/proc/self/statm`, in a fresh process); `durable joins` (below); the idle
//! sweep: all 1,000,000 waiters abandon at once, how many ticks the sweep takes and the
//! longest tick.
//!
//! `durable joins` is not a criterion group because every join needs a fresh user:
//! `BOXOFFICE_BENCH_JOINS` (default 200,000) users are inserted with one SQL statement, the
//! engine starts on them, then every user joins concurrently (4,096 in flight: the actor's
//! mailbox) through `Engine::join_queue`, whose answer comes after the group commit. Reported: joins/s, submissions per commit, process RSS with the line held,
//! the time a restarted engine takes to reload the line, and a check that it is the same line
//! in the same order. Needs PostgreSQL (`BOXOFFICE_TEST_POSTGRES` or
//! `postgres://postgres@127.0.0.1:5432`); `BOXOFFICE_BENCH_JOINS=0` skips it.
//!
//! Run: `cargo bench --bench queue` (about two minutes); `cargo bench --bench queue -- poll`
//! runs one group (the durable part runs whenever `BOXOFFICE_BENCH_JOINS` is not 0).

use actix::SystemRunner;
use boxoffice::actors::QueueError;
use boxoffice::actors::{Engine, EngineSettings, Persister, Unavailable};
use boxoffice::clock::SystemClock;
use boxoffice::domain::queue::{draw, AdmissionPolicy, DrawSeed, Joined, TokenRecord, WaitingLine};
use boxoffice::domain::{Timestamp, TokenId, UserId};
use boxoffice::store::{Store, StoreHandle};
use criterion::{BatchSize, Criterion};
use futures_util::stream::{self, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::unconstrained;

const MILLION: usize = 1_000_000;
/// Joins in flight at once: the queue actor's mailbox holds this many.
const IN_FLIGHT: usize = 4096;

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn policy(admit_per_sec: u32) -> AdmissionPolicy {
    AdmissionPolicy {
        max_active: 1_000_000,
        active_ttl: Duration::from_secs(600),
        // Nobody is dropped while the bench runs.
        idle_timeout: Duration::from_secs(86_400),
        admit_per_sec,
    }
}

fn user(n: usize) -> UserId {
    UserId::new(n as i64 + 1).expect("positive")
}

/// A line of `n` waiters joined at t = 0, and their tokens.
fn line_of(n: usize, admit_per_sec: u32) -> (WaitingLine, Vec<TokenId>) {
    let mut line = WaitingLine::new(policy(admit_per_sec), 1);
    let mut rng = SmallRng::seed_from_u64(1);
    let mut tokens = Vec::with_capacity(n);
    for u in 0..n {
        match line.join(
            user(u),
            || TokenId::random(&mut rng),
            Timestamp::from_millis(0),
        ) {
            Joined::Created { token, .. } => tokens.push(token.id),
            Joined::Existing(_) => unreachable!("each user joins once"),
        }
    }
    (line, tokens)
}

fn line_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("line_1m");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));

    {
        // 500/s and a join every simulated millisecond: the line grows by one every other
        // join, and every join's advance admits about half a waiter.
        let (mut line, _) = line_of(MILLION, 500);
        let mut rng = SmallRng::seed_from_u64(2);
        let mut next = MILLION;
        let mut now = 1_000;
        group.bench_function("join_and_advance", |b| {
            b.iter(|| {
                next += 1;
                now += 1;
                let t = Timestamp::from_millis(now);
                line.join(user(next), || TokenId::random(&mut rng), t);
                line.advance(t)
            })
        });
    }
    {
        let (line, tokens) = line_of(MILLION, 0);
        let mut rng = SmallRng::seed_from_u64(3);
        let now = Timestamp::from_millis(1_000);
        group.bench_function("poll", |b| {
            b.iter(|| {
                let token = tokens[rng.random_range(0..tokens.len())];
                line.touch(token, now);
                line.status(token, now)
            })
        });
    }
    {
        // One in, one out at 2,000/s: each tick expires the ~100 tokens admitted a second ago
        // and admits ~100 more from the front. The line is topped up (untimed) so it never
        // runs dry, and each tick is timed on its own.
        let mut line = WaitingLine::new(
            AdmissionPolicy {
                active_ttl: Duration::from_secs(1),
                ..policy(2_000)
            },
            1,
        );
        let mut rng = SmallRng::seed_from_u64(4);
        let mut next = 0;
        let mut now = 0;
        let mut admitted = 0u64;
        let mut ticks = 0u64;
        group.bench_function("tick", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    while line.waiting_count() < MILLION {
                        next += 1;
                        line.join(
                            user(next),
                            || TokenId::random(&mut rng),
                            Timestamp::from_millis(now),
                        );
                    }
                    now += 50;
                    let started = Instant::now();
                    let changed = line.advance(Timestamp::from_millis(now));
                    spent += started.elapsed();
                    admitted += changed.len() as u64;
                    ticks += 1;
                }
                spent
            })
        });
        if ticks > 0 {
            println!(
                "tick: {:.0} transitions per tick on average (admissions + expiries)",
                admitted as f64 / ticks.max(1) as f64
            );
        }
    }
    {
        let (line, tokens) = line_of(MILLION, 0);
        let records: Vec<TokenRecord> = tokens
            .iter()
            .filter_map(|t| line.status(*t, Timestamp::from_millis(0)))
            .map(|s| s.record)
            .collect();
        drop(line);
        group.sample_size(10);
        group.bench_function("restore", |b| {
            b.iter_batched(
                || records.clone(),
                |records| WaitingLine::restore(policy(0), records, Timestamp::from_millis(0)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

// --- durable joins on PostgreSQL ----------------------------------------------------------

fn postgres_server() -> String {
    std::env::var("BOXOFFICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn joins() -> usize {
    std::env::var("BOXOFFICE_BENCH_JOINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// The engine as `Application::build` wires it, without HTTP: its own store runtime.
struct Rig {
    engine: Engine,
    runtime: tokio::runtime::Runtime,
}

impl Rig {
    fn start(system: &SystemRunner, url: &str) -> (Rig, Duration) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store")
            .enable_all()
            .build()
            .expect("the store runtime starts");
        let owned = url.to_string();
        let store = runtime
            .block_on(async move {
                let store = Store::connect(&owned).await?;
                store.migrate().await?;
                Ok::<_, boxoffice::store::StoreError>(store)
            })
            .expect("the store opens and migrates");
        let handle = StoreHandle::new(store, runtime.handle().clone());
        let settings = EngineSettings {
            max_active: 1000,
            idle_timeout: Duration::from_secs(86_400),
            ..EngineSettings::default()
        };
        let (persister, _task) = Persister::start(
            handle.store().clone(),
            runtime.handle(),
            settings.persister_capacity,
            settings.pipeline_commits,
        );
        let started = Instant::now();
        let engine = system
            .block_on(Engine::start(
                settings,
                Arc::new(SystemClock),
                handle,
                persister,
            ))
            .expect("the engine starts");
        (Rig { engine, runtime }, started.elapsed())
    }

    fn stop(self, system: &SystemRunner) {
        system.block_on(self.engine.shutdown());
        self.runtime.shutdown_background();
    }
}

fn durable_joins() {
    let n = joins();
    if n == 0 {
        return;
    }
    let admin = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let server = postgres_server();
    let name = format!("boxoffice_bench_queue_{}", std::process::id());
    let url = format!("{server}/{name}");
    admin.block_on(async {
        let pool = PgPool::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {server}: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await
            .expect("create the bench database");
        pool.close().await;
    });
    let system = actix::System::new();
    // Migrate, then insert the users in one statement, before the engine loads its catalog.
    let (rig, _) = Rig::start(&system, &url);
    rig.stop(&system);
    admin.block_on(async {
        let pool = PgPool::connect(&url).await.expect("the bench database");
        sqlx::query(
            "INSERT INTO users (name, created_at_ms) SELECT 'waiter', 0 FROM generate_series(1, $1)",
        )
        .bind(n as i64)
        .execute(&pool)
        .await
        .expect("insert users");
        pool.close().await;
    });
    let (rig, _) = Rig::start(&system, &url);
    let rss_before = rss_mb();
    let busy = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let stats = rig.engine.persister().stats();
    let (batches0, submissions0) = (
        stats.batches.load(Ordering::Relaxed),
        stats.submissions.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    system.block_on(unconstrained(
        stream::iter(1..=n as i64)
            .map(|u| {
                let (engine, busy, failed) = (&rig.engine, &busy, &failed);
                async move {
                    let user = UserId::new(u).expect("positive");
                    loop {
                        match engine.join_queue(user).await {
                            Ok(_) => return,
                            Err(QueueError::Unavailable(Unavailable::Busy)) => {
                                busy.fetch_add(1, Ordering::Relaxed);
                                tokio::task::yield_now().await;
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<()>>(),
    ));
    let elapsed = started.elapsed();
    let batches = stats.batches.load(Ordering::Relaxed) - batches0;
    let submissions = stats.submissions.load(Ordering::Relaxed) - submissions0;
    let rss_held = rss_mb();
    let (waiting, active) = rig.engine.queue_counts();
    let sample: Vec<(i64, u64)> = (1..=n as i64)
        .step_by((n / 1000).max(1))
        .filter_map(|u| {
            let record = rig.engine.token_of_now(UserId::new(u).ok()?).ok()?;
            Some((u, record.position))
        })
        .collect();
    let ahead_before: Vec<u64> = sample
        .iter()
        .filter_map(|(u, _)| {
            let user = UserId::new(*u).ok()?;
            let record = rig.engine.token_of_now(user).ok()?;
            rig.engine
                .poll_now(user, Some(record.id))
                .ok()
                .map(|s| s.ahead)
        })
        .collect();
    rig.stop(&system);

    let (rig, boot) = Rig::start(&system, &url);
    let (waiting_after, active_after) = rig.engine.queue_counts();
    let same_places = sample.iter().all(|(u, position)| {
        UserId::new(*u)
            .ok()
            .and_then(|user| rig.engine.token_of_now(user).ok())
            .is_some_and(|r| r.position == *position)
    });
    let ahead_after: Vec<u64> = sample
        .iter()
        .filter_map(|(u, _)| {
            let user = UserId::new(*u).ok()?;
            let record = rig.engine.token_of_now(user).ok()?;
            rig.engine
                .poll_now(user, Some(record.id))
                .ok()
                .map(|s| s.ahead)
        })
        .collect();
    let stored = admin.block_on(async {
        let pool = PgPool::connect(&url).await.expect("the bench database");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_tokens")
            .fetch_one(&pool)
            .await
            .expect("count tokens");
        pool.close().await;
        count
    });
    rig.stop(&system);
    admin.block_on(async {
        if let Ok(pool) = PgPool::connect(&format!("{server}/postgres")).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    });

    println!("\n## durable joins (PostgreSQL, engine in-process, {IN_FLIGHT} in flight)\n");
    println!("| joins | seconds | joins/s | failed | busy retries | submissions per commit | tokens stored |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.2} | {:.0} | {} | {} | {:.0} | {stored} |",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        submissions as f64 / batches.max(1) as f64,
    );
    println!(
        "\nprocess RSS: {rss_before:.0} MB with the engine started, {rss_held:.0} MB holding \
         {waiting} waiting + {active} active"
    );
    println!(
        "restart: engine rebuilt in {:.2} s; {waiting_after} waiting + {active_after} active; \
         sampled places unchanged: {same_places}; waiters ahead unchanged: {}",
        boot.as_secs_f64(),
        ahead_before == ahead_after
    );
}

/// A million waiters stop polling at the same instant: the ticks sweep them out within their
/// budget, so no tick holds the writer's lock for long, and nothing scans the line.
fn idle_sweep() {
    let (mut line, _) = line_of(MILLION, 0);
    let policy = line.policy();
    // Everyone's idle deadline is the same instant; the first waiters were admitted at once.
    let mut now = Timestamp::from_millis(0).plus(policy.idle_timeout);
    let (mut ticks, mut expired, mut longest) = (0, 0, Duration::ZERO);
    let started = Instant::now();
    while line.waiting_count() > 0 {
        let tick = Instant::now();
        expired += line.advance(now).len();
        longest = longest.max(tick.elapsed());
        ticks += 1;
        now = now.plus(Duration::from_millis(50));
    }
    println!(
        "\n## idle sweep: {MILLION} waiters abandon at once\n\n{expired} transitions in {ticks} \
         ticks ({:.0} ms in all); the longest tick (the writer's lock) took {:.2} ms\n",
        started.elapsed().as_secs_f64() * 1000.0,
        longest.as_secs_f64() * 1000.0
    );
}

/// The fair opening's draw of a pre-queue of 1,000,000 (target ≤ 2 s).
fn draw_benches(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(27);
    let tokens: Vec<TokenId> = (0..MILLION).map(|_| TokenId::random(&mut rng)).collect();
    let seed = DrawSeed::from_bytes(rng.random());
    let mut group = c.benchmark_group("draw_1m");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("draw", |b| b.iter(|| draw(&seed, &tokens)));
    group.finish();
}

/// The join's proof of work: its check, and remembering it as spent.
fn pow_benches(c: &mut Criterion) {
    use boxoffice::domain::queue::pow::{self, PowKey, Solved, SpentChallenges};
    let mut group = c.benchmark_group("join_pow");
    group.measurement_time(Duration::from_secs(3));
    let key = PowKey::new([7; 32]);
    let now = Timestamp::from_millis(1_000);
    let challenge = pow::issue(&key, [1; 16], now.plus(pow::CHALLENGE_VALIDITY));
    let solution = pow::solve(&challenge, 16);
    group.bench_function("verify", |b| {
        b.iter(|| pow::verify(&key, std::hint::black_box(&solution), 16, now))
    });
    let mut spent = SpentChallenges::new(pow::MAX_SPENT_CHALLENGES);
    let mut n: u128 = 0;
    group.bench_function("spend", |b| {
        b.iter(|| {
            // A join a millisecond: about 120,000 spends are remembered at any time.
            n += 1;
            let at = Timestamp::from_millis(n as i64);
            let solved = Solved {
                challenge: n,
                expires_at: at.plus(pow::CHALLENGE_VALIDITY),
            };
            spent.spend(solved, at)
        })
    });
    group.finish();
}

fn main() {
    // Measured first, while the process holds nothing else. Its pages go back to the system
    // when it is dropped (every part is one large allocation), so the durable part after it
    // starts from a clean process too; criterion's many lines come last.
    let before = rss_mb();
    let (line, tokens) = line_of(MILLION, 0);
    let after = rss_mb();
    let waiting = line.waiting_count();
    drop((line, tokens));
    println!(
        "\n## memory: a line of {waiting} waiters\n\nprocess RSS {before:.1} MB → {after:.1} MB \
         (the line and the bench's own list of 1,000,000 token ids, 8 MB)\n"
    );
    durable_joins();
    idle_sweep();
    let mut criterion = Criterion::default().configure_from_args();
    line_benches(&mut criterion);
    draw_benches(&mut criterion);
    pow_benches(&mut criterion);
    criterion.final_summary();
}
