//! `sse-server`: parse flags, set up logging, bind, run.

use std::io::IsTerminal;

use clap::Parser;
use sse_server::{serve, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main(worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match serve_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line with the causes, never a backtrace: these are the
            // user's errors (a port in use, an unreadable file), not bugs.
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve_until_stopped() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let mut config = Config::parse();
    config.load_secret_files()?;
    match sse_server::limits::raise_nofile() {
        Ok(limit) => tracing::info!(
            was = limit.was,
            soft = limit.soft,
            hard = limit.hard,
            "open-file limit: soft limit raised to the hard limit"
        ),
        Err(err) => tracing::warn!(cause = %err, "cannot raise the open-file limit"),
    }
    // A bad certificate or key stops the server here, before it binds.
    let scheme = match sse_server::tls::acceptor(&config)? {
        Some(_) => "https",
        None => "http",
    };
    let listener = serve::bind(config.addr)
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        broker = %config.broker,
        "serving; open {scheme}://{}/ in a browser",
        listener.local_addr()?
    );
    sse_server::run(listener, config, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The SIGTERM handler is
/// installed at the call, not when the future is first polled: a SIGTERM
/// that arrives while the server starts (reading back `--data-dir`, say)
/// then stops it cleanly instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let ctrl_c = async {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::error!(cause = %err, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async {
            match term {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(err) => {
                    tracing::error!(cause = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = term => {}
        }
    }
}
