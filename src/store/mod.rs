//! Every SQL statement of the service, behind one narrow interface: [`Store`].
//!
//! The interface is what the actors need and nothing more: load a snapshot of one owner's
//! state, commit a batch of row writes in one transaction, and the few catalog operations of
//! the admin routes. Each backend is one module; nothing above this module sees SQL.
//!
//! For the persister's pipeline (`actors/persister.rs`) a batch can also be **staged**: its
//! statements sent in a transaction left open ([`Store::stage`]), committed or rolled back later
//! ([`Staged`]). PostgreSQL stages for real, on a pooled connection of its own, so one batch's
//! statements run while the batch ahead of it commits; which batches may be staged behind an
//! uncommitted one is the backend's rule ([`Store::may_stage_behind`], argued in
//! `postgres_writes.rs`). SQLite has one writer and the memory store one lock: for them staging
//! only defers the commit, and they never pipeline.

mod cluster;
#[cfg(test)]
mod contract;
mod dialect;
mod memory;
mod postgres;
mod postgres_writes;
mod reads;
mod rows;
mod sqlite;
#[cfg(test)]
pub(crate) mod temp_databases;

pub use cluster::{ClusterStore, Lease, Member, SHARD_CHANNEL};
pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::queue::{TokenRecord, TokenState};
use crate::domain::schedule::{Reservation, ScheduleInfo, Seat};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::{
    ConcertId, Money, PaymentId, ReservationId, ScheduleId, Timestamp, TokenId, UserId,
};
use std::collections::BTreeMap;
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

/// An ownership claim a batch's writes were decided under: `shard` held at `epoch` (cluster
/// mode). A fenced commit writes only if every claim still holds, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence {
    pub shard: String,
    pub epoch: u64,
    /// Who holds it: `None` for the committing node itself; another node's id for a claim on
    /// a shard that node decided for (a payment commits its schedule's side at the wallet's
    /// owner, under the schedule owner's epoch).
    pub owner: Option<String>,
}

impl Fence {
    /// A claim on a shard the committing node holds itself.
    pub fn own(shard: impl Into<String>, epoch: u64) -> Fence {
        Fence {
            shard: shard.into(),
            epoch,
            owner: None,
        }
    }

    /// The node this claim says holds the shard, `node` being the committing one.
    pub fn owner_or<'a>(&'a self, node: &'a str) -> &'a str {
        self.owner.as_deref().unwrap_or(node)
    }
}

/// What a ledger row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    Recharge,
    Payment,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Recharge => "RECHARGE",
            LedgerKind::Payment => "PAYMENT",
        }
    }
}

/// One change of one balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub user: UserId,
    pub kind: LedgerKind,
    pub amount: Money,
    pub balance_after: Money,
    pub payment: Option<PaymentId>,
    pub at: Timestamp,
}

/// A completed payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: PaymentId,
    pub reservation: ReservationId,
    pub user: UserId,
    pub amount: Money,
    pub at: Timestamp,
}

/// The first successful answer to an idempotent request, kept with its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user: UserId,
    pub key: String,
    /// The request it answered: the hex SHA-256 digest of its method, path and canonical body
    /// (rows written before digests hold that text itself; the service hashes them on load).
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    pub at: Timestamp,
}

/// A wallet's balance as of `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletRecord {
    pub user: UserId,
    pub balance: Money,
    pub at: Timestamp,
}

/// Row writes of one decision (or, merged, of a whole batch). Rows with an id are full final
/// states: writing the last one wins, so merging coalesces by id and order never matters
/// between different rows.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    pub reservations: BTreeMap<ReservationId, Reservation>,
    pub tokens: BTreeMap<TokenId, TokenRecord>,
    /// When each token in `tokens` was admitted and until when, kept apart because coalescing
    /// an admission with a later expiry leaves only the EXPIRED state in `tokens`.
    pub admissions: BTreeMap<TokenId, (Timestamp, Timestamp)>,
    pub wallets: BTreeMap<UserId, WalletRecord>,
    pub payments: Vec<PaymentRecord>,
    pub ledger: Vec<LedgerEntry>,
    pub idempotency: Vec<IdempotencyRecord>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.reservations.is_empty()
            && self.tokens.is_empty()
            && self.wallets.is_empty()
            && self.payments.is_empty()
            && self.ledger.is_empty()
            && self.idempotency.is_empty()
    }

    pub fn reservation(mut self, r: &Reservation) -> Writes {
        self.reservations.insert(r.id, r.clone());
        self
    }

    pub fn token(mut self, t: TokenRecord) -> Writes {
        if let TokenState::Active {
            admitted_at,
            expires_at,
        } = t.state
        {
            self.admissions.insert(t.id, (admitted_at, expires_at));
        }
        self.tokens.insert(t.id, t);
        self
    }

    pub fn wallet(mut self, w: WalletRecord) -> Writes {
        self.wallets.insert(w.user, w);
        self
    }

    pub fn payment(mut self, p: PaymentRecord) -> Writes {
        self.payments.push(p);
        self
    }

    pub fn ledger(mut self, l: LedgerEntry) -> Writes {
        self.ledger.push(l);
        self
    }

    /// Appends `later`: for the same row, `later` wins.
    pub fn merge(&mut self, later: Writes) {
        self.reservations.extend(later.reservations);
        self.tokens.extend(later.tokens);
        self.admissions.extend(later.admissions);
        self.wallets.extend(later.wallets);
        self.payments.extend(later.payments);
        self.ledger.extend(later.ledger);
        self.idempotency.extend(later.idempotency);
    }

    /// Whether any balance, payment or ledger row is written.
    pub fn moves_money(&self) -> bool {
        !(self.wallets.is_empty() && self.payments.is_empty() && self.ledger.is_empty())
    }

    /// Number of rows, for metrics and logs.
    pub fn len(&self) -> usize {
        self.reservations.len()
            + self.tokens.len()
            + self.wallets.len()
            + self.payments.len()
            + self.ledger.len()
            + self.idempotency.len()
    }
}

/// Users, concerts and schedules: loaded once at boot.
#[derive(Debug, Clone, Default)]
pub struct CatalogSnapshot {
    pub users: Vec<UserId>,
    pub concerts: Vec<(ConcertId, String)>,
    pub schedules: Vec<ScheduleInfo>,
}

/// One schedule's seats and reservations (every status).
#[derive(Debug, Clone, Default)]
pub struct ScheduleSnapshot {
    pub seats: Vec<Seat>,
    /// The seats' plan labels, in the order of `seats` (empty when no seat has any).
    pub plan: Vec<SeatPlan>,
    pub reservations: Vec<Reservation>,
}

/// One reservation as stored, with its seats (id, number, price) in the order they were asked
/// for: what a read of a settled reservation, gone from its actor's memory, answers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReservation {
    pub reservation: Reservation,
    pub seats: Vec<Seat>,
}

/// The highest ids in use, so the service allocates above them.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxIds {
    pub reservation: i64,
    pub payment: i64,
    pub ledger: i64,
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

    /// Whether `next` may be staged while the batch ahead of it has sent all its statements and
    /// not yet committed (its COMMIT in flight), to be committed after it or rolled back if it
    /// fails. The backend's own rule: on PostgreSQL a batch that moves money waits
    /// (`postgres_writes.rs` says why every other batch is safe).
    pub fn may_stage_behind(&self, next: &Writes) -> bool {
        match self {
            Store::Postgres(_) => postgres_writes::may_stage_behind(next),
            Store::Sqlite(_) => false,
            Store::Memory(memory) => memory.pipelines(),
        }
    }

    pub async fn load_catalog(&self) -> Result<CatalogSnapshot, StoreError> {
        dispatch!(self, s => s.load_catalog().await)
    }

    pub async fn load_schedule(&self, id: ScheduleId) -> Result<ScheduleSnapshot, StoreError> {
        dispatch!(self, s => s.load_schedule(id).await)
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

    pub async fn max_ids(&self) -> Result<MaxIds, StoreError> {
        dispatch!(self, s => s.max_ids().await)
    }

    /// One reservation with its seats, or `None` if there is no such reservation.
    pub async fn load_reservation(
        &self,
        id: ReservationId,
    ) -> Result<Option<StoredReservation>, StoreError> {
        dispatch!(self, s => s.load_reservation(id).await)
    }

    /// A page of a user's ledger, newest first, below the id `before` when given.
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

/// A database url without its secrets, for messages and logs: the password of the userinfo
/// (`postgres://user:***@host/db`) and of every query parameter named like one (`password`,
/// `sslpassword`, in any case or percent-encoding: `?password=***`, `&sslpassword=***`).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = redact_userinfo(base);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if names_a_password(key) => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

/// `scheme://user:password@host…` with the password replaced; the last `@` ends the userinfo,
/// so a password holding `@`, `:` or `/` is hidden whole.
fn redact_userinfo(base: &str) -> String {
    let Some(scheme) = base.find("://") else {
        return base.to_string();
    };
    let start = scheme + 3;
    match base[start..].rfind('@') {
        Some(at) => match base[start..start + at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..start], &base[start + at..]),
            None => base.to_string(),
        },
        None => base.to_string(),
    }
}

/// Whether a query key, percent-decoded as the driver reads it, names a password.
fn names_a_password(key: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(key).collect();
    decoded.to_ascii_lowercase().ends_with(b"password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_an_admission_with_its_expiry_keeps_the_admission() {
        let t = |ms| Timestamp::from_millis(ms);
        let token = TokenRecord {
            id: TokenId::new(7).unwrap(),
            user: UserId::new(1).unwrap(),
            position: 1,
            created_at: t(0),
            state: TokenState::Active {
                admitted_at: t(10),
                expires_at: t(20),
            },
        };
        let mut batch = Writes::default().token(token);
        batch.merge(Writes::default().token(TokenRecord {
            state: TokenState::Expired { at: t(20) },
            ..token
        }));
        assert_eq!(
            batch.tokens[&token.id].state,
            TokenState::Expired { at: t(20) }
        );
        assert_eq!(batch.admissions[&token.id], (t(10), t(20)));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://boxoffice.db"), "sqlite://boxoffice.db");
    }

    #[test]
    fn a_userinfo_password_is_hidden_whole() {
        assert_eq!(
            redact("postgres://u:s3:cr@t/x@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://:secret@h/db"), "postgres://:***@h/db");
    }

    #[test]
    fn a_password_in_the_query_is_redacted() {
        assert_eq!(
            redact("postgres://u@h/db?password=secret"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=secret&application_name=a"),
            "postgres://u@h/db?sslmode=require&password=***&application_name=a"
        );
        assert_eq!(
            redact("postgres://u:one@h/db?sslpassword=two&PassWord=three&pass%77ord=four"),
            "postgres://u:***@h/db?sslpassword=***&PassWord=***&pass%77ord=***"
        );
        assert_eq!(
            redact("postgres://u@h/db?password=a@b&x=1"),
            "postgres://u@h/db?password=***&x=1"
        );
        assert_eq!(
            redact("sqlite://f.db?mode=ro"),
            "sqlite://f.db?mode=ro",
            "other parameters stay"
        );
    }
}
