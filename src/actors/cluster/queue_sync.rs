//! Cluster mode, on a node that does not hold the waiting room: once a second, send the
//! owner the polls answered here and install the snapshot it answers with (see
//! `queue_copy.rs`). A failed sync keeps its polls for the next one; after
//! [`SNAPSHOT_MAX_AGE`](super::queue_copy::SNAPSHOT_MAX_AGE) without one, polls go to the owner.

use crate::actors::Engine;
use std::time::Duration;

/// How often the snapshot is refreshed.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Runs until aborted, on the store's runtime.
pub fn spawn(engine: Engine) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SYNC_EVERY).await;
            let Some(nodes) = engine.other_nodes() else {
                continue;
            };
            let (copy, peers) = (&nodes.queue_copy, &nodes.peers);
            if !engine.queue_is_remote() {
                copy.clear();
                continue;
            }
            let now = engine.now();
            let touches = copy.take_touches(now, engine.idle_timeout());
            match peers.queue_sync(touches.clone()).await {
                Ok((gone, snapshot)) => copy.install(snapshot, &gone),
                Err(error) => {
                    tracing::debug!(?error, "waiting-room sync failed; polls go to its owner");
                    copy.give_back(touches, now);
                }
            }
        }
    })
}
