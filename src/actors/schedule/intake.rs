//! How holds reach a schedule's actor: appended to its [`HoldIntake`] under a short lock, and
//! taken by the actor as a burst on one [`DrainHolds`] message, instead of one mailbox entry
//! each (per hold, actix's envelope, mailbox node and wake-up cost more than the decision; see
//! docs/BENCHMARKS.md). Order is kept: a burst is decided in the order it arrived. Bounded
//! like a mailbox.

use super::hold::HoldSeats;
use super::ScheduleActor;
use crate::actors::mailbox::received;
use actix::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// Room for holds that a drained burst buffer keeps (see `DrainHolds`).
const BURST_KEPT: usize = 256;

/// Holds on their way to the schedule's actor; only the first hold after a drain sends one.
#[derive(Default)]
pub struct HoldIntake {
    queue: Mutex<IntakeQueue>,
}

#[derive(Default)]
struct IntakeQueue {
    holds: Vec<HoldSeats>,
    /// A `DrainHolds` is on its way to the actor: the holds appended meanwhile go with it.
    drain_sent: bool,
}

/// What [`HoldIntake::push`] did with a hold.
pub enum Pushed {
    /// Queued behind holds a `DrainHolds` already on its way will take.
    Queued,
    /// Queued first: the caller must send the actor a `DrainHolds`.
    SendDrain,
    /// The intake is full; the hold is handed back.
    Full(HoldSeats),
}

impl std::fmt::Debug for HoldIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldIntake")
            .field("waiting", &self.lock().holds.len())
            .finish()
    }
}

impl HoldIntake {
    fn lock(&self) -> MutexGuard<'_, IntakeQueue> {
        // Nothing panics while holding this lock (a push or a swap of two vectors); should it
        // be poisoned anyway, the queue is still a valid vector.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `hold` unless `capacity` holds are already waiting.
    pub fn push(&self, hold: HoldSeats, capacity: usize) -> Pushed {
        let mut queue = self.lock();
        if queue.holds.len() >= capacity {
            return Pushed::Full(hold);
        }
        queue.holds.push(hold);
        if queue.drain_sent {
            Pushed::Queued
        } else {
            queue.drain_sent = true;
            Pushed::SendDrain
        }
    }

    /// The actor takes every waiting hold into `into` (empty); the next push sends a drain.
    fn take(&self, into: &mut Vec<HoldSeats>) {
        let mut queue = self.lock();
        std::mem::swap(&mut queue.holds, into);
        queue.drain_sent = false;
    }

    /// Drops every waiting hold (their callers hear "unavailable"): the actor cannot be told.
    pub fn abandon(&self) {
        // Dropped after the lock is released: each drop wakes a waiting caller.
        let dropped = {
            let mut queue = self.lock();
            queue.drain_sent = false;
            std::mem::take(&mut queue.holds)
        };
        drop(dropped);
    }
}

/// Decide every hold waiting in the schedule's intake, in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainHolds;

impl Handler<DrainHolds> for ScheduleActor {
    type Result = ();

    /// Decides the burst, then answers its deferred refusals behind one submission.
    #[tracing::instrument(level = "debug", skip_all, fields(schedule_id = %self.entry.info.id))]
    fn handle(&mut self, _: DrainHolds, ctx: &mut Context<Self>) {
        received::<Self>();
        let mut burst = std::mem::take(&mut self.burst);
        self.entry.intake.take(&mut burst);
        // One clock reading for the burst: its holds are decided together, within
        // microseconds of each other.
        let now = self.env.clock.now();
        for hold in burst.drain(..) {
            self.hold(hold, now, ctx);
        }
        // The two vectors trade places on every drain: after a rush, keep a modest buffer
        // rather than the rush's size for as long as the schedule lives.
        burst.shrink_to(BURST_KEPT);
        self.burst = burst;
        self.answer_deferred();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::error::ActorError;
    use crate::actors::schedule::ReservationView;
    use crate::domain::schedule::BookingRefusal;
    use crate::domain::{SeatId, UserId};
    use tokio::sync::oneshot;

    type Answer = oneshot::Receiver<Result<ReservationView, ActorError<BookingRefusal>>>;

    fn hold(user: i64) -> (HoldSeats, Answer) {
        let (reply, answer) = oneshot::channel();
        let hold = HoldSeats {
            user: UserId::new(user).expect("a positive id"),
            seats: vec![SeatId::new(user).expect("a positive id")],
            idempotency: None,
            reply,
        };
        (hold, answer)
    }

    #[test]
    fn only_the_first_hold_after_a_drain_sends_one() {
        let intake = HoldIntake::default();
        assert!(matches!(intake.push(hold(1).0, 8), Pushed::SendDrain));
        assert!(matches!(intake.push(hold(2).0, 8), Pushed::Queued));
        let mut burst = Vec::new();
        intake.take(&mut burst);
        let users: Vec<i64> = burst.iter().map(|h| h.user.get()).collect();
        assert_eq!(users, [1, 2], "a burst keeps arrival order");
        assert!(matches!(intake.push(hold(3).0, 8), Pushed::SendDrain));
    }

    #[test]
    fn a_full_intake_hands_the_hold_back() {
        let intake = HoldIntake::default();
        for user in 1..=3 {
            assert!(!matches!(intake.push(hold(user).0, 3), Pushed::Full(_)));
        }
        match intake.push(hold(4).0, 3) {
            Pushed::Full(back) => assert_eq!(back.user.get(), 4),
            _ => panic!("a fourth hold fits in an intake of three"),
        }
        let mut burst = Vec::new();
        intake.take(&mut burst);
        assert_eq!(burst.len(), 3, "nothing past the bound was kept");
    }

    #[test]
    fn abandoned_holds_are_answered_not_stranded() {
        let intake = HoldIntake::default();
        let (first, mut answer) = hold(1);
        intake.push(first, 8);
        intake.abandon();
        assert!(
            matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "the caller learns at once that nobody will decide"
        );
        assert!(
            matches!(intake.push(hold(2).0, 8), Pushed::SendDrain),
            "the next hold sends a new drain"
        );
    }
}
