//! The memory store's tables and the constraints the SQL schemas enforce on them: a batch is
//! checked whole against the tables as it would leave them ([`Tables::check`]), and applied
//! only then ([`Tables::apply`]), so a commit is all or nothing.

use crate::domain::cluster::ShardLease;
use crate::domain::ids::{IdMap, IdSet};
use crate::domain::queue::{TokenRecord, TokenState};
use crate::domain::schedule::{Reservation, ScheduleInfo, Seat};
use crate::domain::seat_plan::SeatPlan;
use crate::domain::{
    ConcertId, Money, PaymentId, ReservationId, ScheduleId, SeatId, TokenId, UserId,
};
use crate::store::{
    IdempotencyRecord, LedgerEntry, OpeningWrite, PaymentRecord, StoreError, WalletRecord, Writes,
};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Every row the store holds, as the SQL schema would. Users, schedules and seats get
/// sequential ids here and are never deleted, so "exists" is a range check and the live-hold
/// index is a vector indexed by seat id.
#[derive(Debug, Default)]
pub(super) struct Tables {
    pub(super) users: BTreeMap<UserId, String>,
    pub(super) wallets: IdMap<UserId, WalletRecord>,
    pub(super) concerts: BTreeMap<ConcertId, String>,
    pub(super) schedules: BTreeMap<ScheduleId, ScheduleInfo>,
    /// Seats of each schedule, in creation order.
    pub(super) seats: IdMap<ScheduleId, Vec<Seat>>,
    /// Plan labels of each schedule's seats, in the order of `seats`; no entry when no seat
    /// of the schedule has any (the SQL stores' NULL columns).
    pub(super) plans: IdMap<ScheduleId, Vec<SeatPlan>>,
    pub(super) reservations: IdMap<ReservationId, Reservation>,
    pub(super) max_reservation: i64,
    /// Reservation ids of each schedule, in commit order.
    pub(super) by_schedule: IdMap<ScheduleId, Vec<ReservationId>>,
    /// The partial unique index `holds_one_live_hold_per_seat`: slot `id - 1` of each seat.
    pub(super) live_holds: Vec<Option<ReservationId>>,
    pub(super) payments: BTreeMap<PaymentId, PaymentRecord>,
    pub(super) paid_reservations: IdSet<ReservationId>,
    pub(super) ledger: BTreeMap<i64, LedgerEntry>,
    pub(super) tokens: IdMap<TokenId, TokenRecord>,
    pub(super) positions: IdMap<u64, TokenId>,
    pub(super) idempotency: HashMap<(UserId, String), IdempotencyRecord>,
    /// The partial unique index `queue_tokens_one_live_per_user`.
    pub(super) live_token: IdMap<UserId, TokenId>,
    pub(super) next_user: i64,
    pub(super) next_concert: i64,
    pub(super) next_schedule: i64,
    pub(super) next_seat: i64,
    /// How many of the next commits to refuse (see [`super::MemoryStore::fail_next_commits`]).
    pub(super) commits_to_fail: u64,
    /// The `shard_lease` table of cluster mode, by shard, under the lease rule of
    /// `domain/cluster/lease.rs`. Memory has no clocks to expire on: a test moves a lease by
    /// taking it.
    pub(super) leases: HashMap<String, ShardLease>,
    /// The `fence_audit` table: (shard, epoch, node) per fenced commit, in commit order.
    pub(super) audit: Vec<(String, u64, String)>,
    /// The `queue_opening` row.
    pub(super) opening: Option<crate::domain::queue::OpeningRecord>,
    /// The `waitlist_entries` rows (`waitlist.rs`).
    pub(super) waitlist: BTreeMap<(ScheduleId, UserId), crate::domain::waitlist::WaitlistEntry>,
    /// The `schedule_cancellations` rows.
    pub(super) cancelled: IdMap<ScheduleId, crate::domain::Timestamp>,
    /// The `tickets` table (API.md §12).
    pub(super) tickets: BTreeMap<crate::domain::TicketId, crate::domain::ticket::Ticket>,
    /// The `ticket_signing_key` row: the generated key's seed, as hex.
    pub(super) ticket_key: Option<String>,
}

pub(super) fn violated(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(format!("constraint violated: {}", what.into()))
}

/// The index of a seat's slot in the live-hold vector (seat ids start at 1).
pub(super) fn slot(seat: SeatId) -> usize {
    usize::try_from(seat.get() - 1).unwrap_or(usize::MAX)
}

impl Tables {
    /// Users get ids 1, 2, … and are never deleted.
    fn user_exists(&self, user: UserId) -> bool {
        user.get() <= self.next_user
    }

    fn schedule_exists(&self, schedule: ScheduleId) -> bool {
        schedule.get() <= self.next_schedule
    }

    /// Every constraint the batch must meet, checked against the tables as the batch would
    /// leave them. Mutates nothing.
    pub(super) fn check(&self, batch: &Writes) -> Result<(), StoreError> {
        self.check_reservations(batch)?;
        for p in &batch.payments {
            if self.payments.contains_key(&p.id) {
                return Err(violated(format!("payment {} exists", p.id)));
            }
            let known = self.reservations.contains_key(&p.reservation)
                || batch.reservations.contains_key(&p.reservation);
            if !known || !self.user_exists(p.user) {
                return Err(violated(format!("payment {} references nothing", p.id)));
            }
            if self.paid_reservations.contains(&p.reservation) {
                return Err(violated(format!(
                    "reservation {} paid twice",
                    p.reservation
                )));
            }
        }
        let mut paid: IdSet<ReservationId> = IdSet::default();
        if let Some(p) = batch.payments.iter().find(|p| !paid.insert(p.reservation)) {
            return Err(violated(format!(
                "reservation {} paid twice",
                p.reservation
            )));
        }
        let missing = batch
            .wallets
            .keys()
            .filter(|u| !self.wallets.contains_key(u))
            .count();
        if missing > 0 {
            // The PostgreSQL store's own words for the same failure.
            return Err(StoreError::Corrupt(format!(
                "{} of {} wallets exist",
                batch.wallets.len() - missing,
                batch.wallets.len()
            )));
        }
        let batch_payments: HashSet<PaymentId> = batch.payments.iter().map(|p| p.id).collect();
        let mut ledger_ids: IdSet<i64> = IdSet::default();
        for l in &batch.ledger {
            if self.ledger.contains_key(&l.id) || !ledger_ids.insert(l.id) {
                return Err(violated(format!("ledger entry {} exists", l.id)));
            }
            if l.amount == Money::ZERO || !self.user_exists(l.user) {
                return Err(violated(format!("ledger entry {} is invalid", l.id)));
            }
            if let Some(p) = l.payment {
                if !self.payments.contains_key(&p) && !batch_payments.contains(&p) {
                    return Err(violated(format!("ledger entry {} names no payment", l.id)));
                }
            }
        }
        self.check_tokens(batch)
    }

    /// Foreign keys and the one-live-hold-per-seat index, released holds before live ones
    /// (as the SQL stores write them).
    fn check_reservations(&self, batch: &Writes) -> Result<(), StoreError> {
        // Seats whose live hold changes owner within this batch: seat → new owner (or none).
        let mut changed: IdMap<SeatId, Option<ReservationId>> = IdMap::default();
        for live in [false, true] {
            for r in batch.reservations.values() {
                if r.status.is_live() != live {
                    continue;
                }
                // As PostgreSQL's plain INSERT and UPDATE would: a new row that exists breaks
                // the primary key, and an update that finds no row would change nothing.
                match (
                    self.reservations.contains_key(&r.id),
                    batch.creates_reservation(r.id),
                ) {
                    (true, true) => {
                        return Err(violated(format!("reservation {} inserted twice", r.id)))
                    }
                    (false, false) => {
                        return Err(violated(format!(
                            "reservation {} updated, never inserted",
                            r.id
                        )))
                    }
                    _ => {}
                }
                let seats = match self.reservations.get(&r.id) {
                    // An existing row keeps its seats: only status and time are updated.
                    Some(stored) => &stored.seats,
                    None => {
                        if !self.user_exists(r.user) || !self.schedule_exists(r.schedule) {
                            return Err(violated(format!(
                                "reservation {} references nothing",
                                r.id
                            )));
                        }
                        &r.seats
                    }
                };
                for seat in seats {
                    let Some(&stored_owner) = self.live_holds.get(slot(*seat)) else {
                        return Err(violated(format!("seat {seat} does not exist")));
                    };
                    let owner = changed.get(seat).copied().unwrap_or(stored_owner);
                    if live {
                        if owner.is_some_and(|o| o != r.id) {
                            return Err(violated(format!("seat {seat} has two live holds")));
                        }
                        changed.insert(*seat, Some(r.id));
                    } else if owner == Some(r.id) {
                        changed.insert(*seat, None);
                    }
                }
            }
        }
        Ok(())
    }

    /// Unique positions and the one-live-token-per-user index, expired tokens first.
    fn check_tokens(&self, batch: &Writes) -> Result<(), StoreError> {
        let mut live_of: IdMap<UserId, Option<TokenId>> = IdMap::default();
        let mut positions: IdMap<u64, TokenId> = IdMap::default();
        for live in [false, true] {
            for t in batch.tokens.values() {
                let is_live = !matches!(t.state, TokenState::Expired { .. });
                if is_live != live {
                    continue;
                }
                match (self.tokens.contains_key(&t.id), batch.creates_token(t.id)) {
                    (true, true) => return Err(violated(format!("token {} inserted twice", t.id))),
                    (false, false) => {
                        return Err(violated(format!("token {} updated, never inserted", t.id)))
                    }
                    _ => {}
                }
                // An existing row keeps its user and position: only its state is updated.
                let user = match self.tokens.get(&t.id) {
                    Some(stored) => stored.user,
                    None => {
                        if !self.user_exists(t.user) {
                            return Err(violated(format!("token of unknown user {}", t.user)));
                        }
                        let taken = self
                            .positions
                            .get(&t.position)
                            .or_else(|| positions.get(&t.position));
                        if taken.is_some_and(|other| *other != t.id) {
                            return Err(violated(format!("position {} is taken", t.position)));
                        }
                        positions.insert(t.position, t.id);
                        t.user
                    }
                };
                let current = live_of
                    .get(&user)
                    .copied()
                    .unwrap_or_else(|| self.live_token.get(&user).copied());
                if live {
                    if current.is_some_and(|c| c != t.id) {
                        return Err(violated(format!("user {user} has two live tokens")));
                    }
                    live_of.insert(user, Some(t.id));
                } else if current == Some(t.id) {
                    live_of.insert(user, None);
                }
            }
        }
        Ok(())
    }

    /// Applies a checked batch.
    pub(super) fn apply(&mut self, batch: &Writes) {
        for live in [false, true] {
            for r in batch.reservations.values() {
                if r.status.is_live() != live {
                    continue;
                }
                let stored = match self.reservations.entry(r.id) {
                    Entry::Occupied(entry) => {
                        let stored = entry.into_mut();
                        stored.status = r.status;
                        stored.updated_at = r.updated_at;
                        stored
                    }
                    Entry::Vacant(entry) => {
                        self.by_schedule.entry(r.schedule).or_default().push(r.id);
                        self.max_reservation = self.max_reservation.max(r.id.get());
                        entry.insert(Reservation {
                            pinned: false,
                            ..r.clone()
                        })
                    }
                };
                let id = stored.id;
                for seat in &stored.seats {
                    // Checked to exist before anything was applied.
                    if let Some(owner) = self.live_holds.get_mut(slot(*seat)) {
                        if live {
                            *owner = Some(id);
                        } else if *owner == Some(id) {
                            *owner = None;
                        }
                    }
                }
            }
        }
        self.tickets
            .extend(batch.tickets.values().map(|t| (t.id, t.clone())));
        for p in &batch.payments {
            self.paid_reservations.insert(p.reservation);
            self.payments.insert(p.id, p.clone());
        }
        for w in batch.wallets.values() {
            self.wallets.insert(w.user, *w);
        }
        for r in &batch.idempotency {
            // The first answer stays the answer, as ON CONFLICT DO NOTHING does.
            self.idempotency
                .entry((r.user, r.key.clone()))
                .or_insert_with(|| r.clone());
        }
        for l in &batch.ledger {
            self.ledger.insert(l.id, l.clone());
        }
        // The draw's moves first: a token written in the same batch keeps its new position.
        for (id, &position) in &batch.moved {
            if let Some(stored) = self.tokens.get_mut(id) {
                self.positions.remove(&stored.position);
                stored.position = position;
                self.positions.insert(position, *id);
            }
        }
        match &batch.opening {
            Some(OpeningWrite::Store(record)) => self.opening = Some(record.clone()),
            Some(OpeningWrite::Remove) => self.opening = None,
            None => {}
        }
        self.apply_tokens(batch);
    }

    /// Ended tokens before live ones, as the one-live-token-per-user index needs.
    fn apply_tokens(&mut self, batch: &Writes) {
        for live in [false, true] {
            for t in batch.tokens.values() {
                let is_live = !matches!(t.state, TokenState::Expired { .. });
                if is_live != live {
                    continue;
                }
                let stored = self
                    .tokens
                    .entry(t.id)
                    .and_modify(|stored| stored.state = t.state)
                    .or_insert(*t);
                let (id, user, position) = (stored.id, stored.user, stored.position);
                self.positions.insert(position, id);
                if live {
                    self.live_token.insert(user, id);
                } else if self.live_token.get(&user) == Some(&id) {
                    self.live_token.remove(&user);
                }
            }
        }
    }
}
