//! The pages (`/`, `/dashboard`, `/web/{path}`): security headers on every one, content types,
//! a strong ETag that turns a revalidation into a 304, HEAD, and the 404 envelope.

use crate::helpers::*;
use reqwest::Method;

async fn app() -> TestApp {
    spawn_app(Backend::Sqlite).await
}

fn assert_page_headers(response: &reqwest::Response, path: &str) {
    let h = response.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    assert_eq!(h["cache-control"], "no-cache", "{path}");
    let etag = h["etag"].to_str().unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{path}: strong ETag, got {etag}"
    );
}

#[actix_web::test]
async fn pages_and_assets_carry_the_security_headers_and_their_content_type() {
    let app = app().await;
    for (path, content_type, marker) in [
        ("/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/dashboard", "text/html; charset=utf-8", "dashboard.js"),
        (
            "/web/dashboard.js",
            "text/javascript; charset=utf-8",
            "sessionStorage",
        ),
        (
            "/web/dashboard.css",
            "text/css; charset=utf-8",
            "prefers-reduced-motion",
        ),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert_page_headers(&response, path);
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains(marker), "{path} holds {marker}");
    }
}

#[actix_web::test]
async fn the_etag_turns_a_revalidation_into_a_304_and_a_changed_one_into_a_200() {
    let app = app().await;
    let first = app.get("/web/dashboard.js", None).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = app.get("/web/dashboard.js", None).await;
    assert_eq!(
        again.headers()["etag"].to_str().unwrap(),
        etag,
        "the same content, the same tag"
    );
    let other = app.get("/dashboard", None).await;
    assert_ne!(
        other.headers()["etag"].to_str().unwrap(),
        etag,
        "other content, another tag"
    );

    let revalidated = app
        .client
        .get(app.url("/web/dashboard.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status().as_u16(), 304);
    assert_page_headers(&revalidated, "304");
    assert!(revalidated.bytes().await.unwrap().is_empty());

    let listed = app
        .client
        .get(app.url("/web/dashboard.js"))
        .header("If-None-Match", format!("\"nope\", {etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 304, "a tag in a list matches");

    let stale = app
        .client
        .get(app.url("/web/dashboard.js"))
        .header("If-None-Match", "\"0000000000000000-0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 200);
    assert!(!stale.bytes().await.unwrap().is_empty());
}

#[actix_web::test]
async fn head_answers_the_headers_without_a_body() {
    let app = app().await;
    let get = app.get("/dashboard", None).await;
    let head = app
        .client
        .request(Method::HEAD, app.url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_page_headers(&head, "HEAD /dashboard");
    assert_eq!(head.headers()["etag"], get.headers()["etag"]);
    assert!(head.bytes().await.unwrap().is_empty());
}

#[actix_web::test]
async fn an_unknown_asset_is_the_404_envelope() {
    let app = app().await;
    for path in [
        "/web/nope.js",
        "/web/",
        "/web/../Cargo.toml",
        "/web/%2e%2e/build.rs",
        "/dashboard/x",
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status().as_u16(), 404, "{path}");
        let body = body(response).await;
        assert_eq!(body["error"], "not_found", "{path}: {body}");
    }
}

#[actix_web::test]
async fn pages_are_not_in_the_openapi_document() {
    let app = app().await;
    let document = body(app.get("/openapi.json", None).await).await;
    let paths = document["paths"].as_object().unwrap();
    for path in ["/", "/dashboard", "/web/{path}"] {
        assert!(!paths.contains_key(path), "{path} is not an API operation");
    }
}
