//! `--join-pow-bits` and `--join-pow-key` (API.md §11): the proof of work a new join costs,
//! off by default so the seed contract is unchanged.

use super::Secret;
use clap::Args;

/// The flags, as given.
#[derive(Debug, Clone, Args)]
pub struct JoinPowArgs {
    /// Zero bits the SHA-256 of a join's proof of work must start with (0: no proof asked, at
    /// most 28; each bit doubles a client's work).
    #[arg(long, env = "BOXOFFICE_JOIN_POW_BITS", default_value_t = 0)]
    pub join_pow_bits: u8,
    /// Key of the challenges' HMAC, at least 32 bytes (default: a random one per process; in
    /// cluster mode one derived from the admin key, so any node's challenge verifies at the
    /// queue's owner).
    #[arg(long, env = "BOXOFFICE_JOIN_POW_KEY", hide_env_values = true)]
    pub join_pow_key: Option<Secret>,
}

/// The checked settings: `bits` 0 is off.
#[derive(Debug, Clone)]
pub struct JoinPowSettings {
    pub bits: u8,
    pub key: Option<Secret>,
    /// How long a challenge is valid; API.md's 2 minutes except in tests.
    pub validity: std::time::Duration,
}

impl JoinPowSettings {
    pub fn off() -> JoinPowSettings {
        JoinPowSettings {
            bits: 0,
            key: None,
            validity: crate::domain::queue::pow::CHALLENGE_VALIDITY,
        }
    }
}

impl From<JoinPowArgs> for JoinPowSettings {
    fn from(args: JoinPowArgs) -> JoinPowSettings {
        JoinPowSettings {
            bits: args.join_pow_bits,
            key: args.join_pow_key.filter(|k| !k.expose().is_empty()),
            ..JoinPowSettings::off()
        }
    }
}
