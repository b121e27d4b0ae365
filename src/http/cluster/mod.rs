//! The cluster's HTTP: forwarding a request to the node that holds its shard
//! ([`forward`], by the route table's shard keys: [`routing`]; polls answered from a snapshot:
//! [`polls`]; a batch of scans split by schedule: [`scans`]; who owns a shard, the hop header
//! and the pooled client, below them all: [`owners`]), the node-to-node routes ([`internal`]) and the client that calls them
//! ([`peer_client`]) with their JSON ([`peer_wire`]), and `GET /v1/admin/cluster` ([`view`]).
//! Outside cluster mode none of it answers anything: the forwarder passes every request on,
//! and the node-to-node and cluster routes are 404s.

mod forward;
pub(super) mod internal;
mod owners;
mod peer_client;
mod peer_wire;
mod polls;
mod routing;
pub(super) mod scans;
pub(super) mod view;

pub use forward::{forward, HOP_HEADER};
pub use peer_client::PeerClient;
pub use polls::SnapshotAnswer;
