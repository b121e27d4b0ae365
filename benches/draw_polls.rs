//! Polls answered while a fair opening draws a pre-queue of 1,000,000 (issue 27's target: poll
//! p99 ≤ 50 ms during the draw). Two reader threads poll random waiters through the queue view,
//! as the HTTP workers do, while the line's writer draws; every poll's latency is kept, and
//! those that overlapped the draw are reported. Both ways of drawing run in one sitting:
//! `split` (the draw built on a shared borrow and swapped in, as the queue actor does) and
//! `locked` (computed and applied under the writer's lock, as it was before).
//!
//! `cargo bench --bench draw_polls` measures a million; `cargo test --benches` runs it once
//! with ten thousand, as a smoke test.

use boxoffice::actors::queue::QueueView;
use boxoffice::domain::queue::{AdmissionPolicy, DrawSeed, Joined, WaitingLine};
use boxoffice::domain::{Timestamp, TokenId, UserId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READERS: usize = 2;
/// Each reader's pause between polls: two readers make about 25,000 polls/s, what a million
/// waiters polling every 40 s would send (a reader that never paused would only measure how
/// two busy threads starve the writer of this 2-core machine's CPU).
const POLL_GAP: Duration = Duration::from_micros(25);
const OPENS_AT: Timestamp = Timestamp::from_millis(100_000);

fn line_of(n: usize) -> (WaitingLine, Vec<(UserId, TokenId)>) {
    let policy = AdmissionPolicy {
        max_active: 1_000,
        active_ttl: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(86_400),
        admit_per_sec: 1_000,
    };
    let mut line = WaitingLine::new(policy, 1);
    let mut rng = SmallRng::seed_from_u64(1);
    line.schedule_opening(
        OPENS_AT,
        DrawSeed::from_bytes(rng.random()),
        Timestamp::from_millis(0),
    )
    .expect("the opening is in the future");
    let mut waiters = Vec::with_capacity(n);
    for u in 0..n {
        let user = UserId::new(u as i64 + 1).expect("positive");
        match line.join(
            user,
            || TokenId::random(&mut rng),
            Timestamp::from_millis(1),
        ) {
            Joined::Created { token, .. } => waiters.push((user, token.id)),
            Joined::Existing(_) => unreachable!("each user joins once"),
        }
    }
    (line, waiters)
}

/// Poll latencies (µs) of the polls that overlapped the draw, and the draw's own duration.
fn measure(n: usize, split: bool) -> (Vec<u64>, Duration) {
    let (line, waiters) = line_of(n);
    let built = mib("VmRSS:");
    let view = Arc::new(QueueView::new(line));
    let waiters = Arc::new(waiters);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (view, waiters, stop) = (view.clone(), waiters.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(r as u64 + 7);
                let mut polls = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (user, token) = waiters[rng.random_range(0..waiters.len())];
                    let started = Instant::now();
                    let answer = view.poll(user, token, OPENS_AT);
                    polls.push((started, started.elapsed()));
                    assert!(answer.is_ok(), "every waiter is known");
                    std::thread::sleep(POLL_GAP);
                }
                polls
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let began = Instant::now();
    let drawn = if split {
        view.draw_and_advance(OPENS_AT).0.is_some()
    } else {
        view.draw_under_the_lock(OPENS_AT).is_some()
    };
    let took = began.elapsed();
    assert!(drawn, "the draw was due");
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    println!(
        "  rss {built:.0} MiB with the line built, peak so far {:.0} MiB",
        mib("VmHWM:")
    );
    let ended = began + took;
    let mut during: Vec<u64> = readers
        .into_iter()
        .flat_map(|r| r.join().expect("a reader finishes"))
        .filter(|(at, lasted)| *at + *lasted >= began && *at <= ended)
        .map(|(_, lasted)| u64::try_from(lasted.as_micros()).unwrap_or(u64::MAX))
        .collect();
    during.sort_unstable();
    (during, took)
}

/// A field of `/proc/self/status` in MiB (`VmRSS` now, `VmHWM` the peak so far).
fn mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let n = if measuring { 1_000_000 } else { 10_000 };
    let rounds = if measuring { 3 } else { 1 };
    println!("draw_polls: a pre-queue of {n}, {READERS} readers polling throughout");
    for round in 1..=rounds {
        for split in [true, false] {
            let (during, took) = measure(n, split);
            println!(
                "round {round} {:>6}: draw {:>7.1} ms; {:>7} polls during it: p50 {} µs, p99 {} µs, max {} µs",
                if split { "split" } else { "locked" },
                took.as_secs_f64() * 1e3,
                during.len(),
                quantile(&during, 0.5),
                quantile(&during, 0.99),
                during.last().copied().unwrap_or(0),
            );
        }
    }
}
