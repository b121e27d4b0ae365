//! The waiting-room load generator: a ticket drop's line over HTTP. It puts `--users` people in
//! line (every one joins once, `--join-concurrency` at a time), then polls their status for
//! `--poll-secs`, either flat out on `--poll-concurrency` keep-alive connections (the
//! throughput of GET /v1/queue-status) or, with `--obey-poll-after`, as real clients do:
//! each waiter polls again after the `pollAfterMs` its last answer gave (the load a line of
//! that size puts on the service). It reports rates and latency percentiles, the server's RSS
//! with the line held, and, with `--rate-window-secs`, the admissions the store recorded in a
//! window of the poll phase against the configured `--admit-per-sec`.
//!
//! ```sh
//! # In-process server, 100,000 users inserted with SQL into a throwaway SQLite file:
//! cargo run --release --example waiting_room -- --bulk-users --users 100000
//! # A million waiters on PostgreSQL: prepare the users, start the server, then the load.
//! cargo run --release --example waiting_room -- --prepare-only --bulk-users --users 1000000 \
//!     --database-url postgres://postgres@127.0.0.1:5432/line
//! cargo run --release -- serve --database-url postgres://postgres@127.0.0.1:5432/line \
//!     --idle-timeout-secs 3600 --admit-per-sec 200 --max-active 1000000 &
//! cargo run --release --example waiting_room -- --base-url http://127.0.0.1:8080 \
//!     --database-url postgres://postgres@127.0.0.1:5432/line --bulk-users --users 1000000 \
//!     --server-pid $! --tokens-out /tmp/tokens.txt --wrk-script /tmp/poll.lua
//! # Polls with wrk, from the tokens the run wrote:
//! wrk -t2 -c256 -d10s -s /tmp/poll.lua http://127.0.0.1:8080
//! ```
//!
//! Users come from the admin route (`--admin-key`; an in-process server has its own), or with
//! `--bulk-users` from one SQL statement into `--database-url` before the server boots (the
//! engine loads its users at boot). With `--bulk-users` against a running server, the ids are
//! read from the database (the last `--users` users), nothing is inserted.

use boxoffice::config::Settings;
use boxoffice::store::Store;
use clap::Parser;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Client;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/server.rs"]
mod server;
use server::Spawned;

const SPAWN_ADMIN_KEY: &str = "waiting-room-load-generator-admin-key";

#[derive(Parser, Debug, Clone)]
#[command(about = "A ticket drop's waiting line over HTTP: join, then poll")]
struct Args {
    /// A running server; without it the server starts in-process on --database-url.
    #[arg(long)]
    base_url: Option<String>,
    /// postgres://… or sqlite://FILE: the in-process server's store, where --bulk-users
    /// inserts, and where --rate-window-secs counts admissions. In-process default: a
    /// throwaway SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long)]
    admin_key: Option<String>,
    /// People in line.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Insert the users with one SQL statement instead of the admin route.
    #[arg(long)]
    bulk_users: bool,
    /// Insert the users (--bulk-users) and exit, so a server started next loads them.
    #[arg(long)]
    prepare_only: bool,
    #[arg(long, default_value_t = 512)]
    join_concurrency: usize,
    #[arg(long, default_value_t = 256)]
    poll_concurrency: usize,
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    /// Each waiter polls again after the pollAfterMs of its last answer (instead of flat out).
    #[arg(long)]
    obey_poll_after: bool,
    /// Count the admissions stored during this many seconds of the poll phase (needs a SQL
    /// --database-url and --poll-secs ≥ this + 2).
    #[arg(long, default_value_t = 0)]
    rate_window_secs: u64,
    /// The process to report the RSS of (an external server); in-process: this process.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Processes whose CPU time (user + system, from /proc) during the poll phase is reported
    /// per successful poll: e.g. every node of a cluster.
    #[arg(long, value_delimiter = ',')]
    cpu_pids: Vec<u32>,
    /// Write "userId tokenId" lines, for wrk.
    #[arg(long)]
    tokens_out: Option<String>,
    /// Write a wrk Lua script that polls random tokens of --tokens-out.
    #[arg(long)]
    wrk_script: Option<String>,
    /// Keep an in-process server up this long after the run (to point wrk at it).
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// In-process server: HTTP workers.
    #[arg(long, default_value_t = 2)]
    server_workers: usize,
    /// In-process server: ACTIVE tokens at once.
    #[arg(long, default_value_t = 1000)]
    max_active: usize,
    /// In-process server: admissions per second (0: only the cap).
    #[arg(long, default_value_t = 0)]
    admit_per_sec: u32,
    /// Zero bits of the join's proof of work, for an in-process server (0: none asked). The
    /// joins solve it whenever the server asks one (its challenge route answers 200).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=28))]
    join_pow_bits: u8,
    /// In-process server: a waiter not polling for this long leaves the line.
    #[arg(long, default_value_t = 3600)]
    idle_timeout_secs: u64,
    /// Threads of the load generator's own runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 minutes, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn rss_mb(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or("/proc/self/statm".to_string(), |p| {
        format!("/proc/{p}/statm")
    });
    let statm = std::fs::read_to_string(path).ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

/// CPU time of `pid` so far, in µs (utime + stime of /proc/PID/stat, at 100 ticks a second).
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What one phase saw.
struct Phase {
    name: &'static str,
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
    elapsed: Duration,
}

impl Phase {
    fn row(&self) -> String {
        let p = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.name,
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p(0.5),
            p(0.9),
            p(0.99),
            self.latency.max() as f64 / 1000.0
        )
    }
}

// --- users --------------------------------------------------------------------------------

enum Sql {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Sql {
    async fn open(url: &str) -> Result<Sql, String> {
        if url.starts_with("postgres") {
            Ok(Sql::Postgres(
                sqlx::PgPool::connect(url)
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Sql::Sqlite(
                sqlx::SqlitePool::connect(url)
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        } else {
            Err(format!("{url}: SQL needs postgres:// or sqlite://"))
        }
    }

    async fn execute(&self, sql: &str) -> Result<(), String> {
        match self {
            Sql::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Sql::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .map_err(|e| format!("{sql}: {e}"))
    }

    async fn numbers(&self, sql: &str) -> Result<Vec<i64>, String> {
        match self {
            Sql::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_all(pool).await,
            Sql::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_all(pool).await,
        }
        .map_err(|e| format!("{sql}: {e}"))
    }

    async fn close(self) {
        match self {
            Sql::Postgres(pool) => pool.close().await,
            Sql::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Migrates the store and inserts `n` users in one statement (before the server boots).
async fn insert_users(url: &str, n: usize) -> Result<(), String> {
    let store = Store::connect(url).await.map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    store.close().await;
    let sql = Sql::open(url).await?;
    let insert = match sql {
        Sql::Postgres(_) => format!(
            "INSERT INTO users (name, created_at_ms) SELECT 'waiter', 0 FROM generate_series(1, {n})"
        ),
        Sql::Sqlite(_) => format!(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n})
             INSERT INTO users (name, created_at_ms) SELECT 'waiter', 0 FROM s"
        ),
    };
    sql.execute(&insert).await?;
    sql.close().await;
    Ok(())
}

/// The last `n` users of the database, in id order.
async fn users_in_db(url: &str, n: usize) -> Result<Vec<i64>, String> {
    let sql = Sql::open(url).await?;
    let mut ids = sql
        .numbers(&format!("SELECT id FROM users ORDER BY id DESC LIMIT {n}"))
        .await?;
    sql.close().await;
    ids.reverse();
    Ok(ids)
}

async fn users_over_http(
    client: &Client,
    base: &str,
    admin_key: &str,
    n: usize,
) -> Result<Vec<i64>, String> {
    let made: Vec<Result<i64, String>> = stream::iter(0..n)
        .map(|_| async {
            let response = client
                .post(format!("{base}/v1/admin/users"))
                .header("X-Admin-Key", admin_key)
                .json(&serde_json::json!({ "name": "waiter", "balance": 0 }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body: Value = response.json().await.map_err(|e| e.to_string())?;
            body["userId"]
                .as_i64()
                .ok_or_else(|| format!("no userId in {body}"))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    made.into_iter().collect()
}

// --- phases -------------------------------------------------------------------------------

/// A challenge fetched and solved (on a blocking thread: 20 bits is a million hashes), as the
/// `X-Queue-Pow` header value; `None` if the challenge could not be had (the join then fails
/// with 403 and counts as an error).
async fn join_proof(client: &Client, base: &str) -> Option<String> {
    let body: Value = client
        .get(format!("{base}/v1/queue/challenge"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let challenge = body["challenge"].as_str()?.to_owned();
    let bits = u8::try_from(body["bits"].as_u64()?).ok()?;
    tokio::task::spawn_blocking(move || boxoffice::domain::queue::pow::solve(&challenge, bits))
        .await
        .ok()
}

async fn join_phase(
    client: &Client,
    base: &str,
    users: &[i64],
    concurrency: usize,
) -> (Phase, Vec<(i64, i64)>) {
    // Asked once: without a proof of work (a 404), a join is the one request it always was.
    let pow = client
        .get(format!("{base}/v1/queue/challenge"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    let started = Instant::now();
    let results: Vec<(u64, Option<(i64, i64)>)> = stream::iter(users.iter().copied())
        .map(|user| async move {
            let sent = Instant::now();
            let mut request = client.post(format!("{base}/v1/queue-tokens/users/{user}"));
            if pow {
                if let Some(proof) = join_proof(client, base).await {
                    request = request.header("X-Queue-Pow", proof);
                }
            }
            let response = request.send().await;
            let token = match response {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|b| b["tokenId"].as_i64()),
                _ => None,
            };
            (sent.elapsed().as_micros() as u64, token.map(|t| (user, t)))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latency = histogram();
    let mut pairs = Vec::with_capacity(results.len());
    for (micros, pair) in results {
        let _ = latency.record(micros.max(1));
        pairs.extend(pair);
    }
    let ok = pairs.len() as u64;
    let phase = Phase {
        name: "join",
        latency,
        ok,
        errors: users.len() as u64 - ok,
        elapsed,
    };
    (phase, pairs)
}

/// Closed loop: `concurrency` connections poll random waiters, flat out.
async fn poll_flat_out(
    client: &Client,
    base: &str,
    pairs: &Arc<Vec<(i64, i64)>>,
    concurrency: usize,
    duration: Duration,
) -> Phase {
    let started = Instant::now();
    let workers = (0..concurrency.max(1)).map(|w| {
        let (client, base, pairs) = (client.clone(), base.to_string(), pairs.clone());
        tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w as u64);
            let mut latency = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            while started.elapsed() < duration {
                let (user, token) = pairs[rng.random_range(0..pairs.len())];
                let sent = Instant::now();
                let response = client
                    .get(format!("{base}/v1/queue-status/users/{user}"))
                    .header("TOKEN-ID", token.to_string())
                    .send()
                    .await;
                // Read the body: the connection goes back to the pool only when it is drained.
                let good = match response {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let _ = latency.record((sent.elapsed().as_micros() as u64).max(1));
                if good {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            (latency, ok, errors)
        })
    });
    let mut phase = Phase {
        name: "poll (flat out)",
        latency: histogram(),
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    // A worker that panicked is left out (its polls are lost, not miscounted).
    let finished = futures_util::future::join_all(workers).await;
    for (latency, ok, errors) in finished.into_iter().flatten() {
        let _ = phase.latency.add(&latency);
        phase.ok += ok;
        phase.errors += errors;
    }
    phase.elapsed = started.elapsed();
    phase
}

/// Every waiter polls again after the pollAfterMs of its last answer: a schedule of due polls
/// served by `concurrency` connections; a waiter whose answer is not WAITING stops polling (it
/// left to book, or was dropped). Returns the phase, the mean pollAfterMs answered and how
/// many waiters left.
async fn poll_obeying(
    client: &Client,
    base: &str,
    pairs: &Arc<Vec<(i64, i64)>>,
    concurrency: usize,
    duration: Duration,
) -> (Phase, f64, u64) {
    let started = Instant::now();
    // Spread the first polls over one second, as a crowd arriving would.
    let due: BinaryHeap<Reverse<(Duration, usize)>> = (0..pairs.len())
        .map(|i| {
            Reverse((
                Duration::from_micros((i as u64 * 1_000_000) / pairs.len() as u64),
                i,
            ))
        })
        .collect();
    let due = Arc::new(Mutex::new(due));
    let advised = Arc::new(AtomicU64::new(0));
    let left = Arc::new(AtomicU64::new(0));
    let workers = (0..concurrency.max(1)).map(|_| {
        let (client, base, pairs) = (client.clone(), base.to_string(), pairs.clone());
        let (due, advised, left) = (due.clone(), advised.clone(), left.clone());
        tokio::spawn(async move {
            let mut latency = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let next = due.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(Reverse((at, i))) = next else {
                    break;
                };
                if at >= duration {
                    break;
                }
                let wait = at.saturating_sub(started.elapsed());
                tokio::time::sleep(wait).await;
                let (user, token) = pairs[i];
                let sent = Instant::now();
                let response = client
                    .get(format!("{base}/v1/queue-status/users/{user}"))
                    .header("TOKEN-ID", token.to_string())
                    .send()
                    .await;
                let answer = match response {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                    _ => None,
                };
                let _ = latency.record((sent.elapsed().as_micros() as u64).max(1));
                let pause = match answer.as_ref().and_then(|b| b["pollAfterMs"].as_u64()) {
                    Some(ms) => {
                        ok += 1;
                        advised.fetch_add(ms, Ordering::Relaxed);
                        ms
                    }
                    None => {
                        errors += 1;
                        1_000
                    }
                };
                // Admitted (or dropped): the user leaves the waiting room to book.
                if answer.is_some_and(|b| b["status"] != "WAITING") {
                    left.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let again = started.elapsed() + Duration::from_millis(pause);
                due.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Reverse((again, i)));
            }
            (latency, ok, errors)
        })
    });
    let mut phase = Phase {
        name: "poll (obeying pollAfterMs)",
        latency: histogram(),
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    // A worker that panicked is left out (its polls are lost, not miscounted).
    let finished = futures_util::future::join_all(workers).await;
    for (latency, ok, errors) in finished.into_iter().flatten() {
        let _ = phase.latency.add(&latency);
        phase.ok += ok;
        phase.errors += errors;
    }
    phase.elapsed = started.elapsed();
    let mean = advised.load(Ordering::Relaxed) as f64 / phase.ok.max(1) as f64;
    (phase, mean, left.load(Ordering::Relaxed))
}

// --- the in-process server ----------------------------------------------------------------

/// Starts the application in-process with this run's settings.
fn spawn_server(args: &Args, url: &str) -> Result<Spawned, String> {
    let mut settings = Settings::for_database(url);
    settings.admin_key = Some(SPAWN_ADMIN_KEY.into());
    settings.http_workers = args.server_workers.max(1);
    settings.engine.max_active = args.max_active;
    settings.engine.admit_per_sec = args.admit_per_sec;
    settings.join_pow.bits = args.join_pow_bits;
    settings.engine.idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    server::spawn_server(settings)
}

fn write_tokens(path: &str, pairs: &[(i64, i64)]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (user, token) in pairs {
        writeln!(out, "{user} {token}")?;
    }
    out.flush()
}

fn write_wrk_script(path: &str, tokens: &str) -> std::io::Result<()> {
    let script = format!(
        r#"-- Polls GET /v1/queue-status for random waiters of {tokens} (written by waiting_room).
local waiters = {{}}
for line in io.lines("{tokens}") do
  local user, token = line:match("(%d+) (%d+)")
  waiters[#waiters + 1] = {{ user, token }}
end
math.randomseed(os.time())
-- 100,000 requests to random waiters, formatted once per thread (in init, once wrk has set the
-- Host header): formatting one per request in Lua cost wrk about as much CPU as the server
-- spent answering it, on the same two cores.
local requests = {{}}
init = function(args)
  for i = 1, math.min(100000, #waiters) do
    local w = waiters[math.random(#waiters)]
    requests[i] = wrk.format("GET", "/v1/queue-status/users/" .. w[1], {{ ["TOKEN-ID"] = w[2] }})
  end
end
local next = 0
request = function()
  next = next % #requests + 1
  return requests[next]
end
"#
    );
    std::fs::write(path, script)
}

async fn drive(args: &Args, base: &str, admin_key: &str, url: Option<&str>) -> Result<(), String> {
    let client = Client::builder()
        .pool_max_idle_per_host(args.join_concurrency.max(args.poll_concurrency))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let setup = Instant::now();
    let users = match (args.bulk_users, url) {
        (true, Some(url)) => users_in_db(url, args.users).await?,
        (true, None) => return Err("--bulk-users needs --database-url".into()),
        (false, _) => users_over_http(&client, base, admin_key, args.users).await?,
    };
    println!(
        "{} users ready in {:.1} s (setup, not measured)",
        users.len(),
        setup.elapsed().as_secs_f64()
    );
    let rss_before = rss_mb(args.server_pid);
    let (join, pairs) = join_phase(&client, base, &users, args.join_concurrency).await;
    let rss_after = rss_mb(args.server_pid);
    if let Some(path) = &args.tokens_out {
        write_tokens(path, &pairs).map_err(|e| format!("{path}: {e}"))?;
        if let Some(script) = &args.wrk_script {
            write_wrk_script(script, path).map_err(|e| format!("{script}: {e}"))?;
        }
    }
    if pairs.is_empty() {
        return Err("no join succeeded".into());
    }
    let pairs = Arc::new(pairs);
    let duration = Duration::from_secs(args.poll_secs);
    let window_from = epoch_ms() + 1_000;
    let cpu_before: Vec<Option<u64>> = args.cpu_pids.iter().map(|p| cpu_us(*p)).collect();
    let (poll, advised) = if args.obey_poll_after {
        let (phase, mean, left) =
            poll_obeying(&client, base, &pairs, args.poll_concurrency, duration).await;
        (phase, Some((mean, left)))
    } else {
        (
            poll_flat_out(&client, base, &pairs, args.poll_concurrency, duration).await,
            None,
        )
    };

    let cpu_after: Vec<Option<u64>> = args.cpu_pids.iter().map(|p| cpu_us(*p)).collect();
    println!("\n## waiting room: {} waiters\n", pairs.len());
    println!("| phase | ok | errors | seconds | per second | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!("{}", join.row());
    println!("{}", poll.row());
    if let Some((mean, left)) = advised {
        println!(
            "\nmean pollAfterMs answered: {mean:.0} ms; {left} waiters were admitted (or dropped) \
             and stopped polling"
        );
    }
    if !args.cpu_pids.is_empty() {
        let mut total = 0u64;
        for ((pid, before), after) in args.cpu_pids.iter().zip(&cpu_before).zip(&cpu_after) {
            if let (Some(b), Some(a)) = (before, after) {
                let used = a.saturating_sub(*b);
                total += used;
                println!(
                    "\nCPU of pid {pid} in the poll phase: {:.2} s, {:.1} µs per poll",
                    used as f64 / 1e6,
                    used as f64 / poll.ok.max(1) as f64
                );
            }
        }
        println!(
            "\nCPU of all {} processes: {:.1} µs per poll",
            args.cpu_pids.len(),
            total as f64 / poll.ok.max(1) as f64
        );
    }
    let who = if args.server_pid.is_some() {
        "server"
    } else {
        "this process (server and load generator)"
    };
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "\nRSS of {who}: {before:.0} MB before the joins, {after:.0} MB with the line held"
        );
    }
    if args.rate_window_secs > 0 {
        let url = url.ok_or("--rate-window-secs needs --database-url")?;
        let to = window_from + args.rate_window_secs as i64 * 1000;
        let sql = Sql::open(url).await?;
        let admitted = sql
            .numbers(&format!(
                "SELECT COUNT(*) FROM queue_tokens WHERE admitted_at_ms >= {window_from} \
                 AND admitted_at_ms < {to}"
            ))
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        let waiting = sql
            .numbers("SELECT COUNT(*) FROM queue_tokens WHERE status = 'WAITING'")
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        sql.close().await;
        let measured = admitted as f64 / args.rate_window_secs as f64;
        println!(
            "\nadmissions stored in a {} s window: {admitted} = {measured:.2}/s against \
             admit_per_sec {} ({:+.2} %); still waiting at the end: {waiting}",
            args.rate_window_secs,
            args.admit_per_sec,
            (measured / f64::from(args.admit_per_sec.max(1)) - 1.0) * 100.0
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    boxoffice::telemetry::init_with_default("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the client runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let scratch = std::env::temp_dir().join(format!("boxoffice-line-{}", std::process::id()));
    let url = match (&args.database_url, &args.base_url) {
        (Some(url), _) => Some(url.clone()),
        (None, None) => {
            if let Err(e) = std::fs::create_dir_all(&scratch) {
                eprintln!("cannot create {}: {e}", scratch.display());
                return ExitCode::from(2);
            }
            Some(format!(
                "sqlite://{}?mode=rwc",
                scratch.join("line.db").display()
            ))
        }
        (None, Some(_)) => None,
    };
    let spawn = args.base_url.is_none() && !args.prepare_only;
    if args.bulk_users && (spawn || args.prepare_only) {
        let Some(url) = url.as_deref() else {
            eprintln!("--bulk-users needs --database-url");
            return ExitCode::from(2);
        };
        let started = Instant::now();
        if let Err(e) = runtime.block_on(insert_users(url, args.users)) {
            eprintln!("cannot insert the users: {e}");
            return ExitCode::from(2);
        }
        println!(
            "inserted {} users in {:.1} s",
            args.users,
            started.elapsed().as_secs_f64()
        );
        if args.prepare_only {
            return ExitCode::SUCCESS;
        }
    }
    let spawned = if spawn {
        match spawn_server(&args, url.as_deref().unwrap_or_default()) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("cannot start the server: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let base = match (&spawned, &args.base_url) {
        (Some(s), _) => s.base.clone(),
        (None, Some(b)) => b.trim_end_matches('/').to_string(),
        (None, None) => unreachable!("no --base-url means an in-process server"),
    };
    let admin_key = if spawned.is_some() {
        SPAWN_ADMIN_KEY.to_string()
    } else {
        args.admin_key.clone().unwrap_or_default()
    };
    let outcome = runtime.block_on(drive(&args, &base, &admin_key, url.as_deref()));
    if let Some(spawned) = spawned {
        if args.hold_secs > 0 {
            println!("\nserver at {} for {} s more", spawned.base, args.hold_secs);
            std::thread::sleep(Duration::from_secs(args.hold_secs));
        }
        runtime.block_on(spawned.handle.stop(true));
        let _ = spawned.thread.join();
    }
    if args.database_url.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
