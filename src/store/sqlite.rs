//! The embedded SQLite backend: one database file, a pool of read-only connections for loads,
//! and exactly one writer connection through which every write transaction goes.
//!
//! SQLite admits one writer at a time. Rather than let several connections race for the write
//! lock (and wait out busy timeouts), writes queue for the single writer connection of their
//! own pool, and each one takes the lock up front with `BEGIN IMMEDIATE`, so a transaction
//! never fails half-way because another writer got there first. There is no `UNNEST`: each
//! table's rows in a batch are bound as one JSON array and read back with `json_each`, one
//! statement per table rather than per row (`sqlite_writes.rs`).

use super::reads;
use super::rows::{self, PlanColumns};
use super::sqlite_writes;
use super::{
    CatalogSnapshot, CreatedConcert, CreatedSchedule, IdempotencyRecord, LedgerEntry, MaxIds,
    NewConcert, ScheduleSnapshot, StoreError, StoredReservation, Writes,
};
use crate::domain::queue::{OpeningRecord, TokenRecord};
use crate::domain::schedule::ScheduleInfo;
use crate::domain::PaymentId;
use crate::domain::{ConcertId, Money, ReservationId, ScheduleId, Timestamp, TokenId, UserId};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// How long a reader waits for a pooled connection before the store reports unavailable, as
/// in the PostgreSQL store: a prompt "unavailable" answer rather than a hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long SQLite waits on a lock held by another process (or a WAL checkpoint) before it
/// gives up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write waits for its turn at the writer. Writes are short in-process
/// transactions, so a queue this long means the writer is stuck, not busy.
const WRITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections: boot loads and the admin routes. Each SQLite connection has its own
/// worker thread, so a handful is plenty.
const MAX_READERS: u32 = 4;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Read-only connections: a write on one of them is an error, not a second writer.
    readers: SqlitePool,
    /// The one connection every write transaction goes through.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file named by a `sqlite:` url:
    /// `sqlite://boxoffice.db`, `sqlite:boxoffice.db`, `sqlite://./dir/file.db` or
    /// `sqlite:///abs/path.db`.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL: readers never block the writer nor the writer the readers.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the service acknowledges a request only after its commit, so a committed
            // transaction must survive a power loss (NORMAL may lose the last ones in WAL mode).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The writer connects first: it creates the file and switches it to WAL, which the
        // read-only connections could not do.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(WRITE_ACQUIRE_TIMEOUT)
            // One long-lived connection keeps its prepared statements.
            .idle_timeout(None)
            .max_lifetime(None)
            // A writer connection must come back outside any transaction, or the next
            // `BEGIN IMMEDIATE` on it would fail. The ping goes through the connection's command
            // queue, so a rollback queued by a dropped transaction has run when it returns. A
            // connection still in a transaction after that (SQLite can end one on its own after
            // some errors, which leaves sqlx's bookkeeping behind) is closed and replaced.
            .after_release(|conn, _| {
                Box::pin(async move {
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(options.clone())
            .await?;
        // Reads succeed on a read-only or locked file (WAL lets readers through), so the
        // service would start and then refuse every write. Take the write lock once now: a
        // read-only file or another process holding the lock fails here, at startup.
        if let Err(e) = probe_write(&writer).await {
            writer.close().await;
            return Err(e);
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.read_only(true))
            .await;
        let readers = match readers {
            Ok(readers) => readers,
            Err(e) => {
                writer.close().await;
                return Err(e.into());
            }
        };
        Ok(SqliteStore { readers, writer })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        // On the writer: migrations are writes like any other and must not race one.
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    pub async fn commit(&self, batch: &Writes) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let written = sqlite_writes::write_batch(&mut tx, batch).await;
        finish(tx, written).await
    }

    pub async fn load_catalog(&self) -> Result<CatalogSnapshot, StoreError> {
        // One read transaction: the three queries see one snapshot of the file.
        let mut tx = self.readers.begin().await?;
        let catalog = reads::load_catalog(&mut *tx).await?;
        tx.commit().await?;
        Ok(catalog)
    }

    pub async fn load_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<ScheduleSnapshot, StoreError> {
        // One read transaction: reservations and their holds from the same snapshot.
        let mut tx = self.readers.begin().await?;
        let snapshot = reads::load_schedule(&mut *tx, schedule).await?;
        tx.commit().await?;
        Ok(snapshot)
    }

    pub async fn load_wallet(&self, user: UserId) -> Result<Option<Money>, StoreError> {
        reads::load_wallet(&mut *self.readers.acquire().await?, user).await
    }

    pub async fn load_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        reads::load_token(&mut *self.readers.acquire().await?, id).await
    }

    pub async fn load_tokens(
        &self,
        each: &mut (dyn FnMut(TokenRecord) + Send),
    ) -> Result<(), StoreError> {
        reads::load_tokens(&mut *self.readers.acquire().await?, each).await
    }

    pub async fn load_superseded_tokens(
        &self,
        window: u64,
        each: &mut (dyn FnMut(TokenRecord, u64) + Send),
    ) -> Result<(), StoreError> {
        reads::load_superseded_tokens(&mut *self.readers.acquire().await?, window, each).await
    }

    pub async fn load_waitlist(
        &self,
        schedule: ScheduleId,
    ) -> Result<super::WaitlistSnapshot, StoreError> {
        super::waitlist::load_waitlist(&mut *self.readers.acquire().await?, schedule).await
    }

    pub async fn paid_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Vec<super::PaidReservation>, StoreError> {
        super::waitlist::paid_of_schedule(&mut *self.readers.acquire().await?, schedule).await
    }

    pub async fn audit(&self, schedule: ScheduleId) -> Result<super::AuditCounts, StoreError> {
        super::audit::audit(&mut *self.readers.acquire().await?, schedule).await
    }

    pub async fn load_opening(&self) -> Result<Option<OpeningRecord>, StoreError> {
        reads::load_opening(&mut *self.readers.acquire().await?).await
    }

    pub async fn load_tokens_at(&self, first: u64, count: u64) -> Result<Vec<TokenId>, StoreError> {
        reads::load_tokens_at(&mut *self.readers.acquire().await?, first, count).await
    }

    pub async fn max_ids(&self) -> Result<MaxIds, StoreError> {
        reads::max_ids(&mut *self.readers.acquire().await?).await
    }

    pub async fn tickets_of_holder(
        &self,
        holder: UserId,
    ) -> Result<Vec<super::StoredTicket>, StoreError> {
        super::tickets::of_holder(&mut *self.readers.acquire().await?, holder).await
    }

    pub async fn load_ticket(
        &self,
        id: crate::domain::TicketId,
    ) -> Result<Option<super::StoredTicket>, StoreError> {
        super::tickets::one(&mut *self.readers.acquire().await?, id).await
    }

    pub async fn ticket_signing_key(
        &self,
        candidate: &str,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        super::tickets::signing_key_sqlite(&self.writer, candidate, now).await
    }

    pub async fn payment_of(&self, id: ReservationId) -> Result<Option<PaymentId>, StoreError> {
        let mut conn = self.readers.acquire().await?;
        reads::payment_of(&mut *conn, id).await
    }

    pub async fn load_reservation(
        &self,
        id: ReservationId,
    ) -> Result<Option<StoredReservation>, StoreError> {
        // One read transaction: the reservation and its seats from the same snapshot.
        let mut tx = self.readers.begin().await?;
        let stored = reads::load_reservation(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(stored)
    }

    pub async fn ledger_page(
        &self,
        user: UserId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        reads::ledger_page(&mut *self.readers.acquire().await?, user, limit, before).await
    }

    pub async fn load_idempotency(
        &self,
        keep_since: Timestamp,
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let pruned = reads::prune_idempotency(&mut *tx, keep_since).await;
        finish(tx, pruned).await?;
        reads::load_idempotency(&mut *self.readers.acquire().await?).await
    }

    pub async fn create_user(
        &self,
        name: &str,
        balance: Money,
        now: Timestamp,
    ) -> Result<UserId, StoreError> {
        let mut tx = self.begin_write().await?;
        let created = insert_user(&mut tx, name, balance, now).await;
        finish(tx, created).await
    }

    pub async fn create_concert(&self, concert: &NewConcert) -> Result<CreatedConcert, StoreError> {
        let mut tx = self.begin_write().await?;
        let created = insert_concert(&mut tx, concert).await;
        finish(tx, created).await
    }

    /// A write transaction on the writer that holds SQLite's write lock from its first
    /// statement: with a plain (deferred) `BEGIN` the lock would be taken at the first write,
    /// where failing to get it can no longer be retried by waiting.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Commits `tx` if `result` is a success, rolls it back otherwise: a failed statement never
/// leaves the earlier ones of its transaction behind.
async fn finish<T>(
    tx: Transaction<'static, Sqlite>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            // A failed COMMIT drops `tx`, which rolls back.
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            // The first error is the one worth reporting; a failed rollback (SQLite may already
            // have ended the transaction itself) only costs the connection, which the writer
            // pool then replaces (see `after_release`).
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "rollback of a failed sqlite write failed");
            }
            Err(error)
        }
    }
}

async fn insert_user(
    conn: &mut SqliteConnection,
    name: &str,
    balance: Money,
    now: Timestamp,
) -> Result<UserId, StoreError> {
    let user: i64 =
        sqlx::query("INSERT INTO users (name, created_at_ms) VALUES (?1, ?2) RETURNING id")
            .bind(name)
            .bind(now.millis())
            .fetch_one(&mut *conn)
            .await?
            .try_get("id")?;
    sqlx::query("INSERT INTO wallets (user_id, balance, updated_at_ms) VALUES (?1, ?2, ?3)")
        .bind(user)
        .bind(balance.won())
        .bind(now.millis())
        .execute(&mut *conn)
        .await?;
    rows::id(user, UserId::new)
}

async fn insert_concert(
    conn: &mut SqliteConnection,
    concert: &NewConcert,
) -> Result<CreatedConcert, StoreError> {
    let concert_id: i64 = sqlx::query("INSERT INTO concerts (name) VALUES (?1) RETURNING id")
        .bind(&concert.name)
        .fetch_one(&mut *conn)
        .await?
        .try_get("id")?;
    let concert_id = rows::id(concert_id, ConcertId::new)?;
    let mut schedules = Vec::with_capacity(concert.schedules.len());
    for s in &concert.schedules {
        let schedule_id: i64 = sqlx::query(
            "INSERT INTO schedules (concert_id, concert_at_ms, reservation_at_ms)
             VALUES (?1, ?2, ?3) RETURNING id",
        )
        .bind(concert_id.get())
        .bind(s.concert_at.millis())
        .bind(s.reservation_at.millis())
        .fetch_one(&mut *conn)
        .await?
        .try_get("id")?;
        // One row at a time, so the ids come back in the order the seats were given.
        let mut seats = Vec::with_capacity(s.seats.len());
        for (i, (number, price)) in s.seats.iter().enumerate() {
            let plan = PlanColumns::of(s.plan.get(i));
            let row = sqlx::query(
                "INSERT INTO seats (schedule_id, seat_number, price, grade, seat_row, plan_x, plan_y)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 RETURNING id, seat_number, price",
            )
            .bind(schedule_id)
            .bind(number)
            .bind(price.won())
            .bind(plan.grade)
            .bind(plan.row)
            .bind(plan.x)
            .bind(plan.y)
            .fetch_one(&mut *conn)
            .await?;
            seats.push(rows::seat(&row)?);
        }
        let info = ScheduleInfo {
            id: rows::id(schedule_id, ScheduleId::new)?,
            concert_id,
            concert_name: concert.name.clone(),
            concert_at: s.concert_at,
            reservation_at: s.reservation_at,
        };
        schedules.push(CreatedSchedule {
            info,
            seats,
            plan: s.plan.clone(),
        });
    }
    Ok(CreatedConcert {
        id: concert_id,
        schedules,
    })
}

/// Takes and releases the write lock: fails if the file is read-only or another process
/// holds the lock past the busy timeout.
async fn probe_write(writer: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = writer.acquire().await?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    // A real write (rolled back): BEGIN IMMEDIATE alone succeeds on a read-only connection.
    let wrote = sqlx::query("CREATE TABLE boxoffice_write_probe (x INTEGER)")
        .execute(&mut *conn)
        .await;
    sqlx::query("ROLLBACK").execute(&mut *conn).await?;
    wrote?;
    Ok(())
}

/// SQLite's own mechanics: pragmas, pools and url forms. What every backend promises is in
/// the store contract (`store/contract.rs`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_databases::TempSqlite;
    use crate::store::Store;

    async fn open(db: &TempSqlite) -> SqliteStore {
        let store = SqliteStore::connect(&db.url())
            .await
            .expect("open the temp database");
        store.migrate().await.expect("migrate the temp database");
        store
    }

    #[tokio::test]
    async fn migrate_is_idempotent() {
        let db = TempSqlite::new("migrate");
        let store = open(&db).await;
        store.migrate().await.expect("a second migrate is a no-op");
        store.ping().await.expect("ping");
        // The durability settings hold on both pools.
        for pool in [&store.readers, &store.writer] {
            let pragma = |name: &'static str| async move {
                sqlx::query(name)
                    .fetch_one(pool)
                    .await
                    .expect("pragmas answer")
            };
            let journal: String = pragma("PRAGMA journal_mode")
                .await
                .try_get(0)
                .expect("a mode name");
            assert_eq!(journal, "wal");
            let synchronous: i64 = pragma("PRAGMA synchronous")
                .await
                .try_get(0)
                .expect("a level");
            assert_eq!(synchronous, 2, "FULL");
            let foreign_keys: i64 = pragma("PRAGMA foreign_keys")
                .await
                .try_get(0)
                .expect("a flag");
            assert_eq!(foreign_keys, 1);
        }
        // The readers cannot write: every write goes through the writer.
        let refused = sqlx::query("INSERT INTO concerts (name) VALUES ('x')")
            .execute(&store.readers)
            .await;
        assert!(refused.is_err());
        store.close().await;
        // And across reopenings of the file.
        let store = open(&db).await;
        store.close().await;
    }

    #[tokio::test]
    async fn every_sqlite_url_form_reaches_the_store() {
        let db = TempSqlite::new("urls");
        for url in [db.url(), format!("sqlite:{}", db.path.display())] {
            let store = Store::connect(&url)
                .await
                .expect("a sqlite url opens the sqlite store");
            assert!(matches!(store, Store::Sqlite(_)));
            store.migrate().await.expect("migrate");
            store.close().await;
        }
        for (url, file) in [
            ("sqlite://boxoffice.db", "boxoffice.db"),
            ("sqlite:boxoffice.db", "boxoffice.db"),
            ("sqlite://./some/dir/file.db", "./some/dir/file.db"),
            ("sqlite:///abs/path.db", "/abs/path.db"),
        ] {
            let options = SqliteConnectOptions::from_str(url).expect("the url parses");
            assert_eq!(options.get_filename(), std::path::Path::new(file), "{url}");
        }
    }
}
