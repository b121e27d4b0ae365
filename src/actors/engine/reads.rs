//! What clients read: a concert's schedules, a schedule's seats, a reservation (from its
//! schedule's actor while it is in memory, from the store once settled and gone), and the
//! checkout screen. Reads change nothing.

use super::{Engine, Located};
use crate::actors::error::{ActorError, BookingError, PaymentError, WalletError};
use crate::actors::mailbox::ask;
use crate::actors::persister::{ActorKey, Unavailable};
use crate::actors::schedule::{stored_view, ListSeats, ReadReservation, ReservationView, SeatMap};
use crate::actors::wallet::ReadBalance;
use crate::domain::schedule::{BookingRefusal, ReservationStatus, ScheduleInfo};
use crate::domain::{ConcertId, Money, ReservationId, ScheduleId, UserId};

impl Engine {
    /// Schedules of a concert still to come, by date, with their free seats.
    pub fn upcoming_schedules(
        &self,
        concert: ConcertId,
    ) -> Result<Vec<(ScheduleInfo, usize)>, BookingError> {
        self.inner
            .catalog
            .upcoming(concert, self.now())
            .ok_or(BookingError::ConcertNotFound)
    }

    /// The schedule's details, if it is one of `concert`'s.
    fn schedule_of_concert(
        &self,
        concert: ConcertId,
        schedule: ScheduleId,
    ) -> Result<ScheduleInfo, BookingError> {
        if !self.inner.catalog.concert_exists(concert) {
            return Err(BookingError::ConcertNotFound);
        }
        match self.inner.catalog.schedule(schedule) {
            Some(entry) if entry.info.concert_id == concert => Ok(entry.info.clone()),
            _ => Err(BookingError::ScheduleNotFound),
        }
    }

    pub async fn seats(
        &self,
        concert: ConcertId,
        schedule: ScheduleId,
    ) -> Result<(ScheduleInfo, SeatMap), BookingError> {
        let info = self.schedule_of_concert(concert, schedule)?;
        if !self.is_here(ActorKey::Schedule(schedule)) {
            let seats = self.elsewhere().seats(self, info.clone()).await?;
            return Ok((info, seats));
        }
        let addr = self.schedule(schedule)?;
        let seats = ask(&addr, |reply| ListSeats { reply }).await?;
        Ok((info, seats))
    }

    /// The schedule reservation `id` belongs to (cluster mode routes by it): from memory, or
    /// from the store; `None` if it does not exist or the store cannot say now.
    pub async fn schedule_of_reservation(&self, id: ReservationId) -> Option<ScheduleId> {
        if let Some(schedule) = self.inner.env.reservations.schedule_of(id) {
            return Some(schedule);
        }
        let found = self
            .inner
            .env
            .store
            .run(move |s| async move { s.load_reservation(id).await })
            .await;
        found
            .ok()
            .flatten()
            .map(|stored| stored.reservation.schedule)
    }

    /// Where reservation `id` of `user` is answered from: its schedule's actor while it is in
    /// memory (or its schedule is not loaded yet), the store once it is settled and gone.
    pub(crate) async fn locate(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<Located, BookingError> {
        if let Some(schedule) = self.inner.env.reservations.schedule_of(id) {
            return Ok(Located::Actor(schedule));
        }
        self.stored(user, id).await
    }

    /// Reservation `id` of `user` as the store has it. Another user's is "not found", as the
    /// actor answers it.
    async fn stored(&self, user: UserId, id: ReservationId) -> Result<Located, BookingError> {
        let found = self
            .inner
            .env
            .store
            .run(move |s| async move { s.load_reservation(id).await })
            .await;
        let stored = match found {
            Ok(Some(stored)) if stored.reservation.user == user => stored,
            Ok(_) => return Err(BookingRefusal::ReservationNotFound.into()),
            Err(error) => {
                tracing::warn!(error = %error, "reservation lookup failed");
                return Err(Unavailable::CommitFailed.into());
            }
        };
        let schedule = stored.reservation.schedule;
        if stored.reservation.status == ReservationStatus::Pending {
            return Ok(Located::Actor(schedule));
        }
        let Some(entry) = self.inner.catalog.schedule_entry(schedule) else {
            return Err(BookingRefusal::ReservationNotFound.into());
        };
        Ok(Located::Settled(Box::new(stored_view(&entry.info, stored))))
    }

    /// After the actor answered "not found" for reservation `id` of `user`: the reservation
    /// as the store has it if it left memory since it was located (it is no longer indexed)
    /// and is settled; `None` when "not found" stands.
    pub(super) async fn left_memory(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<Option<ReservationView>, BookingError> {
        if self.inner.env.reservations.schedule_of(id).is_some() {
            return Ok(None);
        }
        Ok(match self.stored(user, id).await? {
            Located::Settled(view) => Some(*view),
            // Pending in the store, yet unknown to its actor: not one to answer for.
            Located::Actor(_) => None,
        })
    }

    pub async fn reservation(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<ReservationView, BookingError> {
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        self.read(user, id).await
    }

    /// A reservation as its owner sees it: from memory, or from the store once settled.
    async fn read(&self, user: UserId, id: ReservationId) -> Result<ReservationView, BookingError> {
        let schedule = match self.locate(user, id).await? {
            Located::Actor(schedule) => schedule,
            Located::Settled(view) => return Ok(*view),
        };
        let addr = self.schedule(schedule)?;
        match ask(&addr, |reply| ReadReservation { id, user, reply }).await {
            Err(ActorError::Rejected(BookingRefusal::ReservationNotFound)) => self
                .left_memory(user, id)
                .await?
                .ok_or_else(|| BookingRefusal::ReservationNotFound.into()),
            answer => Ok(answer?),
        }
    }

    /// The checkout screen: the reservation and the balance, read together. Changes nothing.
    pub async fn checkout(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<(ReservationView, Money), PaymentError> {
        if !self.user_exists(user) {
            return Err(PaymentError::UserNotFound);
        }
        let wallet = self.wallet(user);
        let (view, balance) = tokio::join!(
            self.read(user, id),
            ask(&wallet, |reply| ReadBalance { reply }),
        );
        let view = view?;
        let balance = balance.map_err(WalletError::from)?;
        Ok((view, balance))
    }
}
