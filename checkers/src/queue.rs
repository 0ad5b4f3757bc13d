//! The queue checker, after Jepsen's Kafka analysis: from every send acknowledgement and every
//! poll it builds, per key, the version order (offset → values), then finds `lost-write`,
//! `unseen`, `duplicate`, `inconsistent-offsets`, `G1a` (aborted read), `poll-skip`,
//! `nonmonotonic-poll`, `int-poll-skip`, `int-nonmonotonic-poll` and `nonmonotonic-send`, each
//! with examples and an explanation. Which kinds invalidate a run depends on [`CheckOptions`]
//! and is stated in the result.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::history::{History, Op, OpType, Process};

/// Run settings that decide which anomalies invalidate the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Consumers subscribed (rebalances make skips and rewinds legitimate).
    pub subscribe: bool,
    /// The producer was idempotent (duplicates and send reordering are then bugs).
    pub idempotent: bool,
    /// The final phase read every partition from the start (unseen writes are then lost).
    pub final_phase: bool,
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
        _ => "",
    }
}

/// The kinds that invalidate a run with these options.
pub fn invalidating(options: &CheckOptions) -> Vec<String> {
    let mut v = vec!["lost-write", "inconsistent-offsets", "G1a"];
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
    v.into_iter().map(String::from).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendStatus {
    Ok,
    Info,
    Fail,
}

/// A send's status, acknowledged offset (if any) and op index.
type SendRecord = (SendStatus, Option<i64>, u64);

#[derive(Debug, Default)]
struct KeyData {
    /// value → its send
    sends: HashMap<i64, SendRecord>,
    /// offset → values seen there (acks and reads)
    offsets: BTreeMap<i64, BTreeSet<i64>>,
    /// value → offsets it was seen at
    value_offsets: HashMap<i64, BTreeSet<i64>>,
    /// values read, with the first op that read each
    read: HashMap<i64, u64>,
    max_read_offset: Option<i64>,
}

struct Findings(BTreeMap<String, Finding>);

impl Findings {
    fn add(&mut self, kind: &str, example: Value) {
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

/// A completed client op with the micro-ops it carries.
struct Completed<'a> {
    op: &'a Op,
    mops: &'a Value,
}

fn sends(mops: &Value) -> impl Iterator<Item = (String, i64, Option<i64>)> + '_ {
    mops.as_array().into_iter().flatten().filter_map(|m| {
        let a = m.as_array()?;
        if a.first()?.as_str()? != "send" {
            return None;
        }
        let key = a.get(1)?.as_str()?.to_string();
        match a.get(2)? {
            Value::Array(ov) => Some((key, ov.get(1)?.as_i64()?, ov.first()?.as_i64())),
            v => Some((key, v.as_i64()?, None)),
        }
    })
}

fn polls(mops: &Value) -> impl Iterator<Item = (String, Vec<(i64, i64)>)> + '_ {
    mops.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let a = m.as_array()?;
            if a.first()?.as_str()? != "poll" {
                return None;
            }
            a.get(1)?.as_object()
        })
        .flat_map(|obj| {
            obj.iter().map(|(k, pairs)| {
                let pairs = pairs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some((p.get(0)?.as_i64()?, p.get(1)?.as_i64()?)))
                    .collect();
                (k.clone(), pairs)
            })
        })
}

/// Checks a history.
pub fn check(history: &History, options: &CheckOptions) -> CheckResult {
    // Pair completions with invocations (per process, in order).
    let mut open: HashMap<&Process, &Op> = HashMap::new();
    let mut completed: Vec<Completed> = Vec::new();
    for op in &history.ops {
        if op.process == Process::nemesis() {
            continue;
        }
        match op.op_type {
            OpType::Invoke => {
                open.insert(&op.process, op);
            }
            _ => {
                let inv = open.remove(&op.process);
                let mops = if op.value.is_null() {
                    inv.map_or(&op.value, |i| &i.value)
                } else {
                    &op.value
                };
                completed.push(Completed { op, mops });
            }
        }
    }
    // Still-open invocations are indeterminate.
    let mut dangling: Vec<&Op> = open.into_values().collect();
    dangling.sort_by_key(|o| o.index);

    let mut keys: BTreeMap<String, KeyData> = BTreeMap::new();
    let (mut n_ok, mut n_info, mut n_fail, mut n_polls, mut n_reads) = (0, 0, 0, 0, 0);
    let record_send = |keys: &mut BTreeMap<String, KeyData>,
                       key: String,
                       v: i64,
                       off: Option<i64>,
                       st: SendStatus,
                       idx: u64| {
        let kd = keys.entry(key).or_default();
        let e = kd.sends.entry(v).or_insert((st, off, idx));
        if st == SendStatus::Ok {
            *e = (st, off.or(e.1), idx);
        }
        if let (Some(o), SendStatus::Ok) = (off, st) {
            kd.offsets.entry(o).or_default().insert(v);
            kd.value_offsets.entry(v).or_default().insert(o);
        }
    };
    for c in &completed {
        let st = match c.op.op_type {
            OpType::Ok => SendStatus::Ok,
            OpType::Info => SendStatus::Info,
            _ => SendStatus::Fail,
        };
        for (key, v, off) in sends(c.mops) {
            match st {
                SendStatus::Ok => n_ok += 1,
                SendStatus::Info => n_info += 1,
                SendStatus::Fail => n_fail += 1,
            }
            record_send(&mut keys, key, v, off, st, c.op.index);
        }
    }
    for inv in &dangling {
        for (key, v, _) in sends(&inv.value) {
            n_info += 1;
            record_send(&mut keys, key, v, None, SendStatus::Info, inv.index);
        }
    }
    for c in completed.iter().filter(|c| c.op.op_type == OpType::Ok) {
        for (key, pairs) in polls(c.mops) {
            n_polls += 1;
            let kd = keys.entry(key).or_default();
            for (o, v) in pairs {
                n_reads += 1;
                kd.offsets.entry(o).or_default().insert(v);
                kd.value_offsets.entry(v).or_default().insert(o);
                kd.read.entry(v).or_insert(c.op.index);
                kd.max_read_offset = Some(kd.max_read_offset.map_or(o, |m| m.max(o)));
            }
        }
    }

    let mut f = Findings(BTreeMap::new());
    for (key, kd) in &keys {
        for (o, vs) in &kd.offsets {
            if vs.len() > 1 {
                f.add(
                    "inconsistent-offsets",
                    json!({"key": key, "offset": o, "values": vs}),
                );
            }
        }
        for (v, os) in &kd.value_offsets {
            if os.len() > 1 {
                f.add("duplicate", json!({"key": key, "value": v, "offsets": os}));
            }
        }
        for (v, first_read) in &kd.read {
            if let Some((SendStatus::Fail, _, idx)) = kd.sends.get(v) {
                f.add(
                    "G1a",
                    json!({"key": key, "value": v, "failed_send_op": idx, "read_by_op": first_read}),
                );
            }
        }
        let mut acked: Vec<(&i64, &SendRecord)> = kd
            .sends
            .iter()
            .filter(|(v, (st, _, _))| *st == SendStatus::Ok && !kd.read.contains_key(v))
            .collect();
        acked.sort_by_key(|(v, _)| **v);
        for (v, (_, off, idx)) in acked {
            let later_read = match (off, kd.max_read_offset) {
                (Some(o), Some(m)) => m > *o,
                _ => false,
            };
            let ex = json!({"key": key, "value": v, "offset": off, "send_op": idx, "max_read_offset": kd.max_read_offset});
            f.add(if later_read { "lost-write" } else { "unseen" }, ex);
        }
    }

    // Per-process order checks.
    let known: BTreeMap<&str, Vec<i64>> = keys
        .iter()
        .map(|(k, kd)| (k.as_str(), kd.offsets.keys().copied().collect()))
        .collect();
    let exists_between = |key: &str, lo: i64, hi: i64| -> Option<i64> {
        let offs = known.get(key)?;
        let i = offs.partition_point(|o| *o <= lo);
        offs.get(i).copied().filter(|o| *o < hi)
    };
    let mut last_poll: HashMap<(&Process, String), (i64, u64)> = HashMap::new();
    let mut last_send: HashMap<(&Process, String), (i64, u64)> = HashMap::new();
    for c in &completed {
        let p = &c.op.process;
        if matches!(c.op.f.as_str(), "assign" | "subscribe" | "crash") {
            last_poll.retain(|(q, _), _| *q != p);
            continue;
        }
        if c.op.op_type != OpType::Ok {
            continue;
        }
        for (key, v, off) in sends(c.mops) {
            if let Some(o) = off {
                if let Some((prev, pidx)) = last_send.insert((p, key.clone()), (o, c.op.index)) {
                    if o <= prev {
                        f.add("nonmonotonic-send", json!({"key": key, "process": p, "value": v, "offset": o, "previous_offset": prev, "ops": [pidx, c.op.index]}));
                    }
                }
            }
        }
        for (key, pairs) in polls(c.mops) {
            if pairs.is_empty() {
                continue;
            }
            if let Some((prev, pidx)) = last_poll.get(&(p, key.clone())) {
                let first = pairs[0].0;
                if first <= *prev {
                    f.add("nonmonotonic-poll", json!({"key": key, "process": p, "previous_offset": prev, "offset": first, "ops": [pidx, c.op.index]}));
                } else if let Some(skipped) = exists_between(&key, *prev, first) {
                    f.add("poll-skip", json!({"key": key, "process": p, "previous_offset": prev, "offset": first, "skipped": skipped, "ops": [pidx, c.op.index]}));
                }
            }
            for w in pairs.windows(2) {
                let (a, b) = (w[0].0, w[1].0);
                if b <= a {
                    f.add(
                        "int-nonmonotonic-poll",
                        json!({"key": key, "process": p, "offsets": [a, b], "op": c.op.index}),
                    );
                } else if let Some(skipped) = exists_between(&key, a, b) {
                    f.add("int-poll-skip", json!({"key": key, "process": p, "offsets": [a, b], "skipped": skipped, "op": c.op.index}));
                }
            }
            let last = pairs[pairs.len() - 1].0;
            last_poll.insert((p, key), (last, c.op.index));
        }
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
            "ops": history.ops.len(),
            "sends": {"ok": n_ok, "info": n_info, "fail": n_fail},
            "polls": n_polls,
            "reads": n_reads,
            "keys": keys.len(),
        }),
        warnings: history.warnings.clone(),
    }
}
