//! Hold expiry: pending holds sit in a deadline heap under one timer, armed for the earliest
//! (a timer per hold made every message slower as holds accumulated, because actix polls
//! every spawned future on each wake-up). A hold expires exactly at its time unless it was
//! pinned or settled by then.

use super::ScheduleActor;
use crate::actors::loading::{Loaded, RELOAD_BACKOFF};
use crate::domain::schedule::ReservationStatus;
use crate::domain::{ReservationId, Timestamp};
use crate::store::Writes;
use actix::prelude::*;
use std::cmp::Reverse;

impl ScheduleActor {
    /// Expires `id` at `at` (or later, if it is pinned or settled by then).
    pub(super) fn expire_at(&mut self, id: ReservationId, at: Timestamp, ctx: &mut Context<Self>) {
        self.deadlines.push(Reverse((at, id)));
        self.arm(ctx);
    }

    /// Keeps the one timer armed for the earliest deadline.
    pub(super) fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(&Reverse((next, _))) = self.deadlines.peek() else {
            return;
        };
        if let Some((armed, handle)) = self.timer {
            if armed <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = self.env.clock.now().until(next);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.expire_due(ctx);
        });
        self.timer = Some((next, handle));
    }

    /// The timer fired: expires every hold that came due, then re-arms for the next.
    fn expire_due(&mut self, ctx: &mut Context<Self>) {
        let now = self.env.clock.now();
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            self.expire(id, ctx);
        }
        self.arm(ctx);
    }

    /// A hold's deadline came (or its pin was released): expire it if it is still pending and
    /// unpinned.
    pub(super) fn expire(&mut self, id: ReservationId, ctx: &mut Context<Self>) {
        let now = self.env.clock.now();
        let Loaded::Ready(book) = &mut self.state else {
            return;
        };
        let Some(r) = book.reservation(id) else {
            return;
        };
        if r.status != ReservationStatus::Pending || r.pinned {
            return; // Settled, or its payment's unpin will expire it.
        }
        if now < r.expires_at {
            // Not yet: a deadline pushed before the hold's time moved (the clock is read
            // again at every decision). Look again then.
            let at = r.expires_at;
            self.expire_at(id, at, ctx);
            return;
        }
        let permit = match self.durability.reserve() {
            Ok(permit) => permit,
            Err(u) => {
                tracing::warn!(reservation_id = %id, error = %u, "hold expiry postponed");
                self.expire_at(id, now.plus(RELOAD_BACKOFF), ctx);
                return;
            }
        };
        if let Some(r) = book.expire(id, now) {
            let writes = Writes::default().reservation(r);
            let writes = self.with_offers(writes, ctx);
            tracing::debug!(reservation_id = %id, "hold expired");
            metrics::counter!("boxoffice_holds_total", "outcome" => "expired").increment(1);
            self.env.live.hold_expired();
            self.durability.submit_unanswered(permit, writes);
            self.last_release = self.durability.last_seq();
            self.settled(id, self.last_release, ctx);
            self.publish();
        }
    }
}
