//! The fair opening's routes (API.md §11): the admin schedules or cancels it, anyone reads it
//! and, once drawn, pages through the drawn order to check it (`boxoffice verify-draw`).

use super::admin::AdminAccess;
use super::error::ErrorBody;
use super::{within_deadline, ApiError, AppState};
use crate::actors::queue::OpeningError;
use crate::domain::queue::{DrawPage, OpeningRefusal, OpeningSummary};
use crate::domain::Timestamp;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The largest page of `GET /v1/queue/draw` (API.md §11): 10,000 names are 660 KB of JSON.
pub const MAX_DRAW_PAGE: usize = 10_000;
/// The page size when `limit` is not given.
const DEFAULT_DRAW_PAGE: usize = 1_000;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleOpeningRequest {
    /// When the pre-queue is drawn, in the seed's format and the service's zone; in the future.
    #[schema(
        example = "2030-07-19T10:00:00",
        pattern = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
    )]
    opens_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpeningScheduled {
    opens_at: String,
    /// `hex(SHA-256(seed))`: the seed itself is shown only after the draw.
    commitment: String,
    /// `SCHEDULED`.
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpeningResponse {
    opens_at: Option<String>,
    commitment: Option<String>,
    /// `NONE`, `SCHEDULED` or `DRAWN`.
    status: &'static str,
    /// SCHEDULED: the pre-queue so far; DRAWN: the participants of the draw.
    participants: u64,
    /// The 32-byte seed in hex, once drawn (`null` before).
    seed: Option<String>,
    /// `hex(SHA-256(the sorted public names joined by "\n"))`, once drawn.
    participants_digest: Option<String>,
    drawn_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrawResponse {
    commitment: String,
    seed: String,
    participants_digest: String,
    total: u64,
    /// The public names `hex(SHA-256(decimal tokenId))`, place `offset + 1` first.
    order: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DrawQuery {
    /// Places to skip (past the end: an empty page). At most 2^53 - 1, the largest whole
    /// number every JSON client reads exactly.
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    offset: Option<usize>,
    /// Places in this page: 1 to 10,000 (default 1,000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

impl From<OpeningError> for ApiError {
    fn from(e: OpeningError) -> ApiError {
        match e {
            OpeningError::Refused(OpeningRefusal::AlreadyDrawn) => ApiError::OpeningAlreadyDrawn,
            OpeningError::Refused(OpeningRefusal::NotInTheFuture) => {
                ApiError::invalid("opensAt must be in the future")
            }
            OpeningError::DrawNotFound => ApiError::DrawNotFound,
            OpeningError::Unavailable(u) => u.into(),
        }
    }
}

fn opening_response(state: &AppState, summary: OpeningSummary) -> OpeningResponse {
    OpeningResponse {
        opens_at: summary.opens_at.map(|t| state.time(t)),
        commitment: summary.commitment,
        status: summary.status.name(),
        participants: summary.participants,
        seed: summary.seed,
        participants_digest: summary.participants_digest,
        drawn_at: summary.drawn_at.map(|t| state.time(t)),
    }
}

/// Schedule the fair opening (or move a scheduled one: a new seed, a new commitment).
#[utoipa::path(put, path = "/v1/admin/queue/opening", tag = "admin", request_body = ScheduleOpeningRequest,
    params(("X-Admin-Key" = String, Header)),
    responses(
        (status = 200, description = "scheduled; the seed is stored before this answer", body = OpeningScheduled),
        (status = 400, description = "invalid_request (also: opensAt not in the future)", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 409, description = "opening_already_drawn", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn schedule(
    _admin: AdminAccess,
    state: web::Data<AppState>,
    body: web::Json<ScheduleOpeningRequest>,
) -> Result<HttpResponse, ApiError> {
    let opens_at = Timestamp::parse(&body.opens_at, state.timezone)
        .ok_or_else(|| ApiError::invalid("opensAt must look like 2024-07-04T10:00:00"))?;
    let record = within_deadline(state.engine.schedule_opening(opens_at)).await?;
    Ok(HttpResponse::Ok().json(OpeningScheduled {
        opens_at: state.time(record.opens_at),
        commitment: record.seed.commitment(),
        status: "SCHEDULED",
    }))
}

/// Cancel a scheduled opening: the pre-queue joins the line in arrival order.
#[utoipa::path(delete, path = "/v1/admin/queue/opening", tag = "admin",
    params(("X-Admin-Key" = String, Header)),
    responses(
        (status = 200, description = "no opening any more (`status` NONE)", body = OpeningResponse),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 409, description = "opening_already_drawn", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn cancel(
    _admin: AdminAccess,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    within_deadline(state.engine.cancel_opening()).await?;
    Ok(HttpResponse::Ok().json(opening_response(&state, state.engine.opening())))
}

/// The fair opening: its time and commitment; after the draw, the seed and the digest.
#[utoipa::path(get, path = "/v1/queue/opening", tag = "queue",
    responses((status = 200, body = OpeningResponse)))]
pub async fn opening(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(opening_response(&state, state.engine.opening()))
}

/// The drawn order, page by page, with what it is checked against.
#[utoipa::path(get, path = "/v1/queue/draw", tag = "queue", params(DrawQuery),
    responses(
        (status = 200, body = DrawResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "draw_not_found", body = ErrorBody),
    ))]
pub async fn draw(
    state: web::Data<AppState>,
    query: web::Query<DrawQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_DRAW_PAGE);
    if !(1..=MAX_DRAW_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1 to {MAX_DRAW_PAGE}"
        )));
    }
    let page: DrawPage = state.engine.draw_page(query.offset.unwrap_or(0), limit)?;
    Ok(HttpResponse::Ok().json(DrawResponse {
        commitment: page.commitment,
        seed: page.seed,
        participants_digest: page.participants_digest,
        total: page.total,
        order: page.order,
    }))
}
