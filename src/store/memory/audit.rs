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
