//! The HTTP surface: routes, request parsing, JSON shapes, the error envelope. Handlers parse
//! and check their input, call one engine operation, and shape its answer.

mod admin;
mod balance;
mod concerts;
pub mod error;
mod extract;
mod ops;
mod payments;
mod queue;
mod reservations;

pub use error::ApiError;

use crate::actors::Engine;
use crate::domain::Timestamp;
use actix_web::{web, HttpRequest};
use chrono::FixedOffset;
use std::future::Future;
use std::time::Duration;

/// Largest JSON body a public route accepts: the largest valid request is far smaller.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Largest JSON body of the admin routes (a concert with several large seat maps).
pub const ADMIN_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Longest a request waits for the engine before it answers 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What every handler shares.
pub struct AppState {
    pub engine: Engine,
    pub timezone: FixedOffset,
    pub admin_key: Option<String>,
}

impl AppState {
    /// A timestamp in the seed's format and the configured zone.
    pub fn time(&self, t: Timestamp) -> String {
        t.format(self.timezone)
    }
}

/// Waits for an engine operation, answering 503 if it takes unreasonably long.
pub async fn within_deadline<T, E: Into<ApiError>>(
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, op).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(ApiError::Unavailable("request deadline passed".into())),
    }
}

/// Registers every route, and the envelope for every way a request can fail to reach one.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(extract::json_config(BODY_LIMIT))
        .app_data(extract::path_config())
        .app_data(extract::query_config())
        .service(
            resource("/v1/queue-tokens/users/{userId}")
                .route(web::post().to(queue::join))
                .route(web::get().to(queue::token)),
        )
        .service(resource("/v1/queue-status/users/{userId}").route(web::get().to(queue::status)))
        .service(
            resource("/v1/concerts/{concertId}/schedules")
                .route(web::get().to(concerts::schedules)),
        )
        .service(
            resource("/v1/concerts/{concertId}/schedules/{scheduleId}/seats")
                .route(web::get().to(concerts::seats)),
        )
        .service(resource("/v1/reservations").route(web::post().to(reservations::reserve)))
        .service(
            resource("/v1/reservations/{reservationId}")
                .route(web::get().to(reservations::read))
                .route(web::delete().to(reservations::cancel)),
        )
        .service(resource("/v1/payments/users/{userId}").route(web::post().to(payments::pay)))
        .service(resource("/v1/balance/users/{userId}").route(web::get().to(balance::balance)))
        .service(
            resource("/v1/balance/users/{userId}/recharge")
                .route(web::post().to(balance::recharge)),
        )
        .service(
            web::scope("/v1/admin")
                .app_data(extract::json_config(ADMIN_BODY_LIMIT))
                .service(resource("/users").route(web::post().to(admin::create_user)))
                .service(resource("/concerts").route(web::post().to(admin::create_concert))),
        )
        .service(resource("/healthz").route(web::get().to(ops::healthz)))
        .service(resource("/readyz").route(web::get().to(ops::readyz)))
        .default_service(web::to(not_found));
}

/// A resource whose unsupported methods answer with the envelope, not an empty 405.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn not_found(_: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn method_not_allowed(_: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
