//! Input hygiene (issue 15 §3): a JSON body only as JSON, no encoded bodies, the admin key
//! checked before a body is read, unknown fields refused, at most so many live idempotency
//! keys per user, and fingerprints stored as digests that still replay across a restart.

use crate::helpers::*;
use crate::on_both_stores;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The admin routes' body limit (src/http/mod.rs): a body this size is within it.
const ADMIN_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// A POST with a raw body and the given headers.
async fn post_raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent")
}

/// Sends only the head of a request whose body never comes, and waits up to `wait` for an
/// answer: (status, body). `None` means the server is still waiting for the body.
async fn head_only(app: &TestApp, head: &str, wait: Duration) -> Option<(u16, Value)> {
    let port = app.address.rsplit(':').next().expect("a port");
    let mut stream = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("the server accepts");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("the head is sent");
    let mut received = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(answer) = complete_response(&received) {
                return Some(answer);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return complete_response(&received),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

/// A whole HTTP/1.1 response (head and `Content-Length` body) at the start of `bytes`.
fn complete_response(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if body.len() < length {
        return None;
    }
    let value = serde_json::from_str(&body[..length]).ok()?;
    Some((status, value))
}

fn assert_envelope(answer: Option<(u16, Value)>, status: u16, error: &str, what: &str) {
    let (got, body) = answer.unwrap_or_else(|| panic!("{what}: no answer while the body is owed"));
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(error)),
        "{what}: {body}"
    );
}

/// Every route that takes a JSON body, with a body it accepts (paths for `user`).
fn json_routes(user: i64, concert: &Concert) -> Vec<(String, Value)> {
    vec![
        (
            format!("/v1/balance/users/{user}/recharge"),
            json!({ "amount": 500 }),
        ),
        (
            "/v1/reservations".into(),
            json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": [concert.seats[0]] }),
        ),
        (
            format!("/v1/payments/users/{user}"),
            json!({ "reservationId": 1 }),
        ),
        (
            format!("/v1/payments/users/{user}/progress"),
            json!({ "reservationId": 1 }),
        ),
        ("/v1/admin/users".into(), json!({ "name": "kim" })),
        (
            "/v1/admin/concerts".into(),
            json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T00:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": [{ "seatNumber": 1, "price": 1 }] }] }),
        ),
    ]
}

/// What a browser sends cross-site without a preflight (and a body with no type at all) is
/// refused unread, on every JSON route; `application/json` works as before.
async fn a_json_body_must_come_as_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(2, 100).await;
    let users_before = app.db.scalar("SELECT COUNT(*) FROM users").await;
    let refused_types = [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("not a media type"),
        None,
    ];
    let token = token.to_string();
    for (path, request) in json_routes(user, &concert) {
        for content_type in refused_types {
            let mut headers = vec![("X-Admin-Key", ADMIN_KEY), ("TOKEN-ID", token.as_str())];
            if let Some(content_type) = content_type {
                headers.push(("Content-Type", content_type));
            }
            let response = post_raw(&app, &path, &headers, request.to_string()).await;
            assert_eq!(
                response.status().as_u16(),
                415,
                "POST {path} as {content_type:?}"
            );
            let refused = body(response).await;
            assert_eq!(refused["code"], 415, "{refused}");
            assert_eq!(refused["error"], "unsupported_media_type", "{refused}");
        }
    }
    assert_eq!(
        app.balance(user).await,
        0,
        "no refused recharge went through"
    );
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM users").await,
        users_before,
        "no refused admin body created a user"
    );
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM reservations").await,
        0,
        "no refused hold"
    );
    let path = format!("/v1/balance/users/{user}/recharge");
    for content_type in ["application/json", "application/json; charset=utf-8"] {
        let response = post_raw(
            &app,
            &path,
            &[("Content-Type", content_type)],
            r#"{"amount":500}"#,
        )
        .await;
        assert_eq!(response.status().as_u16(), 200, "{content_type}");
    }
    assert_eq!(app.balance(user).await, 1_000);
    // Routes without a body need no type.
    assert_eq!(app.join(user).await.status().as_u16(), 200);
}
on_both_stores!(a_json_body_must_come_as_json);

/// CRC-32 (IEEE), as gzip's trailer carries it.
fn crc32(bytes: impl Iterator<Item = u8>) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// `data` as a valid gzip stream (one stored deflate block), as a compressing client sends it.
fn gzip(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("a small body");
    let mut out = GZIP_HEADER.to_vec();
    out.push(1); // final block, stored
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(data);
    out.extend(crc32(data.iter().copied()).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// Deflate's bit order: fields least significant bit first, Huffman codes most significant first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    fn field(&mut self, value: u32, count: u32) {
        for i in 0..count {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let last = self.bytes.last_mut().expect("pushed above");
            *last |= (((value >> i) & 1) as u8) << self.used;
            self.used = (self.used + 1) % 8;
        }
    }

    fn code(&mut self, code: u32, length: u32) {
        for i in (0..length).rev() {
            self.field((code >> i) & 1, 1);
        }
    }
}

/// 16 KiB of gzip that inflates to about 2.6 MB of zeros: one literal, then runs of 258 bytes
/// copied from one back, 13 bits each in deflate's fixed Huffman code. (Checked against zlib.)
fn gzip_bomb() -> Vec<u8> {
    let mut bits = Bits::default();
    bits.field(1, 1); // final block
    bits.field(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    let runs = (16 * 1024 - 18) * 8 / 13 - 2;
    for _ in 0..runs {
        bits.code(0xC5, 8); // length 258
        bits.code(0, 5); // distance 1
    }
    bits.code(0, 7); // end of block
    let inflated = 1 + runs * 258;
    let mut out = GZIP_HEADER.to_vec();
    out.extend(bits.bytes);
    out.extend(crc32(std::iter::repeat_n(0, inflated)).to_le_bytes());
    out.extend((inflated as u32).to_le_bytes());
    out
}

/// A compressed body is refused by its header, before a byte of it is read or inflated.
async fn an_encoded_body_is_refused_unread(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let path = format!("/v1/balance/users/{user}/recharge");
    let json_type = ("Content-Type", "application/json");
    for coding in ["gzip", "x-gzip", "deflate", "br", "zstd", "identity, gzip"] {
        let response = post_raw(
            &app,
            &path,
            &[json_type, ("Content-Encoding", coding)],
            gzip(br#"{"amount":500}"#),
        )
        .await;
        assert_error(response, 415, "unsupported_media_type", "").await;
    }
    assert_eq!(
        app.balance(user).await,
        0,
        "no compressed recharge went through"
    );

    let bomb = gzip_bomb();
    assert!(bomb.len() <= 16 * 1024);
    let started = Instant::now();
    let response = post_raw(
        &app,
        &path,
        &[json_type, ("Content-Encoding", "gzip")],
        bomb,
    )
    .await;
    assert_error(response, 415, "unsupported_media_type", "").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );

    // Answered from the head alone: the body is never sent.
    for path in [path.as_str(), "/v1/admin/concerts", "/v1/reservations"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Encoding: gzip\r\nX-Admin-Key: {ADMIN_KEY}\r\nContent-Length: 16384\r\n\r\n"
        );
        let answer = head_only(&app, &head, Duration::from_secs(5)).await;
        assert_envelope(answer, 415, "unsupported_media_type", path);
    }

    let plain = post_raw(
        &app,
        &path,
        &[json_type, ("Content-Encoding", "identity")],
        r#"{"amount":500}"#,
    )
    .await;
    assert_eq!(plain.status().as_u16(), 200, "identity is no encoding");
    assert_eq!(app.balance(user).await, 500);
}
on_both_stores!(an_encoded_body_is_refused_unread);

/// A missing or wrong key is answered 403 from the head alone: a 4 MiB body that never comes
/// is not waited for. With the right key the server does wait for it — which is what this
/// test would see if the key were checked after the body.
async fn admin_routes_refuse_a_wrong_key_before_the_body_arrives(backend: Backend) {
    let app = spawn_app(backend).await;
    let head = |path: &str, key: Option<&str>| {
        let key = key.map_or(String::new(), |k| format!("X-Admin-Key: {k}\r\n"));
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{key}\
             Content-Length: {ADMIN_BODY_LIMIT}\r\n\r\n"
        )
    };
    let almost = &ADMIN_KEY[..ADMIN_KEY.len() - 1];
    let longer = format!("{ADMIN_KEY}x");
    for path in ["/v1/admin/users", "/v1/admin/concerts"] {
        for key in [None, Some("wrong"), Some(""), Some(almost), Some(&longer)] {
            let answer = head_only(&app, &head(path, key), Duration::from_secs(5)).await;
            assert_envelope(answer, 403, "forbidden", &format!("{path} with {key:?}"));
        }
        let waiting = head_only(
            &app,
            &head(path, Some(ADMIN_KEY)),
            Duration::from_millis(500),
        )
        .await;
        assert!(
            waiting.is_none(),
            "{path}: with the right key the body is read"
        );
    }
    let closed = spawn_app_with(TestDb::create(backend).await, |s| s.admin_key = None).await;
    let answer = head_only(
        &closed,
        &head("/v1/admin/users", Some(ADMIN_KEY)),
        Duration::from_secs(5),
    )
    .await;
    assert_envelope(answer, 403, "forbidden", "admin disabled");
}
on_both_stores!(admin_routes_refuse_a_wrong_key_before_the_body_arrives);

/// A field the contract does not name is a 400, and nothing happens.
async fn unknown_fields_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(100_000).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(2, 100).await;
    let held = body(
        app.reserve(user, token, &concert, &concert.seats[..1])
            .await,
    )
    .await["reservationId"]
        .as_i64()
        .expect("a reservation");
    let users_before = app.db.scalar("SELECT COUNT(*) FROM users").await;
    let seat = json!({ "seatNumber": 1, "price": 1, "vip": true });
    let cases = [
        (
            format!("/v1/balance/users/{user}/recharge"),
            json!({ "amount": 500, "bonus": 1_000_000 }),
        ),
        (
            "/v1/reservations".into(),
            json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": [concert.seats[1]], "price": 0 }),
        ),
        (
            format!("/v1/payments/users/{user}"),
            json!({ "reservationId": held, "amount": 0 }),
        ),
        (
            format!("/v1/payments/users/{user}/progress"),
            json!({ "reservationId": held, "debug": true }),
        ),
        (
            "/v1/admin/users".into(),
            json!({ "name": "kim", "role": "admin" }),
        ),
        (
            "/v1/admin/concerts".into(),
            json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T00:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": [seat] }] }),
        ),
        (
            "/v1/admin/concerts".into(),
            json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T00:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": [{ "seatNumber": 1, "price": 1 }], "hidden": 1 }] }),
        ),
    ];
    for (path, request) in cases {
        let response = app
            .client
            .post(app.url(&path))
            .header("TOKEN-ID", token)
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&request)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status().as_u16(), 400, "POST {path} {request}");
        let refused = body(response).await;
        assert_eq!(refused["error"], "invalid_request", "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("unknown field")),
            "{refused}"
        );
    }
    assert_eq!(
        app.balance(user).await,
        100_000,
        "nothing recharged or paid"
    );
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM reservations").await,
        1,
        "no second hold"
    );
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM users").await,
        users_before
    );
    let read = app
        .get(
            &format!("/v1/reservations/{held}?userId={user}"),
            Some(token),
        )
        .await;
    assert_eq!(body(read).await["reservationStatus"], "PAYMENT_PENDING");
}
on_both_stores!(unknown_fields_are_refused);

async fn recharge_with_key(app: &TestApp, user: i64, key: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/balance/users/{user}/recharge")))
        .header("Idempotency-Key", key)
        .json(&json!({ "amount": 100 }))
        .send()
        .await
        .expect("request sent")
}

/// Past the limit a new key is a 429 with `Retry-After`; known keys still replay, requests
/// without a key still go, other users are unaffected, and forgotten keys free the room.
async fn a_user_has_at_most_so_many_live_idempotency_keys(backend: Backend) {
    let db = TestDb::create(backend).await;
    let app = spawn_app_with(db, |s| s.engine.max_idempotency_keys_per_user = 3).await;
    let user = app.create_user(0).await;
    let other = app.create_user(0).await;
    for key in ["k0", "k1", "k2"] {
        assert_eq!(
            recharge_with_key(&app, user, key).await.status().as_u16(),
            200
        );
    }
    let refused = recharge_with_key(&app, user, "k3").await;
    let retry_after: u64 = refused
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry_after >= 1);
    assert_error(refused, 429, "rate_limited", "too many requests").await;
    assert_eq!(app.balance(user).await, 300, "the refused key did nothing");

    let replay = recharge_with_key(&app, user, "k0").await;
    assert_eq!(replay.status().as_u16(), 200);
    assert!(replay.headers().contains_key("Idempotent-Replayed"));
    assert_eq!(app.recharge(user, json!(100)).await.status().as_u16(), 200);
    assert_eq!(
        recharge_with_key(&app, other, "k3").await.status().as_u16(),
        200
    );
    assert_eq!(app.balance(user).await, 400);

    // Two days on, the old answers are forgotten (at the latest when the service restarts).
    app.clock.advance(Duration::from_secs(49 * 3600));
    let app = app.restart().await;
    assert_eq!(
        recharge_with_key(&app, user, "k3").await.status().as_u16(),
        200
    );
    assert_eq!(app.balance(user).await, 500);
}
on_both_stores!(a_user_has_at_most_so_many_live_idempotency_keys);

/// Points the stored row of `key` at a fingerprint, as an older version wrote it.
async fn store_fingerprint(db: &TestDb, key: &str, fingerprint: &str) {
    let quoted = |text: &str| format!("'{}'", text.replace('\'', "''"));
    db.execute(&format!(
        "UPDATE idempotency_keys SET fingerprint = {} WHERE key = {}",
        quoted(fingerprint),
        quoted(key)
    ))
    .await;
}

async fn fingerprints_are_digests_and_older_rows_still_replay(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(4, 100).await;
    let hold = app
        .client
        .post(app.url("/v1/reservations"))
        .header("TOKEN-ID", token)
        .header("Idempotency-Key", "hold")
        .json(&json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": concert.seats }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(hold.status().as_u16(), 201);
    let first = recharge_with_key(&app, user, "legacy").await;
    let first = first.text().await.expect("a body");
    for length in ["MIN", "MAX"] {
        let sql =
            format!("SELECT CAST({length}(LENGTH(fingerprint)) AS BIGINT) FROM idempotency_keys");
        assert_eq!(app.db.scalar(&sql).await, 64, "{length}");
    }

    let (db, settings, clock) = app.stop().await;
    let request = json!({ "amount": 100 });
    let legacy = format!("POST /v1/balance/users/{user}/recharge\n{request}");
    store_fingerprint(&db, "legacy", &legacy).await;
    let app = spawn_app_on(db, clock, move |s| *s = settings).await;
    let replay = recharge_with_key(&app, user, "legacy").await;
    assert!(replay.headers().contains_key("Idempotent-Replayed"));
    assert_eq!(replay.text().await.expect("a body"), first);
    assert_eq!(app.balance(user).await, 100, "one recharge");
    let other = app
        .client
        .post(app.url(&format!("/v1/balance/users/{user}/recharge")))
        .header("Idempotency-Key", "legacy")
        .json(&json!({ "amount": 200 }))
        .send()
        .await
        .expect("request sent");
    assert_error(other, 422, "idempotency_key_reused", "").await;
}
on_both_stores!(fingerprints_are_digests_and_older_rows_still_replay);

/// In `--auth jwt` mode the same refusals hold for a caller with a valid bearer (and with the
/// admin key): a body not sent as JSON, an encoded body and an unknown field are refused, and
/// nothing is applied.
async fn jwt_mode_refuses_the_same_bodies(backend: Backend) {
    let app = spawn_jwt_app(backend, |settings| settings.auth.user_recharge = true).await;
    let user = app.create_user(0).await;
    let bearer = format!("Bearer {}", mint(user));
    let token = app.active_token_as(user, &mint(user)).await.to_string();
    let concert = app.create_concert(2, 100).await;
    let authorized = [
        ("Authorization", bearer.as_str()),
        ("TOKEN-ID", token.as_str()),
        ("X-Admin-Key", ADMIN_KEY),
    ];
    for (path, request) in json_routes(user, &concert) {
        let mut as_text = authorized.to_vec();
        as_text.push(("Content-Type", "text/plain"));
        let response = post_raw(&app, &path, &as_text, request.to_string()).await;
        assert_eq!(response.status().as_u16(), 415, "POST {path} as text/plain");
        let mut encoded = authorized.to_vec();
        encoded.extend([
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ]);
        let response = post_raw(&app, &path, &encoded, gzip(request.to_string().as_bytes())).await;
        assert_eq!(response.status().as_u16(), 415, "POST {path} gzip-encoded");
    }
    let recharge = format!("/v1/balance/users/{user}/recharge");
    let mut as_json = authorized.to_vec();
    as_json.push(("Content-Type", "application/json"));
    let extra = post_raw(
        &app,
        &recharge,
        &as_json,
        r#"{"amount":500,"bonus":1000000}"#,
    )
    .await;
    assert_eq!(extra.status().as_u16(), 400, "an unknown field");
    assert_eq!(body(extra).await["error"], "invalid_request");
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM reservations").await,
        0,
        "no refused hold"
    );
    // The user's own bearer still recharges with a proper body: the refusals were the body's.
    let own = post_raw(&app, &recharge, &as_json, r#"{"amount":500}"#).await;
    assert_eq!(own.status().as_u16(), 200);
    let balance = app
        .send(
            reqwest::Method::GET,
            &format!("/v1/balance/users/{user}"),
            Some(&mint(user)),
            None,
            None,
        )
        .await;
    assert_eq!(
        body(balance).await["currentAmount"],
        500,
        "only the proper recharge"
    );
}
on_both_stores!(jwt_mode_refuses_the_same_bodies);
