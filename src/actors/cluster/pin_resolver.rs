//! Cluster mode: resolves the holds this node pinned for other nodes' payments, and the
//! tickets it pinned for refunds other nodes credit, when no outcome will come (see
//! `remote_payment.rs`, `remote_refund.rs`). Each tick, if any pin is waiting, it reads the
//! shard map from the database, and the engine releases the pins whose wallet shard moved
//! on, after reading their outcome.

use crate::actors::Engine;
use crate::store::ClusterStore;
use std::time::Duration;

/// Runs until aborted, on the store's runtime.
pub fn spawn(
    engine: Engine,
    cluster: ClusterStore,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if engine.remote_pins() == 0 {
                continue;
            }
            // Read after any takeover that committed before it: what the pins are judged by.
            match cluster.leases().await {
                Ok(leases) => {
                    let resolved = engine.resolve_remote_pins(&leases).await;
                    if resolved > 0 {
                        metrics::counter!("boxoffice_remote_pins_resolved_total")
                            .increment(resolved as u64);
                    }
                }
                Err(error) => tracing::debug!(%error, "shard map unavailable for the pins"),
            }
        }
    })
}
