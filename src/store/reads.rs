//! Every read of the SQL backends, written once for PostgreSQL and SQLite: one SQL text each
//! (its placeholders and the two queries that differ come from `dialect.rs`), its rows
//! decoded by `rows.rs`. A backend only chooses the connection: SQLite reads inside one read
//! transaction where several queries must see one snapshot of the file.

use super::dialect::SqlConnection;
use super::rows::{self, Columns};
use super::{
    CatalogSnapshot, IdempotencyRecord, LedgerEntry, MaxIds, ScheduleSnapshot, StoreError,
    StoredReservation,
};
use crate::domain::queue::{DrawSeed, DrawnRecord, OpeningRecord, TokenRecord};
use crate::domain::schedule::{ScheduleInfo, Seat};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::PaymentId;
use crate::domain::{
    ConcertId, Money, ReservationId, ScheduleId, SeatId, Timestamp, TokenId, UserId,
};
use std::collections::HashMap;

pub(super) async fn load_catalog<C: SqlConnection>(
    conn: &mut C,
) -> Result<CatalogSnapshot, StoreError> {
    let users = conn
        .rows("SELECT id FROM users ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| rows::id(row.int8("id")?, UserId::new))
        .collect::<Result<_, _>>()?;
    let concerts = conn
        .rows("SELECT id, name FROM concerts ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| {
            Ok((
                rows::id(row.int8("id")?, ConcertId::new)?,
                row.text("name")?,
            ))
        })
        .collect::<Result<Vec<(ConcertId, String)>, StoreError>>()?;
    let names: HashMap<ConcertId, String> = concerts.iter().cloned().collect();
    let schedules = conn
        .rows(
            "SELECT id, concert_id, concert_at_ms, reservation_at_ms FROM schedules ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let concert_id = rows::id(row.int8("concert_id")?, ConcertId::new)?;
            Ok(ScheduleInfo {
                id: rows::id(row.int8("id")?, ScheduleId::new)?,
                concert_id,
                concert_name: names.get(&concert_id).cloned().unwrap_or_default(),
                concert_at: Timestamp::from_millis(row.int8("concert_at_ms")?),
                reservation_at: Timestamp::from_millis(row.int8("reservation_at_ms")?),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(CatalogSnapshot {
        users,
        concerts,
        schedules,
    })
}

pub(super) async fn load_schedule<C: SqlConnection>(
    conn: &mut C,
    schedule: ScheduleId,
) -> Result<ScheduleSnapshot, StoreError> {
    let seat_rows = conn
        .rows(
            "SELECT id, seat_number, price, grade, seat_row, plan_x, plan_y
             FROM seats WHERE schedule_id = $1 ORDER BY seat_number",
            &[schedule.get()],
        )
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
    let reservation_rows = conn
        .rows(
            "SELECT id, user_id, status, total_price, created_at_ms, expires_at_ms, updated_at_ms
             FROM reservations WHERE schedule_id = $1 ORDER BY id",
            &[schedule.get()],
        )
        .await?;
    let mut seats_of: HashMap<i64, Vec<SeatId>> = HashMap::new();
    for row in conn
        .rows(
            "SELECT h.reservation_id, h.seat_id FROM holds h
             JOIN reservations r ON r.id = h.reservation_id
             WHERE r.schedule_id = $1 ORDER BY h.reservation_id, h.seat_order",
            &[schedule.get()],
        )
        .await?
    {
        seats_of
            .entry(row.int8("reservation_id")?)
            .or_default()
            .push(rows::id(row.int8("seat_id")?, SeatId::new)?);
    }
    let reservations = reservation_rows
        .iter()
        .map(|row| {
            let seats = seats_of.remove(&row.int8("id")?).unwrap_or_default();
            rows::reservation(row, schedule, seats)
        })
        .collect::<Result<_, _>>()?;
    let tickets = super::tickets::of_schedule(conn, schedule).await?;
    Ok(ScheduleSnapshot {
        seats,
        plan,
        reservations,
        tickets,
    })
}

pub(super) async fn load_wallet<C: SqlConnection>(
    conn: &mut C,
    user: UserId,
) -> Result<Option<Money>, StoreError> {
    conn.optional_row(
        "SELECT balance FROM wallets WHERE user_id = $1",
        &[user.get()],
    )
    .await?
    .map(|row| rows::money(row.int8("balance")?))
    .transpose()
}

pub(super) async fn load_token<C: SqlConnection>(
    conn: &mut C,
    id: TokenId,
) -> Result<Option<TokenRecord>, StoreError> {
    conn.optional_row(
        "SELECT id, user_id, position, status, created_at_ms, admitted_at_ms,
                active_expires_at_ms, expired_at_ms
         FROM queue_tokens WHERE id = $1",
        &[id.get()],
    )
    .await?
    .map(|row| rows::token(&row))
    .transpose()
}

pub(super) async fn load_tokens<C: SqlConnection>(
    conn: &mut C,
    each: &mut (dyn FnMut(TokenRecord) + Send),
) -> Result<(), StoreError> {
    conn.each_row(C::DIALECT.latest_tokens(), &[], &mut |row| {
        each(rows::token(row)?);
        Ok(())
    })
    .await
}

pub(super) async fn load_superseded_tokens<C: SqlConnection>(
    conn: &mut C,
    window: u64,
    each: &mut (dyn FnMut(TokenRecord, u64) + Send),
) -> Result<(), StoreError> {
    let window = i64::try_from(window).unwrap_or(i64::MAX);
    conn.each_row(C::DIALECT.superseded_tokens(), &[window], &mut |row| {
        let by = row.int8("replaced_by")?;
        let by = u64::try_from(by).map_err(|_| StoreError::Corrupt(format!("position {by}")))?;
        each(rows::token(row)?, by);
        Ok(())
    })
    .await
}

/// The fair opening's row (`migrations/*/…_queue_opening.sql`).
pub(super) async fn load_opening<C: SqlConnection>(
    conn: &mut C,
) -> Result<Option<OpeningRecord>, StoreError> {
    let Some(row) = conn
        .optional_row(
            "SELECT opens_at_ms, seed, drawn_at_ms, first_position, participants,
                    participants_digest
             FROM queue_opening WHERE id = 1",
            &[],
        )
        .await?
    else {
        return Ok(None);
    };
    let seed = row.text("seed")?;
    let seed = DrawSeed::from_hex(&seed)
        .ok_or_else(|| StoreError::Corrupt("the opening's seed is not 64 hex digits".into()))?;
    let count = |raw: i64| {
        u64::try_from(raw).map_err(|_| StoreError::Corrupt(format!("opening count {raw}")))
    };
    let drawn = match row.int8_or_null("drawn_at_ms")? {
        None => None,
        Some(at) => Some(DrawnRecord {
            at: Timestamp::from_millis(at),
            first_position: count(row.int8("first_position")?)?,
            participants: count(row.int8("participants")?)?,
            participants_digest: row.text("participants_digest")?,
        }),
    };
    Ok(Some(OpeningRecord {
        opens_at: Timestamp::from_millis(row.int8("opens_at_ms")?),
        seed,
        drawn,
    }))
}

/// The tokens at positions `first .. first + count`, in position order.
pub(super) async fn load_tokens_at<C: SqlConnection>(
    conn: &mut C,
    first: u64,
    count: u64,
) -> Result<Vec<TokenId>, StoreError> {
    let first =
        i64::try_from(first).map_err(|_| StoreError::Corrupt(format!("position {first}")))?;
    let end = first.saturating_add(i64::try_from(count).unwrap_or(i64::MAX));
    let mut tokens = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 24));
    conn.each_row(
        "SELECT id FROM queue_tokens WHERE position >= $1 AND position < $2 ORDER BY position",
        &[first, end],
        &mut |row| {
            tokens.push(rows::id(row.int8("id")?, TokenId::new)?);
            Ok(())
        },
    )
    .await?;
    Ok(tokens)
}

pub(super) async fn max_ids<C: SqlConnection>(conn: &mut C) -> Result<MaxIds, StoreError> {
    let row = conn
        .one_row(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM reservations) AS reservation,
                    (SELECT COALESCE(MAX(id), 0) FROM payments) AS payment,
                    (SELECT COALESCE(MAX(id), 0) FROM ledger) AS ledger",
            &[],
        )
        .await?;
    Ok(MaxIds {
        reservation: row.int8("reservation")?,
        payment: row.int8("payment")?,
        ledger: row.int8("ledger")?,
        ticket: super::tickets::max_id(conn).await?,
    })
}

/// The payment of a paid reservation (at most one: `payments.reservation_id` is unique).
pub(super) async fn payment_of<C: SqlConnection>(
    conn: &mut C,
    id: ReservationId,
) -> Result<Option<PaymentId>, StoreError> {
    conn.optional_row(
        "SELECT id FROM payments WHERE reservation_id = $1",
        &[id.get()],
    )
    .await?
    .map(|row| rows::id(row.int8("id")?, PaymentId::new))
    .transpose()
}

pub(super) async fn load_reservation<C: SqlConnection>(
    conn: &mut C,
    id: ReservationId,
) -> Result<Option<StoredReservation>, StoreError> {
    let Some(row) = conn
        .optional_row(
            "SELECT id, user_id, schedule_id, status, total_price, created_at_ms, expires_at_ms,
                    updated_at_ms
             FROM reservations WHERE id = $1",
            &[id.get()],
        )
        .await?
    else {
        return Ok(None);
    };
    let seats = conn
        .rows(
            "SELECT s.id, s.seat_number, s.price FROM holds h JOIN seats s ON s.id = h.seat_id
             WHERE h.reservation_id = $1 ORDER BY h.seat_order",
            &[id.get()],
        )
        .await?
        .iter()
        .map(rows::seat)
        .collect::<Result<Vec<Seat>, StoreError>>()?;
    let schedule = rows::id(row.int8("schedule_id")?, ScheduleId::new)?;
    let reservation = rows::reservation(&row, schedule, seats.iter().map(|s| s.id).collect())?;
    Ok(Some(StoredReservation { reservation, seats }))
}

pub(super) async fn ledger_page<C: SqlConnection>(
    conn: &mut C,
    user: UserId,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<LedgerEntry>, StoreError> {
    conn.rows(
        "SELECT id, kind, amount, balance_after, payment_id, created_at_ms FROM ledger
         WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        &[user.get(), before.unwrap_or(i64::MAX), i64::from(limit)],
    )
    .await?
    .iter()
    .map(|row| rows::ledger_entry(row, user))
    .collect()
}

/// Forgets the idempotency keys older than `keep_since` (a write: SQLite sends it on its writer).
pub(super) async fn prune_idempotency<C: SqlConnection>(
    conn: &mut C,
    keep_since: Timestamp,
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at_ms < $1",
        &[keep_since.millis()],
    )
    .await?;
    Ok(())
}

pub(super) async fn load_idempotency<C: SqlConnection>(
    conn: &mut C,
) -> Result<Vec<IdempotencyRecord>, StoreError> {
    conn.rows(
        "SELECT user_id, key, fingerprint, status, body, created_at_ms FROM idempotency_keys",
        &[],
    )
    .await?
    .iter()
    .map(rows::idempotency)
    .collect()
}
