//! The PostgreSQL backend: loads, the catalog, and the group commit (its statements are in
//! `postgres_writes.rs`: batched inserts and updates with `UNNEST`, usually one statement per
//! batch).

use super::reads;
use super::rows::{self, PlanColumns};
use super::{
    CatalogSnapshot, CreatedConcert, CreatedSchedule, IdempotencyRecord, LedgerEntry, MaxIds,
    NewConcert, ScheduleSnapshot, StoreError, StoredReservation, Writes,
};
use crate::domain::queue::{OpeningRecord, TokenRecord};
use crate::domain::schedule::{ScheduleInfo, Seat};
use crate::domain::PaymentId;
use crate::domain::{ConcertId, Money, ReservationId, ScheduleId, Timestamp, TokenId, UserId};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// How long a caller waits for a pooled connection before the store reports unavailable:
/// a database that is down must turn into a prompt "unavailable" answer, not a hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections: the persister uses two at a time (one batch committing, the next staged behind
/// it); loads and the admin routes share the rest.
const MAX_CONNECTIONS: u32 = 8;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::connect_with(url, None).await
    }

    /// Connects with every session's `idle_in_transaction_session_timeout` set (cluster
    /// mode): a node stopped inside a fenced transaction holds its lease rows `FOR SHARE`, and
    /// this is what ends its session, and frees them for a takeover, instead of never.
    pub async fn connect_with(
        url: &str,
        idle_in_transaction: Option<Duration>,
    ) -> Result<PgStore, StoreError> {
        // Every statement planned for its own arguments. The batch statements are kept
        // prepared (one round trip each), and a generic plan of `UPDATE … FROM UNNEST(…)` made
        // while a table is small or not yet analyzed joins it by a sequential scan, kept for
        // the connection's life as the table grows (seen for `wallets`; docs/BENCHMARKS.md).
        // Planned per execution each one is an index lookup per row; planning an UNNEST insert
        // costs little next to its execution.
        let mut options = PgConnectOptions::from_str(url)?
            .application_name("boxoffice")
            .options([("plan_cache_mode", "force_custom_plan")]);
        if let Some(idle) = idle_in_transaction {
            let ms = idle.as_millis().max(1).to_string();
            options = options.options([("idle_in_transaction_session_timeout", ms.as_str())]);
        }
        // One direct connection first: its error names the cause ("connection refused",
        // "database does not exist"), where the pool would only report a timeout.
        let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        probe.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // No ping before each use: it is a round trip on every commit, and a dead
            // connection is found by the statement itself, whose error takes the failed-commit
            // path (the request fails as unavailable, the actors are rebuilt from the
            // database) like any other.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(PgStore { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Membership and leases, on the same pool.
    pub fn cluster(&self) -> super::ClusterStore {
        super::ClusterStore::new(self.pool.clone())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn commit(&self, batch: &Writes) -> Result<(), StoreError> {
        super::postgres_writes::commit(&self.pool, batch).await
    }

    /// The batch, written only while `node` holds every fence (see [`super::Store::commit_fenced`]).
    pub async fn commit_fenced(
        &self,
        batch: &Writes,
        node: &str,
        fences: &[super::Fence],
    ) -> Result<(), StoreError> {
        super::postgres_writes::commit_fenced(&self.pool, batch, node, fences).await
    }

    /// Whether the batch of `marker` committed (see [`super::Store::batch_committed`]).
    pub async fn batch_committed(&self, marker: super::BatchMarker) -> Result<bool, StoreError> {
        super::postgres_writes::batch_committed(&self.pool, marker).await
    }

    /// The batch's statements in a transaction left open (see [`super::Store::stage`]).
    pub async fn stage(
        &self,
        batch: &Writes,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        super::postgres_writes::stage(&self.pool, batch).await
    }

    /// One pooled connection for a read: its statements go one after the other.
    async fn reader(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    pub async fn load_catalog(&self) -> Result<CatalogSnapshot, StoreError> {
        reads::load_catalog(&mut *self.reader().await?).await
    }

    pub async fn load_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<ScheduleSnapshot, StoreError> {
        reads::load_schedule(&mut *self.reader().await?, schedule).await
    }

    pub async fn load_wallet(&self, user: UserId) -> Result<Option<Money>, StoreError> {
        reads::load_wallet(&mut *self.reader().await?, user).await
    }

    pub async fn load_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        reads::load_token(&mut *self.reader().await?, id).await
    }

    pub async fn load_tokens(
        &self,
        each: &mut (dyn FnMut(TokenRecord) + Send),
    ) -> Result<(), StoreError> {
        reads::load_tokens(&mut *self.reader().await?, each).await
    }

    pub async fn load_superseded_tokens(
        &self,
        window: u64,
        each: &mut (dyn FnMut(TokenRecord, u64) + Send),
    ) -> Result<(), StoreError> {
        reads::load_superseded_tokens(&mut *self.reader().await?, window, each).await
    }

    pub async fn load_waitlist(
        &self,
        schedule: ScheduleId,
    ) -> Result<super::WaitlistSnapshot, StoreError> {
        super::waitlist::load_waitlist(&mut *self.reader().await?, schedule).await
    }

    pub async fn paid_of_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<Vec<super::PaidReservation>, StoreError> {
        super::waitlist::paid_of_schedule(&mut *self.reader().await?, schedule).await
    }

    pub async fn audit(&self, schedule: ScheduleId) -> Result<super::AuditCounts, StoreError> {
        super::audit::audit(&mut *self.reader().await?, schedule).await
    }

    pub async fn load_opening(&self) -> Result<Option<OpeningRecord>, StoreError> {
        reads::load_opening(&mut *self.reader().await?).await
    }

    pub async fn load_tokens_at(&self, first: u64, count: u64) -> Result<Vec<TokenId>, StoreError> {
        reads::load_tokens_at(&mut *self.reader().await?, first, count).await
    }

    pub async fn max_ids(&self) -> Result<MaxIds, StoreError> {
        reads::max_ids(&mut *self.reader().await?).await
    }

    /// No transaction needed: a reservation's holds are written with it and never change
    /// which seats they name.
    pub async fn tickets_of_holder(
        &self,
        holder: UserId,
    ) -> Result<Vec<super::StoredTicket>, StoreError> {
        super::tickets::of_holder(&mut *self.reader().await?, holder).await
    }

    pub async fn load_ticket(
        &self,
        id: crate::domain::TicketId,
    ) -> Result<Option<super::StoredTicket>, StoreError> {
        super::tickets::one(&mut *self.reader().await?, id).await
    }

    pub async fn ticket_signing_key(
        &self,
        candidate: &str,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        super::tickets::signing_key_pg(&self.pool, candidate, now).await
    }

    pub async fn load_reservation(
        &self,
        id: ReservationId,
    ) -> Result<Option<StoredReservation>, StoreError> {
        reads::load_reservation(&mut *self.reader().await?, id).await
    }

    pub async fn payment_of(&self, id: ReservationId) -> Result<Option<PaymentId>, StoreError> {
        reads::payment_of(&mut *self.reader().await?, id).await
    }

    pub async fn ledger_page(
        &self,
        user: UserId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        reads::ledger_page(&mut *self.reader().await?, user, limit, before).await
    }

    pub async fn load_idempotency(
        &self,
        keep_since: Timestamp,
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        let mut conn = self.reader().await?;
        reads::prune_idempotency(&mut *conn, keep_since).await?;
        reads::load_idempotency(&mut *conn).await
    }

    pub async fn create_user(
        &self,
        name: &str,
        balance: Money,
        now: Timestamp,
    ) -> Result<UserId, StoreError> {
        let mut tx = self.pool.begin().await?;
        let user: i64 =
            sqlx::query("INSERT INTO users (name, created_at_ms) VALUES ($1, $2) RETURNING id")
                .bind(name)
                .bind(now.millis())
                .fetch_one(&mut *tx)
                .await?
                .try_get("id")?;
        sqlx::query("INSERT INTO wallets (user_id, balance, updated_at_ms) VALUES ($1, $2, $3)")
            .bind(user)
            .bind(balance.won())
            .bind(now.millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        rows::id(user, UserId::new)
    }

    pub async fn create_concert(&self, concert: &NewConcert) -> Result<CreatedConcert, StoreError> {
        let mut tx = self.pool.begin().await?;
        let concert_id: i64 = sqlx::query("INSERT INTO concerts (name) VALUES ($1) RETURNING id")
            .bind(&concert.name)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
        let concert_id = rows::id(concert_id, ConcertId::new)?;
        let mut schedules = Vec::with_capacity(concert.schedules.len());
        for s in &concert.schedules {
            let schedule_id: i64 = sqlx::query(
                "INSERT INTO schedules (concert_id, concert_at_ms, reservation_at_ms)
                 VALUES ($1, $2, $3) RETURNING id",
            )
            .bind(concert_id.get())
            .bind(s.concert_at.millis())
            .bind(s.reservation_at.millis())
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            let numbers: Vec<i32> = s.seats.iter().map(|(n, _)| *n).collect();
            let prices: Vec<i64> = s.seats.iter().map(|(_, p)| p.won()).collect();
            let plan: Vec<PlanColumns> = (0..s.seats.len())
                .map(|i| PlanColumns::of(s.plan.get(i)))
                .collect();
            let grades: Vec<Option<String>> = plan.iter().map(|p| p.grade.clone()).collect();
            let seat_rows: Vec<Option<String>> = plan.iter().map(|p| p.row.clone()).collect();
            let xs: Vec<Option<i32>> = plan.iter().map(|p| p.x).collect();
            let ys: Vec<Option<i32>> = plan.iter().map(|p| p.y).collect();
            // WITH ORDINALITY keeps the ids in the order the seats were given.
            let seats = sqlx::query(
                "INSERT INTO seats (schedule_id, seat_number, price, grade, seat_row, plan_x, plan_y)
                 SELECT $1, n, p, g, r, x, y
                 FROM UNNEST($2::int4[], $3::int8[], $4::text[], $5::text[], $6::int4[], $7::int4[])
                      WITH ORDINALITY AS u(n, p, g, r, x, y, o)
                 ORDER BY o RETURNING id, seat_number, price",
            )
            .bind(schedule_id)
            .bind(&numbers)
            .bind(&prices)
            .bind(&grades)
            .bind(&seat_rows)
            .bind(&xs)
            .bind(&ys)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(rows::seat)
            .collect::<Result<Vec<Seat>, StoreError>>()?;
            let info = ScheduleInfo {
                id: rows::id(schedule_id, ScheduleId::new)?,
                concert_id,
                concert_name: concert.name.clone(),
                concert_at: s.concert_at,
                reservation_at: s.reservation_at,
            };
            schedules.push(CreatedSchedule {
                info,
                seats: order_like(seats, &numbers),
                plan: s.plan.clone(),
            });
        }
        tx.commit().await?;
        Ok(CreatedConcert {
            id: concert_id,
            schedules,
        })
    }
}

/// `INSERT … RETURNING` does not promise the order of its rows: put them back in input order.
fn order_like(mut seats: Vec<Seat>, numbers: &[i32]) -> Vec<Seat> {
    let order: HashMap<i32, usize> = numbers.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    seats.sort_by_key(|s| order.get(&s.number).copied().unwrap_or(usize::MAX));
    seats
}
