//! The pages: the buyer page at `/`, the operator dashboard at `/dashboard`, and every other
//! file under the repository's `web/` directory at `/web/{path}` (for example
//! `/web/style.css`, `/web/api.js`). The files are embedded at compile time by `build.rs`.
//!
//! The pages are not part of the JSON API, so they are not in [`crate::http::routes`] and not
//! in the OpenAPI document: schemathesis fuzzes what the document declares, and a static file
//! has no contract to check beyond the headers the tests in `tests/api/web.rs` hold.

mod assets;

pub use assets::Asset;

use crate::http::ApiError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{guard, web, HttpRequest, HttpResponse};

/// Where the assets are served: `/web/` + the path under `web/`.
pub const ASSET_PREFIX: &str = "/web/";

/// The policy on every page: nothing but this origin's files, no framing, no `<base>`, forms
/// only to this origin. No page uses inline script or style, so none needs `'unsafe-inline'`.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The pages and the file under `web/` each serves; `configure` registers exactly these, and a
/// test holds every one of them to the embedded table.
pub const PAGES: &[(&str, &str)] = &[
    ("/", "index.html"),
    ("/dashboard", "dashboard.html"),
    // The door's scanner (API.md §12).
    ("/door", "door.html"),
];

/// Registers every page of [`PAGES`] and `/web/{path}`, each for GET and HEAD.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for &(route, file) in PAGES {
        cfg.service(page(route, file));
    }
    cfg.service(
        web::resource("/web/{path:.*}").route(
            get_or_head()
                .to(|req: HttpRequest, path: web::Path<String>| async move { serve(&req, &path) }),
        ),
    );
}

fn page(route: &'static str, file: &'static str) -> actix_web::Resource {
    web::resource(route)
        .route(get_or_head().to(move |req: HttpRequest| async move { serve(&req, file) }))
}

fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The file at `path` under `web/`, a 304 when the client already holds it, or the 404 envelope.
fn serve(req: &HttpRequest, path: &str) -> Result<HttpResponse, ApiError> {
    let asset = Asset::find(path).ok_or(ApiError::NotFound)?;
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == asset.etag);
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, HeaderValue::from_static(asset.etag)))
        // The names are not content-hashed, so a client must revalidate every time; the
        // ETag makes that a 304 without a body.
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ));
    if fresh {
        return Ok(response.finish());
    }
    Ok(response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        .body(asset.bytes))
}
