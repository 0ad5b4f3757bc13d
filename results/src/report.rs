//! A run's `report.html`: one self-contained page (inline CSS and SVG, no network) rendered with
//! minijinja from `templates/report.html`: the verdict banner, a summary, the configuration from
//! `test.json`, each anomaly kind of `results.json` with its count, explanation and examples (op
//! indices link into a history view of the ops around them), a timeline of ops with fault bands,
//! latency over time and quantiles, throughput over time, and for keys with findings an
//! offset-by-observer view. Statistics come from `checkers::stats`.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use checkers::stats::{self, Stats};
use checkers::{History, Op, OpType, Process};
use minijinja::{context, Environment, Value as JValue};
use serde::Serialize;
use serde_json::Value;

use crate::plots::{self, Observation};

/// The page template.
pub const TEMPLATE: &str = include_str!("../templates/report.html");
/// The page's style sheet, inlined.
pub const CSS: &str = include_str!("../templates/style.css");

/// Ops shown on each side of a referenced op in the history view.
pub const CONTEXT_OPS: u64 = 3;
/// At most this many ops in the history view.
pub const MAX_HISTORY_ROWS: usize = 3000;
/// At most this many keys get an offset-by-observer view.
pub const MAX_KEYS: usize = 6;
/// Offsets shown on each side of a finding's offsets in a key's view.
pub const OFFSET_CONTEXT: i64 = 6;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run has no history, or it could not be read.
    #[error("reading the history: {0}")]
    History(#[from] checkers::HistoryError),
    /// A JSON file of the run is not valid JSON.
    #[error("{path}: {message}")]
    Json {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The template failed to render.
    #[error("rendering {what}: {source}")]
    Template {
        /// Which page.
        what: &'static str,
        /// Cause.
        source: minijinja::Error,
    },
    /// `test.json` has a field this report does not know, or a known one of the wrong type.
    #[error("{path}: field `{field}`: {message}")]
    TestJson {
        /// File.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A plot failed.
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    /// Writing the report failed.
    #[error("writing {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A stored run, loaded for rendering.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its folder.
    pub dir: PathBuf,
    /// `test.json` (Null when missing).
    pub test: Value,
    /// `results.json` (Null when missing: the run was not checked).
    pub results: Value,
    /// The ops of `history.jsonl` the report shows (see [`Run::load`]).
    pub history: History,
    /// The history's statistics (latency, throughput, faults, unseen), computed while it was
    /// read.
    pub stats: Stats,
    /// Lines (ops) in `history.jsonl`.
    pub op_count: u64,
}

/// Reads an optional JSON file: Null when absent, an error when present but malformed.
pub fn read_json(path: &Path) -> Result<Value, ReportError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| ReportError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(source) => Err(ReportError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The top-level fields of `test.json` (as the harness writes them) and the JSON type each
/// must have.
pub const TEST_JSON_FIELDS: &[(&str, &str)] = &[
    ("spec", "object"),
    ("seed", "number"),
    ("seeds", "object"),
    ("command_line", "array"),
    ("versions", "object"),
    ("nemesis_schedule", "object"),
    ("kafka_release", "string"),
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Reads `test.json` (Null when absent): an error naming the field when it has a field not in
/// [`TEST_JSON_FIELDS`] or a known field of the wrong type, never silently ignored.
pub fn read_test_json(path: &Path) -> Result<Value, ReportError> {
    let v = read_json(path)?;
    let bad = |field: &str, message: String| ReportError::TestJson {
        path: path.to_path_buf(),
        field: field.to_string(),
        message,
    };
    match &v {
        Value::Null => {}
        Value::Object(o) => {
            for (k, x) in o {
                match TEST_JSON_FIELDS.iter().find(|(f, _)| f == k) {
                    None => {
                        let known: Vec<&str> = TEST_JSON_FIELDS.iter().map(|(f, _)| *f).collect();
                        return Err(bad(k, format!("unknown (known: {})", known.join(", "))));
                    }
                    Some((_, want)) if json_type(x) != *want && !x.is_null() => {
                        return Err(bad(k, format!("must be {want}, not {}", json_type(x))));
                    }
                    Some(_) => {}
                }
            }
        }
        other => {
            return Err(bad(
                "(top level)",
                format!("must be an object, not {}", json_type(other)),
            ))
        }
    }
    Ok(v)
}

/// At most this many client ops kept for the keys `results.json` names (their offset views).
pub const MAX_KEY_OPS: usize = 50_000;

/// At most this many nemesis ops get the client ops around them kept (the history view links
/// the first 100 fault intervals and 100 other nemesis events).
pub const MAX_NEMESIS_CONTEXT: usize = 400;

/// What `results.json` points at: the op indices its examples name and the keys they concern.
pub fn referenced(results: &Value) -> (BTreeSet<u64>, BTreeSet<String>) {
    let mut ops = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let found = results["anomalies"].as_object().into_iter().flatten();
    for (_, f) in found {
        for ex in f["examples"].as_array().into_iter().flatten() {
            ops.extend(example_ops(ex));
            if let Some(k) = ex.get("key").and_then(Value::as_str) {
                keys.insert(k.to_string());
            }
        }
    }
    (ops, keys)
}

/// One history line, copied out of the reader's buffer.
#[derive(Debug, Default, Clone)]
struct Line {
    index: u64,
    time_ns: u64,
    process: Option<Process>,
    op_type: Option<OpType>,
    f: String,
    value: String,
}

impl Line {
    fn set(&mut self, raw: &checkers::history::RawOp<'_>) {
        self.index = raw.index;
        self.time_ns = raw.time_ns;
        self.process = Some(raw.process.clone());
        self.op_type = Some(raw.op_type);
        self.f.clear();
        self.f.push_str(&raw.f);
        self.value.clear();
        self.value.push_str(raw.value.map_or("", |v| v.get()));
    }

    fn op(&self) -> Result<Op, String> {
        Ok(Op {
            index: self.index,
            time_ns: self.time_ns,
            process: self.process.clone().unwrap_or_else(Process::nemesis),
            op_type: self.op_type.unwrap_or(OpType::Info),
            f: self.f.clone(),
            value: if self.value.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&self.value).map_err(|e| format!("bad value: {e}"))?
            },
        })
    }
}

impl Run {
    /// Loads `results.json` and `test.json` from `dir`, then reads `history.jsonl` once,
    /// streaming, into its statistics ([`stats::Collector`]) and an excerpt: every nemesis op
    /// with the [`CONTEXT_OPS`] ops on each side of the first [`MAX_NEMESIS_CONTEXT`], the ops
    /// within [`CONTEXT_OPS`] of an op `results.json` names with the invocations of named
    /// completions, and up to [`MAX_KEY_OPS`] client ops that send or read a key it names (with
    /// their invocations). The history is never held whole, nor as JSON values per op.
    pub fn load(dir: &Path) -> Result<Run, ReportError> {
        let test = read_test_json(&dir.join("test.json"))?;
        let results = read_json(&dir.join("results.json"))?;
        let (linked, keys) = referenced(&results);
        let needles: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        let mut collector = stats::Collector::new();
        collector.keep(linked.iter().copied());
        let mut excerpt: BTreeMap<u64, Op> = BTreeMap::new();
        // Each open client op's invocation, and the last CONTEXT_OPS lines.
        let mut invokes: HashMap<Process, Line> = HashMap::new();
        let mut recent: std::collections::VecDeque<Line> = Default::default();
        let (mut op_count, mut key_ops, mut nemesis_seen) = (0u64, 0usize, 0usize);
        let mut after_nemesis = 0u64;
        let near = |i: u64| {
            linked
                .range(i.saturating_sub(CONTEXT_OPS)..=i.saturating_add(CONTEXT_OPS))
                .next()
                .is_some()
        };
        let warnings = checkers::history::scan(&dir.join("history.jsonl"), |raw| {
            op_count += 1;
            collector.op(&raw)?;
            let text = raw.value.map_or("", |v| v.get());
            let nemesis = raw.process.is_nemesis();
            let mut keep = nemesis || near(raw.index) || after_nemesis > 0;
            after_nemesis = after_nemesis.saturating_sub(1);
            if nemesis && nemesis_seen < MAX_NEMESIS_CONTEXT {
                nemesis_seen += 1;
                after_nemesis = CONTEXT_OPS;
                for l in &recent {
                    if let Entry::Vacant(e) = excerpt.entry(l.index) {
                        e.insert(l.op()?);
                    }
                }
            }
            let mut with_invoke = linked.contains(&raw.index);
            if !nemesis
                && raw.op_type == OpType::Ok
                && key_ops < MAX_KEY_OPS
                && needles.iter().any(|n| text.contains(n.as_str()))
            {
                keep = true;
                with_invoke = true;
                key_ops += 1;
            }
            if !nemesis {
                if raw.op_type == OpType::Invoke {
                    invokes.entry(raw.process.clone()).or_default().set(&raw);
                } else if let Some(inv) = invokes.get(&raw.process) {
                    if let (true, Entry::Vacant(e)) = (with_invoke, excerpt.entry(inv.index)) {
                        e.insert(inv.op()?);
                    }
                }
            }
            if let (true, Entry::Vacant(e)) = (keep, excerpt.entry(raw.index)) {
                let mut l = Line::default();
                l.set(&raw);
                e.insert(l.op()?);
            }
            if CONTEXT_OPS > 0 {
                let mut l = if recent.len() as u64 >= CONTEXT_OPS {
                    recent.pop_front().unwrap_or_default()
                } else {
                    Line::default()
                };
                l.set(&raw);
                recent.push_back(l);
            }
            Ok(())
        })?;
        Ok(Run {
            dir: dir.to_path_buf(),
            test,
            results,
            stats: collector.finish(),
            op_count,
            history: History {
                ops: excerpt.into_values().collect(),
                warnings,
            },
        })
    }
}

impl Run {
    /// As [`Run::load`], for a run just checked in one pass ([`checkers::check_file_full`],
    /// whose `results.json` is already written): the statistics come from the check's pass
    /// ([`stats::of_summary`]), and of `history.jsonl` only the excerpt's lines are parsed
    /// ([`checkers::history::read_ops`]; the rest of each line is skipped unread).
    pub fn from_checked(
        dir: &Path,
        summary: &checkers::HistorySummary,
    ) -> Result<Run, ReportError> {
        let test = read_test_json(&dir.join("test.json"))?;
        let results = read_json(&dir.join("results.json"))?;
        let (linked, keys) = referenced(&results);
        let stats = stats::of_summary(summary, &linked);
        let limits = checkers::ExcerptLimits {
            context: CONTEXT_OPS,
            nemesis_context: MAX_NEMESIS_CONTEXT,
            key_ops: MAX_KEY_OPS,
        };
        let wanted = summary.excerpt_indices(&linked, &keys, limits);
        let ops = checkers::history::read_ops(
            &dir.join("history.jsonl"),
            &wanted,
            summary.indices_increasing,
        )?;
        Ok(Run {
            dir: dir.to_path_buf(),
            test,
            results,
            stats,
            op_count: summary.ops,
            history: History {
                ops,
                warnings: summary.warnings.clone(),
            },
        })
    }
}

/// As [`write`], for a run just checked ([`Run::from_checked`]): the history is not read again
/// beyond the excerpt's lines.
pub fn write_checked(
    dir: &Path,
    summary: &checkers::HistorySummary,
) -> Result<PathBuf, ReportError> {
    write_run(&Run::from_checked(dir, summary)?)
}

/// Renders `dir`'s report and writes it to `dir/report.html`, with each plot also as its own
/// SVG file beside it (as Jepsen writes `latency-raw.svg`, `latency-quantiles.svg`,
/// `rate.svg`; see [`PLOT_FILES`]); returns the report's path.
pub fn write(dir: &Path) -> Result<PathBuf, ReportError> {
    write_run(&Run::load(dir)?)
}

/// Renders a loaded run into its folder (see [`write`]).
fn write_run(run: &Run) -> Result<PathBuf, ReportError> {
    let dir = run.dir.as_path();
    let (html, plots) = render_with_plots(run)?;
    let path = dir.join("report.html");
    let tmp = dir.join("report.html.tmp");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReportError::Io { path: p, source }
    };
    for (name, svg) in plots {
        let file = dir.join(name);
        std::fs::write(&file, svg).map_err(io(&file))?;
    }
    std::fs::write(&tmp, html).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Plots by file name, as [`render_with_plots`] returns them.
pub type PlotFiles = Vec<(&'static str, String)>;

/// The plot files [`write`] puts beside `report.html`.
pub const PLOT_FILES: &[&str] = &[
    "timeline.svg",
    "broker-timeline.svg",
    "latency-raw.svg",
    "latency-quantiles.svg",
    "rate.svg",
    "availability.svg",
    "unseen.svg",
];

fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

fn secs(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// A process as a reader knows it: `final-reads` for the final phase's reader, `nemesis`, or
/// the client's number.
fn process_name(p: &Process) -> String {
    match p {
        Process::Client(checkers::history::FINAL_PROCESS) => "final-reads".into(),
        Process::Client(n) => n.to_string(),
        Process::Named(s) => s.clone(),
    }
}

/// The anchor id of a key's view.
pub fn key_anchor(key: &str) -> String {
    let mut s = String::from("key-");
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            s.push(c);
        } else {
            s.push_str(&format!("_{:x}", c as u32));
        }
    }
    s
}

pub use checkers::queue::example_ops;
use checkers::queue::is_op_field;

/// The offsets an example points at (`offset`, `offsets`, `previous_offset`, `skipped`).
fn example_offsets(example: &Value) -> Vec<i64> {
    let mut out = Vec::new();
    for f in ["offset", "previous_offset", "skipped"] {
        out.extend(example.get(f).and_then(Value::as_i64));
    }
    if let Some(a) = example.get("offsets").and_then(Value::as_array) {
        out.extend(a.iter().filter_map(Value::as_i64));
    }
    out
}

#[derive(Serialize)]
struct Field {
    name: String,
    text: String,
    ops: Vec<u64>,
    anchor: Option<String>,
}

fn example_fields(example: &Value) -> Vec<Field> {
    let Some(obj) = example.as_object() else {
        return vec![Field {
            name: "value".into(),
            text: example.to_string(),
            ops: vec![],
            anchor: None,
        }];
    };
    obj.iter()
        .map(|(k, v)| {
            let ops = if is_op_field(k) {
                example_ops(&serde_json::json!({ k: v }))
            } else {
                vec![]
            };
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let anchor = (k == "key").then(|| key_anchor(&text));
            Field {
                name: k.clone(),
                text,
                ops,
                anchor,
            }
        })
        .collect()
}

/// A micro-op observation: (key, offset, value) with whether it is a send ack.
fn observations(mops: &Value, mut each: impl FnMut(&str, i64, i64, bool)) {
    for m in mops.as_array().into_iter().flatten() {
        let Some(a) = m.as_array() else { continue };
        match a.first().and_then(Value::as_str) {
            Some("send") => {
                let (Some(k), Some(Value::Array(ov))) =
                    (a.get(1).and_then(Value::as_str), a.get(2))
                else {
                    continue;
                };
                if let (Some(o), Some(v)) = (
                    ov.first().and_then(Value::as_i64),
                    ov.get(1).and_then(Value::as_i64),
                ) {
                    each(k, o, v, true);
                }
            }
            Some("poll") => {
                let Some(obj) = a.get(1).and_then(Value::as_object) else {
                    continue;
                };
                for (k, pairs) in obj {
                    for p in pairs.as_array().into_iter().flatten() {
                        if let (Some(o), Some(v)) = (
                            p.get(0).and_then(Value::as_i64),
                            p.get(1).and_then(Value::as_i64),
                        ) {
                            each(k, o, v, false);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[derive(Serialize)]
struct Observer {
    who: String,
    op: u64,
}

#[derive(Serialize)]
struct OffsetRow {
    offset: i64,
    value: i64,
    observers: Vec<Observer>,
    more: usize,
}

#[derive(Serialize)]
struct KeyView {
    key: String,
    anchor: String,
    svg: JValue,
    rows: Vec<OffsetRow>,
}

/// Per key with findings: the offsets its findings name and the acknowledged offsets nobody read.
#[derive(Default)]
struct KeyFocus {
    offsets: BTreeSet<i64>,
    missing: BTreeSet<i64>,
}

fn key_views(
    history: &History,
    focus: &BTreeMap<String, KeyFocus>,
    linked: &mut BTreeSet<u64>,
) -> Result<Vec<KeyView>, ReportError> {
    // Offsets of interest per key: each focus offset with its neighbours.
    let window: BTreeMap<&str, (BTreeSet<i64>, i64, i64)> = focus
        .iter()
        .map(|(k, f)| {
            let all: BTreeSet<i64> = f.offsets.union(&f.missing).copied().collect();
            let lo = all.first().copied().unwrap_or(0) - OFFSET_CONTEXT;
            let hi = all.last().copied().unwrap_or(0) + OFFSET_CONTEXT;
            (k.as_str(), (all, lo, hi))
        })
        .collect();
    let near = |k: &str, o: i64| -> bool {
        window.get(k).is_some_and(|(all, _, _)| {
            all.range(o - OFFSET_CONTEXT..=o + OFFSET_CONTEXT)
                .next()
                .is_some()
        })
    };
    // (key) -> list of (offset, value, observer label, op index)
    let mut seen: BTreeMap<&str, Vec<(i64, i64, String, u64)>> = BTreeMap::new();
    let mut open: HashMap<&Process, &Op> = HashMap::new();
    for op in &history.ops {
        if op.process == Process::nemesis() {
            continue;
        }
        if op.op_type == OpType::Invoke {
            open.insert(&op.process, op);
            continue;
        }
        let inv = open.remove(&op.process);
        if op.op_type != OpType::Ok {
            continue;
        }
        let mops = if op.value.is_null() {
            inv.map_or(&op.value, |i| &i.value)
        } else {
            &op.value
        };
        observations(mops, |k, o, v, is_send| {
            if let Some((key, _)) = window.get_key_value(k) {
                if near(k, o) {
                    let who = if is_send {
                        "acked sends".to_string()
                    } else {
                        match &op.process {
                            Process::Client(checkers::history::FINAL_PROCESS) => {
                                "final-reads".to_string()
                            }
                            p => format!("process {}", process_name(p)),
                        }
                    };
                    seen.entry(key).or_default().push((o, v, who, op.index));
                }
            }
        });
    }
    let mut views = Vec::new();
    for (key, f) in focus {
        let obs = seen.remove(key.as_str()).unwrap_or_default();
        // Rows: acked sends first, then processes by how much they saw (at most 24).
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, _, who, _) in &obs {
            *counts.entry(who.as_str()).or_default() += 1;
        }
        let mut rows: Vec<String> = vec!["acked sends".into()];
        let mut others: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|(w, _)| *w != "acked sends")
            .collect();
        others.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows.extend(others.into_iter().take(23).map(|(w, _)| w.to_string()));
        let row_of: HashMap<&str, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.as_str(), i))
            .collect();
        let mut points = Vec::new();
        let mut dedup = BTreeSet::new();
        for (o, v, who, _) in &obs {
            if let Some(&row) = row_of.get(who.as_str()) {
                if dedup.insert((*o, *v, row)) {
                    points.push(Observation {
                        offset: *o,
                        value: *v,
                        row,
                        flagged: f.offsets.contains(o),
                    });
                }
            }
        }
        let missing: Vec<i64> = f.missing.iter().copied().collect();
        let svg = plots::offsets(key, &rows, &points, &missing)?;
        // The table: each flagged offset's values and who saw them.
        let mut table: BTreeMap<(i64, i64), Vec<(&str, u64)>> = BTreeMap::new();
        for (o, v, who, idx) in &obs {
            if f.offsets.contains(o) || f.missing.contains(o) {
                table.entry((*o, *v)).or_default().push((who, *idx));
            }
        }
        let rows = table
            .into_iter()
            .map(|((offset, value), list)| {
                let more = list.len().saturating_sub(8);
                let observers = list
                    .into_iter()
                    .take(8)
                    .map(|(who, op)| {
                        linked.insert(op);
                        Observer {
                            who: who.to_string(),
                            op,
                        }
                    })
                    .collect();
                OffsetRow {
                    offset,
                    value,
                    observers,
                    more,
                }
            })
            .collect();
        views.push(KeyView {
            key: key.clone(),
            anchor: key_anchor(key),
            svg: JValue::from_safe_string(svg),
            rows,
        });
    }
    Ok(views)
}

#[derive(Serialize)]
struct Row {
    index: u64,
    time: String,
    process: String,
    #[serde(rename = "type")]
    op_type: &'static str,
    f: String,
    value: String,
    referenced: bool,
}

/// The history view: windows of ops around every linked op, merged, capped. Windows are
/// ranges of history indices, so `history` may be an excerpt (ops in index order).
fn windows(history: &History, stats: &Stats, linked: &BTreeSet<u64>) -> Vec<Vec<Row>> {
    let invoke_of: HashMap<u64, u64> = stats
        .points
        .iter()
        .map(|p| (p.complete_index, p.invoke_index))
        .collect();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for idx in linked {
        ranges.push((idx.saturating_sub(CONTEXT_OPS), idx + CONTEXT_OPS));
        if let Some(i) = invoke_of.get(idx) {
            ranges.push((i.saturating_sub(1), i + 1));
        }
    }
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 + 1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut total = 0;
    let mut out = Vec::new();
    for (s, e) in merged {
        if total >= MAX_HISTORY_ROWS {
            break;
        }
        let lo = history.ops.partition_point(|o| o.index < s);
        let hi = history.ops.partition_point(|o| o.index <= e);
        if lo >= hi {
            continue;
        }
        let rows: Vec<Row> = history.ops[lo..hi]
            .iter()
            .map(|o| {
                let mut value = o.value.to_string();
                if value.len() > 300 {
                    let mut cut = 300;
                    while !value.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    value.truncate(cut);
                    value.push_str(" …");
                }
                Row {
                    index: o.index,
                    time: secs(o.time_ns),
                    process: process_name(&o.process),
                    op_type: stats::type_name(o.op_type),
                    f: o.f.clone(),
                    value,
                    referenced: linked.contains(&o.index),
                }
            })
            .collect();
        total += rows.len();
        out.push(rows);
    }
    out
}

/// Flattens a JSON value into `a.b.c = value` rows.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, x) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The configuration rows of a test.json: the spec flattened, the seed, the command line, the
/// versions, and the nemesis schedule's size (its actions are in test.json).
fn config_rows(test: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if test.is_null() {
        rows.push(("test.json".into(), "missing".into()));
        return rows;
    }
    flatten("", &test["spec"], &mut rows);
    rows.push(("seed".into(), test["seed"].to_string()));
    if let Some(argv) = test["command_line"].as_array() {
        let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
        rows.push(("command line".into(), words.join(" ")));
    }
    flatten("versions", &test["versions"], &mut rows);
    if let Some(actions) = test["nemesis_schedule"]["actions"].as_array() {
        rows.push((
            "nemesis schedule".into(),
            format!("{} actions (listed in test.json)", actions.len()),
        ));
    }
    rows
}

#[derive(Serialize)]
struct QuantileRow {
    f: String,
    #[serde(rename = "type")]
    op_type: &'static str,
    count: usize,
    p50: String,
    p90: String,
    p99: String,
    max: String,
}

#[derive(Serialize)]
struct Verdict {
    word: &'static str,
    class: &'static str,
    head: String,
    detail: String,
}

fn verdict(results: &Value) -> Verdict {
    if results.is_null() {
        return Verdict {
            word: "unchecked",
            class: "unchecked",
            head: "Not checked".into(),
            detail: "There is no results.json: the run stopped before its check; \
                     `harness check <run>` checks the history recorded so far."
                .into(),
        };
    }
    let invalidating: Vec<&str> = results["invalidating"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let found: Vec<String> = results["anomalies"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| invalidating.contains(&k.as_str()))
                .map(|(k, v)| format!("{k} ({})", v["count"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let sends = &results["stats"]["sends"];
    let acked = sends["ok"].as_u64().unwrap_or(0);
    match crate::verdict::Verdict::from_valid(&results["valid"]) {
        crate::verdict::Verdict::Valid => Verdict {
            word: "valid",
            class: "valid",
            head: "VALID: no invalidating anomaly found".into(),
            detail: format!(
                "{acked} acknowledged sends were checked against every read; none was lost, \
                 and nothing this configuration rules out was seen."
            ),
        },
        crate::verdict::Verdict::Invalid => Verdict {
            word: "invalid",
            class: "invalid",
            head: format!("INVALID: {}", found.join(", ")),
            detail: "The history contradicts what this configuration guarantees; each finding \
                     below names the ops that prove it."
                .into(),
        },
        _ => Verdict {
            word: "unknown",
            class: "unknown",
            head: "UNKNOWN: nothing to decide on".into(),
            detail: "No send was acknowledged and nothing was read, so the checker cannot say \
                     whether anything was lost."
                .into(),
        },
    }
}

/// A template value from anything serialisable.
fn v<T: Serialize>(t: &T) -> JValue {
    JValue::from(minijinja::value::Serde(t))
}

/// Renders the report of a loaded run.
pub fn render(run: &Run) -> Result<String, ReportError> {
    render_with_plots(run).map(|(html, _)| html)
}

/// Examples of each anomaly kind explained in words (see [`crate::explain`]).
pub const EXPLAINED_EXAMPLES: usize = 5;

/// Renders the report of a loaded run, and returns each plot under its file name
/// ([`PLOT_FILES`]).
pub fn render_with_plots(run: &Run) -> Result<(String, PlotFiles), ReportError> {
    let stats = &run.stats;
    let end_s = (stats.duration_ns as f64 / 1e9).max(1.0);
    let bands = plots::bands(&stats.faults, end_s);
    let samples = crate::timeline::read(&run.dir.join("metrics.jsonl"));
    let changes = crate::timeline::leader_changes(&samples);
    let events = crate::explain::Events {
        history: &run.history,
        faults: &stats.faults,
        changes: &changes,
        partitions: run.test["spec"]["partitions"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok()),
    };
    let results = &run.results;
    let invalidating: BTreeSet<&str> = results["invalidating"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();

    // Anomalies, and the ops and keys they name.
    let mut linked: BTreeSet<u64> = BTreeSet::new();
    let mut focus: BTreeMap<String, KeyFocus> = BTreeMap::new();
    let mut anomalies = Vec::new();
    let empty = serde_json::Map::new();
    let found = results["anomalies"].as_object().unwrap_or(&empty);
    // Invalidating kinds first, then by count.
    let mut kinds: Vec<(&String, &Value)> = found.iter().collect();
    kinds.sort_by_key(|(k, v)| {
        (
            !invalidating.contains(k.as_str()),
            std::cmp::Reverse(v["count"].as_u64().unwrap_or(0)),
        )
    });
    for (kind, f) in kinds {
        let examples: Vec<&Value> = f["examples"].as_array().into_iter().flatten().collect();
        for ex in &examples {
            linked.extend(example_ops(ex));
            if let Some(key) = ex.get("key").and_then(Value::as_str) {
                if focus.len() < MAX_KEYS || focus.contains_key(key) {
                    let kf = focus.entry(key.to_string()).or_default();
                    if matches!(kind.as_str(), "lost-write" | "unseen") {
                        kf.missing.extend(ex.get("offset").and_then(Value::as_i64));
                    } else {
                        kf.offsets.extend(example_offsets(ex));
                    }
                }
            }
        }
        let whys: Vec<Option<String>> = examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (i < EXPLAINED_EXAMPLES)
                    .then(|| crate::explain::explain(e, &events))
                    .flatten()
            })
            .collect();
        anomalies.push(context! {
            kind => kind,
            count => f["count"].as_u64().unwrap_or(0),
            invalidating => invalidating.contains(kind.as_str()),
            explanation => f["explanation"].as_str().unwrap_or(""),
            examples => v(&examples.iter().map(|e| example_fields(e)).collect::<Vec<_>>()),
            whys => v(&whys),
        });
    }
    let clean_kinds: Vec<&str> = results["checked"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|k| !found.contains_key(*k))
        .collect();
    focus.retain(|_, f| !f.offsets.is_empty() || !f.missing.is_empty());
    let keys = key_views(&run.history, &focus, &mut linked)?;

    let faults: Vec<_> = stats
        .faults
        .iter()
        .map(|f| {
            context! {
                kind => f.kind.clone(),
                node => f.node.clone().unwrap_or_else(|| "-".into()),
                start => secs(f.start_ns),
                end => f.end_ns.map_or_else(|| "still active".to_string(), secs),
                index => f.start_index,
                start_f => f.start_f.clone(),
            }
        })
        .collect();
    let fault_events: Vec<_> = stats
        .fault_events
        .iter()
        .map(|f| {
            context! {
                f => f.f.clone(), at => secs(f.time_ns), index => f.index,
                error => f.error.clone().unwrap_or_default(),
            }
        })
        .collect();
    for f in stats.faults.iter().take(100) {
        linked.insert(f.start_index);
    }
    for f in stats.fault_events.iter().take(100) {
        linked.insert(f.index);
    }
    let windows = windows(&run.history, stats, &linked);

    let workers = run.test["spec"]["concurrency"]
        .as_u64()
        .filter(|w| *w > 0)
        .unwrap_or_else(|| {
            stats
                .points
                .iter()
                .filter_map(|p| match p.process {
                    Process::Client(n) => Some(n + 1),
                    _ => None,
                })
                .max()
                .unwrap_or(1)
                .min(64)
        });
    let timeline_svg = plots::timeline(&stats.points, workers, &bands, end_s)?;
    let latency_svg = plots::latency(&stats.points, &bands, end_s)?;
    let latency_quantiles_svg = plots::latency_quantiles(&stats.points, &bands, end_s)?;
    let throughput_svg = plots::throughput(&stats.throughput, &bands)?;
    let availability_svg = plots::availability(&stats.throughput, &bands)?;
    let unseen_svg = plots::unseen(&stats.unseen, &bands)?;
    let fault_bands: Vec<crate::timeline::FaultBand> = stats
        .faults
        .iter()
        .zip(&bands)
        .map(|(f, b)| crate::timeline::FaultBand {
            start: b.0,
            end: b.1,
            kind: f.kind.clone(),
            nodes: crate::explain::fault_nodes(&run.history, f),
        })
        .collect();
    let t = &stats.throughput;
    let column = |name: &str, i: usize| -> u32 {
        t.series
            .get(name)
            .and_then(|s| s.get(i))
            .map_or(0, |n| *n as u32)
    };
    let buckets = t.series.values().map(Vec::len).max().unwrap_or(0);
    let outcomes: Vec<crate::timeline::Outcomes> = (0..buckets)
        .map(|i| crate::timeline::Outcomes {
            ok: column("ok", i),
            fail: column("fail", i),
            info: column("info", i),
        })
        .collect();
    let broker_svg = (!samples.is_empty()).then(|| {
        crate::timeline::svg(
            &samples,
            &fault_bands,
            &outcomes,
            (t.start_ns as f64 / 1e9, t.bucket_ns.max(1) as f64 / 1e9),
            end_s,
        )
    });
    let scrape_failures = samples.iter().filter(|s| !s.up).count();
    let quantiles: Vec<_> = stats
        .quantiles
        .iter()
        .map(|q| QuantileRow {
            f: q.f.clone(),
            op_type: stats::type_name(q.op_type),
            count: q.count,
            p50: ms(q.p50_ns),
            p90: ms(q.p90_ns),
            p99: ms(q.p99_ns),
            max: ms(q.max_ns),
        })
        .collect();

    let s = &results["stats"];
    let sends = &s["sends"];
    let (ok, info, fail) = (
        sends["ok"].as_u64().unwrap_or(0),
        sends["info"].as_u64().unwrap_or(0),
        sends["fail"].as_u64().unwrap_or(0),
    );
    let mut summary = vec![
        ("ops in the history".to_string(), run.op_count.to_string()),
        (
            "duration".to_string(),
            format!("{:.1} s", stats.duration_ns as f64 / 1e9),
        ),
        (
            "sends".to_string(),
            format!("{ok} acknowledged, {fail} failed, {info} unknown"),
        ),
    ];
    if ok + info + fail > 0 {
        summary.push((
            "availability".into(),
            format!(
                "{:.1}% of sends acknowledged",
                100.0 * ok as f64 / (ok + info + fail) as f64
            ),
        ));
    }
    if buckets > 0 {
        let dead = (0..buckets).filter(|i| column("ok", *i) == 0).count();
        summary.push((
            "availability over time".into(),
            format!(
                "{dead} of {buckets} intervals of {:.0} s with no acknowledged op (see the \
                 availability plot)",
                t.bucket_ns as f64 / 1e9
            ),
        ));
    }
    if !samples.is_empty() {
        summary.push((
            "broker metrics".into(),
            format!(
                "{} scrapes of /metrics ({scrape_failures} unanswered: node down or cut off), \
                 {} leader changes (metrics.jsonl)",
                samples.len(),
                changes.len()
            ),
        ));
    }
    if let Some(q) = stats::quantile_of(&stats.quantiles, "send", OpType::Ok) {
        summary.push((
            "acknowledged send latency".into(),
            format!("p50 {} ms, p99 {} ms", ms(q.p50_ns), ms(q.p99_ns)),
        ));
    }
    summary.push((
        "reads".into(),
        format!(
            "{} polls of a key, {} records read, {} keys",
            s["polls"].as_u64().unwrap_or(0),
            s["reads"].as_u64().unwrap_or(0),
            s["keys"].as_u64().unwrap_or(0)
        ),
    ));
    summary.push((
        "faults".into(),
        format!(
            "{} intervals, {} other nemesis events",
            stats.faults.len(),
            stats.fault_events.len()
        ),
    ));
    let mut warnings: Vec<String> = run.history.warnings.clone();
    warnings.extend(
        results["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(String::from)),
    );
    warnings.dedup();

    let name = run.test["spec"]["name"].as_str().unwrap_or("run");
    let stamp = run
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut env = Environment::new();
    env.add_template("report.html", TEMPLATE)
        .map_err(|source| ReportError::Template {
            what: "report.html",
            source,
        })?;
    let tmpl = env
        .get_template("report.html")
        .map_err(|source| ReportError::Template {
            what: "report.html",
            source,
        })?;
    let html = tmpl
        .render(context! {
            title => format!("{name} {stamp}"),
            run_dir => run.dir.display().to_string(),
            css => JValue::from_safe_string(CSS.to_string()),
            verdict => v(&verdict(results)),
            semantics => crate::explain::semantics(&run.test),
            summary => v(&summary),
            warnings => v(&warnings),
            config => config_rows(&run.test),
            anomalies => v(&anomalies),
            clean_kinds => v(&clean_kinds),
            timeline_svg => JValue::from_safe_string(timeline_svg.clone()),
            latency_svg => JValue::from_safe_string(latency_svg.clone()),
            latency_quantiles_svg => JValue::from_safe_string(latency_quantiles_svg.clone()),
            throughput_svg => JValue::from_safe_string(throughput_svg.clone()),
            availability_svg => JValue::from_safe_string(availability_svg.clone()),
            broker_svg => broker_svg.clone().map(JValue::from_safe_string),
            leader_changes => v(&changes),
            unseen_svg => JValue::from_safe_string(unseen_svg.clone()),
            quantiles => v(&quantiles),
            keys => v(&keys),
            faults => v(&faults),
            fault_events => v(&fault_events),
            windows => v(&windows),
            op_count => run.op_count,
        })
        .map_err(|source| ReportError::Template {
            what: "report.html",
            source,
        })?;
    let mut files = vec![
        ("timeline.svg", timeline_svg),
        ("latency-raw.svg", latency_svg),
        ("latency-quantiles.svg", latency_quantiles_svg),
        ("rate.svg", throughput_svg),
        ("availability.svg", availability_svg),
        ("unseen.svg", unseen_svg),
    ];
    files.extend(broker_svg.map(|s| ("broker-timeline.svg", s)));
    Ok((html, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_anchors_are_safe_ids() {
        assert_eq!(key_anchor("k2"), "key-k2");
        assert_eq!(key_anchor("a b\"<"), "key-a_20b_22_3c");
    }

    #[test]
    fn example_op_fields_are_found() {
        let mut ops =
            example_ops(&serde_json::json!({"send_op": 7, "ops": [3, 9], "offset": 1, "op": 5}));
        ops.sort();
        assert_eq!(ops, vec![3, 5, 7, 9]);
    }
}
