//! What the checks produce: one [`Finding`] per anomaly kind (count, examples, explanation),
//! the explanation of every kind, and how an example names the ops that show it. The queue
//! checks ([`crate::queue`]), the cycle search ([`crate::cycles`]) and the commit checks
//! ([`crate::commits`]) all add to [`Findings`]; none of them depends on another for it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// What an anomaly kind means (empty for kinds this checker does not know).
pub fn explanation(kind: &str) -> &'static str {
    match kind {
        "lost-write" => "A committed send was never read by an ok poll, although a record its partition's log holds after it was: the log lost a committed write (bound: the highest first index of any value an ok poll read, as in Jepsen).",
        "unseen" => "A send acknowledged ok was never read by an ok poll (lost writes included, as in Jepsen's count).",
        "duplicate" => "One record (key, value) appears at several offsets of its partition: it was written more than once.",
        "inconsistent-offsets" => "One offset of a partition holds several different records, as seen by different observers.",
        "no-writer-of-value" => "A poll read a record (key, value) that no operation of the history ever sent: the log returned data nobody wrote (Jepsen stops with :no-writer-of-value).",
        "G1a" => "An ok poll read a value whose send definitely failed (aborted read).",
        "poll-skip" => "A process's successive polls of a partition skipped records that exist, with no reassignment away from it between them.",
        "nonmonotonic-poll" => "A process's successive polls of a partition went back (or repeated) records, with no reassignment away from it between them.",
        "int-poll-skip" => "Within one op, consecutive records of a partition skipped records that exist (partitions rebalanced during the op excepted).",
        "int-nonmonotonic-poll" => "Within one op, records of a partition went backwards or repeated (partitions rebalanced during the op excepted).",
        "nonmonotonic-send" => "A process's later op sent to a partition at or before the position of its earlier op's last send there.",
        "int-send-skip" => "Within one op, another write landed between two sends to one partition (expected: writes are never isolated).",
        "int-nonmonotonic-send" => "Within one op, a later send to a partition landed at or before an earlier one.",
        "precommitted-read" => "An op polled a value it sent itself, before it committed.",
        "G0" => "Write cycle: ops whose writes are ordered one way on one key and the other way on another (ww edges only).",
        "G1c" => "Circular information flow: a cycle of write-write and write-read dependencies, each op seeing or following the other's effects.",
        "G0-process" => "A write cycle that also uses the order of ops within one process.",
        "G1c-process" => "A cycle of ww/wr dependencies that also uses the order of ops within one process.",
        "G0-realtime" => "A write cycle that also uses realtime order: an op completed before another was invoked, yet its write is ordered after the other's.",
        "G1c-realtime" => "A cycle of ww/wr dependencies that also uses realtime order (an op completed before another began).",
        "lost-commit" => "A read of the group's committed offsets returned, for a partition, less than (or nothing after) an offset commit acknowledged before the read began: an acknowledged commit was lost, or the read was answered by a deposed coordinator that had not yet learned it no longer leads (Kafka answers committed-offset reads from the coordinator's cache).",
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

/// Findings by kind, as the checks add them: counts, up to [`MAX_EXAMPLES`] examples each.
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

    /// Whether another example of `kind` would be kept.
    pub(crate) fn wants_example(&self, kind: &str) -> bool {
        self.0
            .get(kind)
            .is_none_or(|f| f.examples.len() < MAX_EXAMPLES)
    }

    /// Adds findings made separately after these (as if added here in turn: examples kept in
    /// order up to [`MAX_EXAMPLES`], counts summed).
    pub(crate) fn merge(&mut self, other: Findings) {
        for (kind, g) in other.0 {
            match self.0.get_mut(&kind) {
                Some(f) => {
                    f.count += g.count;
                    let room = MAX_EXAMPLES.saturating_sub(f.examples.len());
                    f.examples.extend(g.examples.into_iter().take(room));
                }
                None => {
                    self.0.insert(kind, g);
                }
            }
        }
    }

    /// Counts a finding past the kept examples, without building its example.
    pub(crate) fn count(&mut self, kind: &str) {
        if let Some(f) = self.0.get_mut(kind) {
            f.count += 1;
        }
    }
}
