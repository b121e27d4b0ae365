//! What the run measured: latency samples per step and per whole iteration, outcome counts,
//! and the report that turns them into percentile tables.

use crate::scenario::Outcome;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `GET /v1/queue/challenge`, when the server asks a proof of work at the join.
    Challenge,
    Join,
    Poll,
    Schedules,
    Seats,
    Reserve,
    Pay,
    /// `POST …/waitlist/users/{userId}` of a user who found the drop sold out (`--waitlist`).
    Waitlist,
    /// After the sale (`--checkin-percent`, `--refund-percent`, `--transfer-percent`): the
    /// buyer's `GET /v1/tickets/users/{userId}`, then one of the three below.
    Tickets,
    /// `POST /v1/checkins` with the door key.
    Checkin,
    /// `POST /v1/reservations/{id}/refund` under an `Idempotency-Key`.
    Refund,
    /// `POST /v1/tickets/{id}/transfer`.
    Transfer,
}

pub const STEPS: [Step; 12] = [
    Step::Challenge,
    Step::Join,
    Step::Poll,
    Step::Schedules,
    Step::Seats,
    Step::Reserve,
    Step::Pay,
    Step::Waitlist,
    Step::Tickets,
    Step::Checkin,
    Step::Refund,
    Step::Transfer,
];

/// The steps after the sale, left out of the report when none ran (a plain drop's report is
/// as it was).
const AFTER_SALE: [Step; 4] = [Step::Tickets, Step::Checkin, Step::Refund, Step::Transfer];

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Challenge => "challenge",
            Step::Join => "join",
            Step::Poll => "poll",
            Step::Schedules => "schedules",
            Step::Seats => "seats",
            Step::Reserve => "reserve",
            Step::Pay => "pay",
            Step::Waitlist => "waitlist",
            Step::Tickets => "tickets",
            Step::Checkin => "checkin",
            Step::Refund => "refund",
            Step::Transfer => "transfer",
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
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn record(&mut self, micros: u64) {
        self.0.push(micros.max(1));
    }

    pub fn histogram(&self) -> Histogram<u64> {
        let mut h = histogram();
        for &v in &self.0 {
            // Above the 10-minute bound only if a request outlived the 30 s timeout 20 times.
            let _ = h.record(v);
        }
        h
    }
}

pub struct StepStats {
    pub latency: Samples,
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub transport_errors: u64,
    /// Tries sent again after a 503 or a connection error (each also counted above).
    pub retries: u64,
    /// 2xx answers whose body the generator could not read (a seat map the scanner and the
    /// parser disagree on, a body without its fields): a server bug, and a failed run.
    pub unreadable: u64,
}

impl StepStats {
    pub fn new() -> StepStats {
        StepStats {
            latency: Samples::default(),
            ok: 0,
            client_errors: 0,
            server_errors: 0,
            transport_errors: 0,
            retries: 0,
            unreadable: 0,
        }
    }

    pub fn merge(&mut self, other: &StepStats) {
        self.latency.0.extend_from_slice(&other.latency.0);
        self.ok += other.ok;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.transport_errors += other.transport_errors;
        self.retries += other.retries;
        self.unreadable += other.unreadable;
    }
}

/// What one virtual user (or all of them, merged) saw.
pub struct Stats {
    steps: Vec<StepStats>,
    pub iteration: Samples,
    pub completed: u64,
    pub sold_out: u64,
    failed: u64,
    /// "reservation failed": the seats were taken since the map was read.
    pub conflicts: u64,
    /// Error slugs of failed iterations, for the report.
    failures: HashMap<String, u64>,
    /// Payments whose outcome is unknown (transport error or 5xx on the last try).
    pub unknown_payments: u64,
    /// Sold-out users the waiting list took (201).
    pub waitlisted: u64,
    /// What the service answered after the sale, for the checks against the store.
    pub after: AfterSale,
    /// Steps after a payment that did not go as the service promises (the payment stands,
    /// so the iteration still counts as completed; the run fails).
    pub after_sale_failed: u64,
}

/// The answers after the sale the store must agree with.
#[derive(Default)]
pub struct AfterSale {
    /// (ticket, holder) of every check-in answered `ADMITTED`.
    pub admitted: Vec<(i64, i64)>,
    /// (reservation, user, amount) of every refund answered 200.
    pub refunded: Vec<(i64, i64, i64)>,
    /// (ticket, new holder) of every transfer answered 2xx.
    pub transferred: Vec<(i64, i64)>,
}

impl AfterSale {
    fn merge(&mut self, other: &AfterSale) {
        self.admitted.extend_from_slice(&other.admitted);
        self.refunded.extend_from_slice(&other.refunded);
        self.transferred.extend_from_slice(&other.transferred);
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            steps: STEPS.iter().map(|_| StepStats::new()).collect(),
            iteration: Samples::default(),
            completed: 0,
            sold_out: 0,
            failed: 0,
            conflicts: 0,
            failures: HashMap::new(),
            unknown_payments: 0,
            waitlisted: 0,
            after: AfterSale::default(),
            after_sale_failed: 0,
        }
    }

    /// Whether any request of `step` was sent.
    pub fn step_ran(&self, step: Step) -> bool {
        !self.steps[step as usize].latency.0.is_empty()
    }

    pub fn step(&mut self, step: Step) -> &mut StepStats {
        &mut self.steps[step as usize]
    }

    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.steps.iter_mut().zip(&other.steps) {
            mine.merge(theirs);
        }
        self.iteration.0.extend_from_slice(&other.iteration.0);
        self.completed += other.completed;
        self.sold_out += other.sold_out;
        self.failed += other.failed;
        self.conflicts += other.conflicts;
        self.unknown_payments += other.unknown_payments;
        self.waitlisted += other.waitlisted;
        self.after.merge(&other.after);
        self.after_sale_failed += other.after_sale_failed;
        for (slug, n) in &other.failures {
            *self.failures.entry(slug.clone()).or_default() += n;
        }
    }

    /// Every 5xx and every unreadable 2xx body, summed over the steps: a drop that saw one
    /// has failed whatever the store says afterwards (unless the run expects 5xx).
    pub fn server_faults(&self) -> (u64, u64) {
        self.steps.iter().fold((0, 0), |(errors, unreadable), s| {
            (errors + s.server_errors, unreadable + s.unreadable)
        })
    }

    pub fn fail(&mut self, why: impl Into<String>) -> Outcome {
        self.failed += 1;
        *self.failures.entry(why.into()).or_default() += 1;
        Outcome::Failed
    }

    /// A step after a completed payment went wrong: reported with the causes, and counted
    /// apart, since the iteration itself (the payment) completed.
    pub fn fail_after_sale(&mut self, why: impl Into<String>) {
        self.after_sale_failed += 1;
        *self.failures.entry(why.into()).or_default() += 1;
    }
}

pub fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

pub fn report(stats: &Stats, elapsed: Duration, started: usize, dropped: u64) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!("\n## drop: per step ({:.1} s measured)\n", secs);
    println!("| step | requests | ok | unreadable | 4xx | 5xx | transport errors | retries | per second | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (step, s) in STEPS.iter().zip(&stats.steps) {
        let h = &s.latency.histogram();
        // No proof of work asked: no challenge was fetched (beyond the first 404s).
        if *step == Step::Challenge && s.ok == 0 {
            continue;
        }
        if AFTER_SALE.contains(step) && h.is_empty() {
            continue;
        }
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            step.name(),
            h.len(),
            s.ok,
            s.unreadable,
            s.client_errors,
            s.server_errors,
            s.transport_errors,
            s.retries,
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
        println!("\nfailed iterations (and steps after the sale) by cause: {failures:?}");
    }
    let after = &stats.after;
    if stats.step_ran(Step::Tickets) {
        println!(
            "\nafter the sale: {} check-ins admitted, {} refunds, {} transfers answered, {} steps failed",
            after.admitted.len(),
            after.refunded.len(),
            after.transferred.len(),
            stats.after_sale_failed
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_the_counts_the_causes_and_the_samples() {
        let mut total = Stats::new();
        let mut one = Stats::new();
        assert_eq!(one.fail("join: 503 unavailable"), Outcome::Failed);
        one.fail("join: 503 unavailable");
        one.step(Step::Join).latency.record(0);
        one.step(Step::Join).server_errors += 2;
        one.step(Step::Join).retries += 1;
        one.step(Step::Seats).unreadable += 1;
        let mut two = Stats::new();
        two.fail("seats: transport: reset");
        two.completed += 1;
        two.iteration.record(2_000);
        two.step(Step::Pay).ok += 1;
        total.merge(&one);
        total.merge(&two);
        assert_eq!((total.failed, total.completed), (3, 1));
        assert_eq!(total.failures["join: 503 unavailable"], 2);
        assert_eq!(total.failures["seats: transport: reset"], 1);
        assert_eq!(total.step(Step::Join).server_errors, 2);
        assert_eq!(total.step(Step::Join).retries, 1);
        assert_eq!(total.step(Step::Pay).ok, 1);
        assert_eq!(total.server_faults(), (2, 1));
        // A sample of 0 µs is kept as 1 µs, the histogram's lowest value.
        assert_eq!(total.step(Step::Join).latency.histogram().min(), 1);
        assert_eq!(total.iteration.histogram().len(), 1);
    }

    #[test]
    fn milliseconds_have_two_decimals() {
        assert_eq!(ms(1_234), "1.23");
        assert_eq!(ms(0), "0.00");
    }
}
