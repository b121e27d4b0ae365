//! The engine: the one entry point the HTTP layer calls. Each operation checks what the
//! catalog already knows, sends one message to the one actor that owns the state, and waits
//! for the (durable) answer. Payment is the one operation that crosses actors; its saga runs
//! detached, so a client hanging up cannot strand a pinned hold. Boot is in
//! [`super::recovery`].

use super::catalog::Catalog;
use super::env::{ActorEnv, EngineSettings};
use super::error::{ActorError, AdminError, BookingError, PaymentError, QueueError, WalletError};
use super::idempotency::{Idempotency, IdempotentWrite};
use super::live_stats::{HistogramCounts, LiveStats};
use super::mailbox::ask;
use super::persister::{ActorKey, Persister, Unavailable};
use super::queue::{ConsumeToken, JoinQueue, QueueView};
use super::registry::Registry;
use super::schedule::{
    stored_view, CancelReservation, DrainHolds, HoldSeats, ListSeats, PinHold, PostHold, Pushed,
    ReadReservation, ReservationView, SampleSeats, ScheduleActor, SeatMap, SeatSample, UnpinHold,
};
use super::wallet::{DebitForPayment, PaymentReceipt, ReadBalance, Recharge, WalletActor};
use crate::domain::catalog::{CreatedConcert, NewConcert};
use crate::domain::queue::{TokenRecord, TokenRefusal, TokenStatus};
use crate::domain::schedule::{
    BookingRefusal, HoldRequest, ReservationStatus, ScheduleBook, ScheduleInfo,
};
use crate::domain::{ConcertId, Money, ReservationId, ScheduleId, Timestamp, TokenId, UserId};
use crate::store::LedgerEntry;
use actix::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod remote_payment;
mod remote_polls;
mod seat_copy;

/// Where a reservation is answered from.
enum Located {
    /// The actor of this schedule (which has it in memory, or loads it).
    Actor(ScheduleId),
    /// The store: settled, and gone from its actor's memory (boxed: the rare case).
    Settled(Box<ReservationView>),
}

/// What the schedule actors keep in memory (see [`Engine::kept_in_memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptInMemory {
    pub reservations: usize,
    pub deadlines: usize,
    pub indexed: usize,
}

/// What a cancel or a payment of a settled reservation is refused with.
fn settled_refusal(view: &ReservationView) -> BookingRefusal {
    view.reservation
        .status
        .refusal()
        // Only settled reservations are answered from the store.
        .unwrap_or(BookingRefusal::ReservationNotFound)
}

type HoldReceiver =
    tokio::sync::oneshot::Receiver<Result<ReservationView, ActorError<BookingRefusal>>>;

struct Inner {
    env: Arc<ActorEnv>,
    catalog: Catalog,
    registry: Arc<Registry>,
    queue_view: Arc<QueueView>,
    idempotency: Arc<Idempotency>,
    /// Recovery finished: the port may answer.
    ready: AtomicBool,
    /// When the last reload [`Engine::learn_catalog`] finished had started (ms); held while a
    /// reload runs, so callers wait for it instead of starting their own.
    catalog_reloaded_at: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// Cluster mode: how this node asks the others (see `remote_payment`).
    peers: std::sync::OnceLock<Arc<dyn super::cluster::peers::Peers>>,
    /// Cluster mode: seat maps of schedules other nodes own (see `seat_copy`).
    seat_copies: seat_copy::SeatCopies,
    /// Cluster mode: what polls are answered from when another node holds the queue.
    queue_copy: super::cluster::queue_copy::QueueCopy,
}

/// A token spent by a payment's transaction (see [`Engine::spend_with_payment`]).
struct SpentWithPayment {
    depends_on: super::persister::Dependency,
    record: Option<TokenRecord>,
    on_commit: Box<dyn FnOnce() + Send>,
}

/// The longest a read of the line waits for its rebuild after a failed commit.
pub const QUEUE_REBUILD_WAIT: Duration = Duration::from_secs(2);

/// The least time between two catalog reloads asked for by requests (cluster mode).
pub const CATALOG_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The handle the HTTP layer holds; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Puts the engine together from its recovered parts (see [`super::recovery`]); it is
    /// not ready until recovery marks it so.
    pub(super) fn assemble(
        env: Arc<ActorEnv>,
        catalog: Catalog,
        registry: Arc<Registry>,
        queue_view: Arc<QueueView>,
        idempotency: Arc<Idempotency>,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                env,
                catalog,
                registry,
                queue_view,
                idempotency,
                ready: AtomicBool::new(false),
                catalog_reloaded_at: tokio::sync::Mutex::new(None),
                peers: std::sync::OnceLock::new(),
                seat_copies: Default::default(),
                queue_copy: Default::default(),
            }),
        }
    }

    pub(super) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub(super) fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub(super) fn mark_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// The actor of a schedule, started (and loaded) on first use.
    fn schedule(&self, id: ScheduleId) -> Result<Addr<ScheduleActor>, BookingError> {
        if let Some(addr) = self.inner.registry.schedule(id) {
            return Ok(addr);
        }
        let entry = self
            .inner
            .catalog
            .schedule_entry(id)
            .ok_or(BookingError::ScheduleNotFound)?;
        Ok(self.inner.registry.schedule_or_load(entry))
    }

    fn wallet(&self, user: UserId) -> Addr<WalletActor> {
        self.inner.registry.wallet(user)
    }

    pub fn now(&self) -> Timestamp {
        self.inner.env.clock.now()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.env.settings
    }

    pub(super) fn store_handle(&self) -> &crate::store::StoreHandle {
        &self.inner.env.store
    }

    pub fn persister(&self) -> &Persister {
        &self.inner.env.persister
    }

    /// Recovery finished and the last commit succeeded.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && self.inner.env.persister.is_healthy()
    }

    /// Whether the database answers now.
    pub async fn ping_store(&self) -> bool {
        let ping = self.inner.env.store.run(|s| async move { s.ping().await });
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(()))
        )
    }

    /// No users and no concerts: a fresh store.
    pub fn is_empty(&self) -> bool {
        self.inner.catalog.is_empty()
    }

    /// The process's idempotency keys.
    pub fn idempotency(&self) -> &Arc<Idempotency> {
        &self.inner.idempotency
    }

    pub fn concert_exists(&self, concert: ConcertId) -> bool {
        self.inner.catalog.concert_exists(concert)
    }

    pub fn schedule_exists(&self, schedule: ScheduleId) -> bool {
        self.inner.catalog.schedule_entry(schedule).is_some()
    }

    pub fn user_exists(&self, user: UserId) -> bool {
        self.inner.catalog.user_exists(user)
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
        ask(self.inner.registry.queue(), |reply| JoinQueue {
            user,
            reply,
        })
        .await
        .map_err(|e| match e {
            ActorError::Rejected(rule) => QueueError::Token(rule),
            ActorError::Unavailable(u) => QueueError::Unavailable(u),
        })
    }

    /// Waits (at most [`QUEUE_REBUILD_WAIT`]) while the line is being rebuilt after a failed
    /// commit: until then the published line may still show what the failed write did (a
    /// join answered 503 must not be read back as a token).
    async fn queue_current(&self) -> Result<(), QueueError> {
        // Cluster mode without the queue: this node's line is a copy, never rebuilt from here
        // (and "stale" by the fence's rule); reads there go by the owner or its snapshot.
        if !self.persister().may_write(ActorKey::Queue) {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + QUEUE_REBUILD_WAIT;
        while self
            .persister()
            .is_stale((ActorKey::Queue, self.inner.queue_view.generation()))
        {
            if std::time::Instant::now() >= deadline {
                return Err(QueueError::Unavailable(Unavailable::Rebuilding));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// The user's current (or last) token, once the line is not being rebuilt.
    pub async fn token_of(&self, user: UserId) -> Result<TokenRecord, QueueError> {
        self.queue_current().await?;
        self.token_of_now(user)
    }

    /// [`Engine::token_of`] without the wait (benches and tests that drive no failed commit).
    pub fn token_of_now(&self, user: UserId) -> Result<TokenRecord, QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        self.inner
            .queue_view
            .token_of(user)
            .ok_or(QueueError::TokenNotFound)
    }

    /// A status poll, answered from the published line (never the actor's mailbox; it waits
    /// only while the line is rebuilt after a failed commit).
    pub async fn poll(
        &self,
        user: UserId,
        token: Option<TokenId>,
    ) -> Result<TokenStatus, QueueError> {
        self.queue_current().await?;
        self.poll_now(user, token)
    }

    /// [`Engine::poll`] without the wait (benches).
    pub fn poll_now(
        &self,
        user: UserId,
        token: Option<TokenId>,
    ) -> Result<TokenStatus, QueueError> {
        if !self.user_exists(user) {
            return Err(QueueError::UserNotFound);
        }
        if let Some(status) = self.poll_here(user, token) {
            return Ok(status);
        }
        let token = token.ok_or(QueueError::Token(TokenRefusal::Invalid))?;
        Ok(self.inner.queue_view.poll(user, token, self.now())?)
    }

    /// Checks that `token` is ACTIVE, and `user`'s when a user is named.
    pub async fn authorize(
        &self,
        token: Option<TokenId>,
        user: Option<UserId>,
    ) -> Result<TokenRecord, TokenRefusal> {
        let token = token.ok_or(TokenRefusal::Invalid)?;
        let local = self.inner.queue_view.authorize(token, user, self.now());
        if local.is_ok() || self.persister().may_write(ActorKey::Queue) {
            return local;
        }
        // Cluster mode, with the queue held by another node: this node's line is a copy from
        // when it last loaded it, so a token it does not know, or knows as not yet ACTIVE, may
        // have been admitted since. The database has what the queue's owner committed.
        let stored = self
            .inner
            .env
            .store
            .run(move |s| async move { s.load_token(token).await })
            .await;
        match stored {
            Ok(Some(record)) => record.authorizes(user, self.now()).map(|()| record),
            Ok(None) => local,
            Err(error) => {
                tracing::warn!(%error, "token lookup failed; answering from the local line");
                local
            }
        }
    }

    // --- concerts and seats -----------------------------------------------------------

    /// Schedules of a concert still to come, by date, with their free seats.
    pub fn upcoming_schedules(
        &self,
        concert: ConcertId,
    ) -> Result<Vec<(ScheduleInfo, usize)>, BookingError> {
        self.inner
            .catalog
            .upcoming(concert, self.now())
            .ok_or(BookingError::ConcertNotFound)
    }

    /// The schedule's details, if it is one of `concert`'s.
    fn schedule_of_concert(
        &self,
        concert: ConcertId,
        schedule: ScheduleId,
    ) -> Result<ScheduleInfo, BookingError> {
        if !self.inner.catalog.concert_exists(concert) {
            return Err(BookingError::ConcertNotFound);
        }
        match self.inner.catalog.schedule(schedule) {
            Some(entry) if entry.info.concert_id == concert => Ok(entry.info.clone()),
            _ => Err(BookingError::ScheduleNotFound),
        }
    }

    pub async fn seats(
        &self,
        concert: ConcertId,
        schedule: ScheduleId,
    ) -> Result<(ScheduleInfo, SeatMap), BookingError> {
        let info = self.schedule_of_concert(concert, schedule)?;
        if self.schedule_is_remote(schedule) {
            let seats = self.seat_copy(info.clone()).await?;
            return Ok((info, seats));
        }
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
        let Some(entry) = self.inner.catalog.schedule(schedule) else {
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
            .push(hold, self.inner.env.settings.mailbox_capacity);
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
            if let Some(entry) = self.inner.catalog.schedule(id) {
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
        if self.inner.catalog.concert_exists(concert) {
            BookingError::ScheduleNotFound
        } else {
            BookingError::ConcertNotFound
        }
    }

    /// The schedule reservation `id` belongs to (cluster mode routes by it): from memory, or
    /// from the store; `None` if it does not exist or the store cannot say now.
    pub async fn schedule_of_reservation(&self, id: ReservationId) -> Option<ScheduleId> {
        if let Some(schedule) = self.inner.env.reservations.schedule_of(id) {
            return Some(schedule);
        }
        let found = self
            .inner
            .env
            .store
            .run(move |s| async move { s.load_reservation(id).await })
            .await;
        found
            .ok()
            .flatten()
            .map(|stored| stored.reservation.schedule)
    }

    /// Where reservation `id` of `user` is answered from: its schedule's actor while it is in
    /// memory (or its schedule is not loaded yet), the store once it is settled and gone.
    async fn locate(&self, user: UserId, id: ReservationId) -> Result<Located, BookingError> {
        if let Some(schedule) = self.inner.env.reservations.schedule_of(id) {
            return Ok(Located::Actor(schedule));
        }
        self.stored(user, id).await
    }

    /// Reservation `id` of `user` as the store has it. Another user's is "not found", as the
    /// actor answers it.
    async fn stored(&self, user: UserId, id: ReservationId) -> Result<Located, BookingError> {
        let found = self
            .inner
            .env
            .store
            .run(move |s| async move { s.load_reservation(id).await })
            .await;
        let stored = match found {
            Ok(Some(stored)) if stored.reservation.user == user => stored,
            Ok(_) => return Err(BookingRefusal::ReservationNotFound.into()),
            Err(error) => {
                tracing::warn!(error = %error, "reservation lookup failed");
                return Err(Unavailable::CommitFailed.into());
            }
        };
        let schedule = stored.reservation.schedule;
        if stored.reservation.status == ReservationStatus::Pending {
            return Ok(Located::Actor(schedule));
        }
        let Some(entry) = self.inner.catalog.schedule_entry(schedule) else {
            return Err(BookingRefusal::ReservationNotFound.into());
        };
        Ok(Located::Settled(Box::new(stored_view(&entry.info, stored))))
    }

    /// After the actor answered "not found" for reservation `id` of `user`: the reservation
    /// as the store has it if it left memory since it was located (it is no longer indexed)
    /// and is settled; `None` when "not found" stands.
    async fn left_memory(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<Option<ReservationView>, BookingError> {
        if self.inner.env.reservations.schedule_of(id).is_some() {
            return Ok(None);
        }
        Ok(match self.stored(user, id).await? {
            Located::Settled(view) => Some(*view),
            // Pending in the store, yet unknown to its actor: not one to answer for.
            Located::Actor(_) => None,
        })
    }

    pub async fn reservation(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<ReservationView, BookingError> {
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        self.read(user, id).await
    }

    /// A reservation as its owner sees it: from memory, or from the store once settled.
    async fn read(&self, user: UserId, id: ReservationId) -> Result<ReservationView, BookingError> {
        let schedule = match self.locate(user, id).await? {
            Located::Actor(schedule) => schedule,
            Located::Settled(view) => return Ok(*view),
        };
        let addr = self.schedule(schedule)?;
        match ask(&addr, |reply| ReadReservation { id, user, reply }).await {
            Err(ActorError::Rejected(BookingRefusal::ReservationNotFound)) => self
                .left_memory(user, id)
                .await?
                .ok_or_else(|| BookingRefusal::ReservationNotFound.into()),
            answer => Ok(answer?),
        }
    }

    pub async fn cancel(
        &self,
        user: UserId,
        id: ReservationId,
    ) -> Result<ReservationView, BookingError> {
        if !self.user_exists(user) {
            return Err(BookingError::UserNotFound);
        }
        let schedule = match self.locate(user, id).await? {
            Located::Actor(schedule) => schedule,
            Located::Settled(view) => return Err(settled_refusal(&view).into()),
        };
        let addr = self.schedule(schedule)?;
        match ask(&addr, |reply| CancelReservation { id, user, reply }).await {
            Err(ActorError::Rejected(BookingRefusal::ReservationNotFound)) => {
                Err(match self.left_memory(user, id).await? {
                    Some(view) => settled_refusal(&view).into(),
                    None => BookingRefusal::ReservationNotFound.into(),
                })
            }
            answer => Ok(answer?),
        }
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
        let schedule = match self.locate(user, id).await? {
            Located::Actor(schedule) => schedule,
            Located::Settled(view) => return Err(settled_refusal(&view).into()),
        };
        let engine = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Detached: once pinned, the saga must reach post or unpin whatever the client does.
        actix_rt::spawn(async move {
            let _ = tx.send(engine.settle(user, id, schedule, token, idempotency).await);
        });
        let outcome = rx
            .await
            .unwrap_or(Err(PaymentError::Unavailable(Unavailable::Busy)));
        match outcome {
            // The pin found nothing: the reservation may have left memory since it was located.
            Err(PaymentError::Booking(BookingRefusal::ReservationNotFound)) => {
                Err(match self.left_memory(user, id).await? {
                    Some(view) => settled_refusal(&view).into(),
                    None => BookingRefusal::ReservationNotFound.into(),
                })
            }
            outcome => outcome,
        }
    }

    async fn settle(
        &self,
        user: UserId,
        id: ReservationId,
        schedule: ScheduleId,
        token: TokenId,
        idempotency: Option<IdempotentWrite<PaymentReceipt>>,
    ) -> Result<PaymentReceipt, PaymentError> {
        if self.schedule_is_remote(schedule) {
            return self
                .settle_remote(user, id, schedule, token, idempotency)
                .await;
        }
        let addr = self.schedule(schedule)?;
        let pinned = ask(&addr, |reply| PinHold { id, user, reply })
            .await
            .map_err(BookingError::from)?;
        let now = self.now();
        let paid = ScheduleBook::as_paid(&pinned.reservation, now);
        let spent = self.spend_with_payment(token, now);
        let depends_on = vec![
            (ActorKey::Schedule(schedule), pinned.generation),
            spent.depends_on,
        ];
        let on_commit: Box<dyn FnOnce() + Send> = {
            let schedule = addr.clone();
            let spend = spent.on_commit;
            Box::new(move || {
                schedule.do_send(PostHold { id });
                spend();
            })
        };
        let token = spent.record;
        let payment = self.inner.env.ids.payment();
        let wallet = self.wallet(user);
        let outcome = ask(&wallet, |reply| DebitForPayment {
            paid,
            token,
            payment,
            depends_on,
            claims: Vec::new(),
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

    /// How a payment spends `token` in its own transaction (this node holds the queue): the
    /// queue state it depends on, the token as stored once spent, and what frees its slot
    /// after the commit, before the payment's answer.
    fn spend_with_payment(&self, token: TokenId, now: Timestamp) -> SpentWithPayment {
        let (view, queue) = (
            self.inner.queue_view.clone(),
            self.inner.registry.queue().clone(),
        );
        let clock = self.inner.env.clock.clone();
        SpentWithPayment {
            depends_on: (ActorKey::Queue, self.inner.queue_view.generation()),
            record: self.inner.queue_view.consumed_record(token, now),
            on_commit: Box::new(move || {
                view.consume_committed(token, clock.now());
                queue.do_send(ConsumeToken { token });
            }),
        }
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
        let wallet = self.wallet(user);
        let (view, balance) = tokio::join!(
            self.read(user, id),
            ask(&wallet, |reply| ReadBalance { reply }),
        );
        let view = view?;
        let balance = balance.map_err(WalletError::from)?;
        Ok((view, balance))
    }

    // --- memory ------------------------------------------------------------------------

    /// What the schedule actors keep in memory now, for tests and metrics: the reservations
    /// they hold (pending, and settled within their grace), their deadline entries, and the
    /// index entries that point at them.
    pub fn kept_in_memory(&self) -> KeptInMemory {
        let env = &self.inner.env;
        KeptInMemory {
            reservations: env.reservations.kept().reservations(),
            deadlines: env.reservations.kept().deadlines(),
            indexed: env.reservations.len(),
        }
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
            .env
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
            .env
            .store
            .run(move |s| async move { s.create_user(&name, balance, now).await })
            .await?;
        self.inner.catalog.add_user(user);
        Ok(user)
    }

    /// Cluster mode: a user another node just created, not yet in this node's catalog, is
    /// added if the store has their wallet (every user has one from creation on).
    pub async fn learn_user(&self, user: UserId) {
        let stored = self
            .inner
            .env
            .store
            .run(move |s| async move { s.load_wallet(user).await })
            .await;
        if let Ok(Some(_)) = stored {
            self.inner.catalog.add_user(user);
        }
    }

    /// Cluster mode: a concert or schedule another node just created, not yet in this
    /// node's catalog: returns once a reload that started after this call has finished (so
    /// it has whatever was committed before the request). One reload at a time, at most one
    /// per [`CATALOG_RELOAD_EVERY`], whatever asks: requests naming ids that do not exist wait
    /// for the next shared reload instead of each making one (before, one that came within
    /// the 250 ms of another's reload answered 404 at once, even for a concert just created).
    pub async fn learn_catalog(&self) {
        let arrived = std::time::Instant::now();
        let mut started = self.inner.catalog_reloaded_at.lock().await;
        if let Some(last) = *started {
            if last >= arrived {
                return;
            }
            if let Some(wait) = CATALOG_RELOAD_EVERY.checked_sub(last.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        *started = Some(std::time::Instant::now());
        let loaded = self
            .inner
            .env
            .store
            .run(|s| async move { s.load_catalog().await })
            .await;
        if let Ok(snapshot) = loaded {
            self.absorb_catalog(snapshot);
        }
    }

    /// Cluster mode: adds what another node created (users, concerts, schedules) to this
    /// node's catalog. A new schedule's actor loads when first asked, under the epoch of its
    /// shard if this node holds it. Returns how many schedules were new.
    pub fn absorb_catalog(&self, snapshot: crate::store::CatalogSnapshot) -> usize {
        for user in snapshot.users {
            self.inner.catalog.add_user(user);
        }
        for (concert, _name) in snapshot.concerts {
            if !self.inner.catalog.concert_exists(concert) {
                self.inner.catalog.add_concert(concert);
            }
        }
        let mut added = 0;
        for info in snapshot.schedules {
            if self.inner.catalog.schedule_entry(info.id).is_none() {
                self.inner.catalog.add_schedule(info);
                added += 1;
            }
        }
        added
    }

    pub async fn create_concert(&self, concert: NewConcert) -> Result<CreatedConcert, AdminError> {
        let created = self
            .inner
            .env
            .store
            .run(move |s| async move { s.create_concert(&concert).await })
            .await?;
        self.inner.catalog.add_concert(created.id);
        for schedule in &created.schedules {
            let entry = self.inner.catalog.add_schedule(schedule.info.clone());
            entry
                .available
                .store(schedule.seats.len(), Ordering::Relaxed);
            let book = ScheduleBook::planned(
                schedule.info.clone(),
                schedule.seats.clone(),
                schedule.plan.clone(),
            );
            self.inner.registry.start_schedule(entry, Some(book));
        }
        Ok(created)
    }

    // --- the operator's dashboard -----------------------------------------------------

    /// The counters of holds by outcome and of 503s.
    pub fn live(&self) -> &LiveStats {
        &self.inner.env.live
    }

    /// Every commit's latency so far (differences of two readings are a window's).
    pub fn commit_latency(&self) -> HistogramCounts {
        self.inner.env.persister.stats().commit_latency.read()
    }

    /// (batches, submissions) committed or failed so far.
    pub fn batches(&self) -> (u64, u64) {
        let stats = self.inner.env.persister.stats();
        (
            stats.batches.load(Ordering::Relaxed),
            stats.submissions.load(Ordering::Relaxed),
        )
    }

    /// Admissions per second, as the waiting line measured them.
    pub fn admission_rate(&self) -> Option<f64> {
        self.inner.queue_view.measured_rate(self.now())
    }

    /// Starts the schedule's actor if none runs, so the dashboard can sample it.
    pub fn watch_schedule(&self, id: ScheduleId) -> Result<(), BookingError> {
        self.schedule(id).map(drop)
    }

    /// Every seat's state of up to `max` running schedules, lowest ids first. A schedule still
    /// loading (or rebuilding) is left out of this sample.
    pub async fn sample_schedules(&self, max: usize) -> Vec<(ScheduleInfo, SeatSample)> {
        let running = self.inner.registry.running_schedules(max);
        let asks = running.iter().map(|(id, addr)| async move {
            let info = self.inner.catalog.schedule_entry(*id)?.info.clone();
            let sample = ask(addr, |reply| SampleSeats { reply }).await.ok()?;
            Some((info, sample))
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    // --- lifecycle --------------------------------------------------------------------

    /// Drains the persister (every accepted write is committed or answered) and stops the
    /// actor threads.
    pub async fn shutdown(&self) {
        self.inner.ready.store(false, Ordering::Release);
        let persister = self.inner.env.persister.clone();
        // Anything already submitted is committed; nothing new is accepted after this.
        let _ = persister.flush().await;
        persister.close();
        self.inner.registry.stop();
    }
}
