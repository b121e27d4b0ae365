//! Cancelling a whole performance (API.md §12): every paid reservation refunded exactly once
//! (even when the operator's call is repeated at once), every hold released, nothing more
//! sold, and every balance still its ledger's.

use crate::audit::audit;
use crate::helpers::*;
use crate::on_both_stores;
use serde_json::Value;

async fn cancel(app: &TestApp, schedule: i64) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/v1/admin/schedules/{schedule}/cancel")))
        .header("X-Admin-Key", ADMIN_KEY)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, body(response).await)
}

async fn reserve_id(app: &TestApp, user: i64, token: i64, concert: &Concert, seats: &[i64]) -> i64 {
    let response = app.reserve(user, token, concert, seats).await;
    assert_eq!(response.status(), 201);
    body(response).await["reservationId"]
        .as_i64()
        .expect("an id")
}

async fn cancelling_refunds_every_paid_reservation_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(6, 1_000).await;
    let buyers = app.create_users(3, 10_000).await;
    let mut paid = Vec::new();
    for (n, &user) in buyers.iter().enumerate() {
        let token = app.active_token(user).await;
        let id = reserve_id(
            &app,
            user,
            token,
            &concert,
            &concert.seats[n * 2..n * 2 + 1],
        )
        .await;
        assert_eq!(app.pay(user, token, id).await.status(), 201);
        paid.push(id);
    }
    let holder = app.create_user(10_000).await;
    let holder_token = app.active_token(holder).await;
    let held = reserve_id(&app, holder, holder_token, &concert, &concert.seats[1..2]).await;

    // The operator's call twice at once: each paid reservation is refunded by exactly one.
    let (first, second) = tokio::join!(
        cancel(&app, concert.schedule),
        cancel(&app, concert.schedule)
    );
    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
    let refunded = first.1["reservationsRefunded"].as_i64().expect("a count")
        + second.1["reservationsRefunded"].as_i64().expect("a count");
    assert_eq!(refunded, 3);
    let released = first.1["holdsReleased"].as_i64().expect("a count")
        + second.1["holdsReleased"].as_i64().expect("a count");
    assert_eq!(released, 1);
    let (_, again) = cancel(&app, concert.schedule).await;
    assert_eq!(again["reservationsRefunded"], 0, "nothing refunded twice");

    for &user in &buyers {
        assert_eq!(app.balance(user).await, 10_000, "paid back");
        // Each refunded seat's ticket is void, in the list and at the door.
        let tickets = crate::tickets::tickets(&app, user).await;
        assert_eq!(tickets.len(), 1, "{tickets:?}");
        assert_eq!(tickets[0]["status"], "VOID", "{tickets:?}");
        let code = tickets[0]["code"].as_str().expect("a code");
        assert_error(
            crate::tickets::scan(&app, code, "north-1").await,
            410,
            "ticket_void",
            "ticket void",
        )
        .await;
    }
    let ids: Vec<String> = paid.iter().map(i64::to_string).collect();
    let ids = ids.join(",");
    let refunds = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM ledger l JOIN payments p ON p.id = l.payment_id
             WHERE l.kind = 'REFUND' AND p.reservation_id IN ({ids})"
        ))
        .await;
    assert_eq!(refunds, 3, "one REFUND per paid reservation");
    let statuses = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM reservations WHERE id IN ({ids}) AND status = 'REFUNDED'"
        ))
        .await;
    assert_eq!(statuses, 3);
    let voided = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM reservations WHERE id = {held} AND status = 'CANCELLED'"
        ))
        .await;
    assert_eq!(voided, 1, "the hold released");
    // Nothing more is sold.
    let response = app
        .reserve(holder, holder_token, &concert, &concert.seats[5..6])
        .await;
    assert_error(
        response,
        409,
        "performance_cancelled",
        "performance cancelled",
    )
    .await;
    let report = audit(&app, concert.schedule).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["sold"], 0);

    // And after a restart, still cancelled and nothing refunded again.
    let app = app.restart().await;
    let (_, after) = cancel(&app, concert.schedule).await;
    assert_eq!(after["reservationsRefunded"], 0);
    for &user in &buyers {
        assert_eq!(app.balance(user).await, 10_000);
    }
    let token = app.active_token(holder).await;
    let response = app
        .reserve(holder, token, &concert, &concert.seats[5..6])
        .await;
    assert_eq!(response.status(), 409);
}
on_both_stores!(cancelling_refunds_every_paid_reservation_exactly_once);
