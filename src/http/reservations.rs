//! Reservation routes: hold seats, read and cancel a reservation (ACTIVE token of the same user).

use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::actors::schedule::ReservationView;
use crate::domain::{ConcertId, ReservationId, ScheduleId, SeatId, UserId};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveRequest {
    user_id: i64,
    concert_id: i64,
    schedule_id: i64,
    seat_ids: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerQuery {
    user_id: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationBody {
    reservation_id: i64,
    concert_id: i64,
    concert_name: String,
    concert_at: String,
    seats: Vec<SeatLine>,
    total_price: i64,
    reservation_status: &'static str,
    expires_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SeatLine {
    seat_number: i32,
    price: i64,
}

pub fn reservation_body(state: &AppState, view: &ReservationView) -> ReservationBody {
    let r = &view.reservation;
    ReservationBody {
        reservation_id: r.id.get(),
        concert_id: view.concert_id.get(),
        concert_name: view.concert_name.clone(),
        concert_at: state.time(view.concert_at),
        seats: view
            .seats
            .iter()
            .map(|(n, p)| SeatLine {
                seat_number: *n,
                price: p.won(),
            })
            .collect(),
        total_price: r.total.won(),
        reservation_status: r.status.as_str(),
        expires_at: state.time(r.expires_at),
    }
}

/// POST /v1/reservations: all seats held for the user, or none.
pub async fn reserve(
    state: web::Data<AppState>,
    token: TokenHeader,
    body: web::Json<ReserveRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let user = id(body.user_id, UserId::new)?;
    let concert = id(body.concert_id, ConcertId::new)?;
    let schedule = id(body.schedule_id, ScheduleId::new)?;
    if body.seat_ids.is_empty() {
        return Err(ApiError::invalid("seatIds must not be empty"));
    }
    if body.seat_ids.len() > state.engine.settings().max_seats_per_user as usize {
        return Err(ApiError::SeatLimitExceeded);
    }
    let seats = body
        .seat_ids
        .iter()
        .map(|s| id(*s, SeatId::new))
        .collect::<Result<Vec<_>, _>>()?;
    if !state.engine.user_exists(user) {
        return Err(ApiError::UserNotFound);
    }
    state.engine.authorize(token.0, Some(user))?;
    let view = within_deadline(state.engine.hold(user, concert, schedule, seats)).await?;
    Ok(HttpResponse::Created().json(reservation_body(&state, &view)))
}

/// GET /v1/reservations/{reservationId}?userId=…
pub async fn read(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    query: web::Query<OwnerQuery>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let (user, reservation) = owner(&state, path.into_inner(), query.user_id, token)?;
    let view = within_deadline(state.engine.reservation(user, reservation)).await?;
    Ok(HttpResponse::Ok().json(reservation_body(&state, &view)))
}

/// DELETE /v1/reservations/{reservationId}?userId=…: voids a pending hold.
pub async fn cancel(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    query: web::Query<OwnerQuery>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let (user, reservation) = owner(&state, path.into_inner(), query.user_id, token)?;
    let view = within_deadline(state.engine.cancel(user, reservation)).await?;
    Ok(HttpResponse::Ok().json(reservation_body(&state, &view)))
}

fn owner(
    state: &AppState,
    reservation: i64,
    user: i64,
    token: TokenHeader,
) -> Result<(UserId, ReservationId), ApiError> {
    let reservation = id(reservation, ReservationId::new)?;
    let user = id(user, UserId::new)?;
    if !state.engine.user_exists(user) {
        return Err(ApiError::UserNotFound);
    }
    state.engine.authorize(token.0, Some(user))?;
    Ok((user, reservation))
}
