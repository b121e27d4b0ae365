//! `ScheduleActor`: the only writer of one schedule's seats. Serializes holds (all or
//! nothing), hold expiry (a deadline heap under one timer, due exactly at the hold time),
//! cancellation, and the pin → post of a payment.

use super::engine::{Core, ScheduleEntry};
use super::persister::ActorKey;
use super::{ActorError, Durability, Reply, Unavailable};
use crate::domain::ids::IdHashMap;
use crate::domain::schedule::{BookingRule, HoldPolicy, Reservation, ScheduleBook, SeatState};
use crate::domain::{Money, ReservationId, SeatId, Timestamp, UserId};
use crate::store::{StoreError, Writes};
use actix::prelude::*;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
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
    /// Pending holds by expiry time, under one timer armed for the earliest. (actix polls
    /// every spawned future on each wake-up: a timer per hold made every message slower as
    /// holds accumulated.) Entries of holds settled since are skipped when they come due.
    deadlines: BinaryHeap<Reverse<(Timestamp, ReservationId)>>,
    /// The armed timer and the deadline it is for.
    timer: Option<(Timestamp, SpawnHandle)>,
    /// Holds whose creating write may not be committed yet, with its sequence number (and the
    /// same in submission order, to forget them once committed). A refusal because a seat is
    /// taken goes out at once unless the hold taking it is in here: it cannot be undone.
    unconfirmed: IdHashMap<ReservationId, u64>,
    unconfirmed_order: VecDeque<(u64, ReservationId)>,
    /// The sequence number of the latest submission that freed seats (expiry, cancellation).
    /// While it is not committed, the seat map waits: the database still has those seats held.
    last_release: u64,
}

impl ScheduleActor {
    /// An actor for a book already in memory (boot, or a schedule just created).
    pub fn ready(entry: Arc<ScheduleEntry>, core: Arc<Core>, book: ScheduleBook) -> ScheduleActor {
        ScheduleActor::with_state(entry, core, State::Ready(Box::new(book)))
    }

    /// An actor that loads its book from the store when it starts.
    pub fn lazy(entry: Arc<ScheduleEntry>, core: Arc<Core>) -> ScheduleActor {
        ScheduleActor::with_state(entry, core, State::Loading)
    }

    fn with_state(entry: Arc<ScheduleEntry>, core: Arc<Core>, state: State) -> ScheduleActor {
        let durability =
            Durability::new(ActorKey::Schedule(entry.info.id), 0, core.persister.clone());
        ScheduleActor {
            entry,
            core,
            durability,
            state,
            deadlines: BinaryHeap::new(),
            timer: None,
            unconfirmed: IdHashMap::default(),
            unconfirmed_order: VecDeque::new(),
            last_release: 0,
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

    /// After a (re)load: index reservations, expire what came due, arm the deadline timer.
    fn after_load(&mut self, ctx: &mut Context<Self>) {
        let now = self.core.clock.now();
        let State::Ready(book) = &mut self.state else {
            return;
        };
        // Deadlines and unconfirmed writes of the state thrown away mean nothing now.
        self.deadlines.clear();
        self.unconfirmed.clear();
        self.unconfirmed_order.clear();
        self.last_release = 0;
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
                    self.last_release = self.durability.last_seq();
                }
                // Retried by the timers below, which fire at once for these.
                Err(u) => tracing::warn!(error = %u, "could not release expired holds yet"),
            }
        }
        self.deadlines
            .extend(pending.into_iter().map(|(id, at)| Reverse((at, id))));
        self.arm(ctx);
        self.publish();
    }

    /// Expires `id` at `at` (or later, if it is pinned or settled by then).
    fn expire_at(&mut self, id: ReservationId, at: Timestamp, ctx: &mut Context<Self>) {
        self.deadlines.push(Reverse((at, id)));
        self.arm(ctx);
    }

    /// Keeps the one timer armed for the earliest deadline.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(&Reverse((next, _))) = self.deadlines.peek() else {
            return;
        };
        if let Some((armed, handle)) = self.timer {
            if armed <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = self.core.clock.now().until(next);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.expire_due(ctx);
        });
        self.timer = Some((next, handle));
    }

    /// The timer fired: expires every hold that came due, then re-arms for the next.
    fn expire_due(&mut self, ctx: &mut Context<Self>) {
        let now = self.core.clock.now();
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            self.expire(id, ctx);
        }
        self.arm(ctx);
    }

    /// A hold's deadline came (or its pin was released): expire it if it is still pending and
    /// unpinned.
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
            // Not yet: a deadline pushed before the hold's time moved (the clock is read
            // again at every decision). Look again then.
            let at = r.expires_at;
            self.expire_at(id, at, ctx);
            return;
        }
        let permit = match self.durability.reserve() {
            Ok(permit) => permit,
            Err(u) => {
                tracing::warn!(reservation_id = %id, error = %u, "hold expiry postponed");
                self.expire_at(id, now.plus(RELOAD_BACKOFF), ctx);
                return;
            }
        };
        if let Some(r) = book.expire(id, now) {
            let writes = Writes::default().reservation(r);
            tracing::debug!(reservation_id = %id, "hold expired");
            metrics::counter!("boxoffice_holds_total", "outcome" => "expired").increment(1);
            self.durability.submit_detached(permit, writes);
            self.last_release = self.durability.last_seq();
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

    /// Holds the seats, writes the reservation, answers after the commit. A refusal that no
    /// failed commit could make wrong goes out at once.
    fn handle(&mut self, msg: HoldSeats, ctx: &mut Context<Self>) {
        super::received::<Self>();
        let now = self.core.clock.now();
        let policy = self.policy();
        let Some((reply, book)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        if let Err(rule) = book.check_hold(msg.user, &msg.seats, now, policy) {
            let blocker = match rule {
                BookingRule::SeatUnavailable { seat } => Blocker::Hold(book.holder(seat)),
                // The user's own holds count, committed or not.
                BookingRule::SeatLimitExceeded { limit } if msg.seats.len() <= limit as usize => {
                    Blocker::Unknown
                }
                // The request alone (or the clock) decided it.
                _ => Blocker::None,
            };
            return self.refuse(reply, rule, blocker);
        }
        let permit = match self.durability.reserve() {
            Ok(p) => p,
            Err(u) => return drop(reply.send(Err(ActorError::Unavailable(u)))),
        };
        let id = self.core.next_reservation_id();
        let State::Ready(book) = &mut self.state else {
            unreachable!("book_or_unavailable found the book ready just above");
        };
        match book.hold(id, msg.user, &msg.seats, now, policy) {
            Ok(r) => {
                let r = r.clone();
                let view = self.view_of(&r);
                self.core.reservations.insert(id, r.schedule);
                metrics::counter!("boxoffice_holds_total", "outcome" => "placed").increment(1);
                self.expire_at(id, r.expires_at, ctx);
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
                self.unconfirmed_hold(id);
            }
            // check_hold said yes a moment ago, on the same state and clock reading.
            Err(rule) => self
                .durability
                .commit_then(permit, Writes::default(), reply, Err(rule)),
        }
    }
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
    /// Answers a refused hold: at once when what refused it is durable, otherwise after this
    /// actor's writes in flight (a seat taken by a hold whose write then fails was free).
    fn refuse(
        &mut self,
        reply: Reply<ReservationView, BookingRule>,
        rule: BookingRule,
        on: Blocker,
    ) {
        let durable = match on {
            Blocker::None => true,
            Blocker::Hold(Some(holder)) => self
                .unconfirmed
                .get(&holder)
                .is_none_or(|seq| self.durability.is_durable(*seq)),
            Blocker::Hold(None) | Blocker::Unknown => false,
        };
        if durable {
            let _ = reply.send(Err(ActorError::Rejected(rule)));
            return;
        }
        self.durability.answer(reply, Err(rule));
    }

    /// Remembers the hold just submitted as unconfirmed, and forgets those committed since.
    fn unconfirmed_hold(&mut self, id: ReservationId) {
        let seq = self.durability.last_seq();
        self.unconfirmed.insert(id, seq);
        self.unconfirmed_order.push_back((seq, id));
        // One reading of the persister for the whole sweep (a stale actor forgets nothing:
        // its rebuild clears these).
        let Some(committed) = self.durability.durable_through() else {
            return;
        };
        while let Some(&(seq, id)) = self.unconfirmed_order.front() {
            if seq > committed {
                break;
            }
            self.unconfirmed_order.pop_front();
            self.unconfirmed.remove(&id);
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

    /// Answers the seat map as the database has it, at once: a seat taken by a hold whose
    /// write is still in flight shows as available (a failed commit could free it again).
    /// While seats freed by an expiry or cancellation are still being written, the map
    /// instead waits for those writes, as every read did before.
    fn handle(&mut self, msg: ListSeats, _: &mut Context<Self>) {
        super::received::<Self>();
        let Some((reply, _)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        let State::Ready(book) = &self.state else {
            unreachable!("book_or_unavailable found the book ready just above");
        };
        let committed = self.durability.durable_through();
        let Some(committed) = committed.filter(|seq| *seq >= self.last_release) else {
            // Freed seats not yet durable: show them only once they are.
            let seats = book
                .seats()
                .map(|(s, state)| seat_view(s, state, None))
                .collect();
            return self.durability.answer(reply, Ok(seats));
        };
        let unconfirmed = &self.unconfirmed;
        let in_flight =
            |id: &ReservationId| unconfirmed.get(id).is_some_and(|seq| *seq > committed);
        let seats = book
            .seats()
            .map(|(s, state)| seat_view(s, state, Some(&in_flight)))
            .collect();
        let _ = reply.send(Ok(seats));
    }
}

/// A seat as listed; with `in_flight`, a seat held by a hold still being written counts as
/// available (as the database has it).
fn seat_view(
    seat: &crate::domain::schedule::Seat,
    state: SeatState,
    in_flight: Option<&dyn Fn(&ReservationId) -> bool>,
) -> SeatView {
    let available = match state {
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
                self.last_release = self.durability.last_seq();
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
        let releases = !writes.is_empty();
        self.durability.commit_then(permit, writes, reply, answer);
        if releases {
            self.last_release = self.durability.last_seq();
        }
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
