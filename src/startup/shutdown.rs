//! Stopping: the handle that stops a running application, and the signals that use it.

use crate::http::AppState;
use actix_web::dev::ServerHandle;
use actix_web::web;

/// Stops a running application: the live streams end first, then the server stops taking
/// requests (gracefully: in-flight requests finish), then `run_until_stopped` drains the
/// persister.
#[derive(Clone)]
pub struct AppHandle {
    pub(super) server: ServerHandle,
    pub(super) state: web::Data<AppState>,
    /// The store's runtime, where a cluster node's leave runs.
    pub(super) store_runtime: tokio::runtime::Handle,
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
pub(super) async fn on_signals(handle: AppHandle) {
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
