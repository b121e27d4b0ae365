//! The memory store's ticket checks of the audit: the counts `store/audit.rs` takes by SQL
//! (`TicketCounts`), taken from the tables, so a test on the memory store audits alike.

use super::tables::Tables;
use crate::domain::schedule::ReservationStatus;
use crate::domain::ticket::{Ticket, TicketStatus};
use crate::domain::{ReservationId, ScheduleId, SeatId};
use crate::store::audit::TicketCounts;
use std::collections::{HashMap, HashSet};

/// The ticket checks over one schedule's tickets and reservations; `of_schedule` is the
/// schedule's reservation ids.
pub(super) fn ticket_counts(
    t: &Tables,
    schedule: ScheduleId,
    of_schedule: &[ReservationId],
) -> TicketCounts {
    let tickets: Vec<&Ticket> = t
        .tickets
        .values()
        .filter(|ticket| ticket.schedule == schedule)
        .collect();
    let mut of_reservation: HashMap<ReservationId, Vec<&Ticket>> = HashMap::new();
    for ticket in &tickets {
        of_reservation
            .entry(ticket.reservation)
            .or_default()
            .push(ticket);
    }
    let paid_without_one_ticket_per_seat = of_schedule
        .iter()
        .filter_map(|id| t.reservations.get(id))
        .filter(|r| r.status == ReservationStatus::Paid)
        .filter(|r| {
            let mine = of_reservation.get(&r.id).map_or(&[][..], Vec::as_slice);
            let live: HashSet<SeatId> = mine
                .iter()
                .filter(|ticket| ticket.status != TicketStatus::Void)
                .map(|ticket| ticket.seat)
                .collect();
            mine.len() != r.seats.len() || r.seats.iter().any(|seat| !live.contains(seat))
        })
        .count() as i64;
    let live_tickets_not_paid = tickets
        .iter()
        .filter(|ticket| ticket.status != TicketStatus::Void)
        .filter(|ticket| {
            t.reservations
                .get(&ticket.reservation)
                .is_none_or(|r| r.status != ReservationStatus::Paid)
        })
        .count() as i64;
    let mut check_ins: HashMap<SeatId, i64> = HashMap::new();
    for ticket in tickets.iter().filter(|ticket| ticket.check_in.is_some()) {
        *check_ins.entry(ticket.seat).or_default() += 1;
    }
    let check_ins_off_record = tickets
        .iter()
        .filter(|ticket| ticket.status != TicketStatus::Void)
        .filter(|ticket| (ticket.status == TicketStatus::CheckedIn) != ticket.check_in.is_some())
        .count() as i64;
    TicketCounts {
        paid_without_one_ticket_per_seat,
        live_tickets_not_paid,
        seats_checked_in_twice: check_ins.values().filter(|&&n| n > 1).count() as i64,
        check_ins_off_record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::Reservation;
    use crate::domain::ticket::CheckIn;
    use crate::domain::{Money, TicketId, Timestamp, UserId};

    fn reservation(id: i64, status: ReservationStatus, seats: &[i64]) -> Reservation {
        Reservation {
            id: ReservationId::new(id).expect("positive"),
            user: UserId::new(1).expect("positive"),
            schedule: ScheduleId::new(1).expect("positive"),
            seats: seats
                .iter()
                .map(|&s| SeatId::new(s).expect("positive"))
                .collect(),
            total: Money::new(10).expect("positive"),
            created_at: Timestamp::from_millis(0),
            expires_at: Timestamp::from_millis(1),
            status,
            updated_at: Timestamp::from_millis(1),
            pinned: false,
        }
    }

    /// Reservation 1 paid for seats 1 and 2 (seat 1 checked in), reservation 2 refunded for
    /// seat 3, reservation 3 paid for seat 3 again.
    fn sold() -> Tables {
        let mut t = Tables::default();
        let rows = [
            reservation(1, ReservationStatus::Paid, &[1, 2]),
            reservation(2, ReservationStatus::Refunded, &[3]),
            reservation(3, ReservationStatus::Paid, &[3]),
        ];
        let mut next = 0;
        for r in rows {
            let mut tickets = Ticket::issue(&r, Timestamp::from_millis(5), || {
                next += 1;
                TicketId::new(next).expect("positive")
            });
            if r.status == ReservationStatus::Refunded {
                tickets
                    .iter_mut()
                    .for_each(|t| t.status = TicketStatus::Void);
            }
            t.tickets.extend(tickets.into_iter().map(|t| (t.id, t)));
            t.reservations.insert(r.id, r);
        }
        let first = t
            .tickets
            .get_mut(&TicketId::new(1).expect("+"))
            .expect("ticket 1");
        first.status = TicketStatus::CheckedIn;
        first.check_in = Some(CheckIn {
            at: Timestamp::from_millis(9),
            gate: "north".into(),
        });
        t
    }

    fn counts(t: &Tables) -> TicketCounts {
        let ids: Vec<ReservationId> = t.reservations.keys().copied().collect();
        ticket_counts(t, ScheduleId::new(1).expect("positive"), &ids)
    }

    fn ticket(t: &mut Tables, id: i64) -> &mut Ticket {
        t.tickets
            .get_mut(&TicketId::new(id).expect("positive"))
            .expect("a ticket")
    }

    #[test]
    fn a_sale_with_a_check_in_a_refund_and_a_resale_counts_nothing() {
        assert_eq!(counts(&sold()), TicketCounts::default());
    }

    #[test]
    fn each_broken_ticket_row_is_counted_by_its_own_check() {
        let mut t = sold();
        ticket(&mut t, 2).status = TicketStatus::Void;
        assert_eq!(
            counts(&t),
            TicketCounts {
                paid_without_one_ticket_per_seat: 1,
                ..TicketCounts::default()
            }
        );
        let mut t = sold();
        ticket(&mut t, 3).status = TicketStatus::Valid;
        assert_eq!(counts(&t).live_tickets_not_paid, 1);
        let mut t = sold();
        ticket(&mut t, 3).check_in = ticket(&mut t, 1).check_in.clone();
        ticket(&mut t, 4).check_in = ticket(&mut t, 1).check_in.clone();
        ticket(&mut t, 4).status = TicketStatus::CheckedIn;
        assert_eq!(
            counts(&t),
            TicketCounts {
                seats_checked_in_twice: 1,
                ..TicketCounts::default()
            }
        );
        let mut t = sold();
        ticket(&mut t, 1).status = TicketStatus::Valid;
        ticket(&mut t, 2).status = TicketStatus::CheckedIn;
        assert_eq!(
            counts(&t),
            TicketCounts {
                check_ins_off_record: 2,
                ..TicketCounts::default()
            }
        );
    }
}
