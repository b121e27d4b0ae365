//! A schedule's side of a payment: pin the hold (its expiry waits), then post it once the
//! wallet's transaction committed, or unpin it if the payment did not happen.

use super::ScheduleActor;
use crate::actors::loading::Loaded;
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::schedule::{BookingRefusal, Reservation, ReservationStatus, ScheduleBook};
use crate::domain::{ReservationId, UserId};
use crate::store::Writes;
use actix::prelude::*;

/// A pinned hold, ready to be paid.
#[derive(Debug, Clone)]
pub struct PinnedHold {
    pub reservation: Reservation,
    /// The generation of the book the pin lives in: the payment's write depends on it.
    pub generation: u64,
}

/// Pin a pending hold for payment: expiry waits until `UnpinHold` or `PostHold`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PinHold {
    pub id: ReservationId,
    pub user: UserId,
    pub reply: Reply<PinnedHold, BookingRefusal>,
}

impl Handler<PinHold> for ScheduleActor {
    type Result = ();

    /// Pins the hold if it is still valid; a hold past its time expires here instead.
    #[tracing::instrument(level = "debug", skip_all, fields(reservation_id = %msg.id, user_id = %msg.user))]
    fn handle(&mut self, msg: PinHold, ctx: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let generation = self.durability.generation();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        let answer = book.pin(msg.id, msg.user, now).map(|r| PinnedHold {
            reservation: r.clone(),
            generation,
        });
        let writes = if answer.is_err() {
            expired_write(book, msg.id)
        } else {
            Writes::default()
        };
        let writes = if writes.is_empty() {
            writes
        } else {
            self.with_offers(writes, ctx)
        };
        self.publish();
        let releases = !writes.is_empty();
        self.durability
            .answer_after_commit(permit, writes, reply, answer);
        if releases {
            self.last_release = self.durability.last_seq();
            self.settled(msg.id, self.last_release, ctx);
        }
    }
}

/// The write for a hold that a pin found past its time (the pin expired it).
fn expired_write(book: &ScheduleBook, id: ReservationId) -> Writes {
    match book.reservation(id) {
        Some(r) if r.status == ReservationStatus::Expired => Writes::default().reservation(r),
        _ => Writes::default(),
    }
}

/// Release a pin: the payment did not happen.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnpinHold {
    pub id: ReservationId,
}

impl Handler<UnpinHold> for ScheduleActor {
    type Result = ();

    /// Unpins; the expiry path then releases the hold if it came due while pinned.
    #[tracing::instrument(level = "debug", skip_all, fields(reservation_id = %msg.id))]
    fn handle(&mut self, msg: UnpinHold, ctx: &mut Context<Self>) {
        if let Loaded::Ready(book) = &mut self.state {
            book.unpin(msg.id);
            self.expire(msg.id, ctx);
        }
    }
}

/// Post a pinned hold: its payment is durable, the seats are sold.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PostHold {
    pub id: ReservationId,
    /// The tickets the payment's transaction issued (API.md §12). Empty when the payment was
    /// committed by another node; the book then learns them at its next load.
    pub tickets: Vec<crate::domain::ticket::Ticket>,
}

impl Handler<PostHold> for ScheduleActor {
    type Result = ();

    /// Marks the reservation paid in memory (the database already says so).
    #[tracing::instrument(level = "debug", skip_all, fields(reservation_id = %msg.id))]
    fn handle(&mut self, msg: PostHold, ctx: &mut Context<Self>) {
        let now = self.env.clock.now();
        if let Loaded::Ready(book) = &mut self.state {
            book.tickets.issue(msg.tickets);
            if let Some(r) = book.post(msg.id, now) {
                metrics::counter!("boxoffice_holds_total", "outcome" => "posted").increment(1);
                metrics::counter!("boxoffice_seats_sold_total").increment(r.seats.len() as u64);
                self.env.live.hold_paid();
                // Its write is the payment's, committed before this message was sent.
                self.settled(msg.id, 0, ctx);
                // A paid offer leaves the waiting list.
                self.offer_now(ctx);
            }
        }
    }
}
