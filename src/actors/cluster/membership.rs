//! This node's membership: its node lease, renewed on the database clock, and the shards it
//! holds, taken from free owners as placement says.
//!
//! One loop per node, on the store's runtime, every quarter of the lease TTL and at once when
//! any lease moves (`LISTEN`): renew the node lease; read the live members and every lease;
//! take each free shard that placement puts here (a compare-and-set that bumps its epoch);
//! then hold it in the persister and rebuild its running actors under the new epoch, so their
//! state is read only after the take committed. A shard whose lease shows another owner or a
//! newer epoch is dropped at once. Shards are not handed over while their owner lives: a
//! shard moves only when its owner dies, stops past its TTL, or leaves.
//!
//! Takeover after a kill -9: the dead node's lease runs out within one TTL, and the next
//! round of the node placement names takes its shards, a quarter TTL later at most.

use crate::actors::persister::{generation_under, Persister};
use crate::actors::registry::Registry;
use crate::domain::cluster::{place, ShardId};
use crate::domain::Timestamp;
use crate::store::{ClusterStore, StoreError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// `--cluster`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: String,
    pub advertise_url: String,
    pub lease_ttl: Duration,
}

/// What `GET /v1/admin/cluster` shows: the members and every lease, as of the last round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub shards: Vec<ShardView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node_id: String,
    pub url: String,
    pub lease_expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub shard: String,
    /// `None`: released, or its owner is no longer live.
    pub owner: Option<String>,
    pub epoch: u64,
}

/// The shards that exist now (the queue, the wallet buckets, every schedule).
pub type ShardList = Box<dyn Fn() -> Vec<ShardId> + Send + Sync>;

pub struct Membership {
    config: ClusterConfig,
    cluster: ClusterStore,
    persister: Persister,
    view: RwLock<Arc<ClusterView>>,
    registry: OnceLock<Weak<Registry>>,
    shards: OnceLock<ShardList>,
    /// When the node lease was last renewed (by this node's monotonic clock: only used to
    /// stop trying to write once it may have run out, never to decide that it may).
    renewed: Mutex<Option<Instant>>,
    wake: Arc<Notify>,
    leaving: AtomicBool,
    moves: AtomicU64,
}

impl Membership {
    /// Joins: registers the node lease and takes the free shards placement gives this node
    /// among `initial` (before any actor loads, so they load under the epochs taken).
    pub async fn join(
        config: ClusterConfig,
        cluster: ClusterStore,
        persister: Persister,
        initial: Vec<ShardId>,
    ) -> Result<Arc<Membership>, StoreError> {
        cluster
            .register(&config.node_id, &config.advertise_url, config.lease_ttl)
            .await?;
        let membership = Arc::new(Membership {
            config,
            cluster,
            persister,
            view: RwLock::new(Arc::new(ClusterView::default())),
            registry: OnceLock::new(),
            shards: OnceLock::new(),
            renewed: Mutex::new(Some(Instant::now())),
            wake: Arc::new(Notify::new()),
            leaving: AtomicBool::new(false),
            moves: AtomicU64::new(0),
        });
        membership.round(&initial).await?;
        Ok(membership)
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The last round's view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether the node lease was renewed within its TTL (for `/readyz`).
    pub fn is_member(&self) -> bool {
        !self.leaving.load(Ordering::Relaxed)
            && self
                .renewed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < self.config.lease_ttl)
    }

    /// Runs a round now rather than at the next period.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The period of the rounds: a quarter of the lease TTL.
    pub fn round_every(&self) -> Duration {
        (self.config.lease_ttl / 4).max(Duration::from_millis(100))
    }

    /// Shards this node has taken since it started.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Starts the renewal loop (on the current runtime, which must be the store's), with the
    /// registry whose actors rebuild when a shard is taken, and the list of shards. Returns the
    /// loop's task; it ends after [`leave`](Self::leave).
    pub fn run(
        self: &Arc<Self>,
        registry: Weak<Registry>,
        shards: ShardList,
    ) -> tokio::task::JoinHandle<()> {
        let _ = self.registry.set(registry);
        let _ = self.shards.set(shards);
        let listener = self.cluster.watch(self.wake.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let every = me.round_every();
            while !me.leaving.load(Ordering::Relaxed) {
                let shards = me.shards.get().map(|list| list()).unwrap_or_default();
                if let Err(error) = me.round(&shards).await {
                    tracing::warn!(%error, "cluster round failed");
                    me.drop_all_if_lease_may_have_run_out();
                }
                // Either the period passes or a lease moved somewhere.
                let _ = tokio::time::timeout(every, me.wake.notified()).await;
            }
            listener.abort();
        })
    }

    /// Leaves: no more rounds, the node lease ends and every shard is released at once, so
    /// the others take them in their next round (woken by the release's NOTIFY). Call after
    /// the persister has drained: nothing of this node's is in flight any more.
    pub async fn leave(&self) -> Result<(), StoreError> {
        self.leaving.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        for (shard, epoch) in self.persister.held_shards() {
            self.persister.lose_shard(&shard, epoch);
        }
        self.cluster.leave(&self.config.node_id).await
    }

    /// Past a TTL without a renewal, another node may have taken every shard: stop queueing
    /// writes the fence would refuse anyway.
    fn drop_all_if_lease_may_have_run_out(&self) {
        if self.is_member() {
            return;
        }
        for (shard, epoch) in self.persister.held_shards() {
            self.persister.lose_shard(&shard, epoch);
        }
    }

    /// One round: renew, read, take what is free and placed here, drop what moved away.
    async fn round(&self, shards: &[ShardId]) -> Result<(), StoreError> {
        let me = self.config.node_id.as_str();
        if self.leaving.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.cluster.renew(me, self.config.lease_ttl).await? {
            // The row says this node left (or it was never there): join again.
            self.cluster
                .register(me, &self.config.advertise_url, self.config.lease_ttl)
                .await?;
        }
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let members = self.cluster.live_nodes().await?;
        let leases: BTreeMap<String, (Option<String>, u64)> = self
            .cluster
            .leases()
            .await?
            .into_iter()
            .map(|l| (l.shard, (l.live_owner, l.epoch)))
            .collect();
        // Held here but the row says otherwise (taken over while this node was away).
        for (shard, (owner, epoch)) in &leases {
            if let Some(held) = self.persister.held_epoch(shard) {
                if owner.as_deref() != Some(me) || *epoch != held {
                    tracing::warn!(shard, held, epoch, "shard lost to another node");
                    self.persister.lose_shard(shard, held);
                }
            }
        }
        let names: Vec<&str> = members.iter().map(|m| m.node_id.as_str()).collect();
        let placement = place(shards, &names);
        let mut taken = Vec::new();
        // The free shards placement gives this node, and every shard whose row names this
        // node while its persister does not hold it: an earlier incarnation's (a restart
        // within the TTL), which no other node may take while this id is live. Retaking
        // bumps the epoch, so anything that incarnation left in flight is fenced.
        let mut candidates: Vec<ShardId> = placement.shards_of(me).collect();
        for (text, (owner, _)) in &leases {
            if owner.as_deref() == Some(me) {
                if let Ok(shard) = text.parse::<ShardId>() {
                    if !candidates.contains(&shard) {
                        candidates.push(shard);
                    }
                }
            }
        }
        for shard in candidates {
            let text = shard.to_string();
            let free = leases
                .get(&text)
                .is_none_or(|(owner, _)| owner.is_none() || owner.as_deref() == Some(me));
            if !free || self.persister.held_epoch(&text).is_some() {
                continue;
            }
            if let Some(epoch) = self.cluster.acquire(&text, me).await? {
                tracing::debug!(shard = %text, epoch, "shard taken");
                self.persister.hold_shard(&text, epoch);
                self.moves.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("boxoffice_shard_moves_total").increment(1);
                taken.push((shard, epoch));
            }
        }
        if !taken.is_empty() {
            tracing::info!(shards = taken.len(), "shards taken");
        }
        if let Some(registry) = self.registry.get().and_then(Weak::upgrade) {
            for (shard, epoch) in &taken {
                registry.rebuild_shard(*shard, generation_under(*epoch));
            }
        }
        self.publish(&members, leases, &taken);
        Ok(())
    }

    fn publish(
        &self,
        members: &[crate::store::Member],
        mut leases: BTreeMap<String, (Option<String>, u64)>,
        taken: &[(ShardId, u64)],
    ) {
        for (shard, epoch) in taken {
            leases.insert(
                shard.to_string(),
                (Some(self.config.node_id.clone()), *epoch),
            );
        }
        let now = Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
        let view = ClusterView {
            nodes: members
                .iter()
                .map(|m| NodeView {
                    node_id: m.node_id.clone(),
                    url: m.advertise_url.clone(),
                    lease_expires_at: Timestamp::from_millis(now.millis() + m.expires_in_ms),
                })
                .collect(),
            shards: leases
                .into_iter()
                .map(|(shard, (owner, epoch))| ShardView {
                    shard,
                    owner,
                    epoch,
                })
                .collect(),
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }
}
