//! The statements of one PostgreSQL group commit, and how they are sent: a batch's rows as
//! `UNNEST` arrays, one statement per table and state, in the order the constraints need.
//!
//! Most batches of a drop are holds, expiries and queue changes, with no two rows of the batch
//! racing for one unique slot (a seat released and taken again, a user's token expired and a
//! new one made). Such a batch is sent as **one statement**: its parts become data-modifying
//! `WITH` clauses of a single `INSERT`, which PostgreSQL runs atomically and commits on its own.
//! That is one round trip and one WAL flush instead of `BEGIN`, a statement per part, and
//! `COMMIT` (docs/BENCHMARKS.md, issue 14). Durability is unchanged: an autocommitted
//! statement answers only after its commit record is flushed (`synchronous_commit` stays on).
//!
//! A batch that does need an order inside it (the parts of a `WITH` run in no promised order),
//! or that moves money (the wallet update must check how many rows it touched before anything
//! commits), is sent as before: one transaction, its statements in order.
//!
//! ## Staging behind an uncommitted batch (the persister's pipeline)
//!
//! Under load the persister stages batch N+1 (`BEGIN`, its statements, no `COMMIT`) on a second
//! connection while batch N's `COMMIT` is in flight, and sends N+1's `COMMIT` only once N's has
//! returned; if N fails, N+1 is rolled back. N+1 is sent only after **every statement of N has
//! returned** (N was itself staged), so N's rows, row locks and index entries are in place, and
//! only if **N+1 moves no money** ([`may_stage_behind`]). Under READ COMMITTED that is enough for
//! N+1 to end exactly as if it had started after N committed, statement by statement:
//!
//! - `reservations`, `holds`, `queue_tokens`: `INSERT … ON CONFLICT (key) DO UPDATE`. A key N
//!   inserted is an index entry of an in-progress transaction: the insert waits for N, then
//!   takes the conflict path and updates the row N wrote (ON CONFLICT acts on the latest
//!   version even when the statement's snapshot cannot see it). A row N updated is row-locked:
//!   the update waits, then applies to N's version (`COALESCE(…, queue_tokens.…)` reads that
//!   version). The partial unique indexes (one live hold per seat, one live token per user)
//!   wait the same way on an entry N inserted or N's update is retiring: a seat released in N
//!   and taken in N+1 is checked once N has committed. None of these tables has a foreign key
//!   to a row the persister writes: `holds` and `reservations` have none (migration 0003), and
//!   `queue_tokens.user_id` names `users`, which only `create_user` writes, committed before any
//!   id of it is handed out.
//! - `idempotency_keys`: `INSERT … ON CONFLICT DO NOTHING`, waits likewise; its foreign key is
//!   `users` again.
//! - The statements that could go wrong are all money: `UPDATE wallets … WHERE user_id = …` (a
//!   plain update, whose row-count check would miss a row N inserted; wallets are only created
//!   by `create_user`, but the rule should not lean on that), `payments` (a foreign key to
//!   `reservations`, whose row N may have inserted and an FK check does not wait for; today a
//!   payment's own reservation upsert runs first in its transaction and waits, so the check
//!   would happen to pass) and `ledger` (a foreign key to `payments`). A batch with any of them
//!   is never staged behind an uncommitted batch: it waits for N's outcome before anything of it
//!   is sent, so none of those arguments is needed. (It may itself be the batch ahead: what
//!   N+1 needs from N is only that N's statements are done.)
//!
//! Nothing waits the other way: N has only its `COMMIT` left, which takes no lock, so N+1
//! waiting on N cannot deadlock. When N fails, N+1 may have done anything (succeeded against
//! the state before N, or hit a unique violation once N's entries vanished): it is rolled back
//! whatever it did, and the persister's failure protocol takes both.

use super::postgres_parts::parts;
use super::statement::{Check, Column, Part};
use super::{fence, Fence, StoreError, Writes};
use crate::domain::queue::TokenState;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashSet;

fn bind<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    columns: Vec<Column<'q>>,
) -> Query<'q, Postgres, PgArguments> {
    for column in columns {
        query = match column {
            Column::I64(v) => query.bind(v),
            Column::I32(v) => query.bind(v),
            Column::Text(v) => query.bind(v),
            Column::OptI64(v) => query.bind(v),
            Column::OwnedOptText(v) => query.bind(v),
        };
    }
    query
}

/// Commits `batch`: as one statement when nothing in it needs an order, else as a transaction.
pub(super) async fn commit(pool: &PgPool, batch: &Writes) -> Result<(), StoreError> {
    let parts = parts(batch);
    if parts.is_empty() {
        return Ok(());
    }
    if fits_one_statement(batch, &parts) {
        let (sql, columns) = one_statement(parts);
        bind(sqlx::query(&sql), columns).execute(pool).await?;
        return Ok(());
    }
    let tx = send_in_transaction(pool, batch, parts).await?;
    tx.commit().await?;
    Ok(())
}

/// Checks the fences, then writes the batch, in one transaction (see `Store::commit_fenced`).
///
/// The check and the audit rows are one statement: it reads each lease `FOR SHARE`, so a
/// takeover's compare-and-set (an `UPDATE` of the same row) waits for this transaction to end,
/// and a transaction that starts after the takeover committed reads the new epoch and is
/// refused. That lock, not any timer, is what keeps a paused or partitioned ex-owner from
/// committing once its shard has moved. An ex-owner that stops *inside* this transaction holds
/// the lock only until `idle_in_transaction_session_timeout` ends its session.
pub(super) async fn commit_fenced(
    pool: &PgPool,
    batch: &Writes,
    node: &str,
    fences: &[Fence],
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    match fenced_parts(&mut tx, batch, node, fences).await {
        Ok(()) => Ok(tx.commit().await?),
        Err(error) => {
            // The fence's or the statement's error is the one worth reporting.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "rollback of a fenced batch failed");
            }
            Err(error)
        }
    }
}

async fn fenced_parts(
    tx: &mut Transaction<'static, Postgres>,
    batch: &Writes,
    node: &str,
    fences: &[Fence],
) -> Result<(), StoreError> {
    let shards: Vec<&str> = fences.iter().map(|f| f.shard.as_str()).collect();
    let epochs: Vec<i64> = fences
        .iter()
        .map(|f| i64::try_from(f.epoch).unwrap_or(i64::MAX))
        .collect();
    let owners: Vec<&str> = fences.iter().map(|f| f.owner_or(node)).collect();
    // The claims that hold, with an audit row each; rolled back with the rest when one does not.
    // Each claim names its owner: this node's own shards, and the schedule a payment commits
    // for at its owner's epoch.
    let held: Vec<(String, i64)> = sqlx::query_as(
        "WITH claim AS (
             SELECT shard, epoch, owner
             FROM UNNEST($1::text[], $2::bigint[], $4::text[]) AS c(shard, epoch, owner)
         ), lease AS (
             SELECT l.shard, l.epoch, l.owner FROM shard_lease l
             WHERE l.shard = ANY($1)
             FOR SHARE
         ), held AS (
             SELECT shard, epoch, owner FROM claim JOIN lease USING (shard, epoch, owner)
         ), audit AS (
             -- Under the owner's name: whose epoch the write was decided under.
             INSERT INTO fence_audit (shard, epoch, node_id) SELECT shard, epoch, owner FROM held
         )
         SELECT shard, epoch FROM held",
    )
    .bind(&shards)
    .bind(&epochs)
    .bind(node)
    .bind(&owners)
    .fetch_all(&mut **tx)
    .await?;
    fence::check(fences, |f| {
        held.iter()
            .any(|(shard, epoch)| *shard == f.shard && *epoch as u64 == f.epoch)
    })?;
    send_parts(tx, batch, parts(batch)).await
}

/// The batch's statements in a transaction left open, for its `COMMIT` to be sent later (see the
/// module doc for which batches may be staged behind an uncommitted one).
pub(super) async fn stage(
    pool: &PgPool,
    batch: &Writes,
) -> Result<Transaction<'static, Postgres>, StoreError> {
    send_in_transaction(pool, batch, parts(batch)).await
}

/// Whether `next` may be staged while the batch ahead has its statements done and its `COMMIT`
/// in flight: every batch but one that moves money (the module doc says why that is enough).
pub(super) fn may_stage_behind(next: &Writes) -> bool {
    !next.moves_money()
}

/// `BEGIN` and the parts: as one statement when their order does not matter, else one by one
/// with their checks. On an error the transaction is rolled back before the error is returned.
async fn send_in_transaction(
    pool: &PgPool,
    batch: &Writes,
    parts: Vec<Part<'_>>,
) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    match send_parts(&mut tx, batch, parts).await {
        Ok(()) => Ok(tx),
        Err(error) => {
            // The statement's error is the one worth reporting; a rollback that fails as well
            // (the connection is gone) leaves nothing committed either.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "rollback of a failed batch failed");
            }
            Err(error)
        }
    }
}

async fn send_parts(
    tx: &mut Transaction<'static, Postgres>,
    batch: &Writes,
    parts: Vec<Part<'_>>,
) -> Result<(), StoreError> {
    if parts.is_empty() {
        return Ok(());
    }
    if fits_one_statement(batch, &parts) {
        let (sql, columns) = one_statement(parts);
        bind(sqlx::query(&sql), columns).execute(&mut **tx).await?;
        return Ok(());
    }
    for part in parts {
        let affected = bind(sqlx::query(part.sql), part.columns)
            .persistent(part.persistent)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if let Check::RowsAffected(expected) = part.check {
            if affected != expected {
                return Err(StoreError::Corrupt(format!(
                    "{affected} of {expected} wallets exist"
                )));
            }
        }
    }
    Ok(())
}

/// Whether the batch's parts can run in any order: no checked part, no seat both released
/// and taken in it, no user with both an ended and a live token in it.
fn fits_one_statement(batch: &Writes, parts: &[Part<'_>]) -> bool {
    if parts.len() == 1 && parts[0].check == Check::None {
        return true;
    }
    if parts.iter().any(|p| p.check != Check::None) {
        return false;
    }
    // The draw moves tokens that other parts of the batch may write too: one statement's parts
    // all see the snapshot before it, so the moves must run before them, in a transaction.
    if batch.opening.is_some() || !batch.moved.is_empty() {
        return false;
    }
    let mut released = HashSet::new();
    for r in batch.reservations.values().filter(|r| !r.status.is_live()) {
        released.extend(r.seats.iter().copied());
    }
    if !released.is_empty()
        && batch
            .reservations
            .values()
            .filter(|r| r.status.is_live())
            .any(|r| r.seats.iter().any(|s| released.contains(s)))
    {
        return false;
    }
    let ended: HashSet<_> = batch
        .tokens
        .values()
        .filter(|t| matches!(t.state, TokenState::Expired { .. }))
        .map(|t| t.user)
        .collect();
    ended.is_empty()
        || !batch
            .tokens
            .values()
            .any(|t| !matches!(t.state, TokenState::Expired { .. }) && ended.contains(&t.user))
}

/// The parts as `WITH p0 AS (…), p1 AS (…) … SELECT`, their parameters renumbered in order.
/// A data-modifying `WITH` clause runs whether or not the main query reads it.
fn one_statement(parts: Vec<Part<'_>>) -> (String, Vec<Column<'_>>) {
    if parts.len() == 1 {
        let part = parts.into_iter().next().expect("one part, checked above");
        return (part.sql.to_string(), part.columns);
    }
    let mut sql = String::from("WITH ");
    let mut columns = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("p{i} AS ("));
        sql.push_str(&renumber(part.sql, columns.len()));
        sql.push(')');
        columns.extend(part.columns);
    }
    sql.push_str(" SELECT 1");
    (sql, columns)
}

/// `sql` with every parameter `$n` written as `$(n + offset)`.
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n = 0usize;
        let mut digits = false;
        while let Some((_, d)) = chars.peek().copied() {
            let Some(v) = d.to_digit(10) else { break };
            n = n * 10 + v as usize;
            digits = true;
            chars.next();
        }
        if digits {
            out.push_str(&(n + offset).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::TokenRecord;
    use crate::domain::schedule::{Reservation, ReservationStatus};
    use crate::domain::{Money, ReservationId, ScheduleId, SeatId, Timestamp, TokenId, UserId};
    use crate::store::WalletRecord;

    fn reservation(id: i64, seats: &[i64], status: ReservationStatus) -> Reservation {
        Reservation {
            id: ReservationId::new(id).expect("positive"),
            user: UserId::new(1).expect("positive"),
            schedule: ScheduleId::new(1).expect("positive"),
            seats: seats
                .iter()
                .map(|s| SeatId::new(*s).expect("positive"))
                .collect(),
            total: Money::new(10).expect("positive"),
            created_at: Timestamp::from_millis(1),
            expires_at: Timestamp::from_millis(2),
            status,
            updated_at: Timestamp::from_millis(1),
            pinned: false,
        }
    }

    fn token(id: i64, user: i64, state: TokenState) -> TokenRecord {
        TokenRecord {
            id: TokenId::new(id).expect("in range"),
            user: UserId::new(user).expect("positive"),
            position: id as u64,
            created_at: Timestamp::from_millis(1),
            state,
        }
    }

    fn one_statement_for(batch: &Writes) -> bool {
        fits_one_statement(batch, &parts(batch))
    }

    #[test]
    fn holds_queue_changes_and_releases_of_other_seats_go_as_one_statement() {
        let batch = Writes::default()
            .reservation(&reservation(1, &[1, 2], ReservationStatus::Pending))
            .reservation(&reservation(2, &[3], ReservationStatus::Expired))
            .token(token(1, 1, TokenState::Waiting))
            .token(token(
                2,
                2,
                TokenState::Expired {
                    at: Timestamp::from_millis(3),
                },
            ));
        assert!(one_statement_for(&batch));
    }

    #[test]
    fn a_seat_released_and_taken_again_needs_the_ordered_transaction() {
        let batch = Writes::default()
            .reservation(&reservation(1, &[1, 2], ReservationStatus::Pending))
            .reservation(&reservation(2, &[2], ReservationStatus::Cancelled));
        assert!(!one_statement_for(&batch));
    }

    #[test]
    fn a_users_token_ended_and_renewed_needs_the_ordered_transaction() {
        let batch = Writes::default()
            .token(token(
                1,
                5,
                TokenState::Expired {
                    at: Timestamp::from_millis(3),
                },
            ))
            .token(token(2, 5, TokenState::Waiting));
        assert!(!one_statement_for(&batch));
    }

    #[test]
    fn money_goes_in_a_transaction_that_checks_the_wallets_exist() {
        let batch = Writes::default().wallet(WalletRecord {
            user: UserId::new(1).expect("positive"),
            balance: Money::new(5).expect("positive"),
            at: Timestamp::from_millis(1),
        });
        assert!(!one_statement_for(&batch));
    }

    #[test]
    fn the_one_statement_numbers_each_parts_parameters_after_the_last() {
        let batch = Writes::default()
            .reservation(&reservation(1, &[1], ReservationStatus::Pending))
            .token(token(1, 1, TokenState::Waiting));
        let (sql, columns) = one_statement(parts(&batch));
        // Reservations (8), live holds (4), live tokens (8).
        assert_eq!(columns.len(), 20);
        assert!(sql.starts_with("WITH p0 AS (INSERT INTO reservations"));
        assert!(sql.contains("$20::int8[]") && !sql.contains("$21"));
        assert!(sql.ends_with(" SELECT 1"));
    }

    #[test]
    fn parameters_are_renumbered_past_the_earlier_parts() {
        assert_eq!(
            renumber("SELECT $1::int8[], $2, $10 FROM t WHERE a = $1", 8),
            "SELECT $9::int8[], $10, $18 FROM t WHERE a = $9"
        );
        // A lone dollar sign is left alone.
        assert_eq!(renumber("SELECT '$' || $1", 2), "SELECT '$' || $3");
    }

    #[test]
    fn money_waits_for_the_batch_ahead_and_everything_else_may_be_staged_behind_it() {
        let holds = Writes::default()
            .reservation(&reservation(1, &[1, 2], ReservationStatus::Pending))
            .reservation(&reservation(2, &[2], ReservationStatus::Cancelled))
            .token(token(1, 1, TokenState::Waiting));
        assert!(may_stage_behind(&holds));
        let wallet = WalletRecord {
            user: UserId::new(1).expect("positive"),
            balance: Money::new(5).expect("positive"),
            at: Timestamp::from_millis(1),
        };
        assert!(!may_stage_behind(&holds.clone().wallet(wallet)));
        let mut ledger_only = Writes::default();
        ledger_only.ledger.push(crate::store::LedgerEntry {
            id: 1,
            user: UserId::new(1).expect("positive"),
            kind: crate::store::LedgerKind::Recharge,
            amount: Money::new(5).expect("positive"),
            balance_after: Money::new(5).expect("positive"),
            payment: None,
            at: Timestamp::from_millis(1),
        });
        assert!(!may_stage_behind(&ledger_only));
        let mut payment_only = Writes::default();
        payment_only.payments.push(crate::store::PaymentRecord {
            id: crate::domain::PaymentId::new(1).expect("positive"),
            reservation: ReservationId::new(1).expect("positive"),
            user: UserId::new(1).expect("positive"),
            amount: Money::new(5).expect("positive"),
            at: Timestamp::from_millis(1),
        });
        assert!(!may_stage_behind(&payment_only));
    }
}
