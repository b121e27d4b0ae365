//! What every actor is given when it starts: the drop's settings, the clock, the persister,
//! the store, the id allocator, and the index that tells which schedule a reservation is on.
//! Actors depend on this, never on the engine or the registry that start them.

use super::live_stats::LiveStats;
use super::mailbox::MAILBOX_CAPACITY;
use super::persister::Persister;
use crate::clock::Clock;
use crate::domain::ids::BuildIdHasher;
use crate::domain::{Money, PaymentId, ReservationId, ScheduleId};
use crate::store::{MaxIds, StoreHandle};
use dashmap::DashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a settled (paid, cancelled, expired) reservation stays in its schedule actor's
/// memory: long enough that what a client reads right after paying or cancelling (the checkout
/// progress, the reservation) is answered from memory, far longer than any commit takes (the
/// persister gives up on one at 5 s), and short against a drop, which lasts hours. After it,
/// the reservation is answered from the store.
pub const SETTLED_GRACE: Duration = Duration::from_secs(120);

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
    /// Live idempotency keys one user may hold; past it a new key is refused.
    pub max_idempotency_keys_per_user: usize,
    /// Submissions the persister holds before it refuses more.
    pub persister_capacity: usize,
    /// Two group commits in flight where the store can (`--pipeline-commits`).
    pub pipeline_commits: bool,
    /// Messages a schedule or wallet actor's mailbox holds before senders are refused; also
    /// the holds a schedule's intake holds.
    pub mailbox_capacity: usize,
    /// Threads the actors run on.
    pub actor_threads: usize,
    /// How long a settled reservation stays in memory ([`SETTLED_GRACE`]; tests shorten it).
    pub settled_grace: Duration,
    /// Cluster mode: the id block this boot allocates from ([`IdAllocator::in_block`]);
    /// `None` counts on from the largest stored id.
    pub id_block: Option<i64>,
    /// How long a waiting-list offer is held for its user (`--offer-ttl-secs`).
    pub offer_ttl: Duration,
    /// `--refund-until-secs`: a paid reservation may be refunded until this long before its
    /// concert (API.md §12).
    pub refund_until: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            hold_ttl: Duration::from_secs(300),
            offer_ttl: Duration::from_secs(600),
            active_ttl: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(120),
            max_active: 1000,
            admit_per_sec: 0,
            max_seats_per_user: 4,
            max_recharge: Money::new(10_000_000).expect("a positive constant"),
            max_idempotency_keys_per_user: 1000,
            persister_capacity: 65_536,
            pipeline_commits: false,
            mailbox_capacity: MAILBOX_CAPACITY,
            actor_threads: 2,
            settled_grace: SETTLED_GRACE,
            id_block: None,
            refund_until: Duration::from_secs(86_400),
        }
    }
}

/// A concurrent map keyed by a server-chosen id, hashed with one multiply (see
/// [`crate::domain::ids::IdHasher`]): every request looks up a few of these.
pub type IdDashMap<K, V> = DashMap<K, V, BuildIdHasher>;

/// Hands out the ids the service chooses, above the largest the store already has.
#[derive(Debug)]
pub struct IdAllocator {
    next_reservation: AtomicI64,
    next_payment: AtomicI64,
    next_ledger: AtomicI64,
    next_ticket: AtomicI64,
}

/// Bits of an id below its block (cluster mode): 2^40 ids per kind per boot, which no drop
/// exhausts (a million a second for twelve days), and 2^23 boots before the blocks run out.
pub const ID_BLOCK_BITS: u32 = 40;

impl IdAllocator {
    /// Starts past every id in the store.
    pub fn above(max: &MaxIds) -> IdAllocator {
        IdAllocator {
            next_reservation: AtomicI64::new(max.reservation + 1),
            next_payment: AtomicI64::new(max.payment + 1),
            next_ledger: AtomicI64::new(max.ledger + 1),
            next_ticket: AtomicI64::new(max.ticket + 1),
        }
    }

    /// Cluster mode: every kind from `block << ID_BLOCK_BITS` on, a range no other node or
    /// boot uses (the block comes from a database sequence).
    pub fn in_block(block: i64) -> IdAllocator {
        let start = block
            .clamp(1, (1 << (63 - ID_BLOCK_BITS)) - 1)
            .checked_shl(ID_BLOCK_BITS)
            .unwrap_or(1)
            + 1;
        IdAllocator {
            next_reservation: AtomicI64::new(start),
            next_payment: AtomicI64::new(start),
            next_ledger: AtomicI64::new(start),
            next_ticket: AtomicI64::new(start),
        }
    }

    pub fn reservation(&self) -> ReservationId {
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        ReservationId::new(id).expect("allocated above the stored maximum, which is ≥ 0")
    }

    pub fn payment(&self) -> PaymentId {
        let id = self.next_payment.fetch_add(1, Ordering::Relaxed);
        PaymentId::new(id).expect("allocated above the stored maximum, which is ≥ 0")
    }

    pub fn ticket(&self) -> crate::domain::TicketId {
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        crate::domain::TicketId::new(id).expect("allocated above the stored maximum, which is ≥ 0")
    }

    pub fn ledger(&self) -> i64 {
        self.next_ledger.fetch_add(1, Ordering::Relaxed)
    }
}

/// Which schedule each reservation in a schedule actor's memory belongs to, so a read, cancel
/// or payment goes straight to the right actor; a reservation not in here is looked up in the
/// store.
///
/// Bound: one entry (16 bytes plus the map's overhead) per reservation the schedule actors
/// keep — the pending ones, and the settled ones within their grace period
/// ([`EngineSettings::settled_grace`]): an entry leaves with its reservation.
///
/// It also sums what the actors keep ([`KeptGauges`]), for tests and metrics.
#[derive(Debug, Default)]
pub struct ReservationIndex {
    schedules: IdDashMap<ReservationId, ScheduleId>,
    kept: KeptGauges,
}

impl ReservationIndex {
    pub fn insert(&self, reservation: ReservationId, schedule: ScheduleId) {
        self.schedules.insert(reservation, schedule);
    }

    pub fn remove(&self, reservation: ReservationId) {
        self.schedules.remove(&reservation);
    }

    pub fn schedule_of(&self, reservation: ReservationId) -> Option<ScheduleId> {
        self.schedules.get(&reservation).map(|s| *s)
    }

    /// Entries: reservations in the schedule actors' memory.
    pub fn len(&self) -> usize {
        self.schedules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }

    /// What the schedule actors keep in memory, summed.
    pub fn kept(&self) -> &KeptGauges {
        &self.kept
    }
}

/// What the schedule actors keep in memory, summed over all of them: each adds what changed
/// since it last published, so reading the totals costs two loads.
#[derive(Debug, Default)]
pub struct KeptGauges {
    reservations: AtomicUsize,
    deadlines: AtomicUsize,
}

impl KeptGauges {
    /// One actor's counts went from `was` to `now` (reservations, deadline entries).
    pub fn moved(&self, was: (usize, usize), now: (usize, usize)) {
        // Added before subtracted: a reader may see a little more, never a wrapped total.
        self.reservations.fetch_add(now.0, Ordering::Relaxed);
        self.reservations.fetch_sub(was.0, Ordering::Relaxed);
        self.deadlines.fetch_add(now.1, Ordering::Relaxed);
        self.deadlines.fetch_sub(was.1, Ordering::Relaxed);
    }

    pub fn reservations(&self) -> usize {
        self.reservations.load(Ordering::Relaxed)
    }

    pub fn deadlines(&self) -> usize {
        self.deadlines.load(Ordering::Relaxed)
    }
}

/// What every actor shares.
pub struct ActorEnv {
    pub settings: EngineSettings,
    pub clock: Arc<dyn Clock>,
    pub persister: Persister,
    pub store: StoreHandle,
    pub ids: IdAllocator,
    pub reservations: ReservationIndex,
    /// The dashboard's counters, bumped where each outcome is decided.
    pub live: LiveStats,
    /// Cluster mode: holds pinned here for other nodes' payments.
    pub remote_pins: super::remote_pins::RemotePins,
}
