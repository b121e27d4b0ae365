//! Idempotency keys: at most one effect per (user, key), and the first successful answer
//! replayed to every retry of the same request.
//!
//! A claim travels with its request into the actor that decides it. On success the actor
//! writes the answer, in domain terms (`answer.rs`), in the same transaction as the
//! effect, and its commit callback —
//! not the HTTP handler, which a client can abandon — marks the key done. A refusal or a failed
//! commit releases the key, and requests waiting on it try again.
//!
//! How an answer becomes a response is the HTTP layer's business, live and on replay alike.
//!
//! Memory per user is bounded: a request is remembered by its 32-byte digest, not its body,
//! and a user has at most a set number of live keys.

use crate::domain::{Timestamp, UserId};
use crate::store::IdempotencyRecord;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use std::collections::hash_map::{self, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest key accepted (the `Idempotency-Key` header).
pub const MAX_KEY_CHARS: usize = 255;
/// Answers are replayable for at least this long; older ones are forgotten after twice this.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a user with no room for another key is told to wait: old answers are forgotten by
/// an hourly sweep (`actors::recovery`), so no room frees up sooner than that.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The format of an answer stored by this version: the domain answer, serialized (see
/// `answer.rs`). It goes in the row's `status` column; rows written before answers were kept
/// in domain terms hold there the status of the response they stored (100 and up), and are
/// replayed by the HTTP layer as they were stored until [`RETENTION`] forgets them.
pub const ANSWER_FORMAT: u16 = 1;

/// An answer as the store keeps it: its format, and its text in that format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub format: u16,
    pub text: String,
}

/// A domain answer that a key can replay: how it is stored. `user` is the key's.
pub trait Replayable {
    fn to_stored(&self, user: UserId) -> String;
}

/// The request a key was first used for: the SHA-256 digest of its method, path and canonical
/// body. 32 bytes however large the body, so a key costs the same memory for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The digest of the text `METHOD PATH\nBODY`, the body in serde_json's compact form (the
    /// keys of a `Value` are sorted). Rows stored before digests hold that very text.
    pub fn of_request(method: &str, path: &str, body: &serde_json::Value) -> Fingerprint {
        let mut digest = Sha256::new();
        digest.update(method.as_bytes());
        digest.update(b" ");
        digest.update(path.as_bytes());
        digest.update(b"\n");
        serde_json::to_writer(&mut digest, body)
            .expect("a JSON value has string keys, and a digest takes every byte");
        Fingerprint(digest.finalize().into())
    }

    /// How the store keeps it: 64 lowercase hex digits.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// A stored fingerprint: a hex digest, or the request text itself in a row written before
    /// digests, hashed as [`Fingerprint::of_request`] hashes it (no request text is 64 hex
    /// digits: it starts with its method). Either way a retry after an upgrade still replays.
    pub fn from_stored(text: &str) -> Fingerprint {
        let mut digest = [0u8; 32];
        match hex::decode_to_slice(text, &mut digest) {
            Ok(()) => Fingerprint(digest),
            Err(_) => Fingerprint(Sha256::digest(text.as_bytes()).into()),
        }
    }
}

enum Slot {
    InFlight {
        fingerprint: Fingerprint,
        waiters: Vec<oneshot::Sender<()>>,
    },
    Done {
        fingerprint: Fingerprint,
        answer: StoredAnswer,
        at: Timestamp,
    },
}

/// What a request holding a key may do.
pub enum Claim {
    /// Nobody used the key: go ahead, and take the guard along.
    Fresh(ClaimGuard),
    /// The same request already succeeded: answer this.
    Replay(StoredAnswer),
    /// The key was used for a different request.
    Reused,
    /// The key is new and the user already has as many live keys as allowed.
    Full,
}

/// Every live key of the process, by user: a user's count of live keys is one lookup.
#[derive(Default)]
pub struct Idempotency {
    users: DashMap<UserId, HashMap<String, Slot>>,
}

impl Idempotency {
    /// Keys loaded from the store at boot.
    pub fn restore(records: Vec<IdempotencyRecord>) -> Idempotency {
        let users: DashMap<UserId, HashMap<String, Slot>> = DashMap::new();
        for r in records {
            let slot = Slot::Done {
                fingerprint: Fingerprint::from_stored(&r.fingerprint),
                answer: StoredAnswer {
                    format: r.status,
                    text: r.body,
                },
                at: r.at,
            };
            users.entry(r.user).or_default().insert(r.key, slot);
        }
        Idempotency { users }
    }

    /// Claims `key` for a request identified by `fingerprint`, waiting while another request
    /// with the same key is in flight. A new key is refused ([`Claim::Full`]) when the user
    /// already has `max_live_keys` keys not yet forgotten; known keys still replay.
    pub async fn claim(
        self: &Arc<Self>,
        user: UserId,
        key: String,
        fingerprint: Fingerprint,
        max_live_keys: usize,
    ) -> Claim {
        loop {
            let (tx, rx) = oneshot::channel();
            {
                // Never held across the await below.
                let mut keys = self.users.entry(user).or_default();
                let live = keys.len();
                match keys.entry(key.clone()) {
                    hash_map::Entry::Vacant(vacant) => {
                        if live >= max_live_keys {
                            return Claim::Full;
                        }
                        vacant.insert(Slot::InFlight {
                            fingerprint,
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
                    hash_map::Entry::Occupied(mut occupied) => match occupied.get_mut() {
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
            }
            // Woken when the request in flight finishes (either way); then look again.
            let _ = rx.await;
        }
    }

    /// Forgets answers older than `before`, and users left with no key.
    pub fn forget_before(&self, before: Timestamp) {
        self.users.retain(|_, keys| {
            keys.retain(|_, slot| !matches!(slot, Slot::Done { at, .. } if *at < before));
            !keys.is_empty()
        });
    }

    /// Live keys of one user: those in flight and those not yet forgotten.
    pub fn live_keys(&self, user: UserId) -> usize {
        self.users.get(&user).map_or(0, |keys| keys.len())
    }

    pub fn len(&self) -> usize {
        self.users.iter().map(|keys| keys.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn settle(
        &self,
        user: UserId,
        key: String,
        done: Option<(Fingerprint, StoredAnswer, Timestamp)>,
    ) {
        let waiters = match done {
            Some((fingerprint, answer, at)) => {
                let done = Slot::Done {
                    fingerprint,
                    answer,
                    at,
                };
                let previous = self.users.entry(user).or_default().insert(key, done);
                previous.map(take_waiters)
            }
            None => {
                let released = self
                    .users
                    .get_mut(&user)
                    .and_then(|mut keys| keys.remove(&key));
                // A user whose last key was released takes no memory.
                self.users.remove_if(&user, |_, keys| keys.is_empty());
                released.map(take_waiters)
            }
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
    fingerprint: Fingerprint,
    done: bool,
}

impl ClaimGuard {
    /// Binds the claim to the kind of answer it will keep, for the actor that decides it.
    pub fn write<T: Replayable>(self) -> IdempotentWrite<T> {
        IdempotentWrite {
            guard: self,
            store: T::to_stored,
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.done {
            self.owner
                .settle(self.user, std::mem::take(&mut self.key), None);
        }
    }
}

/// A key claimed on another node whose effect this node commits: its row is written here, in
/// the effect's transaction, and the claiming node completes its claim once told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyElsewhere {
    pub key: String,
    /// The hex digest of [`Fingerprint`].
    pub fingerprint: String,
}

impl KeyElsewhere {
    /// The row for `answer`, `user`'s, written with the effect.
    pub fn record<T: Replayable>(
        self,
        answer: &T,
        user: UserId,
        at: Timestamp,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            user,
            key: self.key,
            fingerprint: self.fingerprint,
            status: ANSWER_FORMAT,
            body: answer.to_stored(user),
            at,
        }
    }
}

/// A claimed key on its way into an actor, with how its answer is stored.
pub struct IdempotentWrite<T> {
    guard: ClaimGuard,
    store: fn(&T, UserId) -> String,
}

impl<T> IdempotentWrite<T> {
    /// The row to write with the effect.
    pub fn record(&self, answer: &T, at: Timestamp) -> IdempotencyRecord {
        IdempotencyRecord {
            user: self.guard.user,
            key: self.guard.key.clone(),
            fingerprint: self.guard.fingerprint.to_hex(),
            // The store's `status` column holds the answer's format (see ANSWER_FORMAT).
            status: ANSWER_FORMAT,
            body: (self.store)(answer, self.guard.user),
            at,
        }
    }

    /// The key and the request's fingerprint, for another node that writes this key's row
    /// with the effect (cluster mode: a refund credited at the wallet's owner).
    pub fn key_elsewhere(&self) -> KeyElsewhere {
        KeyElsewhere {
            key: self.guard.key.clone(),
            fingerprint: self.guard.fingerprint.to_hex(),
        }
    }

    /// The effect and its answer are durable: retries replay `record`.
    pub fn complete(mut self, record: IdempotencyRecord) {
        self.guard.done = true;
        let key = std::mem::take(&mut self.guard.key);
        let answer = StoredAnswer {
            format: record.status,
            text: record.body,
        };
        let done = (self.guard.fingerprint, answer, record.at);
        self.guard.owner.settle(self.guard.user, key, Some(done));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Room enough that no test below meets the limit unless it means to.
    const ROOM: usize = 1000;

    fn user() -> UserId {
        UserId::new(1).unwrap()
    }

    /// A stand-in answer: a number, stored as its digits.
    struct Number(i64);

    impl Replayable for Number {
        fn to_stored(&self, _: UserId) -> String {
            self.0.to_string()
        }
    }

    fn request(n: i64) -> Fingerprint {
        Fingerprint::of_request("POST", "/v1/x", &json!({ "n": n }))
    }

    fn record(key: &str, fingerprint: String, at: i64) -> IdempotencyRecord {
        IdempotencyRecord {
            user: user(),
            key: key.into(),
            fingerprint,
            status: 200,
            body: "{}".into(),
            at: Timestamp::from_millis(at),
        }
    }

    #[tokio::test]
    async fn one_claim_at_a_time_and_the_first_answer_is_replayed() {
        let keys = Arc::new(Idempotency::default());
        let Claim::Fresh(guard) = keys.claim(user(), "k".into(), request(1), ROOM).await else {
            panic!("fresh")
        };
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiter = {
            let (keys, started) = (keys.clone(), started.clone());
            tokio::spawn(async move {
                started.store(true, std::sync::atomic::Ordering::SeqCst);
                keys.claim(user(), "k".into(), request(1), ROOM).await
            })
        };
        // The test runtime has one thread: yield until the waiter has run into the claim in
        // flight and is parked there, so the in-flight path (not a plain replay) is what runs.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(started.load(std::sync::atomic::Ordering::SeqCst));
        assert!(
            !waiter.is_finished(),
            "the waiter waits while the claim is in flight"
        );
        assert!(matches!(
            keys.claim(user(), "k".into(), request(2), ROOM).await,
            Claim::Reused
        ));
        let write = guard.write::<Number>();
        let record = write.record(&Number(7), Timestamp::from_millis(1));
        write.complete(record);
        match waiter.await.unwrap() {
            Claim::Replay(answer) => assert_eq!(
                answer,
                StoredAnswer {
                    format: ANSWER_FORMAT,
                    text: "7".into()
                }
            ),
            _ => panic!("the waiter replays the first answer"),
        }
    }

    #[tokio::test]
    async fn a_failed_attempt_releases_the_key() {
        let keys = Arc::new(Idempotency::default());
        let Claim::Fresh(guard) = keys.claim(user(), "k".into(), request(1), ROOM).await else {
            panic!("fresh")
        };
        let waiter = {
            let keys = keys.clone();
            tokio::spawn(async move { keys.claim(user(), "k".into(), request(1), ROOM).await })
        };
        tokio::task::yield_now().await;
        drop(guard.write::<Number>());
        let Claim::Fresh(next) = waiter.await.unwrap() else {
            panic!("the next attempt goes ahead")
        };
        drop(next);
        assert!(
            keys.is_empty(),
            "a released key and its user take no memory"
        );
    }

    #[test]
    fn old_answers_are_forgotten() {
        let keys = Idempotency::restore(vec![
            record("old", request(1).to_hex(), 1),
            record("new", request(2).to_hex(), 100),
        ]);
        keys.forget_before(Timestamp::from_millis(50));
        assert_eq!(keys.len(), 1);
    }

    /// The whole body goes into the digest, and only the digest is kept or stored.
    #[test]
    fn a_fingerprint_is_a_digest_of_the_whole_request() {
        let big = json!({ "seatIds": vec![7; 100_000] });
        let stored = Fingerprint::of_request("POST", "/v1/reservations", &big).to_hex();
        assert_eq!(stored.len(), 64);
        assert!(stored.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(std::mem::size_of::<Fingerprint>(), 32);
        let mut other = big.clone();
        other["seatIds"][99_999] = json!(8);
        assert_ne!(
            Fingerprint::of_request("POST", "/v1/reservations", &other),
            Fingerprint::from_stored(&stored),
            "the last byte of the body counts"
        );
        assert_ne!(
            request(1),
            Fingerprint::of_request("POST", "/v1/y", &json!({ "n": 1 }))
        );
        assert_ne!(
            request(1),
            Fingerprint::of_request("PUT", "/v1/x", &json!({ "n": 1 }))
        );
    }

    /// A row written before digests holds `METHOD PATH\nBODY`: the same request still replays.
    #[tokio::test]
    async fn a_key_stored_as_request_text_still_replays_after_an_upgrade() {
        let body = json!({ "reservationId": 7, "amount": 1 });
        let legacy = format!("{} {}\n{}", "POST", "/v1/payments/users/1", body);
        let keys = Arc::new(Idempotency::restore(vec![record("old", legacy, 1)]));
        let same = Fingerprint::of_request("POST", "/v1/payments/users/1", &body);
        assert!(matches!(
            keys.claim(user(), "old".into(), same, ROOM).await,
            Claim::Replay(_)
        ));
        let other = Fingerprint::of_request("POST", "/v1/payments/users/2", &body);
        assert!(matches!(
            keys.claim(user(), "old".into(), other, ROOM).await,
            Claim::Reused
        ));
    }

    #[tokio::test]
    async fn past_the_limit_a_new_key_is_refused_and_known_keys_still_replay() {
        let keys = Arc::new(Idempotency::restore(vec![
            record("a", request(1).to_hex(), 10),
            record("b", request(2).to_hex(), 20),
        ]));
        let Claim::Fresh(in_flight) = keys.claim(user(), "c".into(), request(3), 3).await else {
            panic!("the third key fits")
        };
        assert!(matches!(
            keys.claim(user(), "d".into(), request(4), 3).await,
            Claim::Full
        ));
        assert!(matches!(
            keys.claim(user(), "a".into(), request(1), 3).await,
            Claim::Replay(_)
        ));
        let someone_else = UserId::new(2).unwrap();
        assert!(
            matches!(
                keys.claim(someone_else, "d".into(), request(4), 3).await,
                Claim::Fresh(_)
            ),
            "the limit is per user"
        );
        drop(in_flight);
        assert_eq!(keys.live_keys(user()), 2, "a released key frees its room");
        keys.forget_before(Timestamp::from_millis(15));
        assert_eq!(keys.live_keys(user()), 1, "a forgotten key frees its room");
        assert!(matches!(
            keys.claim(user(), "d".into(), request(4), 2).await,
            Claim::Fresh(_)
        ));
    }

    /// Many racing claims of one user's new keys: never more than the limit get through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_claims_never_pass_the_limit() {
        let keys = Arc::new(Idempotency::default());
        let claims = (0..200).map(|n| {
            let keys = keys.clone();
            tokio::spawn(async move {
                match keys.claim(user(), format!("k{n}"), request(n), 50).await {
                    Claim::Fresh(guard) => Some(guard),
                    _ => None,
                }
            })
        });
        let mut held = Vec::new();
        for claim in claims {
            held.extend(claim.await.unwrap());
        }
        assert_eq!(held.len(), 50);
        assert_eq!(keys.live_keys(user()), 50);
    }
}
