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
        s.engine.active_ttl = std::time::Duration::from_millis(400);
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
