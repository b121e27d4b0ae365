//! The OpenAPI 3 document of every route, generated from the handlers' annotations and the
//! response types themselves, so it cannot drift from what the code serializes. It declares
//! every bound the service enforces on what it reads (ids ≥ 1, `limit` 1–100, names 1–200
//! characters, list sizes, amounts), so a request valid by the document is never refused as
//! malformed; `tests/api/document.rs` holds each bound to the service's own.

use crate::actors::EngineSettings;
use utoipa::OpenApi;

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
        super::admin::create_user,
        super::admin::create_concert,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::openapi,
    ),
    components(schemas(super::error::ErrorBody))
)]
pub struct ApiDoc;

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
        doc
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

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
