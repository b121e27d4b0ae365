//! The waiting list's rule on the book (API.md §12): joining only when nothing is on general
//! sale, and freed seats offered to the first entry they fit as a hold of the offer's TTL.
//! The list itself, its order and entries, is `domain/waitlist.rs`.

use super::{HoldPolicy, ReservationStatus, ScheduleBook, SeatState};
use crate::domain::waitlist::{Offer, WaitlistEntry, WaitlistRefusal, MAX_ENTRIES};
use crate::domain::{ReservationId, SeatId, Timestamp, UserId};
use std::time::Duration;

impl ScheduleBook {
    /// Adds `user` to the end of the list. Only when nothing is on general sale: the schedule
    /// is sold out, or its available seats are already the list's.
    pub fn join_waitlist(
        &mut self,
        user: UserId,
        seats: u32,
        now: Timestamp,
        limit: u32,
    ) -> Result<&WaitlistEntry, WaitlistRefusal> {
        if seats == 0 || seats > limit {
            return Err(WaitlistRefusal::BadSeats { limit });
        }
        if self.cancelled || now >= self.info.concert_at {
            return Err(WaitlistRefusal::Closed);
        }
        if self.waitlist.entry(user).is_some() {
            return Err(WaitlistRefusal::AlreadyJoined);
        }
        if self.waitlist.len() >= MAX_ENTRIES {
            return Err(WaitlistRefusal::Full);
        }
        if self.available_count() > 0 && !self.waitlist.has_waiting() {
            return Err(WaitlistRefusal::SeatsOnSale);
        }
        Ok(self.waitlist.push(self.info.id, user, seats, now))
    }

    /// Entries whose offer is settled (paid, expired, cancelled, or gone from memory, which
    /// only a settled reservation does), removed: the next entry's turn.
    pub fn settle_offers(&mut self) -> Vec<WaitlistEntry> {
        let done: Vec<UserId> = self
            .waitlist
            .entries()
            .filter(|e| {
                e.offer.is_some_and(|id| {
                    self.reservation(id)
                        .is_none_or(|r| r.status != ReservationStatus::Pending)
                })
            })
            .map(|e| e.user)
            .collect();
        done.into_iter()
            .filter_map(|u| self.waitlist.leave(u).ok())
            .collect()
    }

    /// Offers the available seats, in list order, to each waiting entry they fit: a hold of
    /// `offer_ttl` for the entry's user. An entry that does not fit (too few seats, or its
    /// user's limit) keeps its place.
    pub fn offer_freed(
        &mut self,
        now: Timestamp,
        offer_ttl: Duration,
        limit: u32,
        mut next_id: impl FnMut() -> ReservationId,
    ) -> Vec<Offer> {
        let mut offers = Vec::new();
        if self.cancelled || !self.is_open(now) {
            return offers;
        }
        let policy = HoldPolicy {
            hold_ttl: offer_ttl,
            max_seats_per_user: limit,
        };
        let candidates: Vec<(i64, UserId, u32)> = self
            .waitlist
            .entries()
            .filter(|e| e.offer.is_none())
            .map(|e| (e.seq, e.user, e.seats))
            .collect();
        for (seq, user, wanted) in candidates {
            let free = self.available_count();
            if free == 0 {
                break;
            }
            if wanted as usize > free || self.seats_of(user) + wanted > limit {
                continue;
            }
            let seats: Vec<SeatId> = self
                .seats()
                .filter(|(_, state)| *state == SeatState::Available)
                .map(|(s, _)| s.id)
                .take(wanted as usize)
                .collect();
            let id = next_id();
            let Ok(r) = self.hold_offer(id, user, &seats, now, policy) else {
                continue;
            };
            let reservation = r.clone();
            let entry = self.waitlist.mark_offered(seq, id);
            offers.push(Offer { reservation, entry });
        }
        offers
    }
}

#[cfg(test)]
mod tests;
