//! The statements of one SQLite commit: each table's rows in a batch bound as one JSON array
//! and read back with `json_each`, one statement per table, in the order the constraints need
//! (the same order as the PostgreSQL store's, `postgres_writes.rs`).

use super::rows;
use super::statement::execute_rows;
use super::{OpeningWrite, StoreError, Writes};
use crate::domain::queue::TokenState;
use sqlx::sqlite::SqliteConnection;

// Every table's rows in a batch go to SQLite as one JSON array bound to one statement
// (`json_each`), not one statement per row: each statement is a round trip to sqlx's SQLite
// worker thread (docs/BENCHMARKS.md, "What moved the numbers"). The array keeps the batch's
// order, and SQLite checks the one-live-row indexes row by row in that order, so rows that
// free a seat or a user's token still come before the rows that take it.
// `WHERE true` is SQLite's own advice for `INSERT … SELECT … ON CONFLICT` (it keeps the parser
// from reading ON as a join constraint).

/// The same order as the PostgreSQL store: rows before the rows that reference them.
pub(super) async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &Writes,
) -> Result<(), StoreError> {
    write_reservations(conn, batch).await?;
    super::tickets::write_sqlite(conn, batch).await?;
    write_payments(conn, batch).await?;
    write_wallets(conn, batch).await?;
    write_ledger(conn, batch).await?;
    write_moved(conn, batch).await?;
    write_tokens(conn, batch).await?;
    write_opening(conn, batch).await?;
    super::waitlist::write(conn, batch).await?;
    write_idempotency(conn, batch).await
}

/// The draw's moves, before the tokens' own rows: every new position is past every stored
/// one, so `position` stays unique row by row.
async fn write_moved(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    let moved = batch
        .moved
        .iter()
        .map(|(id, &position)| {
            let position = i64::try_from(position).map_err(|_| {
                StoreError::Corrupt(format!("token position {position} out of range"))
            })?;
            Ok((id.get(), position))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    execute_rows(
        conn,
        "UPDATE queue_tokens SET position = m.position
         FROM (SELECT j.value->>0 AS id, j.value->>1 AS position FROM json_each(?1) AS j) AS m
         WHERE queue_tokens.id = m.id",
        &moved,
    )
    .await?;
    Ok(())
}

/// The fair opening's one row: stored whole, or removed.
async fn write_opening(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    match &batch.opening {
        None => {}
        Some(OpeningWrite::Remove) => {
            sqlx::query("DELETE FROM queue_opening WHERE id = 1")
                .execute(&mut *conn)
                .await?;
        }
        Some(OpeningWrite::Store(record)) => {
            let drawn = rows::opening_drawn_columns(record)?;
            sqlx::query(
                "INSERT INTO queue_opening (id, opens_at_ms, seed, drawn_at_ms, first_position,
                   participants, participants_digest)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET opens_at_ms = excluded.opens_at_ms,
                   seed = excluded.seed, drawn_at_ms = excluded.drawn_at_ms,
                   first_position = excluded.first_position, participants = excluded.participants,
                   participants_digest = excluded.participants_digest",
            )
            .bind(record.opens_at.millis())
            .bind(record.seed.to_hex())
            .bind(drawn.0)
            .bind(drawn.1)
            .bind(drawn.2)
            .bind(drawn.3)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Status changes of stored reservations first, as narrow `UPDATE`s of the reservation and its
/// hold rows (a seat they release may be taken by a new hold of the same batch), then the new
/// reservations and their holds as plain `INSERT`s: the shape PostgreSQL writes (an in-process
/// commit that fails did not happen, so SQLite needs no marker to send a batch once).
async fn write_reservations(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    let (created, changed): (Vec<_>, Vec<_>) = batch
        .reservations
        .values()
        .partition(|r| batch.creates_reservation(r.id));
    let updates: Vec<_> = changed
        .iter()
        .map(|r| {
            (
                r.id.get(),
                r.status.as_str(),
                r.updated_at.millis(),
                rows::hold_state(r.status),
            )
        })
        .collect();
    execute_rows(
        conn,
        "UPDATE reservations SET status = j.value->>1, updated_at_ms = j.value->>2
         FROM json_each(?1) AS j WHERE reservations.id = j.value->>0",
        &updates,
    )
    .await?;
    execute_rows(
        conn,
        "UPDATE holds SET state = j.value->>3
         FROM json_each(?1) AS j WHERE holds.reservation_id = j.value->>0",
        &updates,
    )
    .await?;
    let reservations: Vec<_> = created
        .iter()
        .map(|r| {
            (
                r.id.get(),
                r.user.get(),
                r.schedule.get(),
                r.status.as_str(),
                r.total.won(),
                r.created_at.millis(),
                r.expires_at.millis(),
                r.updated_at.millis(),
            )
        })
        .collect();
    execute_rows(
        conn,
        "INSERT INTO reservations
           (id, user_id, schedule_id, status, total_price, created_at_ms, expires_at_ms, updated_at_ms)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5,
                j.value->>6, j.value->>7
         FROM json_each(?1) AS j ORDER BY j.key",
        &reservations,
    )
    .await?;
    let mut holds = Vec::new();
    for r in &created {
        for (order, seat) in r.seats.iter().enumerate() {
            let order =
                i64::try_from(order).expect("a reservation holds far fewer than 2^63 seats");
            holds.push((r.id.get(), seat.get(), order, rows::hold_state(r.status)));
        }
    }
    execute_rows(
        conn,
        "INSERT INTO holds (reservation_id, seat_id, seat_order, state)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3
         FROM json_each(?1) AS j ORDER BY j.key",
        &holds,
    )
    .await?;
    Ok(())
}

async fn write_payments(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    let payments: Vec<_> = batch
        .payments
        .iter()
        .map(|p| {
            (
                p.id.get(),
                p.reservation.get(),
                p.user.get(),
                p.amount.won(),
                p.at.millis(),
            )
        })
        .collect();
    execute_rows(
        conn,
        "INSERT INTO payments (id, reservation_id, user_id, amount, created_at_ms)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4
         FROM json_each(?1) AS j ORDER BY j.key",
        &payments,
    )
    .await?;
    Ok(())
}

async fn write_wallets(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    let wallets: Vec<_> = batch
        .wallets
        .values()
        .map(|w| (w.user.get(), w.balance.won(), w.at.millis()))
        .collect();
    // Planned as a scan of the array with a primary-key lookup per wallet.
    let updated = execute_rows(
        conn,
        "UPDATE wallets SET balance = j.value->>1, updated_at_ms = j.value->>2
         FROM json_each(?1) AS j WHERE wallets.user_id = j.value->>0",
        &wallets,
    )
    .await?;
    // A wallet is created with its user; an update that finds none means the service's state
    // and the database's disagree.
    if updated != batch.wallets.len() as u64 {
        return Err(StoreError::Corrupt(format!(
            "{} of {} wallets exist",
            updated,
            batch.wallets.len()
        )));
    }
    Ok(())
}

async fn write_ledger(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    let ledger: Vec<_> = batch
        .ledger
        .iter()
        .map(|l| {
            (
                l.id,
                l.user.get(),
                l.kind.as_str(),
                l.amount.won(),
                l.balance_after.won(),
                l.payment.map(|p| p.get()),
                l.at.millis(),
            )
        })
        .collect();
    execute_rows(
        conn,
        "INSERT INTO ledger (id, user_id, kind, amount, balance_after, payment_id, created_at_ms)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5,
                j.value->>6
         FROM json_each(?1) AS j ORDER BY j.key",
        &ledger,
    )
    .await?;
    Ok(())
}

async fn write_tokens(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    // Expired first, for the one-live-token-per-user index (see write_reservations).
    let mut tokens = Vec::with_capacity(batch.tokens.len());
    for live in [false, true] {
        for t in batch
            .tokens
            .values()
            .filter(|t| !matches!(t.state, TokenState::Expired { .. }) == live)
        {
            let (admitted, active_expires, expired) = rows::token_times(t, &batch.admissions);
            let position = i64::try_from(t.position).map_err(|_| {
                StoreError::Corrupt(format!("token position {} out of range", t.position))
            })?;
            tokens.push((
                t.id.get(),
                t.user.get(),
                position,
                t.state.name(),
                t.created_at.millis(),
                admitted,
                active_expires,
                expired,
            ));
        }
    }
    // An expiry carries no admission times: keep the stored ones (COALESCE), as the
    // PostgreSQL store does.
    execute_rows(
        conn,
        "INSERT INTO queue_tokens
           (id, user_id, position, status, created_at_ms, admitted_at_ms, active_expires_at_ms, expired_at_ms)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5,
                j.value->>6, j.value->>7
         FROM json_each(?1) AS j WHERE true ORDER BY j.key
         ON CONFLICT (id) DO UPDATE SET status = excluded.status,
           admitted_at_ms = COALESCE(excluded.admitted_at_ms, queue_tokens.admitted_at_ms),
           active_expires_at_ms = COALESCE(excluded.active_expires_at_ms, queue_tokens.active_expires_at_ms),
           expired_at_ms = excluded.expired_at_ms",
        &tokens,
    )
    .await?;
    Ok(())
}

async fn write_idempotency(conn: &mut SqliteConnection, batch: &Writes) -> Result<(), StoreError> {
    let keys: Vec<_> = batch
        .idempotency
        .iter()
        .map(|r| {
            (
                r.user.get(),
                &r.key,
                &r.fingerprint,
                i64::from(r.status),
                &r.body,
                r.at.millis(),
            )
        })
        .collect();
    // OR IGNORE: the first answer stays the answer.
    execute_rows(
        conn,
        "INSERT OR IGNORE INTO idempotency_keys (user_id, key, fingerprint, status, body, created_at_ms)
         SELECT j.value->>0, j.value->>1, j.value->>2, j.value->>3, j.value->>4, j.value->>5
         FROM json_each(?1) AS j ORDER BY j.key",
        &keys,
    )
    .await?;
    Ok(())
}
