//! Cluster mode: waiting-room polls on a node that does not hold the queue, answered here
//! from the owner's snapshot when it places the token (see `cluster/queue_copy.rs`), and the
//! owner's side of the once-a-second sync that carries the snapshot and the polls seen.

use super::queue_copy::MAX_LOOKUPS;
use crate::actors::engine::Engine;
use crate::actors::persister::{ActorKey, Unavailable};
use crate::domain::queue::{LineSnapshot, OpeningPhase, TokenState, TokenStatus};
use crate::domain::{TokenId, UserId};
use std::sync::atomic::Ordering;

impl Engine {
    /// Whether the waiting room lives on another node now (cluster mode only).
    pub fn queue_is_remote(&self) -> bool {
        self.other_nodes().is_some() && !self.persister().may_write(ActorKey::Queue)
    }

    /// How long a waiter may go unpolled.
    pub fn idle_timeout(&self) -> std::time::Duration {
        self.queue_view().policy().idle_timeout
    }

    /// A poll answered here from the owner's snapshot, if it can be: this node does not hold
    /// the queue, the snapshot is fresh, this node knows the token as this user's waiter, and
    /// the snapshot places it (not in the first block past the frontier). `None`: the owner
    /// answers it. Notes the poll for the owner's idle expiry.
    pub fn poll_here(&self, user: UserId, token: Option<TokenId>) -> Option<TokenStatus> {
        let copy = &self.other_nodes()?.queue_copy;
        if !self.queue_is_remote() {
            return None;
        }
        let token = token?;
        let snapshot = copy.snapshot()?;
        let now = self.now();
        let record = match copy.waiter(token) {
            Some(record) => record,
            None => {
                let record = self.queue_view().waiting_record(token, now)?;
                copy.learn(record);
                record
            }
        };
        if record.user != user {
            return None;
        }
        let policy = self.queue_view().policy();
        let status = snapshot.status_of(record, now.plus(policy.idle_timeout), &policy, now)?;
        copy.touch(token, now, policy.idle_timeout)
            .then_some(status)
    }

    /// Where the owner's fair opening is, as its last snapshot has it.
    pub fn opening_phase_from_snapshot(&self) -> Option<OpeningPhase> {
        self.other_nodes()?.queue_copy.snapshot()?.opening
    }

    /// Whether this node knows `token` as a waiter (else its poll goes to the owner, and
    /// [`Engine::learn_waiter`] may look it up).
    pub fn knows_waiter(&self, token: TokenId) -> bool {
        self.other_nodes()
            .is_some_and(|nodes| nodes.queue_copy.waiter(token).is_some())
            || self
                .queue_view()
                .waiting_record(token, self.now())
                .is_some()
    }

    /// Learns a waiter from the owner's answer to a poll this node forwarded, so that its next
    /// poll is answered here (no database lookup needed).
    pub fn learn_waiter_record(&self, record: crate::domain::queue::TokenRecord) {
        if let Some(nodes) = self.other_nodes() {
            if self.queue_is_remote() && record.state == TokenState::Waiting {
                nodes.queue_copy.learn(record);
            }
        }
    }

    /// Looks an unknown token up in the database, so its next poll may be answered here; at
    /// most [`MAX_LOOKUPS`] at once (beyond, the poll is only forwarded).
    pub async fn learn_waiter(&self, token: TokenId) {
        let Some(nodes) = self.other_nodes() else {
            return;
        };
        let lookups = &nodes.queue_copy.lookups;
        if lookups.fetch_add(1, Ordering::AcqRel) >= MAX_LOOKUPS {
            lookups.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let found = self
            .store_handle()
            .run(move |s| async move { s.load_token(token).await })
            .await;
        lookups.fetch_sub(1, Ordering::AcqRel);
        if let Ok(Some(record)) = found {
            if record.state == TokenState::Waiting {
                nodes.queue_copy.learn(record);
            }
        }
    }

    /// The owner's side of a sync: the polls another node saw refresh their waiters here;
    /// answers which of them no longer wait, and the snapshot.
    pub fn sync_for_peer(
        &self,
        touches: &[TokenId],
    ) -> Result<(Vec<TokenId>, LineSnapshot), Unavailable> {
        if !self.persister().may_write(ActorKey::Queue) {
            return Err(Unavailable::Fenced);
        }
        Ok(self.queue_view().sync_peer(touches, self.now()))
    }
}
