//! The audit of one schedule (API.md §12, `GET /v1/admin/schedules/{id}/audit`): each invariant
//! counted by SQL from what the database holds, written once for PostgreSQL and SQLite (the
//! memory store counts the same from its tables, `memory/audit.rs`).

use super::dialect::SqlConnection;
use super::rows::Columns;
use super::StoreError;
use crate::domain::ScheduleId;

/// How many rows break each invariant (0 everywhere is a clean audit), and the two totals
/// `sold ≤ capacity` compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditCounts {
    /// Seats in more than one `PAID` reservation.
    pub seats_sold_twice: i64,
    pub sold: i64,
    pub capacity: i64,
    /// `PAID` reservations without exactly one payment.
    pub paid_without_one_payment: i64,
    /// `REFUNDED` reservations without exactly one `REFUND` ledger entry.
    pub refunded_without_one_refund: i64,
    /// Wallets whose balance is not where their ledger leads: a ledger row whose
    /// `balance_after` is not the row before it plus or minus its amount, or a balance that is
    /// not the last row's `balance_after`.
    pub wallets_off_ledger: i64,
    // The lead adds the ticket checks here at merge (issue 28 part A): one ticket per seat of
    // each PAID reservation, only VOID tickets on REFUNDED ones, no ticket checked in twice.
}

const SOLD_TWICE: &str = "SELECT COUNT(*) AS n FROM (
       SELECT h.seat_id FROM holds h JOIN reservations r ON r.id = h.reservation_id
       WHERE r.schedule_id = $1 AND r.status = 'PAID'
       GROUP BY h.seat_id HAVING COUNT(*) > 1) AS twice";

const SOLD: &str = "SELECT COUNT(*) AS n FROM holds h JOIN reservations r
       ON r.id = h.reservation_id WHERE r.schedule_id = $1 AND r.status = 'PAID'";

const CAPACITY: &str = "SELECT COUNT(*) AS n FROM seats WHERE schedule_id = $1";

const PAID_WITHOUT_ONE_PAYMENT: &str = "SELECT COUNT(*) AS n FROM reservations r
       WHERE r.schedule_id = $1 AND r.status = 'PAID'
         AND (SELECT COUNT(*) FROM payments p WHERE p.reservation_id = r.id) <> 1";

/// A refund's ledger row names the refunded reservation's payment (`payment_id`).
const REFUNDED_WITHOUT_ONE_REFUND: &str = "SELECT COUNT(*) AS n FROM reservations r
       WHERE r.schedule_id = $1 AND r.status = 'REFUNDED'
         AND (SELECT COUNT(*) FROM ledger l JOIN payments p ON p.id = l.payment_id
              WHERE p.reservation_id = r.id AND l.kind = 'REFUND') <> 1";

const WALLETS_OFF_LEDGER: &str = "SELECT COUNT(*) AS n FROM wallets w WHERE
       w.balance <> COALESCE((SELECT l.balance_after FROM ledger l WHERE l.user_id = w.user_id
                              ORDER BY l.id DESC LIMIT 1), w.balance)
       OR EXISTS (SELECT 1 FROM (
            SELECT l.balance_after,
                   LAG(l.balance_after) OVER (ORDER BY l.id) AS before,
                   CASE WHEN l.kind = 'PAYMENT' THEN -l.amount ELSE l.amount END AS delta
            FROM ledger l WHERE l.user_id = w.user_id) AS chain
          WHERE chain.before IS NOT NULL AND chain.balance_after <> chain.before + chain.delta)";

async fn count<C: SqlConnection>(conn: &mut C, sql: &str, args: &[i64]) -> Result<i64, StoreError> {
    conn.one_row(sql, args).await?.int8("n")
}

pub(super) async fn audit<C: SqlConnection>(
    conn: &mut C,
    schedule: ScheduleId,
) -> Result<AuditCounts, StoreError> {
    let s = [schedule.get()];
    Ok(AuditCounts {
        seats_sold_twice: count(conn, SOLD_TWICE, &s).await?,
        sold: count(conn, SOLD, &s).await?,
        capacity: count(conn, CAPACITY, &s).await?,
        paid_without_one_payment: count(conn, PAID_WITHOUT_ONE_PAYMENT, &s).await?,
        refunded_without_one_refund: count(conn, REFUNDED_WITHOUT_ONE_REFUND, &s).await?,
        wallets_off_ledger: count(conn, WALLETS_OFF_LEDGER, &[]).await?,
    })
}
