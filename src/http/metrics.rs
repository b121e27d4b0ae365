//! Prometheus metrics: the recorder (one per process), and the per-route request counter and
//! latency histogram every request passes through.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use metrics::{Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

/// Latency buckets, in seconds: from a fast poll to a slow commit.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` if another recorder was installed
/// first (an embedding application's): metrics then go there.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            // Histogram samples pile up until drained; a service nobody scrapes must not grow.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Largest total size of a request's headers: no valid request comes close. (Past about
/// 128 KiB actix's HTTP codec refuses the request itself, with a bodiless 431.)
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The route template a resource serves, attached to it as app data so the request's metrics
/// can name it after routing without matching the path against every route again
/// (`HttpRequest::match_pattern` does).
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Counts and times every request by method, route template and status; refuses oversized
/// header sets with the envelope before any handler runs.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(super::ApiError::HeadersTooLarge.into());
    }
    let method = method_label(req.method());
    // (Routing needs the request unshared: it cannot be cloned and kept here.)
    let response = next.call(req).await;
    let (status, route) = match &response {
        // The template, not the path: one series per route, whatever the ids.
        Ok(r) => (
            r.status(),
            r.request()
                .app_data::<RouteLabel>()
                .map_or("unmatched", |label| label.0),
        ),
        // Handlers' errors are responses by now; this is a middleware's failure.
        Err(e) => (e.as_response_error().status_code(), "unmatched"),
    };
    let (requests, latency) = series(method, route, status);
    requests.increment(1);
    if let Some(latency) = latency {
        latency.record(started.elapsed().as_secs_f64());
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        if let Ok(r) = &response {
            if let Some(state) = r
                .request()
                .app_data::<actix_web::web::Data<super::AppState>>()
            {
                state.engine.live().answered_unavailable();
            }
        }
    }
    response
}

/// The request counter and latency histogram of one (method, route, status). A live stream's
/// answer is its first byte, and its life is the viewer's: neither is a request latency, so
/// its route has no histogram at all (not even an empty series).
type Series = (Counter, Option<Histogram>);

thread_local! {
    /// Each worker's handles, looked up once per series instead of per request: the registry's
    /// lookup builds the key (its labels) and hashes it every time, a visible cost per request
    /// in the profile of a hold (docs/BENCHMARKS.md, issue 30).
    static SERIES: RefCell<HashMap<(&'static str, &'static str, u16), Series>> =
        RefCell::new(HashMap::new());
}

/// The handles of one series: from this worker's cache once a recorder is installed (a handle
/// taken before would be a no-op for good), else from the registry.
fn series(method: &'static str, route: &'static str, status: StatusCode) -> Series {
    let register = || {
        let labels = [
            ("method", SharedString::const_str(method)),
            ("route", SharedString::const_str(route)),
            ("status", status_label(status)),
        ];
        (
            metrics::counter!("boxoffice_http_requests_total", &labels),
            (route != super::live::PATH).then(|| {
                metrics::histogram!("boxoffice_http_request_duration_seconds", &labels[..2])
            }),
        )
    };
    if HANDLE.get().is_none() {
        return register();
    }
    SERIES.with(|cache| {
        (cache.borrow_mut())
            .entry((method, route, status.as_u16()))
            .or_insert_with(register)
            .clone()
    })
}

/// The status as a label: the codes this service answers are static strings (no allocation
/// per request); any other is copied.
fn status_label(status: StatusCode) -> SharedString {
    let code = match status.as_u16() {
        200 => "200",
        201 => "201",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        _ => return SharedString::from(status.as_str().to_owned()),
    };
    SharedString::const_str(code)
}

/// The method as a static label (no allocation per request); "OTHER" for extension methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_label_is_the_code() {
        for code in 100..=999 {
            let status = StatusCode::from_u16(code).expect("every three-digit code is valid");
            assert_eq!(status_label(status).as_ref(), status.as_str());
        }
    }
}
