//! A restart rebuilds every actor from the database: nothing acknowledged is lost, after a
//! graceful stop (the persister drained) and after a kill -9 of the server process (nothing
//! drained: only what was committed before each answer).

use crate::helpers::*;
use crate::{on_both_stores, on_postgres};
use serde_json::json;
use std::time::Duration;

/// How the server goes down between the two halves of a test.
#[derive(Clone, Copy)]
pub enum Down {
    /// A graceful stop of the in-process server.
    Stop,
    /// SIGKILL of the server process.
    Kill,
}

impl Down {
    /// Starts the server the way it will go down: in-process, or as a killable process.
    pub async fn spawn(
        self,
        db: std::sync::Arc<TestDb>,
        tweak: impl FnOnce(&mut boxoffice::config::Settings),
        flags: &[&str],
    ) -> TestApp {
        match self {
            Down::Stop => spawn_app_with(db, tweak).await,
            Down::Kill => spawn_process_app(db, flags).await,
        }
    }

    pub async fn and_back(self, app: TestApp) -> TestApp {
        match self {
            Down::Stop => app.restart().await,
            Down::Kill => app.crash().await,
        }
    }
}

async fn holds_payments_balances_and_the_line_survive_a_restart(backend: Backend) {
    holds_payments_balances_and_the_line_come_back(backend, Down::Stop).await;
}
on_both_stores!(holds_payments_balances_and_the_line_survive_a_restart);

async fn holds_payments_balances_and_the_line_survive_a_kill_dash_nine(backend: Backend) {
    holds_payments_balances_and_the_line_come_back(backend, Down::Kill).await;
}
on_both_stores!(holds_payments_balances_and_the_line_survive_a_kill_dash_nine);

async fn holds_payments_balances_and_the_line_come_back(backend: Backend, down: Down) {
    let db = TestDb::create(backend).await;
    let app = down
        .spawn(db, |s| s.engine.max_active = 2, &["--max-active", "2"])
        .await;
    let users = app.create_users(5, 30_000).await;
    let (a, b, c, d, e) = (users[0], users[1], users[2], users[3], users[4]);
    let ta = app.active_token(a).await;
    let tb = app.active_token(b).await;
    let mut tokens = Vec::new();
    for user in [c, d, e] {
        tokens.push(
            body(app.join(user).await).await["tokenId"]
                .as_i64()
                .unwrap(),
        );
    }
    let (tc, td, te) = (tokens[0], tokens[1], tokens[2]);
    let concert = app.create_concert(4, 10_000).await;
    let held = body(app.reserve(a, ta, &concert, &concert.seats[0..1]).await).await
        ["reservationId"]
        .as_i64()
        .unwrap();
    let sold = body(app.reserve(b, tb, &concert, &concert.seats[1..2]).await).await
        ["reservationId"]
        .as_i64()
        .unwrap();
    assert_eq!(app.pay(b, tb, sold).await.status().as_u16(), 201);
    app.wait_for_status(c, tc, "ACTIVE").await;
    assert_eq!(
        body(app.recharge(a, json!(7_000)).await).await["currentAmount"],
        37_000
    );
    let d_before = body(app.status(d, td).await).await;
    let e_before = body(app.status(e, te).await).await;
    assert_eq!(e_before["remainingWaitListCount"], 1);

    let app = down.and_back(app).await;

    let map = app.seat_map(ta, &concert).await;
    assert_eq!(
        map.iter().map(|(_, free)| *free).collect::<Vec<_>>(),
        vec![false, false, true, true]
    );
    let pending = app
        .get(&format!("/v1/reservations/{held}?userId={a}"), Some(ta))
        .await;
    assert_eq!(body(pending).await["reservationStatus"], "PAYMENT_PENDING");
    assert_eq!(app.balance(a).await, 37_000);
    assert_eq!(app.balance(b).await, 20_000);
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM reservations WHERE id = {sold} AND status = 'PAID'"
            ))
            .await,
        1
    );
    assert_eq!(body(app.status(b, tb).await).await["status"], "EXPIRED");
    assert_eq!(body(app.status(c, tc).await).await["status"], "ACTIVE");
    let d_after = body(app.status(d, td).await).await;
    let e_after = body(app.status(e, te).await).await;
    for field in ["queueId", "status", "remainingWaitListCount", "joinAt"] {
        assert_eq!(d_after[field], d_before[field], "{field}");
        assert_eq!(e_after[field], e_before[field], "{field}");
    }
    // The line goes on where it stopped: a's payment admits d, not e.
    assert_eq!(app.pay(a, ta, held).await.status().as_u16(), 201);
    app.wait_for_status(d, td, "ACTIVE").await;
    assert_eq!(body(app.status(e, te).await).await["status"], "WAITING");
    app.stop().await;
}

async fn holds_that_expired_while_down_are_released_at_boot(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(100_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(2, 1_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    let (db, settings, clock) = app.stop().await;
    clock.advance(Duration::from_secs(301));
    let app = spawn_app_on(db, clock, move |s| *s = settings).await;
    let expired = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM reservations WHERE id = {id} AND status = 'EXPIRED'"
        ))
        .await;
    assert_eq!(expired, 1, "released before the port opened");
    assert!(app
        .seat_map(token, &concert)
        .await
        .iter()
        .all(|(_, free)| *free));
    assert_error(
        app.pay(user, token, id).await,
        400,
        "reservation_expired",
        "reservation expired",
    )
    .await;
}
on_both_stores!(holds_that_expired_while_down_are_released_at_boot);

/// A token its user spent and then replaced by joining again answers the same after a restart
/// as before it (API.md): 200 EXPIRED on the status poll, 401 `token_expired` elsewhere, and
/// 401 `invalid_token` to anyone else. The restart rebuilds the line from the database alone,
/// which holds only each user's latest token among its live rows.
async fn a_spent_and_replaced_token_answers_expired_across_a_restart(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| s.engine.max_active = 1).await;
    let users = app.create_users(2, 50_000).await;
    let (owner, stranger) = (users[0], users[1]);
    let spent = app.active_token(owner).await;
    let concert = app.create_concert(1, 10_000).await;
    let held = body(app.reserve(owner, spent, &concert, &concert.seats).await).await
        ["reservationId"]
        .as_i64()
        .unwrap();
    assert_eq!(app.pay(owner, spent, held).await.status().as_u16(), 201);
    let again = app.join(owner).await;
    assert_eq!(
        again.status().as_u16(),
        201,
        "a new token replaces the spent one"
    );
    let fresh = body(again).await["tokenId"].as_i64().unwrap();
    app.wait_for_status(owner, fresh, "ACTIVE").await;

    let polled = app.status(owner, spent).await;
    assert_eq!(polled.status().as_u16(), 200, "before the restart");
    let before = body(polled).await;
    assert_eq!(before["status"], "EXPIRED", "{before}");
    assert_spent_everywhere(&app, stranger, spent).await;

    let app = app.restart().await;

    let polled = app.status(owner, spent).await;
    assert_eq!(polled.status().as_u16(), 200, "after the restart");
    assert_eq!(
        body(polled).await,
        before,
        "the same answer as before the restart"
    );
    assert_spent_everywhere(&app, stranger, spent).await;
    assert_eq!(
        body(app.status(owner, fresh).await).await["status"],
        "ACTIVE"
    );
    app.stop().await;
}
on_both_stores!(a_spent_and_replaced_token_answers_expired_across_a_restart);

/// A payment's commit that takes long does not move its spent token's `expiredAt`: the
/// answer before a restart is the time the payment stored, so it is the same after one. (The
/// token in memory was once ended at the commit's arrival while the database kept the
/// payment's own time; a commit crossing a second boundary made the two answers differ.)
async fn a_slow_payment_spends_its_token_at_the_time_it_stores(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(50_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(1, 10_000).await;
    let held = body(app.reserve(user, token, &concert, &concert.seats).await).await
        ["reservationId"]
        .as_i64()
        .unwrap();
    crate::faults::slow_down(&app, "payments").await;
    let mut paid = Box::pin(app.pay(user, token, held));
    tokio::select! {
        _ = &mut paid => panic!("the payment's commit should be stalled"),
        _ = crate::faults::until_stalled(&app) => {}
    }
    // The payment was decided; its commit lands 5 s later by the server's clock (within the
    // token's active time, so no timer ends it first).
    app.clock.advance(Duration::from_secs(5));
    assert_eq!(paid.await.status().as_u16(), 201);
    let before = body(app.status(user, token).await).await;
    assert_eq!(before["status"], "EXPIRED", "{before}");

    let app = app.restart().await;
    let after = body(app.status(user, token).await).await;
    assert_eq!(after, before, "the same answer as before the restart");
    app.stop().await;
}
on_postgres!(a_slow_payment_spends_its_token_at_the_time_it_stores);

/// What every endpoint but the owner's status poll answers a spent token.
async fn assert_spent_everywhere(app: &TestApp, stranger: i64, spent: i64) {
    assert_error(
        app.get("/v1/concerts/1/schedules", Some(spent)).await,
        401,
        "token_expired",
        "token expired",
    )
    .await;
    assert_error(
        app.status(stranger, spent).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
}
