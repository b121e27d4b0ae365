//! Concert routes: upcoming schedules and a schedule's seat map (ACTIVE token required).

use super::error::ErrorBody;
use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::actors::schedule::SeatView;
use crate::domain::{ConcertId, ScheduleId};
use actix_web::http::header::ContentType;
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
    params(("concertId" = i64, Path, minimum = 1), ("TOKEN-ID" = String, Header, description = "an ACTIVE queue token, in decimal")),
    responses(
        (status = 200, body = SchedulesResponse),
        (status = 400, description = "malformed concert id", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active", body = ErrorBody),
        (status = 404, description = "concert_not_found", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(concert_id = *path))]
pub async fn schedules(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let concert = id(path.into_inner(), ConcertId::new)?;
    state.engine.authorize(token.0, None)?;
    let upcoming = state.engine.upcoming_schedules(concert)?;
    Ok(HttpResponse::Ok().json(SchedulesResponse {
        concert_id: concert.get(),
        events: upcoming
            .into_iter()
            .map(|(info, available)| Event {
                schedule_id: info.id.get(),
                concert_at: state.time(info.concert_at),
                reservation_at: state.time(info.reservation_at),
                available_seat_count: available,
            })
            .collect(),
    }))
}

/// A schedule's seat map as the database has it: held and sold seats are UNAVAILABLE; a seat
/// whose hold is still being committed shows as AVAILABLE until the commit.
#[utoipa::path(get, path = "/v1/concerts/{concertId}/schedules/{scheduleId}/seats", tag = "concerts",
    params(("concertId" = i64, Path, minimum = 1), ("scheduleId" = i64, Path, minimum = 1), ("TOKEN-ID" = String, Header, description = "an ACTIVE queue token, in decimal")),
    responses(
        (status = 200, body = SeatsResponse),
        (status = 400, description = "malformed ids", body = ErrorBody),
        (status = 401, description = "invalid_token, token_expired, token_not_active", body = ErrorBody),
        (status = 404, description = "concert_not_found, schedule_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(concert_id = path.0, schedule_id = path.1))]
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
    Ok(HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(seats_json(
            concert.get(),
            &state.time(info.concert_at),
            &seats,
        )))
}

/// The seat map's JSON, the bytes serde would write for [`SeatsResponse`], written directly:
/// every user reads the whole map, and serde's per-field path was costly (docs/BENCHMARKS.md).
/// A test checks the two byte for byte.
fn seats_json(concert_id: i64, concert_at: &str, seats: &[SeatView]) -> Vec<u8> {
    // 78 bytes is a seat with a 7-digit id and price and an UNAVAILABLE status.
    let mut out = Vec::with_capacity(96 + seats.len() * 78);
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"concertId\":");
    out.extend_from_slice(n.format(concert_id).as_bytes());
    out.extend_from_slice(b",\"concertAt\":");
    // Serializing a &str into a Vec cannot fail; serde_json escapes it as it would anywhere.
    let _ = serde_json::to_writer(&mut out, concert_at);
    out.extend_from_slice(b",\"seats\":[");
    for (i, seat) in seats.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"seatId\":");
        out.extend_from_slice(n.format(seat.id.get()).as_bytes());
        out.extend_from_slice(b",\"seatNumber\":");
        out.extend_from_slice(n.format(seat.number).as_bytes());
        out.extend_from_slice(if seat.available {
            b",\"seatStatus\":\"AVAILABLE\",\"seatPrice\":"
        } else {
            b",\"seatStatus\":\"UNAVAILABLE\",\"seatPrice\":"
        });
        out.extend_from_slice(n.format(seat.price.won()).as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Money, SeatId};
    use proptest::prelude::*;

    /// What `HttpResponse::json` would have sent.
    fn serde_bytes(concert_id: i64, concert_at: &str, seats: &[SeatView]) -> Vec<u8> {
        let response = SeatsResponse {
            concert_id,
            concert_at: concert_at.to_string(),
            seats: seats
                .iter()
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
        };
        serde_json::to_vec(&response).expect("a SeatsResponse always serializes")
    }

    proptest! {
        #[test]
        fn the_hand_written_seat_map_is_serdes_byte_for_byte(
            concert_id in 1..i64::MAX,
            concert_at in "[0-9T:\\-\"\\\\é]{0,24}",
            seats in prop::collection::vec(
                (1..i64::MAX, i32::MIN..i32::MAX, 0..i64::MAX, any::<bool>()),
                0..40,
            ),
        ) {
            let seats: Vec<SeatView> = seats
                .into_iter()
                .filter_map(|(id, number, price, available)| {
                    Some(SeatView {
                        id: SeatId::new(id).ok()?,
                        number,
                        price: Money::new(price)?,
                        available,
                    })
                })
                .collect();
            prop_assert_eq!(
                String::from_utf8(seats_json(concert_id, &concert_at, &seats)).unwrap(),
                String::from_utf8(serde_bytes(concert_id, &concert_at, &seats)).unwrap()
            );
        }
    }
}
