//! The waiting room over HTTP: join, token, status, FIFO admission.

use crate::helpers::*;
use crate::{on_both_stores, on_postgres};
use serde_json::Value;

async fn joining_gives_a_token_and_a_second_click_keeps_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let first = app.join(user).await;
    assert_eq!(first.status().as_u16(), 201);
    let first = body(first).await;
    let token = first["tokenId"].as_i64().unwrap();
    assert!((1..=(1i64 << 53) - 1).contains(&token));
    for field in ["createdAt", "expiredAt"] {
        let text = first[field].as_str().unwrap();
        assert_eq!(text.len(), 19, "seed format: {text}");
        assert_eq!(&text[10..11], "T");
    }
    let again = app.join(user).await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(body(again).await["tokenId"], token);
    let read = app
        .get(&format!("/v1/queue-tokens/users/{user}"), None)
        .await;
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(body(read).await["tokenId"], token);
}
on_both_stores!(joining_gives_a_token_and_a_second_click_keeps_it);

async fn unknown_users_and_missing_tokens_are_404(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_error(app.join(999).await, 404, "user_not_found", "user not found").await;
    assert_error(
        app.get("/v1/queue-tokens/users/999", None).await,
        404,
        "user_not_found",
        "user not found",
    )
    .await;
    let user = app.create_user(0).await;
    assert_error(
        app.get(&format!("/v1/queue-tokens/users/{user}"), None)
            .await,
        404,
        "token_not_found",
        "token not found",
    )
    .await;
    assert_error(
        app.status(999, 1).await,
        404,
        "user_not_found",
        "user not found",
    )
    .await;
}
on_postgres!(unknown_users_and_missing_tokens_are_404);

async fn a_status_poll_checks_the_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.create_user(0).await;
    let bob = app.create_user(0).await;
    let token = app.active_token(alice).await;
    let path = format!("/v1/queue-status/users/{alice}");
    assert_error(
        app.get(&path, None).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    let bad = app
        .client
        .get(app.url(&path))
        .header("TOKEN-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_error(bad, 401, "invalid_token", "invalid token").await;
    assert_error(
        app.status(alice, token + 1).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    assert_error(
        app.status(bob, token).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    let polled = body(app.status(alice, token).await).await;
    assert_eq!(polled["status"], "ACTIVE");
    assert_eq!(polled["remainingWaitListCount"], 0);
    assert!(polled["queueId"].as_i64().unwrap() >= 1);
    assert!(polled["joinAt"].is_string() && polled["expiredAt"].is_string());
}
on_postgres!(a_status_poll_checks_the_token);

async fn admission_is_first_in_first_out_under_the_cap(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| s.engine.max_active = 3).await;
    let users = app.create_users(8, 100_000).await;
    let mut tokens = Vec::new();
    for user in &users {
        tokens.push(
            body(app.join(*user).await).await["tokenId"]
                .as_i64()
                .unwrap(),
        );
    }
    for (i, (user, token)) in users.iter().zip(&tokens).enumerate() {
        let polled = body(app.status(*user, *token).await).await;
        if i < 3 {
            assert_eq!(polled["status"], "ACTIVE", "user #{i}: {polled}");
        } else {
            assert_eq!(polled["status"], "WAITING", "user #{i}: {polled}");
            assert_eq!(
                polled["remainingWaitListCount"],
                (i - 3) as i64,
                "user #{i}: {polled}"
            );
        }
        assert_eq!(polled["queueId"], (i + 1) as i64);
    }
    // A waiting token cannot book.
    let waiting = app.get("/v1/concerts/1/schedules", Some(tokens[3])).await;
    assert_error(waiting, 401, "token_not_active", "token not active").await;
    // One payment frees one slot: exactly the next in line gets it.
    let concert = app.create_concert(4, 1_000).await;
    let held: Value = body(
        app.reserve(users[1], tokens[1], &concert, &concert.seats[..1])
            .await,
    )
    .await;
    let paid = app
        .pay(users[1], tokens[1], held["reservationId"].as_i64().unwrap())
        .await;
    assert_eq!(paid.status().as_u16(), 201);
    app.wait_for_status(users[3], tokens[3], "ACTIVE").await;
    let fifth = body(app.status(users[4], tokens[4]).await).await;
    assert_eq!(fifth["status"], "WAITING");
    assert_eq!(fifth["remainingWaitListCount"], 0);
    let spent = body(app.status(users[1], tokens[1]).await).await;
    assert_eq!(spent["status"], "EXPIRED");
    assert_error(
        app.get("/v1/concerts/1/schedules", Some(tokens[1])).await,
        401,
        "token_expired",
        "token expired",
    )
    .await;
}
on_both_stores!(admission_is_first_in_first_out_under_the_cap);

async fn active_tokens_expire_after_their_ttl_and_free_the_slot(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_active = 1;
        // Long enough that a poll on a loaded machine sees the second token while it is
        // ACTIVE (at 400 ms it once expired between two polls), short enough for the test.
        s.engine.active_ttl = std::time::Duration::from_millis(1500);
    })
    .await;
    let first = app.create_user(0).await;
    let second = app.create_user(0).await;
    let token = app.active_token(first).await;
    let waiting = body(app.join(second).await).await["tokenId"]
        .as_i64()
        .unwrap();
    app.wait_for_status(second, waiting, "ACTIVE").await;
    assert_eq!(
        body(app.status(first, token).await).await["status"],
        "EXPIRED"
    );
}
on_postgres!(active_tokens_expire_after_their_ttl_and_free_the_slot);

async fn waiters_who_stop_polling_leave_the_line(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_active = 1;
        s.engine.idle_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let users = app.create_users(3, 0).await;
    let _active = app.active_token(users[0]).await;
    let idle = body(app.join(users[1]).await).await["tokenId"]
        .as_i64()
        .unwrap();
    let polling = body(app.join(users[2]).await).await["tokenId"]
        .as_i64()
        .unwrap();
    assert_eq!(
        body(app.status(users[2], polling).await).await["remainingWaitListCount"],
        1
    );
    // Keep polling as user 2 only, until user 1 is dropped from the line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let polled = body(app.status(users[2], polling).await).await;
        if polled["remainingWaitListCount"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle waiter never left: {polled}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        body(app.status(users[1], idle).await).await["status"],
        "EXPIRED"
    );
    let rejoined = app.join(users[1]).await;
    assert_eq!(
        rejoined.status().as_u16(),
        201,
        "an abandoned waiter joins again at the back"
    );
}
on_postgres!(waiters_who_stop_polling_leave_the_line);

/// The status keeps the seed's fields, in the seed's order, and adds the wait estimate and the
/// poll pacing: 0 and the floor for ACTIVE, growing towards the back for WAITING.
async fn the_status_estimates_the_wait_and_paces_the_polls(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_active = 1;
        s.engine.idle_timeout = std::time::Duration::from_secs(600);
    })
    .await;
    let users = app.create_users(4, 0).await;
    let first = app.active_token(users[0]).await;
    let mut tokens = vec![first];
    for user in &users[1..] {
        tokens.push(
            body(app.join(*user).await).await["tokenId"]
                .as_i64()
                .unwrap(),
        );
    }
    let raw = app.status(users[0], first).await.text().await.unwrap();
    let keys: Vec<&str> = raw
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|k| k.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .collect();
    assert_eq!(
        keys,
        [
            "queueId",
            "joinAt",
            "status",
            "remainingWaitListCount",
            "expiredAt",
            "estimatedWaitSeconds",
            "pollAfterMs"
        ],
        "{raw}"
    );
    let active: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(active["status"], "ACTIVE");
    assert_eq!(active["estimatedWaitSeconds"], 0);
    assert_eq!(active["pollAfterMs"], 1000);
    // One admission was measured: WAITING estimates come from it and grow with the place.
    let mut last = (0, 0);
    for (user, token) in users[1..].iter().zip(&tokens[1..]) {
        let polled = body(app.status(*user, *token).await).await;
        assert_eq!(polled["status"], "WAITING", "{polled}");
        let wait = polled["estimatedWaitSeconds"].as_u64().expect("a number");
        let pause = polled["pollAfterMs"].as_u64().expect("a number");
        assert!(wait >= 1 && wait >= last.0, "{polled}");
        assert!(
            (1000..=30_000).contains(&pause) && pause >= last.1,
            "{polled}"
        );
        last = (wait, pause);
    }
    // Stop before the database is dropped, so no tick writes to a missing database.
    app.stop().await;
}
on_both_stores!(the_status_estimates_the_wait_and_paces_the_polls);

/// Nothing admitted yet: the estimate uses admit_per_sec; without it, it is null.
async fn without_a_measured_rate_the_estimate_falls_back_or_is_null(backend: Backend) {
    for (rate, expected) in [
        (4u32, vec![Some(1), Some(1), Some(1), Some(1), Some(2)]),
        (0, vec![None; 5]),
    ] {
        let db = TestDb::create(backend).await;
        let app = spawn_app_with(db, move |s| {
            // Nobody is let in: nothing is ever measured.
            s.engine.max_active = 0;
            s.engine.admit_per_sec = rate;
        })
        .await;
        let users = app.create_users(5, 0).await;
        for (i, user) in users.iter().enumerate() {
            let token = body(app.join(*user).await).await["tokenId"]
                .as_i64()
                .unwrap();
            let polled = body(app.status(*user, token).await).await;
            assert_eq!(polled["remainingWaitListCount"], i as u64);
            assert_eq!(
                polled["estimatedWaitSeconds"].as_u64(),
                expected[i],
                "rate {rate}, place {i}: {polled}"
            );
            assert!(polled["estimatedWaitSeconds"].is_null() == expected[i].is_none());
            assert_eq!(polled["pollAfterMs"], 1000, "near the front: the floor");
        }
        app.stop().await;
    }
}
on_postgres!(without_a_measured_rate_the_estimate_falls_back_or_is_null);

/// admit_per_sec over a few seconds of real ticks: the admissions stored in a window of the
/// server's clock match the rate (the pure line is tested exactly over a simulated minute).
async fn rate_based_admission_holds_its_rate(backend: Backend) {
    const RATE: u32 = 40;
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_active = 100_000;
        s.engine.admit_per_sec = RATE;
        s.engine.idle_timeout = std::time::Duration::from_secs(600);
    })
    .await;
    let users = app.create_users(300, 0).await;
    let joins = futures_util::future::join_all(users.iter().map(|u| app.join(*u))).await;
    assert!(joins.iter().all(|r| r.status().as_u16() == 201));
    // The line lasts about 7 s at 40/s: measure a 3-second window well inside it.
    tokio::time::sleep(std::time::Duration::from_millis(5_000)).await;
    let first = app
        .db
        .scalar("SELECT MIN(admitted_at_ms) FROM queue_tokens")
        .await;
    let (from, to) = (first + 1_000, first + 4_000);
    let admitted = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM queue_tokens WHERE admitted_at_ms >= {from} AND admitted_at_ms < {to}"
        ))
        .await;
    let expected = 3 * i64::from(RATE);
    assert!(
        (admitted - expected).abs() <= expected / 10,
        "admitted {admitted} in 3 s at {RATE}/s"
    );
    let waiting = app
        .db
        .scalar("SELECT COUNT(*) FROM queue_tokens WHERE status = 'WAITING'")
        .await;
    assert!(waiting > 0, "the line must not run dry inside the window");
    // Stop before the database is dropped, so no tick writes to a missing database.
    app.stop().await;
}
on_both_stores!(rate_based_admission_holds_its_rate);
