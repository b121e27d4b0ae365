//! A paid reservation's way back, and a whole performance's: a refund frees sold seats
//! (API.md §12), a cancelled performance voids every hold it can and empties the waiting
//! list. Same book, same invariants, checked after each.

use super::{Reservation, ReservationStatus, ScheduleBook, SeatState};
use crate::domain::waitlist::WaitlistEntry;
use crate::domain::{ReservationId, SeatId, Timestamp, UserId};

impl ScheduleBook {
    /// Frees the sold seats of a refunded reservation (its record may have left memory: the
    /// seats and the buyer come from its tickets). The reservation, if still here, becomes
    /// `Refunded`.
    pub fn refund_sold(
        &mut self,
        id: ReservationId,
        seats: &[SeatId],
        buyer: UserId,
        now: Timestamp,
    ) {
        let mut freed = 0u32;
        for seat in seats {
            if let Some(&i) = self.index.get(seat) {
                if self.states[i] == SeatState::Sold(id) {
                    self.states[i] = SeatState::Available;
                    freed += 1;
                }
            }
        }
        self.available += freed as usize;
        if let Some(count) = self.seats_by_user.get_mut(&buyer) {
            *count = count.saturating_sub(freed);
            if *count == 0 {
                self.seats_by_user.remove(&buyer);
            }
        }
        if let Some(r) = self.reservations.get_mut(&id) {
            r.status = ReservationStatus::Refunded;
            r.updated_at = now;
        }
        self.check_invariants();
    }

    /// Cancels the whole performance (API.md §12): nothing more is held, every pending and
    /// unpinned hold is voided, the waiting list is emptied. Gives the holds voided, the
    /// entries removed, and how many holds a payment still pins (they settle first).
    pub fn cancel_performance(
        &mut self,
        now: Timestamp,
    ) -> (Vec<Reservation>, Vec<WaitlistEntry>, usize) {
        self.cancelled = true;
        let mut pending: Vec<(ReservationId, bool)> = self
            .reservations
            .values()
            .filter(|r| r.status == ReservationStatus::Pending)
            .map(|r| (r.id, r.pinned))
            .collect();
        pending.sort();
        let pinned = pending.iter().filter(|(_, p)| *p).count();
        let mut voided = Vec::new();
        for (id, _) in pending.into_iter().filter(|(_, p)| !p) {
            self.release(id, ReservationStatus::Cancelled, now);
            voided.push(self.reservations[&id].clone());
        }
        let removed = self
            .waitlist
            .users()
            .into_iter()
            .filter_map(|u| self.waitlist.leave(u).ok())
            .collect();
        (voided, removed, pinned)
    }

    /// Whether `r` (as stored) is paid and its seats are still sold to it here.
    pub fn is_sold_to(&self, r: &Reservation) -> bool {
        let in_memory = self.reservations.get(&r.id).map(|m| m.status);
        in_memory.is_none_or(|s| s == ReservationStatus::Paid)
            && r.status == ReservationStatus::Paid
            && r.seats.iter().all(|seat| {
                self.index
                    .get(seat)
                    .is_some_and(|&i| self.states[i] == SeatState::Sold(r.id))
            })
    }

    /// A paid reservation refunded: its seats are no longer sold (a cancelled performance
    /// sells them to nobody). `None` unless [`ScheduleBook::is_sold_to`].
    pub fn refund(&mut self, r: &Reservation, now: Timestamp) -> Option<Reservation> {
        if !self.is_sold_to(r) {
            return None;
        }
        for seat in &r.seats {
            self.states[self.index[seat]] = SeatState::Available;
        }
        self.available += r.seats.len();
        if let Some(count) = self.seats_by_user.get_mut(&r.user) {
            *count = count.saturating_sub(r.seats.len() as u32);
            if *count == 0 {
                self.seats_by_user.remove(&r.user);
            }
        }
        let refunded = Reservation {
            status: ReservationStatus::Refunded,
            updated_at: now,
            pinned: false,
            ..r.clone()
        };
        if let Some(kept) = self.reservations.get_mut(&r.id) {
            *kept = refunded.clone();
        }
        self.check_invariants();
        Some(refunded)
    }
}

#[cfg(test)]
mod tests;
