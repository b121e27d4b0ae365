//! One table's rows of a batch as one statement, the shape both stores write in: for
//! PostgreSQL a [`Part`] (its SQL and the `UNNEST` columns it binds), for SQLite
//! [`execute_rows`] (the rows bound as one JSON array read back with `json_each`). The tables'
//! own files (`postgres_parts.rs`, `tickets.rs`, `waitlist.rs`, `sqlite_writes.rs`) build them;
//! `postgres_writes.rs` and `sqlite_writes.rs` send them.

use super::StoreError;
use sqlx::sqlite::SqliteConnection;

/// One `UNNEST` argument: a column of the batch's rows.
pub(super) enum Column<'a> {
    I64(Vec<i64>),
    I32(Vec<i32>),
    Text(Vec<&'a str>),
    OptI64(Vec<Option<i64>>),
    OwnedOptText(Vec<Option<String>>),
}

/// What a statement's result must show before the batch may commit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    None,
    /// Exactly this many rows updated: every wallet written must exist.
    RowsAffected(u64),
}

/// One statement of the batch: its SQL with parameters numbered from `$1`, and its columns.
pub(super) struct Part<'a> {
    pub(super) sql: &'static str,
    pub(super) columns: Vec<Column<'a>>,
    pub(super) check: Check,
}

impl<'a> Part<'a> {
    pub(super) fn new(sql: &'static str, columns: Vec<Column<'a>>) -> Part<'a> {
        Part {
            sql,
            columns,
            check: Check::None,
        }
    }
}

/// Runs `sql` with `rows` bound as `?1`, a JSON array of arrays; returns the rows changed.
pub(super) async fn execute_rows<T: serde::Serialize>(
    conn: &mut SqliteConnection,
    sql: &'static str,
    rows: &[T],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    // Tuples of integers, strings and options: serializing them cannot fail.
    let json = serde_json::to_string(rows)
        .map_err(|e| StoreError::Corrupt(format!("a batch that is not JSON: {e}")))?;
    Ok(sqlx::query(sql)
        .bind(json)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}
