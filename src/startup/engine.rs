//! Bringing the engine up: the store on its own runtime, the persister, the cluster's lease
//! when asked, and every actor rebuilt from the database (and `migrate`, which stops there).

use super::StartupError;
use crate::actors::cluster::{self, ClusterConfig, Membership};
use crate::actors::persister::Fencing;
use crate::actors::{Engine, Persister};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::cluster::ShardId;
use crate::http;
use crate::store::{redact, Store, StoreError, StoreHandle};
use std::sync::Arc;
use std::time::Duration;

/// The store's own runtime: every database connection lives here, whichever thread asks.
pub(super) struct StoreRuntime(Option<tokio::runtime::Runtime>);

impl StoreRuntime {
    fn new() -> Result<StoreRuntime, StartupError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store")
            .enable_all()
            .build()
            .map_err(StartupError::Runtime)?;
        Ok(StoreRuntime(Some(runtime)))
    }

    pub(super) fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("present until dropped")
            .handle()
            .clone()
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's task would panic; let it wind down.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Opens the store named by `url` on `runtime` and applies the migrations.
async fn open_store(
    url: &str,
    runtime: &tokio::runtime::Handle,
    cluster_idle: Option<Duration>,
) -> Result<Store, StartupError> {
    let owned = url.to_string();
    let store = runtime
        .spawn(async move {
            match cluster_idle {
                Some(idle) => Store::connect_cluster(&owned, idle).await,
                None => Store::connect(&owned).await,
            }
        })
        .await
        .map_err(|_| StartupError::Runtime(std::io::Error::other("store runtime stopped")))?
        .map_err(|source| StartupError::Connect {
            url: redact(url),
            source,
        })?;
    let migrating = store.clone();
    runtime
        .spawn(async move { migrating.migrate().await })
        .await
        .map_err(|_| StartupError::Runtime(std::io::Error::other("store runtime stopped")))?
        .map_err(StartupError::Migrate)?;
    Ok(store)
}

/// Cluster mode, before any actor loads: fence the persister on this node's shards, take an
/// id block, join, and take the free shards placement gives this node.
async fn join_cluster(
    config: ClusterConfig,
    store: &StoreHandle,
    persister: &Persister,
) -> Result<(Arc<Membership>, i64), StartupError> {
    let node = config.node_id.clone();
    persister.fence_with(Fencing {
        node: node.clone(),
        shard_of: Box::new(|key| cluster::shard_of(key).to_string()),
    });
    persister.on_fenced(Box::new(|keys| {
        tracing::warn!(
            actors = keys.len(),
            "writes refused by the fence: their shard moved"
        );
    }));
    let joining = persister.clone();
    let joined = store
        .run(move |s| async move {
            let cluster_store = s
                .cluster()
                .ok_or_else(|| StoreError::ClusterNeedsPostgres("this store".into()))?;
            let block = cluster_store.take_id_block().await?;
            let mut initial = vec![ShardId::Queue];
            initial.extend(ShardId::wallet_buckets());
            let catalog = s.load_catalog().await?;
            initial.extend(
                catalog
                    .schedules
                    .iter()
                    .map(|info| ShardId::Schedule(info.id)),
            );
            let membership = Membership::join(config, cluster_store, joining, initial).await?;
            Ok((membership, block))
        })
        .await
        .map_err(StartupError::Cluster)?;
    tracing::info!(
        node,
        held = joined
            .0
            .view()
            .shards
            .iter()
            .filter(|s| s.owner.as_deref() == Some(node.as_str()))
            .count(),
        "joined the cluster"
    );
    Ok(joined)
}

/// What [`start_engine`] brings up: the engine and everything that must outlive it.
pub(super) struct Started {
    pub(super) engine: Engine,
    pub(super) persister_task: tokio::task::JoinHandle<()>,
    pub(super) membership: Option<Arc<Membership>>,
    pub(super) cluster_task: Option<tokio::task::JoinHandle<()>>,
    pub(super) store: StoreHandle,
    pub(super) runtime: StoreRuntime,
}

/// Opens the store on its own runtime, starts the persister, joins the cluster when asked,
/// and rebuilds every actor from the database.
pub(super) async fn start_engine(
    settings: &Settings,
    cluster: Option<ClusterConfig>,
    clock: Arc<dyn Clock>,
) -> Result<Started, StartupError> {
    let runtime = StoreRuntime::new()?;
    // A node stopped inside a fenced transaction must not pin its lease rows for longer
    // than its lease would have lasted.
    let idle = cluster.as_ref().map(|c| c.lease_ttl);
    let store = open_store(&settings.database_url, &runtime.handle(), idle).await?;
    let store = StoreHandle::new(store, runtime.handle());
    let (persister, persister_task) = Persister::start(
        store.store().clone(),
        &runtime.handle(),
        settings.engine.persister_capacity,
        settings.engine.pipeline_commits,
    );
    let mut engine_settings = settings.engine.clone();
    let membership = match cluster {
        Some(config) => {
            let (membership, block) = join_cluster(config, &store, &persister).await?;
            engine_settings.id_block = Some(block);
            Some(membership)
        }
        None => None,
    };
    let engine = Engine::start(engine_settings, clock, store.clone(), persister)
        .await
        .map_err(StartupError::Recover)?;
    engine.set_ticket_keys(Arc::new(ticket_keys(settings, &store).await?));
    let cluster_task = membership
        .as_ref()
        .map(|m| cluster::serve_shards(m, &engine, &runtime.handle()));
    if let (Some(membership), Some(key)) = (&membership, &settings.admin_key) {
        // A payment whose schedule another node holds asks that node (validate() made
        // sure cluster mode has the key the nodes share).
        engine.set_peers(Arc::new(http::cluster::PeerClient::new(
            membership.clone(),
            key.clone(),
        )));
    }
    Ok(Started {
        engine,
        persister_task,
        membership,
        cluster_task,
        store,
        runtime,
    })
}

/// The tickets' signing key: `--ticket-signing-key`'s PEM file, else the one kept in the store
/// (generated by the first node that needed one).
async fn ticket_keys(
    settings: &Settings,
    store: &StoreHandle,
) -> Result<crate::domain::ticket::TicketKeys, StartupError> {
    use crate::domain::ticket::TicketKeys;
    if let Some(path) = &settings.tickets.signing_key_file {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| StartupError::TicketKey(format!("{}: {e}", path.display())))?;
        return TicketKeys::from_pem(&pem).map_err(StartupError::TicketKey);
    }
    let candidate = hex::encode(rand::random::<[u8; 32]>());
    let now = crate::domain::Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
    let seed = store
        .run(move |s| async move { s.ticket_signing_key(&candidate, now).await })
        .await
        .map_err(|e| StartupError::TicketKey(e.to_string()))?;
    let seed: [u8; 32] = hex::decode(&seed)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| StartupError::TicketKey("the stored key is not 32 hex bytes".into()))?;
    Ok(TicketKeys::from_seed(seed))
}

/// `boxoffice migrate`: apply the migrations and return.
pub async fn migrate(url: &str) -> Result<(), StartupError> {
    let runtime = StoreRuntime::new()?;
    let store = open_store(url, &runtime.handle(), None).await?;
    let closing = store.clone();
    let _ = runtime
        .handle()
        .spawn(async move { closing.close().await })
        .await;
    Ok(())
}
