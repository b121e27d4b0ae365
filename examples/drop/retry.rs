//! When a failed request is sent again, and after how long: the generator's retry policy, a
//! pure function of the failure, the attempt and whether the server would answer a repeat of
//! the request as it answered the first.

use std::time::Duration;

/// The longest pause before a retry, whatever `Retry-After` asks: the point is to measure the
/// service, and a run's time is bounded by `(retries + 1) × (timeout + this)` per request.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The first pause without a `Retry-After`; it doubles on each retry, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The policy of the runs measured before `--retry-503`: a 503 retried 3 times after 20 ms.
const LEGACY_RETRIES: u32 = 3;
const LEGACY_BACKOFF: Duration = Duration::from_millis(20);

/// Why an attempt failed, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A 503, with its `Retry-After` if it had a readable one.
    Unavailable { retry_after: Option<Duration> },
    /// No connection could be opened: nothing was sent.
    NotConnected,
    /// The request was (or may have been) written, and no whole answer came back.
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, at most.
    retries: u32,
    /// `--retry-503`: connection errors too, `Retry-After` honoured, keys sent.
    thorough: bool,
}

impl RetryPolicy {
    /// From `--retry-503`: `None` is the policy of the runs measured before the flag.
    pub fn from_flag(retries: Option<u32>) -> RetryPolicy {
        match retries {
            Some(retries) => RetryPolicy {
                retries,
                thorough: true,
            },
            None => RetryPolicy {
                retries: LEGACY_RETRIES,
                thorough: false,
            },
        }
    }

    /// Whether every measured POST carries an `Idempotency-Key` (the same on each retry).
    pub fn sends_keys(&self) -> bool {
        self.thorough
    }

    /// How long to wait before retry number `retried + 1`, or `None` to give up. `replayable`:
    /// a repeat of the request is answered as the first was (a GET, a join that finds the
    /// live token, a payment under its key); only such a request is sent again when the
    /// first one may have reached the server.
    pub fn delay(&self, retried: u32, failure: Failure, replayable: bool) -> Option<Duration> {
        if retried >= self.retries {
            return None;
        }
        if !self.thorough {
            return matches!(failure, Failure::Unavailable { .. }).then_some(LEGACY_BACKOFF);
        }
        let doubling = FIRST_BACKOFF
            .saturating_mul(1 << retried.min(16))
            .min(MAX_BACKOFF);
        match failure {
            Failure::Unavailable { retry_after } => {
                Some(retry_after.map_or(doubling, |asked| asked.min(MAX_BACKOFF)))
            }
            Failure::NotConnected => Some(doubling),
            Failure::Broken if replayable => Some(doubling),
            Failure::Broken => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNAVAILABLE: Failure = Failure::Unavailable { retry_after: None };

    #[test]
    fn without_the_flag_a_503_is_retried_three_times_after_20_ms_and_nothing_else() {
        let legacy = RetryPolicy::from_flag(None);
        assert!(!legacy.sends_keys());
        for retried in 0..3 {
            assert_eq!(
                legacy.delay(retried, UNAVAILABLE, false),
                Some(Duration::from_millis(20))
            );
        }
        assert_eq!(legacy.delay(3, UNAVAILABLE, true), None);
        let asked = Failure::Unavailable {
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(
            legacy.delay(0, asked, true),
            Some(Duration::from_millis(20))
        );
        assert_eq!(legacy.delay(0, Failure::NotConnected, true), None);
        assert_eq!(legacy.delay(0, Failure::Broken, true), None);
    }

    #[test]
    fn with_the_flag_retries_are_counted_and_retry_after_is_honoured_up_to_a_second() {
        let policy = RetryPolicy::from_flag(Some(2));
        assert!(policy.sends_keys());
        let asked = |secs| Failure::Unavailable {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(policy.delay(0, asked(0), false), Some(Duration::ZERO));
        assert_eq!(policy.delay(0, asked(1), false), Some(MAX_BACKOFF));
        assert_eq!(policy.delay(1, asked(30), false), Some(MAX_BACKOFF));
        assert_eq!(
            policy.delay(2, asked(1), false),
            None,
            "two retries at most"
        );
        assert_eq!(
            RetryPolicy::from_flag(Some(0)).delay(0, UNAVAILABLE, true),
            None
        );
    }

    #[test]
    fn the_backoff_doubles_and_stays_under_a_second() {
        let policy = RetryPolicy::from_flag(Some(20));
        let waits: Vec<_> = (0..20)
            .map(|n| {
                policy
                    .delay(n, UNAVAILABLE, false)
                    .expect("within 20 retries")
            })
            .collect();
        assert_eq!(waits[0], Duration::from_millis(50));
        assert_eq!(waits[1], Duration::from_millis(100));
        assert_eq!(waits[4], Duration::from_millis(800));
        assert!(waits[5..].iter().all(|w| *w == MAX_BACKOFF));
        let total: Duration = waits.iter().sum();
        assert!(total <= MAX_BACKOFF * 20, "{total:?}");
    }

    #[test]
    fn a_request_that_may_have_arrived_is_sent_again_only_if_a_repeat_is_harmless() {
        let policy = RetryPolicy::from_flag(Some(3));
        assert!(policy.delay(0, Failure::NotConnected, false).is_some());
        assert!(policy.delay(0, Failure::Broken, true).is_some());
        assert_eq!(policy.delay(0, Failure::Broken, false), None);
    }
}
