//! The HTTP surface: the route table (`routes`, each route naming its shard key), the
//! cluster's forwarding and node-to-node routes (`cluster`), request parsing, JSON shapes, the error envelope, the OpenAPI
//! document and request metrics. Every handler reads in four steps: parse its input into a
//! domain request (`TryFrom`), authorize, call one engine operation, shape its answer.

mod admin;
mod answer_bodies;
pub mod auth;
mod balance;
pub mod client_ip;
pub mod cluster;
mod concerts;
mod door;
pub mod error;
mod extract;
mod idempotency;
pub mod live;
pub mod live_history;
pub mod metrics;
pub mod openapi;
mod opening;
mod ops;
mod payments;
mod queue;
pub mod rate_limit;
mod refunds;
mod reservations;
pub mod routes;
pub mod slow_clients;
mod tickets;
pub mod verify_draw;
mod waitlist;

pub use error::ApiError;
pub use queue::JoinPow;
pub use routes::{configure_for, route_table, Listener, ShardKey};

use crate::actors::Engine;
use crate::domain::{Timestamp, UserId};
use actix_web::HttpRequest;
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
    /// `--door-key`: the scanners' key (API.md §12); the admin key opens the door too.
    pub door_key: Option<crate::config::Secret>,
    pub auth: auth::Authenticator,
    /// `/readyz`'s cached database ping.
    pub store_ping: ops::StorePing,
    /// jwt mode's per-user budget (`--rate-limit-per-user`), checked once the bearer names the user.
    pub user_budget: Option<rate_limit::UserBudget>,
    /// The dashboard's stream (`GET /v1/admin/live`), closed when shutdown starts.
    pub live: live::LiveFeed,
    /// Cluster mode: this node's membership (`GET /v1/admin/cluster`, `/readyz`).
    pub cluster: Option<std::sync::Arc<crate::actors::cluster::Membership>>,
    /// `--join-pow-bits` above 0: the join's proof of work; `None`: none is asked.
    pub join_pow: Option<JoinPow>,
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
