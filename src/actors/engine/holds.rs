//! Holding seats and cancelling a hold. A hold is handed to its schedule's intake before the
//! returned future is first polled, and the schedule's actor takes the intake in batches.

use super::{settled_refusal, Engine, Located};
use crate::actors::error::{ActorError, BookingError};
use crate::actors::idempotency::IdempotentWrite;
use crate::actors::mailbox::ask;
use crate::actors::persister::Unavailable;
use crate::actors::schedule::{CancelReservation, DrainHolds, HoldSeats, Pushed, ReservationView};
use crate::domain::schedule::{BookingRefusal, HoldRequest};
use crate::domain::{ConcertId, ReservationId, ScheduleId, UserId};
use actix::prelude::*;

type HoldReceiver =
    tokio::sync::oneshot::Receiver<Result<ReservationView, ActorError<BookingRefusal>>>;

impl Engine {
    /// Holds `seats` for `user`, all or nothing; the answer comes after the commit. The
    /// checks and the hand-off to the schedule's intake happen before the returned future is
    /// first polled (it only waits for the reply, so it stays small).
    pub fn hold(
        &self,
        request: HoldRequest,
        idempotency: Option<IdempotentWrite<ReservationView>>,
    ) -> impl std::future::Future<Output = Result<ReservationView, BookingError>> + Send + 'static
    {
        let submitted = self.submit_hold(request, idempotency);
        async move {
            // A dropped reply means the actor stopped before deciding: nothing was submitted.
            Ok(submitted?
                .await
                .unwrap_or(Err(ActorError::Unavailable(Unavailable::Busy)))?)
        }
    }

    fn submit_hold(
        &self,
        request: HoldRequest,
        idempotency: Option<IdempotentWrite<ReservationView>>,
    ) -> Result<HoldReceiver, BookingError> {
        let HoldRequest {
            user,
            concert,
            schedule,
            seats,
        } = request;
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        let Some(entry) = self.inner.catalog.schedule(schedule) else {
            return Err(self.missing_schedule(concert));
        };
        if entry.info.concert_id != concert {
            return Err(self.missing_schedule(concert));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let hold = HoldSeats {
            user,
            seats,
            idempotency: idempotency.map(Box::new),
            reply,
        };
        let pushed = entry
            .intake
            .push(hold, self.inner.env.settings.mailbox_capacity);
        // The map's guard goes before the actor is looked up (in the same map).
        drop(entry);
        match pushed {
            Pushed::Queued => {}
            Pushed::SendDrain => self.send_drain(schedule)?,
            Pushed::Full(_) => return Err(Unavailable::Busy.into()),
        }
        Ok(answer)
    }

    /// Tells the schedule's actor to take its intake. At most one drain per schedule is in
    /// flight (the intake's flag), so one that finds the mailbox full may go past its bound.
    fn send_drain(&self, id: ScheduleId) -> Result<(), BookingError> {
        let abandon = || {
            if let Some(entry) = self.inner.catalog.schedule(id) {
                entry.intake.abandon();
            }
        };
        let addr = match self.schedule(id) {
            Ok(addr) => addr,
            Err(e) => {
                abandon();
                return Err(e);
            }
        };
        match addr.try_send(DrainHolds) {
            Ok(()) => {}
            Err(SendError::Full(drain)) => addr.do_send(drain),
            Err(SendError::Closed(_)) => {
                // The actor is gone: nobody will take these holds.
                abandon();
                return Err(Unavailable::Busy.into());
            }
        }
        metrics::gauge!("boxoffice_mailbox_depth", "actor" => "schedule").increment(1.0);
        Ok(())
    }

    /// The error for a schedule that is not one of `concert`'s.
    fn missing_schedule(&self, concert: ConcertId) -> BookingError {
        if self.inner.catalog.concert_exists(concert) {
            BookingError::ScheduleNotFound
        } else {
            BookingError::ConcertNotFound
        }
    }

    pub async fn cancel(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<ReservationView, BookingError> {
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        let schedule = match self.locate(user, id).await? {
            Located::Actor(schedule) => schedule,
            Located::Settled(view) => return Err(settled_refusal(&view).into()),
        };
        let addr = self.schedule(schedule)?;
        match ask(&addr, |reply| CancelReservation { id, user, reply }).await {
            Err(ActorError::Rejected(BookingRefusal::ReservationNotFound)) => {
                Err(match self.left_memory(user, id).await? {
                    Some(view) => settled_refusal(&view).into(),
                    None => BookingRefusal::ReservationNotFound.into(),
                })
            }
            answer => Ok(answer?),
        }
    }
}
