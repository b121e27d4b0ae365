//! Helpers the line's tests share: a policy, timestamps, users and token ids.

use super::{AdmissionPolicy, Joined, TokenRecord};
use crate::domain::{Timestamp, TokenId, UserId};
use std::time::Duration;

pub(super) fn policy(max_active: usize) -> AdmissionPolicy {
    AdmissionPolicy {
        max_active,
        active_ttl: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(120),
        admit_per_sec: 0,
    }
}
pub(super) fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}
pub(super) fn user(n: i64) -> UserId {
    UserId::new(n).unwrap()
}
pub(super) fn ids() -> impl FnMut() -> TokenId {
    let mut n = 1000;
    move || {
        n += 1;
        TokenId::new(n).unwrap()
    }
}
pub(super) fn created(j: Joined) -> TokenRecord {
    match j {
        Joined::Created { token, .. } => token,
        Joined::Existing(r) => panic!("expected a new token, got {r:?}"),
    }
}
