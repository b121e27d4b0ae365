//! Waiting-room routes: join, read the token, poll the status. The status poll is the
//! hottest route of a drop (every waiter, every few seconds): it is answered from the line the
//! `QueueActor` publishes, never its mailbox, and tells the client when to poll next.

use super::error::ErrorBody;
use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::domain::queue::{TokenRecord, TokenState, TokenStatus};
use crate::domain::UserId;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    token_id: i64,
    created_at: String,
    expired_at: String,
}

/// The seed's four fields first, byte-exact, then the additions.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    queue_id: u64,
    join_at: String,
    status: &'static str,
    remaining_wait_list_count: u64,
    expired_at: String,
    /// WAITING: seconds until admission at the measured admission rate (or the configured
    /// `admit_per_sec` before anything was measured), rounded up; `null` when no rate is
    /// known. ACTIVE: 0. EXPIRED: `null` (it will never be admitted).
    estimated_wait_seconds: Option<u64>,
    /// When to poll again: longer far back in line, never more than a quarter of the idle
    /// timeout, so a client that obeys it is never dropped as idle.
    poll_after_ms: u64,
    /// Only while a fair opening is scheduled (API.md §11): `true` for a WAITING token, which
    /// is in the pre-queue; `queueId` is then its arrival number and `remainingWaitListCount`
    /// the pre-queue so far (nobody's order exists before the draw).
    #[serde(skip_serializing_if = "Option::is_none")]
    prequeue: Option<bool>,
    /// Only with `prequeue`: when the pre-queue is drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    opens_at: Option<String>,
}

/// Over how long the pre-queue's first polls after the opening are spread.
const OPENING_POLL_SPREAD_MS: u64 = 5_000;

fn token_response(state: &AppState, record: &TokenRecord) -> TokenResponse {
    let settings = state.engine.settings();
    let expired_at = match record.state {
        TokenState::Waiting => record.created_at.plus(settings.idle_timeout),
        TokenState::Active { expires_at, .. } => expires_at,
        TokenState::Expired { at } => at,
    };
    TokenResponse {
        token_id: record.id.get(),
        created_at: state.time(record.created_at),
        expired_at: state.time(expired_at),
    }
}

/// Join the waiting room: 201 with a new token, 200 with the user's live one.
#[utoipa::path(post, path = "/v1/queue-tokens/users/{userId}", tag = "queue", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 201, description = "a new token at the back of the line", body = TokenResponse),
        (status = 200, description = "the user's WAITING or ACTIVE token", body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn join(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let (record, created) = within_deadline(state.engine.join_queue(user)).await?;
    let body = token_response(&state, &record);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// The user's current (or last) token.
#[utoipa::path(get, path = "/v1/queue-tokens/users/{userId}", tag = "queue", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, token_not_found", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let record = state.engine.token_of(user).await?;
    Ok(HttpResponse::Ok().json(token_response(&state, &record)))
}

/// Poll the token's place in line; answered from the published line, never the actor.
#[utoipa::path(get, path = "/v1/queue-status/users/{userId}", tag = "queue", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1), ("TOKEN-ID" = String, Header, description = "the user's queue token, in decimal")),
    responses(
        (status = 200, description = "the token's state; EXPIRED tokens answer here too", body = StatusResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_token; unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn status(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let worked_out = req
        .extensions_mut()
        .remove::<super::cluster::SnapshotAnswer>();
    let status = match worked_out {
        Some(super::cluster::SnapshotAnswer(status)) => status,
        None => state.engine.poll(user, token.0).await?,
    };
    Ok(HttpResponse::Ok().json(status_response(&state, &status)))
}

fn status_response(state: &AppState, status: &TokenStatus) -> StatusResponse {
    StatusResponse {
        queue_id: status.record.position,
        join_at: state.time(status.record.created_at),
        status: status.record.state.name(),
        remaining_wait_list_count: status.ahead,
        expired_at: state.time(status.expires_at),
        estimated_wait_seconds: status
            .estimated_wait
            .map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
        poll_after_ms: u64::try_from(status.poll_after.as_millis()).unwrap_or(u64::MAX),
        prequeue: None,
        opens_at: None,
    }
    .in_prequeue(state, status)
}

impl StatusResponse {
    /// A WAITING token while a fair opening is scheduled is in the pre-queue.
    fn in_prequeue(mut self, state: &AppState, status: &TokenStatus) -> StatusResponse {
        if status.record.state != TokenState::Waiting {
            return self;
        }
        if let Some((opens_at, arrivals)) = state.engine.prequeue() {
            self.prequeue = Some(true);
            self.opens_at = Some(state.time(opens_at));
            self.remaining_wait_list_count = arrivals;
            // The last poll before the opening lands at a point of the first
            // `OPENING_POLL_SPREAD_MS` after it, fixed per token, so the crowd does not come back
            // in one second; never later than the usual pacing (within the idle timeout).
            let until_ms =
                u64::try_from(state.engine.now().until(opens_at).as_millis()).unwrap_or(u64::MAX);
            let spread = status.record.id.get().unsigned_abs() % OPENING_POLL_SPREAD_MS;
            self.poll_after_ms = self.poll_after_ms.min(until_ms.saturating_add(spread));
        }
        self
    }
}
