//! The fair opening over HTTP (API.md §11): the admin schedules it, the pre-queue waits with
//! nobody admitted, the draw at `opensAt` is public, checkable by `verify-draw`, decides the
//! order of admission, and survives a restart; with no opening the line is the seed's.

use crate::helpers::*;
use crate::on_both_stores;
use boxoffice::http::verify_draw::verify_draw;
use serde_json::{json, Value};
use std::time::Duration;

const OPENING: &str = "/v1/admin/queue/opening";

/// `now + secs` in the seed's format (the tests' zone is UTC).
fn in_secs(app: &TestApp, secs: i64) -> String {
    use boxoffice::clock::Clock;
    let at = app.clock.now().millis() / 1000 + secs;
    chrono::DateTime::from_timestamp(at, 0)
        .expect("a time in range")
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

async fn schedule(app: &TestApp, opens_at: &str) -> reqwest::Response {
    app.client
        .put(app.url(OPENING))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "opensAt": opens_at }))
        .send()
        .await
        .expect("request sent")
}

async fn cancel(app: &TestApp) -> reqwest::Response {
    app.client
        .delete(app.url(OPENING))
        .header("X-Admin-Key", ADMIN_KEY)
        .send()
        .await
        .expect("request sent")
}

async fn opening(app: &TestApp) -> Value {
    let response = app.get("/v1/queue/opening", None).await;
    assert_eq!(response.status().as_u16(), 200);
    body(response).await
}

/// Waits (real time: the queue actor's tick) until the opening shows `status`.
async fn until_opening(app: &TestApp, status: &str) -> Value {
    for _ in 0..200 {
        let now = opening(app).await;
        if now["status"] == status {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the opening never became {status}");
}

async fn poll(app: &TestApp, user: i64, token: i64) -> Value {
    let response = app.status(user, token).await;
    assert_eq!(response.status().as_u16(), 200);
    body(response).await
}

async fn join_token(app: &TestApp, user: i64) -> i64 {
    let response = app.join(user).await;
    assert_eq!(response.status().as_u16(), 201);
    body(response).await["tokenId"].as_i64().expect("a token")
}

fn is_hex64(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn with_no_opening_the_line_is_the_seeds(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        opening(&app).await,
        json!({ "opensAt": null, "commitment": null, "status": "NONE", "participants": 0,
                "seed": null, "participantsDigest": null, "drawnAt": null })
    );
    assert_error(
        app.get("/v1/queue/draw", None).await,
        404,
        "draw_not_found",
        "draw not found",
    )
    .await;
    let user = app.create_user(0).await;
    let token = join_token(&app, user).await;
    let status = poll(&app, user, token).await;
    let fields: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(!fields.contains(&"prequeue") && !fields.contains(&"opensAt"));
    // Cancelling nothing is no error, and the opening routes are the admin's.
    assert_eq!(cancel(&app).await.status().as_u16(), 200);
    let anonymous = app
        .client
        .put(app.url(OPENING))
        .json(&json!({ "opensAt": in_secs(&app, 60) }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 403);
    let anonymous = app.client.delete(app.url(OPENING)).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 403);
}
on_both_stores!(with_no_opening_the_line_is_the_seeds);

async fn a_scheduled_opening_is_refused_in_the_past_and_replaced_before_the_draw(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_error(
        schedule(&app, &in_secs(&app, -1)).await,
        400,
        "invalid_request",
        "opensAt must be in the future",
    )
    .await;
    assert_eq!(schedule(&app, "tomorrow").await.status().as_u16(), 400);
    let opens_at = in_secs(&app, 600);
    let first = schedule(&app, &opens_at).await;
    assert_eq!(first.status().as_u16(), 200);
    let first = body(first).await;
    assert_eq!(first["status"], "SCHEDULED");
    assert_eq!(first["opensAt"], opens_at.as_str());
    assert!(is_hex64(&first["commitment"]));
    let second = body(schedule(&app, &opens_at).await).await;
    assert_ne!(second["commitment"], first["commitment"], "a new seed");
    let public = opening(&app).await;
    assert_eq!(public["status"], "SCHEDULED");
    assert_eq!(public["commitment"], second["commitment"]);
    assert_eq!(public["seed"], Value::Null, "never shown before the draw");
    // The seed is stored before the answer: a restart keeps the same commitment.
    let app = app.restart().await;
    assert_eq!(opening(&app).await["commitment"], second["commitment"]);
    let cancelled = body(cancel(&app).await).await;
    assert_eq!(cancelled["status"], "NONE");
    let app = app.restart().await;
    assert_eq!(opening(&app).await["status"], "NONE");
}
on_both_stores!(a_scheduled_opening_is_refused_in_the_past_and_replaced_before_the_draw);

async fn the_pre_queue_is_drawn_at_the_opening_verifiably_and_admitted_in_that_order(
    backend: Backend,
) {
    let app = spawn_app_with(TestDb::create(backend).await, |s| s.engine.max_active = 2).await;
    let opens_at = in_secs(&app, 60);
    let commitment = body(schedule(&app, &opens_at).await).await["commitment"].clone();
    let users = app.create_users(6, 0).await;
    let mut tokens = Vec::new();
    for &user in &users {
        tokens.push(join_token(&app, user).await);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    for (arrival, (&user, &token)) in users.iter().zip(&tokens).enumerate() {
        let status = poll(&app, user, token).await;
        assert_eq!(
            status["status"], "WAITING",
            "nobody admitted before the opening"
        );
        assert_eq!(status["prequeue"], true);
        assert_eq!(status["opensAt"], opens_at.as_str());
        assert_eq!(status["remainingWaitListCount"], 6);
        let pace = status["pollAfterMs"].as_u64().unwrap();
        assert!(pace <= 30_000, "within the idle timeout: {pace}");
        assert!(status["queueId"].as_u64().unwrap() > arrival as u64);
    }
    assert_eq!(opening(&app).await["participants"], 6);

    // Two seconds before the opening, the next poll is spread over the seconds after it.
    app.clock.advance(Duration::from_secs(58));
    for (&user, &token) in users.iter().zip(&tokens) {
        let pace = poll(&app, user, token).await["pollAfterMs"]
            .as_u64()
            .unwrap();
        assert!(pace <= 2_000 + 5_000, "{pace}");
    }
    app.clock.advance(Duration::from_secs(3));
    let drawn = until_opening(&app, "DRAWN").await;
    assert_eq!(drawn["commitment"], commitment);
    assert_eq!(drawn["participants"], 6);
    assert!(is_hex64(&drawn["seed"]) && is_hex64(&drawn["participantsDigest"]));

    // Anyone recomputes it; each buyer finds their place.
    let mut places = Vec::new();
    for &token in &tokens {
        let verified = verify_draw(
            &app.address,
            Some(boxoffice::domain::TokenId::new(token).unwrap()),
        )
        .await
        .expect("the service's draw verifies");
        places.push(verified.place.expect("a participant").0);
    }
    let mut sorted = places.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 2, 3, 4, 5, 6]);

    // Admission follows the draw: places 1 and 2 are in (the cap), the rest wait in order,
    // and a join after the opening waits behind the whole pre-queue.
    let late_user = app.create_user(0).await;
    let late = join_token(&app, late_user).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    for ((&user, &token), &place) in users.iter().zip(&tokens).zip(&places) {
        let status = poll(&app, user, token).await;
        assert!(status.get("prequeue").is_none(), "the pre-queue is over");
        if place <= 2 {
            assert_eq!(status["status"], "ACTIVE", "place {place}");
            assert!(status.get("drawnPlace").is_none(), "admitted: {status}");
        } else {
            assert_eq!(status["status"], "WAITING", "place {place}");
            assert_eq!(status["remainingWaitListCount"], place as u64 - 3);
            // The poll names the place the public draw gives it.
            assert_eq!(status["drawnPlace"], place as u64, "{status}");
        }
    }
    let late_status = poll(&app, late_user, late).await;
    assert_eq!(late_status["remainingWaitListCount"], 4);
    assert!(
        late_status.get("drawnPlace").is_none(),
        "not drawn: {late_status}"
    );

    // Paging, and its bounds.
    let page = body(app.get("/v1/queue/draw?offset=4&limit=10", None).await).await;
    assert_eq!(page["total"], 6);
    assert_eq!(page["order"].as_array().unwrap().len(), 2);
    for bad in ["limit=0", "limit=10001", "offset=-1", "limit=x"] {
        let response = app.get(&format!("/v1/queue/draw?{bad}"), None).await;
        assert_eq!(response.status().as_u16(), 400, "{bad}");
    }
    assert_error(
        schedule(&app, &in_secs(&app, 600)).await,
        409,
        "opening_already_drawn",
        "opening already drawn",
    )
    .await;
    assert_error(
        cancel(&app).await,
        409,
        "opening_already_drawn",
        "opening already drawn",
    )
    .await;

    // After a restart: the same draw, the same places.
    let whole = body(app.get("/v1/queue/draw?limit=10000", None).await).await;
    let app = app.restart().await;
    assert_eq!(opening(&app).await, drawn);
    assert_eq!(
        body(app.get("/v1/queue/draw?limit=10000", None).await).await,
        whole
    );
    for ((&user, &token), &place) in users.iter().zip(&tokens).zip(&places) {
        if place > 2 {
            assert_eq!(
                poll(&app, user, token).await["remainingWaitListCount"],
                place as u64 - 3
            );
        }
    }
}
on_both_stores!(the_pre_queue_is_drawn_at_the_opening_verifiably_and_admitted_in_that_order);

async fn a_cancelled_opening_lets_the_pre_queue_in_in_arrival_order(backend: Backend) {
    let app = spawn_app_with(TestDb::create(backend).await, |s| s.engine.max_active = 1).await;
    schedule(&app, &in_secs(&app, 600)).await;
    let users = app.create_users(2, 0).await;
    let first = join_token(&app, users[0]).await;
    let second = join_token(&app, users[1]).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(poll(&app, users[0], first).await["status"], "WAITING");
    assert_eq!(body(cancel(&app).await).await["status"], "NONE");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(poll(&app, users[0], first).await["status"], "ACTIVE");
    let waiting = poll(&app, users[1], second).await;
    assert_eq!(waiting["status"], "WAITING");
    assert_eq!(waiting["remainingWaitListCount"], 0);
    assert!(waiting.get("prequeue").is_none());
}
on_both_stores!(a_cancelled_opening_lets_the_pre_queue_in_in_arrival_order);

/// The real binary, killed with SIGKILL when dropped or asked.
struct Binary {
    child: std::process::Child,
    base: String,
}

impl Binary {
    async fn start(url: &str) -> Binary {
        let port = crate::ports::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--database-url", url, "--admin-key", ADMIN_KEY])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the binary starts");
        let binary = Binary {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..600 {
            let ready = reqwest::get(format!("{}/readyz", binary.base)).await;
            if ready.is_ok_and(|r| r.status().as_u16() == 200) {
                return binary;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the binary never became ready");
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    async fn get(&self, path: &str) -> Value {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        response.json().await.unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL at the very second of the opening, whether or not its draw had committed: after
/// the restart the draw happens (or is there), verifies, holds every pre-queue token, and a
/// second SIGKILL after it changes nothing.
async fn a_kill_at_the_opening_draws_the_same_order_after_the_restart(backend: Backend) {
    const WAITERS: usize = 30;
    let db = TestDb::create(backend).await;
    let client = reqwest::Client::new();
    let server = Binary::start(&db.url).await;
    let opens_at_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3;
    let opens_at = chrono::DateTime::from_timestamp(opens_at_secs, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let scheduled = client
        .put(format!("{}{OPENING}", server.base))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "opensAt": opens_at }))
        .send()
        .await
        .unwrap();
    assert_eq!(scheduled.status().as_u16(), 200);
    let commitment = scheduled.json::<Value>().await.unwrap()["commitment"].clone();
    let mut joined = Vec::new();
    for _ in 0..WAITERS {
        let user: Value = client
            .post(format!("{}/v1/admin/users", server.base))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&json!({ "name": "early" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let user = user["userId"].as_i64().unwrap();
        let token: Value = client
            .post(format!("{}/v1/queue-tokens/users/{user}", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        joined.push((user, token["tokenId"].as_i64().unwrap()));
    }
    // Until the opening's millisecond, then SIGKILL at once.
    let until = std::time::UNIX_EPOCH + Duration::from_secs(opens_at_secs as u64);
    if let Ok(wait) = until.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    server.kill();

    let server = Binary::start(&db.url).await;
    let mut drawn = Value::Null;
    for _ in 0..200 {
        drawn = server.get("/v1/queue/opening").await;
        if drawn["status"] == "DRAWN" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(drawn["status"], "DRAWN");
    assert_eq!(
        drawn["commitment"], commitment,
        "the seed committed to before the kill"
    );
    assert_eq!(drawn["participants"], WAITERS, "nobody lost");
    let verified = verify_draw(&server.base, None).await.expect("it verifies");
    assert_eq!(verified.draw.order.len(), WAITERS);
    let order = server.get("/v1/queue/draw?limit=10000").await;
    server.kill();

    let server = Binary::start(&db.url).await;
    assert_eq!(server.get("/v1/queue/opening").await, drawn);
    assert_eq!(server.get("/v1/queue/draw?limit=10000").await, order);
    for (user, token) in joined {
        let status: Value = client
            .get(format!("{}/v1/queue-status/users/{user}", server.base))
            .header("TOKEN-ID", token.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            status["status"], "ACTIVE",
            "every pre-queue token admitted once"
        );
    }
}
on_both_stores!(a_kill_at_the_opening_draws_the_same_order_after_the_restart);
