//! Voiding a pending hold at its owner's request: the seats are free at once, and the answer
//! goes after the commit.

use super::reads::view;
use super::{ReservationView, ScheduleActor};
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::schedule::BookingRefusal;
use crate::domain::{ReservationId, UserId};
use crate::store::Writes;
use actix::prelude::*;

/// Void a pending reservation: its seats are free at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelReservation {
    pub id: ReservationId,
    pub user: UserId,
    pub reply: Reply<ReservationView, BookingRefusal>,
}

impl Handler<CancelReservation> for ScheduleActor {
    type Result = ();

    /// Voids the hold and answers after the commit.
    #[tracing::instrument(level = "debug", skip_all, fields(reservation_id = %msg.id, user_id = %msg.user))]
    fn handle(&mut self, msg: CancelReservation, ctx: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        match book.cancel(msg.id, msg.user, now).cloned() {
            Ok(r) => {
                metrics::counter!("boxoffice_holds_total", "outcome" => "voided").increment(1);
                self.env.live.hold_voided();
                let answer = view(book, &r);
                let writes = self.with_offers(Writes::default().reservation(&r), ctx);
                self.publish();
                self.durability
                    .answer_after_commit(permit, writes, reply, Ok(answer));
                self.last_release = self.durability.last_seq();
                self.settled(r.id, self.last_release, ctx);
            }
            Err(refusal) => self.durability.refuse_after_commit(permit, reply, refusal),
        }
    }
}
