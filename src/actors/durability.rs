//! One actor's link to the persister, and the ways an actor answers a request. Each answer
//! path is named for *when the caller hears back*:
//!
//! | method | the caller is answered |
//! |---|---|
//! | [`Durability::answer_when_settled`] | once this actor's earlier writes are durable (at once if they are) |
//! | [`Durability::answer_after_commit`] | once `writes` (and every earlier write) commit; at once if there is nothing to wait for |
//! | [`Durability::refuse_after_commit`] | a refusal, once every earlier write commits (at once if none is in flight) |
//! | [`Durability::acknowledge_after_commit`] | the same, for a success that also stores its idempotent replay and runs a hook |
//! | [`Durability::call_after_commit`] | by the caller's own completion, with the commit's outcome |
//! | [`Durability::submit_unanswered`] | never: nobody waits (expiry, admission) |

use super::error::ActorError;
use super::idempotency::IdempotentWrite;
use super::mailbox::{refuse_unavailable, Reply};
use super::persister::{ActorKey, Dependency, Permit, Persister, Unavailable};
use crate::domain::Timestamp;
use crate::store::Writes;

/// A successful decision on its way to the database: what to write, what to answer, and what
/// to do between the commit and the answer.
pub struct Acknowledgement<T> {
    pub writes: Writes,
    pub answer: T,
    /// The request's idempotency claim: its replay record is written in the same transaction.
    pub idempotency: Option<IdempotentWrite<T>>,
    /// When the decision was made (the replay record's time).
    pub at: Timestamp,
    /// Runs after the commit, before the answer (a payment posts its hold here).
    pub on_commit: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> Acknowledgement<T> {
    /// A success with no replay record and no hook.
    pub fn new(writes: Writes, answer: T, at: Timestamp) -> Acknowledgement<T> {
        Acknowledgement {
            writes,
            answer,
            idempotency: None,
            at,
            on_commit: None,
        }
    }
}

/// One actor's identity and generation at the persister, and the sequence number of its last
/// submission, so an answer that depends on earlier writes waits for them.
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

    /// Reserves room for the answer's writes, or answers "unavailable" and gives `None`.
    pub fn reserve_or_refuse<T, E>(&self, reply: Reply<T, E>) -> Option<(Permit, Reply<T, E>)> {
        self.reserve_along_or_refuse(&[], reply)
    }

    /// [`Durability::reserve_or_refuse`] for a write that also depends on other actors' states.
    pub fn reserve_along_or_refuse<T, E>(
        &self,
        others: &[Dependency],
        reply: Reply<T, E>,
    ) -> Option<(Permit, Reply<T, E>)> {
        let reserved = if others.is_empty() {
            self.reserve()
        } else {
            let mut deps = others.to_vec();
            deps.push(self.dependency());
            self.persister.reserve(&deps)
        };
        match reserved {
            Ok(permit) => Some((permit, reply)),
            Err(why) => {
                refuse_unavailable(reply, why);
                None
            }
        }
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

    /// Answers once `writes` and every earlier write of this actor commit. With no writes and
    /// nothing of ours in flight the answer goes at once; a failed commit answers
    /// "unavailable" instead.
    pub fn answer_after_commit<T, E>(
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
        self.call_after_commit(permit, writes, move |outcome| {
            let _ = reply.send(match outcome {
                Ok(()) => answer.map_err(ActorError::Rejected),
                Err(u) => Err(ActorError::Unavailable(u)),
            });
        });
    }

    /// Refuses, once this actor's earlier writes are durable: the refusal may rest on them
    /// (a balance that includes a recharge still being written).
    pub fn refuse_after_commit<T, E>(&mut self, permit: Permit, reply: Reply<T, E>, refusal: E)
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        self.answer_after_commit(permit, Writes::default(), reply, Err(refusal));
    }

    /// Commits a successful decision's writes (with its replay record, if any), then runs its
    /// hook, completes its idempotency claim, and answers — in that order. A failed commit
    /// releases the claim and answers "unavailable".
    pub fn acknowledge_after_commit<T, E>(
        &mut self,
        permit: Permit,
        acknowledgement: Acknowledgement<T>,
        reply: Reply<T, E>,
    ) where
        T: Send + 'static,
        E: Send + 'static,
    {
        let Acknowledgement {
            mut writes,
            answer,
            idempotency,
            at,
            on_commit,
        } = acknowledgement;
        let record = idempotency.as_ref().map(|i| i.record(&answer, at));
        if let Some(record) = &record {
            writes.idempotency.push(record.clone());
        }
        self.call_after_commit(permit, writes, move |outcome| {
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

    /// Answers something that changes nothing, once this actor's earlier writes are durable.
    pub fn answer_when_settled<T, E>(&mut self, reply: Reply<T, E>, answer: Result<T, E>)
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        if self.settled() {
            let _ = reply.send(answer.map_err(ActorError::Rejected));
            return;
        }
        if let Some((permit, reply)) = self.reserve_or_refuse(reply) {
            self.answer_after_commit(permit, Writes::default(), reply, answer);
        }
    }

    /// Submits `writes`; `done` is called with the commit's outcome.
    pub fn call_after_commit(
        &mut self,
        permit: Permit,
        writes: Writes,
        done: impl FnOnce(Result<(), Unavailable>) + Send + 'static,
    ) {
        let seq = permit.submit(writes, Box::new(done));
        self.last_seq = self.last_seq.max(seq);
    }

    /// Submits writes nobody waits for (expiry, admission).
    pub fn submit_unanswered(&mut self, permit: Permit, writes: Writes) {
        let seq = permit.submit_detached(writes);
        self.last_seq = self.last_seq.max(seq);
    }
}
