//! The queue checker, after Jepsen's Kafka analysis (`jepsen.tests.kafka`): over the one
//! [`Analysis`] pass (records, writers, per-unit version orders, a unit being a
//! topic-partition) it finds `lost-write`, `unseen`, `duplicate`, `inconsistent-offsets`,
//! `no-writer-of-value`, `G1a` (aborted read), `precommitted-read`, `poll-skip`,
//! `nonmonotonic-poll`, `int-poll-skip`, `int-nonmonotonic-poll`, `nonmonotonic-send`,
//! `int-send-skip` and `int-nonmonotonic-send`, and with [`crate::cycles`] the dependency cycles
//! G0 and G1c (plain, process and realtime), each with examples and an explanation. Which kinds
//! invalidate a run is one table, [`POLICY`], read with the run's [`CheckOptions`], and is
//! stated in the result.
//!
//! Invariants (Jepsen's): a send counts as committed when its op is ok, or info with a send
//! some ok op read; a failed send never is. Every poll, whatever its op's outcome, feeds the
//! version orders and the skip checks; only ok polls count as reads for `lost-write`, `unseen`
//! and `G1a`. Everything is linear or n log n in the history's size.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::analysis::{Analysis, IntMap, UnitReads, NONE};
use crate::commits::{Commits, LOST_COMMIT};
use crate::findings::Findings;
pub use crate::findings::{example_ops, explanation, is_op_field, Finding, MAX_EXAMPLES};
use crate::history::{History, Process};
use crate::txns::{self, Kind, ReadRec, Status, Txns};

/// Run settings that decide which anomalies invalidate the run (see [`POLICY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Consumers subscribed (rebalances make skips and rewinds between ops legitimate).
    pub subscribe: bool,
    /// The producer was idempotent.
    pub idempotent: bool,
    /// The final phase read every partition from the start (unseen writes are then lost).
    pub final_phase: bool,
    /// The run used transactions (sends and polls in one op).
    #[serde(default)]
    pub transactions: bool,
    /// Infer write-write dependencies from each partition's log order. Kafka does not promise
    /// that concurrent transactions' writes are ordered alike on every partition, so cycles
    /// through ww edges are reported but, as in Jepsen, do not invalidate; without ww edges a
    /// G1c cycle is certain and invalidates.
    #[serde(default = "yes")]
    pub ww_deps: bool,
    /// The producer retried sends (`client.retries > 0`): without idempotence a retry may
    /// write a record twice, so duplicates are then expected.
    #[serde(default)]
    pub retries: bool,
    /// Kinds this run allows: found and reported, but not invalidating.
    #[serde(default)]
    pub allow: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            subscribe: false,
            idempotent: false,
            final_phase: true,
            transactions: false,
            ww_deps: true,
            retries: false,
            allow: Vec::new(),
        }
    }
}

/// Why an option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `allow` names a kind this checker does not know.
    #[error("unknown anomaly kind `{kind}` (known: {known})")]
    UnknownKind {
        /// The name given.
        kind: String,
        /// The kinds known.
        known: String,
    },
}

impl CheckOptions {
    /// Allows `kind` in this run (for `--allow KIND`): found and reported, not invalidating.
    pub fn allow(&mut self, kind: &str) -> Result<(), OptionsError> {
        if !KINDS.contains(&kind) {
            return Err(OptionsError::UnknownKind {
                kind: kind.to_string(),
                known: KINDS.join(", "),
            });
        }
        if !self.allow.iter().any(|k| k == kind) {
            self.allow.push(kind.to_string());
        }
        Ok(())
    }

    /// Without write-write dependencies (for `--no-ww-deps`): G1c then invalidates.
    pub fn without_ww_deps(mut self) -> Self {
        self.ww_deps = false;
        self
    }
}

/// When a kind invalidates a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Always.
    Always,
    /// Never: reported for information (Jepsen's always-allowed kinds).
    Never,
    /// Unless consumers subscribed.
    UnlessSubscribe,
    /// Unless ww dependencies were inferred.
    UnlessWwDeps,
    /// Unless the producer retried without idempotence.
    UnlessRetriesWithoutIdempotence,
    /// Only when the final phase read everything.
    WithFinalPhase,
}

impl Rule {
    /// Does a kind under this rule invalidate a run with these options?
    pub fn invalidates(self, o: &CheckOptions) -> bool {
        match self {
            Rule::Always => true,
            Rule::Never => false,
            Rule::UnlessSubscribe => !o.subscribe,
            Rule::UnlessWwDeps => !o.ww_deps,
            Rule::UnlessRetriesWithoutIdempotence => o.idempotent || !o.retries,
            Rule::WithFinalPhase => o.final_phase,
        }
    }
}

/// Every kind this checker looks for, and when it invalidates a run: Jepsen's
/// `allowed-error-types` (int-send-skip and G0 always allowed; poll-skip and nonmonotonic-poll
/// under subscribe; G1c with ww-deps), refined by the client's settings (duplicates are
/// expected when the producer retried without idempotence; unseen records are lost only when
/// the final phase read every partition). `CheckOptions::allow` removes kinds per run.
pub const POLICY: &[(&str, Rule)] = &[
    ("lost-write", Rule::Always),
    ("unseen", Rule::WithFinalPhase),
    ("duplicate", Rule::UnlessRetriesWithoutIdempotence),
    ("inconsistent-offsets", Rule::Always),
    ("no-writer-of-value", Rule::Always),
    ("G1a", Rule::Always),
    ("poll-skip", Rule::UnlessSubscribe),
    ("nonmonotonic-poll", Rule::UnlessSubscribe),
    ("int-poll-skip", Rule::Always),
    ("int-nonmonotonic-poll", Rule::Always),
    ("nonmonotonic-send", Rule::Always),
    ("int-send-skip", Rule::Never),
    ("int-nonmonotonic-send", Rule::Always),
    ("precommitted-read", Rule::Always),
    ("G0", Rule::Never),
    ("G0-process", Rule::Never),
    ("G0-realtime", Rule::Never),
    ("G1c", Rule::UnlessWwDeps),
    ("G1c-process", Rule::UnlessWwDeps),
    ("G1c-realtime", Rule::UnlessWwDeps),
    ("lost-commit", Rule::Always),
];

/// The checker's answer, serialised as `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `true`, `false`, or `"unknown"` (nothing was acknowledged or read).
    pub valid: Value,
    /// Findings by kind.
    pub anomalies: BTreeMap<String, Finding>,
    /// The kinds that invalidate this run, given its options.
    pub invalidating: Vec<String>,
    /// Every kind this checker looked for.
    pub checked: Vec<String>,
    /// The options used.
    pub options: CheckOptions,
    /// Counts.
    pub stats: Value,
    /// Reader warnings (truncated tail, ...).
    pub warnings: Vec<String>,
}

/// Every kind this checker looks for.
pub const KINDS: &[&str] = &[
    "lost-write",
    "unseen",
    "duplicate",
    "inconsistent-offsets",
    "G1a",
    "poll-skip",
    "nonmonotonic-poll",
    "int-poll-skip",
    "int-nonmonotonic-poll",
    "nonmonotonic-send",
    "int-send-skip",
    "int-nonmonotonic-send",
    "precommitted-read",
    "G0",
    "G0-process",
    "G0-realtime",
    "G1c",
    "G1c-process",
    "G1c-realtime",
    "lost-commit",
];

/// The kinds that invalidate a run with these options ([`POLICY`] less `options.allow`).
pub fn invalidating(options: &CheckOptions) -> Vec<String> {
    POLICY
        .iter()
        .filter(|(k, rule)| rule.invalidates(options) && !options.allow.iter().any(|a| a == k))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// Most skipped records named in one example.
const MAX_SKIPPED: usize = 8;

/// What the checks need to name things in examples.
struct Names<'a, 't> {
    a: &'a Analysis<'t>,
    t: &'t Txns,
}

impl Names<'_, '_> {
    fn key(&self, k: u32) -> &str {
        &self.t.keys[k as usize]
    }
    fn rec_key(&self, r: u32) -> &str {
        self.key(self.a.rec_key[r as usize])
    }
    fn partition(&self, unit: u32) -> Value {
        json!(self.t.unit_partition[unit as usize])
    }
    fn op(&self, i: u32) -> Value {
        if i == NONE {
            Value::Null
        } else {
            json!(self.t.txns[i as usize].index)
        }
    }
    fn process(&self, i: u32) -> &Process {
        &self.t.processes[self.t.txns[i as usize].process as usize]
    }
    /// The records between two dense indices of a unit (exclusive), at most [`MAX_SKIPPED`]:
    /// (values, keys).
    fn skipped(&self, unit: u32, from: u32, to: u32) -> (Vec<i64>, Vec<&str>) {
        let u = &self.a.units[unit as usize];
        let mut values = Vec::new();
        let mut keys = Vec::new();
        for i in (from + 1..to).take(MAX_SKIPPED) {
            if let Some(&(_, r)) = u.at_index(i).first() {
                values.push(self.a.rec_value[r as usize]);
                keys.push(self.rec_key(r));
            }
        }
        (values, keys)
    }
}

impl Names<'_, '_> {
    /// Adds a skip (`kinds[0]`, delta > 1, naming the records skipped) or a rewind
    /// (`kinds[1]`, delta < 1) between two dense indices of a unit.
    fn step(
        &self,
        f: &mut Findings,
        kinds: [&str; 2],
        unit: u32,
        d: i64,
        between: (Option<u32>, Option<u32>),
        mut ex: Value,
    ) {
        if let (true, Some(from), Some(to)) = (d > 1, between.0, between.1) {
            let (values, keys) = self.skipped(unit, from, to);
            ex["skipped"] = json!(values);
            ex["skipped_keys"] = json!(keys);
        }
        f.add(if d > 1 { kinds[0] } else { kinds[1] }, ex);
    }
}

/// The difference of two dense indices, 1 (no finding) when either is unknown, as Jepsen does.
fn delta(a: Option<u32>, b: Option<u32>) -> i64 {
    match (a, b) {
        (Some(a), Some(b)) => i64::from(b) - i64::from(a),
        _ => 1,
    }
}

/// A send of an op: unit, key, value, dense index, acknowledged offset.
type UnitSend = (u32, u32, i64, Option<u32>, Option<i64>);

/// What a process last saw of a unit: its dense index (if known), key, value and op.
#[derive(Debug, Clone, Copy)]
struct Last {
    index: Option<u32>,
    key: u32,
    value: i64,
    op: u32,
}

/// Checks a history held in memory.
pub fn check(history: &History, options: &CheckOptions) -> CheckResult {
    let t = txns::build(history);
    let mut commits = Commits::new();
    for op in &history.ops {
        commits.op(op.index, &op.process, op.op_type, &op.f, &op.value);
    }
    check_txns(&t, &commits, history.ops.len(), &history.warnings, options)
}

/// Per-unit findings: inconsistent offsets, duplicates, lost writes.
fn unit_checks(n: &Names, f: &mut Findings) {
    let a = n.a;
    let t = n.t;
    let mut inconsistent: Vec<(bool, u32, Value)> = Vec::new();
    for (u, uo) in a.units.iter().enumerate() {
        let unit = u as u32;
        // Inconsistent offsets.
        for (index, run) in uo.by_offset.chunk_by(|x, y| x.0 == y.0).enumerate() {
            if run.len() < 2 {
                continue;
            }
            let offset = run[0].0;
            let mut recs: Vec<u32> = run.iter().map(|(_, r)| *r).collect();
            recs.sort_by_key(|r| (a.rec_value[*r as usize], n.rec_key(*r)));
            let values: Vec<i64> = recs.iter().map(|r| a.rec_value[*r as usize]).collect();
            let keys: Vec<&str> = recs.iter().map(|r| n.rec_key(*r)).collect();
            // Which of them an acknowledged send placed at this offset: an acknowledged write
            // overwritten, not only a read of a record that was never acknowledged.
            let acked: Vec<u32> = recs
                .iter()
                .copied()
                .filter(|r| {
                    a.writer_of(*r).is_some_and(|w| w.status == Status::Ok)
                        && a.writer_offset(*r) == Some(offset)
                })
                .collect();
            let ex = json!({"key": keys[0], "partition": n.partition(unit), "offset": offset,
                            "index": index, "values": values, "keys": keys,
                            "acked": acked.iter().map(|r| a.rec_value[*r as usize]).collect::<Vec<_>>()});
            inconsistent.push((true, unit, ex));
        }
        // Duplicates: a record at more than one offset.
        let mut dups: Vec<(u32, i64)> = uo
            .by_offset
            .iter()
            .filter(|(_, r)| a.first_index[*r as usize] != a.last_index[*r as usize])
            .map(|(o, r)| (*r, *o))
            .collect();
        dups.sort_unstable();
        for run in dups.chunk_by(|x, y| x.0 == y.0) {
            let r = run[0].0;
            if !f.wants_example("duplicate") {
                f.count("duplicate");
                continue;
            }
            let offsets: Vec<i64> = run.iter().map(|(_, o)| *o).collect();
            f.add(
                "duplicate",
                json!({"key": n.rec_key(r), "partition": n.partition(unit),
                       "value": a.rec_value[r as usize], "count": offsets.len(),
                       "offsets": offsets, "send_op": n.op(a.writer[r as usize])}),
            );
        }
        // Lost writes: below the highest first index of a value an ok poll read, every record
        // whose last appearance is at or below it must have been read.
        let mut bound: Option<(u32, u32)> = None;
        for &(_, r) in &uo.by_offset {
            if a.ok_read(r) {
                let i = a.first_index[r as usize];
                if bound.is_none_or(|(b, _)| i > b) {
                    bound = Some((i, r));
                }
            }
        }
        let Some((bound, max_read)) = bound else {
            continue;
        };
        let mut lost: Vec<u32> = uo
            .by_offset
            .iter()
            .map(|(_, r)| *r)
            .filter(|r| {
                a.last_index[*r as usize] <= bound
                    && !a.ok_read(*r)
                    && a.writer[*r as usize] != NONE
                    && a.committed[a.writer[*r as usize] as usize]
            })
            .collect();
        lost.sort_unstable_by_key(|r| (a.first_index[*r as usize], *r));
        lost.dedup();
        for r in lost {
            if !f.wants_example("lost-write") {
                f.count("lost-write");
                continue;
            }
            f.add(
                "lost-write",
                json!({"key": n.rec_key(r), "partition": n.partition(unit),
                       "value": a.rec_value[r as usize], "index": a.first_index[r as usize],
                       "offset": a.writer_offset(r),
                       "max_read_index": bound, "max_read_key": n.rec_key(max_read),
                       "max_read_value": a.rec_value[max_read as usize],
                       "send_op": n.op(a.writer[r as usize]),
                       "max_read_op": n.op(a.first_ok_reader[max_read as usize])}),
            );
        }
    }
    // What the final reads found at each inconsistent offset: an acknowledged value they did
    // not find was overwritten (lost), not merely contradicted by a stale read. Such examples
    // are listed first.
    if inconsistent.is_empty() {
        return;
    }
    let wanted: HashMap<(u32, i64), usize> = inconsistent
        .iter()
        .enumerate()
        .filter_map(|(i, (_, u, ex))| Some(((*u, ex["offset"].as_i64()?), i)))
        .collect();
    let final_reader = t
        .processes
        .iter()
        .position(|p| *p == Process::Client(crate::history::FINAL_PROCESS));
    let mut finals: HashMap<usize, i64> = HashMap::new();
    // (example, value) -> history index of the first op observing it there.
    let mut first: HashMap<(usize, i64), u64> = HashMap::new();
    for tx in &t.txns {
        let mut note = |k: u32, o: i64, v: i64, is_final: bool| {
            if let Some(&i) = wanted.get(&(t.unit_of(k), o)) {
                first.entry((i, v)).or_insert(tx.index);
                if is_final {
                    finals.entry(i).or_insert(v);
                }
            }
        };
        if tx.status == Status::Ok {
            for (k, v, off) in t.sends(tx).iter().map(|s| t.send(s)) {
                if let Some(o) = off {
                    note(k, o, v, false);
                }
            }
        }
        let is_final = final_reader == Some(tx.process as usize);
        for r in t.reads(tx) {
            if let Some(o) = r.offset() {
                note(t.key_of(r), o, t.value_of(r), is_final);
            }
        }
    }
    for (i, (kept, _, ex)) in inconsistent.iter_mut().enumerate() {
        let final_value = finals.get(&i).copied();
        let acked: Vec<i64> = ex["acked"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        let overwritten = final_value.is_some_and(|fv| acked.iter().any(|a| *a != fv));
        let ops: Vec<u64> = ex["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| first.get(&(i, v.as_i64()?)).copied())
            .collect();
        ex["final"] = json!(final_value);
        ex["acked_overwritten"] = json!(overwritten);
        ex["ops"] = json!(ops);
        *kept = !overwritten;
    }
    inconsistent.sort_by_key(|(kept, _, _)| *kept);
    for (_, _, ex) in inconsistent {
        f.add("inconsistent-offsets", ex);
    }
}

/// Per-record findings: unseen, G1a, no-writer-of-value.
fn record_checks(n: &Names, f: &mut Findings) {
    let a = n.a;
    let mut no_writer: IntMap<u32, usize> = IntMap::default();
    for r in 0..a.rec_key.len() as u32 {
        let unit = a.unit_of_rec(r);
        match a.writer_of(r) {
            None => {
                no_writer.insert(r, no_writer.len());
            }
            Some(w) => {
                if w.status == Status::Ok && !a.ok_read(r) {
                    if !f.wants_example("unseen") {
                        f.count("unseen");
                        continue;
                    }
                    f.add(
                        "unseen",
                        json!({"key": n.rec_key(r), "partition": n.partition(unit),
                               "value": a.rec_value[r as usize],
                               "offset": a.writer_offset(r),
                               "send_op": n.op(a.writer[r as usize])}),
                    );
                } else if w.status == Status::Fail && a.ok_read(r) {
                    f.add(
                        "G1a",
                        json!({"key": n.rec_key(r), "partition": n.partition(unit),
                               "value": a.rec_value[r as usize],
                               "failed_send_op": n.op(a.writer[r as usize]),
                               "read_by_op": n.op(a.first_ok_reader[r as usize])}),
                    );
                }
            }
        }
    }
    if no_writer.is_empty() {
        return;
    }
    // The first op (any outcome) that read each, and where.
    let mut seen: Vec<Option<(u32, Option<i64>)>> = vec![None; no_writer.len()];
    for (i, tx) in n.t.txns.iter().enumerate() {
        for rd in n.t.reads(tx) {
            if let Some(&slot) = no_writer.get(&rd.rec()) {
                seen[slot].get_or_insert((i as u32, rd.offset()));
            }
        }
    }
    let mut order: Vec<(u32, usize)> = no_writer.into_iter().collect();
    order.sort_unstable_by_key(|(_, slot)| *slot);
    for (r, slot) in order {
        let (reader, offset) = seen[slot].unwrap_or((NONE, None));
        f.add(
            "no-writer-of-value",
            json!({"key": n.rec_key(r), "partition": n.partition(a.unit_of_rec(r)),
                   "value": a.rec_value[r as usize], "offset": offset,
                   "read_by_op": n.op(reader)}),
        );
    }
}

/// Per-op and per-process findings: precommitted reads, internal and external skips and
/// rewinds of sends and polls.
fn op_checks(n: &Names, f: &mut Findings) {
    let a = n.a;
    let t = n.t;
    let mut last_poll: IntMap<u32, IntMap<u32, Last>> = IntMap::default();
    let mut last_send: IntMap<u32, IntMap<u32, Last>> = IntMap::default();
    let mut unit_reads = UnitReads::default();
    let mut sends: Vec<UnitSend> = Vec::new();
    for (i, tx) in t.txns.iter().enumerate() {
        let i = i as u32;
        let p = tx.process;
        if tx.complete_ns().is_none() {
            continue;
        }
        if tx.kind == Kind::Reposition {
            if tx.status != Status::Fail {
                let targets = t.targets(tx);
                for map in [&mut last_poll, &mut last_send] {
                    if let Some(m) = map.get_mut(&p) {
                        m.retain(|u, _| targets.iter().any(|g| t.names_unit(*g, *u)));
                    }
                }
            }
            continue;
        }
        if tx.kind != Kind::Data {
            continue;
        }
        // Sends, grouped by unit in op order.
        sends.clear();
        for (k, v, off) in t.sends(tx).iter().map(|s| t.send(s)) {
            sends.push((t.unit_of(k), k, v, a.index(k, v, off), off));
        }
        sends.sort_by_key(|s| s.0);
        for run in sends.chunk_by(|x, y| x.0 == y.0) {
            let unit = run[0].0;
            for w in run.windows(2) {
                let (x, y) = (w[0], w[1]);
                let d = delta(x.3, y.3);
                if d == 1 {
                    continue;
                }
                let ex = json!({"key": n.key(y.1), "partition": n.partition(unit),
                                "keys": [n.key(x.1), n.key(y.1)], "values": [x.2, y.2],
                                "offsets": [x.4, y.4], "delta": d,
                                "process": n.process(i), "op": tx.index});
                let kinds = ["int-send-skip", "int-nonmonotonic-send"];
                n.step(f, kinds, unit, d, (x.3, y.3), ex);
            }
            if tx.status != Status::Fail {
                let first = run[0];
                let last = run[run.len() - 1];
                let m = last_send.entry(p).or_default();
                if let Some(prev) = m.get(&unit) {
                    let d = delta(prev.index, first.3);
                    if d < 1 {
                        f.add(
                            "nonmonotonic-send",
                            json!({"key": n.key(first.1), "partition": n.partition(unit),
                                   "keys": [n.key(prev.key), n.key(first.1)],
                                   "values": [prev.value, first.2], "delta": d,
                                   "offset": first.4, "process": n.process(i),
                                   "ops": [n.op(prev.op), json!(tx.index)]}),
                        );
                    }
                }
                m.insert(
                    unit,
                    Last {
                        index: last.3,
                        key: last.1,
                        value: last.2,
                        op: i,
                    },
                );
            }
        }
        // Polls.
        a.unit_reads(tx, &mut unit_reads);
        if unit_reads.runs.is_empty() {
            continue;
        }
        let rebalanced = t.rebalances(tx);
        // A transaction reading what it sent itself: once per key, as Jepsen.
        if !t.sends(tx).is_empty() {
            let mut reported: Vec<u32> = Vec::new();
            for r in t.reads(tx) {
                let own = a.writer[r.rec() as usize] == i;
                let key = t.key_of(r);
                if own && !reported.contains(&key) {
                    reported.push(key);
                    f.add(
                        "precommitted-read",
                        json!({"key": n.key(key), "partition": n.partition(t.unit_of(key)),
                               "value": t.value_of(r), "offset": r.offset(),
                               "process": n.process(i), "op": tx.index}),
                    );
                }
            }
        }
        let m = last_poll.entry(p).or_default();
        for (unit, seq) in unit_reads.units() {
            let idx = |r: &ReadRec| r.offset().and_then(|o| a.units[unit as usize].index_of(o));
            let first = &seq[0];
            if let Some(prev) = m.get(&unit) {
                let d = delta(prev.index, idx(first));
                if d != 1 {
                    let ex = json!({"key": n.key(t.key_of(first)), "partition": n.partition(unit),
                                        "keys": [n.key(prev.key), n.key(t.key_of(first))],
                                        "values": [prev.value, t.value_of(first)], "delta": d,
                                        "offset": first.offset(), "process": n.process(i),
                                        "ops": [n.op(prev.op), json!(tx.index)]});
                    let between = (prev.index, idx(first));
                    n.step(f, ["poll-skip", "nonmonotonic-poll"], unit, d, between, ex);
                }
            }
            if !rebalanced.iter().any(|g| t.names_unit(*g, unit)) {
                for w in seq.windows(2) {
                    let (x, y) = (&w[0], &w[1]);
                    let (ix, iy) = (idx(x), idx(y));
                    let d = delta(ix, iy);
                    if d == 1 {
                        continue;
                    }
                    let ex = json!({"key": n.key(t.key_of(y)), "partition": n.partition(unit),
                                        "keys": [n.key(t.key_of(x)), n.key(t.key_of(y))],
                                        "values": [t.value_of(x), t.value_of(y)], "delta": d,
                                        "offsets": [x.offset(), y.offset()],
                                        "process": n.process(i), "op": tx.index});
                    let kinds = ["int-poll-skip", "int-nonmonotonic-poll"];
                    n.step(f, kinds, unit, d, (ix, iy), ex);
                }
            }
            if tx.status == Status::Ok {
                let last = &seq[seq.len() - 1];
                m.insert(
                    unit,
                    Last {
                        index: idx(last),
                        key: t.key_of(last),
                        value: t.value_of(last),
                        op: i,
                    },
                );
            }
        }
    }
}

/// Checks parsed operations and the group's commits (`ops`: history lines, for the stats).
pub fn check_txns(
    t: &Txns,
    commits: &Commits,
    ops: usize,
    warnings: &[String],
    options: &CheckOptions,
) -> CheckResult {
    let mut timer = crate::PhaseTimer::from_env();
    let a = Analysis::build(t);
    timer.phase("analysis");
    let (mut n_ok, mut n_info, mut n_fail, mut n_polls, mut n_reads) = (0, 0, 0, 0, 0);
    for tx in &t.txns {
        let s = t.sends(tx).len();
        match tx.status {
            Status::Ok => n_ok += s,
            Status::Info => n_info += s,
            Status::Fail => n_fail += s,
        }
        if tx.polled {
            n_polls += 1;
        }
        if tx.status == Status::Ok {
            n_reads += t.reads(tx).len();
        }
    }
    let names = Names { a: &a, t };
    let mut f = Findings(BTreeMap::new());
    unit_checks(&names, &mut f);
    record_checks(&names, &mut f);
    timer.phase("unit and record checks");
    // The per-op checks and the dependency graph read the analysis only: one thread each.
    let (op_findings, graph) = std::thread::scope(|s| {
        let ops = s.spawn(|| {
            let mut g = Findings(BTreeMap::new());
            op_checks(&names, &mut g);
            g
        });
        let graph = crate::cycles::DependencyGraph::build(&a, options.ww_deps);
        match ops.join() {
            Ok(g) => (g, graph),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    f.merge(op_findings);
    timer.phase("op checks and graph");
    graph.report(&mut f);
    timer.phase("cycle search");
    for example in commits.lost_commits() {
        f.add(LOST_COMMIT, example);
    }

    let invalid_kinds = invalidating(options);
    let bad = invalid_kinds.iter().any(|k| f.0.contains_key(k));
    let valid = if bad {
        json!(false)
    } else if n_ok == 0 && n_reads == 0 {
        json!("unknown")
    } else {
        json!(true)
    };
    CheckResult {
        valid,
        anomalies: f.0,
        invalidating: invalid_kinds,
        checked: KINDS.iter().map(|s| s.to_string()).collect(),
        options: options.clone(),
        stats: json!({
            "ops": ops,
            "sends": {"ok": n_ok, "info": n_info, "fail": n_fail},
            "polls": n_polls,
            "reads": n_reads,
            "keys": t.keys.len(),
            "partitions": t.unit_partition.iter().filter(|p| p.is_some()).count(),
            "graph": graph.stats(),
            "commits": commits.stats(),
        }),
        warnings: warnings.to_vec(),
    }
}
