//! `ScheduleActor`: the only writer of one schedule's seats. Serializes holds (all or
//! nothing, taken in bursts from the schedule's [`HoldIntake`]), hold expiry (a deadline heap
//! under one timer, due exactly at the hold time), cancellation, and the pin → post of a
//! payment.

use super::engine::{Core, ScheduleEntry};
use super::persister::ActorKey;
use super::{ActorError, Durability, Reply, Unavailable};
use crate::domain::ids::IdHashMap;
use crate::domain::schedule::{BookingRefusal, HoldPolicy, Reservation, ScheduleBook, SeatState};
use crate::domain::{Money, ReservationId, SeatId, Timestamp, UserId};
use crate::store::{StoreError, Writes};
use actix::prelude::*;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Room for holds that a drained burst buffer keeps (see `DrainHolds`).
const BURST_KEPT: usize = 256;

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
    /// The buffer a burst of holds is taken into (kept to reuse its allocation).
    burst: Vec<HoldSeats>,
    /// Refusals of the burst being decided that must wait for writes in flight (a seat taken
    /// by a hold not yet committed). They are answered together after the burst, behind one
    /// submission, instead of one persister entry each.
    deferred: Vec<(Reply<ReservationView, BookingRefusal>, BookingRefusal)>,
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
            burst: Vec::new(),
            deferred: Vec::new(),
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

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Holds nobody will decide now: dropping their replies answers them "unavailable".
        self.entry.intake.abandon();
    }
}

/// Holds on their way to the schedule's actor. A burst of holds reaches the actor as one
/// [`DrainHolds`] message instead of one mailbox entry each: the sender appends under a short
/// lock, and only the first hold after a drain sends the message. (Per hold, actix's envelope,
/// mailbox node, `Addr` clone and wake-up were most of the cost of a decision.) Order is kept:
/// the actor decides a burst in the order it arrived. Bounded like a mailbox.
#[derive(Default)]
pub struct HoldIntake {
    queue: Mutex<IntakeQueue>,
}

#[derive(Default)]
struct IntakeQueue {
    holds: Vec<HoldSeats>,
    /// A `DrainHolds` is on its way to the actor: the holds appended meanwhile go with it.
    drain_sent: bool,
}

/// What [`HoldIntake::push`] did with a hold.
pub enum Pushed {
    /// Queued behind holds a `DrainHolds` already on its way will take.
    Queued,
    /// Queued first: the caller must send the actor a `DrainHolds`.
    SendDrain,
    /// The intake is full; the hold is handed back.
    Full(HoldSeats),
}

impl std::fmt::Debug for HoldIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldIntake")
            .field("waiting", &self.lock().holds.len())
            .finish()
    }
}

impl HoldIntake {
    fn lock(&self) -> MutexGuard<'_, IntakeQueue> {
        // Nothing panics while holding this lock (a push or a swap of two vectors); should it
        // be poisoned anyway, the queue is still a valid vector.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `hold` unless `capacity` holds are already waiting.
    pub fn push(&self, hold: HoldSeats, capacity: usize) -> Pushed {
        let mut queue = self.lock();
        if queue.holds.len() >= capacity {
            return Pushed::Full(hold);
        }
        queue.holds.push(hold);
        if queue.drain_sent {
            Pushed::Queued
        } else {
            queue.drain_sent = true;
            Pushed::SendDrain
        }
    }

    /// The actor takes every waiting hold into `into` (empty); the next push sends a drain.
    fn take(&self, into: &mut Vec<HoldSeats>) {
        let mut queue = self.lock();
        std::mem::swap(&mut queue.holds, into);
        queue.drain_sent = false;
    }

    /// Drops every waiting hold (their callers hear "unavailable"): the actor cannot be told.
    pub fn abandon(&self) {
        // Dropped after the lock is released: each drop wakes a waiting caller.
        let dropped = {
            let mut queue = self.lock();
            queue.drain_sent = false;
            std::mem::take(&mut queue.holds)
        };
        drop(dropped);
    }
}

/// Decide every hold waiting in the schedule's intake, in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainHolds;

impl Handler<DrainHolds> for ScheduleActor {
    type Result = ();

    fn handle(&mut self, _: DrainHolds, ctx: &mut Context<Self>) {
        super::received::<Self>();
        let mut burst = std::mem::take(&mut self.burst);
        self.entry.intake.take(&mut burst);
        // One clock reading for the burst: its holds are decided together, within
        // microseconds of each other.
        let now = self.core.clock.now();
        for hold in burst.drain(..) {
            self.hold(hold, now, ctx);
        }
        // The two vectors trade places on every drain: after a rush, keep a modest buffer
        // rather than the rush's size for as long as the schedule lives.
        burst.shrink_to(BURST_KEPT);
        self.burst = burst;
        self.answer_deferred();
    }
}

/// Hold seats for a user, all or nothing (sent through the schedule's [`HoldIntake`]).
pub struct HoldSeats {
    pub user: UserId,
    pub seats: Vec<SeatId>,
    /// Boxed: most holds carry none, and the intake moves every hold twice.
    pub idempotency: Option<Box<super::idempotency::IdempotentWrite<ReservationView>>>,
    pub reply: Reply<ReservationView, BookingRefusal>,
}

impl ScheduleActor {
    /// Holds the seats, writes the reservation, answers after the commit. A refusal that no
    /// failed commit could make wrong goes out at once.
    fn hold(&mut self, msg: HoldSeats, now: Timestamp, ctx: &mut Context<Self>) {
        let policy = self.policy();
        let Some((reply, book)) = self.book_or_unavailable(msg.reply) else {
            return;
        };
        if let Err(rule) = book.check_hold(msg.user, &msg.seats, now, policy) {
            let blocker = match rule {
                BookingRefusal::SeatUnavailable { seat } => Blocker::Hold(book.holder(seat)),
                // The user's own holds count, committed or not.
                BookingRefusal::SeatLimitExceeded { limit }
                    if msg.seats.len() <= limit as usize =>
                {
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
                    msg.idempotency.map(|b| *b),
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
        reply: Reply<ReservationView, BookingRefusal>,
        rule: BookingRefusal,
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
        if durable || self.durability.settled() {
            let _ = reply.send(Err(ActorError::Rejected(rule)));
            return;
        }
        self.deferred.push((reply, rule));
    }

    /// Answers the burst's deferred refusals once every write submitted so far is durable:
    /// one persister submission for all of them, after the burst's last write.
    fn answer_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.deferred);
        match self.durability.reserve() {
            Ok(permit) => self
                .durability
                .submit(permit, Writes::default(), move |outcome| {
                    for (reply, rule) in waiting {
                        let _ = reply.send(match outcome {
                            Ok(()) => Err(ActorError::Rejected(rule)),
                            Err(u) => Err(ActorError::Unavailable(u)),
                        });
                    }
                }),
            Err(u) => {
                for (reply, _) in waiting {
                    let _ = reply.send(Err(ActorError::Unavailable(u)));
                }
            }
        }
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
    pub reply: Reply<Vec<SeatView>, BookingRefusal>,
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
    pub reply: Reply<ReservationView, BookingRefusal>,
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
    pub reply: Reply<ReservationView, BookingRefusal>,
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
    pub reply: Reply<PinnedHold, BookingRefusal>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    type Answer = oneshot::Receiver<Result<ReservationView, ActorError<BookingRefusal>>>;

    fn hold(user: i64) -> (HoldSeats, Answer) {
        let (reply, answer) = oneshot::channel();
        let hold = HoldSeats {
            user: UserId::new(user).expect("a positive id"),
            seats: vec![SeatId::new(user).expect("a positive id")],
            idempotency: None,
            reply,
        };
        (hold, answer)
    }

    #[test]
    fn only_the_first_hold_after_a_drain_sends_one() {
        let intake = HoldIntake::default();
        assert!(matches!(intake.push(hold(1).0, 8), Pushed::SendDrain));
        assert!(matches!(intake.push(hold(2).0, 8), Pushed::Queued));
        let mut burst = Vec::new();
        intake.take(&mut burst);
        let users: Vec<i64> = burst.iter().map(|h| h.user.get()).collect();
        assert_eq!(users, [1, 2], "a burst keeps arrival order");
        assert!(matches!(intake.push(hold(3).0, 8), Pushed::SendDrain));
    }

    #[test]
    fn a_full_intake_hands_the_hold_back() {
        let intake = HoldIntake::default();
        for user in 1..=3 {
            assert!(!matches!(intake.push(hold(user).0, 3), Pushed::Full(_)));
        }
        match intake.push(hold(4).0, 3) {
            Pushed::Full(back) => assert_eq!(back.user.get(), 4),
            _ => panic!("a fourth hold fits in an intake of three"),
        }
        let mut burst = Vec::new();
        intake.take(&mut burst);
        assert_eq!(burst.len(), 3, "nothing past the bound was kept");
    }

    #[test]
    fn abandoned_holds_are_answered_not_stranded() {
        let intake = HoldIntake::default();
        let (first, mut answer) = hold(1);
        intake.push(first, 8);
        intake.abandon();
        assert!(
            matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "the caller learns at once that nobody will decide"
        );
        assert!(
            matches!(intake.push(hold(2).0, 8), Pushed::SendDrain),
            "the next hold sends a new drain"
        );
    }
}
