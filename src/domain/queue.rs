//! The waiting room: tokens in join order, FIFO admission under a cap and a rate, expiry of
//! active tokens (time to live, or used by a payment) and of waiters that stopped polling.
//!
//! Every operation is O(log n) or amortised O(1): the line is never scanned. A token's number
//! of waiters ahead comes from a Fenwick tree over join positions (one bit per waiter), idle and
//! active expiry come from deadline heaps that are checked lazily.

use super::{Timestamp, TokenId, UserId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Where a token is in its life: `WAITING` → `ACTIVE` → `EXPIRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Waiting,
    Active {
        admitted_at: Timestamp,
        expires_at: Timestamp,
    },
    Expired {
        at: Timestamp,
    },
}

impl TokenState {
    pub fn name(self) -> &'static str {
        match self {
            TokenState::Waiting => "WAITING",
            TokenState::Active { .. } => "ACTIVE",
            TokenState::Expired { .. } => "EXPIRED",
        }
    }
}

/// A token as it is stored: everything but the volatile last-poll time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub user: UserId,
    /// Place number in the join order (the API's `queueId`).
    pub position: u64,
    pub created_at: Timestamp,
    pub state: TokenState,
}

/// How the line lets people in.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionPolicy {
    /// At most this many ACTIVE tokens at once.
    pub max_active: usize,
    /// How long an ACTIVE token lives after admission.
    pub active_ttl: Duration,
    /// A WAITING token not polled for this long is abandoned.
    pub idle_timeout: Duration,
    /// At most this many admissions per second; 0 means no rate cap.
    pub admit_per_sec: u32,
}

/// Why a token does not authorize a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRule {
    /// Unknown, or owned by another user.
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("token not active")]
    NotActive,
}

/// What a poll sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenStatus {
    pub record: TokenRecord,
    /// WAITING tokens ahead of this one (0 unless WAITING).
    pub ahead: u64,
    /// When the token stops being valid if nothing else happens.
    pub expires_at: Timestamp,
}

/// The outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The user already had a live token: a second click never loses a place.
    Existing(TokenRecord),
    Created(TokenRecord),
}

#[derive(Debug)]
struct Token {
    record: TokenRecord,
    /// Refreshed by polls through a shared borrow, so readers never need the writer's lock.
    last_seen_ms: AtomicI64,
}

/// The whole waiting room. Only the `QueueActor` mutates it; polls read it concurrently.
#[derive(Debug)]
pub struct WaitingLine {
    policy: AdmissionPolicy,
    tokens: HashMap<TokenId, Token>,
    current: HashMap<UserId, TokenId>,
    /// Join order; may still contain tokens that left the line (skipped when met).
    line: VecDeque<TokenId>,
    ranks: Fenwick,
    waiting: usize,
    active: usize,
    active_deadlines: BinaryHeap<Reverse<(Timestamp, TokenId)>>,
    idle_deadlines: BinaryHeap<Reverse<(Timestamp, TokenId)>>,
    next_position: u64,
    allowance: f64,
    refilled_at: Option<Timestamp>,
}

impl WaitingLine {
    /// An empty line whose next token gets place number `next_position`.
    pub fn new(policy: AdmissionPolicy, next_position: u64) -> WaitingLine {
        let next_position = next_position.max(1);
        WaitingLine {
            policy,
            tokens: HashMap::new(),
            current: HashMap::new(),
            line: VecDeque::new(),
            ranks: Fenwick::new(next_position),
            waiting: 0,
            active: 0,
            active_deadlines: BinaryHeap::new(),
            idle_deadlines: BinaryHeap::new(),
            next_position,
            allowance: 0.0,
            refilled_at: None,
        }
    }

    /// Rebuilds the line from stored tokens. Waiters count as seen at `now` (nobody could poll
    /// while the service was down); tokens due are expired by the next `advance`.
    pub fn restore(
        policy: AdmissionPolicy,
        mut records: Vec<TokenRecord>,
        now: Timestamp,
    ) -> WaitingLine {
        records.sort_by_key(|r| r.position);
        let live_from = records
            .iter()
            .find(|r| r.state == TokenState::Waiting)
            .map(|r| r.position);
        let next_position = records.last().map_or(1, |r| r.position + 1);
        let mut line = WaitingLine::new(policy, live_from.unwrap_or(next_position));
        line.next_position = next_position;
        for record in records {
            line.insert(record, now);
        }
        line
    }

    fn insert(&mut self, record: TokenRecord, now: Timestamp) {
        match record.state {
            TokenState::Waiting => {
                self.ranks.set(record.position, 1);
                self.line.push_back(record.id);
                self.waiting += 1;
                self.idle_deadlines
                    .push(Reverse((now.plus(self.policy.idle_timeout), record.id)));
            }
            TokenState::Active { expires_at, .. } => {
                self.active += 1;
                self.active_deadlines.push(Reverse((expires_at, record.id)));
            }
            TokenState::Expired { .. } => {}
        }
        if let Some(previous) = self.current.insert(record.user, record.id) {
            if previous != record.id {
                self.tokens.remove(&previous);
            }
        }
        self.tokens.insert(
            record.id,
            Token {
                record,
                last_seen_ms: AtomicI64::new(now.millis()),
            },
        );
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

    /// The token a user holds (live or the last expired one).
    pub fn token_of(&self, user: UserId) -> Option<TokenRecord> {
        self.current
            .get(&user)
            .and_then(|id| self.tokens.get(id))
            .map(|t| t.record)
    }

    /// Joins `user` to the back of the line, or returns the live token they already hold.
    /// `fresh_id` draws random ids; one already in use is drawn again.
    pub fn join(
        &mut self,
        user: UserId,
        mut fresh_id: impl FnMut() -> TokenId,
        now: Timestamp,
    ) -> Joined {
        if let Some(existing) = self.token_of(user) {
            let live = match existing.state {
                TokenState::Waiting => true,
                TokenState::Active { expires_at, .. } => now < expires_at,
                TokenState::Expired { .. } => false,
            };
            if live {
                return Joined::Existing(existing);
            }
        }
        let id = loop {
            let id = fresh_id();
            if !self.tokens.contains_key(&id) {
                break id;
            }
        };
        let record = TokenRecord {
            id,
            user,
            position: self.next_position,
            created_at: now,
            state: TokenState::Waiting,
        };
        self.next_position += 1;
        self.insert(record, now);
        Joined::Created(record)
    }

    /// Records that the holder of `id` polled at `now` (keeps a waiter in line).
    pub fn touch(&self, id: TokenId, now: Timestamp) {
        if let Some(token) = self.tokens.get(&id) {
            token
                .last_seen_ms
                .fetch_max(now.millis(), Ordering::Relaxed);
        }
    }

    /// What a poll answers, in O(log n).
    pub fn status(&self, id: TokenId, now: Timestamp) -> Option<TokenStatus> {
        let token = self.tokens.get(&id)?;
        let mut record = token.record;
        let (ahead, expires_at) = match record.state {
            TokenState::Waiting => {
                let seen = Timestamp::from_millis(token.last_seen_ms.load(Ordering::Relaxed));
                (
                    self.ranks.count_before(record.position),
                    seen.plus(self.policy.idle_timeout),
                )
            }
            TokenState::Active { expires_at, .. } if now >= expires_at => {
                // Due but not yet swept: report what it is.
                record.state = TokenState::Expired { at: expires_at };
                (0, expires_at)
            }
            TokenState::Active { expires_at, .. } => (0, expires_at),
            TokenState::Expired { at } => (0, at),
        };
        Some(TokenStatus {
            record,
            ahead,
            expires_at,
        })
    }

    /// Checks that `id` is an ACTIVE token of `user` at `now`.
    pub fn check_active(
        &self,
        id: TokenId,
        user: Option<UserId>,
        now: Timestamp,
    ) -> Result<TokenRecord, TokenRule> {
        let token = self.tokens.get(&id).ok_or(TokenRule::Invalid)?;
        let record = token.record;
        if user.is_some_and(|u| u != record.user) {
            return Err(TokenRule::Invalid);
        }
        match record.state {
            TokenState::Waiting => Err(TokenRule::NotActive),
            TokenState::Active { expires_at, .. } if now < expires_at => Ok(record),
            TokenState::Active { .. } | TokenState::Expired { .. } => Err(TokenRule::Expired),
        }
    }

    /// Expires an ACTIVE token at once (its owner paid): its slot goes to the next in line.
    pub fn consume(&mut self, id: TokenId, now: Timestamp) -> Option<TokenRecord> {
        let token = self.tokens.get_mut(&id)?;
        if !matches!(token.record.state, TokenState::Active { .. }) {
            return None;
        }
        token.record.state = TokenState::Expired { at: now };
        self.active -= 1;
        Some(token.record)
    }

    /// The record of `id` as it would be stored once consumed at `now`.
    pub fn consumed_record(&self, id: TokenId, now: Timestamp) -> Option<TokenRecord> {
        let token = self.tokens.get(&id)?;
        Some(TokenRecord {
            state: TokenState::Expired { at: now },
            ..token.record
        })
    }

    /// Moves time forward to `now`: expires due active tokens and abandoned waiters, then
    /// admits from the front of the line as far as the cap and the rate allow. Returns every
    /// token whose state changed, in the order it changed.
    pub fn advance(&mut self, now: Timestamp) -> Vec<TokenRecord> {
        let mut changed = Vec::new();
        while let Some(&Reverse((due, id))) = self.active_deadlines.peek() {
            if due > now {
                break;
            }
            self.active_deadlines.pop();
            if let Some(token) = self.tokens.get_mut(&id) {
                if let TokenState::Active { expires_at, .. } = token.record.state {
                    token.record.state = TokenState::Expired { at: expires_at };
                    self.active -= 1;
                    changed.push(token.record);
                }
            }
        }
        while let Some(&Reverse((due, id))) = self.idle_deadlines.peek() {
            if due > now {
                break;
            }
            self.idle_deadlines.pop();
            let Some(token) = self.tokens.get_mut(&id) else {
                continue;
            };
            if token.record.state != TokenState::Waiting {
                continue;
            }
            let seen = Timestamp::from_millis(token.last_seen_ms.load(Ordering::Relaxed));
            let deadline = seen.plus(self.policy.idle_timeout);
            if deadline > now {
                // Polled since the deadline was set: look again later.
                self.idle_deadlines.push(Reverse((deadline, id)));
                continue;
            }
            token.record.state = TokenState::Expired { at: deadline };
            self.ranks.set(token.record.position, 0);
            self.waiting -= 1;
            changed.push(token.record);
        }
        let mut budget = self.policy.max_active.saturating_sub(self.active);
        if self.policy.admit_per_sec > 0 {
            let rate = f64::from(self.policy.admit_per_sec);
            let elapsed = self
                .refilled_at
                .map_or(0.0, |at| at.until(now).as_secs_f64());
            // A burst of at most a tenth of a second's worth (at least one) keeps outflow smooth.
            self.allowance = (self.allowance + elapsed * rate).min((rate / 10.0).max(1.0));
            self.refilled_at = Some(now);
            budget = budget.min(self.allowance as usize);
        }
        let mut admitted = 0;
        while admitted < budget {
            let Some(id) = self.line.pop_front() else {
                break;
            };
            let Some(token) = self.tokens.get_mut(&id) else {
                continue;
            };
            if token.record.state != TokenState::Waiting {
                continue;
            }
            let expires_at = now.plus(self.policy.active_ttl);
            token.record.state = TokenState::Active {
                admitted_at: now,
                expires_at,
            };
            self.ranks.set(token.record.position, 0);
            self.waiting -= 1;
            self.active += 1;
            self.active_deadlines.push(Reverse((expires_at, id)));
            changed.push(token.record);
            admitted += 1;
        }
        if self.policy.admit_per_sec > 0 {
            self.allowance -= admitted as f64;
        }
        debug_assert!(self.active <= self.policy.max_active || admitted == 0);
        changed
    }
}

/// Counts of waiters by join position, with O(log n) prefix sums and appends.
#[derive(Debug)]
struct Fenwick {
    /// Position of index 1.
    base: u64,
    /// 1-indexed; `tree[0]` is unused.
    tree: Vec<i64>,
    values: Vec<i8>,
}

impl Fenwick {
    fn new(base: u64) -> Fenwick {
        Fenwick {
            base,
            tree: vec![0],
            values: vec![0],
        }
    }

    fn index(&self, position: u64) -> Option<usize> {
        usize::try_from(position.checked_sub(self.base)?)
            .ok()
            .map(|i| i + 1)
    }

    fn set(&mut self, position: u64, value: i8) {
        let Some(i) = self.index(position) else {
            return;
        };
        while self.tree.len() <= i {
            self.push();
        }
        let delta = i64::from(value - self.values[i]);
        self.values[i] = value;
        let mut j = i;
        while j < self.tree.len() {
            self.tree[j] += delta;
            j += j & j.wrapping_neg();
        }
    }

    /// Appends a zero slot; its node covers the range below it, summed from existing nodes.
    fn push(&mut self) {
        let i = self.tree.len();
        let low = i & i.wrapping_neg();
        let covered = self.prefix(i - 1) - self.prefix(i - low);
        self.tree.push(covered);
        self.values.push(0);
    }

    fn prefix(&self, mut i: usize) -> i64 {
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// How many set positions lie strictly before `position`.
    fn count_before(&self, position: u64) -> u64 {
        let i = match self.index(position) {
            Some(i) => (i - 1).min(self.tree.len() - 1),
            None => 0,
        };
        u64::try_from(self.prefix(i)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(max_active: usize) -> AdmissionPolicy {
        AdmissionPolicy {
            max_active,
            active_ttl: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(120),
            admit_per_sec: 0,
        }
    }
    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }
    fn user(n: i64) -> UserId {
        UserId::new(n).unwrap()
    }
    fn ids() -> impl FnMut() -> TokenId {
        let mut n = 1000;
        move || {
            n += 1;
            TokenId::new(n).unwrap()
        }
    }
    fn created(j: Joined) -> TokenRecord {
        match j {
            Joined::Created(r) => r,
            Joined::Existing(r) => panic!("expected a new token, got {r:?}"),
        }
    }

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
        line.touch(c.id, t(100_000));
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
            Err(TokenRule::Expired)
        );
        assert_eq!(
            line.check_active(c.id, Some(user(3)), t(120_000)),
            Err(TokenRule::NotActive)
        );
        assert_eq!(
            line.check_active(c.id, Some(user(1)), t(120_000)),
            Err(TokenRule::Invalid)
        );
    }

    #[test]
    fn active_tokens_expire_after_their_ttl() {
        let mut line = WaitingLine::new(policy(1), 1);
        let mut gen = ids();
        let a = created(line.join(user(1), &mut gen, t(0)));
        let b = created(line.join(user(2), &mut gen, t(0)));
        line.advance(t(0));
        line.touch(b.id, t(599_000));
        assert_eq!(
            line.check_active(a.id, None, t(600_000)),
            Err(TokenRule::Expired)
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
                for (n, r) in waiting.iter().enumerate() {
                    prop_assert_eq!(line.status(r.id, t(now)).unwrap().ahead, n as u64);
                }
            }
        }
    }
}
