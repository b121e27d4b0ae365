//! One token of the line packed into 40 bytes: the token id and its state share one word.

use super::{TokenRecord, TokenState};
use crate::domain::{Timestamp, TokenId, UserId};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The state part of a slot's key. `Vacant` marks a position whose token was replaced by the
/// same user's newer one (or that no stored token holds after a restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Vacant = 0,
    Waiting = 1,
    Active = 2,
    Expired = 3,
}

/// Token ids use 53 bits (see [`TokenId::MAX`]); the top byte of a key holds the tag.
const ID_MASK: u64 = (1 << 53) - 1;
const TAG_SHIFT: u32 = 56;

/// One token, in 40 bytes: a million waiters are 40 MB of slots.
#[derive(Debug)]
pub(super) struct Slot {
    /// Token id in the low 53 bits, [`Tag`] in the top byte.
    key: u64,
    user: UserId,
    created_at: Timestamp,
    /// WAITING: the last poll, refreshed by readers through a shared borrow (so polls never
    /// need the writer's lock). ACTIVE: when it expires. EXPIRED: when it expired.
    clock: AtomicI64,
    /// ACTIVE: when it was admitted (stored with the token).
    admitted_at: Timestamp,
}

// The memory budget of the line (40 MB per million waiters) rests on this.
const _: () = assert!(std::mem::size_of::<Slot>() == 40);

impl Slot {
    pub(super) fn vacant() -> Slot {
        Slot {
            key: 0,
            user: UserId::new(1).expect("1 is a valid id"),
            created_at: Timestamp::default(),
            clock: AtomicI64::new(0),
            admitted_at: Timestamp::default(),
        }
    }

    pub(super) fn new(record: &TokenRecord, seen: Timestamp) -> Slot {
        let id = record.id.get() as u64;
        let (tag, clock, admitted_at) = match record.state {
            TokenState::Waiting => (Tag::Waiting, seen, Timestamp::default()),
            TokenState::Active {
                admitted_at,
                expires_at,
            } => (Tag::Active, expires_at, admitted_at),
            TokenState::Expired { at } => (Tag::Expired, at, Timestamp::default()),
        };
        Slot {
            key: id | ((tag as u64) << TAG_SHIFT),
            user: record.user,
            created_at: record.created_at,
            clock: AtomicI64::new(clock.millis()),
            admitted_at,
        }
    }

    pub(super) fn tag(&self) -> Tag {
        match self.key >> TAG_SHIFT {
            1 => Tag::Waiting,
            2 => Tag::Active,
            3 => Tag::Expired,
            _ => Tag::Vacant,
        }
    }

    pub(super) fn set_tag(&mut self, tag: Tag) {
        self.key = (self.key & ID_MASK) | ((tag as u64) << TAG_SHIFT);
    }

    pub(super) fn id(&self) -> TokenId {
        TokenId::new((self.key & ID_MASK) as i64).expect("slot keys hold valid token ids")
    }

    pub(super) fn clock(&self) -> Timestamp {
        Timestamp::from_millis(self.clock.load(Ordering::Relaxed))
    }

    fn state(&self) -> Option<TokenState> {
        match self.tag() {
            Tag::Vacant => None,
            Tag::Waiting => Some(TokenState::Waiting),
            Tag::Active => Some(TokenState::Active {
                admitted_at: self.admitted_at,
                expires_at: self.clock(),
            }),
            Tag::Expired => Some(TokenState::Expired { at: self.clock() }),
        }
    }

    pub(super) fn record(&self, position: u64) -> Option<TokenRecord> {
        Some(TokenRecord {
            id: self.id(),
            user: self.user,
            position,
            created_at: self.created_at,
            state: self.state()?,
        })
    }

    /// A WAITING token whose last poll is at least `idle` old at `now` has abandoned the line,
    /// swept or not: it is never admitted, never refreshed, and reported EXPIRED.
    pub(super) fn idle_deadline(&self, idle: Duration) -> Timestamp {
        self.clock().plus(idle)
    }

    /// Records a WAITING token's poll at `now`, unless it is already past its idle deadline (a
    /// waiter who abandoned the line is not revived); returns whether the idle deadline is now
    /// `now + idle`.
    pub(super) fn touch(&self, now: Timestamp, idle: Duration) -> bool {
        let idle = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let now = now.millis();
        // Lock-free: concurrent polls race only to move the clock forward.
        let refreshed = self
            .clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                (seen < now && seen.saturating_add(idle) > now).then_some(now)
            });
        match refreshed {
            Ok(_) => true,
            Err(seen) => seen >= now && seen.saturating_add(idle) > now,
        }
    }

    pub(super) fn activate(&mut self, admitted_at: Timestamp, expires_at: Timestamp) {
        self.set_tag(Tag::Active);
        self.admitted_at = admitted_at;
        *self.clock.get_mut() = expires_at.millis();
    }

    /// Takes `other`'s clock (its last poll, for a waiter): a waiter moved to a new slot
    /// keeps its idle deadline.
    pub(super) fn take_clock_of(&mut self, other: &mut Slot) {
        *self.clock.get_mut() = *other.clock.get_mut();
    }

    pub(super) fn expire(&mut self, at: Timestamp) {
        self.set_tag(Tag::Expired);
        *self.clock.get_mut() = at.millis();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_forty_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// A waiter last seen at `seen_ms`.
    fn waiter(seen_ms: i64) -> Slot {
        let record = TokenRecord {
            id: TokenId::new(1).expect("positive"),
            user: UserId::new(1).expect("positive"),
            position: 1,
            created_at: t(0),
            state: TokenState::Waiting,
        };
        Slot::new(&record, t(seen_ms))
    }

    /// Polls race only forward: a later one moves the clock, an earlier one (overtaken by
    /// another poll) leaves it and still says the waiter is there, and a poll at or past
    /// the idle deadline revives nobody.
    #[test]
    fn a_poll_moves_the_idle_clock_only_forward_and_never_revives() {
        let idle = Duration::from_millis(100);
        let slot = waiter(1_000);
        assert!(slot.touch(t(1_050), idle));
        assert_eq!(slot.clock(), t(1_050));
        assert!(
            slot.touch(t(1_020), idle),
            "overtaken, but the waiter is there"
        );
        assert_eq!(slot.clock(), t(1_050), "never moved back");
        assert!(slot.touch(t(1_050), idle), "the same moment");
        assert!(!slot.touch(t(1_150), idle), "at the deadline: gone");
        assert!(!slot.touch(t(2_000), idle));
        assert_eq!(slot.clock(), t(1_050), "not revived");
    }

    /// A waiter moved to a fresh slot (by the draw) keeps its last poll.
    #[test]
    fn a_moved_waiter_keeps_its_clock() {
        let mut old = waiter(1_000);
        assert!(old.touch(t(1_070), Duration::from_millis(100)));
        let mut fresh = waiter(500);
        fresh.take_clock_of(&mut old);
        assert_eq!(fresh.clock(), t(1_070));
    }
}
