//! Ticket routes (API.md §12): a holder's tickets, the public key scanners verify with, a
//! ticket's QR code, and a transfer. The door's routes are in `door.rs`.

use super::error::ErrorBody;
use super::extract::{id, whole};
use super::{within_deadline, ApiError, AppState};
use crate::actors::engine::TicketView;
use crate::domain::{TicketId, UserId};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketBody {
    ticket_id: i64,
    reservation_id: i64,
    concert_id: i64,
    schedule_id: i64,
    concert_at: String,
    seat_id: i64,
    seat_number: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    seat_grade: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<String>,
    /// VALID, CHECKED_IN or VOID.
    status: &'static str,
    /// `bo1.<payload>.<signature>`.
    code: String,
    checked_in_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketsBody {
    user_id: i64,
    tickets: Vec<TicketBody>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyBody {
    key_id: String,
    /// Always `Ed25519`.
    algorithm: &'static str,
    /// The 32 raw public-key bytes, base64.
    public_key: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct HolderQuery {
    /// The ticket's holder.
    #[param(minimum = 1)]
    user_id: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferRequest {
    /// A whole number: `9` and `9.0` alike (JSON does not tell them apart).
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "whole::i64")]
    to_user_id: i64,
}

pub(super) fn ticket_body(state: &AppState, view: &TicketView) -> TicketBody {
    let t = &view.stored.ticket;
    TicketBody {
        ticket_id: t.id.get(),
        reservation_id: t.reservation.get(),
        concert_id: view.concert.get(),
        schedule_id: t.schedule.get(),
        concert_at: state.time(view.concert_at),
        seat_id: t.seat.get(),
        seat_number: view.stored.seat_number,
        seat_grade: view.stored.plan.grade().map(str::to_string),
        row: view.stored.plan.row().map(str::to_string),
        status: t.status.as_str(),
        code: view.code.clone(),
        checked_in_at: t.check_in.as_ref().map(|c| state.time(c.at)),
    }
}

/// Every ticket the user holds.
#[utoipa::path(get, path = "/v1/tickets/users/{userId}", tag = "tickets", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = TicketsBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn of_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let views = within_deadline(state.engine.tickets_of(user)).await?;
    Ok(HttpResponse::Ok().json(TicketsBody {
        user_id: user.get(),
        tickets: views.iter().map(|v| ticket_body(&state, v)).collect(),
    }))
}

/// The Ed25519 public key every code is signed for: a scanner verifies offline with it.
#[utoipa::path(get, path = "/v1/tickets/public-key", tag = "tickets",
    responses(
        (status = 200, body = PublicKeyBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn public_key(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys = state
        .engine
        .ticket_keys()
        .ok_or_else(|| ApiError::Unavailable("no ticket key yet".into()))?;
    Ok(HttpResponse::Ok().json(PublicKeyBody {
        key_id: keys.key_id().to_string(),
        algorithm: "Ed25519",
        public_key: keys.public_key_base64(),
    }))
}

/// A ticket's current code as a QR code.
#[utoipa::path(get, path = "/v1/tickets/{ticketId}/qr.svg", tag = "tickets", security((), ("bearerAuth" = [])),
    params(("ticketId" = i64, Path, minimum = 1), HolderQuery),
    responses(
        (status = 200, description = "image/svg+xml", content_type = "image/svg+xml", body = String),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, ticket_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn qr(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<HolderQuery>,
) -> Result<HttpResponse, ApiError> {
    let ticket = id(path.into_inner(), TicketId::new)?;
    let user = id(query.user_id, UserId::new)?;
    state.authenticate(&req, user)?;
    let view = within_deadline(state.engine.ticket_of(user, ticket)).await?;
    let svg = qrcode::QrCode::new(view.code.as_bytes())
        .map_err(|e| ApiError::Unavailable(format!("QR code: {e}")))?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(320, 320)
        .build();
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "no-store"))
        .body(svg))
}

/// Hand a valid ticket to another user: a new version and code; the old code stops at once.
#[utoipa::path(post, path = "/v1/tickets/{ticketId}/transfer", tag = "tickets", security((), ("bearerAuth" = [])),
    params(("ticketId" = i64, Path, minimum = 1), HolderQuery), request_body = TransferRequest,
    responses(
        (status = 200, body = TicketBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, ticket_not_found", body = ErrorBody),
        (status = 409, description = "transfer_not_allowed", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn transfer(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    query: web::Query<HolderQuery>,
    body: web::Json<TransferRequest>,
) -> Result<HttpResponse, ApiError> {
    let ticket = id(path.into_inner(), TicketId::new)?;
    let user = id(query.user_id, UserId::new)?;
    let to = id(body.to_user_id, UserId::new)?;
    state.authenticate(&req, user)?;
    if state.cluster.is_some() {
        // A user created through another node reaches this node's catalog within a round;
        // the database has them already (the forwarder learns only users in the path).
        for someone in [user, to] {
            if !state.engine.user_exists(someone) {
                state.engine.learn_user(someone).await;
            }
        }
    }
    let view = within_deadline(state.engine.transfer(user, ticket, to)).await?;
    Ok(HttpResponse::Ok().json(ticket_body(&state, &view)))
}
