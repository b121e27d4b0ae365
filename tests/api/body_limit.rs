//! The public routes' body limit (16 KiB, README "Limits"): a *valid* body over it is refused
//! unread and changes nothing. The 1 MiB body of `survival` is not JSON, so the parser would
//! refuse it with no limit at all; only a body the parser would accept shows the limit.

use crate::helpers::*;
use crate::on_both_stores;

/// The documented limit, written out here: a test reading the source's constant would follow
/// a break that raised it.
const LIMIT: usize = 16 * 1024;

/// A valid recharge of 500 padded with whitespace (which JSON allows) to exactly `len` bytes.
fn padded_recharge(len: usize) -> Vec<u8> {
    let mut body = br#"{"amount":500"#.to_vec();
    body.resize(len - 1, b' ');
    body.push(b'}');
    body
}

async fn send(app: &TestApp, user: i64, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/balance/users/{user}/recharge")))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

async fn a_valid_body_over_the_limit_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(1_000).await;
    // At the limit: read, parsed and applied (so the refusal below is the size, not the shape).
    let at = send(&app, user, padded_recharge(LIMIT)).await;
    assert_eq!(at.status().as_u16(), 200, "a body of exactly the limit");
    assert_eq!(app.balance(user).await, 1_500);
    let over = send(&app, user, padded_recharge(LIMIT + 1)).await;
    assert_error(
        over,
        400,
        "invalid_request",
        &format!("request body is larger than {LIMIT} bytes"),
    )
    .await;
    assert_eq!(
        app.balance(user).await,
        1_500,
        "the oversized body changed nothing"
    );
}
on_both_stores!(a_valid_body_over_the_limit_is_refused_and_changes_nothing);
