//! Request parsing: path ids, the `TOKEN-ID` header, and the envelope for bodies that do not parse.

use super::ApiError;
use crate::domain::{IdError, TokenId};
use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, FromRequest, HttpRequest};
use std::future::{ready, Ready};

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

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        // Clients that forget the header (curl -d) still get JSON parsed, not a 400.
        .content_type_required(false)
        .error_handler(|error, _| {
            let message = match &error {
                JsonPayloadError::Overflow { limit }
                | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                    format!("request body is larger than {limit} bytes")
                }
                JsonPayloadError::Deserialize(e) => format!("malformed JSON body: {e}"),
                JsonPayloadError::ContentType => "expected a JSON body".to_string(),
                _ => "could not read the request body".to_string(),
            };
            ApiError::InvalidRequest(message).into()
        })
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
