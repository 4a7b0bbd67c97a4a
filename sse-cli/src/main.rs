//! `sse-cli`: parses the command line, runs it, and turns an error into one
//! line on stderr and exit status 1 (clap exits with 2 on a usage error;
//! `check` chooses its own 0, 1 or 2).

use std::process::ExitCode;

use clap::Parser;
use sse_cli::{cli::Cli, output};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One connection at a time: a single-threaded runtime is plenty.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the async runtime: {err}")),
    };
    match runtime.block_on(sse_cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => fail(&err.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!(
        "{}",
        output::error_line(message, output::use_color(&std::io::stderr()))
    );
    ExitCode::FAILURE
}
