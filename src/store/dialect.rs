//! What differs between PostgreSQL and SQLite for the statements both run, in one place: how a
//! parameter is written, the two token queries built on a construct only PostgreSQL has, and
//! how a statement is sent on each database's connection ([`SqlConnection`]).
//!
//! Shared statements are written once, in PostgreSQL's form (`$1`, `$2`, …), and
//! [`Dialect::placeholders`] writes them as SQLite's numbered `?1`, `?2`, … (as
//! `postgres_writes.rs::renumber` does for the parts of one statement). The writes are not
//! shared: each backend sends a batch its own way (`UNNEST` arrays against `json_each`).

use super::rows::Columns;
use super::StoreError;
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Database, Encode, Type};
use std::borrow::Cow;
use std::future::Future;

/// The SQL backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `sql`, written with PostgreSQL's `$n` parameters, as this database writes them. SQLite
    /// would read `$1` as a *named* parameter, numbered by first appearance rather than by its
    /// digits, so it gets `?n`, which keeps the number.
    pub fn placeholders(self, sql: &str) -> Cow<'_, str> {
        match self {
            Dialect::Postgres => Cow::Borrowed(sql),
            Dialect::Sqlite => Cow::Owned(numbered_question_marks(sql)),
        }
    }

    /// Every user's latest token, in ascending position order.
    pub fn latest_tokens(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                "SELECT * FROM (
                     SELECT DISTINCT ON (user_id) id, user_id, position, status, created_at_ms,
                            admitted_at_ms, active_expires_at_ms, expired_at_ms
                     FROM queue_tokens ORDER BY user_id, position DESC
                 ) latest ORDER BY position"
            }
            // SQLite has no DISTINCT ON. `position` is unique, so the row holding its user's
            // highest position is exactly the row PostgreSQL's DISTINCT ON … ORDER BY position
            // DESC keeps; the (user_id, position DESC) index answers the subquery, the unique
            // index on `position` the order.
            Dialect::Sqlite => {
                "SELECT id, user_id, position, status, created_at_ms,
                        admitted_at_ms, active_expires_at_ms, expired_at_ms
                 FROM queue_tokens q
                 WHERE position = (SELECT MAX(position) FROM queue_tokens WHERE user_id = q.user_id)
                 ORDER BY position"
            }
        }
    }

    /// The tokens replaced by a join among the last `$1` positions, each with the position of
    /// the token that replaced it (`replaced_by`, its user's next), in ascending order of that.
    /// One range scan of the `position` index over the window, one probe of the per-user index
    /// each (and, on SQLite, one of `position`): the cost is bounded by the window, not by the
    /// table.
    pub fn superseded_tokens(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                "SELECT t.position AS replaced_by, p.id, p.user_id, p.position, p.status,
                        p.created_at_ms, p.admitted_at_ms, p.active_expires_at_ms, p.expired_at_ms
                 FROM queue_tokens t
                 CROSS JOIN LATERAL (
                     SELECT * FROM queue_tokens p
                     WHERE p.user_id = t.user_id AND p.position < t.position
                     ORDER BY p.position DESC LIMIT 1
                 ) p
                 WHERE t.position > (SELECT COALESCE(MAX(position), 0) FROM queue_tokens) - $1
                 ORDER BY t.position"
            }
            // No LATERAL: the previous token is found by its position, which is unique.
            Dialect::Sqlite => {
                "SELECT t.position AS replaced_by, p.id, p.user_id, p.position, p.status,
                        p.created_at_ms, p.admitted_at_ms, p.active_expires_at_ms, p.expired_at_ms
                 FROM queue_tokens t
                 JOIN queue_tokens p ON p.position = (
                     SELECT MAX(position) FROM queue_tokens
                     WHERE user_id = t.user_id AND position < t.position
                 )
                 WHERE t.position > (SELECT COALESCE(MAX(position), 0) FROM queue_tokens) - $1
                 ORDER BY t.position"
            }
        }
    }
}

/// `sql` with every parameter `$n` written as `?n`.
fn numbered_question_marks(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let numbered = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if numbered { '?' } else { c });
    }
    out
}

/// One connection of a SQL backend, as the shared reads (`reads.rs`) use it: a statement in
/// PostgreSQL's form with integer parameters, its rows read through [`Columns`].
pub(super) trait SqlConnection: Send {
    type Row: Columns + Send;
    const DIALECT: Dialect;

    /// Every row of `sql`.
    fn rows(
        &mut self,
        sql: &str,
        args: &[i64],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// The row of `sql`, if there is one.
    fn optional_row(
        &mut self,
        sql: &str,
        args: &[i64],
    ) -> impl Future<Output = Result<Option<Self::Row>, StoreError>> + Send;

    /// The one row of `sql` (an error if there is none).
    fn one_row(
        &mut self,
        sql: &str,
        args: &[i64],
    ) -> impl Future<Output = Result<Self::Row, StoreError>> + Send;

    /// Each row of `sql` to `each` as it arrives, without every row alive at once.
    fn each_row(
        &mut self,
        sql: &str,
        args: &[i64],
        each: &mut (dyn FnMut(&Self::Row) -> Result<(), StoreError> + Send),
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Runs `sql`; the number of rows it changed.
    fn execute(
        &mut self,
        sql: &str,
        args: &[i64],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// `sql` with `args` bound in order.
fn bound<'q, DB: Database>(sql: &'q str, args: &[i64]) -> Query<'q, DB, DB::Arguments<'q>>
where
    i64: Encode<'q, DB> + Type<DB>,
{
    args.iter()
        .fold(sqlx::query(sql), |query, arg| query.bind(*arg))
}

/// The same code for both connection types: only the types and the dialect differ.
macro_rules! sql_connection_for {
    ($connection:ty, $row:ty, $dialect:expr) => {
        impl SqlConnection for $connection {
            type Row = $row;
            const DIALECT: Dialect = $dialect;

            async fn rows(&mut self, sql: &str, args: &[i64]) -> Result<Vec<$row>, StoreError> {
                let sql = Self::DIALECT.placeholders(sql);
                let query = bound(&sql, args);
                Ok(query.fetch_all(self).await?)
            }

            async fn optional_row(
                &mut self,
                sql: &str,
                args: &[i64],
            ) -> Result<Option<$row>, StoreError> {
                let sql = Self::DIALECT.placeholders(sql);
                let query = bound(&sql, args);
                Ok(query.fetch_optional(self).await?)
            }

            async fn one_row(&mut self, sql: &str, args: &[i64]) -> Result<$row, StoreError> {
                let sql = Self::DIALECT.placeholders(sql);
                let query = bound(&sql, args);
                Ok(query.fetch_one(self).await?)
            }

            async fn each_row(
                &mut self,
                sql: &str,
                args: &[i64],
                each: &mut (dyn FnMut(&$row) -> Result<(), StoreError> + Send),
            ) -> Result<(), StoreError> {
                let sql = Self::DIALECT.placeholders(sql);
                let query = bound(&sql, args);
                let mut rows = query.fetch(self);
                while let Some(row) = rows.try_next().await? {
                    each(&row)?;
                }
                Ok(())
            }

            async fn execute(&mut self, sql: &str, args: &[i64]) -> Result<u64, StoreError> {
                let sql = Self::DIALECT.placeholders(sql);
                let query = bound(&sql, args);
                Ok(query.execute(self).await?.rows_affected())
            }
        }
    };
}

sql_connection_for!(PgConnection, PgRow, Dialect::Postgres);
sql_connection_for!(SqliteConnection, SqliteRow, Dialect::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_keeps_each_parameters_number() {
        assert_eq!(
            Dialect::Sqlite.placeholders("SELECT $2, $10 FROM t WHERE a = $1 AND b = '$'"),
            "SELECT ?2, ?10 FROM t WHERE a = ?1 AND b = '$'"
        );
        assert_eq!(Dialect::Postgres.placeholders("SELECT $1"), "SELECT $1");
    }
}
