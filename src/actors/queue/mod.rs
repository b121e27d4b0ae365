//! `QueueActor`: the single writer of the waiting room. It admits in join order on a short
//! tick, expires tokens, and persists every transition; polls never enter its mailbox: they
//! read the shared [`QueueView`] directly.
//!
//! What readers see is the line itself, published behind an `RwLock`: a poll takes the read
//! lock for one hash lookup, one slot read and one Fenwick prefix sum, and refreshes its idle
//! clock with an atomic. The writer's critical sections are short by construction: a join is
//! O(log n), and one `advance` makes at most `STEP_BUDGET` transitions of each kind, so a poll
//! never waits behind the mailbox and at most microseconds behind the writer.

use super::durability::Durability;
use super::env::{ActorEnv, EngineSettings};
use super::loading::{self, Fetch, Loaded, Loads, Rebuild};
use super::mailbox::{received, refuse_unavailable, Named, Reply, MAILBOX_CAPACITY};
use super::persister::{ActorKey, Unavailable};
use crate::domain::queue::{
    AdmissionPolicy, DrawOutcome, DrawPage, DrawSeed, Joined, LineLoader, OpeningRecord,
    OpeningRefusal, OpeningSummary, TokenRecord, TokenRefusal, TokenState, TokenStatus,
    WaitingLine, SEED_BYTES, SUPERSEDED_WINDOW,
};
use crate::domain::{Timestamp, TokenId, UserId};
use crate::store::{OpeningWrite, StoreError, StoreHandle, Writes};
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// How often the line moves: admission and expiry happen within this of being due.
pub const TICK: Duration = Duration::from_millis(50);

/// What readers of the waiting room see, without asking the actor.
pub struct QueueView {
    line: RwLock<WaitingLine>,
    /// The actor's generation, for payments that consume a token.
    generation: AtomicU64,
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

    fn read(&self) -> RwLockReadGuard<'_, WaitingLine> {
        // Writers only run the pure, panic-free line operations; a poisoned lock still holds a
        // consistent line.
        self.line.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, WaitingLine> {
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
    pub fn sync_peer(
        &self,
        tokens: &[TokenId],
        now: Timestamp,
    ) -> (Vec<TokenId>, crate::domain::queue::LineSnapshot) {
        let line = self.read();
        let gone = tokens
            .iter()
            .copied()
            .filter(|&token| {
                line.touch(token, now);
                line.status(token, now)
                    .is_none_or(|s| s.record.state != crate::domain::queue::TokenState::Waiting)
            })
            .collect();
        (gone, line.snapshot(now))
    }

    /// `token`'s record if this copy of the line has it WAITING (its place and user never
    /// change while it waits).
    pub fn waiting_record(&self, token: TokenId, now: Timestamp) -> Option<TokenRecord> {
        let status = self.read().status(token, now)?;
        (status.record.state == crate::domain::queue::TokenState::Waiting).then_some(status.record)
    }

    /// The policy the line runs under.
    pub fn policy(&self) -> crate::domain::queue::AdmissionPolicy {
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
    pub fn opening_phase(&self) -> Option<crate::domain::queue::OpeningPhase> {
        self.read().opening_phase()
    }

    /// Admissions per second as the line measured them (see `RATE_WINDOW`), if any were seen.
    pub fn measured_rate(&self, now: Timestamp) -> Option<f64> {
        self.read().measured_rate(now)
    }
}

pub struct QueueActor {
    view: Arc<QueueView>,
    env: Arc<ActorEnv>,
    durability: Durability,
    /// The line itself lives in `view`; this says whether it may be decided on.
    state: Loaded<()>,
}

impl QueueActor {
    /// An actor for the line `view` already holds (loaded at boot).
    pub fn new(view: Arc<QueueView>, env: Arc<ActorEnv>) -> QueueActor {
        // In cluster mode, under the epoch this node holds the queue shard at (if it does).
        let generation = view
            .generation()
            .max(env.persister.min_generation(ActorKey::Queue));
        view.generation.store(generation, Ordering::Release);
        let durability = Durability::new(ActorKey::Queue, generation, env.persister.clone());
        QueueActor {
            view,
            env,
            durability,
            state: Loaded::Ready(()),
        }
    }

    pub fn policy(settings: &EngineSettings) -> AdmissionPolicy {
        AdmissionPolicy {
            max_active: settings.max_active,
            active_ttl: settings.active_ttl,
            idle_timeout: settings.idle_timeout,
            admit_per_sec: settings.admit_per_sec,
        }
    }

    /// Moves the line to now and persists what changed. Skipped when the persister cannot take
    /// the writes: nothing changes that is not written.
    fn advance(&mut self) {
        if self.state.ready().is_none() {
            return;
        }
        let Ok(permit) = self.durability.reserve() else {
            return;
        };
        let now = self.env.clock.now();
        let (drawn, changed) = self.view.draw_and_advance(now);
        let Some(drawn) = drawn else {
            if !changed.is_empty() {
                let writes = changed
                    .into_iter()
                    .fold(Writes::default(), |w, t| w.token(t));
                self.durability.submit_unanswered(permit, writes);
            }
            return;
        };
        let committed = drawn.committed.clone();
        let writes = changed
            .into_iter()
            .fold(draw_writes(drawn), |w, t| w.token(t));
        // Published once durable; a failed commit rebuilds the line from the store, where
        // the opening is still scheduled, and the same seed draws again.
        self.durability
            .call_after_commit(permit, writes, move |outcome| {
                if outcome.is_ok() {
                    committed.store(true, Ordering::Release);
                }
            });
    }
}

/// What the draw stores: the opening's drawn row, every drawn token's new position, and the
/// waiters found gone at the opening.
fn draw_writes(outcome: DrawOutcome) -> Writes {
    tracing::info!(participants = outcome.moved.len(), "fair opening drawn");
    let writes = Writes::default().opening(OpeningWrite::Store(outcome.record));
    let writes = outcome
        .moved
        .into_iter()
        .fold(writes, |w, (token, position)| w.moved(token, position));
    outcome.expired.into_iter().fold(writes, |w, t| w.token(t))
}

/// Why the opening could not be scheduled or cancelled, or its draw read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpeningError {
    #[error(transparent)]
    Refused(#[from] OpeningRefusal),
    #[error("draw not found")]
    DrawNotFound,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl Named for QueueActor {
    const KIND: &'static str = "queue";
}

impl Loads for QueueActor {
    type State = ();
    type Fetched = WaitingLine;

    fn state_mut(&mut self) -> &mut Loaded<()> {
        &mut self.state
    }

    fn durability_mut(&mut self) -> &mut Durability {
        &mut self.durability
    }

    fn fetch(&self) -> Fetch<WaitingLine> {
        Box::pin(load_line(
            &self.env.store,
            Self::policy(&self.env.settings),
            self.env.clock.now(),
        ))
    }

    fn install(&mut self, line: WaitingLine, _: &mut Context<Self>) {
        *self.view.write() = line;
        self.view
            .generation
            .store(self.durability.generation(), Ordering::Release);
        self.state = Loaded::Ready(());
        self.advance();
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(TICK, |act, _| act.advance());
        self.advance();
    }
}

/// The user's token if it is WAITING or ACTIVE at `now` (a waiter past its idle deadline is
/// not, swept or not): exactly the token a join would give back.
fn live_token(line: &WaitingLine, user: UserId, now: Timestamp) -> Option<TokenRecord> {
    let record = line.token_of(user)?;
    let status = line.status(record.id, now)?;
    (!matches!(status.record.state, TokenState::Expired { .. })).then_some(status.record)
}

/// Whether a join may make a new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewToken {
    Allowed,
    /// Only the user's live token back (a proof of work is asked and none was sent): without
    /// one the join is refused with [`TokenRefusal::Invalid`].
    Refused,
}

/// Join the waiting room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinQueue {
    pub user: UserId,
    pub new_token: NewToken,
    /// Answers the token and whether it is new.
    pub reply: Reply<(TokenRecord, bool), TokenRefusal>,
}

impl Handler<JoinQueue> for QueueActor {
    type Result = ();

    /// Gives the user a place at the back of the line (or their live token back), and lets
    /// the line move at once (the first users get in without waiting for the tick): the new
    /// token, the predecessor it retires and any admissions go to the persister as one
    /// submission, and the reply waits for that commit.
    #[tracing::instrument(level = "debug", skip_all, fields(user_id = %msg.user))]
    fn handle(&mut self, msg: JoinQueue, _: &mut Context<Self>) {
        received::<Self>();
        if let Err(why) = self.state.ready_mut(&self.durability) {
            return refuse_unavailable(msg.reply, why);
        }
        // A join at or after the opening comes after its draw, even before the next tick.
        if self.view.read().draw_due(self.env.clock.now()) {
            self.advance();
        }
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let mut rng = rand::rng();
        let mut line = self.view.write();
        if msg.new_token == NewToken::Refused && live_token(&line, msg.user, now).is_none() {
            drop(line);
            let refusal = Err(TokenRefusal::Invalid);
            return self
                .durability
                .answer_after_commit(permit, Writes::default(), reply, refusal);
        }
        match line.join(msg.user, || TokenId::random(&mut rng), now) {
            Joined::Existing(record) => {
                drop(line);
                self.durability.answer_after_commit(
                    permit,
                    Writes::default(),
                    reply,
                    Ok((record, false)),
                );
            }
            Joined::Created { token, retired } => {
                let changed = line.advance(now);
                drop(line);
                // Admitted at once: answer with what is stored (ACTIVE and its expiry).
                let answer = changed
                    .iter()
                    .rev()
                    .find(|r| r.id == token.id)
                    .copied()
                    .unwrap_or(token);
                // Writes are keyed by token id: the retired predecessor and the last state
                // of each token are what the transaction stores.
                let writes = retired
                    .into_iter()
                    .chain(std::iter::once(token))
                    .chain(changed)
                    .fold(Writes::default(), |w, t| w.token(t));
                self.durability
                    .answer_after_commit(permit, writes, reply, Ok((answer, true)));
            }
        }
    }
}

/// Schedule (or move) the fair opening, with a fresh secret seed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ScheduleOpening {
    pub opens_at: Timestamp,
    /// Answers the stored opening (its seed stays with the caller's engine, never the client).
    pub reply: Reply<OpeningRecord, OpeningRefusal>,
}

impl Handler<ScheduleOpening> for QueueActor {
    type Result = ();

    /// Draws a 32-byte seed from the operating system's CSPRNG and stores the opening; the
    /// answer (the commitment) goes out only once the seed is committed, so a crash never
    /// leaves a commitment without its seed.
    fn handle(&mut self, msg: ScheduleOpening, _: &mut Context<Self>) {
        received::<Self>();
        if let Err(why) = self.state.ready_mut(&self.durability) {
            return refuse_unavailable(msg.reply, why);
        }
        let mut bytes = [0u8; SEED_BYTES];
        if let Err(error) = rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes) {
            tracing::error!(%error, "the operating system's random source failed");
            return refuse_unavailable(msg.reply, Unavailable::Busy);
        }
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let scheduled =
            self.view
                .write()
                .schedule_opening(msg.opens_at, DrawSeed::from_bytes(bytes), now);
        let writes = match &scheduled {
            Ok(record) => Writes::default().opening(OpeningWrite::Store(record.clone())),
            Err(_) => Writes::default(),
        };
        self.durability
            .answer_after_commit(permit, writes, reply, scheduled);
    }
}

/// Cancel a scheduled opening: the pre-queue then moves in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelOpening {
    pub reply: Reply<(), OpeningRefusal>,
}

impl Handler<CancelOpening> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: CancelOpening, _: &mut Context<Self>) {
        received::<Self>();
        if let Err(why) = self.state.ready_mut(&self.durability) {
            return refuse_unavailable(msg.reply, why);
        }
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let cancelled = self.view.write().cancel_opening();
        let writes = match cancelled {
            Ok(true) => Writes::default().opening(OpeningWrite::Remove),
            Ok(false) | Err(_) => Writes::default(),
        };
        self.durability
            .answer_after_commit(permit, writes, reply, cancelled.map(|_| ()));
        // The pre-queue may move now.
        self.advance();
    }
}

/// A payment used the token: free its slot (the payment's transaction stored the expiry).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConsumeToken {
    pub token: TokenId,
}

impl Handler<ConsumeToken> for QueueActor {
    type Result = ();

    /// Expires the token in memory and admits the next in line.
    fn handle(&mut self, msg: ConsumeToken, _: &mut Context<Self>) {
        let now = self.env.clock.now();
        self.view.write().consume(msg.token, now);
        self.advance();
    }
}

/// A payment committed on another node used the token (cluster mode, the queue's owner
/// here): spend it and store that, then admit the next waiter.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SpendToken {
    pub token: TokenId,
}

impl Handler<SpendToken> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: SpendToken, _: &mut Context<Self>) {
        if self.state.ready().is_none() {
            return;
        }
        let Ok(permit) = self.durability.reserve() else {
            // Not written, so not changed: the token ends at its idle timeout instead.
            return;
        };
        let now = self.env.clock.now();
        let mut line = self.view.write();
        let Some(record) = line.consumed_record(msg.token, now) else {
            return;
        };
        line.consume(msg.token, now);
        drop(line);
        self.durability
            .submit_unanswered(permit, Writes::default().token(record));
        self.advance();
    }
}

impl Handler<Rebuild> for QueueActor {
    type Result = ();

    /// Reloads every token under the new generation.
    fn handle(&mut self, msg: Rebuild, ctx: &mut Context<Self>) {
        loading::rebuild(self, msg, ctx);
    }
}

/// Rebuilds the line from the store, streaming the stored tokens into it in position order:
/// only the line itself is ever in memory, never every row at once.
pub fn load_line(
    store: &StoreHandle,
    policy: AdmissionPolicy,
    now: Timestamp,
) -> impl std::future::Future<Output = Result<WaitingLine, StoreError>> + Send + 'static {
    store.run(move |store| async move {
        let mut loader = LineLoader::new(policy, now, 0);
        store.load_tokens(&mut |token| loader.push(token)).await?;
        store
            .load_superseded_tokens(SUPERSEDED_WINDOW, &mut |token, by| {
                loader.push_superseded(token, by)
            })
            .await?;
        let mut line = loader.finish();
        if let Some(opening) = store.load_opening().await? {
            let drawn = match &opening.drawn {
                Some(d) => {
                    store
                        .load_tokens_at(d.first_position, d.participants)
                        .await?
                }
                None => Vec::new(),
            };
            line.restore_opening(opening, &drawn)
                .map_err(StoreError::Corrupt)?;
        }
        Ok(line)
    })
}
