use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

pub(super) const TTL: Duration = Duration::from_secs(300);
pub(super) const POLICY: HoldPolicy = HoldPolicy {
    hold_ttl: TTL,
    max_seats_per_user: 4,
};

pub(super) fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub(super) fn book(seats: i64) -> ScheduleBook {
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

pub(super) fn seat(n: i64) -> SeatId {
    SeatId::new(100 + n).unwrap()
}
pub(super) fn user(n: i64) -> UserId {
    UserId::new(n).unwrap()
}
pub(super) fn rid(n: i64) -> ReservationId {
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
    // Looked up by seat id, through the book's own order.
    let in_row = |r: &str| SeatPlan::new(None, Some(r.into()), None, None).unwrap();
    let rows = ScheduleBook::planned(
        info.clone(),
        seats.clone(),
        vec![in_row("C"), in_row("A"), SeatPlan::default()],
    );
    let row_of = |id: i64| rows.seat_row(SeatId::new(id).unwrap());
    assert_eq!(
        (row_of(1), row_of(2), row_of(3)),
        (Some("C"), Some("A"), None)
    );
    assert_eq!(row_of(4), None, "not a seat of the book");
    assert_eq!(b.seat_row(SeatId::new(1).unwrap()), None, "graded, no row");
    let found = b.seat(SeatId::new(3).unwrap()).expect("a seat of the book");
    assert_eq!((found.id, found.number), (SeatId::new(3).unwrap(), 2));
    assert!(b.seat(SeatId::new(4).unwrap()).is_none());
    let unlabelled = ScheduleBook::planned(info, seats, vec![SeatPlan::default(); 3]);
    assert!(unlabelled.plan().is_none(), "no label, no plan");
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

#[test]
fn a_transferred_seat_counts_for_its_new_holder_within_the_limit() {
    let mut b = book(10);
    b.hold(rid(1), user(1), &[seat(1), seat(2)], t(1), POLICY)
        .unwrap();
    b.post(rid(1), t(2)).unwrap();
    b.hold(rid(2), user(2), &[seat(3), seat(4), seat(5)], t(1), POLICY)
        .unwrap();
    // User 2 has 3 of 4: one more fits, a second does not.
    assert!(b.move_seat_count(user(1), user(2), 4));
    assert_eq!((b.seats_of(user(1)), b.seats_of(user(2))), (1, 4));
    assert!(!b.move_seat_count(user(1), user(2), 4), "past the limit");
    assert_eq!(
        (b.seats_of(user(1)), b.seats_of(user(2))),
        (1, 4),
        "a refused move changes nothing"
    );
    // To a user with nothing here; the giver's last seat leaves no entry behind.
    assert!(b.move_seat_count(user(1), user(3), 1));
    assert_eq!((b.seats_of(user(1)), b.seats_of(user(3))), (0, 1));
    assert!(!b.seats_by_user.contains_key(&user(1)));
    // The seats themselves did not move: the book's states are the tickets' business.
    assert_eq!(b.holder(seat(1)), Some(rid(1)));
    assert_eq!(b.holder(seat(3)), Some(rid(2)));
    assert_eq!(b.holder(seat(6)), None, "free");
    assert_eq!(
        b.holder(SeatId::new(5).unwrap()),
        None,
        "not a seat of the book"
    );
    assert_eq!(b.reservation_count(), 2);
}

#[test]
fn the_catalog_counts_seats_on_general_sale_only() {
    let mut b = book(3);
    assert_eq!(b.on_sale_count(), 3);
    b.hold(rid(1), user(1), &[seat(1)], t(1), POLICY).unwrap();
    assert_eq!(b.on_sale_count(), 2);
    let mut sold_out = book(1);
    sold_out
        .hold(rid(1), user(1), &[seat(1)], t(1), POLICY)
        .unwrap();
    sold_out.join_waitlist(user(2), 1, t(2), 4).unwrap();
    sold_out.cancel(rid(1), user(1), t(3)).unwrap();
    assert_eq!(sold_out.available_count(), 1);
    assert_eq!(sold_out.on_sale_count(), 0, "the freed seat is the list's");
    b.cancel_performance(t(4));
    assert_eq!(b.available_count(), 3);
    assert_eq!(
        b.on_sale_count(),
        0,
        "a cancelled performance sells nothing"
    );
}

#[test]
fn a_reservation_as_paid_is_paid_now_and_unpinned() {
    let mut b = book(2);
    b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
    let pinned = b.pin(rid(1), user(1), t(1)).unwrap().clone();
    let paid = ScheduleBook::as_paid(&pinned, t(7));
    assert_eq!(
        (paid.status, paid.updated_at, paid.pinned),
        (ReservationStatus::Paid, t(7), false)
    );
    assert_eq!(
        (paid.id, paid.seats, paid.total),
        (pinned.id, pinned.seats, pinned.total)
    );
}

/// The check every change runs is itself checked: a book whose count drifted is caught.
/// (It runs in debug builds only, as the tests do.)
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "available count drifted")]
fn the_invariant_check_catches_a_drifted_count() {
    let mut b = book(3);
    b.available -= 1;
    b.check_invariants();
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "seat")]
fn the_invariant_check_catches_a_seat_that_does_not_point_back() {
    let mut b = book(3);
    b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
    b.states[0] = SeatState::Held(rid(2));
    b.check_invariants();
}

/// After a restart: the book rebuilt from the store.
mod restart;
