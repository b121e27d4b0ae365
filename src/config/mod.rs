//! Settings: command-line flags with environment fallbacks (flag wins), as API.md §7 names them.

use crate::actors::EngineSettings;
use crate::domain::time::parse_offset;
use crate::domain::Money;
use crate::store::redact;
use chrono::FixedOffset;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod network;
mod pow;
mod rate;
mod tickets;

pub use network::parse_network;
pub use pow::{JoinPowArgs, JoinPowSettings};
pub use rate::Rate;
pub use tickets::{TicketArgs, TicketSettings};

/// The default store: an embedded SQLite file beside the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://boxoffice.db";
/// Shortest admin key served: 32 random bytes are beyond guessing, however many tries.
pub const MIN_ADMIN_KEY_BYTES: usize = 32;

/// A setting that must never reach a log or a panic message: its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret(text.to_string())
    }
}

#[derive(Debug, Parser)]
#[command(name = "boxoffice", version, about = "A ticket-drop booking engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once at startup: the size of the serve flags costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Download a fair opening's draw from a running service, check its commitment, digest
    /// and every place, and print a token's place (API.md §11). Exits non-zero on any mismatch.
    VerifyDraw(VerifyDrawArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VerifyDrawArgs {
    /// The service's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// A queue token id (decimal): prints its place in the draw. It stays on this machine:
    /// only its public name, SHA-256 of it, is looked up in the published order.
    #[arg(long)]
    pub token: Option<i64>,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// postgres://… for PostgreSQL, sqlite://FILE for the embedded store.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "BOXOFFICE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Key for the /v1/admin routes (header X-Admin-Key), at least 32 bytes; without it they
    /// answer 403.
    #[arg(long, env = "BOXOFFICE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<Secret>,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// How long a reservation holds its seats.
    #[arg(long, env = "BOXOFFICE_HOLD_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub hold_ttl_secs: u64,
    /// How long a waiting-list offer holds its seats for the entry's user (API.md §12).
    #[arg(long, env = "BOXOFFICE_OFFER_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub offer_ttl_secs: u64,
    /// How long an admitted token stays ACTIVE.
    #[arg(long, env = "BOXOFFICE_ACTIVE_TTL_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub active_ttl_secs: u64,
    /// A waiter that does not poll for this long leaves the line.
    #[arg(long, env = "BOXOFFICE_IDLE_TIMEOUT_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,
    /// At most this many ACTIVE tokens at once.
    #[arg(long, env = "BOXOFFICE_MAX_ACTIVE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_active: u64,
    /// At most this many admissions per second (0: no rate cap).
    #[arg(long, env = "BOXOFFICE_ADMIT_PER_SEC", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub admit_per_sec: u32,
    /// Seats one user may hold or own per schedule.
    #[arg(long, env = "BOXOFFICE_MAX_SEATS_PER_USER", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_seats_per_user: u32,
    /// Largest single recharge, in won.
    #[arg(long, env = "BOXOFFICE_MAX_RECHARGE", default_value_t = 10_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_recharge: i64,
    /// Idempotency keys one user may have live (an answer is kept up to two days); past it a
    /// new key answers 429.
    #[arg(long, env = "BOXOFFICE_MAX_IDEMPOTENCY_KEYS_PER_USER", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_idempotency_keys_per_user: u32,
    /// PostgreSQL only: keep two group commits in flight, the next batch's statements sent
    /// while the previous COMMIT flushes (committed after it, rolled back if it fails). Off by
    /// default: on a CPU-bound machine its extra round trips cost more than the overlap saves
    /// (docs/BENCHMARKS.md, issue 14); it pays where the database's flush, not CPU, is the wait.
    #[arg(long, env = "BOXOFFICE_PIPELINE_COMMITS")]
    pub pipeline_commits: bool,
    /// Zone of every timestamp in and out, e.g. +09:00.
    #[arg(long, env = "BOXOFFICE_TZ_OFFSET", default_value = "+00:00", value_parser = offset)]
    pub timezone_offset: FixedOffset,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "BOXOFFICE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Requests a second one client address may make (0: no limit).
    #[arg(long, env = "BOXOFFICE_RATE_LIMIT_PER_IP", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_per_ip: u32,
    /// Requests one client address may make at once above its rate (default: one second's worth).
    #[arg(long, env = "BOXOFFICE_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: Option<u32>,
    /// Requests a second one user may make, in jwt mode (0: no limit).
    #[arg(long, env = "BOXOFFICE_RATE_LIMIT_PER_USER", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_per_user: u32,
    /// Requests one user may make at once above their rate (default: one second's worth).
    #[arg(long, env = "BOXOFFICE_RATE_LIMIT_USER_BURST", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_user_burst: Option<u32>,
    /// Proxies (CIDR or address) whose X-Forwarded-For names the client; comma-separated in the environment.
    #[arg(long, env = "BOXOFFICE_TRUSTED_PROXY", value_delimiter = ',', num_args = 1.., value_parser = parse_network)]
    pub trusted_proxy: Vec<ipnet::IpNet>,
    /// A request body not complete this long after its head answers 408.
    #[arg(long, env = "BOXOFFICE_BODY_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub body_timeout_secs: u64,
    /// Serve /metrics (and /openapi.json, /healthz, /readyz) on this address, and not /metrics publicly.
    #[arg(long, env = "BOXOFFICE_OPS_BIND")]
    pub ops_bind: Option<String>,
    /// Load demo users, a concert and seats when the store is empty.
    #[arg(long)]
    pub demo: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub join_pow: JoinPowArgs,
    #[command(flatten)]
    pub tickets: TicketArgs,
}

/// Cluster mode (API.md §10): several nodes serve one drop over one PostgreSQL database.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Serve as one node of a cluster (PostgreSQL only): shards are leased, every write is
    /// fenced on its shard's epoch in the same transaction.
    #[arg(long, env = "BOXOFFICE_CLUSTER")]
    pub cluster: bool,
    /// This node's id in the cluster: 1–64 of A–Z a–z 0–9 . _ -
    #[arg(long, env = "BOXOFFICE_NODE_ID")]
    pub node_id: Option<String>,
    /// Where the other nodes reach this one, e.g. http://10.0.0.5:8080
    #[arg(long, env = "BOXOFFICE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// How long a node's lease lasts without renewal (renewed every quarter of it): a dead
    /// node's shards move after about this long.
    #[arg(long, env = "BOXOFFICE_LEASE_TTL_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub lease_ttl_secs: u64,
}

/// Who may call the user-scoped routes (API.md §8).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// none: a user is whoever the path names (the seed contract); jwt: every user-scoped
    /// route needs `Authorization: Bearer <JWT>` whose `sub` is that user.
    #[arg(long = "auth", env = "BOXOFFICE_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub mode: AuthMode,
    /// HS256 secret of the bearer tokens (at least 32 bytes).
    #[arg(long, env = "BOXOFFICE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// PEM public key of the bearer tokens: RS256, ES256 or EdDSA by the key's type.
    #[arg(long, env = "BOXOFFICE_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` of the bearer tokens.
    #[arg(long, env = "BOXOFFICE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of the bearer tokens.
    #[arg(long, env = "BOXOFFICE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// With --auth jwt, a user's own bearer may recharge their wallet (otherwise only
    /// X-Admin-Key, a payment provider's callback, may).
    #[arg(long, env = "BOXOFFICE_USER_RECHARGE")]
    pub user_recharge: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum AuthMode {
    #[default]
    None,
    Jwt,
}

/// [`AuthArgs`], checked into a verifier at startup (`http::auth`).
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub jwt_secret: Option<Secret>,
    pub jwt_public_key: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub user_recharge: bool,
}

impl From<AuthArgs> for AuthSettings {
    fn from(args: AuthArgs) -> AuthSettings {
        let given = |text: Option<String>| text.filter(|t| !t.is_empty());
        AuthSettings {
            mode: args.mode,
            jwt_secret: args.jwt_secret.filter(|k| !k.expose().is_empty()),
            jwt_public_key: args.jwt_public_key.filter(|p| !p.as_os_str().is_empty()),
            jwt_issuer: given(args.jwt_issuer),
            jwt_audience: given(args.jwt_audience),
            user_recharge: args.user_recharge,
        }
    }
}

fn offset(text: &str) -> Result<FixedOffset, String> {
    parse_offset(text).ok_or_else(|| format!("expected an offset like +09:00, got {text:?}"))
}

/// Everything the application needs to start. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct Settings {
    pub bind: String,
    pub database_url: String,
    pub admin_key: Option<Secret>,
    pub auth: AuthSettings,
    pub engine: EngineSettings,
    pub timezone: FixedOffset,
    pub http_workers: usize,
    /// `--rate-limit-per-ip` and its burst; `None`: no limit.
    pub rate_limit_per_ip: Option<Rate>,
    /// `--rate-limit-per-user` and its burst (jwt mode); `None`: no limit.
    pub rate_limit_per_user: Option<Rate>,
    /// `--trusted-proxy`: whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `--body-timeout-secs`.
    pub body_timeout: Duration,
    /// `--ops-bind`: the address of the operations listener, if any.
    pub ops_bind: Option<String>,
    /// Whether the server stops itself on SIGINT/SIGTERM (off in tests).
    pub handle_signals: bool,
    pub demo: bool,
    /// `--cluster` and its node; `None`: a single node, as without it.
    pub cluster: Option<ClusterRequest>,
    /// `--join-pow-bits` and `--join-pow-key`.
    pub join_pow: JoinPowSettings,
    /// `--ticket-signing-key`, `--door-key`, `--refund-until-secs` (API.md §12).
    pub tickets: TicketSettings,
}

/// `--cluster` as given, checked by [`Settings::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRequest {
    pub node_id: Option<String>,
    pub advertise_url: Option<String>,
    pub lease_ttl: Duration,
}

/// Why settings cannot be served: one line for the operator, without the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the admin key must be at least {MIN_ADMIN_KEY_BYTES} bytes, not {0} (try `openssl rand -hex 32`)")]
    AdminKeyTooShort(usize),
    #[error("--cluster needs PostgreSQL (a postgres:// --database-url), not {0}")]
    ClusterNeedsPostgres(String),
    #[error("--cluster needs --node-id (BOXOFFICE_NODE_ID)")]
    ClusterWithoutNodeId,
    #[error("--node-id must be 1 to 64 of A-Z a-z 0-9 . _ - (got {0:?})")]
    BadNodeId(String),
    #[error(
        "--cluster needs --advertise-url (BOXOFFICE_ADVERTISE_URL), e.g. http://10.0.0.5:8080"
    )]
    ClusterWithoutAdvertiseUrl,
    #[error("--advertise-url must be http://HOST:PORT or https://HOST:PORT, at most 256 bytes (got {0:?})")]
    BadAdvertiseUrl(String),
    #[error("--cluster needs --admin-key (BOXOFFICE_ADMIN_KEY), the same on every node: nodes authenticate each other's calls with it")]
    ClusterWithoutAdminKey,
    #[error("--join-pow-bits must be 0 to {max}, not {0} (each bit doubles a client's work)", max = crate::domain::queue::pow::MAX_POW_BITS)]
    JoinPowBitsTooMany(u8),
    #[error("--join-pow-key must be at least {MIN_ADMIN_KEY_BYTES} bytes, not {0} (try `openssl rand -hex 32`)")]
    JoinPowKeyTooShort(usize),
    #[error("--door-key must be at least {MIN_ADMIN_KEY_BYTES} bytes, not {0}")]
    DoorKeyTooShort(usize),
}

/// A checked cluster node.
pub fn check_cluster(
    request: &ClusterRequest,
    database_url: &str,
) -> Result<crate::actors::cluster::ClusterConfig, SettingsError> {
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        return Err(SettingsError::ClusterNeedsPostgres(redact(database_url)));
    }
    let node_id = request
        .node_id
        .clone()
        .ok_or(SettingsError::ClusterWithoutNodeId)?;
    let shown = |t: &str| t.chars().take(80).collect::<String>();
    if node_id.is_empty()
        || node_id.len() > 64
        || !node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(SettingsError::BadNodeId(shown(&node_id)));
    }
    let url = request
        .advertise_url
        .clone()
        .ok_or(SettingsError::ClusterWithoutAdvertiseUrl)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let well_formed = rest.is_some_and(|r| {
        let host_port = r.trim_end_matches('/');
        !host_port.is_empty()
            && !host_port.contains(['/', '?', '#', '@', ' '])
            && host_port.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
    });
    if url.len() > 256 || !well_formed {
        return Err(SettingsError::BadAdvertiseUrl(shown(&url)));
    }
    Ok(crate::actors::cluster::ClusterConfig {
        node_id,
        advertise_url: url.trim_end_matches('/').to_string(),
        lease_ttl: request.lease_ttl,
    })
}

impl Settings {
    /// Refuses settings that would serve unsafely.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(key) = &self.admin_key {
            if key.expose().len() < MIN_ADMIN_KEY_BYTES {
                return Err(SettingsError::AdminKeyTooShort(key.expose().len()));
            }
        }
        if let Some(cluster) = &self.cluster {
            check_cluster(cluster, &self.database_url)?;
            if self.admin_key.is_none() {
                return Err(SettingsError::ClusterWithoutAdminKey);
            }
        }
        if self.join_pow.bits > crate::domain::queue::pow::MAX_POW_BITS {
            return Err(SettingsError::JoinPowBitsTooMany(self.join_pow.bits));
        }
        if let Some(key) = &self.tickets.door_key {
            if key.expose().len() < MIN_ADMIN_KEY_BYTES {
                return Err(SettingsError::DoorKeyTooShort(key.expose().len()));
            }
        }
        if let Some(key) = &self.join_pow.key {
            if key.expose().len() < MIN_ADMIN_KEY_BYTES {
                return Err(SettingsError::JoinPowKeyTooShort(key.expose().len()));
            }
        }
        Ok(())
    }

    /// Defaults for a given database, as tests and tools start from.
    pub fn for_database(database_url: impl Into<String>) -> Settings {
        Settings {
            bind: "127.0.0.1:0".into(),
            database_url: database_url.into(),
            admin_key: None,
            auth: AuthSettings::default(),
            engine: EngineSettings::default(),
            timezone: FixedOffset::east_opt(0).expect("zero is a valid offset"),
            http_workers: 2,
            rate_limit_per_ip: None,
            rate_limit_per_user: None,
            trusted_proxies: Vec::new(),
            body_timeout: Duration::from_secs(10),
            ops_bind: None,
            handle_signals: false,
            demo: false,
            cluster: None,
            join_pow: JoinPowSettings::off(),
            tickets: TicketSettings::defaults(),
        }
    }
}

impl From<ServeArgs> for Settings {
    fn from(args: ServeArgs) -> Settings {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Settings {
            bind: args.bind,
            database_url: args.database.database_url,
            admin_key: args.admin_key.filter(|k| !k.expose().is_empty()),
            auth: AuthSettings::from(args.auth),
            engine: EngineSettings {
                hold_ttl: Duration::from_secs(args.hold_ttl_secs),
                offer_ttl: Duration::from_secs(args.offer_ttl_secs),
                active_ttl: Duration::from_secs(args.active_ttl_secs),
                idle_timeout: Duration::from_secs(args.idle_timeout_secs),
                max_active: args.max_active as usize,
                admit_per_sec: args.admit_per_sec,
                max_seats_per_user: args.max_seats_per_user,
                max_recharge: Money::new(args.max_recharge).expect("clap keeps it ≥ 1"),
                max_idempotency_keys_per_user: args.max_idempotency_keys_per_user as usize,
                pipeline_commits: args.pipeline_commits,
                actor_threads: cores.clamp(1, 8),
                refund_until: Duration::from_secs(args.tickets.refund_until_secs),
                ..EngineSettings::default()
            },
            timezone: args.timezone_offset,
            http_workers: args.workers.map_or(cores, usize::from),
            rate_limit_per_ip: Rate::new(args.rate_limit_per_ip, args.rate_limit_burst),
            rate_limit_per_user: Rate::new(args.rate_limit_per_user, args.rate_limit_user_burst),
            trusted_proxies: args.trusted_proxy,
            body_timeout: Duration::from_secs(args.body_timeout_secs),
            ops_bind: args.ops_bind.filter(|a| !a.is_empty()),
            handle_signals: true,
            demo: args.demo,
            cluster: args.cluster.cluster.then(|| ClusterRequest {
                node_id: args.cluster.node_id.filter(|n| !n.is_empty()),
                advertise_url: args.cluster.advertise_url.filter(|u| !u.is_empty()),
                lease_ttl: Duration::from_secs(args.cluster.lease_ttl_secs),
            }),
            join_pow: JoinPowSettings::from(args.join_pow),
            tickets: TicketSettings::from(args.tickets),
        }
    }
}

/// Written out so that a secret never shows: the database url without its password, the keys
/// as `Secret(***)`. A field added to `Settings` stays out of it until listed here.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("database_url", &redact(&self.database_url))
            .field("admin_key", &self.admin_key)
            .field("auth", &self.auth)
            .field("engine", &self.engine)
            .field("timezone", &self.timezone)
            .field("http_workers", &self.http_workers)
            .field("handle_signals", &self.handle_signals)
            .field("demo", &self.demo)
            .field("rate_limit_per_ip", &self.rate_limit_per_ip)
            .field("rate_limit_per_user", &self.rate_limit_per_user)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("body_timeout", &self.body_timeout)
            .field("ops_bind", &self.ops_bind)
            .field("cluster", &self.cluster)
            .field("join_pow", &self.join_pow)
            .field("tickets", &self.tickets)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_into_settings() {
        let cli = Cli::try_parse_from([
            "boxoffice",
            "serve",
            "--database-url",
            "postgres://x@y/z",
            "--hold-ttl-secs",
            "7",
            "--timezone-offset",
            "+09:00",
            "--max-active",
            "3",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let settings = Settings::from(args);
        assert_eq!(settings.engine.hold_ttl, Duration::from_secs(7));
        assert_eq!(settings.engine.max_active, 3);
        assert_eq!(settings.timezone.local_minus_utc(), 9 * 3600);
    }

    #[test]
    fn auth_flags_parse_and_the_secret_stays_out_of_debug() {
        let cli = Cli::try_parse_from([
            "boxoffice",
            "serve",
            "--auth",
            "jwt",
            "--jwt-secret",
            "a-secret-of-thirty-two-bytes-000",
            "--jwt-issuer",
            "https://id.example",
            "--user-recharge",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let settings = Settings::from(args);
        assert_eq!(settings.auth.mode, AuthMode::Jwt);
        assert_eq!(
            settings.auth.jwt_issuer.as_deref(),
            Some("https://id.example")
        );
        assert!(settings.auth.user_recharge);
        assert!(!format!("{settings:?}").contains("thirty-two"));
        let default = Cli::try_parse_from(["boxoffice", "serve"]).unwrap();
        let Command::Serve(args) = default.command else {
            panic!("serve expected")
        };
        assert_eq!(Settings::from(args).auth.mode, AuthMode::None);
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--auth", "basic"]).is_err());
    }

    #[test]
    fn limits_and_the_ops_bind_parse_into_settings() {
        let cli = Cli::try_parse_from([
            "boxoffice",
            "serve",
            "--rate-limit-per-ip",
            "20",
            "--rate-limit-burst",
            "40",
            "--rate-limit-per-user",
            "5",
            "--trusted-proxy",
            "10.0.0.0/8",
            "192.168.0.1",
            "--body-timeout-secs",
            "3",
            "--ops-bind",
            "127.0.0.1:9090",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let settings = Settings::from(args);
        let per_ip = settings.rate_limit_per_ip.expect("a rate was given");
        assert_eq!((per_ip.per_second.get(), per_ip.burst.get()), (20, 40));
        let per_user = settings.rate_limit_per_user.expect("a rate was given");
        assert_eq!((per_user.per_second.get(), per_user.burst.get()), (5, 5));
        assert_eq!(settings.trusted_proxies.len(), 2);
        assert_eq!(settings.body_timeout, Duration::from_secs(3));
        assert_eq!(settings.ops_bind.as_deref(), Some("127.0.0.1:9090"));
    }

    #[test]
    fn without_limit_flags_nothing_is_limited() {
        let cli = Cli::try_parse_from(["boxoffice", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let settings = Settings::from(args);
        assert_eq!(settings.rate_limit_per_ip, None);
        assert_eq!(settings.rate_limit_per_user, None);
        assert!(settings.trusted_proxies.is_empty());
        assert_eq!(settings.body_timeout, Duration::from_secs(10));
        assert_eq!(settings.ops_bind, None);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(
            Cli::try_parse_from(["boxoffice", "serve", "--trusted-proxy", "10.0.0.0/99"]).is_err()
        );
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--body-timeout-secs", "0"]).is_err());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--hold-ttl-secs", "0"]).is_err());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--timezone-offset", "KST"]).is_err());
        assert!(Cli::try_parse_from(["boxoffice", "serve", "--max-recharge", "-1"]).is_err());
    }

    #[test]
    fn the_debug_form_of_settings_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "boxoffice",
            "serve",
            "--database-url",
            "postgres://app:db-hunter2@db/boxoffice?sslpassword=ssl-hunter2",
            "--admin-key",
            "admin-hunter2-admin-hunter2-admin-hunter2",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let settings = Settings::from(args);
        let shown = format!("{settings:?} {:?}", settings.clone());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/boxoffice"), "{shown}");
        assert!(shown.contains("admin_key: Some(Secret(***))"), "{shown}");
    }

    #[test]
    fn an_admin_key_shorter_than_32_bytes_is_refused() {
        let mut settings = Settings::for_database("memory://x");
        assert!(settings.validate().is_ok(), "no key: admin disabled");
        settings.admin_key = Some("k".repeat(31).into());
        let refused = settings.validate().expect_err("31 bytes is too short");
        assert!(!refused.to_string().contains("kkk"), "{refused}");
        settings.admin_key = Some("k".repeat(32).into());
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn the_join_pow_is_off_by_default_and_at_most_28_bits() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["boxoffice", "serve"];
            argv.extend_from_slice(extra);
            let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("serve expected")
            };
            Settings::from(args)
        };
        let default = parse(&[]);
        assert_eq!(default.join_pow.bits, 0);
        assert!(default.join_pow.key.is_none());
        let key = "pow-hunter2-pow-hunter2-pow-hunter2";
        let settings = parse(&["--join-pow-bits", "20", "--join-pow-key", key]);
        assert_eq!(settings.join_pow.bits, 20);
        assert!(settings.validate().is_ok());
        assert!(!format!("{settings:?}").contains("hunter2"));
        let refused = parse(&["--join-pow-bits", "29"])
            .validate()
            .expect_err("29 bits is refused");
        assert!(refused.to_string().contains("0 to 28, not 29"), "{refused}");
        assert!(parse(&["--join-pow-key", "short"]).validate().is_err());
    }

    #[test]
    fn at_most_1000_idempotency_keys_per_user_by_default() {
        let cli = Cli::try_parse_from(["boxoffice", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(
            Settings::from(args).engine.max_idempotency_keys_per_user,
            1000
        );
        assert!(Cli::try_parse_from([
            "boxoffice",
            "serve",
            "--max-idempotency-keys-per-user",
            "0"
        ])
        .is_err());
    }
}
