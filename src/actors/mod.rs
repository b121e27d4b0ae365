//! The live state of the service and its only writers: one `QueueActor`, one `ScheduleActor`
//! per schedule, one `WalletActor` per user, the persister that makes their decisions durable,
//! and the [`Engine`] that routes each request to the one actor that owns its state.
//!
//! Every actor decides synchronously inside its message handler (no `.await` on the database
//! there), hands its row writes to the persister, and lets the reply go out only after the
//! commit. Mailboxes are bounded: a full one is a prompt "unavailable", never a growing queue.

pub mod engine;
pub mod error;
pub mod idempotency;
pub mod persister;
pub mod queue;
pub mod schedule;
pub mod wallet;

pub use engine::{Engine, EngineSettings};
pub use error::{ActorError, AdminError, BookingError, PaymentError, QueueError, WalletError};
pub use persister::{ActorKey, Persister, Unavailable};

use crate::store::Writes;
use persister::{Dependency, Permit};
use tokio::sync::oneshot;

/// How many messages wait in one actor's mailbox before senders are refused.
pub const MAILBOX_CAPACITY: usize = 4096;

/// Where an actor sends its answer.
pub type Reply<T, E> = oneshot::Sender<Result<T, ActorError<E>>>;

/// An actor kind, as metrics name it.
pub trait Named {
    const KIND: &'static str;
}

impl Named for queue::QueueActor {
    const KIND: &'static str = "queue";
}

/// A message left the mailbox: the handler calls this first (pairs with [`ask`]).
pub fn received<A: Named>() {
    metrics::gauge!("boxoffice_mailbox_depth", "actor" => A::KIND).decrement(1.0);
}

/// Sends a message built around a reply channel and waits for the answer. A full mailbox or a
/// stopped actor answers at once with `Unavailable::Busy`.
pub async fn ask<A, M, T, E>(
    addr: &actix::Addr<A>,
    make: impl FnOnce(Reply<T, E>) -> M,
) -> Result<T, ActorError<E>>
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Handler<M> + Named,
    M: actix::Message<Result = ()> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    addr.try_send(make(tx))
        .map_err(|_| ActorError::Unavailable(Unavailable::Busy))?;
    metrics::gauge!("boxoffice_mailbox_depth", "actor" => A::KIND).increment(1.0);
    // A dropped reply means the actor stopped before answering: nothing was submitted.
    rx.await
        .unwrap_or(Err(ActorError::Unavailable(Unavailable::Busy)))
}

/// One actor's link to the persister: its identity and generation, and the sequence number of
/// its last submission, so an answer that depends on earlier writes waits for them.
#[derive(Clone)]
pub struct Durability {
    key: ActorKey,
    generation: u64,
    last_seq: u64,
    persister: Persister,
}

impl Durability {
    pub fn new(key: ActorKey, generation: u64, persister: Persister) -> Durability {
        Durability {
            key,
            generation,
            last_seq: 0,
            persister,
        }
    }

    pub fn dependency(&self) -> Dependency {
        (self.key, self.generation)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Reserves room for the answer's writes before anything changes.
    pub fn reserve(&self) -> Result<Permit, Unavailable> {
        self.persister.reserve(&[self.dependency()])
    }

    /// Whether every write of this actor has an outcome and none of them failed.
    pub fn settled(&self) -> bool {
        self.persister.is_resolved(self.last_seq) && !self.persister.is_stale(self.dependency())
    }

    /// The sequence number of this actor's latest submission (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the submission numbered `seq` is committed: it has an outcome, and no failure
    /// has undone this actor's state (a failure marks the actor stale before it resolves).
    pub fn is_durable(&self, seq: u64) -> bool {
        self.persister.is_resolved(seq) && !self.persister.is_stale(self.dependency())
    }

    /// Every submission up to the returned sequence number is committed — or `None` if a
    /// failure has undone this actor's state. One reading for many checks.
    pub fn durable_through(&self) -> Option<u64> {
        // Resolved first: a failure marks the actor stale before it resolves its submissions.
        let resolved = self.persister.resolved_seq();
        (!self.persister.is_stale(self.dependency())).then_some(resolved)
    }

    /// Whether this actor's state was undone by a failed commit and must be rebuilt.
    pub fn is_stale(&self) -> bool {
        self.persister.is_stale(self.dependency())
    }

    /// Moves to a new generation after rebuilding from the database.
    pub fn rebuilt(&mut self, generation: u64) {
        self.generation = self.generation.max(generation);
        self.last_seq = 0;
    }

    /// Commits `writes`, then sends `answer`. With no writes and nothing of ours in flight the
    /// answer goes at once; otherwise it waits behind our earlier writes, and becomes
    /// "unavailable" if they fail.
    pub fn commit_then<T, E>(
        &mut self,
        permit: Permit,
        writes: Writes,
        reply: Reply<T, E>,
        answer: Result<T, E>,
    ) where
        T: Send + 'static,
        E: Send + 'static,
    {
        if writes.is_empty() && self.settled() {
            let _ = reply.send(answer.map_err(ActorError::Rejected));
            return;
        }
        self.submit(permit, writes, move |outcome| {
            let _ = reply.send(match outcome {
                Ok(()) => answer.map_err(ActorError::Rejected),
                Err(u) => Err(ActorError::Unavailable(u)),
            });
        });
    }

    /// Commits the writes of a successful decision, then (in this order) runs `on_commit`,
    /// completes the idempotency claim with the rendered answer written alongside, and
    /// replies. A failed commit releases the claim and answers "unavailable".
    #[allow(clippy::too_many_arguments)]
    pub fn commit_answer<T, E>(
        &mut self,
        permit: Permit,
        mut writes: Writes,
        reply: Reply<T, E>,
        answer: T,
        idempotency: Option<idempotency::IdempotentWrite<T>>,
        at: crate::domain::Timestamp,
        on_commit: Option<Box<dyn FnOnce() + Send>>,
    ) where
        T: Send + 'static,
        E: Send + 'static,
    {
        let record = idempotency.as_ref().map(|i| i.record(&answer, at));
        if let Some(record) = &record {
            writes.idempotency.push(record.clone());
        }
        self.submit(permit, writes, move |outcome| {
            let sent = match outcome {
                Ok(()) => {
                    if let Some(hook) = on_commit {
                        hook();
                    }
                    if let (Some(claim), Some(record)) = (idempotency, record) {
                        claim.complete(record);
                    }
                    Ok(answer)
                }
                Err(u) => Err(ActorError::Unavailable(u)),
            };
            let _ = reply.send(sent);
        });
    }

    /// Sends an answer that changes nothing, once our earlier writes are durable.
    pub fn answer<T, E>(&mut self, reply: Reply<T, E>, answer: Result<T, E>)
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        if self.settled() {
            let _ = reply.send(answer.map_err(ActorError::Rejected));
            return;
        }
        match self.reserve() {
            Ok(permit) => self.commit_then(permit, Writes::default(), reply, answer),
            Err(u) => drop(reply.send(Err(ActorError::Unavailable(u)))),
        }
    }

    /// Submits `writes` with a raw completion.
    pub fn submit(
        &mut self,
        permit: Permit,
        writes: Writes,
        done: impl FnOnce(Result<(), Unavailable>) + Send + 'static,
    ) {
        let seq = permit.submit(writes, Box::new(done));
        self.last_seq = self.last_seq.max(seq);
    }

    /// Submits writes nobody waits for (expiry, admission).
    pub fn submit_detached(&mut self, permit: Permit, writes: Writes) {
        let seq = permit.submit_detached(writes);
        self.last_seq = self.last_seq.max(seq);
    }
}
