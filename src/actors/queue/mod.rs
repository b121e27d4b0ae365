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
    AdmissionPolicy, DrawOutcome, DrawSeed, Joined, LineLoader, OpeningRecord, OpeningRefusal,
    TokenRecord, TokenRefusal, WaitingLine, SEED_BYTES, SUPERSEDED_WINDOW,
};
use crate::domain::{Timestamp, TokenId, UserId};
use crate::store::{OpeningWrite, StoreError, StoreHandle, Writes};
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod view;

use view::live_token;
pub use view::QueueView;

/// How often the line moves: admission and expiry happen within this of being due.
pub const TICK: Duration = Duration::from_millis(50);

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
                    .chain(changed)
                    .fold(Writes::default().created_token(token), |w, t| w.token(t));
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
