//! Payments over HTTP: debit + paid reservation + payment + token expiry, atomically.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::json;

async fn a_payment_debits_sells_records_and_spends_the_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(50_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(2, 12_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    let paid = app.pay(user, token, id).await;
    assert_eq!(paid.status().as_u16(), 201);
    let paid = body(paid).await;
    assert!(paid["paymentId"].as_i64().unwrap() >= 1);
    assert_eq!(paid["amount"], 24_000);
    assert_eq!(paid["paymentStatus"], "COMPLETED");
    assert_eq!(app.balance(user).await, 26_000);
    let db = &app.db;
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM reservations WHERE id = {id} AND status = 'PAID'"
        ))
        .await,
        1
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM holds WHERE reservation_id = {id} AND state = 'POSTED'"
        ))
        .await,
        2
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM payments WHERE reservation_id = {id} AND amount = 24000"
        ))
        .await,
        1
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT balance FROM wallets WHERE user_id = {user}"
        ))
        .await,
        26_000
    );
    assert_eq!(db.scalar(&format!("SELECT COUNT(*) FROM ledger WHERE user_id = {user} AND kind = 'PAYMENT' AND balance_after = 26000")).await, 1);
    assert_eq!(
        db.scalar(&format!(
            "SELECT COUNT(*) FROM queue_tokens WHERE id = {token} AND status = 'EXPIRED'"
        ))
        .await,
        1
    );
    assert_eq!(
        body(app.status(user, token).await).await["status"],
        "EXPIRED"
    );
    assert_error(
        app.pay(user, token, id).await,
        401,
        "token_expired",
        "token expired",
    )
    .await;
    let read_token = app.active_token(user).await;
    let read = app
        .get(
            &format!("/v1/reservations/{id}?userId={user}"),
            Some(read_token),
        )
        .await;
    assert_eq!(body(read).await["reservationStatus"], "PAID");
    assert_error(
        app.pay(user, read_token, id).await,
        409,
        "reservation_already_paid",
        "reservation already paid",
    )
    .await;
    assert_eq!(app.balance(user).await, 26_000, "never a second debit");
}
on_both_stores!(a_payment_debits_sells_records_and_spends_the_token);

async fn not_enough_balance_debits_nothing_and_keeps_the_hold(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(5_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(1, 10_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    assert_error(
        app.pay(user, token, id).await,
        400,
        "not_enough_balance",
        "not enough balance",
    )
    .await;
    assert_eq!(app.balance(user).await, 5_000);
    assert!(
        app.seat_map(token, &concert)
            .await
            .iter()
            .all(|(_, free)| !free),
        "still held"
    );
    assert_eq!(
        app.recharge(user, json!(5_000)).await.status().as_u16(),
        200
    );
    assert_eq!(
        app.pay(user, token, id).await.status().as_u16(),
        201,
        "payable after a recharge"
    );
    assert_eq!(app.balance(user).await, 0);
}
on_both_stores!(not_enough_balance_debits_nothing_and_keeps_the_hold);

async fn payments_of_unknown_or_foreign_reservations_are_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.create_user(100_000).await;
    let bob = app.create_user(100_000).await;
    let (ta, tb) = (app.active_token(alice).await, app.active_token(bob).await);
    let concert = app.create_concert(2, 1_000).await;
    let id = body(app.reserve(alice, ta, &concert, &concert.seats[..1]).await).await
        ["reservationId"]
        .as_i64()
        .unwrap();
    assert_error(
        app.pay(bob, tb, id).await,
        404,
        "reservation_not_found",
        "reservation not found",
    )
    .await;
    assert_error(
        app.pay(bob, tb, 424_242).await,
        404,
        "reservation_not_found",
        "reservation not found",
    )
    .await;
    assert_error(
        app.pay(bob, ta, id).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    assert_error(
        app.pay(9_999, ta, id).await,
        404,
        "user_not_found",
        "user not found",
    )
    .await;
    let bad = app
        .post(
            &format!("/v1/payments/users/{alice}"),
            Some(ta),
            json!({ "reservationId": "one" }),
        )
        .await;
    assert_error(bad, 400, "invalid_request", "").await;
    assert_eq!(app.balance(bob).await, 100_000);
}
on_both_stores!(payments_of_unknown_or_foreign_reservations_are_404);
