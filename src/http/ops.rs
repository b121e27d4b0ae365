//! Operating routes: liveness, readiness, metrics, the OpenAPI document; and which of them the
//! `--ops-bind` listener serves instead of the public one.

use super::error::ErrorBody;
use super::AppState;
use crate::actors::Engine;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// The routes an `--ops-bind` listener serves.
pub const OPS_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The routes that leave the public listener when `--ops-bind` is set: queue length and sales
/// figures need not be public.
pub const OPS_ONLY_PATHS: [&str; 1] = ["/metrics"];

/// How long one database ping answers `/readyz`: a flood of `/readyz` is then one ping a
/// second, not a flood of pings.
pub const READINESS_PING_FOR: Duration = Duration::from_secs(1);

/// The last database ping and when it was made; the lock is held across a ping, so callers
/// arriving during one wait for its answer instead of pinging too.
#[derive(Debug, Default)]
pub struct StorePing {
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
    pings: AtomicU64,
}

impl StorePing {
    /// Whether the database answered, at most [`READINESS_PING_FOR`] ago.
    pub async fn answers(&self, engine: &Engine) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, answered)) = *last {
            if at.elapsed() < READINESS_PING_FOR {
                return answered;
            }
        }
        let answered = engine.ping_store().await;
        self.pings.fetch_add(1, Ordering::Relaxed);
        *last = Some((Instant::now(), answered));
        answered
    }

    /// Database pings made so far.
    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }
}

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
    // In cluster mode, also a member: a node whose lease may have run out is not sent traffic.
    let member = state.cluster.as_ref().is_none_or(|m| m.is_member());
    let ready = member && state.engine.is_ready() && state.store_ping.answers(&state.engine).await;
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
    let kept = engine.kept_in_memory();
    metrics::gauge!("boxoffice_reservations_in_memory").set(kept.reservations as f64);
    metrics::gauge!("boxoffice_hold_deadlines_in_memory").set(kept.deadlines as f64);
    let stats = engine.persister().stats();
    metrics::gauge!("boxoffice_persister_failed_commits")
        .set(stats.failures.load(Ordering::Relaxed) as f64);
    let mut body = super::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    // This application's own count (the recorder is the process's, shared by every server
    // in it), so a test can see how often `/readyz` reached the database.
    body.push_str(&format!(
        "# TYPE boxoffice_readiness_pings_total counter\nboxoffice_readiness_pings_total {}\n",
        state.store_ping.pings()
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
