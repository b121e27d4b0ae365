//! The error of each area the engine serves (waiting room, booking, wallet, payment, admin),
//! and how an actor's refusal or unavailability becomes one of them. `http::error` maps each
//! to the envelope, once.

use super::persister::Unavailable;
use crate::domain::queue::TokenRefusal;
use crate::domain::schedule::BookingRefusal;
use crate::domain::waitlist::WaitlistRefusal;
use crate::domain::wallet::WalletRefusal;
use crate::store::StoreError;

/// Why an actor did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError<E> {
    /// The rules said no.
    #[error(transparent)]
    Rejected(E),
    /// The answer cannot be made durable (or the actor cannot be reached) right now.
    #[error(transparent)]
    Unavailable(Unavailable),
}

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("user not found")]
    UserNotFound,
    #[error("token not found")]
    TokenNotFound,
    #[error(transparent)]
    Token(#[from] TokenRefusal),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a concert, seat or reservation operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    #[error("user not found")]
    UserNotFound,
    #[error("concert not found")]
    ConcertNotFound,
    #[error("schedule not found")]
    ScheduleNotFound,
    #[error(transparent)]
    Refused(#[from] BookingRefusal),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a wallet operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("user not found")]
    UserNotFound,
    #[error(transparent)]
    Refused(#[from] WalletRefusal),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a payment did not happen (nothing was debited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("user not found")]
    UserNotFound,
    #[error(transparent)]
    Booking(#[from] BookingRefusal),
    #[error(transparent)]
    Wallet(#[from] WalletRefusal),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why an admin operation failed.
/// The waiting list's answers (API.md §12): the schedule looked up as for a hold, then the
/// list's own rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitlistError {
    #[error(transparent)]
    Booking(#[from] BookingError),
    #[error(transparent)]
    Refused(#[from] WaitlistRefusal),
}

impl From<ActorError<WaitlistRefusal>> for WaitlistError {
    fn from(e: ActorError<WaitlistRefusal>) -> Self {
        match e {
            ActorError::Rejected(rule) => WaitlistError::Refused(rule),
            ActorError::Unavailable(u) => WaitlistError::Booking(BookingError::Unavailable(u)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Two seats of one schedule carry the same number (the database's unique key said so).
    #[error("a seat number appears twice in one schedule")]
    DuplicateSeatNumber,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DuplicateSeatNumber => AdminError::DuplicateSeatNumber,
            other => AdminError::Store(other),
        }
    }
}

impl From<ActorError<BookingRefusal>> for BookingError {
    fn from(e: ActorError<BookingRefusal>) -> Self {
        match e {
            ActorError::Rejected(rule) => BookingError::Refused(rule),
            ActorError::Unavailable(u) => BookingError::Unavailable(u),
        }
    }
}

impl From<ActorError<WalletRefusal>> for WalletError {
    fn from(e: ActorError<WalletRefusal>) -> Self {
        match e {
            ActorError::Rejected(WalletRefusal::UserNotFound) => WalletError::UserNotFound,
            ActorError::Rejected(refusal) => WalletError::Refused(refusal),
            ActorError::Unavailable(u) => WalletError::Unavailable(u),
        }
    }
}

impl From<BookingError> for PaymentError {
    fn from(e: BookingError) -> Self {
        match e {
            BookingError::Refused(rule) => PaymentError::Booking(rule),
            BookingError::Unavailable(u) => PaymentError::Unavailable(u),
            BookingError::UserNotFound => PaymentError::UserNotFound,
            BookingError::ConcertNotFound | BookingError::ScheduleNotFound => {
                PaymentError::Booking(BookingRefusal::ReservationNotFound)
            }
        }
    }
}

impl From<WalletError> for PaymentError {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::Refused(rule) => PaymentError::Wallet(rule),
            WalletError::Unavailable(u) => PaymentError::Unavailable(u),
            WalletError::UserNotFound => PaymentError::UserNotFound,
        }
    }
}

/// Why a ticket operation (the holder's list, a QR code, a transfer) failed (API.md §12).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("user not found")]
    UserNotFound,
    #[error("ticket not found")]
    TicketNotFound,
    #[error("transfer not allowed")]
    TransferNotAllowed,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a scan at the door was not admitted (API.md §12).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoorError {
    #[error(transparent)]
    Refused(#[from] crate::domain::ticket::DoorRefusal),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl From<ActorError<crate::domain::ticket::TransferRefusal>> for TicketError {
    fn from(e: ActorError<crate::domain::ticket::TransferRefusal>) -> Self {
        use crate::domain::ticket::TransferRefusal;
        match e {
            ActorError::Rejected(TransferRefusal::NotFound) => TicketError::TicketNotFound,
            ActorError::Rejected(TransferRefusal::NotAllowed) => TicketError::TransferNotAllowed,
            ActorError::Unavailable(u) => TicketError::Unavailable(u),
        }
    }
}

/// Why a refund did not happen (nothing was credited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    #[error("user not found")]
    UserNotFound,
    #[error("reservation not found")]
    ReservationNotFound,
    #[error("refund not allowed")]
    NotAllowed,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}
