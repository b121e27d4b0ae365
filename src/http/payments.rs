//! Payment routes: pay a held reservation from the wallet, and the checkout screen before it
//! (ACTIVE token of the same user).

use super::answer_bodies::{reservation_body, PaymentBody, ReservationBody};
use super::error::ErrorBody;
use super::extract::{id, whole, TokenHeader};
use super::idempotency::{begin, parse as parse_body, respond, Begin, IdempotencyKey};
use super::{within_deadline, ApiError, AppState};
use crate::actors::answer::Answer;
use crate::actors::schedule::ReservationView;
use crate::domain::queue::TokenRefusal;
use crate::domain::schedule::{ReservationStatus, UserReservation};
use crate::domain::{Money, ReservationId, UserId};
use actix_web::HttpRequest;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::field::Empty;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PayRequest {
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "whole::i64")]
    reservation_id: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressBody {
    user_id: i64,
    /// The wallet's balance now.
    current_amount: i64,
    reservation: ReservationBody,
    total_price: i64,
    /// Pending, still held, and the balance covers it.
    payable: bool,
    /// What is missing to pay it (0 when the balance is enough).
    shortfall: i64,
    /// Whole seconds left on the hold (0 unless pending).
    remaining_hold_seconds: u64,
}

impl TryFrom<(UserId, PayRequest)> for UserReservation {
    type Error = ApiError;

    fn try_from((user, body): (UserId, PayRequest)) -> Result<UserReservation, ApiError> {
        Ok(UserReservation {
            user,
            reservation: id(body.reservation_id, ReservationId::new)?,
        })
    }
}

/// Pay a reservation: debit, mark paid, record the payment, expire the token — atomically.
#[utoipa::path(post, path = "/v1/payments/users/{userId}", tag = "payments", security((), ("bearerAuth" = [])), request_body = PayRequest,
    params(
        ("userId" = i64, Path, minimum = 1),
        ("TOKEN-ID" = String, Header, description = "the user's ACTIVE queue token, in decimal"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer for a retry, even after the token is spent"),
    ),
    responses(
        (status = 201, body = PaymentBody),
        (status = 400, description = "invalid_request, not_enough_balance, reservation_expired", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active; unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, reservation_not_found", body = ErrorBody),
        (status = 409, description = "reservation_already_paid, reservation_cancelled, payment_in_progress", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "idempotency_key_reused", body = ErrorBody),
        (status = 429, description = "rate_limited: too many live idempotency keys", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path, reservation_id = Empty))]
pub async fn pay(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    token: TokenHeader,
    key: IdempotencyKey,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let payment = UserReservation::try_from((user, parse_body::<PayRequest>(&body)?))?;
    tracing::Span::current().record("reservation_id", payment.reservation.get());
    state.authenticate(&req, user)?;
    state.known_user(user)?;
    // A waiting-list offer (API.md §12) is paid without a queue token: the person waited on
    // the list instead of in the line.
    let offer = token.0.is_none() && state.engine.is_offer(user, payment.reservation).await;
    // Before the key is looked at: the user's own token, as the first request showed it. A
    // retry of a payment that went through carries the token the payment spent, so an
    // expired token of this user passes here; the full check runs before a fresh attempt.
    if !offer {
        match state.engine.authorize(token.0, Some(user)).await {
            Ok(_) | Err(TokenRefusal::Expired) => {}
            Err(refusal) => return Err(refusal.into()),
        }
    }
    let claim = match begin(&state, key, user, &req, &body).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Go(claim) => claim,
    };
    let token = if offer {
        None
    } else {
        Some(state.engine.authorize(token.0, Some(user)).await?.id)
    };
    let receipt =
        within_deadline(state.engine.pay(user, payment.reservation, token, claim)).await?;
    Ok(respond(&state, &Answer::Paid(receipt)))
}

/// The checkout screen: what is being bought, the balance, whether it is enough. Changes nothing.
#[utoipa::path(post, path = "/v1/payments/users/{userId}/progress", tag = "payments", security((), ("bearerAuth" = [])), request_body = PayRequest,
    params(("userId" = i64, Path, minimum = 1), ("TOKEN-ID" = String, Header, description = "the user's ACTIVE queue token, in decimal")),
    responses(
        (status = 200, body = ProgressBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active; unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, reservation_not_found", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(user_id = *path, reservation_id = body.reservation_id)
)]
pub async fn progress(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    token: TokenHeader,
    body: web::Json<PayRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let request = UserReservation::try_from((user, body.into_inner()))?;
    state.authenticate(&req, user)?;
    state.authorize_user(user, &token).await?;
    let (view, balance) = within_deadline(state.engine.checkout(user, request.reservation)).await?;
    Ok(HttpResponse::Ok().json(progress_body(&state, user, &view, balance)))
}

fn progress_body(
    state: &AppState,
    user: UserId,
    view: &ReservationView,
    balance: Money,
) -> ProgressBody {
    let r = &view.reservation;
    let pending = r.status == ReservationStatus::Pending;
    let remaining = if pending {
        state.engine.now().until(r.expires_at).as_secs()
    } else {
        0
    };
    ProgressBody {
        user_id: user.get(),
        current_amount: balance.won(),
        reservation: reservation_body(state, view),
        total_price: r.total.won(),
        payable: pending && remaining > 0 && balance >= r.total,
        shortfall: balance.shortfall(r.total).won(),
        remaining_hold_seconds: remaining,
    }
}
