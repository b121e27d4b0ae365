//! The rows the store reads and writes, as the service sees them: ledger entries, payments,
//! idempotency keys, wallets, and the snapshots the actors are rebuilt from.

use crate::domain::schedule::{Reservation, ScheduleInfo, Seat};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::{ConcertId, Money, PaymentId, ReservationId, Timestamp, UserId};

/// What a ledger row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    Recharge,
    Payment,
    /// A paid reservation's money back (API.md §12: refunded by its owner, or its performance
    /// cancelled); `payment` names the payment refunded.
    Refund,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Recharge => "RECHARGE",
            LedgerKind::Payment => "PAYMENT",
            LedgerKind::Refund => "REFUND",
        }
    }
}

/// One change of one balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub user: UserId,
    pub kind: LedgerKind,
    pub amount: Money,
    pub balance_after: Money,
    pub payment: Option<PaymentId>,
    pub at: Timestamp,
}

/// A completed payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: PaymentId,
    pub reservation: ReservationId,
    pub user: UserId,
    pub amount: Money,
    pub at: Timestamp,
}

/// The first successful answer to an idempotent request, kept with its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user: UserId,
    pub key: String,
    /// The request it answered: the hex SHA-256 digest of its method, path and canonical body
    /// (rows written before digests hold that text itself; the service hashes them on load).
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    pub at: Timestamp,
}

/// A wallet's balance as of `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletRecord {
    pub user: UserId,
    pub balance: Money,
    pub at: Timestamp,
}

/// Users, concerts and schedules: loaded once at boot.
#[derive(Debug, Clone, Default)]
pub struct CatalogSnapshot {
    pub users: Vec<UserId>,
    pub concerts: Vec<(ConcertId, String)>,
    pub schedules: Vec<ScheduleInfo>,
}

/// One schedule's seats and reservations (every status).
#[derive(Debug, Clone, Default)]
pub struct ScheduleSnapshot {
    pub seats: Vec<Seat>,
    /// The seats' plan labels, in the order of `seats` (empty when no seat has any).
    pub plan: Vec<SeatPlan>,
    pub reservations: Vec<Reservation>,
    /// Every ticket of the schedule (API.md §12).
    pub tickets: Vec<crate::domain::ticket::Ticket>,
}

/// One reservation as stored, with its seats (id, number, price) in the order they were asked
/// for: what a read of a settled reservation, gone from its actor's memory, answers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReservation {
    pub reservation: Reservation,
    pub seats: Vec<Seat>,
}

/// A ticket as its holder's list shows it: with its seat's number and plan labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTicket {
    pub ticket: crate::domain::ticket::Ticket,
    pub seat_number: i32,
    pub plan: SeatPlan,
}

/// The highest ids in use, so the service allocates above them.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxIds {
    pub reservation: i64,
    pub payment: i64,
    pub ledger: i64,
    pub ticket: i64,
}
