//! The waiting list's rules on a book: order, fit, withholding, settling.

use super::*;
use crate::domain::schedule::{BookingRefusal, ScheduleInfo, Seat};
use crate::domain::waitlist::Waitlist;
use crate::domain::{ConcertId, Money, ScheduleId};

const TTL: Duration = Duration::from_secs(300);
const OFFER: Duration = Duration::from_secs(60);
const POLICY: HoldPolicy = HoldPolicy {
    hold_ttl: TTL,
    max_seats_per_user: 4,
};

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn user(n: i64) -> UserId {
    UserId::new(n).expect("positive")
}

fn rid(n: i64) -> ReservationId {
    ReservationId::new(n).expect("positive")
}

fn seat(n: i64) -> SeatId {
    SeatId::new(n).expect("positive")
}

/// A book of `n` seats, open from 0 until far ahead.
fn book(n: i64) -> ScheduleBook {
    let info = ScheduleInfo {
        id: ScheduleId::new(1).expect("positive"),
        concert_id: ConcertId::new(1).expect("positive"),
        concert_name: "c".into(),
        concert_at: t(1_000_000_000),
        reservation_at: t(0),
    };
    let seats = (1..=n)
        .map(|i| Seat {
            id: seat(i),
            number: i as i32,
            price: Money::new(100).expect("positive"),
        })
        .collect();
    ScheduleBook::new(info, seats)
}

/// Sells out a book of `n` seats to users 100+, one seat each, pending.
fn sold_out(n: i64) -> ScheduleBook {
    let mut b = book(n);
    for i in 1..=n {
        b.hold(rid(i), user(100 + i), &[seat(i)], t(1), POLICY)
            .expect("free seat");
    }
    b
}

fn ids(from: i64) -> impl FnMut() -> ReservationId {
    let mut next = from;
    move || {
        next += 1;
        rid(next)
    }
}

#[test]
fn a_join_is_refused_while_seats_are_on_sale() {
    let mut b = book(2);
    assert_eq!(
        b.join_waitlist(user(1), 1, t(5), 4).err(),
        Some(WaitlistRefusal::SeatsOnSale)
    );
    let mut b = sold_out(2);
    assert_eq!(b.join_waitlist(user(1), 1, t(5), 4).map(|e| e.seq), Ok(0));
    assert_eq!(
        b.join_waitlist(user(1), 1, t(5), 4).err(),
        Some(WaitlistRefusal::AlreadyJoined)
    );
    assert_eq!(
        b.join_waitlist(user(2), 5, t(5), 4).err(),
        Some(WaitlistRefusal::BadSeats { limit: 4 })
    );
}

#[test]
fn freed_seats_go_in_list_order_and_never_to_general_sale() {
    let mut b = sold_out(3);
    for u in 1..=3 {
        b.join_waitlist(user(u), 1, t(5), 4).expect("sold out");
    }
    b.cancel(rid(2), user(102), t(6)).expect("pending");
    let offers = b.offer_freed(t(6), OFFER, 4, ids(100));
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].reservation.user, user(1), "the first entry first");
    assert_eq!(offers[0].reservation.expires_at, t(6).plus(OFFER));
    assert_eq!(offers[0].entry.status(), "OFFERED");
    // Entries 2 and 3 still wait: a freed seat stays the list's.
    b.cancel(rid(3), user(103), t(7)).expect("pending");
    assert_eq!(
        b.hold(rid(50), user(9), &[seat(3)], t(7), POLICY).err(),
        Some(BookingRefusal::SeatUnavailable { seat: seat(3) })
    );
    let offers = b.offer_freed(t(7), OFFER, 4, ids(200));
    assert_eq!(offers[0].reservation.user, user(2));
    assert_eq!(b.waitlist.position(user(3)), Some(3));
}

#[test]
fn a_seat_too_few_for_the_first_entry_goes_to_the_next_it_fits() {
    let mut b = sold_out(3);
    b.join_waitlist(user(1), 2, t(5), 4).expect("sold out");
    b.join_waitlist(user(2), 1, t(5), 4).expect("sold out");
    b.cancel(rid(1), user(101), t(6)).expect("pending");
    let offers = b.offer_freed(t(6), OFFER, 4, ids(100));
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].reservation.user, user(2));
    assert!(b.waitlist.has_waiting(), "the first entry still waits");
}

#[test]
fn an_expired_offer_is_settled_and_its_seats_pass_on() {
    let mut b = sold_out(1);
    b.join_waitlist(user(1), 1, t(5), 4).expect("sold out");
    b.join_waitlist(user(2), 1, t(5), 4).expect("sold out");
    b.cancel(rid(1), user(101), t(6)).expect("pending");
    let first = b.offer_freed(t(6), OFFER, 4, ids(100))[0].reservation.id;
    let later = t(6).plus(OFFER);
    b.expire(first, later).expect("due");
    let gone = b.settle_offers();
    assert_eq!(gone.iter().map(|e| e.user).collect::<Vec<_>>(), [user(1)]);
    let offers = b.offer_freed(later, OFFER, 4, ids(200));
    assert_eq!(offers[0].reservation.user, user(2));
    assert!(b.waitlist.entry(user(1)).is_none());
}

#[test]
fn with_nobody_waiting_freed_seats_are_back_on_sale() {
    let mut b = sold_out(2);
    b.join_waitlist(user(1), 1, t(5), 4).expect("sold out");
    b.waitlist.leave(user(1)).expect("joined");
    b.cancel(rid(1), user(101), t(6)).expect("pending");
    assert!(b.offer_freed(t(6), OFFER, 4, ids(100)).is_empty());
    assert!(b.hold(rid(50), user(9), &[seat(1)], t(6), POLICY).is_ok());
}

#[test]
fn the_list_survives_a_restore_in_order() {
    let mut b = sold_out(1);
    for u in 1..=3 {
        b.join_waitlist(user(u), 1, t(5), 4).expect("sold out");
    }
    b.waitlist.leave(user(1)).expect("joined");
    let stored: Vec<WaitlistEntry> = [user(2), user(3)]
        .iter()
        .map(|u| b.waitlist.entry(*u).cloned().expect("joined"))
        .collect();
    let mut again = Waitlist::restore(stored);
    assert_eq!(again.position(user(3)), Some(2));
    assert!(again.has_waiting());
    again.leave(user(2)).expect("restored");
    assert_eq!(again.position(user(3)), Some(1));
}

#[test]
fn a_cancelled_performance_sells_nothing_and_refunds_a_sale_once() {
    let mut b = book(3);
    b.hold(rid(1), user(1), &[seat(1)], t(1), POLICY)
        .expect("free seat");
    b.pin(rid(1), user(1), t(2)).expect("pending");
    b.post(rid(1), t(3)).expect("pinned");
    b.hold(rid(2), user(2), &[seat(2)], t(1), POLICY)
        .expect("free seat");
    let (voided, _, pinned) = b.cancel_performance(t(4));
    assert_eq!(voided.iter().map(|r| r.id).collect::<Vec<_>>(), [rid(2)]);
    assert_eq!(pinned, 0);
    assert_eq!(
        b.hold(rid(3), user(3), &[seat(3)], t(5), POLICY).err(),
        Some(BookingRefusal::PerformanceCancelled)
    );
    let paid = b.reservation(rid(1)).cloned().expect("kept");
    let refunded = b.refund(&paid, t(6)).expect("sold to it");
    assert_eq!(refunded.status, ReservationStatus::Refunded);
    assert!(b.refund(&paid, t(7)).is_none(), "refunded once");
    assert_eq!(
        b.join_waitlist(user(4), 1, t(8), 4).err(),
        Some(WaitlistRefusal::Closed)
    );
}

#[test]
fn an_entry_may_ask_for_exactly_the_limit() {
    let mut b = sold_out(2);
    assert_eq!(b.join_waitlist(user(1), 4, t(5), 4).map(|e| e.seats), Ok(4));
    assert_eq!(
        b.join_waitlist(user(2), 0, t(5), 4).err(),
        Some(WaitlistRefusal::BadSeats { limit: 4 })
    );
}

/// Two seats sold out, user 1 waiting for one, and seat 1 freed (not yet offered).
fn one_freed_for_one_waiting() -> ScheduleBook {
    let mut b = sold_out(2);
    b.join_waitlist(user(1), 1, t(5), 4).expect("sold out");
    b.cancel(rid(1), user(101), t(6)).expect("pending");
    b
}

/// Four seats: user 1 holds seat 1, users 102 to 104 the others.
fn user_one_holds_one_of_four() -> ScheduleBook {
    let mut b = book(4);
    b.hold(rid(1), user(1), &[seat(1)], t(1), POLICY)
        .expect("free seat");
    for i in 2..=4 {
        b.hold(rid(i), user(100 + i), &[seat(i)], t(1), POLICY)
            .expect("free seat");
    }
    b
}

#[test]
fn nothing_is_offered_once_the_performance_started_or_was_cancelled() {
    let mut b = one_freed_for_one_waiting();
    let started = b.info.concert_at;
    assert!(
        b.offer_freed(started, OFFER, 4, ids(100)).is_empty(),
        "booking is closed: not cancelled, but no longer open"
    );
    assert!(b.waitlist.has_waiting());
    let mut cancelled = one_freed_for_one_waiting();
    cancelled.cancelled = true;
    assert!(
        cancelled.offer_freed(t(7), OFFER, 4, ids(100)).is_empty(),
        "open, but cancelled"
    );
    // The same book, not cancelled and open, offers.
    cancelled.cancelled = false;
    assert_eq!(cancelled.offer_freed(t(7), OFFER, 4, ids(100)).len(), 1);
}

#[test]
fn an_offer_fills_a_users_limit_exactly_and_never_past_it() {
    // User 1 already holds one seat; the limit is 2.
    let mut b = user_one_holds_one_of_four();
    b.join_waitlist(user(1), 1, t(5), 2).expect("sold out");
    b.cancel(rid(2), user(102), t(6)).expect("pending");
    let offers = b.offer_freed(t(6), OFFER, 2, ids(100));
    assert_eq!(
        offers.len(),
        1,
        "one held and one offered: exactly the limit"
    );
    assert_eq!(b.seats_of(user(1)), 2);

    let mut b = user_one_holds_one_of_four();
    b.join_waitlist(user(1), 2, t(5), 2).expect("sold out");
    b.join_waitlist(user(2), 2, t(5), 2).expect("sold out");
    b.cancel(rid(2), user(102), t(6)).expect("pending");
    b.cancel(rid(3), user(103), t(6)).expect("pending");
    let offers = b.offer_freed(t(6), OFFER, 2, ids(100));
    let users: Vec<UserId> = offers.iter().map(|o| o.reservation.user).collect();
    assert_eq!(
        users,
        vec![user(2)],
        "user 1 would pass its limit: the next entry"
    );
    assert_eq!(b.seats_of(user(1)), 1);
    assert_eq!(b.waitlist.position(user(1)), Some(1), "it keeps its place");
}
