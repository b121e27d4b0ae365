//! The waiting list's rows and the cancelled performances (API.md §12,
//! `migrations/*/…_waitlist.sql`): the PostgreSQL batch parts, the SQLite batch statements and
//! the read, kept out of the hot tables' files.

use super::dialect::SqlConnection;
use super::rows::{self, Columns};
use super::statement::{execute_rows, Column, Part};
use super::{StoreError, Writes};
use crate::domain::waitlist::WaitlistEntry;
use crate::domain::{Money, PaymentId, ReservationId, ScheduleId, Timestamp, UserId};
use sqlx::sqlite::SqliteConnection;

/// A paid reservation and the payment that paid it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidReservation {
    pub reservation: ReservationId,
    pub payment: PaymentId,
    pub amount: Money,
}

/// A schedule's waiting list, in join order, and whether the performance is cancelled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitlistSnapshot {
    pub entries: Vec<WaitlistEntry>,
    pub cancelled: bool,
}

pub(super) async fn load_waitlist<C: SqlConnection>(
    conn: &mut C,
    schedule: ScheduleId,
) -> Result<WaitlistSnapshot, StoreError> {
    let entries = conn
        .rows(
            "SELECT user_id, seats, seq, joined_at_ms, offer_reservation_id
             FROM waitlist_entries WHERE schedule_id = $1 ORDER BY seq",
            &[schedule.get()],
        )
        .await?
        .iter()
        .map(|row| {
            let seats = row.int4("seats")?;
            Ok(WaitlistEntry {
                schedule,
                user: rows::id(row.int8("user_id")?, UserId::new)?,
                seats: u32::try_from(seats)
                    .map_err(|_| StoreError::Corrupt(format!("waitlist seats {seats}")))?,
                seq: row.int8("seq")?,
                joined_at: Timestamp::from_millis(row.int8("joined_at_ms")?),
                offer: row
                    .int8_or_null("offer_reservation_id")?
                    .map(|id| rows::id(id, ReservationId::new))
                    .transpose()?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let cancelled = conn
        .optional_row(
            "SELECT cancelled_at_ms FROM schedule_cancellations WHERE schedule_id = $1",
            &[schedule.get()],
        )
        .await?
        .is_some();
    Ok(WaitlistSnapshot { entries, cancelled })
}

/// The paid reservations of a schedule with their payment: what a cancelled performance
/// refunds.
pub(super) async fn paid_of_schedule<C: SqlConnection>(
    conn: &mut C,
    schedule: ScheduleId,
) -> Result<Vec<PaidReservation>, StoreError> {
    conn.rows(
        "SELECT r.id, p.id AS payment_id, p.amount FROM reservations r
         JOIN payments p ON p.reservation_id = r.id
         WHERE r.schedule_id = $1 AND r.status = 'PAID' ORDER BY r.id",
        &[schedule.get()],
    )
    .await?
    .iter()
    .map(|row| {
        let amount = row.int8("amount")?;
        Ok(PaidReservation {
            reservation: rows::id(row.int8("id")?, ReservationId::new)?,
            payment: rows::id(row.int8("payment_id")?, PaymentId::new)?,
            amount: Money::new(amount)
                .ok_or_else(|| StoreError::Corrupt(format!("payment amount {amount}")))?,
        })
    })
    .collect()
}

fn stored(batch: &Writes) -> impl Iterator<Item = &WaitlistEntry> {
    batch.waitlist.values().flatten()
}

fn removed(batch: &Writes) -> impl Iterator<Item = &(ScheduleId, UserId)> {
    batch
        .waitlist
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(k, _)| k)
}

/// PostgreSQL: removed entries, stored entries, cancelled performances. The keys of one batch
/// are distinct (the batch keeps the last write per entry), so the order between them is free.
pub(super) fn parts(batch: &Writes) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    if removed(batch).next().is_some() {
        parts.push(Part::new(
            "DELETE FROM waitlist_entries w USING UNNEST($1::int8[], $2::int8[]) AS d(s, u)
             WHERE w.schedule_id = d.s AND w.user_id = d.u",
            vec![
                Column::I64(removed(batch).map(|(s, _)| s.get()).collect()),
                Column::I64(removed(batch).map(|(_, u)| u.get()).collect()),
            ],
        ));
    }
    if stored(batch).next().is_some() {
        parts.push(Part::new(
            "INSERT INTO waitlist_entries (schedule_id, user_id, seats, seq, joined_at_ms,
               offer_reservation_id)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int4[], $4::int8[], $5::int8[],
                                  $6::int8[])
             ON CONFLICT (schedule_id, user_id) DO UPDATE
               SET offer_reservation_id = EXCLUDED.offer_reservation_id",
            vec![
                Column::I64(stored(batch).map(|e| e.schedule.get()).collect()),
                Column::I64(stored(batch).map(|e| e.user.get()).collect()),
                Column::I32(stored(batch).map(|e| e.seats as i32).collect()),
                Column::I64(stored(batch).map(|e| e.seq).collect()),
                Column::I64(stored(batch).map(|e| e.joined_at.millis()).collect()),
                Column::OptI64(stored(batch).map(|e| e.offer.map(|r| r.get())).collect()),
            ],
        ));
    }
    if !batch.cancelled.is_empty() {
        parts.push(Part::new(
            "INSERT INTO schedule_cancellations (schedule_id, cancelled_at_ms)
             SELECT * FROM UNNEST($1::int8[], $2::int8[]) ON CONFLICT (schedule_id) DO NOTHING",
            vec![
                Column::I64(batch.cancelled.keys().map(|s| s.get()).collect()),
                Column::I64(batch.cancelled.values().map(|t| t.millis()).collect()),
            ],
        ));
    }
    parts
}

/// SQLite: the same three statements, each batch's rows as one JSON array.
pub(super) async fn write(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    let gone: Vec<(i64, i64)> = removed(batch).map(|(s, u)| (s.get(), u.get())).collect();
    execute_rows(
        conn,
        "DELETE FROM waitlist_entries WHERE (schedule_id, user_id) IN
           (SELECT j.value->>0, j.value->>1 FROM json_each(?1) AS j)",
        &gone,
    )
    .await?;
    let kept: Vec<(i64, i64, u32, i64, i64, Option<i64>)> = stored(batch)
        .map(|e| {
            let offer = e.offer.map(|r| r.get());
            let at = e.joined_at.millis();
            (e.schedule.get(), e.user.get(), e.seats, e.seq, at, offer)
        })
        .collect();
    execute_rows(
        conn,
        "INSERT INTO waitlist_entries (schedule_id, user_id, seats, seq, joined_at_ms,
           offer_reservation_id)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5
         FROM json_each(?1) AS j WHERE true
         ON CONFLICT (schedule_id, user_id) DO UPDATE
           SET offer_reservation_id = excluded.offer_reservation_id",
        &kept,
    )
    .await?;
    let cancelled: Vec<(i64, i64)> = batch
        .cancelled
        .iter()
        .map(|(s, t)| (s.get(), t.millis()))
        .collect();
    execute_rows(
        conn,
        "INSERT INTO schedule_cancellations (schedule_id, cancelled_at_ms)
         SELECT j.value->>0, j.value->>1 FROM json_each(?1) AS j WHERE true
         ON CONFLICT (schedule_id) DO NOTHING",
        &cancelled,
    )
    .await?;
    Ok(())
}
