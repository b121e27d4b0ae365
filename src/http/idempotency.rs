//! The `Idempotency-Key` header: its limits, the request's fingerprint, claiming the key, and
//! replaying a stored answer byte for byte.

use super::{ApiError, AppState, REQUEST_TIMEOUT};
use crate::actors::idempotency::{
    Answer, Claim, Fingerprint, IdempotentWrite, Render, FULL_RETRY_AFTER, MAX_KEY_CHARS,
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
pub async fn begin<T>(
    state: &AppState,
    key: IdempotencyKey,
    user: UserId,
    req: &HttpRequest,
    body: &Value,
    render: &Render<T>,
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
        Claim::Fresh(guard) => Ok(Begin::Go(Some(guard.write(render.clone())))),
        Claim::Replay(answer) => Ok(Begin::Answer(replay(answer))),
        Claim::Reused => Err(ApiError::IdempotencyKeyReused),
        Claim::Full => Err(ApiError::RateLimited {
            retry_after_secs: FULL_RETRY_AFTER.as_secs(),
        }),
    }
}

/// The live response: rendered exactly as a replay of it will be.
pub fn respond<T>(render: &Render<T>, answer: &T) -> HttpResponse {
    let (status, body) = render(answer);
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .body(body)
}

fn replay(answer: Answer) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .insert_header(("Idempotent-Replayed", "true"))
        .body(answer.body)
}

/// Parses a JSON value into a request type, as a 400 in the envelope when it does not fit.
pub fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    T::deserialize(body).map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}

/// Serializes a response body; the body types hold only strings and numbers.
pub fn to_json<T: serde::Serialize>(body: &T) -> String {
    serde_json::to_string(body).expect("response bodies are plain data")
}
