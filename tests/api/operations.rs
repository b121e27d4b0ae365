//! Checkout progress, metrics and the OpenAPI document over HTTP.

use crate::helpers::*;
use crate::{on_both_stores, on_postgres};
use serde_json::json;
use std::time::Duration;

async fn checkout_progress_shows_what_is_bought_and_whether_it_is_payable(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(15_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(2, 10_000).await;
    let id = body(app.reserve(user, token, &concert, &concert.seats).await).await["reservationId"]
        .as_i64()
        .unwrap();
    let path = format!("/v1/payments/users/{user}/progress");
    let progress = app
        .post(&path, Some(token), json!({ "reservationId": id }))
        .await;
    assert_eq!(progress.status().as_u16(), 200);
    let progress = body(progress).await;
    assert_eq!(progress["userId"], user);
    assert_eq!(progress["currentAmount"], 15_000);
    assert_eq!(progress["totalPrice"], 20_000);
    assert_eq!(progress["payable"], false);
    assert_eq!(progress["shortfall"], 5_000);
    assert_eq!(progress["reservation"]["reservationId"], id);
    assert_eq!(
        progress["reservation"]["reservationStatus"],
        "PAYMENT_PENDING"
    );
    let remaining = progress["remainingHoldSeconds"].as_u64().unwrap();
    assert!((298..=300).contains(&remaining), "{remaining}");
    app.recharge(user, json!(5_000)).await;
    let progress = body(
        app.post(&path, Some(token), json!({ "reservationId": id }))
            .await,
    )
    .await;
    assert_eq!(progress["payable"], true);
    assert_eq!(progress["shortfall"], 0);
    app.clock.advance(Duration::from_secs(100));
    let later = body(
        app.post(&path, Some(token), json!({ "reservationId": id }))
            .await,
    )
    .await;
    assert!(later["remainingHoldSeconds"].as_u64().unwrap() <= 200);
    assert_eq!(app.balance(user).await, 20_000, "progress changes nothing");
    let other = app.create_user(0).await;
    let other_token = app.active_token(other).await;
    let foreign = app
        .post(
            &format!("/v1/payments/users/{other}/progress"),
            Some(other_token),
            json!({ "reservationId": id }),
        )
        .await;
    assert_error(
        foreign,
        404,
        "reservation_not_found",
        "reservation not found",
    )
    .await;
    assert_error(
        app.post(&path, None, json!({ "reservationId": id })).await,
        401,
        "invalid_token",
        "invalid token",
    )
    .await;
}
on_both_stores!(checkout_progress_shows_what_is_bought_and_whether_it_is_payable);

/// The server is a process of its own, so every series below was written by this test's
/// requests, not by another app sharing this test binary's recorder.
async fn metrics_expose_requests_mailboxes_the_persister_and_the_line(backend: Backend) {
    let app = spawn_process_app(TestDb::create(backend).await, &[]).await;
    let user = app.create_user(50_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(2, 1_000).await;
    let id = body(
        app.reserve(user, token, &concert, &concert.seats[..1])
            .await,
    )
    .await["reservationId"]
        .as_i64()
        .unwrap();
    assert_eq!(app.pay(user, token, id).await.status().as_u16(), 201);
    let names = [
        "boxoffice_http_requests_total{method=\"POST\",route=\"/v1/reservations\",status=\"201\"}",
        "boxoffice_http_request_duration_seconds_bucket",
        "boxoffice_mailbox_depth{actor=\"schedule\"}",
        "boxoffice_mailbox_depth{actor=\"wallet\"}",
        "boxoffice_persister_batch_submissions",
        "boxoffice_persister_commit_seconds_bucket",
        "boxoffice_queue_waiting",
        "boxoffice_queue_active_tokens",
        "boxoffice_holds_total{outcome=\"placed\"}",
        "boxoffice_seats_sold_total",
    ];
    // The sold seats are counted when the schedule learns the payment committed, a message
    // sent after the 201: look again for a while (bounded) before calling a series missing.
    let mut missing = Vec::new();
    for _ in 0..50 {
        let response = app.get("/metrics", None).await;
        assert_eq!(response.status().as_u16(), 200);
        let text = response.text().await.unwrap();
        missing = names.iter().filter(|n| !text.contains(**n)).collect();
        if missing.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/metrics lacks {missing:?}");
}
on_postgres!(metrics_expose_requests_mailboxes_the_persister_and_the_line);

async fn the_openapi_document_is_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status().as_u16(), 200);
    let doc = body(response).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/reservations"]["post"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
on_both_stores!(the_openapi_document_is_served);
