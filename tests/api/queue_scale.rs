//! The waiting room at drop scale, over HTTP: thousands of concurrent joins admitted strictly
//! in join order, tokens that cannot be guessed, borrowed or revived, and a long line that
//! survives a restart in order. (Speed and memory are measured in benches/queue.rs and
//! examples/waiting_room.rs.)

use crate::helpers::*;
use crate::on_both_stores;
use crate::restart::Down;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Creates `count` users through the admin route, `in_flight` at a time.
async fn create_users_concurrently(app: &TestApp, count: usize) -> Vec<i64> {
    let mut users: Vec<i64> = stream::iter(0..count)
        .map(|_| app.create_user(0))
        .buffer_unordered(64)
        .collect()
        .await;
    users.sort_unstable();
    users
}

/// Polls the database until no token is WAITING, moving the clock `step` per round so the
/// ACTIVE tokens expire and the next ones get in.
async fn drain_the_line(app: &TestApp, step: Duration, rounds: usize) {
    for _ in 0..rounds {
        let waiting = app
            .db
            .scalar("SELECT COUNT(*) FROM queue_tokens WHERE status = 'WAITING'")
            .await;
        if waiting == 0 {
            return;
        }
        app.clock.advance(step);
        // Two ticks: one expires and admits, the commit follows.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    panic!("the line did not drain in {rounds} rounds");
}

/// 2,000 users join at once; 50 get in at a time. Whatever order the joins reached the actor
/// in, that order (the queueId) is the admission order: every token's stored admission time is
/// non-decreasing in queueId, batch after batch.
async fn thousands_of_concurrent_joins_are_admitted_in_join_order(backend: Backend) {
    const USERS: usize = 2_000;
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_active = 50;
        s.engine.active_ttl = Duration::from_secs(1);
        s.engine.idle_timeout = Duration::from_secs(86_400);
    })
    .await;
    let users = create_users_concurrently(&app, USERS).await;
    // All at once (the client opens as many connections as it needs).
    let client = &app;
    let joined: Vec<(i64, Value)> =
        futures_util::future::join_all(users.iter().map(|&u| async move {
            let response = client.join(u).await;
            assert_eq!(response.status().as_u16(), 201, "user {u}");
            (u, body(response).await)
        }))
        .await;
    let tokens: HashSet<i64> = joined
        .iter()
        .map(|(_, b)| b["tokenId"].as_i64().unwrap())
        .collect();
    assert_eq!(tokens.len(), USERS, "every join got its own token");
    let places: Vec<i64> = stream::iter(&joined)
        .map(|(u, b)| async {
            let polled = body(app.status(*u, b["tokenId"].as_i64().unwrap()).await).await;
            polled["queueId"].as_i64().unwrap()
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let places: HashSet<i64> = places.into_iter().collect();
    assert_eq!(
        places,
        (1..=USERS as i64).collect(),
        "queueIds are 1..=2000, once each"
    );

    drain_the_line(&app, Duration::from_secs(1), 200).await;

    let db = &app.db;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM queue_tokens WHERE admitted_at_ms IS NULL")
            .await,
        0,
        "everyone was admitted"
    );
    let out_of_order = db
        .scalar(
            "SELECT COUNT(*) FROM (SELECT admitted_at_ms,
                    LAG(admitted_at_ms) OVER (ORDER BY position) AS before
                 FROM queue_tokens) t
             WHERE before > admitted_at_ms",
        )
        .await;
    assert_eq!(
        out_of_order, 0,
        "a later queueId was admitted before an earlier one"
    );
    let batches = db
        .scalar("SELECT COUNT(DISTINCT admitted_at_ms) FROM queue_tokens")
        .await;
    assert!(
        batches >= (USERS / 50) as i64,
        "{batches} admission batches"
    );
    let largest = db
        .scalar(
            "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM queue_tokens GROUP BY admitted_at_ms) t",
        )
        .await;
    assert!(largest <= 50, "the cap held: {largest} admitted at once");
    // Stop before the database is dropped, so no tick writes to a missing database.
    app.stop().await;
}
on_both_stores!(thousands_of_concurrent_joins_are_admitted_in_join_order);

/// Token ids are drawn from 2^53: guesses are refused, and a real token works only for its
/// owner, on polls and on bookings alike.
async fn tokens_cannot_be_guessed_or_borrowed(backend: Backend) {
    let app = spawn_app(backend).await;
    let users = app.create_users(20, 0).await;
    let mut tokens = Vec::new();
    for user in &users {
        tokens.push(app.active_token(*user).await);
    }
    let known: HashSet<i64> = tokens.iter().copied().collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let guesses: Vec<i64> = (0..500)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Random ids, and the neighbours of real ones.
            match i % 2 {
                0 => (state % ((1 << 53) - 1)) as i64 + 1,
                _ => tokens[i % tokens.len()] + (i as i64 % 7) - 3,
            }
        })
        .filter(|g| !known.contains(g) && *g > 0)
        .collect();
    let refused = stream::iter(&guesses)
        .map(|guess| async { app.status(users[0], *guess).await })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for response in refused {
        assert_error(response, 401, "invalid_token", "invalid token").await;
    }
    // Another user's ACTIVE token: refused for polls and for a reservation.
    let concert = app.create_concert(4, 1_000).await;
    assert_error(
        app.status(users[1], tokens[0]).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    assert_error(
        app.reserve(users[1], tokens[0], &concert, &concert.seats[..1])
            .await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    // The owner is fine.
    assert_eq!(
        app.reserve(users[0], tokens[0], &concert, &concert.seats[..1])
            .await
            .status()
            .as_u16(),
        201
    );
    // Stop before the database is dropped, so no tick writes to a missing database.
    app.stop().await;
}
on_both_stores!(tokens_cannot_be_guessed_or_borrowed);

/// A waiter who stopped polling is EXPIRED as soon as its idle deadline passes, even if it polls
/// before the sweep; a free slot does not bring it back; rejoining gives a new token, later in
/// line, and the old one stays EXPIRED.
async fn an_expired_token_is_never_active_again(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_active = 1;
        s.engine.active_ttl = Duration::from_secs(600);
        s.engine.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let users = app.create_users(2, 0).await;
    let (a, b) = (users[0], users[1]);
    let ta = app.active_token(a).await;
    let tb = body(app.join(b).await).await["tokenId"].as_i64().unwrap();
    let before = body(app.status(b, tb).await).await;
    assert_eq!(before["status"], "WAITING");
    app.clock.advance(Duration::from_secs(61));
    // Whether or not the tick has swept it yet, the poll cannot revive it.
    let late = body(app.status(b, tb).await).await;
    assert_eq!(late["status"], "EXPIRED", "{late}");
    assert!(late["estimatedWaitSeconds"].is_null());
    // a's slot frees up (its time to live passes): b stays EXPIRED.
    app.clock.advance(Duration::from_secs(600));
    let deadline = Instant::now() + Duration::from_secs(5);
    while body(app.status(a, ta).await).await["status"] != "EXPIRED" {
        assert!(Instant::now() < deadline, "a never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(body(app.status(b, tb).await).await["status"], "EXPIRED");
    assert_error(
        app.get("/v1/concerts/1/schedules", Some(tb)).await,
        401,
        "token_expired",
        "token expired",
    )
    .await;
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM queue_tokens WHERE id = {tb} AND status = 'EXPIRED'"
            ))
            .await,
        1
    );
    // Rejoin: a new token, a later place; the old one stays EXPIRED (API.md: it existed).
    let again = app.join(b).await;
    assert_eq!(again.status().as_u16(), 201);
    let fresh = body(again).await["tokenId"].as_i64().unwrap();
    assert_ne!(fresh, tb);
    let now = app.wait_for_status(b, fresh, "ACTIVE").await;
    assert!(now["queueId"].as_i64().unwrap() > before["queueId"].as_i64().unwrap());
    let old = body(app.status(b, tb).await).await;
    assert_eq!(old["status"], "EXPIRED", "{old}");
    assert_eq!(old["queueId"], before["queueId"]);
    // Stop before the database is dropped, so no tick writes to a missing database.
    app.stop().await;
}
on_both_stores!(an_expired_token_is_never_active_again);

/// 600 waiters, a restart: every place and count is what it was, and admission resumes with
/// the next queueId.
async fn a_long_line_survives_a_restart_in_order(backend: Backend) {
    a_long_line_comes_back_in_order(backend, Down::Stop).await;
}
on_both_stores!(a_long_line_survives_a_restart_in_order);

/// The same after SIGKILL: every acknowledged join has its place. (The server process keeps
/// real time, so the admissions after it are left to the graceful variant's clock.)
async fn a_long_line_survives_a_kill_dash_nine_in_order(backend: Backend) {
    a_long_line_comes_back_in_order(backend, Down::Kill).await;
}
on_both_stores!(a_long_line_survives_a_kill_dash_nine_in_order);

async fn a_long_line_comes_back_in_order(backend: Backend, down: Down) {
    const USERS: usize = 600;
    let db = TestDb::create(backend).await;
    let tweak = |s: &mut boxoffice::config::Settings| {
        s.engine.max_active = 5;
        s.engine.active_ttl = Duration::from_secs(60);
        s.engine.idle_timeout = Duration::from_secs(3_600);
    };
    let flags = [
        "--max-active",
        "5",
        "--active-ttl-secs",
        "60",
        "--idle-timeout-secs",
        "3600",
    ];
    let app = down.spawn(db, tweak, &flags).await;
    let users = create_users_concurrently(&app, USERS).await;
    let mut tokens = Vec::with_capacity(USERS);
    for chunk in users.chunks(100) {
        let joined = futures_util::future::join_all(chunk.iter().map(|u| app.join(*u))).await;
        for response in joined {
            tokens.push(body(response).await["tokenId"].as_i64().unwrap());
        }
    }
    let snapshot = |app: &TestApp| {
        let pairs: Vec<(i64, i64)> = users.iter().copied().zip(tokens.iter().copied()).collect();
        let client = app.client.clone();
        let base = app.address.clone();
        async move {
            stream::iter(pairs)
                .map(|(u, t)| {
                    let (client, base) = (client.clone(), base.clone());
                    async move {
                        let response = client
                            .get(format!("{base}/v1/queue-status/users/{u}"))
                            .header("TOKEN-ID", t.to_string())
                            .send()
                            .await
                            .expect("request sent");
                        let polled = body(response).await;
                        json!([
                            u,
                            polled["queueId"],
                            polled["status"],
                            polled["remainingWaitListCount"],
                            polled["joinAt"]
                        ])
                    }
                })
                .buffered(64)
                .collect::<Vec<Value>>()
                .await
        }
    };
    let before = snapshot(&app).await;
    let app = down.and_back(app).await;
    let after = snapshot(&app).await;
    assert_eq!(before, after);
    let waiting: Vec<&Value> = after.iter().filter(|v| v[2] == "WAITING").collect();
    assert_eq!(waiting.len(), USERS - 5);
    if let Down::Kill = down {
        app.stop().await;
        return;
    }
    // The five ACTIVE tokens expire: the next five queueIds get in, nobody else.
    app.clock.advance(Duration::from_secs(61));
    // Wait for the admissions to be committed (a tick, then the persister), however busy.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let admitted = app
            .db
            .scalar("SELECT COUNT(*) FROM queue_tokens WHERE status = 'ACTIVE' AND position BETWEEN 6 AND 10")
            .await;
        if admitted == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {admitted} of the next five were admitted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM queue_tokens WHERE status = 'ACTIVE'")
            .await,
        5
    );
    // Stop before the database is dropped, so no tick writes to a missing database.
    app.stop().await;
}
