//! The application started in-process for a load generator: its own thread and actix system,
//! bound to port 0. Shared by `examples/drop` and `examples/waiting_room` (included with
//! `#[path]`; this directory has no `main.rs`, so cargo does not take it for an example).

use boxoffice::config::Settings;
use boxoffice::startup::Application;

/// A running in-process server.
pub struct Spawned {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub handle: boxoffice::startup::AppHandle,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the application with `settings`; returns once it listens (or failed to start).
pub fn spawn_server(settings: Settings) -> Result<Spawned, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix::System::new();
        system.block_on(async move {
            match Application::build(settings).await {
                Ok(app) => {
                    let _ = tx.send(Ok((app.port(), app.handle())));
                    if let Err(e) = app.run_until_stopped().await {
                        eprintln!("the server stopped with an error: {e}");
                    }
                }
                Err(e) => std::mem::drop(tx.send(Err(e.to_string()))),
            }
        });
    });
    let (port, handle) = rx
        .recv()
        .map_err(|_| "the server thread ended before it started".to_string())??;
    Ok(Spawned {
        base: format!("http://127.0.0.1:{port}"),
        handle,
        thread,
    })
}
