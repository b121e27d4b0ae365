//! Every ticket statement (API.md §12), for both SQL backends: the batch's ticket rows (an
//! `UNNEST` part on PostgreSQL, a `json_each` statement on SQLite, after the reservations they
//! belong to), the reads a schedule's actor is rebuilt from and a holder's list is answered
//! from, and the generated signing key, kept once.

use super::dialect::SqlConnection;
use super::rows::{self, Columns};
use super::statement::{Column, Part};
use super::{StoreError, StoredTicket, Writes};
use crate::domain::ticket::{CheckIn, Ticket, TicketStatus};
use crate::domain::{ReservationId, ScheduleId, SeatId, TicketId, Timestamp, UserId};
use sqlx::sqlite::SqliteConnection;

/// The batch's tickets as one PostgreSQL part: each ticket's full state, upserted (a transfer
/// or a check-in updates the row in place).
pub(super) fn pg_part(batch: &Writes) -> Option<Part<'_>> {
    let ts: Vec<&Ticket> = batch.tickets.values().collect();
    if ts.is_empty() {
        return None;
    }
    Some(Part::new(
        "INSERT INTO tickets (id, reservation_id, schedule_id, seat_id, holder_id, version, status,
                              issued_at_ms, checked_in_at_ms, gate, updated_at_ms)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                              $6::int4[], $7::text[], $8::int8[], $9::int8[], $10::text[],
                              $11::int8[])
         ON CONFLICT (id) DO UPDATE SET holder_id = EXCLUDED.holder_id,
           version = EXCLUDED.version, status = EXCLUDED.status,
           issued_at_ms = EXCLUDED.issued_at_ms, checked_in_at_ms = EXCLUDED.checked_in_at_ms,
           gate = EXCLUDED.gate, updated_at_ms = EXCLUDED.updated_at_ms",
        vec![
            Column::I64(ts.iter().map(|t| t.id.get()).collect()),
            Column::I64(ts.iter().map(|t| t.reservation.get()).collect()),
            Column::I64(ts.iter().map(|t| t.schedule.get()).collect()),
            Column::I64(ts.iter().map(|t| t.seat.get()).collect()),
            Column::I64(ts.iter().map(|t| t.holder.get()).collect()),
            Column::I32(ts.iter().map(|t| version_column(t.version)).collect()),
            Column::Text(ts.iter().map(|t| t.status.as_str()).collect()),
            Column::I64(ts.iter().map(|t| t.issued_at.millis()).collect()),
            Column::OptI64(
                ts.iter()
                    .map(|t| t.check_in.as_ref().map(|c| c.at.millis()))
                    .collect(),
            ),
            Column::OwnedOptText(
                ts.iter()
                    .map(|t| t.check_in.as_ref().map(|c| c.gate.clone()))
                    .collect(),
            ),
            Column::I64(ts.iter().map(|t| t.updated_at.millis()).collect()),
        ],
    ))
}

/// A version past `i32::MAX` would take two billion transfers of one ticket.
fn version_column(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

/// The batch's tickets on SQLite: one statement, the rows as one JSON array.
pub(super) async fn write_sqlite(
    conn: &mut SqliteConnection,
    batch: &Writes,
) -> Result<(), StoreError> {
    if batch.tickets.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = batch
        .tickets
        .values()
        .map(|t| {
            (
                t.id.get(),
                t.reservation.get(),
                t.schedule.get(),
                t.seat.get(),
                t.holder.get(),
                t.version,
                t.status.as_str(),
                t.issued_at.millis(),
                t.check_in.as_ref().map(|c| c.at.millis()),
                t.check_in.as_ref().map(|c| c.gate.as_str()),
                t.updated_at.millis(),
            )
        })
        .collect();
    let json = serde_json::to_string(&rows)
        .map_err(|e| StoreError::Corrupt(format!("a batch that is not JSON: {e}")))?;
    sqlx::query(
        "INSERT INTO tickets (id, reservation_id, schedule_id, seat_id, holder_id, version, status,
                             issued_at_ms, checked_in_at_ms, gate, updated_at_ms)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5,
                j.value->>6, j.value->>7, j.value->>8, j.value->>9, j.value->>10
         FROM json_each(?1) AS j WHERE true ORDER BY j.key
         ON CONFLICT (id) DO UPDATE SET holder_id = excluded.holder_id,
           version = excluded.version, status = excluded.status,
           issued_at_ms = excluded.issued_at_ms, checked_in_at_ms = excluded.checked_in_at_ms,
           gate = excluded.gate, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(json)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const TICKET_COLUMNS: &str = "t.id, t.reservation_id, t.schedule_id, t.seat_id, t.holder_id, \
     t.version, t.status, t.issued_at_ms, t.checked_in_at_ms, t.gate, t.updated_at_ms";

/// One stored ticket row.
pub(super) fn ticket(row: &impl Columns) -> Result<Ticket, StoreError> {
    let status = row.text("status")?;
    let check_in = match (
        row.int8_or_null("checked_in_at_ms")?,
        row.text_or_null("gate")?,
    ) {
        (Some(at), Some(gate)) => Some(CheckIn {
            at: Timestamp::from_millis(at),
            gate,
        }),
        _ => None,
    };
    Ok(Ticket {
        id: rows::id(row.int8("id")?, TicketId::new)?,
        reservation: rows::id(row.int8("reservation_id")?, ReservationId::new)?,
        schedule: rows::id(row.int8("schedule_id")?, ScheduleId::new)?,
        seat: rows::id(row.int8("seat_id")?, SeatId::new)?,
        holder: rows::id(row.int8("holder_id")?, UserId::new)?,
        version: u32::try_from(row.int4("version")?)
            .map_err(|_| StoreError::Corrupt("ticket version out of range".into()))?,
        status: TicketStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("ticket status {status}")))?,
        issued_at: Timestamp::from_millis(row.int8("issued_at_ms")?),
        check_in,
        updated_at: Timestamp::from_millis(row.int8("updated_at_ms")?),
    })
}

/// Every ticket of a schedule, for its actor's rebuild.
pub(super) async fn of_schedule<C: SqlConnection>(
    conn: &mut C,
    schedule: ScheduleId,
) -> Result<Vec<Ticket>, StoreError> {
    let sql =
        format!("SELECT {TICKET_COLUMNS} FROM tickets t WHERE t.schedule_id = $1 ORDER BY t.id");
    conn.rows(&sql, &[schedule.get()])
        .await?
        .iter()
        .map(ticket)
        .collect()
}

fn stored(row: &impl Columns) -> Result<StoredTicket, StoreError> {
    Ok(StoredTicket {
        ticket: ticket(row)?,
        seat_number: row.int4("seat_number")?,
        plan: rows::seat_plan(row)?,
    })
}

/// A holder's tickets (every schedule), with their seats' numbers and labels.
pub(super) async fn of_holder<C: SqlConnection>(
    conn: &mut C,
    holder: UserId,
) -> Result<Vec<StoredTicket>, StoreError> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS}, s.seat_number, s.grade, s.seat_row, s.plan_x, s.plan_y
         FROM tickets t JOIN seats s ON s.id = t.seat_id
         WHERE t.holder_id = $1 ORDER BY t.id"
    );
    conn.rows(&sql, &[holder.get()])
        .await?
        .iter()
        .map(stored)
        .collect()
}

/// One ticket, with its seat.
pub(super) async fn one<C: SqlConnection>(
    conn: &mut C,
    id: TicketId,
) -> Result<Option<StoredTicket>, StoreError> {
    let sql = format!(
        "SELECT {TICKET_COLUMNS}, s.seat_number, s.grade, s.seat_row, s.plan_x, s.plan_y
         FROM tickets t JOIN seats s ON s.id = t.seat_id WHERE t.id = $1"
    );
    conn.optional_row(&sql, &[id.get()])
        .await?
        .map(|row| stored(&row))
        .transpose()
}

/// The highest ticket id in use.
pub(super) async fn max_id<C: SqlConnection>(conn: &mut C) -> Result<i64, StoreError> {
    conn.one_row("SELECT COALESCE(MAX(id), 0) AS max FROM tickets", &[])
        .await?
        .int8("max")
}

/// The stored signing key's seed (hex), storing `candidate` first if there is none: the first
/// writer wins, so every node and every restart signs with one key.
pub(super) async fn signing_key_pg(
    pool: &sqlx::PgPool,
    candidate: &str,
    now: Timestamp,
) -> Result<String, StoreError> {
    sqlx::query(
        "INSERT INTO ticket_signing_key (id, seed, created_at_ms) VALUES (1, $1, $2)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(candidate)
    .bind(now.millis())
    .execute(pool)
    .await?;
    let (seed,): (String,) = sqlx::query_as("SELECT seed FROM ticket_signing_key WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(seed)
}

/// [`signing_key_pg`] on SQLite (through the one writer connection).
pub(super) async fn signing_key_sqlite(
    writer: &sqlx::SqlitePool,
    candidate: &str,
    now: Timestamp,
) -> Result<String, StoreError> {
    sqlx::query(
        "INSERT INTO ticket_signing_key (id, seed, created_at_ms) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(candidate)
    .bind(now.millis())
    .execute(writer)
    .await?;
    let (seed,): (String,) = sqlx::query_as("SELECT seed FROM ticket_signing_key WHERE id = 1")
        .fetch_one(writer)
        .await?;
    Ok(seed)
}
