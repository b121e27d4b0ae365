//! Admin routes: guarded by the key, validated, seat ids in the order given.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::json;

async fn admin_routes_need_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/v1/admin/users");
    let none = app
        .client
        .post(&url)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_error(none, 403, "forbidden", "").await;
    let wrong = app
        .client
        .post(&url)
        .header("X-Admin-Key", "nope")
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_error(wrong, 403, "forbidden", "").await;
    let db = TestDb::create(backend).await;
    let closed = spawn_app_with(db, |s| s.admin_key = None).await;
    let disabled = closed
        .client
        .post(closed.url("/v1/admin/users"))
        .header("X-Admin-Key", "")
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_error(disabled, 403, "forbidden", "admin routes are disabled").await;
}
on_both_stores!(admin_routes_need_the_key);

async fn concerts_are_validated_and_seat_ids_follow_the_input_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let post = |body: serde_json::Value| {
        app.client
            .post(app.url("/v1/admin/concerts"))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&body)
            .send()
    };
    let seats = json!([{ "seatNumber": 30, "price": 1 }, { "seatNumber": 10, "price": 2 }, { "seatNumber": 20, "price": 3 }]);
    let created = post(json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T00:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": seats }] })).await.unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created = body(created).await;
    let ids: Vec<i64> = created["schedules"][0]["seatIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = Concert {
        id: created["concertId"].as_i64().unwrap(),
        schedule: created["schedules"][0]["scheduleId"].as_i64().unwrap(),
        seats: ids.clone(),
    };
    let listed = body(
        app.get(
            &format!(
                "/v1/concerts/{}/schedules/{}/seats",
                concert.id, concert.schedule
            ),
            Some(token),
        )
        .await,
    )
    .await;
    for seat in listed["seats"].as_array().unwrap() {
        let position = ids
            .iter()
            .position(|id| *id == seat["seatId"].as_i64().unwrap())
            .unwrap();
        assert_eq!(seat["seatNumber"], [30, 10, 20][position]);
    }
    let dup = json!([{ "seatNumber": 1, "price": 1 }, { "seatNumber": 1, "price": 1 }]);
    let cases = [
        json!({ "name": "", "schedules": [] }),
        json!({ "name": "c", "schedules": [] }),
        json!({ "name": "c", "schedules": [{ "concertAt": "tomorrow", "reservationAt": "2020-01-01T00:00:00", "seats": seats }] }),
        json!({ "name": "c", "schedules": [{ "concertAt": "2020-01-01T00:00:00", "reservationAt": "2099-01-01T00:00:00", "seats": seats }] }),
        json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T00:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": dup }] }),
        json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T00:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": [{ "seatNumber": 1, "price": -1 }] }] }),
    ];
    for case in cases {
        assert_error(post(case).await.unwrap(), 400, "invalid_request", "").await;
    }
}
on_both_stores!(concerts_are_validated_and_seat_ids_follow_the_input_order);

/// Outside cluster mode the cluster view does not exist: 404 in the envelope, still behind
/// the key (403 without it).
async fn the_cluster_view_is_a_404_outside_cluster_mode(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/v1/admin/cluster");
    let without_key = app.client.get(&url).send().await.unwrap();
    assert_error(without_key, 403, "forbidden", "").await;
    let with_key = app
        .client
        .get(&url)
        .header("X-Admin-Key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_error(with_key, 404, "not_found", "").await;
}
on_both_stores!(the_cluster_view_is_a_404_outside_cluster_mode);

/// The node-to-node routes (cluster mode's payments and polls across nodes) do not exist
/// outside cluster mode, with the admin key or without it.
async fn the_nodes_routes_are_a_404_outside_cluster_mode(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in [
        "/v1/internal/pins",
        "/v1/internal/pins/1/outcome",
        "/v1/internal/spent-tokens/1",
        "/v1/internal/queue-sync",
    ] {
        let answer = app
            .client
            .post(app.url(path))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_error(answer, 404, "not_found", "").await;
    }
}
on_both_stores!(the_nodes_routes_are_a_404_outside_cluster_mode);
