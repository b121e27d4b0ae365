//! The waiting list (API.md §12): freed seats go to the list in join order, an unpaid offer
//! passes on, nothing freed reaches general sale while entries wait, and all of it survives a
//! kill -9.

use crate::helpers::*;
use crate::on_both_stores;
use futures_util::future::join_all;
use reqwest::Response;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub fn entry_path(concert: &Concert, user: i64) -> String {
    format!(
        "/v1/concerts/{}/schedules/{}/waitlist/users/{user}",
        concert.id, concert.schedule
    )
}

pub async fn join_list(app: &TestApp, concert: &Concert, user: i64, seats: i64) -> Response {
    app.post(&entry_path(concert, user), None, json!({ "seats": seats }))
        .await
}

pub async fn entry(app: &TestApp, concert: &Concert, user: i64) -> (u16, Value) {
    let response = app.get(&entry_path(concert, user), None).await;
    let status = response.status().as_u16();
    (status, body(response).await)
}

/// Sells `concert` out: one pending hold of one seat per new user. Returns (user, token,
/// reservation) per seat.
pub async fn hold_every_seat(app: &TestApp, concert: &Concert) -> Vec<(i64, i64, i64)> {
    let mut holders = Vec::new();
    for &seat in &concert.seats {
        let user = app.create_user(1_000_000).await;
        let token = app.active_token(user).await;
        let held = app.reserve(user, token, concert, &[seat]).await;
        assert_eq!(held.status(), 201);
        let id = body(held).await["reservationId"].as_i64().expect("an id");
        holders.push((user, token, id));
    }
    holders
}

pub async fn cancel_hold(app: &TestApp, user: i64, token: i64, reservation: i64) {
    let response = app
        .client
        .delete(app.url(&format!("/v1/reservations/{reservation}?userId={user}")))
        .header("TOKEN-ID", token.to_string())
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
}

/// Polls `user`'s entry until its status is `status` (within 5 s).
async fn wait_for_entry(app: &TestApp, concert: &Concert, user: i64, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, e) = entry(app, concert, user).await;
        if code == 200 && e["status"] == status {
            return e;
        }
        assert!(Instant::now() < deadline, "entry of {user}: {code} {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_join_waits_its_turn_and_is_refused_while_seats_are_on_sale(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(2, 1_000).await;
    let user = app.create_user(0).await;
    assert_error(
        join_list(&app, &concert, user, 1).await,
        409,
        "seats_on_sale",
        "seats are on sale: hold them instead",
    )
    .await;
    hold_every_seat(&app, &concert).await;
    let joined = join_list(&app, &concert, user, 1).await;
    assert_eq!(joined.status(), 201);
    assert_eq!(
        body(joined).await,
        json!({ "position": 1, "status": "WAITING", "seats": 1 })
    );
    assert_error(
        join_list(&app, &concert, user, 1).await,
        409,
        "waitlist_already_joined",
        "already on the waiting list",
    )
    .await;
    let other = app.create_user(0).await;
    let response = join_list(&app, &concert, other, 0).await;
    assert_eq!(response.status(), 400);
    assert_eq!(body(response).await["error"], "invalid_request");
    let response = app
        .client
        .delete(app.url(&entry_path(&concert, user)))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_error(
        app.get(&entry_path(&concert, user), None).await,
        404,
        "waitlist_entry_not_found",
        "waitlist entry not found",
    )
    .await;
}
on_both_stores!(a_join_waits_its_turn_and_is_refused_while_seats_are_on_sale);

async fn freed_seats_go_in_list_order_under_contention(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(6, 1_000).await;
    let holders = hold_every_seat(&app, &concert).await;
    let waiters = app.create_users(30, 1_000_000).await;
    // Thirty joins at once: the list decides their order, and says it in each answer.
    let (app_ref, on) = (&app, &concert);
    let joins = join_all(
        waiters
            .iter()
            .map(|&u| async move { (u, join_list(app_ref, on, u, 1).await) }),
    )
    .await;
    let mut position = HashMap::new();
    for (user, response) in joins {
        assert_eq!(response.status(), 201);
        let at = body(response).await["position"]
            .as_i64()
            .expect("a position");
        position.insert(user, at);
    }
    let mut seen: Vec<i64> = position.values().copied().collect();
    seen.sort();
    assert_eq!(seen, (1..=30).collect::<Vec<_>>(), "one place each");
    // Every seat freed at once.
    join_all(
        holders
            .iter()
            .map(|&(u, t, r)| async move { cancel_hold(app_ref, u, t, r).await }),
    )
    .await;
    let mut offered: Vec<i64> = Vec::new();
    for &user in &waiters {
        let (code, e) = entry(&app, &concert, user).await;
        assert_eq!(code, 200);
        if e["status"] == "OFFERED" {
            offered.push(position[&user]);
            assert!(e["reservationId"].as_i64().is_some(), "{e}");
            assert!(e["expiresAt"].as_str().is_some(), "{e}");
        }
    }
    offered.sort();
    assert_eq!(
        offered,
        (1..=6).collect::<Vec<_>>(),
        "the first six, in order"
    );
}
on_both_stores!(freed_seats_go_in_list_order_under_contention);

async fn an_expired_offer_passes_on_and_an_offer_is_paid_without_a_token(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| s.engine.offer_ttl = Duration::from_millis(700)).await;
    let concert = app.create_concert(1, 1_000).await;
    let holders = hold_every_seat(&app, &concert).await;
    let (first, second) = (app.create_user(5_000).await, app.create_user(5_000).await);
    assert_eq!(join_list(&app, &concert, first, 1).await.status(), 201);
    assert_eq!(join_list(&app, &concert, second, 1).await.status(), 201);
    let (u, t, r) = holders[0];
    cancel_hold(&app, u, t, r).await;
    let offer = wait_for_entry(&app, &concert, first, "OFFERED").await;
    assert_eq!(entry(&app, &concert, second).await.1["status"], "WAITING");
    // The first never pays: the offer passes to the second.
    let passed = wait_for_entry(&app, &concert, second, "OFFERED").await;
    assert_ne!(passed["reservationId"], offer["reservationId"]);
    assert_eq!(
        entry(&app, &concert, first).await.0,
        404,
        "the expired offer left"
    );
    let expired = offer["reservationId"].as_i64().expect("an id");
    let status = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM reservations WHERE id = {expired} AND status = 'EXPIRED'"
        ))
        .await;
    assert_eq!(status, 1);
    // Paid with no TOKEN-ID: the offer is the admission.
    let id = passed["reservationId"].as_i64().expect("an id");
    let paid = app
        .post(
            &format!("/v1/payments/users/{second}"),
            None,
            json!({ "reservationId": id }),
        )
        .await;
    assert_eq!(paid.status(), 201);
    assert_eq!(app.balance(second).await, 4_000);
    let deadline = Instant::now() + Duration::from_secs(5);
    while entry(&app, &concert, second).await.0 != 404 {
        assert!(Instant::now() < deadline, "a paid offer leaves the list");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Without an offer, a payment still needs its token.
    let stranger = app.create_user(5_000).await;
    assert_error(
        app.post(
            &format!("/v1/payments/users/{stranger}"),
            None,
            json!({ "reservationId": id }),
        )
        .await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
}
on_both_stores!(an_expired_offer_passes_on_and_an_offer_is_paid_without_a_token);

async fn no_freed_seat_reaches_general_sale_while_entries_wait(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(8, 1_000).await;
    let holders = hold_every_seat(&app, &concert).await;
    // Two seats each: every other seat freed fits nobody until the next one comes, and sits
    // free meanwhile, the list's.
    let waiters = app.create_users(4, 1_000_000).await;
    for &w in &waiters {
        assert_eq!(join_list(&app, &concert, w, 2).await.status(), 201);
    }
    let mut buyers = Vec::new();
    for _ in 0..6 {
        let user = app.create_user(1_000_000).await;
        buyers.push((user, app.active_token(user).await));
    }
    // Buyers hammer every seat while the holds are cancelled; bounded in time and count.
    let stop = Instant::now() + Duration::from_millis(1_500);
    let hammer = join_all(buyers.iter().map(|&(user, token)| {
        let (app, concert) = (&app, &concert);
        async move {
            let mut won = 0;
            for round in 0..2_000usize {
                if Instant::now() > stop {
                    break;
                }
                let seat = concert.seats[round % concert.seats.len()];
                if app.reserve(user, token, concert, &[seat]).await.status() == 201 {
                    won += 1;
                }
            }
            won
        }
    }));
    let free = async {
        for &(u, t, r) in &holders {
            cancel_hold(&app, u, t, r).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (won, ()) = tokio::join!(hammer, free);
    assert_eq!(
        won.iter().sum::<i32>(),
        0,
        "a freed seat reached general sale"
    );
    for &w in &waiters {
        assert_eq!(entry(&app, &concert, w).await.1["status"], "OFFERED");
    }
}
on_both_stores!(no_freed_seat_reaches_general_sale_while_entries_wait);

async fn the_list_and_its_offers_survive_kill_9(backend: Backend) {
    let app = spawn_process_app(TestDb::create(backend).await, &["--offer-ttl-secs", "600"]).await;
    let concert = app.create_concert(2, 1_000).await;
    let holders = hold_every_seat(&app, &concert).await;
    let users = app.create_users(3, 5_000).await;
    for &u in &users {
        assert_eq!(join_list(&app, &concert, u, 1).await.status(), 201);
    }
    let (u, t, r) = holders[0];
    cancel_hold(&app, u, t, r).await;
    let offer = entry(&app, &concert, users[0]).await.1;
    assert_eq!(offer["status"], "OFFERED");
    let app = app.crash().await;
    let again = entry(&app, &concert, users[0]).await.1;
    for field in ["status", "position", "reservationId", "expiresAt"] {
        assert_eq!(again[field], offer[field], "{field}");
    }
    let (code, waiting) = entry(&app, &concert, users[2]).await;
    assert_eq!((code, waiting["position"].as_i64()), (200, Some(3)));
    // The list is still the list: the next freed seat goes to the second, not to sale.
    let (u, t, r) = holders[1];
    cancel_hold(&app, u, t, r).await;
    assert_eq!(entry(&app, &concert, users[1]).await.1["status"], "OFFERED");
    assert_eq!(entry(&app, &concert, users[2]).await.1["status"], "WAITING");
}
on_both_stores!(the_list_and_its_offers_survive_kill_9);

async fn in_jwt_mode_an_entry_is_its_owners(backend: Backend) {
    let app = spawn_jwt_app(backend, |_| {}).await;
    let concert = app.create_concert(1, 1_000).await;
    let holder = app.create_user(5_000).await;
    let bearer = mint(holder);
    let token = app.active_token_as(holder, &bearer).await;
    let request = json!({ "userId": holder, "concertId": concert.id,
        "scheduleId": concert.schedule, "seatIds": concert.seats });
    let held = app
        .send(
            reqwest::Method::POST,
            "/v1/reservations",
            Some(&bearer),
            Some(token),
            Some(&request),
        )
        .await;
    assert_eq!(held.status(), 201);
    let user = app.create_user(5_000).await;
    let path = entry_path(&concert, user);
    let seats = json!({ "seats": 1 });
    let none = app
        .send(reqwest::Method::POST, &path, None, None, Some(&seats))
        .await;
    assert_eq!(none.status(), 401, "no bearer");
    let other = mint(holder);
    let theirs = app
        .send(
            reqwest::Method::POST,
            &path,
            Some(&other),
            None,
            Some(&seats),
        )
        .await;
    assert_eq!(theirs.status(), 403, "another user's bearer");
    let own = app
        .send(
            reqwest::Method::POST,
            &path,
            Some(&mint(user)),
            None,
            Some(&seats),
        )
        .await;
    assert_eq!(own.status(), 201);
    let read = app
        .send(reqwest::Method::GET, &path, Some(&other), None, None)
        .await;
    assert_eq!(read.status(), 403);
}
on_both_stores!(in_jwt_mode_an_entry_is_its_owners);

async fn a_seat_kept_for_the_list_is_not_shown_for_sale(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(2, 1_000).await;
    let holders = hold_every_seat(&app, &concert).await;
    let waiter = app.create_user(5_000).await;
    assert_eq!(join_list(&app, &concert, waiter, 2).await.status(), 201);
    let (u, t, r) = holders[0];
    cancel_hold(&app, u, t, r).await;
    // One seat is free, the entry wants two: the seat waits for the list, not for buyers.
    assert_eq!(entry(&app, &concert, waiter).await.1["status"], "WAITING");
    let buyer = app.create_user(5_000).await;
    let token = app.active_token(buyer).await;
    let map = app.seat_map(token, &concert).await;
    assert!(map.iter().all(|(_, free)| !free), "{map:?}");
    let list = app
        .get(
            &format!("/v1/concerts/{}/schedules", concert.id),
            Some(token),
        )
        .await;
    assert_eq!(body(list).await["events"][0]["availableSeatCount"], 0);
    // Once nobody waits, the seat is back on sale.
    let leave = app
        .client
        .delete(app.url(&entry_path(&concert, waiter)))
        .send()
        .await
        .expect("sent");
    assert_eq!(leave.status(), 200);
    let map = app.seat_map(token, &concert).await;
    assert_eq!(map.iter().filter(|(_, free)| *free).count(), 1, "{map:?}");
}
on_both_stores!(a_seat_kept_for_the_list_is_not_shown_for_sale);
