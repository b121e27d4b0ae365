//! The ticket-drop load generator: virtual users do the whole drop over HTTP — join the
//! waiting room, poll until ACTIVE, list the schedules, read a seat map, reserve (again, on
//! other seats, after "reservation failed"), pay — closed-loop or open-loop, and it reports
//! throughput and latency percentiles per step. At the end it checks the invariants against
//! the store: no seat sold twice, sold seats = paid reservations = acknowledged payments,
//! every balance = recharges − payments. It exits non-zero if one fails.
//!
//! ```sh
//! # In-process server on a throwaway SQLite file (the CI smoke run, under 30 s):
//! cargo run --release --example drop -- --smoke
//! # A bigger drop on PostgreSQL, server in-process:
//! cargo run --release --example drop -- --spawn --database-url postgres://postgres@127.0.0.1:5432/drop \
//!     --users 20000 --seats 20000 --schedules 4 --concurrency 256
//! # Against a running server (its admin key; --database-url for the invariant checks):
//! cargo run --release --example drop -- --base-url http://127.0.0.1:8080 --admin-key KEY \
//!     --database-url postgres://…/boxoffice
//! ```
//!
//! The measured phase speaks HTTP/1.1 through its own small client (`wire.rs`), so the
//! generator costs the shared cores as little as it can; `--verify-seat-maps` (on with
//! `--smoke`) checks its seat-map scan against a full JSON parse.
//!
//! Setup (creating users, funding their wallets with a recharge, creating the concert) is done
//! over HTTP with the admin key and is not part of the measured phase. Users are created with
//! a zero balance and funded by a recharge so the ledger explains every balance.

use boxoffice::config::Settings;
use boxoffice::store::MemoryStore;
use clap::Parser;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use memchr::memmem;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::{Client, RequestBuilder};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use wire::{Conn, Failure, Pool, RequestBuf, Target};

#[path = "../support/server.rs"]
mod server;
mod wire;
use server::Spawned;

const PRICE: i64 = 10_000;
const SPAWN_ADMIN_KEY: &str = "drop-load-generator";
/// A 503 (`Retry-After`) is retried this many times, after this long: the point is to measure
/// the service, not to hammer it while it sheds load.
const UNAVAILABLE_RETRIES: usize = 3;
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(20);

#[derive(Parser, Debug, Clone)]
#[command(about = "A ticket drop over HTTP, with latency percentiles and invariant checks")]
struct Args {
    /// A running server to hit (needs --admin-key); without it the server starts in-process.
    #[arg(long)]
    base_url: Option<String>,
    /// Start the application in-process on --database-url (the default without --base-url).
    #[arg(long)]
    spawn: bool,
    /// The store: where an in-process server writes, and where the invariants are checked.
    /// postgres://…, sqlite://FILE or memory://NAME. Default with --spawn: a throwaway SQLite
    /// file.
    #[arg(long)]
    database_url: Option<String>,
    /// Virtual users (each does the drop once).
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Seats in the drop, split evenly over --schedules (at most 20,000 per schedule).
    #[arg(long, default_value_t = 5_000)]
    seats: usize,
    #[arg(long, default_value_t = 1)]
    schedules: usize,
    /// Closed loop: users in flight at once. Open loop: the cap on users in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// No new user starts after this long.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Open loop: users arriving per second, whether or not earlier ones finished.
    #[arg(long)]
    open_loop_rate: Option<f64>,
    /// X-Admin-Key of the server (an in-process server gets one of its own).
    #[arg(long, env = "BOXOFFICE_ADMIN_KEY")]
    admin_key: Option<String>,
    /// Each user reserves 1 to this many seats.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4))]
    seats_per_user: u64,
    /// Reservation attempts per user (each after re-reading the seat map).
    #[arg(long, default_value_t = 5)]
    max_attempts: usize,
    /// Pause between status polls of a WAITING token.
    #[arg(long, default_value_t = 50)]
    poll_interval_ms: u64,
    /// HTTP workers of an in-process server.
    #[arg(long, default_value_t = 2)]
    server_workers: usize,
    /// Threads of the load generator's own runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// ACTIVE tokens at once, for an in-process server (users that sold out keep theirs).
    #[arg(long, default_value_t = 100_000)]
    max_active: u64,
    /// CI preset: 1,000 users, 1,000 seats on 2 schedules, 32 clients, at most 20 s, in-process
    /// on a throwaway SQLite file unless --database-url says otherwise.
    #[arg(long)]
    smoke: bool,
    /// Check the seat-map scanner against a full JSON parse of every map (on with --smoke).
    #[arg(long)]
    verify_seat_maps: bool,
    /// Print a line a second: users completed in that second, users in flight, the slowest
    /// iteration completed in it.
    #[arg(long)]
    progress: bool,
    /// Keep the throwaway SQLite file.
    #[arg(long)]
    keep: bool,
}

impl Args {
    fn resolved(mut self) -> Args {
        if self.smoke {
            // More demand (about 1,500 seats) than seats: the sold-out path runs too.
            self.users = 1_000;
            self.seats = 1_000;
            self.schedules = 2;
            self.concurrency = 32;
            self.duration_secs = 20;
            self.verify_seat_maps = true;
        }
        if self.base_url.is_none() {
            self.spawn = true;
        }
        self.schedules = self.schedules.clamp(1, 100);
        self.concurrency = self.concurrency.max(1);
        self
    }
}

// --- statistics ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Join,
    Poll,
    Schedules,
    Seats,
    Reserve,
    Pay,
}

const STEPS: [Step; 6] = [
    Step::Join,
    Step::Poll,
    Step::Schedules,
    Step::Seats,
    Step::Reserve,
    Step::Pay,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Join => "join",
            Step::Poll => "poll",
            Step::Schedules => "schedules",
            Step::Seats => "seats",
            Step::Reserve => "reserve",
            Step::Pay => "pay",
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 minutes, 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Latencies in microseconds, one per request. Raw samples, not a histogram, until the
/// report: a histogram of this range is about 250 kB, and an open-loop run keeps statistics
/// per user (thousands per second); a few samples per user are a few bytes.
#[derive(Default)]
struct Samples(Vec<u64>);

impl Samples {
    fn record(&mut self, micros: u64) {
        self.0.push(micros.max(1));
    }

    fn histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        for &v in &self.0 {
            // Above the 10-minute bound only if a request outlived the 30 s timeout 20 times.
            let _ = h.record(v);
        }
        h
    }
}

struct StepStats {
    latency: Samples,
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    transport_errors: u64,
}

impl StepStats {
    fn new() -> StepStats {
        StepStats {
            latency: Samples::default(),
            ok: 0,
            client_errors: 0,
            server_errors: 0,
            transport_errors: 0,
        }
    }

    fn merge(&mut self, other: &StepStats) {
        // Same bounds on both sides: adding cannot fail.
        self.latency.0.extend_from_slice(&other.latency.0);
        self.ok += other.ok;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.transport_errors += other.transport_errors;
    }
}

/// What one virtual user (or all of them, merged) saw.
struct Stats {
    steps: Vec<StepStats>,
    iteration: Samples,
    completed: u64,
    sold_out: u64,
    failed: u64,
    /// "reservation failed": the seats were taken since the map was read.
    conflicts: u64,
    /// Error slugs of failed iterations, for the report.
    failures: HashMap<String, u64>,
    /// Payments whose outcome is unknown (transport error or 5xx on the last try).
    unknown_payments: u64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            steps: STEPS.iter().map(|_| StepStats::new()).collect(),
            iteration: Samples::default(),
            completed: 0,
            sold_out: 0,
            failed: 0,
            conflicts: 0,
            failures: HashMap::new(),
            unknown_payments: 0,
        }
    }

    fn step(&mut self, step: Step) -> &mut StepStats {
        &mut self.steps[step as usize]
    }

    fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.steps.iter_mut().zip(&other.steps) {
            mine.merge(theirs);
        }
        self.iteration.0.extend_from_slice(&other.iteration.0);
        self.completed += other.completed;
        self.sold_out += other.sold_out;
        self.failed += other.failed;
        self.conflicts += other.conflicts;
        self.unknown_payments += other.unknown_payments;
        for (slug, n) in &other.failures {
            *self.failures.entry(slug.clone()).or_default() += n;
        }
    }

    fn fail(&mut self, why: impl Into<String>) -> Outcome {
        self.failed += 1;
        *self.failures.entry(why.into()).or_default() += 1;
        Outcome::Failed
    }
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn report(stats: &Stats, elapsed: Duration, started: usize, dropped: u64) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!("\n## drop: per step ({:.1} s measured)\n", secs);
    println!("| step | requests | ok | 4xx | 5xx | transport errors | per second | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (step, s) in STEPS.iter().zip(&stats.steps) {
        let h = &s.latency.histogram();
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            step.name(),
            h.len(),
            s.ok,
            s.client_errors,
            s.server_errors,
            s.transport_errors,
            h.len() as f64 / secs,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        );
    }
    let h = &stats.iteration.histogram();
    println!("\n## drop: whole iterations (join → pay)\n");
    println!("| users started | completed (paid) | sold out | failed | dropped (open loop, cap reached) | reservation conflicts retried | full iterations per second | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
        started,
        stats.completed,
        stats.sold_out,
        stats.failed,
        dropped,
        stats.conflicts,
        stats.completed as f64 / secs,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    );
    if !stats.failures.is_empty() {
        let mut failures: Vec<_> = stats.failures.iter().collect();
        failures.sort();
        println!("\nfailed iterations by cause: {failures:?}");
    }
}

// --- HTTP ---------------------------------------------------------------------------------

/// What every virtual user shares.
struct Scenario {
    target: Target,
    pool: Pool,
    concert: i64,
    schedules: HashSet<i64>,
    args: Args,
    /// Check the seat-map scanner against a full JSON parse of every map (the smoke run does).
    verify_seat_maps: bool,
    /// Users completed and the slowest iteration (µs) since the last --progress line; users
    /// in flight (also the open loop's cap).
    completed: AtomicU64,
    in_flight: AtomicUsize,
    slowest: AtomicU64,
}

/// A response: the typed body of a success, or the error slug of a refusal.
enum Answer<T> {
    Ok(T),
    Refused(u16, String),
    /// No response, a body that did not arrive, or a success whose body did not parse.
    Broken(String),
}

impl<T> Answer<T> {
    /// Why the step did not succeed, for the report.
    fn why(&self) -> String {
        match self {
            Answer::Ok(_) => "ok".into(),
            Answer::Refused(status, slug) => format!("{status} {slug}"),
            Answer::Broken(why) => why.clone(),
        }
    }
}

/// The error envelope: only its slug matters here.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

// Typed bodies: only the fields the drop needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    token_id: i64,
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

#[derive(Deserialize)]
struct SchedulesBody {
    events: Vec<EventBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventBody {
    schedule_id: i64,
    available_seat_count: i64,
}

/// The seat map, fully parsed: only to check [`free_seats`] against.
#[derive(Deserialize)]
struct SeatsBody {
    seats: Vec<SeatBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeatBody {
    seat_id: i64,
    seat_status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReservationBody {
    reservation_id: i64,
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

static SEAT_ID: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"seatId\":"));
static SEAT_STATUS: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"seatStatus\":\""));

/// The free seats' ids in a seat map, found by scanning for the two fields the drop needs
/// instead of parsing about 70 kB of JSON per map (that parse was the generator's largest
/// cost after HTTP itself). It relies on the server writing `seatId` before `seatStatus` in
/// each seat; with `verify` the answer is checked against a full parse, and a disagreement
/// is an error (the CI smoke run verifies every map).
fn free_seats(body: &[u8], verify: bool) -> Result<Vec<i64>, String> {
    let start = memmem::find(body, b"\"seats\":[").ok_or("a seat map without seats")?;
    let mut rest = &body[start..];
    let mut free = Vec::new();
    let mut seen = 0;
    while let Some(at) = SEAT_ID.find(rest) {
        rest = &rest[at + SEAT_ID.needle().len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 18 {
            return Err("a seatId that is not a number".into());
        }
        let id = rest[..digits]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        let at = SEAT_STATUS
            .find(rest)
            .ok_or("a seat without a seatStatus")?;
        rest = &rest[at + SEAT_STATUS.needle().len()..];
        if rest.starts_with(b"AVAILABLE\"") {
            free.push(id);
        } else if !rest.starts_with(b"UNAVAILABLE\"") {
            return Err("a seatStatus that is neither AVAILABLE nor UNAVAILABLE".into());
        }
        seen += 1;
    }
    if verify {
        let parsed: SeatsBody = json(body)?;
        let expected: Vec<i64> = parsed
            .seats
            .iter()
            .filter(|s| s.seat_status == "AVAILABLE")
            .map(|s| s.seat_id)
            .collect();
        if parsed.seats.len() != seen || expected != free {
            return Err(format!(
                "the seat-map scanner disagrees with the JSON parser: {seen} seats, {} free \
                 scanned; {} seats, {} free parsed",
                free.len(),
                parsed.seats.len(),
                expected.len()
            ));
        }
    }
    Ok(free)
}

/// Seat ids as a JSON array's contents.
struct Ids<'a>(&'a [i64]);

impl std::fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// One virtual user's connection and request buffer, for its whole drop.
struct Session<'s> {
    sc: &'s Scenario,
    conn: Option<Conn>,
    request: RequestBuf,
}

impl<'s> Session<'s> {
    fn new(sc: &'s Scenario) -> Session<'s> {
        Session {
            sc,
            conn: None,
            request: RequestBuf::new(),
        }
    }

    /// Writes the next request (sent by [`Session::send`]).
    fn prepare(
        &mut self,
        method: &str,
        path: std::fmt::Arguments<'_>,
        token: Option<i64>,
        body: Option<std::fmt::Arguments<'_>>,
    ) {
        self.request
            .prepare(&self.sc.target, method, path, token, body);
    }

    /// One exchange; sent once more on a new connection if a kept-alive one turned out to
    /// be closed before any of the answer arrived (as hyper does).
    async fn exchange(&mut self) -> Result<u16, String> {
        let sc = self.sc;
        let mut conn = match self.conn.take() {
            Some(conn) if !conn.is_dead() => conn,
            _ => sc.pool.take(&sc.target).await?,
        };
        let status = match conn.send(&sc.target, &self.request).await {
            Ok(status) => status,
            Err(Failure::Stale(_)) => {
                conn = Conn::open(&sc.target).await?;
                conn.send(&sc.target, &self.request)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(failure) => return Err(failure.to_string()),
        };
        self.conn = Some(conn);
        Ok(status)
    }

    /// Sends the prepared request, timing it (until the whole body is in) into `step`, and
    /// parses a success with `parse`; a 503 is retried a few times.
    async fn send<T>(
        &mut self,
        stats: &mut Stats,
        step: Step,
        mut parse: impl FnMut(&[u8]) -> Result<T, String>,
    ) -> Answer<T> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let exchanged = self.exchange().await;
            let micros = started.elapsed().as_micros() as u64;
            let s = stats.step(step);
            s.latency.record(micros);
            let status = match exchanged {
                Ok(status) => status,
                Err(e) => {
                    s.transport_errors += 1;
                    return Answer::Broken(format!("transport: {e}"));
                }
            };
            // `exchange` leaves the connection in place after every answer.
            let body = self.conn.as_ref().map(|c| c.body()).unwrap_or_default();
            if (200..300).contains(&status) {
                s.ok += 1;
                return match parse(body) {
                    Ok(parsed) => Answer::Ok(parsed),
                    Err(e) => Answer::Broken(format!("{status} with an unexpected body: {e}")),
                };
            }
            if status >= 500 {
                s.server_errors += 1;
            } else {
                s.client_errors += 1;
            }
            if status == 503 && attempt < UNAVAILABLE_RETRIES {
                attempt += 1;
                tokio::time::sleep(UNAVAILABLE_BACKOFF).await;
                continue;
            }
            let slug = json::<ErrorBody>(body).map(|b| b.error).unwrap_or_default();
            return Answer::Refused(status, slug);
        }
    }

    /// Gives the connection back for the next user.
    fn finish(self) {
        if let Some(conn) = self.conn {
            self.sc.pool.give(conn);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    SoldOut,
    Failed,
}

/// One user's whole drop: join → poll until ACTIVE → schedules → seats → reserve → pay.
async fn iteration(
    sc: &Scenario,
    session: &mut Session<'_>,
    user: i64,
    stats: &mut Stats,
    rng: &mut SmallRng,
) -> Outcome {
    session.prepare(
        "POST",
        format_args!("/v1/queue-tokens/users/{user}"),
        None,
        None,
    );
    let token = match session.send(stats, Step::Join, json::<TokenBody>).await {
        Answer::Ok(body) => body.token_id,
        other => return stats.fail(format!("join: {}", other.why())),
    };
    loop {
        session.prepare(
            "GET",
            format_args!("/v1/queue-status/users/{user}"),
            Some(token),
            None,
        );
        match session.send(stats, Step::Poll, json::<StatusBody>).await {
            Answer::Ok(body) => match body.status.as_str() {
                "ACTIVE" => break,
                "WAITING" => {
                    tokio::time::sleep(Duration::from_millis(sc.args.poll_interval_ms)).await
                }
                other => return stats.fail(format!("poll: {other}")),
            },
            other => return stats.fail(format!("poll: {}", other.why())),
        }
    }
    session.prepare(
        "GET",
        format_args!("/v1/concerts/{}/schedules", sc.concert),
        Some(token),
        None,
    );
    let mut open: Vec<i64> = match session
        .send(stats, Step::Schedules, json::<SchedulesBody>)
        .await
    {
        Answer::Ok(body) => body
            .events
            .iter()
            .filter(|e| e.available_seat_count > 0 && sc.schedules.contains(&e.schedule_id))
            .map(|e| e.schedule_id)
            .collect(),
        other => return stats.fail(format!("schedules: {}", other.why())),
    };
    let mut reservation = None;
    let mut attempts = 0;
    while reservation.is_none() {
        if open.is_empty() {
            stats.sold_out += 1;
            return Outcome::SoldOut;
        }
        if attempts == sc.args.max_attempts {
            return stats.fail("gave up after repeated reservation failures");
        }
        let schedule = open[rng.random_range(0..open.len())];
        session.prepare(
            "GET",
            format_args!("/v1/concerts/{}/schedules/{schedule}/seats", sc.concert),
            Some(token),
            None,
        );
        let verify = sc.verify_seat_maps;
        let free = match session
            .send(stats, Step::Seats, |body| free_seats(body, verify))
            .await
        {
            Answer::Ok(free) => free,
            other => return stats.fail(format!("seats: {}", other.why())),
        };
        if free.is_empty() {
            open.retain(|s| *s != schedule);
            continue;
        }
        attempts += 1;
        let want = rng
            .random_range(1..=sc.args.seats_per_user as usize)
            .min(free.len());
        let chosen: Vec<i64> = free.choose_multiple(rng, want).copied().collect();
        session.prepare(
            "POST",
            format_args!("/v1/reservations"),
            Some(token),
            Some(format_args!(
                r#"{{"userId":{user},"concertId":{},"scheduleId":{schedule},"seatIds":[{}]}}"#,
                sc.concert,
                Ids(&chosen)
            )),
        );
        match session
            .send(stats, Step::Reserve, json::<ReservationBody>)
            .await
        {
            Answer::Ok(body) => reservation = Some(body.reservation_id),
            Answer::Refused(_, slug) if slug == "reservation_failed" => stats.conflicts += 1,
            other => return stats.fail(format!("reserve: {}", other.why())),
        }
    }
    let Some(reservation) = reservation else {
        unreachable!("the loop above ends only with a reservation")
    };
    session.prepare(
        "POST",
        format_args!("/v1/payments/users/{user}"),
        Some(token),
        Some(format_args!(r#"{{"reservationId":{reservation}}}"#)),
    );
    let paid = session.send(stats, Step::Pay, json::<IgnoredAny>).await;
    match paid {
        Answer::Ok(_) => Outcome::Completed,
        Answer::Refused(status, _) if status < 500 => stats.fail(format!("pay: {}", paid.why())),
        // A 5xx or no answer: the payment may or may not have been committed.
        other => {
            stats.unknown_payments += 1;
            stats.fail(format!("pay: {}", other.why()))
        }
    }
}

/// Runs one user and records the iteration.
async fn one_user(sc: &Scenario, user: i64, since: Instant, stats: &mut Stats, rng: &mut SmallRng) {
    let mut session = Session::new(sc);
    let outcome = iteration(sc, &mut session, user, stats, rng).await;
    session.finish();
    if outcome == Outcome::Completed {
        let micros = since.elapsed().as_micros() as u64;
        stats.completed += 1;
        stats.iteration.record(micros);
        sc.completed.fetch_add(1, Ordering::Relaxed);
        sc.slowest.fetch_max(micros, Ordering::Relaxed);
    }
}

// --- setup --------------------------------------------------------------------------------

fn admin(drop_client: &Client, key: &str, url: String) -> RequestBuilder {
    drop_client.post(url).header("X-Admin-Key", key)
}

/// Creates the users (zero balance) and funds each with a recharge; returns their ids.
async fn create_users(
    client: &Client,
    base: &str,
    key: &str,
    n: usize,
    fund: i64,
) -> Result<Vec<i64>, String> {
    let made: Vec<Result<i64, String>> = stream::iter(0..n)
        .map(|i| async move {
            let created = admin(client, key, format!("{base}/v1/admin/users"))
                .json(&json!({ "name": format!("drop-{i}"), "balance": 0 }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = created.status();
            let body: Value = created.json().await.map_err(|e| e.to_string())?;
            let user = body["userId"]
                .as_i64()
                .ok_or_else(|| format!("creating a user answered {status}: {body}"))?;
            let charged = client
                .post(format!("{base}/v1/balance/users/{user}/recharge"))
                .json(&json!({ "amount": fund }))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !charged.status().is_success() {
                return Err(format!(
                    "recharging user {user} answered {}",
                    charged.status()
                ));
            }
            Ok(user)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut users = made.into_iter().collect::<Result<Vec<i64>, String>>()?;
    users.sort_unstable();
    Ok(users)
}

/// Creates the concert; returns its id and its schedules' ids.
async fn create_concert(
    client: &Client,
    base: &str,
    key: &str,
    args: &Args,
) -> Result<(i64, Vec<i64>), String> {
    let per_schedule = args.seats.div_ceil(args.schedules).clamp(1, 20_000);
    let schedules: Vec<Value> = (0..args.schedules)
        .map(|i| {
            let seats: Vec<Value> = (1..=per_schedule)
                .map(|n| json!({ "seatNumber": n, "price": PRICE }))
                .collect();
            json!({
                "concertAt": format!("2099-01-{:02}T10:00:00", i % 28 + 1),
                "reservationAt": "2020-01-01T00:00:00",
                "seats": seats,
            })
        })
        .collect();
    let response = admin(client, key, format!("{base}/v1/admin/concerts"))
        .json(&json!({ "name": "drop", "schedules": schedules }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    let concert = body["concertId"]
        .as_i64()
        .ok_or_else(|| format!("creating the concert answered {status}: {body}"))?;
    let ids = body["schedules"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["scheduleId"].as_i64()).collect())
        .unwrap_or_default();
    Ok((concert, ids))
}

// --- the in-process server ----------------------------------------------------------------

/// Starts the application in-process with this run's settings.
fn spawn_server(args: &Args, url: &str) -> Result<Spawned, String> {
    let mut settings = Settings::for_database(url);
    settings.admin_key = Some(SPAWN_ADMIN_KEY.into());
    settings.http_workers = args.server_workers.max(1);
    settings.engine.max_active = args.max_active as usize;
    settings.engine.max_seats_per_user = args.seats_per_user as u32;
    server::spawn_server(settings)
}

// --- invariants ---------------------------------------------------------------------------

/// What the run knows, to check the store against.
struct Expectations {
    users: (i64, i64),
    schedules: Vec<i64>,
    acknowledged_payments: u64,
    unknown_payments: u64,
}

enum Db {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
    Memory(MemoryStore),
}

impl Db {
    async fn open(url: &str, memory: Option<MemoryStore>) -> Result<Db, String> {
        if let Some(store) = memory {
            return Ok(Db::Memory(store));
        }
        if url.starts_with("postgres") {
            Ok(Db::Postgres(
                sqlx::PgPool::connect(url)
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Db::Sqlite(
                sqlx::SqlitePool::connect(url)
                    .await
                    .map_err(|e| e.to_string())?,
            ))
        } else {
            Err(format!("cannot check invariants on {url}"))
        }
    }

    /// One number; only standard SQL, so both databases answer it.
    async fn number(&self, sql: &str) -> Result<i64, String> {
        let fetched = match self {
            Db::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Db::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Db::Memory(_) => return Err("no SQL on the memory store".into()),
        };
        fetched.map_err(|e| format!("{sql}: {e}"))
    }
}

/// (what, holds, detail) for each invariant.
type Check = (&'static str, bool, String);

async fn check_sql(db: &Db, e: &Expectations) -> Result<Vec<Check>, String> {
    let schedules = e
        .schedules
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (lo, hi) = e.users;
    let double_sold = db
        .number(
            "SELECT COUNT(*) FROM (SELECT seat_id FROM holds WHERE state IN ('PENDING', 'POSTED')
             GROUP BY seat_id HAVING COUNT(*) > 1) d",
        )
        .await?;
    let posted_unpaid = db
        .number(
            "SELECT COUNT(*) FROM holds h JOIN reservations r ON r.id = h.reservation_id
             WHERE (h.state = 'POSTED') <> (r.status = 'PAID')",
        )
        .await?;
    let sold = db
        .number(&format!(
            "SELECT COUNT(*) FROM holds h JOIN reservations r ON r.id = h.reservation_id
             WHERE h.state = 'POSTED' AND r.schedule_id IN ({schedules})"
        ))
        .await?;
    let seats_of_paid = db
        .number(&format!(
            "SELECT COUNT(*) FROM holds h JOIN reservations r ON r.id = h.reservation_id
             WHERE r.status = 'PAID' AND r.schedule_id IN ({schedules})"
        ))
        .await?;
    let paid = db
        .number(&format!(
            "SELECT COUNT(*) FROM reservations WHERE status = 'PAID' AND schedule_id IN ({schedules})"
        ))
        .await?;
    let unmatched_payments = db
        .number(
            "SELECT COUNT(*) FROM reservations r WHERE (r.status = 'PAID') <>
               EXISTS (SELECT 1 FROM payments p WHERE p.reservation_id = r.id
                       AND p.amount = r.total_price AND p.user_id = r.user_id)",
        )
        .await?;
    // Aggregated once per user and joined: a correlated subquery per wallet had no index on
    // payments.user_id to use and took 30 s for 20,000 users.
    let per_user = format!(
        "FROM wallets w
         LEFT JOIN (SELECT user_id,
                           SUM(CASE WHEN kind = 'RECHARGE' THEN amount ELSE -amount END) AS net,
                           SUM(CASE WHEN kind = 'PAYMENT' THEN amount ELSE 0 END) AS paid
                    FROM ledger GROUP BY user_id) l ON l.user_id = w.user_id
         LEFT JOIN (SELECT user_id, SUM(amount) AS paid FROM payments GROUP BY user_id) p
                ON p.user_id = w.user_id
         WHERE w.user_id BETWEEN {lo} AND {hi}"
    );
    let wrong_balances = db
        .number(&format!(
            "SELECT COUNT(*) {per_user} AND w.balance <> COALESCE(l.net, 0)"
        ))
        .await?;
    let ledger_off_payments = db
        .number(&format!(
            "SELECT COUNT(*) {per_user} AND COALESCE(l.paid, 0) <> COALESCE(p.paid, 0)"
        ))
        .await?;
    Ok(verdicts(
        e,
        Numbers {
            double_sold,
            posted_unpaid,
            sold,
            seats_of_paid,
            paid,
            unmatched_payments,
            wrong_balances,
            ledger_off_payments,
        },
    ))
}

/// The same numbers, computed from the in-memory store's tables.
fn check_memory(store: &MemoryStore, e: &Expectations) -> Vec<Check> {
    let t = store.tables();
    let ours: HashSet<i64> = e.schedules.iter().copied().collect();
    let mut live: HashMap<i64, u64> = HashMap::new();
    let (mut sold, mut seats_of_paid, mut paid) = (0, 0, 0);
    for r in &t.reservations {
        let is_paid = r.status.as_str() == "PAID";
        if r.status.is_live() {
            for s in &r.seats {
                *live.entry(s.get()).or_default() += 1;
            }
        }
        if ours.contains(&r.schedule.get()) && is_paid {
            // Posted holds are exactly the seats of paid reservations here: one state column.
            sold += r.seats.len() as i64;
            seats_of_paid += r.seats.len() as i64;
            paid += 1;
        }
    }
    let payments: HashMap<i64, (i64, i64)> = t
        .payments
        .iter()
        .map(|p| (p.reservation.get(), (p.amount.won(), p.user.get())))
        .collect();
    let unmatched_payments = t
        .reservations
        .iter()
        .filter(|r| {
            let matched = payments.get(&r.id.get()) == Some(&(r.total.won(), r.user.get()));
            (r.status.as_str() == "PAID") != matched
        })
        .count() as i64;
    let (lo, hi) = e.users;
    let mut net: HashMap<i64, i64> = HashMap::new();
    let mut ledger_paid: HashMap<i64, i64> = HashMap::new();
    for l in &t.ledger {
        let sign = if l.kind.as_str() == "RECHARGE" { 1 } else { -1 };
        *net.entry(l.user.get()).or_default() += sign * l.amount.won();
        if sign < 0 {
            *ledger_paid.entry(l.user.get()).or_default() += l.amount.won();
        }
    }
    let mut payments_of: HashMap<i64, i64> = HashMap::new();
    for p in &t.payments {
        *payments_of.entry(p.user.get()).or_default() += p.amount.won();
    }
    let ours_users = t
        .wallets
        .iter()
        .filter(|w| (lo..=hi).contains(&w.user.get()));
    let (mut wrong_balances, mut ledger_off_payments) = (0, 0);
    for w in ours_users {
        let u = w.user.get();
        if w.balance.won() != net.get(&u).copied().unwrap_or(0) {
            wrong_balances += 1;
        }
        if ledger_paid.get(&u).copied().unwrap_or(0) != payments_of.get(&u).copied().unwrap_or(0) {
            ledger_off_payments += 1;
        }
    }
    verdicts(
        e,
        Numbers {
            double_sold: live.values().filter(|n| **n > 1).count() as i64,
            posted_unpaid: 0,
            sold,
            seats_of_paid,
            paid,
            unmatched_payments,
            wrong_balances,
            ledger_off_payments,
        },
    )
}

struct Numbers {
    double_sold: i64,
    posted_unpaid: i64,
    sold: i64,
    seats_of_paid: i64,
    paid: i64,
    unmatched_payments: i64,
    wrong_balances: i64,
    ledger_off_payments: i64,
}

fn verdicts(e: &Expectations, n: Numbers) -> Vec<Check> {
    let acked = e.acknowledged_payments as i64;
    let unknown = e.unknown_payments as i64;
    vec![
        (
            "no seat sold (or held) twice",
            n.double_sold == 0,
            format!("{} seats with two live holds", n.double_sold),
        ),
        (
            "a hold is POSTED exactly when its reservation is PAID",
            n.posted_unpaid == 0,
            format!("{} holds disagree", n.posted_unpaid),
        ),
        (
            "sold seats = seats of paid reservations",
            n.sold == n.seats_of_paid,
            format!("{} sold, {} in paid reservations", n.sold, n.seats_of_paid),
        ),
        (
            "paid reservations = acknowledged payments (+ unknown outcomes)",
            n.paid >= acked && n.paid <= acked + unknown,
            format!(
                "{} paid in the store, {acked} acknowledged, {unknown} unknown",
                n.paid
            ),
        ),
        (
            "every paid reservation has its payment, and only those",
            n.unmatched_payments == 0,
            format!("{} reservations disagree", n.unmatched_payments),
        ),
        (
            "every balance = recharges − payments (ledger)",
            n.wrong_balances == 0,
            format!("{} wallets disagree", n.wrong_balances),
        ),
        (
            "ledger payments = payments, per user",
            n.ledger_off_payments == 0,
            format!("{} users disagree", n.ledger_off_payments),
        ),
    ]
}

// --- main ---------------------------------------------------------------------------------

/// Runs the measured phase; returns the merged stats, the wall time, users started and dropped.
async fn run(sc: Arc<Scenario>, users: Arc<Vec<i64>>) -> (Stats, Duration, usize, u64) {
    let args = &sc.args;
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut total = Stats::new();
    let mut dropped = 0;
    let ticker = args.progress.then(|| {
        let sc = sc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let (mut second, mut before) = (0, 0);
            loop {
                tick.tick().await;
                second += 1;
                let done = sc.completed.load(Ordering::Relaxed);
                println!(
                    "t={second:>3}s completed {:>5}/s, in flight {:>4}, slowest {} ms",
                    done - before,
                    sc.in_flight.load(Ordering::Relaxed),
                    ms(sc.slowest.swap(0, Ordering::Relaxed)),
                );
                before = done;
            }
        })
    });
    match args.open_loop_rate {
        None => {
            // Closed loop: each worker starts its next user when the last one is done.
            let workers: Vec<_> = (0..args.concurrency)
                .map(|w| {
                    let (sc, users, next) = (sc.clone(), users.clone(), next.clone());
                    tokio::spawn(async move {
                        let mut stats = Stats::new();
                        let mut rng = SmallRng::seed_from_u64(w as u64);
                        while Instant::now() < deadline {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(user) = users.get(i) else { break };
                            sc.in_flight.fetch_add(1, Ordering::Relaxed);
                            one_user(&sc, *user, Instant::now(), &mut stats, &mut rng).await;
                            sc.in_flight.fetch_sub(1, Ordering::Relaxed);
                        }
                        stats
                    })
                })
                .collect();
            for worker in workers {
                if let Ok(stats) = worker.await {
                    total.merge(&stats);
                }
            }
        }
        Some(rate) => {
            // Open loop: users arrive on a fixed schedule; an iteration's time counts from its
            // scheduled arrival, so a slow service cannot hide its queueing (no coordinated
            // omission). Past the in-flight cap an arrival is dropped and counted.
            // Each user's statistics are merged as it finishes (they are a few samples; see
            // `Samples`), so nothing piles up over the run.
            let gap = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut running = tokio::task::JoinSet::new();
            let first = Instant::now();
            let mut n: u32 = 0;
            loop {
                let due = first + gap * n;
                if due >= deadline || (n as usize) >= users.len() {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                while let Some(done) = running.try_join_next() {
                    if let Ok(stats) = done {
                        total.merge(&stats);
                    }
                }
                let user = users[n as usize];
                n += 1;
                if sc.in_flight.load(Ordering::Relaxed) >= args.concurrency {
                    dropped += 1;
                    continue;
                }
                // Counted before the task starts, so a burst of arrivals cannot pass the cap.
                sc.in_flight.fetch_add(1, Ordering::Relaxed);
                let sc = sc.clone();
                running.spawn(async move {
                    let mut stats = Stats::new();
                    let mut rng = SmallRng::seed_from_u64(u64::from(n));
                    one_user(&sc, user, due, &mut stats, &mut rng).await;
                    sc.in_flight.fetch_sub(1, Ordering::Relaxed);
                    stats
                });
            }
            next.store(n as usize, Ordering::Relaxed);
            while let Some(done) = running.join_next().await {
                if let Ok(stats) = done {
                    total.merge(&stats);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let began = next.load(Ordering::Relaxed).min(users.len());
    (total, elapsed, began, dropped)
}

fn main() -> ExitCode {
    let args = Args::parse().resolved();
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
    // The throwaway SQLite file of a spawned server without --database-url.
    let scratch = std::env::temp_dir().join(format!("boxoffice-drop-{}", std::process::id()));
    let database_url = match (&args.database_url, args.spawn) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => {
            if let Err(e) = std::fs::create_dir_all(&scratch) {
                eprintln!("cannot create {}: {e}", scratch.display());
                return ExitCode::from(2);
            }
            Some(format!("sqlite://{}", scratch.join("drop.db").display()))
        }
        (None, false) => None,
    };
    // An in-memory store lives while a handle is held: hold one for the checks at the end.
    let memory = match &database_url {
        Some(url) if url.starts_with("memory:") => runtime.block_on(MemoryStore::connect(url)).ok(),
        _ => None,
    };
    let spawned = if args.spawn {
        let url = database_url.clone().unwrap_or_default();
        match spawn_server(&args, &url) {
            Ok(spawned) => Some(spawned),
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
        (None, Some(url)) => url.trim_end_matches('/').to_string(),
        (None, None) => unreachable!("resolved() spawns when no --base-url is given"),
    };
    let admin_key = if spawned.is_some() {
        SPAWN_ADMIN_KEY.to_string()
    } else {
        args.admin_key.clone().unwrap_or_default()
    };
    let code = runtime.block_on(drive(
        &args,
        base,
        admin_key,
        database_url.as_deref(),
        memory,
    ));
    if let Some(spawned) = spawned {
        // Graceful: in-flight requests finish and the persister drains before the thread ends.
        runtime.block_on(spawned.handle.stop(true));
        let _ = spawned.thread.join();
    }
    if args.database_url.is_none() && args.spawn && !args.keep {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    code
}

async fn drive(
    args: &Args,
    base: String,
    admin_key: String,
    database_url: Option<&str>,
    memory: Option<MemoryStore>,
) -> ExitCode {
    let client = match Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(64))
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot build the HTTP client: {e}");
            return ExitCode::from(2);
        }
    };
    let setup = Instant::now();
    let fund = PRICE * args.seats_per_user as i64;
    let users = match create_users(&client, &base, &admin_key, args.users, fund).await {
        Ok(users) if !users.is_empty() => users,
        Ok(_) => {
            eprintln!("no users: nothing to do");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("setup failed: {e}");
            return ExitCode::from(2);
        }
    };
    let (concert, schedules) = match create_concert(&client, &base, &admin_key, args).await {
        Ok(created) => created,
        Err(e) => {
            eprintln!("setup failed: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "setup: {} users funded with {fund} won each, concert {concert} with {} schedules of {} seats, in {:.1} s ({})",
        users.len(),
        schedules.len(),
        args.seats.div_ceil(args.schedules).clamp(1, 20_000),
        setup.elapsed().as_secs_f64(),
        match args.open_loop_rate {
            Some(rate) => format!("open loop at {rate}/s, at most {} in flight", args.concurrency),
            None => format!("closed loop, {} users at once", args.concurrency),
        }
    );
    let target = match Target::resolve(&base, Duration::from_secs(30)).await {
        Ok(target) => target,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let sc = Arc::new(Scenario {
        target,
        pool: Pool::new(),
        verify_seat_maps: args.verify_seat_maps,
        completed: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        slowest: AtomicU64::new(0),
        concert,
        schedules: schedules.iter().copied().collect(),
        args: args.clone(),
    });
    let bounds = (users[0], users[users.len() - 1]);
    let (stats, elapsed, started, dropped) = run(sc.clone(), Arc::new(users)).await;
    report(&stats, elapsed, started, dropped);

    let Some(url) = database_url else {
        println!("\nno --database-url: invariants not checked");
        return if stats.completed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    };
    let expectations = Expectations {
        users: bounds,
        schedules,
        acknowledged_payments: stats.completed,
        unknown_payments: stats.unknown_payments,
    };
    let checks = match Db::open(url, memory).await {
        Ok(Db::Memory(store)) => Ok(check_memory(&store, &expectations)),
        Ok(db) => check_sql(&db, &expectations).await,
        Err(e) => Err(e),
    };
    let checks = match checks {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("cannot check the invariants: {e}");
            return ExitCode::from(1);
        }
    };
    println!("\n## invariants (checked in the store)\n");
    let mut all = true;
    for (what, holds, detail) in &checks {
        all &= *holds;
        println!(
            "- [{}] {what}: {detail}",
            if *holds { "ok" } else { "FAILED" }
        );
    }
    if !all {
        return ExitCode::from(1);
    }
    if stats.completed == 0 {
        eprintln!("no user completed the drop");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &[u8] = br#"{"concertId":1,"concertAt":"2099-01-01T10:00:00","seats":[{"seatId":11,"seatNumber":1,"seatStatus":"AVAILABLE","seatPrice":10000},{"seatId":12,"seatNumber":2,"seatStatus":"UNAVAILABLE","seatPrice":10000},{"seatId":13,"seatNumber":3,"seatStatus":"AVAILABLE","seatPrice":10000}]}"#;

    #[test]
    fn the_scan_finds_the_free_seats_and_agrees_with_the_parser() {
        assert_eq!(free_seats(MAP, false), Ok(vec![11, 13]));
        assert_eq!(free_seats(MAP, true), Ok(vec![11, 13]));
        let none = br#"{"concertId":1,"concertAt":"x","seats":[]}"#;
        assert_eq!(free_seats(none, true), Ok(vec![]));
    }

    #[test]
    fn a_map_the_scan_would_misread_is_an_error() {
        // Status before id: the scan pairs each id with the next seat's status.
        let reordered = br#"{"concertId":1,"concertAt":"x","seats":[{"seatStatus":"UNAVAILABLE","seatId":11},{"seatStatus":"AVAILABLE","seatId":12}]}"#;
        assert!(free_seats(reordered, true).is_err());
        let unknown = br#"{"seats":[{"seatId":11,"seatStatus":"SOLD"}]}"#;
        assert!(free_seats(unknown, false).is_err());
        let not_a_number = br#"{"seats":[{"seatId":"11","seatStatus":"AVAILABLE"}]}"#;
        assert!(free_seats(not_a_number, false).is_err());
        assert!(free_seats(b"{}", false).is_err());
    }

    #[test]
    fn seat_ids_are_written_as_a_json_array() {
        assert_eq!(format!("[{}]", Ids(&[])), "[]");
        assert_eq!(format!("[{}]", Ids(&[4, 5, 6])), "[4,5,6]");
    }
}
