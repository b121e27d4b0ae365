//! The schedule's waiting list (API.md §12): join, read and leave, and the offers. Whatever
//! frees seats here (an expiry, a cancel, a pin finding its hold expired, a refund) calls
//! [`ScheduleActor::with_offers`] on the writes it is about to submit, so the offers those
//! seats make commit in the same submission as the release that freed them.

use super::ScheduleActor;
use crate::actors::loading::Loaded;
use crate::actors::mailbox::{received, refuse_unavailable, Reply};
use crate::domain::waitlist::{WaitlistEntry, WaitlistRefusal};
use crate::domain::{ReservationId, Timestamp, UserId};
use crate::store::Writes;
use actix::prelude::*;

/// One entry as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistView {
    pub user: UserId,
    /// 1 for the first entry of the list.
    pub position: usize,
    pub seats: u32,
    pub status: &'static str,
    /// The offered hold and until when it is held (`OFFERED` only).
    pub reservation: Option<ReservationId>,
    pub expires_at: Option<Timestamp>,
}

/// Join the list: `seats` wanted, at the end of the line.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JoinWaitlist {
    pub user: UserId,
    pub seats: u32,
    pub reply: Reply<WaitlistView, WaitlistRefusal>,
}

/// Read a user's entry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadWaitlist {
    pub user: UserId,
    pub reply: Reply<WaitlistView, WaitlistRefusal>,
}

/// Leave the list (an offer already made stays a hold until paid or expired).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveWaitlist {
    pub user: UserId,
    pub reply: Reply<WaitlistView, WaitlistRefusal>,
}

/// Whether a reservation is a waiting-list offer to its user (paid without a queue token).
#[derive(Message)]
#[rtype(result = "()")]
pub struct IsOffer {
    pub id: ReservationId,
    pub user: UserId,
    pub reply: Reply<bool, WaitlistRefusal>,
}

impl Handler<IsOffer> for ScheduleActor {
    type Result = ();

    fn handle(&mut self, msg: IsOffer, _: &mut Context<Self>) {
        let offered = self.state.ready().is_some_and(|b| {
            b.waitlist
                .entry(msg.user)
                .is_some_and(|e| e.offer == Some(msg.id))
        });
        let _ = msg.reply.send(Ok(offered));
    }
}

impl ScheduleActor {
    fn waitlist_view(&self, e: &WaitlistEntry) -> Option<WaitlistView> {
        let book = self.state.ready()?;
        let held = e.offer.and_then(|id| book.reservation(id));
        Some(WaitlistView {
            user: e.user,
            position: book.waitlist.position(e.user)?,
            seats: e.seats,
            status: e.status(),
            reservation: e.offer,
            expires_at: held.map(|r| r.expires_at),
        })
    }

    /// Adds to `writes` what the seats now free make: settled offers leave the list, and the
    /// available seats are offered in list order. Each offer is a hold with its own deadline.
    pub(super) fn with_offers(&mut self, mut writes: Writes, ctx: &mut Context<Self>) -> Writes {
        let now = self.env.clock.now();
        let (ttl, limit) = (
            self.env.settings.offer_ttl,
            self.env.settings.max_seats_per_user,
        );
        let env = self.env.clone();
        let Loaded::Ready(book) = &mut self.state else {
            return writes;
        };
        if book.waitlist.is_empty() {
            // The common case, on every expiry and cancel: nothing to settle or offer.
            return writes;
        }
        let schedule = book.info.id;
        for gone in book.settle_offers() {
            writes = writes.waitlist_removed(schedule, gone.user);
        }
        let offers = book.offer_freed(now, ttl, limit, || env.ids.reservation());
        for offer in offers {
            let r = &offer.reservation;
            tracing::debug!(reservation_id = %r.id, user_id = %r.user, "waitlist offer");
            metrics::counter!("boxoffice_holds_total", "outcome" => "offered").increment(1);
            self.env.reservations.insert(r.id, r.schedule);
            self.expire_at(r.id, r.expires_at, ctx);
            writes = writes.created_reservation(r).waitlist_entry(&offer.entry);
        }
        writes
    }

    /// Submits what [`ScheduleActor::with_offers`] finds on its own (after a load, a join, a
    /// payment): nothing when nothing changes.
    pub(super) fn offer_now(&mut self, ctx: &mut Context<Self>) {
        if self.state.ready().is_none_or(|b| b.waitlist.is_empty()) {
            return;
        }
        let permit = match self.durability.reserve() {
            Ok(permit) => permit,
            // The next release, join or load tries again; the seats stay the list's meanwhile.
            Err(u) => return tracing::warn!(error = %u, "waitlist offers postponed"),
        };
        let writes = self.with_offers(Writes::default(), ctx);
        if !writes.is_empty() {
            self.durability.submit_unanswered(permit, writes);
            self.publish();
        }
    }
}

impl Handler<JoinWaitlist> for ScheduleActor {
    type Result = ();

    /// Adds the entry and offers what is free at once; answers after the commit.
    fn handle(&mut self, msg: JoinWaitlist, ctx: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let now = self.env.clock.now();
        let limit = self.env.settings.max_seats_per_user;
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        let joined = match book.join_waitlist(msg.user, msg.seats, now, limit) {
            Ok(e) => e.clone(),
            Err(refusal) => return self.durability.refuse_after_commit(permit, reply, refusal),
        };
        let writes = self.with_offers(Writes::default().waitlist_entry(&joined), ctx);
        let answer = self
            .state
            .ready()
            .and_then(|b| b.waitlist.entry(msg.user))
            .and_then(|e| self.waitlist_view(e))
            .ok_or(WaitlistRefusal::NotFound);
        self.publish();
        self.durability
            .answer_after_commit(permit, writes, reply, answer);
    }
}

impl Handler<ReadWaitlist> for ScheduleActor {
    type Result = ();

    /// The entry as the actor has it, once what decided it is durable.
    fn handle(&mut self, msg: ReadWaitlist, _: &mut Context<Self>) {
        received::<Self>();
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(msg.reply, why),
        };
        let answer = book
            .waitlist
            .entry(msg.user)
            .cloned()
            .and_then(|e| self.waitlist_view(&e))
            .ok_or(WaitlistRefusal::NotFound);
        self.durability.answer_when_settled(msg.reply, answer);
    }
}

impl Handler<LeaveWaitlist> for ScheduleActor {
    type Result = ();

    /// Removes the entry; the seats it waited for stay the list's if others wait.
    fn handle(&mut self, msg: LeaveWaitlist, _: &mut Context<Self>) {
        received::<Self>();
        let Some((permit, reply)) = self.durability.reserve_or_refuse(msg.reply) else {
            return;
        };
        let view = self
            .state
            .ready()
            .and_then(|b| b.waitlist.entry(msg.user))
            .cloned()
            .and_then(|e| self.waitlist_view(&e));
        let book = match self.state.ready_mut(&self.durability) {
            Ok(book) => book,
            Err(why) => return refuse_unavailable(reply, why),
        };
        match (book.waitlist.leave(msg.user), view) {
            (Ok(e), Some(view)) => {
                let writes = Writes::default().waitlist_removed(e.schedule, e.user);
                self.publish();
                self.durability
                    .answer_after_commit(permit, writes, reply, Ok(view));
            }
            _ => self
                .durability
                .refuse_after_commit(permit, reply, WaitlistRefusal::NotFound),
        }
    }
}
