//! `sse-cli`: a terminal client for Server-Sent Events.
//!
//! The binary is a thin shell over this library: [`cli`] holds the flags,
//! [`watch`] follows a stream the way a browser's `EventSource` does,
//! [`publish`] sends events to an sse-server, [`check`] diagnoses an SSE
//! endpoint and whatever sits in front of it, [`output`] prints events, and
//! [`parse`] is the `text/event-stream` parser, which `sse-bench` reuses,
//! as it does [`duration`] and [`http::is_event_stream`].

pub mod check;
pub mod cli;
pub mod duration;
pub mod http;
pub mod output;
pub mod parse;
pub mod publish;
pub mod reconnect;
pub mod watch;

/// Writes the completion script for `shell` (covering every subcommand and
/// flag) to `out`.
///
/// # Errors
///
/// Writing to `out` failed.
pub fn completions(
    shell: clap_complete::Shell,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli::Cli::command(), "sse-cli", &mut script);
    if shell == clap_complete::Shell::Bash {
        // clap_complete's bash script spells the state of a hyphenated
        // binary's subcommands two ways (`sse__cli__subcmd__watch` in its
        // loop, `sse__subcmd__cli__subcmd__watch` in its case arms), so no
        // subcommand's flags ever complete (clap-rs/clap#6421). Spell the
        // arms the loop's way; a no-op once clap_complete is fixed.
        let text = String::from_utf8_lossy(&script).replace("sse__subcmd__cli", "sse__cli");
        script = text.into_bytes();
    }
    out.write_all(&script)?;
    out.flush()
}

/// Runs a parsed command line to completion and returns the exit status
/// (0, or `check`'s 1 and 2).
///
/// # Errors
///
/// What the command failed with, as one line for stderr.
pub async fn run(cli: cli::Cli) -> Result<u8, Box<dyn std::error::Error>> {
    match cli.command {
        cli::Command::Watch(args) => watch::run(args).await?,
        cli::Command::Publish(args) => publish::run(args).await?,
        cli::Command::Check(args) => return check::run(args).await,
        cli::Command::Completions(args) => completions(args.shell, &mut std::io::stdout())?,
    }
    Ok(0)
}
