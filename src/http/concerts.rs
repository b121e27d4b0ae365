//! Concert routes: upcoming schedules and a schedule's seat map (ACTIVE token required).

use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::domain::{ConcertId, ScheduleId};
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchedulesResponse {
    concert_id: i64,
    events: Vec<Event>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    schedule_id: i64,
    concert_at: String,
    reservation_at: String,
    available_seat_count: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SeatsResponse {
    concert_id: i64,
    concert_at: String,
    seats: Vec<SeatBody>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SeatBody {
    seat_id: i64,
    seat_number: i32,
    seat_status: &'static str,
    seat_price: i64,
}

/// GET /v1/concerts/{concertId}/schedules
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

/// GET /v1/concerts/{concertId}/schedules/{scheduleId}/seats
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
