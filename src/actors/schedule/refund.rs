//! A schedule's side of a refund (API.md §12): pin the reservation's tickets (the door and
//! transfers refuse them meanwhile), then, once the wallet's transaction committed the credit,
//! the REFUNDED reservation and the VOID tickets, free the seats; or unpin if it did not.

use super::ScheduleActor;
use crate::actors::loading::Loaded;
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::ticket::Ticket;
use crate::domain::{ReservationId, SeatId, UserId};
use crate::store::Writes;
use actix::prelude::*;

/// Why a refund is refused: not paid, a ticket checked in, transferred or void, too late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refund not allowed")]
pub struct RefundRefused;

/// The tickets pinned for a refund, and the book's generation the refund's write depends on.
#[derive(Debug, Clone)]
pub struct PinnedRefund {
    pub tickets: Vec<Ticket>,
    pub generation: u64,
}

/// Pin a paid reservation's tickets for its refund.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PinRefund {
    pub id: ReservationId,
    pub buyer: UserId,
    pub reply: Reply<PinnedRefund, RefundRefused>,
}

impl Handler<PinRefund> for ScheduleActor {
    type Result = ();

    #[tracing::instrument(level = "debug", skip_all, fields(reservation_id = %msg.id))]
    fn handle(&mut self, msg: PinRefund, _: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let until = self.env.settings.refund_until;
        let generation = self.durability.generation();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        let answer = if now.plus(until) >= book.info.concert_at {
            Err(RefundRefused)
        } else {
            book.tickets
                .pin_refund(msg.id, msg.buyer)
                .map(|tickets| PinnedRefund {
                    tickets,
                    generation,
                })
                .ok_or(RefundRefused)
        };
        // After this actor's writes in flight: a pin must not rest on a check-in or transfer
        // that a failed commit could still undo.
        self.durability
            .answer_after_commit(permit, Writes::default(), reply, answer);
    }
}

/// The refund did not happen: its tickets are as they were.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UnpinRefund {
    pub id: ReservationId,
}

impl Handler<UnpinRefund> for ScheduleActor {
    type Result = ();

    fn handle(&mut self, msg: UnpinRefund, _: &mut Context<Self>) {
        if let Loaded::Ready(book) = &mut self.state {
            book.tickets.unpin_refund(msg.id);
        }
    }
}

/// The refund is durable: void the tickets and free the seats in memory.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PostRefund {
    pub id: ReservationId,
    pub buyer: UserId,
    pub seats: Vec<SeatId>,
}

impl Handler<PostRefund> for ScheduleActor {
    type Result = ();

    #[tracing::instrument(level = "debug", skip_all, fields(reservation_id = %msg.id))]
    fn handle(&mut self, msg: PostRefund, ctx: &mut Context<Self>) {
        let now = self.env.clock.now();
        if let Loaded::Ready(book) = &mut self.state {
            book.tickets.void_reservation(msg.id, now);
            book.refund_sold(msg.id, &msg.seats, msg.buyer, now);
            self.publish();
        }
        // The seats came back: while the waiting list has entries they are its, offered in
        // order (a crash before this makes the offers at the next load).
        self.offer_now(ctx);
    }
}
