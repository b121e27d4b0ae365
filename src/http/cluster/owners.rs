//! Who owns a shard as this node's last membership round saw it, the header that marks a
//! request's one hop, and the pooled client every call to another node goes out on: below
//! the forwarder, the batch-scan splitter and the peer client, which all need them (and
//! nothing of the route table).

use crate::actors::cluster::Membership;
use crate::domain::cluster::ShardId;
use std::time::Duration;

/// Marks a forwarded request; its value is the forwarding node's id.
pub const HOP_HEADER: &str = "x-boxoffice-hop";

/// A forwarded request waits at most this long for the owner: longer than a commit's own
/// 5 s limit, so the owner's answer (or its 503) is what the client sees.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

thread_local! {
    /// One pooled client per HTTP worker thread: each actix worker runs its own runtime, and a
    /// pooled connection belongs to the runtime that opened it.
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .connect_timeout(Duration::from_secs(1))
        .timeout(FORWARD_TIMEOUT)
        .build()
        // Only fails on a TLS backend or resolver that cannot start; neither is compiled in.
        .expect("a plain HTTP client builds");
}

/// This worker thread's pooled client (also the peer client's: one pool per thread).
pub(super) fn client() -> reqwest::Client {
    CLIENT.with(reqwest::Client::clone)
}

/// `shard`'s owner and its URL, as this node's last round saw them, unless it is this node.
pub(super) fn owner_elsewhere(membership: &Membership, shard: ShardId) -> Option<(String, String)> {
    let owner = owner_of(membership, shard)?;
    if owner == membership.node_id() {
        return None;
    }
    let view = membership.view();
    let url = view.nodes.iter().find(|n| n.node_id == owner)?.url.clone();
    Some((owner, url))
}

pub(super) fn owner_of(membership: &Membership, shard: ShardId) -> Option<String> {
    let text = shard.to_string();
    membership
        .view()
        .shards
        .iter()
        .find(|s| s.shard == text)?
        .owner
        .clone()
}
