//! Settled reservations leave the actor's memory. A paid, cancelled or expired reservation is
//! kept for a grace period (clients read one right after settling it), then forgotten with its
//! index entry: its state is final and stored, so the engine answers later reads, cancels and
//! payments of it from the store. Without this a schedule kept every reservation it ever
//! made — 50,000 hold-and-cancel cycles of one user were 50,000 reservations in memory.
//!
//! A pending reservation never leaves, pinned by a payment or not; nor does a settled one
//! whose settling write is not durable yet (the store would still show it pending). The grace
//! is `EngineSettings::settled_grace` ([`SETTLED_GRACE`] unless a test shortens it).

use super::ScheduleActor;
#[cfg(doc)]
use crate::actors::env::SETTLED_GRACE;
use crate::actors::loading::Loaded;
use crate::domain::schedule::ReservationStatus;
use crate::domain::{ReservationId, Timestamp};
use actix::prelude::*;
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::time::Duration;

/// How soon a sweep looks again when the oldest settling write is not yet durable.
const NOT_YET_DURABLE_RETRY: Duration = Duration::from_millis(100);

/// The longest a sweep waits while reservations wait out their grace: the grace is counted on
/// the engine's clock, which may jump (an NTP step, or a test's `ManualClock`) while a timer
/// counts real time.
const LONGEST_SWEEP_WAIT: Duration = Duration::from_secs(1);

/// Deadline entries tolerated beyond twice the reservations in memory before the deadline heap
/// drops those of settled holds (a cancelled hold's entry would otherwise wait out the hold
/// time: thousands of cycles a minute are thousands of dead entries).
const DEADLINE_SLACK: usize = 1024;

/// Settled reservations waiting out their grace, oldest first, and the sweep's timer.
#[derive(Debug, Default)]
pub struct Settled {
    /// (when it may leave, which, the submission that settled it; 0: durable already).
    queue: VecDeque<(Timestamp, ReservationId, u64)>,
    timer: Option<SpawnHandle>,
}

impl ScheduleActor {
    /// `id` was just settled by submission `seq`: it leaves memory once the grace has passed
    /// and that write is durable.
    pub(super) fn settled(&mut self, id: ReservationId, seq: u64, ctx: &mut Context<Self>) {
        let leave_at = self.env.clock.now().plus(self.env.settings.settled_grace);
        self.settled.queue.push_back((leave_at, id, seq));
        self.arm_eviction(ctx, None);
    }

    /// After a (re)load: every settled reservation of the new book waits out what is left of
    /// its grace (counted from when it settled); those past it leave at once.
    pub(super) fn settle_loaded(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.settled.timer.take() {
            ctx.cancel_future(handle);
        }
        self.settled.queue.clear();
        let now = self.env.clock.now();
        let grace = self.env.settings.settled_grace;
        let Loaded::Ready(book) = &mut self.state else {
            return;
        };
        let mut waiting: Vec<(Timestamp, ReservationId, u64)> = Vec::new();
        let mut gone = Vec::new();
        for r in book.reservations() {
            if r.status == ReservationStatus::Pending {
                continue;
            }
            let leave_at = r.updated_at.plus(grace);
            if leave_at <= now {
                gone.push(r.id);
            } else {
                waiting.push((leave_at, r.id, 0));
            }
        }
        for id in gone {
            book.evict(id);
            self.env.reservations.remove(id);
        }
        waiting.sort_unstable();
        self.settled.queue.extend(waiting);
        self.arm_eviction(ctx, None);
    }

    /// Keeps the sweep's one timer armed: for the oldest settled reservation, or `retry` from
    /// now when that one's write is not durable yet.
    fn arm_eviction(&mut self, ctx: &mut Context<Self>, retry: Option<Duration>) {
        if self.settled.timer.is_some() {
            return;
        }
        let Some(&(leave_at, _, _)) = self.settled.queue.front() else {
            return;
        };
        let delay = retry
            .unwrap_or_else(|| self.env.clock.now().until(leave_at))
            .min(LONGEST_SWEEP_WAIT);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.settled.timer = None;
            act.evict_due(ctx);
        });
        self.settled.timer = Some(handle);
    }

    /// Forgets every settled reservation past its grace whose settling write is durable.
    fn evict_due(&mut self, ctx: &mut Context<Self>) {
        let now = self.env.clock.now();
        let Loaded::Ready(book) = &mut self.state else {
            return; // Loading: `settle_loaded` starts over from the new book.
        };
        let mut retry = None;
        while let Some(&(leave_at, id, seq)) = self.settled.queue.front() {
            if leave_at > now {
                break;
            }
            if !self.durability.is_durable(seq) {
                // In flight, or undone by a failed commit (a rebuild is on its way).
                retry = Some(NOT_YET_DURABLE_RETRY);
                break;
            }
            self.settled.queue.pop_front();
            if book.evict(id) {
                self.env.reservations.remove(id);
            }
        }
        if self.deadlines.len() > 2 * book.reservation_count() + DEADLINE_SLACK {
            self.deadlines.retain(|Reverse((_, id))| {
                book.reservation(*id)
                    .is_some_and(|r| r.status == ReservationStatus::Pending)
            });
        }
        self.publish();
        self.arm_eviction(ctx, retry);
    }
}
