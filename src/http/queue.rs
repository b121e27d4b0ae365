//! Waiting-room routes: join, read the token, poll the status. The status poll is the
//! hottest route of a drop (every waiter, every few seconds): it is answered from the line the
//! `QueueActor` publishes, never its mailbox, and tells the client when to poll next. With
//! `--join-pow-bits`, a new join costs a proof of work ([`JoinPow`]), checked before any queue
//! work.

use super::error::ErrorBody;
use super::extract::{id, TokenHeader};
use super::{within_deadline, ApiError, AppState};
use crate::config::Settings;
use crate::domain::queue::pow::{self, PowKey, SpendRefusal, SpentChallenges};
use crate::domain::queue::{OpeningPhase, TokenRecord, TokenState, TokenStatus};
use crate::domain::{Timestamp, UserId};
use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use rand::{Rng, TryRngCore};
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;
use utoipa::ToSchema;

/// The header a new join carries its proof of work in: `<challenge>.<nonce>`.
pub const POW_HEADER: &str = "X-Queue-Pow";

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    token_id: i64,
    created_at: String,
    expired_at: String,
}

/// A proof-of-work challenge (API.md §11).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeResponse {
    /// Server-authenticated random value, base64url: solve, then send
    /// `X-Queue-Pow: <challenge>.<nonce>` with the join.
    #[schema(min_length = 54, max_length = 54, pattern = "^[A-Za-z0-9_-]{54}$")]
    challenge: String,
    /// Zero bits `SHA-256(challenge ‖ "." ‖ nonce)` must start with.
    #[schema(minimum = 1, maximum = 28)]
    bits: u8,
    /// The challenge cannot be spent from then on (2 minutes after it was issued).
    expires_at: String,
}

/// The join's proof of work (`--join-pow-bits` above 0): the challenges' key, the bits asked,
/// and the challenges spent and not yet expired. The key is per process unless configured (or,
/// in cluster mode, derived from the admin key every node shares): a challenge fetched from
/// any node then verifies where the join is answered.
pub struct JoinPow {
    key: PowKey,
    bits: u8,
    validity: Duration,
    /// Per node: in cluster mode every join is answered by the queue's owner, so every spend
    /// of a challenge is checked here, whichever node issued it.
    spent: Mutex<SpentChallenges>,
}

impl JoinPow {
    /// `None` when no proof is asked (`--join-pow-bits 0`).
    pub fn from_settings(settings: &Settings) -> Option<JoinPow> {
        let config = &settings.join_pow;
        if config.bits == 0 {
            return None;
        }
        const LABEL: &str = "boxoffice join pow key";
        let shared = settings.cluster.as_ref().and(settings.admin_key.as_ref());
        let key = match (&config.key, shared) {
            (Some(key), _) => PowKey::derive(key.expose().as_bytes(), LABEL),
            (None, Some(admin_key)) => PowKey::derive(admin_key.expose().as_bytes(), LABEL),
            (None, None) => {
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng
                    .try_fill_bytes(&mut bytes)
                    .expect("the operating system's CSPRNG answers (the engine draws token ids from it too)");
                PowKey::new(bytes)
            }
        };
        Some(JoinPow {
            key,
            bits: config.bits,
            validity: config.validity,
            spent: Mutex::new(SpentChallenges::new(pow::MAX_SPENT_CHALLENGES)),
        })
    }

    /// A new challenge and its expiry.
    fn issue(&self, now: Timestamp) -> (String, Timestamp) {
        let expires_at = now.plus(self.validity);
        let random: [u8; 16] = rand::rng().random();
        (pow::issue(&self.key, random, expires_at), expires_at)
    }

    /// Checks a solution and spends its challenge: 403 `pow_invalid`, or 429 while the memory
    /// of spent challenges is full. The hashes run outside the lock, which is held for one
    /// set insertion.
    fn spend(&self, solution: &str, now: Timestamp) -> Result<(), ApiError> {
        let solved = pow::verify(&self.key, solution, self.bits, now).map_err(|why| {
            tracing::debug!(%why, "proof of work refused");
            ApiError::PowInvalid
        })?;
        // A poisoned lock still holds a consistent set: spend() panics nowhere in between.
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        match spent.spend(solved, now) {
            Ok(()) => Ok(()),
            Err(SpendRefusal::Reused) => Err(ApiError::PowInvalid),
            Err(SpendRefusal::Full { frees_at }) => Err(ApiError::RateLimited {
                retry_after_secs: now.until(frees_at).as_secs() + 1,
            }),
        }
    }
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
    /// Only while a fair opening is scheduled (API.md §11): `true` for a WAITING token, which
    /// is in the pre-queue; `queueId` is then its arrival number and `remainingWaitListCount`
    /// the pre-queue so far (nobody's order exists before the draw).
    #[serde(skip_serializing_if = "Option::is_none")]
    prequeue: Option<bool>,
    /// Only with `prequeue`: when the pre-queue is drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    opens_at: Option<String>,
    /// Only after a fair opening's draw, for a WAITING token the draw placed: its place in the
    /// drawn order (1-based), the place `GET /v1/queue/draw` and `verify-draw` show.
    #[serde(skip_serializing_if = "Option::is_none")]
    drawn_place: Option<u64>,
}

/// Over how long the pre-queue's first polls after the opening are spread.
const OPENING_POLL_SPREAD_MS: u64 = 5_000;

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
#[utoipa::path(post, path = "/v1/queue-tokens/users/{userId}", tag = "queue", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1),
        ("X-Queue-Pow" = Option<String>, Header, description = "with --join-pow-bits above 0, a new join's proof of work: `<challenge>.<nonce>` (GET /v1/queue/challenge), where SHA-256 of this whole value starts with `bits` zero bits; the nonce is 1–64 of A–Z a–z 0–9 - _. A user holding a live token needs none. When no proof is asked, a value of this shape is ignored and any other is pow_invalid.")),
    responses(
        (status = 201, description = "a new token at the back of the line", body = TokenResponse),
        (status = 200, description = "the user's WAITING or ACTIVE token", body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's); pow_required (no X-Queue-Pow, and no live token); pow_invalid (a malformed, forged, expired, reused or too weak solution); no token is made", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
        (status = 429, description = "rate_limited (also: too many proofs of work spent in the last 2 minutes)", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn join(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    match &state.join_pow {
        Some(pow) => {
            if let Some(live) = prove_join(&state, pow, &req, user).await? {
                return Ok(HttpResponse::Ok().json(token_response(&state, &live)));
            }
        }
        // No work is asked, so a solution is ignored; but one that is sent has a solution's
        // shape (the document's pattern), or it is refused as it would be with work asked.
        None => {
            if let Some(sent) = req.headers().get(POW_HEADER) {
                let shaped = sent.to_str().is_ok_and(pow::well_formed);
                if !shaped {
                    return Err(ApiError::PowInvalid);
                }
            }
        }
    }
    let (record, created) = within_deadline(state.engine.join_queue(user)).await?;
    let body = token_response(&state, &record);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// A join's proof of work, before any queue work: `None` when the request's solution holds
/// (its challenge is now spent) and a token may be made; the user's live token when they sent
/// none and hold one; 403 otherwise.
async fn prove_join(
    state: &AppState,
    pow: &JoinPow,
    req: &HttpRequest,
    user: UserId,
) -> Result<Option<TokenRecord>, ApiError> {
    state.known_user(user)?;
    if let Some(solution) = req.headers().get(POW_HEADER) {
        let solution = solution.to_str().map_err(|_| ApiError::PowInvalid)?;
        pow.spend(solution, state.engine.now())?;
        return Ok(None);
    }
    // From the published line, never the mailbox: joins without a solution do not reach the
    // queue actor unless their user holds a live token.
    if state.engine.live_token_of(user).is_none() {
        return Err(ApiError::PowRequired);
    }
    // The actor gives that token back only if it is still live when the join reaches it (it
    // may expire in between): a new token is never made without a solution.
    within_deadline(state.engine.rejoin_queue(user))
        .await?
        .map(Some)
        .ok_or(ApiError::PowRequired)
}

/// A proof-of-work challenge for a join (`--join-pow-bits` above 0).
#[utoipa::path(get, path = "/v1/queue/challenge", tag = "queue",
    responses(
        (status = 200, description = "a challenge, valid 2 minutes, spent by one join", body = ChallengeResponse),
        (status = 404, description = "not_found: no proof of work is asked (--join-pow-bits 0); join without X-Queue-Pow", body = ErrorBody),
    ))]
pub async fn challenge(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Off, the route is as absent as any unknown one: a challenge that proves nothing would
    // only invite clients to waste work, and a 404 tells them in one request to join as is.
    let pow = state.join_pow.as_ref().ok_or(ApiError::NotFound)?;
    let (challenge, expires_at) = pow.issue(state.engine.now());
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ChallengeResponse {
            challenge,
            bits: pow.bits,
            expires_at: state.time(expires_at),
        }))
}

/// The user's current (or last) token.
#[utoipa::path(get, path = "/v1/queue-tokens/users/{userId}", tag = "queue", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found, token_not_found", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let record = state.engine.token_of(user).await?;
    Ok(HttpResponse::Ok().json(token_response(&state, &record)))
}

/// Poll the token's place in line; answered from the published line, never the actor.
#[utoipa::path(get, path = "/v1/queue-status/users/{userId}", tag = "queue", security((), ("bearerAuth" = [])),
    params(("userId" = i64, Path, minimum = 1), ("TOKEN-ID" = String, Header, description = "the user's queue token, in decimal")),
    responses(
        (status = 200, description = "the token's state; EXPIRED tokens answer here too", body = StatusResponse),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_token; unauthorized (--auth jwt: the bearer is missing, malformed, forged or expired)", body = ErrorBody),
        (status = 403, description = "forbidden (--auth jwt: the bearer is another user's)", body = ErrorBody),
        (status = 404, description = "user_not_found", body = ErrorBody),
    ))]
#[tracing::instrument(level = "debug", skip_all, fields(user_id = *path))]
pub async fn status(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    token: TokenHeader,
) -> Result<HttpResponse, ApiError> {
    let user = id(path.into_inner(), UserId::new)?;
    state.authenticate(&req, user)?;
    let worked_out = req
        .extensions_mut()
        .remove::<super::cluster::SnapshotAnswer>();
    let status = match worked_out {
        Some(super::cluster::SnapshotAnswer(status)) => status,
        None => state.engine.poll(user, token.0).await?,
    };
    Ok(HttpResponse::Ok().json(status_response(&state, &status)))
}

fn status_response(state: &AppState, status: &TokenStatus) -> StatusResponse {
    StatusResponse {
        queue_id: status.record.position,
        join_at: state.time(status.record.created_at),
        status: status.record.state.name(),
        remaining_wait_list_count: status.ahead,
        expired_at: state.time(status.expires_at),
        estimated_wait_seconds: status
            .estimated_wait
            .map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
        poll_after_ms: u64::try_from(status.poll_after.as_millis()).unwrap_or(u64::MAX),
        prequeue: None,
        opens_at: None,
        drawn_place: None,
    }
    .in_opening(state, status)
}

impl StatusResponse {
    /// A WAITING token while a fair opening is scheduled is in the pre-queue; once drawn, a
    /// waiter the draw placed learns its place in the draw.
    fn in_opening(mut self, state: &AppState, status: &TokenStatus) -> StatusResponse {
        if status.record.state != TokenState::Waiting {
            return self;
        }
        let phase = state.engine.opening_phase();
        self.drawn_place = phase.and_then(|p| p.drawn_place(status.record.position));
        if let Some(OpeningPhase::Prequeue {
            opens_at_ms,
            arrivals,
        }) = phase
        {
            let opens_at = Timestamp::from_millis(opens_at_ms);
            self.prequeue = Some(true);
            self.opens_at = Some(state.time(opens_at));
            self.remaining_wait_list_count = arrivals;
            // The last poll before the opening lands at a point of the first
            // `OPENING_POLL_SPREAD_MS` after it, fixed per token, so the crowd does not come back
            // in one second; never later than the usual pacing (within the idle timeout).
            let until_ms =
                u64::try_from(state.engine.now().until(opens_at).as_millis()).unwrap_or(u64::MAX);
            let spread = status.record.id.get().unsigned_abs() % OPENING_POLL_SPREAD_MS;
            self.poll_after_ms = self.poll_after_ms.min(until_ms.saturating_add(spread));
        }
        self
    }
}
