//! The statements of one PostgreSQL group commit, and how they are sent: a batch's rows as
//! `UNNEST` arrays, one statement per table and kind of change, in the order the constraints
//! need.
//!
//! **Inserts are inserts** (issue 30). A new row (a hold's reservation and hold rows, a join's
//! token, a payment, a ledger entry) is a plain `INSERT`; a status change (expiry, cancel,
//! payment, refund, admission) is a narrow `UPDATE … FROM UNNEST` keyed by the primary key. The
//! actor that makes a row says it is new (`Writes::created_reservation`, `created_token`).
//! `INSERT … ON CONFLICT` used to make a batch safe to send twice; its speculative insertion
//! cost PostgreSQL 10–13 µs of CPU and an extra WAL record per row. A batch is now never sent
//! twice: every batch writes a marker row (`batch_markers`) in its own transaction, and after a
//! connection lost during `COMMIT` the persister asks the marker ([`batch_committed`]) instead.
//!
//! Most batches of a drop have no two rows racing for one unique slot (a seat released and
//! taken again, a user's token ended and a new one made) and no draw. Such a batch is sent as
//! **one statement**: its parts become data-modifying `WITH` clauses of a single statement,
//! which PostgreSQL runs atomically. Without money it is autocommitted: one round trip and one
//! WAL flush. With money it runs inside `BEGIN … COMMIT`, because the wallets' update must have
//! found every wallet before anything commits: the statement returns that count, checked
//! before the `COMMIT` is sent. A batch that needs an order inside it (the parts of a `WITH` run
//! in no promised order) is sent one statement at a time in a transaction: updates first (they
//! release seats and end tokens), then inserts (which may take them again).
//!
//! ## Staging behind an uncommitted batch (the persister's pipeline)
//!
//! Under load the persister stages batch N+1 (`BEGIN`, its statements, no `COMMIT`) on a second
//! connection while batch N's `COMMIT` is in flight, and sends N+1's `COMMIT` only once N's has
//! returned; if N fails, N+1 is rolled back. N+1 is sent only after **every statement of N has
//! returned** (N was itself staged), so N's rows, row locks and index entries are in place, and
//! only if **N+1 moves no money and updates no row N inserts** ([`may_stage_behind`]). Under
//! READ COMMITTED that is enough for N+1 to end exactly as if it had started after N committed,
//! statement by statement:
//!
//! - An `INSERT` into `reservations`, `holds` or `queue_tokens` whose key or unique slot N holds
//!   (a seat N releases, a user whose token N ends) finds N's index entry of an in-progress
//!   transaction and waits for N; once N commits the slot is free, and the insert goes on. The
//!   partial unique indexes (one live hold per seat, one live token per user) wait the same way.
//!   None of these tables has a foreign key to a row the persister writes: `holds` and
//!   `reservations` have none (migration 0003), and `queue_tokens.user_id` names `users`, which
//!   only `create_user` writes, committed before any id of it is handed out.
//! - An `UPDATE` of a row N updated waits for N's row lock, then applies to N's version
//!   (`COALESCE(…, queue_tokens.…)` reads that version). An `UPDATE` of a row N *inserted* would
//!   not: N's row is invisible to N+1's snapshot and carries no lock an update could wait on, so
//!   the update would find nothing and change nothing. Such a batch is never staged behind N.
//! - `idempotency_keys`: `INSERT … ON CONFLICT DO NOTHING`, waits likewise; its foreign key is
//!   `users` again.
//! - The statements that could go wrong are all money: `UPDATE wallets … WHERE user_id = …`
//!   (whose row-count check would miss a row N inserted; wallets are only created by
//!   `create_user`, but the rule should not lean on that), `payments` (a foreign key to
//!   `reservations`, whose row N may have inserted and an FK check does not wait for) and
//!   `ledger` (a foreign key to `payments`). A batch with any of them is never staged behind an
//!   uncommitted batch: it waits for N's outcome before anything of it is sent. (It may itself
//!   be the batch ahead: what N+1 needs from N is only that N's statements are done.)
//!
//! Nothing waits the other way: N has only its `COMMIT` left, which takes no lock, so N+1
//! waiting on N cannot deadlock. When N fails, N+1 may have done anything (succeeded against
//! the state before N, or hit a unique violation once N's entries vanished): it is rolled back
//! whatever it did, and the persister's failure protocol takes both.

use super::postgres_parts::parts;
use super::statement::{Check, Column, Part};
use super::{fence, BatchMarker, Fence, StoreError, Writes};
use crate::domain::queue::TokenState;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
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

/// Commits `batch`: as one autocommitted statement when nothing in it needs an order or a
/// check before its commit, else as a transaction.
pub(super) async fn commit(pool: &PgPool, batch: &Writes) -> Result<(), StoreError> {
    let parts = parts(batch);
    if parts.is_empty() {
        return Ok(());
    }
    if fits_one_statement(batch, &parts) && parts.iter().all(|p| p.check == Check::None) {
        let statement = one_statement(parts);
        bind(sqlx::query(&statement.sql), statement.columns)
            .execute(pool)
            .await?;
        return Ok(());
    }
    let tx = send_in_transaction(pool, batch, parts).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the batch that wrote `marker` committed: asked after its connection was lost during
/// its `COMMIT`, when nothing else can tell.
///
/// The question inserts the same marker. While the batch's transaction is still in flight the
/// insert waits on its uncommitted key; then it conflicts if the batch committed, and succeeds
/// if it did not. A success also settles the matter for good: the batch can no longer commit
/// (its key is taken), so a "no" can never turn into a late "yes".
///
/// Asked on a new connection: whatever cut the batch's connection may have cut the pool's idle
/// ones too, and the pool hands those out untested.
pub(super) async fn batch_committed(
    pool: &PgPool,
    marker: BatchMarker,
) -> Result<bool, StoreError> {
    let mut connection = PgConnection::connect_with(&pool.connect_options()).await?;
    let inserted = sqlx::query(
        "INSERT INTO batch_markers (id, at_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(marker.id)
    .bind(marker.at.millis())
    .execute(&mut connection)
    .await?
    .rows_affected();
    // The answer is in; a failed goodbye changes nothing.
    let _ = connection.close().await;
    Ok(inserted == 0)
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

/// Whether `next` may be staged while `ahead` has its statements done and its `COMMIT` in
/// flight: every batch but one that moves money or updates a row `ahead` inserts (the module
/// doc says why that is enough).
pub(super) fn may_stage_behind(next: &Writes, ahead: &Writes) -> bool {
    !next.moves_money() && !next.updates_a_row_created_by(ahead)
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
        let statement = one_statement(parts);
        let row = bind(sqlx::query(&statement.sql), statement.columns)
            .fetch_one(&mut **tx)
            .await?;
        let counts: Vec<i64> = sqlx::Row::try_get(&row, 0)?;
        for (check, affected) in statement.checks.iter().zip(counts) {
            verify(*check, u64::try_from(affected).unwrap_or(0))?;
        }
        return Ok(());
    }
    for part in parts {
        let affected = bind(sqlx::query(part.sql), part.columns)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        verify(part.check, affected)?;
    }
    Ok(())
}

/// A checked part's row count against what it must be, before anything commits.
fn verify(check: Check, affected: u64) -> Result<(), StoreError> {
    match check {
        Check::RowsAffected(expected) if affected != expected => Err(StoreError::Corrupt(format!(
            "{affected} of {expected} wallets exist"
        ))),
        _ => Ok(()),
    }
}

/// Whether the batch's parts can run in any order: no seat both released and taken in it, no
/// user with both an ended and a live token in it, no draw. A checked part may be among them:
/// the statement returns its row count, read before the transaction commits.
fn fits_one_statement(batch: &Writes, parts: &[Part<'_>]) -> bool {
    if parts.len() == 1 {
        return true;
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

/// A batch's parts as one statement.
struct OneStatement<'a> {
    sql: String,
    columns: Vec<Column<'a>>,
    /// The checked parts' checks, in the order the statement returns their row counts.
    checks: Vec<Check>,
}

/// The parts as `WITH p0 AS (…), p1 AS (…) … SELECT`, their parameters renumbered in order.
/// A data-modifying `WITH` clause runs whether or not the main query reads it; the main query
/// returns one array: the number of rows each checked part changed, in order.
fn one_statement(parts: Vec<Part<'_>>) -> OneStatement<'_> {
    if parts.len() == 1 && parts[0].check == Check::None {
        let part = parts.into_iter().next().expect("one part, checked above");
        return OneStatement {
            sql: part.sql.to_string(),
            columns: part.columns,
            checks: Vec::new(),
        };
    }
    let mut sql = String::from("WITH ");
    let mut columns = Vec::new();
    let mut counted = Vec::new();
    let mut checks = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("p{i} AS ("));
        sql.push_str(&renumber(part.sql, columns.len()));
        if part.check != Check::None {
            sql.push_str(" RETURNING 1");
            counted.push(format!("(SELECT count(*) FROM p{i})"));
            checks.push(part.check);
        }
        sql.push(')');
        columns.extend(part.columns);
    }
    sql.push_str(&format!(" SELECT ARRAY[{}]::int8[]", counted.join(", ")));
    OneStatement {
        sql,
        columns,
        checks,
    }
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
            .created_reservation(&reservation(1, &[1, 2], ReservationStatus::Pending))
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
            .created_token(token(2, 5, TokenState::Waiting));
        assert!(!one_statement_for(&batch));
    }

    #[test]
    fn money_goes_as_one_statement_that_returns_the_wallets_it_found() {
        let batch = Writes::default()
            .created_reservation(&reservation(1, &[1], ReservationStatus::Pending))
            .wallet(WalletRecord {
                user: UserId::new(1).expect("positive"),
                balance: Money::new(5).expect("positive"),
                at: Timestamp::from_millis(1),
            });
        assert!(one_statement_for(&batch));
        let statement = one_statement(parts(&batch));
        assert!(statement.checks == vec![Check::RowsAffected(1)]);
        assert!(statement
            .sql
            .contains("WHERE wallets.user_id = u.user_id RETURNING 1)"));
        assert!(statement
            .sql
            .ends_with(" SELECT ARRAY[(SELECT count(*) FROM p2)]::int8[]"));
    }

    #[test]
    fn the_one_statement_numbers_each_parts_parameters_after_the_last() {
        let batch = Writes::default()
            .created_reservation(&reservation(1, &[1], ReservationStatus::Pending))
            .created_token(token(1, 1, TokenState::Waiting));
        let statement = one_statement(parts(&batch));
        // Reservations (8), their holds (4), tokens (8).
        assert_eq!(statement.columns.len(), 20);
        let sql = &statement.sql;
        assert!(sql.starts_with("WITH p0 AS (INSERT INTO reservations"));
        assert!(sql.contains("$20::int8[]") && !sql.contains("$21"));
        assert!(!sql.contains("ON CONFLICT"), "inserts are plain inserts");
        assert!(sql.ends_with(" SELECT ARRAY[]::int8[]"));
        assert!(statement.checks.is_empty());
    }

    #[test]
    fn new_rows_are_inserted_and_stored_ones_updated_after_a_marker() {
        let mut batch = Writes::default()
            .created_reservation(&reservation(1, &[1], ReservationStatus::Pending))
            .reservation(&reservation(2, &[2], ReservationStatus::Expired));
        batch.marker = Some(BatchMarker {
            id: 7,
            at: Timestamp::from_millis(5),
            trim_before: Some(Timestamp::from_millis(1)),
        });
        let starts: Vec<String> = parts(&batch)
            .iter()
            .map(|p| {
                p.sql
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            starts,
            vec![
                "INSERT INTO batch_markers",
                "DELETE FROM batch_markers",
                "UPDATE reservations SET",
                "UPDATE holds SET",
                "INSERT INTO reservations",
                "INSERT INTO holds",
            ]
        );
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
        let none = Writes::default();
        assert!(may_stage_behind(&holds, &none));
        let wallet = WalletRecord {
            user: UserId::new(1).expect("positive"),
            balance: Money::new(5).expect("positive"),
            at: Timestamp::from_millis(1),
        };
        assert!(!may_stage_behind(&holds.clone().wallet(wallet), &none));
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
        assert!(!may_stage_behind(&ledger_only, &none));
        let mut payment_only = Writes::default();
        payment_only.payments.push(crate::store::PaymentRecord {
            id: crate::domain::PaymentId::new(1).expect("positive"),
            reservation: ReservationId::new(1).expect("positive"),
            user: UserId::new(1).expect("positive"),
            amount: Money::new(5).expect("positive"),
            at: Timestamp::from_millis(1),
        });
        assert!(!may_stage_behind(&payment_only, &none));
    }

    #[test]
    fn an_update_of_a_row_the_batch_ahead_inserts_waits_for_it() {
        let held = reservation(1, &[1], ReservationStatus::Pending);
        let ahead = Writes::default().created_reservation(&held);
        let cancel =
            Writes::default().reservation(&reservation(1, &[1], ReservationStatus::Cancelled));
        assert!(!may_stage_behind(&cancel, &ahead));
        // Another reservation's change, or a new row, may go behind it.
        let other =
            Writes::default().reservation(&reservation(2, &[2], ReservationStatus::Cancelled));
        assert!(may_stage_behind(&other, &ahead));
        let joined = Writes::default().created_token(token(1, 1, TokenState::Waiting));
        let admitted = Writes::default().token(token(1, 1, TokenState::Waiting));
        assert!(!may_stage_behind(&admitted, &joined));
        // The draw's move of a token the batch ahead inserts is an update as well.
        let drawn = Writes::default().moved(TokenId::new(1).expect("in range"), 9);
        assert!(!may_stage_behind(&drawn, &joined));
    }
}

#[cfg(test)]
mod on_postgres {
    use super::*;
    use crate::domain::Timestamp;
    use crate::store::temp_databases::TempPostgres;

    fn marker(id: i64) -> BatchMarker {
        BatchMarker {
            id,
            at: Timestamp::from_millis(1_000),
            trim_before: None,
        }
    }

    /// The question after an uncertain commit: yes for a batch that committed, no for one that
    /// did not, and a no is final: the batch can never commit afterwards (its marker is taken).
    #[tokio::test]
    async fn a_marker_says_whether_its_batch_committed_and_a_no_is_final() {
        let database = TempPostgres::create().await;
        let store = crate::store::Store::connect(&database.url())
            .await
            .expect("the test database accepts connections");
        store.migrate().await.expect("the migrations apply");
        let pool = PgPool::connect(&database.url()).await.expect("a pool");
        let committed = Writes {
            marker: Some(marker(41)),
            ..Writes::default()
        };
        commit(&pool, &committed)
            .await
            .expect("a batch of its marker alone");
        assert!(batch_committed(&pool, marker(41)).await.expect("answers"));
        assert!(!batch_committed(&pool, marker(42)).await.expect("answers"));
        let late = Writes {
            marker: Some(marker(42)),
            ..Writes::default()
        };
        let error = commit(&pool, &late)
            .await
            .expect_err("a batch found not committed never commits");
        assert!(error.is_refusal_of_content(), "{error}");
        // Old markers go with a later batch.
        let trimming = Writes {
            marker: Some(BatchMarker {
                trim_before: Some(Timestamp::from_millis(2_000)),
                at: Timestamp::from_millis(3_000),
                ..marker(43)
            }),
            ..Writes::default()
        };
        commit(&pool, &trimming).await.expect("commits");
        let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM batch_markers ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("reads");
        assert_eq!(left, vec![43]);
        pool.close().await;
        store.close().await;
    }
}
