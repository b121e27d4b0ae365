//! How an actor gets its state from the store, and gets it again after a failed commit: one
//! state enum, one load-with-retry, and one `Rebuild` message for every actor kind.

use super::durability::Durability;
use super::mailbox::Named;
use super::persister::Unavailable;
use crate::store::StoreError;
use actix::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long an actor whose load failed waits before trying again.
pub const RELOAD_BACKOFF: Duration = Duration::from_millis(500);

/// Where an actor's state is.
pub enum Loaded<T> {
    /// Being read from the store; the mailbox waits meanwhile.
    Loading,
    /// The last load failed; a retry is scheduled. Requests are answered "unavailable".
    Unloaded,
    Ready(T),
}

impl<T> Loaded<T> {
    /// The state to decide on, or why there is none: not loaded, or undone by a failed commit
    /// (a `Rebuild` is on its way, and nothing decided from this state may go out).
    pub fn ready_mut(&mut self, durability: &Durability) -> Result<&mut T, Unavailable> {
        match self {
            Loaded::Ready(state) if !durability.is_stale() => Ok(state),
            _ => Err(Unavailable::Rebuilding),
        }
    }

    pub fn ready(&self) -> Option<&T> {
        match self {
            Loaded::Ready(state) => Some(state),
            _ => None,
        }
    }
}

/// A future that reads an actor's state from the store.
pub type Fetch<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// An actor whose state lives in the store.
pub trait Loads: Actor<Context = Context<Self>> + Named {
    type State;
    /// What the store gives back.
    type Fetched: Send + 'static;

    fn state_mut(&mut self) -> &mut Loaded<Self::State>;
    fn durability_mut(&mut self) -> &mut Durability;
    /// Reads the state (runs on the store's runtime).
    fn fetch(&self) -> Fetch<Self::Fetched>;
    /// Makes the fetched state live, on the actor's thread: sets it `Ready` and does whatever
    /// a fresh state needs (arm timers, publish counts).
    fn install(&mut self, fetched: Self::Fetched, ctx: &mut Context<Self>);
}

/// Loads the actor's state; its mailbox waits until the store answers. A failed load leaves
/// it `Unloaded` and tries again after [`RELOAD_BACKOFF`]; a store that is gone for good (the
/// application is ending) stops the actor.
pub fn load<A: Loads>(act: &mut A, ctx: &mut Context<A>) {
    *act.state_mut() = Loaded::Loading;
    let fetch = act.fetch();
    ctx.wait(fetch.into_actor(act).map(|result, act, ctx| match result {
        Ok(fetched) => act.install(fetched, ctx),
        Err(StoreError::RuntimeGone) => {
            tracing::info!(actor = A::KIND, "the store is gone; the actor stops");
            ctx.stop();
        }
        Err(error) => {
            tracing::warn!(actor = A::KIND, error = %error, "load failed; retrying");
            *act.state_mut() = Loaded::Unloaded;
            ctx.run_later(RELOAD_BACKOFF, |act, ctx| {
                if matches!(act.state_mut(), Loaded::Unloaded) {
                    load(act, ctx);
                }
            });
        }
    }));
}

/// Rebuild from the database after a failed commit, at (at least) this generation.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Rebuild {
    pub generation: u64,
}

/// Handles [`Rebuild`]: throws the in-memory state away and reloads it under the new
/// generation (an order for a generation already reached is stale and ignored).
pub fn rebuild<A: Loads>(act: &mut A, msg: Rebuild, ctx: &mut Context<A>) {
    if msg.generation <= act.durability_mut().generation() {
        return;
    }
    tracing::info!(
        actor = A::KIND,
        generation = msg.generation,
        "rebuilding from the database"
    );
    act.durability_mut().rebuilt(msg.generation);
    load(act, ctx);
}
