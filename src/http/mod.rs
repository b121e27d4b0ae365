//! The HTTP surface: routes, request parsing, JSON shapes, the error envelope, the OpenAPI
//! document and request metrics. Every handler reads in four steps: parse its input into a
//! domain request (`TryFrom`), authorize, call one engine operation, shape its answer.

mod admin;
pub mod auth;
mod balance;
pub mod client_ip;
pub mod cluster;
mod concerts;
pub mod error;
mod extract;
mod idempotency;
pub mod live;
pub mod metrics;
pub mod openapi;
mod ops;
mod payments;
mod queue;
pub mod rate_limit;
mod reservations;
pub mod slow_clients;

pub use error::ApiError;

use crate::actors::Engine;
use crate::domain::{Timestamp, UserId};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
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
    pub admin_key: Option<crate::config::Secret>,
    pub auth: auth::Authenticator,
    /// `/readyz`'s cached database ping.
    pub store_ping: ops::StorePing,
    /// jwt mode's per-user budget (`--rate-limit-per-user`), checked once the bearer names the user.
    pub user_budget: Option<rate_limit::UserBudget>,
    /// The dashboard's stream (`GET /v1/admin/live`), closed when shutdown starts.
    pub live: live::LiveFeed,
    /// Cluster mode: this node's membership (`GET /v1/admin/cluster`, `/readyz`).
    pub cluster: Option<std::sync::Arc<crate::actors::cluster::Membership>>,
}

impl AppState {
    /// A timestamp in the seed's format and the configured zone.
    pub fn time(&self, t: Timestamp) -> String {
        t.format(self.timezone)
    }

    /// `--auth jwt`: 401 unless the request's bearer is valid, 403 unless it is `user`'s, then
    /// 429 past the user's budget (`--rate-limit-per-user`); nothing in none mode. Before
    /// [`AppState::known_user`], so neither says who exists.
    pub fn authenticate(&self, req: &HttpRequest, user: UserId) -> Result<(), ApiError> {
        self.auth.authenticate(req, user)?;
        match &self.user_budget {
            // Only a verified bearer names the user who spends; a path names anyone.
            Some(budget) if self.auth.is_jwt() => budget.check(user),
            _ => Ok(()),
        }
    }

    /// Recharge's gate: open (none mode), the admin key, or the user's own bearer.
    pub fn authorize_recharge(&self, req: &HttpRequest, user: UserId) -> Result<(), ApiError> {
        match self.auth.recharge_gate(req) {
            auth::RechargeGate::Open => Ok(()),
            auth::RechargeGate::AdminKey => admin::check_admin(self, req),
            auth::RechargeGate::OwnBearer => self.authenticate(req, user),
        }
    }

    /// 404 unless the user exists: before their token or idempotency key is looked at.
    pub fn known_user(&self, user: UserId) -> Result<(), ApiError> {
        if self.engine.user_exists(user) {
            Ok(())
        } else {
            Err(ApiError::UserNotFound)
        }
    }

    /// [`AppState::known_user`], then the user's ACTIVE token: the order clients see errors in.
    async fn authorize_user(
        &self,
        user: UserId,
        token: &extract::TokenHeader,
    ) -> Result<(), ApiError> {
        self.known_user(user)?;
        self.engine.authorize(token.0, Some(user)).await?;
        Ok(())
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

/// One route: method, path template, handler, and an optional body limit of its own.
struct RouteSpec {
    method: Method,
    path: &'static str,
    route: actix_web::Route,
    body_limit: Option<usize>,
}

fn spec(method: Method, path: &'static str, route: actix_web::Route) -> RouteSpec {
    RouteSpec {
        method,
        path,
        route,
        body_limit: None,
    }
}

/// Every route the service serves: `configure` registers exactly these, and the OpenAPI test
/// compares the document with exactly these.
fn routes() -> Vec<RouteSpec> {
    use Method as M;
    vec![
        spec(
            M::POST,
            "/v1/queue-tokens/users/{userId}",
            web::post().to(queue::join),
        ),
        spec(
            M::GET,
            "/v1/queue-tokens/users/{userId}",
            web::get().to(queue::token),
        ),
        spec(
            M::GET,
            "/v1/queue-status/users/{userId}",
            web::get().to(queue::status),
        ),
        spec(
            M::GET,
            "/v1/concerts/{concertId}/schedules",
            web::get().to(concerts::schedules),
        ),
        spec(
            M::GET,
            "/v1/concerts/{concertId}/schedules/{scheduleId}/seats",
            web::get().to(concerts::seats),
        ),
        spec(
            M::POST,
            "/v1/reservations",
            web::post().to(reservations::reserve),
        ),
        spec(
            M::GET,
            "/v1/reservations/{reservationId}",
            web::get().to(reservations::read),
        ),
        spec(
            M::DELETE,
            "/v1/reservations/{reservationId}",
            web::delete().to(reservations::cancel),
        ),
        spec(
            M::POST,
            "/v1/payments/users/{userId}",
            web::post().to(payments::pay),
        ),
        spec(
            M::POST,
            "/v1/payments/users/{userId}/progress",
            web::post().to(payments::progress),
        ),
        spec(
            M::GET,
            "/v1/balance/users/{userId}",
            web::get().to(balance::balance),
        ),
        spec(
            M::POST,
            "/v1/balance/users/{userId}/recharge",
            web::post().to(balance::recharge),
        ),
        spec(
            M::GET,
            "/v1/balance/users/{userId}/history",
            web::get().to(balance::history),
        ),
        RouteSpec {
            body_limit: Some(ADMIN_BODY_LIMIT),
            ..spec(
                M::POST,
                "/v1/admin/users",
                web::post().to(admin::create_user),
            )
        },
        RouteSpec {
            body_limit: Some(ADMIN_BODY_LIMIT),
            ..spec(
                M::POST,
                "/v1/admin/concerts",
                web::post().to(admin::create_concert),
            )
        },
        spec(M::GET, live::PATH, web::get().to(live::live)),
        spec(
            M::GET,
            "/v1/admin/cluster",
            web::get().to(cluster::view::cluster),
        ),
        spec(M::GET, "/healthz", web::get().to(ops::healthz)),
        spec(M::GET, "/readyz", web::get().to(ops::readyz)),
        spec(M::GET, "/metrics", web::get().to(ops::metrics)),
        spec(M::GET, "/openapi.json", web::get().to(ops::openapi)),
    ]
}

/// (method, path template) of every route served.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|r| (r.method, r.path)).collect()
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Every route: the one listener when `--ops-bind` is not set.
    All,
    /// Every route but [`ops::OPS_ONLY_PATHS`]: the public listener beside an ops listener.
    Public,
    /// Only [`ops::OPS_PATHS`]: the `--ops-bind` listener.
    Ops,
}

impl Listener {
    fn serves(self, path: &str) -> bool {
        match self {
            Listener::All => true,
            Listener::Public => !ops::OPS_ONLY_PATHS.contains(&path),
            Listener::Ops => ops::OPS_PATHS.contains(&path),
        }
    }
}

/// Registers every route, and the envelope for every way a request can fail to reach one.
pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_for(cfg, Listener::All)
}

/// [`configure`] for one listener: the routes it does not serve are 404 envelopes.
pub fn configure_for(cfg: &mut web::ServiceConfig, listener: Listener) {
    cfg.app_data(extract::json_config(BODY_LIMIT))
        .app_data(extract::path_config())
        .app_data(extract::query_config());
    // Group the routes by path: one resource per path, so an unsupported method on a known
    // path is a 405 envelope (with the path's methods in `Allow`) rather than a 404.
    type Group = (
        &'static str,
        Option<usize>,
        Vec<Method>,
        Vec<actix_web::Route>,
    );
    let mut by_path: Vec<Group> = Vec::new();
    for r in routes().into_iter().filter(|r| listener.serves(r.path)) {
        match by_path.iter_mut().find(|(path, ..)| *path == r.path) {
            Some((_, limit, methods, list)) => {
                *limit = limit.or(r.body_limit);
                methods.push(r.method);
                list.push(r.route);
            }
            None => by_path.push((r.path, r.body_limit, vec![r.method], vec![r.route])),
        }
    }
    for (path, limit, methods, list) in by_path {
        let allow = allow_header(&methods);
        let mut resource = web::resource(path)
            // Before any extractor: an encoded body is refused unread.
            .wrap(actix_web::middleware::from_fn(
                extract::refuse_encoded_bodies,
            ))
            .app_data(metrics::RouteLabel(path))
            .default_service(web::to(move || method_not_allowed(allow.clone())));
        if let Some(limit) = limit {
            resource = resource.app_data(extract::json_config(limit));
        }
        for route in list {
            resource = resource.route(route);
        }
        cfg.service(resource);
    }
    // The pages are beside the API, not in it (see `crate::web`); the ops listener has none,
    // nor the node-to-node routes (cluster mode, beside the API too).
    if listener != Listener::Ops {
        cluster::internal::configure(cfg);
        crate::web::configure(cfg);
    }
    cfg.default_service(web::to(not_found));
}

async fn not_found(_: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// RFC 9110 §15.5.6: a 405 lists the methods the resource does support.
async fn method_not_allowed(allow: HeaderValue) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed.error_response();
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

/// `Allow` for a path served with `methods`.
fn allow_header(methods: &[Method]) -> HeaderValue {
    let listed: Vec<&str> = methods.iter().map(Method::as_str).collect();
    HeaderValue::from_str(&listed.join(", ")).expect("method names are valid header text")
}
