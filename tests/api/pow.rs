//! Proof of work at the join (API.md §11, `--join-pow-bits`): a new token costs a solved,
//! unspent, unexpired challenge this service issued; a live token comes back without one; with
//! no bits asked, the join is the seed's.

use crate::helpers::*;
use crate::{on_both_stores, on_postgres};
use boxoffice::domain::queue::pow::solve;
use reqwest::Response;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Few enough bits to solve at once in a test, enough that a random nonce fails.
const BITS: u8 = 10;

async fn spawn_with_pow(backend: Backend) -> TestApp {
    spawn_app_with(TestDb::create(backend).await, |s| s.join_pow.bits = BITS).await
}

impl TestApp {
    async fn challenge(&self) -> String {
        let response = self.get("/v1/queue/challenge", None).await;
        assert_eq!(response.status().as_u16(), 200);
        body(response).await["challenge"]
            .as_str()
            .expect("a challenge")
            .to_owned()
    }

    async fn join_with(&self, user: i64, solution: &str) -> Response {
        self.client
            .post(self.url(&format!("/v1/queue-tokens/users/{user}")))
            .header("X-Queue-Pow", solution)
            .send()
            .await
            .expect("request sent")
    }

    async fn assert_no_token(&self, user: i64) {
        let read = self
            .get(&format!("/v1/queue-tokens/users/{user}"), None)
            .await;
        assert_error(read, 404, "token_not_found", "token not found").await;
    }
}

async fn assert_pow_invalid(response: Response) {
    assert_error(response, 403, "pow_invalid", "proof of work invalid").await;
}

/// A nonce whose hash has fewer than `bits` zero bits.
fn weak_solution(challenge: &str, bits: u32) -> String {
    (0u64..)
        .map(|n| format!("{challenge}.{n}"))
        .find(|value| {
            let digest = Sha256::digest(value.as_bytes());
            let zeros = digest
                .iter()
                .position(|b| *b != 0)
                .map_or(256, |i| i as u32 * 8 + digest[i].leading_zeros());
            zeros < bits
        })
        .expect("most nonces are weak")
}

async fn a_join_without_a_solution_is_refused_and_makes_no_token(backend: Backend) {
    let app = spawn_with_pow(backend).await;
    let user = app.create_user(0).await;
    assert_error(
        app.join(user).await,
        403,
        "pow_required",
        "proof of work required",
    )
    .await;
    app.assert_no_token(user).await;
    assert_error(app.join(999).await, 404, "user_not_found", "user not found").await;
}
on_both_stores!(a_join_without_a_solution_is_refused_and_makes_no_token);

async fn a_solved_challenge_joins_once_and_a_live_token_needs_none(backend: Backend) {
    let app = spawn_with_pow(backend).await;
    let (alice, bob) = (app.create_user(0).await, app.create_user(0).await);
    let response = app.get("/v1/queue/challenge", None).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let issued = body(response).await;
    let challenge = issued["challenge"].as_str().expect("a challenge");
    assert_eq!(challenge.len(), 54);
    assert!(challenge
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(issued["bits"], BITS);
    assert_eq!(issued["expiresAt"].as_str().map(str::len), Some(19));

    let solution = solve(challenge, BITS);
    let joined = app.join_with(alice, &solution).await;
    assert_eq!(joined.status().as_u16(), 201);
    let token = body(joined).await["tokenId"].as_i64().expect("a token");

    // Reused: by another user, then by the same one.
    assert_pow_invalid(app.join_with(bob, &solution).await).await;
    app.assert_no_token(bob).await;
    assert_pow_invalid(app.join_with(alice, &solution).await).await;

    // A second click of a live token needs no solution.
    let again = app.join(alice).await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(body(again).await["tokenId"], token);
}
on_both_stores!(a_solved_challenge_joins_once_and_a_live_token_needs_none);

async fn wrong_forged_expired_and_malformed_solutions_make_no_token(backend: Backend) {
    let app = spawn_with_pow(backend).await;
    let user = app.create_user(0).await;

    let challenge = app.challenge().await;
    assert_pow_invalid(
        app.join_with(user, &weak_solution(&challenge, u32::from(BITS)))
            .await,
    )
    .await;

    // One character of the random part changed: the tag no longer matches, however well the
    // forged challenge is solved.
    let mut forged = challenge.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ASCII");
    assert_pow_invalid(app.join_with(user, &solve(&forged, BITS)).await).await;

    for malformed in ["", "abc", "abc.1", &format!("{challenge}."), &challenge] {
        assert_pow_invalid(app.join_with(user, malformed).await).await;
    }

    // Solved, but spent after its two minutes.
    let late = solve(&app.challenge().await, BITS);
    app.clock.advance(Duration::from_secs(121));
    assert_pow_invalid(app.join_with(user, &late).await).await;
    app.assert_no_token(user).await;

    // A challenge issued now still works: only the expired one was refused.
    let fresh = solve(&app.challenge().await, BITS);
    assert_eq!(app.join_with(user, &fresh).await.status().as_u16(), 201);
}
on_postgres!(wrong_forged_expired_and_malformed_solutions_make_no_token);

async fn an_expired_token_needs_a_new_solution(backend: Backend) {
    let app = spawn_with_pow(backend).await;
    let user = app.create_user(0).await;
    let solution = solve(&app.challenge().await, BITS);
    assert_eq!(app.join_with(user, &solution).await.status().as_u16(), 201);
    // Past the active time to live (and any idle timeout): the token is no longer live.
    app.clock
        .advance(app.settings.engine.active_ttl + app.settings.engine.idle_timeout);
    assert_error(
        app.join(user).await,
        403,
        "pow_required",
        "proof of work required",
    )
    .await;
    let solution = solve(&app.challenge().await, BITS);
    assert_eq!(app.join_with(user, &solution).await.status().as_u16(), 201);
}
on_postgres!(an_expired_token_needs_a_new_solution);

async fn with_no_bits_the_join_is_the_seeds(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    assert_eq!(app.join(user).await.status().as_u16(), 201);
    assert_eq!(app.join(user).await.status().as_u16(), 200);
    assert_error(
        app.get("/v1/queue/challenge", None).await,
        404,
        "not_found",
        "not found",
    )
    .await;
    // A client that always solves still joins: a solution-shaped header is ignored.
    let other = app.create_user(0).await;
    let shaped = format!("{}.1", "A".repeat(54));
    let joined = app.join_with(other, &shaped).await;
    assert_eq!(joined.status().as_u16(), 201);
    // One without a solution's shape (the document's pattern) is refused as with work asked,
    // and makes no token.
    let third = app.create_user(0).await;
    for malformed in ["{}", "anything.1", "A.1", &format!("{}.", "A".repeat(54))] {
        assert_pow_invalid(app.join_with(third, malformed).await).await;
    }
    app.assert_no_token(third).await;
}
on_both_stores!(with_no_bits_the_join_is_the_seeds);
