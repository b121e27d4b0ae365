//! The audit (API.md §12): clean after a normal run; a row corrupted by hand makes exactly the
//! invariant it breaks not ok.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::Value;

pub async fn audit(app: &TestApp, schedule: i64) -> Value {
    let response = app
        .client
        .get(app.url(&format!("/v1/admin/schedules/{schedule}/audit")))
        .header("X-Admin-Key", ADMIN_KEY)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    body(response).await
}

/// The names of the checks that are not ok.
fn broken(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report
        .as_object()
        .expect("an object")
        .iter()
        .filter(|(_, v)| v.get("ok").is_some_and(|ok| ok == false))
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names
}

async fn the_audit_is_clean_after_a_normal_run_and_names_a_corrupted_row(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(3, 1_000).await;
    let (buyer, other) = (app.create_user(10_000).await, app.create_user(10_000).await);
    let token = app.active_token(buyer).await;
    // A hold that is cancelled, then its seat sold to someone else.
    let cancelled = body(
        app.reserve(buyer, token, &concert, &concert.seats[..1])
            .await,
    )
    .await["reservationId"]
        .as_i64()
        .expect("an id");
    let delete = app
        .client
        .delete(app.url(&format!("/v1/reservations/{cancelled}?userId={buyer}")))
        .header("TOKEN-ID", token.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(delete.status(), 200);
    let other_token = app.active_token(other).await;
    let sold = body(
        app.reserve(other, other_token, &concert, &concert.seats[..2])
            .await,
    )
    .await["reservationId"]
        .as_i64()
        .expect("an id");
    assert_eq!(app.pay(other, other_token, sold).await.status(), 201);
    assert_eq!(app.recharge(buyer, 500.into()).await.status(), 200);

    let clean = audit(&app, concert.schedule).await;
    assert_eq!(broken(&clean), Vec::<String>::new(), "{clean}");
    assert_eq!(clean["ok"], true);
    assert_eq!(
        (clean["sold"].as_i64(), clean["capacity"].as_i64()),
        (Some(2), Some(3))
    );

    // The cancelled hold marked PAID by hand: its seat is now in two paid reservations, and
    // it has no payment.
    app.db
        .execute(&format!(
            "UPDATE reservations SET status = 'PAID' WHERE id = {cancelled}"
        ))
        .await;
    let report = audit(&app, concert.schedule).await;
    assert_eq!(
        broken(&report),
        ["noSeatSoldTwice", "paidHaveOnePayment"],
        "{report}"
    );
    assert_eq!(report["noSeatSoldTwice"]["count"], 1);
    assert_eq!(report["ok"], false);

    // A balance moved without its ledger.
    app.db
        .execute(&format!(
            "UPDATE wallets SET balance = balance + 1 WHERE user_id = {buyer}"
        ))
        .await;
    let report = audit(&app, concert.schedule).await;
    assert_eq!(report["walletsMatchLedger"]["count"], 1, "{report}");
    assert_eq!(report["walletsMatchLedger"]["ok"], false);

    let response = app
        .client
        .get(app.url("/v1/admin/schedules/999/audit"))
        .header("X-Admin-Key", ADMIN_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    let response = app
        .get(
            &format!("/v1/admin/schedules/{}/audit", concert.schedule),
            None,
        )
        .await;
    assert_eq!(response.status(), 403);
}
on_both_stores!(the_audit_is_clean_after_a_normal_run_and_names_a_corrupted_row);
