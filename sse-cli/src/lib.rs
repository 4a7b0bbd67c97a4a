//! `sse-cli`: a terminal client for Server-Sent Events.
//!
//! The binary is a thin shell over this library: [`cli`] holds the flags,
//! [`watch`] follows a stream the way a browser's `EventSource` does,
//! [`publish`] sends events to an sse-server, [`output`] prints events, and
//! [`parse`] is the `text/event-stream` parser, which `sse-bench` reuses.

pub mod cli;
pub mod duration;
pub mod http;
pub mod output;
pub mod parse;
pub mod publish;
pub mod reconnect;
pub mod watch;

/// Runs a parsed command line to completion.
///
/// # Errors
///
/// What the command failed with, as one line for stderr.
pub async fn run(cli: cli::Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        cli::Command::Watch(args) => watch::run(args).await?,
        cli::Command::Publish(args) => publish::run(args).await?,
    }
    Ok(())
}
