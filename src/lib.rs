//! boxoffice: a ticket-drop booking engine.
//!
//! The map of the crate, and the path of a reservation through it:
//!
//! - [`http`]: actix-web routes, from one table ([`http::route_table`]) in which every route
//!   names its shard key. A handler parses the request into a domain request (ids become
//!   newtypes, bodies are checked), checks the `TOKEN-ID` against the published waiting room,
//!   and calls one [`actors::Engine`] operation; it renders the answer (and an idempotent
//!   replay) into JSON.
//! - [`actors`]: the live state. [`actors::engine`] (its operations by area) finds the one actor
//!   that owns the state in the [`actors::registry`] — the `QueueActor` ([`actors::queue`]), a
//!   schedule's `ScheduleActor` ([`actors::schedule`]), a user's `WalletActor`
//!   ([`actors::wallet`]) — and sends it one message. The actor decides synchronously and hands
//!   its row writes to the persister through its [`actors::durability`] link; what every actor
//!   is given is in [`actors::env`](mod@actors::env), boot in [`actors::recovery`].
//! - [`actors::persister`]: group-commits writes from every actor, one transaction per batch,
//!   and completes each reply only after its commit.
//! - [`actors::cluster`] and [`http::cluster`]: cluster mode, one layer above the single-node
//!   engine, which knows other nodes only through the [`actors::engine::Elsewhere`] trait.
//! - [`store`]: every SQL statement, behind one interface, one module per backend.
//! - [`domain`]: the pure rules — ids, money, holds, wallets, the waiting line
//!   ([`domain::queue`]), shards and leases ([`domain::cluster`]) — with time passed in, unit-
//!   and property-tested.
//! - [`config`], [`startup`], [`telemetry`], [`clock`], [`demo`], [`web`]: settings, wiring,
//!   logs, time, the demo data of `serve --demo`, and the pages.
//!
//! See `ARCHITECTURE.md` for who owns what and one request followed end to end.

// Long functions hide their steps: production code keeps each under clippy.toml's threshold
// (tests are exempt: a scenario reads best top to bottom).
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

/// Every binary linking the crate (the server, its tests, benches and load generators) uses
/// mimalloc: each decision allocates a few small objects on one thread and frees them on
/// another, and with glibc malloc that was half of the clients' CPU in the contention bench.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod actors;
pub mod clock;
pub mod config;
pub mod demo;
pub mod domain;
pub mod http;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod web;
