//! The door's routes (API.md §12): a scan, and a batch of scans a scanner made offline. Both
//! need `X-Door-Key` (`--door-key`, or the admin key). A code's signature is checked by the
//! engine before any actor is asked; ADMITTED is answered only once the check-in is durable.
//! In cluster mode a check-in reaches its schedule's owner (the forwarder reads its code's
//! schedule), and a batch is split by schedule where it lands (`cluster::scans`).

use super::cluster::scans as by_owner;
use super::error::ErrorBody;
use super::{within_deadline, ApiError, AppState};
use crate::actors::engine::RawScan;
use crate::actors::error::DoorError;
use crate::actors::schedule::Admitted;
use crate::domain::ticket::DoorRefusal;
use crate::domain::Timestamp;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

/// Most scans one batch may carry.
pub const MAX_BATCH_SCANS: usize = 1000;
/// Longest gate name.
const MAX_GATE_LEN: usize = 64;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    /// `bo1.<payload>.<signature>`.
    code: String,
    #[schema(min_length = 1, max_length = 64)]
    gate: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfflineScan {
    code: String,
    /// When the scanner admitted it, in the service's time format.
    scanned_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(min_length = 1, max_length = 64)]
    gate: String,
    #[schema(max_items = 1000)]
    scans: Vec<OfflineScan>,
}

// Deserialize too: a batch's scans decided by another node come back in this shape.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedBody {
    /// `ADMITTED`, or (in a batch) the refusal's error slug.
    result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seat_number: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<String>,
    /// The admission on record (the first scan's, for `already_checked_in`).
    #[serde(skip_serializing_if = "Option::is_none")]
    checked_in_at: Option<String>,
    /// `already_checked_in`: the first scan's gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    gate: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchBody {
    gate: String,
    /// One per scan, in the request's order.
    results: Vec<AdmittedBody>,
}

fn same_key(given: &[u8], key: &[u8]) -> bool {
    Sha256::digest(given).ct_eq(&Sha256::digest(key)).into()
}

/// The door's key or the admin key, else 403 `forbidden`.
fn check_door(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get("X-Door-Key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let opens = [&state.door_key, &state.admin_key]
        .into_iter()
        .flatten()
        .any(|key| same_key(given, key.expose().as_bytes()));
    if opens {
        Ok(())
    } else {
        Err(ApiError::Forbidden("forbidden"))
    }
}

fn check_gate(gate: &str) -> Result<(), ApiError> {
    let ok = !gate.is_empty()
        && gate.chars().count() <= MAX_GATE_LEN
        && !gate.chars().any(char::is_control);
    ok.then_some(())
        .ok_or_else(|| ApiError::invalid("gate must be 1 to 64 characters"))
}

fn admitted_body(state: &AppState, a: &Admitted) -> AdmittedBody {
    AdmittedBody {
        result: "ADMITTED".into(),
        ticket_id: Some(a.ticket.get()),
        schedule_id: Some(a.schedule.get()),
        seat_number: Some(a.seat_number),
        row: a.row.clone(),
        checked_in_at: Some(state.time(a.checked_in_at)),
        gate: None,
    }
}

fn door_error(state: &AppState, e: DoorError) -> ApiError {
    match e {
        DoorError::Refused(DoorRefusal::Invalid) => ApiError::InvalidTicket,
        DoorError::Refused(DoorRefusal::Void) => ApiError::TicketVoid,
        DoorError::Refused(DoorRefusal::AlreadyCheckedIn(first)) => ApiError::AlreadyCheckedIn {
            checked_in_at: state.time(first.at),
            gate: first.gate,
        },
        DoorError::Unavailable(u) => u.into(),
    }
}

/// Check one scan in.
#[utoipa::path(post, path = "/v1/checkins", tag = "door", request_body = CheckInRequest,
    params(("X-Door-Key" = String, Header, description = "--door-key, or the admin key")),
    responses(
        (status = 200, body = AdmittedBody),
        (status = 400, description = "invalid_request, invalid_ticket", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 409, description = "already_checked_in (with checkedInAt and gate of the first scan)", body = ErrorBody),
        (status = 410, description = "ticket_void", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn check_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CheckInRequest>,
) -> Result<HttpResponse, ApiError> {
    check_door(&state, &req)?;
    let CheckInRequest { code, gate } = body.into_inner();
    check_gate(&gate)?;
    let scan = RawScan {
        code,
        at: state.engine.now(),
    };
    let mut outcomes = within_deadline(state.engine.check_in(&gate, vec![scan], false)).await?;
    let outcome = outcomes
        .pop()
        .ok_or_else(|| ApiError::Unavailable("no outcome".into()))?;
    match outcome {
        Ok(admitted) => Ok(HttpResponse::Ok().json(admitted_body(&state, &admitted))),
        Err(e) => Err(door_error(&state, e)),
    }
}

/// Scans a scanner admitted offline: each gets its result; of two gates' scans of one ticket
/// the earliest `scannedAt` wins.
#[utoipa::path(post, path = "/v1/checkins/batch", tag = "door", request_body = BatchRequest,
    params(("X-Door-Key" = String, Header, description = "--door-key, or the admin key")),
    responses(
        (status = 200, body = BatchBody),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    check_door(&state, &req)?;
    let BatchRequest { gate, scans } = body.into_inner();
    check_gate(&gate)?;
    if scans.len() > MAX_BATCH_SCANS {
        return Err(ApiError::invalid("at most 1000 scans"));
    }
    let times = scans
        .iter()
        .map(|s| {
            Timestamp::parse(&s.scanned_at, state.timezone)
                .ok_or_else(|| ApiError::invalid("scannedAt is not a time"))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let elsewhere = by_owner::owners_elsewhere(&state, &req, scans.iter().map(|s| s.code.as_str()));
    let mut sent_on = vec![false; scans.len()];
    for &i in elsewhere.values().flatten() {
        sent_on[i] = true;
    }
    let (order, raw): (Vec<usize>, Vec<RawScan>) = scans
        .iter()
        .zip(times)
        .enumerate()
        .filter(|(i, _)| !sent_on[*i])
        .map(|(i, (scan, at))| {
            let code = scan.code.clone();
            (i, RawScan { code, at })
        })
        .unzip();
    let mut results: Vec<Option<AdmittedBody>> = scans.iter().map(|_| None).collect();
    let (outcomes, answered) = futures_util::future::join(
        within_deadline(state.engine.check_in(&gate, raw, true)),
        decided_elsewhere(&state, &req, &gate, &scans, elsewhere),
    )
    .await;
    for (i, outcome) in order.into_iter().zip(outcomes?) {
        results[i] = Some(match outcome {
            Ok(admitted) => admitted_body(&state, &admitted),
            Err(e) => refused_body(door_error(&state, e)),
        });
    }
    for (i, body) in answered {
        results[i] = Some(body);
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| refused_body(ApiError::Unavailable(String::new()))))
        .collect();
    Ok(HttpResponse::Ok().json(BatchBody { gate, results }))
}

/// The scans of `elsewhere` answered by their schedules' owners, each by its index in
/// `scans`: one batch per owner, all at once. An owner that cannot answer leaves its scans
/// `unavailable` (the scanner sends them again; a check-in is idempotent per ticket).
async fn decided_elsewhere(
    state: &AppState,
    req: &HttpRequest,
    gate: &str,
    scans: &[OfflineScan],
    elsewhere: by_owner::Elsewhere,
) -> Vec<(usize, AdmittedBody)> {
    let calls = elsewhere.into_iter().map(|(url, indices)| async move {
        let batch: Vec<&OfflineScan> = indices.iter().map(|&i| &scans[i]).collect();
        let body = serde_json::json!({ "gate": gate, "scans": batch });
        let answered = by_owner::send_batch(state, req, &url, &body).await;
        let bodies: Vec<Option<AdmittedBody>> = match answered {
            Ok(results) if results.len() == indices.len() => results
                .into_iter()
                .map(|r| serde_json::from_value(r).ok())
                .collect(),
            Ok(results) => {
                tracing::warn!(
                    got = results.len(),
                    "a batch's owner answered another count"
                );
                indices.iter().map(|_| None).collect()
            }
            Err(why) => {
                tracing::warn!(%why, "a batch's scans at their schedule's owner failed");
                indices.iter().map(|_| None).collect()
            }
        };
        indices
            .into_iter()
            .zip(bodies)
            .map(|(i, body)| {
                let body =
                    body.unwrap_or_else(|| refused_body(ApiError::Unavailable(String::new())));
                (i, body)
            })
            .collect::<Vec<_>>()
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn refused_body(error: ApiError) -> AdmittedBody {
    let slug = match &error {
        ApiError::InvalidTicket => "invalid_ticket",
        ApiError::TicketVoid => "ticket_void",
        ApiError::AlreadyCheckedIn { .. } => "already_checked_in",
        _ => "unavailable",
    };
    let (checked_in_at, gate) = match error {
        ApiError::AlreadyCheckedIn {
            checked_in_at,
            gate,
        } => (Some(checked_in_at), Some(gate)),
        _ => (None, None),
    };
    AdmittedBody {
        result: slug.into(),
        ticket_id: None,
        schedule_id: None,
        seat_number: None,
        row: None,
        checked_in_at,
        gate,
    }
}
