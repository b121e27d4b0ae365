//! Cluster mode: what another node creates (users, concerts, schedules) reaches this node's
//! catalog within a quarter of the lease TTL, without a restart.
//!
//! Each tick reads three maximum ids (index lookups); only when one grew is the catalog loaded
//! again and the new entries added. A new schedule is a new shard: the membership round is
//! woken so that the node placement names takes it at once.

use super::Membership;
use crate::actors::Engine;
use crate::store::{ClusterStore, Store};
use std::sync::Arc;
use std::time::Duration;

/// Runs until aborted, on the store's runtime.
pub fn spawn(
    engine: Engine,
    store: Arc<Store>,
    cluster: ClusterStore,
    membership: Arc<Membership>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = cluster.catalog_marks().await.ok();
        loop {
            tokio::time::sleep(every).await;
            let marks = match cluster.catalog_marks().await {
                Ok(marks) => marks,
                Err(error) => {
                    tracing::debug!(%error, "catalog marks unavailable");
                    continue;
                }
            };
            if Some(marks) == seen {
                continue;
            }
            match store.load_catalog().await {
                Ok(snapshot) => {
                    let added = engine.absorb_catalog(snapshot);
                    tracing::info!(
                        schedules = added,
                        "catalog refreshed from another node's changes"
                    );
                    seen = Some(marks);
                    membership.wake();
                }
                Err(error) => tracing::warn!(%error, "catalog refresh failed; retrying"),
            }
        }
    })
}
