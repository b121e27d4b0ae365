//! Cancelling a whole performance (API.md §12): nothing more is sold, every hold is voided,
//! the waiting list emptied; then each paid reservation is refunded once. The schedule actor
//! serializes the refunds: a reservation is refunded only while its seats are still sold to
//! it here and no other refund of it is in flight, so two cancellations never refund one
//! reservation twice, and each refund voids the reservation's tickets in its transaction.

use super::ScheduleActor;
use crate::actors::loading::Loaded;
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::schedule::{BookingRefusal, Reservation};
use crate::domain::ticket::Ticket;
use crate::store::Writes;
use actix::prelude::*;

/// What a cancellation did: holds a payment still pins settle first (the caller asks again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerformanceCancelled {
    pub voided: usize,
    pub pinned: usize,
}

/// Cancel the performance: no more holds, every unpinned hold voided, the list emptied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelPerformance {
    pub reply: Reply<PerformanceCancelled, BookingRefusal>,
}

impl Handler<CancelPerformance> for ScheduleActor {
    type Result = ();

    /// Voids and records the cancellation; answers after the commit.
    fn handle(&mut self, msg: CancelPerformance, ctx: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        let (voided, removed, pinned) = book.cancel_performance(now);
        let mut writes = Writes::default();
        writes.cancelled.insert(book.info.id, now);
        for e in &removed {
            writes = writes.waitlist_removed(e.schedule, e.user);
        }
        for r in &voided {
            writes = writes.reservation(r);
        }
        self.publish();
        let answer = PerformanceCancelled {
            voided: voided.len(),
            pinned,
        };
        self.durability
            .answer_after_commit(permit, writes, reply, Ok(answer));
        if !voided.is_empty() {
            self.last_release = self.durability.last_seq();
            for r in &voided {
                self.settled(r.id, self.last_release, ctx);
            }
        }
    }
}

/// Claim a paid reservation for its refund: answered with the generation the refund's write
/// depends on and the reservation's tickets (the refund voids them, API.md §12), or refused
/// when it is not (or no longer) sold to it, or a refund is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BeginRefund {
    pub reservation: Reservation,
    pub reply: Reply<(u64, Vec<Ticket>), BookingRefusal>,
}

impl Handler<BeginRefund> for ScheduleActor {
    type Result = ();

    fn handle(&mut self, msg: BeginRefund, _: &mut Context<Self>) {
        received::<Self>();
        let generation = self.durability.generation();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(msg.reply, why),
        };
        let id = msg.reservation.id;
        let answer = if book.is_sold_to(&msg.reservation) && self.refunding.insert(id) {
            let tickets = book.tickets.of_reservation(id).into_iter().cloned();
            Ok((generation, tickets.collect()))
        } else {
            Err(BookingRefusal::Cancelled)
        };
        // Nothing written: the answer rests on the committed PAID row.
        let _ = msg
            .reply
            .send(answer.map_err(crate::actors::ActorError::Rejected));
    }
}

/// A claimed refund ended: committed (the seats are no longer sold) or not (released).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FinishRefund {
    pub reservation: Reservation,
    pub committed: bool,
}

impl Handler<FinishRefund> for ScheduleActor {
    type Result = ();

    fn handle(&mut self, msg: FinishRefund, ctx: &mut Context<Self>) {
        let id = msg.reservation.id;
        self.refunding.remove(&id);
        if !msg.committed {
            return;
        }
        let now = self.env.clock.now();
        if let Loaded::Ready(book) = &mut self.state {
            // Its tickets are void at the door at once, as the committed rows say.
            book.tickets.void_reservation(id, now);
            if book.refund(&msg.reservation, now).is_some() {
                metrics::counter!("boxoffice_refunds_total").increment(1);
                // Its write is the wallet's, committed before this message was sent.
                self.settled(id, 0, ctx);
                self.publish();
            }
        }
    }
}
