//! [`QueueView`]: the waiting line as its readers see it, shared with the `QueueActor` that
//! alone writes it. A poll takes the read lock for one lookup and a prefix sum; the actor
//! takes the write lock for its short, budgeted steps (see the actor's module doc).

use crate::domain::queue::{
    AdmissionPolicy, DrawOutcome, DrawPage, LineSnapshot, OpeningPhase, OpeningSummary,
    TokenRecord, TokenRefusal, TokenState, TokenStatus, WaitingLine,
};
use crate::domain::{Timestamp, TokenId, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// What readers of the waiting room see, without asking the actor.
pub struct QueueView {
    line: RwLock<WaitingLine>,
    /// The actor's generation, for payments that consume a token.
    pub(super) generation: AtomicU64,
    /// How long the last fair opening's draw took here, in microseconds (0: none yet): from
    /// the participants read to the moves swapped in, for the operator's dashboard.
    last_draw_us: AtomicU64,
}

impl QueueView {
    pub fn new(line: WaitingLine) -> QueueView {
        QueueView {
            line: RwLock::new(line),
            generation: AtomicU64::new(0),
            last_draw_us: AtomicU64::new(0),
        }
    }

    /// How long the last draw on this node took, if one was drawn since it started.
    pub fn last_draw(&self) -> Option<Duration> {
        match self.last_draw_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The line's move to `now`, by its one writer: a due draw first, then admission and
    /// expiry. The draw is computed and its moves built on a shared borrow (polls go on; the
    /// caller is the line's only writer, so nothing changes meanwhile), then swapped in under
    /// the writer's lock, which a million waiters hold for milliseconds (`benches/draw_polls.rs`).
    /// The draw's outcome and its moves, and the admissions after it, go in one submission,
    /// so nobody's admission is stored without the draw that placed them.
    pub fn draw_and_advance(&self, now: Timestamp) -> (Option<DrawOutcome>, Vec<TokenRecord>) {
        let started = std::time::Instant::now();
        let prepared = {
            let line = self.read();
            line.participants_at(now)
                .map(|p| line.prepare_draw(p.draw()))
        };
        let mut line = self.write();
        let drawn = prepared.map(|p| line.apply_prepared(p, now));
        if drawn.is_some() {
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.last_draw_us.store(took.max(1), Ordering::Relaxed);
        }
        (drawn, line.advance(now))
    }

    /// The draw as it was before it was split: computed and applied under the writer's lock,
    /// which polls wait on for the whole of it. Kept only for `benches/draw_polls.rs` to
    /// measure what the split saves, side by side.
    #[doc(hidden)]
    pub fn draw_under_the_lock(&self, now: Timestamp) -> Option<DrawOutcome> {
        let mut line = self.write();
        line.draw_if_due(now)
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, WaitingLine> {
        // Writers only run the pure, panic-free line operations; a poisoned lock still holds a
        // consistent line.
        self.line.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, WaitingLine> {
        self.line.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The user's current (or last) token.
    pub fn token_of(&self, user: UserId) -> Option<TokenRecord> {
        self.read().token_of(user)
    }

    /// The user's token if it is WAITING or ACTIVE at `now`.
    pub fn live_token_of(&self, user: UserId, now: Timestamp) -> Option<TokenRecord> {
        live_token(&self.read(), user, now)
    }

    /// A poll: the token's place and state; refreshes the waiter's idle timer.
    pub fn poll(
        &self,
        user: UserId,
        token: TokenId,
        now: Timestamp,
    ) -> Result<TokenStatus, TokenRefusal> {
        let line = self.read();
        let mut status = line.status(token, now).ok_or(TokenRefusal::Invalid)?;
        if status.record.user != user {
            return Err(TokenRefusal::Invalid);
        }
        if line.touch(token, now) {
            // This poll moved the idle deadline: answer the new one.
            status.expires_at = now.plus(line.policy().idle_timeout);
        }
        Ok(status)
    }

    /// Cluster mode, at the queue's owner: polls other nodes answered refresh their waiters'
    /// idle timers here; returns those of `tokens` that are no longer waiting (the other node
    /// then sends their polls here). Then what the others answer polls from.
    pub fn sync_peer(&self, tokens: &[TokenId], now: Timestamp) -> (Vec<TokenId>, LineSnapshot) {
        let line = self.read();
        let gone = tokens
            .iter()
            .copied()
            .filter(|&token| {
                line.touch(token, now);
                line.status(token, now)
                    .is_none_or(|s| s.record.state != TokenState::Waiting)
            })
            .collect();
        (gone, line.snapshot(now))
    }

    /// `token`'s record if this copy of the line has it WAITING (its place and user never
    /// change while it waits).
    pub fn waiting_record(&self, token: TokenId, now: Timestamp) -> Option<TokenRecord> {
        let status = self.read().status(token, now)?;
        (status.record.state == TokenState::Waiting).then_some(status.record)
    }

    /// The policy the line runs under.
    pub fn policy(&self) -> AdmissionPolicy {
        self.read().policy()
    }

    /// Checks that `token` is ACTIVE (and `user`'s, when given).
    pub fn authorize(
        &self,
        token: TokenId,
        user: Option<UserId>,
        now: Timestamp,
    ) -> Result<TokenRecord, TokenRefusal> {
        self.read().check_active(token, user, now)
    }

    /// Ends a token whose consumption is committed (a payment spent it), before the payment's
    /// answer goes out: the client's next request must find it spent, not wait for the queue
    /// actor's mailbox. The actor's own `ConsumeToken` then finds it ended and only admits
    /// the next waiter. The line's state matches the database here, so nothing is decided on
    /// state a failed commit could undo.
    pub fn consume_committed(&self, token: TokenId, now: Timestamp) {
        self.write().consume(token, now);
    }

    /// The token as a payment at `now` will store it.
    pub fn consumed_record(&self, token: TokenId, now: Timestamp) -> Option<TokenRecord> {
        self.read().consumed_record(token, now)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// (waiting, active)
    pub fn counts(&self) -> (usize, usize) {
        let line = self.read();
        (line.waiting_count(), line.active_count())
    }

    /// The fair opening as anyone may see it.
    pub fn opening(&self) -> OpeningSummary {
        self.read().opening_summary()
    }

    /// A page of the drawn order; `None` before the draw.
    pub fn draw_page(&self, offset: usize, limit: usize) -> Option<DrawPage> {
        self.read().draw_page(offset, limit)
    }

    /// Where a fair opening is, when one is under way.
    pub fn opening_phase(&self) -> Option<OpeningPhase> {
        self.read().opening_phase()
    }

    /// Admissions per second as the line measured them (see `RATE_WINDOW`), if any were seen.
    pub fn measured_rate(&self, now: Timestamp) -> Option<f64> {
        self.read().measured_rate(now)
    }
}

/// The user's token if it is WAITING or ACTIVE at `now` (a waiter past its idle deadline is
/// not, swept or not): exactly the token a join would give back.
pub(super) fn live_token(line: &WaitingLine, user: UserId, now: Timestamp) -> Option<TokenRecord> {
    let record = line.token_of(user)?;
    let status = line.status(record.id, now)?;
    (!matches!(status.record.state, TokenState::Expired { .. })).then_some(status.record)
}
