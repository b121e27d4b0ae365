//! One schedule's tickets, and the rules the door, a transfer and a refund apply to them. Its
//! schedule's actor is the only writer, so a check-in, a transfer and a refund of one ticket are
//! decided one after the other, never at once.

use super::{CheckIn, CodeClaims, Ticket, TicketStatus};
use crate::domain::ids::IdMap;
use crate::domain::{ReservationId, TicketId, Timestamp, UserId};

/// Why the door turns a (correctly signed) code away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoorRefusal {
    /// Not a ticket of this schedule, or not its current version (transferred away).
    #[error("invalid ticket")]
    Invalid,
    #[error("already checked in")]
    AlreadyCheckedIn(CheckIn),
    #[error("ticket void")]
    Void,
}

/// Why a transfer is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransferRefusal {
    /// No such ticket held by the sender.
    #[error("ticket not found")]
    NotFound,
    /// Checked in, void, to oneself, or past the recipient's seat limit.
    #[error("transfer not allowed")]
    NotAllowed,
}

/// Every ticket of one schedule, by id and by reservation.
#[derive(Debug, Clone, Default)]
pub struct TicketBook {
    tickets: IdMap<TicketId, Ticket>,
    by_reservation: IdMap<ReservationId, Vec<TicketId>>,
    /// Reservations whose refund is being committed: their tickets neither enter nor move.
    refunding: crate::domain::ids::IdSet<ReservationId>,
}

impl TicketBook {
    /// The book of these stored tickets.
    pub fn restore(tickets: Vec<Ticket>) -> TicketBook {
        let mut book = TicketBook::default();
        book.issue(tickets);
        book
    }

    /// Adds tickets just issued (a ticket already known keeps its state: a repeated post).
    pub fn issue(&mut self, tickets: Vec<Ticket>) {
        for ticket in tickets {
            if self.tickets.contains_key(&ticket.id) {
                continue;
            }
            self.by_reservation
                .entry(ticket.reservation)
                .or_default()
                .push(ticket.id);
            self.tickets.insert(ticket.id, ticket);
        }
    }

    pub fn get(&self, id: TicketId) -> Option<&Ticket> {
        self.tickets.get(&id)
    }

    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// The tickets of one reservation, in seat order.
    pub fn of_reservation(&self, id: ReservationId) -> Vec<&Ticket> {
        self.by_reservation
            .get(&id)
            .map(|ids| ids.iter().filter_map(|t| self.tickets.get(t)).collect())
            .unwrap_or_default()
    }

    /// The ticket a verified code names, if the code is its current version.
    pub fn current(&self, claims: &CodeClaims) -> Result<&Ticket, DoorRefusal> {
        let id = TicketId::new(claims.t).map_err(|_| DoorRefusal::Invalid)?;
        let ticket = self.tickets.get(&id).ok_or(DoorRefusal::Invalid)?;
        let same = ticket.schedule.get() == claims.s
            && ticket.seat.get() == claims.e
            && ticket.version == claims.v;
        if !same {
            return Err(DoorRefusal::Invalid);
        }
        Ok(ticket)
    }

    /// Admits the ticket of a verified code scanned at `gate` at `at`. Exactly one scan is
    /// admitted; the others are told the first one's time and gate. An `offline` scan (one a
    /// scanner admitted without the service, reported later) made before the admission on
    /// record takes its place: the earliest scan wins.
    pub fn check_in(
        &mut self,
        claims: &CodeClaims,
        gate: &str,
        at: Timestamp,
        offline: bool,
    ) -> Result<&Ticket, DoorRefusal> {
        let id = self.current(claims)?.id;
        let ticket = self.tickets.get_mut(&id).expect("found by current() above");
        if self.refunding.contains(&ticket.reservation) {
            return Err(DoorRefusal::Void);
        }
        match (ticket.status, &ticket.check_in) {
            (TicketStatus::Void, _) => return Err(DoorRefusal::Void),
            (TicketStatus::CheckedIn, Some(first)) if !(offline && at < first.at) => {
                return Err(DoorRefusal::AlreadyCheckedIn(first.clone()));
            }
            _ => {}
        }
        ticket.status = TicketStatus::CheckedIn;
        ticket.check_in = Some(CheckIn {
            at,
            gate: gate.to_string(),
        });
        ticket.updated_at = at;
        Ok(ticket)
    }

    /// Whether `from` may hand this ticket on: theirs, still valid, to someone else.
    pub fn check_transfer(
        &self,
        id: TicketId,
        from: UserId,
        to: UserId,
    ) -> Result<&Ticket, TransferRefusal> {
        let ticket = self
            .tickets
            .get(&id)
            .filter(|t| t.holder == from)
            .ok_or(TransferRefusal::NotFound)?;
        if ticket.status != TicketStatus::Valid
            || to == from
            || self.refunding.contains(&ticket.reservation)
        {
            return Err(TransferRefusal::NotAllowed);
        }
        Ok(ticket)
    }

    /// Hands the ticket to `to` as a new version: the old code stops opening the door.
    pub fn transfer(
        &mut self,
        id: TicketId,
        from: UserId,
        to: UserId,
        now: Timestamp,
    ) -> Result<&Ticket, TransferRefusal> {
        self.check_transfer(id, from, to)?;
        let ticket = self.tickets.get_mut(&id).expect("checked above");
        ticket.holder = to;
        ticket.version += 1;
        // The code's `i` is in seconds: a second transfer within the same second still gets a
        // new code, since `v` changed.
        ticket.issued_at = now;
        ticket.updated_at = now;
        Ok(ticket)
    }

    /// Whether a reservation's tickets may all be voided: none is checked in.
    pub fn none_checked_in(&self, id: ReservationId) -> bool {
        self.of_reservation(id)
            .iter()
            .all(|t| t.status != TicketStatus::CheckedIn)
    }

    /// Holds a reservation's tickets for its refund: every one still valid, all held by the
    /// buyer, none already being refunded (`None` otherwise). Until [`TicketBook::unpin_refund`] or
    /// [`TicketBook::void_reservation`], the door and transfers refuse them.
    pub fn pin_refund(&mut self, id: ReservationId, buyer: UserId) -> Option<Vec<Ticket>> {
        let tickets = self.of_reservation(id);
        let refundable = !tickets.is_empty()
            && !self.refunding.contains(&id)
            && tickets
                .iter()
                .all(|t| t.status == TicketStatus::Valid && t.holder == buyer);
        if !refundable {
            return None;
        }
        let tickets = tickets.into_iter().cloned().collect();
        self.refunding.insert(id);
        Some(tickets)
    }

    /// The refund did not happen: the tickets are as they were.
    pub fn unpin_refund(&mut self, id: ReservationId) {
        self.refunding.remove(&id);
    }

    /// Voids every ticket of a reservation (refunded or cancelled), and gives them back.
    pub fn void_reservation(&mut self, id: ReservationId, now: Timestamp) -> Vec<Ticket> {
        self.refunding.remove(&id);
        let ids = self.by_reservation.get(&id).cloned().unwrap_or_default();
        let mut voided = Vec::with_capacity(ids.len());
        for t in ids {
            if let Some(ticket) = self.tickets.get_mut(&t) {
                ticket.status = TicketStatus::Void;
                ticket.updated_at = now;
                voided.push(ticket.clone());
            }
        }
        voided
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::{Reservation, ReservationStatus};
    use crate::domain::{Money, ScheduleId, SeatId};

    fn paid() -> Reservation {
        Reservation {
            id: ReservationId::new(5).expect("positive"),
            user: UserId::new(1).expect("positive"),
            schedule: ScheduleId::new(2).expect("positive"),
            seats: vec![
                SeatId::new(10).expect("positive"),
                SeatId::new(11).expect("positive"),
            ],
            total: Money::new(20).expect("positive"),
            created_at: Timestamp::from_millis(0),
            expires_at: Timestamp::from_millis(1),
            status: ReservationStatus::Paid,
            updated_at: Timestamp::from_millis(1),
            pinned: false,
        }
    }

    fn book() -> (TicketBook, Vec<Ticket>) {
        let mut next = 0;
        let tickets = Ticket::issue(&paid(), Timestamp::from_millis(1000), || {
            next += 1;
            TicketId::new(next).expect("positive")
        });
        (TicketBook::restore(tickets.clone()), tickets)
    }

    #[test]
    fn one_scan_is_admitted_and_the_next_is_told_the_first() {
        let (mut book, tickets) = book();
        let claims = tickets[0].claims();
        let t = |ms| Timestamp::from_millis(ms);
        assert!(book.check_in(&claims, "north", t(5), false).is_ok());
        assert_eq!(
            book.check_in(&claims, "south", t(6), false),
            Err(DoorRefusal::AlreadyCheckedIn(CheckIn {
                at: t(5),
                gate: "north".into()
            }))
        );
        // The other seat is its own ticket.
        assert!(book
            .check_in(&tickets[1].claims(), "south", t(6), false)
            .is_ok());
    }

    #[test]
    fn an_earlier_offline_scan_takes_the_admission_and_a_later_one_is_refused() {
        let (mut book, tickets) = book();
        let claims = tickets[0].claims();
        let t = |ms| Timestamp::from_millis(ms);
        assert!(book.check_in(&claims, "b", t(20), true).is_ok());
        assert!(book.check_in(&claims, "a", t(10), true).is_ok());
        assert_eq!(
            book.check_in(&claims, "b", t(20), true),
            Err(DoorRefusal::AlreadyCheckedIn(CheckIn {
                at: t(10),
                gate: "a".into()
            }))
        );
        // Online scans never displace one on record.
        assert!(book.check_in(&claims, "c", t(1), false).is_err());
    }

    #[test]
    fn a_transfer_retires_the_old_code_and_refuses_after_check_in() {
        let (mut book, tickets) = book();
        let (one, nine) = (UserId::new(1).expect("+"), UserId::new(9).expect("+"));
        let old = tickets[0].claims();
        let now = Timestamp::from_millis(2000);
        let moved = book.transfer(tickets[0].id, one, nine, now).expect("valid");
        assert_eq!((moved.holder, moved.version), (nine, 2));
        let new = moved.claims();
        assert_eq!(
            book.check_in(&old, "g", now, false),
            Err(DoorRefusal::Invalid)
        );
        assert_eq!(
            book.transfer(tickets[0].id, one, nine, now),
            Err(TransferRefusal::NotFound)
        );
        assert!(book.check_in(&new, "g", now, false).is_ok());
        assert_eq!(
            book.transfer(tickets[0].id, nine, one, now),
            Err(TransferRefusal::NotAllowed)
        );
    }

    #[test]
    fn a_void_ticket_is_refused_at_the_door_and_a_checked_in_one_blocks_a_refund() {
        let (mut book, tickets) = book();
        let r = tickets[0].reservation;
        let now = Timestamp::from_millis(3000);
        assert!(book.none_checked_in(r));
        book.check_in(&tickets[1].claims(), "g", now, false)
            .expect("valid");
        assert!(!book.none_checked_in(r));
        assert_eq!(book.void_reservation(r, now).len(), 2);
        assert_eq!(
            book.check_in(&tickets[0].claims(), "g", now, false),
            Err(DoorRefusal::Void)
        );
    }
}
