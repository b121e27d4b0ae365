//! The wallet over HTTP: recharge limits, balance reads.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::json;

async fn recharges_add_up_and_are_durable(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let first = app.recharge(user, json!(50_000)).await;
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(
        body(first).await,
        json!({ "userId": user, "currentAmount": 50_000 })
    );
    assert_eq!(
        body(app.recharge(user, json!(40_000)).await).await["currentAmount"],
        90_000
    );
    assert_eq!(app.balance(user).await, 90_000);
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT balance FROM wallets WHERE user_id = {user}"
            ))
            .await,
        90_000
    );
    let ledger = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM ledger WHERE user_id = {user} AND kind = 'RECHARGE'"
        ))
        .await;
    assert_eq!(ledger, 2);
}
on_both_stores!(recharges_add_up_and_are_durable);

async fn invalid_recharge_amounts_are_refused(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_recharge = boxoffice::domain::Money::new(1_000_000).unwrap()
    })
    .await;
    let user = app.create_user(0).await;
    for amount in [
        json!(0),
        json!(-1),
        json!(1_000_001),
        json!(1.5),
        json!(1e30),
        json!(i64::MIN),
    ] {
        let response = app.recharge(user, amount.clone()).await;
        assert_error(
            response,
            400,
            "invalid_recharge_amount",
            "invalid recharge amount",
        )
        .await;
    }
    for amount in [json!("100"), json!(null), json!([1])] {
        assert_error(app.recharge(user, amount).await, 400, "invalid_request", "").await;
    }
    assert_eq!(app.balance(user).await, 0);
    assert_error(
        app.recharge(999, json!(10)).await,
        404,
        "user_not_found",
        "user not found",
    )
    .await;
    assert_error(
        app.get("/v1/balance/users/999", None).await,
        404,
        "user_not_found",
        "user not found",
    )
    .await;
}
on_both_stores!(invalid_recharge_amounts_are_refused);

async fn a_balance_cannot_overflow(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| {
        s.engine.max_recharge = boxoffice::domain::Money::new(i64::MAX).unwrap()
    })
    .await;
    let user = app.create_user(i64::MAX - 10).await;
    assert_error(
        app.recharge(user, json!(11)).await,
        400,
        "invalid_recharge_amount",
        "invalid recharge amount",
    )
    .await;
    assert_eq!(app.balance(user).await, i64::MAX - 10);
}
on_both_stores!(a_balance_cannot_overflow);
