//! Operating routes: liveness, readiness, metrics, the OpenAPI document.

use super::error::ErrorBody;
use super::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    ready: bool,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Recovery finished, the last commit succeeded, and the database answers now.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Readiness),
    (status = 503, description = "not ready (the body says ready: false)", body = ErrorBody),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.engine.is_ready() && state.engine.ping_store().await;
    if ready {
        HttpResponse::Ok().json(Readiness { ready })
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(Readiness { ready })
    }
}

/// Prometheus text: requests, latencies, mailboxes, the persister, the waiting room, holds.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let engine = &state.engine;
    let (waiting, active) = engine.queue_counts();
    metrics::gauge!("boxoffice_queue_waiting").set(waiting as f64);
    metrics::gauge!("boxoffice_queue_active_tokens").set(active as f64);
    metrics::gauge!("boxoffice_persister_queue_depth").set(engine.persister().depth() as f64);
    let stats = engine.persister().stats();
    metrics::gauge!("boxoffice_persister_failed_commits")
        .set(stats.failures.load(Ordering::Relaxed) as f64);
    let body = super::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::document_for(state.engine.settings()))
}
