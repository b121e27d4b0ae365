//! How the line lets people in (the cap, the rate, the time limits), the wait estimate, and
//! how often a client is told to poll.

use super::TokenState;
use std::time::Duration;

/// A measured rate below this (one admission in 100 s) tells nothing about the wait.
const MIN_RATE: f64 = 0.01;
/// Shortest pause a poll is told to take (ACTIVE tokens and the front of the line): a waiter
/// learns of its admission within a second.
pub const POLL_FLOOR: Duration = Duration::from_secs(1);
/// Longest pause a poll is told to take, whatever `idle_timeout` is. Below it, the ceiling is
/// a quarter of `idle_timeout` (30 s at the default 120 s): a drop expecting a million waiters
/// can raise `idle_timeout` to slow the back of the line down (see `poll_after`).
pub const POLL_CEILING: Duration = Duration::from_secs(120);
/// Without any rate to go by, pace a waiter as if 100 people were admitted per second.
const POLL_PER_WAITER_AHEAD: Duration = Duration::from_millis(10);

/// How the line lets people in.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionPolicy {
    /// At most this many ACTIVE tokens at once.
    pub max_active: usize,
    /// How long an ACTIVE token lives after admission.
    pub active_ttl: Duration,
    /// A WAITING token not polled for this long is abandoned.
    pub idle_timeout: Duration,
    /// At most this many admissions per second; 0 means no rate cap.
    pub admit_per_sec: u32,
}

impl AdmissionPolicy {
    /// The longest pause a poll is told to take: a quarter of `idle_timeout` (a client that
    /// obeys it can miss three polls in a row and still not be dropped), at most
    /// [`POLL_CEILING`].
    pub fn poll_ceiling(&self) -> Duration {
        (self.idle_timeout / 4).min(POLL_CEILING)
    }

    /// How long a client should wait before its next poll.
    ///
    /// WAITING: a quarter of the estimated wait (the client notices its admission at most a
    /// quarter of its wait late, and at most a second late near the front), or 10 ms per
    /// waiter ahead when no rate is known. The farther back, the slower the polling: with a
    /// known admission rate `r`, the waiters closer than `4 r × ceiling` poll
    /// `4 r (1 + ln(ceiling / floor))` ≈ 18 r times a second in all, whatever the length of the
    /// line; the `m` waiters behind them poll once per ceiling each (`m / ceiling`, the least
    /// `idle_timeout` allows). ACTIVE: the floor. EXPIRED: the ceiling (nothing will change;
    /// rejoin instead).
    pub fn poll_after(&self, state: TokenState, ahead: u64, wait: Option<Duration>) -> Duration {
        let ceiling = self.poll_ceiling();
        let floor = POLL_FLOOR.min(ceiling);
        let target = match state {
            TokenState::Waiting => match wait {
                Some(wait) => wait / 4,
                None => {
                    POLL_PER_WAITER_AHEAD.saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX))
                }
            },
            TokenState::Active { .. } => floor,
            TokenState::Expired { .. } => ceiling,
        };
        target.clamp(floor, ceiling)
    }

    /// The rate (admissions per second) a wait estimate uses: the `measured` one, unless it is
    /// too low to tell anything, else `admit_per_sec`, else none.
    pub fn estimate_rate(&self, measured: Option<f64>) -> Option<f64> {
        match measured {
            Some(rate) if rate >= MIN_RATE => Some(rate),
            _ if self.admit_per_sec > 0 => Some(f64::from(self.admit_per_sec)),
            _ => None,
        }
    }
}

/// The wait a poll reports ([`TokenStatus::estimated_wait`](super::TokenStatus)) for a token in
/// `state` with `ahead` waiters before it; `rate` (see [`AdmissionPolicy::estimate_rate`]) is
/// only asked for a waiter.
pub(super) fn estimated_wait(
    state: TokenState,
    ahead: u64,
    rate: impl FnOnce() -> Option<f64>,
) -> Option<Duration> {
    match state {
        TokenState::Waiting => {
            rate().and_then(|rate| Duration::try_from_secs_f64((ahead + 1) as f64 / rate).ok())
        }
        TokenState::Active { .. } => Some(Duration::ZERO),
        TokenState::Expired { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue::test_support::{policy, t};

    #[test]
    fn polling_slows_down_towards_the_back_and_never_nears_the_idle_timeout() {
        let p = policy(10);
        let waiting = TokenState::Waiting;
        let active = TokenState::Active {
            admitted_at: t(0),
            expires_at: t(1),
        };
        assert_eq!(p.poll_after(active, 0, Some(Duration::ZERO)), POLL_FLOOR);
        assert_eq!(
            p.poll_after(waiting, 0, Some(Duration::from_secs(1))),
            POLL_FLOOR
        );
        let mid = p.poll_after(waiting, 1000, Some(Duration::from_secs(40)));
        assert_eq!(mid, Duration::from_secs(10));
        let far = p.poll_after(waiting, 1_000_000, Some(Duration::from_secs(10_000)));
        assert_eq!(far, Duration::from_secs(30));
        assert_eq!(
            p.poll_after(waiting, 1_000_000, None),
            Duration::from_secs(30)
        );
        // A short idle timeout: a quarter of it, even at the front.
        let short = AdmissionPolicy {
            idle_timeout: Duration::from_millis(800),
            ..p
        };
        assert_eq!(
            short.poll_after(waiting, 1_000_000, None),
            Duration::from_millis(200)
        );
        assert_eq!(
            short.poll_after(active, 0, None),
            Duration::from_millis(200)
        );
    }
}
