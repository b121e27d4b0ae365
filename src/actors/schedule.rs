//! `ScheduleActor`: the only writer of one schedule's seats. Serializes holds (all or
//! nothing), hold expiry (a timer per hold, due exactly at the hold time), cancellation, and
//! the pin → post of a payment.

use super::engine::{Core, ScheduleEntry};
use super::persister::ActorKey;
use super::{ActorError, Durability, Reply, Unavailable};
use crate::domain::schedule::{BookingRule, HoldPolicy, Reservation, ScheduleBook, SeatState};
use crate::domain::{Money, ReservationId, SeatId, Timestamp, UserId};
use crate::store::{StoreError, Writes};
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a schedule that failed to load waits before trying again.
const RELOAD_BACKOFF: Duration = Duration::from_millis(500);

/// A reservation with what a client shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationView {
    pub reservation: Reservation,
    pub concert_name: String,
    pub concert_at: Timestamp,
    pub concert_id: crate::domain::ConcertId,
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

/// A pinned hold, ready to be paid.
#[derive(Debug, Clone)]
pub struct PinnedHold {
    pub reservation: Reservation,
    /// The generation of the book the pin lives in: the payment's write depends on it.
    pub generation: u64,
}

enum State {
    Loading,
    /// The last load failed; a retry is scheduled.
    Unloaded,
    Ready(Box<ScheduleBook>),
}

pub struct ScheduleActor {
    entry: Arc<ScheduleEntry>,
    core: Arc<Core>,
    durability: Durability,
    state: State,
}

impl ScheduleActor {
    /// An actor for a book already in memory (boot, or a schedule just created).
    pub fn ready(entry: Arc<ScheduleEntry>, core: Arc<Core>, book: ScheduleBook) -> ScheduleActor {
        let durability =
            Durability::new(ActorKey::Schedule(entry.info.id), 0, core.persister.clone());
        ScheduleActor {
            entry,
            core,
            durability,
            state: State::Ready(Box::new(book)),
        }
    }

    /// An actor that loads its book from the store when it starts.
    pub fn lazy(entry: Arc<ScheduleEntry>, core: Arc<Core>) -> ScheduleActor {
        let durability =
            Durability::new(ActorKey::Schedule(entry.info.id), 0, core.persister.clone());
        ScheduleActor {
            entry,
            core,
            durability,
            state: State::Loading,
        }
    }

    fn policy(&self) -> HoldPolicy {
        HoldPolicy {
            hold_ttl: self.core.settings.hold_ttl,
            max_seats_per_user: self.core.settings.max_seats_per_user,
        }
    }

    /// Loads the book from the store; the mailbox waits meanwhile (the state is unknown).
    fn load(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Loading;
        let id = self.entry.info.id;
        let fut = self
            .core
            .store
            .run(move |store| async move { store.load_schedule(id).await });
        ctx.wait(
            fut.into_actor(self)
                .map(|result, act, ctx| act.install(result, ctx)),
        );
    }

    fn install(
        &mut self,
        loaded: Result<crate::store::ScheduleSnapshot, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let id = self.entry.info.id;
        let book = loaded.and_then(|snapshot| {
            ScheduleBook::restore(
                self.entry.info.clone(),
                snapshot.seats,
                snapshot.reservations,
            )
            .map_err(|seat| {
                StoreError::Corrupt(format!("seat {seat} of schedule {id} has two live holds"))
            })
        });
        match book {
            Ok(book) => {
                self.state = State::Ready(Box::new(book));
                self.after_load(ctx);
            }
            Err(error) => {
                tracing::warn!(schedule_id = %id, error = %error, "schedule load failed; retrying");
                self.state = State::Unloaded;
                ctx.run_later(RELOAD_BACKOFF, |act, ctx| {
                    if matches!(act.state, State::Unloaded) {
                        act.load(ctx);
                    }
                });
            }
        }
    }

    /// After a (re)load: index reservations, expire what came due, arm the other timers.
    fn after_load(&mut self, ctx: &mut Context<Self>) {
        let now = self.core.clock.now();
        let State::Ready(book) = &mut self.state else {
            return;
        };
        let mut pending = Vec::new();
        for r in book.reservations() {
            self.core.reservations.insert(r.id, r.schedule);
            if r.status == crate::domain::schedule::ReservationStatus::Pending {
                pending.push((r.id, r.expires_at));
            }
        }
        let due: Vec<ReservationId> = pending
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(id, _)| *id)
            .collect();
        if !due.is_empty() {
            match self.durability.reserve() {
                Ok(permit) => {
                    book.expire_due(now);
                    let writes = due
                        .iter()
                        .filter_map(|id| book.reservation(*id))
                        .fold(Writes::default(), |w, r| w.reservation(r));
                    self.durability.submit_detached(permit, writes);
                }
                // Retried by the timers below, which fire at once for these.
                Err(u) => tracing::warn!(error = %u, "could not release expired holds yet"),
            }
        }
        for (id, expires_at) in pending {
            self.arm_expiry(id, expires_at, now, ctx);
        }
        self.publish();
    }

    fn arm_expiry(
        &self,
        id: ReservationId,
        expires_at: Timestamp,
        now: Timestamp,
        ctx: &mut Context<Self>,
    ) {
        ctx.run_later(now.until(expires_at), move |act, ctx| act.expire(id, ctx));
    }

    /// The hold timer fired: expire the hold if it is still pending and unpinned.
    fn expire(&mut self, id: ReservationId, ctx: &mut Context<Self>) {
        let now = self.core.clock.now();
        let State::Ready(book) = &mut self.state else {
            return;
        };
        let Some(r) = book.reservation(id) else {
            return;
        };
        if r.status != crate::domain::schedule::ReservationStatus::Pending || r.pinned {
            return; // Settled, or its payment's unpin will expire it.
        }
        if now < r.expires_at {
            // The clock says not yet (timers can fire a hair early): look again then.
            let at = r.expires_at;
            self.arm_expiry(id, at, now, ctx);
            return;
        }
        let permit = match self.durability.reserve() {
            Ok(permit) => permit,
            Err(u) => {
                tracing::warn!(reservation_id = %id, error = %u, "hold expiry postponed");
                ctx.run_later(RELOAD_BACKOFF, move |act, ctx| act.expire(id, ctx));
                return;
            }
        };
        if let Some(r) = book.expire(id, now) {
            let writes = Writes::default().reservation(r);
            tracing::debug!(reservation_id = %id, "hold expired");
            metrics::counter!("boxoffice_holds_total", "outcome" => "expired").increment(1);
            self.durability.submit_detached(permit, writes);
            self.publish();
        }
    }

    fn publish(&self) {
        if let State::Ready(book) = &self.state {
            self.entry
                .available
                .store(book.available_count(), Ordering::Relaxed);
        }
    }

    fn view(&self, book: &ScheduleBook, r: &Reservation) -> ReservationView {
        ReservationView {
            reservation: r.clone(),
            concert_name: book.info.concert_name.clone(),
            concert_at: book.info.concert_at,
            concert_id: book.info.concert_id,
            seats: r
                .seats
                .iter()
                .filter_map(|s| book.seat(*s))
                .map(|s| (s.number, s.price))
                .collect(),
        }
    }

    /// The book, or the reason there is none to answer from.
    fn book_or_unavailable<T, E>(
        &mut self,
        reply: Reply<T, E>,
    ) -> Option<(Reply<T, E>, &mut ScheduleBook)> {
        if self.durability.is_stale() {
            // A Rebuild is on its way; nothing decided from this state may go out.
            let _ = reply.send(Err(ActorError::Unavailable(Unavailable::Rebuilding)));
            return None;
        }
        match &mut self.state {
            State::Ready(book) => Some((reply, book)),
            _ => {
                let _ = reply.send(Err(ActorError::Unavailable(Unavailable::Rebuilding)));
                None
            }
        }
    }
}

impl super::Named for ScheduleActor {
    const KIND: &'static str = "schedule";
}

impl Actor for ScheduleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.core.settings.mailbox_capacity);
        match self.state {
            State::Ready(_) => self.after_load(ctx),
            _ => self.load(ctx),
        }
    }
}

/// Hold seats for a user, all or nothing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HoldSeats {
    pub user: UserId,
    pub seats: Vec<SeatId>,
    pub idempotency: Option<super::idempotency::IdempotentWrite<ReservationView>>,
    pub reply: Reply<ReservationView, BookingRule>,
}

impl Handler<HoldSeats> for ScheduleActor {
    type Result = ();

    /// Holds the seats, writes the reservation, answers after the commit.
    fn handle(&mut self, msg: HoldSeats, ctx: &mut Context<Self>) {
        super::received::<Self>();
        let permit = match self.durability.reserve() {
            Ok(p) => p,
            Err(u) => return drop(msg.reply.send(Err(ActorError::Unavailable(u)))),
        };
        let now = self.core.clock.now();
        let policy = self.policy();
        let id = self.core.next_reservation_id();
        let Some((reply, book)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        match book.hold(id, msg.user, &msg.seats, now, policy) {
            Ok(r) => {
                let r = r.clone();
                let view = self.view_of(&r);
                self.core.reservations.insert(id, r.schedule);
                metrics::counter!("boxoffice_holds_total", "outcome" => "placed").increment(1);
                self.arm_expiry(id, r.expires_at, now, ctx);
                self.publish();
                self.durability.commit_answer(
                    permit,
                    Writes::default().reservation(&r),
                    reply,
                    view,
                    msg.idempotency,
                    now,
                    None,
                );
            }
            Err(rule) => self
                .durability
                .commit_then(permit, Writes::default(), reply, Err(rule)),
        }
    }
}

impl ScheduleActor {
    fn view_of(&self, r: &Reservation) -> ReservationView {
        match &self.state {
            State::Ready(book) => self.view(book, r),
            // Only called right after a decision on a ready book.
            _ => unreachable!("view_of is only called with a ready book"),
        }
    }
}

/// List the schedule's seats with their availability.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListSeats {
    pub reply: Reply<Vec<SeatView>, BookingRule>,
}

impl Handler<ListSeats> for ScheduleActor {
    type Result = ();

    /// Answers the seat map as of every acknowledged hold.
    fn handle(&mut self, msg: ListSeats, _: &mut Context<Self>) {
        super::received::<Self>();
        let Some((reply, book)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        let seats = book
            .seats()
            .map(|(s, state)| SeatView {
                id: s.id,
                number: s.number,
                price: s.price,
                available: state == SeatState::Available,
            })
            .collect();
        self.durability.answer(reply, Ok(seats));
    }
}

/// Read one reservation of a user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadReservation {
    pub id: ReservationId,
    pub user: UserId,
    pub reply: Reply<ReservationView, BookingRule>,
}

impl Handler<ReadReservation> for ScheduleActor {
    type Result = ();

    /// Answers the reservation's current state.
    fn handle(&mut self, msg: ReadReservation, _: &mut Context<Self>) {
        super::received::<Self>();
        let Some((reply, book)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        let answer = book.owned(msg.id, msg.user).cloned();
        let answer = answer.map(|r| self.view_of(&r));
        self.durability.answer(reply, answer);
    }
}

/// Void a pending reservation: its seats are free at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelReservation {
    pub id: ReservationId,
    pub user: UserId,
    pub reply: Reply<ReservationView, BookingRule>,
}

impl Handler<CancelReservation> for ScheduleActor {
    type Result = ();

    /// Voids the hold and answers after the commit.
    fn handle(&mut self, msg: CancelReservation, _: &mut Context<Self>) {
        super::received::<Self>();
        let permit = match self.durability.reserve() {
            Ok(p) => p,
            Err(u) => return drop(msg.reply.send(Err(ActorError::Unavailable(u)))),
        };
        let now = self.core.clock.now();
        let Some((reply, book)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        match book.cancel(msg.id, msg.user, now).cloned() {
            Ok(r) => {
                metrics::counter!("boxoffice_holds_total", "outcome" => "voided").increment(1);
                let view = self.view_of(&r);
                self.publish();
                self.durability.commit_then(
                    permit,
                    Writes::default().reservation(&r),
                    reply,
                    Ok(view),
                );
            }
            Err(rule) => self
                .durability
                .commit_then(permit, Writes::default(), reply, Err(rule)),
        }
    }
}

impl ScheduleActor {
    /// The write for a hold that a pin found past its time (the pin expires it).
    fn expired_write(&self, id: ReservationId) -> Writes {
        match &self.state {
            State::Ready(book) => match book.reservation(id) {
                Some(r) if r.status == crate::domain::schedule::ReservationStatus::Expired => {
                    Writes::default().reservation(r)
                }
                _ => Writes::default(),
            },
            _ => Writes::default(),
        }
    }
}

/// Pin a pending hold for payment: expiry waits until `UnpinHold` or `PostHold`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PinHold {
    pub id: ReservationId,
    pub user: UserId,
    pub reply: Reply<PinnedHold, BookingRule>,
}

impl Handler<PinHold> for ScheduleActor {
    type Result = ();

    /// Pins the hold if it is still valid; a hold past its time expires here instead.
    fn handle(&mut self, msg: PinHold, _: &mut Context<Self>) {
        super::received::<Self>();
        let permit = match self.durability.reserve() {
            Ok(p) => p,
            Err(u) => return drop(msg.reply.send(Err(ActorError::Unavailable(u)))),
        };
        let now = self.core.clock.now();
        let generation = self.durability.generation();
        let Some((reply, book)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        let answer = book.pin(msg.id, msg.user, now).map(|r| PinnedHold {
            reservation: r.clone(),
            generation,
        });
        let writes = if answer.is_err() {
            self.expired_write(msg.id)
        } else {
            Writes::default()
        };
        self.publish();
        self.durability.commit_then(permit, writes, reply, answer);
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
    fn handle(&mut self, msg: UnpinHold, ctx: &mut Context<Self>) {
        if let State::Ready(book) = &mut self.state {
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
}

impl Handler<PostHold> for ScheduleActor {
    type Result = ();

    /// Marks the reservation paid in memory (the database already says so).
    fn handle(&mut self, msg: PostHold, _: &mut Context<Self>) {
        let now = self.core.clock.now();
        if let State::Ready(book) = &mut self.state {
            if let Some(r) = book.post(msg.id, now) {
                metrics::counter!("boxoffice_holds_total", "outcome" => "posted").increment(1);
                metrics::counter!("boxoffice_seats_sold_total").increment(r.seats.len() as u64);
            }
        }
    }
}

/// Rebuild from the database after a failed commit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RebuildSchedule {
    pub generation: u64,
}

impl Handler<RebuildSchedule> for ScheduleActor {
    type Result = ();

    /// Throws the in-memory book away and reloads it under the new generation.
    fn handle(&mut self, msg: RebuildSchedule, ctx: &mut Context<Self>) {
        if msg.generation <= self.durability.generation() {
            return;
        }
        tracing::info!(schedule_id = %self.entry.info.id, generation = msg.generation, "rebuilding schedule");
        self.durability.rebuilt(msg.generation);
        self.load(ctx);
    }
}
