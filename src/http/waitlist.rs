//! The waiting list, a performance's cancellation and its audit (API.md §12). The list needs
//! no queue token (the person waits instead of polling); in `--auth jwt` mode the owner's
//! bearer. The two admin routes take the admin key.

use super::admin::AdminAccess;
use super::error::ErrorBody;
use super::extract::{id, whole};
use super::{within_deadline, ApiError, AppState};
use crate::actors::engine::WaitlistKey;
use crate::actors::schedule::WaitlistView;
use crate::actors::WaitlistError;
use crate::domain::waitlist::WaitlistRefusal;
use crate::domain::{ConcertId, ScheduleId, UserId};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// 1 to the per-user seat limit.
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "whole::i64")]
    seats: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitlistBody {
    /// 1 for the first entry of the list.
    position: usize,
    #[schema(example = "WAITING")]
    status: &'static str,
    seats: u32,
    /// The offered hold (`OFFERED` only): pay it like any reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation_id: Option<i64>,
    /// Until when the offer is held, in the service's zone (`OFFERED` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    /// Whole seconds left on the offer (`OFFERED` only): a page counts down from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_offer_seconds: Option<u64>,
}

/// `{ ok, count }` of one invariant.
#[derive(Serialize, ToSchema)]
pub struct Check {
    ok: bool,
    count: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditBody {
    schedule_id: i64,
    /// Every check below is ok.
    ok: bool,
    no_seat_sold_twice: Check,
    sold_within_capacity: Check,
    sold: i64,
    capacity: i64,
    paid_have_one_payment: Check,
    refunded_have_one_refund: Check,
    wallets_match_ledger: Check,
    /// `PAID` reservations without one `VALID` or `CHECKED_IN` ticket per seat.
    paid_have_one_ticket_per_seat: Check,
    /// Tickets not `VOID` on a reservation that is not `PAID` (refunded, cancelled, unpaid).
    unpaid_have_only_void_tickets: Check,
    /// Seats with more than one ticket carrying a check-in.
    no_ticket_checked_in_twice: Check,
    /// Live tickets whose status and check-in record disagree (`CHECKED_IN` without the
    /// scan's time and gate, or `VALID` with them).
    check_ins_match_status: Check,
}

type EntryPath = web::Path<(i64, i64, i64)>;

fn key(state: &AppState, req: &HttpRequest, path: EntryPath) -> Result<WaitlistKey, ApiError> {
    let (concert, schedule, user) = path.into_inner();
    let key = WaitlistKey {
        concert: id(concert, ConcertId::new)?,
        schedule: id(schedule, ScheduleId::new)?,
        user: id(user, UserId::new)?,
    };
    state.authenticate(req, key.user)?;
    Ok(key)
}

fn body(state: &AppState, view: &WaitlistView) -> WaitlistBody {
    WaitlistBody {
        position: view.position,
        status: view.status,
        seats: view.seats,
        reservation_id: view.reservation.map(|r| r.get()),
        expires_at: view.expires_at.map(|t| state.time(t)),
        remaining_offer_seconds: view
            .expires_at
            .map(|t| state.engine.now().until(t).as_secs()),
    }
}

impl From<WaitlistError> for ApiError {
    fn from(e: WaitlistError) -> Self {
        match e {
            WaitlistError::Booking(e) => e.into(),
            WaitlistError::Refused(rule) => match rule {
                WaitlistRefusal::BadSeats { limit } => {
                    ApiError::invalid(format!("seats must be 1 to {limit}"))
                }
                WaitlistRefusal::AlreadyJoined => ApiError::WaitlistAlreadyJoined,
                WaitlistRefusal::SeatsOnSale => ApiError::WaitlistSeatsOnSale,
                WaitlistRefusal::Full => ApiError::WaitlistFull,
                WaitlistRefusal::Closed => ApiError::WaitlistClosed,
                WaitlistRefusal::NotFound => ApiError::WaitlistEntryNotFound,
            },
        }
    }
}

/// Join a schedule's waiting list (only when nothing is on general sale).
#[utoipa::path(post, path = "/v1/concerts/{concertId}/schedules/{scheduleId}/waitlist/users/{userId}", tag = "waitlist", security((), ("bearerAuth" = [])), request_body = JoinRequest,
    params(("concertId" = i64, Path, minimum = 1), ("scheduleId" = i64, Path, minimum = 1), ("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 201, body = WaitlistBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, concert_not_found, schedule_not_found", body = ErrorBody),
        (status = 409, description = "waitlist_already_joined, seats_on_sale, waitlist_full (100,000 entries), waitlist_closed", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn join(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: EntryPath,
    json: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let key = key(&state, &req, path)?;
    let request: JoinRequest = serde_json::from_value(json.into_inner())
        .map_err(|e| ApiError::invalid(format!("invalid body: {e}")))?;
    if request.seats < 1 {
        return Err(ApiError::invalid("seats must be at least 1"));
    }
    // Past u32 it is past any per-user limit too: the book refuses it with that limit.
    let seats = u32::try_from(request.seats).unwrap_or(u32::MAX);
    let view = within_deadline(state.engine.join_waitlist(key, seats)).await?;
    Ok(HttpResponse::Created().json(body(&state, &view)))
}

/// A user's entry: its position, and the offer once seats were offered.
#[utoipa::path(get, path = "/v1/concerts/{concertId}/schedules/{scheduleId}/waitlist/users/{userId}", tag = "waitlist", security((), ("bearerAuth" = [])),
    params(("concertId" = i64, Path, minimum = 1), ("scheduleId" = i64, Path, minimum = 1), ("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = WaitlistBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, concert_not_found, schedule_not_found, waitlist_entry_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: EntryPath,
) -> Result<HttpResponse, ApiError> {
    let key = key(&state, &req, path)?;
    let view = within_deadline(state.engine.read_waitlist(key)).await?;
    Ok(HttpResponse::Ok().json(body(&state, &view)))
}

/// Leave the list; an offer already made stays held until paid or expired.
#[utoipa::path(delete, path = "/v1/concerts/{concertId}/schedules/{scheduleId}/waitlist/users/{userId}", tag = "waitlist", security((), ("bearerAuth" = [])),
    params(("concertId" = i64, Path, minimum = 1), ("scheduleId" = i64, Path, minimum = 1), ("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = WaitlistBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, concert_not_found, schedule_not_found, waitlist_entry_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn leave(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: EntryPath,
) -> Result<HttpResponse, ApiError> {
    let key = key(&state, &req, path)?;
    let view = within_deadline(state.engine.leave_waitlist(key)).await?;
    Ok(HttpResponse::Ok().json(body(&state, &view)))
}

/// The schedule's invariants, counted from the database.
#[utoipa::path(get, path = "/v1/admin/schedules/{scheduleId}/audit", tag = "admin",
    params(("scheduleId" = i64, Path, minimum = 1), ("X-Admin-Key" = String, Header)),
    responses(
        (status = 200, body = AuditBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "schedule_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn audit(
    _admin: AdminAccess,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let schedule = id(path.into_inner(), ScheduleId::new)?;
    let counts = within_deadline(async {
        state
            .engine
            .audit(schedule)
            .await
            .map_err(|e| ApiError::Unavailable(format!("audit failed: {e}")))
    })
    .await?
    .ok_or(ApiError::ScheduleNotFound)?;
    let check = |count: i64| Check {
        ok: count == 0,
        count,
    };
    let over = (counts.sold - counts.capacity).max(0);
    let tickets = counts.tickets;
    let body = AuditBody {
        schedule_id: schedule.get(),
        ok: [
            counts.seats_sold_twice,
            over,
            counts.paid_without_one_payment,
            counts.refunded_without_one_refund,
            counts.wallets_off_ledger,
            tickets.paid_without_one_ticket_per_seat,
            tickets.live_tickets_not_paid,
            tickets.seats_checked_in_twice,
            tickets.check_ins_off_record,
        ]
        .iter()
        .all(|&n| n == 0),
        no_seat_sold_twice: check(counts.seats_sold_twice),
        sold_within_capacity: check(over),
        sold: counts.sold,
        capacity: counts.capacity,
        paid_have_one_payment: check(counts.paid_without_one_payment),
        refunded_have_one_refund: check(counts.refunded_without_one_refund),
        wallets_match_ledger: check(counts.wallets_off_ledger),
        paid_have_one_ticket_per_seat: check(tickets.paid_without_one_ticket_per_seat),
        unpaid_have_only_void_tickets: check(tickets.live_tickets_not_paid),
        no_ticket_checked_in_twice: check(tickets.seats_checked_in_twice),
        check_ins_match_status: check(tickets.check_ins_off_record),
    };
    Ok(HttpResponse::Ok().json(body))
}

/// Cancel a whole performance: nothing more is sold, every hold released, every paid
/// reservation refunded.
#[utoipa::path(post, path = "/v1/admin/schedules/{scheduleId}/cancel", tag = "admin",
    params(("scheduleId" = i64, Path, minimum = 1), ("X-Admin-Key" = String, Header)),
    responses(
        (status = 200, body = CancelledBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "schedule_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn cancel_performance(
    _admin: AdminAccess,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let schedule = id(path.into_inner(), ScheduleId::new)?;
    let report = within_deadline(state.engine.cancel_performance(schedule)).await?;
    Ok(HttpResponse::Ok().json(CancelledBody {
        schedule_id: schedule.get(),
        status: "CANCELLED",
        holds_released: report.voided,
        reservations_refunded: report.refunded,
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelledBody {
    schedule_id: i64,
    #[schema(example = "CANCELLED")]
    status: &'static str,
    /// Holds this call released (a repeated call releases and refunds nothing twice).
    holds_released: usize,
    /// Paid reservations this call refunded.
    reservations_refunded: usize,
}
