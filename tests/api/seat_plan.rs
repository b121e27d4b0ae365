//! Seat plans: a seat created with `grade`, `row`, `x` and `y` shows them in the seat map after
//! the seed's fields; a seat without them answers the seed's bytes; bad labels are refused
//! whole; the labels survive a restart.

use crate::helpers::*;
use crate::restart::Down;
use crate::{on_both_stores, on_postgres};
use serde_json::{json, Value};

/// Creates a concert with one open schedule of `seats` (admin route bodies) and returns it.
async fn create_planned(app: &TestApp, seats: Value) -> Concert {
    let response = post_concert(app, seats).await;
    assert_eq!(response.status().as_u16(), 201);
    let created = body(response).await;
    let schedule = &created["schedules"][0];
    Concert {
        id: created["concertId"].as_i64().expect("a concert id"),
        schedule: schedule["scheduleId"].as_i64().expect("a schedule id"),
        seats: schedule["seatIds"]
            .as_array()
            .expect("seat ids")
            .iter()
            .filter_map(Value::as_i64)
            .collect(),
    }
}

async fn post_concert(app: &TestApp, seats: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/admin/concerts"))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "name": "plan", "schedules": [{
            "concertAt": "2099-01-01T20:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": seats
        }] }))
        .send()
        .await
        .expect("request sent")
}

/// The seat map's body exactly as sent.
async fn seat_map_text(app: &TestApp, token: i64, concert: &Concert) -> String {
    let path = format!(
        "/v1/concerts/{}/schedules/{}/seats",
        concert.id, concert.schedule
    );
    let response = app.get(&path, Some(token)).await;
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("a body")
}

fn planned_seats() -> Value {
    json!([
        { "seatNumber": 2, "price": 150000, "grade": "VIP", "row": "A", "x": 1, "y": 0 },
        { "seatNumber": 1, "price": 150000, "grade": "VIP", "row": "A", "x": 0, "y": 0 },
        { "seatNumber": 3, "price": 80000 },
        { "seatNumber": 4, "price": 80000, "grade": "S \"front\" \\ 석", "x": 999, "y": 999 },
        { "seatNumber": 5, "price": 80000, "row": "AA", "grade": null },
    ])
}

/// The seats of the map after `planned_seats`, by seat number, with the concert's seat ids.
fn expected_seats(concert: &Concert, sold: &[usize]) -> String {
    let [two, one, three, four, five] = concert.seats[..] else {
        panic!("five seats were created");
    };
    let status = |i: usize| {
        if sold.contains(&i) {
            "UNAVAILABLE"
        } else {
            "AVAILABLE"
        }
    };
    [
        format!(r#"{{"seatId":{one},"seatNumber":1,"seatStatus":"{}","seatPrice":150000,"seatGrade":"VIP","row":"A","x":0,"y":0}}"#, status(1)),
        format!(r#"{{"seatId":{two},"seatNumber":2,"seatStatus":"{}","seatPrice":150000,"seatGrade":"VIP","row":"A","x":1,"y":0}}"#, status(2)),
        format!(r#"{{"seatId":{three},"seatNumber":3,"seatStatus":"{}","seatPrice":80000}}"#, status(3)),
        format!(r#"{{"seatId":{four},"seatNumber":4,"seatStatus":"{}","seatPrice":80000,"seatGrade":"S \"front\" \\ 석","x":999,"y":999}}"#, status(4)),
        format!(r#"{{"seatId":{five},"seatNumber":5,"seatStatus":"{}","seatPrice":80000,"row":"AA"}}"#, status(5)),
    ]
    .join(",")
}

async fn the_seat_map_shows_each_seats_plan_labels_after_the_seed_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = create_planned(&app, planned_seats()).await;
    let user = app.create_user(1_000_000).await;
    let token = app.active_token(user).await;
    let text = seat_map_text(&app, token, &concert).await;
    let seats = expected_seats(&concert, &[]);
    assert!(
        text.starts_with(&format!(
            r#"{{"concertId":{},"concertAt":"2099-01-01T20:00:00","seats":["#,
            concert.id
        )),
        "{text}"
    );
    assert!(text.ends_with(&format!("{seats}]}}")), "{text}");
    // A hold changes the status, and nothing of the plan.
    let held = app
        .reserve(user, token, &concert, &concert.seats[0..1])
        .await;
    assert_eq!(held.status().as_u16(), 201);
    let text = seat_map_text(&app, token, &concert).await;
    assert!(
        text.ends_with(&format!("{}]}}", expected_seats(&concert, &[2]))),
        "{text}"
    );
}
on_both_stores!(the_seat_map_shows_each_seats_plan_labels_after_the_seed_fields);

async fn a_concert_without_plan_labels_answers_the_seed_bytes(backend: Backend) {
    let app = spawn_app(backend).await;
    let concert = create_planned(
        &app,
        json!([{ "seatNumber": 7, "price": 10000 }, { "seatNumber": 8, "price": 12000 }]),
    )
    .await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let (a, b) = (concert.seats[0], concert.seats[1]);
    assert_eq!(
        seat_map_text(&app, token, &concert).await,
        format!(
            r#"{{"concertId":{},"concertAt":"2099-01-01T20:00:00","seats":[{{"seatId":{a},"seatNumber":7,"seatStatus":"AVAILABLE","seatPrice":10000}},{{"seatId":{b},"seatNumber":8,"seatStatus":"AVAILABLE","seatPrice":12000}}]}}"#,
            concert.id
        )
    );
}
on_both_stores!(a_concert_without_plan_labels_answers_the_seed_bytes);

async fn each_refused_plan_label_is_a_400_and_creates_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let seat = |extra: Value| {
        let mut seat = json!({ "seatNumber": 9, "price": 1000 });
        for (k, v) in extra.as_object().expect("an object") {
            seat[k] = v.clone();
        }
        // A good seat first: nothing of the schedule may stay behind the bad one.
        json!([{ "seatNumber": 1, "price": 1000, "grade": "R", "x": 0, "y": 0 }, seat])
    };
    let cases = [
        (
            json!({ "grade": "" }),
            "seat 9: grade must be 1 to 32 characters",
        ),
        (
            json!({ "grade": "G".repeat(33) }),
            "seat 9: grade must be 1 to 32 characters",
        ),
        (
            json!({ "row": "" }),
            "seat 9: row must be 1 to 8 characters",
        ),
        (
            json!({ "row": "열".repeat(9) }),
            "seat 9: row must be 1 to 8 characters",
        ),
        (
            json!({ "grade": "V\u{0}P" }),
            "seat 9: grade must not contain control characters",
        ),
        (
            json!({ "row": "A\nB" }),
            "seat 9: row must not contain control characters",
        ),
        (
            json!({ "row": "\u{9b}" }),
            "seat 9: row must not contain control characters",
        ),
        (json!({ "x": 3 }), "seat 9: x and y must be given together"),
        (json!({ "y": 3 }), "seat 9: x and y must be given together"),
        (json!({ "x": -1, "y": 0 }), "seat 9: x must be 0 to 999"),
        (json!({ "x": 0, "y": 1000 }), "seat 9: y must be 0 to 999"),
        (
            json!({ "x": 0, "y": 9_223_372_036_854_775_807_i64 }),
            "seat 9: y must be 0 to 999",
        ),
    ];
    for (extra, message) in cases {
        let refused = post_concert(&app, seat(extra)).await;
        assert_error(refused, 400, "invalid_request", message).await;
    }
    // Types the route cannot read at all: the same envelope, serde's message. A coordinate is
    // an integer when present, never `null` (the document says so).
    for extra in [
        json!({ "x": null, "y": 3 }),
        json!({ "x": null, "y": null }),
        json!({ "grade": 7 }),
        json!({ "x": 1.5, "y": 0 }),
        json!({ "x": "1", "y": 0 }),
    ] {
        let refused = post_concert(&app, seat(extra)).await;
        assert_error(refused, 400, "invalid_request", "").await;
    }
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM concerts").await, 0);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM seats").await, 0);
    // The bounds themselves are accepted (1.0 is JSON Schema's integer 1, as for every id).
    let accepted = post_concert(
        &app,
        seat(json!({ "grade": "G".repeat(32), "row": "열".repeat(8), "x": 999, "y": 1.0 })),
    )
    .await;
    assert_eq!(accepted.status().as_u16(), 201);
}
on_both_stores!(each_refused_plan_label_is_a_400_and_creates_nothing);

async fn plan_labels_survive_a_restart(backend: Backend) {
    plan_labels_come_back(backend, Down::Stop).await;
}
on_postgres!(plan_labels_survive_a_restart);

async fn plan_labels_survive_a_kill_dash_nine(backend: Backend) {
    plan_labels_come_back(backend, Down::Kill).await;
}
on_both_stores!(plan_labels_survive_a_kill_dash_nine);

async fn plan_labels_come_back(backend: Backend, down: Down) {
    let app = down.spawn(TestDb::create(backend).await, |_| {}, &[]).await;
    let concert = create_planned(&app, planned_seats()).await;
    let user = app.create_user(1_000_000).await;
    let token = app.active_token(user).await;
    let held = app
        .reserve(user, token, &concert, &concert.seats[2..3])
        .await;
    assert_eq!(held.status().as_u16(), 201);
    let before = seat_map_text(&app, token, &concert).await;

    let app = down.and_back(app).await;

    let after = seat_map_text(&app, token, &concert).await;
    assert_eq!(after, before);
    assert!(
        after.ends_with(&format!("{}]}}", expected_seats(&concert, &[3]))),
        "{after}"
    );
    app.stop().await;
}

async fn the_demo_concert_has_a_plan_of_graded_rows_with_an_aisle(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| s.demo = true).await;
    let token = app.active_token(1).await;
    let concert = Concert {
        id: 1,
        schedule: 1,
        seats: Vec::new(),
    };
    let map: Value = serde_json::from_str(&seat_map_text(&app, token, &concert).await)
        .expect("the seat map is JSON");
    let seats = map["seats"].as_array().expect("seats");
    assert_eq!(seats.len(), 60);
    let label = |i: usize| {
        let s = &seats[i];
        (
            s["seatId"].as_i64().unwrap(),
            s["seatGrade"].as_str().unwrap().to_string(),
            s["row"].as_str().unwrap().to_string(),
            s["x"].as_i64().unwrap(),
            s["y"].as_i64().unwrap(),
            s["seatPrice"].as_i64().unwrap(),
        )
    };
    assert_eq!(label(0), (1, "VIP".into(), "A".into(), 0, 0, 150_000));
    assert_eq!(label(10), (11, "R".into(), "B".into(), 0, 1, 110_000));
    assert_eq!(label(11), (12, "R".into(), "B".into(), 1, 1, 110_000));
    assert_eq!(label(59), (60, "S".into(), "F".into(), 10, 5, 80_000));
    assert!(
        seats.iter().all(|s| s["x"] != 5),
        "x = 5 is the aisle in every row"
    );
}
on_both_stores!(the_demo_concert_has_a_plan_of_graded_rows_with_an_aisle);
