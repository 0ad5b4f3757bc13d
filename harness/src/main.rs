//! The `harness` command line: runs tests, re-checks stored runs, cleans up leftovers.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::{Cli, Command};
use results::verdict;

fn main() -> ExitCode {
    harness::runlog::init_tracing();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; anything else is a bad argument.
            return if e.use_stderr() {
                ExitCode::from(verdict::EXIT_BAD_ARGS)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = error_code(&e);
            eprintln!("harness: error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// The exit code of a run that ended in an error: 130 interrupted, 254 a bad argument or spec,
/// 255 the harness failed.
fn error_code(e: &anyhow::Error) -> u8 {
    if harness::run::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        verdict::EXIT_INTERRUPTED
    } else if e
        .chain()
        .any(|c| c.is::<harness::spec::SpecError>() || c.is::<harness::spec::UsageError>())
    {
        verdict::EXIT_BAD_ARGS
    } else {
        verdict::EXIT_CRASHED
    }
}

/// `--test-count` belongs to `harness test`; the matrix has `--runs`, reproduce `--seeds`.
fn refuse_test_count(args: &harness::cli::TestArgs) -> anyhow::Result<()> {
    if args.test_count.is_some() {
        return Err(anyhow::Error::new(harness::spec::SpecError::Invalid {
            field: "--test-count".into(),
            reason: "only `harness test` runs series; use --runs (matrix) or --seeds (reproduce)"
                .into(),
        }));
    }
    Ok(())
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
            if let Some(count) = args.test_count {
                if count == 0 {
                    return Err(anyhow::Error::new(harness::spec::SpecError::Invalid {
                        field: "--test-count".into(),
                        reason: "must be at least 1".into(),
                    }));
                }
                let code = harness::series::run_series(&spec, count, &argv)?;
                return Ok(ExitCode::from(code));
            }
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
            refuse_test_count(&args.test)?;
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
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            let code = harness::sim::run(&args)?;
            Ok(ExitCode::from(code))
        }
        Command::Check { run } => {
            let code = harness::run::check_run(&run)?;
            Ok(ExitCode::from(code))
        }
        Command::Reproduce(args) => {
            refuse_test_count(&args.test)?;
            let mut test = args.test;
            test.nodes = test.nodes.or(Some(3));
            test.time_limit = test.time_limit.or(Some(30));
            let base = test.to_spec()?;
            let recipe = harness::reproduce::recipe(&args.bug)
                .map_err(|e| harness::spec::UsageError(format!("{e:#}")))?;
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
