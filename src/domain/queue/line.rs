//! The waiting line itself: join, poll, check, consume, and `advance` (expiry, then
//! admission from the front), over the slots, the position indexes, the deadline heaps and the
//! rank tree. One idea, so one file: about 480 lines of code, and its tests after them (the
//! line's behaviour is tested through its public operations, so the tests are here too).

use super::fenwick::Fenwick;
use super::policy::estimated_wait;
use super::rate::RateMeter;
use super::slot::{Slot, Tag};
use super::superseded::SupersededTokens;
use super::{
    AdmissionPolicy, Joined, TokenRecord, TokenRefusal, TokenState, TokenStatus, BURST,
    STEP_BUDGET, WALK_BUDGET,
};
use crate::domain::ids::IdMap;
use crate::domain::{Timestamp, TokenId, UserId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Id → join position. Keyed by ids the server chose (random token ids, database user ids),
/// never by client-chosen keys, so a flooding attack has nothing to insert (see
/// [`crate::domain::ids::IdHasher`]).
type PositionIndex<K> = IdMap<K, u64>;

/// The whole waiting room. Only the `QueueActor` mutates it; polls read it concurrently.
///
/// The fields the [`LineLoader`](super::LineLoader) fills in place are `pub(super)`.
#[derive(Debug)]
pub struct WaitingLine {
    policy: AdmissionPolicy,
    /// Positions `[base, next_position)`, one slot each.
    pub(super) slots: VecDeque<Slot>,
    pub(super) base: u64,
    /// Admission resumes here: every slot before it is no longer WAITING.
    pub(super) head: u64,
    pub(super) next_position: u64,
    /// Tokens before `base` (ACTIVE or EXPIRED), ascending by position.
    pub(super) settled: Vec<(u64, Slot)>,
    /// Vacant entries in `settled`, squeezed out once they are half of it.
    settled_vacant: usize,
    pub(super) by_token: PositionIndex<TokenId>,
    pub(super) by_user: PositionIndex<UserId>,
    /// Tokens replaced by their user's newer one, still answered as EXPIRED (bounded).
    pub(super) superseded: SupersededTokens,
    pub(super) ranks: Fenwick,
    pub(super) waiting: usize,
    pub(super) active: usize,
    pub(super) active_deadlines: BinaryHeap<Reverse<(Timestamp, u64)>>,
    pub(super) idle_deadlines: BinaryHeap<Reverse<(Timestamp, u64)>>,
    allowance: f64,
    refilled_at: Option<Timestamp>,
    meter: RateMeter,
    /// The fair opening, if one is scheduled or drawn (`opening.rs`).
    pub(super) opening: Option<super::opening::Opening>,
}

impl WaitingLine {
    /// An empty line whose next token gets place number `next_position`.
    pub fn new(policy: AdmissionPolicy, next_position: u64) -> WaitingLine {
        let next_position = next_position.max(1);
        WaitingLine {
            policy,
            slots: VecDeque::new(),
            base: next_position,
            head: next_position,
            next_position,
            settled: Vec::new(),
            settled_vacant: 0,
            by_token: PositionIndex::default(),
            by_user: PositionIndex::default(),
            superseded: SupersededTokens::default(),
            ranks: Fenwick::new(next_position),
            waiting: 0,
            active: 0,
            active_deadlines: BinaryHeap::new(),
            idle_deadlines: BinaryHeap::new(),
            allowance: 0.0,
            refilled_at: None,
            meter: RateMeter::default(),
            opening: None,
        }
    }

    pub fn policy(&self) -> AdmissionPolicy {
        self.policy
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting
    }

    pub fn active_count(&self) -> usize {
        self.active
    }

    /// The place number the next join gets.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    fn slot(&self, position: u64) -> Option<&Slot> {
        if position >= self.base {
            return self.slots.get(usize::try_from(position - self.base).ok()?);
        }
        let i = self
            .settled
            .binary_search_by_key(&position, |(p, _)| *p)
            .ok()?;
        Some(&self.settled[i].1)
    }

    fn slot_mut(&mut self, position: u64) -> Option<&mut Slot> {
        if position >= self.base {
            return self
                .slots
                .get_mut(usize::try_from(position - self.base).ok()?);
        }
        let i = self
            .settled
            .binary_search_by_key(&position, |(p, _)| *p)
            .ok()?;
        Some(&mut self.settled[i].1)
    }

    /// Forgets the token at `position` (its user has a newer one, or it was a duplicate),
    /// keeping the counts right whatever its state.
    pub(super) fn vacate(&mut self, position: u64) {
        let in_settled = position < self.base;
        let Some(slot) = self.slot_mut(position) else {
            return;
        };
        let tag = slot.tag();
        let id = slot.id();
        slot.set_tag(Tag::Vacant);
        if tag == Tag::Vacant {
            return;
        }
        if self.by_token.get(&id) == Some(&position) {
            self.by_token.remove(&id);
        }
        match tag {
            Tag::Waiting => {
                self.waiting -= 1;
                self.ranks.add(position, -1);
            }
            Tag::Active => self.active -= 1,
            Tag::Expired | Tag::Vacant => {}
        }
        if in_settled {
            self.settled_vacant += 1;
        }
    }

    /// The token a user holds (live or the last expired one).
    pub fn token_of(&self, user: UserId) -> Option<TokenRecord> {
        let position = *self.by_user.get(&user)?;
        self.slot(position)?.record(position)
    }

    /// Joins `user` to the back of the line, or returns the live token they already hold.
    /// `fresh_id` draws random ids; one already in use is drawn again.
    pub fn join(
        &mut self,
        user: UserId,
        mut fresh_id: impl FnMut() -> TokenId,
        now: Timestamp,
    ) -> Joined {
        let mut retired = None;
        let mut replaced = None;
        if let Some(&position) = self.by_user.get(&user) {
            let idle = self.policy.idle_timeout;
            if let Some(slot) = self.slot_mut(position) {
                let record = slot.record(position);
                replaced = record;
                match slot.tag() {
                    Tag::Waiting if slot.idle_deadline(idle) > now => {
                        return Joined::Existing(record.expect("a waiting slot has a record"));
                    }
                    Tag::Waiting => {
                        let at = slot.idle_deadline(idle);
                        slot.expire(at);
                        retired = slot.record(position);
                        self.waiting -= 1;
                        self.ranks.add(position, -1);
                    }
                    Tag::Active if slot.clock() > now => {
                        return Joined::Existing(record.expect("an active slot has a record"));
                    }
                    Tag::Active => {
                        let at = slot.clock();
                        slot.expire(at);
                        retired = slot.record(position);
                        self.active -= 1;
                    }
                    Tag::Expired | Tag::Vacant => {}
                }
                if retired.is_some() {
                    replaced = retired;
                }
            }
            // The old token leaves the line; it is remembered as EXPIRED (within the window)
            // below, once the new one has its position.
            self.vacate(position);
        }
        let id = loop {
            let id = fresh_id();
            if !self.by_token.contains_key(&id) && !self.superseded.contains(id) {
                break id;
            }
        };
        let position = self.next_position;
        if let Some(old) = replaced.filter(|r| matches!(r.state, TokenState::Expired { .. })) {
            self.superseded.insert(old, position);
        }
        self.superseded.slide(position + 1);
        let token = TokenRecord {
            id,
            user,
            position,
            created_at: now,
            state: TokenState::Waiting,
        };
        self.next_position += 1;
        debug_assert_eq!(self.base + self.slots.len() as u64, position);
        self.slots.push_back(Slot::new(&token, now));
        self.ranks.add(position, 1);
        self.by_token.insert(id, position);
        self.by_user.insert(user, position);
        self.waiting += 1;
        self.idle_deadlines
            .push(Reverse((now.plus(self.policy.idle_timeout), position)));
        Joined::Created { token, retired }
    }

    /// Records that the holder of `id` polled at `now` (keeps a waiter in line); returns
    /// whether the waiter's idle deadline is now `now + idle_timeout`. A waiter already past
    /// its idle deadline is not revived: it abandoned the line, swept or not.
    pub fn touch(&self, id: TokenId, now: Timestamp) -> bool {
        let Some(slot) = self.by_token.get(&id).and_then(|p| self.slot(*p)) else {
            return false;
        };
        slot.tag() == Tag::Waiting && slot.touch(now, self.policy.idle_timeout)
    }

    /// Admissions per second, measured (see [`RATE_WINDOW`](super::RATE_WINDOW)) up to `now`; `None` before any
    /// admission was seen.
    pub fn measured_rate(&self, now: Timestamp) -> Option<f64> {
        self.meter.rate(now)
    }

    /// The rate a wait estimate uses: the measured one (unless too low to tell anything), else
    /// `admit_per_sec`, else none.
    pub fn estimate_rate(&self, now: Timestamp) -> Option<f64> {
        self.policy.estimate_rate(self.meter.rate(now))
    }

    /// What the other nodes of a cluster answer polls from (see `snapshot.rs`): one prefix
    /// sum per block, at most [`MAX_SNAPSHOT_BLOCKS`](super::MAX_SNAPSHOT_BLOCKS) of them.
    pub fn snapshot(&self, now: Timestamp) -> super::LineSnapshot {
        let (frontier, end) = (self.head, self.next_position);
        let block = super::LineSnapshot::block_for(end.saturating_sub(frontier));
        let mut waiting = Vec::new();
        let (mut start, mut before) = (frontier, self.ranks.count_before(frontier));
        while start < end {
            let stop = (start + block).min(end);
            let through = self.ranks.count_before(stop);
            // A block holds at most `block` waiters, and a block is far narrower than u32.
            waiting.push(u32::try_from(through - before).unwrap_or(u32::MAX));
            (start, before) = (stop, through);
        }
        super::LineSnapshot {
            taken_at_ms: now.millis(),
            frontier,
            end,
            block,
            waiting,
            rate: self.meter.rate(now),
            opening: self.opening_phase(),
        }
    }

    /// What a poll answers, in O(log n) (the Fenwick prefix sum; O(1) for the rest).
    pub fn status(&self, id: TokenId, now: Timestamp) -> Option<TokenStatus> {
        let Some(&position) = self.by_token.get(&id) else {
            return self.superseded_status(id);
        };
        let slot = self.slot(position)?;
        let mut record = slot.record(position)?;
        let (ahead, expires_at) = match record.state {
            TokenState::Waiting => {
                let deadline = slot.idle_deadline(self.policy.idle_timeout);
                if now >= deadline {
                    // Abandoned but not yet swept: report what it is.
                    record.state = TokenState::Expired { at: deadline };
                    (0, deadline)
                } else {
                    (self.ranks.count_before(position), deadline)
                }
            }
            TokenState::Active { expires_at, .. } if now >= expires_at => {
                record.state = TokenState::Expired { at: expires_at };
                (0, expires_at)
            }
            TokenState::Active { expires_at, .. } => (0, expires_at),
            TokenState::Expired { at } => (0, at),
        };
        let estimated_wait = estimated_wait(record.state, ahead, || self.estimate_rate(now));
        Some(TokenStatus {
            record,
            ahead,
            expires_at,
            estimated_wait,
            poll_after: self.policy.poll_after(record.state, ahead, estimated_wait),
        })
    }

    /// A replaced token's poll: EXPIRED, as its stored record says.
    fn superseded_status(&self, id: TokenId) -> Option<TokenStatus> {
        let record = *self.superseded.get(id)?;
        let TokenState::Expired { at } = record.state else {
            return None;
        };
        Some(TokenStatus {
            record,
            ahead: 0,
            expires_at: at,
            estimated_wait: None,
            poll_after: self.policy.poll_after(record.state, 0, None),
        })
    }

    /// Checks that `id` is an ACTIVE token of `user` at `now`.
    pub fn check_active(
        &self,
        id: TokenId,
        user: Option<UserId>,
        now: Timestamp,
    ) -> Result<TokenRecord, TokenRefusal> {
        let Some(&position) = self.by_token.get(&id) else {
            return match self.superseded.get(id) {
                Some(old) if user.is_none_or(|u| u == old.user) => Err(TokenRefusal::Expired),
                _ => Err(TokenRefusal::Invalid),
            };
        };
        let slot = self.slot(position).ok_or(TokenRefusal::Invalid)?;
        let record = slot.record(position).ok_or(TokenRefusal::Invalid)?;
        if user.is_some_and(|u| u != record.user) {
            return Err(TokenRefusal::Invalid);
        }
        match record.state {
            TokenState::Waiting if slot.idle_deadline(self.policy.idle_timeout) <= now => {
                Err(TokenRefusal::Expired)
            }
            TokenState::Waiting => Err(TokenRefusal::NotActive),
            TokenState::Active { expires_at, .. } if now < expires_at => Ok(record),
            TokenState::Active { .. } | TokenState::Expired { .. } => Err(TokenRefusal::Expired),
        }
    }

    /// Expires an ACTIVE token at once (its owner paid): its slot goes to the next in line.
    pub fn consume(&mut self, id: TokenId, now: Timestamp) -> Option<TokenRecord> {
        let position = *self.by_token.get(&id)?;
        let slot = self.slot_mut(position)?;
        if slot.tag() != Tag::Active {
            return None;
        }
        slot.expire(now);
        let record = slot.record(position);
        self.active -= 1;
        record
    }

    /// The record of `id` as it would be stored once consumed at `now`.
    pub fn consumed_record(&self, id: TokenId, now: Timestamp) -> Option<TokenRecord> {
        let position = *self.by_token.get(&id)?;
        let record = self.slot(position)?.record(position)?;
        Some(TokenRecord {
            state: TokenState::Expired { at: now },
            ..record
        })
    }

    /// Moves time forward to `now`: expires due active tokens and abandoned waiters, then
    /// admits from the front of the line as far as the cap and the rate allow. Returns every
    /// token whose state changed, in the order it changed. Amortised O(changes · log n), and
    /// at most [`STEP_BUDGET`] transitions of each kind per call.
    pub fn advance(&mut self, now: Timestamp) -> Vec<TokenRecord> {
        let mut changed = Vec::new();
        self.expire_active(now, &mut changed);
        self.expire_idle(now, &mut changed);
        let admitted = self.admit(now, &mut changed);
        self.meter.observe(now, admitted);
        self.compact();
        changed
    }

    fn expire_active(&mut self, now: Timestamp, changed: &mut Vec<TokenRecord>) {
        let mut done = 0;
        while done < STEP_BUDGET {
            let Some(&Reverse((due, position))) = self.active_deadlines.peek() else {
                break;
            };
            if due > now {
                break;
            }
            self.active_deadlines.pop();
            let Some(slot) = self.slot_mut(position) else {
                continue;
            };
            // Consumed (or replaced) since: its entry is stale.
            if slot.tag() != Tag::Active {
                continue;
            }
            let at = slot.clock();
            slot.expire(at);
            changed.extend(slot.record(position));
            self.active -= 1;
            done += 1;
        }
    }

    fn expire_idle(&mut self, now: Timestamp, changed: &mut Vec<TokenRecord>) {
        let idle = self.policy.idle_timeout;
        let mut done = 0;
        while done < STEP_BUDGET {
            let Some(&Reverse((due, position))) = self.idle_deadlines.peek() else {
                break;
            };
            if due > now {
                break;
            }
            self.idle_deadlines.pop();
            // Everything before `base` left the line already.
            if position < self.base {
                continue;
            }
            let Some(slot) = self.slot_mut(position) else {
                continue;
            };
            if slot.tag() != Tag::Waiting {
                continue;
            }
            let deadline = slot.idle_deadline(idle);
            if deadline > now {
                // Polled since the deadline was set: look again then. Each waiter is pushed
                // again at most once per idle_timeout, however often it polls.
                self.idle_deadlines.push(Reverse((deadline, position)));
                continue;
            }
            slot.expire(deadline);
            changed.extend(slot.record(position));
            self.ranks.add(position, -1);
            self.waiting -= 1;
            done += 1;
        }
    }

    /// Admits from the front; returns how many were admitted.
    fn admit(&mut self, now: Timestamp, changed: &mut Vec<TokenRecord>) -> usize {
        // Nobody is admitted before a scheduled opening's draw (API.md §11).
        if self.held_for_opening() {
            return 0;
        }
        let mut budget = self
            .policy
            .max_active
            .saturating_sub(self.active)
            .min(STEP_BUDGET);
        if self.policy.admit_per_sec > 0 {
            let rate = f64::from(self.policy.admit_per_sec);
            let elapsed = self
                .refilled_at
                .map_or(0.0, |at| at.until(now).as_secs_f64());
            // The bucket holds at most a quarter second's worth plus one: bursts stay small
            // (outflow is smooth), yet a tick up to 250 ms late loses nothing, and the
            // fraction left after admitting whole people is never cut off (a cap of exactly
            // one would lose it: 7/s came out as 5.7/s).
            self.allowance =
                (self.allowance + elapsed * rate).min(rate * BURST.as_secs_f64() + 1.0);
            if self.refilled_at.is_none_or(|at| at < now) {
                self.refilled_at = Some(now);
            }
            budget = budget.min(self.allowance as usize);
        }
        let idle = self.policy.idle_timeout;
        let ttl = self.policy.active_ttl;
        let mut admitted = 0;
        let mut walked = 0;
        while admitted < budget && self.head < self.next_position && walked < WALK_BUDGET {
            let position = self.head;
            self.head += 1;
            walked += 1;
            let Some(slot) = self.slots.get_mut((position - self.base) as usize) else {
                break;
            };
            if slot.tag() != Tag::Waiting {
                continue;
            }
            let deadline = slot.idle_deadline(idle);
            if deadline <= now {
                // Abandoned, not yet swept (the sweep has a budget): never admit it.
                slot.expire(deadline);
                changed.extend(slot.record(position));
            } else {
                let expires_at = now.plus(ttl);
                slot.activate(now, expires_at);
                changed.extend(slot.record(position));
                self.active += 1;
                self.active_deadlines.push(Reverse((expires_at, position)));
                admitted += 1;
            }
            self.ranks.add(position, -1);
            self.waiting -= 1;
        }
        if self.policy.admit_per_sec > 0 {
            self.allowance -= admitted as f64;
        }
        admitted
    }

    /// Moves the slots admission walked past into `settled`, and keeps every structure
    /// proportional to what it holds. Each step is amortised O(1) per token.
    fn compact(&mut self) {
        while self.base < self.head {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            if slot.tag() != Tag::Vacant {
                self.settled.push((self.base, slot));
            }
            self.base += 1;
        }
        if self.settled_vacant > 1024 && self.settled_vacant * 2 > self.settled.len() {
            self.settled.retain(|(_, s)| s.tag() != Tag::Vacant);
            self.settled_vacant = 0;
        }
        // The tree keeps positions from its own base: rebuild it once the dead prefix is as
        // long as the live part (O(live), paid for by that many admissions).
        let dead = self.base.saturating_sub(self.ranks.base()) as usize;
        if dead >= 4096 && dead >= self.slots.len() {
            self.ranks = Fenwick::build(
                self.base,
                self.slots.iter().map(|s| s.tag() == Tag::Waiting),
            );
        }
        if self.slots.capacity() > 4096 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::test_support::{created, ids, policy, t, user};
    use crate::domain::queue::POLL_FLOOR;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn admission_is_fifo_under_the_cap() {
        let mut line = WaitingLine::new(policy(3), 1);
        let mut gen = ids();
        let tokens: Vec<TokenRecord> = (1..=10)
            .map(|u| created(line.join(user(u), &mut gen, t(0))))
            .collect();
        let admitted = line.advance(t(1));
        assert_eq!(
            admitted.iter().map(|r| r.user).collect::<Vec<_>>(),
            vec![user(1), user(2), user(3)]
        );
        assert_eq!(line.status(tokens[9].id, t(1)).unwrap().ahead, 6);
        assert!(line.advance(t(2)).is_empty(), "cap reached");
        line.consume(tokens[1].id, t(3)).unwrap();
        let next = line.advance(t(3));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].user, user(4));
        assert_eq!(line.status(tokens[9].id, t(3)).unwrap().ahead, 5);
        // Admitted and consumed tokens moved out of the deque still answer.
        assert!(matches!(
            line.status(tokens[1].id, t(3)).unwrap().record.state,
            TokenState::Expired { .. }
        ));
        assert_eq!(line.check_active(tokens[0].id, None, t(3)), Ok(admitted[0]));
    }

    /// A join gives back the token its user still holds, and a new one from the exact moment
    /// the old one ended: a waiter's idle deadline, an active token's expiry.
    #[test]
    fn a_join_replaces_a_token_exactly_when_it_has_ended() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let active = created(line.join(user(9), &mut gen, t(0)));
        line.advance(t(1));
        let waiting = created(line.join(user(1), &mut gen, t(0)));
        let idle_ends = t(0).plus(policy(1).idle_timeout);
        let before = idle_ends.millis() - 1;
        assert_eq!(
            line.join(user(1), &mut gen, t(before)),
            Joined::Existing(waiting)
        );
        let again = created(line.join(user(1), &mut gen, idle_ends));
        assert_ne!(
            again.id, waiting.id,
            "at its idle deadline the waiter has left"
        );
        let expires = t(1).plus(policy(1).active_ttl);
        let kept = line.join(user(9), &mut gen, t(expires.millis() - 1));
        assert!(
            matches!(kept, Joined::Existing(r) if r.id == active.id),
            "{kept:?}"
        );
        let renewed = created(line.join(user(9), &mut gen, expires));
        assert_ne!(
            renewed.id, active.id,
            "at its expiry the active token has ended"
        );
        assert_eq!(line.active_count(), 0);
    }

    /// An active token's status says EXPIRED from its expiry exactly, swept or not.
    #[test]
    fn an_active_token_reads_expired_from_its_expiry() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let token = created(line.join(user(1), &mut gen, t(0)));
        line.advance(t(1));
        let expires = t(1).plus(policy(1).active_ttl);
        let before = line.status(token.id, t(expires.millis() - 1)).unwrap();
        assert_eq!(
            (before.record.state, before.expires_at),
            (
                TokenState::Active {
                    admitted_at: t(1),
                    expires_at: expires
                },
                expires
            )
        );
        let at = line.status(token.id, expires).unwrap();
        assert_eq!(at.record.state, TokenState::Expired { at: expires });
        assert_eq!(at.expires_at, expires);
    }

    /// One `advance` changes at most [`STEP_BUDGET`] tokens of each kind (it bounds the
    /// writer's lock hold and one persister submission); the next takes the rest.
    #[test]
    fn one_advance_expires_at_most_a_step_budget_of_each_kind() {
        let n = STEP_BUDGET + 10;
        let users = 1..=n as i64;
        let mut line = WaitingLine::new(policy(n), 1);
        let mut gen = ids();
        for u in users.clone() {
            line.join(user(u), &mut gen, t(0));
        }
        assert_eq!(line.advance(t(1)).len(), STEP_BUDGET, "admitted");
        assert_eq!(line.advance(t(2)).len(), 10);
        let all_expired = t(2).plus(policy(n).active_ttl);
        assert_eq!(
            line.advance(all_expired).len(),
            STEP_BUDGET,
            "active expiries"
        );
        assert_eq!(line.advance(all_expired).len(), 10);
        assert_eq!(line.active_count(), 0);

        let mut line = WaitingLine::new(policy(0), 1);
        for u in users {
            line.join(user(u), &mut gen, t(0));
        }
        let all_idle = t(0).plus(policy(0).idle_timeout);
        assert_eq!(line.advance(all_idle).len(), STEP_BUDGET, "idle expiries");
        assert_eq!(line.advance(all_idle).len(), 10);
        assert_eq!(line.waiting_count(), 0);
    }

    /// What a payment stores of the token it spends: the token, expired at the payment.
    #[test]
    fn a_consumed_record_is_the_token_expired_at_the_payment() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let token = created(line.join(user(1), &mut gen, t(0)));
        line.advance(t(1));
        let stored = line.consumed_record(token.id, t(7)).unwrap();
        assert_eq!(
            stored,
            TokenRecord {
                state: TokenState::Expired { at: t(7) },
                ..line.token_of(user(1)).unwrap()
            }
        );
        assert_eq!(
            line.consumed_record(TokenId::new(9).unwrap(), t(7)),
            None,
            "unknown"
        );
    }

    /// Compaction drops the vacated slots behind the line, never a live one: after most
    /// admitted users spent and replaced their tokens, the rest still answer as active.
    #[test]
    fn compacting_the_settled_slots_keeps_every_live_token() {
        let n = 3_000;
        let mut line = WaitingLine::new(policy(n), 1);
        let mut gen = ids();
        let mut tokens: Vec<TokenRecord> = (1..=n as i64)
            .map(|u| created(line.join(user(u), &mut gen, t(0))))
            .collect();
        let settle = |line: &mut WaitingLine, at| {
            for _ in 0..4 {
                line.advance(t(at));
            }
        };
        settle(&mut line, 1);
        assert_eq!(line.active_count(), n);
        // Users 1 to 2,000 spend their token and join again, twice: their old slots behind
        // the line are vacated until they are most of what it keeps there.
        let mut spent = Vec::new();
        for round in 0..2 {
            for (u, token) in (1..=2_000).zip(tokens.iter_mut()) {
                line.consume(token.id, t(2 + round)).unwrap();
                spent.push(token.id);
                *token = created(line.join(user(u), &mut gen, t(2 + round)));
            }
            settle(&mut line, 2 + round);
        }
        assert_eq!(line.settled_vacant, 0, "the vacated slots were dropped");
        for token in &tokens {
            let status = line.status(token.id, t(4)).expect("a live token answers");
            assert!(matches!(status.record.state, TokenState::Active { .. }));
        }
        assert_eq!(line.active_count(), n);
        for id in spent.iter().rev().take(2_000) {
            let status = line.status(*id, t(4)).expect("a replaced token answers");
            assert!(matches!(status.record.state, TokenState::Expired { .. }));
        }
    }

    /// A fresh id already in use, live or remembered as replaced, is drawn again.
    #[test]
    fn a_new_token_never_reuses_an_id_in_use_or_remembered() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let live = created(line.join(user(2), &mut gen, t(0)));
        let first = created(line.join(user(1), &mut gen, t(0)));
        line.advance(t(1));
        line.consume(live.id, t(2)).unwrap();
        // User 2 joins again: its spent token is remembered as replaced.
        let second = created(line.join(user(2), &mut gen, t(3)));
        let mut drawn = vec![TokenId::new(7_777).unwrap(), live.id, first.id, second.id];
        let token = created(line.join(user(3), move || drawn.pop().unwrap(), t(4)));
        assert_eq!(token.id, TokenId::new(7_777).unwrap());
        assert_eq!(line.token_of(user(2)).unwrap().id, second.id);
        assert_eq!(line.token_of(user(1)).unwrap().id, first.id);
    }

    #[test]
    fn joining_twice_keeps_the_place() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let first = created(line.join(user(1), &mut gen, t(0)));
        assert_eq!(line.join(user(1), &mut gen, t(5)), Joined::Existing(first));
    }

    #[test]
    fn waiters_who_stop_polling_leave_the_line() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let a = created(line.join(user(1), &mut gen, t(0)));
        let b = created(line.join(user(2), &mut gen, t(0)));
        let c = created(line.join(user(3), &mut gen, t(0)));
        line.advance(t(0));
        assert!(line.touch(c.id, t(100_000)));
        let changed = line.advance(t(120_000));
        assert_eq!(changed.len(), 1, "only b is abandoned: {changed:?}");
        assert_eq!(changed[0].id, b.id);
        assert_eq!(line.status(c.id, t(120_000)).unwrap().ahead, 0);
        assert_eq!(
            line.check_active(a.id, Some(user(1)), t(120_000))
                .unwrap()
                .id,
            a.id
        );
        assert_eq!(
            line.check_active(b.id, Some(user(2)), t(120_000)),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            line.check_active(c.id, Some(user(3)), t(120_000)),
            Err(TokenRefusal::NotActive)
        );
        assert_eq!(
            line.check_active(c.id, Some(user(1)), t(120_000)),
            Err(TokenRefusal::Invalid)
        );
    }

    #[test]
    fn a_poll_after_the_idle_deadline_does_not_revive_the_waiter() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let a = created(line.join(user(1), &mut gen, t(0)));
        let b = created(line.join(user(2), &mut gen, t(0)));
        line.advance(t(0));
        // b polls after its deadline, before any sweep ran: still abandoned.
        assert!(!line.touch(b.id, t(120_000)));
        let polled = line.status(b.id, t(120_000)).unwrap();
        assert_eq!(polled.record.state, TokenState::Expired { at: t(120_000) });
        assert_eq!(polled.estimated_wait, None);
        assert_eq!(
            line.check_active(b.id, None, t(120_000)),
            Err(TokenRefusal::Expired)
        );
        // The slot frees up: b is not admitted, it is expired (at its deadline).
        line.consume(a.id, t(120_001)).unwrap();
        let changed = line.advance(t(120_001));
        assert!(changed
            .iter()
            .all(|r| !matches!(r.state, TokenState::Active { .. })));
        assert_eq!(
            line.token_of(user(2)).unwrap().state,
            TokenState::Expired { at: t(120_000) }
        );
        // Joining again gives a new token, later in line; the old one stays EXPIRED.
        let again = created(line.join(user(2), &mut gen, t(120_002)));
        assert_ne!(again.id, b.id);
        assert!(again.position > b.position);
        let old = line.status(b.id, t(120_002)).unwrap();
        assert_eq!(old.record.state, TokenState::Expired { at: t(120_000) });
        assert_eq!((old.record.position, old.ahead), (b.position, 0));
        assert_eq!(
            line.check_active(b.id, None, t(120_002)),
            Err(TokenRefusal::Expired)
        );
    }

    /// A token its user replaced answers EXPIRED (to its owner only) while the join that
    /// replaced it is among the last `SUPERSEDED_WINDOW` joins, and is forgotten after.
    #[test]
    fn a_replaced_token_stays_expired_within_the_window() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let a = created(line.join(user(1), &mut gen, t(0)));
        line.advance(t(0));
        line.consume(a.id, t(5)).unwrap();
        let again = created(line.join(user(1), &mut gen, t(6)));
        let old = line.status(a.id, t(7)).unwrap();
        assert_eq!(
            old.record,
            TokenRecord {
                state: TokenState::Expired { at: t(5) },
                ..a
            }
        );
        assert_eq!((old.expires_at, old.estimated_wait), (t(5), None));
        assert_eq!(
            line.check_active(a.id, Some(user(1)), t(7)),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            line.check_active(a.id, Some(user(2)), t(7)),
            Err(TokenRefusal::Invalid)
        );
        // A live token is never replaced (the join answers it), so nothing more is remembered.
        assert!(
            matches!(line.join(user(1), &mut gen, t(8)), Joined::Existing(r) if r.id == again.id)
        );
        assert_eq!(line.superseded.len(), 1);
        // The window moves one position per join: the replacing join at position 2 leaves it
        // when position 2 + SUPERSEDED_WINDOW is handed out.
        let window = super::super::SUPERSEDED_WINDOW as i64;
        for u in 2..=window {
            line.join(user(u + 1), &mut gen, t(9));
        }
        assert!(line.status(a.id, t(9)).is_some(), "still inside the window");
        line.join(user(window + 2), &mut gen, t(9));
        assert_eq!(line.status(a.id, t(9)), None);
        assert_eq!(
            line.check_active(a.id, None, t(9)),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(line.superseded.len(), 0);
    }

    #[test]
    fn joining_over_a_due_token_retires_it_first() {
        let mut line = WaitingLine::new(
            AdmissionPolicy {
                active_ttl: Duration::from_secs(10),
                ..policy(1)
            },
            1,
        );
        let mut gen = ids();
        let a = created(line.join(user(1), &mut gen, t(0)));
        line.advance(t(0));
        // Due at 10 s, not yet swept: the join expires it and says so.
        match line.join(user(1), &mut gen, t(10_000)) {
            Joined::Created { token, retired } => {
                assert_eq!(
                    retired.map(|r| (r.id, r.state)),
                    Some((a.id, TokenState::Expired { at: t(10_000) }))
                );
                assert!(token.position > a.position);
            }
            other => panic!("expected a new token: {other:?}"),
        }
        assert_eq!(line.active_count(), 0);
        assert_eq!(line.waiting_count(), 1);
        // The stale deadline entry of a is ignored.
        let changed = line.advance(t(10_001));
        assert_eq!(changed.len(), 1);
        assert!(matches!(changed[0].state, TokenState::Active { .. }));
    }

    #[test]
    fn active_tokens_expire_after_their_ttl() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let a = created(line.join(user(1), &mut gen, t(0)));
        let b = created(line.join(user(2), &mut gen, t(0)));
        line.advance(t(0));
        line.touch(b.id, t(119_000));
        line.touch(b.id, t(238_000));
        line.touch(b.id, t(357_000));
        line.touch(b.id, t(476_000));
        line.touch(b.id, t(595_000));
        assert_eq!(
            line.check_active(a.id, None, t(600_000)),
            Err(TokenRefusal::Expired)
        );
        let changed = line.advance(t(600_000));
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[1].id, b.id);
        assert!(matches!(changed[1].state, TokenState::Active { .. }));
        let again = created(line.join(user(1), &mut gen, t(600_001)));
        assert_ne!(again.id, a.id);
        assert!(again.position > b.position);
    }

    #[test]
    fn the_rate_caps_admissions_per_second() {
        let mut line = WaitingLine::new(
            AdmissionPolicy {
                admit_per_sec: 50,
                ..policy(10_000)
            },
            1,
        );
        let mut gen = ids();
        for u in 1..=1000 {
            line.join(user(u), &mut gen, t(0));
        }
        let mut admitted = 0;
        for step in 0..=200 {
            admitted += line.advance(t(step * 50)).len();
        }
        // Ten seconds at 50/s.
        assert!((495..=505).contains(&admitted), "admitted {admitted}");
    }

    /// Simulated minute with ticks that jitter between 20 and 95 ms (the actor's timer under
    /// load) and an `advance` on every join: the outflow is the configured rate to within one
    /// admission, far inside ±5 %.
    #[test]
    fn rate_admission_over_a_minute_is_exact() {
        for rate in [7u32, 200, 1000] {
            let mut line = WaitingLine::new(
                AdmissionPolicy {
                    admit_per_sec: rate,
                    idle_timeout: Duration::from_secs(3600),
                    ..policy(1_000_000)
                },
                1,
            );
            let mut gen = ids();
            let mut next_user = 1;
            for _ in 0..(rate as i64 * 70) {
                line.join(user(next_user), &mut gen, t(0));
                next_user += 1;
            }
            let mut now = 0i64;
            let mut admitted = 0usize;
            let mut jitter = 12345u64;
            line.advance(t(0));
            while now < 60_000 {
                jitter = jitter
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                now = (now + 20 + (jitter >> 33) as i64 % 76).min(60_000);
                if jitter % 3 == 0 {
                    // A join between ticks moves the line too.
                    line.join(user(next_user), &mut gen, t(now));
                    next_user += 1;
                }
                admitted += line
                    .advance(t(now))
                    .iter()
                    .filter(|r| matches!(r.state, TokenState::Active { .. }))
                    .count();
            }
            let expected = rate as usize * 60;
            assert!(
                admitted.abs_diff(expected) <= 1,
                "rate {rate}: admitted {admitted}, expected {expected}"
            );
            let measured = line.measured_rate(t(60_000)).unwrap();
            assert!(
                (measured - f64::from(rate)).abs() <= f64::from(rate) * 0.05,
                "rate {rate}: measured {measured}"
            );
        }
    }

    /// A tick that comes late (the actor stalled for seconds) admits at most the bucket:
    /// a quarter second's worth plus one, not everything the pause would have allowed.
    #[test]
    fn a_late_tick_admits_at_most_a_quarter_seconds_burst() {
        let mut line = WaitingLine::new(
            AdmissionPolicy {
                admit_per_sec: 20,
                idle_timeout: Duration::from_secs(3600),
                ..policy(10_000)
            },
            1,
        );
        let mut gen = ids();
        for u in 1..=100 {
            line.join(user(u), &mut gen, t(0));
        }
        assert_eq!(line.advance(t(0)).len(), 0, "the bucket starts empty");
        assert_eq!(line.advance(t(5_000)).len(), 6, "20/s × 0.25 s + 1");
        assert_eq!(line.advance(t(5_000)).len(), 0, "spent");
        assert_eq!(line.advance(t(5_100)).len(), 2, "then the rate again");
    }

    /// Cap and rate together: one in, one out, and never faster than the rate.
    #[test]
    fn cap_and_rate_together() {
        let mut line = WaitingLine::new(
            AdmissionPolicy {
                max_active: 50,
                active_ttl: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(3600),
                admit_per_sec: 200,
            },
            1,
        );
        let mut gen = ids();
        for u in 1..=20_000 {
            line.join(user(u), &mut gen, t(0));
        }
        let mut admitted = 0;
        for step in 0..=1200 {
            for r in line.advance(t(step * 50)) {
                if matches!(r.state, TokenState::Active { .. }) {
                    admitted += 1;
                }
            }
            assert!(line.active_count() <= 50);
        }
        // The cap binds: 50 per second of time to live, over 60 s (plus the first batch).
        assert!((2990..=3060).contains(&admitted), "admitted {admitted}");
    }

    #[test]
    fn the_wait_estimate_follows_the_measured_rate() {
        let mut line = WaitingLine::new(
            AdmissionPolicy {
                admit_per_sec: 100,
                idle_timeout: Duration::from_secs(3600),
                ..policy(1_000_000)
            },
            1,
        );
        let mut gen = ids();
        let tokens: Vec<TokenRecord> = (1..=20_000)
            .map(|u| created(line.join(user(u), &mut gen, t(0))))
            .collect();
        // Nothing measured yet: the configured rate.
        let last = line.status(tokens[19_999].id, t(0)).unwrap();
        assert_eq!(last.ahead, 19_999);
        assert_eq!(last.estimated_wait, Some(Duration::from_secs(200)));
        // Only a quarter of the configured rate gets through (every fourth tick runs).
        for step in 0..=1200 {
            if step % 4 == 0 {
                line.advance(t(step * 50));
            } else {
                line.refilled_at = Some(t(step * 50));
            }
        }
        let rate = line.measured_rate(t(60_000)).unwrap();
        assert!((rate - 25.0).abs() < 2.5, "measured {rate}");
        let status = line.status(tokens[19_999].id, t(60_000)).unwrap();
        let wait = status.estimated_wait.unwrap().as_secs_f64();
        let expected = (status.ahead + 1) as f64 / 25.0;
        assert!(
            (wait - expected).abs() < expected * 0.1,
            "{wait} vs {expected}"
        );
        // Without a rate cap and before any admission: unknowable.
        let mut capped = WaitingLine::new(policy(0), 1);
        let w = created(capped.join(user(1), &mut gen, t(0)));
        capped.advance(t(0));
        let polled = capped.status(w.id, t(0)).unwrap();
        assert_eq!(polled.estimated_wait, None);
        assert_eq!(polled.poll_after, POLL_FLOOR);
    }

    #[test]
    fn the_front_is_compacted_and_settled_tokens_still_answer() {
        let mut line = WaitingLine::new(
            AdmissionPolicy {
                active_ttl: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(3600),
                ..policy(100)
            },
            1,
        );
        let mut gen = ids();
        let tokens: Vec<TokenRecord> = (1..=50_000)
            .map(|u| created(line.join(user(u), &mut gen, t(0))))
            .collect();
        for s in 0..=400 {
            line.advance(t(s * 1000));
        }
        // 100 per second for 400 s, plus the first batch.
        assert_eq!(line.waiting_count(), 50_000 - 40_100);
        assert!(
            line.slots.len() <= 50_000 - 40_000,
            "deque: {}",
            line.slots.len()
        );
        assert!(line.ranks.cells() <= 2 * line.slots.len() + 4097);
        let first = line.status(tokens[0].id, t(400_000)).unwrap();
        assert!(matches!(first.record.state, TokenState::Expired { .. }));
        let front = line.status(tokens[40_100].id, t(400_000)).unwrap();
        assert_eq!((front.ahead, front.record.state), (0, TokenState::Waiting));
        // Users who rejoin leave vacancies in `settled` that are squeezed out.
        for u in 1..=40_000 {
            line.join(user(u), &mut gen, t(400_001));
        }
        line.advance(t(400_001));
        assert!(
            line.settled.len() < 40_100,
            "settled: {}",
            line.settled.len()
        );
        assert_eq!(line.by_token.len(), 50_000);
    }

    /// One million waiters in the line. Run with
    /// `cargo test --release --lib domain::queue::line::tests::a_million_waiters -- --ignored --nocapture`.
    #[test]
    #[ignore = "measures memory: run alone, in release"]
    fn a_million_waiters_fit_in_memory() {
        fn rss_mb() -> f64 {
            let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
            let pages: f64 = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("statm has a resident field");
            pages * 4096.0 / (1024.0 * 1024.0)
        }
        let before = rss_mb();
        let mut line = WaitingLine::new(policy(1000), 1);
        let mut rng = rand::rng();
        let started = std::time::Instant::now();
        for u in 1..=1_000_000 {
            line.join(user(u), || TokenId::random(&mut rng), t(1_000));
        }
        let elapsed = started.elapsed();
        let after = rss_mb();
        println!(
            "1,000,000 waiters: RSS {before:.1} MB → {after:.1} MB ({:.1} MB for the line), \
             {:.0} joins/s in memory",
            after - before,
            1e6 / elapsed.as_secs_f64()
        );
        assert!(after < 256.0, "RSS {after:.1} MB");
    }

    proptest! {
        /// Whatever joins, polls, payments and time do, admission follows join order, the cap
        /// holds, and "ahead" equals the number of waiters with an earlier place.
        #[test]
        fn admission_follows_join_order(steps in prop::collection::vec((0..4u8, 1..40i64, 0..90_000i64), 1..200)) {
            let mut line = WaitingLine::new(policy(3), 1);
            let mut gen = ids();
            let mut now = 0;
            let mut last_admitted = 0;
            for (kind, u, dt) in steps {
                now += dt;
                match kind {
                    0 => { line.join(user(u), &mut gen, t(now)); }
                    1 => if let Some(r) = line.token_of(user(u)) { line.touch(r.id, t(now)); },
                    2 => if let Some(r) = line.token_of(user(u)) { line.consume(r.id, t(now)); },
                    _ => {}
                }
                for r in line.advance(t(now)) {
                    if matches!(r.state, TokenState::Active { .. }) {
                        prop_assert!(r.position > last_admitted);
                        last_admitted = r.position;
                    }
                }
                prop_assert!(line.active_count() <= 3);
                let mut waiting: Vec<TokenRecord> = (1..40).filter_map(|u| line.token_of(user(u)))
                    .filter(|r| r.state == TokenState::Waiting).collect();
                waiting.sort_by_key(|r| r.position);
                prop_assert_eq!(waiting.len(), line.waiting_count());
                let active = (1..40).filter_map(|u| line.token_of(user(u)))
                    .filter(|r| matches!(r.state, TokenState::Active { .. })).count();
                prop_assert_eq!(active, line.active_count());
                for (n, r) in waiting.iter().enumerate() {
                    prop_assert_eq!(line.status(r.id, t(now)).unwrap().ahead, n as u64);
                }
            }
        }
    }
}
