//! Crash recovery: the real `boxoffice` binary on PostgreSQL and on SQLite, driven by
//! concurrent reservations, payments, recharges and joins, killed with SIGKILL at a random
//! moment and restarted on the same database — again and again. Every cycle acknowledges at
//! least [`MIN_ACKNOWLEDGED`] writes of each kind before the kill (a worker that meets an
//! answer it cannot read fails the test instead of stopping), and places one hold just before
//! the kill whose TTL runs out while the server is down. After every restart: everything that
//! was acknowledged is there, nothing unacknowledged is half there, no seat is sold twice, the
//! hold that expired while it was down is released, and the line keeps its order.
//!
//! `BOXOFFICE_CRASH_CYCLES` sets the number of cycles per store (default 5; the long run uses
//! 100).

#[path = "support/ports.rs"]
mod ports;
use ports::free_port;
use rand::Rng;
use serde_json::{json, Value};
use sqlx::{PgPool, Row, SqlitePool};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN_KEY: &str = "crash-test-admin-key-at-least-32-bytes";
const USERS: usize = 24;
const OPENING: i64 = 1_000_000;
const SEATS: usize = 2_000;
const PRICE: i64 = 1_000;
/// The server's hold TTL: short, so a hold placed just before a kill is past it at the restart.
const HOLD_TTL_SECS: u64 = 1;
/// Writes of each kind (recharges, reservations, payments) acknowledged before every kill.
const MIN_ACKNOWLEDGED: usize = 5;

/// The store under test, read directly to check what was committed.
enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    async fn scalar(&self, sql: &str) -> i64 {
        let fetched = match self {
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        };
        fetched.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows of two integer columns.
    async fn pairs(&self, sql: &str) -> Vec<(i64, i64)> {
        let fetched = match self {
            Db::Postgres(pool) => sqlx::query(sql)
                .fetch_all(pool)
                .await
                .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect()),
            Db::Sqlite(pool) => sqlx::query(sql)
                .fetch_all(pool)
                .await
                .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect()),
        };
        fetched.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn close(&self) {
        match self {
            Db::Postgres(pool) => pool.close().await,
            Db::Sqlite(pool) => pool.close().await,
        }
    }
}

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

/// A failed assertion must not leave a server running (nor holding the test's output open).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
            &HOLD_TTL_SECS.to_string(),
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

/// Sends a request: `Ok(None)` if the server is gone (no answer, or the answer cut off), an
/// error if it answered something a live server never should (a 5xx, a body that is not JSON).
async fn call(request: reqwest::RequestBuilder) -> Result<Option<(u16, Value)>, String> {
    let Ok(response) = request.send().await else {
        return Ok(None);
    };
    let status = response.status().as_u16();
    let Ok(bytes) = response.bytes().await else {
        return Ok(None);
    };
    if status >= 500 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    serde_json::from_slice(&bytes)
        .map(|value| Some((status, value)))
        .map_err(|e| format!("{status} with a body that is not JSON ({e})"))
}

/// A field of an answer that must have it.
fn field(body: &Value, name: &str) -> Result<i64, String> {
    body[name]
        .as_i64()
        .ok_or_else(|| format!("an answer without {name}: {body}"))
}

/// One virtual user: joins, reserves, pays and recharges until the server dies under it.
/// An answer it cannot read is an error, not the end of the server.
async fn drive(
    client: reqwest::Client,
    base: String,
    user: i64,
    seats: Arc<Vec<i64>>,
    concert: (i64, i64),
    acks: Arc<Mutex<Acknowledged>>,
) -> Result<(), String> {
    let mut token: Option<i64> = None;
    loop {
        let step = rand::rng().random_range(0..10);
        if step < 3 {
            let amount = rand::rng().random_range(1..5_000);
            let Some((status, body)) = call(
                client
                    .post(format!("{base}/v1/balance/users/{user}/recharge"))
                    .json(&json!({ "amount": amount })),
            )
            .await?
            else {
                return Ok(());
            };
            if status == 200 {
                let after = field(&body, "currentAmount")?;
                acks.lock().unwrap().recharges.push((user, after));
            }
            continue;
        }
        let Some(t) = token else {
            let Some((status, body)) =
                call(client.post(format!("{base}/v1/queue-tokens/users/{user}"))).await?
            else {
                return Ok(());
            };
            if status < 300 {
                let t = field(&body, "tokenId")?;
                let Some((_, polled)) = call(
                    client
                        .get(format!("{base}/v1/queue-status/users/{user}"))
                        .header("TOKEN-ID", t),
                )
                .await?
                else {
                    return Ok(());
                };
                let position = field(&polled, "queueId")?;
                acks.lock().unwrap().tokens.push((t, position));
                token = Some(t);
            }
            continue;
        };
        let seat = seats[rand::rng().random_range(0..seats.len())];
        let request = json!({ "userId": user, "concertId": concert.0, "scheduleId": concert.1, "seatIds": [seat] });
        let Some((status, body)) = call(
            client
                .post(format!("{base}/v1/reservations"))
                .header("TOKEN-ID", t)
                .json(&request),
        )
        .await?
        else {
            return Ok(());
        };
        if status == 401 {
            token = None;
        }
        if status != 201 {
            continue;
        }
        let reservation = field(&body, "reservationId")?;
        acks.lock().unwrap().reservations.push(reservation);
        if step < 8 {
            let Some((status, paid)) = call(
                client
                    .post(format!("{base}/v1/payments/users/{user}"))
                    .header("TOKEN-ID", t)
                    .json(&json!({ "reservationId": reservation })),
            )
            .await?
            else {
                return Ok(());
            };
            if status == 201 {
                let payment = field(&paid, "paymentId")?;
                acks.lock().unwrap().payments.push((payment, reservation));
                token = None; // a payment spends the token
            }
        }
    }
}

async fn check(
    pool: &Db,
    acks: &Acknowledged,
    client: &reqwest::Client,
    base: &str,
    users: &[i64],
    cycle: usize,
) {
    let ctx = format!("after restart #{cycle}");
    // Acknowledged means there.
    let mut ledger: HashMap<(i64, i64), usize> = HashMap::new();
    for pair in pool
        .pairs("SELECT user_id, balance_after FROM ledger WHERE kind = 'RECHARGE'")
        .await
    {
        *ledger.entry(pair).or_default() += 1;
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
    let stored: std::collections::HashSet<i64> = pool
        .pairs("SELECT id, id FROM reservations")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for r in &acks.reservations {
        assert!(
            stored.contains(r),
            "{ctx}: acknowledged reservation {r} lost"
        );
    }
    let payments: HashMap<i64, i64> = pool
        .pairs("SELECT id, reservation_id FROM payments")
        .await
        .into_iter()
        .collect();
    for (payment, reservation) in &acks.payments {
        assert_eq!(
            payments.get(payment),
            Some(reservation),
            "{ctx}: acknowledged payment {payment} lost"
        );
    }
    for (token, position) in &acks.tokens {
        let stored = pool
            .scalar(&format!(
                "SELECT COALESCE((SELECT position FROM queue_tokens WHERE id = {token}), -1)"
            ))
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
        assert_eq!(pool.scalar(sql).await, 0, "{ctx}: {what}");
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
        let stored = pool
            .scalar(&format!(
                "SELECT balance FROM wallets WHERE user_id = {user}"
            ))
            .await;
        assert_eq!(
            live["currentAmount"], stored,
            "{ctx}: user {user}'s live balance"
        );
    }
}

/// Which store the server under test writes to.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh database for one run: its URL, the pool the checks read through, and how to drop it.
struct Scratch {
    url: String,
    db: Db,
    cleanup: Cleanup,
}

/// What to remove after the run.
enum Cleanup {
    /// The server's admin URL and the database's name.
    Postgres(String, String),
    Sqlite(std::path::PathBuf),
}

impl Cleanup {
    async fn run(self) {
        match self {
            Cleanup::Postgres(admin, name) => {
                let admin = PgPool::connect(&admin)
                    .await
                    .expect("PostgreSQL is reachable");
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::query(&sql).execute(&admin).await.unwrap();
                admin.close().await;
            }
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

async fn scratch(backend: Backend) -> Scratch {
    match backend {
        Backend::Postgres => {
            let server = std::env::var("BOXOFFICE_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            let name = format!("boxoffice_crash_{}", std::process::id());
            let admin = PgPool::connect(&format!("{server}/postgres"))
                .await
                .expect("PostgreSQL is reachable (see README)");
            for sql in &[
                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                format!("CREATE DATABASE \"{name}\""),
            ] {
                sqlx::query(sql).execute(&admin).await.unwrap();
            }
            admin.close().await;
            let url = format!("{server}/{name}");
            let db = Db::Postgres(PgPool::connect(&url).await.unwrap());
            Scratch {
                url,
                db,
                cleanup: Cleanup::Postgres(format!("{server}/postgres"), name),
            }
        }
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("boxoffice_crash_{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a scratch directory");
            let url = format!("sqlite://{}", dir.join("crash.db").display());
            Scratch {
                url,
                // Opened after the server created the file (see `open_after_start`).
                db: Db::Sqlite(SqlitePool::connect_lazy("sqlite::memory:").unwrap()),
                cleanup: Cleanup::Sqlite(dir),
            }
        }
    }
}

async fn create_concert(
    client: &reqwest::Client,
    base: &str,
    seats: usize,
) -> ((i64, i64), Vec<i64>) {
    let seat_map: Vec<Value> = (1..=seats)
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
    let seats = schedule["seatIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    (
        (
            concert["concertId"].as_i64().unwrap(),
            schedule["scheduleId"].as_i64().unwrap(),
        ),
        seats,
    )
}

async fn create_user(client: &reqwest::Client, base: &str) -> i64 {
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
    created["userId"].as_i64().unwrap()
}

/// Places one hold for a fresh user on `seat`, acknowledged; returns its reservation id and
/// when the answer came.
async fn probe_hold(
    client: &reqwest::Client,
    base: &str,
    concert: (i64, i64),
    seat: i64,
) -> (i64, Instant) {
    let user = create_user(client, base).await;
    let joined = call(client.post(format!("{base}/v1/queue-tokens/users/{user}")))
        .await
        .unwrap()
        .expect("the server is up");
    let token = field(&joined.1, "tokenId").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, polled) = call(
            client
                .get(format!("{base}/v1/queue-status/users/{user}"))
                .header("TOKEN-ID", token),
        )
        .await
        .unwrap()
        .expect("the server is up");
        if polled["status"] == "ACTIVE" {
            break;
        }
        assert!(Instant::now() < deadline, "the probe was never admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let request = json!({ "userId": user, "concertId": concert.0, "scheduleId": concert.1, "seatIds": [seat] });
    let (status, held) = call(
        client
            .post(format!("{base}/v1/reservations"))
            .header("TOKEN-ID", token)
            .json(&request),
    )
    .await
    .unwrap()
    .expect("the server is up");
    assert_eq!(status, 201, "the probe hold: {held}");
    (field(&held, "reservationId").unwrap(), Instant::now())
}

/// Waits (bounded) until every kind of write was acknowledged at least [`MIN_ACKNOWLEDGED`]
/// times in this cycle, then a random 0–300 ms more so the kill lands anywhere.
async fn until_enough_acknowledged(acks: &Mutex<Acknowledged>, cycle: usize) -> Duration {
    let started = Instant::now();
    loop {
        let counts = {
            let a = acks.lock().unwrap();
            [a.recharges.len(), a.reservations.len(), a.payments.len()]
        };
        if counts.iter().all(|n| *n >= MIN_ACKNOWLEDGED) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cycle {cycle}: only {counts:?} (recharges, reservations, payments) acknowledged in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..300))).await;
    started.elapsed()
}

async fn kill_dash_nine_cycles(backend: Backend) {
    let cycles: usize = std::env::var("BOXOFFICE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let Scratch {
        url,
        mut db,
        cleanup,
    } = scratch(backend).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let port = free_port();
    let mut server_process = start(&url, port);
    wait_ready(&client, &mut server_process).await;
    if let Backend::Sqlite = backend {
        db = Db::Sqlite(
            SqlitePool::connect(&url)
                .await
                .expect("the server created the file"),
        );
    }
    let base = server_process.base.clone();
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(create_user(&client, &base).await);
    }
    let (concert, seats) = create_concert(&client, &base, SEATS).await;
    let seats = Arc::new(seats);
    // The probes' own seats: no worker ever holds them.
    let (probe_concert, probe_seats) = create_concert(&client, &base, cycles).await;
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
        let run_for = until_enough_acknowledged(&acks, cycle).await;
        let (probe, held_at) =
            probe_hold(&client, &base, probe_concert, probe_seats[cycle - 1]).await;
        server_process.child.kill().expect("SIGKILL");
        server_process.child.wait().expect("reaped");
        for worker in workers {
            if let Err(e) = worker.await.expect("a worker ends when the server dies") {
                panic!("{backend:?} cycle {cycle}: a worker met an answer a live server never gives: {e}");
            }
        }
        // Down until the probe's hold is a second past its TTL: expired while down, by design.
        let expired_at = held_at + Duration::from_secs(HOLD_TTL_SECS + 1);
        tokio::time::sleep(expired_at.saturating_duration_since(Instant::now())).await;
        server_process = start(&url, port);
        wait_ready(&client, &mut server_process).await;
        let snapshot = std::mem::take(&mut *acks.lock().unwrap());
        check(&db, &snapshot, &client, &base, &users, cycle).await;
        assert_eq!(
            db.scalar(&format!(
                "SELECT COUNT(*) FROM reservations WHERE id = {probe} AND status = 'EXPIRED'"
            ))
            .await,
            1,
            "{backend:?} cycle {cycle}: the hold that expired while down is released at boot"
        );
        assert_eq!(
            db.scalar(&format!(
                "SELECT COUNT(*) FROM holds WHERE reservation_id = {probe} AND state IN ('PENDING', 'POSTED')"
            ))
            .await,
            0,
            "{backend:?} cycle {cycle}: its seat is free again"
        );
        eprintln!(
            "{backend:?} crash cycle {cycle}/{cycles}: killed after {run_for:?}; {} recharges, {} reservations, {} payments, {} tokens acknowledged and found; the probe hold expired while down",
            snapshot.recharges.len(), snapshot.reservations.len(), snapshot.payments.len(), snapshot.tokens.len()
        );
    }
    eprintln!(
        "{backend:?}: {cycles} crash cycles in {:?}",
        started.elapsed()
    );
    drop(server_process);
    db.close().await;
    cleanup.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_dash_nine_on_postgres() {
    kill_dash_nine_cycles(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_dash_nine_on_sqlite() {
    kill_dash_nine_cycles(Backend::Sqlite).await;
}
