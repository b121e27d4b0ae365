//! The waiting room as the engine serves it: joining the line, polls answered from the
//! published line (never the queue actor's mailbox), and the token checks of the routes
//! behind the line; the fair opening (schedule, cancel, read, and the drawn order).

use super::Engine;
use crate::actors::error::{ActorError, QueueError};
use crate::actors::mailbox::ask;
use crate::actors::persister::{ActorKey, Unavailable};
use crate::actors::queue::{CancelOpening, JoinQueue, NewToken, OpeningError, ScheduleOpening};
use crate::domain::queue::{
    DrawPage, OpeningPhase, OpeningRecord, OpeningSummary, TokenRecord, TokenRefusal, TokenStatus,
};
use crate::domain::{Timestamp, TokenId, UserId};
use std::time::Duration;

/// The longest a read of the line waits for its rebuild after a failed commit.
pub const QUEUE_REBUILD_WAIT: Duration = Duration::from_secs(2);

impl Engine {
    /// (waiting, active) tokens.
    pub fn queue_counts(&self) -> (usize, usize) {
        self.inner.queue_view.counts()
    }

    /// Joins the line; `true` when the token is new.
    pub async fn join_queue(&self, user: UserId) -> Result<(TokenRecord, bool), QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        ask(self.inner.registry.queue(), |reply| JoinQueue {
            user,
            new_token: NewToken::Allowed,
            reply,
        })
        .await
        .map_err(|e| match e {
            ActorError::Rejected(rule) => QueueError::Token(rule),
            ActorError::Unavailable(u) => QueueError::Unavailable(u),
        })
    }

    /// Schedules the fair opening at `opens_at` (a new secret seed, replacing a scheduled
    /// one); answers once the seed is stored.
    pub async fn schedule_opening(
        &self,
        opens_at: Timestamp,
    ) -> Result<OpeningRecord, OpeningError> {
        ask(self.inner.registry.queue(), |reply| ScheduleOpening {
            opens_at,
            reply,
        })
        .await
        .map_err(opening_error)
    }

    /// Cancels a scheduled opening; answers once that is stored.
    pub async fn cancel_opening(&self) -> Result<(), OpeningError> {
        ask(self.inner.registry.queue(), |reply| CancelOpening { reply })
            .await
            .map_err(opening_error)
    }

    /// The fair opening as anyone may see it (from the published line).
    pub fn opening(&self) -> OpeningSummary {
        self.inner.queue_view.opening()
    }

    /// A page of the drawn order.
    pub fn draw_page(&self, offset: usize, limit: usize) -> Result<DrawPage, OpeningError> {
        self.inner
            .queue_view
            .draw_page(offset, limit)
            .ok_or(OpeningError::DrawNotFound)
    }

    /// Where a fair opening is, when one is under way (what a poll adds).
    pub fn opening_phase(&self) -> Option<OpeningPhase> {
        if self.is_here(ActorKey::Queue) {
            self.inner.queue_view.opening_phase()
        } else {
            // This node's line is a copy: the owner's snapshot says.
            self.elsewhere().opening_phase(self)
        }
    }

    /// A join that may only give back the user's live token, never make one (a proof of work
    /// is asked and none was sent): `None` when the user holds none by the time the join
    /// reaches the queue actor (it may have expired since [`Engine::live_token_of`]).
    pub async fn rejoin_queue(&self, user: UserId) -> Result<Option<TokenRecord>, QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        let answer = ask(self.inner.registry.queue(), |reply| JoinQueue {
            user,
            new_token: NewToken::Refused,
            reply,
        })
        .await;
        match answer {
            Ok((record, _)) => Ok(Some(record)),
            Err(ActorError::Rejected(TokenRefusal::Invalid)) => Ok(None),
            Err(ActorError::Rejected(rule)) => Err(QueueError::Token(rule)),
            Err(ActorError::Unavailable(u)) => Err(QueueError::Unavailable(u)),
        }
    }

    /// The user's token if it is WAITING or ACTIVE now, from the published line (never the
    /// mailbox): the cheap check in front of a join that sent no proof of work.
    pub fn live_token_of(&self, user: UserId) -> Option<TokenRecord> {
        self.inner.queue_view.live_token_of(user, self.now())
    }

    /// Waits (at most [`QUEUE_REBUILD_WAIT`]) while the line is being rebuilt after a failed
    /// commit: until then the published line may still show what the failed write did (a
    /// join answered 503 must not be read back as a token).
    async fn queue_current(&self) -> Result<(), QueueError> {
        // A line held elsewhere is a copy, never rebuilt from here.
        if !self.is_here(ActorKey::Queue) {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + QUEUE_REBUILD_WAIT;
        while self
            .persister()
            .is_stale((ActorKey::Queue, self.inner.queue_view.generation()))
        {
            if std::time::Instant::now() >= deadline {
                return Err(QueueError::Unavailable(Unavailable::Rebuilding));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// The user's current (or last) token, once the line is not being rebuilt.
    pub async fn token_of(&self, user: UserId) -> Result<TokenRecord, QueueError> {
        self.queue_current().await?;
        self.token_of_now(user)
    }

    /// [`Engine::token_of`] without the wait (benches and tests that drive no failed commit).
    pub fn token_of_now(&self, user: UserId) -> Result<TokenRecord, QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        self.inner
            .queue_view
            .token_of(user)
            .ok_or(QueueError::TokenNotFound)
    }

    /// A status poll, answered from the published line (never the actor's mailbox; it waits
    /// only while the line is rebuilt after a failed commit).
    pub async fn poll(
        &self,
        user: UserId,
        token: Option<TokenId>,
    ) -> Result<TokenStatus, QueueError> {
        self.queue_current().await?;
        self.poll_now(user, token)
    }

    /// [`Engine::poll`] without the wait (benches).
    pub fn poll_now(
        &self,
        user: UserId,
        token: Option<TokenId>,
    ) -> Result<TokenStatus, QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        if let Some(status) = self.elsewhere().poll(self, user, token) {
            return Ok(status);
        }
        let token = token.ok_or(QueueError::Token(TokenRefusal::Invalid))?;
        Ok(self.inner.queue_view.poll(user, token, self.now())?)
    }

    /// Checks that `token` is ACTIVE, and `user`'s when a user is named.
    pub async fn authorize(
        &self,
        token: Option<TokenId>,
        user: Option<UserId>,
    ) -> Result<TokenRecord, TokenRefusal> {
        let token = token.ok_or(TokenRefusal::Invalid)?;
        let local = self.inner.queue_view.authorize(token, user, self.now());
        if local.is_ok() || self.is_here(ActorKey::Queue) {
            return local;
        }
        // The line here is a copy: the queue's owner may have admitted the token since.
        match self.elsewhere().authorize(self, token, user).await {
            Some(answer) => answer,
            None => local,
        }
    }
}

fn opening_error(e: ActorError<crate::domain::queue::OpeningRefusal>) -> OpeningError {
    match e {
        ActorError::Rejected(rule) => OpeningError::Refused(rule),
        ActorError::Unavailable(u) => OpeningError::Unavailable(u),
    }
}
