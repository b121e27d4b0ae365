//! Cluster mode, on a node that does not hold the waiting room: what it answers polls from.
//! The queue's owner sends a [`LineSnapshot`] each second in answer to this node's batch of
//! the polls it saw (so the owner's idle expiry still sees every waiter that polls here), and
//! this node keeps the records of the waiters that poll it (their place and user never change
//! while they wait). A poll is answered here when the snapshot is fresh and places the token;
//! otherwise (the frontier, unknown tokens, a stale snapshot) it goes to the owner.

use crate::domain::queue::{LineSnapshot, TokenRecord};
use crate::domain::{Timestamp, TokenId};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A snapshot older than this is not answered from: the owner may be gone.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(3);

/// Waiter records kept at most; past it the oldest half is forgotten (they ask the owner
/// once more, and are learned again).
pub const MAX_KNOWN_WAITERS: usize = 1_000_000;

/// Polls noted for the owner at most between two syncs; past it a poll goes to the owner.
pub const MAX_PENDING_TOUCHES: usize = 50_000;

/// Tokens sent to the owner in one sync at most (the rest wait for the next).
pub const MAX_TOUCHES_PER_SYNC: usize = 10_000;

/// Database lookups of unknown tokens in flight at once; beyond, a poll is only forwarded.
pub const MAX_LOOKUPS: usize = 8;

#[derive(Default)]
pub struct QueueCopy {
    snapshot: RwLock<Option<(Instant, Arc<LineSnapshot>)>>,
    waiters: DashMap<TokenId, TokenRecord>,
    /// Polls seen since the last sync, with when each token's poll was last sent on.
    touches: Mutex<Touches>,
    pub(crate) lookups: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Touches {
    pending: HashMap<TokenId, Timestamp>,
    /// When each token's poll was last sent to the owner: once per quarter idle timeout is
    /// enough to keep it in line.
    sent: HashMap<TokenId, Timestamp>,
}

impl QueueCopy {
    /// The snapshot, if it is fresh enough to answer from.
    pub fn snapshot(&self) -> Option<Arc<LineSnapshot>> {
        let guard = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let (at, snapshot) = guard.as_ref()?;
        (at.elapsed() <= SNAPSHOT_MAX_AGE).then(|| snapshot.clone())
    }

    /// Installs the owner's answer to a sync: its snapshot, and the tokens of the batch that
    /// no longer wait (forgotten, so their next poll asks the owner).
    pub fn install(&self, snapshot: LineSnapshot, gone: &[TokenId]) {
        for token in gone {
            self.waiters.remove(token);
        }
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), Arc::new(snapshot)));
    }

    /// Forgets the snapshot (this node took the queue, or the owner is unreachable).
    pub fn clear(&self) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn waiter(&self, token: TokenId) -> Option<TokenRecord> {
        self.waiters.get(&token).map(|r| *r)
    }

    pub fn learn(&self, record: TokenRecord) {
        if self.waiters.len() >= MAX_KNOWN_WAITERS {
            let drop: Vec<TokenId> = self
                .waiters
                .iter()
                .take(MAX_KNOWN_WAITERS / 2)
                .map(|e| *e.key())
                .collect();
            for token in drop {
                self.waiters.remove(&token);
            }
        }
        self.waiters.insert(record.id, record);
    }

    /// Notes a poll answered here for the owner; `false` if there is no room (the poll
    /// should then go to the owner itself).
    pub fn touch(&self, token: TokenId, now: Timestamp, idle_timeout: Duration) -> bool {
        let mut touches = self.touches.lock().unwrap_or_else(|p| p.into_inner());
        let quarter = i64::try_from(idle_timeout.as_millis() / 4).unwrap_or(i64::MAX);
        if touches
            .sent
            .get(&token)
            .is_some_and(|at| now.millis() - at.millis() < quarter)
        {
            return true;
        }
        if touches.pending.len() >= MAX_PENDING_TOUCHES && !touches.pending.contains_key(&token) {
            return false;
        }
        touches.pending.insert(token, now);
        true
    }

    /// The polls to send to the owner now (at most [`MAX_TOUCHES_PER_SYNC`]).
    pub fn take_touches(&self, now: Timestamp, idle_timeout: Duration) -> Vec<TokenId> {
        let mut touches = self.touches.lock().unwrap_or_else(|p| p.into_inner());
        let taken: Vec<TokenId> = touches
            .pending
            .keys()
            .take(MAX_TOUCHES_PER_SYNC)
            .copied()
            .collect();
        for token in &taken {
            touches.pending.remove(token);
            touches.sent.insert(*token, now);
        }
        // Sends older than an idle timeout say nothing any more.
        let horizon = i64::try_from(idle_timeout.as_millis()).unwrap_or(i64::MAX);
        touches
            .sent
            .retain(|_, at| now.millis() - at.millis() < horizon);
        taken
    }

    /// A sync failed: its polls are sent with the next one.
    pub fn give_back(&self, tokens: Vec<TokenId>, now: Timestamp) {
        let mut touches = self.touches.lock().unwrap_or_else(|p| p.into_inner());
        for token in tokens {
            touches.sent.remove(&token);
            touches.pending.entry(token).or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: i64) -> TokenId {
        TokenId::new(n).expect("positive")
    }

    #[test]
    fn a_poll_is_sent_on_once_per_quarter_idle_timeout() {
        let copy = QueueCopy::default();
        let idle = Duration::from_secs(120);
        let at = Timestamp::from_millis;
        assert!(copy.touch(token(1), at(0), idle));
        assert!(copy.touch(token(2), at(0), idle));
        let mut first = copy.take_touches(at(0), idle);
        first.sort();
        assert_eq!(first, vec![token(1), token(2)]);
        // Within the quarter: noted as sent, nothing new to send.
        assert!(copy.touch(token(1), at(29_000), idle));
        assert!(copy.take_touches(at(29_000), idle).is_empty());
        // Past it: sent again.
        assert!(copy.touch(token(1), at(31_000), idle));
        assert_eq!(copy.take_touches(at(31_000), idle), vec![token(1)]);
        // A failed sync sends them again next time.
        copy.give_back(vec![token(1)], at(31_000));
        assert!(copy.touch(token(1), at(31_500), idle));
        assert_eq!(copy.take_touches(at(32_000), idle), vec![token(1)]);
    }
}
