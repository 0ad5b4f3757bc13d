//! The `harness` command line: runs tests, re-checks stored runs, cleans up leftovers.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,librdkafka=off,rdkafka=off")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            let spec = match args.to_spec() {
                Ok(spec) => spec,
                Err(e) => {
                    let e = anyhow::Error::new(e);
                    if let Some(path) = &args.junit {
                        let name = args.name.as_deref().unwrap_or("test");
                        let case = harness::report::run_case(
                            name,
                            None,
                            Some(&e),
                            std::time::Duration::ZERO,
                        );
                        harness::report::write_junit(path, "harness test", &[case])?;
                    }
                    return Err(e);
                }
            };
            harness::run::install_signal_handlers();
            let argv: Vec<String> = std::env::args().collect();
            let before = harness::report::latest_run(&spec.store, &spec.name);
            let started = std::time::Instant::now();
            let outcome = harness::run::run_test(&spec, &argv);
            if let Some(path) = &args.junit {
                let run = harness::report::latest_run(&spec.store, &spec.name)
                    .filter(|r| Some(r) != before.as_ref());
                let case = harness::report::run_case(
                    &spec.name,
                    run.as_deref(),
                    outcome.as_ref().err(),
                    started.elapsed(),
                );
                harness::report::write_junit(path, "harness test", &[case])?;
            }
            Ok(ExitCode::from(outcome?))
        }
        Command::Report { run } => {
            let path = harness::report::render(&run)?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Matrix(args) => {
            harness::run::install_signal_handlers();
            let argv: Vec<String> = std::env::args().collect();
            let outcome = match harness::matrix::run_matrix(&args, &argv) {
                Ok(o) => o,
                Err(e) => {
                    if let Some(path) = &args.test.junit {
                        let case = harness::report::run_case(
                            "matrix",
                            None,
                            Some(&e),
                            std::time::Duration::ZERO,
                        );
                        harness::report::write_junit(path, "harness matrix", &[case])?;
                    }
                    return Err(e);
                }
            };
            print!("{}", results::matrix::render_markdown(&outcome.matrix));
            println!("matrix: {}", outcome.dir.join("matrix.html").display());
            if let Some(path) = &args.test.junit {
                let cases = results::matrix::junit_cases(&outcome.matrix);
                harness::report::write_junit(path, "harness matrix", &cases)?;
            }
            Ok(ExitCode::from(outcome.code))
        }
        Command::Serve(args) => {
            harness::serve::serve(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { run } => {
            let code = harness::run::check_run(&run)?;
            Ok(ExitCode::from(code))
        }
        Command::Reproduce(args) => {
            let mut test = args.test;
            test.nodes = test.nodes.or(Some(3));
            test.time_limit = test.time_limit.or(Some(30));
            let base = test.to_spec()?;
            let recipe = harness::reproduce::recipe(&args.bug)?;
            harness::run::install_signal_handlers();
            let argv: Vec<String> = std::env::args().collect();
            let mut times = Vec::new();
            let mut ok = true;
            for i in 0..args.seeds.max(1) {
                let mut spec = base.clone();
                spec.seed = base.seed + 1000 * u64::from(i);
                let o =
                    harness::reproduce::reproduce(&spec, recipe, args.control, args.budget, &argv)?;
                let run = o
                    .run
                    .as_ref()
                    .map(|r| r.display().to_string())
                    .unwrap_or_else(|| "-".into());
                if args.control {
                    if o.invalid_kinds.is_empty() {
                        println!(
                            "control {} (seed {}): clean over {} runs",
                            recipe.bug, spec.seed, o.attempts
                        );
                    } else {
                        ok = false;
                        println!(
                            "control {} (seed {}): NOT clean: {} in {run}",
                            recipe.bug,
                            spec.seed,
                            o.invalid_kinds.join(", ")
                        );
                    }
                    continue;
                }
                match (&o.found, o.time_to_detect) {
                    (Some(kind), Some(t)) => println!(
                        "{} (seed {}): found {kind} after {t:.1} s of test time, in attempt {}; \
                         run folder {run}",
                        recipe.bug, spec.seed, o.attempts
                    ),
                    _ => {
                        ok = false;
                        println!(
                            "{} (seed {}): not found within {} s ({} runs; other findings: {})",
                            recipe.bug,
                            spec.seed,
                            args.budget,
                            o.attempts,
                            if o.invalid_kinds.is_empty() {
                                "none".to_string()
                            } else {
                                o.invalid_kinds.join(", ")
                            }
                        );
                    }
                }
                times.push(o.time_to_detect);
            }
            if !args.control && args.seeds > 1 {
                match harness::reproduce::summarize(&times) {
                    Some((median, worst)) => println!(
                        "{}: time to detect over {} seeds: median {median:.1} s, worst \
                         {worst:.1} s",
                        recipe.bug,
                        times.len()
                    ),
                    None => println!(
                        "{}: not every seed detected the bug within the budget",
                        recipe.bug
                    ),
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
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
