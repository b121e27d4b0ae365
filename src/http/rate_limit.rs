//! Request budgets: per client address (a middleware in front of every route, so an answer
//! over budget comes before any body is read) and per user (for the bearer check of jwt mode).
//! Both are governor's keyed limiters, with the table of keys bounded.

use super::client_ip::{limit_key, TrustedProxies};
use super::ApiError;
use crate::domain::UserId;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Most keys one budget tracks (each costs some 50 bytes: a few MiB at most). More distinct
/// clients than this inside one burst window is a distributed flood; the table then starts
/// over (see [`Budget::upkeep`]) instead of growing.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// How often (in checks) a budget looks at its table's size: the table can pass
/// [`MAX_TRACKED_KEYS`] by at most this many keys between two looks.
pub const UPKEEP_EVERY_CHECKS: u64 = 1024;

/// How often a quiet budget forgets the clients whose allowance is full again, so the memory
/// a burst of clients took is given back.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(10);

// The setting lives in `config` (settings import nothing from `http`); re-exported here,
// beside the budgets it sets.
pub use crate::config::Rate;

/// `rate` as governor's quota.
fn quota(rate: Rate) -> Quota {
    Quota::per_second(rate.per_second).allow_burst(rate.burst)
}

/// How long a refused client should wait, in whole seconds (at least 1), for `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    fn from_wait(wait: Duration) -> RetryAfter {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        RetryAfter(secs.max(1))
    }
}

impl From<RetryAfter> for ApiError {
    fn from(wait: RetryAfter) -> Self {
        ApiError::RateLimited {
            retry_after_secs: wait.0,
        }
    }
}

type Limiter<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed budget whose table of keys stays under [`MAX_TRACKED_KEYS`] (plus at most
/// [`UPKEEP_EVERY_CHECKS`]).
pub struct Budget<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    rate: Rate,
    max_keys: usize,
    clock: C,
    /// Replaced whole when it fills with clients that are all still inside their window.
    limiter: RwLock<Limiter<K, C>>,
    checks: AtomicU64,
    /// When idle keys were last forgotten; held by the one check doing upkeep.
    last_forget: Mutex<C::Instant>,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    pub fn new(rate: Rate) -> Budget<K> {
        Budget::with_clock(rate, MAX_TRACKED_KEYS, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Budget<K, C> {
    pub fn with_clock(rate: Rate, max_keys: usize, clock: C) -> Budget<K, C> {
        Budget {
            rate,
            max_keys,
            limiter: RwLock::new(RateLimiter::dashmap_with_clock(quota(rate), clock.clone())),
            last_forget: Mutex::new(clock.now()),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one request of `key`'s allowance, or says how long until there is one.
    pub fn check(&self, key: &K) -> Result<(), RetryAfter> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY_CHECKS == 0 {
            self.upkeep();
        }
        let limiter = self
            .limiter
            .read()
            .expect("no check panics holding the lock");
        limiter
            .check_key(key)
            .map_err(|refused| RetryAfter::from_wait(refused.wait_time_from(self.clock.now())))
    }

    /// How many keys the table holds now.
    pub fn tracked_keys(&self) -> usize {
        self.limiter
            .read()
            .expect("no check panics holding the lock")
            .len()
    }

    /// Forgets the keys whose allowance is full again (they would behave as new keys anyway)
    /// when the table is full or every [`FORGET_IDLE_EVERY`]. If the table is still full, every
    /// key in it is inside its window: a flood of distinct clients. Starting over then gives
    /// each a fresh burst, which a flood that size already has; refusing new keys instead would
    /// refuse every honest newcomer until the flood stops.
    fn upkeep(&self) {
        // One check at a time does upkeep; the others go on.
        let Ok(mut last_forget) = self.last_forget.try_lock() else {
            return;
        };
        let now = self.clock.now();
        let limiter = self
            .limiter
            .read()
            .expect("no check panics holding the lock");
        let idle_due = Duration::from(now.duration_since(*last_forget)) >= FORGET_IDLE_EVERY;
        if limiter.len() < self.max_keys && !idle_due {
            return;
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
        *last_forget = now;
        if limiter.len() < self.max_keys {
            return;
        }
        drop(limiter);
        let fresh = RateLimiter::dashmap_with_clock(quota(self.rate), self.clock.clone());
        *self
            .limiter
            .write()
            .expect("no check panics holding the lock") = fresh;
        metrics::counter!("boxoffice_rate_limit_table_resets_total").increment(1);
        tracing::warn!(
            max_keys = self.max_keys,
            "rate-limit table full of active clients: started over"
        );
    }
}

/// The per-address budget of `--rate-limit-per-ip`, and who counts as a proxy.
pub struct IpBudget {
    budget: Budget<IpAddr>,
    proxies: TrustedProxies,
}

impl IpBudget {
    pub fn new(rate: Rate, proxies: TrustedProxies) -> IpBudget {
        IpBudget {
            budget: Budget::new(rate),
            proxies,
        }
    }

    /// Spends one request of the client's allowance; 429 when there is none.
    fn check(&self, req: &ServiceRequest) -> Result<(), ApiError> {
        // A request with no peer (a Unix socket, a test request) shares one budget.
        let peer = req
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let forwarded = req.headers().get_all("x-forwarded-for");
        let client = self.proxies.client(peer, forwarded);
        Ok(self.budget.check(&limit_key(client))?)
    }
}

/// The per-user budget of `--rate-limit-per-user`, spent after the bearer names the user.
pub struct UserBudget(Budget<UserId>);

impl UserBudget {
    pub fn new(rate: Rate) -> UserBudget {
        UserBudget(Budget::new(rate))
    }

    /// Spends one request of `user`'s allowance; 429 `rate_limited` when there is none.
    pub fn check(&self, user: UserId) -> Result<(), ApiError> {
        Ok(self.0.check(&user)?)
    }
}

/// Refuses a client over its budget with 429 and `Retry-After`, before routing and before
/// anything reads the body. Passes everything when no [`IpBudget`] is configured.
pub async fn limit_by_address(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(budget) = req.app_data::<web::Data<IpBudget>>() {
        budget.check(&req)?;
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::net::Ipv4Addr;
    use std::time::Instant;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate::new(per_second, Some(burst)).expect("a non-zero rate in the test")
    }

    #[test]
    fn a_client_past_its_burst_waits_whole_seconds() {
        let clock = FakeRelativeClock::default();
        let budget = Budget::with_clock(rate(1, 3), MAX_TRACKED_KEYS, clock.clone());
        let client = IpAddr::from([192, 0, 2, 1]);
        for _ in 0..3 {
            assert_eq!(budget.check(&client), Ok(()));
        }
        assert_eq!(budget.check(&client), Err(RetryAfter(1)));
        assert_eq!(
            budget.check(&IpAddr::from([192, 0, 2, 2])),
            Ok(()),
            "another client has its own allowance"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(budget.check(&client), Ok(()));
        assert_eq!(budget.check(&client), Err(RetryAfter(1)));
    }

    #[test]
    fn a_refusal_rounds_its_wait_up_to_whole_seconds() {
        let clock = FakeRelativeClock::default();
        // 0.9 s to wait rounds up to 1: never 0, which would invite an immediate retry.
        let budget = Budget::with_clock(rate(1, 1), MAX_TRACKED_KEYS, clock.clone());
        let client = 7u32;
        assert_eq!(budget.check(&client), Ok(()));
        clock.advance(Duration::from_millis(100));
        assert_eq!(budget.check(&client), Err(RetryAfter(1)));
        assert_eq!(RetryAfter::from_wait(Duration::from_millis(2_001)).0, 3);
        assert_eq!(RetryAfter::from_wait(Duration::ZERO).0, 1);
    }

    #[test]
    fn a_million_distinct_addresses_do_not_grow_the_table_past_its_bound() {
        // The real clock and the production bound: every address arrives inside its window,
        // so only the bound keeps the table small.
        let budget: Budget<IpAddr> = Budget::new(rate(10, 20));
        let bound = MAX_TRACKED_KEYS + UPKEEP_EVERY_CHECKS as usize;
        let started = Instant::now();
        let mut largest = 0;
        for n in 0..1_000_000u32 {
            let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            assert_eq!(budget.check(&address), Ok(()), "a first request passes");
            if n % 1000 == 0 {
                largest = largest.max(budget.tracked_keys());
                assert!(largest <= bound, "{largest} keys after {n} addresses");
            }
        }
        largest = largest.max(budget.tracked_keys());
        assert!(largest <= bound, "{largest} keys");
        assert!(
            largest >= MAX_TRACKED_KEYS / 2,
            "the table did fill: {largest}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let budget = Budget::with_clock(rate(10, 10), MAX_TRACKED_KEYS, clock.clone());
        for n in 1..2000u32 {
            assert_eq!(budget.check(&n), Ok(()));
        }
        assert!(budget.tracked_keys() > 900);
        clock.advance(FORGET_IDLE_EVERY + Duration::from_secs(1));
        for _ in 0..UPKEEP_EVERY_CHECKS {
            let _ = budget.check(&0);
        }
        assert!(budget.tracked_keys() <= 2, "{}", budget.tracked_keys());
    }

    #[test]
    fn a_client_stays_limited_among_thousands_of_others() {
        let clock = FakeRelativeClock::default();
        let budget = Budget::with_clock(rate(1, 1), 10_000, clock.clone());
        let noisy = 0u32;
        assert_eq!(budget.check(&noisy), Ok(()));
        for n in 1..5_000u32 {
            assert_eq!(budget.check(&n), Ok(()));
        }
        assert_eq!(budget.check(&noisy), Err(RetryAfter(1)));
    }

    #[test]
    fn a_user_over_budget_is_told_rate_limited() {
        let budget = UserBudget::new(rate(1, 2));
        let user = UserId::new(42).expect("42 is a user id");
        let other = UserId::new(43).expect("43 is a user id");
        assert!(budget.check(user).is_ok());
        assert!(budget.check(user).is_ok());
        let refused = budget.check(user).expect_err("the third is over the burst");
        assert!(
            matches!(refused, ApiError::RateLimited { retry_after_secs } if retry_after_secs >= 1),
            "{refused:?}"
        );
        assert!(budget.check(other).is_ok());
    }

    #[test]
    fn a_million_distinct_users_do_not_grow_the_table_past_its_bound() {
        let budget = UserBudget::new(rate(5, 5));
        let bound = MAX_TRACKED_KEYS + UPKEEP_EVERY_CHECKS as usize;
        for n in 1..=1_000_000i64 {
            let user = UserId::new(n).expect("positive");
            assert!(budget.check(user).is_ok());
            if n % 1000 == 0 {
                assert!(budget.0.tracked_keys() <= bound);
            }
        }
    }

    #[test]
    fn no_rate_means_no_limit() {
        assert_eq!(Rate::new(0, Some(5)), None);
        let rate = Rate::new(3, None).expect("3/s");
        assert_eq!(rate.burst.get(), 3);
    }
}
