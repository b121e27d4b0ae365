//! Every way a request can go wrong answers the envelope, never HTML, never a 500.

use crate::helpers::*;
use crate::on_both_stores;

async fn unknown_routes_methods_and_bad_input_answer_the_envelope(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_error(
        app.get("/nowhere", None).await,
        404,
        "not_found",
        "not found",
    )
    .await;
    let put = app
        .client
        .put(app.url("/v1/balance/users/1"))
        .send()
        .await
        .unwrap();
    assert_error(put, 405, "method_not_allowed", "method not allowed").await;
    assert_error(
        app.get("/v1/balance/users/abc", None).await,
        400,
        "invalid_request",
        "",
    )
    .await;
    assert_error(
        app.get("/v1/balance/users/0", None).await,
        400,
        "invalid_request",
        "",
    )
    .await;
    assert_error(
        app.get("/v1/balance/users/99999999999999999999", None)
            .await,
        400,
        "invalid_request",
        "",
    )
    .await;
    let truncated = app
        .client
        .post(app.url("/v1/balance/users/1/recharge"))
        .header("Content-Type", "application/json")
        .body("{\"amount\":")
        .send()
        .await
        .unwrap();
    assert_error(truncated, 400, "invalid_request", "").await;
    let huge = app
        .client
        .post(app.url("/v1/reservations"))
        .header("Content-Type", "application/json")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_error(huge, 400, "invalid_request", "").await;
    let wrong = app
        .client
        .post(app.url("/v1/reservations"))
        .json(&serde_json::json!({ "userId": "x" }))
        .send()
        .await
        .unwrap();
    assert_error(wrong, 400, "invalid_request", "").await;
    let query = app.get("/v1/reservations/1?userId=abc", Some(1)).await;
    assert_error(query, 400, "invalid_request", "").await;
}
on_both_stores!(unknown_routes_methods_and_bad_input_answer_the_envelope);

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/healthz", None).await.status().as_u16(), 200);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(body(ready).await["ready"], true);
}
on_both_stores!(health_and_readiness_answer);
