//! `POST /v1/reservations/{reservationId}/refund` (API.md §12): a paid reservation's money
//! back to its owner's wallet, its tickets void, its seats free again.

use super::answer_bodies::RefundBody;
use super::error::ErrorBody;
use super::extract::id;
use super::idempotency::{begin, respond, Begin, IdempotencyKey};
use super::{within_deadline, ApiError, AppState};
use crate::actors::answer::Answer;
use crate::domain::{ReservationId, UserId};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RefundQuery {
    /// The reservation's owner.
    #[param(minimum = 1)]
    user_id: i64,
}

/// Refund a PAID reservation none of whose tickets is checked in, until `--refund-until-secs`
/// before its concert.
#[utoipa::path(post, path = "/v1/reservations/{reservationId}/refund", tag = "reservations", security((), ("bearerAuth" = [])),
    params(("reservationId" = i64, Path, minimum = 1), RefundQuery, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer for a retry")),
    responses(
        (status = 200, body = RefundBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, reservation_not_found", body = ErrorBody),
        (status = 409, description = "refund_not_allowed", body = ErrorBody),
        (status = 422, description = "idempotency_key_reused", body = ErrorBody),
        (status = 429, description = "rate_limited: too many live idempotency keys", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn refund(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<RefundQuery>,
    key: IdempotencyKey,
) -> Result<HttpResponse, ApiError> {
    let reservation = id(path.into_inner(), ReservationId::new)?;
    let user = id(query.user_id, UserId::new)?;
    state.authenticate(&req, user)?;
    state.known_user(user)?;
    // No body: the request is its path (the fingerprint's) and its owner (the key's scope).
    let claim = match begin(&state, key, user, &req, &Value::Null).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Go(claim) => claim,
    };
    let receipt = within_deadline(state.engine.refund(user, reservation, claim)).await?;
    Ok(respond(&state, &Answer::Refunded(receipt)))
}
