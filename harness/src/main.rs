//! The `harness` command line: runs tests, re-checks stored runs, cleans up leftovers.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("harness: error: {e:#}");
            // 2: the harness could not run (1 is reserved for "a finding invalidated a run").
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Test(args) => {
            let spec = args.to_spec()?;
            harness::run::install_signal_handlers();
            let argv: Vec<String> = std::env::args().collect();
            let code = harness::run::run_test(&spec, &argv)?;
            Ok(ExitCode::from(code))
        }
        Command::Check { run } => {
            let code = harness::run::check_run(&run)?;
            Ok(ExitCode::from(code))
        }
        Command::Clean => {
            let removed = harness::node::cleanup_leftovers()
                .map_err(|e| anyhow::anyhow!("cleaning up leftovers: {e}"))?;
            if removed.is_empty() {
                println!("nothing left behind");
            }
            for r in removed {
                println!("removed {r}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
