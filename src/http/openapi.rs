//! The OpenAPI 3 document of every route, generated from the handlers' annotations and the
//! response types themselves, so it cannot drift from what the code serializes. It declares
//! every bound the service enforces on what it reads (ids ≥ 1, `limit` 1–100, names 1–200
//! characters, list sizes, amounts), so a request valid by the document is never refused as
//! malformed; `tests/api/document.rs` holds each bound to the service's own.

use super::AppState;
use crate::actors::EngineSettings;
use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "boxoffice",
        description = "A ticket-drop booking engine: waiting room, seats, holds, payments, wallet. \
                       Every error is the envelope `ErrorBody`."
    ),
    paths(
        super::queue::join,
        super::queue::token,
        super::queue::status,
        super::opening::schedule,
        super::opening::cancel,
        super::opening::opening,
        super::opening::draw,
        super::queue::challenge,
        super::concerts::schedules,
        super::concerts::seats,
        super::reservations::reserve,
        super::reservations::read,
        super::reservations::cancel,
        super::payments::pay,
        super::payments::progress,
        super::balance::balance,
        super::balance::recharge,
        super::balance::history,
        super::refunds::refund,
        super::tickets::of_user,
        super::tickets::public_key,
        super::tickets::qr,
        super::tickets::transfer,
        super::door::check_in,
        super::door::batch,
        super::admin::create_user,
        super::admin::create_concert,
        super::waitlist::join,
        super::waitlist::read,
        super::waitlist::leave,
        super::waitlist::cancel_performance,
        super::waitlist::audit,
        super::live::live,
        super::live_history::history,
        super::cluster::view::cluster,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        openapi,
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// `bearerAuth`: the JWT every user-scoped route needs with `--auth jwt`. Those routes list it
/// beside an empty requirement, as the default `--auth none` asks for nothing.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "With --auth jwt: HS256, RS256, ES256 or EdDSA as the server's key fixes; \
                 `sub` is the user id as a decimal string, `exp` is required.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearerAuth", SecurityScheme::Http(scheme));
    }
}

/// The document, rendered once, with the bounds that do not depend on configuration.
pub fn document() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc =
            serde_json::to_value(ApiDoc::openapi()).expect("an OpenAPI document serializes");
        // What the attributes cannot say: utoipa has no `uniqueItems` for a `Vec`, nor bounds
        // on its items.
        let seat_ids = &mut doc["components"]["schemas"]["ReserveRequest"]["properties"]["seatIds"];
        seat_ids["uniqueItems"] = true.into();
        seat_ids["items"]["minimum"] = 1.into();
        // Nor a seat's `x` and `y` requiring each other (JSON Schema's `dependentRequired`),
        // and they are integers, never `null`, when present.
        let seat = &mut doc["components"]["schemas"]["SeatRequest"];
        seat["dependentRequired"] = serde_json::json!({ "x": ["y"], "y": ["x"] });
        for axis in ["x", "y"] {
            seat["properties"][axis]["type"] = "integer".into();
        }
        // Nor a header that is optional without being nullable, nor its pattern (the nonce's
        // alphabet is the service's rule, `domain::queue::pow::verify`).
        let join = &mut doc["paths"]["/v1/queue-tokens/users/{userId}"]["post"]["parameters"];
        if let Some(header) = join.as_array_mut().and_then(|parameters| {
            parameters
                .iter_mut()
                .find(|p| p["name"] == super::queue::POW_HEADER)
        }) {
            header["schema"] = serde_json::json!({
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{54}\\.[A-Za-z0-9_-]{1,64}$"
            });
        }
        document_limits(&mut doc);
        doc
    })
}

/// The answers any route can give once a limit of API.md §8 applies: 429 over a rate limit
/// (`--rate-limit-per-ip`, the per-user budget), and 408 for a body not complete within
/// `--body-timeout-secs` on the routes that take one. They come from middleware in front of
/// every route, so they are added to every operation here rather than on each handler.
fn document_limits(doc: &mut serde_json::Value) {
    let error = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let takes_body = operation.get("requestBody").is_some();
            let responses = &mut operation["responses"];
            if responses.get("429").is_none() {
                responses["429"] = error("rate_limited");
            }
            if takes_body && responses.get("408").is_none() {
                responses["408"] = error("request_timeout");
            }
        }
    }
}

/// The document this service serves: [`document`] with the bounds its settings chose — the
/// seats one hold may name, and the largest recharge — so that every request the document
/// calls valid is one the service accepts.
pub fn document_for(settings: &EngineSettings) -> serde_json::Value {
    let mut doc = document().clone();
    let schemas = &mut doc["components"]["schemas"];
    schemas["ReserveRequest"]["properties"]["seatIds"]["maxItems"] =
        settings.max_seats_per_user.into();
    schemas["RechargeRequest"]["properties"]["amount"]["maximum"] =
        settings.max_recharge.won().into();
    doc
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document_for(state.engine.settings()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every operation says it can be rate limited, and every one with a body that a late
    /// body times out.
    #[test]
    fn every_route_documents_the_limits_in_front_of_it() {
        for (path, item) in document()["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let responses = &operation["responses"];
                assert!(responses.get("429").is_some(), "{method} {path}: no 429");
                let takes_body = operation.get("requestBody").is_some();
                assert_eq!(
                    responses.get("408").is_some(),
                    takes_body,
                    "{method} {path}: 408 exactly when it takes a body"
                );
            }
        }
    }

    /// A route served but not documented, or documented but not served, fails here.
    #[test]
    fn the_document_lists_exactly_the_routes_served() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = super::super::route_table()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }

    /// Every route whose path, body or query names a user takes the bearer, and says what a
    /// bad one answers; no other route does.
    #[test]
    fn the_user_scoped_routes_document_the_bearer() {
        let doc = document();
        let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let names_user = path.contains("{userId}")
                    || path.starts_with("/v1/reservations")
                    || path.starts_with("/v1/payments")
                    // A ticket's QR code and transfer name their holder in the query.
                    || path.starts_with("/v1/tickets/{ticketId}");
                let security = op["security"].as_array().map(Vec::as_slice);
                if !names_user {
                    assert!(security.is_none(), "{method} {path} takes no bearer");
                    continue;
                }
                let security = security.unwrap_or_else(|| panic!("{method} {path}: no security"));
                assert!(
                    security.iter().any(|r| r.get("bearerAuth").is_some()),
                    "{method} {path}"
                );
                assert!(
                    security
                        .iter()
                        .any(|r| r.as_object().is_some_and(|o| o.is_empty())),
                    "{method} {path}: --auth none needs no bearer"
                );
                for status in ["401", "403"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} documents {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_operation_documents_its_errors() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let responses = op["responses"].as_object().expect("responses");
                let errors: Vec<&String> = responses
                    .keys()
                    .filter(|s| s.starts_with('4') || s.starts_with('5'))
                    .collect();
                let plain = matches!(path.as_str(), "/healthz" | "/metrics" | "/openapi.json");
                assert!(
                    plain || !errors.is_empty(),
                    "{method} {path} documents no error"
                );
                for status in errors {
                    let schema =
                        &responses[status]["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
