//! Identifier newtypes: a positive `i64` parsed once at the edge, never a bare integer inside.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// Why a raw integer is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be a positive integer")]
    NotPositive { kind: &'static str },
    #[error("{kind} is out of range")]
    OutOfRange { kind: &'static str },
}

/// Hashes ids: each word written is folded in by a 128-bit multiply by the golden ratio, the
/// two halves of the product xored, so both the low bits (hashbrown's bucket) and the high bits
/// (its tag) depend on every bit of the id, and a key of several words (a tuple) depends on
/// every word.
///
/// One hasher for every id-keyed map. The store's memory backend had its own, FxHash-style
/// (`(state.rotate_left(5) ^ word) * K`, returned as is): its low bits depend only on the low
/// bits of the id, so ids that differ only in their high bits share a bucket. This one does
/// not have that flaw, and hashes one id to the same value this module's hasher always did.
///
/// Only for maps keyed by ids the server chose (database ids, random token ids, positions):
/// clients can look such keys up but never choose what is inserted, so there is nothing to
/// flood, and a lookup on the hot path (a poll, a hold, a store commit) does not pay for
/// SipHash (it was a tenth of the memory store's time in a 40,000-seat benchmark).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Ids hash through write_i64 / write_u64; anything else still hashes, a word at a
        // time. The length goes first, so the zero padding of the last word cannot make
        // `b"ab"` and `b"ab\0"` equal.
        self.write_usize(bytes.len());
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        let product = u128::from(self.0 ^ word) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn write_i64(&mut self, id: i64) {
        self.write_u64(id as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// The [`IdHasher`] for `HashMap`s, `HashSet`s and `DashMap`s keyed by one id.
pub type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// A `HashMap` keyed by one server-chosen id.
pub type IdMap<K, V> = HashMap<K, V, BuildIdHasher>;

/// A `HashSet` of server-chosen ids.
pub type IdSet<K> = HashSet<K, BuildIdHasher>;

macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            /// The name clients know this id by, for error messages.
            pub const KIND: &'static str = $kind;

            /// Parses a raw id: ids are positive.
            pub fn new(raw: i64) -> Result<Self, IdError> {
                if raw > 0 {
                    Ok(Self(raw))
                } else {
                    Err(IdError::NotPositive { kind: $kind })
                }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = IdError;
            fn try_from(raw: i64) -> Result<Self, IdError> {
                Self::new(raw)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// A registered user (and the owner of exactly one wallet).
    UserId,
    "userId"
);
positive_id!(
    /// A concert: a name and its schedules.
    ConcertId,
    "concertId"
);
positive_id!(
    /// One performance of a concert, with its own seat map; owned by one `ScheduleActor`.
    ScheduleId,
    "scheduleId"
);
positive_id!(
    /// One seat of one schedule (seat ids are global, not per schedule).
    SeatId,
    "seatId"
);
positive_id!(
    /// A hold on one or more seats of one schedule, pending payment or settled.
    ReservationId,
    "reservationId"
);
positive_id!(
    /// One paid seat: the code a buyer shows at the door (API.md §12).
    TicketId,
    "ticketId"
);
positive_id!(
    /// A completed payment of one reservation.
    PaymentId,
    "paymentId"
);

/// A waiting-room token: random, uniformly drawn from `[1, 2^53 - 1]` so that it cannot be
/// guessed and stays exact in a JavaScript client's `Number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct TokenId(i64);

impl TokenId {
    /// The largest integer a JavaScript `Number` represents exactly.
    pub const MAX: i64 = (1 << 53) - 1;

    pub fn new(raw: i64) -> Result<Self, IdError> {
        match raw {
            1..=Self::MAX => Ok(Self(raw)),
            i64::MIN..=0 => Err(IdError::NotPositive { kind: "TOKEN-ID" }),
            _ => Err(IdError::OutOfRange { kind: "TOKEN-ID" }),
        }
    }

    /// Draws a fresh token id from the whole range.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        Self(rng.random_range(1..=Self::MAX))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for TokenId {
    type Error = IdError;
    fn try_from(raw: i64) -> Result<Self, IdError> {
        Self::new(raw)
    }
}

impl From<TokenId> for i64 {
    fn from(id: TokenId) -> i64 {
        id.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive() {
        assert!(UserId::new(0).is_err());
        assert!(UserId::new(-5).is_err());
        assert_eq!(UserId::new(7).unwrap().get(), 7);
    }

    #[test]
    fn token_ids_stay_within_javascript_safe_integers() {
        assert!(TokenId::new(TokenId::MAX).is_ok());
        assert_eq!(
            TokenId::new(TokenId::MAX + 1),
            Err(IdError::OutOfRange { kind: "TOKEN-ID" })
        );
        let mut rng = rand::rng();
        for _ in 0..10_000 {
            let id = TokenId::random(&mut rng).get();
            assert!((1..=TokenId::MAX).contains(&id));
        }
    }

    fn hash_of<K: std::hash::Hash>(key: K) -> u64 {
        use std::hash::BuildHasher;
        BuildIdHasher::default().hash_one(key)
    }

    /// hashbrown picks a bucket with the low bits of the hash: ids that differ only in their
    /// high bits (here, multiples of 2^20) must still spread over the buckets.
    #[test]
    fn ids_differing_only_in_high_bits_spread_over_buckets() {
        let buckets: HashSet<u64> = (1..=1024i64).map(|i| hash_of(i << 20) % 1024).collect();
        // 1,024 uniform draws into 1,024 buckets fill about 647 of them.
        assert!(buckets.len() > 512, "{} buckets used", buckets.len());
    }

    #[test]
    fn every_word_of_a_key_counts() {
        assert_ne!(hash_of((1i64, 7i64)), hash_of((2i64, 7i64)));
        assert_ne!(hash_of((7u64, 1u64)), hash_of((7u64, 2u64)));
        assert_ne!(hash_of("ab"), hash_of("ab\0"));
    }

    #[test]
    fn ids_deserialize_only_when_positive() {
        assert!(serde_json::from_str::<SeatId>("3").is_ok());
        assert!(serde_json::from_str::<SeatId>("0").is_err());
        assert!(serde_json::from_str::<SeatId>("-1").is_err());
    }
}
