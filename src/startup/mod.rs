//! Building and running the application: open the store, migrate, rebuild the actors, bind,
//! serve, and on shutdown drain the persister before the store closes.
//!
//! - [`engine`](mod@engine): the store's runtime, the persister, the cluster, the actors;
//! - [`servers`]: the public and the ops HTTP servers;
//! - [`shutdown`]: the [`AppHandle`] and the signals.

mod engine;
mod servers;
mod shutdown;

pub use engine::migrate;
pub use shutdown::AppHandle;

use crate::actors::Engine;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::config::{check_cluster, SettingsError};
use crate::http;
use crate::store::{redact, StoreError};
use actix_web::dev::Server;
use engine::{start_engine, Started};
use servers::{announce_demo, app_state, ops_server, serve_public, OpsListener};
use shutdown::on_signals;
use std::sync::Arc;

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
    #[error("cannot load the ticket signing key: {0}")]
    TicketKey(String),
    #[error("cannot load the demo data: {0}")]
    Demo(String),
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// A built application, bound and ready to serve.
pub struct Application {
    port: u16,
    server: Server,
    handle: AppHandle,
    /// The `--ops-bind` listener, already serving.
    ops: Option<OpsListener>,
    /// The engine and what must outlive it (the persister, the cluster's loop, the store).
    started: Started,
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
        Ok(Application {
            port,
            server,
            handle,
            ops,
            started,
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
        &self.started.engine
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
            started,
            ..
        } = self;
        let Started {
            engine,
            persister_task,
            membership,
            cluster_task,
            store,
            runtime,
        } = started;
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
