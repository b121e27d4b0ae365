//! Admin routes (header `X-Admin-Key`): create users and concerts with their seat maps.

use super::error::ErrorBody;
use super::extract::whole;
use super::{within_deadline, ApiError, AppState};
use crate::domain::catalog::{CreatedConcert, NewConcert, NewSchedule};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::wallet::NewUser;
use crate::domain::{Money, Timestamp};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::FixedOffset;
use serde::de::{Deserializer, Error as _, Unexpected};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::future::{ready, Ready};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

const MAX_NAME_CHARS: usize = 200;
const MAX_SCHEDULES: usize = 100;
const MAX_SEATS_PER_SCHEDULE: usize = 20_000;
/// Ten billion won: far above any ticket, far below overflow when four are summed.
const MAX_PRICE: i64 = 10_000_000_000;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 1 to 200 characters once trimmed of white space (Unicode's, as the pattern spells
    /// out), and no NUL.
    #[schema(
        pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000]{0,198}[^\u0000\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    name: String,
    /// Optional opening balance (demo and test setups).
    #[serde(default, deserialize_with = "whole::i64")]
    #[schema(minimum = 0)]
    balance: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateConcertRequest {
    /// 1 to 200 characters once trimmed of white space (Unicode's, as the pattern spells
    /// out), and no NUL.
    #[schema(
        pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\u0000]{0,198}[^\u0000\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    name: String,
    #[schema(min_items = 1, max_items = 100)]
    schedules: Vec<ScheduleRequest>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleRequest {
    /// In the seed's format, in the service's zone.
    #[schema(
        example = "2030-08-04T10:00:00",
        pattern = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
    )]
    concert_at: String,
    /// When booking opens: not after `concertAt`.
    #[schema(
        example = "2030-07-19T10:00:00",
        pattern = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
    )]
    reservation_at: String,
    /// Seat numbers unique within the schedule.
    #[schema(min_items = 1, max_items = 20000)]
    seats: Vec<SeatRequest>,
}

/// A seat, with its optional place on the plan: `grade`, `row`, and `x` with `y` (both or
/// neither). A seat without them shows in the seat map exactly as in the seed contract.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeatRequest {
    #[serde(deserialize_with = "whole::i32")]
    seat_number: i32,
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    #[serde(deserialize_with = "whole::i64")]
    price: i64,
    /// The seat's grade ("VIP"): 1 to 32 characters, no control characters.
    #[serde(default)]
    #[schema(
        example = "VIP",
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,32}$"
    )]
    grade: Option<String>,
    /// The seat's row label ("B"): 1 to 8 characters, no control characters.
    #[serde(default)]
    #[schema(
        example = "B",
        min_length = 1,
        max_length = 8,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,8}$"
    )]
    row: Option<String>,
    /// Where the seat is drawn on the plan, 0 to 999; given together with `y`, or neither.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 0, maximum = 999)]
    x: Option<i64>,
    /// Where the seat is drawn on the plan, 0 to 999; given together with `x`, or neither.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 0, maximum = 999)]
    y: Option<i64>,
}

/// A coordinate, read as [`whole`](super::extract::whole) reads a number. Absent is `None`
/// (the field's `default`); `null` is refused: the document lists `x` and `y` as integers
/// that require each other, and a `null` would be present without being a position.
fn optional_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let number = serde_json::Number::deserialize(d)?;
    super::extract::whole(&number).map(Some).ok_or_else(|| {
        D::Error::invalid_value(Unexpected::Other(&number.to_string()), &"a whole number")
    })
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    user_id: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcertCreated {
    concert_id: i64,
    schedules: Vec<ScheduleCreated>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleCreated {
    schedule_id: i64,
    seat_ids: Vec<i64>,
}

/// Compares in time independent of the keys: both sides are hashed first, so neither where
/// they differ nor how long the right key is shows in the time taken.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    Sha256::digest(given).ct_eq(&Sha256::digest(key)).into()
}

/// Before the body's rules: a wrong key answers 403 even when a field breaks one.
pub(super) fn check_admin(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(key) = &state.admin_key else {
        return Err(ApiError::Forbidden("admin routes are disabled"));
    };
    let given = req
        .headers()
        .get("X-Admin-Key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if same_key(given, key.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("invalid admin key"))
    }
}

/// The request carries the admin key. The first argument of an admin handler: extractors run
/// in order and the first refusal answers, so a request without the key gets its 403 before
/// `web::Json` reads a byte of its (up to 4 MiB) body.
pub(crate) struct AdminAccess;

impl FromRequest for AdminAccess {
    type Error = ApiError;
    type Future = Ready<Result<AdminAccess, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let access = match req.app_data::<web::Data<AppState>>() {
            Some(state) => check_admin(state, req).map(|()| AdminAccess),
            None => Err(ApiError::Unavailable("no application state".into())),
        };
        ready(access)
    }
}

fn name(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.contains('\0') {
        // PostgreSQL's text cannot hold it: the insert would fail, a 5xx.
        return Err(ApiError::invalid("name must not contain NUL"));
    }
    if text.is_empty() || text.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(text.to_string())
}

impl TryFrom<CreateUserRequest> for NewUser {
    type Error = ApiError;

    fn try_from(body: CreateUserRequest) -> Result<NewUser, ApiError> {
        Ok(NewUser {
            name: name(&body.name)?,
            balance: Money::new(body.balance)
                .ok_or_else(|| ApiError::invalid("balance must not be negative"))?,
        })
    }
}

/// Timestamps are read in the service's zone.
impl TryFrom<(CreateConcertRequest, FixedOffset)> for NewConcert {
    type Error = ApiError;

    fn try_from(
        (body, timezone): (CreateConcertRequest, FixedOffset),
    ) -> Result<NewConcert, ApiError> {
        Ok(NewConcert {
            name: name(&body.name)?,
            schedules: schedules(timezone, body.schedules)?,
        })
    }
}

impl From<CreatedConcert> for ConcertCreated {
    fn from(created: CreatedConcert) -> ConcertCreated {
        ConcertCreated {
            concert_id: created.id.get(),
            schedules: created
                .schedules
                .iter()
                .map(|schedule| ScheduleCreated {
                    schedule_id: schedule.info.id.get(),
                    seat_ids: schedule.seats.iter().map(|s| s.id.get()).collect(),
                })
                .collect(),
        }
    }
}

/// Create a user (and their wallet).
#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", request_body = CreateUserRequest,
    params(("X-Admin-Key" = String, Header)),
    responses(
        (status = 201, body = UserCreated),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create_user(
    _admin: AdminAccess,
    state: web::Data<AppState>,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = NewUser::try_from(body.into_inner())?;
    let user = within_deadline(state.engine.create_user(user.name, user.balance)).await?;
    Ok(HttpResponse::Created().json(UserCreated {
        user_id: user.get(),
    }))
}

/// Create a concert with its schedules and seat maps; seat ids come back in the order given.
#[utoipa::path(post, path = "/v1/admin/concerts", tag = "admin", request_body = CreateConcertRequest,
    params(("X-Admin-Key" = String, Header)),
    responses(
        (status = 201, body = ConcertCreated),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create_concert(
    _admin: AdminAccess,
    state: web::Data<AppState>,
    body: web::Json<CreateConcertRequest>,
) -> Result<HttpResponse, ApiError> {
    let concert = NewConcert::try_from((body.into_inner(), state.timezone))?;
    let created = within_deadline(state.engine.create_concert(concert)).await?;
    Ok(HttpResponse::Created().json(ConcertCreated::from(created)))
}

fn schedules(
    timezone: FixedOffset,
    requested: Vec<ScheduleRequest>,
) -> Result<Vec<NewSchedule>, ApiError> {
    if requested.is_empty() || requested.len() > MAX_SCHEDULES {
        return Err(ApiError::invalid(format!(
            "a concert has 1 to {MAX_SCHEDULES} schedules"
        )));
    }
    let time = |field: &str, text: &str| {
        Timestamp::parse(text, timezone)
            .ok_or_else(|| ApiError::invalid(format!("{field} must look like 2024-07-04T10:00:00")))
    };
    requested
        .into_iter()
        .map(|s| {
            let concert_at = time("concertAt", &s.concert_at)?;
            let reservation_at = time("reservationAt", &s.reservation_at)?;
            if reservation_at > concert_at {
                return Err(ApiError::invalid(
                    "reservationAt must not be after concertAt",
                ));
            }
            if s.seats.is_empty() || s.seats.len() > MAX_SEATS_PER_SCHEDULE {
                return Err(ApiError::invalid(format!(
                    "a schedule has 1 to {MAX_SEATS_PER_SCHEDULE} seats"
                )));
            }
            let mut numbers = HashSet::new();
            let mut plan = Vec::with_capacity(s.seats.len());
            let seats = s
                .seats
                .into_iter()
                .map(|seat| {
                    if !numbers.insert(seat.seat_number) {
                        return Err(ApiError::invalid(format!(
                            "seat number {} appears twice",
                            seat.seat_number
                        )));
                    }
                    let price = Money::new(seat.price)
                        .filter(|p| p.won() <= MAX_PRICE)
                        .ok_or_else(|| {
                            ApiError::invalid(format!("price must be 0 to {MAX_PRICE}"))
                        })?;
                    let labels =
                        SeatPlan::new(seat.grade, seat.row, seat.x, seat.y).map_err(|e| {
                            ApiError::invalid(format!("seat {}: {e}", seat.seat_number))
                        })?;
                    plan.push(labels);
                    Ok((seat.seat_number, price))
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            if plan.iter().all(SeatPlan::is_empty) {
                // No seat has a label: the schedule has no plan at all (the seed's map).
                plan = Vec::new();
            }
            Ok(NewSchedule {
                concert_at,
                reservation_at,
                seats,
                plan,
            })
        })
        .collect()
}
