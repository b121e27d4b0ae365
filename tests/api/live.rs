//! `GET /v1/admin/live`: admin-keyed, Server-Sent Events at most every 500 ms, figures that
//! follow what the API does, kept out of the latency histogram, and ended by shutdown so a
//! graceful stop is not held up by an open dashboard.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::Value;
use std::time::{Duration, Instant};

/// An open stream and the bytes read from it that do not yet make a whole event.
struct Live {
    response: reqwest::Response,
    buffer: String,
}

impl Live {
    async fn open(app: &TestApp, query: &str) -> Live {
        let response = app
            .client
            .get(app.url(&format!("/v1/admin/live{query}")))
            .header("X-Admin-Key", ADMIN_KEY)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status().as_u16(), 200);
        let kind = response.headers()["content-type"].to_str().expect("ASCII");
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        Live {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's data, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data = event
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("an event is one data line: {event:?}"));
                return Some(serde_json::from_str(data.trim_end()).expect("the data is JSON"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event (or the end) within 5 s")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self
                    .buffer
                    .push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => return None,
            }
        }
    }

    /// Reads events until one satisfies `done`, for at most `within`.
    async fn until(&mut self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        while started.elapsed() < within {
            let event = self.next().await.expect("the stream stays open");
            if done(&event) {
                return event;
            }
        }
        panic!("no event within {within:?} showed the change");
    }
}

/// A fresh app and a stream on it that has sent its first event.
async fn watching(backend: Backend) -> (TestApp, Live) {
    let app = spawn_app(backend).await;
    let mut live = Live::open(&app, "").await;
    live.next().await.expect("a first event");
    (app, live)
}

async fn refused_without_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let plain = app.get("/v1/admin/live", None).await;
    assert_error(plain, 403, "forbidden", "invalid admin key").await;
    let wrong = app
        .client
        .get(app.url("/v1/admin/live"))
        .header("X-Admin-Key", "not-the-key-not-the-key-not-the-key")
        .send()
        .await
        .expect("request sent");
    assert_error(wrong, 403, "forbidden", "invalid admin key").await;
    app.stop().await;
}
on_both_stores!(refused_without_the_key);

async fn a_bad_schedule_is_refused_in_the_envelope(backend: Backend) {
    let app = spawn_app(backend).await;
    for (query, status, slug) in [
        ("?scheduleId=abc", 400, "invalid_request"),
        ("?scheduleId=0", 400, "invalid_request"),
        ("?scheduleId=99999", 404, "schedule_not_found"),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/v1/admin/live{query}")))
            .header("X-Admin-Key", ADMIN_KEY)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status().as_u16(), status, "{query}");
        assert_eq!(body(response).await["error"], slug, "{query}");
    }
    app.stop().await;
}
on_both_stores!(a_bad_schedule_is_refused_in_the_envelope);

/// The seat's letter in the event's seat map.
fn state_of(event: &Value, seat: i64) -> char {
    let map = &event["seatMap"];
    let ids = map["seatIds"].as_array().expect("seat ids");
    let at = ids
        .iter()
        .position(|id| id.as_i64() == Some(seat))
        .expect("the seat is in the map");
    map["states"]
        .as_str()
        .expect("states")
        .chars()
        .nth(at)
        .expect("a letter per seat")
}

fn schedule_figures(event: &Value, schedule: i64) -> Value {
    event["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .find(|s| s["scheduleId"] == schedule)
        .cloned()
        .expect("the schedule is listed")
}

async fn a_purchase_shows_within_two_seconds(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(10, 1000).await;
    let user = app.create_user(100_000).await;
    let token = app.active_token(user).await;
    let mut live = Live::open(&app, &format!("?scheduleId={}", concert.schedule)).await;
    let first = live.next().await.expect("a first event");
    for field in [
        "queue",
        "holdsPerSecond",
        "commit",
        "unavailablePerSecond",
        "schedules",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["seatMap"]["scheduleId"], concert.schedule);
    assert_eq!(first["queue"]["active"], 1);
    assert_eq!(state_of(&first, concert.seats[0]), 'F');
    let figures = schedule_figures(&first, concert.schedule);
    assert_eq!(
        (figures["sold"].clone(), figures["seats"].clone()),
        (0.into(), 10.into())
    );

    let held = app
        .reserve(user, token, &concert, &concert.seats[..2])
        .await;
    assert_eq!(held.status().as_u16(), 201);
    let reservation = body(held).await["reservationId"]
        .as_i64()
        .expect("a reservation id");
    let event = live
        .until(Duration::from_secs(2), |e| {
            state_of(e, concert.seats[0]) == 'H'
        })
        .await;
    assert_eq!(schedule_figures(&event, concert.schedule)["held"], 2);

    let paid_at = Instant::now();
    assert_eq!(
        app.pay(user, token, reservation).await.status().as_u16(),
        201
    );
    let event = live
        .until(Duration::from_secs(2), |e| {
            schedule_figures(e, concert.schedule)["sold"] == 2
        })
        .await;
    assert!(paid_at.elapsed() < Duration::from_secs(2));
    assert_eq!(state_of(&event, concert.seats[0]), 'S');
    assert_eq!(state_of(&event, concert.seats[1]), 'S');
    assert_eq!(state_of(&event, concert.seats[2]), 'F');
    app.stop().await;
}
on_both_stores!(a_purchase_shows_within_two_seconds);

/// Rates are per second over the last interval: a burst of holds shows as placed/s, then, with
/// nothing happening, falls back to zero.
async fn rates_follow_the_last_interval(backend: Backend) {
    let (app, mut live) = watching(backend).await;
    let concert = app.create_concert(40, 1000).await;
    let users = app.create_users(4, 100_000).await;
    for (i, user) in users.iter().enumerate() {
        let token = app.active_token(*user).await;
        let seats = &concert.seats[i * 2..i * 2 + 2];
        assert_eq!(
            app.reserve(*user, token, &concert, seats)
                .await
                .status()
                .as_u16(),
            201
        );
    }
    // Someone else's seats: refused, and counted as refused.
    let token = app.active_token(users[0]).await;
    let taken = app
        .reserve(users[0], token, &concert, &concert.seats[2..3])
        .await;
    assert_eq!(taken.status().as_u16(), 400);
    let busy = live
        .until(Duration::from_secs(3), |e| {
            e["holdsPerSecond"]["placed"].as_f64().unwrap_or(0.0) > 0.0
        })
        .await;
    assert!(busy["commit"]["p50Ms"].as_f64().is_some(), "{busy}");
    let quiet = live
        .until(Duration::from_secs(3), |e| {
            e["holdsPerSecond"]["placed"] == 0.0
        })
        .await;
    assert_eq!(
        quiet["commit"]["p50Ms"],
        Value::Null,
        "no commit in a quiet interval"
    );
    app.stop().await;
}
on_both_stores!(rates_follow_the_last_interval);

/// "At most every 500 ms": consecutive events are never closer than that (allowing for the
/// timer's and the network's jitter), however fast the client reads.
async fn events_come_at_most_every_half_second(backend: Backend) {
    let (app, mut live) = watching(backend).await;
    let mut last = Instant::now();
    let mut gaps = Vec::new();
    for _ in 0..4 {
        live.next().await.expect("an event");
        gaps.push(last.elapsed());
        last = Instant::now();
    }
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(400)),
        "gaps {gaps:?}"
    );
    app.stop().await;
}
on_both_stores!(events_come_at_most_every_half_second);

/// A graceful stop ends open streams at once instead of waiting out the shutdown timeout
/// (10 s), and the stream's life is not a request latency.
///
/// The server is a process of its own: the metrics below are read from its recorder alone,
/// not from one this test binary's other apps also write to.
async fn a_graceful_stop_ends_the_stream(backend: Backend) {
    let app = spawn_process_app(TestDb::create(backend).await, &[]).await;
    let mut live = Live::open(&app, "").await;
    live.next().await.expect("a first event");
    let metrics = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    let series = |m: &str, name: &str| {
        m.lines()
            .any(|l| l.starts_with(name) && l.contains("route=\"/v1/admin/live\""))
    };
    assert!(series(&metrics, "boxoffice_http_requests_total"), "counted");
    assert!(
        !series(&metrics, "boxoffice_http_request_duration_seconds"),
        "not in the latency histogram"
    );
    let started = Instant::now();
    let stopping = actix_web::rt::spawn(app.stop());
    while live.next().await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the stream kept going"
        );
    }
    stopping.await.expect("the stop finishes");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        started.elapsed()
    );
}
on_both_stores!(a_graceful_stop_ends_the_stream);
