//! The config-safety matrix report: for each configuration cell (acks × min.insync.replicas, and
//! optionally unclean leader election and idempotence) the runs' figures (worst finding, lost and
//! duplicated counts, availability, produce p99), a behaviour verdict (safe / loses acknowledged
//! writes / duplicates / reorders / unavailable), links to each run's report, and what Kafka's
//! documentation promises for that setting, so a surprise (a promise broken) stands out.
//! Rendered as `matrix.html` (minijinja, `templates/matrix.html`), `matrix.md` and
//! `matrix.json`.

use std::collections::BTreeMap;
use std::path::Path;

use checkers::OpType;
use minijinja::{context, Environment, Value as JValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::report::{read_json, ReportError};
use crate::verdict::Verdict;

/// The page template.
pub const TEMPLATE: &str = include_str!("../templates/matrix.html");

/// Below this share of sends acknowledged, a cell without data findings is "unavailable".
pub const UNAVAILABLE_BELOW: f64 = 0.5;

/// One cell's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellConfig {
    /// Producer acks: `0`, `1` or `all`.
    pub acks: String,
    /// `min.insync.replicas`.
    pub min_isr: u32,
    /// `unclean.leader.election.enable`.
    pub unclean: bool,
    /// `enable.idempotence`.
    pub idempotence: bool,
    /// The topic's replication factor.
    pub replication_factor: u32,
}

impl CellConfig {
    /// A name usable as a store folder: `acks-all_mi-2`, with `_unclean` / `_idem`.
    pub fn slug(&self) -> String {
        let mut s = format!("acks-{}_mi-{}", self.acks, self.min_isr);
        if self.unclean {
            s.push_str("_unclean");
        }
        if self.idempotence {
            s.push_str("_idem");
        }
        s
    }

    /// How people write it: `acks=all min.insync.replicas=2`.
    pub fn label(&self) -> String {
        let mut s = format!("acks={} min.insync.replicas={}", self.acks, self.min_isr);
        if self.unclean {
            s.push_str(" unclean.leader.election");
        }
        if self.idempotence {
            s.push_str(" idempotent");
        }
        s
    }
}

/// What Kafka's documentation promises for a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    /// The promise in words.
    pub text: String,
    /// No acknowledged write is lost with one broker failure at a time.
    pub no_loss: bool,
    /// No duplicates from producer retries.
    pub no_duplicates: bool,
}

/// Kafka's documented guarantees for `c` (producer `acks`, topic `min.insync.replicas`,
/// `unclean.leader.election.enable`, `enable.idempotence`).
pub fn promise(c: &CellConfig) -> Promise {
    let rf = c.replication_factor;
    let mut parts: Vec<String> = Vec::new();
    let mut no_loss = false;
    match c.acks.as_str() {
        "0" => parts.push(
            "acks=0: nothing. The producer does not wait for the broker, so a record can be lost \
             on any failure and the client never learns its offset."
                .into(),
        ),
        "1" => parts.push(
            "acks=1: the leader has the record in its log. If the leader fails before followers \
             copy it, the record is lost; min.insync.replicas does not apply to acks=1."
                .into(),
        ),
        _ => {
            if c.min_isr > rf {
                parts.push(format!(
                    "acks=all with min.insync.replicas={} above the replication factor {rf}: \
                     no send can be acknowledged (NOT_ENOUGH_REPLICAS).",
                    c.min_isr
                ));
                no_loss = true;
            } else if c.min_isr <= 1 {
                parts.push(
                    "acks=all with min.insync.replicas=1: every in-sync replica has the record, \
                     but the in-sync set may shrink to the leader alone, and then a failure of \
                     that leader loses acknowledged writes."
                        .into(),
                );
            } else {
                let survives = c.min_isr - 1;
                let mut t = format!(
                    "acks=all with min.insync.replicas={}: an acknowledged record is on at least \
                     {} replicas and survives {survives} broker failure{}; with fewer than {} \
                     in-sync replicas sends fail with NOT_ENOUGH_REPLICAS instead.",
                    c.min_isr,
                    c.min_isr,
                    if survives == 1 { "" } else { "s" },
                    c.min_isr
                );
                if c.min_isr == rf {
                    t.push_str(" Any one broker down makes the topic unwritable.");
                }
                parts.push(t);
                no_loss = true;
            }
        }
    }
    if c.unclean {
        parts.push(
            "unclean.leader.election.enable=true lets an out-of-sync replica become leader: \
             acknowledged writes can be lost whatever acks says."
                .into(),
        );
        no_loss = false;
    }
    if c.idempotence {
        parts.push(
            "enable.idempotence=true: retries write no duplicates and keep order within a \
             producer session."
                .into(),
        );
    } else {
        parts.push("Without idempotence, producer retries may duplicate records.".into());
    }
    Promise {
        text: parts.join(" "),
        no_loss,
        no_duplicates: c.idempotence,
    }
}

/// What one run of a cell showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's folder, relative to the matrix folder (links are built from it).
    pub rel: String,
    /// Its seed.
    pub seed: u64,
    /// Its verdict.
    pub verdict: Verdict,
    /// Count per anomaly kind found.
    pub anomalies: BTreeMap<String, u64>,
    /// The kinds that invalidate this run.
    pub invalidating: Vec<String>,
    /// Acknowledged writes never read (`lost-write` + `unseen`).
    pub lost: u64,
    /// Values written more than once (`duplicate`).
    pub duplicated: u64,
    /// Sends acknowledged / failed / unknown.
    pub sends: [u64; 3],
    /// Share of sends acknowledged (None when there were none).
    pub availability: Option<f64>,
    /// p99 latency of acknowledged sends, milliseconds.
    pub produce_p99_ms: Option<f64>,
    /// Why the harness could not run it.
    pub error: Option<String>,
    /// Wall-clock seconds it took.
    pub seconds: f64,
}

impl RunSummary {
    /// Reads a finished run's `results.json` and history (for the produce p99).
    pub fn from_run(dir: &Path, rel: &str, seed: u64, seconds: f64) -> Result<Self, ReportError> {
        let results = read_json(&dir.join("results.json"))?;
        let history = checkers::read_history(&dir.join("history.jsonl"))?;
        let points = checkers::stats::latency_points(&history);
        let qs = checkers::stats::quantiles(&points);
        let p99 =
            checkers::stats::quantile_of(&qs, "send", OpType::Ok).map(|q| q.p99_ns as f64 / 1e6);
        Ok(Self::from_results(&results, rel, seed, seconds, p99))
    }

    /// From a results.json value.
    pub fn from_results(
        results: &Value,
        rel: &str,
        seed: u64,
        seconds: f64,
        produce_p99_ms: Option<f64>,
    ) -> Self {
        let anomalies: BTreeMap<String, u64> = results["anomalies"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v["count"].as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let count = |k: &str| anomalies.get(k).copied().unwrap_or(0);
        let s = &results["stats"]["sends"];
        let sends = [
            s["ok"].as_u64().unwrap_or(0),
            s["fail"].as_u64().unwrap_or(0),
            s["info"].as_u64().unwrap_or(0),
        ];
        let total: u64 = sends.iter().sum();
        RunSummary {
            rel: rel.to_string(),
            seed,
            verdict: if results.is_null() {
                Verdict::Unknown
            } else {
                Verdict::from_valid(&results["valid"])
            },
            lost: count("lost-write") + count("unseen"),
            duplicated: count("duplicate"),
            anomalies,
            invalidating: results["invalidating"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            sends,
            availability: (total > 0).then(|| sends[0] as f64 / total as f64),
            produce_p99_ms,
            error: None,
            seconds,
        }
    }

    /// A run the harness could not complete.
    pub fn crashed(rel: &str, seed: u64, error: String, seconds: f64) -> Self {
        RunSummary {
            rel: rel.to_string(),
            seed,
            verdict: Verdict::Crashed,
            anomalies: BTreeMap::new(),
            invalidating: Vec::new(),
            lost: 0,
            duplicated: 0,
            sends: [0; 3],
            availability: None,
            produce_p99_ms: None,
            error: Some(error),
            seconds,
        }
    }
}

/// How a cell behaved, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Acknowledged writes were lost.
    LosesAcknowledgedWrites,
    /// Offsets disagree between observers, or reads went backwards or skipped.
    Reorders,
    /// A value was written more than once.
    Duplicates,
    /// Fewer than half the sends were acknowledged.
    Unavailable,
    /// Nothing decidable (nothing acknowledged, nothing read).
    Unknown,
    /// The harness could not run it.
    CouldNotRun,
    /// None of the above.
    Safe,
}

impl Behaviour {
    /// In words.
    pub fn words(self) -> &'static str {
        match self {
            Behaviour::LosesAcknowledgedWrites => "loses acknowledged writes",
            Behaviour::Reorders => "reorders",
            Behaviour::Duplicates => "duplicates",
            Behaviour::Unavailable => "unavailable",
            Behaviour::Unknown => "unknown",
            Behaviour::CouldNotRun => "could not run",
            Behaviour::Safe => "safe",
        }
    }

    /// CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Behaviour::LosesAcknowledgedWrites => "loss",
            Behaviour::Reorders => "reorder",
            Behaviour::Duplicates => "dup",
            Behaviour::Unavailable => "unavail",
            Behaviour::Unknown | Behaviour::CouldNotRun => "unknown",
            Behaviour::Safe => "safe",
        }
    }
}

/// Ordering and consistency kinds, which make a run "reorder" when they invalidate it.
const REORDER_KINDS: &[&str] = &[
    "inconsistent-offsets",
    "G1a",
    "nonmonotonic-poll",
    "poll-skip",
    "int-poll-skip",
    "int-nonmonotonic-poll",
    "nonmonotonic-send",
];

/// Kinds by severity, for a cell's "worst finding".
const SEVERITY: &[&str] = &[
    "lost-write",
    "unseen",
    "inconsistent-offsets",
    "G1a",
    "G0",
    "G1c",
    "duplicate",
    "nonmonotonic-send",
    "nonmonotonic-poll",
    "poll-skip",
    "int-nonmonotonic-poll",
    "int-poll-skip",
];

/// How one run behaved.
pub fn behaviour(r: &RunSummary) -> Behaviour {
    if r.verdict == Verdict::Crashed {
        return Behaviour::CouldNotRun;
    }
    let invalidates = |k: &str| r.invalidating.iter().any(|i| i == k);
    if r.lost > 0 && (invalidates("lost-write") || invalidates("unseen")) {
        return Behaviour::LosesAcknowledgedWrites;
    }
    if REORDER_KINDS
        .iter()
        .any(|k| r.anomalies.get(*k).copied().unwrap_or(0) > 0 && invalidates(k))
    {
        return Behaviour::Reorders;
    }
    if r.duplicated > 0 {
        return Behaviour::Duplicates;
    }
    if r.availability.is_some_and(|a| a < UNAVAILABLE_BELOW) {
        return Behaviour::Unavailable;
    }
    if r.verdict == Verdict::Unknown {
        return Behaviour::Unknown;
    }
    Behaviour::Safe
}

/// One cell: its configuration and runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The configuration.
    pub config: CellConfig,
    /// Its runs, in seed order.
    pub runs: Vec<RunSummary>,
}

impl Cell {
    /// The worst behaviour over the runs that ran (could-not-run only when none did).
    pub fn behaviour(&self) -> Behaviour {
        let ran: Vec<Behaviour> = self
            .runs
            .iter()
            .map(behaviour)
            .filter(|b| *b != Behaviour::CouldNotRun)
            .collect();
        ran.into_iter().min().unwrap_or(Behaviour::CouldNotRun)
    }

    /// The most severe anomaly kind found, with its total count over the runs.
    pub fn worst_finding(&self) -> Option<(String, u64)> {
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &self.runs {
            for (k, n) in &r.anomalies {
                *totals.entry(k.as_str()).or_default() += n;
            }
        }
        let rank = |k: &str| {
            SEVERITY
                .iter()
                .position(|s| *s == k)
                .unwrap_or(SEVERITY.len())
        };
        totals
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .min_by_key(|(k, _)| rank(k))
            .map(|(k, n)| (k.to_string(), n))
    }

    /// Lost acknowledged writes over the runs.
    pub fn lost(&self) -> u64 {
        self.runs.iter().map(|r| r.lost).sum()
    }

    /// Duplicated values over the runs.
    pub fn duplicated(&self) -> u64 {
        self.runs.iter().map(|r| r.duplicated).sum()
    }

    /// Share of sends acknowledged over the runs.
    pub fn availability(&self) -> Option<f64> {
        let ok: u64 = self.runs.iter().map(|r| r.sends[0]).sum();
        let all: u64 = self.runs.iter().map(|r| r.sends.iter().sum::<u64>()).sum();
        (all > 0).then(|| ok as f64 / all as f64)
    }

    /// The worst run's produce p99, milliseconds.
    pub fn produce_p99_ms(&self) -> Option<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.produce_p99_ms)
            .fold(None, |m, x| Some(m.map_or(x, |m: f64| m.max(x))))
    }

    /// The verdict per run for exit codes and JUnit: crashed, else invalid, else valid.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.runs.iter().map(|r| r.verdict).collect()
    }

    /// How this cell broke Kafka's documented promise, if it did.
    pub fn surprise(&self) -> Option<String> {
        let p = promise(&self.config);
        let mut s = Vec::new();
        if p.no_loss && self.lost() > 0 {
            s.push(format!(
                "lost {} acknowledged writes although this setting promises none",
                self.lost()
            ));
        }
        if p.no_loss && self.behaviour() == Behaviour::Reorders {
            s.push("the log's order or content diverged between observers".to_string());
        }
        if p.no_duplicates && self.duplicated() > 0 {
            s.push(format!(
                "{} duplicates although the producer is idempotent",
                self.duplicated()
            ));
        }
        (!s.is_empty()).then(|| s.join("; "))
    }
}

/// A whole matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Title (the test name).
    pub title: String,
    /// What every cell ran: workload, nemesis, time limit, nodes (free text rows).
    pub setup: Vec<(String, String)>,
    /// The command line.
    pub command_line: String,
    /// The cells, row-major.
    pub cells: Vec<Cell>,
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |a| format!("{:.1}%", a * 100.0))
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |m| format!("{m:.1} ms"))
}

/// A cell's figures, as the templates use them.
#[derive(Serialize)]
struct CellView {
    label: String,
    slug: String,
    acks: String,
    min_isr: u32,
    behaviour: &'static str,
    class: &'static str,
    worst: String,
    lost: u64,
    duplicated: u64,
    availability: String,
    p99: String,
    promise: String,
    surprise: Option<String>,
    runs: Vec<RunView>,
}

#[derive(Serialize)]
struct RunView {
    rel: String,
    seed: u64,
    verdict: String,
    behaviour: &'static str,
    findings: String,
    availability: String,
    p99: String,
    error: Option<String>,
    has_report: bool,
}

fn view(cell: &Cell, dir: Option<&Path>) -> CellView {
    let b = cell.behaviour();
    CellView {
        label: cell.config.label(),
        slug: cell.config.slug(),
        acks: cell.config.acks.clone(),
        min_isr: cell.config.min_isr,
        behaviour: b.words(),
        class: b.class(),
        worst: cell
            .worst_finding()
            .map_or_else(|| "none".into(), |(k, n)| format!("{k} ({n})")),
        lost: cell.lost(),
        duplicated: cell.duplicated(),
        availability: pct(cell.availability()),
        p99: ms(cell.produce_p99_ms()),
        promise: promise(&cell.config).text,
        surprise: cell.surprise(),
        runs: cell
            .runs
            .iter()
            .map(|r| RunView {
                rel: r.rel.clone(),
                seed: r.seed,
                verdict: format!("{:?}", r.verdict).to_lowercase(),
                behaviour: behaviour(r).words(),
                findings: if r.anomalies.is_empty() {
                    "none".into()
                } else {
                    r.anomalies
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                availability: pct(r.availability),
                p99: ms(r.produce_p99_ms),
                error: r.error.clone(),
                has_report: dir.is_some_and(|d| d.join(&r.rel).join("report.html").is_file()),
            })
            .collect(),
    }
}

/// `matrix.html`; `dir` (the matrix folder) is used to link only reports that exist.
pub fn render_html(m: &Matrix, dir: Option<&Path>) -> Result<String, ReportError> {
    let cells: Vec<CellView> = m.cells.iter().map(|c| view(c, dir)).collect();
    // The grid: rows are everything but min.insync, columns min.insync values.
    let mut cols: Vec<u32> = m.cells.iter().map(|c| c.config.min_isr).collect();
    cols.sort_unstable();
    cols.dedup();
    let mut rows: Vec<(String, Vec<Option<usize>>)> = Vec::new();
    for (i, c) in m.cells.iter().enumerate() {
        let mut rc = c.config.clone();
        rc.min_isr = 0;
        let key = rc.label().replace(" min.insync.replicas=0", "");
        let col = cols
            .iter()
            .position(|x| *x == c.config.min_isr)
            .unwrap_or(0);
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slots)) => slots[col] = Some(i),
            None => {
                let mut slots = vec![None; cols.len()];
                slots[col] = Some(i);
                rows.push((key, slots));
            }
        }
    }
    let verdicts: Vec<Verdict> = m.cells.iter().flat_map(|c| c.verdicts()).collect();
    let mut env = Environment::new();
    let tmpl_err = |source| ReportError::Template {
        what: "matrix.html",
        source,
    };
    env.add_template("matrix.html", TEMPLATE)
        .map_err(tmpl_err)?;
    env.get_template("matrix.html")
        .map_err(tmpl_err)?
        .render(context! {
            title => m.title.clone(),
            setup => JValue::from(minijinja::value::Serde(&m.setup)),
            command_line => m.command_line.clone(),
            css => JValue::from_safe_string(crate::report::CSS.to_string()),
            cols => cols,
            rows => JValue::from(minijinja::value::Serde(&rows)),
            cells => JValue::from(minijinja::value::Serde(&cells)),
            exit_code => crate::verdict::exit_code(&verdicts),
            threshold => format!("{:.0}%", UNAVAILABLE_BELOW * 100.0),
        })
        .map_err(tmpl_err)
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `matrix.md`: the same figures as a Markdown table, then each cell's runs.
pub fn render_markdown(m: &Matrix) -> String {
    let mut s = format!("# {}\n\n", md_escape(&m.title));
    for (k, v) in &m.setup {
        s.push_str(&format!("- {}: {}\n", md_escape(k), md_escape(v)));
    }
    s.push_str(&format!("- command line: `{}`\n\n", m.command_line));
    s.push_str(
        "| setting | verdict | worst finding | lost | duplicated | availability | produce p99 \
         | runs | Kafka promises | surprise |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in &m.cells {
        let v = view(c, None);
        let runs: Vec<String> = c
            .runs
            .iter()
            .map(|r| format!("[seed {}]({}/report.html)", r.seed, r.rel))
            .collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            md_escape(&v.label),
            v.behaviour,
            md_escape(&v.worst),
            v.lost,
            v.duplicated,
            v.availability,
            v.p99,
            runs.join(" "),
            md_escape(&v.promise),
            v.surprise
                .as_deref()
                .map_or("-".into(), |x| format!("**{}**", md_escape(x)))
        ));
    }
    s.push_str(&format!(
        "\nVerdicts: *loses acknowledged writes* (lost-write or unseen after the final reads), \
         *reorders* (offsets disagree or reads go back or skip), *duplicates*, *unavailable* \
         (under {:.0}% of sends acknowledged), *safe*.\n",
        UNAVAILABLE_BELOW * 100.0
    ));
    for c in &m.cells {
        for r in &c.runs {
            if let Some(e) = &r.error {
                s.push_str(&format!(
                    "\n{} seed {} could not run: {}\n",
                    c.config.label(),
                    r.seed,
                    md_escape(e)
                ));
            }
        }
    }
    s
}

/// Writes `matrix.html`, `matrix.md` and `matrix.json` into `dir`.
pub fn write(dir: &Path, m: &Matrix) -> Result<(), ReportError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReportError::Io { path: p, source }
    };
    let html = render_html(m, Some(dir))?;
    let json = serde_json::to_string_pretty(m).map_err(|e| ReportError::Json {
        path: dir.join("matrix.json"),
        message: e.to_string(),
    })?;
    for (name, text) in [
        ("matrix.html", html),
        ("matrix.md", render_markdown(m)),
        ("matrix.json", json),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    Ok(())
}

/// The JUnit cases of a matrix: one per cell, its worst verdict over its runs.
pub fn junit_cases(m: &Matrix) -> Vec<crate::junit::Case> {
    m.cells
        .iter()
        .map(|c| {
            let vs = c.verdicts();
            // A JUnit case fails on a finding before it errors on an unknown run.
            let verdict = [Verdict::Crashed, Verdict::Invalid, Verdict::Unknown]
                .into_iter()
                .find(|v| vs.contains(v))
                .unwrap_or(if vs.is_empty() {
                    Verdict::Unknown
                } else {
                    Verdict::Valid
                });
            let mut message = format!(
                "{}: {}; worst finding {}",
                c.config.label(),
                c.behaviour().words(),
                c.worst_finding()
                    .map_or_else(|| "none".into(), |(k, n)| format!("{k} ({n})"))
            );
            if let Some(s) = c.surprise() {
                message.push_str(&format!("; SURPRISE: {s}"));
            }
            for r in c.runs.iter().filter_map(|r| r.error.as_ref()) {
                message.push_str(&format!("; could not run: {r}"));
            }
            crate::junit::Case {
                name: c.config.label(),
                verdict,
                seconds: c.runs.iter().map(|r| r.seconds).sum(),
                message,
                report: c
                    .runs
                    .iter()
                    .map(|r| format!("{}/report.html", r.rel))
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(acks: &str, mi: u32) -> CellConfig {
        CellConfig {
            acks: acks.into(),
            min_isr: mi,
            unclean: false,
            idempotence: false,
            replication_factor: 3,
        }
    }

    fn run(anomalies: Value, sends: [u64; 3], valid: Value) -> RunSummary {
        let results = json!({
            "valid": valid,
            "anomalies": anomalies,
            "invalidating": ["lost-write", "unseen", "inconsistent-offsets", "G1a", "poll-skip", "nonmonotonic-poll"],
            "stats": {"sends": {"ok": sends[0], "fail": sends[1], "info": sends[2]}},
        });
        RunSummary::from_results(&results, "cell/run", 1, 10.0, Some(12.5))
    }

    #[test]
    fn promises_follow_kafkas_documentation() {
        assert!(!promise(&cfg("0", 2)).no_loss);
        assert!(!promise(&cfg("1", 3)).no_loss);
        assert!(!promise(&cfg("all", 1)).no_loss);
        let p = promise(&cfg("all", 2));
        assert!(
            p.no_loss && p.text.contains("survives 1 broker failure"),
            "{}",
            p.text
        );
        assert!(promise(&cfg("all", 3)).text.contains("unwritable"));
        let mut unclean = cfg("all", 2);
        unclean.unclean = true;
        assert!(!promise(&unclean).no_loss);
    }

    #[test]
    fn cells_classify_and_flag_surprises() {
        let lossy = run(
            json!({"lost-write": {"count": 3}, "duplicate": {"count": 1}}),
            [90, 5, 5],
            json!(false),
        );
        let clean = run(json!({}), [100, 0, 0], json!(true));
        let down = run(json!({}), [10, 80, 10], json!(true));
        let dup = run(json!({"duplicate": {"count": 2}}), [100, 0, 0], json!(true));
        assert_eq!(behaviour(&lossy), Behaviour::LosesAcknowledgedWrites);
        assert_eq!(behaviour(&clean), Behaviour::Safe);
        assert_eq!(behaviour(&down), Behaviour::Unavailable);
        assert_eq!(behaviour(&dup), Behaviour::Duplicates);
        let c = Cell {
            config: cfg("all", 2),
            runs: vec![clean.clone(), lossy.clone()],
        };
        assert_eq!(c.behaviour(), Behaviour::LosesAcknowledgedWrites);
        assert_eq!(c.worst_finding(), Some(("lost-write".into(), 3)));
        assert_eq!((c.lost(), c.duplicated()), (3, 1));
        assert!(c.surprise().is_some_and(|s| s.contains("lost 3")));
        let expected = Cell {
            config: cfg("1", 2),
            runs: vec![lossy],
        };
        assert_eq!(
            expected.surprise(),
            None,
            "acks=1 promises nothing on failover"
        );
        let crashed = Cell {
            config: cfg("0", 1),
            runs: vec![RunSummary::crashed("x", 1, "no broker".into(), 0.0)],
        };
        assert_eq!(crashed.behaviour(), Behaviour::CouldNotRun);
        let m = Matrix {
            title: "matrix".into(),
            setup: vec![("nemesis".into(), "kill".into())],
            command_line: "harness matrix".into(),
            cells: vec![c, expected, crashed],
        };
        let md = render_markdown(&m);
        assert_eq!(md.matches("\n| acks=").count(), 3, "{md}");
        assert!(md.contains("loses acknowledged writes") && md.contains("could not run"));
        let html = render_html(&m, None).expect("html");
        assert!(html.contains("acks=all min.insync.replicas=2"));
        let cases = junit_cases(&m);
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].verdict, Verdict::Invalid);
        assert_eq!(cases[2].verdict, Verdict::Crashed);
        let xml = crate::junit::render("matrix", &cases);
        assert!(xml.contains("SURPRISE"), "{xml}");
    }
}
