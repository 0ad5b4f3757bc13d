//! Committed offsets of the run's consumer group: the `commit` ops (a subscribed consumer
//! committing its positions, value `{"<partition>": offset}`) and `committed` reads (an
//! OffsetFetch of the group's offsets for the workload topic, same shape, partitions without a
//! committed offset left out), and the anomaly they can prove, `lost-commit`.
//!
//! `lost-commit`: a `committed` read that completed ok returned, for partition p, an offset
//! lower than a commit of p that was acknowledged (ok) before the read was invoked (realtime
//! order: the commit's completion precedes the read's invocation in the history), or no offset
//! at all for p. In this workload a member's position only grows, a partition moved by a
//! rebalance starts from the committed offset, and commits of stale generations are refused,
//! so an acknowledged commit is never overwritten by a lower one that started after it. The
//! one legitimate way back is a commit of the lower offset that may itself have taken effect
//! after the acknowledged one (invoked before the read completed, and not completed before the
//! acknowledged commit was invoked, or of unknown outcome): a member whose commit was in flight
//! across a rebalance. Such a read is not flagged.
//!
//! Only `commit` and `committed` ops are looked at, so a history without them (assign-mode
//! consumers, older histories) has nothing to flag. Time is n log n: per partition a Fenwick
//! tree over the acknowledged offsets, reads taken in invocation order.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::history::{OpType, Process};

/// The anomaly kind this module finds.
pub const LOST_COMMIT: &str = "lost-commit";

/// The `f` of a commit op.
pub const COMMIT: &str = "commit";

/// The `f` of a committed-offsets read.
pub const COMMITTED: &str = "committed";

/// Committed offsets by partition, as ops carry them.
pub type Offsets = BTreeMap<u32, i64>;

/// Parses an op value `{"<partition>": offset, ...}`; anything else is empty.
pub fn parse_offsets(value: &Value) -> Offsets {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_i64()?)))
        .collect()
}

/// The history value of committed offsets.
pub fn offsets_value(offsets: &Offsets) -> Value {
    Value::Object(
        offsets
            .iter()
            .map(|(p, o)| (p.to_string(), json!(o)))
            .collect(),
    )
}

#[derive(Debug, Clone)]
struct Commit {
    invoke: u64,
    complete: u64,
    status: OpType,
    offsets: Offsets,
}

#[derive(Debug, Clone)]
struct Read {
    invoke: u64,
    complete: u64,
    offsets: Offsets,
}

/// Collects the commit and committed ops of a history, fed op by op in history order.
#[derive(Debug, Default)]
pub struct Commits {
    /// Open ops by process: (f is a commit, invocation index, invoked offsets).
    open: HashMap<Process, (bool, u64, Offsets)>,
    commits: Vec<Commit>,
    reads: Vec<Read>,
    failed_reads: usize,
}

impl Commits {
    /// No ops yet.
    pub fn new() -> Commits {
        Commits::default()
    }

    /// Whether `f` is one of the ops this module reads (others need not be fed).
    pub fn wants(f: &str) -> bool {
        f == COMMIT || f == COMMITTED
    }

    /// Feeds one history op (others than `commit` and `committed` are ignored).
    pub fn op(&mut self, index: u64, process: &Process, op_type: OpType, f: &str, value: &Value) {
        if !Self::wants(f) {
            return;
        }
        let is_commit = f == COMMIT;
        if op_type == OpType::Invoke {
            self.open
                .insert(process.clone(), (is_commit, index, parse_offsets(value)));
            return;
        }
        let Some((was_commit, invoke, invoked)) = self.open.remove(process) else {
            return;
        };
        if was_commit != is_commit {
            return;
        }
        let completed = parse_offsets(value);
        if is_commit {
            // The completion repeats what was committed; the invocation names it otherwise.
            let offsets = if completed.is_empty() {
                invoked
            } else {
                completed
            };
            self.commits.push(Commit {
                invoke,
                complete: index,
                status: op_type,
                offsets,
            });
        } else if op_type == OpType::Ok {
            self.reads.push(Read {
                invoke,
                complete: index,
                offsets: completed,
            });
        } else {
            self.failed_reads += 1;
        }
    }

    /// [`Commits::op`] with the value as raw JSON text (parsed only for the ops it wants).
    pub fn op_raw(
        &mut self,
        index: u64,
        process: &Process,
        op_type: OpType,
        f: &str,
        value: Option<&str>,
    ) {
        if !Self::wants(f) {
            return;
        }
        let v = value
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        self.op(index, process, op_type, f, &v);
    }

    /// Counts for `results.json`.
    pub fn stats(&self) -> Value {
        let n = |t: OpType| self.commits.iter().filter(|c| c.status == t).count();
        json!({
            "ok": n(OpType::Ok),
            "fail": n(OpType::Fail),
            "info": n(OpType::Info),
            "reads": self.reads.len(),
            "failed_reads": self.failed_reads,
        })
    }

    /// The `lost-commit` examples, in read order: `partition`, `committed_offset` (the
    /// acknowledged commit), `read_offset` (`null`: none), `commit_op` and `read_op` (the
    /// completions' history indices).
    pub fn lost_commits(&self) -> Vec<Value> {
        // Per partition: acknowledged commits (completion, invocation, offset, op index).
        let mut acked: BTreeMap<u32, Vec<(u64, u64, i64)>> = BTreeMap::new();
        // Per (partition, offset): commits that may have taken effect (ok or info), as
        // (invocation, completion; u64::MAX when unknown), sorted by invocation, with the
        // running maximum of completions.
        let mut by_value: HashMap<(u32, i64), Vec<(u64, u64)>> = HashMap::new();
        for c in &self.commits {
            for (&p, &o) in &c.offsets {
                match c.status {
                    OpType::Ok => {
                        acked.entry(p).or_default().push((c.complete, c.invoke, o));
                        by_value
                            .entry((p, o))
                            .or_default()
                            .push((c.invoke, c.complete));
                    }
                    OpType::Info => {
                        by_value
                            .entry((p, o))
                            .or_default()
                            .push((c.invoke, u64::MAX));
                    }
                    _ => {}
                }
            }
        }
        for v in by_value.values_mut() {
            v.sort_unstable();
            let mut m = 0;
            for e in v.iter_mut() {
                m = m.max(e.1);
                e.1 = m;
            }
        }
        // The latest completion of a commit of (p, v) invoked before `before`.
        let excuse = |p: u32, v: i64, before: u64| -> Option<u64> {
            let list = by_value.get(&(p, v))?;
            let n = list.partition_point(|e| e.0 < before);
            (n > 0).then(|| list[n - 1].1)
        };
        struct Part {
            commits: Vec<(u64, u64, i64)>,
            offsets: Vec<i64>,
            tree: MaxTree,
            next: usize,
        }
        let mut parts: BTreeMap<u32, Part> = acked
            .into_iter()
            .map(|(p, mut commits)| {
                commits.sort_unstable();
                let mut offsets: Vec<i64> = commits.iter().map(|c| c.2).collect();
                offsets.sort_unstable();
                offsets.dedup();
                let tree = MaxTree::new(offsets.len());
                (
                    p,
                    Part {
                        commits,
                        offsets,
                        tree,
                        next: 0,
                    },
                )
            })
            .collect();
        let mut reads: Vec<&Read> = self.reads.iter().collect();
        reads.sort_by_key(|r| r.invoke);
        let mut out = Vec::new();
        for r in reads {
            for (&p, part) in parts.iter_mut() {
                // Acknowledged commits completed before this read was invoked.
                while let Some(&(complete, invoke, o)) = part.commits.get(part.next) {
                    if complete >= r.invoke {
                        break;
                    }
                    let slot = part.offsets.partition_point(|x| *x < o);
                    part.tree.raise(slot, (invoke, complete, o));
                    part.next += 1;
                }
                if part.next == 0 {
                    continue;
                }
                let read = r.offsets.get(&p).copied();
                // Slots holding offsets above what was read.
                let from = match read {
                    Some(v) => part.offsets.partition_point(|x| *x <= v),
                    None => 0,
                };
                let Some((c_invoke, c_complete, c)) = part.tree.max_from(from) else {
                    continue;
                };
                let excused = read
                    .and_then(|v| excuse(p, v, r.complete))
                    .is_some_and(|latest| latest > c_invoke);
                if !excused {
                    out.push(json!({
                        "partition": p,
                        "committed_offset": c,
                        "read_offset": read,
                        "commit_op": c_complete,
                        "read_op": r.complete,
                    }));
                }
            }
        }
        out
    }
}

/// A Fenwick tree of maxima over slots, queried for the maximum of every slot from a given
/// one on (entries compare by their first field, the commit's invocation index).
#[derive(Debug)]
struct MaxTree {
    tree: Vec<Option<(u64, u64, i64)>>,
}

impl MaxTree {
    fn new(n: usize) -> MaxTree {
        MaxTree {
            tree: vec![None; n + 1],
        }
    }

    /// Slot `slot` (0-based) takes the maximum of itself and `e`. Stored reversed, so a
    /// suffix of slots is a prefix of the tree.
    fn raise(&mut self, slot: usize, e: (u64, u64, i64)) {
        let n = self.tree.len() - 1;
        let mut i = n - slot;
        while i <= n {
            if self.tree[i].is_none_or(|t| t.0 < e.0) {
                self.tree[i] = Some(e);
            }
            i += i & i.wrapping_neg();
        }
    }

    /// The maximum over slots `from..`.
    fn max_from(&self, from: usize) -> Option<(u64, u64, i64)> {
        let n = self.tree.len() - 1;
        let mut i = n.checked_sub(from)?;
        let mut best: Option<(u64, u64, i64)> = None;
        while i > 0 {
            if let Some(t) = self.tree[i] {
                if best.is_none_or(|b| b.0 < t.0) {
                    best = Some(t);
                }
            }
            i -= i & i.wrapping_neg();
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds (process, type, f, value) ops with successive indices.
    fn feed(ops: &[(u64, &str, &str, Value)]) -> Commits {
        let mut c = Commits::new();
        for (i, (p, t, f, v)) in ops.iter().enumerate() {
            let t = match *t {
                "invoke" => OpType::Invoke,
                "ok" => OpType::Ok,
                "fail" => OpType::Fail,
                _ => OpType::Info,
            };
            c.op(i as u64, &Process::Client(*p), t, f, v);
        }
        c
    }

    #[test]
    fn a_read_below_an_earlier_acknowledged_commit_is_a_lost_commit() {
        let c = feed(&[
            (0, "invoke", "commit", json!({"0": 5, "1": 3})),
            (0, "ok", "commit", json!({"0": 5, "1": 3})),
            (0, "invoke", "commit", json!({"0": 9, "1": 3})),
            (0, "ok", "commit", json!({"0": 9, "1": 3})),
            (1, "invoke", "committed", Value::Null),
            (1, "ok", "committed", json!({"0": 5})),
        ]);
        let lost = c.lost_commits();
        assert_eq!(
            lost,
            vec![
                json!({"partition": 0, "committed_offset": 9, "read_offset": 5, "commit_op": 3, "read_op": 5}),
                json!({"partition": 1, "committed_offset": 3, "read_offset": null, "commit_op": 3, "read_op": 5}),
            ]
        );
        assert_eq!(
            crate::findings::example_ops(&lost[0]),
            vec![3, 5],
            "the report cites both ops"
        );
    }

    #[test]
    fn monotonic_commits_and_reads_are_clean() {
        let c = feed(&[
            (0, "invoke", "commit", json!({"0": 5})),
            (0, "ok", "commit", json!({"0": 5})),
            (1, "invoke", "committed", Value::Null),
            (1, "ok", "committed", json!({"0": 5})),
            (0, "invoke", "commit", json!({"0": 8})),
            (0, "ok", "commit", json!({"0": 8})),
            // A refused commit of a lower offset is not evidence of anything.
            (2, "invoke", "commit", json!({"0": 2})),
            (2, "fail", "commit", json!({"0": 2})),
            (1, "invoke", "committed", Value::Null),
            (1, "ok", "committed", json!({"0": 11})),
            // A failed read proves nothing.
            (1, "invoke", "committed", Value::Null),
            (1, "fail", "committed", Value::Null),
        ]);
        assert!(c.lost_commits().is_empty());
        assert_eq!(c.stats()["ok"], 2);
        assert_eq!(c.stats()["fail"], 1);
        assert_eq!(c.stats()["reads"], 2);
    }

    #[test]
    fn a_read_concurrent_with_the_commit_is_not_flagged() {
        let c = feed(&[
            (0, "invoke", "commit", json!({"0": 5})),
            (0, "ok", "commit", json!({"0": 5})),
            (1, "invoke", "committed", Value::Null),
            (0, "invoke", "commit", json!({"0": 9})),
            (0, "ok", "commit", json!({"0": 9})),
            // Invoked before the commit of 9 completed: 5 is a fine answer.
            (1, "ok", "committed", json!({"0": 5})),
        ]);
        assert!(c.lost_commits().is_empty());
    }

    #[test]
    fn a_lower_commit_that_may_follow_the_acknowledged_one_excuses_the_read() {
        // Member 0's commit of 9 is in flight across a rebalance; member 1 starts from 5 and
        // commits 7 concurrently. 7 may have been applied after 9.
        let base = [
            (0, "invoke", "commit", json!({"0": 9})),
            (1, "invoke", "commit", json!({"0": 7})),
            (1, "ok", "commit", json!({"0": 7})),
            (0, "ok", "commit", json!({"0": 9})),
            (2, "invoke", "committed", Value::Null),
            (2, "ok", "committed", json!({"0": 7})),
        ];
        assert!(feed(&base).lost_commits().is_empty());
        // But 7 committed strictly before 9 was invoked cannot come back after it.
        let ordered = [
            (1, "invoke", "commit", json!({"0": 7})),
            (1, "ok", "commit", json!({"0": 7})),
            (0, "invoke", "commit", json!({"0": 9})),
            (0, "ok", "commit", json!({"0": 9})),
            (2, "invoke", "committed", Value::Null),
            (2, "ok", "committed", json!({"0": 7})),
        ];
        assert_eq!(feed(&ordered).lost_commits().len(), 1);
        // A commit of unknown outcome may land any time later.
        let unknown = [
            (1, "invoke", "commit", json!({"0": 7})),
            (1, "info", "commit", json!({"0": 7})),
            (0, "invoke", "commit", json!({"0": 9})),
            (0, "ok", "commit", json!({"0": 9})),
            (2, "invoke", "committed", Value::Null),
            (2, "ok", "committed", json!({"0": 7})),
        ];
        assert!(feed(&unknown).lost_commits().is_empty());
    }

    #[test]
    fn without_commit_ops_nothing_is_flagged_and_other_ops_are_ignored() {
        let c = feed(&[
            (0, "invoke", "poll", json!([["poll"]])),
            (0, "ok", "poll", json!([["poll", {"k": [[1, 2]]}]])),
            (1, "invoke", "committed", Value::Null),
            (1, "ok", "committed", json!({})),
        ]);
        assert!(c.lost_commits().is_empty());
    }

    #[test]
    fn the_max_tree_answers_suffix_maxima() {
        let mut t = MaxTree::new(4);
        t.raise(1, (10, 0, 1));
        t.raise(3, (4, 0, 3));
        assert_eq!(t.max_from(0).map(|e| e.0), Some(10));
        assert_eq!(t.max_from(2).map(|e| e.0), Some(4));
        assert_eq!(t.max_from(4), None);
        t.raise(3, (12, 0, 3));
        assert_eq!(t.max_from(1).map(|e| e.0), Some(12));
    }
}
