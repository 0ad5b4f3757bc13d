//! The queue checker, after Jepsen's Kafka analysis: from every send acknowledgement and every
//! poll it builds, per key, the version order (offset → values), then finds `lost-write`,
//! `unseen`, `duplicate`, `inconsistent-offsets`, `G1a` (aborted read), `precommitted-read`,
//! `poll-skip`, `nonmonotonic-poll`, `int-poll-skip`, `int-nonmonotonic-poll`,
//! `nonmonotonic-send`, `int-send-skip` and `int-nonmonotonic-send`, and with [`crate::cycles`]
//! the dependency cycles G0 and G1c (plain, process and realtime), each with examples and an
//! explanation. Which kinds invalidate a run depends on [`CheckOptions`] and is stated in the
//! result.
//!
//! Invariants: a send counts as committed when its op is ok, or when it is indeterminate and a
//! read proves it visible; a failed send is never committed. Only ok polls are evidence of what
//! was read. Everything is linear or n log n in the history's size.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::commits::{Commits, LOST_COMMIT};
use crate::history::{History, Process};
use crate::txns::{self, Kind, Status, Txns};

/// Run settings that decide which anomalies invalidate the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Consumers subscribed (rebalances make skips and rewinds legitimate).
    pub subscribe: bool,
    /// The producer was idempotent (duplicates and send reordering are then bugs).
    pub idempotent: bool,
    /// The final phase read every partition from the start (unseen writes are then lost).
    pub final_phase: bool,
    /// The run used transactions (sends and polls in one op).
    #[serde(default)]
    pub transactions: bool,
    /// Infer write-write dependencies from each key's log order. Kafka does not promise that
    /// concurrent transactions' writes are ordered alike on every partition, so cycles through
    /// ww edges are reported but, as in Jepsen, do not invalidate; without ww edges a G1c
    /// cycle is certain and invalidates.
    #[serde(default = "yes")]
    pub ww_deps: bool,
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
        }
    }
}

/// One anomaly kind's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// How many.
    pub count: usize,
    /// Up to [`MAX_EXAMPLES`] examples.
    pub examples: Vec<Value>,
    /// What the anomaly means.
    pub explanation: String,
}

/// Examples kept per kind.
pub const MAX_EXAMPLES: usize = 8;

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

fn explanation(kind: &str) -> &'static str {
    match kind {
        "lost-write" => "An acknowledged send was never read, although later offsets of its key were read: the log lost an acknowledged write.",
        "unseen" => "An acknowledged send was never read, and nothing after it was read either.",
        "duplicate" => "One value appears at several offsets of its key: it was written more than once.",
        "inconsistent-offsets" => "One offset of a key holds several different values, as seen by different observers.",
        "G1a" => "A poll read a value whose send definitely failed (aborted read).",
        "poll-skip" => "A process's successive polls of a key skipped offsets that exist, with no reassignment between them.",
        "nonmonotonic-poll" => "A process's successive polls of a key went back (or repeated) offsets, with no reassignment between them.",
        "int-poll-skip" => "Within one poll, consecutive records of a key skipped offsets that exist.",
        "int-nonmonotonic-poll" => "Within one poll, offsets of a key went backwards or repeated.",
        "nonmonotonic-send" => "A process's successive acknowledged sends to a key got decreasing offsets.",
        "int-send-skip" => "Within one op, another write landed between two sends to one key (expected for non-transactional ops; a transaction's sends need not be contiguous either).",
        "int-nonmonotonic-send" => "Within one op, a later send to a key was acknowledged at a lower or equal offset.",
        "precommitted-read" => "A transaction polled a value it sent itself, before it committed.",
        "G0" => "Write cycle: ops whose writes are ordered one way on one key and the other way on another (ww edges only).",
        "G1c" => "Circular information flow: a cycle of write-write and write-read dependencies, each op seeing or following the other's effects.",
        "G0-process" => "A write cycle that also uses the order of ops within one process.",
        "G1c-process" => "A cycle of ww/wr dependencies that also uses the order of ops within one process.",
        "G0-realtime" => "A write cycle that also uses realtime order: an op completed before another was invoked, yet its write is ordered after the other's.",
        "G1c-realtime" => "A cycle of ww/wr dependencies that also uses realtime order (an op completed before another began).",
        "lost-commit" => "A read of the group's committed offsets returned, for a partition, less than (or nothing after) an offset commit acknowledged before the read began: an acknowledged commit was lost.",
        _ => "",
    }
}

/// Whether a finding example's field names op indices (`op`, `ops`, `*_op`).
pub fn is_op_field(name: &str) -> bool {
    name == "op" || name == "ops" || name.ends_with("_op")
}

/// The op indices (history positions) a finding example names, in field order.
pub fn example_ops(example: &Value) -> Vec<u64> {
    let mut out = Vec::new();
    if let Some(obj) = example.as_object() {
        for (_, v) in obj.iter().filter(|(k, _)| is_op_field(k)) {
            match v {
                Value::Number(n) => out.extend(n.as_u64()),
                Value::Array(a) => out.extend(a.iter().filter_map(Value::as_u64)),
                _ => {}
            }
        }
    }
    out
}

/// The kinds that invalidate a run with these options.
pub fn invalidating(options: &CheckOptions) -> Vec<String> {
    // lost-commit needs commit and committed ops, which only subscribed consumers record.
    let mut v = vec!["lost-write", "inconsistent-offsets", "G1a", "lost-commit"];
    if options.idempotent {
        v.extend(["duplicate", "nonmonotonic-send"]);
    }
    if !options.subscribe {
        v.extend([
            "poll-skip",
            "nonmonotonic-poll",
            "int-poll-skip",
            "int-nonmonotonic-poll",
        ]);
    }
    if options.final_phase {
        v.push("unseen");
    }
    if options.transactions {
        v.extend(["precommitted-read", "int-nonmonotonic-send"]);
    }
    if !options.ww_deps {
        v.extend(["G1c", "G1c-process", "G1c-realtime"]);
    }
    v.into_iter().map(String::from).collect()
}

/// A send's status, acknowledged offset and the position of its op in [`Txns::txns`].
pub(crate) type SendRecord = (Status, Option<i64>, u32);

/// Per key: what was sent and what was seen where, in sorted arrays (compact, n log n).
#[derive(Debug, Default)]
pub(crate) struct KeyData {
    /// value → its send
    pub sends: HashMap<i64, SendRecord>,
    /// (offset, value) seen by acks and ok reads, sorted, distinct
    pub by_offset: Vec<(i64, i64)>,
    /// the same pairs as (value, offset), sorted
    pub by_value: Vec<(i64, i64)>,
    /// (value, op position) of ok reads, sorted; the first per value is its first reader
    pub reads: Vec<(i64, u32)>,
    /// distinct offsets known to exist, sorted
    pub known: Vec<i64>,
    /// highest offset an ok poll read
    pub max_read_offset: Option<i64>,
}

impl KeyData {
    /// The lowest offset `v` was seen at.
    pub fn first_offset(&self, v: i64) -> Option<i64> {
        let i = self.by_value.partition_point(|(x, _)| *x < v);
        self.by_value
            .get(i)
            .filter(|(x, _)| *x == v)
            .map(|(_, o)| *o)
    }

    /// The first op (position) that read `v`, if any did.
    pub fn first_reader(&self, v: i64) -> Option<u32> {
        let i = self.reads.partition_point(|(x, _)| *x < v);
        self.reads.get(i).filter(|(x, _)| *x == v).map(|(_, t)| *t)
    }

    /// Was `v` read by an ok poll?
    pub fn was_read(&self, v: i64) -> bool {
        self.first_reader(v).is_some()
    }

    /// An offset strictly between `lo` and `hi` that exists.
    fn exists_between(&self, lo: i64, hi: i64) -> Option<i64> {
        let i = self.known.partition_point(|o| *o <= lo);
        self.known.get(i).copied().filter(|o| *o < hi)
    }
}

pub(crate) struct Findings(pub BTreeMap<String, Finding>);

impl Findings {
    pub(crate) fn add(&mut self, kind: &str, example: Value) {
        let f = self.0.entry(kind.to_string()).or_insert_with(|| Finding {
            explanation: explanation(kind).to_string(),
            ..Finding::default()
        });
        f.count += 1;
        if f.examples.len() < MAX_EXAMPLES {
            f.examples.push(example);
        }
    }
}

/// The value the final phase's reader first read at each (key, offset) of `inconsistent` (key,
/// offset, ...): one pass over that reader's ops, only when there are inconsistent offsets.
fn final_values(
    t: &Txns,
    inconsistent: &[(u32, i64, Vec<i64>, Vec<i64>)],
) -> HashMap<(u32, i64), i64> {
    let mut found = HashMap::new();
    let final_reader = t
        .processes
        .iter()
        .position(|p| *p == Process::Client(crate::history::FINAL_PROCESS));
    let Some(final_reader) = final_reader.filter(|_| !inconsistent.is_empty()) else {
        return found;
    };
    let wanted: std::collections::HashSet<(u32, i64)> =
        inconsistent.iter().map(|(k, o, _, _)| (*k, *o)).collect();
    for tx in t
        .txns
        .iter()
        .filter(|tx| tx.process as usize == final_reader)
    {
        for r in t.reads(tx) {
            if wanted.contains(&(r.key, r.offset)) {
                found.entry((r.key, r.offset)).or_insert(r.value);
            }
        }
    }
    found
}

/// Names, in each inconsistent-offsets example kept, the first op that observed each of its
/// values at its offset (`ops`, in the order of `values`): an acknowledging send or a poll. The
/// example is proven once the last of them completed. One pass over the ops, only when there
/// are such examples.
fn observers(t: &Txns, examples: &mut [(bool, u32, Value)]) {
    if examples.is_empty() {
        return;
    }
    let wanted: HashMap<(u32, i64), usize> = examples
        .iter()
        .enumerate()
        .filter_map(|(i, (_, k, ex))| Some(((*k, ex["offset"].as_i64()?), i)))
        .collect();
    // (example, value) -> history index of the first op observing it there.
    let mut first: HashMap<(usize, i64), u64> = HashMap::new();
    let mut note = |k: u32, offset: i64, value: i64, index: u64| {
        if let Some(&i) = wanted.get(&(k, offset)) {
            let e = first.entry((i, value)).or_insert(index);
            *e = (*e).min(index);
        }
    };
    for tx in &t.txns {
        if tx.status == Status::Ok {
            for &(k, v, off) in t.sends(tx) {
                if let Some(o) = off {
                    note(k, o, v, tx.index);
                }
            }
        }
        for r in t.reads(tx) {
            note(r.key, r.offset, r.value, tx.index);
        }
    }
    for (i, (_, _, ex)) in examples.iter_mut().enumerate() {
        let ops: Vec<u64> = ex["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| first.get(&(i, v.as_i64()?)).copied())
            .collect();
        ex["ops"] = json!(ops);
    }
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

/// Checks parsed operations and the group's commits (`ops`: history lines, for the stats).
pub fn check_txns(
    t: &Txns,
    commits: &Commits,
    ops: usize,
    warnings: &[String],
    options: &CheckOptions,
) -> CheckResult {
    let mut keys: Vec<KeyData> = (0..t.keys.len()).map(|_| KeyData::default()).collect();
    let (mut n_ok, mut n_info, mut n_fail, mut n_polls, mut n_reads) = (0, 0, 0, 0, 0);
    for (i, tx) in t.txns.iter().enumerate() {
        for &(key, v, off) in t.sends(tx) {
            match tx.status {
                Status::Ok => n_ok += 1,
                Status::Info => n_info += 1,
                Status::Fail => n_fail += 1,
            }
            let kd = &mut keys[key as usize];
            let e = kd.sends.entry(v).or_insert((tx.status, off, i as u32));
            if tx.status == Status::Ok {
                *e = (Status::Ok, off.or(e.1), i as u32);
                if let Some(o) = off {
                    kd.by_offset.push((o, v));
                }
            }
        }
        if tx.polled {
            n_polls += 1;
        }
        for r in t.reads(tx) {
            n_reads += 1;
            let kd = &mut keys[r.key as usize];
            kd.by_offset.push((r.offset, r.value));
            kd.reads.push((r.value, i as u32));
            kd.max_read_offset = Some(kd.max_read_offset.map_or(r.offset, |m| m.max(r.offset)));
        }
    }
    for kd in &mut keys {
        kd.by_offset.sort_unstable();
        kd.by_offset.dedup();
        kd.by_value = kd.by_offset.iter().map(|(o, v)| (*v, *o)).collect();
        kd.by_value.sort_unstable();
        kd.reads.sort_unstable();
        kd.known = kd.by_offset.iter().map(|(o, _)| *o).collect();
        kd.known.dedup();
    }
    let idx = |i: u32| t.txns[i as usize].index;
    let proc_of = |i: u32| &t.processes[t.txns[i as usize].process as usize];

    let mut f = Findings(BTreeMap::new());
    // Inconsistent offsets whose acknowledged value the final reads did not find are listed
    // first, so the examples kept show an overwritten acknowledged write whenever there is one.
    let mut inconsistent = Vec::new();
    for (k, kd) in keys.iter().enumerate() {
        let key = &t.keys[k];
        for run in kd.by_offset.chunk_by(|a, b| a.0 == b.0) {
            if run.len() > 1 {
                let offset = run[0].0;
                let values: Vec<i64> = run.iter().map(|(_, v)| *v).collect();
                // Which of them an acknowledged send placed at this offset: an acknowledged
                // write overwritten, not only a read of a record that was never acknowledged.
                let acked: Vec<i64> = values
                    .iter()
                    .copied()
                    .filter(|v| {
                        kd.sends
                            .get(v)
                            .is_some_and(|s| s.0 == Status::Ok && s.1 == Some(offset))
                    })
                    .collect();
                inconsistent.push((k as u32, offset, values, acked));
            }
        }
        for run in kd.by_value.chunk_by(|a, b| a.0 == b.0) {
            if run.len() > 1 {
                let v = run[0].0;
                let offsets: Vec<i64> = run.iter().map(|(_, o)| *o).collect();
                let writer = kd.sends.get(&v).map(|s| idx(s.2));
                f.add(
                    "duplicate",
                    json!({"key": key, "value": v, "offsets": offsets, "send_op": writer}),
                );
            }
        }
        for run in kd.reads.chunk_by(|a, b| a.0 == b.0) {
            let (v, first_read) = run[0];
            if let Some((Status::Fail, _, w)) = kd.sends.get(&v) {
                f.add(
                    "G1a",
                    json!({"key": key, "value": v, "failed_send_op": idx(*w), "read_by_op": idx(first_read)}),
                );
            }
        }
        let mut acked: Vec<(&i64, &SendRecord)> = kd
            .sends
            .iter()
            .filter(|(v, (st, _, _))| *st == Status::Ok && !kd.was_read(**v))
            .collect();
        acked.sort_by_key(|(v, _)| **v);
        for (v, (_, off, w)) in acked {
            let later_read = match (off, kd.max_read_offset) {
                (Some(o), Some(m)) => m > *o,
                _ => false,
            };
            let ex = json!({"key": key, "value": v, "offset": off, "send_op": idx(*w), "max_read_offset": kd.max_read_offset});
            f.add(if later_read { "lost-write" } else { "unseen" }, ex);
        }
    }
    // What the final reads found at each such offset: an acknowledged value they did not find
    // was overwritten (lost), not merely contradicted by a stale read.
    let finals = final_values(t, &inconsistent);
    let mut inconsistent: Vec<(bool, u32, Value)> = inconsistent
        .into_iter()
        .map(|(k, offset, values, acked)| {
            let final_value = finals.get(&(k, offset)).copied();
            let overwritten = final_value.is_some_and(|fv| acked.iter().any(|a| *a != fv));
            let ex = json!({"key": &t.keys[k as usize], "offset": offset, "values": values,
                            "acked": acked, "final": final_value, "acked_overwritten": overwritten});
            (!overwritten, k, ex)
        })
        .collect();
    inconsistent.sort_by_key(|(kept, _, _)| *kept);
    let kept = inconsistent.len().min(MAX_EXAMPLES);
    observers(t, &mut inconsistent[..kept]);
    for (_, _, ex) in inconsistent {
        f.add("inconsistent-offsets", ex);
    }

    let mut last_poll: HashMap<(u32, u32), (i64, u32)> = HashMap::new();
    let mut last_send: HashMap<(u32, u32), (i64, u32)> = HashMap::new();
    for (i, tx) in t.txns.iter().enumerate() {
        let i = i as u32;
        let p = tx.process;
        if tx.kind == Kind::Reposition {
            last_poll.retain(|(q, _), _| *q != p);
            continue;
        }
        if tx.status != Status::Ok {
            continue;
        }
        let sends = t.sends(tx);
        let mut first_in_op: Vec<(u32, i64, i64)> = Vec::new();
        let mut prev_in_op: Vec<(u32, i64, i64)> = Vec::new();
        for &(key, v, off) in sends {
            let Some(o) = off else { continue };
            let kname = &t.keys[key as usize];
            match prev_in_op.iter_mut().find(|e| e.0 == key) {
                Some(e) => {
                    let (pv, po) = (e.1, e.2);
                    *e = (key, v, o);
                    if o <= po {
                        f.add("int-nonmonotonic-send", json!({"key": kname, "process": proc_of(i), "values": [pv, v], "offsets": [po, o], "op": tx.index}));
                    } else if let Some(skipped) = keys[key as usize].exists_between(po, o) {
                        f.add("int-send-skip", json!({"key": kname, "process": proc_of(i), "values": [pv, v], "offsets": [po, o], "skipped": skipped, "op": tx.index}));
                    }
                }
                None => {
                    prev_in_op.push((key, v, o));
                    first_in_op.push((key, v, o));
                }
            }
        }
        for (key, v, o) in first_in_op {
            if let Some((prev, pidx)) = last_send.get(&(p, key)) {
                if o <= *prev {
                    f.add("nonmonotonic-send", json!({"key": t.keys[key as usize], "process": proc_of(i), "value": v, "offset": o, "previous_offset": prev, "ops": [idx(*pidx), tx.index]}));
                }
            }
        }
        for (key, _, o) in prev_in_op {
            last_send.insert((p, key), (o, i));
        }
        for group in t.read_groups(tx) {
            let key = group[0].key;
            let kd = &keys[key as usize];
            let kname = &t.keys[key as usize];
            if let Some((prev, pidx)) = last_poll.get(&(p, key)) {
                let first = group[0].offset;
                if first <= *prev {
                    f.add("nonmonotonic-poll", json!({"key": kname, "process": proc_of(i), "previous_offset": prev, "offset": first, "ops": [idx(*pidx), tx.index]}));
                } else if let Some(skipped) = kd.exists_between(*prev, first) {
                    f.add("poll-skip", json!({"key": kname, "process": proc_of(i), "previous_offset": prev, "offset": first, "skipped": skipped, "ops": [idx(*pidx), tx.index]}));
                }
            }
            for w in group.windows(2) {
                let (a, b) = (w[0].offset, w[1].offset);
                if b <= a {
                    f.add(
                        "int-nonmonotonic-poll",
                        json!({"key": kname, "process": proc_of(i), "offsets": [a, b], "op": tx.index}),
                    );
                } else if let Some(skipped) = kd.exists_between(a, b) {
                    f.add("int-poll-skip", json!({"key": kname, "process": proc_of(i), "offsets": [a, b], "skipped": skipped, "op": tx.index}));
                }
            }
            // A transaction reading what it sent itself.
            if !sends.is_empty() {
                for r in group {
                    if sends.iter().any(|s| s.0 == key && s.1 == r.value) {
                        f.add("precommitted-read", json!({"key": kname, "process": proc_of(i), "value": r.value, "offset": r.offset, "op": tx.index}));
                    }
                }
            }
            let last = group[group.len() - 1].offset;
            last_poll.insert((p, key), (last, i));
        }
    }

    let graph = crate::cycles::DependencyGraph::build(t, &keys, options.ww_deps);
    graph.report(&mut f);
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
        options: *options,
        stats: json!({
            "ops": ops,
            "sends": {"ok": n_ok, "info": n_info, "fail": n_fail},
            "polls": n_polls,
            "reads": n_reads,
            "keys": t.keys.len(),
            "graph": graph.stats(),
            "commits": commits.stats(),
        }),
        warnings: warnings.to_vec(),
    }
}
