//! `harness matrix`: the config-safety matrix. The same workload and nemesis (the `harness
//! test` flags) run across producer acks × topic `min.insync.replicas` (and optionally unclean
//! leader election and idempotence), `--runs N` per cell with seeds seed, seed+1, ..., each run
//! through [`crate::run::run_test`] into the matrix's own folder of the store
//! (`store/<name>/<timestamp>/<cell>/<run>/`); then `matrix.html`, `matrix.md` and
//! `matrix.json` beside them. Exit code: 1 if any run's finding invalidates it, else 2 if any
//! run could not run, else 0.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use results::matrix::{Cell, CellConfig, Matrix, RunSummary};
use results::store::MatrixDir;

use crate::cli::TestArgs;
use crate::spec::{Acks, TestSpec};

/// What makes a matrix exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// Any invalidating finding.
    Findings,
    /// Only a broken documented promise.
    Surprises,
}

/// The matrix's exit code: with `findings`, Jepsen's order over every run (255 a run crashed,
/// 2 unknown, 1 invalid, 0 valid); with `surprises`, 255 a run crashed, 1 a promise broken,
/// 2 a run unknown, else 0.
pub fn exit_code(fail_on: FailOn, verdicts: &[results::verdict::Verdict], surprised: bool) -> u8 {
    use results::verdict::{self, Verdict};
    match fail_on {
        FailOn::Findings => verdict::exit_code(verdicts),
        FailOn::Surprises if verdicts.contains(&Verdict::Crashed) => verdict::EXIT_CRASHED,
        FailOn::Surprises if surprised => verdict::EXIT_INVALID,
        FailOn::Surprises if verdicts.is_empty() || verdicts.contains(&Verdict::Unknown) => {
            verdict::EXIT_UNKNOWN
        }
        FailOn::Surprises => verdict::EXIT_VALID,
    }
}

fn parse_fail_on(s: &str) -> Result<FailOn, String> {
    match s {
        "findings" => Ok(FailOn::Findings),
        "surprises" => Ok(FailOn::Surprises),
        other => Err(format!("`{other}` is not findings or surprises")),
    }
}

/// Flags of `harness matrix`.
#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Producer acks values to try, comma-separated.
    #[arg(long = "acks-axis", value_delimiter = ',', default_value = "0,1,all")]
    pub acks_axis: Vec<Acks>,
    /// min.insync.replicas values to try, comma-separated.
    #[arg(long = "min-isr", value_delimiter = ',', default_value = "1,2,3")]
    pub min_isr: Vec<u32>,
    /// unclean.leader.election.enable values to try, comma-separated.
    #[arg(long = "unclean", value_delimiter = ',', default_value = "false")]
    pub unclean: Vec<bool>,
    /// enable.idempotence values to try, comma-separated.
    #[arg(long = "idempotent", value_delimiter = ',', default_value = "false")]
    pub idempotent: Vec<bool>,
    /// Runs per cell (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// What makes the exit code 1: `findings` (any run with an invalidating finding, even
    /// where Kafka promises nothing, e.g. acks=1 losing writes) or `surprises` (only a cell
    /// whose behaviour breaks what Kafka's documentation promises for its setting; for
    /// nightly jobs over the whole matrix).
    #[arg(long = "fail-on", value_parser = parse_fail_on, default_value = "findings")]
    pub fail_on: FailOn,
    /// The workload, nemesis, cluster and store, as for `harness test` (defaults here: 3 nodes,
    /// replication factor 3, 30 s runs, test name `matrix`).
    #[command(flatten)]
    pub test: TestArgs,
}

impl MatrixArgs {
    /// The base spec every cell starts from.
    pub fn base_spec(&self) -> Result<TestSpec> {
        // Matrix defaults, then the user's flags over them.
        let mut t = self.test.clone();
        t.nodes = t.nodes.or(Some(3));
        t.replication_factor = t.replication_factor.or(Some(3));
        t.time_limit = t.time_limit.or(Some(30));
        t.name = t.name.or(Some("matrix".into()));
        let mut spec = t.to_spec().context("the matrix's base spec")?;
        spec.broker.remove("min.insync.replicas");
        Ok(spec)
    }

    /// Every cell's configuration, row-major (acks, unclean, idempotence, then min.insync).
    pub fn cells(&self, rf: u32) -> Vec<CellConfig> {
        let mut out = Vec::new();
        for acks in &self.acks_axis {
            for unclean in &self.unclean {
                for idem in &self.idempotent {
                    for mi in &self.min_isr {
                        out.push(CellConfig {
                            acks: acks.to_string(),
                            min_isr: *mi,
                            unclean: *unclean,
                            idempotence: *idem,
                            replication_factor: rf,
                        });
                    }
                }
            }
        }
        out
    }
}

/// A cell's spec for one run.
pub fn cell_spec(base: &TestSpec, cell: &CellConfig, dir: &Path, run: u32) -> TestSpec {
    let mut spec = base.clone();
    spec.name = cell.slug();
    spec.store = dir.to_path_buf();
    spec.seed = base.seed.wrapping_add(u64::from(run));
    spec.client.acks = match cell.acks.as_str() {
        "0" => Acks::Zero,
        "1" => Acks::One,
        _ => Acks::All,
    };
    spec.client.idempotence = cell.idempotence;
    spec.broker
        .insert("min.insync.replicas".into(), cell.min_isr.to_string());
    // A cell with min.insync above the replication factor is unwritable on purpose.
    spec.allow_unwritable = true;
    spec.broker.insert(
        "unclean.leader.election.enable".into(),
        cell.unclean.to_string(),
    );
    spec
}

/// What a matrix produced.
#[derive(Debug)]
pub struct Outcome {
    /// The matrix folder.
    pub dir: PathBuf,
    /// The matrix.
    pub matrix: Matrix,
    /// The exit code.
    pub code: u8,
}

/// Runs the matrix and writes its reports.
pub fn run_matrix(args: &MatrixArgs, argv: &[String]) -> Result<Outcome> {
    let base = args.base_spec()?;
    let rf = u32::from(base.replication_factor);
    let cells = args.cells(rf);
    if cells.is_empty() {
        anyhow::bail!("the matrix has no cells; give --acks-axis and --min-isr values");
    }
    let dir = MatrixDir::create(&base.store, &base.name, SystemTime::now())
        .context("creating the matrix folder")?;
    crate::runlog::say(&format!(
        "harness: matrix of {} cells × {} runs in {}",
        cells.len(),
        args.runs.max(1),
        dir.path.display()
    ));
    let nemesis: Vec<String> = base.nemesis.iter().map(|k| k.to_string()).collect();
    let mut matrix = Matrix {
        title: base.name.clone(),
        setup: vec![
            (
                "nodes".into(),
                format!("{} ({} backend)", base.nodes, base.backend),
            ),
            ("replication factor".into(), rf.to_string()),
            ("partitions".into(), base.partitions.to_string()),
            (
                "nemesis".into(),
                if nemesis.is_empty() {
                    "none".into()
                } else {
                    format!(
                        "{} every {} s on average",
                        nemesis.join(", "),
                        base.nemesis_interval
                    )
                },
            ),
            (
                "workload".into(),
                format!(
                    "queue, {} ops/s over {} workers, {} s per run, then final reads",
                    base.rate, base.concurrency, base.time_limit
                ),
            ),
            (
                "seeds".into(),
                format!(
                    "{}..{} per cell",
                    base.seed,
                    base.seed + u64::from(args.runs.max(1)) - 1
                ),
            ),
        ],
        command_line: argv.join(" "),
        cells: Vec::new(),
    };
    for cell in &cells {
        let mut c = Cell {
            config: cell.clone(),
            runs: Vec::new(),
        };
        for i in 0..args.runs.max(1) {
            if crate::run::INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            let spec = cell_spec(&base, cell, &dir.path, i);
            crate::runlog::say(&format!(
                "harness: matrix cell {} run {} (seed {})",
                cell.label(),
                i + 1,
                spec.seed
            ));
            let before = crate::report::latest_run(&spec.store, &spec.name);
            let started = Instant::now();
            let outcome = spec
                .validate()
                .map_err(anyhow::Error::new)
                .and_then(|()| crate::run::run_test(&spec, argv));
            let took = started.elapsed().as_secs_f64();
            let after = crate::report::latest_run(&spec.store, &spec.name);
            let run_dir = after.filter(|a| Some(a) != before.as_ref());
            let rel = run_dir
                .as_ref()
                .and_then(|d| {
                    let root = dir.path.canonicalize().ok()?;
                    d.strip_prefix(&root).ok().map(|r| r.display().to_string())
                })
                .unwrap_or_else(|| format!("{}/-", cell.slug()));
            let summary = match (&outcome, &run_dir) {
                (Ok(_), Some(d)) => {
                    RunSummary::from_run(d, &rel, spec.seed, took).unwrap_or_else(|e| {
                        RunSummary::crashed(&rel, spec.seed, format!("reading the run: {e}"), took)
                    })
                }
                (Ok(_), None) => RunSummary::crashed(&rel, spec.seed, "no run folder".into(), took),
                (Err(e), _) => {
                    crate::runlog::say(&format!("harness: matrix run failed: {e:#}"));
                    RunSummary::crashed(&rel, spec.seed, format!("{e:#}"), took)
                }
            };
            crate::runlog::say(&format!(
                "harness: matrix cell {}: {} ({:.0} s)",
                cell.label(),
                results::matrix::behaviour(&summary).words(),
                took
            ));
            c.runs.push(summary);
        }
        matrix.cells.push(c);
        // Rewrite the reports after every cell, so an interrupted matrix still has them.
        results::matrix::write(&dir.path, &matrix).context("writing the matrix reports")?;
    }
    let verdicts: Vec<results::verdict::Verdict> =
        matrix.cells.iter().flat_map(|c| c.verdicts()).collect();
    let surprised = matrix.cells.iter().any(|c| c.surprise().is_some());
    let mut code = exit_code(args.fail_on, &verdicts, surprised);
    if crate::run::INTERRUPTED.load(Ordering::SeqCst) && code == 0 {
        code = 2;
    }
    Ok(Outcome {
        dir: dir.path,
        matrix,
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn nightly_exit_codes_fail_on_findings_or_only_on_surprises() {
        use results::verdict::Verdict::{Crashed, Invalid, Unknown, Valid};
        // acks=1 lost writes (invalid) but Kafka promised nothing there: no surprise.
        assert_eq!(exit_code(FailOn::Findings, &[Valid, Invalid], false), 1);
        assert_eq!(exit_code(FailOn::Surprises, &[Valid, Invalid], false), 0);
        assert_eq!(exit_code(FailOn::Surprises, &[Valid, Invalid], true), 1);
        assert_eq!(exit_code(FailOn::Surprises, &[Valid, Crashed], false), 255);
        assert_eq!(exit_code(FailOn::Surprises, &[Valid, Unknown], false), 2);
        assert_eq!(exit_code(FailOn::Surprises, &[], false), 2);
        let parse = |v: &str| {
            crate::cli::Cli::try_parse_from(["harness", "matrix", "--fail-on", v]).map(|c| match c
                .command
            {
                crate::cli::Command::Matrix(a) => a.fail_on,
                _ => FailOn::Findings,
            })
        };
        assert_eq!(parse("surprises").expect("parses"), FailOn::Surprises);
        assert!(parse("sometimes").is_err());
    }

    #[test]
    fn axes_and_seeds_come_from_the_flags() {
        let cli = crate::cli::Cli::try_parse_from([
            "harness",
            "matrix",
            "--acks-axis",
            "1,all",
            "--min-isr",
            "1,2",
            "--runs",
            "2",
            "--seed",
            "40",
            "--nemesis",
            "kill",
        ])
        .expect("parses");
        let crate::cli::Command::Matrix(args) = cli.command else {
            panic!("not matrix")
        };
        let base = args.base_spec().expect("spec");
        assert_eq!(
            (base.nodes, base.replication_factor, base.name.as_str()),
            (3, 3, "matrix")
        );
        let cells = args.cells(3);
        let names: Vec<String> = cells.iter().map(|c| c.slug()).collect();
        assert_eq!(
            names,
            [
                "acks-1_mi-1",
                "acks-1_mi-2",
                "acks-all_mi-1",
                "acks-all_mi-2"
            ]
        );
        let s = cell_spec(&base, &cells[3], Path::new("/tmp/m"), 1);
        assert_eq!(s.seed, 41);
        assert_eq!(s.client.acks, Acks::All);
        assert_eq!(s.broker["min.insync.replicas"], "2");
        assert_eq!(s.store, Path::new("/tmp/m"));
        assert!(s.validate().is_ok());
    }
}
