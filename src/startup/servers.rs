//! The HTTP servers: the public one with its middleware and limits, and the `--ops-bind` one.

use super::engine::Started;
use super::StartupError;
use crate::config::Settings;
use crate::http::client_ip::TrustedProxies;
use crate::http::rate_limit::{IpBudget, UserBudget};
use crate::http::slow_clients::BodyTimeout;
use crate::http::{self, AppState, Listener};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
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

/// What every HTTP worker shares.
pub(super) fn app_state(
    settings: &Settings,
    auth: http::auth::Authenticator,
    started: &Started,
) -> web::Data<AppState> {
    web::Data::new(AppState {
        engine: started.engine.clone(),
        timezone: settings.timezone,
        admin_key: settings.admin_key.clone(),
        door_key: settings.tickets.door_key.clone(),
        auth,
        store_ping: Default::default(),
        user_budget: settings.rate_limit_per_user.map(UserBudget::new),
        live: http::live::LiveFeed::start(started.engine.clone(), settings.timezone),
        cluster: started.membership.clone(),
        join_pow: http::JoinPow::from_settings(settings),
    })
}

/// Binds `--bind` and starts the public server (every route unless `--ops-bind` takes the
/// operations ones), with its middleware and limits; answers the bound port.
pub(super) fn serve_public(
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
            .configure(|cfg| {
                http::configure_for(cfg, public);
                // The pages, beside the API (the ops listener has none).
                crate::web::configure(cfg);
            })
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
pub(super) fn announce_demo(bind: &str, port: u16, concert: i64) {
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

/// The `--ops-bind` listener, running on its own task from the start.
pub(super) struct OpsListener {
    pub(super) port: u16,
    pub(super) handle: ServerHandle,
    pub(super) task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The `--ops-bind` listener: one worker serving the operations routes only.
pub(super) fn ops_server(
    bind: &str,
    state: web::Data<AppState>,
) -> Result<OpsListener, StartupError> {
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
