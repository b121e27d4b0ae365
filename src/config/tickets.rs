//! `--ticket-signing-key`, `--door-key` and `--refund-until-secs` (API.md §12): the tickets'
//! Ed25519 key, the scanners' key, and how late a paid reservation may be refunded.

use super::Secret;
use clap::Args;
use std::path::PathBuf;

/// The flags, as given.
#[derive(Debug, Clone, Args)]
pub struct TicketArgs {
    /// An Ed25519 private key in PKCS#8 PEM that signs ticket codes (default: one generated
    /// once and kept in the database).
    #[arg(long, env = "BOXOFFICE_TICKET_SIGNING_KEY")]
    pub ticket_signing_key: Option<PathBuf>,
    /// Key of the door's routes (header X-Door-Key), at least 32 bytes; the admin key works
    /// too. Without either the door answers 403.
    #[arg(long, env = "BOXOFFICE_DOOR_KEY", hide_env_values = true)]
    pub door_key: Option<Secret>,
    /// A paid reservation may be refunded until this long before its concert (kept in the
    /// engine's settings, `EngineSettings::refund_until`).
    #[arg(long, env = "BOXOFFICE_REFUND_UNTIL_SECS", default_value_t = 86_400)]
    pub refund_until_secs: u64,
}

/// The checked settings.
#[derive(Debug, Clone)]
pub struct TicketSettings {
    pub signing_key_file: Option<PathBuf>,
    pub door_key: Option<Secret>,
}

impl TicketSettings {
    pub fn defaults() -> TicketSettings {
        TicketSettings {
            signing_key_file: None,
            door_key: None,
        }
    }
}

impl From<TicketArgs> for TicketSettings {
    fn from(args: TicketArgs) -> TicketSettings {
        TicketSettings {
            signing_key_file: args
                .ticket_signing_key
                .filter(|p| !p.as_os_str().is_empty()),
            door_key: args.door_key.filter(|k| !k.expose().is_empty()),
        }
    }
}
