//! Refunds (API.md §12): a paid reservation's money back in one transaction with its
//! tickets voided and its seats freed; refused after a check-in, after a transfer, twice, or
//! too close to the concert; exactly one of two racing operations wins.

use crate::helpers::*;
use crate::on_both_stores;
use crate::tickets::{buyer, scan, tickets};
use serde_json::json;

async fn refund(app: &TestApp, user: i64, reservation: i64) -> reqwest::Response {
    app.client
        .post(app.url(&format!(
            "/v1/reservations/{reservation}/refund?userId={user}"
        )))
        .send()
        .await
        .expect("the server answers")
}

async fn transfer(app: &TestApp, user: i64, ticket: &serde_json::Value, to: i64) -> u16 {
    app.client
        .post(app.url(&format!(
            "/v1/tickets/{}/transfer?userId={user}",
            ticket["ticketId"]
        )))
        .json(&json!({ "toUserId": to }))
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

/// The wallet's balance is what its ledger's last row says it became.
async fn balance_matches_ledger(app: &TestApp, user: i64) {
    let wallet = app.balance(user).await;
    let last = app
        .db
        .scalar(&format!(
            "SELECT balance_after FROM ledger WHERE user_id = {user} ORDER BY id DESC LIMIT 1"
        ))
        .await;
    assert_eq!(wallet, last, "balance and ledger of user {user}");
}

async fn a_refund_credits_voids_and_frees_in_one_go(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user, reservation, concert) = buyer(&app, 2).await;
    let paid_balance = app.balance(user).await;
    let held = tickets(&app, user).await;
    let answer = refund(&app, user, reservation).await;
    assert_eq!(answer.status().as_u16(), 200);
    let answer = body(answer).await;
    assert_eq!(answer["reservationStatus"], "REFUNDED");
    assert_eq!(answer["amount"], 2_000);
    assert_eq!(app.balance(user).await, paid_balance + 2_000);
    balance_matches_ledger(&app, user).await;
    let db = &app.db;
    let refunded = format!(
        "SELECT COUNT(*) FROM reservations WHERE id = {reservation} AND status = 'REFUNDED'"
    );
    assert_eq!(db.scalar(&refunded).await, 1);
    let voided = format!(
        "SELECT COUNT(*) FROM tickets WHERE reservation_id = {reservation} AND status = 'VOID'"
    );
    assert_eq!(db.scalar(&voided).await, 2);
    let ledger = format!(
        "SELECT COUNT(*) FROM ledger WHERE user_id = {user} AND kind = 'REFUND' AND amount = 2000"
    );
    assert_eq!(db.scalar(&ledger).await, 1);
    // The service's own audit finds the refund (its ledger row names the payment refunded).
    let report = crate::audit::audit(&app, concert.schedule).await;
    assert_eq!(report["ok"], true, "{report}");
    // Void at the door, refused a second time, and the seats are on sale again.
    assert_error(
        scan(&app, held[0]["code"].as_str().unwrap(), "g").await,
        410,
        "ticket_void",
        "ticket void",
    )
    .await;
    assert_error(
        refund(&app, user, reservation).await,
        409,
        "refund_not_allowed",
        "refund not allowed",
    )
    .await;
    let other = app.create_user(1_000_000).await;
    let token = app.active_token(other).await;
    assert_eq!(
        app.reserve(other, token, &concert, &concert.seats)
            .await
            .status()
            .as_u16(),
        201
    );
}
on_both_stores!(a_refund_credits_voids_and_frees_in_one_go);

async fn a_refund_is_refused_after_a_check_in_a_transfer_or_too_late(backend: Backend) {
    let app = spawn_app_with(TestDb::create(backend).await, |s| {
        // Every test concert is in 2099: a refund window of a century closes them all.
        s.engine.refund_until = std::time::Duration::from_secs(100 * 366 * 86_400);
    })
    .await;
    let (user, reservation, _) = buyer(&app, 1).await;
    assert_error(
        refund(&app, user, reservation).await,
        409,
        "refund_not_allowed",
        "refund not allowed",
    )
    .await;
    let app = spawn_app(backend).await;
    let (user, reservation, _) = buyer(&app, 2).await;
    let held = tickets(&app, user).await;
    assert_eq!(
        scan(&app, held[0]["code"].as_str().unwrap(), "g")
            .await
            .status()
            .as_u16(),
        200
    );
    assert_error(
        refund(&app, user, reservation).await,
        409,
        "refund_not_allowed",
        "refund not allowed",
    )
    .await;
    let (user, reservation, _) = buyer(&app, 2).await;
    let friend = app.create_user(0).await;
    assert_eq!(
        transfer(&app, user, &tickets(&app, user).await[0], friend).await,
        200
    );
    assert_error(
        refund(&app, user, reservation).await,
        409,
        "refund_not_allowed",
        "refund not allowed",
    )
    .await;
    // Another user's reservation is not theirs to refund.
    let (_, reservation, _) = buyer(&app, 1).await;
    assert_eq!(
        refund(&app, friend, reservation).await.status().as_u16(),
        404
    );
}
on_both_stores!(a_refund_is_refused_after_a_check_in_a_transfer_or_too_late);

async fn racing_a_refund_lets_exactly_one_win(backend: Backend) {
    let app = spawn_app(backend).await;
    for round in 0..20 {
        let (user, reservation, _) = buyer(&app, 1).await;
        let ticket = tickets(&app, user).await[0].clone();
        let before = app.balance(user).await;
        let refunded = match round % 3 {
            // Refund against check-in.
            0 => {
                let (r, s) = tokio::join!(
                    refund(&app, user, reservation),
                    scan(&app, ticket["code"].as_str().unwrap(), "g")
                );
                let (r, s) = (r.status().as_u16(), s.status().as_u16());
                assert!(
                    (r == 200 && s == 410) || (r == 409 && s == 200),
                    "refund {r}, scan {s}"
                );
                r == 200
            }
            // Refund against transfer.
            1 => {
                let friend = app.create_user(0).await;
                let (r, t) = tokio::join!(
                    refund(&app, user, reservation),
                    transfer(&app, user, &ticket, friend)
                );
                let r = r.status().as_u16();
                assert!(
                    (r == 200 && t == 409) || (r == 409 && t == 200),
                    "refund {r}, transfer {t}"
                );
                r == 200
            }
            // Two refunds.
            _ => {
                let (a, b) = tokio::join!(
                    refund(&app, user, reservation),
                    refund(&app, user, reservation)
                );
                let mut codes = [a.status().as_u16(), b.status().as_u16()];
                codes.sort_unstable();
                assert_eq!(codes, [200, 409]);
                true
            }
        };
        let credited = app.balance(user).await - before;
        assert_eq!(credited, if refunded { 1_000 } else { 0 });
        balance_matches_ledger(&app, user).await;
    }
}
on_both_stores!(racing_a_refund_lets_exactly_one_win);

async fn a_refund_answered_before_a_kill_survives_it(backend: Backend) {
    let app = spawn_process_app(TestDb::create(backend).await, &[]).await;
    let (user, reservation, concert) = buyer(&app, 2).await;
    let held = tickets(&app, user).await;
    let after = app.balance(user).await + 2_000;
    assert_eq!(refund(&app, user, reservation).await.status().as_u16(), 200);
    let app = app.crash().await;
    assert_eq!(app.balance(user).await, after);
    assert_eq!(
        scan(&app, held[1]["code"].as_str().unwrap(), "g")
            .await
            .status()
            .as_u16(),
        410
    );
    assert_error(
        refund(&app, user, reservation).await,
        409,
        "refund_not_allowed",
        "refund not allowed",
    )
    .await;
    let other = app.create_user(1_000_000).await;
    let token = app.active_token(other).await;
    assert_eq!(
        app.reserve(other, token, &concert, &concert.seats)
            .await
            .status()
            .as_u16(),
        201
    );
}
on_both_stores!(a_refund_answered_before_a_kill_survives_it);

async fn a_retried_refund_key_replays_the_first_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user, reservation, _) = buyer(&app, 1).await;
    let before = app.balance(user).await;
    let send = || {
        app.client
            .post(app.url(&format!(
                "/v1/reservations/{reservation}/refund?userId={user}"
            )))
            .header("Idempotency-Key", "refund-once")
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let first = body(first).await;
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(again.headers()["Idempotent-Replayed"], "true");
    assert_eq!(body(again).await, first);
    // Credited once; another key is a second refund, refused.
    assert_eq!(app.balance(user).await, before + 1_000);
    let other = app
        .client
        .post(app.url(&format!(
            "/v1/reservations/{reservation}/refund?userId={user}"
        )))
        .header("Idempotency-Key", "refund-twice")
        .send()
        .await
        .unwrap();
    assert_error(other, 409, "refund_not_allowed", "refund not allowed").await;
    balance_matches_ledger(&app, user).await;
}
on_both_stores!(a_retried_refund_key_replays_the_first_answer);
