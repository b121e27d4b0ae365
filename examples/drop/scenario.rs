//! What the virtual users do: one user's whole drop (join → poll until ACTIVE → schedules →
//! seat map → reserve, again on other seats after a conflict → pay), and the closed- and
//! open-loop drivers that start the users and merge what they saw.

use crate::args::{AfterSale, Args};
use crate::nodes::Nodes;
use crate::retry::RetryPolicy;
use crate::seat_map::{free_seats, Ids};
use crate::session::{json, Answer, Session};
use crate::stats::{ms, Stats, Step};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every virtual user shares.
pub struct Scenario {
    nodes: Nodes,
    retry: RetryPolicy,
    /// Makes this run's `Idempotency-Key`s unlike any earlier run's on the same database.
    run: u32,
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
    /// The server answered 404 for a challenge: it asks no proof of work at the join.
    no_pow: AtomicBool,
    /// `X-Door-Key` of the check-ins.
    door_key: String,
    /// The users transferred tickets go to, one per transferring buyer (by
    /// [`Args::transfer_ordinal`]): none ever holds more than the one ticket it was given.
    recipients: Vec<i64>,
}

impl Scenario {
    /// The run on `concert`, whose `schedules` are the drop's, before any user started.
    pub fn new(nodes: Nodes, concert: i64, schedules: &[i64], args: &Args) -> Scenario {
        Scenario {
            nodes,
            retry: RetryPolicy::from_flag(args.retry_503),
            run: rand::random(),
            verify_seat_maps: args.verify_seat_maps,
            completed: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            slowest: AtomicU64::new(0),
            no_pow: AtomicBool::new(false),
            concert,
            schedules: schedules.iter().copied().collect(),
            args: args.clone(),
            door_key: String::new(),
            recipients: Vec::new(),
        }
    }

    /// The door key the check-ins carry and the users the transfers go to.
    pub fn after_sale(mut self, door_key: String, recipients: Vec<i64>) -> Scenario {
        self.door_key = door_key;
        self.recipients = recipients;
        self
    }
}

// Typed bodies: only the fields the drop needs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody {
    token_id: i64,
}

#[derive(Deserialize)]
struct ChallengeBody {
    challenge: String,
    bits: u8,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReservationBody {
    reservation_id: i64,
}

#[derive(Deserialize)]
struct PaidBody {
    amount: i64,
}

#[derive(Deserialize)]
struct TicketsBody {
    tickets: Vec<TicketBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TicketBody {
    ticket_id: i64,
    reservation_id: i64,
    status: String,
    code: String,
}

#[derive(Deserialize)]
struct CheckinBody {
    result: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundBody {
    amount: i64,
    reservation_status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferredBody {
    ticket_id: i64,
}

/// A payment that went through: what the steps after the sale need of it.
struct Sale {
    user: i64,
    index: usize,
    reservation: i64,
    seats: usize,
    amount: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    SoldOut,
    Failed,
}

/// The join's proof of work when the server asks one (`X-Queue-Pow`): a challenge fetched and
/// solved on a blocking thread (20 bits is a million hashes), so other users keep running.
async fn join_proof(
    sc: &Scenario,
    session: &mut Session<'_>,
    stats: &mut Stats,
) -> Result<Option<String>, String> {
    if sc.no_pow.load(Ordering::Relaxed) {
        return Ok(None);
    }
    session.prepare("GET", format_args!("/v1/queue/challenge"), None, None);
    match session
        .send(stats, Step::Challenge, json::<ChallengeBody>)
        .await
    {
        Answer::Ok(body) => tokio::task::spawn_blocking(move || {
            boxoffice::domain::queue::pow::solve(&body.challenge, body.bits)
        })
        .await
        .map(Some)
        .map_err(|e| format!("challenge: solving failed: {e}")),
        Answer::Refused(404, _) => {
            sc.no_pow.store(true, Ordering::Relaxed);
            Ok(None)
        }
        other => Err(format!("challenge: {}", other.why())),
    }
}

/// A sold-out user joins the first schedule's waiting list (API.md §12): 201, or 409 when a
/// seat came back meanwhile (`seats_on_sale`); anything else fails the iteration.
async fn join_waitlist(
    sc: &Scenario,
    session: &mut Session<'_>,
    stats: &mut Stats,
    user: i64,
) -> Outcome {
    let Some(schedule) = sc.schedules.iter().min().copied() else {
        return Outcome::SoldOut;
    };
    session.prepare(
        "POST",
        format_args!(
            "/v1/concerts/{}/schedules/{schedule}/waitlist/users/{user}",
            sc.concert
        ),
        None,
        Some(format_args!(r#"{{"seats":1}}"#)),
    );
    match session
        .send(stats, Step::Waitlist, json::<IgnoredAny>)
        .await
    {
        Answer::Ok(_) => {
            stats.waitlisted += 1;
            Outcome::SoldOut
        }
        Answer::Refused(409, slug) if slug == "seats_on_sale" => Outcome::SoldOut,
        other => stats.fail(format!("waitlist: {}", other.why())),
    }
}

/// What a buyer does once paid (`--checkin-percent` and the rest): reads its tickets (one
/// `VALID` ticket per seat bought), then checks the first in, refunds the reservation, or
/// hands the first ticket on. An answer the service does not promise fails the step, not the
/// iteration: the payment stands.
async fn after_sale(sc: &Scenario, session: &mut Session<'_>, stats: &mut Stats, sale: &Sale) {
    let what = sc.args.after_sale(sale.index);
    if what == AfterSale::Nothing {
        return;
    }
    let user = sale.user;
    session.prepare("GET", format_args!("/v1/tickets/users/{user}"), None, None);
    let listed = match session
        .send(stats, Step::Tickets, json::<TicketsBody>)
        .await
    {
        Answer::Ok(body) => body.tickets,
        other => return stats.fail_after_sale(format!("tickets: {}", other.why())),
    };
    let mine: Vec<&TicketBody> = listed
        .iter()
        .filter(|t| t.reservation_id == sale.reservation && t.status == "VALID")
        .collect();
    let Some(first) = mine.first().filter(|_| mine.len() == sale.seats) else {
        return stats.fail_after_sale(format!(
            "tickets: {} valid tickets for {} seats paid",
            mine.len(),
            sale.seats
        ));
    };
    match what {
        AfterSale::CheckIn => check_in(sc, session, stats, user, first).await,
        AfterSale::Refund => refund(session, stats, sale).await,
        AfterSale::Transfer => transfer(sc, session, stats, sale, first.ticket_id).await,
        AfterSale::Nothing => {}
    }
}

async fn check_in(
    sc: &Scenario,
    session: &mut Session<'_>,
    stats: &mut Stats,
    user: i64,
    ticket: &TicketBody,
) {
    // A code is base64url and dots: nothing in it needs escaping in JSON.
    session.prepare(
        "POST",
        format_args!("/v1/checkins"),
        None,
        Some(format_args!(
            r#"{{"code":"{}","gate":"drop-{}"}}"#,
            ticket.code,
            user % 8
        )),
    );
    session.add_header("X-Door-Key", &sc.door_key);
    match session
        .send(stats, Step::Checkin, json::<CheckinBody>)
        .await
    {
        Answer::Ok(body) if body.result == "ADMITTED" => {
            stats.after.admitted.push((ticket.ticket_id, user));
        }
        Answer::Ok(body) => stats.fail_after_sale(format!("checkin: answered {}", body.result)),
        other => stats.fail_after_sale(format!("checkin: {}", other.why())),
    }
}

async fn refund(session: &mut Session<'_>, stats: &mut Stats, sale: &Sale) {
    let (user, reservation) = (sale.user, sale.reservation);
    session.prepare_keyed_post(
        format_args!("/v1/reservations/{reservation}/refund?userId={user}"),
        None,
    );
    match session.send(stats, Step::Refund, json::<RefundBody>).await {
        Answer::Ok(body) if body.reservation_status == "REFUNDED" && body.amount == sale.amount => {
            stats.after.refunded.push((reservation, user, body.amount));
        }
        Answer::Ok(body) => stats.fail_after_sale(format!(
            "refund: {} of {} paid, {}",
            body.amount, sale.amount, body.reservation_status
        )),
        other => stats.fail_after_sale(format!("refund: {}", other.why())),
    }
}

async fn transfer(
    sc: &Scenario,
    session: &mut Session<'_>,
    stats: &mut Stats,
    sale: &Sale,
    ticket: i64,
) {
    let Some(&to) = sc.recipients.get(sc.args.transfer_ordinal(sale.index)) else {
        return stats.fail_after_sale("transfer: no recipient left");
    };
    session.prepare(
        "POST",
        format_args!("/v1/tickets/{ticket}/transfer?userId={}", sale.user),
        None,
        Some(format_args!(r#"{{"toUserId":{to}}}"#)),
    );
    match session
        .send(stats, Step::Transfer, json::<TransferredBody>)
        .await
    {
        Answer::Ok(body) if body.ticket_id == ticket => {
            stats.after.transferred.push((ticket, to));
        }
        Answer::Ok(body) => stats.fail_after_sale(format!(
            "transfer: ticket {ticket} came back as {}",
            body.ticket_id
        )),
        other => stats.fail_after_sale(format!("transfer: {}", other.why())),
    }
}

/// One user's whole drop: (challenge →) join → poll until ACTIVE → schedules → seats →
/// reserve → pay.
async fn iteration(
    sc: &Scenario,
    session: &mut Session<'_>,
    (index, user): (usize, i64),
    stats: &mut Stats,
    rng: &mut SmallRng,
) -> Outcome {
    let proof = match join_proof(sc, session, stats).await {
        Ok(proof) => proof,
        Err(why) => return stats.fail(why),
    };
    session.prepare(
        "POST",
        format_args!("/v1/queue-tokens/users/{user}"),
        None,
        None,
    );
    if let Some(proof) = &proof {
        session.add_header("X-Queue-Pow", proof);
    }
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
    let mut seats = 0;
    let mut attempts = 0;
    while reservation.is_none() {
        if open.is_empty() {
            stats.sold_out += 1;
            if sc.args.waitlist {
                return join_waitlist(sc, session, stats, user).await;
            }
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
            Answer::Ok(body) => {
                reservation = Some(body.reservation_id);
                seats = chosen.len();
            }
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
    let paid = session.send(stats, Step::Pay, json::<PaidBody>).await;
    match paid {
        Answer::Ok(body) => {
            let sale = Sale {
                user,
                index,
                reservation,
                seats,
                amount: body.amount,
            };
            after_sale(sc, session, stats, &sale).await;
            Outcome::Completed
        }
        Answer::Refused(status, _) if status < 500 => stats.fail(format!("pay: {}", paid.why())),
        // A 5xx or no answer: the payment may or may not have been committed.
        other => {
            stats.unknown_payments += 1;
            stats.fail(format!("pay: {}", other.why()))
        }
    }
}

/// Runs the `index`th user to start, on its node, and records the iteration.
async fn one_user(
    sc: &Scenario,
    (index, user): (usize, i64),
    since: Instant,
    stats: &mut Stats,
    rng: &mut SmallRng,
) {
    let (target, pool) = sc.nodes.for_user(index);
    let mut session = Session::new(target, pool, sc.retry, sc.run, user);
    let outcome = iteration(sc, &mut session, (index, user), stats, rng).await;
    session.finish();
    if outcome == Outcome::Completed {
        let micros = since.elapsed().as_micros() as u64;
        stats.completed += 1;
        stats.iteration.record(micros);
        sc.completed.fetch_add(1, Ordering::Relaxed);
        sc.slowest.fetch_max(micros, Ordering::Relaxed);
    }
}

/// Runs the measured phase; returns the merged stats, the wall time, users started and dropped.
pub async fn run(sc: Arc<Scenario>, users: Arc<Vec<i64>>) -> (Stats, Duration, usize, u64) {
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
                            let started = Instant::now();
                            one_user(&sc, (i, *user), started, &mut stats, &mut rng).await;
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
                let index = n as usize;
                let user = users[index];
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
                    one_user(&sc, (index, user), due, &mut stats, &mut rng).await;
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
