//! The waiting list, the audit and a performance's cancellation (API.md §12), as the HTTP
//! layer calls them: the schedule is looked up as for a hold, then its actor decides.

use super::Engine;
use crate::actors::error::{BookingError, WaitlistError};
use crate::actors::mailbox::ask;
use crate::actors::persister::ActorKey;
use crate::actors::schedule::{IsOffer, JoinWaitlist, LeaveWaitlist, ReadWaitlist, WaitlistView};
use crate::domain::{ConcertId, ReservationId, ScheduleId, UserId};
use crate::store::{AuditCounts, StoreError};

/// Which entry a waiting-list request names.
#[derive(Debug, Clone, Copy)]
pub struct WaitlistKey {
    pub concert: ConcertId,
    pub schedule: ScheduleId,
    pub user: UserId,
}

impl Engine {
    fn waitlist_actor(
        &self,
        key: WaitlistKey,
    ) -> Result<actix::Addr<crate::actors::schedule::ScheduleActor>, BookingError> {
        if !self.user_exists(key.user) {
            return Err(BookingError::UserNotFound);
        }
        let belongs = self
            .inner
            .catalog
            .schedule(key.schedule)
            .is_some_and(|e| e.info.concert_id == key.concert);
        if !belongs {
            return Err(if self.inner.catalog.concert_exists(key.concert) {
                BookingError::ScheduleNotFound
            } else {
                BookingError::ConcertNotFound
            });
        }
        self.schedule(key.schedule)
    }

    pub async fn join_waitlist(
        &self,
        key: WaitlistKey,
        seats: u32,
    ) -> Result<WaitlistView, WaitlistError> {
        let addr = self.waitlist_actor(key)?;
        let user = key.user;
        Ok(ask(&addr, |reply| JoinWaitlist { user, seats, reply }).await?)
    }

    pub async fn read_waitlist(&self, key: WaitlistKey) -> Result<WaitlistView, WaitlistError> {
        let addr = self.waitlist_actor(key)?;
        let user = key.user;
        Ok(ask(&addr, |reply| ReadWaitlist { user, reply }).await?)
    }

    pub async fn leave_waitlist(&self, key: WaitlistKey) -> Result<WaitlistView, WaitlistError> {
        let addr = self.waitlist_actor(key)?;
        let user = key.user;
        Ok(ask(&addr, |reply| LeaveWaitlist { user, reply }).await?)
    }

    /// Whether `id` is a waiting-list offer held for `user` by a schedule of this node: its
    /// payment needs no queue token. (A schedule held by another node answers no: a cluster
    /// pays an offer with a token.)
    pub async fn is_offer(&self, user: UserId, id: ReservationId) -> bool {
        let Some(schedule) = self.inner.env.reservations.schedule_of(id) else {
            return false;
        };
        if !self.is_here(ActorKey::Schedule(schedule)) {
            return false;
        }
        let Ok(addr) = self.schedule(schedule) else {
            return false;
        };
        ask(&addr, |reply| IsOffer { id, user, reply })
            .await
            .unwrap_or(false)
    }

    /// The schedule's invariants counted from the database; `None` for an unknown schedule.
    pub async fn audit(&self, schedule: ScheduleId) -> Result<Option<AuditCounts>, StoreError> {
        if self.inner.catalog.schedule(schedule).is_none() {
            return Ok(None);
        }
        let counts = self
            .inner
            .env
            .store
            .run(move |s| async move { s.audit(schedule).await })
            .await?;
        Ok(Some(counts))
    }
}
