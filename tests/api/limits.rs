//! Limits an attacker meets: the per-address budget, slow bodies and slowloris, the ops
//! listener, and the cached readiness ping.

use crate::helpers::*;
use crate::{on_both_stores, on_postgres};
use boxoffice::http::rate_limit::Rate;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `host:port` of a test app's base URL.
fn socket_address(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Opens a connection and sends `head` (a request head, and any body bytes after it).
async fn send_raw(app: &TestApp, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(socket_address(&app.address))
        .await
        .expect("connect to the app");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the request head");
    stream
}

/// A response read off `stream`: its whole text once head and body are in, or `None` when
/// the server closed without answering. Fails after `within`.
async fn read_answer(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buffer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&buffer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the server answered or closed in time");
    (!buffer.is_empty()).then(|| String::from_utf8_lossy(&buffer).into_owned())
}

fn per_second(n: u32, burst: u32) -> Option<Rate> {
    Rate::new(n, Some(burst))
}

async fn a_client_over_its_budget_is_refused_with_retry_after(backend: Backend) {
    let app = spawn_app_with(TestDb::create(backend).await, |s| {
        s.rate_limit_per_ip = per_second(1, 3);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/healthz", None).await.status().as_u16(), 200);
    }
    let refused = app.get("/healthz", None).await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .expect("a 429 says when to come back")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_error(refused, 429, "rate_limited", "too many requests").await;
    // Refused before the body is read: a megabyte announced and never sent is not waited for
    // (reading it would wait for the body deadline, then answer 408).
    let started = Instant::now();
    let mut stream = send_raw(
        &app,
        "POST /v1/admin/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 1000000\r\n\r\n",
    )
    .await;
    let answer = read_answer(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer, not a closed connection");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains(r#""error":"rate_limited""#), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
on_both_stores!(a_client_over_its_budget_is_refused_with_retry_after);

async fn without_a_rate_limit_nobody_is_limited(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..200 {
        assert_eq!(app.get("/healthz", None).await.status().as_u16(), 200);
    }
}
on_both_stores!(without_a_rate_limit_nobody_is_limited);

async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy(backend: Backend) {
    let get_as = |app: &TestApp, forwarded: &'static str| {
        app.client
            .get(app.url("/healthz"))
            .header("X-Forwarded-For", forwarded)
            .send()
    };
    // No trusted proxy: the header is ignored, and every request is the socket's peer.
    let direct = spawn_app_with(TestDb::create(backend).await, |s| {
        s.rate_limit_per_ip = per_second(1, 1);
    })
    .await;
    assert_eq!(get_as(&direct, "198.51.100.1").await.unwrap().status(), 200);
    let spoofed = get_as(&direct, "198.51.100.2").await.unwrap();
    assert_error(spoofed, 429, "rate_limited", "too many requests").await;

    // Behind a trusted proxy (the test's loopback), the right-most untrusted hop is the client.
    let proxied = spawn_app_with(TestDb::create(backend).await, |s| {
        s.rate_limit_per_ip = per_second(1, 1);
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    assert_eq!(
        get_as(&proxied, "198.51.100.1").await.unwrap().status(),
        200
    );
    assert_eq!(
        get_as(&proxied, "198.51.100.2").await.unwrap().status(),
        200
    );
    let again = get_as(&proxied, "198.51.100.1").await.unwrap();
    assert_error(again, 429, "rate_limited", "too many requests").await;
    // A client prepending a fresh address to the list is still the address the proxy saw.
    let prepended = get_as(&proxied, "203.0.113.77, 198.51.100.2")
        .await
        .unwrap();
    assert_error(prepended, 429, "rate_limited", "too many requests").await;
}
on_both_stores!(forwarded_for_names_the_client_only_behind_a_trusted_proxy);

/// A request head announcing `length` body bytes, and the first `sent` of them.
fn reservation_head(length: usize, sent: usize) -> String {
    format!(
        "POST /v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         TOKEN-ID: 1\r\nContent-Length: {length}\r\n\r\n{}",
        "{".repeat(sent)
    )
}

async fn a_body_not_complete_in_time_gets_408(backend: Backend) {
    let app = spawn_app_with(TestDb::create(backend).await, |s| {
        s.body_timeout = Duration::from_secs(1);
    })
    .await;
    let started = Instant::now();
    let mut stream = send_raw(&app, &reservation_head(100, 10)).await;
    let answer = read_answer(&mut stream, Duration::from_secs(4))
        .await
        .expect("an answer, not a closed connection");
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.ends_with(r#"{"code":408,"error":"request_timeout","message":"request timeout"}"#),
        "{answer}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
    // A body that does arrive in time is read as ever (here: a bad one, so a 400).
    let mut stream = send_raw(&app, &reservation_head(2, 2)).await;
    let answer = read_answer(&mut stream, Duration::from_secs(4))
        .await
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
on_both_stores!(a_body_not_complete_in_time_gets_408);

/// Slowloris: 500 connections each trickling a body a byte at a time.
async fn five_hundred_trickling_bodies_do_not_stop_the_service(backend: Backend) {
    const TRICKLERS: usize = 500;
    const BODY_TIMEOUT: Duration = Duration::from_secs(2);
    let app = spawn_app_with(TestDb::create(backend).await, |s| {
        s.body_timeout = BODY_TIMEOUT;
    })
    .await;
    let user = app.create_user(0).await;
    let address = socket_address(&app.address).to_string();
    let started = Instant::now();
    let mut tricklers = Vec::with_capacity(TRICKLERS);
    for _ in 0..TRICKLERS {
        let address = address.clone();
        tricklers.push(actix_web::rt::spawn(async move {
            let mut stream = TcpStream::connect(&address).await.expect("connect");
            stream
                .write_all(reservation_head(1000, 0).as_bytes())
                .await
                .expect("send the head");
            // Left alone, this trickle would last 10 s; the deadline must end it first.
            let trickle = async {
                for _ in 0..50 {
                    if stream.write_all(b" ").await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            let _ = tokio::time::timeout(BODY_TIMEOUT + Duration::from_secs(1), trickle).await;
            let answer = read_answer(&mut stream, Duration::from_secs(3)).await;
            (answer, started.elapsed())
        }));
    }
    // Meanwhile honest clients are answered promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        assert_eq!(app.get("/healthz", None).await.status().as_u16(), 200);
        let joined = app.join(user).await;
        assert!(joined.status().is_success(), "{}", joined.status());
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "an honest request took {slowest:?}"
    );
    let mut timed_out = 0;
    for trickler in tricklers {
        let (answer, at) = trickler.await.expect("a trickler finished");
        assert!(at < Duration::from_secs(7), "a trickle held on for {at:?}");
        // A closed connection (no answer) is as good as a 408.
        if let Some(text) = answer {
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            timed_out += 1;
        }
    }
    assert!(timed_out > 0, "no trickler was told 408");
}
on_postgres!(five_hundred_trickling_bodies_do_not_stop_the_service);

async fn with_an_ops_bind_metrics_leave_the_public_port(backend: Backend) {
    let (app, ops) = spawn_app_with_ops(backend, |_| {}).await;
    assert_error(
        app.get("/metrics", None).await,
        404,
        "not_found",
        "not found",
    )
    .await;
    assert_eq!(app.get("/openapi.json", None).await.status().as_u16(), 200);
    assert_eq!(app.get("/healthz", None).await.status().as_u16(), 200);
    let metrics = app
        .client
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("boxoffice_readiness_pings_total"));
    for path in ["/openapi.json", "/healthz", "/readyz"] {
        let response = app.client.get(format!("{ops}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    // The ops listener serves nothing else.
    let user = app.create_user(100).await;
    let balance = app
        .client
        .get(format!("{ops}/v1/balance/users/{user}"))
        .send()
        .await
        .unwrap();
    assert_error(balance, 404, "not_found", "not found").await;
}
on_both_stores!(with_an_ops_bind_metrics_leave_the_public_port);

/// The pings `/readyz` has made, as this app's `/metrics` counts them.
async fn readiness_pings(app: &TestApp) -> u64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("boxoffice_readiness_pings_total "))
        .expect("the ping counter is exposed")
        .parse()
        .expect("a count")
}

async fn a_flood_of_readyz_pings_the_database_about_once_a_second(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = readiness_pings(&app).await;
    let started = Instant::now();
    for _ in 0..10 {
        let wave: Vec<_> = (0..20).map(|_| app.get("/readyz", None)).collect();
        for response in futures_util::future::join_all(wave).await {
            assert_eq!(response.status().as_u16(), 200);
        }
    }
    let elapsed = started.elapsed();
    let pings = readiness_pings(&app).await - before;
    // One ping, then at most one more per second that passed.
    let allowed = 1 + elapsed.as_secs();
    assert!(
        (1..=allowed).contains(&pings),
        "200 calls in {elapsed:?} made {pings} pings"
    );
}
on_both_stores!(a_flood_of_readyz_pings_the_database_about_once_a_second);
