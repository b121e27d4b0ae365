//! The waiting room: tokens in join order, FIFO admission under a cap and a rate, expiry of
//! active tokens (time to live, or used by a payment) and of waiters that stopped polling, the
//! measured admission rate, and the wait estimate and poll pacing a status poll answers.
//!
//! Layout. A ticket drop puts a million people in this line, so it is laid out by join
//! position, not by token: the line region is a `VecDeque` of 40-byte slots indexed by
//! `position - base`, and two maps send a token id or a user id to a position. Tokens that
//! left the front of the line (ACTIVE or EXPIRED) move to `settled`, a vector kept in position
//! order (they are moved front first) and searched by bisection, so the deque only spans the
//! live part of the line and its front is compacted as admission moves past it.
//!
//! Costs. Every operation is O(log n) or amortised O(1); nothing scans the line. "Waiting
//! ahead" is a prefix sum of a Fenwick tree over positions (one bit per waiter); active and
//! idle expiry come from deadline heaps checked lazily; admission walks from the front and
//! each slot is walked past once. One `advance` does at most [`STEP_BUDGET`] transitions of
//! each kind, so the writer's lock is never held for long even when a crowd leaves at once.

use super::ids::IdMap;
use super::{Timestamp, TokenId, UserId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Transitions of each kind (active expiry, idle expiry, admission) one `advance` performs at
/// most; the rest wait for the next call (the next 50 ms tick). Bounds the writer's lock hold
/// (and the size of one persister submission) when tens of thousands become due together.
pub const STEP_BUDGET: usize = 4096;
/// Slots one `advance` walks past at the front while admitting, at most (a walked slot is a
/// few cache misses: 16,384 of them hold the lock for a few milliseconds at worst).
const WALK_BUDGET: usize = 4 * STEP_BUDGET;
/// The rate bucket's depth: this long's worth of admissions (plus one) at most at once.
pub const BURST: Duration = Duration::from_millis(250);
/// Time constant of the admission-rate average: admissions older than this weigh 1/e.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// A measured rate below this (one admission in 100 s) tells nothing about the wait.
const MIN_RATE: f64 = 0.01;
/// Shortest pause a poll is told to take (ACTIVE tokens and the front of the line): a waiter
/// learns of its admission within a second.
pub const POLL_FLOOR: Duration = Duration::from_secs(1);
/// Longest pause a poll is told to take, whatever `idle_timeout` is. Below it, the ceiling is
/// a quarter of `idle_timeout` (30 s at the default 120 s): a drop expecting a million waiters
/// can raise `idle_timeout` to slow the back of the line down (see `poll_after`).
pub const POLL_CEILING: Duration = Duration::from_secs(120);
/// Without any rate to go by, pace a waiter as if 100 people were admitted per second.
const POLL_PER_WAITER_AHEAD: Duration = Duration::from_millis(10);

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

impl AdmissionPolicy {
    /// The longest pause a poll is told to take: a quarter of `idle_timeout` (a client that
    /// obeys it can miss three polls in a row and still not be dropped), at most
    /// [`POLL_CEILING`].
    pub fn poll_ceiling(&self) -> Duration {
        (self.idle_timeout / 4).min(POLL_CEILING)
    }

    /// How long a client should wait before its next poll.
    ///
    /// WAITING: a quarter of the estimated wait (the client notices its admission at most a
    /// quarter of its wait late, and at most a second late near the front), or 10 ms per
    /// waiter ahead when no rate is known. The farther back, the slower the polling: with a
    /// known admission rate `r`, the waiters closer than `4 r × ceiling` poll
    /// `4 r (1 + ln(ceiling / floor))` ≈ 18 r times a second in all, whatever the length of the
    /// line; the `m` waiters behind them poll once per ceiling each (`m / ceiling`, the least
    /// `idle_timeout` allows). ACTIVE: the floor. EXPIRED: the ceiling (nothing will change;
    /// rejoin instead).
    pub fn poll_after(&self, state: TokenState, ahead: u64, wait: Option<Duration>) -> Duration {
        let ceiling = self.poll_ceiling();
        let floor = POLL_FLOOR.min(ceiling);
        let target = match state {
            TokenState::Waiting => match wait {
                Some(wait) => wait / 4,
                None => {
                    POLL_PER_WAITER_AHEAD.saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX))
                }
            },
            TokenState::Active { .. } => floor,
            TokenState::Expired { .. } => ceiling,
        };
        target.clamp(floor, ceiling)
    }
}

/// Why a token does not authorize a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
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
    /// WAITING: `(ahead + 1) / rate`, the rate being the measured admission rate, or
    /// `admit_per_sec` when nothing was measured yet; `None` when neither is known. ACTIVE:
    /// zero. EXPIRED: `None` (it will never be admitted).
    pub estimated_wait: Option<Duration>,
    /// When the client should poll again ([`AdmissionPolicy::poll_after`]).
    pub poll_after: Duration,
}

/// The outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The user already had a live token: a second click never loses a place.
    Existing(TokenRecord),
    Created {
        token: TokenRecord,
        /// The user's previous token, if it was due (idle or past its time to live) but not yet
        /// swept: it is expired now and must be stored before the new one (one live token per
        /// user, in the database too).
        retired: Option<TokenRecord>,
    },
}

// --- slots --------------------------------------------------------------------------------

/// The state part of a slot's key. `Vacant` marks a position whose token was replaced by the
/// same user's newer one (or that no stored token holds after a restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
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
struct Slot {
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

impl Slot {
    fn vacant() -> Slot {
        Slot {
            key: 0,
            user: UserId::new(1).expect("1 is a valid id"),
            created_at: Timestamp::default(),
            clock: AtomicI64::new(0),
            admitted_at: Timestamp::default(),
        }
    }

    fn new(record: &TokenRecord, seen: Timestamp) -> Slot {
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

    fn tag(&self) -> Tag {
        match self.key >> TAG_SHIFT {
            1 => Tag::Waiting,
            2 => Tag::Active,
            3 => Tag::Expired,
            _ => Tag::Vacant,
        }
    }

    fn set_tag(&mut self, tag: Tag) {
        self.key = (self.key & ID_MASK) | ((tag as u64) << TAG_SHIFT);
    }

    fn id(&self) -> TokenId {
        TokenId::new((self.key & ID_MASK) as i64).expect("slot keys hold valid token ids")
    }

    fn clock(&self) -> Timestamp {
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

    fn record(&self, position: u64) -> Option<TokenRecord> {
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
    fn idle_deadline(&self, idle: Duration) -> Timestamp {
        self.clock().plus(idle)
    }

    fn activate(&mut self, admitted_at: Timestamp, expires_at: Timestamp) {
        self.set_tag(Tag::Active);
        self.admitted_at = admitted_at;
        *self.clock.get_mut() = expires_at.millis();
    }

    fn expire(&mut self, at: Timestamp) {
        self.set_tag(Tag::Expired);
        *self.clock.get_mut() = at.millis();
    }
}

// --- the line -----------------------------------------------------------------------------

/// Id → join position. Keyed by ids the server chose (random token ids, database user ids),
/// never by client-chosen keys, so a flooding attack has nothing to insert (see
/// [`super::ids::IdHasher`]).
type PositionIndex<K> = IdMap<K, u64>;

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

    /// The line, with its rank index and deadline heaps built.
    pub fn finish(self) -> WaitingLine {
        let mut line = self.line;
        line.next_position = self.last + 1;
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

/// The whole waiting room. Only the `QueueActor` mutates it; polls read it concurrently.
#[derive(Debug)]
pub struct WaitingLine {
    policy: AdmissionPolicy,
    /// Positions `[base, next_position)`, one slot each.
    slots: VecDeque<Slot>,
    base: u64,
    /// Admission resumes here: every slot before it is no longer WAITING.
    head: u64,
    next_position: u64,
    /// Tokens before `base` (ACTIVE or EXPIRED), ascending by position.
    settled: Vec<(u64, Slot)>,
    /// Vacant entries in `settled`, squeezed out once they are half of it.
    settled_vacant: usize,
    by_token: PositionIndex<TokenId>,
    by_user: PositionIndex<UserId>,
    ranks: Fenwick,
    waiting: usize,
    active: usize,
    active_deadlines: BinaryHeap<Reverse<(Timestamp, u64)>>,
    idle_deadlines: BinaryHeap<Reverse<(Timestamp, u64)>>,
    allowance: f64,
    refilled_at: Option<Timestamp>,
    meter: RateMeter,
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
            ranks: Fenwick::new(next_position),
            waiting: 0,
            active: 0,
            active_deadlines: BinaryHeap::new(),
            idle_deadlines: BinaryHeap::new(),
            allowance: 0.0,
            refilled_at: None,
            meter: RateMeter::default(),
        }
    }

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
    fn vacate(&mut self, position: u64) {
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
        if let Some(&position) = self.by_user.get(&user) {
            let idle = self.policy.idle_timeout;
            if let Some(slot) = self.slot_mut(position) {
                let record = slot.record(position);
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
            }
            // The old token is forgotten: from now on it is an invalid token, not a live one.
            self.vacate(position);
        }
        let id = loop {
            let id = fresh_id();
            if !self.by_token.contains_key(&id) {
                break id;
            }
        };
        let position = self.next_position;
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
        if slot.tag() != Tag::Waiting {
            return false;
        }
        let idle = i64::try_from(self.policy.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let now = now.millis();
        // Lock-free: concurrent polls race only to move the clock forward.
        let refreshed = slot
            .clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                (seen < now && seen.saturating_add(idle) > now).then_some(now)
            });
        match refreshed {
            Ok(_) => true,
            Err(seen) => seen >= now && seen.saturating_add(idle) > now,
        }
    }

    /// Admissions per second, measured (see [`RATE_WINDOW`]) up to `now`; `None` before any
    /// admission was seen.
    pub fn measured_rate(&self, now: Timestamp) -> Option<f64> {
        self.meter.rate(now)
    }

    /// The rate a wait estimate uses: the measured one, else `admit_per_sec`, else none.
    pub fn estimate_rate(&self, now: Timestamp) -> Option<f64> {
        match self.meter.rate(now) {
            Some(rate) if rate >= MIN_RATE => Some(rate),
            _ if self.policy.admit_per_sec > 0 => Some(f64::from(self.policy.admit_per_sec)),
            _ => None,
        }
    }

    /// What a poll answers, in O(log n) (the Fenwick prefix sum; O(1) for the rest).
    pub fn status(&self, id: TokenId, now: Timestamp) -> Option<TokenStatus> {
        let position = *self.by_token.get(&id)?;
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
        let estimated_wait = match record.state {
            TokenState::Waiting => self
                .estimate_rate(now)
                .and_then(|rate| Duration::try_from_secs_f64((ahead + 1) as f64 / rate).ok()),
            TokenState::Active { .. } => Some(Duration::ZERO),
            TokenState::Expired { .. } => None,
        };
        Some(TokenStatus {
            record,
            ahead,
            expires_at,
            estimated_wait,
            poll_after: self.policy.poll_after(record.state, ahead, estimated_wait),
        })
    }

    /// Checks that `id` is an ACTIVE token of `user` at `now`.
    pub fn check_active(
        &self,
        id: TokenId,
        user: Option<UserId>,
        now: Timestamp,
    ) -> Result<TokenRecord, TokenRefusal> {
        let position = *self.by_token.get(&id).ok_or(TokenRefusal::Invalid)?;
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
        let dead = self.base.saturating_sub(self.ranks.base) as usize;
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

// --- admission rate -----------------------------------------------------------------------

/// An exponentially weighted rate of admissions: each admission counts `e^(-age/τ)/τ`, so a
/// steady rate `r` reads `r` whatever the tick length (no division by tiny intervals when
/// `advance` runs on every join). The sum is divided by `1 - e^(-T/τ)` (T: time observed, at
/// least one second) so the first seconds are not biased towards zero.
#[derive(Debug, Default)]
struct RateMeter {
    /// The weighted sum, as of `at`.
    sum: f64,
    at: Option<Timestamp>,
    since: Option<Timestamp>,
    admitted_any: bool,
}

impl RateMeter {
    fn tau() -> f64 {
        RATE_WINDOW.as_secs_f64()
    }

    fn observe(&mut self, now: Timestamp, admitted: usize) {
        let at = self.at.unwrap_or(now);
        let dt = at.until(now).as_secs_f64();
        self.sum = self.sum * (-dt / Self::tau()).exp() + admitted as f64 / Self::tau();
        self.at = Some(at.max(now));
        self.since.get_or_insert(now);
        self.admitted_any |= admitted > 0;
    }

    fn rate(&self, now: Timestamp) -> Option<f64> {
        if !self.admitted_any {
            return None;
        }
        let (at, since) = (self.at?, self.since?);
        let decayed = self.sum * (-at.until(now).as_secs_f64() / Self::tau()).exp();
        let observed = since.until(now).as_secs_f64().max(1.0);
        Some(decayed / (1.0 - (-observed / Self::tau()).exp()))
    }
}

// --- Fenwick tree -------------------------------------------------------------------------

/// Counts of waiters by join position, with O(log n) prefix sums and appends. `u32` cells:
/// 4 bytes per position (counts fit; arithmetic wraps, and the true sums are never negative).
#[derive(Debug)]
struct Fenwick {
    /// Position of index 1.
    base: u64,
    /// 1-indexed; `tree[0]` is unused.
    tree: Vec<u32>,
}

impl Fenwick {
    fn new(base: u64) -> Fenwick {
        Fenwick {
            base,
            tree: vec![0],
        }
    }

    /// A tree over `base..` with the given bits, in O(n).
    fn build(base: u64, bits: impl Iterator<Item = bool>) -> Fenwick {
        let mut tree = vec![0u32];
        tree.extend(bits.map(u32::from));
        let n = tree.len();
        for i in 1..n {
            let parent = i + (i & i.wrapping_neg());
            if parent < n {
                tree[parent] = tree[parent].wrapping_add(tree[i]);
            }
        }
        Fenwick { base, tree }
    }

    fn index(&self, position: u64) -> Option<usize> {
        usize::try_from(position.checked_sub(self.base)?)
            .ok()
            .map(|i| i + 1)
    }

    fn add(&mut self, position: u64, delta: i32) {
        let Some(i) = self.index(position) else {
            return;
        };
        while self.tree.len() <= i {
            self.push();
        }
        let delta = delta as u32;
        let mut j = i;
        while j < self.tree.len() {
            self.tree[j] = self.tree[j].wrapping_add(delta);
            j += j & j.wrapping_neg();
        }
    }

    /// Appends a zero slot; its node covers the range below it, summed from existing nodes.
    fn push(&mut self) {
        let i = self.tree.len();
        let low = i & i.wrapping_neg();
        let covered = self.prefix(i - 1).wrapping_sub(self.prefix(i - low));
        self.tree.push(covered);
    }

    fn prefix(&self, mut i: usize) -> u32 {
        let mut sum = 0u32;
        while i > 0 {
            sum = sum.wrapping_add(self.tree[i]);
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
        u64::from(self.prefix(i))
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
            Joined::Created { token, .. } => token,
            Joined::Existing(r) => panic!("expected a new token, got {r:?}"),
        }
    }

    #[test]
    fn slots_are_forty_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
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
        // Admitted and consumed tokens moved out of the deque still answer.
        assert!(matches!(
            line.status(tokens[1].id, t(3)).unwrap().record.state,
            TokenState::Expired { .. }
        ));
        assert_eq!(line.check_active(tokens[0].id, None, t(3)), Ok(admitted[0]));
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
        // Joining again gives a new token, later in line; the old one is now unknown.
        let again = created(line.join(user(2), &mut gen, t(120_002)));
        assert_ne!(again.id, b.id);
        assert!(again.position > b.position);
        assert_eq!(line.status(b.id, t(120_002)), None);
        assert_eq!(
            line.check_active(b.id, None, t(120_002)),
            Err(TokenRefusal::Invalid)
        );
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

    #[test]
    fn restore_with_gaps_and_expired_tokens_in_the_middle() {
        // Positions 3 and 6 belong to tokens superseded since (not loaded); 5 expired idle.
        let record = |id: i64, u: i64, position: u64, state| TokenRecord {
            id: TokenId::new(id).unwrap(),
            user: user(u),
            position,
            created_at: t(0),
            state,
        };
        let active = TokenState::Active {
            admitted_at: t(1),
            expires_at: t(600_001),
        };
        let stored = vec![
            record(17, 7, 7, TokenState::Waiting),
            record(11, 1, 1, TokenState::Expired { at: t(5) }),
            record(12, 2, 2, active),
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
    fn polling_slows_down_towards_the_back_and_never_nears_the_idle_timeout() {
        let p = policy(10);
        let waiting = TokenState::Waiting;
        let active = TokenState::Active {
            admitted_at: t(0),
            expires_at: t(1),
        };
        assert_eq!(p.poll_after(active, 0, Some(Duration::ZERO)), POLL_FLOOR);
        assert_eq!(
            p.poll_after(waiting, 0, Some(Duration::from_secs(1))),
            POLL_FLOOR
        );
        let mid = p.poll_after(waiting, 1000, Some(Duration::from_secs(40)));
        assert_eq!(mid, Duration::from_secs(10));
        let far = p.poll_after(waiting, 1_000_000, Some(Duration::from_secs(10_000)));
        assert_eq!(far, Duration::from_secs(30));
        assert_eq!(
            p.poll_after(waiting, 1_000_000, None),
            Duration::from_secs(30)
        );
        // A short idle timeout: a quarter of it, even at the front.
        let short = AdmissionPolicy {
            idle_timeout: Duration::from_millis(800),
            ..p
        };
        assert_eq!(
            short.poll_after(waiting, 1_000_000, None),
            Duration::from_millis(200)
        );
        assert_eq!(
            short.poll_after(active, 0, None),
            Duration::from_millis(200)
        );
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
        assert!(line.ranks.tree.len() <= 2 * line.slots.len() + 4097);
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
    /// `cargo test --release --lib domain::queue::tests::a_million_waiters -- --ignored --nocapture`.
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

        /// A restore from what was stored gives the same line.
        #[test]
        fn restore_is_faithful(steps in prop::collection::vec((0..3u8, 1..30i64, 0..60_000i64), 1..150)) {
            let mut line = WaitingLine::new(policy(2), 1);
            let mut gen = ids();
            let mut now = 0;
            for (kind, u, dt) in steps {
                now += dt;
                match kind {
                    0 => { line.join(user(u), &mut gen, t(now)); }
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
            prop_assert_eq!(restored.next_position(), line.next_position());
        }
    }
}
