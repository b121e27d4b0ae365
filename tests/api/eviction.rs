//! Settled reservations leave the schedule actors' memory after their grace period (issue 15,
//! §3.6): memory stays flat under endless hold-and-cancel, and every answer about a settled
//! reservation — read, checkout, cancel, pay — is byte for byte the same from the store as it
//! was from memory. These tests need the engine beside the server (its memory counts), so they
//! start the application themselves.

use crate::helpers::{Backend, TestDb};
use crate::on_both_stores;
use boxoffice::actors::engine::KeptInMemory;
use boxoffice::actors::{Engine, EngineSettings};
use boxoffice::clock::{Clock, ManualClock};
use boxoffice::config::Settings;
use boxoffice::domain::catalog::{NewConcert, NewSchedule};
use boxoffice::domain::queue::TokenState;
use boxoffice::domain::schedule::HoldRequest;
use boxoffice::domain::{ConcertId, Money, ScheduleId, SeatId, Timestamp, UserId};
use boxoffice::startup::Application;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The application with its engine at hand.
struct Served {
    engine: Engine,
    clock: Arc<ManualClock>,
    address: String,
    client: reqwest::Client,
    handle: boxoffice::startup::AppHandle,
}

async fn serve(database_url: &str, tweak: impl FnOnce(&mut EngineSettings)) -> Served {
    boxoffice::telemetry::init_with_default("warn");
    let mut settings = Settings::for_database(database_url);
    tweak(&mut settings.engine);
    let clock = Arc::new(ManualClock::new());
    let app = Application::build_with_clock(settings, clock.clone() as Arc<dyn Clock>)
        .await
        .expect("the application starts");
    let (engine, handle) = (app.engine().clone(), app.handle());
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    Served {
        engine,
        clock,
        address,
        client: reqwest::Client::new(),
        handle,
    }
}

/// A concert whose one schedule is open, with `seats` seats at 1,000 won.
async fn concert(engine: &Engine, seats: i32) -> (ConcertId, ScheduleId, Vec<SeatId>) {
    let created = engine
        .create_concert(NewConcert {
            name: "콘서트".into(),
            schedules: vec![NewSchedule {
                // 2099-01-01: far ahead of any clock a test moves.
                concert_at: Timestamp::from_millis(4_070_908_800_000),
                reservation_at: Timestamp::from_millis(0),
                seats: (1..=seats)
                    .map(|n| (n, Money::new(1_000).expect("a positive price")))
                    .collect(),
                plan: Vec::new(),
            }],
        })
        .await
        .expect("the concert is created");
    let schedule = &created.schedules[0];
    (
        created.id,
        schedule.info.id,
        schedule.seats.iter().map(|s| s.id).collect(),
    )
}

/// Joins the line and waits until admitted.
async fn active_token(engine: &Engine, user: UserId) -> i64 {
    let (token, _) = engine.join_queue(user).await.expect("the user joins");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !matches!(
        engine.token_of_now(user).expect("a token").state,
        TokenState::Active { .. }
    ) {
        assert!(Instant::now() < deadline, "never admitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    token.id.get()
}

/// Waits until nothing is kept in memory any more.
async fn until_nothing_is_kept(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kept = engine.kept_in_memory();
        if kept.reservations == 0 && kept.indexed == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still kept: {kept:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CYCLES: usize = 50_000;
/// Reservations (or index entries) kept at once that count as flat: a fifth of the cycles.
/// Kept forever, they pass it by cycle 10,000.
const FLAT: usize = CYCLES / 5;

/// One user holds and cancels a seat 50,000 times (four seats in parallel, as the per-user
/// limit allows): what the schedule actor keeps stays far below what it has seen, and all of
/// it leaves once the cycles stop.
#[actix_web::test]
async fn fifty_thousand_holds_and_cancels_of_one_user_keep_memory_flat() {
    let app = serve("memory://", |s| {
        s.settled_grace = Duration::from_millis(20);
    })
    .await;
    let engine = &app.engine;
    let user = engine
        .create_user("cycler".into(), Money::ZERO)
        .await
        .expect("a user");
    let (concert, schedule, seats) = concert(engine, 4).await;
    let lanes: Vec<_> = seats
        .into_iter()
        .enumerate()
        .map(|(lane, seat)| {
            let engine = engine.clone();
            actix_web::rt::spawn(async move {
                let mut worst = KeptInMemory::default();
                for cycle in 0..CYCLES / 4 {
                    let hold = HoldRequest {
                        user,
                        concert,
                        schedule,
                        seats: vec![seat],
                    };
                    let held = engine.hold(hold, None).await.expect("the seat is held");
                    engine
                        .cancel(user, held.reservation.id)
                        .await
                        .expect("the hold is cancelled");
                    if lane == 0 && cycle % 250 == 0 {
                        let kept = engine.kept_in_memory();
                        worst.reservations = worst.reservations.max(kept.reservations);
                        worst.deadlines = worst.deadlines.max(kept.deadlines);
                        worst.indexed = worst.indexed.max(kept.indexed);
                    }
                }
                worst
            })
        })
        .collect();
    let mut worst = KeptInMemory::default();
    for lane in lanes {
        let seen = lane.await.expect("a lane finishes");
        worst.reservations = worst.reservations.max(seen.reservations);
        worst.deadlines = worst.deadlines.max(seen.deadlines);
        worst.indexed = worst.indexed.max(seen.indexed);
    }
    let last = engine.kept_in_memory();
    for kept in [worst, last] {
        assert!(kept.reservations < FLAT, "reservations kept: {kept:?}");
        assert!(kept.indexed < FLAT, "index entries kept: {kept:?}");
        // A cancelled hold's deadline entry would otherwise wait out the 5-minute hold time.
        assert!(kept.deadlines < 3 * FLAT, "deadline entries kept: {kept:?}");
    }
    until_nothing_is_kept(engine).await;
    app.handle.stop(true).await;
}

impl Served {
    /// (status, body) of one request with the user's token, as a client sees it.
    async fn answer(&self, request: reqwest::RequestBuilder, token: i64) -> (u16, String) {
        let response = request
            .header("TOKEN-ID", token.to_string())
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("a body"))
    }

    async fn reserve(
        &self,
        user: UserId,
        token: i64,
        (concert, schedule): (ConcertId, ScheduleId),
        seats: &[SeatId],
    ) -> (u16, Value) {
        let seats: Vec<i64> = seats.iter().map(|s| s.get()).collect();
        let body = json!({ "userId": user.get(), "concertId": concert.get(),
                           "scheduleId": schedule.get(), "seatIds": seats });
        let request = self
            .client
            .post(format!("{}/v1/reservations", self.address))
            .json(&body);
        let (status, text) = self.answer(request, token).await;
        (status, serde_json::from_str(&text).expect("a JSON body"))
    }

    async fn pay(&self, user: UserId, token: i64, reservation: i64) -> (u16, String) {
        let request = self
            .client
            .post(format!("{}/v1/payments/users/{}", self.address, user.get()))
            .json(&json!({ "reservationId": reservation }));
        self.answer(request, token).await
    }

    /// Every answer about `reservation` a client can get: read, checkout, cancel, pay.
    async fn probes(&self, user: UserId, token: i64, reservation: i64) -> Vec<(u16, String)> {
        let at = |path: String| format!("{}{path}", self.address);
        let read = self.client.get(at(format!(
            "/v1/reservations/{reservation}?userId={}",
            user.get()
        )));
        let progress = self
            .client
            .post(at(format!("/v1/payments/users/{}/progress", user.get())))
            .json(&json!({ "reservationId": reservation }));
        let cancel = self.client.delete(at(format!(
            "/v1/reservations/{reservation}?userId={}",
            user.get()
        )));
        vec![
            self.answer(read, token).await,
            self.answer(progress, token).await,
            self.answer(cancel, token).await,
            self.pay(user, token, reservation).await,
        ]
    }
}

/// A cancelled, a paid and an expired reservation answer the same before and after they leave
/// memory; the paid seat stays sold and still counts for its owner's limit.
async fn settled_reservations_answer_the_same_from_the_store(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = serve(&db.url, |s| {
        s.settled_grace = Duration::from_secs(3_600);
        // The clock jumps past the grace below; the tokens must outlive it.
        s.active_ttl = Duration::from_secs(86_400);
    })
    .await;
    let engine = &app.engine;
    let buyer = engine
        .create_user("buyer".into(), Money::new(100_000).expect("positive"))
        .await
        .expect("a user");
    let rival = engine
        .create_user("rival".into(), Money::new(100_000).expect("positive"))
        .await
        .expect("a user");
    let (concert, schedule, seats) = concert(engine, 6).await;
    let on = (concert, schedule);
    let token = active_token(engine, buyer).await;
    let id = |(status, body): (u16, Value)| {
        assert_eq!(status, 201, "{body}");
        body["reservationId"].as_i64().expect("an id")
    };
    let cancelled = id(app.reserve(buyer, token, on, &seats[0..1]).await);
    let paid = id(app.reserve(buyer, token, on, &seats[1..2]).await);
    assert_eq!(app.pay(buyer, token, paid).await.0, 201);
    // Paying spent the token.
    let token = active_token(engine, buyer).await;
    let delete = app.client.delete(format!(
        "{}/v1/reservations/{cancelled}?userId={}",
        app.address,
        buyer.get()
    ));
    assert_eq!(app.answer(delete, token).await.0, 200);
    let expired = id(app.reserve(buyer, token, on, &seats[2..3]).await);
    // Past the hold time, before its timer fires: the payment's pin expires it.
    app.clock.advance(Duration::from_secs(301));
    assert_eq!(app.pay(buyer, token, expired).await.0, 400);
    let rival_token = active_token(engine, rival).await;

    let mut before = Vec::new();
    for reservation in [cancelled, paid, expired] {
        before.extend(app.probes(buyer, token, reservation).await);
    }
    before.extend(app.probes(rival, rival_token, paid).await);
    let statuses: Vec<u16> = before.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses,
        [200, 200, 409, 409, 200, 200, 409, 409, 200, 200, 400, 400, 404, 404, 404, 404],
        "{before:#?}"
    );
    let kept = engine.kept_in_memory();
    assert_eq!(
        (kept.reservations, kept.indexed),
        (3, 3),
        "all in memory still"
    );

    app.clock.advance(Duration::from_secs(3_601));
    until_nothing_is_kept(engine).await;
    let mut after = Vec::new();
    for reservation in [cancelled, paid, expired] {
        after.extend(app.probes(buyer, token, reservation).await);
    }
    after.extend(app.probes(rival, rival_token, paid).await);
    assert_eq!(after, before, "the store answers as memory did");

    // The paid seat is still sold, and still counts for the buyer's limit of 4.
    let (status, body) = app.reserve(rival, rival_token, on, &seats[1..2]).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("reservation_failed"))
    );
    let (status, body) = app.reserve(buyer, token, on, &seats[2..6]).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("seat_limit_exceeded"))
    );
    let (status, body) = app.reserve(buyer, token, on, &seats[3..6]).await;
    assert_eq!(status, 201, "{body}");
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("request sent")
        .text()
        .await
        .expect("a body");
    assert!(
        metrics.contains("boxoffice_reservations_in_memory"),
        "{metrics}"
    );
    app.handle.stop(true).await;
}
on_both_stores!(settled_reservations_answer_the_same_from_the_store);
