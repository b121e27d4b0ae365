//! What the operator's dashboard and `/metrics` read of the engine: the live counters, the
//! persister's figures, the line's admission rate, samples of running schedules, and what
//! the schedule actors keep in memory.

use super::Engine;
use crate::actors::error::BookingError;
use crate::actors::live_stats::{HistogramCounts, LiveStats};
use crate::actors::mailbox::ask;
use crate::actors::schedule::{SampleSeats, SeatSample};
use crate::domain::schedule::ScheduleInfo;
use crate::domain::ScheduleId;
use std::sync::atomic::Ordering;

/// What the schedule actors keep in memory (see [`Engine::kept_in_memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeptInMemory {
    pub reservations: usize,
    pub deadlines: usize,
    pub indexed: usize,
}

impl Engine {
    /// What the schedule actors keep in memory now, for tests and metrics: the reservations
    /// they hold (pending, and settled within their grace), their deadline entries, and the
    /// index entries that point at them.
    pub fn kept_in_memory(&self) -> KeptInMemory {
        let env = &self.inner.env;
        KeptInMemory {
            reservations: env.reservations.kept().reservations(),
            deadlines: env.reservations.kept().deadlines(),
            indexed: env.reservations.len(),
        }
    }

    /// The counters of holds by outcome and of 503s.
    pub fn live(&self) -> &LiveStats {
        &self.inner.env.live
    }

    /// Every commit's latency so far (differences of two readings are a window's).
    pub fn commit_latency(&self) -> HistogramCounts {
        self.inner.env.persister.stats().commit_latency.read()
    }

    /// (batches, submissions) committed or failed so far.
    pub fn batches(&self) -> (u64, u64) {
        let stats = self.inner.env.persister.stats();
        (
            stats.batches.load(Ordering::Relaxed),
            stats.submissions.load(Ordering::Relaxed),
        )
    }

    /// How long the last fair opening's draw took on this node, if it drew one.
    pub fn last_draw(&self) -> Option<std::time::Duration> {
        self.inner.queue_view.last_draw()
    }

    /// Admissions per second, as the waiting line measured them.
    pub fn admission_rate(&self) -> Option<f64> {
        self.inner.queue_view.measured_rate(self.now())
    }

    /// Starts the schedule's actor if none runs, so the dashboard can sample it.
    pub fn watch_schedule(&self, id: ScheduleId) -> Result<(), BookingError> {
        self.schedule(id).map(drop)
    }

    /// Every seat's state of up to `max` running schedules, lowest ids first. A schedule still
    /// loading (or rebuilding) is left out of this sample.
    pub async fn sample_schedules(&self, max: usize) -> Vec<(ScheduleInfo, SeatSample)> {
        let running = self.inner.registry.running_schedules(max);
        let asks = running.iter().map(|(id, addr)| async move {
            let info = self.inner.catalog.schedule_entry(*id)?.info.clone();
            let sample = ask(addr, |reply| SampleSeats { reply }).await.ok()?;
            Some((info, sample))
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
