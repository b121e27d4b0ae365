//! The engine: the one entry point the HTTP layer calls. Each operation checks what the
//! catalog already knows, sends one message to the one actor that owns the state, and waits
//! for the (durable) answer. Payment is the one operation that crosses actors; its saga runs
//! detached, so a client hanging up cannot strand a pinned hold. Boot is in
//! `recovery.rs`.
//!
//! The engine is the single-node path. Where state may live on another node (cluster mode) it
//! asks the [`Elsewhere`] it was handed, which on a single node says "everything is here"; the
//! cluster's side of it is in `actors/cluster/`.
//!
//! The operations, by area:
//! - `queue_ops.rs`: the waiting room (join, polls, token checks);
//! - `reads.rs`: concerts, seats and reservations as clients read them;
//! - `holds.rs`: holding seats and cancelling a hold;
//! - `payment.rs`: the payment saga (which issues the tickets);
//! - `tickets.rs`: tickets, the door and transfers;
//! - `refunds.rs`: a paid reservation's refund (the payment's saga backwards);
//! - `wallets.rs`: recharges, balances and the ledger;
//! - `admin.rs`: users and concerts;
//! - `dashboard.rs`: what the operator's dashboard and `/metrics` read;
//! - `elsewhere.rs`: the one thing the engine knows of other nodes.

use super::catalog::Catalog;
use super::env::{ActorEnv, EngineSettings};
use super::error::BookingError;
use super::idempotency::Idempotency;
use super::persister::{ActorKey, Persister};
use super::queue::QueueView;
use super::registry::Registry;
use super::schedule::{ReservationView, ScheduleActor};
use super::wallet::WalletActor;
use crate::domain::schedule::BookingRefusal;
use crate::domain::{ConcertId, ScheduleId, Timestamp, UserId};
use actix::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod admin;
mod dashboard;
pub mod elsewhere;
mod holds;
mod payment;
mod performance;
mod queue_ops;
mod reads;
mod refunds;
mod tickets;
mod waitlist;
mod wallets;

pub use dashboard::KeptInMemory;
pub use elsewhere::{AllHere, Elsewhere, RefundElsewhere, Settlement};
pub use performance::CancellationReport;
pub use queue_ops::QUEUE_REBUILD_WAIT;
pub(crate) use refunds::RefundPin;
pub use tickets::{RawScan, TicketView};
pub use waitlist::WaitlistKey;

/// Where a reservation is answered from.
pub(crate) enum Located {
    /// The actor of this schedule (which has it in memory, or loads it).
    Actor(ScheduleId),
    /// The store: settled, and gone from its actor's memory (boxed: the rare case).
    Settled(Box<ReservationView>),
}

/// What a cancel or a payment of a settled reservation is refused with.
pub(crate) fn settled_refusal(view: &ReservationView) -> BookingRefusal {
    view.reservation
        .status
        .refusal()
        // Only settled reservations are answered from the store.
        .unwrap_or(BookingRefusal::ReservationNotFound)
}

struct Inner {
    env: Arc<ActorEnv>,
    catalog: Catalog,
    registry: Arc<Registry>,
    queue_view: Arc<QueueView>,
    idempotency: Arc<Idempotency>,
    /// Recovery finished: the port may answer.
    ready: AtomicBool,
    /// Where state held by other nodes is answered (set once, in cluster mode); unset, all
    /// of it is here.
    elsewhere: OnceLock<Arc<dyn Elsewhere>>,
    /// The tickets' signing key (API.md §12), installed once at startup.
    ticket_keys: OnceLock<Arc<crate::domain::ticket::TicketKeys>>,
}

/// The handle the HTTP layer holds; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Puts the engine together from its recovered parts (see `recovery.rs`); it is
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
                elsewhere: OnceLock::new(),
                ticket_keys: OnceLock::new(),
            }),
        }
    }

    /// Hands the engine what answers for state other nodes hold (once, at startup).
    pub fn set_elsewhere(&self, elsewhere: Arc<dyn Elsewhere>) {
        // A second install would be a startup bug; the first stays.
        let _ = self.inner.elsewhere.set(elsewhere);
    }

    /// What answers for state other nodes hold: "nothing is elsewhere" on a single node.
    pub fn elsewhere(&self) -> &dyn Elsewhere {
        match self.inner.elsewhere.get() {
            Some(elsewhere) => elsewhere.as_ref(),
            None => &AllHere,
        }
    }

    /// Whether the state of `key` is held by this node (always, on a single node).
    pub fn is_here(&self, key: ActorKey) -> bool {
        self.elsewhere().is_here(self, key)
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub(crate) fn env(&self) -> &Arc<ActorEnv> {
        &self.inner.env
    }

    pub(crate) fn queue_view(&self) -> &Arc<QueueView> {
        &self.inner.queue_view
    }

    pub(super) fn mark_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    /// The actor of a schedule, started (and loaded) on first use.
    pub(crate) fn schedule(&self, id: ScheduleId) -> Result<Addr<ScheduleActor>, BookingError> {
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

    pub(crate) fn wallet(&self, user: UserId) -> Addr<WalletActor> {
        self.inner.registry.wallet(user)
    }

    pub fn now(&self) -> Timestamp {
        self.inner.env.clock.now()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.env.settings
    }

    pub(crate) fn store_handle(&self) -> &crate::store::StoreHandle {
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
