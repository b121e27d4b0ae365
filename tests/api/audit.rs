//! The audit (API.md §12): clean after a normal run, and after check-ins, a refund, a resale
//! and a transfer; a row corrupted by hand makes exactly the invariant it breaks not ok.

use crate::helpers::*;
use crate::on_both_stores;
use crate::tickets::{scan, tickets};
use serde_json::{json, Value};

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
    // it has no payment and no ticket.
    app.db
        .execute(&format!(
            "UPDATE reservations SET status = 'PAID' WHERE id = {cancelled}"
        ))
        .await;
    let report = audit(&app, concert.schedule).await;
    assert_eq!(
        broken(&report),
        [
            "noSeatSoldTwice",
            "paidHaveOnePayment",
            "paidHaveOneTicketPerSeat"
        ],
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

/// What [`after_the_sale`] did, for the tests that then corrupt one row of it.
struct Sale {
    app: TestApp,
    schedule: i64,
    /// The first buyer's paid reservation of two seats: the first ticket checked in, the
    /// second still valid.
    paid: i64,
    admitted: i64,
    valid: i64,
    /// The second buyer's reservation, refunded; its seat was then sold and checked in again.
    refunded: i64,
}

/// A user with a queue token who reserved and paid `seats`; answers (user, reservation).
async fn buy(app: &TestApp, concert: &Concert, seats: &[i64]) -> (i64, i64) {
    let user = app.create_user(100_000).await;
    let token = app.active_token(user).await;
    let reserved = body(app.reserve(user, token, concert, seats).await).await;
    let id = reserved["reservationId"].as_i64().expect("a reservation");
    assert_eq!(app.pay(user, token, id).await.status(), 201);
    (user, id)
}

/// The ticket of `user` on `seat`, with its id.
async fn ticket_on(app: &TestApp, user: i64, seat: i64) -> (i64, Value) {
    let ticket = tickets(app, user)
        .await
        .into_iter()
        .find(|t| t["seatId"] == seat)
        .expect("the user holds a ticket on the seat");
    (ticket["ticketId"].as_i64().expect("an id"), ticket)
}

async fn admit(app: &TestApp, ticket: &Value) {
    let code = ticket["code"].as_str().expect("a code");
    let answer = body(scan(app, code, "north-1").await).await;
    assert_eq!(answer["result"], "ADMITTED", "{answer}");
}

/// A sale with the whole life of a ticket in it, through the API only: two seats bought and
/// one checked in, one bought and refunded, its seat bought again and checked in, one bought
/// and transferred. The audit is clean after it.
async fn after_the_sale(backend: Backend) -> Sale {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(4, 1_000).await;
    let seats = &concert.seats;
    let (first, paid) = buy(&app, &concert, &seats[..2]).await;
    let (admitted, ticket) = ticket_on(&app, first, seats[0]).await;
    admit(&app, &ticket).await;
    let (valid, _) = ticket_on(&app, first, seats[1]).await;

    let (second, refunded) = buy(&app, &concert, &seats[2..3]).await;
    let refund = app
        .client
        .post(app.url(&format!(
            "/v1/reservations/{refunded}/refund?userId={second}"
        )))
        .header("Idempotency-Key", "audit-refund-1")
        .send()
        .await
        .expect("the server answers");
    assert_eq!(refund.status(), 200);
    let (third, _) = buy(&app, &concert, &seats[2..3]).await;
    admit(&app, &ticket_on(&app, third, seats[2]).await.1).await;

    let (giver, _) = buy(&app, &concert, &seats[3..]).await;
    let receiver = app.create_user(0).await;
    let (moved, _) = ticket_on(&app, giver, seats[3]).await;
    let transfer = app
        .client
        .post(app.url(&format!("/v1/tickets/{moved}/transfer?userId={giver}")))
        .json(&json!({ "toUserId": receiver }))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(transfer.status(), 200);
    assert!(tickets(&app, giver).await.is_empty());
    assert_eq!(ticket_on(&app, receiver, seats[3]).await.0, moved);

    let clean = audit(&app, concert.schedule).await;
    assert_eq!(broken(&clean), Vec::<String>::new(), "{clean}");
    assert_eq!(clean["ok"], true);
    for check in [
        "paidHaveOneTicketPerSeat",
        "unpaidHaveOnlyVoidTickets",
        "noTicketCheckedInTwice",
        "checkInsMatchStatus",
    ] {
        assert_eq!(clean[check], json!({ "ok": true, "count": 0 }), "{check}");
    }
    Sale {
        schedule: concert.schedule,
        app,
        paid,
        admitted,
        valid,
        refunded,
    }
}

/// Runs `sql` on the sale's database; asserts the audit then breaks exactly `check`, `count`
/// times.
async fn corrupted(sale: &Sale, sql: String, check: &str, count: i64) {
    sale.app.db.execute(&sql).await;
    let report = audit(&sale.app, sale.schedule).await;
    assert_eq!(broken(&report), [check], "after {sql}: {report}");
    assert_eq!(report[check]["count"], count, "after {sql}: {report}");
    assert_eq!(report["ok"], false);
}

async fn a_paid_seat_without_a_live_ticket_breaks_one_ticket_per_seat(backend: Backend) {
    let sale = after_the_sale(backend).await;
    let sql = format!(
        "UPDATE tickets SET status = 'VOID' WHERE id = {}",
        sale.valid
    );
    corrupted(&sale, sql, "paidHaveOneTicketPerSeat", 1).await;
    // A missing ticket is the same break, of the same reservation.
    let sql = format!("DELETE FROM tickets WHERE id = {}", sale.valid);
    corrupted(&sale, sql, "paidHaveOneTicketPerSeat", 1).await;
}
on_both_stores!(a_paid_seat_without_a_live_ticket_breaks_one_ticket_per_seat);

async fn a_valid_ticket_of_a_refunded_reservation_breaks_only_void_tickets(backend: Backend) {
    let sale = after_the_sale(backend).await;
    let sql = format!(
        "UPDATE tickets SET status = 'VALID' WHERE reservation_id = {}",
        sale.refunded
    );
    corrupted(&sale, sql, "unpaidHaveOnlyVoidTickets", 1).await;
    // A ticket of the paid reservation moved under a cancelled hold counts too.
    let sql = format!(
        "UPDATE reservations SET status = 'CANCELLED' WHERE id = {}",
        sale.paid
    );
    sale.app.db.execute(&sql).await;
    let report = audit(&sale.app, sale.schedule).await;
    assert_eq!(report["unpaidHaveOnlyVoidTickets"]["count"], 3, "{report}");
}
on_both_stores!(a_valid_ticket_of_a_refunded_reservation_breaks_only_void_tickets);

async fn a_seat_with_two_check_ins_breaks_no_ticket_checked_in_twice(backend: Backend) {
    let sale = after_the_sale(backend).await;
    // The refunded (void) ticket of the resold seat given a check-in: that seat let two in.
    let sql = format!(
        "UPDATE tickets SET checked_in_at_ms = 1, gate = 'south-2' WHERE reservation_id = {}",
        sale.refunded
    );
    corrupted(&sale, sql, "noTicketCheckedInTwice", 1).await;
}
on_both_stores!(a_seat_with_two_check_ins_breaks_no_ticket_checked_in_twice);

async fn a_status_that_disagrees_with_its_check_in_breaks_check_ins_match_status(backend: Backend) {
    let sale = after_the_sale(backend).await;
    // Checked in, then set VALID again: the door would admit it a second time.
    let sql = format!(
        "UPDATE tickets SET status = 'VALID' WHERE id = {}",
        sale.admitted
    );
    corrupted(&sale, sql, "checkInsMatchStatus", 1).await;
    // Said CHECKED_IN with no scan on record.
    let sql = format!(
        "UPDATE tickets SET status = 'CHECKED_IN' WHERE id = {}",
        sale.valid
    );
    corrupted(&sale, sql, "checkInsMatchStatus", 2).await;
}
on_both_stores!(a_status_that_disagrees_with_its_check_in_breaks_check_ins_match_status);
