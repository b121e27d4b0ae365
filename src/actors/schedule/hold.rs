//! The hold decision: all or nothing, on the book as it is, answered after the commit. A
//! refusal goes out at once when nothing a failed commit could undo decided it; otherwise it
//! waits, with the rest of its burst's such refusals, behind this actor's writes in flight.

use super::reads::view;
use super::{ReservationView, ScheduleActor};
use crate::actors::durability::Acknowledgement;
use crate::actors::error::ActorError;
use crate::actors::idempotency::IdempotentWrite;
use crate::actors::mailbox::{refuse_unavailable, Reply};
use crate::domain::schedule::BookingRefusal;
use crate::domain::{ReservationId, SeatId, Timestamp, UserId};
use crate::store::Writes;
use actix::prelude::*;

/// Hold seats for a user, all or nothing (sent through the schedule's `HoldIntake`).
pub struct HoldSeats {
    pub user: UserId,
    pub seats: Vec<SeatId>,
    /// Boxed: most holds carry none, and the intake moves every hold twice.
    pub idempotency: Option<Box<IdempotentWrite<ReservationView>>>,
    pub reply: Reply<ReservationView, BookingRefusal>,
}

/// What a refused hold's answer depends on.
enum Blocker {
    /// Nothing that a failed commit could undo.
    None,
    /// The hold taking the seat (none: the book is inconsistent; wait to be safe).
    Hold(Option<ReservationId>),
    /// Possibly any of this actor's writes.
    Unknown,
}

impl ScheduleActor {
    /// Holds the seats, writes the reservation, answers after the commit.
    pub(super) fn hold(&mut self, msg: HoldSeats, now: Timestamp, ctx: &mut Context<Self>) {
        let policy = self.policy();
        let HoldSeats {
            user,
            seats,
            idempotency,
            reply,
        } = msg;
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        if let Err(refusal) = book.check_hold(user, &seats, now, policy) {
            let blocker = match refusal {
                BookingRefusal::SeatUnavailable { seat } => {
                    self.env.live.hold_refused();
                    Blocker::Hold(book.holder(seat))
                }
                // The user's own holds count, committed or not.
                BookingRefusal::SeatLimitExceeded { limit } if seats.len() <= limit as usize => {
                    Blocker::Unknown
                }
                // The request alone (or the clock) decided it.
                _ => Blocker::None,
            };
            return self.refuse(reply, refusal, blocker);
        }
        let Some((permit, reply)) = self.durability.reserve_or_refuse(reply) else {
            return;
        };
        let id = self.env.ids.reservation();
        let (reservation, answer) = match book.hold(id, user, &seats, now, policy) {
            Ok(r) => {
                let r = r.clone();
                let answer = view(book, &r);
                (r, answer)
            }
            // check_hold said yes a moment ago, on the same state and clock reading.
            Err(refusal) => return self.durability.refuse_after_commit(permit, reply, refusal),
        };
        self.env.reservations.insert(id, reservation.schedule);
        metrics::counter!("boxoffice_holds_total", "outcome" => "placed").increment(1);
        self.env.live.hold_placed();
        self.expire_at(id, reservation.expires_at, ctx);
        self.publish();
        let acknowledgement = Acknowledgement {
            idempotency: idempotency.map(|b| *b),
            ..Acknowledgement::new(
                Writes::default().created_reservation(&reservation),
                answer,
                now,
            )
        };
        self.durability
            .acknowledge_after_commit(permit, acknowledgement, reply);
        self.unconfirmed_hold(id);
    }

    /// Answers a refused hold: at once when what refused it is durable, otherwise after this
    /// actor's writes in flight (a seat taken by a hold whose write then fails was free).
    fn refuse(
        &mut self,
        reply: Reply<ReservationView, BookingRefusal>,
        refusal: BookingRefusal,
        on: Blocker,
    ) {
        let durable = match on {
            Blocker::None => true,
            Blocker::Hold(Some(holder)) => self
                .unconfirmed
                .seq_of(holder)
                .is_none_or(|seq| self.durability.is_durable(seq)),
            Blocker::Hold(None) | Blocker::Unknown => false,
        };
        if durable || self.durability.settled() {
            let _ = reply.send(Err(ActorError::Rejected(refusal)));
            return;
        }
        self.deferred.push((reply, refusal));
    }

    /// Answers the burst's deferred refusals once every write submitted so far is durable:
    /// one persister submission for all of them, after the burst's last write.
    pub(super) fn answer_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.deferred);
        match self.durability.reserve() {
            Ok(permit) => {
                self.durability
                    .call_after_commit(permit, Writes::default(), move |outcome| {
                        for (reply, refusal) in waiting {
                            let _ = reply.send(match outcome {
                                Ok(()) => Err(ActorError::Rejected(refusal)),
                                Err(u) => Err(ActorError::Unavailable(u)),
                            });
                        }
                    })
            }
            Err(u) => {
                for (reply, _) in waiting {
                    refuse_unavailable(reply, u);
                }
            }
        }
    }

    /// Remembers the hold just submitted as unconfirmed, and forgets those committed since.
    fn unconfirmed_hold(&mut self, id: ReservationId) {
        self.unconfirmed.record(id, self.durability.last_seq());
        // One reading of the persister for the whole sweep (a stale actor forgets nothing:
        // its rebuild clears these).
        if let Some(committed) = self.durability.durable_through() {
            self.unconfirmed.forget_through(committed);
        }
    }
}
