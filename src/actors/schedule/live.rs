//! The dashboard's sample of one schedule: every seat's state as this actor holds it in memory
//! (a hold whose write is still in flight counts as held: the dashboard shows what the actor
//! decided, the seat map what the database has).

use super::ScheduleActor;
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::schedule::{BookingRefusal, SeatState};
use crate::domain::SeatId;
use actix::prelude::*;

/// A seat's state in a [`SeatSample`]: one ASCII letter, so a 40,000-seat hall is 40 kB.
pub const FREE: u8 = b'F';
pub const HELD: u8 = b'H';
pub const SOLD: u8 = b'S';

/// Every seat of a schedule, in the seat map's order, with its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatSample {
    pub seat_ids: Vec<SeatId>,
    /// [`FREE`], [`HELD`] or [`SOLD`] per seat, in the order of `seat_ids`.
    pub states: Vec<u8>,
    pub held: usize,
    pub sold: usize,
}

/// Sample the schedule's seats for the dashboard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SampleSeats {
    pub reply: Reply<SeatSample, BookingRefusal>,
}

impl Handler<SampleSeats> for ScheduleActor {
    type Result = ();

    fn handle(&mut self, msg: SampleSeats, _: &mut Context<Self>) {
        received::<Self>();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(msg.reply, why),
        };
        let mut sample = SeatSample::default();
        for (seat, state) in book.seats() {
            let letter = match state {
                SeatState::Available => FREE,
                SeatState::Held(_) => {
                    sample.held += 1;
                    HELD
                }
                SeatState::Sold(_) => {
                    sample.sold += 1;
                    SOLD
                }
            };
            sample.seat_ids.push(seat.id);
            sample.states.push(letter);
        }
        let _ = msg.reply.send(Ok(sample));
    }
}
