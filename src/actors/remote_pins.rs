//! The holds this node pinned for a payment another node commits, and the paid reservations
//! whose tickets it pinned for a refund another node credits (cluster mode: the wallet's
//! owner; always empty on a single node). Kept below the actors, not in `cluster/`, because
//! the schedule actor re-pins them when its book loads. While one is here its hold may not
//! expire (its tickets may not be checked in or transferred), even across a rebuild of its
//! schedule's book: the wallet's owner may still commit it as paid (refunded).
//!
//! An entry leaves when the wallet's owner settles it (posted or unpinned), or when the pin
//! resolver finds that the wallet shard's epoch the payment was decided under can no longer
//! commit (the shard moved on or was released), and then reads the outcome from the database.

use crate::domain::{ReservationId, ScheduleId, SeatId, UserId};
use dashmap::DashMap;
use std::time::Instant;

/// One hold pinned for another node's payment.
#[derive(Debug, Clone)]
pub struct RemotePin {
    pub schedule: ScheduleId,
    pub user: UserId,
    /// The node that asked (the wallet shard's owner, at `wallet_epoch`).
    pub wallet_node: String,
    pub wallet_shard: String,
    pub wallet_epoch: u64,
    pub since: Instant,
    /// The wallet's owner could not say whether its commit happened (the database did not
    /// answer it): the resolver reads the outcome once no commit can still be under way.
    pub uncertain_since: Option<Instant>,
    /// `Some(seats)`: a refund of this paid reservation (its tickets pinned here, these seats
    /// free once the credit is durable); `None`: a payment of its hold.
    pub refund: Option<Vec<SeatId>>,
}

/// Every hold pinned here for another node, by reservation.
#[derive(Default)]
pub struct RemotePins {
    pins: DashMap<ReservationId, RemotePin>,
}

impl RemotePins {
    /// Records `pin` unless `id` is pinned for a payment already (then `false`).
    pub fn insert_new(&self, id: ReservationId, pin: RemotePin) -> bool {
        match self.pins.entry(id) {
            dashmap::mapref::entry::Entry::Occupied(_) => false,
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                slot.insert(pin);
                true
            }
        }
    }

    /// The payment of `id` may or may not have committed.
    pub fn mark_uncertain(&self, id: ReservationId) {
        if let Some(mut pin) = self.pins.get_mut(&id) {
            pin.uncertain_since.get_or_insert_with(Instant::now);
        }
    }

    /// Forgets the pin of `id`, giving it back if there was one.
    pub fn remove(&self, id: ReservationId) -> Option<RemotePin> {
        self.pins.remove(&id).map(|(_, pin)| pin)
    }

    /// The reservations of `schedule` pinned for another node (re-pinned when its book loads).
    pub fn of_schedule(&self, schedule: ScheduleId) -> Vec<(ReservationId, RemotePin)> {
        self.pins
            .iter()
            .filter(|e| e.value().schedule == schedule)
            .map(|e| (*e.key(), e.value().clone()))
            .collect()
    }

    /// Every pin older than `age`, for the resolver.
    pub fn older_than(&self, age: std::time::Duration) -> Vec<(ReservationId, RemotePin)> {
        self.pins
            .iter()
            .filter(|e| e.value().since.elapsed() >= age)
            .map(|e| (*e.key(), e.value().clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.pins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}
