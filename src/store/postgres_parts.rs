//! The statements of a PostgreSQL group commit, one function per table and state: each turns
//! the batch's rows of its table into one `UNNEST` statement (`postgres_writes.rs` sends them).

use super::rows;
use super::statement::{Check, Column, Part};
use super::{OpeningWrite, Writes};
use crate::domain::queue::TokenRecord;
use crate::domain::schedule::Reservation;

/// The batch's statements, in the order a transaction must run them: rows before the rows
/// that reference them, and for holds and tokens the updates (which release seats and end
/// tokens) before the inserts (which may take them again): the one-live-hold-per-seat and
/// one-live-token-per-user indexes are checked row by row.
pub(super) fn parts(batch: &Writes) -> Vec<Part<'_>> {
    let mut parts = marker_parts(batch);
    // Updates before inserts: a seat released by an update may be taken by an insert.
    parts.extend(reservation_update_parts(batch));
    parts.extend(reservation_insert_part(batch));
    parts.extend(hold_insert_part(batch));
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

/// New reservations, inserted: plain `INSERT`s, no `ON CONFLICT` (a batch is never sent twice
/// after it may have committed: an uncertain commit is resolved by its marker first, see
/// [`marker_parts`]).
fn reservation_insert_part(batch: &Writes) -> Option<Part<'_>> {
    let rs: Vec<&Reservation> = batch
        .reservations
        .values()
        .filter(|r| batch.creates_reservation(r.id))
        .collect();
    if rs.is_empty() {
        return None;
    }
    Some(Part::new(
        "INSERT INTO reservations
           (id, user_id, schedule_id, status, total_price, created_at_ms, expires_at_ms, updated_at_ms)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int8[],
                              $6::int8[], $7::int8[], $8::int8[])",
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

/// Status changes of stored reservations (expiry, cancel, payment, refund): one narrow
/// `UPDATE` keyed by the primary key, and one of their hold rows keyed by the holds' primary
/// key's first column. (Every session plans each execution: see `PgStore::connect_with`.)
fn reservation_update_parts(batch: &Writes) -> Vec<Part<'_>> {
    let rs: Vec<&Reservation> = batch
        .reservations
        .values()
        .filter(|r| !batch.creates_reservation(r.id))
        .collect();
    if rs.is_empty() {
        return Vec::new();
    }
    let ids: Vec<i64> = rs.iter().map(|r| r.id.get()).collect();
    vec![
        Part::new(
            "UPDATE reservations SET status = u.status, updated_at_ms = u.at
             FROM UNNEST($1::int8[], $2::text[], $3::int8[]) AS u(id, status, at)
             WHERE reservations.id = u.id",
            vec![
                Column::I64(ids.clone()),
                Column::Text(rs.iter().map(|r| r.status.as_str()).collect()),
                Column::I64(rs.iter().map(|r| r.updated_at.millis()).collect()),
            ],
        ),
        Part::new(
            "UPDATE holds SET state = u.state
             FROM UNNEST($1::int8[], $2::text[]) AS u(reservation_id, state)
             WHERE holds.reservation_id = u.reservation_id",
            vec![
                Column::I64(ids),
                Column::Text(rs.iter().map(|r| rows::hold_state(r.status)).collect()),
            ],
        ),
    ]
}

/// The hold rows of new reservations, one per seat, inserted.
fn hold_insert_part(batch: &Writes) -> Option<Part<'_>> {
    let (mut reservation, mut seat, mut order, mut state) = (vec![], vec![], vec![], vec![]);
    for r in batch
        .reservations
        .values()
        .filter(|r| batch.creates_reservation(r.id))
    {
        for (i, s) in r.seats.iter().enumerate() {
            reservation.push(r.id.get());
            seat.push(s.get());
            order.push(i as i32);
            state.push(rows::hold_state(r.status));
        }
    }
    if reservation.is_empty() {
        return None;
    }
    Some(Part::new(
        "INSERT INTO holds (reservation_id, seat_id, seat_order, state)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int4[], $4::text[])",
        vec![
            Column::I64(reservation),
            Column::I64(seat),
            Column::I32(order),
            Column::Text(state),
        ],
    ))
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

/// Token changes: updates of stored tokens (an admission, an expiry, a spent token), then the
/// new tokens of joins, inserted (the order [`parts`] explains).
fn token_parts(batch: &Writes) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for created in [false, true] {
        let ts: Vec<&TokenRecord> = batch
            .tokens
            .values()
            .filter(|t| batch.creates_token(t.id) == created)
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
        let ids = Column::I64(ts.iter().map(|t| t.id.get()).collect());
        let status = Column::Text(ts.iter().map(|t| t.state.name()).collect());
        parts.push(if created {
            Part::new(
                "INSERT INTO queue_tokens
                   (id, user_id, position, status, created_at_ms, admitted_at_ms, active_expires_at_ms, expired_at_ms)
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::int8[],
                                      $6::int8[], $7::int8[], $8::int8[])",
                vec![
                    ids,
                    Column::I64(ts.iter().map(|t| t.user.get()).collect()),
                    Column::I64(ts.iter().map(|t| t.position as i64).collect()),
                    status,
                    Column::I64(ts.iter().map(|t| t.created_at.millis()).collect()),
                    Column::OptI64(admitted),
                    Column::OptI64(active_expires),
                    Column::OptI64(expired),
                ],
            )
        } else {
            Part::new(
                    "UPDATE queue_tokens SET status = u.status,
                       admitted_at_ms = COALESCE(u.admitted, queue_tokens.admitted_at_ms),
                       active_expires_at_ms = COALESCE(u.active_expires, queue_tokens.active_expires_at_ms),
                       expired_at_ms = u.expired
                     FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
                       AS u(id, status, admitted, active_expires, expired)
                     WHERE queue_tokens.id = u.id",
                    vec![
                        ids,
                        status,
                        Column::OptI64(admitted),
                        Column::OptI64(active_expires),
                        Column::OptI64(expired),
                    ],
            )
        });
    }
    parts
}

/// The batch's marker row, and the trim of markers old enough to have answered every
/// question (see `Writes::marker`).
fn marker_parts(batch: &Writes) -> Vec<Part<'_>> {
    let Some(marker) = batch.marker else {
        return Vec::new();
    };
    let mut parts = vec![Part::new(
        "INSERT INTO batch_markers (id, at_ms) SELECT * FROM UNNEST($1::int8[], $2::int8[])",
        vec![
            Column::I64(vec![marker.id]),
            Column::I64(vec![marker.at.millis()]),
        ],
    )];
    if let Some(before) = marker.trim_before {
        parts.push(Part::new(
            "DELETE FROM batch_markers WHERE at_ms < ANY($1::int8[])",
            vec![Column::I64(vec![before.millis()])],
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
