//! Concert routes: upcoming schedules and a schedule's seat map (ACTIVE token required).

use super::error::ErrorBody;
use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::actors::schedule::SeatMap;
use crate::domain::seat_plan::SeatPlan;
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

/// A seat of the map. `seatGrade`, `row`, `x` and `y` appear only on seats created with them
/// (`x` and `y` together), after the seed's fields.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeatBody {
    seat_id: i64,
    seat_number: i32,
    #[schema(example = "AVAILABLE")]
    seat_status: &'static str,
    seat_price: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "VIP", min_length = 1, max_length = 32)]
    seat_grade: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "B", min_length = 1, max_length = 8)]
    row: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0, maximum = 999)]
    x: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0, maximum = 999)]
    y: Option<u16>,
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
    state.engine.authorize(token.0, None).await?;
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
    state.engine.authorize(token.0, None).await?;
    let (info, map) = within_deadline(state.engine.seats(concert, schedule)).await?;
    Ok(HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(seats_json(
            concert.get(),
            &state.time(info.concert_at),
            &map,
        )))
}

/// The seat map's JSON, the bytes serde would write for [`SeatsResponse`], written directly:
/// every user reads the whole map, and serde's per-field path was costly (docs/BENCHMARKS.md).
/// A test checks the two byte for byte.
fn seats_json(concert_id: i64, concert_at: &str, map: &SeatMap) -> Vec<u8> {
    let seats = &map.seats;
    // The plan, when there is one, has one entry per seat in the same order.
    let plan = map.plan.as_deref().filter(|p| p.len() == seats.len());
    debug_assert_eq!(
        plan.is_some(),
        map.plan.is_some(),
        "one plan entry per seat"
    );
    // 78 bytes is a seat with a 7-digit id and price and an UNAVAILABLE status; a plan adds
    // about 40 (a short grade and row, three-digit x and y).
    let per_seat = if plan.is_some() { 120 } else { 78 };
    let mut out = Vec::with_capacity(96 + seats.len() * per_seat);
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
        if let Some(labels) = plan.map(|p| &p[i]) {
            plan_json(&mut out, &mut n, labels);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// A seat's plan fields, each only when set, in [`SeatBody`]'s order.
fn plan_json(out: &mut Vec<u8>, n: &mut itoa::Buffer, labels: &SeatPlan) {
    if let Some(grade) = labels.grade() {
        out.extend_from_slice(b",\"seatGrade\":");
        // Serializing a &str into a Vec cannot fail; serde_json escapes it as it would anywhere.
        let _ = serde_json::to_writer(&mut *out, grade);
    }
    if let Some(row) = labels.row() {
        out.extend_from_slice(b",\"row\":");
        let _ = serde_json::to_writer(&mut *out, row);
    }
    if let Some(position) = labels.position() {
        out.extend_from_slice(b",\"x\":");
        out.extend_from_slice(n.format(position.x()).as_bytes());
        out.extend_from_slice(b",\"y\":");
        out.extend_from_slice(n.format(position.y()).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::schedule::SeatView;
    use crate::domain::seat_plan::schedule_plan;
    use crate::domain::{Money, SeatId};
    use proptest::prelude::*;

    /// What `HttpResponse::json` would have sent.
    fn serde_bytes(concert_id: i64, concert_at: &str, map: &SeatMap) -> Vec<u8> {
        let labels = |i: usize| map.plan.as_ref().map(|p| &p[i]);
        let response = SeatsResponse {
            concert_id,
            concert_at: concert_at.to_string(),
            seats: map
                .seats
                .iter()
                .enumerate()
                .map(|(i, s)| SeatBody {
                    seat_id: s.id.get(),
                    seat_number: s.number,
                    seat_status: if s.available {
                        "AVAILABLE"
                    } else {
                        "UNAVAILABLE"
                    },
                    seat_price: s.price.won(),
                    seat_grade: labels(i).and_then(SeatPlan::grade).map(str::to_owned),
                    row: labels(i).and_then(SeatPlan::row).map(str::to_owned),
                    x: labels(i).and_then(SeatPlan::position).map(|p| p.x()),
                    y: labels(i).and_then(SeatPlan::position).map(|p| p.y()),
                })
                .collect(),
        };
        serde_json::to_vec(&response).expect("a SeatsResponse always serializes")
    }

    /// Plan labels as the admin route would accept them, or none: texts with quotes,
    /// backslashes, spaces, non-ASCII and U+2028 (legal unescaped in JSON). Control characters,
    /// the rest of what JSON escapes, are refused by the route and never reach the map.
    fn labels() -> impl Strategy<Value = SeatPlan> {
        (
            prop::option::of("[A-Z\"\\\\é가/\u{2028} ]{1,32}"),
            prop::option::of("[A-Z0-9\"\\\\열]{1,8}"),
            prop::option::of((0..=999i64, 0..=999i64)),
        )
            .prop_filter_map("labels the route accepts", |(grade, row, position)| {
                SeatPlan::new(grade, row, position.map(|p| p.0), position.map(|p| p.1)).ok()
            })
    }

    proptest! {
        #[test]
        fn the_hand_written_seat_map_is_serdes_byte_for_byte(
            concert_id in 1..i64::MAX,
            concert_at in "[0-9T:\\-\"\\\\é]{0,24}",
            seats in prop::collection::vec(
                (1..i64::MAX, i32::MIN..i32::MAX, 0..i64::MAX, any::<bool>(), labels()),
                0..40,
            ),
            planned in any::<bool>(),
        ) {
            let (seats, plan): (Vec<SeatView>, Vec<SeatPlan>) = seats
                .into_iter()
                .filter_map(|(id, number, price, available, labels)| {
                    Some((
                        SeatView {
                            id: SeatId::new(id).ok()?,
                            number,
                            price: Money::new(price)?,
                            available,
                        },
                        labels,
                    ))
                })
                .unzip();
            // Without a plan the bytes are the seed's; with one, each seat's set labels follow.
            let plan = if planned { schedule_plan(plan) } else { None };
            let map = SeatMap { seats, plan };
            prop_assert_eq!(
                String::from_utf8(seats_json(concert_id, &concert_at, &map)).unwrap(),
                String::from_utf8(serde_bytes(concert_id, &concert_at, &map)).unwrap()
            );
        }
    }

    #[test]
    fn plan_labels_follow_the_seed_fields_and_are_escaped() {
        let seat = |id: i64| SeatView {
            id: SeatId::new(id).unwrap(),
            number: id as i32,
            price: Money::new(100).unwrap(),
            available: true,
        };
        let labelled =
            SeatPlan::new(Some("V\"I\\P".into()), Some("A".into()), Some(3), Some(0)).unwrap();
        let map = SeatMap {
            seats: vec![seat(1), seat(2)],
            plan: schedule_plan(vec![labelled, SeatPlan::default()]),
        };
        assert_eq!(
            String::from_utf8(seats_json(1, "t", &map)).unwrap(),
            r#"{"concertId":1,"concertAt":"t","seats":[{"seatId":1,"seatNumber":1,"seatStatus":"AVAILABLE","seatPrice":100,"seatGrade":"V\"I\\P","row":"A","x":3,"y":0},{"seatId":2,"seatNumber":2,"seatStatus":"AVAILABLE","seatPrice":100}]}"#
        );
    }
}
