//! Server-Sent Events pub/sub server.
//!
//! [`run`] serves the web page, the event stream and the publish endpoint on
//! an already-bound listener until a shutdown future resolves. The binary
//! (`main.rs`) only parses flags, sets up logging and binds.

pub mod assets;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod config;
pub mod durable;
pub mod error;
pub mod lean;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod subscribe;
pub mod tls;
pub mod wire;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

pub use config::Config;
pub use routes::{app, AppState};

/// Runs the server on `listener` until `shutdown` resolves: stops
/// accepting, ends every stream, and returns once connections have closed
/// (or [`serve::SHUTDOWN_GRACE`] has passed).
///
/// # Errors
/// When the broker cannot be started.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = config;
    if config.max_clients.is_none() {
        if let Some(nofile) = limits::nofile_soft() {
            let max_clients = limits::default_max_clients(nofile);
            tracing::info!(
                max_clients,
                open_file_limit = nofile,
                "--max-clients defaults to the open-file limit minus a reserve"
            );
            config.max_clients = Some(max_clients);
        }
    }
    let tls = tls::acceptor(&config)?;
    let options = serve::ServeOptions::new(&config, tls);
    let metrics = Arc::new(metrics::Metrics::new());
    let broker = Arc::new(broker::Broker::start(&config, metrics).await?);
    let mut background = tokio::task::JoinSet::new();
    if !config.tick.is_zero() {
        background.spawn(clock::run(Arc::clone(&broker), config.tick));
    }
    background.spawn(clock::heartbeat(Arc::clone(&broker), config.heartbeat));
    if config.jwt_secret.is_some() || config.jwt_public_key.is_some() {
        background.spawn(auth::sweep_expired(Arc::clone(broker.hub())));
    }
    let router = app(AppState::new(Arc::clone(&broker), config));
    let stop_broker = Arc::clone(&broker);
    serve::serve(listener, router, options, async move {
        shutdown.await;
        tracing::info!("shutting down: publishing stops, streams end once they have sent every acknowledged event");
        // Publishes are refused from here on, and every stream ends once it
        // has sent everything acknowledged, so each response finishes
        // cleanly within the grace period.
        stop_broker.shutdown().await;
    })
    .await;
    background.shutdown().await;
    Ok(())
}
