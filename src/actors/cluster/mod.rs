//! Cluster mode's live parts: this node's membership, the shards it holds, and what answers
//! for the state other nodes hold. A layer above the single-node engine: the engine knows it
//! only through the [`Elsewhere`](super::engine::Elsewhere) that [`OtherNodes`] implements.
//!
//! Who may write is never decided here: the fence in each batch's transaction decides that
//! (`persister/fencing.rs`, `store/postgres_writes.rs`). What is decided here is which shards to try
//! to take and when, so that a dead or departed owner's shards find a new one in seconds.

pub mod catalog_sync;
pub mod membership;
pub mod other_nodes;
pub mod peers;
pub mod pin_resolver;
pub mod queue_copy;
pub mod queue_sync;
pub mod remote_payment;
pub mod remote_polls;
pub mod remote_refund;
pub mod seat_copy;

pub use membership::{ClusterConfig, ClusterView, Membership, NodeView, ShardView};
pub use other_nodes::OtherNodes;

use super::persister::ActorKey;
use super::Engine;
use crate::domain::cluster::ShardId;
use std::sync::Arc;

/// The shard an actor's state lives in.
pub fn shard_of(key: ActorKey) -> ShardId {
    match key {
        ActorKey::Queue => ShardId::Queue,
        ActorKey::Schedule(id) => ShardId::Schedule(id),
        ActorKey::Wallet(user) => ShardId::of_wallet(user),
    }
}

/// Every shard there is now: the queue, the wallet buckets, and each schedule of `engine`.
pub fn shards_of(engine: &Engine) -> Vec<ShardId> {
    let mut shards = vec![ShardId::Queue];
    shards.extend(ShardId::wallet_buckets());
    shards.extend(
        engine
            .catalog()
            .schedule_ids()
            .into_iter()
            .map(ShardId::Schedule),
    );
    shards
}

/// Starts `membership`'s rounds on `runtime` (the store's) over `engine`'s shards and actors.
pub fn serve_shards(
    membership: &Arc<Membership>,
    engine: &Engine,
    runtime: &tokio::runtime::Handle,
) -> tokio::task::JoinHandle<()> {
    let _inside = runtime.enter();
    let listed = engine.clone();
    let rounds = membership.run(
        Arc::downgrade(engine.registry()),
        Box::new(move || shards_of(&listed)),
    );
    let store = engine.store_handle().store().clone();
    let sync = store.cluster().map(|cluster| {
        (
            catalog_sync::spawn(
                engine.clone(),
                store.clone(),
                cluster.clone(),
                membership.clone(),
                membership.round_every(),
            ),
            pin_resolver::spawn(engine.clone(), cluster, membership.round_every()),
            queue_sync::spawn(engine.clone()),
        )
    });
    tokio::spawn(async move {
        // The catalog and the pins follow the rounds down (they end after a leave).
        let _ = rounds.await;
        if let Some((sync, pins, polls)) = sync {
            sync.abort();
            pins.abort();
            polls.abort();
        }
    })
}
