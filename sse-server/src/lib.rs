//! Server-Sent Events pub/sub server.
//!
//! [`run`] serves the web page, the event stream and the publish endpoint on
//! an already-bound listener until a shutdown future resolves. The binary
//! (`main.rs`) only parses flags, sets up logging and binds.
//!
//! [`spawn`] runs the same server in the background of this process and
//! hands back its address and a way to stop it: what tests (ours and
//! yours) start a real server with.

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

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use config::Config;
pub use routes::{app, AppState};
pub use wire::EventId;

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The broker could not be started.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The TLS certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

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
) -> Result<(), Error> {
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

/// Starts the server in the background of this process on
/// [`Config::addr`] (port 0 picks a free port) and returns once it accepts
/// connections.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = sse_server::Config::try_from_args(["sse-server", "--addr", "127.0.0.1:0", "--tick", "0"])?;
/// let server = sse_server::spawn(config).await?;
/// println!("serving on {}", server.url("/sse"));
/// server.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// When the address cannot be bound or the broker cannot be started.
pub async fn spawn(config: Config) -> Result<Running, Error> {
    let addr = config.addr;
    let listener = serve::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, config, async move {
        // A dropped `Running` stops the server too.
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        stop: Some(stop),
        task,
    })
}

/// A server started by [`spawn`]. Dropping it stops the server without
/// waiting; [`Running::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, ends every stream, and waits until the server has
    /// stopped.
    ///
    /// # Errors
    /// What the server failed with, if it failed.
    ///
    /// # Panics
    /// When the server's task panicked (the panic is passed on).
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
}
