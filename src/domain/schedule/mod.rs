//! One schedule's seat map and its reservations: all-or-nothing holds, expiry, cancellation,
//! and settlement on payment.
//!
//! Vocabulary (after TigerBeetle's two-phase transfers): a reservation is a *pending* hold on
//! its seats; payment *posts* it (the seats are sold), cancellation *voids* it, and the hold
//! time running out *expires* it. Posted, voided and expired are final.

use super::ids::IdMap;
use super::seat_plan::{schedule_plan, SchedulePlan, SeatPlan};
use super::waitlist::Waitlist;
use super::{ConcertId, Money, ReservationId, ScheduleId, SeatId, Timestamp, UserId};
use std::time::Duration;

pub use super::reservation::{BookingRefusal, Reservation, ReservationStatus};

mod offers;
mod refunds;

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

    /// `user`'s reservation `id` if it is pending and no payment has pinned it: what both a
    /// cancel and a pin need before they change anything.
    fn pending_unpinned(
        &self,
        id: ReservationId,
        user: UserId,
    ) -> Result<&Reservation, BookingRefusal> {
        let r = self.owned(id, user)?;
        if let Some(refusal) = r.status.refusal() {
            return Err(refusal);
        }
        if r.pinned {
            return Err(BookingRefusal::PaymentInProgress);
        }
        Ok(r)
    }

    /// Voids a pending, unpinned reservation of `user`: its seats are free at once.
    pub fn cancel(
        &mut self,
        id: ReservationId,
        user: UserId,
        now: Timestamp,
    ) -> Result<&Reservation, BookingRefusal> {
        self.pending_unpinned(id, user)?;
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
        if now >= self.pending_unpinned(id, user)?.expires_at {
            self.release(id, ReservationStatus::Expired, now);
            return Err(BookingRefusal::Expired);
        }
        let r = self
            .reservations
            .get_mut(&id)
            .expect("pending_unpinned() found it above");
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
mod tests;
