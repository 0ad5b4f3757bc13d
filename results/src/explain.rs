//! Findings explained in words by the events around their evidence: for an example of
//! `results.json`, the acknowledgement of the value it names (when, at which offset, by which
//! leader at which epoch, from `metrics.jsonl`), the faults around it (with the nodes they hit
//! and the unfsynced bytes a kill lost), the leader elections that followed (epoch, log end)
//! and what the final reads found at that offset. Also the run's bug modes and Kafka release
//! rules, named beside the verdict, and the nodes each fault band names.

use std::collections::BTreeSet;

use checkers::stats::FaultInterval;
use checkers::{History, Op, OpType, Process};
use serde_json::Value;

use crate::timeline::{leader_at, LeaderChange};

/// Faults named in one explanation at most.
pub const MAX_FAULTS: usize = 3;
/// Leader changes named in one explanation at most.
pub const MAX_CHANGES: usize = 2;

/// What an explanation draws on: the history excerpt, the fault intervals and the leader
/// changes the brokers reported.
pub struct Events<'a> {
    /// The history (or the excerpt of it the report keeps).
    pub history: &'a History,
    /// Fault intervals.
    pub faults: &'a [FaultInterval],
    /// Leader changes from `metrics.jsonl` (empty when none was scraped).
    pub changes: &'a [LeaderChange],
    /// Partitions of the topic, for an example that does not name its partition (key `k<i>`
    /// lives in partition `i % partitions`).
    pub partitions: Option<u32>,
}

fn secs(ns: u64) -> String {
    format!("{:.1} s", ns as f64 / 1e9)
}

fn nemesis_op(history: &History, index: u64) -> Option<&Op> {
    history
        .ops
        .iter()
        .find(|o| o.index == index && o.process.is_nemesis())
}

/// The nodes a nemesis op's value names: `nodes`/`node`, a partition's isolated nodes, or its
/// components (`n1 n2 | n3`).
pub fn nodes_named(value: &Value) -> String {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let nodes = strings(&value["nodes"]);
    if !nodes.is_empty() {
        return nodes.join(" ");
    }
    if let Some(n) = value["node"].as_str() {
        return n.to_string();
    }
    let isolated = strings(&value["isolated"]);
    if !isolated.is_empty() {
        return format!("isolating {}", isolated.join(" "));
    }
    if let Some(c) = value["components"].as_object() {
        let groups: BTreeSet<Vec<String>> = c.values().map(strings).collect();
        if groups.len() > 1 {
            let sides = groups
                .iter()
                .map(|g| g.join(" "))
                .collect::<Vec<_>>()
                .join(" | ");
            // Overlapping sides (a bridge, a ring): each node's view; name the topology.
            return match value["topology"].as_str() {
                Some(t) => format!("{t}: {sides}"),
                None => sides,
            };
        }
    }
    String::new()
}

/// The nodes a fault interval hit, as its band labels them.
pub fn fault_nodes(history: &History, f: &FaultInterval) -> String {
    f.node.clone().unwrap_or_else(|| {
        nemesis_op(history, f.start_index)
            .map(|o| nodes_named(&o.value))
            .unwrap_or_default()
    })
}

/// A fault in words: `n2 killed at 12.3 s with 96 kB of unfsynced data lost`.
fn fault_words(history: &History, f: &FaultInterval) -> String {
    let nodes = fault_nodes(history, f);
    let at = secs(f.start_ns);
    let mut s = match f.kind.as_str() {
        "kill" => format!("{nodes} killed at {at}"),
        "stop" => format!("{nodes} stopped at {at}"),
        "pause" => format!("{nodes} paused at {at}"),
        "partition" if nodes.starts_with("isolating") => {
            format!("network partition {nodes} at {at}")
        }
        "partition" if !nodes.is_empty() => format!("network partitioned ({nodes}) at {at}"),
        "clock" => format!("{nodes}'s clock moved at {at}"),
        "disk" => format!("disk faults on {nodes} at {at}"),
        other if nodes.is_empty() => format!("{other} at {at}"),
        other => format!("{other} on {nodes} at {at}"),
    };
    if f.kind == "kill" {
        if let Some(lost) = nemesis_op(history, f.start_index)
            .and_then(|o| o.value["lost-unfsynced"].as_object().cloned())
        {
            let bytes: u64 = lost.values().filter_map(|v| v["bytes"].as_u64()).sum();
            s.push_str(&format!(
                " with {:.0} kB of unfsynced data lost",
                bytes as f64 / 1000.0
            ));
        }
    }
    if let Some(e) = f.end_ns {
        s.push_str(&format!(" (until {})", secs(e)));
    }
    s
}

/// The (offset, value) pairs of `key` in an op's micro-ops (sends and polls).
fn pairs_of(op: &Op, key: &str, sends: bool) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for m in op.value.as_array().into_iter().flatten() {
        let Some(a) = m.as_array() else { continue };
        match (a.first().and_then(Value::as_str), sends) {
            (Some("send"), true) if a.get(1).and_then(Value::as_str) == Some(key) => {
                if let Some(ov) = a.get(2).and_then(Value::as_array) {
                    if let (Some(o), Some(v)) = (
                        ov.first().and_then(Value::as_i64),
                        ov.get(1).and_then(Value::as_i64),
                    ) {
                        out.push((o, v));
                    }
                }
            }
            (Some("poll"), false) => {
                for p in a
                    .get(1)
                    .and_then(|x| x.get(key))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let (Some(o), Some(v)) = (
                        p.get(0).and_then(Value::as_i64),
                        p.get(1).and_then(Value::as_i64),
                    ) {
                        out.push((o, v));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The value an example names: `value`, else the first acknowledged or seen value.
fn example_value(ex: &Value) -> Option<i64> {
    ex["value"]
        .as_i64()
        .or_else(|| ex["acked"].get(0).and_then(Value::as_i64))
        .or_else(|| ex["values"].get(0).and_then(Value::as_i64))
}

/// The offset an example names: `offset`, else the first of `offsets`.
fn example_offset(ex: &Value) -> Option<i64> {
    ex["offset"]
        .as_i64()
        .or_else(|| ex["offsets"].get(0).and_then(Value::as_i64))
}

/// One example in words: by its key and offset when it names them, else by the node it names
/// (a broker that could not be brought back: the faults that hit it), else by the ops it
/// names (the faults and elections around them); None when it names none of these.
pub fn explain(ex: &Value, ev: &Events<'_>) -> Option<String> {
    let Some(key) = ex["key"].as_str() else {
        return explain_without_key(ex, ev);
    };
    let partition = ex["partition"].as_i64().map(|p| p as i32).or_else(|| {
        let n = ev.partitions.filter(|n| *n > 0)?;
        let i: u64 = key.strip_prefix('k')?.parse().ok()?;
        Some((i % u64::from(n)) as i32)
    });
    let value = example_value(ex);
    let mut offset = example_offset(ex);
    // The acknowledgement: the example's send op, else an ok send of this value in the excerpt.
    let send = ex["send_op"]
        .as_u64()
        .and_then(|i| ev.history.ops.iter().find(|o| o.index == i))
        .filter(|o| o.op_type == OpType::Ok)
        .or_else(|| {
            ev.history.ops.iter().find(|o| {
                o.op_type == OpType::Ok
                    && pairs_of(o, key, true)
                        .iter()
                        .any(|(_, v)| Some(*v) == value)
            })
        });
    if offset.is_none() {
        offset = send.and_then(|o| {
            pairs_of(o, key, true)
                .into_iter()
                .find(|(_, v)| Some(*v) == value)
                .map(|(o, _)| o)
        });
    }
    let mut parts = Vec::new();
    let what = match (value, offset) {
        (Some(v), Some(o)) => format!("value {v} of {key} at offset {o}"),
        (Some(v), None) => format!("value {v} of {key}"),
        (None, Some(o)) => format!("offset {o} of {key}"),
        (None, None) => key.to_string(),
    };
    let partition_words = partition.map_or_else(String::new, |p| format!(" (partition {p})"));
    let t_ack = send.map(|o| o.time_ns);
    // Without an acknowledgement, the events around the first op the example names.
    let anchor = t_ack.or_else(|| {
        let ops = checkers::queue::example_ops(ex);
        ev.history
            .ops
            .iter()
            .find(|o| ops.contains(&o.index))
            .map(|o| o.time_ns)
    });
    match send {
        Some(s) => {
            let by = partition
                .and_then(|p| leader_at(ev.changes, p, s.time_ns))
                .map_or_else(String::new, |c| {
                    format!(" by {} (leader, epoch {})", c.leader, c.epoch)
                });
            parts.push(format!(
                "{what}{partition_words} acknowledged{by} at {}",
                secs(s.time_ns)
            ));
        }
        None => parts.push(format!("{what}{partition_words}")),
    }
    // Leader changes after the acknowledgement, and the faults up to the last one named.
    let after: Vec<&LeaderChange> = match (partition, anchor) {
        (Some(p), Some(t)) => ev
            .changes
            .iter()
            .filter(|c| c.partition == p && c.time_ns > t)
            .take(MAX_CHANGES)
            .collect(),
        _ => Vec::new(),
    };
    let from = anchor.map_or(0, |t| t.saturating_sub(2_000_000_000));
    let until = after.last().map_or_else(
        || anchor.map_or(u64::MAX, |t| t + 15_000_000_000),
        |c| c.time_ns,
    );
    let faults: Vec<&FaultInterval> = ev
        .faults
        .iter()
        .filter(|f| {
            let active = f.end_ns.is_none_or(|e| e >= from);
            f.start_ns <= until && active
        })
        .take(MAX_FAULTS)
        .collect();
    // Interleave faults and elections in time order.
    let mut events: Vec<(u64, String)> = faults
        .iter()
        .map(|f| (f.start_ns, fault_words(ev.history, f)))
        .collect();
    for c in &after {
        // The log end it was elected with, where it reported its epoch's start; else its log
        // end when first seen leading (it may have appended in its epoch by then).
        let log_end = c.epoch_start.unwrap_or(c.leo);
        let mut s = format!(
            "{} elected, epoch {}, at {} with log end {}",
            c.leader,
            c.epoch,
            secs(c.time_ns),
            log_end
        );
        if let Some(o) = offset {
            if log_end <= o {
                s.push_str(&format!(" (offset {o} was not in its log)"));
            }
        }
        events.push((c.time_ns, s));
    }
    events.sort_by_key(|e| e.0);
    parts.extend(events.into_iter().map(|e| e.1));
    // What the final reads found.
    let final_process = Process::Client(checkers::history::FINAL_PROCESS);
    let had_final_reads = ev.history.ops.iter().any(|o| o.process == final_process);
    let finals: Vec<(i64, i64)> = ev
        .history
        .ops
        .iter()
        .filter(|o| o.op_type == OpType::Ok && o.process == final_process)
        .flat_map(|o| pairs_of(o, key, false))
        .collect();
    if let Some(o) = offset.filter(|_| had_final_reads) {
        let at: BTreeSet<i64> = finals
            .iter()
            .filter(|(fo, _)| *fo == o)
            .map(|(_, v)| *v)
            .collect();
        if let Some(w) = at.iter().next() {
            if Some(*w) == value {
                parts.push(format!(
                    "the final reads have offset {o} = value {w}, as acknowledged"
                ));
            } else {
                parts.push(format!("the final reads have offset {o} = value {w}"));
            }
        } else if let (Some(lo), Some(hi)) = (
            finals.iter().map(|p| p.0).min(),
            finals.iter().map(|p| p.0).max(),
        ) {
            parts.push(format!(
                "the final reads never return offset {o} (they read offsets {lo}–{hi} of {key})"
            ));
        } else {
            parts.push(format!("the final reads returned nothing of {key}"));
        }
    }
    Some(parts.join("; "))
}

/// An example without a key: the faults that hit the node it names, or the faults and leader
/// changes within a few seconds of the ops it names.
fn explain_without_key(ex: &Value, ev: &Events<'_>) -> Option<String> {
    if let Some(node) = ex["node"].as_str() {
        let hits: Vec<String> = ev
            .faults
            .iter()
            .filter(|f| {
                fault_nodes(ev.history, f)
                    .split([' ', '|'])
                    .any(|n| n == node)
            })
            .take(2 * MAX_FAULTS)
            .map(|f| fault_words(ev.history, f))
            .collect();
        return Some(if hits.is_empty() {
            format!("no fault named {node} before it failed")
        } else {
            format!("faults on {node}: {}", hits.join("; "))
        });
    }
    let ops = checkers::queue::example_ops(ex);
    let first = ev.history.ops.iter().find(|o| ops.contains(&o.index))?;
    let t = first.time_ns;
    let (from, until) = (t.saturating_sub(3_000_000_000), t + 3_000_000_000);
    let mut events: Vec<(u64, String)> = ev
        .faults
        .iter()
        .filter(|f| f.start_ns <= until && f.end_ns.is_none_or(|e| e >= from))
        .take(MAX_FAULTS)
        .map(|f| (f.start_ns, fault_words(ev.history, f)))
        .collect();
    events.extend(
        ev.changes
            .iter()
            .filter(|c| c.time_ns >= from && c.time_ns <= until)
            .take(2 * MAX_CHANGES)
            .map(|c| {
                (
                    c.time_ns,
                    format!(
                        "{} elected for partition {}, epoch {}, at {}",
                        c.leader,
                        c.partition,
                        c.epoch,
                        secs(c.time_ns)
                    ),
                )
            }),
    );
    events.sort_by_key(|e| e.0);
    let mut parts = vec![format!("op {} at {}", first.index, secs(t))];
    if events.is_empty() {
        parts.push("no fault or leader change within 3 s of it".into());
    }
    parts.extend(events.into_iter().map(|e| e.1));
    Some(parts.join("; "))
}

/// The run's bug modes and Kafka release rules, for beside the verdict: e.g. `bug modes:
/// ack-before-isr; Kafka release rules: 3.6`.
pub fn semantics(test: &Value) -> String {
    let bugs: Vec<&str> = test["spec"]["bugs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = vec![if bugs.is_empty() {
        "bug modes: none".to_string()
    } else {
        format!("bug modes: {}", bugs.join(", "))
    }];
    match test["kafka_release"]
        .as_str()
        .or_else(|| test["spec"]["broker"]["kafka.release"].as_str())
    {
        Some(r) => out.push(format!("Kafka release rules: {r}")),
        None if test["spec"]["system"].as_str() == Some("command") => {
            out.push("Kafka release: whatever the command system runs".into())
        }
        None => {}
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(index: u64, ms: u64, process: Process, t: OpType, f: &str, value: Value) -> Op {
        Op {
            index,
            time_ns: ms * 1_000_000,
            process,
            op_type: t,
            f: f.into(),
            value,
        }
    }

    #[test]
    fn a_lost_write_is_told_with_its_leader_fault_election_and_final_read() {
        let final_p = Process::Client(checkers::history::FINAL_PROCESS);
        let history = History {
            ops: vec![
                op(
                    0,
                    12_000,
                    Process::Client(1),
                    OpType::Invoke,
                    "send",
                    json!([["send", "k2", 812]]),
                ),
                op(
                    1,
                    12_100,
                    Process::Client(1),
                    OpType::Ok,
                    "send",
                    json!([["send", "k2", [40, 812]]]),
                ),
                op(
                    2,
                    12_300,
                    Process::nemesis(),
                    OpType::Info,
                    "kill",
                    json!({"nodes": ["n2"], "lost-unfsynced": {"n2": {"files": 1, "bytes": 96_000}}}),
                ),
                op(
                    3,
                    30_000,
                    final_p.clone(),
                    OpType::Invoke,
                    "poll",
                    json!([["poll"]]),
                ),
                op(
                    4,
                    30_100,
                    final_p,
                    OpType::Ok,
                    "poll",
                    json!([["poll", {"k2": [[39, 800], [40, 901]]}]]),
                ),
            ],
            warnings: vec![],
        };
        let faults = vec![FaultInterval {
            kind: "kill".into(),
            node: None,
            start_f: "kill".into(),
            start_ns: 12_300_000_000,
            end_ns: Some(20_000_000_000),
            start_index: 2,
            end_index: None,
        }];
        let change = |t: u64, leader: &str, epoch: i32, leo: i64| LeaderChange {
            time_ns: t * 100_000_000,
            topic: "queue".into(),
            partition: 0,
            leader: leader.into(),
            broker_id: 0,
            epoch,
            leo,
            epoch_start: None,
            hw: leo,
            isr: 1,
        };
        let changes = vec![change(50, "n2", 3, 10), change(150, "n4", 4, 38)];
        let ex = json!({"key": "k2", "partition": 0, "value": 812, "offset": 40, "send_op": 1});
        let text = explain(
            &ex,
            &Events {
                history: &history,
                faults: &faults,
                changes: &changes,
                partitions: None,
            },
        )
        .expect("explained");
        assert_eq!(
            text,
            "value 812 of k2 at offset 40 (partition 0) acknowledged by n2 (leader, epoch 3) at \
             12.1 s; n2 killed at 12.3 s with 96 kB of unfsynced data lost (until 20.0 s); n4 \
             elected, epoch 4, at 15.0 s with log end 38 (offset 40 was not in its log); the \
             final reads have offset 40 = value 901"
        );
        // First seen leading after it had appended past the offset: the log end it was
        // elected with (its epoch's start) is what the explanation gives.
        let told = |changes: &[LeaderChange]| {
            explain(
                &ex,
                &Events {
                    history: &history,
                    faults: &faults,
                    changes,
                    partitions: None,
                },
            )
            .expect("explained")
        };
        let mut later = changes.clone();
        later[1].leo = 43;
        later[1].epoch_start = Some(38);
        let text = told(&later);
        assert!(
            text.contains(
                "n4 elected, epoch 4, at 15.0 s with log end 38 (offset 40 was not in its log)"
            ),
            "{text}"
        );
        // Without the epoch's start (runs recorded before it was scraped), the log end seen.
        later[1].epoch_start = None;
        let text = told(&later);
        assert!(text.contains("with log end 43; the final reads"), "{text}");
    }

    #[test]
    fn an_unrecoverable_broker_is_told_by_the_faults_on_it() {
        let history = History {
            ops: vec![op(
                0,
                1_000,
                Process::nemesis(),
                OpType::Info,
                "kill",
                json!({"nodes": ["n3"]}),
            )],
            warnings: vec![],
        };
        let faults = vec![FaultInterval {
            kind: "kill".into(),
            node: None,
            start_f: "kill".into(),
            start_ns: 1_000_000_000,
            end_ns: None,
            start_index: 0,
            end_index: None,
        }];
        let ev = Events {
            history: &history,
            faults: &faults,
            changes: &[],
            partitions: None,
        };
        assert_eq!(
            explain(&json!({"node": "n3", "op": 0}), &ev).as_deref(),
            Some("faults on n3: n3 killed at 1.0 s")
        );
        assert_eq!(
            explain(&json!({"ops": [0]}), &ev).as_deref(),
            Some("op 0 at 1.0 s; n3 killed at 1.0 s")
        );
    }

    #[test]
    fn partitions_name_their_sides_and_semantics_name_bugs_and_release() {
        assert_eq!(
            nodes_named(&json!({"isolated": ["n1"], "components": {}})),
            "isolating n1"
        );
        assert_eq!(
            nodes_named(&json!({"isolated": [], "components": {
                "n1": ["n1", "n2"], "n2": ["n1", "n2"], "n3": ["n3"]}})),
            "n1 n2 | n3"
        );
        assert_eq!(
            semantics(&json!({"spec": {"bugs": ["ack-before-isr"]}, "kafka_release": "3.6"})),
            "bug modes: ack-before-isr; Kafka release rules: 3.6"
        );
    }
}
