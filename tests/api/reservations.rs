//! Reservations over HTTP: all-or-nothing holds, limits, reading, cancelling, expiry.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::json;
use std::time::Duration;

async fn a_reservation_holds_every_seat_and_answers_the_seed_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(4, 10_000).await;
    let response = app
        .reserve(user, token, &concert, &[concert.seats[2], concert.seats[0]])
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let r = body(response).await;
    assert!(r["reservationId"].as_i64().unwrap() >= 1);
    assert_eq!(r["concertId"], concert.id);
    assert_eq!(r["concertName"], "콘서트");
    assert_eq!(r["concertAt"], "2099-01-01T10:00:00");
    assert_eq!(
        r["seats"],
        json!([{ "seatNumber": 3, "price": 10000 }, { "seatNumber": 1, "price": 10000 }])
    );
    assert_eq!(r["totalPrice"], 20000);
    assert_eq!(r["reservationStatus"], "PAYMENT_PENDING");
    assert!(r["expiresAt"].is_string());
    let id = r["reservationId"].as_i64().unwrap();
    let live = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM holds WHERE reservation_id = {id} AND state = 'PENDING'"
        ))
        .await;
    assert_eq!(live, 2, "acknowledged means committed");
}
on_both_stores!(a_reservation_holds_every_seat_and_answers_the_seed_shape);

async fn a_hold_is_all_or_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.create_user(0).await;
    let bob = app.create_user(0).await;
    let (ta, tb) = (app.active_token(alice).await, app.active_token(bob).await);
    let concert = app.create_concert(4, 1_000).await;
    assert_eq!(
        app.reserve(alice, ta, &concert, &concert.seats[1..2])
            .await
            .status()
            .as_u16(),
        201
    );
    let clash = app.reserve(bob, tb, &concert, &concert.seats[0..3]).await;
    assert_error(clash, 400, "reservation_failed", "reservation failed").await;
    let map = app.seat_map(tb, &concert).await;
    assert_eq!(
        map.iter().filter(|(_, free)| !free).count(),
        1,
        "nothing of bob's request is held: {map:?}"
    );
}
on_both_stores!(a_hold_is_all_or_nothing);

async fn bad_reservation_requests_are_refused_clearly(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let other = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(8, 1_000).await;
    let other_concert = app.create_concert(2, 1_000).await;
    assert_error(
        app.reserve(user, token, &concert, &[]).await,
        400,
        "invalid_request",
        "",
    )
    .await;
    let twice = [concert.seats[0], concert.seats[0]];
    assert_error(
        app.reserve(user, token, &concert, &twice).await,
        400,
        "invalid_request",
        "",
    )
    .await;
    assert_error(
        app.reserve(user, token, &concert, &[999_999]).await,
        404,
        "seat_not_found",
        "seat not found",
    )
    .await;
    let foreign = [other_concert.seats[0]];
    assert_error(
        app.reserve(user, token, &concert, &foreign).await,
        404,
        "seat_not_found",
        "seat not found",
    )
    .await;
    assert_error(
        app.reserve(user, token, &concert, &concert.seats[0..5])
            .await,
        400,
        "seat_limit_exceeded",
        "seat limit exceeded",
    )
    .await;
    assert_eq!(
        app.reserve(user, token, &concert, &concert.seats[0..3])
            .await
            .status()
            .as_u16(),
        201
    );
    let more = app
        .reserve(user, token, &concert, &concert.seats[3..5])
        .await;
    assert_error(more, 400, "seat_limit_exceeded", "seat limit exceeded").await;
    assert_error(
        app.reserve(other, token, &concert, &concert.seats[6..7])
            .await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    assert_error(
        app.reserve(999, token, &concert, &concert.seats[6..7])
            .await,
        404,
        "user_not_found",
        "user not found",
    )
    .await;
    let wrong_schedule = json!({ "userId": user, "concertId": concert.id, "scheduleId": other_concert.schedule, "seatIds": [concert.seats[6]] });
    assert_error(
        app.post("/v1/reservations", Some(token), wrong_schedule)
            .await,
        404,
        "schedule_not_found",
        "schedule not found",
    )
    .await;
    let no_concert = json!({ "userId": user, "concertId": 999, "scheduleId": concert.schedule, "seatIds": [concert.seats[6]] });
    assert_error(
        app.post("/v1/reservations", Some(token), no_concert).await,
        404,
        "concert_not_found",
        "concert not found",
    )
    .await;
    let later = app
        .create_concert_with(2, 1_000, "2098-01-01T00:00:00", "2099-01-01T00:00:00")
        .await;
    assert_error(
        app.reserve(user, token, &later, &later.seats[..1]).await,
        400,
        "reservation_not_open",
        "reservation not open",
    )
    .await;
}
on_both_stores!(bad_reservation_requests_are_refused_clearly);

async fn a_reservation_can_be_read_and_cancelled_by_its_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let other = app.create_user(0).await;
    let token = app.active_token(user).await;
    let other_token = app.active_token(other).await;
    let concert = app.create_concert(2, 1_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    let read = app
        .get(&format!("/v1/reservations/{id}?userId={user}"), Some(token))
        .await;
    assert_eq!(body(read).await["reservationStatus"], "PAYMENT_PENDING");
    let theirs = app
        .get(
            &format!("/v1/reservations/{id}?userId={other}"),
            Some(other_token),
        )
        .await;
    assert_error(
        theirs,
        404,
        "reservation_not_found",
        "reservation not found",
    )
    .await;
    let cancel = app
        .client
        .delete(app.url(&format!("/v1/reservations/{id}?userId={user}")))
        .header("TOKEN-ID", token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 200);
    assert_eq!(body(cancel).await["reservationStatus"], "CANCELLED");
    assert!(app
        .seat_map(token, &concert)
        .await
        .iter()
        .all(|(_, free)| *free));
    let paid = app.pay(user, token, id).await;
    assert_error(paid, 409, "reservation_cancelled", "reservation cancelled").await;
    let voided = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM holds WHERE reservation_id = {id} AND state = 'VOIDED'"
        ))
        .await;
    assert_eq!(voided, 2);
    let missing = app
        .get(
            &format!("/v1/reservations/99999?userId={user}"),
            Some(token),
        )
        .await;
    assert_error(
        missing,
        404,
        "reservation_not_found",
        "reservation not found",
    )
    .await;
}
on_both_stores!(a_reservation_can_be_read_and_cancelled_by_its_owner);

async fn an_expired_hold_cannot_be_paid_and_frees_its_seats(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| s.engine.hold_ttl = Duration::from_millis(600)).await;
    let user = app.create_user(1_000_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(2, 1_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    assert!(app
        .seat_map(token, &concert)
        .await
        .iter()
        .all(|(_, free)| !free));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        app.seat_map(token, &concert)
            .await
            .iter()
            .all(|(_, free)| *free),
        "the timer released the seats"
    );
    assert_error(
        app.pay(user, token, id).await,
        400,
        "reservation_expired",
        "reservation expired",
    )
    .await;
    assert_eq!(app.balance(user).await, 1_000_000, "nothing debited");
    let status = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM reservations WHERE id = {id} AND status = 'EXPIRED'"
        ))
        .await;
    assert_eq!(status, 1);
    let read = app
        .get(&format!("/v1/reservations/{id}?userId={user}"), Some(token))
        .await;
    assert_eq!(body(read).await["reservationStatus"], "EXPIRED");
}
on_both_stores!(an_expired_hold_cannot_be_paid_and_frees_its_seats);

async fn a_payment_after_the_hold_time_loses_even_before_the_timer_fires(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(1_000_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(1, 1_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    // The controllable clock jumps past the 5-minute hold; the real timer has not fired.
    app.clock.advance(Duration::from_secs(301));
    assert_error(
        app.pay(user, token, id).await,
        400,
        "reservation_expired",
        "reservation expired",
    )
    .await;
    assert_eq!(app.balance(user).await, 1_000_000);
    assert!(app
        .seat_map(token, &concert)
        .await
        .iter()
        .all(|(_, free)| *free));
}
on_both_stores!(a_payment_after_the_hold_time_loses_even_before_the_timer_fires);
