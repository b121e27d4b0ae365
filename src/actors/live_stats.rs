//! Live counters for the operator's dashboard (`GET /v1/admin/live`): holds by outcome, 503s,
//! and a histogram of commit latency. Plain relaxed atomics, bumped where each event is decided,
//! so counting costs the hot path one uncontended add; the sampler (`http::live`) reads them
//! every half second and turns differences into rates and quantiles.
//!
//! These are per process (not the global `metrics` recorder), so two applications in one test
//! binary never see each other's counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling of the latency: quantiles are reported to within 19 %.
const STEPS_PER_OCTAVE: u32 = 4;
/// Buckets in all: from 1 µs up past 60 s (26 octaves); slower commits land in the last one.
const BUCKETS: usize = 26 * STEPS_PER_OCTAVE as usize;

/// Counts of events since the process started.
#[derive(Debug, Default)]
pub struct LiveStats {
    placed: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
    voided: AtomicU64,
    paid: AtomicU64,
    unavailable: AtomicU64,
}

/// What [`LiveStats`] held at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounters {
    pub placed: u64,
    pub refused: u64,
    pub expired: u64,
    pub voided: u64,
    pub paid: u64,
    pub unavailable: u64,
}

impl LiveStats {
    /// A hold was placed (decided in memory; its commit is counted by the persister).
    pub fn hold_placed(&self) {
        self.placed.fetch_add(1, Ordering::Relaxed);
    }

    /// A hold was refused because a seat was taken.
    pub fn hold_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hold_expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    /// A hold was cancelled by its owner.
    pub fn hold_voided(&self) {
        self.voided.fetch_add(1, Ordering::Relaxed);
    }

    /// A hold was paid for (its seats are sold).
    pub fn hold_paid(&self) {
        self.paid.fetch_add(1, Ordering::Relaxed);
    }

    /// The service answered 503.
    pub fn answered_unavailable(&self) {
        self.unavailable.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> LiveCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LiveCounters {
            placed: get(&self.placed),
            refused: get(&self.refused),
            expired: get(&self.expired),
            voided: get(&self.voided),
            paid: get(&self.paid),
            unavailable: get(&self.unavailable),
        }
    }
}

/// A latency histogram with logarithmic buckets, safe to record into from any thread.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket counts at one instant; the difference of two is the histogram of what happened
/// between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramCounts([u64; BUCKETS]);

impl Default for HistogramCounts {
    fn default() -> Self {
        HistogramCounts([0; BUCKETS])
    }
}

/// The bucket of a latency of `micros` µs: `floor(log2(micros) × STEPS_PER_OCTAVE)`, clamped.
fn bucket_of(micros: u64) -> usize {
    if micros <= 1 {
        return 0;
    }
    let log2 = (micros as f64).log2();
    ((log2 * STEPS_PER_OCTAVE as f64) as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in milliseconds.
fn upper_bound_ms(i: usize) -> f64 {
    2f64.powf((i + 1) as f64 / STEPS_PER_OCTAVE as f64) / 1000.0
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> HistogramCounts {
        HistogramCounts(std::array::from_fn(|i| {
            self.buckets[i].load(Ordering::Relaxed)
        }))
    }
}

impl HistogramCounts {
    /// What was recorded after `earlier` was read.
    pub fn since(&self, earlier: &HistogramCounts) -> HistogramCounts {
        HistogramCounts(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0–1) in milliseconds, as its bucket's upper bound; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: the smallest bucket holding at least that many.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound_ms(i));
            }
        }
        Some(upper_bound_ms(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_what_was_recorded_since() {
        let h = LatencyHistogram::default();
        for _ in 0..1000 {
            h.record(Duration::from_millis(50));
        }
        let before = h.read();
        for _ in 0..98 {
            h.record(Duration::from_micros(1_000));
        }
        h.record(Duration::from_millis(10));
        h.record(Duration::from_millis(10));
        let window = h.read().since(&before);
        assert_eq!(window.count(), 100);
        let p50 = window.quantile_ms(0.5).expect("recorded");
        let p99 = window.quantile_ms(0.99).expect("recorded");
        // Within one bucket (19 %) above the true value, never below it.
        assert!((1.0..1.19).contains(&p50), "p50 {p50}");
        assert!((10.0..11.9).contains(&p99), "p99 {p99}");
        assert_eq!(window.quantile_ms(0.0), Some(p50));
    }

    #[test]
    fn an_empty_window_has_no_quantile() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_millis(3));
        let now = h.read();
        assert_eq!(now.since(&now).quantile_ms(0.5), None);
    }

    #[test]
    fn extremes_land_in_the_end_buckets() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let h = LatencyHistogram::default();
        h.record(Duration::from_secs(3600));
        assert!(h.read().quantile_ms(1.0).expect("recorded") > 60_000.0);
    }

    #[test]
    fn counters_count_each_outcome() {
        let s = LiveStats::default();
        s.hold_placed();
        s.hold_placed();
        s.hold_refused();
        s.hold_expired();
        s.hold_voided();
        s.hold_paid();
        s.answered_unavailable();
        assert_eq!(
            s.read(),
            LiveCounters {
                placed: 2,
                refused: 1,
                expired: 1,
                voided: 1,
                paid: 1,
                unavailable: 1
            }
        );
    }
}
