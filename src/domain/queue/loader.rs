//! Rebuilding a [`WaitingLine`] from stored records, streamed one at a time.

use super::fenwick::Fenwick;
use super::slot::{Slot, Tag};
use super::{AdmissionPolicy, TokenRecord, TokenState, WaitingLine};
use crate::domain::Timestamp;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Builds a [`WaitingLine`] from stored records pushed one at a time in ascending position
/// order, so a store can stream its rows straight in and never hold them all at once (a
/// million stored rows are hundreds of megabytes; the line itself is about 130). Waiters count
/// as seen at `now` (nobody could poll while the service was down); tokens due are expired by
/// the next `advance`.
#[derive(Debug)]
pub struct LineLoader {
    line: WaitingLine,
    idle_due: Timestamp,
    now: Timestamp,
    idle: Vec<Reverse<(Timestamp, u64)>>,
    active: Vec<Reverse<(Timestamp, u64)>>,
    /// Until the first waiter, everything is settled; from it on, the line region.
    in_line: bool,
    last: u64,
}

impl LineLoader {
    /// A loader expecting about `expected` records (a capacity hint, not a limit).
    pub fn new(policy: AdmissionPolicy, now: Timestamp, expected: usize) -> LineLoader {
        let mut line = WaitingLine::new(policy, 1);
        // The tree is built at the end; until then, updates to it (a duplicate's vacancy) are
        // no-ops rather than growing a tree from position 1.
        line.ranks = Fenwick::new(u64::MAX);
        line.by_token.reserve(expected);
        line.by_user.reserve(expected);
        LineLoader {
            line,
            idle_due: now.plus(policy.idle_timeout),
            now,
            idle: Vec::new(),
            active: Vec::new(),
            in_line: false,
            last: 0,
        }
    }

    /// Adds the next record; its position must be above every earlier one's.
    pub fn push(&mut self, record: TokenRecord) {
        let line = &mut self.line;
        let position = record.position;
        debug_assert!(
            position > self.last,
            "records come in ascending position order"
        );
        self.last = position;
        if !self.in_line && record.state == TokenState::Waiting {
            self.in_line = true;
            line.base = position;
            line.head = position;
        }
        if let Some(previous) = line.by_user.insert(record.user, position) {
            // The stores load one token per user; should two come, the later one wins.
            line.vacate(previous);
        }
        line.by_token.insert(record.id, position);
        let slot = Slot::new(&record, self.now);
        match record.state {
            TokenState::Waiting => {
                line.waiting += 1;
                self.idle.push(Reverse((self.idle_due, position)));
            }
            TokenState::Active { expires_at, .. } => {
                line.active += 1;
                self.active.push(Reverse((expires_at, position)));
            }
            TokenState::Expired { .. } => {}
        }
        if self.in_line {
            while line.base + (line.slots.len() as u64) < position {
                line.slots.push_back(Slot::vacant());
            }
            line.slots.push_back(slot);
        } else {
            line.settled.push((position, slot));
        }
    }

    /// Remembers a token its user replaced by joining again, at position `by` (see
    /// [`SUPERSEDED_WINDOW`](super::SUPERSEDED_WINDOW)): it answers EXPIRED as it did before
    /// the restart. Calls come in ascending `by` order, before or after the `push`es.
    pub fn push_superseded(&mut self, record: TokenRecord, by: u64) {
        self.line.superseded.insert(record, by);
    }

    /// The line, with its rank index and deadline heaps built.
    pub fn finish(self) -> WaitingLine {
        let mut line = self.line;
        line.next_position = self.last + 1;
        line.superseded.slide(line.next_position);
        if !self.in_line {
            line.base = line.next_position;
            line.head = line.next_position;
        }
        line.idle_deadlines = BinaryHeap::from(self.idle);
        line.active_deadlines = BinaryHeap::from(self.active);
        line.ranks = Fenwick::build(
            line.base,
            line.slots.iter().map(|s| s.tag() == Tag::Waiting),
        );
        line
    }
}

impl WaitingLine {
    /// Rebuilds the line from stored tokens (each user's latest), in O(n log n) for the sort
    /// and O(n) for the rest. Waiters count as seen at `now` (nobody could poll while the
    /// service was down); tokens due are expired by the next `advance`.
    pub fn restore(
        policy: AdmissionPolicy,
        mut records: Vec<TokenRecord>,
        now: Timestamp,
    ) -> WaitingLine {
        records.sort_unstable_by_key(|r| r.position);
        Self::restore_ordered(policy, records, now)
    }

    /// [`WaitingLine::restore`] from records already in ascending position order, consumed one
    /// by one (see [`LineLoader`]).
    pub fn restore_ordered(
        policy: AdmissionPolicy,
        records: impl IntoIterator<Item = TokenRecord>,
        now: Timestamp,
    ) -> WaitingLine {
        let records = records.into_iter();
        let mut loader = LineLoader::new(policy, now, records.size_hint().0);
        for record in records {
            loader.push(record);
        }
        loader.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::test_support::{created, ids, policy, t, user};
    use crate::domain::queue::Joined;
    use crate::domain::TokenId;
    use proptest::prelude::*;

    /// A stored token as a test writes it: id, user, position, state.
    fn record(id: i64, u: i64, position: u64, state: TokenState) -> TokenRecord {
        TokenRecord {
            id: TokenId::new(id).unwrap(),
            user: user(u),
            position,
            created_at: t(0),
            state,
        }
    }

    /// Admitted at 1 ms, for the 600 s of the tests' policy.
    const ACTIVE: TokenState = TokenState::Active {
        admitted_at: Timestamp::from_millis(1),
        expires_at: Timestamp::from_millis(600_001),
    };

    #[test]
    fn restore_keeps_order_and_counts() {
        let mut line = WaitingLine::new(policy(2), 1);
        let mut gen = ids();
        let records: Vec<TokenRecord> = (1..=6)
            .map(|u| created(line.join(user(u), &mut gen, t(0))))
            .collect();
        let mut stored = line.advance(t(1));
        stored.extend(records[2..].iter().copied());
        let restored = WaitingLine::restore(policy(2), stored, t(10));
        assert_eq!(restored.active_count(), 2);
        assert_eq!(restored.waiting_count(), 4);
        assert_eq!(restored.status(records[5].id, t(10)).unwrap().ahead, 3);
        let mut restored = restored;
        let next = created(restored.join(user(9), &mut gen, t(11)));
        assert_eq!(next.position, 7);
    }

    /// A line whose first stored token is a waiter: it is the first admitted.
    #[test]
    fn a_line_that_starts_with_a_waiter_admits_it_first() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let first = created(line.join(user(1), &mut gen, t(0)));
        let second = created(line.join(user(2), &mut gen, t(0)));
        let mut restored = WaitingLine::restore(policy(1), vec![first, second], t(10));
        assert_eq!(restored.waiting_count(), 2);
        let admitted = restored.advance(t(10));
        assert_eq!(
            admitted.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![first.id]
        );
        assert_eq!(restored.status(second.id, t(10)).unwrap().ahead, 0);
    }

    /// The stores load one token per user; should a user come twice, the later token wins and
    /// the earlier leaves the line with its counts and places, whatever its state.
    #[test]
    fn a_user_loaded_twice_keeps_only_the_later_token_and_the_counts_stay_right() {
        let stored = vec![
            record(11, 1, 1, ACTIVE),
            record(12, 2, 2, TokenState::Waiting),
            record(13, 3, 3, TokenState::Waiting),
            record(14, 1, 4, ACTIVE),
            record(15, 2, 5, TokenState::Waiting),
            record(16, 6, 6, TokenState::Waiting),
        ];
        let line = WaitingLine::restore(policy(2), stored, t(100));
        assert_eq!((line.waiting_count(), line.active_count()), (3, 1));
        let ahead = |id| {
            line.status(TokenId::new(id).unwrap(), t(100))
                .unwrap()
                .ahead
        };
        // User 2's first place (2) is gone: 3 is first, then 5 and 6.
        assert_eq!((ahead(13), ahead(15), ahead(16)), (0, 1, 2));
        assert_eq!(
            line.token_of(user(2)).unwrap().id,
            TokenId::new(15).unwrap()
        );
        assert_eq!(line.token_of(user(1)).unwrap().position, 4);
        assert_eq!(line.status(TokenId::new(12).unwrap(), t(100)), None);
        assert_eq!(line.status(TokenId::new(11).unwrap(), t(100)), None);
    }

    #[test]
    fn restore_with_gaps_and_expired_tokens_in_the_middle() {
        // Positions 3 and 6 belong to tokens superseded since (not loaded); 5 expired idle.
        let stored = vec![
            record(17, 7, 7, TokenState::Waiting),
            record(11, 1, 1, TokenState::Expired { at: t(5) }),
            record(12, 2, 2, ACTIVE),
            record(14, 4, 4, TokenState::Waiting),
            record(15, 5, 5, TokenState::Expired { at: t(9) }),
            record(18, 8, 8, TokenState::Waiting),
        ];
        let mut line = WaitingLine::restore(policy(2), stored, t(100));
        assert_eq!((line.waiting_count(), line.active_count()), (3, 1));
        let ahead = |line: &WaitingLine, id| {
            line.status(TokenId::new(id).unwrap(), t(100))
                .unwrap()
                .ahead
        };
        assert_eq!(ahead(&line, 14), 0);
        assert_eq!(ahead(&line, 17), 1);
        assert_eq!(ahead(&line, 18), 2);
        let admitted = line.advance(t(100));
        assert_eq!(admitted.len(), 1);
        assert_eq!(admitted[0].position, 4);
        assert_eq!(ahead(&line, 18), 1);
        let mut gen = ids();
        assert_eq!(created(line.join(user(9), &mut gen, t(101))).position, 9);
        assert_eq!(
            line.token_of(user(5)).unwrap().state,
            TokenState::Expired { at: t(9) }
        );
    }

    /// What a restart loads of the replaced tokens answers exactly as the line did before.
    #[test]
    fn replaced_tokens_answer_the_same_after_a_restore() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let a = created(line.join(user(1), &mut gen, t(0)));
        line.advance(t(0));
        line.consume(a.id, t(5)).unwrap();
        let again = created(line.join(user(1), &mut gen, t(6)));
        let before = line.status(a.id, t(7)).unwrap();
        let stored = vec![line.token_of(user(1)).unwrap()];
        let spent = TokenRecord {
            state: TokenState::Expired { at: t(5) },
            ..a
        };
        let mut loader = LineLoader::new(policy(1), t(7), 1);
        loader.push_superseded(spent, again.position);
        for r in stored {
            loader.push(r);
        }
        let restored = loader.finish();
        assert_eq!(restored.status(a.id, t(7)), Some(before));
        assert_eq!(
            restored.check_active(a.id, Some(user(1)), t(7)),
            line.check_active(a.id, Some(user(1)), t(7))
        );
        // Outside the window (as a store would not send it), it is gone after `finish` too.
        let mut loader = LineLoader::new(policy(1), t(7), 1);
        loader.push_superseded(spent, 1);
        loader.push(TokenRecord {
            position: 2 + crate::domain::queue::SUPERSEDED_WINDOW,
            ..again
        });
        assert_eq!(loader.finish().status(a.id, t(7)), None);
    }

    proptest! {
        /// A restore from what was stored gives the same line.
        #[test]
        fn restore_is_faithful(steps in prop::collection::vec((0..3u8, 1..30i64, 0..60_000i64), 1..150)) {
            let mut line = WaitingLine::new(policy(2), 1);
            let mut gen = ids();
            let mut now = 0;
            let mut joins = 0;
            for (kind, u, dt) in steps {
                now += dt;
                match kind {
                    0 => {
                        if let Joined::Created { .. } = line.join(user(u), &mut gen, t(now)) {
                            joins += 1;
                        }
                    }
                    1 => if let Some(r) = line.token_of(user(u)) { line.touch(r.id, t(now)); },
                    _ => if let Some(r) = line.token_of(user(u)) { line.consume(r.id, t(now)); },
                }
                line.advance(t(now));
            }
            let stored: Vec<TokenRecord> = (1..30).filter_map(|u| line.token_of(user(u))).collect();
            let restored = WaitingLine::restore(policy(2), stored.clone(), t(now));
            prop_assert_eq!(restored.waiting_count(), line.waiting_count());
            prop_assert_eq!(restored.active_count(), line.active_count());
            for r in stored {
                prop_assert_eq!(restored.token_of(r.user), Some(r));
                if r.state == TokenState::Waiting {
                    prop_assert_eq!(
                        restored.status(r.id, t(now)).unwrap().ahead,
                        line.status(r.id, t(now)).unwrap().ahead
                    );
                }
            }
            // Positions start at 1 and every new token takes the next one.
            prop_assert_eq!(line.next_position(), 1 + joins);
            prop_assert_eq!(restored.next_position(), line.next_position());
        }
    }
}
