//! A reservation and its life (pending → posted | voided | expired), and why a book refuses
//! a request: what a schedule's book holds and answers, apart from the book itself.

use super::{Money, ReservationId, ScheduleId, SeatId, Timestamp, UserId};

/// A reservation's life: pending → posted (paid) | voided (cancelled) | expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationStatus {
    Pending,
    Paid,
    Expired,
    Cancelled,
    /// Paid, then refunded, by its owner or when its performance was cancelled (API.md §12):
    /// its seats are free again.
    Refunded,
}

impl ReservationStatus {
    /// The seed's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Pending => "PAYMENT_PENDING",
            ReservationStatus::Paid => "PAID",
            ReservationStatus::Expired => "EXPIRED",
            ReservationStatus::Cancelled => "CANCELLED",
            ReservationStatus::Refunded => "REFUNDED",
        }
    }

    pub fn parse(text: &str) -> Option<ReservationStatus> {
        Some(match text {
            "PAYMENT_PENDING" => ReservationStatus::Pending,
            "PAID" => ReservationStatus::Paid,
            "EXPIRED" => ReservationStatus::Expired,
            "CANCELLED" => ReservationStatus::Cancelled,
            "REFUNDED" => ReservationStatus::Refunded,
            _ => return None,
        })
    }

    /// Whether the reservation still occupies its seats.
    pub fn is_live(self) -> bool {
        matches!(self, ReservationStatus::Pending | ReservationStatus::Paid)
    }

    /// The refusal a cancel or a payment of a reservation in this state gets: none while it is
    /// pending. Settled states are final, so a settled reservation read back from the store
    /// is refused exactly as the one in memory was.
    pub fn refusal(self) -> Option<BookingRefusal> {
        match self {
            ReservationStatus::Pending => None,
            ReservationStatus::Paid => Some(BookingRefusal::AlreadyPaid),
            ReservationStatus::Expired => Some(BookingRefusal::Expired),
            ReservationStatus::Cancelled => Some(BookingRefusal::Cancelled),
            // It was paid: paying or cancelling it again is what "already paid" refuses.
            ReservationStatus::Refunded => Some(BookingRefusal::AlreadyPaid),
        }
    }
}

/// One reservation of one user on one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub user: UserId,
    pub schedule: ScheduleId,
    /// In the order the client asked for them.
    pub seats: Vec<SeatId>,
    pub total: Money,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub status: ReservationStatus,
    /// When the status last changed.
    pub updated_at: Timestamp,
    /// A payment is between its pin and its outcome: expiry must wait for it.
    pub pinned: bool,
}

/// Why the book refused a request. Each maps to one error of the API contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingRefusal {
    #[error("seat {seat} is not in this schedule")]
    SeatNotFound { seat: SeatId },
    #[error("seat {seat} is held or sold")]
    SeatUnavailable { seat: SeatId },
    #[error("booking is not open")]
    NotOpen,
    #[error("a user may hold at most {limit} seats on a schedule")]
    SeatLimitExceeded { limit: u32 },
    #[error("no seats requested")]
    NoSeats,
    #[error("seat {seat} requested twice")]
    DuplicateSeat { seat: SeatId },
    #[error("reservation not found")]
    ReservationNotFound,
    #[error("reservation expired")]
    Expired,
    #[error("reservation already paid")]
    AlreadyPaid,
    #[error("a payment of this reservation is in progress")]
    PaymentInProgress,
    #[error("reservation cancelled")]
    Cancelled,
    #[error("the performance is cancelled")]
    PerformanceCancelled,
}
