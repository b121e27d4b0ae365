//! Waiting-room routes: join, read the token, poll the status. The status poll is the
//! hottest route of a drop (every waiter, every few seconds): it is answered from the line the
//! `QueueActor` publishes, never its mailbox, and tells the client when to poll next.

use super::error::ErrorBody;
use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::domain::queue::{TokenRecord, TokenState};
use crate::domain::{Timestamp, UserId};
use actix_web::{web, HttpResponse};
use chrono::FixedOffset;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    token_id: i64,
    created_at: String,
    expired_at: String,
}

/// The seed's four fields first, byte-exact, then the additions.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    queue_id: u64,
    join_at: String,
    status: &'static str,
    remaining_wait_list_count: u64,
    expired_at: String,
    /// WAITING: seconds until admission at the measured admission rate (or the configured
    /// `admit_per_sec` before anything was measured), rounded up; `null` when no rate is
    /// known. ACTIVE: 0. EXPIRED: `null` (it will never be admitted).
    estimated_wait_seconds: Option<u64>,
    /// When to poll again: longer far back in line, never more than a quarter of the idle
    /// timeout, so a client that obeys it is never dropped as idle.
    poll_after_ms: u64,
}

fn token_response(state: &AppState, record: &TokenRecord) -> TokenResponse {
    let settings = state.engine.settings();
    let expired_at = match record.state {
        TokenState::Waiting => record.created_at.plus(settings.idle_timeout),
        TokenState::Active { expires_at, .. } => expires_at,
        TokenState::Expired { at } => at,
    };
    TokenResponse {
        token_id: record.id.get(),
        created_at: state.time(record.created_at),
        expired_at: state.time(expired_at),
    }
}

/// Join the waiting room: 201 with a new token, 200 with the user's live one.
#[utoipa::path(post, path = "/v1/queue-tokens/users/{userId}", tag = "queue",
    params(("userId" = i64, Path)),
    responses(
        (status = 201, description = "a new token at the back of the line", body = TokenResponse),
        (status = 200, description = "the user's WAITING or ACTIVE token", body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn join(
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let (record, created) = within_deadline(state.engine.join_queue(user)).await?;
    let body = token_response(&state, &record);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// The user's current (or last) token.
#[utoipa::path(get, path = "/v1/queue-tokens/users/{userId}", tag = "queue",
    params(("userId" = i64, Path)),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "user_not_found, token_not_found", body = ErrorBody),
    ))]
pub async fn token(
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let record = state.engine.token_of(user)?;
    Ok(HttpResponse::Ok().json(token_response(&state, &record)))
}

/// Poll the token's place in line; answered from the published line, never the actor.
#[utoipa::path(get, path = "/v1/queue-status/users/{userId}", tag = "queue",
    params(("userId" = i64, Path), ("TOKEN-ID" = i64, Header, description = "the user's queue token")),
    responses(
        (status = 200, description = "the token's state; EXPIRED tokens answer here too", body = StatusResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_token", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
    ))]
pub async fn status(
    state: web::Data<AppState>,
    path: web::Path<i64>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    let status = state.engine.poll(user, token.0)?;
    Ok(HttpResponse::Ok().json(StatusResponse {
        queue_id: status.record.position,
        join_at: seed_time(status.record.created_at, state.timezone),
        status: status.record.state.name(),
        remaining_wait_list_count: status.ahead,
        expired_at: seed_time(status.expires_at, state.timezone),
        estimated_wait_seconds: status
            .estimated_wait
            .map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
        poll_after_ms: u64::try_from(status.poll_after.as_millis()).unwrap_or(u64::MAX),
    }))
}

/// `Timestamp::format` for the hottest route: the same text, without chrono's strftime
/// interpreter (which was 5 % of a poll's CPU in the profile). Years outside 0..=9999 take
/// the general path.
fn seed_time(t: Timestamp, offset: FixedOffset) -> String {
    let local = t.millis().div_euclid(1000) + i64::from(offset.local_minus_utc());
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms"), in 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return t.format(offset);
    }
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, secs / 3600);
    put(14, 2, secs / 60 % 60);
    put(17, 2, secs % 60);
    text.iter().map(|b| char::from(*b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_format_is_the_seed_format() {
        let offsets = [0, 9 * 3600, -(3 * 3600 + 1800), 14 * 3600, -12 * 3600];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut instants = vec![
            0i64,
            -1,
            1,
            951_782_400_000,
            4_102_444_800_000,
            -62_167_219_200_000,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Within about ±2,000 years of 1970, millisecond precision.
            instants.push((x % 126_230_400_000_000) as i64 - 63_115_200_000_000);
        }
        for secs in offsets {
            let offset = FixedOffset::east_opt(secs).unwrap();
            for ms in &instants {
                let t = Timestamp::from_millis(*ms);
                assert_eq!(seed_time(t, offset), t.format(offset), "{ms} at {secs}");
            }
        }
    }
}
