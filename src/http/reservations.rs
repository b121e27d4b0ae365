//! Reservation routes: hold seats, read and cancel a reservation (ACTIVE token of the same user).

use super::answer_bodies::{reservation_body, ReservationBody};
use super::error::ErrorBody;
use super::extract::{id, whole, TokenHeader};
use super::idempotency::{begin, parse, respond, Begin, IdempotencyKey};
use super::{within_deadline, ApiError, AppState};
use crate::actors::answer::Answer;
use crate::actors::EngineSettings;
use crate::domain::schedule::{HoldRequest, UserReservation};
use crate::domain::{ConcertId, ReservationId, ScheduleId, SeatId, UserId};
use actix_web::HttpRequest;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use tracing::field::Empty;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveRequest {
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "whole::i64")]
    user_id: i64,
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "whole::i64")]
    concert_id: i64,
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "whole::i64")]
    schedule_id: i64,
    /// Non-empty, no duplicates, at most the per-user seat limit (`maxItems`, as configured).
    #[schema(min_items = 1)]
    #[serde(deserialize_with = "whole::vec_i64")]
    seat_ids: Vec<i64>,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    /// The reservation's owner.
    #[param(minimum = 1)]
    user_id: i64,
}

impl TryFrom<(ReserveRequest, &EngineSettings)> for HoldRequest {
    type Error = ApiError;

    /// The ids, then the seat list's size, then each seat id: the order clients see errors in.
    fn try_from(
        (request, settings): (ReserveRequest, &EngineSettings),
    ) -> Result<HoldRequest, ApiError> {
        let user = id(request.user_id, UserId::new)?;
        let concert = id(request.concert_id, ConcertId::new)?;
        let schedule = id(request.schedule_id, ScheduleId::new)?;
        if request.seat_ids.is_empty() {
            return Err(ApiError::invalid("seatIds must not be empty"));
        }
        if request.seat_ids.len() > settings.max_seats_per_user as usize {
            return Err(ApiError::SeatLimitExceeded);
        }
        let seats = request
            .seat_ids
            .into_iter()
            .map(|seat| id(seat, SeatId::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HoldRequest {
            user,
            concert,
            schedule,
            seats,
        })
    }
}

impl TryFrom<(ReservationId, OwnerQuery)> for UserReservation {
    type Error = ApiError;

    fn try_from(
        (reservation, query): (ReservationId, OwnerQuery),
    ) -> Result<UserReservation, ApiError> {
        Ok(UserReservation {
            user: id(query.user_id, UserId::new)?,
            reservation,
        })
    }
}

/// Hold seats for the user: all of them for the hold time, or none.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations", security((), ("bearerAuth" = [])), request_body = ReserveRequest,
    params(
        ("TOKEN-ID" = String, Header, description = "the user's ACTIVE queue token, in decimal"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "replays the first answer for a retry"),
    ),
    responses(
        (status = 201, body = ReservationBody),
        (status = 400, description = "invalid_request, reservation_failed, reservation_not_open, seat_limit_exceeded", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active; unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, concert_not_found, schedule_not_found, seat_not_found", body = ErrorBody),
        (status = 409, description = "performance_cancelled (the operator cancelled it, API.md §12)", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 422, description = "idempotency_key_reused", body = ErrorBody),
        (status = 429, description = "rate_limited: too many live idempotency keys", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(user_id = Empty, concert_id = Empty, schedule_id = Empty)
)]
pub async fn reserve(
    state: web::Data<AppState>,
    req: HttpRequest,
    token: TokenHeader,
    key: IdempotencyKey,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let hold = HoldRequest::try_from((parse::<ReserveRequest>(&body)?, state.engine.settings()))?;
    record_ids(&hold);
    state.authenticate(&req, hold.user)?;
    state.known_user(hold.user)?;
    // Before the key is looked at: a replay answers only whom the first request would have.
    state.engine.authorize(token.0, Some(hold.user)).await?;
    let claim = match begin(&state, key, hold.user, &req, &body).await? {
        Begin::Answer(replayed) => return Ok(replayed),
        Begin::Go(claim) => claim,
    };
    let view = within_deadline(state.engine.hold(hold, claim)).await?;
    Ok(respond(&state, &Answer::Held(view)))
}

/// Names the hold's ids on the handler's span: they come in the body, after the span opened.
fn record_ids(hold: &HoldRequest) {
    let span = tracing::Span::current();
    span.record("user_id", hold.user.get());
    span.record("concert_id", hold.concert.get());
    span.record("schedule_id", hold.schedule.get());
}

/// A reservation of the user, with its current status.
#[utoipa::path(get, path = "/v1/reservations/{reservationId}", tag = "reservations", security((), ("bearerAuth" = [])),
    params(("reservationId" = i64, Path, minimum = 1), OwnerQuery, ("TOKEN-ID" = String, Header, description = "the user's ACTIVE queue token, in decimal")),
    responses(
        (status = 200, body = ReservationBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active; unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, reservation_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(reservation_id = *path, user_id = query.user_id)
)]
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<OwnerQuery>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let reservation = id(path.into_inner(), ReservationId::new)?;
    let request = UserReservation::try_from((reservation, query.into_inner()))?;
    state.authenticate(&req, request.user)?;
    state.authorize_user(request.user, &token).await?;
    let view = within_deadline(state.engine.reservation(request.user, request.reservation)).await?;
    Ok(HttpResponse::Ok().json(reservation_body(&state, &view)))
}

/// Cancel a PAYMENT_PENDING reservation: its seats are free at once.
#[utoipa::path(delete, path = "/v1/reservations/{reservationId}", tag = "reservations", security((), ("bearerAuth" = [])),
    params(("reservationId" = i64, Path, minimum = 1), OwnerQuery, ("TOKEN-ID" = String, Header, description = "the user's ACTIVE queue token, in decimal")),
    responses(
        (status = 200, body = ReservationBody),
        (status = 400, description = "invalid_request, reservation_expired", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active; unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, reservation_not_found", body = ErrorBody),
        (status = 409, description = "reservation_already_paid, reservation_cancelled, payment_in_progress", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(
    level = "debug",
    skip_all,
    fields(reservation_id = *path, user_id = query.user_id)
)]
pub async fn cancel(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<OwnerQuery>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let reservation = id(path.into_inner(), ReservationId::new)?;
    let request = UserReservation::try_from((reservation, query.into_inner()))?;
    state.authenticate(&req, request.user)?;
    state.authorize_user(request.user, &token).await?;
    let view = within_deadline(state.engine.cancel(request.user, request.reservation)).await?;
    Ok(HttpResponse::Ok().json(reservation_body(&state, &view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(user_id: i64, seat_ids: Vec<i64>) -> Result<HoldRequest, ApiError> {
        let request = ReserveRequest {
            user_id,
            concert_id: 1,
            schedule_id: 2,
            seat_ids,
        };
        HoldRequest::try_from((request, &EngineSettings::default()))
    }

    fn message(result: Result<HoldRequest, ApiError>) -> String {
        result.expect_err("the request breaks a rule").to_string()
    }

    #[test]
    fn a_hold_request_keeps_the_seats_in_the_order_given() {
        let request = hold(7, vec![30, 10, 20]).expect("a valid request");
        assert_eq!(request.user.get(), 7);
        assert_eq!(request.concert.get(), 1);
        assert_eq!(request.schedule.get(), 2);
        let seats: Vec<i64> = request.seats.iter().map(|s| s.get()).collect();
        assert_eq!(seats, [30, 10, 20]);
    }

    /// Which error wins when two rules are broken is part of the contract.
    #[test]
    fn a_hold_request_checks_ids_then_the_list_size_then_each_seat() {
        assert_eq!(
            message(hold(0, vec![])),
            "userId must be a positive integer"
        );
        assert_eq!(message(hold(7, vec![])), "seatIds must not be empty");
        assert!(matches!(
            hold(7, vec![0, 1, 2, 3, 4]),
            Err(ApiError::SeatLimitExceeded)
        ));
        assert_eq!(
            message(hold(7, vec![1, 0])),
            "seatId must be a positive integer"
        );
    }
}
