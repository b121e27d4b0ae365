//! The PostgreSQL backend: loads, the catalog, and the group commit (its statements are in
//! `postgres_writes.rs`: batched upserts with `UNNEST`, usually one statement per batch).

use super::rows::{self, PlanColumns};
use super::{
    CatalogSnapshot, CreatedConcert, CreatedSchedule, IdempotencyRecord, LedgerEntry, MaxIds,
    NewConcert, ScheduleSnapshot, StoreError, StoredReservation, Writes,
};
use crate::domain::queue::TokenRecord;
use crate::domain::schedule::{ScheduleInfo, Seat};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::{
    ConcertId, Money, ReservationId, ScheduleId, SeatId, Timestamp, TokenId, UserId,
};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;
use sqlx::Row;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// How long a caller waits for a pooled connection before the store reports unavailable:
/// a database that is down must turn into a prompt 503, not a hang.
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
        let mut options = PgConnectOptions::from_str(url)?.application_name("boxoffice");
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
            // path (503, rebuild from the database) like any other.
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

    /// The batch's statements in a transaction left open (see [`super::Store::stage`]).
    pub async fn stage(
        &self,
        batch: &Writes,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        super::postgres_writes::stage(&self.pool, batch).await
    }

    pub async fn load_catalog(&self) -> Result<CatalogSnapshot, StoreError> {
        let users = sqlx::query("SELECT id FROM users ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| rows::id(row.try_get("id")?, UserId::new))
            .collect::<Result<_, _>>()?;
        let concerts = sqlx::query("SELECT id, name FROM concerts ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    rows::id(row.try_get("id")?, ConcertId::new)?,
                    row.try_get("name")?,
                ))
            })
            .collect::<Result<Vec<(ConcertId, String)>, StoreError>>()?;
        let names: HashMap<ConcertId, String> = concerts.iter().cloned().collect();
        let schedules = sqlx::query(
            "SELECT id, concert_id, concert_at_ms, reservation_at_ms FROM schedules ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            let concert_id = rows::id(row.try_get("concert_id")?, ConcertId::new)?;
            Ok(ScheduleInfo {
                id: rows::id(row.try_get("id")?, ScheduleId::new)?,
                concert_id,
                concert_name: names.get(&concert_id).cloned().unwrap_or_default(),
                concert_at: Timestamp::from_millis(row.try_get("concert_at_ms")?),
                reservation_at: Timestamp::from_millis(row.try_get("reservation_at_ms")?),
            })
        })
        .collect::<Result<_, StoreError>>()?;
        Ok(CatalogSnapshot {
            users,
            concerts,
            schedules,
        })
    }

    pub async fn load_schedule(
        &self,
        schedule: ScheduleId,
    ) -> Result<ScheduleSnapshot, StoreError> {
        let seat_rows = sqlx::query(
            "SELECT id, seat_number, price, grade, seat_row, plan_x, plan_y
             FROM seats WHERE schedule_id = $1 ORDER BY seat_number",
        )
        .bind(schedule.get())
        .fetch_all(&self.pool)
        .await?;
        let seats = seat_rows
            .iter()
            .map(rows::seat)
            .collect::<Result<Vec<Seat>, StoreError>>()?;
        let mut plan = seat_rows
            .iter()
            .map(rows::seat_plan)
            .collect::<Result<Vec<SeatPlan>, StoreError>>()?;
        if plan.iter().all(SeatPlan::is_empty) {
            // No seat has a label: no plan, as the memory store has it.
            plan.clear();
        }
        let rows = sqlx::query(
            "SELECT id, user_id, status, total_price, created_at_ms, expires_at_ms, updated_at_ms
             FROM reservations WHERE schedule_id = $1 ORDER BY id",
        )
        .bind(schedule.get())
        .fetch_all(&self.pool)
        .await?;
        let mut seats_of: HashMap<i64, Vec<SeatId>> = HashMap::new();
        for row in sqlx::query(
            "SELECT h.reservation_id, h.seat_id FROM holds h
             JOIN reservations r ON r.id = h.reservation_id
             WHERE r.schedule_id = $1 ORDER BY h.reservation_id, h.seat_order",
        )
        .bind(schedule.get())
        .fetch_all(&self.pool)
        .await?
        {
            seats_of
                .entry(row.try_get("reservation_id")?)
                .or_default()
                .push(rows::id(row.try_get("seat_id")?, SeatId::new)?);
        }
        let reservations = rows
            .iter()
            .map(|row| {
                let rid: i64 = row.try_get("id")?;
                rows::reservation(row, schedule, seats_of.remove(&rid).unwrap_or_default())
            })
            .collect::<Result<_, _>>()?;
        Ok(ScheduleSnapshot {
            seats,
            plan,
            reservations,
        })
    }

    pub async fn load_wallet(&self, user: UserId) -> Result<Option<Money>, StoreError> {
        let row = sqlx::query("SELECT balance FROM wallets WHERE user_id = $1")
            .bind(user.get())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| rows::money(row.try_get("balance")?))
            .transpose()
    }

    pub async fn load_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, user_id, position, status, created_at_ms, admitted_at_ms,
                    active_expires_at_ms, expired_at_ms
             FROM queue_tokens WHERE id = $1",
        )
        .bind(id.get())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| rows::token(&row)).transpose()
    }

    pub async fn load_tokens(
        &self,
        each: &mut (dyn FnMut(TokenRecord) + Send),
    ) -> Result<(), StoreError> {
        let mut rows = sqlx::query(
            "SELECT * FROM (
                 SELECT DISTINCT ON (user_id) id, user_id, position, status, created_at_ms,
                        admitted_at_ms, active_expires_at_ms, expired_at_ms
                 FROM queue_tokens ORDER BY user_id, position DESC
             ) latest ORDER BY position",
        )
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            each(rows::token(&row)?);
        }
        Ok(())
    }

    /// The tokens replaced by a join among the last `window` positions, each with the position
    /// of the token that replaced it (its user's next), streamed in ascending order of that.
    /// One range scan of the `position` index over `window` rows, one probe of the per-user
    /// index each: the cost is bounded by the window, not by the table.
    pub async fn load_superseded_tokens(
        &self,
        window: u64,
        each: &mut (dyn FnMut(TokenRecord, u64) + Send),
    ) -> Result<(), StoreError> {
        let window = i64::try_from(window).unwrap_or(i64::MAX);
        let mut rows = sqlx::query(
            "SELECT t.position AS replaced_by, p.id, p.user_id, p.position, p.status,
                    p.created_at_ms, p.admitted_at_ms, p.active_expires_at_ms, p.expired_at_ms
             FROM queue_tokens t
             CROSS JOIN LATERAL (
                 SELECT * FROM queue_tokens p
                 WHERE p.user_id = t.user_id AND p.position < t.position
                 ORDER BY p.position DESC LIMIT 1
             ) p
             WHERE t.position > (SELECT COALESCE(MAX(position), 0) FROM queue_tokens) - $1
             ORDER BY t.position",
        )
        .bind(window)
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            let by: i64 = row.try_get("replaced_by")?;
            let by =
                u64::try_from(by).map_err(|_| StoreError::Corrupt(format!("position {by}")))?;
            each(rows::token(&row)?, by);
        }
        Ok(())
    }

    pub async fn max_ids(&self) -> Result<MaxIds, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM reservations) AS reservation,
                    (SELECT COALESCE(MAX(id), 0) FROM payments) AS payment,
                    (SELECT COALESCE(MAX(id), 0) FROM ledger) AS ledger",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(MaxIds {
            reservation: row.try_get("reservation")?,
            payment: row.try_get("payment")?,
            ledger: row.try_get("ledger")?,
        })
    }

    pub async fn load_reservation(
        &self,
        id: ReservationId,
    ) -> Result<Option<StoredReservation>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT id, user_id, schedule_id, status, total_price, created_at_ms, expires_at_ms,
                    updated_at_ms
             FROM reservations WHERE id = $1",
        )
        .bind(id.get())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        // No transaction needed: a reservation's holds are written with it and never change
        // which seats they name.
        let seats = sqlx::query(
            "SELECT s.id, s.seat_number, s.price FROM holds h JOIN seats s ON s.id = h.seat_id
             WHERE h.reservation_id = $1 ORDER BY h.seat_order",
        )
        .bind(id.get())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::seat)
        .collect::<Result<Vec<Seat>, StoreError>>()?;
        let schedule = rows::id(row.try_get("schedule_id")?, ScheduleId::new)?;
        let reservation = rows::reservation(&row, schedule, seats.iter().map(|s| s.id).collect())?;
        Ok(Some(StoredReservation { reservation, seats }))
    }

    pub async fn ledger_page(
        &self,
        user: UserId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        sqlx::query(
            "SELECT id, kind, amount, balance_after, payment_id, created_at_ms FROM ledger
             WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(user.get())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| rows::ledger_entry(row, user))
        .collect()
    }

    pub async fn load_idempotency(
        &self,
        keep_since: Timestamp,
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at_ms < $1")
            .bind(keep_since.millis())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "SELECT user_id, key, fingerprint, status, body, created_at_ms FROM idempotency_keys",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(rows::idempotency)
        .collect()
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
