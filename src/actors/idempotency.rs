//! Idempotency keys: at most one effect per (user, key), and the first successful answer
//! replayed to every retry of the same request.
//!
//! A claim travels with its request into the actor that decides it. On success the actor
//! writes the rendered answer in the same transaction as the effect, and its commit callback —
//! not the HTTP handler, which a client can abandon — marks the key done. A refusal or a failed
//! commit releases the key, and requests waiting on it try again.

use crate::domain::{Timestamp, UserId};
use crate::store::IdempotencyRecord;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest key accepted (the `Idempotency-Key` header).
pub const MAX_KEY_CHARS: usize = 255;
/// Answers are replayable for at least this long; older ones are forgotten after twice this.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Renders an answer as the HTTP response it becomes: (status, JSON body). The same function
/// renders the live response and the stored one, so a replay is byte-identical.
pub type Render<T> = Arc<dyn Fn(&T) -> (u16, String) + Send + Sync>;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

enum Slot {
    InFlight {
        fingerprint: String,
        waiters: Vec<oneshot::Sender<()>>,
    },
    Done {
        fingerprint: String,
        answer: Answer,
        at: Timestamp,
    },
}

/// What a request holding a key may do.
pub enum Claim {
    /// Nobody used the key: go ahead, and take the guard along.
    Fresh(ClaimGuard),
    /// The same request already succeeded: answer this.
    Replay(Answer),
    /// The key was used for a different request.
    Reused,
}

/// Every live key of the process.
#[derive(Default)]
pub struct Idempotency {
    slots: DashMap<(UserId, String), Slot>,
}

impl Idempotency {
    /// Keys loaded from the store at boot.
    pub fn restore(records: Vec<IdempotencyRecord>) -> Idempotency {
        let slots = DashMap::new();
        for r in records {
            let answer = Answer {
                status: r.status,
                body: r.body,
            };
            slots.insert(
                (r.user, r.key),
                Slot::Done {
                    fingerprint: r.fingerprint,
                    answer,
                    at: r.at,
                },
            );
        }
        Idempotency { slots }
    }

    /// Claims `key` for a request identified by `fingerprint`, waiting while another request
    /// with the same key is in flight.
    pub async fn claim(self: &Arc<Self>, user: UserId, key: String, fingerprint: String) -> Claim {
        loop {
            let (tx, rx) = oneshot::channel();
            match self.slots.entry((user, key.clone())) {
                Entry::Vacant(vacant) => {
                    vacant.insert(Slot::InFlight {
                        fingerprint: fingerprint.clone(),
                        waiters: Vec::new(),
                    });
                    return Claim::Fresh(ClaimGuard {
                        owner: self.clone(),
                        user,
                        key,
                        fingerprint,
                        done: false,
                    });
                }
                Entry::Occupied(mut occupied) => match occupied.get_mut() {
                    Slot::Done {
                        fingerprint: first,
                        answer,
                        ..
                    } => {
                        return if *first == fingerprint {
                            Claim::Replay(answer.clone())
                        } else {
                            Claim::Reused
                        };
                    }
                    Slot::InFlight {
                        fingerprint: first,
                        waiters,
                    } => {
                        if *first != fingerprint {
                            return Claim::Reused;
                        }
                        waiters.push(tx);
                    }
                },
            }
            // Woken when the request in flight finishes (either way); then look again.
            let _ = rx.await;
        }
    }

    /// Forgets answers older than `before`.
    pub fn forget_before(&self, before: Timestamp) {
        self.slots
            .retain(|_, slot| !matches!(slot, Slot::Done { at, .. } if *at < before));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn settle(&self, id: (UserId, String), done: Option<(String, Answer, Timestamp)>) {
        let waiters = match done {
            Some((fingerprint, answer, at)) => {
                let previous = self.slots.insert(
                    id,
                    Slot::Done {
                        fingerprint,
                        answer,
                        at,
                    },
                );
                previous.map(take_waiters)
            }
            None => self.slots.remove(&id).map(|(_, slot)| take_waiters(slot)),
        };
        for waiter in waiters.unwrap_or_default() {
            let _ = waiter.send(());
        }
    }
}

fn take_waiters(slot: Slot) -> Vec<oneshot::Sender<()>> {
    match slot {
        Slot::InFlight { waiters, .. } => waiters,
        Slot::Done { .. } => Vec::new(),
    }
}

/// A claimed key. Completed with the answer once the effect is durable; dropped otherwise,
/// which releases the key.
pub struct ClaimGuard {
    owner: Arc<Idempotency>,
    user: UserId,
    key: String,
    fingerprint: String,
    done: bool,
}

impl ClaimGuard {
    /// Binds the claim to the renderer of its answer, for the actor that decides it.
    pub fn write<T>(self, render: Render<T>) -> IdempotentWrite<T> {
        IdempotentWrite {
            guard: self,
            render,
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.done {
            self.owner
                .settle((self.user, std::mem::take(&mut self.key)), None);
        }
    }
}

/// A claimed key on its way into an actor, with the renderer of its answer.
pub struct IdempotentWrite<T> {
    guard: ClaimGuard,
    render: Render<T>,
}

impl<T> IdempotentWrite<T> {
    /// The row to write with the effect.
    pub fn record(&self, answer: &T, at: Timestamp) -> IdempotencyRecord {
        let (status, body) = (self.render)(answer);
        IdempotencyRecord {
            user: self.guard.user,
            key: self.guard.key.clone(),
            fingerprint: self.guard.fingerprint.clone(),
            status,
            body,
            at,
        }
    }

    /// The effect and its answer are durable: retries replay `record`.
    pub fn complete(mut self, record: IdempotencyRecord) {
        self.guard.done = true;
        let id = (self.guard.user, std::mem::take(&mut self.guard.key));
        let answer = Answer {
            status: record.status,
            body: record.body,
        };
        self.guard
            .owner
            .settle(id, Some((record.fingerprint, answer, record.at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::new(1).unwrap()
    }

    fn render() -> Render<i64> {
        Arc::new(|n: &i64| (200, format!("{{\"n\":{n}}}")))
    }

    #[tokio::test]
    async fn one_claim_at_a_time_and_the_first_answer_is_replayed() {
        let keys = Arc::new(Idempotency::default());
        let Claim::Fresh(guard) = keys.claim(user(), "k".into(), "req".into()).await else {
            panic!("fresh")
        };
        let waiter = {
            let keys = keys.clone();
            tokio::spawn(async move { keys.claim(user(), "k".into(), "req".into()).await })
        };
        assert!(matches!(
            keys.claim(user(), "k".into(), "other".into()).await,
            Claim::Reused
        ));
        let write = guard.write(render());
        let record = write.record(&7, Timestamp::from_millis(1));
        write.complete(record);
        match waiter.await.unwrap() {
            Claim::Replay(answer) => assert_eq!(
                answer,
                Answer {
                    status: 200,
                    body: "{\"n\":7}".into()
                }
            ),
            _ => panic!("the waiter replays the first answer"),
        }
    }

    #[tokio::test]
    async fn a_failed_attempt_releases_the_key() {
        let keys = Arc::new(Idempotency::default());
        let Claim::Fresh(guard) = keys.claim(user(), "k".into(), "req".into()).await else {
            panic!("fresh")
        };
        let waiter = {
            let keys = keys.clone();
            tokio::spawn(async move { keys.claim(user(), "k".into(), "req".into()).await })
        };
        tokio::task::yield_now().await;
        drop(guard.write(render()));
        assert!(
            matches!(waiter.await.unwrap(), Claim::Fresh(_)),
            "the next attempt goes ahead"
        );
    }

    #[test]
    fn old_answers_are_forgotten() {
        let record = |key: &str, at| IdempotencyRecord {
            user: user(),
            key: key.into(),
            fingerprint: "f".into(),
            status: 200,
            body: "{}".into(),
            at: Timestamp::from_millis(at),
        };
        let keys = Idempotency::restore(vec![record("old", 1), record("new", 100)]);
        keys.forget_before(Timestamp::from_millis(50));
        assert_eq!(keys.len(), 1);
    }
}
