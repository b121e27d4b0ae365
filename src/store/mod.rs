//! Every SQL statement of the service, behind one narrow interface: [`Store`].
//!
//! The interface is what the actors need and nothing more: load a snapshot of one owner's
//! state, commit a batch of row writes in one transaction, and the few catalog operations of
//! the admin routes. Nothing above this module sees SQL.
//!
//! - `records.rs`, `writes.rs`: the rows as the service sees them, and a batch of row writes;
//! - `reads.rs`: every read, written once for both SQL backends, `dialect.rs` what differs
//!   between them, `rows.rs` columns ↔ domain values;
//! - `postgres.rs` + `postgres_writes.rs`, `sqlite.rs` + `sqlite_writes.rs`: each SQL backend's
//!   connections, catalog writes, and batch statements; `memory/`: the in-memory backend;
//! - `fence.rs` and `cluster.rs` (cluster mode): the claims a batch commits under, and the
//!   membership and lease tables; `redact.rs`: database urls without their secrets.
//!
//! For the persister's pipeline (`actors/persister/pipeline.rs`) a batch can also be **staged**: its
//! statements sent in a transaction left open ([`Store::stage`]), committed or rolled back later
//! ([`Staged`]). PostgreSQL stages for real, on a pooled connection of its own, so one batch's
//! statements run while the batch ahead of it commits; which batches may be staged behind an
//! uncommitted one is the backend's rule ([`Store::may_stage_behind`], argued in
//! `postgres_writes.rs`). SQLite has one writer and the memory store one lock: for them staging
//! only defers the commit, and they never pipeline.

mod audit;
mod cluster;
#[cfg(test)]
mod contract;
mod dialect;
mod fence;
mod memory;
mod postgres;
mod postgres_parts;
mod postgres_writes;
mod reads;
mod records;
mod redact;
mod rows;
mod sqlite;
mod sqlite_writes;
mod statement;
#[cfg(test)]
pub(crate) mod temp_databases;
mod tickets;
mod waitlist;
mod writes;

pub use audit::AuditCounts;
pub use cluster::{ClusterStore, Lease, Member, SHARD_CHANNEL};
pub use fence::Fence;
pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use records::{
    CatalogSnapshot, IdempotencyRecord, LedgerEntry, LedgerKind, MaxIds, PaymentRecord,
    ScheduleSnapshot, StoredReservation, StoredTicket, WalletRecord,
};
pub use redact::redact;
pub use sqlite::SqliteStore;
pub use waitlist::{PaidReservation, WaitlistSnapshot};
pub use writes::{BatchMarker, OpeningWrite, Writes};

use crate::domain::queue::{OpeningRecord, TokenRecord};
use crate::domain::PaymentId;
use crate::domain::{Money, ReservationId, ScheduleId, Timestamp, TokenId, UserId};
use std::future::Future;
use std::sync::Arc;

/// A store operation that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the stored data breaks an invariant: {0}")]
    Corrupt(String),
    #[error("unsupported database url (expected postgres://… or sqlite://FILE): {0}")]
    UnsupportedUrl(String),
    /// Cluster mode was asked of a store that is not PostgreSQL.
    #[error("cluster mode needs PostgreSQL (postgres://…), not {0}")]
    ClusterNeedsPostgres(String),
    #[error("the store's runtime is gone")]
    RuntimeGone,
    /// A new schedule lists one seat number twice (the database's unique key refused it).
    #[error("a seat number appears twice in one schedule")]
    DuplicateSeatNumber,
    /// A commit the memory store refused on purpose ([`MemoryStore::fail_next_commits`]), as a
    /// database that is down would: for tests of what the service does then.
    #[error("commit failed on purpose (MemoryStore::fail_next_commits)")]
    InjectedFailure,
    /// A fenced commit found that this node no longer holds these shards at these epochs
    /// ([`Store::commit_fenced`]): nothing of the batch was written.
    #[error("stale ownership: {0:?}")]
    Fenced(Vec<Fence>),
}

impl StoreError {
    /// Whether the database refused the batch for what is in it (a constraint or a value it
    /// will refuse again), rather than failing to answer: the batch minus the offending
    /// submission can still commit. Only these are worth isolating; a lost connection or a
    /// timeout is ambiguous and takes the whole failure protocol.
    pub fn is_refusal_of_content(&self) -> bool {
        match self {
            // The memory store's constraint checks, and PostgreSQL's "every wallet written
            // exists" check (`postgres_writes.rs`).
            StoreError::Corrupt(_) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                // SQLSTATE class 23 is an integrity constraint, class 22 a data exception;
                // SQLite reports its constraint kinds through `kind()`.
                let code = db.code();
                let class = code.as_deref().map(|c| c.get(..2).unwrap_or(""));
                matches!(class, Some("22" | "23"))
                    || !matches!(db.kind(), sqlx::error::ErrorKind::Other)
            }
            _ => false,
        }
    }
}

pub use crate::domain::catalog::{CreatedConcert, CreatedSchedule, NewConcert, NewSchedule};

/// The one interface above SQL. Each backend is a variant; callers never match on it.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
    Memory(MemoryStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Postgres($store) => $call,
            Store::Sqlite($store) => $call,
            Store::Memory($store) => $call,
        }
    };
}

impl Store {
    /// Connects to the database named by `url`: `postgres://…`, `sqlite://FILE`, or
    /// `memory://NAME`, an in-memory store for benchmarks and tests that is not durable
    /// (nothing survives the process; see [`MemoryStore`]).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(url).await?))
        } else if url.starts_with("sqlite:") {
            // sqlite://FILE, sqlite:FILE, sqlite://./dir/FILE or sqlite:///abs/FILE.
            Ok(Store::Sqlite(SqliteStore::connect(url).await?))
        } else if url.starts_with("memory:") {
            Ok(Store::Memory(MemoryStore::connect(url).await?))
        } else {
            Err(StoreError::UnsupportedUrl(redact(url)))
        }
    }

    /// Connects for cluster mode: PostgreSQL only, its sessions ended by the database when
    /// they sit idle inside a transaction longer than `idle_in_transaction` (see
    /// [`PgStore::connect_with`]). Any other url is refused.
    pub async fn connect_cluster(
        url: &str,
        idle_in_transaction: std::time::Duration,
    ) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                PgStore::connect_with(url, Some(idle_in_transaction)).await?,
            ))
        } else {
            Err(StoreError::ClusterNeedsPostgres(redact(url)))
        }
    }

    /// Cluster membership and leases; PostgreSQL only.
    pub fn cluster(&self) -> Option<ClusterStore> {
        match self {
            Store::Postgres(pg) => Some(pg.cluster()),
            _ => None,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.migrate().await)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Writes a whole batch in one transaction: all of it or none of it.
    pub async fn commit(&self, batch: &Writes) -> Result<(), StoreError> {
        dispatch!(self, s => s.commit(batch).await)
    }

    /// Writes a whole batch in one transaction only if `node` still holds every shard of
    /// `fences` at its epoch, checked in that same transaction (the row lock taken on each
    /// lease keeps a takeover from committing in between), and records one audit row per
    /// fence. Otherwise nothing is written and the error is [`StoreError::Fenced`] with the
    /// claims that no longer hold. PostgreSQL and the memory store; SQLite has no cluster mode.
    pub async fn commit_fenced(
        &self,
        batch: &Writes,
        node: &str,
        fences: &[Fence],
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pg) => pg.commit_fenced(batch, node, fences).await,
            Store::Memory(memory) => memory.commit_fenced(batch, node, fences).await,
            Store::Sqlite(_) => Err(StoreError::ClusterNeedsPostgres("sqlite".into())),
        }
    }

    /// Sends a batch's statements in a transaction that stays open until [`Staged::commit`] or
    /// [`Staged::rollback`]; nothing of it is visible or durable before the commit. On an error
    /// the transaction is already rolled back. Backends that do not pipeline only defer.
    pub async fn stage(&self, batch: Arc<Writes>) -> Result<Staged, StoreError> {
        match self {
            Store::Postgres(pg) if !batch.is_empty() => Ok(Staged {
                inner: StagedInner::Postgres(pg.stage(&batch).await?),
            }),
            Store::Memory(memory) => Ok(Staged {
                inner: memory.stage(batch),
            }),
            _ => Ok(Staged {
                inner: StagedInner::Deferred {
                    store: self.clone(),
                    batch,
                },
            }),
        }
    }

    /// Whether a batch is worth staging while another is in flight: only PostgreSQL (and a
    /// memory store told to, for the persister's tests) runs two writers at once.
    pub fn pipelines(&self) -> bool {
        match self {
            Store::Postgres(_) => true,
            Store::Sqlite(_) => false,
            Store::Memory(memory) => memory.pipelines(),
        }
    }

    /// Whether `next` may be staged while `ahead` has sent all its statements and not yet
    /// committed (its COMMIT in flight), to be committed after it or rolled back if it fails.
    /// The backend's own rule: on PostgreSQL a batch that moves money, or that updates a row
    /// `ahead` inserts, waits (`postgres_writes.rs` says why every other batch is safe).
    pub fn may_stage_behind(&self, next: &Writes, ahead: &Writes) -> bool {
        match self {
            Store::Postgres(_) => postgres_writes::may_stage_behind(next, ahead),
            Store::Sqlite(_) => false,
            Store::Memory(memory) => memory.pipelines(),
        }
    }

    /// Whether the batch that wrote `marker` committed, asked when its commit's outcome is
    /// unknown (its connection was lost during `COMMIT`); waits for that batch's transaction
    /// if the database still runs it. Only PostgreSQL writes markers and has such outcomes: a
    /// failed commit of the in-process stores did not happen.
    pub async fn batch_committed(&self, marker: BatchMarker) -> Result<bool, StoreError> {
        match self {
            Store::Postgres(pg) => pg.batch_committed(marker).await,
            Store::Sqlite(_) | Store::Memory(_) => Ok(false),
        }
    }

    /// Whether this store writes batch markers (see [`Writes::marker`]).
    pub fn writes_markers(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub async fn load_catalog(&self) -> Result<CatalogSnapshot, StoreError> {
        dispatch!(self, s => s.load_catalog().await)
    }

    pub async fn load_schedule(&self, id: ScheduleId) -> Result<ScheduleSnapshot, StoreError> {
        dispatch!(self, s => s.load_schedule(id).await)
    }

    /// A schedule's waiting list in join order, and whether the performance is cancelled.
    pub async fn load_waitlist(&self, id: ScheduleId) -> Result<WaitlistSnapshot, StoreError> {
        dispatch!(self, s => s.load_waitlist(id).await)
    }

    /// The schedule's paid reservations and their payments, by id.
    pub async fn paid_of_schedule(
        &self,
        id: ScheduleId,
    ) -> Result<Vec<PaidReservation>, StoreError> {
        dispatch!(self, s => s.paid_of_schedule(id).await)
    }

    /// The schedule's invariants, counted from what is stored (API.md §12).
    pub async fn audit(&self, id: ScheduleId) -> Result<AuditCounts, StoreError> {
        dispatch!(self, s => s.audit(id).await)
    }

    /// `None` when the user has no wallet (does not exist).
    pub async fn load_wallet(&self, user: UserId) -> Result<Option<Money>, StoreError> {
        dispatch!(self, s => s.load_wallet(user).await)
    }

    /// Every user's latest token (live ones included), streamed to `each` in ascending
    /// position order: the caller builds what it needs without every row alive at once.
    /// One token by id, whatever its state (cluster mode: a node that does not hold the queue
    /// reads what the queue's owner committed).
    pub async fn load_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        dispatch!(self, s => s.load_token(id).await)
    }

    pub async fn load_tokens(
        &self,
        each: &mut (dyn FnMut(TokenRecord) + Send),
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.load_tokens(each).await)
    }

    /// The tokens users replaced by a join among the last `window` positions (see
    /// [`crate::domain::queue::SUPERSEDED_WINDOW`]), each with the position of the token that
    /// replaced it, streamed to `each` in ascending order of that position.
    pub async fn load_superseded_tokens(
        &self,
        window: u64,
        each: &mut (dyn FnMut(TokenRecord, u64) + Send),
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.load_superseded_tokens(window, each).await)
    }

    /// The fair opening's row, if one is scheduled or drawn.
    pub async fn load_opening(&self) -> Result<Option<OpeningRecord>, StoreError> {
        dispatch!(self, s => s.load_opening().await)
    }

    /// The ids of the tokens at positions `first .. first + count`, in position order (the
    /// drawn pre-queue, after the draw moved it there).
    pub async fn load_tokens_at(&self, first: u64, count: u64) -> Result<Vec<TokenId>, StoreError> {
        dispatch!(self, s => s.load_tokens_at(first, count).await)
    }

    pub async fn max_ids(&self) -> Result<MaxIds, StoreError> {
        dispatch!(self, s => s.max_ids().await)
    }

    /// The payment of a paid reservation, if it has one (a refund's ledger row names it).
    pub async fn payment_of(&self, id: ReservationId) -> Result<Option<PaymentId>, StoreError> {
        dispatch!(self, s => s.payment_of(id).await)
    }

    /// One reservation with its seats, or `None` if there is no such reservation.
    pub async fn load_reservation(
        &self,
        id: ReservationId,
    ) -> Result<Option<StoredReservation>, StoreError> {
        dispatch!(self, s => s.load_reservation(id).await)
    }

    /// A page of a user's ledger, newest first, below the id `before` when given.
    /// A holder's tickets, every schedule's (API.md §12).
    pub async fn tickets_of_holder(&self, holder: UserId) -> Result<Vec<StoredTicket>, StoreError> {
        dispatch!(self, s => s.tickets_of_holder(holder).await)
    }

    /// One ticket, with its seat.
    pub async fn load_ticket(
        &self,
        id: crate::domain::TicketId,
    ) -> Result<Option<StoredTicket>, StoreError> {
        dispatch!(self, s => s.load_ticket(id).await)
    }

    /// The stored ticket signing key's seed (hex); `candidate` becomes it if there is none.
    pub async fn ticket_signing_key(
        &self,
        candidate: &str,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        dispatch!(self, s => s.ticket_signing_key(candidate, now).await)
    }

    pub async fn ledger_page(
        &self,
        user: UserId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        dispatch!(self, s => s.ledger_page(user, limit, before).await)
    }

    /// Forgets idempotency keys older than `keep_since` and loads the rest.
    pub async fn load_idempotency(
        &self,
        keep_since: Timestamp,
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        dispatch!(self, s => s.load_idempotency(keep_since).await)
    }

    /// Creates a user and an empty (or funded) wallet.
    pub async fn create_user(
        &self,
        name: &str,
        balance: Money,
        now: Timestamp,
    ) -> Result<UserId, StoreError> {
        dispatch!(self, s => s.create_user(name, balance, now).await)
    }

    pub async fn create_concert(&self, concert: &NewConcert) -> Result<CreatedConcert, StoreError> {
        dispatch!(self, s => s.create_concert(concert).await).map_err(|e| match e {
            StoreError::Database(error)
                if error
                    .as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                StoreError::DuplicateSeatNumber
            }
            other => other,
        })
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }
}

/// A batch whose statements were sent ([`Store::stage`]) and that is neither committed nor
/// rolled back yet. Dropping it unfinished rolls it back (the database never sees a COMMIT).
#[must_use = "a staged batch is committed or rolled back"]
pub struct Staged {
    inner: StagedInner,
}

enum StagedInner {
    /// The open transaction, its statements done, row locks and index entries held.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// Nothing sent yet (SQLite, memory, or an empty batch): the commit writes the batch.
    Deferred { store: Store, batch: Arc<Writes> },
}

impl Staged {
    /// Commits: returns once the batch is durable (or with why it is not).
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            StagedInner::Postgres(tx) => Ok(tx.commit().await?),
            // An empty batch has nothing to write; not even a memory store failing on request
            // has anything to refuse (the persister never committed empty batches before).
            StagedInner::Deferred { batch, .. } if batch.is_empty() => Ok(()),
            StagedInner::Deferred { store, batch } => store.commit(&batch).await,
        }
    }

    /// Rolls back: none of the batch's rows is ever visible.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            StagedInner::Postgres(tx) => Ok(tx.rollback().await?),
            StagedInner::Deferred { store, .. } => {
                if let Store::Memory(memory) = store {
                    memory.note_rollback();
                }
                Ok(())
            }
        }
    }
}

/// Runs store operations on the store's own runtime, so every connection lives on one
/// runtime whatever arbiter or worker thread asks. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<Store>,
    runtime: tokio::runtime::Handle,
}

impl StoreHandle {
    pub fn new(store: Store, runtime: tokio::runtime::Handle) -> StoreHandle {
        StoreHandle {
            store: Arc::new(store),
            runtime,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Runs `op` on the store's runtime and waits for it from any runtime.
    pub fn run<T, F, Fut>(
        &self,
        op: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(Arc<Store>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let handle = self.runtime.spawn(op(self.store.clone()));
        async move { handle.await.map_err(|_| StoreError::RuntimeGone)? }
    }
}
