//! Throwaway databases for the store's tests: a SQLite file under the temp dir and a PostgreSQL
//! database of its own, each removed when its guard is dropped, so tests never share rows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Tells apart names made in the same nanosecond by parallel tests.
static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

/// A name no other test of any process uses: process id, clock and a counter.
fn unique_name(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!(
        "boxoffice_{label}_{}_{nanos}_{}",
        std::process::id(),
        NEXT_NAME.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database file of its own under the temp dir, removed (with its WAL files) on drop.
pub struct TempSqlite {
    pub path: PathBuf,
}

impl TempSqlite {
    pub fn new(label: &str) -> TempSqlite {
        let name = format!("{}.db", unique_name(&format!("sqlite_{label}")));
        TempSqlite {
            path: std::env::temp_dir().join(name),
        }
    }

    /// `sqlite:///abs/path.db`: the temp dir is absolute.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            // Missing files are fine: the WAL files go away on a clean close.
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The PostgreSQL server the tests use (trust auth); `BOXOFFICE_TEST_POSTGRES` overrides it,
/// as it does for the integration tests.
fn postgres_server() -> String {
    std::env::var("BOXOFFICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A PostgreSQL database created for one test and dropped (connections and all) after it.
pub struct TempPostgres {
    server: String,
    name: String,
}

impl TempPostgres {
    /// No label in the name: PostgreSQL cuts names at 63 bytes, which could cut off the part
    /// that makes it unique.
    pub async fn create() -> TempPostgres {
        let server = postgres_server();
        let name = unique_name("store_test");
        let admin = sqlx::PgPool::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {server} ({e}); start it or point \
                     BOXOFFICE_TEST_POSTGRES at one"
                )
            });
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("create the test database {name}: {e}"));
        admin.close().await;
        TempPostgres { server, name }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let admin = format!("{}/postgres", self.server);
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop may run inside the test's runtime, which cannot be blocked on from within:
        // a thread with a runtime of its own does the async work. A failure leaves one stray
        // database behind, not a wrong result, so it is not worth a panic in a destructor.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                let _ = sqlx::query(&drop).execute(&pool).await;
                pool.close().await;
                Some(())
            })
        })
        .join();
    }
}
