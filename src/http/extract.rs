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
