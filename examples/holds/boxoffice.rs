//! boxoffice over HTTP: the release binary as a child process on a fresh store, set up through
//! the admin API (users, one concert per schedule, an ACTIVE token per user), then each
//! connection sends `POST /v1/reservations` for its holds. A 201 is a committed hold.

use crate::measure::{drive, CpuMeter, Outcome, Processes, Tally};
use crate::plan::{Plan, SEATS_PER_HOLD, SEATS_PER_SCHEDULE};
use crate::wire::{Conn, RequestBuf, Target};
use crate::Args;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN_KEY: &str = "holds-comparison-admin-key-of-32-bytes";

/// The child server; killed (and its store dropped) when this is dropped.
struct Server {
    child: Child,
    base: String,
    drop_database: Option<(String, String)>,
    sqlite_dir: Option<std::path::PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn server_bin(args: &Args) -> Result<std::path::PathBuf, String> {
    if let Some(bin) = &args.server_bin {
        return Ok(bin.clone());
    }
    // This example is target/<profile>/examples/holds; the server is target/<profile>/boxoffice.
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("boxoffice"))
        .ok_or("cannot find the target directory")?;
    if !bin.exists() {
        return Err(format!(
            "{} not found: cargo build --release --bin boxoffice (or pass --server-bin)",
            bin.display()
        ));
    }
    Ok(bin)
}

pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

pub async fn fresh_postgres(server: &str, name: &str) -> Result<String, String> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .map_err(|e| format!("PostgreSQL at {server}: {e}"))?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql)
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(format!("{server}/{name}"))
}

pub async fn drop_postgres(server: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::query(&sql).execute(&mut admin).await;
    }
}

/// Which boxoffice a run measures.
#[derive(Clone, Copy)]
pub enum Build<'a> {
    /// This build, as configured by default.
    This,
    /// This build with `--pipeline-commits`.
    Pipelined,
    /// This build as a one-node cluster (`--cluster`): what fencing and leases cost a node
    /// that owns every shard (issue 26's "cluster mode on one node within 10 % of plain").
    Cluster,
    /// Another binary (`--before-bin`).
    Before(&'a std::path::Path),
}

impl Build<'_> {
    fn label(self) -> &'static str {
        match self {
            Build::This => "",
            Build::Pipelined => ", --pipeline-commits",
            Build::Cluster => ", --cluster (one node)",
            Build::Before(_) => ", before",
        }
    }
}

async fn start(args: &Args, build: Build<'_>) -> Result<Server, String> {
    let bin = match build {
        Build::Before(bin) => Some(bin),
        _ => None,
    };
    let bin = match bin {
        Some(bin) => bin.to_path_buf(),
        None => server_bin(args)?,
    };
    let port = free_port()?;
    let (url, drop_database, sqlite_dir) = match args.store.as_str() {
        "postgres" => {
            let name = format!("holds_boxoffice_{}", std::process::id());
            let url = fresh_postgres(&args.postgres, &name).await?;
            (url, Some((args.postgres.clone(), name)), None)
        }
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("holds-sqlite-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            (
                format!("sqlite://{}", dir.join("boxoffice.db").display()),
                None,
                Some(dir),
            )
        }
        other => return Err(format!("--store {other}: postgres or sqlite")),
    };
    let mut command = Command::new(&bin);
    command
        .args(["serve", "--database-url", &url, "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--admin-key", ADMIN_KEY, "--max-seats-per-user", "100"])
        .args(["--max-active", "10000000", "--hold-ttl-secs", "3600"])
        .args(["--active-ttl-secs", "3600", "--idle-timeout-secs", "3600"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(w) = args.server_workers {
        command.args(["--workers", &w.to_string()]);
    }
    match build {
        Build::Pipelined => {
            command.arg("--pipeline-commits");
        }
        Build::Cluster if drop_database.is_some() => {
            command
                .args(["--cluster", "--node-id", "holds-1", "--advertise-url"])
                .arg(format!("http://127.0.0.1:{port}"));
        }
        Build::Cluster => return Err("--systems cluster needs --store postgres".into()),
        Build::This | Build::Before(_) => {}
    }
    let child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        drop_database,
        sqlite_dir,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            return Err("the boxoffice server was not ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Users (with an ACTIVE token each) and schedules (with their seat ids), in plan order.
struct Setup {
    users: Vec<(i64, i64)>,
    schedules: Vec<(i64, i64, Vec<i64>)>,
}

async fn setup(base: &str, plan: &Plan) -> Result<Setup, String> {
    let client = reqwest::Client::new();
    let mut schedules = Vec::with_capacity(plan.schedules);
    for s in 0..plan.schedules {
        let seats: Vec<Value> = (1..=SEATS_PER_SCHEDULE)
            .map(|n| json!({ "seatNumber": n, "price": 10_000 }))
            .collect();
        let body = json!({ "name": format!("holds {s}"), "schedules": [{
            "concertAt": "2099-01-01T10:00:00", "reservationAt": "2020-01-01T00:00:00", "seats": seats }] });
        let r: Value = client
            .post(format!("{base}/v1/admin/concerts"))
            .header("X-Admin-Key", ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let concert = r["concertId"].as_i64().ok_or(format!("concert: {r}"))?;
        let schedule = &r["schedules"][0];
        let id = schedule["scheduleId"]
            .as_i64()
            .ok_or(format!("schedule: {r}"))?;
        let seats = schedule["seatIds"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        schedules.push((concert, id, seats));
    }
    let made: Vec<Result<(i64, i64), String>> = stream::iter(0..plan.users)
        .map(|i| {
            let client = client.clone();
            async move {
                let r: Value = client
                    .post(format!("{base}/v1/admin/users"))
                    .header("X-Admin-Key", ADMIN_KEY)
                    .json(&json!({ "name": format!("holder {i}") }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let user = r["userId"].as_i64().ok_or(format!("user: {r}"))?;
                let t: Value = client
                    .post(format!("{base}/v1/queue-tokens/users/{user}"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let token = t["tokenId"].as_i64().ok_or(format!("token: {t}"))?;
                Ok((user, token))
            }
        })
        .buffered(64)
        .collect()
        .await;
    let users = made.into_iter().collect::<Result<Vec<_>, String>>()?;
    Ok(Setup { users, schedules })
}

/// Runs the holds against `build`'s server.
pub async fn run(args: &Args, plan: &Plan, build: Build<'_>) -> Result<Outcome, String> {
    let mut server = start(args, build).await?;
    eprintln!(
        "boxoffice ({}): setting up {} users, {} schedules",
        args.store, plan.users, plan.schedules
    );
    let began = Instant::now();
    let setup = Arc::new(setup(&server.base, plan).await?);
    eprintln!(
        "boxoffice: set up in {:.1} s; holding",
        began.elapsed().as_secs_f64()
    );
    let target = Arc::new(Target::resolve(&server.base, Duration::from_secs(10)).await?);
    let pid = server.child.id();
    let mut parts = vec![("boxoffice", Processes::Pid(pid))];
    if args.store == "postgres" {
        parts.push(("postgres", Processes::Named("postgres")));
        parts.push(("WAL-bytes", Processes::WalMegabytes(args.postgres.clone())));
    }
    let plan = Arc::new(Plan {
        schedules: plan.schedules,
        users: plan.users,
        connections: plan.connections,
    });
    let outcome = drive(
        format!(
            "boxoffice over HTTP ({}){}",
            args.store,
            build.label()
        ),
        args,
        CpuMeter::new(parts),
        |c, window| {
            let (setup, target, plan) = (setup.clone(), target.clone(), plan.clone());
            async move {
                let mut tally = Tally::new();
                let mut conn = Conn::open(&target).await?;
                let mut request = RequestBuf::new();
                for hold in plan.holds_of(c) {
                    if window.is_over() {
                        break;
                    }
                    let (user, token) = setup.users[hold.user];
                    let (concert, schedule, seats) = &setup.schedules[hold.schedule];
                    let ids: [i64; SEATS_PER_HOLD] = hold.seats.map(|s| seats[s]);
                    request.prepare(
                        &target,
                        "POST",
                        format_args!("/v1/reservations"),
                        Some(token),
                        None,
                        Some(format_args!(
                            "{{\"userId\":{user},\"concertId\":{concert},\"scheduleId\":{schedule},\"seatIds\":[{},{}]}}",
                            ids[0], ids[1]
                        )),
                    );
                    let started = Instant::now();
                    let outcome = match conn.send(&target, &request).await {
                        Ok(201) => Ok(true),
                        Ok(400) => Ok(false),
                        Ok(status) => Err(format!(
                            "{status} {}",
                            String::from_utf8_lossy(conn.body())
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                    let broken = outcome.is_err() && conn.is_dead();
                    tally.record(&window, started, outcome);
                    if broken {
                        conn = Conn::open(&target).await?;
                    }
                }
                Ok(tally)
            }
        },
    )
    .await;
    let _ = server.child.kill();
    let _ = server.child.wait();
    if let Some((pg, name)) = server.drop_database.take() {
        drop_postgres(&pg, &name).await;
    }
    outcome
}
