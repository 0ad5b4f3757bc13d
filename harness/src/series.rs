//! `harness test --test-count N`, as Jepsen's `--test-count`: the same test N times with
//! successive seeds, then a summary across the runs (a table on the terminal and
//! `summary.json` under `store/<test>/series/<timestamp>/`): each run's verdict, worst finding,
//! seed, sends and faults, and the counts of valid / invalid / unknown / crashed runs. The exit
//! code is the worst run's in Jepsen's order (255 crashed, 2 unknown, 1 invalid, 0 valid);
//! 130 when interrupted, which stops the series after the run in progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use results::verdict::{self, Verdict};
use serde::Serialize;

use crate::run::INTERRUPTED;
use crate::spec::TestSpec;
use crate::summary::Summary;

/// One run of a series.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRun {
    /// The run's root seed.
    pub seed: u64,
    /// `valid`, `invalid`, `unknown` or `crashed`.
    pub verdict: Verdict,
    /// Why the harness could not finish it, when it could not.
    pub error: Option<String>,
    /// The run's figures (its folder, sends, findings, faults).
    pub summary: Option<Summary>,
    /// Wall seconds the run took.
    pub seconds: f64,
}

/// The series' outcome, written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Test name.
    pub test: String,
    /// Runs asked for.
    pub test_count: u32,
    /// First seed (runs use seed, seed+1, ...).
    pub first_seed: u64,
    /// Counts by verdict.
    pub valid: usize,
    /// Runs with an invalidating finding.
    pub invalid: usize,
    /// Runs the checker could not decide.
    pub unknown: usize,
    /// Runs the harness could not finish.
    pub crashed: usize,
    /// Whether the series was interrupted before its last run.
    pub interrupted: bool,
    /// Each run.
    pub runs: Vec<SeriesRun>,
    /// The exit code.
    pub exit_code: u8,
}

/// Runs `spec` `count` times with seeds `spec.seed`, `spec.seed + 1`, ...; prints the table,
/// writes `summary.json`, and returns the exit code.
pub fn run_series(spec: &TestSpec, count: u32, command_line: &[String]) -> Result<u8> {
    let mut runs = Vec::new();
    let count = count.max(1);
    for i in 0..count {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let mut s = spec.clone();
        s.seed = spec.seed.wrapping_add(u64::from(i));
        crate::runlog::say(&format!(
            "harness: series run {} of {count} (seed {})",
            i + 1,
            s.seed
        ));
        let before = crate::report::latest_run(&s.store, &s.name);
        let started = Instant::now();
        let outcome = crate::run::run_test(&s, command_line);
        let after =
            crate::report::latest_run(&s.store, &s.name).filter(|a| Some(a) != before.as_ref());

        let summary = after.as_deref().map(|dir| Summary::of_run(dir, s.seed));
        let (verdict, error) = match &outcome {
            Ok(_) => (
                summary
                    .as_ref()
                    .map(|x| Verdict::from_word(&x.verdict))
                    .unwrap_or(Verdict::Crashed),
                None,
            ),
            Err(e) => (Verdict::Crashed, Some(format!("{e:#}"))),
        };
        runs.push(SeriesRun {
            seed: s.seed,
            verdict,
            error,
            summary,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    let verdicts: Vec<Verdict> = runs.iter().map(|r| r.verdict).collect();
    let exit_code = if interrupted {
        verdict::EXIT_INTERRUPTED
    } else {
        verdict::exit_code(&verdicts)
    };
    let count_of = |v: Verdict| verdicts.iter().filter(|x| **x == v).count();
    let series = Series {
        test: spec.name.clone(),
        test_count: count,
        first_seed: spec.seed,
        valid: count_of(Verdict::Valid),
        invalid: count_of(Verdict::Invalid),
        unknown: count_of(Verdict::Unknown),
        crashed: count_of(Verdict::Crashed),
        interrupted,
        runs,
        exit_code,
    };
    let path = write_summary(&spec.store, &spec.name, &series)?;
    println!("{}", render_table(&series));
    println!("series summary: {}", path.display());
    Ok(exit_code)
}

/// Writes `summary.json` under `store/<test>/series/<timestamp>/`; returns its path.
fn write_summary(store: &Path, test: &str, series: &Series) -> Result<PathBuf> {
    let stamp = results::store::timestamp_name(SystemTime::now());
    let dir = store.join(test).join("series").join(stamp);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("summary.json");
    let tmp = dir.join("summary.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(series)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The terminal table of a series.
pub fn render_table(s: &Series) -> String {
    let mut out = format!(
        "{:<4} {:<16} {:<8} {:>8} {:>7} {:>7} {:<28} {}\n",
        "run", "seed", "verdict", "acked", "failed", "unknown", "worst finding", "faults"
    );
    for (i, r) in s.runs.iter().enumerate() {
        let word = match r.verdict {
            Verdict::Valid => "valid",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "unknown",
            Verdict::Crashed => "CRASHED",
        };
        let (acked, failed, unknown, worst, faults) = match &r.summary {
            Some(x) => (
                x.sends_ok.to_string(),
                x.sends_failed.to_string(),
                x.sends_unknown.to_string(),
                x.worst_finding(),
                x.faults_line(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let worst = match &r.error {
            Some(e) => format!("error: {}", e.lines().next().unwrap_or("")),
            None => worst,
        };
        out += &format!(
            "{:<4} {:<16} {:<8} {acked:>8} {failed:>7} {unknown:>7} {worst:<28} {faults}\n",
            i + 1,
            r.seed,
            word
        );
    }
    out += &format!(
        "{} runs: {} valid, {} invalid, {} unknown, {} crashed{}; exit {}",
        s.runs.len(),
        s.valid,
        s.invalid,
        s.unknown,
        s.crashed,
        if s.interrupted { " (interrupted)" } else { "" },
        s.exit_code
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_run_and_the_exit_follows_the_worst() {
        let run = |seed, verdict, error: Option<&str>| SeriesRun {
            seed,
            verdict,
            error: error.map(str::to_string),
            summary: None,
            seconds: 1.0,
        };
        let s = Series {
            test: "t".into(),
            test_count: 3,
            first_seed: 5,
            valid: 1,
            invalid: 1,
            unknown: 0,
            crashed: 1,
            interrupted: false,
            runs: vec![
                run(5, Verdict::Valid, None),
                run(6, Verdict::Invalid, None),
                run(7, Verdict::Crashed, Some("deploy failed\nmore")),
            ],
            exit_code: verdict::exit_code(&[Verdict::Valid, Verdict::Invalid, Verdict::Crashed]),
        };
        let t = render_table(&s);
        assert!(
            t.contains("INVALID") && t.contains("error: deploy failed"),
            "{t}"
        );
        assert!(t.ends_with("exit 255"), "{t}");
    }
}
