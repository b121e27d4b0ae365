//! Waiting-room routes: join, read the token, poll the status.

use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::domain::queue::{TokenRecord, TokenState};
use crate::domain::UserId;
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenResponse {
    token_id: i64,
    created_at: String,
    expired_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusResponse {
    queue_id: u64,
    join_at: String,
    status: &'static str,
    remaining_wait_list_count: u64,
    expired_at: String,
}

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

/// POST /v1/queue-tokens/users/{userId}: 201 with a new token, 200 with the live one.
pub async fn join(
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let (record, created) = within_deadline(state.engine.join_queue(user)).await?;
    let body = token_response(&state, &record);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// GET /v1/queue-tokens/users/{userId}
pub async fn token(
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let record = state.engine.token_of(user)?;
    Ok(HttpResponse::Ok().json(token_response(&state, &record)))
}

/// GET /v1/queue-status/users/{userId}: answered from the published line, never the actor.
pub async fn status(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let status = state.engine.poll(user, token.0)?;
    Ok(HttpResponse::Ok().json(StatusResponse {
        queue_id: status.record.position,
        join_at: state.time(status.record.created_at),
        status: status.record.state.name(),
        remaining_wait_list_count: status.ahead,
        expired_at: state.time(status.expires_at),
    }))
}
