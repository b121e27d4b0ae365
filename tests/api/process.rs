//! The application as a process of its own: the real `boxoffice` binary, which can be killed
//! with SIGKILL ([`TestApp::crash`]) and keeps a metrics recorder no other test writes to.

use crate::helpers::{test_client, Runner, TestApp, TestDb, ADMIN_KEY};
use boxoffice::clock::ManualClock;
use boxoffice::config::Settings;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `boxoffice serve` child process; killed when dropped, so a failed test leaves none behind.
pub struct ServerProcess(pub(crate) std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real `boxoffice` binary on `db` (its own process: its own metrics recorder, and
/// it can be killed with SIGKILL, see [`TestApp::crash`]), with `flags` added to `serve`'s.
/// It keeps real time: `app.clock` does not reach it.
pub async fn spawn_process_app(db: Arc<TestDb>, flags: &[&str]) -> TestApp {
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let port = crate::ports::free_port();
    let address = format!("http://127.0.0.1:{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &db.url, "--admin-key", ADMIN_KEY])
        .args(["--workers", "2"])
        .args(&flags)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut child = ServerProcess(child);
    let client = test_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{address}/readyz")).send().await {
            if r.status() == StatusCode::OK {
                break;
            }
        }
        if let Some(status) = child.0.try_wait().expect("the child can be waited on") {
            panic!("the server exited during startup: {status}");
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut settings = Settings::for_database(db.url.clone());
    settings.admin_key = Some(ADMIN_KEY.into());
    TestApp {
        runner: Runner::Process { child, flags },
        address,
        client,
        db,
        settings,
        clock: Arc::new(ManualClock::new()),
    }
}

impl TestApp {
    /// Kills the server process with SIGKILL (nothing drained, nothing flushed) and starts it
    /// again on the same database with the same flags: what was acknowledged must be there.
    pub async fn crash(self) -> TestApp {
        let Runner::Process { mut child, flags } = self.runner else {
            panic!("crash() needs a server process: start it with spawn_process_app");
        };
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reaped");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        spawn_process_app(self.db, &flags).await
    }
}
