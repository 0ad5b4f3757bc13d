//! `harness matrix`: the config-safety matrix. Cells are producer acks × topic
//! `min.insync.replicas` (and optionally unclean leader election, idempotence and the flush
//! policy). Each cell runs the risk recipes that bear on its settings ([`crate::recipes`]:
//! faults aimed at the window in which the setting loses data), then the random nemesis of the
//! `harness test` flags, round after round, and stops at its first violation or when its
//! `--budget` is spent; every run goes through [`crate::run::run_test`] into the matrix's own
//! folder of the store (`store/<name>/<timestamp>/<cell>/<run>/`), and `matrix.html`,
//! `matrix.md` and `matrix.json` are rewritten beside them after every cell. Exit code: with
//! `--fail-on findings`, Jepsen's order over every run; with `surprises`, 1 when a documented
//! promise broke (or, with `--require-shown`, a documented risk was not shown).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use results::matrix::{Cell, CellConfig, Matrix, RunSummary, FLUSH_DEFAULT, FLUSH_EVERY};
use results::store::MatrixDir;

use crate::cli::TestArgs;
use crate::recipes::RiskRecipe;
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

fn parse_flush(s: &str) -> Result<String, String> {
    match s {
        FLUSH_DEFAULT => Ok(s.to_string()),
        FLUSH_EVERY | "every-message" => Ok(FLUSH_EVERY.to_string()),
        other => Err(format!(
            "`{other}` is not {FLUSH_DEFAULT} (Kafka's: no fsync) or every-message (fsync per \
             append, log.flush.interval.messages=1; `{FLUSH_EVERY}` for short)"
        )),
    }
}

/// A `--kafka-release` value, checked against the releases the bundled broker lists.
fn parse_release(s: &str) -> Result<String, String> {
    let known = crate::system::bundled_releases()?;
    if known.rules_of(s).is_some() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a Kafka release the bundled broker follows; known: {}",
            known.names()
        ))
    }
}

fn parse_recipe(s: &str) -> Result<String, String> {
    match crate::recipes::by_name(s) {
        Some(r) => Ok(r.name.to_string()),
        None => {
            let names: Vec<&str> = crate::recipes::RISK_RECIPES
                .iter()
                .map(|r| r.name)
                .collect();
            Err(format!("no risk recipe `{s}`; known: {}", names.join(", ")))
        }
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
    /// Flush policies to try, comma-separated: `default` (Kafka's: no fsync, the OS writes
    /// back) or `every-message` (log.flush.interval.messages=1, an fsync per append; `every`
    /// for short).
    #[arg(long = "flush", value_delimiter = ',', default_value = "default", value_parser = parse_flush)]
    pub flush: Vec<String>,
    /// Kafka releases whose replication rules the bundled broker follows, comma-separated
    /// (its `kafka.release` setting: `broker --list-releases` lists them; default the
    /// broker's default, the newest); each release is its own grid. A `command` system runs
    /// whatever release it is, so this axis is for the bundled broker only.
    #[arg(long = "kafka-release", value_delimiter = ',', value_parser = parse_release)]
    pub releases: Vec<String>,
    /// Rounds every cell runs at least, unless a violation stops it first: a round is each of
    /// the cell's recipes once, then the random nemesis once.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// Wall-clock seconds per cell: after its first round, a cell starts no new run once this
    /// is spent. A cell also stops at its first violation.
    #[arg(long, default_value_t = 120)]
    pub budget: u64,
    /// Only these risk recipes, comma-separated (leader-failover, isr-shrink-crash,
    /// last-replica-standing, unclean-election, retry-duplicates) [default: every recipe
    /// bearing on a cell; retry-duplicates only when --idempotent has both values].
    #[arg(long, value_delimiter = ',', value_parser = parse_recipe)]
    pub recipes: Option<Vec<String>>,
    /// Run the risk recipes only, not the random nemesis (`--nemesis` is then unused).
    #[arg(long = "recipes-only")]
    pub recipes_only: bool,
    /// With `--fail-on surprises`, a cell whose setting allows loss but where no run showed
    /// it (risk not shown) counts as a surprise too.
    #[arg(long = "require-shown")]
    pub require_shown: bool,
    /// What makes the exit code 1: `findings` (any run with an invalidating finding, even
    /// where Kafka promises nothing, e.g. acks=1 losing writes) or `surprises` (only a cell
    /// whose behaviour breaks what Kafka's documentation promises for its setting; for
    /// nightly jobs over the whole matrix).
    #[arg(long = "fail-on", value_parser = parse_fail_on, default_value = "findings")]
    pub fail_on: FailOn,
    /// Run every cell in the deterministic simulation instead of on a cluster: each run is a
    /// child `harness sim --spec` (its spec file beside the cell's runs) on virtual time,
    /// replayable byte for byte with the command in its `sim.json`. Times are then simulated
    /// seconds (`--budget` stays wall seconds), and the cluster defaults to 5 nodes: the
    /// simulated network cuts whole links, so a leader cut from its followers keeps its
    /// controller session only through a voter outside the partition.
    #[arg(long)]
    pub sim: bool,
    /// The workload, nemesis, cluster and store, as for `harness test` (defaults here: 3 nodes,
    /// or 5 with --sim; replication factor 3, 25 s runs, test name `matrix`).
    #[command(flatten)]
    pub test: TestArgs,
}

impl MatrixArgs {
    /// The base spec every cell starts from.
    pub fn base_spec(&self) -> Result<TestSpec> {
        // Matrix defaults, then the user's flags over them.
        let mut t = self.test.clone();
        t.nodes = t.nodes.or(Some(if self.sim { 5 } else { 3 }));
        t.replication_factor = t.replication_factor.or(Some(3));
        t.time_limit = t.time_limit.or(Some(25));
        t.name = t.name.or(Some("matrix".into()));
        let mut spec = t.to_spec().context("the matrix's base spec")?;
        spec.broker.remove("min.insync.replicas");
        Ok(spec)
    }

    /// The releases the cells follow: the flag's, or the bundled broker's default.
    pub fn releases(&self) -> Result<Vec<String>> {
        if !self.releases.is_empty() {
            return Ok(self.releases.clone());
        }
        let known = crate::system::bundled_releases()
            .map_err(|e| anyhow::anyhow!("asking the broker for its default release: {e}"))?;
        Ok(vec![known.default])
    }

    /// Every cell's configuration, row-major (release, flush, acks, unclean, idempotence,
    /// then min.insync), each with its release's rules as the bundled broker lists them.
    pub fn cells(&self, rf: u32) -> Result<Vec<CellConfig>> {
        let known = crate::system::bundled_releases()
            .map_err(|e| anyhow::anyhow!("asking the broker for its releases: {e}"))?;
        let mut out = Vec::new();
        for release in &self.releases()? {
            let rules = known.rules_of(release).with_context(|| {
                format!(
                    "the bundled broker does not follow Kafka {release}; known: {}",
                    known.names()
                )
            })?;
            for flush in &self.flush {
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
                                    flush: flush.clone(),
                                    release: release.clone(),
                                    rules: Some(rules),
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The on-request recipes the axes ask for: retry-duplicates when the idempotence axis
    /// has both values.
    pub fn requested(&self) -> Vec<&'static str> {
        if self.idempotent.contains(&true) && self.idempotent.contains(&false) {
            vec!["retry-duplicates"]
        } else {
            Vec::new()
        }
    }

    /// A cell's plan for one round: its recipes, then the random nemesis (None) unless
    /// `--recipes-only` or the base spec has no faults.
    pub fn plan(&self, cell: &CellConfig, base: &TestSpec) -> Vec<Option<&'static RiskRecipe>> {
        let mut plan: Vec<Option<&'static RiskRecipe>> =
            crate::recipes::for_cell(cell, self.recipes.as_deref(), &self.requested())
                .into_iter()
                .map(Some)
                .collect();
        if !self.recipes_only && !base.nemesis.is_empty() {
            plan.push(None);
        }
        plan
    }
}

/// The setup row naming the releases the cells follow.
fn release_row(releases: &[String], system: crate::system::SystemKind) -> String {
    if system == crate::system::SystemKind::Bundled {
        format!(
            "Kafka {} rules (the bundled broker's kafka.release; each release is its own grid)",
            releases.join(", ")
        )
    } else {
        "whatever release the command system runs (the promises assume the releases named in \
         each cell)"
            .into()
    }
}

/// Keeps derived run seeds below 2^48.
const SEED_MASK: u64 = (1 << 48) - 1;

/// A cell's spec for its `run`-th run (seed derived from the base seed, the cell and the run).
pub fn cell_spec(base: &TestSpec, cell: &CellConfig, dir: &Path, run: u32) -> TestSpec {
    let mut spec = base.clone();
    spec.name = cell.slug();
    spec.store = dir.to_path_buf();
    // Below 2^48, like a fresh root seed: short to type, exact in JSON doubles.
    spec.seed =
        crate::seeds::derive(base.seed, &format!("matrix/{}/{run}", cell.slug())) & SEED_MASK;
    spec.client.acks = match cell.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
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
    if cell.flush == FLUSH_EVERY {
        spec.broker
            .insert("log.flush.interval.messages".into(), "1".into());
    }
    if spec.system == crate::system::SystemKind::Bundled {
        spec.broker
            .insert("kafka.release".into(), cell.release.clone());
    }
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

/// Runs one simulated run of a cell: the spec into a file in the cell's folder, then a child
/// `harness sim --spec` (one simulation per process: that is what replays byte for byte).
/// Its checker's exit code (0 valid, 1 invalid, 2 unknown) is a verdict; anything else is an
/// error carrying the end of its output.
fn run_simulated(spec: &TestSpec) -> Result<u8> {
    if !cfg!(feature = "sim") {
        anyhow::bail!("this harness was built without the `sim` feature; rebuild with it");
    }
    let folder = spec.store.join(&spec.name);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let file = folder.join(format!("sim-{}.toml", spec.seed));
    let text = toml::to_string(spec).context("writing the run's spec as TOML")?;
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    let exe = std::env::current_exe().context("finding the harness binary")?;
    let out = std::process::Command::new(exe)
        .arg("sim")
        .arg("--spec")
        .arg(&file)
        .arg("--seed")
        .arg(spec.seed.to_string())
        .output()
        .context("starting harness sim")?;
    match out.status.code() {
        Some(code @ 0..=2) => Ok(code as u8),
        other => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "harness sim --spec {} exited with {other:?}: {}",
                file.display(),
                tail.join(" | ")
            )
        }
    }
}

/// Runs one run of a cell (on the cluster, or simulated) and summarises it.
fn run_one(
    spec: &TestSpec,
    cell: &CellConfig,
    recipe: Option<&RiskRecipe>,
    dir: &Path,
    argv: &[String],
    sim: bool,
) -> RunSummary {
    let before = crate::report::latest_run(&spec.store, &spec.name);
    let started = Instant::now();
    let outcome = spec.validate().map_err(anyhow::Error::new).and_then(|()| {
        if sim {
            run_simulated(spec)
        } else {
            crate::run::run_test(spec, argv)
        }
    });
    let took = started.elapsed().as_secs_f64();
    let after = crate::report::latest_run(&spec.store, &spec.name);
    let run_dir = after.filter(|a| Some(a) != before.as_ref());
    let rel = run_dir
        .as_ref()
        .and_then(|d| {
            let root = dir.canonicalize().ok()?;
            d.strip_prefix(&root).ok().map(|r| r.display().to_string())
        })
        .unwrap_or_else(|| format!("{}/-", cell.slug()));
    let mut summary = match (&outcome, &run_dir) {
        (Ok(_), Some(d)) => RunSummary::from_run(d, &rel, spec.seed, took).unwrap_or_else(|e| {
            RunSummary::crashed(&rel, spec.seed, format!("reading the run: {e}"), took)
        }),
        (Ok(_), None) => RunSummary::crashed(&rel, spec.seed, "no run folder".into(), took),
        (Err(e), _) => {
            crate::runlog::say(&format!("harness: matrix run failed: {e:#}"));
            RunSummary::crashed(&rel, spec.seed, format!("{e:#}"), took)
        }
    };
    summary.recipe = recipe.map(|r| r.name.to_string());
    summary.test_seconds = spec.time_limit as f64;
    summary
}

/// Runs the matrix and writes its reports.
pub fn run_matrix(args: &MatrixArgs, argv: &[String]) -> Result<Outcome> {
    let base = args.base_spec()?;
    let rf = u32::from(base.replication_factor);
    let cells = args.cells(rf)?;
    if cells.is_empty() {
        anyhow::bail!("the matrix has no cells; give --acks-axis and --min-isr values");
    }
    if args.sim && base.nodes < 5 {
        crate::runlog::say(&format!(
            "harness: warning: with --sim and {} nodes, a replication cut (isr-shrink-crash, \
             last-replica-standing, unclean-election) cannot keep the leader's controller \
             session (the simulated network cuts whole links), so those recipes never fire; \
             give --nodes 5",
            base.nodes
        ));
    }
    let dir = MatrixDir::create(&base.store, &base.name, SystemTime::now())
        .context("creating the matrix folder")?;
    crate::runlog::say(&format!(
        "harness: matrix of {} cells, {} s budget each, in {} (seed {})",
        cells.len(),
        args.budget,
        dir.path.display(),
        base.seed
    ));
    let nemesis: Vec<String> = base.nemesis.iter().map(|k| k.to_string()).collect();
    let mut recipe_rows: Vec<(String, String)> = crate::recipes::RISK_RECIPES
        .iter()
        .map(|r| {
            (
                format!("recipe {}", r.name),
                format!(
                    "{}. Aimed: {} ({} every {} s).",
                    r.risk,
                    r.window,
                    r.nemesis
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.interval
                ),
            )
        })
        .collect();
    recipe_rows.extend(
        crate::recipes::LEFT_OUT
            .iter()
            .map(|(n, why)| (format!("recipe {n}"), format!("left out: {why}"))),
    );
    let mut setup = vec![
        (
            "release".into(),
            release_row(&args.releases()?, base.system),
        ),
        (
            "nodes".into(),
            if args.sim {
                format!(
                    "{} (simulated: harness sim, virtual time, one process per run; each run's \
                     sim.json gives the command that replays it)",
                    base.nodes
                )
            } else {
                format!("{} ({} backend)", base.nodes, base.backend)
            },
        ),
        ("replication factor".into(), rf.to_string()),
        ("partitions".into(), base.partitions.to_string()),
        (
            "random nemesis".into(),
            if args.recipes_only || nemesis.is_empty() {
                "none (recipes only)".into()
            } else {
                format!(
                    "{} every {} s on average, after each round's recipes",
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
            "stopping".into(),
            format!(
                "a cell stops at its first violation, or after {} round{} once {} s of wall \
                 time are spent",
                args.runs.max(1),
                if args.runs.max(1) == 1 { "" } else { "s" },
                args.budget
            ),
        ),
        (
            "seeds".into(),
            format!(
                "root {} (--seed); each run's seed is derived from it, the cell and the run",
                base.seed
            ),
        ),
    ];
    setup.extend(recipe_rows);
    let mut matrix = Matrix {
        title: base.name.clone(),
        setup,
        command_line: argv.join(" "),
        cells: Vec::new(),
    };
    for cell in &cells {
        let plan = args.plan(cell, &base);
        let mut c = Cell {
            config: cell.clone(),
            runs: Vec::new(),
            recipes: plan.iter().flatten().map(|r| r.name.to_string()).collect(),
            budget_s: args.budget as f64,
        };
        let started = Instant::now();
        let mut i: u32 = 0;
        while !plan.is_empty() && !crate::run::INTERRUPTED.load(Ordering::SeqCst) {
            let round = i as usize / plan.len();
            if round >= args.runs.max(1) as usize && started.elapsed().as_secs() >= args.budget {
                break;
            }
            let recipe = plan[i as usize % plan.len()];
            let cell_base = cell_spec(&base, cell, &dir.path, i);
            let spec = match recipe {
                Some(r) => crate::recipes::apply(r, &cell_base),
                None => cell_base,
            };
            crate::runlog::say(&format!(
                "harness: matrix cell {} run {} ({}, seed {})",
                cell.label(),
                i + 1,
                recipe.map_or(results::matrix::RANDOM, |r| r.name),
                spec.seed
            ));
            let summary = run_one(&spec, cell, recipe, &dir.path, argv, args.sim);
            let b = results::matrix::run_behaviour(&summary, &cell.acks);
            crate::runlog::say(&format!(
                "harness: matrix cell {}: {} ({:.0} s)",
                cell.label(),
                b.words(),
                summary.seconds
            ));
            c.runs.push(summary);
            i += 1;
            if b.is_violation() {
                break;
            }
        }
        crate::runlog::say(&format!("harness: {}", c.plain_line()));
        matrix.cells.push(c);
        // Rewrite the reports after every cell, so an interrupted matrix still has them.
        results::matrix::write(&dir.path, &matrix).context("writing the matrix reports")?;
    }
    let verdicts: Vec<results::verdict::Verdict> =
        matrix.cells.iter().flat_map(|c| c.verdicts()).collect();
    let surprised = matrix
        .cells
        .iter()
        .any(|c| c.surprise().is_some() || (args.require_shown && c.risk_not_shown()));
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
        let cells = args.cells(3).expect("the broker lists its releases");
        let names: Vec<String> = cells.iter().map(|c| c.slug()).collect();
        assert_eq!(
            names,
            [
                "acks-1_mi-1_k4-1",
                "acks-1_mi-2_k4-1",
                "acks-all_mi-1_k4-1",
                "acks-all_mi-2_k4-1"
            ]
        );
        let s = cell_spec(&base, &cells[3], Path::new("/tmp/m"), 1);
        assert_eq!(
            s.seed,
            crate::seeds::derive(40, "matrix/acks-all_mi-2_k4-1/1") & SEED_MASK
        );
        assert_eq!(s.broker["kafka.release"], "4.1");
        assert_ne!(
            s.seed,
            cell_spec(&base, &cells[3], Path::new("/tmp/m"), 2).seed
        );
        assert_eq!(s.client.acks, Acks::All);
        assert_eq!(s.broker["min.insync.replicas"], "2");
        assert_eq!(s.store, Path::new("/tmp/m"));
        if let Err(e) = s.validate() {
            panic!("{e}");
        }
    }

    #[test]
    fn the_release_and_flush_axes_multiply_the_cells() {
        let cli = crate::cli::Cli::try_parse_from([
            "harness",
            "matrix",
            "--acks-axis",
            "all",
            "--min-isr",
            "2",
            "--kafka-release",
            "3.6,4.1",
            "--flush",
            "default,every-message",
        ])
        .expect("parses");
        let crate::cli::Command::Matrix(args) = cli.command else {
            panic!("not matrix")
        };
        let names: Vec<String> = args
            .cells(3)
            .expect("the broker lists its releases")
            .iter()
            .map(|c| c.slug())
            .collect();
        assert_eq!(
            names,
            [
                "acks-all_mi-2_k3-6",
                "acks-all_mi-2_k3-6_fsync",
                "acks-all_mi-2_k4-1",
                "acks-all_mi-2_k4-1_fsync"
            ]
        );
        // Each cell carries its release's rules as the broker lists them.
        let cells = args.cells(3).expect("the broker lists its releases");
        let rules: Vec<bool> = cells.iter().map(|c| c.rules().effective_min_isr).collect();
        assert_eq!(rules, [false, false, true, true]);
        let bad = crate::cli::Cli::try_parse_from(["harness", "matrix", "--kafka-release", "3.8"]);
        let err = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("known: 2.6"), "{err}");
    }
}
