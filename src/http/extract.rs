//! Request parsing: path ids, the `TOKEN-ID` header, the media type and encoding a body must
//! come in, and the envelope for bodies that do not parse.

use super::ApiError;
use crate::domain::{IdError, TokenId};
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::{ready, Ready};

/// The 415 message of a JSON route's body sent as anything but JSON.
pub const NOT_JSON: &str = "expected a JSON body (Content-Type: application/json)";
/// The 415 message of an encoded request body.
pub const ENCODED_BODY: &str = "request bodies must not be encoded (Content-Encoding)";

/// The `TOKEN-ID` header, if it holds a token id at all. A missing or malformed header is
/// "invalid token", decided where the token is checked.
pub struct TokenHeader(pub Option<TokenId>);

impl FromRequest for TokenHeader {
    type Error = ApiError;
    type Future = Ready<Result<TokenHeader, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = req
            .headers()
            .get("TOKEN-ID")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
            .and_then(|n| TokenId::new(n).ok());
        ready(Ok(TokenHeader(token)))
    }
}

/// Parses a raw id into its newtype, as a 400 when it is not one.
pub fn id<T>(raw: i64, parse: fn(i64) -> Result<T, IdError>) -> Result<T, ApiError> {
    parse(raw).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Bodies of JSON routes: at most `limit` bytes, and sent as JSON. The media type is required
/// (actix's default, kept on purpose): `text/plain` and form bodies are what a browser sends
/// cross-site without a preflight, so they are refused unread. actix counts
/// `application/json` and any other `…/json` or `…+json` type as JSON; none of those is a
/// type a cross-site form may send.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(true)
        .error_handler(|error, _| {
            let message = match &error {
                JsonPayloadError::ContentType => {
                    return ApiError::UnsupportedMediaType(NOT_JSON).into()
                }
                JsonPayloadError::Overflow { limit }
                | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                    format!("request body is larger than {limit} bytes")
                }
                JsonPayloadError::Deserialize(e) => format!("malformed JSON body: {e}"),
                _ => "could not read the request body".to_string(),
            };
            ApiError::InvalidRequest(message).into()
        })
}

/// Refuses a request whose body is encoded (`Content-Encoding` other than `identity`) before
/// anything reads it: nothing here inflates bodies (a 16 KiB gzip body can inflate to
/// megabytes before a size limit sees it), so an encoded body could only be misread.
pub async fn refuse_encoded_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let encoded = req
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .any(|value| !is_identity(value.as_bytes()));
    if encoded {
        return Err(ApiError::UnsupportedMediaType(ENCODED_BODY).into());
    }
    next.call(req).await
}

/// `identity` (any case, padded, or listed more than once), or an empty value: no encoding.
fn is_identity(value: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .map(|coding| coding.trim_ascii())
        .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case(b"identity"))
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, _| {
        let PathError::Deserialize(e) = &error else {
            return ApiError::invalid("malformed path").into();
        };
        ApiError::InvalidRequest(format!("malformed path parameter: {e}")).into()
    })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _| {
        ApiError::InvalidRequest(format!("malformed query: {error}")).into()
    })
}

/// The whole number a JSON number stands for: `7`, and also `7.0` or `7e0` — JSON Schema's
/// `integer`, which the document promises, is any number with a zero fraction. `None` for a
/// fraction or a value outside `i64`.
pub fn whole(number: &serde_json::Number) -> Option<i64> {
    // 2^63: the first float past i64::MAX (which, as an f64, rounds up to it).
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (-LIMIT..LIMIT).contains(f))
            .map(|f| f as i64)
    })
}

/// Body fields read through [`whole`] (`#[serde(deserialize_with = "…")]`).
pub mod whole {
    use serde::de::{Deserializer, Error, Unexpected};
    use serde::Deserialize;
    use serde_json::Number;

    fn one<E: Error>(number: &Number) -> Result<i64, E> {
        super::whole(number).ok_or_else(|| {
            E::invalid_value(Unexpected::Other(&number.to_string()), &"a whole number")
        })
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        one(&Number::deserialize(d)?)
    }

    pub fn i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        let number = Number::deserialize(d)?;
        i32::try_from(one::<D::Error>(&number)?)
            .map_err(|_| D::Error::invalid_value(Unexpected::Other(&number.to_string()), &"an i32"))
    }

    pub fn vec_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
        Vec::<Number>::deserialize(d)?.iter().map(one).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_identity_coding_counts_as_unencoded() {
        for plain in [
            &b"identity"[..],
            b"IDENTITY",
            b" identity ",
            b"identity, identity",
            b"",
        ] {
            assert!(is_identity(plain), "{:?}", String::from_utf8_lossy(plain));
        }
        for encoded in [
            &b"gzip"[..],
            b"br",
            b"deflate",
            b"identity, gzip",
            b"x-gzip",
            b"zstd",
        ] {
            assert!(
                !is_identity(encoded),
                "{:?}",
                String::from_utf8_lossy(encoded)
            );
        }
    }
}
