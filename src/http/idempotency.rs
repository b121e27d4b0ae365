//! The `Idempotency-Key` header: its limits, the request's fingerprint, claiming the key, and
//! rendering the answer a key keeps (in domain terms, see `actors/answer.rs`), live and on
//! replay with the same function, so that a replay is byte for byte the first response.

use super::answer_bodies::{balance_body, paid_body, refunded_body, reservation_body};
use super::{ApiError, AppState, REQUEST_TIMEOUT};
use crate::actors::answer::{Answer, Replay};
use crate::actors::idempotency::{
    Claim, Fingerprint, IdempotentWrite, Replayable, StoredAnswer, FULL_RETRY_AFTER, MAX_KEY_CHARS,
};
use crate::domain::UserId;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use serde_json::Value;
use std::future::{ready, Ready};

/// The header, when present and well-formed: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<IdempotencyKey, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(raw) = req.headers().get("Idempotency-Key") else {
            return ready(Ok(IdempotencyKey(None)));
        };
        let key = raw.to_str().ok().filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_CHARS && k.bytes().all(|b| b.is_ascii_graphic())
        });
        ready(match key {
            Some(key) => Ok(IdempotencyKey(Some(key.to_string()))),
            None => Err(ApiError::invalid(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
            ))),
        })
    }
}

/// What the handler does next.
pub enum Begin<T> {
    /// Run the operation (with the claim, when a key was given).
    Go(Option<IdempotentWrite<T>>),
    /// The same request already succeeded: this is its answer.
    Answer(HttpResponse),
}

/// Claims the key for this request: method, path and canonical body (keys sorted) identify it.
/// A new key past the user's live-key limit answers 429.
pub async fn begin<T: Replayable>(
    state: &AppState,
    key: IdempotencyKey,
    user: UserId,
    req: &HttpRequest,
    body: &Value,
) -> Result<Begin<T>, ApiError> {
    let Some(key) = key.0 else {
        return Ok(Begin::Go(None));
    };
    let fingerprint = Fingerprint::of_request(req.method().as_str(), req.path(), body);
    let max_live_keys = state.engine.settings().max_idempotency_keys_per_user;
    let claim = tokio::time::timeout(
        REQUEST_TIMEOUT,
        state
            .engine
            .idempotency()
            .claim(user, key, fingerprint, max_live_keys),
    )
    .await
    .map_err(|_| ApiError::Unavailable("waited too long for the same key's request".into()))?;
    match claim {
        Claim::Fresh(guard) => Ok(Begin::Go(Some(guard.write()))),
        Claim::Replay(answer) => Ok(Begin::Answer(replay(state, &answer)?)),
        Claim::Reused => Err(ApiError::IdempotencyKeyReused),
        Claim::Full => Err(ApiError::RateLimited {
            retry_after_secs: FULL_RETRY_AFTER.as_secs(),
        }),
    }
}

/// The one rendering of an answer a key may keep: every live response of an idempotent route
/// and every replay of it come from here.
fn render(state: &AppState, answer: &Answer) -> (StatusCode, String) {
    match answer {
        Answer::Held(view) => (StatusCode::CREATED, to_json(&reservation_body(state, view))),
        Answer::Paid(receipt) => (StatusCode::CREATED, to_json(&paid_body(receipt))),
        Answer::Recharged { user, balance } => {
            (StatusCode::OK, to_json(&balance_body(*user, *balance)))
        }
        Answer::Refunded(receipt) => (StatusCode::OK, to_json(&refunded_body(receipt))),
    }
}

/// The live response: rendered exactly as a replay of it will be.
pub fn respond(state: &AppState, answer: &Answer) -> HttpResponse {
    let (status, body) = render(state, answer);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// A stored answer, rendered again. One stored before answers were kept in domain terms holds
/// the response it was sent as, and goes out as it is.
fn replay(state: &AppState, stored: &StoredAnswer) -> Result<HttpResponse, ApiError> {
    let (status, body) = match Answer::from_stored(stored) {
        Ok(Replay::Answer(answer)) => render(state, &answer),
        Ok(Replay::AsStored(sent)) => (
            StatusCode::from_u16(sent.format).unwrap_or(StatusCode::OK),
            sent.text,
        ),
        Err(error) => {
            tracing::error!(%error, "an idempotency key's answer could not be replayed");
            return Err(ApiError::Unavailable(error.to_string()));
        }
    };
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .insert_header(("Idempotent-Replayed", "true"))
        .body(body))
}

/// Parses a JSON value into a request type, as a 400 in the envelope when it does not fit.
pub fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    T::deserialize(body).map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}

/// Serializes a response body; the body types hold only strings and numbers.
pub fn to_json<T: serde::Serialize>(body: &T) -> String {
    serde_json::to_string(body).expect("response bodies are plain data")
}
