//! `--auth jwt` as an attacker meets it: every bearer that is not the named user's own is
//! refused before anything is looked up, and a stored idempotent answer is replayed only to a
//! request that passes the same checks as the first one (issue 15 §1 and §3.8).

use crate::helpers::*;
use crate::on_both_stores;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use boxoffice::config::{AuthMode, Settings};
use boxoffice::startup::Application;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const NOBODY: i64 = 987_654_321;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("the test keys are committed")
}

fn hs256(claims: Value) -> String {
    sign(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
}

/// A token whose header says `alg: none`, with no signature at all.
fn unsigned(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        part(&json!({ "alg": "none", "typ": "JWT" })),
        part(claims)
    )
}

/// (status, body text) of a request.
async fn answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

const UNAUTHORIZED: &str = r#"{"code":401,"error":"unauthorized","message":"unauthorized"}"#;
const FORBIDDEN: &str = r#"{"code":403,"error":"forbidden","message":"forbidden"}"#;

/// Every user-scoped route, naming `user` (and reservation `reservation`): (method, path, body).
fn user_routes(
    user: i64,
    reservation: i64,
    concert: &Concert,
) -> Vec<(Method, String, Option<Value>)> {
    let hold = json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": [concert.seats[0]] });
    let pay = json!({ "reservationId": reservation });
    vec![
        (Method::POST, format!("/v1/queue-tokens/users/{user}"), None),
        (Method::GET, format!("/v1/queue-tokens/users/{user}"), None),
        (Method::GET, format!("/v1/queue-status/users/{user}"), None),
        (Method::POST, "/v1/reservations".into(), Some(hold)),
        (
            Method::GET,
            format!("/v1/reservations/{reservation}?userId={user}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/reservations/{reservation}?userId={user}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/payments/users/{user}"),
            Some(pay.clone()),
        ),
        (
            Method::POST,
            format!("/v1/payments/users/{user}/progress"),
            Some(pay),
        ),
        (Method::GET, format!("/v1/balance/users/{user}"), None),
        (
            Method::POST,
            format!("/v1/balance/users/{user}/recharge"),
            Some(json!({ "amount": 100 })),
        ),
        (
            Method::GET,
            format!("/v1/balance/users/{user}/history"),
            None,
        ),
    ]
}

/// Holds `concert`'s seat number `seat` for `user`, through their bearer; the reservation id.
async fn hold_as(
    app: &TestApp,
    user: i64,
    bearer: &str,
    token: i64,
    concert: &Concert,
    seat: usize,
) -> i64 {
    let hold = json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": [concert.seats[seat]] });
    let reserved = app
        .send(
            Method::POST,
            "/v1/reservations",
            Some(bearer),
            Some(token),
            Some(&hold),
        )
        .await;
    assert_eq!(reserved.status(), 201);
    body(reserved).await["reservationId"]
        .as_i64()
        .expect("an id")
}

/// A user with an ACTIVE token and a PAYMENT_PENDING reservation, all through their bearer.
async fn user_with_a_hold(app: &TestApp, concert: &Concert, seat: usize) -> (i64, i64, i64) {
    let user = app.create_user(100_000).await;
    let bearer = mint(user);
    let token = app.active_token_as(user, &bearer).await;
    let reservation = hold_as(app, user, &bearer, token, concert, seat).await;
    (user, token, reservation)
}

#[actix_web::test]
async fn every_bearer_that_is_not_valid_is_401_and_says_nothing_more() {
    let app = spawn_jwt_app(Backend::Sqlite, |s| {
        s.auth.jwt_issuer = Some("https://id.example".into());
        s.auth.jwt_audience = Some("boxoffice".into());
    })
    .await;
    let user = app.create_user(0).await;
    let sub = user.to_string();
    let now = unix_now();
    let good =
        json!({ "sub": sub, "exp": now + 600, "iss": "https://id.example", "aud": "boxoffice" });
    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().expect("an object") {
            claims[k] = v.clone();
        }
        claims
    };
    let without = |field: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().expect("an object").remove(field);
        claims
    };
    let forged = sign(
        &good,
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-enough-length-0123456789"),
    );
    let valid = hs256(good.clone());
    let tampered = {
        // The signature of one user's claims on another's: the payload no longer matches it.
        let parts: Vec<&str> = valid.split('.').collect();
        let other =
            URL_SAFE_NO_PAD.encode(with(json!({ "sub": (user + 1).to_string() })).to_string());
        format!("{}.{}.{}", parts[0], other, parts[2])
    };
    let bearer = |claims: Value| Some(format!("Bearer {}", hs256(claims)));
    let hs384 = sign(
        &good,
        Algorithm::HS384,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    );
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("scheme only", Some("Bearer".into())),
        ("another scheme", Some(format!("Basic {valid}"))),
        ("not a JWT", Some("Bearer not-a-jwt".into())),
        ("three empty parts", Some("Bearer ..".into())),
        ("forged signature", Some(format!("Bearer {forged}"))),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("alg none", Some(format!("Bearer {}", unsigned(&good)))),
        ("HS384", Some(format!("Bearer {hs384}"))),
        ("expired", bearer(with(json!({ "exp": now - 3600 })))),
        ("exp as text", bearer(with(json!({ "exp": "never" })))),
        ("no exp", bearer(without("exp"))),
        (
            "wrong iss",
            bearer(with(json!({ "iss": "https://evil.example" }))),
        ),
        ("no iss", bearer(without("iss"))),
        ("iss as a number", bearer(with(json!({ "iss": 7 })))),
        (
            "wrong aud",
            bearer(with(json!({ "aud": "another-service" }))),
        ),
        ("no aud", bearer(without("aud"))),
        ("aud as a number", bearer(with(json!({ "aud": 7 })))),
        ("future nbf", bearer(with(json!({ "nbf": now + 3600 })))),
        ("no sub", bearer(without("sub"))),
        ("sub a name", bearer(with(json!({ "sub": "alice" })))),
        ("sub a number", bearer(with(json!({ "sub": user })))),
        (
            "sub zero-padded",
            bearer(with(json!({ "sub": format!("0{user}") }))),
        ),
        (
            "sub signed",
            bearer(with(json!({ "sub": format!("+{user}") }))),
        ),
        ("sub zero", bearer(with(json!({ "sub": "0" })))),
    ];
    for target in [user, NOBODY] {
        let path = format!("/v1/balance/users/{target}");
        for (what, header) in &bad {
            let mut request = app.client.get(app.url(&path));
            if let Some(header) = header {
                request = request.header("Authorization", header);
            }
            let (status, text) = answer(request.send().await.expect("sent")).await;
            assert_eq!(
                (status, text.as_str()),
                (401, UNAUTHORIZED),
                "{what}, user {target}"
            );
        }
    }
    // Two Authorization headers: which one would count is ambiguous, so neither does.
    let twice = app
        .client
        .get(app.url(&format!("/v1/balance/users/{user}")))
        .header("Authorization", format!("Bearer {valid}"))
        .header("Authorization", format!("Bearer {valid}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(answer(twice).await, (401, UNAUTHORIZED.to_string()));
    // The scheme is case-insensitive (RFC 9110 §11.1), and the good token passes: the
    // refusals above are the token's, not the route's.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let ok = app
            .client
            .get(app.url(&format!("/v1/balance/users/{user}")))
            .header("Authorization", format!("{scheme} {valid}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(ok.status(), 200, "{scheme}");
    }
    let many_audiences = hs256(with(json!({ "aud": ["other", "boxoffice"] })));
    let ok = app
        .send(
            Method::GET,
            &format!("/v1/balance/users/{user}"),
            Some(&many_audiences),
            None,
            None,
        )
        .await;
    assert_eq!(ok.status(), 200, "an audience list naming this service");
}

async fn another_users_bearer_is_403_and_no_bearer_401_on_every_user_scoped_route(
    backend: Backend,
) {
    let app = spawn_jwt_app(backend, |_| {}).await;
    let concert = app.create_concert(4, 1_000).await;
    let (victim, victim_token, reservation) = user_with_a_hold(&app, &concert, 0).await;
    let attacker = app.create_user(100_000).await;
    let attacker_bearer = mint(attacker);
    let attacker_token = app.active_token_as(attacker, &attacker_bearer).await;
    for target in [victim, NOBODY] {
        for (method, path, request) in user_routes(target, reservation, &concert) {
            for token in [Some(victim_token), Some(attacker_token), None] {
                let refused = app
                    .send(
                        method.clone(),
                        &path,
                        Some(&attacker_bearer),
                        token,
                        request.as_ref(),
                    )
                    .await;
                let (status, text) = answer(refused).await;
                if path.ends_with("/recharge") {
                    // A back-office action in jwt mode: the admin key's 403.
                    assert_eq!(status, 403, "{method} {path}: {text}");
                    assert!(text.contains(r#""error":"forbidden""#), "{text}");
                } else {
                    assert_eq!((status, text.as_str()), (403, FORBIDDEN), "{method} {path}");
                }
                let anonymous = app
                    .send(method.clone(), &path, None, token, request.as_ref())
                    .await;
                let (status, text) = answer(anonymous).await;
                if !path.ends_with("/recharge") {
                    assert_eq!(
                        (status, text.as_str()),
                        (401, UNAUTHORIZED),
                        "{method} {path}"
                    );
                }
            }
        }
    }
    // Nothing the attacker sent changed the victim's hold, wallet or line.
    let victim_bearer = mint(victim);
    let read = app
        .send(
            Method::GET,
            &format!("/v1/reservations/{reservation}?userId={victim}"),
            Some(&victim_bearer),
            Some(victim_token),
            None,
        )
        .await;
    assert_eq!(body(read).await["reservationStatus"], "PAYMENT_PENDING");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM payments").await, 0);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM reservations").await, 1);
}
on_both_stores!(another_users_bearer_is_403_and_no_bearer_401_on_every_user_scoped_route);

async fn an_own_bearer_works_end_to_end(backend: Backend) {
    let app = spawn_jwt_app(backend, |_| {}).await;
    let user = app.create_user(0).await;
    let bearer = mint(user);
    let concert = app.create_concert(2, 30_000).await;
    let recharged = app
        .client
        .post(app.url(&format!("/v1/balance/users/{user}/recharge")))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "amount": 50_000 }))
        .send()
        .await
        .expect("sent");
    assert_eq!(recharged.status(), 200);
    let token = app.active_token_as(user, &bearer).await;
    let reservation = hold_as(&app, user, &bearer, token, &concert, 0).await;
    let pay = json!({ "reservationId": reservation });
    let progress = app
        .send(
            Method::POST,
            &format!("/v1/payments/users/{user}/progress"),
            Some(&bearer),
            Some(token),
            Some(&pay),
        )
        .await;
    assert_eq!(body(progress).await["payable"], true);
    let paid = app
        .send(
            Method::POST,
            &format!("/v1/payments/users/{user}"),
            Some(&bearer),
            Some(token),
            Some(&pay),
        )
        .await;
    assert_eq!(paid.status(), 201);
    let balance = app
        .send(
            Method::GET,
            &format!("/v1/balance/users/{user}"),
            Some(&bearer),
            None,
            None,
        )
        .await;
    assert_eq!(body(balance).await["currentAmount"], 20_000);
    let history = app
        .send(
            Method::GET,
            &format!("/v1/balance/users/{user}/history"),
            Some(&bearer),
            None,
            None,
        )
        .await;
    assert_eq!(body(history).await["entries"][0]["kind"], "PAYMENT");
    // The TOKEN-ID check still stands on top of the bearer: the payment spent the token.
    let again = app
        .send(
            Method::POST,
            "/v1/reservations",
            Some(&bearer),
            Some(token),
            Some(&json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": [concert.seats[1]] })),
        )
        .await;
    assert_error(again, 401, "token_expired", "token expired").await;
}
on_both_stores!(an_own_bearer_works_end_to_end);

#[actix_web::test]
async fn a_queue_token_is_given_only_to_its_owner() {
    let app = spawn_jwt_app(Backend::Sqlite, |_| {}).await;
    let owner = app.create_user(0).await;
    let other = mint(app.create_user(0).await);
    let path = format!("/v1/queue-tokens/users/{owner}");
    let joined_for = app
        .send(Method::POST, &path, Some(&other), None, None)
        .await;
    assert_eq!(answer(joined_for).await, (403, FORBIDDEN.to_string()));
    let own = mint(owner);
    let none_yet = app.send(Method::GET, &path, Some(&own), None, None).await;
    assert_error(none_yet, 404, "token_not_found", "token not found").await;
    let joined = app.send(Method::POST, &path, Some(&own), None, None).await;
    assert_eq!(joined.status(), 201);
    let token = body(joined).await["tokenId"].as_i64().expect("a token id");
    let read_by_other = app.send(Method::GET, &path, Some(&other), None, None).await;
    assert_eq!(answer(read_by_other).await, (403, FORBIDDEN.to_string()));
    let rejoined_by_other = app
        .send(Method::POST, &path, Some(&other), None, None)
        .await;
    assert_eq!(
        answer(rejoined_by_other).await,
        (403, FORBIDDEN.to_string())
    );
    let read = app.send(Method::GET, &path, Some(&own), None, None).await;
    assert_eq!(body(read).await["tokenId"], token);
}

/// A recharge as the back office sends it.
async fn with_admin_key(app: &TestApp, path: &str, key: &str, amount: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("X-Admin-Key", key)
        .json(amount)
        .send()
        .await
        .expect("sent")
}

#[actix_web::test]
async fn recharge_needs_the_admin_key_unless_users_may_recharge() {
    let app = spawn_jwt_app(Backend::Sqlite, |_| {}).await;
    let user = app.create_user(0).await;
    let path = format!("/v1/balance/users/{user}/recharge");
    let amount = json!({ "amount": 500 });
    let own = app
        .send(Method::POST, &path, Some(&mint(user)), None, Some(&amount))
        .await;
    assert_error(own, 403, "forbidden", "").await;
    let wrong_key = with_admin_key(&app, &path, "not-the-key", &amount).await;
    assert_error(wrong_key, 403, "forbidden", "").await;
    let back_office = with_admin_key(&app, &path, ADMIN_KEY, &amount).await;
    assert_eq!(back_office.status(), 200);
    let (db, mut settings, clock) = app.stop().await;
    settings.auth.user_recharge = true;
    let app = spawn_app_on(db, clock, move |s| *s = settings).await;
    let own = app
        .send(Method::POST, &path, Some(&mint(user)), None, Some(&amount))
        .await;
    assert_eq!(own.status(), 200);
    let other = mint(app.create_user(0).await);
    let theirs = app
        .send(Method::POST, &path, Some(&other), None, Some(&amount))
        .await;
    assert_eq!(answer(theirs).await, (403, FORBIDDEN.to_string()));
    let anonymous = app
        .send(Method::POST, &path, None, None, Some(&amount))
        .await;
    assert_eq!(answer(anonymous).await, (401, UNAUTHORIZED.to_string()));
    let back_office = with_admin_key(&app, &path, ADMIN_KEY, &amount).await;
    assert_eq!(
        back_office.status(),
        200,
        "the provider's callback still works"
    );
    let balance = app
        .send(
            Method::GET,
            &format!("/v1/balance/users/{user}"),
            Some(&mint(user)),
            None,
            None,
        )
        .await;
    assert_eq!(body(balance).await["currentAmount"], 1_500);
}

/// Starts a jwt-mode app verifying with the public key in `file`.
async fn spawn_public_key_app(file: &str) -> TestApp {
    let path = fixture(file);
    spawn_app_with(TestDb::create(Backend::Sqlite).await, move |s| {
        s.auth.mode = AuthMode::Jwt;
        s.auth.jwt_public_key = Some(path);
    })
    .await
}

#[actix_web::test]
async fn a_public_key_fixes_the_algorithm_and_nothing_else_passes() {
    let keys = [
        ("rsa", Algorithm::RS256),
        ("p256", Algorithm::ES256),
        ("ed25519", Algorithm::EdDSA),
    ];
    let signing = |name: &str, algorithm: Algorithm| {
        let pem = read_fixture(&format!("{name}-private.pem"));
        match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("a test private key")
    };
    for (name, algorithm) in keys {
        let app = spawn_public_key_app(&format!("{name}-public.pem")).await;
        let user = app.create_user(0).await;
        let path = format!("/v1/balance/users/{user}");
        let claims = json!({ "sub": user.to_string(), "exp": unix_now() + 600 });
        let good = sign(&claims, algorithm, &signing(name, algorithm));
        let ok = app.send(Method::GET, &path, Some(&good), None, None).await;
        assert_eq!(ok.status(), 200, "{name}");
        // Algorithm switching: HS256 keyed with the public key's own bytes.
        let public_pem = read_fixture(&format!("{name}-public.pem"));
        let switched = sign(
            &claims,
            Algorithm::HS256,
            &EncodingKey::from_secret(&public_pem),
        );
        // Signed by a key of another type, under that type's algorithm.
        let others = keys
            .iter()
            .filter(|(other, _)| *other != name)
            .map(|(other, a)| sign(&claims, *a, &signing(other, *a)));
        for bad in [switched, unsigned(&claims)].into_iter().chain(others) {
            let refused = app.send(Method::GET, &path, Some(&bad), None, None).await;
            assert_eq!(
                answer(refused).await,
                (401, UNAUTHORIZED.to_string()),
                "{name}"
            );
        }
    }
}

async fn start_error(settings: impl FnOnce(&mut Settings)) -> String {
    let mut s = Settings::for_database("sqlite://unused-by-refused-starts.db");
    settings(&mut s);
    match Application::build(s).await {
        Ok(_) => panic!("the application should refuse these settings"),
        Err(e) => e.to_string(),
    }
}

#[actix_web::test]
async fn keys_the_service_cannot_verify_with_stop_it_at_startup() {
    let p384 = start_error(|s| {
        s.auth.mode = AuthMode::Jwt;
        s.auth.jwt_public_key = Some(fixture("p384-public.pem"));
    })
    .await;
    assert!(
        p384.contains("not an RSA, P-256 or Ed25519 public key"),
        "{p384}"
    );
    let private = start_error(|s| {
        s.auth.mode = AuthMode::Jwt;
        s.auth.jwt_public_key = Some(fixture("rsa-private.pem"));
    })
    .await;
    assert!(private.contains("holds a private key"), "{private}");
    let missing = start_error(|s| {
        s.auth.mode = AuthMode::Jwt;
        s.auth.jwt_public_key = Some(fixture("no-such-key.pem"));
    })
    .await;
    assert!(
        missing.contains("cannot read --jwt-public-key"),
        "{missing}"
    );
}

/// Runs `boxoffice serve ARGS` with `env`, and returns (exit success, stderr).
fn serve(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("boxoffice_auth_cli_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let db = dir.join("never-created.db");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .arg("serve")
        .args(["--bind", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs");
    // Refused before the store opens: no database file was made.
    assert!(
        !db.exists(),
        "the store opened before the settings were checked"
    );
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_auth_settings_are_one_line_at_startup() {
    let short = "short-secret-0123456789";
    /// (flags, environment, what the one error line says)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--auth", "jwt", "--jwt-secret", short],
            vec![],
            "--jwt-secret must be at least 32 bytes (it has 23)",
        ),
        (
            vec!["--auth", "jwt"],
            vec![("BOXOFFICE_JWT_SECRET", short)],
            "at least 32 bytes",
        ),
        (
            vec!["--auth", "jwt"],
            vec![],
            "--auth jwt needs --jwt-secret or --jwt-public-key",
        ),
        (
            vec!["--auth", "jwt", "--jwt-public-key", "/nowhere.pem"],
            vec![("BOXOFFICE_JWT_SECRET", JWT_SECRET)],
            "not both",
        ),
        (
            vec!["--jwt-secret", JWT_SECRET],
            vec![],
            "--jwt-secret is set but --auth is none",
        ),
    ];
    for (args, env, expected) in cases {
        let (ok, stderr) = serve(&args, &env);
        assert!(!ok, "{args:?} should not start");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "one error line: {stderr}");
        assert!(
            errors[0].contains(expected),
            "{:?} should say {expected:?}",
            errors[0]
        );
        assert!(
            !stderr.contains(short) && !stderr.contains(JWT_SECRET),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn help_never_prints_the_secret_from_the_environment() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["serve", "--help"])
        .env("BOXOFFICE_JWT_SECRET", JWT_SECRET)
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--jwt-secret"), "{help}");
    assert!(!help.contains(JWT_SECRET), "{help}");
}

// --- §3.8: replays only after the first request's checks ----------------------------------

async fn with_key(
    app: &TestApp,
    path: &str,
    bearer: Option<&str>,
    token: Option<i64>,
    key: &str,
    request: &Value,
) -> (u16, String, bool) {
    let mut builder = app
        .client
        .post(app.url(path))
        .header("Idempotency-Key", key)
        .json(request);
    if let Some(bearer) = bearer {
        builder = builder.bearer_auth(bearer);
    }
    if let Some(token) = token {
        builder = builder.header("TOKEN-ID", token.to_string());
    }
    let response = builder.send().await.expect("sent");
    let replayed = response.headers().contains_key("idempotent-replayed");
    let (status, text) = answer(response).await;
    (status, text, replayed)
}

async fn a_stored_hold_is_not_replayed_to_a_token_refused_now(backend: Backend) {
    let app = spawn_app(backend).await;
    let victim = app.create_user(0).await;
    let victim_token = app.active_token(victim).await;
    let attacker = app.create_user(0).await;
    let attacker_token = app.active_token(attacker).await;
    let concert = app.create_concert(1, 1_000).await;
    let hold = json!({ "userId": victim, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": concert.seats });
    let path = "/v1/reservations";
    let (status, first, _) = with_key(&app, path, None, Some(victim_token), "hold-1", &hold).await;
    assert_eq!(status, 201, "{first}");
    // The victim's request, the victim's key, the attacker's (valid, ACTIVE) token.
    let (status, text, replayed) =
        with_key(&app, path, None, Some(attacker_token), "hold-1", &hold).await;
    assert_eq!((status, replayed), (401, false), "{text}");
    assert!(text.contains("invalid_token"), "{text}");
    let (status, text, replayed) = with_key(&app, path, None, None, "hold-1", &hold).await;
    assert_eq!((status, replayed), (401, false), "{text}");
    // The victim's own retry still replays while the token is ACTIVE...
    let (status, text, replayed) =
        with_key(&app, path, None, Some(victim_token), "hold-1", &hold).await;
    assert_eq!((status, &text, replayed), (201, &first, true));
    // ...and not once the token has expired.
    app.clock
        .advance(app.settings.engine.active_ttl + Duration::from_secs(1));
    let (status, text, replayed) =
        with_key(&app, path, None, Some(victim_token), "hold-1", &hold).await;
    assert_eq!((status, replayed), (401, false), "{text}");
    assert!(text.contains("token_expired"), "{text}");
}
on_both_stores!(a_stored_hold_is_not_replayed_to_a_token_refused_now);

async fn a_stored_payment_is_replayed_only_with_the_token_it_spent(backend: Backend) {
    let app = spawn_app(backend).await;
    let victim = app.create_user(10_000).await;
    let victim_token = app.active_token(victim).await;
    let attacker = app.create_user(0).await;
    let attacker_token = app.active_token(attacker).await;
    let concert = app.create_concert(1, 1_000).await;
    let reserved = app
        .reserve(victim, victim_token, &concert, &concert.seats)
        .await;
    let reservation = body(reserved).await["reservationId"]
        .as_i64()
        .expect("an id");
    let path = format!("/v1/payments/users/{victim}");
    let pay = json!({ "reservationId": reservation });
    let (status, first, _) = with_key(&app, &path, None, Some(victim_token), "pay-1", &pay).await;
    assert_eq!(status, 201, "{first}");
    for token in [Some(attacker_token), None, Some(1)] {
        let (status, text, replayed) = with_key(&app, &path, None, token, "pay-1", &pay).await;
        assert_eq!((status, replayed), (401, false), "{token:?}: {text}");
        assert!(text.contains("invalid_token"), "{text}");
    }
    // The retry of the payment that went through carries the token it spent: replayed.
    let (status, text, replayed) =
        with_key(&app, &path, None, Some(victim_token), "pay-1", &pay).await;
    assert_eq!((status, &text, replayed), (201, &first, true));
}
on_both_stores!(a_stored_payment_is_replayed_only_with_the_token_it_spent);

#[actix_web::test]
async fn a_stored_answer_is_not_replayed_to_a_bearer_refused_now() {
    let app = spawn_jwt_app(Backend::Sqlite, |s| s.auth.user_recharge = true).await;
    let concert = app.create_concert(1, 1_000).await;
    let (victim, victim_token, reservation) = user_with_a_hold(&app, &concert, 0).await;
    let victim_bearer = mint(victim);
    let attacker = mint(app.create_user(0).await);
    let expired = hs256(json!({ "sub": victim.to_string(), "exp": unix_now() - 3600 }));
    let pay_path = format!("/v1/payments/users/{victim}");
    let pay = json!({ "reservationId": reservation });
    let recharge_path = format!("/v1/balance/users/{victim}/recharge");
    let amount = json!({ "amount": 700 });
    // Keys are the user's, across routes: one per route.
    for (path, request, token, key) in [
        (&pay_path, &pay, Some(victim_token), "pay-once"),
        (&recharge_path, &amount, None, "recharge-once"),
    ] {
        let (status, first, _) =
            with_key(&app, path, Some(&victim_bearer), token, key, request).await;
        assert!(status == 200 || status == 201, "{path}: {first}");
        for (bearer, refusal) in [
            (Some(attacker.as_str()), (403, FORBIDDEN)),
            (Some(expired.as_str()), (401, UNAUTHORIZED)),
            (None, (401, UNAUTHORIZED)),
        ] {
            let (status, text, replayed) = with_key(&app, path, bearer, token, key, request).await;
            assert_eq!(
                (status, text.as_str(), replayed),
                (refusal.0, refusal.1, false),
                "{path}"
            );
        }
        let (again, text, replayed) =
            with_key(&app, path, Some(&victim_bearer), token, key, request).await;
        assert_eq!((again, &text, replayed), (status, &first, true), "{path}");
    }
}

#[actix_web::test]
async fn a_user_past_their_budget_waits_and_others_do_not() {
    let app = spawn_jwt_app(Backend::Sqlite, |s| {
        s.rate_limit_per_user = boxoffice::http::rate_limit::Rate::new(1, Some(3));
    })
    .await;
    let busy = app.create_user(0).await;
    let calm = app.create_user(0).await;
    let balance = |user: i64| format!("/v1/balance/users/{user}");
    let bearer = mint(busy);
    for _ in 0..3 {
        let ok = app
            .send(Method::GET, &balance(busy), Some(&bearer), None, None)
            .await;
        assert_eq!(ok.status(), 200);
    }
    let over = app
        .send(Method::GET, &balance(busy), Some(&bearer), None, None)
        .await;
    assert!(over.headers().contains_key("retry-after"));
    assert_error(over, 429, "rate_limited", "too many requests").await;
    let other = app
        .send(Method::GET, &balance(calm), Some(&mint(calm)), None, None)
        .await;
    assert_eq!(other.status(), 200, "another user has their own budget");
    // A request without a valid bearer spends nobody's budget: it names no one.
    let (db, mut settings, clock) = app.stop().await;
    settings.rate_limit_per_user = boxoffice::http::rate_limit::Rate::new(1, Some(1));
    let app = spawn_app_on(db, clock, move |s| *s = settings).await;
    for _ in 0..3 {
        let refused = app
            .send(Method::GET, &balance(calm), None, None, None)
            .await;
        assert_eq!(refused.status(), 401);
    }
    let ok = app
        .send(Method::GET, &balance(calm), Some(&mint(calm)), None, None)
        .await;
    assert_eq!(ok.status(), 200);
}
