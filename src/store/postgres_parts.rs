//! The statements of a PostgreSQL group commit, one function per table and state: each turns
//! the batch's rows of its table into one `UNNEST` statement (`postgres_writes.rs` sends them).

use super::rows;
use super::statement::{Check, Column, Part};
use super::{OpeningWrite, Writes};
use crate::domain::queue::{TokenRecord, TokenState};
use crate::domain::schedule::Reservation;

/// The batch's statements, in the order a transaction must run them: rows before the rows
/// that reference them, and within holds and tokens the released before the live (see
/// [`hold_parts`]).
pub(super) fn parts(batch: &Writes) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    parts.extend(reservation_part(batch));
    parts.extend(hold_parts(batch));
    // After their reservations (SQLite checks that reference; PostgreSQL keeps the same order).
    parts.extend(super::tickets::pg_part(batch));
    parts.extend(payment_part(batch));
    parts.extend(wallet_part(batch));
    parts.extend(ledger_part(batch));
    parts.extend(moved_part(batch));
    parts.extend(token_parts(batch));
    parts.extend(opening_part(batch));
    parts.extend(super::waitlist::parts(batch));
    parts.extend(idempotency_part(batch));
    parts
}

/// The draw's moves, before the tokens' own rows: every new position is past every stored
/// one, so `position` stays unique row by row.
fn moved_part(batch: &Writes) -> Option<Part<'_>> {
    if batch.moved.is_empty() {
        return None;
    }
    Some(Part::new(
        "UPDATE queue_tokens SET position = m.position
         FROM UNNEST($1::int8[], $2::int8[]) AS m(id, position)
         WHERE queue_tokens.id = m.id",
        vec![
            Column::I64(batch.moved.keys().map(|t| t.get()).collect()),
            Column::I64(batch.moved.values().map(|&p| p as i64).collect()),
        ],
    ))
}

/// The fair opening's one row: stored whole, or removed.
fn opening_part(batch: &Writes) -> Option<Part<'_>> {
    match batch.opening.as_ref()? {
        OpeningWrite::Remove => Some(Part::new("DELETE FROM queue_opening WHERE id = 1", vec![])),
        OpeningWrite::Store(record) => {
            // Checked when the draw stored them: counts of a line, far below i64::MAX.
            let (at, first, participants, digest) =
                rows::opening_drawn_columns(record).unwrap_or((None, None, None, None));
            Some(Part::new(
                "INSERT INTO queue_opening (id, opens_at_ms, seed, drawn_at_ms, first_position,
                   participants, participants_digest)
                 SELECT 1, * FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[],
                                         $5::int8[], $6::text[])
                 ON CONFLICT (id) DO UPDATE SET opens_at_ms = EXCLUDED.opens_at_ms,
                   seed = EXCLUDED.seed, drawn_at_ms = EXCLUDED.drawn_at_ms,
                   first_position = EXCLUDED.first_position,
                   participants = EXCLUDED.participants,
                   participants_digest = EXCLUDED.participants_digest",
                vec![
                    Column::I64(vec![record.opens_at.millis()]),
                    Column::OwnedOptText(vec![Some(record.seed.to_hex())]),
                    Column::OptI64(vec![at]),
                    Column::OptI64(vec![first]),
                    Column::OptI64(vec![participants]),
                    Column::OwnedOptText(vec![digest]),
                ],
            ))
        }
    }
}

fn reservation_part(batch: &Writes) -> Option<Part<'_>> {
    let rs: Vec<&Reservation> = batch.reservations.values().collect();
    if rs.is_empty() {
        return None;
    }
    Some(Part::new(
        "INSERT INTO reservations
           (id, user_id, schedule_id, status, total_price, created_at_ms, expires_at_ms, updated_at_ms)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int8[],
                              $6::int8[], $7::int8[], $8::int8[])
         ON CONFLICT (id) DO UPDATE
           SET status = EXCLUDED.status, updated_at_ms = EXCLUDED.updated_at_ms",
        vec![
            Column::I64(rs.iter().map(|r| r.id.get()).collect()),
            Column::I64(rs.iter().map(|r| r.user.get()).collect()),
            Column::I64(rs.iter().map(|r| r.schedule.get()).collect()),
            Column::Text(rs.iter().map(|r| r.status.as_str()).collect()),
            Column::I64(rs.iter().map(|r| r.total.won()).collect()),
            Column::I64(rs.iter().map(|r| r.created_at.millis()).collect()),
            Column::I64(rs.iter().map(|r| r.expires_at.millis()).collect()),
            Column::I64(rs.iter().map(|r| r.updated_at.millis()).collect()),
        ],
    ))
}

/// Released holds first: the one-live-hold-per-seat index is checked row by row, so a seat
/// released and taken again in the same batch must be freed before it is taken.
fn hold_parts(batch: &Writes) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for live in [false, true] {
        let (mut reservation, mut seat, mut order, mut state) = (vec![], vec![], vec![], vec![]);
        for r in batch
            .reservations
            .values()
            .filter(|r| r.status.is_live() == live)
        {
            for (i, s) in r.seats.iter().enumerate() {
                reservation.push(r.id.get());
                seat.push(s.get());
                order.push(i as i32);
                state.push(rows::hold_state(r.status));
            }
        }
        if reservation.is_empty() {
            continue;
        }
        parts.push(Part::new(
            "INSERT INTO holds (reservation_id, seat_id, seat_order, state)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int4[], $4::text[])
             ON CONFLICT (reservation_id, seat_id) DO UPDATE SET state = EXCLUDED.state",
            vec![
                Column::I64(reservation),
                Column::I64(seat),
                Column::I32(order),
                Column::Text(state),
            ],
        ));
    }
    parts
}

fn payment_part(batch: &Writes) -> Option<Part<'_>> {
    let ps = &batch.payments;
    if ps.is_empty() {
        return None;
    }
    Some(Part::new(
        "INSERT INTO payments (id, reservation_id, user_id, amount, created_at_ms)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[])",
        vec![
            Column::I64(ps.iter().map(|p| p.id.get()).collect()),
            Column::I64(ps.iter().map(|p| p.reservation.get()).collect()),
            Column::I64(ps.iter().map(|p| p.user.get()).collect()),
            Column::I64(ps.iter().map(|p| p.amount.won()).collect()),
            Column::I64(ps.iter().map(|p| p.at.millis()).collect()),
        ],
    ))
}

/// A wallet is created with its user: an update that finds none means the service's state and
/// the database's disagree, so the part checks that it touched every wallet.
fn wallet_part(batch: &Writes) -> Option<Part<'_>> {
    let ws: Vec<_> = batch.wallets.values().collect();
    if ws.is_empty() {
        return None;
    }
    Some(Part {
        sql: "UPDATE wallets SET balance = u.balance, updated_at_ms = u.at
              FROM UNNEST($1::int8[], $2::int8[], $3::int8[]) AS u(user_id, balance, at)
              WHERE wallets.user_id = u.user_id",
        columns: vec![
            Column::I64(ws.iter().map(|w| w.user.get()).collect()),
            Column::I64(ws.iter().map(|w| w.balance.won()).collect()),
            Column::I64(ws.iter().map(|w| w.at.millis()).collect()),
        ],
        check: Check::RowsAffected(ws.len() as u64),
        // Not a kept prepared statement: a generic plan made while `wallets` was still
        // small is a sequential scan kept for the connection's life; planned per
        // execution, the update is an index lookup per wallet (docs/BENCHMARKS.md, "What
        // moved the numbers").
        persistent: false,
    })
}

fn ledger_part(batch: &Writes) -> Option<Part<'_>> {
    let ls = &batch.ledger;
    if ls.is_empty() {
        return None;
    }
    Some(Part::new(
        "INSERT INTO ledger (id, user_id, kind, amount, balance_after, payment_id, created_at_ms)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[],
                              $6::int8[], $7::int8[])",
        vec![
            Column::I64(ls.iter().map(|l| l.id).collect()),
            Column::I64(ls.iter().map(|l| l.user.get()).collect()),
            Column::Text(ls.iter().map(|l| l.kind.as_str()).collect()),
            Column::I64(ls.iter().map(|l| l.amount.won()).collect()),
            Column::I64(ls.iter().map(|l| l.balance_after.won()).collect()),
            Column::OptI64(ls.iter().map(|l| l.payment.map(|p| p.get())).collect()),
            Column::I64(ls.iter().map(|l| l.at.millis()).collect()),
        ],
    ))
}

/// Ended tokens first, for the one-live-token-per-user index (as with [`hold_parts`]).
fn token_parts(batch: &Writes) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for live in [false, true] {
        let ts: Vec<&TokenRecord> = batch
            .tokens
            .values()
            .filter(|t| !matches!(t.state, TokenState::Expired { .. }) == live)
            .collect();
        if ts.is_empty() {
            continue;
        }
        let mut admitted = Vec::with_capacity(ts.len());
        let mut active_expires = Vec::with_capacity(ts.len());
        let mut expired = Vec::with_capacity(ts.len());
        for t in &ts {
            let (a, e, x) = rows::token_times(t, &batch.admissions);
            admitted.push(a);
            active_expires.push(e);
            expired.push(x);
        }
        parts.push(Part::new(
            "INSERT INTO queue_tokens
               (id, user_id, position, status, created_at_ms, admitted_at_ms, active_expires_at_ms, expired_at_ms)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int8[],
                                  $6::int8[], $7::int8[], $8::int8[])
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,
               admitted_at_ms = COALESCE(EXCLUDED.admitted_at_ms, queue_tokens.admitted_at_ms),
               active_expires_at_ms = COALESCE(EXCLUDED.active_expires_at_ms, queue_tokens.active_expires_at_ms),
               expired_at_ms = EXCLUDED.expired_at_ms",
            vec![
                Column::I64(ts.iter().map(|t| t.id.get()).collect()),
                Column::I64(ts.iter().map(|t| t.user.get()).collect()),
                Column::I64(ts.iter().map(|t| t.position as i64).collect()),
                Column::Text(ts.iter().map(|t| t.state.name()).collect()),
                Column::I64(ts.iter().map(|t| t.created_at.millis()).collect()),
                Column::OptI64(admitted),
                Column::OptI64(active_expires),
                Column::OptI64(expired),
            ],
        ));
    }
    parts
}

fn idempotency_part(batch: &Writes) -> Option<Part<'_>> {
    let ks = &batch.idempotency;
    if ks.is_empty() {
        return None;
    }
    // DO NOTHING: the first answer stays the answer, even if a duplicate ever got this far.
    Some(Part::new(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, created_at_ms)
         SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::int8[])
         ON CONFLICT (user_id, key) DO NOTHING",
        vec![
            Column::I64(ks.iter().map(|r| r.user.get()).collect()),
            Column::Text(ks.iter().map(|r| r.key.as_str()).collect()),
            Column::Text(ks.iter().map(|r| r.fingerprint.as_str()).collect()),
            Column::I32(ks.iter().map(|r| i32::from(r.status)).collect()),
            Column::Text(ks.iter().map(|r| r.body.as_str()).collect()),
            Column::I64(ks.iter().map(|r| r.at.millis()).collect()),
        ],
    ))
}
