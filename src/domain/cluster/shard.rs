//! A shard: the unit of single-writer ownership in a cluster.
//!
//! Three kinds, each owned by exactly one node at a time:
//! - the waiting room (`queue`): its joins, admissions and expiries are one ordered stream, so
//!   FIFO admission needs one writer;
//! - one schedule (`schedule:17`): the seats of a schedule and its holds are decided together;
//! - a bucket of wallets (`wallets:5`): users are spread over a fixed [`WALLET_BUCKETS`] by id,
//!   so a node owns many small wallets without a lease row per user.
//!
//! The text form is what the lease table, the fence audit and the admin view store and show.

use crate::domain::{ScheduleId, UserId};
use std::fmt;
use std::str::FromStr;

/// How many buckets the wallets are spread over. Fixed: changing it would move every wallet
/// of a running cluster at once. 64 spreads evenly over up to ~50 nodes within the load bound.
pub const WALLET_BUCKETS: u16 = 64;

/// One shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShardId {
    Queue,
    Schedule(ScheduleId),
    Wallets(u16),
}

/// Why a text is not a shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a shard: {0:?} (expected queue, schedule:<id> or wallets:<0..{WALLET_BUCKETS}>)")]
pub struct ShardError(String);

impl ShardId {
    /// The wallet bucket of a user. Ids are handed out in sequence, so their remainder spreads
    /// evenly; no hash needed.
    pub fn of_wallet(user: UserId) -> ShardId {
        let bucket = user.get().rem_euclid(i64::from(WALLET_BUCKETS));
        // A remainder of a division by a u16 fits in a u16.
        ShardId::Wallets(u16::try_from(bucket).expect("a remainder mod WALLET_BUCKETS fits"))
    }

    /// Every wallet bucket, in order.
    pub fn wallet_buckets() -> impl Iterator<Item = ShardId> {
        (0..WALLET_BUCKETS).map(ShardId::Wallets)
    }

    /// The kind, for balancing each kind on its own (see [`super::placement`]).
    pub fn kind(self) -> &'static str {
        match self {
            ShardId::Queue => "queue",
            ShardId::Schedule(_) => "schedule",
            ShardId::Wallets(_) => "wallets",
        }
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardId::Queue => f.write_str("queue"),
            ShardId::Schedule(id) => write!(f, "schedule:{id}"),
            ShardId::Wallets(bucket) => write!(f, "wallets:{bucket}"),
        }
    }
}

impl FromStr for ShardId {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ShardError(text.chars().take(64).collect());
        if text == "queue" {
            return Ok(ShardId::Queue);
        }
        let (kind, number) = text.split_once(':').ok_or_else(bad)?;
        // Canonical digits only, so one shard has one text form (no "+1", "01").
        if number.is_empty()
            || !number.bytes().all(|b| b.is_ascii_digit())
            || (number.len() > 1 && number.starts_with('0'))
        {
            return Err(bad());
        }
        match kind {
            "schedule" => {
                let raw: i64 = number.parse().map_err(|_| bad())?;
                Ok(ShardId::Schedule(ScheduleId::new(raw).map_err(|_| bad())?))
            }
            "wallets" => {
                let bucket: u16 = number.parse().map_err(|_| bad())?;
                if bucket < WALLET_BUCKETS {
                    Ok(ShardId::Wallets(bucket))
                } else {
                    Err(bad())
                }
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_text_forms() {
        let schedule = ShardId::Schedule(ScheduleId::new(17).expect("17 is positive"));
        assert_eq!(schedule.to_string(), "schedule:17");
        assert_eq!(ShardId::Queue.to_string(), "queue");
        assert_eq!(ShardId::Wallets(5).to_string(), "wallets:5");
        for bad in [
            "",
            "queue:1",
            "schedule:",
            "schedule:0",
            "schedule:-1",
            "schedule:01",
            "schedule:+1",
            "wallets:64",
            "wallets:x",
            "seats:1",
            "schedule:99999999999999999999",
        ] {
            assert!(bad.parse::<ShardId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn wallets_spread_evenly_over_the_buckets() {
        let mut counts = [0u32; WALLET_BUCKETS as usize];
        for raw in 1..=6400 {
            let user = UserId::new(raw).expect("positive");
            match ShardId::of_wallet(user) {
                ShardId::Wallets(b) => counts[usize::from(b)] += 1,
                other => panic!("a wallet in {other}"),
            }
        }
        assert!(counts.iter().all(|&c| c == 100), "{counts:?}");
    }

    proptest! {
        #[test]
        fn every_shard_round_trips_through_its_text(raw in 1i64..=i64::MAX, bucket in 0u16..WALLET_BUCKETS) {
            for shard in [ShardId::Queue, ShardId::Schedule(ScheduleId::new(raw).expect("positive")), ShardId::Wallets(bucket)] {
                prop_assert_eq!(shard.to_string().parse::<ShardId>(), Ok(shard));
            }
        }

        #[test]
        fn no_text_panics(text in ".{0,40}") {
            let _ = text.parse::<ShardId>();
        }
    }
}
