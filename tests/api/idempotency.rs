//! Idempotency keys and the ledger over HTTP.

use crate::helpers::*;
use crate::on_both_stores;
use crate::restart::Down;
use futures_util::future::join_all;
use serde_json::{json, Value};

async fn with_key(
    app: &TestApp,
    path: &str,
    token: Option<i64>,
    key: &str,
    body: Value,
) -> (u16, String, bool) {
    let mut request = app
        .client
        .post(app.url(path))
        .header("Idempotency-Key", key)
        .json(&body);
    if let Some(token) = token {
        request = request.header("TOKEN-ID", token);
    }
    let response = request.send().await.unwrap();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        response.status().as_u16(),
        response.text().await.unwrap(),
        replayed,
    )
}

async fn fifty_concurrent_replays_of_one_payment_debit_once_and_answer_identically(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let user = app.create_user(100_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(1, 30_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    let path = format!("/v1/payments/users/{user}");
    let answers = join_all((0..50).map(|_| {
        with_key(
            &app,
            &path,
            Some(token),
            "pay-once",
            json!({ "reservationId": id }),
        )
    }))
    .await;
    let (status, first, _) = &answers[0];
    assert_eq!(*status, 201, "{first}");
    for (s, text, _) in &answers {
        assert_eq!((s, text), (status, first), "every answer is the first one");
    }
    assert_eq!(app.balance(user).await, 70_000, "one debit");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM idempotency_keys").await,
        1
    );
    // A retry long after, with the token already spent by the payment, still replays.
    let (s, text, replayed) = with_key(
        &app,
        &path,
        Some(token),
        "pay-once",
        json!({ "reservationId": id }),
    )
    .await;
    assert_eq!((s, &text), (*status, first));
    assert!(replayed, "marked as a replay");
}
on_both_stores!(fifty_concurrent_replays_of_one_payment_debit_once_and_answer_identically);

/// The guarantee without a token to hide behind: a recharge spends nothing, so only the key
/// stops a concurrent replay from crediting again.
async fn fifty_concurrent_replays_of_one_recharge_credit_once_and_answer_identically(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let path = format!("/v1/balance/users/{user}/recharge");
    let answers = join_all(
        (0..50).map(|_| with_key(&app, &path, None, "credit-once", json!({ "amount": 700 }))),
    )
    .await;
    let (status, first, _) = &answers[0];
    assert_eq!(*status, 200, "{first}");
    for (s, text, _) in &answers {
        assert_eq!((s, text), (status, first), "every answer is the first one");
    }
    assert!(
        answers.iter().filter(|(_, _, replayed)| *replayed).count() >= 49,
        "all but one are replays"
    );
    assert_eq!(app.balance(user).await, 700, "one credit");
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM ledger WHERE user_id = {user} AND kind = 'RECHARGE'"
            ))
            .await,
        1
    );
    // Another key is another recharge.
    let (s, _, replayed) =
        with_key(&app, &path, None, "credit-twice", json!({ "amount": 700 })).await;
    assert_eq!((s, replayed), (200, false));
    assert_eq!(app.balance(user).await, 1_400);
}
on_both_stores!(fifty_concurrent_replays_of_one_recharge_credit_once_and_answer_identically);

async fn concurrent_reservations_with_one_key_hold_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(3, 1_000).await;
    let request = json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": [concert.seats[0]] });
    let answers = join_all((0..20).map(|_| {
        with_key(
            &app,
            "/v1/reservations",
            Some(token),
            "hold-once",
            request.clone(),
        )
    }))
    .await;
    assert!(answers
        .iter()
        .all(|(s, text, _)| *s == 201 && *text == answers[0].1));
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM reservations").await, 1);
}
on_both_stores!(concurrent_reservations_with_one_key_hold_once);

async fn a_key_reused_for_another_request_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let path = format!("/v1/balance/users/{user}/recharge");
    let (status, first, _) = with_key(&app, &path, None, "k-1", json!({ "amount": 500 })).await;
    assert_eq!(status, 200);
    // The same body with its keys in another order and spacing is the same request.
    let same = app
        .client
        .post(app.url(&path))
        .header("Idempotency-Key", "k-1")
        .header("Content-Type", "application/json")
        .body("{ \"amount\" : 500 }")
        .send()
        .await
        .unwrap();
    assert_eq!(same.text().await.unwrap(), first);
    let (status, text, _) = with_key(&app, &path, None, "k-1", json!({ "amount": 600 })).await;
    assert_eq!(status, 422, "{text}");
    let refused: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        refused,
        json!({ "code": 422, "error": "idempotency_key_reused", "message": "idempotency key reused" })
    );
    assert_eq!(app.balance(user).await, 500);
    let too_long = "k".repeat(256);
    let (status, _, _) = with_key(&app, &path, None, &too_long, json!({ "amount": 1 })).await;
    assert_eq!(status, 400);
    let (status, _, _) =
        with_key(&app, &path, None, &"k".repeat(255), json!({ "amount": 1 })).await;
    assert_eq!(status, 200, "255 characters are fine");
}
on_both_stores!(a_key_reused_for_another_request_is_refused);

async fn a_refused_attempt_does_not_use_up_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(1_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(1, 5_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    let path = format!("/v1/payments/users/{user}");
    let (status, _, _) = with_key(
        &app,
        &path,
        Some(token),
        "try",
        json!({ "reservationId": id }),
    )
    .await;
    assert_eq!(status, 400, "not enough balance");
    app.recharge(user, json!(4_000)).await;
    let (status, _, replayed) = with_key(
        &app,
        &path,
        Some(token),
        "try",
        json!({ "reservationId": id }),
    )
    .await;
    assert_eq!(status, 201);
    assert!(!replayed);
    assert_eq!(app.balance(user).await, 0);
}
on_both_stores!(a_refused_attempt_does_not_use_up_the_key);

async fn answers_are_replayed_after_a_restart(backend: Backend) {
    answers_are_replayed_after_coming_back(backend, Down::Stop).await;
}
on_both_stores!(answers_are_replayed_after_a_restart);

async fn answers_are_replayed_after_a_kill_dash_nine(backend: Backend) {
    answers_are_replayed_after_coming_back(backend, Down::Kill).await;
}
on_both_stores!(answers_are_replayed_after_a_kill_dash_nine);

async fn answers_are_replayed_after_coming_back(backend: Backend, down: Down) {
    let app = down.spawn(TestDb::create(backend).await, |_| {}, &[]).await;
    let user = app.create_user(0).await;
    let path = format!("/v1/balance/users/{user}/recharge");
    let (_, first, _) = with_key(&app, &path, None, "durable", json!({ "amount": 700 })).await;
    let app = down.and_back(app).await;
    let (status, again, replayed) =
        with_key(&app, &path, None, "durable", json!({ "amount": 700 })).await;
    assert_eq!((status, &again), (200, &first));
    assert!(replayed);
    assert_eq!(app.balance(user).await, 700);
    app.stop().await;
}

async fn the_ledger_lists_every_change_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    for amount in [100, 200, 300] {
        app.recharge(user, json!(amount)).await;
    }
    let concert = app.create_concert(1, 250).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    let payment = body(app.pay(user, token, id).await).await["paymentId"]
        .as_i64()
        .unwrap();
    let page = body(
        app.get(&format!("/v1/balance/users/{user}/history?limit=2"), None)
            .await,
    )
    .await;
    assert_eq!(page["userId"], user);
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["kind"], "PAYMENT");
    assert_eq!(entries[0]["amount"], 250);
    assert_eq!(entries[0]["balanceAfter"], 350);
    assert_eq!(entries[0]["paymentId"], payment);
    assert_eq!(entries[1]["kind"], "RECHARGE");
    assert_eq!(entries[1]["balanceAfter"], 600);
    assert!(entries[1]["paymentId"].is_null());
    let before = page["nextBefore"].as_i64().unwrap();
    let rest = body(
        app.get(
            &format!("/v1/balance/users/{user}/history?limit=2&before={before}"),
            None,
        )
        .await,
    )
    .await;
    let rest = rest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["balanceAfter"].as_i64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(rest, vec![300, 100]);
    let all = body(
        app.get(&format!("/v1/balance/users/{user}/history"), None)
            .await,
    )
    .await;
    assert!(all["nextBefore"].is_null());
    assert_eq!(
        all["entries"][0]["balanceAfter"],
        app.balance(user).await,
        "the newest entry is the balance"
    );
    assert_error(
        app.get(&format!("/v1/balance/users/{user}/history?limit=0"), None)
            .await,
        400,
        "invalid_request",
        "",
    )
    .await;
    assert_error(
        app.get(&format!("/v1/balance/users/{user}/history?limit=101"), None)
            .await,
        400,
        "invalid_request",
        "",
    )
    .await;
    assert_error(
        app.get("/v1/balance/users/999/history", None).await,
        404,
        "user_not_found",
        "user not found",
    )
    .await;
}
on_both_stores!(the_ledger_lists_every_change_newest_first);
