//! Crash recovery: the real `boxoffice` binary on PostgreSQL, driven by concurrent
//! reservations, payments, recharges and joins, killed with SIGKILL at a random moment and
//! restarted on the same database — again and again. After every restart: everything that was
//! acknowledged is there, nothing unacknowledged is half there, no seat is sold twice, holds
//! that expired while it was down are released, and the line keeps its order.
//!
//! `BOXOFFICE_CRASH_CYCLES` sets the number of cycles (default 5; the long run uses 100).

use rand::Rng;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN_KEY: &str = "crash-test-admin-key-at-least-32-bytes";
const USERS: usize = 24;
const OPENING: i64 = 1_000_000;
const SEATS: usize = 2_000;
const PRICE: i64 = 1_000;

#[derive(Default)]
struct Acknowledged {
    /// (user, balance after) of every recharge answered 200.
    recharges: Vec<(i64, i64)>,
    reservations: Vec<i64>,
    /// (payment, reservation) of every payment answered 201.
    payments: Vec<(i64, i64)>,
    /// (token, queueId) of every token seen by a 2xx join + poll.
    tokens: Vec<(i64, i64)>,
}

struct Server {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("an address")
        .port()
}

fn start(url: &str, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            url,
            "--admin-key",
            ADMIN_KEY,
        ])
        .args([
            "--hold-ttl-secs",
            "2",
            "--max-active",
            "100000",
            "--max-seats-per-user",
            "100",
            "--workers",
            "2",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(client: &reqwest::Client, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        if let Some(status) = server.child.try_wait().expect("wait") {
            panic!("the server exited during startup: {status}");
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn json_of(response: reqwest::Response) -> Option<(u16, Value)> {
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// One virtual user: joins, reserves, pays and recharges until the server dies under it.
async fn drive(
    client: reqwest::Client,
    base: String,
    user: i64,
    seats: Arc<Vec<i64>>,
    concert: (i64, i64),
    acks: Arc<Mutex<Acknowledged>>,
) {
    let mut token: Option<i64> = None;
    loop {
        let step = rand::rng().random_range(0..10);
        let result: Option<()> = async {
            if step < 3 {
                let amount = rand::rng().random_range(1..5_000);
                let (status, body) = json_of(client.post(format!("{base}/v1/balance/users/{user}/recharge")).json(&json!({ "amount": amount })).send().await.ok()?).await?;
                if status == 200 {
                    acks.lock().unwrap().recharges.push((user, body["currentAmount"].as_i64()?));
                }
                return Some(());
            }
            let Some(t) = token else {
                let (status, body) = json_of(client.post(format!("{base}/v1/queue-tokens/users/{user}")).send().await.ok()?).await?;
                if status < 300 {
                    let t = body["tokenId"].as_i64()?;
                    let (_, polled) = json_of(client.get(format!("{base}/v1/queue-status/users/{user}")).header("TOKEN-ID", t).send().await.ok()?).await?;
                    acks.lock().unwrap().tokens.push((t, polled["queueId"].as_i64()?));
                    token = Some(t);
                }
                return Some(());
            };
            let seat = seats[rand::rng().random_range(0..seats.len())];
            let request = json!({ "userId": user, "concertId": concert.0, "scheduleId": concert.1, "seatIds": [seat] });
            let (status, body) = json_of(client.post(format!("{base}/v1/reservations")).header("TOKEN-ID", t).json(&request).send().await.ok()?).await?;
            if status == 401 {
                token = None;
            }
            if status != 201 {
                return Some(());
            }
            let reservation = body["reservationId"].as_i64()?;
            acks.lock().unwrap().reservations.push(reservation);
            if step < 8 {
                let (status, paid) = json_of(client.post(format!("{base}/v1/payments/users/{user}")).header("TOKEN-ID", t).json(&json!({ "reservationId": reservation })).send().await.ok()?).await?;
                if status == 201 {
                    acks.lock().unwrap().payments.push((paid["paymentId"].as_i64()?, reservation));
                    token = None; // a payment spends the token
                }
            }
            Some(())
        }
        .await;
        if result.is_none() {
            return; // the server is gone
        }
    }
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn check(
    pool: &PgPool,
    acks: &Acknowledged,
    client: &reqwest::Client,
    base: &str,
    users: &[i64],
    cycle: usize,
) {
    let ctx = format!("after restart #{cycle}");
    // Acknowledged means there.
    let mut ledger: HashMap<(i64, i64), usize> = HashMap::new();
    for row in sqlx::query("SELECT user_id, balance_after FROM ledger WHERE kind = 'RECHARGE'")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        *ledger.entry((row.get(0), row.get(1))).or_default() += 1;
    }
    let mut acked: HashMap<(i64, i64), usize> = HashMap::new();
    for r in &acks.recharges {
        *acked.entry(*r).or_default() += 1;
    }
    for (key, n) in &acked {
        assert!(
            ledger.get(key).copied().unwrap_or(0) >= *n,
            "{ctx}: acknowledged recharge {key:?} lost"
        );
    }
    let stored: Vec<i64> = sqlx::query_scalar("SELECT id FROM reservations")
        .fetch_all(pool)
        .await
        .unwrap();
    let stored: std::collections::HashSet<i64> = stored.into_iter().collect();
    for r in &acks.reservations {
        assert!(
            stored.contains(r),
            "{ctx}: acknowledged reservation {r} lost"
        );
    }
    let payments: HashMap<i64, i64> = sqlx::query("SELECT id, reservation_id FROM payments")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (payment, reservation) in &acks.payments {
        assert_eq!(
            payments.get(payment),
            Some(reservation),
            "{ctx}: acknowledged payment {payment} lost"
        );
    }
    for (token, position) in &acks.tokens {
        let stored = scalar(
            pool,
            &format!("SELECT COALESCE((SELECT position FROM queue_tokens WHERE id = {token}), -1)"),
        )
        .await;
        assert_eq!(stored, *position, "{ctx}: token {token} lost its place");
    }
    // Nothing half there: a payment is a paid reservation, posted holds and a ledger row, or none of them.
    let checks = [
        ("paid without payment", "SELECT COUNT(*) FROM reservations r WHERE status = 'PAID' AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.reservation_id = r.id)"),
        ("payment without paid", "SELECT COUNT(*) FROM payments p JOIN reservations r ON r.id = p.reservation_id WHERE r.status <> 'PAID'"),
        ("payment without debit", "SELECT COUNT(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.payment_id = p.id AND l.amount = p.amount)"),
        ("paid seats not posted", "SELECT COUNT(*) FROM holds h JOIN reservations r ON r.id = h.reservation_id WHERE (r.status = 'PAID') <> (h.state = 'POSTED')"),
        ("seat sold twice", "SELECT COUNT(*) FROM (SELECT seat_id FROM holds WHERE state IN ('PENDING','POSTED') GROUP BY seat_id HAVING COUNT(*) > 1) d"),
        ("balance not explained by the ledger", &format!(
            "SELECT COUNT(*) FROM wallets w WHERE w.balance <> {OPENING} + COALESCE((SELECT SUM(CASE WHEN kind = 'RECHARGE' THEN amount ELSE -amount END) FROM ledger l WHERE l.user_id = w.user_id), 0)")),
        ("hold past its time still pending", &format!(
            "SELECT COUNT(*) FROM reservations WHERE status = 'PAYMENT_PENDING' AND expires_at_ms < {}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 1_000)),
    ];
    for (what, sql) in checks {
        assert_eq!(scalar(pool, sql).await, 0, "{ctx}: {what}");
    }
    // The rebuilt service agrees with its database.
    for user in users {
        let live: Value = client
            .get(format!("{base}/v1/balance/users/{user}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stored = scalar(
            pool,
            &format!("SELECT balance FROM wallets WHERE user_id = {user}"),
        )
        .await;
        assert_eq!(
            live["currentAmount"], stored,
            "{ctx}: user {user}'s live balance"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let cycles: usize = std::env::var("BOXOFFICE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let server = std::env::var("BOXOFFICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("boxoffice_crash_{}", std::process::id());
    let admin = PgPool::connect(&format!("{server}/postgres"))
        .await
        .expect("PostgreSQL is reachable (see README)");
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{server}/{name}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let port = free_port();
    let mut server_process = start(&url, port);
    wait_ready(&client, &mut server_process).await;
    let base = server_process.base.clone();
    let mut users = Vec::new();
    for _ in 0..USERS {
        let created: Value = client
            .post(format!("{base}/v1/admin/users"))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&json!({ "name": "crash", "balance": OPENING }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        users.push(created["userId"].as_i64().unwrap());
    }
    let seat_map: Vec<Value> = (1..=SEATS)
        .map(|n| json!({ "seatNumber": n, "price": PRICE }))
        .collect();
    let concert: Value = client
        .post(format!("{base}/v1/admin/concerts"))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "name": "crash", "schedules": [{ "concertAt": "2099-01-01T00:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": seat_map }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schedule = &concert["schedules"][0];
    let seats: Arc<Vec<i64>> = Arc::new(
        schedule["seatIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect(),
    );
    let concert = (
        concert["concertId"].as_i64().unwrap(),
        schedule["scheduleId"].as_i64().unwrap(),
    );
    let pool = PgPool::connect(&url).await.unwrap();
    let acks = Arc::new(Mutex::new(Acknowledged::default()));
    let started = Instant::now();
    for cycle in 1..=cycles {
        let workers: Vec<_> = users
            .iter()
            .map(|user| {
                tokio::spawn(drive(
                    client.clone(),
                    base.clone(),
                    *user,
                    seats.clone(),
                    concert,
                    acks.clone(),
                ))
            })
            .collect();
        let run_for = Duration::from_millis(rand::rng().random_range(100..600));
        tokio::time::sleep(run_for).await;
        server_process.child.kill().expect("SIGKILL");
        server_process.child.wait().expect("reaped");
        for worker in workers {
            worker.await.expect("a worker ends when the server dies");
        }
        server_process = start(&url, port);
        wait_ready(&client, &mut server_process).await;
        let snapshot = std::mem::take(&mut *acks.lock().unwrap());
        check(&pool, &snapshot, &client, &base, &users, cycle).await;
        eprintln!(
            "crash cycle {cycle}/{cycles}: killed after {run_for:?}; {} recharges, {} reservations, {} payments, {} tokens acknowledged and found",
            snapshot.recharges.len(), snapshot.reservations.len(), snapshot.payments.len(), snapshot.tokens.len()
        );
    }
    eprintln!("{cycles} crash cycles in {:?}", started.elapsed());
    let _ = server_process.child.kill();
    let _ = server_process.child.wait();
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}
