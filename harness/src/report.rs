//! Reports from the command line: `harness report <run>` re-renders a stored run's
//! `report.html`; after every `harness test` (and `harness check`) the report is written beside
//! `results.json`; `--junit out.xml` writes a run's JUnit XML for CI systems.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use results::junit::Case;
use results::verdict::Verdict;

/// Renders `run/report.html`; returns its path.
pub fn render(run: &Path) -> Result<PathBuf> {
    if !run.join("history.jsonl").is_file() {
        return Err(crate::spec::UsageError(format!(
            "{} has no history.jsonl; give a run folder such as store/<test>/latest",
            run.display()
        ))
        .into());
    }
    results::report::write(run).with_context(|| format!("rendering {}/report.html", run.display()))
}

/// Renders the report after a run or check; a failure is a warning, never the run's failure.
pub fn render_after_run(run: &Path) {
    if !run.join("history.jsonl").is_file() {
        return;
    }
    match render(run) {
        Ok(p) => crate::runlog::say(&format!("harness: report {}", p.display())),
        Err(e) => crate::runlog::say(&format!("harness: warning: no report: {e:#}")),
    }
}

/// As [`render_after_run`], right after a check in one pass ([`checkers::check_file_full`]):
/// the report's statistics come from the check's pass and only its excerpt is read from the
/// history again.
pub fn render_checked_after_run(run: &Path, summary: &checkers::HistorySummary) {
    let rendered = results::report::write_checked(run, summary)
        .with_context(|| format!("rendering {}/report.html", run.display()));
    match rendered {
        Ok(p) => crate::runlog::say(&format!("harness: report {}", p.display())),
        Err(e) => crate::runlog::say(&format!("harness: warning: no report: {e:#}")),
    }
}

/// The JUnit case of one run: its verdict from `results.json` (Crashed when the harness failed
/// or there is no results.json) and a message naming the invalidating findings.
pub fn run_case(
    name: &str,
    run: Option<&Path>,
    error: Option<&anyhow::Error>,
    took: Duration,
) -> Case {
    let report = run
        .map(|r| r.join("report.html").display().to_string())
        .unwrap_or_default();
    if let Some(e) = error {
        return Case {
            name: name.to_string(),
            verdict: Verdict::Crashed,
            seconds: took.as_secs_f64(),
            message: format!("the harness could not run: {e:#}"),
            report,
        };
    }
    let (verdict, message) = match run {
        Some(r) => {
            let (word, findings) = results::store::run_verdict(r);
            let verdict = Verdict::from_word(&word);
            let message = if findings.is_empty() {
                word
            } else {
                format!("invalid: {}", findings.join(", "))
            };
            (verdict, message)
        }
        None => (Verdict::Crashed, "no run folder".to_string()),
    };
    Case {
        name: name.to_string(),
        verdict,
        seconds: took.as_secs_f64(),
        message,
        report,
    }
}

/// Writes JUnit XML to `path`.
pub fn write_junit(path: &Path, suite: &str, cases: &[Case]) -> Result<()> {
    std::fs::write(path, results::junit::render(suite, cases))
        .with_context(|| format!("writing JUnit XML to {}", path.display()))
}

/// The newest run of test `name` in `store` (its `latest` link).
pub fn latest_run(store: &Path, name: &str) -> Option<PathBuf> {
    results::store::resolve_latest(&store.join(name).join("latest"))
        .and_then(|p| p.canonicalize().ok())
}
