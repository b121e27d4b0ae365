//! The binary as a newcomer meets it: `migrate` on both stores, and every startup mistake
//! answered with one clear line and a non-zero exit — never a panic or a backtrace.

#[path = "support/ports.rs"]
mod ports;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn boxoffice(args: &[&str]) -> Output {
    boxoffice_with_env(args, &[])
}

/// Runs the binary with `env` set on top of a clean environment for its settings.
fn boxoffice_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("BOXOFFICE_ADMIN_KEY")
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("boxoffice {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("boxoffice_cli_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// Exits non-zero with one `error:` line that says `expected`, and no panic.
fn assert_clear_failure(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should fail: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "no panic: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains(expected),
        "{:?} should say {expected:?}",
        errors[0]
    );
}

#[test]
fn migrate_prepares_an_sqlite_store() {
    let dir = temp_dir("migrate");
    let url = format!("sqlite://{}", dir.join("fresh.db").display());
    let output = boxoffice(&["migrate", "--database-url", &url]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.join("fresh.db").exists());
    let again = boxoffice(&["migrate", "--database-url", &url]);
    assert!(again.status.success(), "migrate is idempotent");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn migrate_prepares_a_postgres_store() {
    let server = std::env::var("BOXOFFICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("boxoffice_cli_{}", std::process::id());
    let psql = |sql: &str| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let pool = sqlx::PgPool::connect(&format!("{server}/postgres"))
                .await
                .expect("PostgreSQL is reachable");
            sqlx::query(sql)
                .execute(&pool)
                .await
                .expect("admin statement");
        });
    };
    psql(&format!("DROP DATABASE IF EXISTS \"{name}\""));
    psql(&format!("CREATE DATABASE \"{name}\""));
    let output = boxoffice(&["migrate", "--database-url", &format!("{server}/{name}")]);
    psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("migrations applied"));
}

#[test]
fn an_unreachable_postgres_is_one_clear_line() {
    let output = boxoffice(&[
        "serve",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/nowhere",
    ]);
    assert_clear_failure(
        &output,
        "cannot open the database postgres://postgres@127.0.0.1:1/nowhere",
    );
}

#[test]
fn a_password_never_appears_in_the_message() {
    let output = boxoffice(&[
        "serve",
        "--database-url",
        "postgres://postgres:hunter2@127.0.0.1:1/nowhere",
    ]);
    assert_clear_failure(&output, "postgres://postgres:***@127.0.0.1:1/nowhere");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
}

#[test]
fn an_sqlite_file_that_cannot_be_created_is_one_clear_line() {
    let output = boxoffice(&[
        "serve",
        "--database-url",
        "sqlite:///nonexistent/dir/boxoffice.db",
    ]);
    assert_clear_failure(&output, "cannot open the database");
}

#[test]
fn a_read_only_sqlite_file_is_one_clear_line() {
    let dir = temp_dir("readonly");
    let path = dir.join("ro.db");
    let url = format!("sqlite://{}", path.display());
    assert!(boxoffice(&["migrate", "--database-url", &url])
        .status
        .success());
    // Read-only access (root ignores file permissions, so ask SQLite for it).
    let output = boxoffice(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &format!("{url}?mode=ro"),
    ]);
    assert_clear_failure(&output, "readonly");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_locked_sqlite_file_is_one_clear_line() {
    let dir = temp_dir("locked");
    let url = format!("sqlite://{}", dir.join("locked.db").display());
    assert!(boxoffice(&["migrate", "--database-url", &url])
        .status
        .success());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let holder = runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .expect("lock");
        conn
    });
    let output = boxoffice(&["serve", "--bind", "127.0.0.1:0", "--database-url", &url]);
    assert_clear_failure(&output, "locked");
    drop(holder);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("an address").port();
    let dir = temp_dir("port");
    let url = format!("sqlite://{}", dir.join("port.db").display());
    let output = boxoffice(&[
        "serve",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        &url,
    ]);
    assert_clear_failure(&output, &format!("cannot listen on 127.0.0.1:{port}"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_malformed_flag_is_refused_before_anything_starts() {
    let output = boxoffice(&["serve", "--hold-ttl-secs", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    assert_clear_failure(&output, "--hold-ttl-secs");
    let output = boxoffice(&["serve", "--timezone-offset", "KST"]);
    assert_clear_failure(&output, "+09:00");
    let output = boxoffice(&["serve", "--database-url", "mysql://x"]);
    assert_clear_failure(&output, "unsupported database url");
}

#[test]
fn serve_help_shows_no_secret_taken_from_the_environment() {
    let output = boxoffice_with_env(
        &["serve", "--help"],
        &[
            (
                "BOXOFFICE_ADMIN_KEY",
                "admin-hunter2-admin-hunter2-admin-hunter2",
            ),
            ("DATABASE_URL", "postgres://app:db-hunter2@db/boxoffice"),
        ],
    );
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("BOXOFFICE_ADMIN_KEY") && help.contains("DATABASE_URL"),
        "the variables are still named: {help}"
    );
    assert!(!help.contains("hunter2"), "{help}");
}

#[test]
fn an_admin_key_shorter_than_32_bytes_is_refused_at_startup() {
    let dir = temp_dir("short_key");
    let url = format!("sqlite://{}", dir.join("short.db").display());
    let short = "k".repeat(31);
    let flag = boxoffice(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--admin-key",
        &short,
    ]);
    assert_clear_failure(&flag, "at least 32 bytes");
    let env = boxoffice_with_env(
        &["serve", "--bind", "127.0.0.1:0", "--database-url", &url],
        &[("BOXOFFICE_ADMIN_KEY", "short-but-secret")],
    );
    assert_clear_failure(&env, "at least 32 bytes");
    for output in [&flag, &env] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains(&short) && !stderr.contains("short-but-secret"),
            "the key itself is not printed: {stderr}"
        );
    }
    assert!(
        !dir.join("short.db").exists(),
        "refused before the store is opened"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cluster_mode_on_anything_but_postgres_or_without_its_node_is_one_clear_line() {
    let dir = temp_dir("cluster");
    let sqlite = format!("sqlite://{}", dir.join("cluster.db").display());
    let node = [
        "--node-id",
        "n1",
        "--advertise-url",
        "http://127.0.0.1:8080",
    ];
    for url in [sqlite.as_str(), "memory://cluster"] {
        let mut args = vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            url,
            "--cluster",
        ];
        args.extend(node);
        assert_clear_failure(&boxoffice(&args), "--cluster needs PostgreSQL");
    }
    // The same through the environment.
    let env = boxoffice_with_env(
        &["serve", "--bind", "127.0.0.1:0", "--database-url", &sqlite],
        &[
            ("BOXOFFICE_CLUSTER", "true"),
            ("BOXOFFICE_NODE_ID", "n1"),
            ("BOXOFFICE_ADVERTISE_URL", "http://127.0.0.1:8080"),
        ],
    );
    assert_clear_failure(&env, "--cluster needs PostgreSQL");
    // A node needs its id and an address the others can reach, well formed.
    let pg = "postgres://postgres@127.0.0.1:1/never_opened";
    let base = [
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        pg,
        "--cluster",
    ];
    let cases: [(&[&str], &str); 6] = [
        (
            &["--advertise-url", "http://127.0.0.1:8080"],
            "needs --node-id",
        ),
        (&["--node-id", "n1"], "needs --advertise-url"),
        (
            &[
                "--node-id",
                "n 1",
                "--advertise-url",
                "http://127.0.0.1:8080",
            ],
            "--node-id must be",
        ),
        (
            &["--node-id", "n1", "--advertise-url", "127.0.0.1:8080"],
            "--advertise-url must be",
        ),
        (
            &["--node-id", "n1", "--advertise-url", "http://host/path"],
            "--advertise-url must be",
        ),
        // Nodes authenticate each other's calls with the admin key.
        (
            &[
                "--node-id",
                "n1",
                "--advertise-url",
                "http://127.0.0.1:8080",
            ],
            "needs --admin-key",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        assert_clear_failure(&boxoffice(&args), expected);
    }
    assert!(
        !dir.join("cluster.db").exists(),
        "refused before the store is opened"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGTERM with a dashboard's live stream open: the stream ends and the process exits at once
/// (and cleanly), instead of waiting out the 10 s graceful-shutdown timeout for the stream.
#[test]
fn sigterm_is_not_held_up_by_an_open_live_stream() {
    use std::io::{BufRead, BufReader, Write};
    let dir = temp_dir("sigterm_live");
    let url = format!("sqlite://{}", dir.join("live.db").display());
    let port = ports::free_port();
    let key = "live-admin-key-that-is-long-enough-0000";
    let bind = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .args(["serve", "--bind", &bind, "--database-url", &url])
        .args(["--admin-key", key])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match std::net::TcpStream::connect(&bind) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                panic!("the server never listened: {e}");
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    write!(
        &stream,
        "GET /v1/admin/live HTTP/1.1\r\nHost: {bind}\r\nX-Admin-Key: {key}\r\n\r\n"
    )
    .expect("the request is sent");
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    let mut head = String::new();
    // The head, then the first event: the stream is open and flowing.
    loop {
        line.clear();
        reader.read_line(&mut line).expect("the stream reads");
        head.push_str(&line);
        if line.contains("data: ") {
            break;
        }
        assert!(!line.is_empty(), "the stream ended early: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    // The stream ends (EOF, or the chunked terminator then EOF) well before 10 s.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
    let ended = signalled.elapsed();
    while child.try_wait().expect("wait").is_none() {
        if signalled.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the process did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited = signalled.elapsed();
    let status = child.wait().expect("wait");
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(
        ended < Duration::from_secs(3),
        "the stream ended after {ended:?}"
    );
    assert!(exited < Duration::from_secs(4), "exited after {exited:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verify_draw_against_nothing_is_one_clear_line_and_a_failure() {
    let port = ports::free_port();
    // Nothing listens there once the listener is dropped.
    let output = boxoffice(&["verify-draw", "--url", &format!("http://127.0.0.1:{port}")]);
    assert_clear_failure(&output, "cannot fetch");
    let output = boxoffice(&["verify-draw", "--url", "http://127.0.0.1:1", "--token", "0"]);
    assert_clear_failure(&output, "TOKEN-ID");
}
