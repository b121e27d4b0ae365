//! A waiting-room token: its states, its stored record, why it may not authorize a request,
//! what a poll sees, and what a join returns.

use crate::domain::{Timestamp, TokenId, UserId};
use std::time::Duration;

/// Where a token is in its life: `WAITING` → `ACTIVE` → `EXPIRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Waiting,
    Active {
        admitted_at: Timestamp,
        expires_at: Timestamp,
    },
    Expired {
        at: Timestamp,
    },
}

impl TokenState {
    pub fn name(self) -> &'static str {
        match self {
            TokenState::Waiting => "WAITING",
            TokenState::Active { .. } => "ACTIVE",
            TokenState::Expired { .. } => "EXPIRED",
        }
    }
}

/// A token as it is stored: everything but the volatile last-poll time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub user: UserId,
    /// Place number in the join order (the API's `queueId`).
    pub position: u64,
    pub created_at: Timestamp,
    pub state: TokenState,
}

impl TokenRecord {
    /// Whether this stored state lets `user` (when named) act at `now`: the rule of
    /// `WaitingLine::check_active` for a token read from the store, where a WAITING one is
    /// simply not active yet (its idle deadline is the line's to judge).
    pub fn authorizes(&self, user: Option<UserId>, now: Timestamp) -> Result<(), TokenRefusal> {
        if user.is_some_and(|u| u != self.user) {
            return Err(TokenRefusal::Invalid);
        }
        match self.state {
            TokenState::Waiting => Err(TokenRefusal::NotActive),
            TokenState::Active { expires_at, .. } if now < expires_at => Ok(()),
            TokenState::Active { .. } | TokenState::Expired { .. } => Err(TokenRefusal::Expired),
        }
    }
}

/// Why a token does not authorize a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// Unknown, or owned by another user.
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("token not active")]
    NotActive,
}

/// What a poll sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenStatus {
    pub record: TokenRecord,
    /// WAITING tokens ahead of this one (0 unless WAITING).
    pub ahead: u64,
    /// When the token stops being valid if nothing else happens.
    pub expires_at: Timestamp,
    /// WAITING: `(ahead + 1) / rate`, the rate being the measured admission rate, or
    /// `admit_per_sec` when nothing was measured yet; `None` when neither is known. ACTIVE:
    /// zero. EXPIRED: `None` (it will never be admitted).
    pub estimated_wait: Option<Duration>,
    /// When the client should poll again ([`super::AdmissionPolicy::poll_after`]).
    pub poll_after: Duration,
}

/// The outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The user already had a live token: a second click never loses a place.
    Existing(TokenRecord),
    Created {
        token: TokenRecord,
        /// The user's previous token, if it was due (idle or past its time to live) but not yet
        /// swept: it is expired now and must be stored before the new one (one live token per
        /// user, in the database too).
        retired: Option<TokenRecord>,
    },
}
