//! Operating routes: liveness and readiness.

use super::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

/// GET /healthz: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// GET /readyz: recovery finished, the last commit succeeded and the database answers.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.engine.is_ready() && state.engine.ping_store().await;
    let body = json!({ "ready": ready });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}
