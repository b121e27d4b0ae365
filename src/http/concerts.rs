//! Concert routes: upcoming schedules and a schedule's seat map (ACTIVE token required).

use super::error::ErrorBody;
use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::domain::{ConcertId, ScheduleId};
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulesResponse {
    concert_id: i64,
    events: Vec<Event>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    schedule_id: i64,
    concert_at: String,
    reservation_at: String,
    available_seat_count: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatsResponse {
    concert_id: i64,
    concert_at: String,
    seats: Vec<SeatBody>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatBody {
    seat_id: i64,
    seat_number: i32,
    #[schema(example = "AVAILABLE")]
    seat_status: &'static str,
    seat_price: i64,
}

/// The schedules of a concert still to come, ordered by date.
#[utoipa::path(get, path = "/v1/concerts/{concertId}/schedules", tag = "concerts",
    params(("concertId" = i64, Path), ("TOKEN-ID" = i64, Header, description = "an ACTIVE queue token")),
    responses(
        (status = 200, body = SchedulesResponse),
        (status = 400, description = "malformed concert id", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active", body = ErrorBody),
        (status = 404, description = "concert_not_found", body = ErrorBody),
    ))]
pub async fn schedules(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let concert = id(path.into_inner(), ConcertId::new)?;
    state.engine.authorize(token.0, None)?;
    let events = state
        .engine
        .upcoming_schedules(concert)?
        .into_iter()
        .map(|(info, available)| Event {
            schedule_id: info.id.get(),
            concert_at: state.time(info.concert_at),
            reservation_at: state.time(info.reservation_at),
            available_seat_count: available,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SchedulesResponse {
        concert_id: concert.get(),
        events,
    }))
}

/// A schedule's seat map as the database has it: held and sold seats are UNAVAILABLE; a seat
/// whose hold is still being committed shows as AVAILABLE until the commit.
#[utoipa::path(get, path = "/v1/concerts/{concertId}/schedules/{scheduleId}/seats", tag = "concerts",
    params(("concertId" = i64, Path), ("scheduleId" = i64, Path), ("TOKEN-ID" = i64, Header, description = "an ACTIVE queue token")),
    responses(
        (status = 200, body = SeatsResponse),
        (status = 400, description = "malformed ids", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active", body = ErrorBody),
        (status = 404, description = "concert_not_found, schedule_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn seats(
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let (concert, schedule) = path.into_inner();
    let concert = id(concert, ConcertId::new)?;
    let schedule = id(schedule, ScheduleId::new)?;
    state.engine.authorize(token.0, None)?;
    let (info, seats) = within_deadline(state.engine.seats(concert, schedule)).await?;
    Ok(HttpResponse::Ok().json(SeatsResponse {
        concert_id: concert.get(),
        concert_at: state.time(info.concert_at),
        seats: seats
            .into_iter()
            .map(|s| SeatBody {
                seat_id: s.id.get(),
                seat_number: s.number,
                seat_status: if s.available {
                    "AVAILABLE"
                } else {
                    "UNAVAILABLE"
                },
                seat_price: s.price.won(),
            })
            .collect(),
    }))
}
