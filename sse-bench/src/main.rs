//! `sse-bench` binary: parses flags and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use sse_bench::cli::{Cli, Command};
use sse_bench::print;
use sse_bench::report::Report;

/// Exit status when the run could not start or its input was unusable.
const EXIT_USAGE: u8 = 2;

/// Exit status when the run finished but deliveries were lost or
/// connections failed.
const EXIT_FAILED_RUN: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sse-bench: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sse-bench: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Command::Completions { shell }) = cli.command {
        sse_bench::cli::completions(shell, &mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(addr) = cli.grip_origin {
        sse_bench::origin::serve(addr).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if cli.worker {
        sse_bench::worker::run(&cli).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if !cli.table.is_empty() {
        let mut reports = Vec::new();
        for path in &cli.table {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let r: Report = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            reports.push(r);
        }
        print!("{}", print::side_by_side(&reports));
        if let Some(path) = &cli.report {
            sse_bench::chart::write(path, &reports)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = sse_bench::run::run(&cli).await?;
    if let Some(path) = &cli.report {
        sse_bench::chart::write(path, std::slice::from_ref(&r))?;
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", print::render(&r));
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED_RUN)
    })
}
