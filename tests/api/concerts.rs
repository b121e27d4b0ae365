//! Concerts and seats over HTTP: upcoming schedules, seat maps, token checks.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::json;

async fn schedules_list_only_upcoming_ones_by_date(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let seats = json!([{ "seatNumber": 1, "price": 10 }]);
    let created = app
        .client
        .post(app.url("/v1/admin/concerts"))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "name": "콘서트", "schedules": [
            { "concertAt": "2099-09-04T10:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": seats },
            { "concertAt": "2001-01-01T10:00:00", "reservationAt": "2000-01-01T00:00:00", "seats": seats },
            { "concertAt": "2099-08-04T10:00:00", "reservationAt": "2099-07-19T10:00:00", "seats": seats },
        ] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created = body(created).await;
    let concert = created["concertId"].as_i64().unwrap();
    let ids: Vec<i64> = created["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scheduleId"].as_i64().unwrap())
        .collect();
    let listed = body(
        app.get(&format!("/v1/concerts/{concert}/schedules"), Some(token))
            .await,
    )
    .await;
    assert_eq!(listed["concertId"], concert);
    let events = listed["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "the past schedule is not listed: {listed}");
    assert_eq!(events[0]["scheduleId"], ids[2]);
    assert_eq!(events[0]["concertAt"], "2099-08-04T10:00:00");
    assert_eq!(events[0]["reservationAt"], "2099-07-19T10:00:00");
    assert_eq!(events[0]["availableSeatCount"], 1);
    assert_eq!(events[1]["scheduleId"], ids[0]);
}
on_both_stores!(schedules_list_only_upcoming_ones_by_date);

async fn concert_routes_need_an_active_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = app.create_concert(2, 100).await;
    let path = format!("/v1/concerts/{}/schedules", concert.id);
    assert_error(
        app.get(&path, None).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    assert_error(
        app.get(&path, Some(12345)).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
    let seats = format!(
        "/v1/concerts/{}/schedules/{}/seats",
        concert.id, concert.schedule
    );
    assert_error(
        app.get(&seats, None).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
}
on_both_stores!(concert_routes_need_an_active_token);

async fn unknown_concerts_and_schedules_are_404(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let one = app.create_concert(2, 100).await;
    let other = app.create_concert(2, 100).await;
    assert_error(
        app.get("/v1/concerts/999/schedules", Some(token)).await,
        404,
        "concert_not_found",
        "concert not found",
    )
    .await;
    let path = format!("/v1/concerts/999/schedules/{}/seats", one.schedule);
    assert_error(
        app.get(&path, Some(token)).await,
        404,
        "concert_not_found",
        "concert not found",
    )
    .await;
    let path = format!("/v1/concerts/{}/schedules/{}/seats", one.id, other.schedule);
    assert_error(
        app.get(&path, Some(token)).await,
        404,
        "schedule_not_found",
        "schedule not found",
    )
    .await;
    let path = format!("/v1/concerts/{}/schedules/999/seats", one.id);
    assert_error(
        app.get(&path, Some(token)).await,
        404,
        "schedule_not_found",
        "schedule not found",
    )
    .await;
}
on_both_stores!(unknown_concerts_and_schedules_are_404);

async fn a_seat_map_shows_held_seats_as_unavailable(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(3, 10_000).await;
    let path = format!(
        "/v1/concerts/{}/schedules/{}/seats",
        concert.id, concert.schedule
    );
    let listed = body(app.get(&path, Some(token)).await).await;
    assert_eq!(listed["concertId"], concert.id);
    assert_eq!(listed["concertAt"], "2099-01-01T10:00:00");
    assert_eq!(
        listed["seats"][0],
        json!({ "seatId": concert.seats[0], "seatNumber": 1, "seatStatus": "AVAILABLE", "seatPrice": 10000 })
    );
    assert_eq!(
        app.reserve(user, token, &concert, &concert.seats[1..2])
            .await
            .status()
            .as_u16(),
        201
    );
    let map = app.seat_map(token, &concert).await;
    assert_eq!(
        map,
        vec![
            (concert.seats[0], true),
            (concert.seats[1], false),
            (concert.seats[2], true)
        ]
    );
}
on_both_stores!(a_seat_map_shows_held_seats_as_unavailable);
