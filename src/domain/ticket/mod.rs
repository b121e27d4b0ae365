//! Tickets (API.md §12): one per paid seat, the code a holder shows at the door, checked in
//! exactly once. `code.rs` signs and verifies codes; `book.rs` is one schedule's tickets and
//! the door's, transfers' and refunds' rules over them.

pub mod book;
pub mod code;

pub use book::{DoorRefusal, TicketBook, TransferRefusal};
pub use code::{schedule_named, verify, CodeClaims, CodeError, TicketKeys};

use super::reservation::Reservation;
use super::{ReservationId, ScheduleId, SeatId, TicketId, Timestamp, UserId};

/// A ticket's life: valid → checked in, or valid → void (refunded, cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketStatus {
    Valid,
    CheckedIn,
    Void,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Valid => "VALID",
            TicketStatus::CheckedIn => "CHECKED_IN",
            TicketStatus::Void => "VOID",
        }
    }

    pub fn parse(text: &str) -> Option<TicketStatus> {
        Some(match text {
            "VALID" => TicketStatus::Valid,
            "CHECKED_IN" => TicketStatus::CheckedIn,
            "VOID" => TicketStatus::Void,
            _ => return None,
        })
    }
}

/// The first admitted scan of a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckIn {
    pub at: Timestamp,
    pub gate: String,
}

/// One ticket as stored: a full final state (writing the last one wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: TicketId,
    pub reservation: ReservationId,
    pub schedule: ScheduleId,
    pub seat: SeatId,
    /// Who holds it now: the buyer, or whoever it was last transferred to.
    pub holder: UserId,
    /// 1 at issue, + 1 per transfer: only the code of the current version opens the door.
    pub version: u32,
    pub status: TicketStatus,
    /// When the current version was issued (the code's `i`).
    pub issued_at: Timestamp,
    pub check_in: Option<CheckIn>,
    pub updated_at: Timestamp,
}

impl Ticket {
    /// The tickets of a reservation just paid, one per seat in the reservation's order;
    /// `ids` gives each its id.
    pub fn issue(
        paid: &Reservation,
        now: Timestamp,
        mut ids: impl FnMut() -> TicketId,
    ) -> Vec<Ticket> {
        paid.seats
            .iter()
            .map(|&seat| Ticket {
                id: ids(),
                reservation: paid.id,
                schedule: paid.schedule,
                seat,
                holder: paid.user,
                version: 1,
                status: TicketStatus::Valid,
                issued_at: now,
                check_in: None,
                updated_at: now,
            })
            .collect()
    }

    /// What the current version's code says.
    pub fn claims(&self) -> CodeClaims {
        CodeClaims {
            t: self.id.get(),
            s: self.schedule.get(),
            e: self.seat.get(),
            v: self.version,
            i: self.issued_at.millis().div_euclid(1000),
        }
    }
}
