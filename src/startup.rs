//! Building and running the application: open the store, migrate, rebuild the actors, bind,
//! serve, and on shutdown drain the persister before the store closes.

use crate::actors::cluster::{self, ClusterConfig, Membership};
use crate::actors::persister::Fencing;
use crate::actors::{Engine, Persister};
use crate::clock::{Clock, SystemClock};
use crate::config::{check_cluster, Settings, SettingsError};
use crate::domain::cluster::ShardId;
use crate::http::client_ip::TrustedProxies;
use crate::http::rate_limit::{IpBudget, UserBudget};
use crate::http::slow_clients::BodyTimeout;
use crate::http::{self, AppState, Listener};
use crate::store::{redact, Store, StoreError, StoreHandle};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Connections one worker holds at once (actix's default is 25,000). Each costs a socket and
/// a few KiB; past this the listener stops accepting until one closes, rather than the
/// process running out of file descriptors or memory under a connection flood.
const MAX_CONNECTIONS_PER_WORKER: usize = 10_000;
/// TLS handshakes one worker runs at once. This server speaks plain HTTP (TLS ends at the
/// proxy in front), so actix ignores it; set so a TLS build does not inherit a silent default.
const MAX_CONNECTION_RATE_PER_WORKER: usize = 256;
/// How long an idle keep-alive connection stays open: long enough for a poller's next poll to
/// reuse it, short enough that idle sockets do not pile up.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a client has to send a request's whole head (a slow head gets actix's 408).
/// The body has `--body-timeout-secs` (`http::slow_clients`).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to shut down before it is dropped.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections the kernel queues before the server accepts them: a drop's first second
/// arrives all at once.
const BACKLOG: u32 = 4096;

/// Why the application could not start. Each is one clear line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Auth(#[from] http::auth::AuthSetupError),
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("cannot open the database {url}: {source}")]
    Connect { url: String, source: StoreError },
    #[error("cannot migrate the database: {0}")]
    Migrate(StoreError),
    #[error("cannot join the cluster: {0}")]
    Cluster(StoreError),
    #[error("cannot rebuild state from the database: {0}")]
    Recover(StoreError),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error("cannot start the store's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot load the demo data: {0}")]
    Demo(String),
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// The store's own runtime: every database connection lives here, whichever thread asks.
struct StoreRuntime(Option<tokio::runtime::Runtime>);

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

    fn handle(&self) -> tokio::runtime::Handle {
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
struct Started {
    engine: Engine,
    persister_task: tokio::task::JoinHandle<()>,
    membership: Option<Arc<Membership>>,
    cluster_task: Option<tokio::task::JoinHandle<()>>,
    store: StoreHandle,
    runtime: StoreRuntime,
}

/// Opens the store on its own runtime, starts the persister, joins the cluster when asked,
/// and rebuilds every actor from the database.
async fn start_engine(
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

/// What every HTTP worker shares.
fn app_state(
    settings: &Settings,
    auth: http::auth::Authenticator,
    started: &Started,
) -> web::Data<AppState> {
    web::Data::new(AppState {
        engine: started.engine.clone(),
        timezone: settings.timezone,
        admin_key: settings.admin_key.clone(),
        auth,
        store_ping: Default::default(),
        user_budget: settings.rate_limit_per_user.map(UserBudget::new),
        live: http::live::LiveFeed::start(started.engine.clone()),
        cluster: started.membership.clone(),
        join_pow: http::JoinPow::from_settings(settings),
    })
}

/// Binds `--bind` and starts the public server (every route unless `--ops-bind` takes the
/// operations ones), with its middleware and limits; answers the bound port.
fn serve_public(
    settings: &Settings,
    state: web::Data<AppState>,
) -> Result<(u16, Server), StartupError> {
    let bind_error = |source| StartupError::Bind {
        bind: settings.bind.clone(),
        source,
    };
    let listener = TcpListener::bind(&settings.bind).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    // Installed before the first request or decision records anything.
    http::metrics::handle();
    let ip_budget = settings.rate_limit_per_ip.map(|rate| {
        web::Data::new(IpBudget::new(
            rate,
            TrustedProxies::new(settings.trusted_proxies.clone()),
        ))
    });
    let body_timeout = BodyTimeout(settings.body_timeout);
    let public = if settings.ops_bind.is_some() {
        Listener::Public
    } else {
        Listener::All
    };
    let server = HttpServer::new(move || {
        let mut app = App::new().app_data(state.clone()).app_data(body_timeout);
        if let Some(budget) = &ip_budget {
            app = app.app_data(budget.clone());
        }
        // The last wrap runs first: metrics see every answer, the address budget refuses
        // before the body deadline is armed, and both before any route reads the body.
        // Innermost: forwarding runs after the budgets and the body deadline, just before
        // a route would; outside cluster mode it passes everything on.
        app.wrap(actix_web::middleware::from_fn(http::cluster::forward))
            .wrap(actix_web::middleware::from_fn(
                http::slow_clients::body_deadline,
            ))
            .wrap(actix_web::middleware::from_fn(
                http::rate_limit::limit_by_address,
            ))
            .wrap(actix_web::middleware::from_fn(http::metrics::track))
            .configure(|cfg| http::configure_for(cfg, public))
    })
    .workers(settings.http_workers.max(1))
    .backlog(BACKLOG)
    .max_connections(MAX_CONNECTIONS_PER_WORKER)
    .max_connection_rate(MAX_CONNECTION_RATE_PER_WORKER)
    .keep_alive(KEEP_ALIVE)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
    .shutdown_timeout(10)
    // Signals are ours (see `on_signals`): shutdown must end the live streams first.
    .disable_signals();
    let server = server.listen(listener).map_err(bind_error)?.run();
    Ok((port, server))
}

/// `serve --demo`: prints the curl walk against the address just bound (a wildcard bind is
/// reached through the loopback address).
fn announce_demo(bind: &str, port: u16, concert: i64) {
    let host = bind.rsplit_once(':').map_or("127.0.0.1", |(host, _)| host);
    let host = if host == "0.0.0.0" || host == "[::]" {
        "127.0.0.1"
    } else {
        host
    };
    println!(
        "{}",
        crate::demo::try_this(&format!("http://{host}:{port}"), concert)
    );
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

/// The `--ops-bind` listener, running on its own task from the start.
struct OpsListener {
    port: u16,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The `--ops-bind` listener: one worker serving the operations routes only.
fn ops_server(bind: &str, state: web::Data<AppState>) -> Result<OpsListener, StartupError> {
    let bind_error = |source| StartupError::Bind {
        bind: bind.to_string(),
        source,
    };
    let listener = TcpListener::bind(bind).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(|cfg| http::configure_for(cfg, Listener::Ops))
    })
    .workers(1)
    .backlog(128)
    .keep_alive(KEEP_ALIVE)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)
    .map_err(bind_error)?
    .run();
    Ok(OpsListener {
        port,
        handle: server.handle(),
        task: actix_web::rt::spawn(server),
    })
}

/// Stops a running application: the live streams end first, then the server stops taking
/// requests (gracefully: in-flight requests finish), then `run_until_stopped` drains the
/// persister.
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    state: web::Data<AppState>,
    /// The store's runtime, where a cluster node's leave runs.
    store_runtime: tokio::runtime::Handle,
}

impl AppHandle {
    pub async fn stop(&self, graceful: bool) {
        // Open dashboards would otherwise hold a graceful stop for the whole shutdown timeout.
        self.state.live.close();
        // A cluster node gives its shards up first, so they move while the server finishes
        // its in-flight requests: nothing new is accepted (503s, retried elsewhere), what was
        // submitted commits, then the shards are released and the others take them at once.
        if let Some(membership) = self.state.cluster.clone() {
            self.state.engine.shutdown().await;
            match self
                .store_runtime
                .spawn(async move { membership.leave().await })
                .await
            {
                Ok(Ok(())) => tracing::info!("left the cluster; shards released"),
                _ => tracing::warn!("leaving the cluster failed; shards move after the lease TTL"),
            }
        }
        self.server.stop(graceful).await;
    }
}

/// What actix would do on a signal, after closing the live streams: SIGTERM stops gracefully,
/// SIGINT and SIGQUIT at once (the persister is drained either way).
async fn on_signals(handle: AppHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::terminate(), true),
        (SignalKind::interrupt(), false),
        (SignalKind::quit(), false),
    ];
    let mut streams = Vec::new();
    for (kind, graceful) in kinds {
        match signal(kind) {
            Ok(s) => streams.push((s, graceful)),
            Err(e) => tracing::error!(error = %e, "cannot listen for a signal"),
        }
    }
    if streams.is_empty() {
        return;
    }
    let waits = streams.iter_mut().map(|(s, graceful)| {
        let graceful = *graceful;
        Box::pin(async move {
            s.recv().await;
            graceful
        })
    });
    let (graceful, _, _) = futures_util::future::select_all(waits).await;
    tracing::info!(graceful, "signal received: shutting down");
    handle.stop(graceful).await;
}

/// A built application, bound and ready to serve.
pub struct Application {
    port: u16,
    server: Server,
    handle: AppHandle,
    /// The `--ops-bind` listener, already serving.
    ops: Option<OpsListener>,
    engine: Engine,
    persister_task: tokio::task::JoinHandle<()>,
    /// Cluster mode: this node's membership and its renewal loop.
    membership: Option<Arc<Membership>>,
    cluster_task: Option<tokio::task::JoinHandle<()>>,
    store: StoreHandle,
    runtime: StoreRuntime,
}

impl Application {
    /// Opens the store, migrates, rebuilds every actor, and binds. Must run in an actix system.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// The steps, in order: check the settings, start the engine (store, persister, cluster,
    /// actors), seed the demo, bind and serve, then print the demo's walk.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        settings.validate()?;
        // Before the store opens: a bad key is the operator's mistake, told at once.
        let auth = http::auth::Authenticator::new(&settings.auth)?;
        let cluster = match &settings.cluster {
            Some(request) => Some(check_cluster(request, &settings.database_url)?),
            None => None,
        };
        let started = start_engine(&settings, cluster, clock).await?;
        let demo = if settings.demo {
            crate::demo::seed_if_empty(&started.engine)
                .await
                .map_err(|e| StartupError::Demo(e.to_string()))?
        } else {
            None
        };
        let state = app_state(&settings, auth, &started);
        let (port, server) = serve_public(&settings, state.clone())?;
        let handle = AppHandle {
            server: server.handle(),
            state: state.clone(),
            store_runtime: started.runtime.handle(),
        };
        if settings.handle_signals {
            actix_web::rt::spawn(on_signals(handle.clone()));
        }
        let ops = match &settings.ops_bind {
            Some(bind) => Some(ops_server(bind, state)?),
            None => None,
        };
        tracing::info!(port, ops_port = ops.as_ref().map(|o| o.port), database = %redact(&settings.database_url), "boxoffice is serving");
        if let Some(concert) = demo {
            announce_demo(&settings.bind, port, concert);
        }
        let Started {
            engine,
            persister_task,
            membership,
            cluster_task,
            store,
            runtime,
        } = started;
        Ok(Application {
            port,
            server,
            handle,
            ops,
            engine,
            persister_task,
            membership,
            cluster_task,
            store,
            runtime,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `--ops-bind` listener's port, when there is one.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops.as_ref().map(|o| o.port)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What stops the server.
    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Serves until stopped, then drains the persister and closes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            handle,
            ops,
            engine,
            persister_task,
            membership,
            cluster_task,
            store,
            runtime,
            ..
        } = self;
        let served = server.await;
        // However the server stopped, the sampler stops with it.
        handle.state.live.close();
        // The ops listener follows the public one down (it handles no signals of its own).
        if let Some(ops) = ops {
            ops.handle.stop(true).await;
            let _ = ops.task.await;
        }
        engine.shutdown().await;
        let _ = persister_task.await;
        // Drained: nothing of this node's is in flight, so its shards may go at once.
        if let Some(membership) = membership {
            let leaving = runtime
                .handle()
                .spawn(async move { membership.leave().await })
                .await;
            match leaving {
                Ok(Ok(())) => tracing::info!("left the cluster; shards released"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "leaving the cluster failed; shards move after the lease TTL")
                }
                Err(_) => tracing::warn!("leaving the cluster did not finish"),
            }
        }
        if let Some(task) = cluster_task {
            task.abort();
        }
        let _ = store
            .run(|s| async move {
                s.close().await;
                Ok(())
            })
            .await;
        drop(runtime);
        tracing::info!("boxoffice stopped");
        served
    }
}
