//! Refunds and a cancelled performance on the book: exactly the refunded reservation's seats
//! come back, its buyer's count goes down by exactly them, and a cancellation voids only what
//! no payment is settling.

use super::super::tests::{book, rid, seat, t, user, POLICY};
use super::*;

/// A book of 6 seats where user 1 paid reservation 1 (seats 1 and 2) and user 2 paid
/// reservation 2 (seat 3).
fn sold() -> ScheduleBook {
    let mut b = book(6);
    b.hold(rid(1), user(1), &[seat(1), seat(2)], t(1), POLICY)
        .expect("free seats");
    b.hold(rid(2), user(2), &[seat(3)], t(1), POLICY)
        .expect("free seat");
    b.post(rid(1), t(2)).expect("pending");
    b.post(rid(2), t(2)).expect("pending");
    b
}

fn state(b: &ScheduleBook, n: i64) -> SeatState {
    b.seats()
        .find(|(s, _)| s.id == seat(n))
        .map(|(_, state)| state)
        .expect("a seat of the book")
}

#[test]
fn a_refund_frees_exactly_its_seats_and_its_buyers_count() {
    let mut b = sold();
    let paid = b.reservation(rid(1)).expect("in memory").clone();
    assert!(b.is_sold_to(&paid));
    // Whatever the caller's copy says of a pin, a refunded reservation is not pinned.
    let copy = Reservation {
        pinned: true,
        ..paid.clone()
    };
    let refunded = b.refund(&copy, t(50)).expect("sold to it");
    assert_eq!(refunded.status, ReservationStatus::Refunded);
    assert_eq!(refunded.updated_at, t(50));
    assert!(!refunded.pinned);
    assert_eq!(
        (refunded.id, &refunded.seats, refunded.total),
        (paid.id, &paid.seats, paid.total)
    );
    assert_eq!(
        b.reservation(rid(1)).expect("kept in memory"),
        &refunded,
        "the book's copy is the refunded one"
    );
    assert_eq!(b.available_count(), 5);
    assert_eq!(state(&b, 1), SeatState::Available);
    assert_eq!(state(&b, 2), SeatState::Available);
    assert_eq!(
        state(&b, 3),
        SeatState::Sold(rid(2)),
        "another's seat stays sold"
    );
    assert_eq!(b.seats_of(user(1)), 0);
    assert_eq!(b.seats_of(user(2)), 1);
    // Refunded once: no longer sold to it, so a second refund changes nothing.
    assert!(!b.is_sold_to(&paid));
    assert_eq!(b.refund(&paid, t(60)), None);
    assert_eq!(b.available_count(), 5);
}

#[test]
fn a_refund_leaves_the_buyers_other_seats_counted() {
    let mut b = sold();
    b.hold(rid(3), user(1), &[seat(4)], t(3), POLICY)
        .expect("within the limit");
    let paid = b.reservation(rid(1)).expect("in memory").clone();
    b.refund(&paid, t(50)).expect("sold to it");
    assert_eq!(b.seats_of(user(1)), 1, "the pending hold still counts");
}

#[test]
fn only_a_paid_reservation_whose_seats_are_still_its_own_is_sold_to_it() {
    let mut b = sold();
    let paid = b.reservation(rid(1)).expect("in memory").clone();
    // Evicted from memory, its seats still sold: the stored copy decides.
    assert!(b.evict(rid(1)));
    assert!(b.is_sold_to(&paid));
    let as_stored_pending = Reservation {
        status: ReservationStatus::Pending,
        ..paid.clone()
    };
    assert!(!b.is_sold_to(&as_stored_pending), "not paid as stored");
    let with_anothers_seat = Reservation {
        seats: vec![seat(1), seat(3)],
        ..paid.clone()
    };
    assert!(
        !b.is_sold_to(&with_anothers_seat),
        "seat 3 is reservation 2's"
    );
    let with_a_free_seat = Reservation {
        seats: vec![seat(1), seat(5)],
        ..paid.clone()
    };
    assert!(!b.is_sold_to(&with_a_free_seat));
    // In memory and refunded there, though the caller's copy says paid: not sold to it.
    let mut b = sold();
    let paid = b.reservation(rid(1)).expect("in memory").clone();
    b.refund_sold(rid(1), &paid.seats, user(1), t(40));
    assert!(!b.is_sold_to(&paid));
}

#[test]
fn refund_sold_frees_only_seats_sold_to_that_reservation() {
    let mut b = sold();
    // Seat 3 is reservation 2's, seat 5 is free, seat 99 is not in the book: only 1 and 2
    // are reservation 1's to give back.
    let named = [seat(1), seat(2), seat(3), seat(5), seat(99)];
    b.refund_sold(rid(1), &named, user(1), t(40));
    assert_eq!(b.available_count(), 5);
    assert_eq!(state(&b, 1), SeatState::Available);
    assert_eq!(state(&b, 3), SeatState::Sold(rid(2)));
    assert_eq!(b.seats_of(user(1)), 0);
    assert_eq!(b.seats_of(user(2)), 1);
    let r = b.reservation(rid(1)).expect("in memory");
    assert_eq!(
        (r.status, r.updated_at),
        (ReservationStatus::Refunded, t(40))
    );
}

#[test]
fn refund_sold_of_an_evicted_reservation_takes_its_buyer_from_the_tickets() {
    let mut b = sold();
    b.hold(rid(3), user(1), &[seat(4)], t(3), POLICY)
        .expect("within the limit");
    assert!(b.evict(rid(1)));
    b.refund_sold(rid(1), &[seat(2)], user(1), t(40));
    assert_eq!(state(&b, 2), SeatState::Available);
    assert_eq!(
        state(&b, 1),
        SeatState::Sold(rid(1)),
        "not named, not freed"
    );
    assert_eq!(b.available_count(), 3);
    assert_eq!(b.seats_of(user(1)), 2, "three counted, one freed");
    assert!(b.reservation(rid(1)).is_none(), "nothing to mark");
}

#[test]
fn a_cancelled_performance_voids_what_no_payment_settles_and_empties_the_list() {
    let mut b = sold();
    b.hold(rid(5), user(3), &[seat(5)], t(3), POLICY)
        .expect("free");
    b.hold(rid(4), user(4), &[seat(4)], t(3), POLICY)
        .expect("free");
    b.hold(rid(6), user(5), &[seat(6)], t(3), POLICY)
        .expect("free");
    b.pin(rid(6), user(5), t(4)).expect("pending, not due");
    assert_eq!(b.available_count(), 0);
    let joined = b
        .join_waitlist(user(7), 1, t(5), 4)
        .expect("sold out")
        .clone();
    b.join_waitlist(user(8), 2, t(5), 4).expect("sold out");
    assert!(!b.cancelled);

    let (voided, removed, pinned) = b.cancel_performance(t(100));
    assert!(b.cancelled && !b.on_sale());
    assert_eq!(pinned, 1, "reservation 6 is being paid");
    let ids: Vec<ReservationId> = voided.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![rid(4), rid(5)], "in id order");
    for r in &voided {
        assert_eq!(
            (r.status, r.updated_at),
            (ReservationStatus::Cancelled, t(100))
        );
    }
    assert_eq!(state(&b, 4), SeatState::Available);
    assert_eq!(state(&b, 5), SeatState::Available);
    assert_eq!(
        state(&b, 6),
        SeatState::Held(rid(6)),
        "the pinned hold settles first"
    );
    assert_eq!(
        state(&b, 1),
        SeatState::Sold(rid(1)),
        "paid seats are refunds' business"
    );
    assert_eq!(b.available_count(), 2);
    assert_eq!((b.seats_of(user(3)), b.seats_of(user(4))), (0, 0));
    assert_eq!(b.seats_of(user(5)), 1);
    let users: Vec<UserId> = removed.iter().map(|e| e.user).collect();
    assert_eq!(users, vec![user(7), user(8)]);
    assert_eq!(removed[0], joined);
    assert!(b.waitlist.is_empty());
}
