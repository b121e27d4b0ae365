//! Cluster mode: what another node creates (users, concerts, schedules) reaches this node's
//! catalog within a quarter of the lease TTL, without a restart.
//!
//! Each tick reads three maximum ids (index lookups); only when one grew is the catalog loaded
//! again and the new entries added. A new schedule is a new shard: the membership round is
//! woken so that the node placement names takes it at once. A request naming a user or a
//! concert this node does not know yet may also ask for them at once ([`Engine::learn_user`],
//! [`Engine::learn_catalog`]).

use super::Membership;
use crate::actors::Engine;
use crate::domain::UserId;
use crate::store::{CatalogSnapshot, ClusterStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two catalog reloads asked for by requests.
pub const CATALOG_RELOAD_EVERY: Duration = Duration::from_millis(250);

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

impl Engine {
    /// A user another node just created, not yet in this node's catalog, is added if the
    /// store has their wallet (every user has one from creation on).
    pub async fn learn_user(&self, user: UserId) {
        let stored = self
            .store_handle()
            .run(move |s| async move { s.load_wallet(user).await })
            .await;
        if let Ok(Some(_)) = stored {
            self.catalog().add_user(user);
        }
    }

    /// A concert or schedule another node just created, not yet in this node's catalog:
    /// returns once a reload that started after this call has finished (so it has whatever
    /// was committed before the request). One reload at a time, at most one per
    /// [`CATALOG_RELOAD_EVERY`], whatever asks: requests naming ids that do not exist wait for
    /// the next shared reload instead of each making one (before, one that came within the
    /// 250 ms of another's reload answered 404 at once, even for a concert just created).
    pub async fn learn_catalog(&self) {
        let Some(nodes) = self.other_nodes() else {
            // Outside cluster mode the catalog is never behind the store.
            return;
        };
        let arrived = Instant::now();
        let mut started = nodes.catalog_reloaded_at.lock().await;
        if let Some(last) = *started {
            if last >= arrived {
                return;
            }
            if let Some(wait) = CATALOG_RELOAD_EVERY.checked_sub(last.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        *started = Some(Instant::now());
        let loaded = self
            .store_handle()
            .run(|s| async move { s.load_catalog().await })
            .await;
        if let Ok(snapshot) = loaded {
            self.absorb_catalog(snapshot);
        }
    }

    /// Adds what another node created (users, concerts, schedules) to this node's catalog. A
    /// new schedule's actor loads when first asked, under the epoch of its shard if this node
    /// holds it. Returns how many schedules were new.
    pub fn absorb_catalog(&self, snapshot: CatalogSnapshot) -> usize {
        let catalog = self.catalog();
        for user in snapshot.users {
            catalog.add_user(user);
        }
        for (concert, _name) in snapshot.concerts {
            if !catalog.concert_exists(concert) {
                catalog.add_concert(concert);
            }
        }
        let mut added = 0;
        for info in snapshot.schedules {
            if catalog.schedule_entry(info.id).is_none() {
                catalog.add_schedule(info);
                added += 1;
            }
        }
        added
    }
}
