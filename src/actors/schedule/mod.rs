//! `ScheduleActor`: the only writer of one schedule's seats. It serializes holds (all or
//! nothing, taken in bursts from the schedule's [`HoldIntake`]), hold expiry (a deadline heap
//! under one timer), cancellation, and the pin → post of a payment. One concern a file:
//!
//! - this file: the actor, its state, load and rebuild;
//! - `intake.rs`: how holds reach it in bursts (`HoldIntake`, `DrainHolds`);
//! - `hold.rs`: the hold decision and how its refusals are answered;
//! - `unconfirmed.rs`: which holds' writes may not be committed yet;
//! - `cancel.rs`: voiding a hold;
//! - `expiry.rs`: the deadline heap and its timer;
//! - `eviction.rs`: settled reservations leaving memory after their grace period;
//! - `payment.rs`: pin, unpin and post (with the tickets the payment issued);
//! - `door.rs`: check-ins and transfers of the schedule's tickets;
//! - `refund.rs`: a refund's pin of the tickets, then the seats freed;
//! - `reads.rs`: the seat map and a reservation, as the client sees them;
//! - `live.rs`: every seat's state in memory, for the operator's dashboard;
//! - `waitlist.rs`: the waiting list, and the offers freed seats make to it;
//! - `performance.rs`: cancelling the whole performance, and its refunds.

mod cancel;
mod door;
mod eviction;
mod expiry;
mod hold;
mod intake;
mod live;
mod payment;
mod performance;
mod reads;
mod refund;
mod unconfirmed;
mod waitlist;

pub use cancel::CancelReservation;
pub use door::{Admitted, CheckInScans, Scan, ScanOutcome, TransferTicket};
pub use hold::HoldSeats;
pub use intake::{DrainHolds, HoldIntake, Pushed};
pub use live::{SampleSeats, SeatSample};
pub use payment::{PinHold, PinnedHold, PostHold, UnpinHold};
pub use performance::{BeginRefund, CancelPerformance, FinishRefund, PerformanceCancelled};
pub use reads::{stored_view, ListSeats, ReadReservation, ReservationView, SeatMap, SeatView};
pub use refund::{PinRefund, PinnedRefund, PostRefund, RefundRefused, UnpinRefund};
pub use waitlist::{IsOffer, JoinWaitlist, LeaveWaitlist, ReadWaitlist, WaitlistView};

use super::durability::Durability;
use super::env::ActorEnv;
use super::loading::{self, Fetch, Loaded, Loads, Rebuild};
use super::mailbox::{Named, Reply};
use super::persister::ActorKey;
use crate::domain::ids::IdSet;
use crate::domain::schedule::{
    BookingRefusal, HoldPolicy, ReservationStatus, ScheduleBook, ScheduleInfo,
};
use crate::domain::waitlist::Waitlist;
use crate::domain::{ReservationId, Timestamp};
use crate::store::{StoreError, Writes};
use actix::prelude::*;
use eviction::Settled;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use unconfirmed::Unconfirmed;

/// A schedule as the catalog knows it, with its live count of free seats.
#[derive(Debug)]
pub struct ScheduleEntry {
    pub info: ScheduleInfo,
    /// Published by the schedule's actor after every change.
    pub available: AtomicUsize,
    /// Holds on their way to the schedule's actor.
    pub intake: HoldIntake,
    /// What the actor keeps in memory, published with `available`: its reservations (pending,
    /// and settled within their grace) and its deadline heap's entries.
    pub reservations_kept: AtomicUsize,
    pub deadlines_kept: AtomicUsize,
}

impl ScheduleEntry {
    pub fn new(info: ScheduleInfo) -> ScheduleEntry {
        ScheduleEntry {
            info,
            available: AtomicUsize::new(0),
            intake: HoldIntake::default(),
            reservations_kept: AtomicUsize::new(0),
            deadlines_kept: AtomicUsize::new(0),
        }
    }
}

pub struct ScheduleActor {
    entry: Arc<ScheduleEntry>,
    env: Arc<ActorEnv>,
    durability: Durability,
    state: Loaded<Box<ScheduleBook>>,
    /// Pending holds by expiry time, under one timer armed for the earliest (see `expiry`).
    /// Entries of holds settled since are skipped when they come due.
    deadlines: BinaryHeap<Reverse<(Timestamp, ReservationId)>>,
    /// The armed timer and the deadline it is for.
    timer: Option<(Timestamp, SpawnHandle)>,
    /// Settled reservations waiting out their grace before they leave memory.
    settled: Settled,
    /// Holds whose creating write may not be committed yet. A refusal because a seat is taken
    /// goes out at once unless the hold taking it is in here: it cannot be undone.
    unconfirmed: Unconfirmed,
    /// The sequence number of the latest submission that freed seats (expiry, cancellation).
    /// While it is not committed, the seat map waits: the database still has those seats held.
    last_release: u64,
    /// The buffer a burst of holds is taken into (kept to reuse its allocation).
    burst: Vec<HoldSeats>,
    /// Refusals of the burst being decided that must wait for writes in flight (a seat taken
    /// by a hold not yet committed). They are answered together after the burst, behind one
    /// submission, instead of one persister entry each.
    deferred: Vec<(Reply<ReservationView, BookingRefusal>, BookingRefusal)>,
    /// Paid reservations whose refund is in flight (`performance.rs`): claimed once each.
    refunding: IdSet<ReservationId>,
}

impl ScheduleActor {
    /// An actor for a book already in memory (boot, or a schedule just created).
    pub fn ready(
        entry: Arc<ScheduleEntry>,
        env: Arc<ActorEnv>,
        book: ScheduleBook,
    ) -> ScheduleActor {
        ScheduleActor::with_state(entry, env, Loaded::Ready(Box::new(book)))
    }

    /// An actor that loads its book from the store when it starts.
    pub fn lazy(entry: Arc<ScheduleEntry>, env: Arc<ActorEnv>) -> ScheduleActor {
        ScheduleActor::with_state(entry, env, Loaded::Loading)
    }

    fn with_state(
        entry: Arc<ScheduleEntry>,
        env: Arc<ActorEnv>,
        state: Loaded<Box<ScheduleBook>>,
    ) -> ScheduleActor {
        // Past any generation a failed commit left behind, and in cluster mode under the
        // epoch this node holds the schedule's shard at.
        let key = ActorKey::Schedule(entry.info.id);
        let durability = Durability::new(
            key,
            env.persister.min_generation(key),
            env.persister.clone(),
        );
        ScheduleActor {
            entry,
            env,
            durability,
            state,
            deadlines: BinaryHeap::new(),
            timer: None,
            settled: Settled::default(),
            unconfirmed: Unconfirmed::default(),
            last_release: 0,
            burst: Vec::new(),
            deferred: Vec::new(),
            refunding: IdSet::default(),
        }
    }

    fn policy(&self) -> HoldPolicy {
        HoldPolicy {
            hold_ttl: self.env.settings.hold_ttl,
            max_seats_per_user: self.env.settings.max_seats_per_user,
        }
    }

    /// After a (re)load: let settled reservations past their grace go, index the rest, expire
    /// what came due, arm the timers.
    fn after_load(&mut self, ctx: &mut Context<Self>) {
        // Deadlines and unconfirmed writes of the state thrown away mean nothing now.
        self.deadlines.clear();
        self.unconfirmed.clear();
        self.last_release = 0;
        self.settle_loaded(ctx);
        let now = self.env.clock.now();
        let Loaded::Ready(book) = &mut self.state else {
            return;
        };
        // Before any expiry: holds pinned for another node's payment stay pinned, and tickets
        // pinned for another node's refund credit stay out of the door's reach.
        for (id, pin) in self.env.remote_pins.of_schedule(self.entry.info.id) {
            if pin.refund.is_some() {
                // `None`: the refund committed before this load (its tickets are VOID).
                let _ = book.tickets.pin_refund(id, pin.user);
            } else {
                book.repin(id);
            }
        }
        let mut pending = Vec::new();
        for r in book.reservations() {
            self.env.reservations.insert(r.id, r.schedule);
            if r.status == ReservationStatus::Pending {
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
                    self.durability.submit_unanswered(permit, writes);
                    self.last_release = self.durability.last_seq();
                    for id in &due {
                        self.settled(*id, self.last_release, ctx);
                    }
                }
                // Retried by the timers below, which fire at once for these.
                Err(u) => tracing::warn!(error = %u, "could not release expired holds yet"),
            }
        }
        self.deadlines
            .extend(pending.into_iter().map(|(id, at)| Reverse((at, id))));
        self.arm(ctx);
        // Seats freed while down, offers settled while down: the list's turn.
        self.offer_now(ctx);
        self.publish();
    }

    /// Publishes the free-seat count the catalog shows, and what the actor keeps in memory.
    fn publish(&self) {
        if let Some(book) = self.state.ready() {
            self.entry
                .available
                .store(book.on_sale_count(), Ordering::Relaxed);
            let now = (book.reservation_count(), self.deadlines.len());
            let was = (
                self.entry.reservations_kept.swap(now.0, Ordering::Relaxed),
                self.entry.deadlines_kept.swap(now.1, Ordering::Relaxed),
            );
            self.env.reservations.kept().moved(was, now);
        }
    }
}

impl Named for ScheduleActor {
    const KIND: &'static str = "schedule";
}

impl Loads for ScheduleActor {
    type State = Box<ScheduleBook>;
    type Fetched = ScheduleBook;

    fn state_mut(&mut self) -> &mut Loaded<Box<ScheduleBook>> {
        &mut self.state
    }

    fn durability_mut(&mut self) -> &mut Durability {
        &mut self.durability
    }

    fn fetch(&self) -> Fetch<ScheduleBook> {
        let info = self.entry.info.clone();
        Box::pin(
            self.env
                .store
                .run(move |store| async move { restore_book(info, &store).await }),
        )
    }

    fn install(&mut self, book: ScheduleBook, ctx: &mut Context<Self>) {
        self.state = Loaded::Ready(Box::new(book));
        self.after_load(ctx);
    }
}

/// Reads a schedule's seats and live reservations and rebuilds its book from them.
pub async fn restore_book(
    info: ScheduleInfo,
    store: &crate::store::Store,
) -> Result<ScheduleBook, StoreError> {
    let id = info.id;
    let snapshot = store.load_schedule(id).await?;
    let waitlist = store.load_waitlist(id).await?;
    let buyers: std::collections::HashMap<_, _> = snapshot
        .reservations
        .iter()
        .filter(|r| r.status == ReservationStatus::Paid)
        .map(|r| (r.id, r.user))
        .collect();
    let mut book =
        ScheduleBook::restore(info, snapshot.seats, snapshot.plan, snapshot.reservations).map_err(
            |seat| StoreError::Corrupt(format!("seat {seat} of schedule {id} has two live holds")),
        )?;
    book.waitlist = Waitlist::restore(waitlist.entries);
    book.cancelled = waitlist.cancelled;
    // The per-user limit counts a transferred seat as its holder's, not its buyer's.
    for t in &snapshot.tickets {
        if let Some(&buyer) = buyers.get(&t.reservation) {
            if buyer != t.holder {
                book.move_seat_count(buyer, t.holder, u32::MAX);
            }
        }
    }
    book.tickets = crate::domain::ticket::TicketBook::restore(snapshot.tickets);
    Ok(book)
}

impl Actor for ScheduleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.env.settings.mailbox_capacity);
        match self.state {
            Loaded::Ready(_) => self.after_load(ctx),
            _ => loading::load(self, ctx),
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Holds nobody will decide now: dropping their replies answers them "unavailable".
        self.entry.intake.abandon();
    }
}

impl Handler<Rebuild> for ScheduleActor {
    type Result = ();

    /// Throws the in-memory book away and reloads it under the new generation.
    fn handle(&mut self, msg: Rebuild, ctx: &mut Context<Self>) {
        loading::rebuild(self, msg, ctx);
    }
}
