//! A schedule's waiting list (API.md §12): who asked first for seats of a sold-out
//! performance, and the rule that hands freed seats to them in that order.
//!
//! The rule that keeps freed seats off general sale is stated once, here: while any entry
//! waits, every available seat of the schedule is the list's (`ScheduleBook` refuses general
//! holds of available seats then). A join is accepted only when no seat is on general sale,
//! so the rule needs no record of which seats were freed, and it survives a restart as is.

use super::ids::IdMap;
use super::reservation::Reservation;
use super::{ReservationId, ScheduleId, Timestamp, UserId};
use std::collections::BTreeMap;

/// At most this many entries per schedule: a join past it is refused (409 `waitlist_full`),
/// so the list's memory and the O(n) walk of an offer stay bounded.
pub const MAX_ENTRIES: usize = 100_000;

/// One user's place in one schedule's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub schedule: ScheduleId,
    pub user: UserId,
    pub seats: u32,
    /// Join order: grows with every join and is never reused.
    pub seq: i64,
    pub joined_at: Timestamp,
    /// The hold offered to this entry, once seats were offered.
    pub offer: Option<ReservationId>,
}

impl WaitlistEntry {
    /// `WAITING` or `OFFERED`, as the API names it.
    pub fn status(&self) -> &'static str {
        if self.offer.is_some() {
            "OFFERED"
        } else {
            "WAITING"
        }
    }
}

/// Why a join or a leave is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitlistRefusal {
    /// Seats asked outside 1 ..= the per-user limit.
    #[error("seats must be 1 to {limit}")]
    BadSeats { limit: u32 },
    /// The user already has an entry on this schedule.
    #[error("already on the waiting list")]
    AlreadyJoined,
    /// Seats are on general sale: buy them instead.
    #[error("seats are on sale")]
    SeatsOnSale,
    /// [`MAX_ENTRIES`] entries already.
    #[error("waiting list full")]
    Full,
    /// The concert has started or the performance is cancelled.
    #[error("waiting list closed")]
    Closed,
    #[error("waitlist entry not found")]
    NotFound,
}

/// The entries of one schedule, in join order.
#[derive(Debug, Clone, Default)]
pub struct Waitlist {
    by_seq: BTreeMap<i64, WaitlistEntry>,
    by_user: IdMap<UserId, i64>,
    waiting: usize,
    next_seq: i64,
}

/// What one offer made: the hold, and the entry now pointing at it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub reservation: Reservation,
    pub entry: WaitlistEntry,
}

impl Waitlist {
    /// The list as stored.
    pub fn restore(entries: Vec<WaitlistEntry>) -> Waitlist {
        let mut list = Waitlist::default();
        for e in entries {
            list.next_seq = list.next_seq.max(e.seq + 1);
            list.insert(e);
        }
        list
    }

    /// `user` at the end of the list, waiting for `seats`.
    pub fn push(
        &mut self,
        schedule: ScheduleId,
        user: UserId,
        seats: u32,
        now: Timestamp,
    ) -> &WaitlistEntry {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(WaitlistEntry {
            schedule,
            user,
            seats,
            seq,
            joined_at: now,
            offer: None,
        });
        &self.by_seq[&seq]
    }

    /// Every entry, in join order.
    pub fn entries(&self) -> impl Iterator<Item = &WaitlistEntry> {
        self.by_seq.values()
    }

    fn insert(&mut self, e: WaitlistEntry) {
        if e.offer.is_none() {
            self.waiting += 1;
        }
        self.by_user.insert(e.user, e.seq);
        self.by_seq.insert(e.seq, e);
    }

    /// Whether any entry waits for an offer: then no available seat is on general sale.
    pub fn has_waiting(&self) -> bool {
        self.waiting > 0
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Every user with an entry, in list order.
    pub fn users(&self) -> Vec<UserId> {
        self.by_seq.values().map(|e| e.user).collect()
    }

    pub fn entry(&self, user: UserId) -> Option<&WaitlistEntry> {
        self.by_seq.get(self.by_user.get(&user)?)
    }

    /// 1 for the first entry of the list. O(n): a read of one entry, bounded by [`MAX_ENTRIES`].
    pub fn position(&self, user: UserId) -> Option<usize> {
        let seq = *self.by_user.get(&user)?;
        Some(self.by_seq.range(..seq).count() + 1)
    }

    /// Removes `user`'s entry.
    pub fn leave(&mut self, user: UserId) -> Result<WaitlistEntry, WaitlistRefusal> {
        let seq = self
            .by_user
            .remove(&user)
            .ok_or(WaitlistRefusal::NotFound)?;
        let e = self
            .by_seq
            .remove(&seq)
            .expect("by_user and by_seq name the same entries");
        if e.offer.is_none() {
            self.waiting -= 1;
        }
        Ok(e)
    }

    /// The entry of place `seq` now holds the offer `offer`.
    pub fn mark_offered(&mut self, seq: i64, offer: ReservationId) -> WaitlistEntry {
        let e = self
            .by_seq
            .get_mut(&seq)
            .expect("the caller found this entry waiting");
        debug_assert!(e.offer.is_none());
        e.offer = Some(offer);
        self.waiting -= 1;
        e.clone()
    }
}
