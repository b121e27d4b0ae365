//! The measured admission rate: an exponentially weighted average over [`RATE_WINDOW`].

use crate::domain::Timestamp;
use std::time::Duration;

/// Time constant of the admission-rate average: admissions older than this weigh 1/e.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// An exponentially weighted rate of admissions: each admission counts `e^(-age/τ)/τ`, so a
/// steady rate `r` reads `r` whatever the tick length (no division by tiny intervals when
/// `advance` runs on every join). The sum is divided by `1 - e^(-T/τ)` (T: time observed, at
/// least one second) so the first seconds are not biased towards zero.
#[derive(Debug, Default)]
pub(super) struct RateMeter {
    /// The weighted sum, as of `at`.
    sum: f64,
    at: Option<Timestamp>,
    since: Option<Timestamp>,
    admitted_any: bool,
}

impl RateMeter {
    fn tau() -> f64 {
        RATE_WINDOW.as_secs_f64()
    }

    pub(super) fn observe(&mut self, now: Timestamp, admitted: usize) {
        let at = self.at.unwrap_or(now);
        let dt = at.until(now).as_secs_f64();
        self.sum = self.sum * (-dt / Self::tau()).exp() + admitted as f64 / Self::tau();
        self.at = Some(at.max(now));
        self.since.get_or_insert(now);
        self.admitted_any |= admitted > 0;
    }

    pub(super) fn rate(&self, now: Timestamp) -> Option<f64> {
        if !self.admitted_any {
            return None;
        }
        let (at, since) = (self.at?, self.since?);
        let decayed = self.sum * (-at.until(now).as_secs_f64() / Self::tau()).exp();
        let observed = since.until(now).as_secs_f64().max(1.0);
        Some(decayed / (1.0 - (-observed / Self::tau()).exp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// One admission every 50 ms (20 a second) from `start` to `end` (milliseconds).
    fn steady(meter: &mut RateMeter, start: i64, end: i64) {
        for ms in (start..=end).step_by(50) {
            meter.observe(t(ms), 1);
        }
    }

    /// The rate read at the end of `0..=end` ms of 20 admissions a second.
    fn steady_reading(end: i64) -> f64 {
        let mut meter = RateMeter::default();
        steady(&mut meter, 0, end);
        meter.rate(t(end)).expect("admissions were observed")
    }

    #[test]
    fn nothing_admitted_measures_nothing() {
        let mut meter = RateMeter::default();
        assert_eq!(meter.rate(t(0)), None);
        for ms in (0..=5_000).step_by(50) {
            meter.observe(t(ms), 0);
        }
        assert_eq!(meter.rate(t(5_000)), None);
    }

    #[test]
    fn a_steady_rate_reads_as_itself() {
        let rate = steady_reading(60_000);
        assert!((rate - 20.0).abs() < 0.2, "measured {rate}");
    }

    #[test]
    fn the_first_seconds_are_not_biased_towards_zero() {
        // Two seconds are a fifth of the window: an uncorrected average would read about 3.6.
        let rate = steady_reading(2_000);
        assert!((rate - 20.0).abs() < 1.0, "measured {rate}");
    }

    #[test]
    fn a_stopped_line_decays_by_e_over_the_window() {
        let window = i64::try_from(RATE_WINDOW.as_millis()).expect("ten seconds fit");
        let mut meter = RateMeter::default();
        steady(&mut meter, 0, 100_000);
        let before = meter.rate(t(100_000)).expect("admissions were observed");
        // Read without any further observation, and with ticks that admit nobody: the same.
        let unobserved = meter.rate(t(100_000 + window)).expect("still measured");
        for ms in (100_050..=100_000 + window).step_by(50) {
            meter.observe(t(ms), 0);
        }
        let observed = meter.rate(t(100_000 + window)).expect("still measured");
        let expected = before / std::f64::consts::E;
        for rate in [unobserved, observed] {
            assert!(
                (rate - expected).abs() < expected * 0.02,
                "{rate} vs {expected}"
            );
        }
    }
}
