//! The test harness: a fresh database per test (PostgreSQL or SQLite), the real application on
//! port 0, and typed helpers that read like the product.

use boxoffice::clock::{Clock, ManualClock};
use boxoffice::config::Settings;
use boxoffice::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::process::{spawn_process_app, ServerProcess};

pub const ADMIN_KEY: &str = "test-admin-key-at-least-32-bytes-long";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The PostgreSQL server the tests use; `BOXOFFICE_TEST_POSTGRES` overrides it.
pub fn postgres_server() -> String {
    std::env::var("BOXOFFICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "boxoffice_test_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    name: String,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Arc<TestDb> {
        let name = unique_name();
        match backend {
            Backend::Postgres => {
                let server = postgres_server();
                let admin = format!("{server}/postgres");
                let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {server} ({e}); start it with \
                         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                         or point BOXOFFICE_TEST_POSTGRES at one"
                    )
                });
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&pool)
                    .await
                    .expect("create the test database");
                pool.close().await;
                Arc::new(TestDb {
                    backend,
                    url: format!("{server}/{name}"),
                    name,
                    dir: None,
                })
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("create a temp dir");
                let url = format!("sqlite://{}", dir.join("boxoffice.db").display());
                Arc::new(TestDb {
                    backend,
                    url,
                    name,
                    dir: Some(dir),
                })
            }
        }
    }

    /// Runs statements against the test database (fault injection, rows of an older version).
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url)
                    .await
                    .expect("connect to the test database");
                sqlx::raw_sql(sql)
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                pool.close().await;
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url)
                    .await
                    .expect("open the test database");
                sqlx::raw_sql(sql)
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                pool.close().await;
            }
        }
    }

    /// One number from the database, for checking what was really committed.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url)
                    .await
                    .expect("connect to the test database");
                let value: i64 = sqlx::query_scalar(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                pool.close().await;
                value
            }
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url)
                    .await
                    .expect("open the test database");
                let value: i64 = sqlx::query_scalar(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                pool.close().await;
                value
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        let admin = format!("{}/postgres", postgres_server());
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow: use a short-lived runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(&drop).execute(&pool).await;
                pool.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// The application under test, on its own database.
pub struct TestApp {
    // First: dropped (a process killed) before the database it writes to is.
    pub(crate) runner: Runner,
    pub address: String,
    pub client: reqwest::Client,
    pub db: Arc<TestDb>,
    pub settings: Settings,
    /// The in-process server's clock; a server process (see [`spawn_process_app`]) keeps real
    /// time and does not see it.
    pub clock: Arc<ManualClock>,
}

/// How the application under test runs.
pub(crate) enum Runner {
    /// In this process: gracefully stoppable, on a controllable clock.
    InProcess {
        handle: boxoffice::startup::AppHandle,
        stopped: tokio::sync::oneshot::Receiver<()>,
    },
    /// The real binary, killable with SIGKILL, with the flags it was started with.
    Process {
        child: ServerProcess,
        flags: Vec<String>,
    },
}

/// A concert with one schedule, as the admin route created it.
#[derive(Debug, Clone)]
pub struct Concert {
    pub id: i64,
    pub schedule: i64,
    pub seats: Vec<i64>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(TestDb::create(backend).await, |_| {}).await
}

/// Starts the application on `db` with settings adjusted by `tweak`.
pub async fn spawn_app_with(db: Arc<TestDb>, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(db, Arc::new(ManualClock::new()), tweak).await
}

pub async fn spawn_app_on(
    db: Arc<TestDb>,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    boxoffice::telemetry::init_with_default("warn");
    let mut settings = Settings::for_database(db.url.clone());
    settings.admin_key = Some(ADMIN_KEY.into());
    tweak(&mut settings);
    let app = Application::build_with_clock(settings.clone(), clock.clone() as Arc<dyn Clock>)
        .await
        .expect("the application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let (tx, stopped) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let _ = app.run_until_stopped().await;
        let _ = tx.send(());
    });
    let client = test_client();
    TestApp {
        runner: Runner::InProcess { handle, stopped },
        address,
        client,
        db,
        settings,
        clock,
    }
}

pub(crate) fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

impl TestApp {
    /// Stops gracefully: the server, then the persister (drained), then the store. A server
    /// process is sent SIGTERM and must exit within 15 s.
    pub async fn stop(self) -> (Arc<TestDb>, Settings, Arc<ManualClock>) {
        match self.runner {
            Runner::InProcess { handle, stopped } => {
                handle.stop(true).await;
                let _ = stopped.await;
            }
            Runner::Process { mut child, .. } => {
                let pid = child.0.id().to_string();
                let sent = std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status();
                assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
                let deadline = Instant::now() + Duration::from_secs(15);
                while child.0.try_wait().expect("waitable").is_none() {
                    assert!(Instant::now() < deadline, "no graceful stop within 15 s");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        (self.db, self.settings, self.clock)
    }

    /// Stops and starts again on the same database, as after a deploy.
    pub async fn restart(self) -> TestApp {
        if let Runner::Process { flags, .. } = &self.runner {
            let flags = flags.clone();
            let (db, _, _) = self.stop().await;
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            return spawn_process_app(db, &flags).await;
        }
        let (db, settings, clock) = self.stop().await;
        spawn_app_on(db, clock, move |s| *s = settings).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, token: Option<i64>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.header("TOKEN-ID", token.to_string());
        }
        request.send().await.expect("request sent")
    }

    pub async fn post(&self, path: &str, token: Option<i64>, body: Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.header("TOKEN-ID", token.to_string());
        }
        request.send().await.expect("request sent")
    }

    pub async fn create_user(&self, balance: i64) -> i64 {
        let response = self
            .client
            .post(self.url("/v1/admin/users"))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&json!({ "name": "tester", "balance": balance }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        body(response).await["userId"].as_i64().expect("a user id")
    }

    pub async fn create_users(&self, count: usize, balance: i64) -> Vec<i64> {
        let mut users = Vec::with_capacity(count);
        for _ in 0..count {
            users.push(self.create_user(balance).await);
        }
        users
    }

    /// A concert whose one schedule is open for booking, with `seats` seats at `price`.
    pub async fn create_concert(&self, seats: usize, price: i64) -> Concert {
        self.create_concert_with(seats, price, "2020-01-01T00:00:00", "2099-01-01T10:00:00")
            .await
    }

    pub async fn create_concert_with(
        &self,
        seats: usize,
        price: i64,
        reservation_at: &str,
        concert_at: &str,
    ) -> Concert {
        let seat_map: Vec<Value> = (1..=seats)
            .map(|n| json!({ "seatNumber": n, "price": price }))
            .collect();
        let response = self
            .client
            .post(self.url("/v1/admin/concerts"))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&json!({ "name": "콘서트", "schedules": [
                { "concertAt": concert_at, "reservationAt": reservation_at, "seats": seat_map }
            ] }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::CREATED);
        let created = body(response).await;
        let schedule = &created["schedules"][0];
        Concert {
            id: created["concertId"].as_i64().expect("a concert id"),
            schedule: schedule["scheduleId"].as_i64().expect("a schedule id"),
            seats: schedule["seatIds"]
                .as_array()
                .expect("seat ids")
                .iter()
                .filter_map(Value::as_i64)
                .collect(),
        }
    }

    pub async fn join(&self, user: i64) -> Response {
        self.client
            .post(self.url(&format!("/v1/queue-tokens/users/{user}")))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn status(&self, user: i64, token: i64) -> Response {
        self.get(&format!("/v1/queue-status/users/{user}"), Some(token))
            .await
    }

    /// Joins and polls until admitted; returns the ACTIVE token.
    pub async fn active_token(&self, user: i64) -> i64 {
        let joined = self.join(user).await;
        assert!(
            joined.status().is_success(),
            "join answered {}",
            joined.status()
        );
        let token = body(joined).await["tokenId"].as_i64().expect("a token id");
        self.wait_for_status(user, token, "ACTIVE").await;
        token
    }

    /// Polls until the token reaches `status` (within a few seconds).
    pub async fn wait_for_status(&self, user: i64, token: i64, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let polled = body(self.status(user, token).await).await;
            if polled["status"] == status {
                return polled;
            }
            assert!(
                Instant::now() < deadline,
                "token {token} never became {status}: {polled}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn reserve(
        &self,
        user: i64,
        token: i64,
        concert: &Concert,
        seats: &[i64],
    ) -> Response {
        let request = json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": seats });
        self.post("/v1/reservations", Some(token), request).await
    }

    pub async fn pay(&self, user: i64, token: i64, reservation: i64) -> Response {
        self.post(
            &format!("/v1/payments/users/{user}"),
            Some(token),
            json!({ "reservationId": reservation }),
        )
        .await
    }

    pub async fn recharge(&self, user: i64, amount: Value) -> Response {
        self.post(
            &format!("/v1/balance/users/{user}/recharge"),
            None,
            json!({ "amount": amount }),
        )
        .await
    }

    pub async fn balance(&self, user: i64) -> i64 {
        let response = self.get(&format!("/v1/balance/users/{user}"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
        body(response).await["currentAmount"]
            .as_i64()
            .expect("an amount")
    }

    /// Seat id → AVAILABLE?
    pub async fn seat_map(&self, token: i64, concert: &Concert) -> Vec<(i64, bool)> {
        let path = format!(
            "/v1/concerts/{}/schedules/{}/seats",
            concert.id, concert.schedule
        );
        let response = self.get(&path, Some(token)).await;
        assert_eq!(response.status(), StatusCode::OK);
        body(response).await["seats"]
            .as_array()
            .expect("seats")
            .iter()
            .map(|s| {
                (
                    s["seatId"].as_i64().expect("an id"),
                    s["seatStatus"] == "AVAILABLE",
                )
            })
            .collect()
    }
}

pub async fn body(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"))
}

/// Asserts the error envelope: status, slug and message.
pub async fn assert_error(response: Response, status: u16, error: &str, message: &str) {
    assert_eq!(response.status().as_u16(), status, "wrong status");
    let value = body(response).await;
    assert_eq!(value["code"], status, "{value}");
    assert_eq!(value["error"], error, "{value}");
    if !message.is_empty() {
        assert_eq!(value["message"], message, "{value}");
    }
}

/// Runs a test body once per store.
#[macro_export]
macro_rules! on_both_stores {
    ($(#[$meta:meta])* $name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
        }
    };
}

/// Runs a test body on PostgreSQL only.
#[macro_export]
macro_rules! on_postgres {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}

// --- `--auth jwt` -------------------------------------------------------------------------

/// The HS256 secret of the jwt-mode test apps (at least 32 bytes).
pub const JWT_SECRET: &str = "boxoffice-test-secret-0123456789abcdef";

/// Settings for `--auth jwt` with [`JWT_SECRET`].
pub fn jwt_mode(settings: &mut Settings) {
    settings.auth.mode = boxoffice::config::AuthMode::Jwt;
    settings.auth.jwt_secret = Some(JWT_SECRET.into());
}

/// An app in `--auth jwt` mode with [`JWT_SECRET`], further adjusted by `tweak`.
pub async fn spawn_jwt_app(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(TestDb::create(backend).await, |s| {
        jwt_mode(s);
        tweak(s);
    })
    .await
}

/// Seconds since the epoch, as `exp` counts them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs()
}

/// A JWT of `claims`, signed with `key` under `algorithm`.
pub fn sign(
    claims: &Value,
    algorithm: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, key)
        .expect("the claims serialize")
}

/// A valid bearer of `user` for the jwt-mode test apps: HS256, an hour to live.
pub fn mint(user: i64) -> String {
    let claims = json!({ "sub": user.to_string(), "exp": unix_now() + 3600 });
    sign(
        &claims,
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
}

impl TestApp {
    /// Any request, with an optional bearer, `TOKEN-ID` and JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        token: Option<i64>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(token) = token {
            request = request.header("TOKEN-ID", token.to_string());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    /// [`TestApp::active_token`] with the user's bearer.
    pub async fn active_token_as(&self, user: i64, bearer: &str) -> i64 {
        let path = format!("/v1/queue-tokens/users/{user}");
        let joined = self
            .send(reqwest::Method::POST, &path, Some(bearer), None, None)
            .await;
        assert!(
            joined.status().is_success(),
            "join answered {}",
            joined.status()
        );
        let token = body(joined).await["tokenId"].as_i64().expect("a token id");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = format!("/v1/queue-status/users/{user}");
        loop {
            let polled = self
                .send(
                    reqwest::Method::GET,
                    &status,
                    Some(bearer),
                    Some(token),
                    None,
                )
                .await;
            if body(polled).await["status"] == "ACTIVE" {
                return token;
            }
            assert!(
                Instant::now() < deadline,
                "token {token} never became ACTIVE"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts the application with an `--ops-bind` listener; returns the app and the ops
/// listener's base URL (its port from [`crate::ports::free_port`]).
pub async fn spawn_app_with_ops(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, String) {
    let port = crate::ports::free_port();
    let ops = format!("127.0.0.1:{port}");
    let bind = ops.clone();
    let app = spawn_app_with(TestDb::create(backend).await, move |s| {
        s.ops_bind = Some(bind);
        tweak(s);
    })
    .await;
    (app, format!("http://{ops}"))
}
