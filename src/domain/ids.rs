//! Identifier newtypes: a positive `i64` parsed once at the edge, never a bare integer inside.

use serde::{Deserialize, Serialize};
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

/// Hashes one integer id: a 128-bit multiply by the golden ratio, folded, so both the low
/// bits (bucket) and the high bits (hashbrown's tag) depend on every bit of the id.
///
/// Only for maps keyed by ids the server chose (database ids, random token ids): clients can
/// look such keys up but never choose what is inserted, so there is nothing to flood, and a
/// lookup on the hot path (a poll, a hold) does not pay for SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let product = u128::from(self.0) * 0x9E37_79B9_7F4A_7C15;
        (product as u64) ^ ((product >> 64) as u64)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Ids hash through write_i64; anything else still hashes, just more slowly.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_i64(&mut self, id: i64) {
        self.0 = id as u64;
    }
}

/// The [`IdHasher`] for `HashMap`s and `DashMap`s keyed by one id.
pub type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// A `HashMap` keyed by one server-chosen id.
pub type IdHashMap<K, V> = std::collections::HashMap<K, V, BuildIdHasher>;

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

    #[test]
    fn ids_deserialize_only_when_positive() {
        assert!(serde_json::from_str::<SeatId>("3").is_ok());
        assert!(serde_json::from_str::<SeatId>("0").is_err());
        assert!(serde_json::from_str::<SeatId>("-1").is_err());
    }
}
