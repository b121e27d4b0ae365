//! One schedule's seat map and its reservations: all-or-nothing holds, expiry, cancellation,
//! and settlement on payment.
//!
//! Vocabulary (after TigerBeetle's two-phase transfers): a reservation is a *pending* hold on
//! its seats; payment *posts* it (the seats are sold), cancellation *voids* it, and the hold
//! time running out *expires* it. Posted, voided and expired are final.

use super::ids::IdMap;
use super::seat_plan::{schedule_plan, SchedulePlan, SeatPlan};
use super::waitlist::{Waitlist, WaitlistEntry};
use super::{ConcertId, Money, ReservationId, ScheduleId, SeatId, Timestamp, UserId};
use std::time::Duration;

pub use super::reservation::{BookingRefusal, Reservation, ReservationStatus};

/// A request to hold seats, parsed at the edge: who asks, on which schedule, for which seats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    pub user: UserId,
    pub concert: ConcertId,
    pub schedule: ScheduleId,
    pub seats: Vec<SeatId>,
}

/// What a schedule is, as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleInfo {
    pub id: ScheduleId,
    pub concert_id: ConcertId,
    pub concert_name: String,
    pub concert_at: Timestamp,
    /// When booking opens.
    pub reservation_at: Timestamp,
}

/// A seat of the map: fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub id: SeatId,
    pub number: i32,
    pub price: Money,
}

/// Who has a seat right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatState {
    Available,
    Held(ReservationId),
    Sold(ReservationId),
}

/// Limits a schedule applies to a hold.
#[derive(Debug, Clone, Copy)]
pub struct HoldPolicy {
    pub hold_ttl: Duration,
    pub max_seats_per_user: u32,
}

/// A schedule's whole live state. Only its `ScheduleActor` mutates it.
#[derive(Debug, Clone)]
pub struct ScheduleBook {
    pub info: ScheduleInfo,
    seats: Vec<Seat>,
    /// The seats' plan labels, in the order of `seats`; `None` when no seat has any.
    plan: SchedulePlan,
    states: Vec<SeatState>,
    index: IdMap<SeatId, usize>,
    /// Every pending reservation, and the settled ones not yet [evicted](ScheduleBook::evict).
    reservations: IdMap<ReservationId, Reservation>,
    /// Seats each user holds or owns on this schedule, for the per-user limit. Kept apart from
    /// `reservations`: a paid reservation's seats still count once it is evicted. Users at
    /// zero have no entry.
    seats_by_user: IdMap<UserId, u32>,
    available: usize,
    /// The waiting list (`waitlist.rs`): while an entry waits, no available seat is on
    /// general sale.
    pub waitlist: Waitlist,
    /// The operator cancelled the performance: nothing more is sold.
    pub cancelled: bool,
    /// The tickets of its paid seats (API.md §12): the same actor decides check-ins,
    /// transfers and refunds, one after the other.
    pub tickets: crate::domain::ticket::TicketBook,
}

impl ScheduleBook {
    /// A book with every seat available.
    pub fn new(info: ScheduleInfo, seats: Vec<Seat>) -> ScheduleBook {
        ScheduleBook::planned(info, seats, Vec::new())
    }

    /// A book with every seat available and the seats' plan labels: `plan` is in the order of
    /// `seats`, one per seat, or empty when no seat has a label.
    pub fn planned(
        info: ScheduleInfo,
        mut seats: Vec<Seat>,
        mut plan: Vec<SeatPlan>,
    ) -> ScheduleBook {
        let plan = if plan.is_empty() {
            seats.sort_by_key(|s| (s.number, s.id));
            None
        } else {
            // Sorted together, so each seat keeps its own labels; a short list means the
            // seats past its end have none.
            debug_assert_eq!(plan.len(), seats.len(), "one plan entry per seat");
            plan.resize(seats.len(), SeatPlan::default());
            let mut both: Vec<(Seat, SeatPlan)> = seats.into_iter().zip(plan).collect();
            both.sort_by_key(|(s, _)| (s.number, s.id));
            let (sorted, plan): (Vec<Seat>, Vec<SeatPlan>) = both.into_iter().unzip();
            seats = sorted;
            schedule_plan(plan)
        };
        let index = seats.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let states = vec![SeatState::Available; seats.len()];
        let available = seats.len();
        ScheduleBook {
            info,
            seats,
            plan,
            states,
            index,
            reservations: IdMap::default(),
            seats_by_user: IdMap::default(),
            available,
            waitlist: Waitlist::default(),
            cancelled: false,
            tickets: Default::default(),
        }
    }

    /// Rebuilds a book from stored reservations (any status). A live reservation whose seat is
    /// already taken is reported instead of applied: the store's unique index makes that
    /// impossible, so it means corruption.
    pub fn restore(
        info: ScheduleInfo,
        seats: Vec<Seat>,
        plan: Vec<SeatPlan>,
        reservations: Vec<Reservation>,
    ) -> Result<ScheduleBook, SeatId> {
        let mut book = ScheduleBook::planned(info, seats, plan);
        for reservation in reservations {
            if reservation.status.is_live() {
                for seat in &reservation.seats {
                    let Some(&i) = book.index.get(seat) else {
                        return Err(*seat);
                    };
                    if book.states[i] != SeatState::Available {
                        return Err(*seat);
                    }
                    book.states[i] = match reservation.status {
                        ReservationStatus::Paid => SeatState::Sold(reservation.id),
                        _ => SeatState::Held(reservation.id),
                    };
                    book.available -= 1;
                }
                *book.seats_by_user.entry(reservation.user).or_default() +=
                    reservation.seats.len() as u32;
            }
            book.reservations.insert(
                reservation.id,
                Reservation {
                    pinned: false,
                    ..reservation
                },
            );
        }
        book.check_invariants();
        Ok(book)
    }

    pub fn seats(&self) -> impl Iterator<Item = (&Seat, SeatState)> {
        self.seats.iter().zip(self.states.iter().copied())
    }

    /// The seats' plan labels in the order of [`ScheduleBook::seats`], shared: `None` when no
    /// seat has any.
    pub fn plan(&self) -> &SchedulePlan {
        &self.plan
    }

    /// A seat's row label, if its plan has one.
    pub fn seat_row(&self, id: SeatId) -> Option<&str> {
        let i = *self.index.get(&id)?;
        self.plan.as_ref()?.get(i)?.row()
    }

    pub fn seat(&self, id: SeatId) -> Option<&Seat> {
        self.index.get(&id).map(|&i| &self.seats[i])
    }

    pub fn available_count(&self) -> usize {
        self.available
    }

    pub fn reservation(&self, id: ReservationId) -> Option<&Reservation> {
        self.reservations.get(&id)
    }

    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    /// How many reservations the book keeps in memory (pending, and settled not yet evicted).
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Seats `user` holds or owns here, as the per-user limit counts them.
    pub fn seats_of(&self, user: UserId) -> u32 {
        self.seats_by_user.get(&user).copied().unwrap_or(0)
    }

    /// Forgets a settled (paid, cancelled or expired) reservation: its state is final and
    /// stored, so reads of it can be answered from the store. A pending reservation — pinned
    /// by a payment or not — stays. The seats of a paid one stay sold and still count for
    /// its user's limit: the seat states and the per-user counts are not the reservation.
    pub fn evict(&mut self, id: ReservationId) -> bool {
        let settled = self
            .reservations
            .get(&id)
            .is_some_and(|r| r.status != ReservationStatus::Pending && !r.pinned);
        if settled {
            self.reservations.remove(&id);
        }
        settled
    }

    /// Moves one seat of the per-user count from `from` to `to` (a ticket transferred), if `to`
    /// stays within `limit`; the seat's own state does not change.
    pub fn move_seat_count(&mut self, from: UserId, to: UserId, limit: u32) -> bool {
        if self.seats_of(to) + 1 > limit {
            return false;
        }
        *self.seats_by_user.entry(to).or_default() += 1;
        if let Some(count) = self.seats_by_user.get_mut(&from) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.seats_by_user.remove(&from);
            }
        }
        true
    }

    /// Frees the sold seats of a refunded reservation (its record may have left memory: the
    /// seats and the buyer come from its tickets). The reservation, if still here, becomes
    /// `Refunded`.
    pub fn refund_sold(
        &mut self,
        id: ReservationId,
        seats: &[SeatId],
        buyer: UserId,
        now: Timestamp,
    ) {
        let mut freed = 0u32;
        for seat in seats {
            if let Some(&i) = self.index.get(seat) {
                if self.states[i] == SeatState::Sold(id) {
                    self.states[i] = SeatState::Available;
                    freed += 1;
                }
            }
        }
        self.available += freed as usize;
        if let Some(count) = self.seats_by_user.get_mut(&buyer) {
            *count = count.saturating_sub(freed);
            if *count == 0 {
                self.seats_by_user.remove(&buyer);
            }
        }
        if let Some(r) = self.reservations.get_mut(&id) {
            r.status = ReservationStatus::Refunded;
            r.updated_at = now;
        }
        self.check_invariants();
    }

    /// Whether booking is open at `now`: from `reservation_at` until the concert starts.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.info.reservation_at <= now && now < self.info.concert_at
    }

    /// The reservation holding or owning `seat`, if any.
    pub fn holder(&self, seat: SeatId) -> Option<ReservationId> {
        match self.states[*self.index.get(&seat)?] {
            SeatState::Available => None,
            SeatState::Held(id) | SeatState::Sold(id) => Some(id),
        }
    }

    /// Whether [`ScheduleBook::hold`] would hold these seats now, changing nothing: the
    /// caller reserves room for the write first, and only then holds.
    pub fn check_hold(
        &self,
        user: UserId,
        seat_ids: &[SeatId],
        now: Timestamp,
        policy: HoldPolicy,
    ) -> Result<(), BookingRefusal> {
        self.positions_to_hold(user, seat_ids, now, policy, false)
            .map(drop)
    }

    /// Whether an available seat is on general sale: not while the waiting list has an entry
    /// waiting (its seats), nor once the performance is cancelled.
    pub fn on_sale(&self) -> bool {
        !self.cancelled && !self.waitlist.has_waiting()
    }

    /// Seats a buyer could hold now: the catalog's count.
    pub fn on_sale_count(&self) -> usize {
        if self.on_sale() {
            self.available
        } else {
            0
        }
    }

    /// The seats' positions if every one can be held by `user` now.
    fn positions_to_hold(
        &self,
        user: UserId,
        seat_ids: &[SeatId],
        now: Timestamp,
        policy: HoldPolicy,
        for_offer: bool,
    ) -> Result<Vec<usize>, BookingRefusal> {
        if seat_ids.is_empty() {
            return Err(BookingRefusal::NoSeats);
        }
        let limit = policy.max_seats_per_user;
        if seat_ids.len() > limit as usize {
            return Err(BookingRefusal::SeatLimitExceeded { limit });
        }
        let mut positions = Vec::with_capacity(seat_ids.len());
        for (n, seat) in seat_ids.iter().enumerate() {
            if seat_ids[..n].contains(seat) {
                return Err(BookingRefusal::DuplicateSeat { seat: *seat });
            }
            let i = *self
                .index
                .get(seat)
                .ok_or(BookingRefusal::SeatNotFound { seat: *seat })?;
            positions.push(i);
        }
        if self.cancelled {
            return Err(BookingRefusal::PerformanceCancelled);
        }
        if !self.is_open(now) {
            return Err(BookingRefusal::NotOpen);
        }
        let owned = self.seats_of(user);
        if owned + seat_ids.len() as u32 > limit {
            return Err(BookingRefusal::SeatLimitExceeded { limit });
        }
        let withheld = !for_offer && !self.on_sale();
        if let Some(&i) = positions
            .iter()
            .find(|&&i| withheld || self.states[i] != SeatState::Available)
        {
            return Err(BookingRefusal::SeatUnavailable {
                seat: self.seats[i].id,
            });
        }
        Ok(positions)
    }

    /// Holds every requested seat for `user`, or none (all or nothing).
    pub fn hold(
        &mut self,
        id: ReservationId,
        user: UserId,
        seat_ids: &[SeatId],
        now: Timestamp,
        policy: HoldPolicy,
    ) -> Result<&Reservation, BookingRefusal> {
        self.hold_as(id, user, seat_ids, now, policy, false)
    }

    /// Holds seats the waiting list offers to `user`: as [`ScheduleBook::hold`], but the
    /// available seats the list keeps off general sale may be taken.
    pub fn hold_offer(
        &mut self,
        id: ReservationId,
        user: UserId,
        seat_ids: &[SeatId],
        now: Timestamp,
        policy: HoldPolicy,
    ) -> Result<&Reservation, BookingRefusal> {
        self.hold_as(id, user, seat_ids, now, policy, true)
    }

    fn hold_as(
        &mut self,
        id: ReservationId,
        user: UserId,
        seat_ids: &[SeatId],
        now: Timestamp,
        policy: HoldPolicy,
        for_offer: bool,
    ) -> Result<&Reservation, BookingRefusal> {
        let positions = self.positions_to_hold(user, seat_ids, now, policy, for_offer)?;
        let total = Money::sum(positions.iter().map(|&i| self.seats[i].price))
            // Unreachable with at most `limit` seats of i64 prices unless prices are absurd;
            // refuse rather than wrap.
            .ok_or(BookingRefusal::SeatUnavailable { seat: seat_ids[0] })?;
        for &i in &positions {
            self.states[i] = SeatState::Held(id);
        }
        self.available -= positions.len();
        *self.seats_by_user.entry(user).or_default() += seat_ids.len() as u32;
        let reservation = Reservation {
            id,
            user,
            schedule: self.info.id,
            seats: seat_ids.to_vec(),
            total,
            created_at: now,
            expires_at: now.plus(policy.hold_ttl),
            status: ReservationStatus::Pending,
            updated_at: now,
            pinned: false,
        };
        self.check_invariants();
        Ok(self.reservations.entry(id).or_insert(reservation))
    }

    /// The reservation if it is `user`'s; another user's is "not found", never "forbidden".
    pub fn owned(&self, id: ReservationId, user: UserId) -> Result<&Reservation, BookingRefusal> {
        self.reservations
            .get(&id)
            .filter(|r| r.user == user)
            .ok_or(BookingRefusal::ReservationNotFound)
    }

    /// Voids a pending, unpinned reservation of `user`: its seats are free at once.
    pub fn cancel(
        &mut self,
        id: ReservationId,
        user: UserId,
        now: Timestamp,
    ) -> Result<&Reservation, BookingRefusal> {
        let r = self.owned(id, user)?;
        if let Some(refusal) = r.status.refusal() {
            return Err(refusal);
        }
        if r.pinned {
            return Err(BookingRefusal::PaymentInProgress);
        }
        self.release(id, ReservationStatus::Cancelled, now);
        Ok(&self.reservations[&id])
    }

    /// Expires a pending hold whose time is up. `None` when there is nothing to expire: already
    /// settled, not yet due, or pinned by a payment in flight (its unpin will expire it).
    pub fn expire(&mut self, id: ReservationId, now: Timestamp) -> Option<&Reservation> {
        let r = self.reservations.get(&id)?;
        if r.status != ReservationStatus::Pending || r.pinned || now < r.expires_at {
            return None;
        }
        self.release(id, ReservationStatus::Expired, now);
        Some(&self.reservations[&id])
    }

    /// Every pending, unpinned hold due at `now`, expired. Used after a restart.
    pub fn expire_due(&mut self, now: Timestamp) -> Vec<ReservationId> {
        let mut due: Vec<ReservationId> = self
            .reservations
            .values()
            .filter(|r| r.status == ReservationStatus::Pending && !r.pinned && r.expires_at <= now)
            .map(|r| r.id)
            .collect();
        due.sort();
        for id in &due {
            self.release(*id, ReservationStatus::Expired, now);
        }
        due
    }

    /// Pins a pending hold of `user` for payment: from now until `unpin` or `post`, expiry
    /// waits. Exactly one of "paid" and "expired" can win, because this check and expiry are
    /// serialized by the one actor that owns the book.
    pub fn pin(
        &mut self,
        id: ReservationId,
        user: UserId,
        now: Timestamp,
    ) -> Result<&Reservation, BookingRefusal> {
        let r = self.owned(id, user)?;
        if let Some(refusal) = r.status.refusal() {
            return Err(refusal);
        }
        if r.pinned {
            return Err(BookingRefusal::PaymentInProgress);
        }
        if now >= r.expires_at {
            self.release(id, ReservationStatus::Expired, now);
            return Err(BookingRefusal::Expired);
        }
        let r = self
            .reservations
            .get_mut(&id)
            .expect("checked by owned() above");
        r.pinned = true;
        Ok(r)
    }

    /// Releases a pin after a payment that did not happen. A hold that came due meanwhile is
    /// left for `expire`, which the caller runs next.
    pub fn unpin(&mut self, id: ReservationId) {
        if let Some(r) = self.reservations.get_mut(&id) {
            r.pinned = false;
        }
    }

    /// Pins a pending hold again after the book was rebuilt from the store (pins live in
    /// memory only): a payment another node is committing for it must still find it held.
    pub fn repin(&mut self, id: ReservationId) {
        if let Some(r) = self.reservations.get_mut(&id) {
            if r.status == ReservationStatus::Pending {
                r.pinned = true;
            }
        }
    }

    /// Posts a pinned hold after its payment is durable: the seats are sold.
    pub fn post(&mut self, id: ReservationId, now: Timestamp) -> Option<&Reservation> {
        let r = self.reservations.get_mut(&id)?;
        if r.status != ReservationStatus::Pending {
            return None;
        }
        r.status = ReservationStatus::Paid;
        r.pinned = false;
        r.updated_at = now;
        for seat in &r.seats {
            let i = self.index[seat];
            debug_assert_eq!(self.states[i], SeatState::Held(id));
            self.states[i] = SeatState::Sold(id);
        }
        self.check_invariants();
        self.reservations.get(&id)
    }

    /// What the reservation looks like once paid (for the payment's durable write).
    pub fn as_paid(reservation: &Reservation, now: Timestamp) -> Reservation {
        Reservation {
            status: ReservationStatus::Paid,
            updated_at: now,
            pinned: false,
            ..reservation.clone()
        }
    }

    /// Cancels the whole performance (API.md §12): nothing more is held, every pending and
    /// unpinned hold is voided, the waiting list is emptied. Gives the holds voided, the
    /// entries removed, and how many holds a payment still pins (they settle first).
    pub fn cancel_performance(
        &mut self,
        now: Timestamp,
    ) -> (Vec<Reservation>, Vec<WaitlistEntry>, usize) {
        self.cancelled = true;
        let mut pending: Vec<(ReservationId, bool)> = self
            .reservations
            .values()
            .filter(|r| r.status == ReservationStatus::Pending)
            .map(|r| (r.id, r.pinned))
            .collect();
        pending.sort();
        let pinned = pending.iter().filter(|(_, p)| *p).count();
        let mut voided = Vec::new();
        for (id, _) in pending.into_iter().filter(|(_, p)| !p) {
            self.release(id, ReservationStatus::Cancelled, now);
            voided.push(self.reservations[&id].clone());
        }
        let removed = self
            .waitlist
            .users()
            .into_iter()
            .filter_map(|u| self.waitlist.leave(u).ok())
            .collect();
        (voided, removed, pinned)
    }

    /// Whether `r` (as stored) is paid and its seats are still sold to it here.
    pub fn is_sold_to(&self, r: &Reservation) -> bool {
        let in_memory = self.reservations.get(&r.id).map(|m| m.status);
        in_memory.is_none_or(|s| s == ReservationStatus::Paid)
            && r.status == ReservationStatus::Paid
            && r.seats.iter().all(|seat| {
                self.index
                    .get(seat)
                    .is_some_and(|&i| self.states[i] == SeatState::Sold(r.id))
            })
    }

    /// A paid reservation refunded: its seats are no longer sold (a cancelled performance
    /// sells them to nobody). `None` unless [`ScheduleBook::is_sold_to`].
    pub fn refund(&mut self, r: &Reservation, now: Timestamp) -> Option<Reservation> {
        if !self.is_sold_to(r) {
            return None;
        }
        for seat in &r.seats {
            self.states[self.index[seat]] = SeatState::Available;
        }
        self.available += r.seats.len();
        if let Some(count) = self.seats_by_user.get_mut(&r.user) {
            *count = count.saturating_sub(r.seats.len() as u32);
            if *count == 0 {
                self.seats_by_user.remove(&r.user);
            }
        }
        let refunded = Reservation {
            status: ReservationStatus::Refunded,
            updated_at: now,
            pinned: false,
            ..r.clone()
        };
        if let Some(kept) = self.reservations.get_mut(&r.id) {
            *kept = refunded.clone();
        }
        self.check_invariants();
        Some(refunded)
    }

    fn release(&mut self, id: ReservationId, to: ReservationStatus, now: Timestamp) {
        let r = self
            .reservations
            .get_mut(&id)
            .expect("callers looked the reservation up");
        debug_assert_eq!(r.status, ReservationStatus::Pending);
        r.status = to;
        r.pinned = false;
        r.updated_at = now;
        for seat in &r.seats {
            let i = self.index[seat];
            debug_assert_eq!(self.states[i], SeatState::Held(id));
            self.states[i] = SeatState::Available;
        }
        self.available += r.seats.len();
        let (user, released) = (r.user, r.seats.len() as u32);
        if let Some(count) = self.seats_by_user.get_mut(&user) {
            *count -= released;
            if *count == 0 {
                // A user who holds nothing here costs nothing here.
                self.seats_by_user.remove(&user);
            }
        }
        self.check_invariants();
    }

    /// held + sold + available = capacity, and every live reservation's seats point back at it
    /// (a seat's state names one reservation, so no seat is in two live holds).
    fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            assert_eq!(self.states.len(), self.seats.len(), "one state per seat");
            assert!(
                self.available <= self.seats.len(),
                "more free than capacity"
            );
            let live_seats: usize = self
                .reservations
                .values()
                .filter(|r| r.status.is_live())
                .map(|r| r.seats.len())
                .sum();
            // Evicted paid reservations still occupy seats, so live ones can only be fewer.
            assert!(
                live_seats <= self.seats.len() - self.available,
                "live reservations claim more seats than are held or sold"
            );
            let free = self
                .states
                .iter()
                .filter(|s| **s == SeatState::Available)
                .count();
            assert_eq!(free, self.available, "available count drifted");
            for r in self.reservations.values().filter(|r| r.status.is_live()) {
                for seat in &r.seats {
                    let state = self.states[self.index[seat]];
                    assert!(
                        state == SeatState::Held(r.id) || state == SeatState::Sold(r.id),
                        "seat {seat} of reservation {} is {state:?}",
                        r.id
                    );
                }
            }
        }
    }
}

/// One of a user's reservations, as a request names it: to read, cancel, pay or check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserReservation {
    pub user: UserId,
    pub reservation: ReservationId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    const TTL: Duration = Duration::from_secs(300);
    const POLICY: HoldPolicy = HoldPolicy {
        hold_ttl: TTL,
        max_seats_per_user: 4,
    };

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn book(seats: i64) -> ScheduleBook {
        let info = ScheduleInfo {
            id: ScheduleId::new(1).unwrap(),
            concert_id: ConcertId::new(1).unwrap(),
            concert_name: "콘서트".into(),
            concert_at: t(10_000_000),
            reservation_at: t(0),
        };
        let seats = (1..=seats)
            .map(|n| Seat {
                id: SeatId::new(100 + n).unwrap(),
                number: n as i32,
                price: Money::new(10_000).unwrap(),
            })
            .collect();
        ScheduleBook::new(info, seats)
    }

    fn seat(n: i64) -> SeatId {
        SeatId::new(100 + n).unwrap()
    }
    fn user(n: i64) -> UserId {
        UserId::new(n).unwrap()
    }
    fn rid(n: i64) -> ReservationId {
        ReservationId::new(n).unwrap()
    }

    #[test]
    fn a_hold_is_all_or_nothing() {
        let mut b = book(10);
        b.hold(rid(1), user(1), &[seat(2)], t(1), POLICY).unwrap();
        let err = b.hold(rid(2), user(2), &[seat(1), seat(2), seat(3)], t(1), POLICY);
        assert_eq!(
            err.unwrap_err(),
            BookingRefusal::SeatUnavailable { seat: seat(2) }
        );
        assert_eq!(b.available_count(), 9);
        assert!(b
            .hold(rid(3), user(2), &[seat(1), seat(3)], t(1), POLICY)
            .is_ok());
        assert_eq!(b.available_count(), 7);
    }

    #[test]
    fn requests_are_validated_before_anything_is_held() {
        let mut b = book(10);
        assert_eq!(
            b.hold(rid(1), user(1), &[], t(1), POLICY).unwrap_err(),
            BookingRefusal::NoSeats
        );
        assert_eq!(
            b.hold(rid(1), user(1), &[seat(1), seat(1)], t(1), POLICY)
                .unwrap_err(),
            BookingRefusal::DuplicateSeat { seat: seat(1) }
        );
        assert_eq!(
            b.hold(
                rid(1),
                user(1),
                &[seat(1), SeatId::new(5).unwrap()],
                t(1),
                POLICY
            )
            .unwrap_err(),
            BookingRefusal::SeatNotFound {
                seat: SeatId::new(5).unwrap()
            }
        );
        assert_eq!(b.available_count(), 10);
    }

    #[test]
    fn the_per_user_limit_counts_what_the_user_already_has() {
        let mut b = book(10);
        b.hold(rid(1), user(1), &[seat(1), seat(2), seat(3)], t(1), POLICY)
            .unwrap();
        assert_eq!(
            b.hold(rid(2), user(1), &[seat(4), seat(5)], t(1), POLICY)
                .unwrap_err(),
            BookingRefusal::SeatLimitExceeded { limit: 4 }
        );
        b.cancel(rid(1), user(1), t(2)).unwrap();
        assert!(b
            .hold(rid(3), user(1), &[seat(4), seat(5)], t(2), POLICY)
            .is_ok());
    }

    /// `check_hold` refuses exactly what `hold` would, for the same reason: the actor refuses
    /// on its word before it reserves room for a write (and answers at once when the refusal
    /// is durable), so a `check_hold` that said yes to everything would change every refusal.
    #[test]
    fn check_hold_refuses_what_hold_refuses() {
        let mut b = book(10);
        b.hold(rid(1), user(1), &[seat(2)], t(1), POLICY).unwrap();
        let over_limit: Vec<SeatId> = (3..=7).map(seat).collect();
        for seats in [
            vec![],
            vec![seat(1), seat(1)],
            vec![seat(1), seat(2)],
            vec![SeatId::new(5).unwrap()],
            over_limit,
        ] {
            let checked = b.check_hold(user(2), &seats, t(1), POLICY);
            assert!(checked.is_err(), "{seats:?} cannot be held");
            let held = b.hold(rid(2), user(2), &seats, t(1), POLICY).map(drop);
            assert_eq!(checked, held, "{seats:?}");
        }
        assert_eq!(b.check_hold(user(2), &[seat(1)], t(1), POLICY), Ok(()));
    }

    /// The limit is the most a user may hold, not one less: exactly `limit` seats are held, in
    /// one request or across several, and one more is refused.
    #[test]
    fn a_user_may_hold_exactly_the_limit_and_no_more() {
        let limit = POLICY.max_seats_per_user;
        let seats: Vec<SeatId> = (1..=i64::from(limit) + 1).map(seat).collect();
        let (up_to_limit, one_more) = seats.split_at(limit as usize);
        let mut b = book(10);
        assert_eq!(
            b.hold(rid(1), user(1), &seats, t(1), POLICY).unwrap_err(),
            BookingRefusal::SeatLimitExceeded { limit }
        );
        b.hold(rid(2), user(1), up_to_limit, t(1), POLICY)
            .expect("exactly the limit in one request");
        let (last, first) = up_to_limit.split_last().expect("the limit is at least one");
        let mut b = book(10);
        b.hold(rid(1), user(2), first, t(1), POLICY)
            .expect("below the limit");
        b.hold(rid(2), user(2), &[*last], t(1), POLICY)
            .expect("the seat that reaches the limit");
        assert_eq!(
            b.hold(rid(3), user(2), one_more, t(1), POLICY).unwrap_err(),
            BookingRefusal::SeatLimitExceeded { limit }
        );
        assert_eq!(b.seats_of(user(2)), limit);
    }

    #[test]
    fn booking_is_open_only_between_reservation_at_and_the_concert() {
        let mut b = book(3);
        b.info.reservation_at = t(100);
        assert_eq!(
            b.hold(rid(1), user(1), &[seat(1)], t(99), POLICY)
                .unwrap_err(),
            BookingRefusal::NotOpen
        );
        assert_eq!(
            b.hold(rid(1), user(1), &[seat(1)], t(10_000_000), POLICY)
                .unwrap_err(),
            BookingRefusal::NotOpen
        );
        assert!(b.hold(rid(1), user(1), &[seat(1)], t(100), POLICY).is_ok());
    }

    #[test]
    fn a_hold_expires_exactly_at_its_ttl() {
        let mut b = book(3);
        b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
        let due = TTL.as_millis() as i64;
        assert!(b.expire(rid(1), t(due - 1)).is_none());
        assert_eq!(
            b.expire(rid(1), t(due)).unwrap().status,
            ReservationStatus::Expired
        );
        assert_eq!(b.available_count(), 3);
        assert!(
            b.expire(rid(1), t(due + 1)).is_none(),
            "expiry happens once"
        );
    }

    #[test]
    fn a_pinned_hold_cannot_expire_and_exactly_one_outcome_wins() {
        let mut b = book(3);
        b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
        let due = t(TTL.as_millis() as i64);
        b.pin(rid(1), user(1), t(10)).unwrap();
        assert!(b.expire(rid(1), due).is_none(), "pinned: expiry waits");
        assert_eq!(
            b.pin(rid(1), user(1), t(11)).unwrap_err(),
            BookingRefusal::PaymentInProgress
        );
        assert_eq!(b.post(rid(1), due).unwrap().status, ReservationStatus::Paid);
        assert!(b.expire(rid(1), due).is_none());
        assert_eq!(
            b.pin(rid(1), user(1), due).unwrap_err(),
            BookingRefusal::AlreadyPaid
        );
        assert_eq!(b.seats().next().unwrap().1, SeatState::Sold(rid(1)));
    }

    #[test]
    fn an_unpinned_hold_past_due_expires_on_unpin() {
        let mut b = book(3);
        b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
        b.pin(rid(1), user(1), t(10)).unwrap();
        let late = t(TTL.as_millis() as i64 + 5);
        b.unpin(rid(1));
        assert_eq!(
            b.expire(rid(1), late).unwrap().status,
            ReservationStatus::Expired
        );
        assert_eq!(
            b.pin(rid(1), user(1), late).unwrap_err(),
            BookingRefusal::Expired
        );
    }

    #[test]
    fn paying_after_the_hold_time_expires_it() {
        let mut b = book(3);
        b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
        let due = t(TTL.as_millis() as i64);
        assert_eq!(
            b.pin(rid(1), user(1), due).unwrap_err(),
            BookingRefusal::Expired
        );
        assert_eq!(b.available_count(), 3);
    }

    #[test]
    fn another_users_reservation_is_not_found() {
        let mut b = book(3);
        b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
        assert_eq!(
            b.pin(rid(1), user(2), t(1)).unwrap_err(),
            BookingRefusal::ReservationNotFound
        );
        assert_eq!(
            b.cancel(rid(1), user(2), t(1)).unwrap_err(),
            BookingRefusal::ReservationNotFound
        );
    }

    #[test]
    fn each_seat_keeps_its_own_plan_labels_when_the_book_sorts_its_seats() {
        let info = book(0).info;
        let seat_numbered = |id: i64, number: i32| Seat {
            id: SeatId::new(id).unwrap(),
            number,
            price: Money::new(1).unwrap(),
        };
        let grade = |g: &str| SeatPlan::new(Some(g.into()), None, None, None).unwrap();
        let seats = vec![
            seat_numbered(1, 3),
            seat_numbered(2, 1),
            seat_numbered(3, 2),
        ];
        let b = ScheduleBook::planned(
            info.clone(),
            seats.clone(),
            vec![grade("S"), grade("VIP"), SeatPlan::default()],
        );
        let numbers: Vec<i32> = b.seats().map(|(s, _)| s.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        let plan = b.plan().as_ref().expect("two seats have a grade");
        let grades: Vec<Option<&str>> = plan.iter().map(SeatPlan::grade).collect();
        assert_eq!(grades, [Some("VIP"), None, Some("S")]);
        let unlabelled = ScheduleBook::planned(info, seats, vec![SeatPlan::default(); 3]);
        assert!(unlabelled.plan().is_none(), "no label, no plan");
    }

    #[test]
    fn restore_rebuilds_seat_states() {
        let mut b = book(5);
        b.hold(rid(1), user(1), &[seat(1), seat(2)], t(0), POLICY)
            .unwrap();
        b.pin(rid(1), user(1), t(1)).unwrap();
        b.post(rid(1), t(2)).unwrap();
        b.hold(rid(2), user(2), &[seat(3)], t(3), POLICY).unwrap();
        b.hold(rid(3), user(3), &[seat(4)], t(3), POLICY).unwrap();
        b.cancel(rid(3), user(3), t(4)).unwrap();
        let all: Vec<Reservation> = b.reservations().cloned().collect();
        let seats = b.seats().map(|(s, _)| s.clone()).collect();
        let restored =
            ScheduleBook::restore(b.info.clone(), seats, Vec::new(), all.clone()).unwrap();
        let states: Vec<SeatState> = restored.seats().map(|(_, s)| s).collect();
        assert_eq!(states, b.seats().map(|(_, s)| s).collect::<Vec<_>>());
        assert_eq!(restored.available_count(), 2);
        let mut doubled = all;
        doubled.push(Reservation {
            id: rid(9),
            ..b.reservation(rid(2)).unwrap().clone()
        });
        let seats = b.seats().map(|(s, _)| s.clone()).collect();
        assert_eq!(
            ScheduleBook::restore(b.info.clone(), seats, Vec::new(), doubled).unwrap_err(),
            seat(3)
        );
    }

    #[test]
    fn only_settled_reservations_are_evicted_and_a_paid_ones_seats_still_count() {
        let mut b = book(5);
        b.hold(rid(1), user(1), &[seat(1), seat(2)], t(0), POLICY)
            .unwrap();
        assert!(!b.evict(rid(1)), "pending stays");
        b.pin(rid(1), user(1), t(1)).unwrap();
        assert!(!b.evict(rid(1)), "pinned by a payment stays");
        b.post(rid(1), t(2)).unwrap();
        b.hold(rid(2), user(1), &[seat(3)], t(3), POLICY).unwrap();
        b.cancel(rid(2), user(1), t(4)).unwrap();
        assert!(b.evict(rid(1)) && b.evict(rid(2)));
        assert_eq!(b.reservation_count(), 0);
        assert!(!b.evict(rid(1)), "evicted once");
        assert_eq!(b.seats().next().unwrap().1, SeatState::Sold(rid(1)));
        assert_eq!(
            b.seats_of(user(1)),
            2,
            "the paid seats are still the user's"
        );
        assert_eq!(
            b.hold(rid(3), user(1), &[seat(3), seat(4), seat(5)], t(5), POLICY)
                .unwrap_err(),
            BookingRefusal::SeatLimitExceeded { limit: 4 }
        );
        assert_eq!(
            b.hold(rid(3), user(2), &[seat(1)], t(5), POLICY)
                .unwrap_err(),
            BookingRefusal::SeatUnavailable { seat: seat(1) }
        );
        assert!(b
            .hold(rid(3), user(1), &[seat(3), seat(4)], t(5), POLICY)
            .is_ok());
    }

    #[test]
    fn a_settled_state_is_refused_as_it_was_in_memory() {
        let mut b = book(3);
        b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
        b.cancel(rid(1), user(1), t(1)).unwrap();
        let stored = b.reservation(rid(1)).unwrap().status;
        assert_eq!(
            stored.refusal(),
            Some(b.cancel(rid(1), user(1), t(2)).unwrap_err())
        );
        assert_eq!(
            stored.refusal(),
            Some(b.pin(rid(1), user(1), t(2)).unwrap_err())
        );
        assert_eq!(ReservationStatus::Pending.refusal(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Hold { user: i64, seats: Vec<i64> },
        Cancel { reservation: i64, user: i64 },
        Pin { reservation: i64, user: i64 },
        Unpin { reservation: i64 },
        Post { reservation: i64 },
        Evict { reservation: i64 },
        Advance { ms: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1..6i64, prop::collection::vec(1..13i64, 0..6))
                .prop_map(|(user, seats)| Op::Hold { user, seats }),
            1 => (1..40i64, 1..6i64).prop_map(|(reservation, user)| Op::Cancel { reservation, user }),
            2 => (1..40i64, 1..6i64).prop_map(|(reservation, user)| Op::Pin { reservation, user }),
            1 => (1..40i64).prop_map(|reservation| Op::Unpin { reservation }),
            1 => (1..40i64).prop_map(|reservation| Op::Post { reservation }),
            2 => (1..40i64).prop_map(|reservation| Op::Evict { reservation }),
            2 => (0..200_000i64).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    proptest! {
        /// Any interleaving of holds, cancels, pins, payments, evictions and the passing of time
        /// leaves every seat held or sold by at most one live reservation, and the counters
        /// true (an evicted paid reservation still owns its seats).
        #[test]
        fn a_seat_is_never_held_or_sold_twice(ops in prop::collection::vec(op(), 1..120)) {
            let mut b = book(12);
            let mut now = t(1);
            let mut next = 1;
            let mut pinned = HashSet::new();
            // Paid reservations evicted from the book: the store still has them.
            let mut evicted: Vec<Reservation> = Vec::new();
            for op in ops {
                match op {
                    Op::Hold { user: u, seats } => {
                        let seats: Vec<SeatId> = seats.into_iter().map(seat).collect();
                        if b.hold(rid(next), user(u), &seats, now, POLICY).is_ok() { next += 1; }
                    }
                    Op::Cancel { reservation, user: u } => { let _ = b.cancel(rid(reservation), user(u), now); }
                    Op::Pin { reservation, user: u } => {
                        if b.pin(rid(reservation), user(u), now).is_ok() { pinned.insert(reservation); }
                    }
                    Op::Unpin { reservation } => if pinned.remove(&reservation) { b.unpin(rid(reservation)); b.expire(rid(reservation), now); },
                    Op::Post { reservation } => if pinned.remove(&reservation) { b.post(rid(reservation), now); },
                    Op::Evict { reservation } => {
                        let before = b.reservation(rid(reservation)).cloned();
                        let gone = b.evict(rid(reservation));
                        prop_assert_eq!(gone, before.as_ref().is_some_and(|r| r.status != ReservationStatus::Pending && !r.pinned));
                        if let Some(r) = before.filter(|r| gone && r.status == ReservationStatus::Paid) {
                            evicted.push(r);
                        }
                    }
                    Op::Advance { ms } => {
                        now = t(now.millis() + ms);
                        let due: Vec<ReservationId> = b.reservations().map(|r| r.id).collect();
                        for id in due { b.expire(id, now); }
                    }
                }
                let mut owner: HashMap<SeatId, ReservationId> = HashMap::new();
                let live: Vec<&Reservation> = b.reservations().filter(|r| r.status.is_live()).chain(&evicted).collect();
                for r in live.iter().copied() {
                    for s in &r.seats {
                        prop_assert!(owner.insert(*s, r.id).is_none(), "seat {} taken twice", s);
                    }
                }
                prop_assert_eq!(b.available_count(), 12 - owner.len());
                for (s, state) in b.seats() {
                    match (owner.get(&s.id), state) {
                        (None, SeatState::Available) => {}
                        (Some(r), SeatState::Held(h)) | (Some(r), SeatState::Sold(h)) => prop_assert_eq!(*r, h),
                        (o, st) => prop_assert!(false, "seat {} owner {:?} state {:?}", s.id, o, st),
                    }
                }
                let mut per_user: HashMap<UserId, usize> = HashMap::new();
                for r in live {
                    *per_user.entry(r.user).or_default() += r.seats.len();
                }
                prop_assert!(per_user.values().all(|n| *n <= 4));
                for u in 1..6 {
                    let counted = per_user.get(&user(u)).copied().unwrap_or(0);
                    prop_assert_eq!(b.seats_of(user(u)) as usize, counted);
                }
            }
        }
    }
}
