//! The engine: the registry of live actors and the one entry point the HTTP layer calls.
//! Each operation checks what the catalog already knows, sends one message to the one actor
//! that owns the state, and waits for the (durable) answer. Payment is the one operation that
//! crosses actors; its saga runs detached, so a client hanging up cannot strand a pinned hold.

use super::error::{AdminError, BookingError, PaymentError, QueueError, WalletError};
use super::idempotency::{Idempotency, IdempotentWrite, RETENTION};
use super::persister::{ActorKey, Persister};
use super::queue::{ConsumeToken, JoinQueue, QueueActor, QueueView, RebuildQueue};
use super::schedule::{
    CancelReservation, DrainHolds, HoldIntake, HoldSeats, ListSeats, PinHold, PostHold, Pushed,
    ReadReservation, RebuildSchedule, ReservationView, ScheduleActor, SeatView, UnpinHold,
};
use super::wallet::{
    DebitForPayment, PaymentReceipt, ReadBalance, RebuildWallet, Recharge, WalletActor,
};
use super::{ask, ActorError, Unavailable};
use crate::clock::Clock;
use crate::domain::ids::BuildIdHasher;
use crate::domain::queue::{TokenRecord, TokenRefusal, TokenStatus};
use crate::domain::schedule::{BookingRefusal, HoldRequest, ScheduleBook, ScheduleInfo};
use crate::domain::{
    ConcertId, Money, PaymentId, ReservationId, ScheduleId, Timestamp, TokenId, UserId,
};
use crate::store::{CreatedConcert, LedgerEntry, NewConcert, StoreError, StoreHandle};
use actix::prelude::*;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The rules of a drop, from configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub hold_ttl: Duration,
    pub active_ttl: Duration,
    pub idle_timeout: Duration,
    pub max_active: usize,
    /// 0: no rate cap.
    pub admit_per_sec: u32,
    pub max_seats_per_user: u32,
    pub max_recharge: Money,
    /// Submissions the persister holds before it refuses more.
    pub persister_capacity: usize,
    /// Messages a schedule or wallet actor's mailbox holds before senders are refused; also
    /// the holds a schedule's intake holds.
    pub mailbox_capacity: usize,
    /// Threads the actors run on.
    pub actor_threads: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            hold_ttl: Duration::from_secs(300),
            active_ttl: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(120),
            max_active: 1000,
            admit_per_sec: 0,
            max_seats_per_user: 4,
            max_recharge: Money::new(10_000_000).expect("a positive constant"),
            persister_capacity: 65_536,
            mailbox_capacity: super::MAILBOX_CAPACITY,
            actor_threads: 2,
        }
    }
}

/// A schedule as the catalog knows it, with its live count of free seats.
#[derive(Debug)]
pub struct ScheduleEntry {
    pub info: ScheduleInfo,
    /// Published by the schedule's actor after every change.
    pub available: AtomicUsize,
    /// Holds on their way to the schedule's actor.
    pub intake: HoldIntake,
}

#[derive(Debug)]
struct ConcertEntry {
    schedules: Vec<Arc<ScheduleEntry>>,
}

type HoldReceiver =
    tokio::sync::oneshot::Receiver<Result<ReservationView, ActorError<BookingRefusal>>>;

struct WalletSlot {
    instance: u64,
    addr: Addr<WalletActor>,
}

/// A concurrent map keyed by a server-chosen id, hashed with one multiply (see
/// [`crate::domain::ids::IdHasher`]): every request looks up a few of these.
pub type IdDashMap<K, V> = DashMap<K, V, BuildIdHasher>;

/// What every actor shares: settings, clock, persister, store, id allocators.
pub struct Core {
    pub settings: EngineSettings,
    pub clock: Arc<dyn Clock>,
    pub persister: Persister,
    pub store: StoreHandle,
    /// Which schedule each known reservation belongs to.
    pub reservations: IdDashMap<ReservationId, ScheduleId>,
    next_reservation: AtomicI64,
    next_payment: AtomicI64,
    next_ledger: AtomicI64,
    wallets: IdDashMap<UserId, WalletSlot>,
}

impl Core {
    pub fn next_reservation_id(&self) -> ReservationId {
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        ReservationId::new(id).expect("allocated above the stored maximum, which is ≥ 0")
    }

    pub fn next_payment_id(&self) -> PaymentId {
        let id = self.next_payment.fetch_add(1, Ordering::Relaxed);
        PaymentId::new(id).expect("allocated above the stored maximum, which is ≥ 0")
    }

    pub fn next_ledger_id(&self) -> i64 {
        self.next_ledger.fetch_add(1, Ordering::Relaxed)
    }

    /// The generation a new wallet actor of `user` starts at (past any failed commit).
    pub fn wallet_generation(&self, user: UserId) -> u64 {
        self.persister.min_generation(ActorKey::Wallet(user))
    }

    /// A stopped wallet actor leaves the registry (only if no successor took its place).
    pub fn forget_wallet(&self, user: UserId, instance: u64, _generation: u64) {
        self.wallets
            .remove_if(&user, |_, slot| slot.instance == instance);
    }
}

struct Inner {
    core: Arc<Core>,
    users: IdDashMap<UserId, ()>,
    concerts: IdDashMap<ConcertId, ConcertEntry>,
    schedule_entries: IdDashMap<ScheduleId, Arc<ScheduleEntry>>,
    schedules: IdDashMap<ScheduleId, Addr<ScheduleActor>>,
    queue: Addr<QueueActor>,
    queue_view: Arc<QueueView>,
    arbiters: Vec<Arbiter>,
    idempotency: Arc<Idempotency>,
    next_instance: AtomicU64,
    ready: AtomicBool,
}

/// The handle the HTTP layer holds; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Rebuilds every actor from the store, releases holds that expired while the service was
    /// down, and waits until those releases are durable. Must run inside an actix system.
    pub async fn start(
        settings: EngineSettings,
        clock: Arc<dyn Clock>,
        store: StoreHandle,
        persister: Persister,
    ) -> Result<Engine, StoreError> {
        let catalog = store.run(|s| async move { s.load_catalog().await }).await?;
        let max = store.run(|s| async move { s.max_ids().await }).await?;
        let now = clock.now();
        let line = super::queue::load_line(&store, QueueActor::policy(&settings), now).await?;
        let keep_since = Timestamp::from_millis(now.millis() - 2 * RETENTION.as_millis() as i64);
        let keys = store
            .run(move |s| async move { s.load_idempotency(keep_since).await })
            .await?;
        let idempotency = Arc::new(Idempotency::restore(keys));
        let core = Arc::new(Core {
            settings: settings.clone(),
            clock,
            persister: persister.clone(),
            store: store.clone(),
            reservations: IdDashMap::default(),
            next_reservation: AtomicI64::new(max.reservation + 1),
            next_payment: AtomicI64::new(max.payment + 1),
            next_ledger: AtomicI64::new(max.ledger + 1),
            wallets: IdDashMap::default(),
        });
        let arbiters: Vec<Arbiter> = (0..settings.actor_threads.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let queue_view = Arc::new(QueueView::new(line));
        let queue = {
            let (view, core) = (queue_view.clone(), core.clone());
            QueueActor::start_in_arbiter(&arbiters[0].handle(), move |_| {
                QueueActor::new(view, core)
            })
        };
        let inner = Arc::new(Inner {
            core: core.clone(),
            users: catalog.users.iter().map(|u| (*u, ())).collect(),
            concerts: IdDashMap::default(),
            schedule_entries: IdDashMap::default(),
            schedules: IdDashMap::default(),
            queue,
            queue_view,
            arbiters,
            idempotency: idempotency.clone(),
            next_instance: AtomicU64::new(1),
            ready: AtomicBool::new(false),
        });
        let engine = Engine { inner };
        for (id, _name) in &catalog.concerts {
            engine.inner.concerts.insert(
                *id,
                ConcertEntry {
                    schedules: Vec::new(),
                },
            );
        }
        for info in catalog.schedules {
            let upcoming = info.concert_at > now;
            let entry = engine.register_schedule(info);
            if upcoming {
                let id = entry.info.id;
                let snapshot = store
                    .run(move |s| async move { s.load_schedule(id).await })
                    .await?;
                let book = ScheduleBook::restore(
                    entry.info.clone(),
                    snapshot.seats,
                    snapshot.reservations,
                )
                .map_err(|seat| {
                    StoreError::Corrupt(format!("seat {seat} of schedule {id} has two live holds"))
                })?;
                engine.start_schedule(entry, Some(book));
            }
        }
        // Answers are replayable for RETENTION at least; forget them after twice that.
        let forgetting = (idempotency, engine.inner.core.clock.clone());
        engine.inner.arbiters[0].spawn(async move {
            let (keys, clock) = forgetting;
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                keys.forget_before(Timestamp::from_millis(
                    clock.now().millis() - 2 * RETENTION.as_millis() as i64,
                ));
            }
        });
        let weak = Arc::downgrade(&engine.inner);
        persister.on_rebuild(Box::new(move |keys| rebuild(&weak, keys)));
        // Releases of holds that expired while down were submitted as the actors started.
        // Wait for them, so the port opens on a state the database agrees with.
        tokio::time::sleep(Duration::from_millis(20)).await;
        persister
            .flush()
            .await
            .map_err(|u| StoreError::Corrupt(format!("recovery writes failed: {u}")))?;
        engine.inner.ready.store(true, Ordering::Release);
        Ok(engine)
    }

    fn register_schedule(&self, info: ScheduleInfo) -> Arc<ScheduleEntry> {
        let entry = Arc::new(ScheduleEntry {
            info,
            available: AtomicUsize::new(0),
            intake: HoldIntake::default(),
        });
        self.inner
            .schedule_entries
            .insert(entry.info.id, entry.clone());
        let mut concert = self
            .inner
            .concerts
            .entry(entry.info.concert_id)
            .or_insert_with(|| ConcertEntry {
                schedules: Vec::new(),
            });
        concert.schedules.push(entry.clone());
        concert
            .schedules
            .sort_by_key(|s| (s.info.concert_at, s.info.id));
        entry
    }

    fn arbiter(&self, key: i64) -> ArbiterHandle {
        let arbiters = &self.inner.arbiters;
        arbiters[(key.unsigned_abs() % arbiters.len() as u64) as usize].handle()
    }

    fn start_schedule(
        &self,
        entry: Arc<ScheduleEntry>,
        book: Option<ScheduleBook>,
    ) -> Addr<ScheduleActor> {
        let id = entry.info.id;
        let core = self.inner.core.clone();
        let addr = ScheduleActor::start_in_arbiter(&self.arbiter(id.get()), move |_| match book {
            Some(book) => ScheduleActor::ready(entry, core, book),
            None => ScheduleActor::lazy(entry, core),
        });
        self.inner.schedules.insert(id, addr.clone());
        addr
    }

    /// The actor of a schedule, started (and loaded) on first use.
    fn schedule(&self, id: ScheduleId) -> Result<Addr<ScheduleActor>, BookingError> {
        if let Some(addr) = self.inner.schedules.get(&id) {
            return Ok(addr.clone());
        }
        let entry = self
            .inner
            .schedule_entries
            .get(&id)
            .map(|e| e.clone())
            .ok_or(BookingError::ScheduleNotFound)?;
        let inner = &self.inner;
        let addr = inner.schedules.entry(id).or_insert_with(|| {
            let core = inner.core.clone();
            ScheduleActor::start_in_arbiter(&self.arbiter(id.get()), move |_| {
                ScheduleActor::lazy(entry, core)
            })
        });
        Ok(addr.clone())
    }

    /// The wallet actor of a user, started on first use.
    fn wallet(&self, user: UserId) -> Addr<WalletActor> {
        let core = &self.inner.core;
        match core.wallets.entry(user) {
            dashmap::Entry::Occupied(slot) if slot.get().addr.connected() => {
                slot.get().addr.clone()
            }
            entry => {
                let instance = self.inner.next_instance.fetch_add(1, Ordering::Relaxed);
                let actor_core = core.clone();
                let addr = WalletActor::start_in_arbiter(&self.arbiter(user.get()), move |_| {
                    WalletActor::new(user, instance, actor_core)
                });
                entry.insert(WalletSlot {
                    instance,
                    addr: addr.clone(),
                });
                addr
            }
        }
    }

    pub fn now(&self) -> Timestamp {
        self.inner.core.clock.now()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.core.settings
    }

    pub fn persister(&self) -> &Persister {
        &self.inner.core.persister
    }

    /// Recovery finished and the last commit succeeded.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && self.inner.core.persister.is_healthy()
    }

    /// Whether the database answers now.
    pub async fn ping_store(&self) -> bool {
        let ping = self.inner.core.store.run(|s| async move { s.ping().await });
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(()))
        )
    }

    /// No users and no concerts: a fresh store.
    pub fn is_empty(&self) -> bool {
        self.inner.users.is_empty() && self.inner.concerts.is_empty()
    }

    /// The process's idempotency keys.
    pub fn idempotency(&self) -> &Arc<Idempotency> {
        &self.inner.idempotency
    }

    pub fn user_exists(&self, user: UserId) -> bool {
        self.inner.users.contains_key(&user)
    }

    /// (waiting, active) tokens.
    pub fn queue_counts(&self) -> (usize, usize) {
        self.inner.queue_view.counts()
    }

    // --- waiting room -----------------------------------------------------------------

    /// Joins the line; `true` when the token is new.
    pub async fn join_queue(&self, user: UserId) -> Result<(TokenRecord, bool), QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        ask(&self.inner.queue, |reply| JoinQueue { user, reply })
            .await
            .map_err(|e| match e {
                ActorError::Rejected(rule) => QueueError::Token(rule),
                ActorError::Unavailable(u) => QueueError::Unavailable(u),
            })
    }

    pub fn token_of(&self, user: UserId) -> Result<TokenRecord, QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        self.inner
            .queue_view
            .token_of(user)
            .ok_or(QueueError::TokenNotFound)
    }

    /// A status poll, answered from the published line (never the actor's mailbox).
    pub fn poll(&self, user: UserId, token: Option<TokenId>) -> Result<TokenStatus, QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        let token = token.ok_or(QueueError::Token(TokenRefusal::Invalid))?;
        Ok(self.inner.queue_view.poll(user, token, self.now())?)
    }

    /// Checks that `token` is ACTIVE, and `user`'s when a user is named.
    pub fn authorize(
        &self,
        token: Option<TokenId>,
        user: Option<UserId>,
    ) -> Result<TokenRecord, TokenRefusal> {
        let token = token.ok_or(TokenRefusal::Invalid)?;
        self.inner.queue_view.authorize(token, user, self.now())
    }

    // --- concerts and seats -----------------------------------------------------------

    /// Schedules of a concert still to come, by date, with their free seats.
    pub fn upcoming_schedules(
        &self,
        concert: ConcertId,
    ) -> Result<Vec<(ScheduleInfo, usize)>, BookingError> {
        let now = self.now();
        let entry = self
            .inner
            .concerts
            .get(&concert)
            .ok_or(BookingError::ConcertNotFound)?;
        Ok(entry
            .schedules
            .iter()
            .filter(|s| s.info.concert_at > now)
            .map(|s| (s.info.clone(), s.available.load(Ordering::Relaxed)))
            .collect())
    }

    /// [`Engine::schedule_of_concert`] without copying the schedule's details.
    fn schedule_of_concert(
        &self,
        concert: ConcertId,
        schedule: ScheduleId,
    ) -> Result<ScheduleInfo, BookingError> {
        if !self.inner.concerts.contains_key(&concert) {
            return Err(BookingError::ConcertNotFound);
        }
        match self.inner.schedule_entries.get(&schedule) {
            Some(entry) if entry.info.concert_id == concert => Ok(entry.info.clone()),
            _ => Err(BookingError::ScheduleNotFound),
        }
    }

    pub async fn seats(
        &self,
        concert: ConcertId,
        schedule: ScheduleId,
    ) -> Result<(ScheduleInfo, Vec<SeatView>), BookingError> {
        let info = self.schedule_of_concert(concert, schedule)?;
        let addr = self.schedule(schedule)?;
        let seats = ask(&addr, |reply| ListSeats { reply }).await?;
        Ok((info, seats))
    }

    // --- reservations -----------------------------------------------------------------

    /// Holds `seats` for `user`, all or nothing; the answer comes after the commit. The
    /// checks and the hand-off to the schedule's intake happen before the returned future is
    /// first polled (it only waits for the reply, so it stays small).
    pub fn hold(
        &self,
        request: HoldRequest,
        idempotency: Option<IdempotentWrite<ReservationView>>,
    ) -> impl std::future::Future<Output = Result<ReservationView, BookingError>> + Send + 'static
    {
        let submitted = self.submit_hold(request, idempotency);
        async move {
            // A dropped reply means the actor stopped before deciding: nothing was submitted.
            Ok(submitted?
                .await
                .unwrap_or(Err(ActorError::Unavailable(Unavailable::Busy)))?)
        }
    }

    fn submit_hold(
        &self,
        request: HoldRequest,
        idempotency: Option<IdempotentWrite<ReservationView>>,
    ) -> Result<HoldReceiver, BookingError> {
        let HoldRequest {
            user,
            concert,
            schedule,
            seats,
        } = request;
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        let Some(entry) = self.inner.schedule_entries.get(&schedule) else {
            return Err(self.missing_schedule(concert));
        };
        if entry.info.concert_id != concert {
            return Err(self.missing_schedule(concert));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let hold = HoldSeats {
            user,
            seats,
            idempotency: idempotency.map(Box::new),
            reply,
        };
        let pushed = entry
            .intake
            .push(hold, self.inner.core.settings.mailbox_capacity);
        // The map's guard goes before the actor is looked up (in the same map).
        drop(entry);
        match pushed {
            Pushed::Queued => {}
            Pushed::SendDrain => self.send_drain(schedule)?,
            Pushed::Full(_) => return Err(Unavailable::Busy.into()),
        }
        Ok(answer)
    }

    /// Tells the schedule's actor to take its intake. At most one drain per schedule is in
    /// flight (the intake's flag), so one that finds the mailbox full may go past its bound.
    fn send_drain(&self, id: ScheduleId) -> Result<(), BookingError> {
        let abandon = || {
            if let Some(entry) = self.inner.schedule_entries.get(&id) {
                entry.intake.abandon();
            }
        };
        let addr = match self.schedule(id) {
            Ok(addr) => addr,
            Err(e) => {
                abandon();
                return Err(e);
            }
        };
        match addr.try_send(DrainHolds) {
            Ok(()) => {}
            Err(SendError::Full(drain)) => addr.do_send(drain),
            Err(SendError::Closed(_)) => {
                // The actor is gone: nobody will take these holds.
                abandon();
                return Err(Unavailable::Busy.into());
            }
        }
        metrics::gauge!("boxoffice_mailbox_depth", "actor" => "schedule").increment(1.0);
        Ok(())
    }

    /// The error for a schedule that is not one of `concert`'s.
    fn missing_schedule(&self, concert: ConcertId) -> BookingError {
        if self.inner.concerts.contains_key(&concert) {
            BookingError::ScheduleNotFound
        } else {
            BookingError::ConcertNotFound
        }
    }

    /// Which schedule a reservation is on: from memory, or the store for old ones.
    async fn locate(&self, id: ReservationId) -> Result<ScheduleId, BookingError> {
        if let Some(schedule) = self.inner.core.reservations.get(&id) {
            return Ok(*schedule);
        }
        let found = self
            .inner
            .core
            .store
            .run(move |s| async move { s.schedule_of(id).await })
            .await;
        match found {
            Ok(Some(schedule)) => Ok(schedule),
            Ok(None) => Err(BookingRefusal::ReservationNotFound.into()),
            Err(error) => {
                tracing::warn!(error = %error, "reservation lookup failed");
                Err(Unavailable::CommitFailed.into())
            }
        }
    }

    pub async fn reservation(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<ReservationView, BookingError> {
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        let addr = self.schedule(self.locate(id).await?)?;
        Ok(ask(&addr, |reply| ReadReservation { id, user, reply }).await?)
    }

    pub async fn cancel(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<ReservationView, BookingError> {
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        let addr = self.schedule(self.locate(id).await?)?;
        Ok(ask(&addr, |reply| CancelReservation { id, user, reply }).await?)
    }

    // --- payments ---------------------------------------------------------------------

    /// Pays a reservation with the user's wallet; `token` is consumed in the same transaction.
    pub async fn pay(
        &self,
        user: UserId,
        id: ReservationId,
        token: TokenId,
        idempotency: Option<IdempotentWrite<PaymentReceipt>>,
    ) -> Result<PaymentReceipt, PaymentError> {
        if !self.user_exists(user) {
            return Err(PaymentError::UserNotFound);
        }
        let schedule = self.locate(id).await?;
        let engine = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Detached: once pinned, the saga must reach post or unpin whatever the client does.
        actix_rt::spawn(async move {
            let _ = tx.send(engine.settle(user, id, schedule, token, idempotency).await);
        });
        rx.await
            .unwrap_or(Err(PaymentError::Unavailable(Unavailable::Busy)))
    }

    async fn settle(
        &self,
        user: UserId,
        id: ReservationId,
        schedule: ScheduleId,
        token: TokenId,
        idempotency: Option<IdempotentWrite<PaymentReceipt>>,
    ) -> Result<PaymentReceipt, PaymentError> {
        let addr = self.schedule(schedule)?;
        let pinned = ask(&addr, |reply| PinHold { id, user, reply })
            .await
            .map_err(BookingError::from)?;
        let now = self.now();
        let core = &self.inner.core;
        let paid = ScheduleBook::as_paid(&pinned.reservation, now);
        let depends_on = vec![
            (ActorKey::Schedule(schedule), pinned.generation),
            (ActorKey::Queue, self.inner.queue_view.generation()),
        ];
        let on_commit: Box<dyn FnOnce() + Send> = {
            let (schedule, queue) = (addr.clone(), self.inner.queue.clone());
            Box::new(move || {
                schedule.do_send(PostHold { id });
                queue.do_send(ConsumeToken { token });
            })
        };
        let token = self.inner.queue_view.consumed_record(token, now);
        let payment = core.next_payment_id();
        let wallet = self.wallet(user);
        let outcome = ask(&wallet, |reply| DebitForPayment {
            paid,
            token,
            payment,
            depends_on,
            on_commit,
            idempotency,
            reply,
        })
        .await;
        if outcome.is_err() {
            // Not debited: give the hold back to its timer.
            addr.do_send(UnpinHold { id });
        }
        outcome.map_err(|e| PaymentError::from(WalletError::from(e)))
    }

    /// The checkout screen: the reservation and the balance, read together. Changes nothing.
    pub async fn checkout(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<(ReservationView, Money), PaymentError> {
        if !self.user_exists(user) {
            return Err(PaymentError::UserNotFound);
        }
        let addr = self.schedule(self.locate(id).await?)?;
        let wallet = self.wallet(user);
        let (view, balance) = tokio::join!(
            ask(&addr, |reply| ReadReservation { id, user, reply }),
            ask(&wallet, |reply| ReadBalance { reply }),
        );
        let view = view.map_err(BookingError::from)?;
        let balance = balance.map_err(WalletError::from)?;
        Ok((view, balance))
    }

    // --- wallets ----------------------------------------------------------------------

    pub async fn recharge(
        &self,
        user: UserId,
        amount: i64,
        idempotency: Option<IdempotentWrite<Money>>,
    ) -> Result<Money, WalletError> {
        if !self.user_exists(user) {
            return Err(WalletError::UserNotFound);
        }
        Ok(ask(&self.wallet(user), |reply| Recharge {
            amount,
            idempotency,
            reply,
        })
        .await?)
    }

    /// A page of the user's ledger, newest first: the rows the wallet itself persists.
    pub async fn history(
        &self,
        user: UserId,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, WalletError> {
        if !self.user_exists(user) {
            return Err(WalletError::UserNotFound);
        }
        let page = self
            .inner
            .core
            .store
            .run(move |s| async move { s.ledger_page(user, limit, before).await });
        page.await.map_err(|error| {
            tracing::warn!(error = %error, "ledger read failed");
            WalletError::Unavailable(Unavailable::CommitFailed)
        })
    }

    pub async fn balance(&self, user: UserId) -> Result<Money, WalletError> {
        if !self.user_exists(user) {
            return Err(WalletError::UserNotFound);
        }
        Ok(ask(&self.wallet(user), |reply| ReadBalance { reply }).await?)
    }

    // --- admin ------------------------------------------------------------------------

    pub async fn create_user(&self, name: String, balance: Money) -> Result<UserId, AdminError> {
        let now = self.now();
        let user = self
            .inner
            .core
            .store
            .run(move |s| async move { s.create_user(&name, balance, now).await })
            .await?;
        self.inner.users.insert(user, ());
        Ok(user)
    }

    pub async fn create_concert(&self, concert: NewConcert) -> Result<CreatedConcert, AdminError> {
        let created = self
            .inner
            .core
            .store
            .run(move |s| async move { s.create_concert(&concert).await })
            .await?;
        self.inner
            .concerts
            .entry(created.id)
            .or_insert_with(|| ConcertEntry {
                schedules: Vec::new(),
            });
        for (info, seats) in &created.schedules {
            let entry = self.register_schedule(info.clone());
            entry.available.store(seats.len(), Ordering::Relaxed);
            self.start_schedule(entry, Some(ScheduleBook::new(info.clone(), seats.clone())));
        }
        Ok(created)
    }

    // --- lifecycle --------------------------------------------------------------------

    /// Drains the persister (every accepted write is committed or answered) and stops the
    /// actor threads.
    pub async fn shutdown(&self) {
        self.inner.ready.store(false, Ordering::Release);
        let persister = self.inner.core.persister.clone();
        // Anything already submitted is committed; nothing new is accepted after this.
        let _ = persister.flush().await;
        persister.close();
        for arbiter in &self.inner.arbiters {
            arbiter.stop();
        }
    }
}

/// Sends every actor whose writes failed the order to rebuild at its new generation.
fn rebuild(engine: &Weak<Inner>, keys: Vec<(ActorKey, u64)>) {
    let Some(inner) = engine.upgrade() else {
        return;
    };
    for (key, generation) in keys {
        match key {
            ActorKey::Queue => inner.queue.do_send(RebuildQueue { generation }),
            ActorKey::Schedule(id) => {
                if let Some(addr) = inner.schedules.get(&id) {
                    addr.do_send(RebuildSchedule { generation });
                }
            }
            ActorKey::Wallet(user) => {
                if let Some(slot) = inner.core.wallets.get(&user) {
                    slot.addr.do_send(RebuildWallet { generation });
                }
            }
        }
    }
}
