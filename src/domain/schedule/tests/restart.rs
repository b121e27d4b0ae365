//! The book after a restart: rebuilt from stored reservations, its due holds expired, the
//! holds other nodes' payments pin pinned again.

use super::*;

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
    // A payment was settling this hold when the process died.
    b.hold(rid(4), user(2), &[seat(5)], t(3), POLICY).unwrap();
    b.pin(rid(4), user(2), t(4)).unwrap();
    let all: Vec<Reservation> = b.reservations().cloned().collect();
    let seats = b.seats().map(|(s, _)| s.clone()).collect();
    let mut restored =
        ScheduleBook::restore(b.info.clone(), seats, Vec::new(), all.clone()).unwrap();
    let states: Vec<SeatState> = restored.seats().map(|(_, s)| s).collect();
    assert_eq!(states, b.seats().map(|(_, s)| s).collect::<Vec<_>>());
    assert_eq!(restored.available_count(), 1);
    // The per-user limit counts what each user held or owned before the restart.
    assert_eq!(
        (restored.seats_of(user(1)), restored.seats_of(user(2))),
        (2, 2)
    );
    assert_eq!(
        restored.seats_of(user(3)),
        0,
        "a cancelled hold counts nothing"
    );
    // No payment survives a restart in flight: the hold is unpinned, so its time can run out.
    assert!(!restored.reservation(rid(4)).unwrap().pinned);
    assert!(restored.expire(rid(4), t(3).plus(TTL)).is_some());
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
fn after_a_restart_every_due_unpinned_hold_expires_in_id_order() {
    let mut b = book(10);
    b.hold(rid(3), user(1), &[seat(1)], t(0), POLICY).unwrap();
    b.hold(rid(1), user(2), &[seat(2)], t(0), POLICY).unwrap();
    b.hold(rid(2), user(3), &[seat(3)], t(0), POLICY).unwrap();
    b.pin(rid(2), user(3), t(1)).unwrap();
    b.hold(rid(4), user(4), &[seat(4)], t(10), POLICY).unwrap();
    b.hold(rid(5), user(5), &[seat(5)], t(0), POLICY).unwrap();
    b.post(rid(5), t(1)).unwrap();
    let due_at = t(0).plus(TTL);
    assert_eq!(b.expire_due(due_at), vec![rid(1), rid(3)]);
    for id in [rid(1), rid(3)] {
        let r = b.reservation(id).unwrap();
        assert_eq!(
            (r.status, r.updated_at),
            (ReservationStatus::Expired, due_at)
        );
    }
    assert_eq!(b.holder(seat(1)), None);
    assert_eq!(b.holder(seat(2)), None);
    assert_eq!(
        b.holder(seat(3)),
        Some(rid(2)),
        "pinned: its payment decides"
    );
    assert_eq!(b.holder(seat(4)), Some(rid(4)), "not due yet");
    assert_eq!(b.holder(seat(5)), Some(rid(5)), "paid");
    assert_eq!(b.available_count(), 7);
    assert_eq!(b.expire_due(due_at), Vec::new(), "nothing twice");
}

#[test]
fn a_rebuilt_book_pins_again_only_what_is_still_pending() {
    let mut b = book(4);
    b.hold(rid(1), user(1), &[seat(1)], t(0), POLICY).unwrap();
    b.hold(rid(2), user(2), &[seat(2)], t(0), POLICY).unwrap();
    b.cancel(rid(2), user(2), t(1)).unwrap();
    b.repin(rid(1));
    b.repin(rid(2));
    b.repin(rid(9));
    assert!(b.reservation(rid(1)).unwrap().pinned);
    assert!(
        !b.reservation(rid(2)).unwrap().pinned,
        "settled: nothing to pin"
    );
    assert!(
        b.expire(rid(1), t(0).plus(TTL)).is_none(),
        "pinned: its payment decides"
    );
}
