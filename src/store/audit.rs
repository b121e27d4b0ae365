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
    pub tickets: TicketCounts,
}

/// The audit's ticket checks (API.md §12): a paid seat is one ticket, a reservation that is
/// not paid has none that opens the door, and no seat gets in twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TicketCounts {
    /// `PAID` reservations without exactly one `VALID` or `CHECKED_IN` ticket per seat held
    /// (a seat without one, a `VOID` one, or a ticket for a seat the reservation does not hold).
    pub paid_without_one_ticket_per_seat: i64,
    /// Tickets not `VOID` on a reservation that is not `PAID` (refunded, cancelled, never
    /// paid, or missing): a code that would still open the door for money given back.
    pub live_tickets_not_paid: i64,
    /// Seats with more than one ticket carrying a check-in: one place, two people let in. A
    /// `VOID` ticket keeps its check-in (a cancelled performance voids admitted tickets too),
    /// so it counts here.
    pub seats_checked_in_twice: i64,
    /// Live tickets whose status and check-in record disagree: `CHECKED_IN` without the time
    /// and gate of the scan, or `VALID` with them (the door would admit it a second time).
    pub check_ins_off_record: i64,
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

const PAID_WITHOUT_ONE_TICKET_PER_SEAT: &str = "SELECT COUNT(*) AS n FROM reservations r
       WHERE r.schedule_id = $1 AND r.status = 'PAID'
         AND ((SELECT COUNT(*) FROM tickets t WHERE t.reservation_id = r.id)
                <> (SELECT COUNT(*) FROM holds h WHERE h.reservation_id = r.id)
              OR EXISTS (SELECT 1 FROM holds h WHERE h.reservation_id = r.id
                           AND NOT EXISTS (SELECT 1 FROM tickets t
                                           WHERE t.reservation_id = r.id AND t.seat_id = h.seat_id
                                             AND t.status IN ('VALID', 'CHECKED_IN'))))";

const LIVE_TICKETS_NOT_PAID: &str = "SELECT COUNT(*) AS n FROM tickets t
       LEFT JOIN reservations r ON r.id = t.reservation_id
       WHERE t.schedule_id = $1 AND t.status <> 'VOID'
         AND (r.status IS NULL OR r.status <> 'PAID')";

const SEATS_CHECKED_IN_TWICE: &str = "SELECT COUNT(*) AS n FROM (
       SELECT t.seat_id FROM tickets t
       WHERE t.schedule_id = $1 AND t.checked_in_at_ms IS NOT NULL
       GROUP BY t.seat_id HAVING COUNT(*) > 1) AS twice";

const CHECK_INS_OFF_RECORD: &str = "SELECT COUNT(*) AS n FROM tickets t
       WHERE t.schedule_id = $1 AND t.status <> 'VOID'
         AND (t.status = 'CHECKED_IN') <> (t.checked_in_at_ms IS NOT NULL)";

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
        tickets: TicketCounts {
            paid_without_one_ticket_per_seat: count(conn, PAID_WITHOUT_ONE_TICKET_PER_SEAT, &s)
                .await?,
            live_tickets_not_paid: count(conn, LIVE_TICKETS_NOT_PAID, &s).await?,
            seats_checked_in_twice: count(conn, SEATS_CHECKED_IN_TWICE, &s).await?,
            check_ins_off_record: count(conn, CHECK_INS_OFF_RECORD, &s).await?,
        },
    })
}
