//! `QueueActor`: the single writer of the waiting room. It admits in join order on a short
//! tick, expires tokens, and persists every transition; polls never enter its mailbox: they
//! read the shared [`QueueView`] directly.
//!
//! What readers see is the line itself, published behind an `RwLock`: a poll takes the read
//! lock for one hash lookup, one slot read and one Fenwick prefix sum, and refreshes its idle
//! clock with an atomic. The writer's critical sections are short by construction: a join is
//! O(log n), and one `advance` makes at most `STEP_BUDGET` transitions of each kind, so a poll
//! never waits behind the mailbox and at most microseconds behind the writer.

use super::engine::Core;
use super::persister::ActorKey;
use super::{ActorError, Durability, Reply, Unavailable};
use crate::domain::queue::{
    AdmissionPolicy, Joined, LineLoader, TokenRecord, TokenRefusal, TokenStatus, WaitingLine,
};
use crate::domain::{Timestamp, TokenId, UserId};
use crate::store::{StoreError, StoreHandle, Writes};
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// How often the line moves: admission and expiry happen within this of being due.
pub const TICK: Duration = Duration::from_millis(50);
const RELOAD_BACKOFF: Duration = Duration::from_millis(500);

/// What readers of the waiting room see, without asking the actor.
pub struct QueueView {
    line: RwLock<WaitingLine>,
    /// The actor's generation, for payments that consume a token.
    generation: AtomicU64,
}

impl QueueView {
    pub fn new(line: WaitingLine) -> QueueView {
        QueueView {
            line: RwLock::new(line),
            generation: AtomicU64::new(0),
        }
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

    /// Checks that `token` is ACTIVE (and `user`'s, when given).
    pub fn authorize(
        &self,
        token: TokenId,
        user: Option<UserId>,
        now: Timestamp,
    ) -> Result<TokenRecord, TokenRefusal> {
        self.read().check_active(token, user, now)
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

    /// Admissions per second as the line measured them (see `RATE_WINDOW`), if any were seen.
    pub fn measured_rate(&self, now: Timestamp) -> Option<f64> {
        self.read().measured_rate(now)
    }
}

pub struct QueueActor {
    view: Arc<QueueView>,
    core: Arc<Core>,
    durability: Durability,
    ready: bool,
}

impl QueueActor {
    pub fn new(view: Arc<QueueView>, core: Arc<Core>) -> QueueActor {
        let durability =
            Durability::new(ActorKey::Queue, view.generation(), core.persister.clone());
        QueueActor {
            view,
            core,
            durability,
            ready: true,
        }
    }

    pub fn policy(settings: &super::EngineSettings) -> AdmissionPolicy {
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
        if !self.ready {
            return;
        }
        let Ok(permit) = self.durability.reserve() else {
            return;
        };
        let changed = self.view.write().advance(self.core.clock.now());
        if !changed.is_empty() {
            let writes = changed
                .into_iter()
                .fold(Writes::default(), |w, t| w.token(t));
            self.durability.submit_detached(permit, writes);
        }
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        self.ready = false;
        let fut = load_line(
            &self.core.store,
            Self::policy(&self.core.settings),
            self.core.clock.now(),
        );
        ctx.wait(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(line) => {
                *act.view.write() = line;
                act.view
                    .generation
                    .store(act.durability.generation(), Ordering::Release);
                act.ready = true;
                act.advance();
            }
            // The store's runtime ends only with the application: nothing left to rebuild for.
            Err(StoreError::RuntimeGone) => {
                tracing::info!("the store is gone; the queue actor stops");
                ctx.stop();
            }
            Err(error) => {
                tracing::warn!(error = %error, "queue reload failed; retrying");
                ctx.run_later(RELOAD_BACKOFF, |act, ctx| act.reload(ctx));
            }
        }));
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::MAILBOX_CAPACITY);
        ctx.run_interval(TICK, |act, _| act.advance());
        self.advance();
    }
}

/// Join the waiting room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinQueue {
    pub user: UserId,
    /// Answers the token and whether it is new.
    pub reply: Reply<(TokenRecord, bool), TokenRefusal>,
}

impl Handler<JoinQueue> for QueueActor {
    type Result = ();

    /// Gives the user a place at the back of the line (or their live token back), and lets
    /// the line move at once (the first users get in without waiting for the tick): the new
    /// token, the predecessor it retires and any admissions go to the persister as one
    /// submission, and the reply waits for that commit.
    fn handle(&mut self, msg: JoinQueue, _: &mut Context<Self>) {
        super::received::<Self>();
        if !self.ready || self.durability.is_stale() {
            return drop(
                msg.reply
                    .send(Err(ActorError::Unavailable(Unavailable::Rebuilding))),
            );
        }
        let permit = match self.durability.reserve() {
            Ok(p) => p,
            Err(u) => return drop(msg.reply.send(Err(ActorError::Unavailable(u)))),
        };
        let now = self.core.clock.now();
        let mut rng = rand::rng();
        let mut line = self.view.write();
        match line.join(msg.user, || TokenId::random(&mut rng), now) {
            Joined::Existing(record) => {
                drop(line);
                self.durability.commit_then(
                    permit,
                    Writes::default(),
                    msg.reply,
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
                    .commit_then(permit, writes, msg.reply, Ok((answer, true)));
            }
        }
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
        let now = self.core.clock.now();
        self.view.write().consume(msg.token, now);
        self.advance();
    }
}

/// Rebuild from the database after a failed commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RebuildQueue {
    pub generation: u64,
}

impl Handler<RebuildQueue> for QueueActor {
    type Result = ();

    /// Reloads every token under the new generation.
    fn handle(&mut self, msg: RebuildQueue, ctx: &mut Context<Self>) {
        if msg.generation <= self.durability.generation() {
            return;
        }
        tracing::info!(generation = msg.generation, "rebuilding the waiting room");
        self.durability.rebuilt(msg.generation);
        self.reload(ctx);
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
        Ok(loader.finish())
    })
}
