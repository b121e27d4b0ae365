//! Surviving the worst minute: a hold expiring during its payment, overload, hostile input,
//! and the database disappearing mid-load behind a proxy the test controls.

use crate::helpers::*;
use crate::{on_both_stores, on_postgres};
use futures_util::future::join_all;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn a_hold_expiring_during_its_payment_is_either_paid_or_expired_never_both(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.hold_ttl = Duration::from_millis(300);
        s.engine.max_seats_per_user = 100;
    })
    .await;
    let user = app.create_user(10_000_000).await;
    let mut token = app.active_token(user).await;
    let concert = app.create_concert(40, 1_000).await;
    let (mut paid, mut expired) = (0, 0);
    for (i, seat) in concert.seats.iter().enumerate() {
        let id = body(app.reserve(user, token, &concert, &[*seat]).await).await["reservationId"]
            .as_i64()
            .unwrap();
        // Aim the payment at the moment the timer fires: 270..=330 ms after the hold.
        tokio::time::sleep(Duration::from_millis(270 + (i as u64 * 3) % 61)).await;
        let response = app.pay(user, token, id).await;
        let status = response.status().as_u16();
        let reservation = |state: &str| {
            format!("SELECT COUNT(*) FROM reservations WHERE id = {id} AND status = '{state}'")
        };
        let payments = app
            .db
            .scalar(&format!(
                "SELECT COUNT(*) FROM payments WHERE reservation_id = {id}"
            ))
            .await;
        match status {
            201 => {
                paid += 1;
                assert_eq!(app.db.scalar(&reservation("PAID")).await, 1);
                assert_eq!(payments, 1);
            }
            400 => {
                expired += 1;
                assert_eq!(body(response).await["error"], "reservation_expired");
                assert_eq!(payments, 0, "an expired hold was never debited");
                // The expiry write may still be in flight; the seat map waits for it.
                assert!(app
                    .seat_map(token, &concert)
                    .await
                    .iter()
                    .any(|(s, free)| s == seat && *free));
                assert_eq!(app.db.scalar(&reservation("EXPIRED")).await, 1);
            }
            other => panic!("unexpected {other}"),
        }
        // The token stays usable only until the first payment; take a fresh one after.
        if status == 201 {
            token = app.active_token(user).await;
        }
    }
    let debited = app
        .db
        .scalar("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM payments")
        .await;
    assert_eq!(app.balance(user).await, 10_000_000 - debited);
    assert_eq!(debited, paid * 1_000);
    assert_eq!(paid + expired, 40);
}
on_both_stores!(a_hold_expiring_during_its_payment_is_either_paid_or_expired_never_both);

async fn overload_gets_a_fast_503_and_admitted_work_completes(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.mailbox_capacity = 4;
        s.engine.persister_capacity = 16;
    })
    .await;
    let user = app.create_user(0).await;
    let resident_before = resident_bytes();
    let started = Instant::now();
    let answers = join_all((0..1_000).map(|_| async {
        let t = Instant::now();
        let response = app.recharge(user, json!(1)).await;
        (
            response.status().as_u16(),
            t.elapsed(),
            body(response).await,
        )
    }))
    .await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count() as i64;
    let refused = answers.iter().filter(|(s, _, _)| *s == 503).count();
    assert!(ok > 0, "some work is admitted");
    assert!(
        refused > 0,
        "the excess is refused, not queued without bound"
    );
    for (status, _, answer) in &answers {
        assert!(*status == 200 || *status == 503, "{status}: {answer}");
        if *status == 503 {
            assert_eq!(answer["error"], "unavailable");
        }
    }
    let slowest = answers.iter().map(|(_, t, _)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "nobody waits long: {slowest:?} (run took {:?})",
        started.elapsed()
    );
    assert_eq!(
        app.balance(user).await,
        ok,
        "every acknowledged recharge, and only those"
    );
    let grown = resident_bytes().saturating_sub(resident_before);
    assert!(
        grown < 256 << 20,
        "memory stayed bounded: grew {} MiB",
        grown >> 20
    );
}

/// This process's resident memory (the app under test runs inside it).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
on_both_stores!(overload_gets_a_fast_503_and_admitted_work_completes);

/// Every non-2xx answer is the envelope with a 4xx; nothing is ever a 5xx.
async fn assert_client_error(response: reqwest::Response, what: &str) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert!(
        (200..500).contains(&status),
        "{what}: answered {status}: {text}"
    );
    if status >= 400 {
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert_eq!(value["code"], status, "{what}: {text}");
        assert!(
            value["error"].is_string() && value["message"].is_string(),
            "{what}: {text}"
        );
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body shaped like the real ones, with any field replaced by anything.
fn request_body() -> impl Strategy<Value = Value> {
    let field = || prop_oneof![3 => json_value(), 1 => (-3i64..100).prop_map(|n| json!(n))];
    prop_oneof![
        (field(), field(), field(), field()).prop_map(|(u, c, s, seats)| json!({ "userId": u, "concertId": c, "scheduleId": s, "seatIds": seats })),
        field().prop_map(|r| json!({ "reservationId": r })),
        field().prop_map(|a| json!({ "amount": a })),
        json_value(),
    ]
}

async fn hostile_bodies_never_cause_a_5xx(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(1_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(5, 100).await;
    let _ = concert;
    let routes = [
        "/v1/reservations".to_string(),
        format!("/v1/payments/users/{user}"),
        format!("/v1/payments/users/{user}/progress"),
        format!("/v1/balance/users/{user}/recharge"),
    ];
    let mut runner = TestRunner::deterministic();
    for case in 0..300 {
        let body = request_body()
            .new_tree(&mut runner)
            .expect("a value")
            .current();
        let route = &routes[case % routes.len()];
        let response = app.post(route, Some(token), body.clone()).await;
        assert_client_error(response, &format!("POST {route} {body}")).await;
    }
    // Not even JSON: truncated, binary, wrong content type.
    for raw in [
        &b"{\"userId\":"[..],
        b"\xff\xfe\x00garbage",
        b"[1,2,3",
        b"{\"amount\": 1e99999}",
        b"",
    ] {
        let response = app
            .client
            .post(app.url(&routes[3]))
            .header("Content-Type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        assert_client_error(response, &format!("raw {:?}", String::from_utf8_lossy(raw))).await;
    }
}
on_both_stores!(hostile_bodies_never_cause_a_5xx);

async fn hostile_ids_tokens_and_sizes_get_the_envelope(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(1_000).await;
    let other = app.create_user(1_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(5, 100).await;
    let other_concert = app.create_concert(2, 100).await;
    let reserve = |seats: Value| json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": seats });
    let cases: Vec<(String, Value)> = vec![
        ("empty seatIds".into(), reserve(json!([]))),
        (
            "duplicated seatIds".into(),
            reserve(json!([concert.seats[0], concert.seats[0]])),
        ),
        (
            "10,000 seatIds".into(),
            reserve(json!((0..10_000).collect::<Vec<i64>>())),
        ),
        (
            "another schedule's seat".into(),
            reserve(json!([other_concert.seats[0]])),
        ),
        ("negative seat".into(), reserve(json!([-1]))),
        ("overflowing seat".into(), reserve(json!([u64::MAX]))),
        (
            "overflowing userId".into(),
            json!({ "userId": 9_223_372_036_854_775_808u64, "concertId": 1, "scheduleId": 1, "seatIds": [1] }),
        ),
    ];
    for (what, body) in cases {
        assert_client_error(app.post("/v1/reservations", Some(token), body).await, &what).await;
    }
    for header in [
        "abc",
        "-1",
        "0",
        "9007199254740992",
        "99999999999999999999999",
        "1.5",
        " ",
    ] {
        let response = app
            .client
            .post(app.url("/v1/reservations"))
            .header("TOKEN-ID", header)
            .json(&reserve(json!([concert.seats[1]])))
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "invalid_token", "invalid token").await;
    }
    let theirs = app
        .reserve(other, token, &concert, &concert.seats[1..2])
        .await;
    assert_error(theirs, 401, "invalid_token", "invalid token").await;
    let guessed = app
        .reserve(user, token ^ 0x5555, &concert, &concert.seats[1..2])
        .await;
    assert_error(guessed, 401, "invalid_token", "invalid token").await;
    for path in [
        "/v1/balance/users/9223372036854775808",
        "/v1/balance/users/-9223372036854775809",
        "/v1/concerts/1e3/schedules",
    ] {
        assert_client_error(app.get(path, Some(token)).await, path).await;
    }
    let big = vec![b'7'; 1024 * 1024];
    let response = app
        .client
        .post(app.url(&format!("/v1/balance/users/{user}/recharge")))
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_client_error(response, "a 1 MiB body").await;
    let huge = "h".repeat(64 * 1024);
    let response = app
        .client
        .get(app.url(&format!("/v1/balance/users/{user}")))
        .header("X-Huge", huge)
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        431,
        "headers_too_large",
        "request headers too large",
    )
    .await;
    assert_eq!(
        app.balance(user).await,
        1_000,
        "nothing hostile changed anything"
    );
}
on_both_stores!(hostile_ids_tokens_and_sizes_get_the_envelope);

/// A TCP proxy between the service and PostgreSQL that the test can cut and heal.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, list) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client); // Cut: refuse by hanging up at once.
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                list.lock().unwrap().push(task);
            }
        });
        Proxy {
            port,
            up,
            connections,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn heal(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn losing_the_database_mid_load_answers_503_promptly_and_recovers_by_itself(
    backend: Backend,
) {
    let db = TestDb::create(backend).await;
    let proxy = Proxy::start(5432).await;
    let server = postgres_server();
    let (head, name) = db.url.rsplit_once('/').unwrap();
    assert!(
        head == server && server.ends_with(":5432"),
        "the proxy test expects the default server"
    );
    let via_proxy = format!("{}:{}/{name}", server.trim_end_matches(":5432"), proxy.port);
    let app = spawn_app_with(db, |s| s.database_url = via_proxy).await;
    let users = app.create_users(8, 0).await;
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let running = Arc::new(AtomicBool::new(true));
    let load = join_all(users.iter().map(|user| {
        let (acknowledged, running, app) = (acknowledged.clone(), running.clone(), &app);
        async move {
            let mut slow = Vec::new();
            while running.load(Ordering::SeqCst) {
                let t = Instant::now();
                let response = app.recharge(*user, json!(1)).await;
                let status = response.status().as_u16();
                if status == 200 {
                    acknowledged.lock().unwrap().push(*user);
                } else {
                    assert_eq!(status, 503);
                    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
                    assert_eq!(body(response).await["error"], "unavailable");
                    if t.elapsed() > Duration::from_secs(1) {
                        slow.push(t.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            slow
        }
    }));
    let chaos = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let not_ready = app.get("/readyz", None).await;
        assert_eq!(
            not_ready.status().as_u16(),
            503,
            "not ready while the database is gone"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.heal();
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.get("/readyz", None).await.status().as_u16() != 200 {
            assert!(Instant::now() < deadline, "never became ready again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        running.store(false, Ordering::SeqCst);
    };
    let (slow, ()) = tokio::join!(load, chaos);
    let slow: Vec<Duration> = slow.into_iter().flatten().collect();
    assert!(slow.is_empty(), "503s took longer than a second: {slow:?}");
    // Every acknowledged recharge is in the database, and the wallets agree with them.
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(!acknowledged.is_empty());
    for user in &users {
        let acked = acknowledged.iter().filter(|u| *u == user).count() as i64;
        let stored = app
            .db
            .scalar(&format!(
                "SELECT COUNT(*) FROM ledger WHERE user_id = {user}"
            ))
            .await;
        assert!(
            stored >= acked,
            "user {user}: {acked} acknowledged, {stored} stored"
        );
        let balance = app
            .db
            .scalar(&format!(
                "SELECT balance FROM wallets WHERE user_id = {user}"
            ))
            .await;
        assert_eq!(balance, stored, "each stored recharge is 1 won");
        // A wallet whose reload failed while the database was gone retries every 500 ms
        // and answers 503 until then (correctly); wait for it, bounded, before comparing.
        let deadline = Instant::now() + Duration::from_secs(5);
        let live = loop {
            let response = app.get(&format!("/v1/balance/users/{user}"), None).await;
            match response.status().as_u16() {
                200 => break body(response).await["currentAmount"].as_i64(),
                503 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("user {user}: balance answered {other}"),
            }
        };
        assert_eq!(
            live,
            Some(balance),
            "the live wallet agrees with the database"
        );
    }
    assert_eq!(
        app.recharge(users[0], json!(5)).await.status().as_u16(),
        200,
        "serving again without a restart"
    );
}
on_postgres!(losing_the_database_mid_load_answers_503_promptly_and_recovers_by_itself);

async fn tokens_expire_when_the_clock_passes_their_time(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| s.engine.max_active = 1).await;
    let first = app.create_user(0).await;
    let second = app.create_user(0).await;
    let active = app.active_token(first).await;
    let waiting = body(app.join(second).await).await["tokenId"]
        .as_i64()
        .unwrap();
    // Ten minutes pass in an instant: the active token is over at once, even before the tick.
    app.clock.advance(Duration::from_secs(601));
    let path = "/v1/concerts/1/schedules";
    assert_error(
        app.get(path, Some(active)).await,
        401,
        "token_expired",
        "token expired",
    )
    .await;
    assert_eq!(
        body(app.status(first, active).await).await["status"],
        "EXPIRED"
    );
    // The waiter has not polled for ten minutes either: the next tick abandons it (a poll now
    // would count at the new time, so let the tick run first).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        body(app.status(second, waiting).await).await["status"],
        "EXPIRED"
    );
    assert_error(
        app.get(path, Some(waiting)).await,
        401,
        "token_expired",
        "token expired",
    )
    .await;
    // Both slots' worth of line is gone: a newcomer is admitted at once, with a later place.
    let third = app.create_user(0).await;
    let fresh = app.active_token(third).await;
    let place = |token| async move {
        body(app.status(third, token).await).await["queueId"]
            .as_i64()
            .unwrap()
    };
    assert!(place(fresh).await > 2);
}
on_both_stores!(tokens_expire_when_the_clock_passes_their_time);
