//! What a client reads of a schedule: the seat map (as the database has it) and one
//! reservation — from memory, or, once settled and evicted, from the store with the same
//! view. Reads change nothing; each waits only for the writes its answer depends on.

use super::ScheduleActor;
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::schedule::{
    BookingRefusal, Reservation, ScheduleBook, ScheduleInfo, Seat, SeatState,
};
use crate::domain::seat_plan::SchedulePlan;
use crate::domain::{ConcertId, Money, ReservationId, SeatId, Timestamp, UserId};
use crate::store::StoredReservation;
use actix::prelude::*;

/// A reservation with what a client shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationView {
    pub reservation: Reservation,
    pub concert_name: String,
    pub concert_at: Timestamp,
    pub concert_id: ConcertId,
    /// (seat number, price) in the order requested.
    pub seats: Vec<(i32, Money)>,
}

/// One seat as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatView {
    pub id: SeatId,
    pub number: i32,
    pub price: Money,
    pub available: bool,
}

/// A schedule's seat map: each seat's state, and the plan labels of the same seats in the same
/// order. The plan is the schedule's own shared copy: a read clones one `Arc`, no label.
#[derive(Debug, Clone)]
pub struct SeatMap {
    pub seats: Vec<SeatView>,
    pub plan: SchedulePlan,
}

impl SeatMap {
    /// The map of a book as the store has it (a copy loaded on a node that does not own the
    /// schedule: everything in it is committed).
    pub fn of_stored(book: &ScheduleBook) -> SeatMap {
        let on_sale = book.on_sale();
        SeatMap {
            seats: book
                .seats()
                .map(|(s, state)| seat_view(s, state, on_sale, None))
                .collect(),
            plan: book.plan().clone(),
        }
    }
}

/// The client's view of reservation `r` of `book`.
pub fn view(book: &ScheduleBook, r: &Reservation) -> ReservationView {
    let seats = r.seats.iter().filter_map(|s| book.seat(*s));
    view_of(&book.info, r.clone(), seats)
}

/// The same view of a reservation read back from the store (settled, gone from memory): what
/// its actor answered while it had it, field for field.
pub fn stored_view(info: &ScheduleInfo, stored: StoredReservation) -> ReservationView {
    view_of(info, stored.reservation, stored.seats.iter())
}

fn view_of<'a>(
    info: &ScheduleInfo,
    reservation: Reservation,
    seats: impl Iterator<Item = &'a Seat>,
) -> ReservationView {
    ReservationView {
        reservation,
        concert_name: info.concert_name.clone(),
        concert_at: info.concert_at,
        concert_id: info.concert_id,
        seats: seats.map(|s| (s.number, s.price)).collect(),
    }
}

/// List the schedule's seats with their availability.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListSeats {
    pub reply: Reply<SeatMap, BookingRefusal>,
}

impl Handler<ListSeats> for ScheduleActor {
    type Result = ();

    /// Answers the seat map as the database has it, at once: a seat taken by a hold whose
    /// write is still in flight shows as available (a failed commit could free it again).
    /// While seats freed by an expiry or cancellation are still being written, the map
    /// instead waits for those writes, as every read did before.
    #[tracing::instrument(level = "debug", skip_all, fields(schedule_id = %self.entry.info.id))]
    fn handle(&mut self, msg: ListSeats, _: &mut Context<Self>) {
        received::<Self>();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(msg.reply, why),
        };
        let plan = book.plan().clone();
        // While the waiting list has entries waiting, a free seat is theirs, not on sale.
        let on_sale = book.on_sale();
        let committed = self.durability.durable_through();
        let Some(committed) = committed.filter(|seq| *seq >= self.last_release) else {
            // Freed seats not yet durable: show them only once they are.
            let seats = book
                .seats()
                .map(|(s, state)| seat_view(s, state, on_sale, None))
                .collect();
            return self
                .durability
                .answer_when_settled(msg.reply, Ok(SeatMap { seats, plan }));
        };
        let unconfirmed = &self.unconfirmed;
        let in_flight = |id: &ReservationId| unconfirmed.in_flight(*id, committed);
        let seats = book
            .seats()
            .map(|(s, state)| seat_view(s, state, on_sale, Some(&in_flight)))
            .collect();
        let _ = msg.reply.send(Ok(SeatMap { seats, plan }));
    }
}

/// A seat as listed; with `in_flight`, a seat held by a hold still being written counts as
/// available (as the database has it). Not `on_sale` (the waiting list's seats, or a
/// cancelled performance): no seat is available.
fn seat_view(
    seat: &Seat,
    state: SeatState,
    on_sale: bool,
    in_flight: Option<&dyn Fn(&ReservationId) -> bool>,
) -> SeatView {
    let available = on_sale
        && match state {
            SeatState::Available => true,
            SeatState::Held(id) => in_flight.is_some_and(|f| f(&id)),
            SeatState::Sold(_) => false,
        };
    SeatView {
        id: seat.id,
        number: seat.number,
        price: seat.price,
        available,
    }
}

/// Read one reservation of a user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadReservation {
    pub id: ReservationId,
    pub user: UserId,
    pub reply: Reply<ReservationView, BookingRefusal>,
}

impl Handler<ReadReservation> for ScheduleActor {
    type Result = ();

    /// Answers the reservation's current state, once what it shows is durable.
    #[tracing::instrument(level = "debug", skip_all, fields(reservation_id = %msg.id, user_id = %msg.user))]
    fn handle(&mut self, msg: ReadReservation, _: &mut Context<Self>) {
        received::<Self>();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(msg.reply, why),
        };
        let answer = book.owned(msg.id, msg.user).map(|r| view(book, r));
        self.durability.answer_when_settled(msg.reply, answer);
    }
}
