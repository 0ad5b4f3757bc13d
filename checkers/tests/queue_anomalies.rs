//! Hand-written histories, one per anomaly, each checked for the kind found, the key and
//! offsets it names, and whether it invalidates the run under the options.

use checkers::{check, CheckOptions, History, Op, OpType, Process};
use serde_json::{json, Value};

struct H {
    ops: Vec<Op>,
}

impl H {
    fn new() -> H {
        H { ops: Vec::new() }
    }
    fn push(&mut self, p: u64, t: OpType, f: &str, v: Value) -> &mut H {
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            index,
            time_ns: index * 10,
            process: Process::Client(p),
            op_type: t,
            f: f.into(),
            value: v,
        });
        self
    }
    /// An acknowledged send of `v` to `k` at offset `o`.
    fn send(&mut self, p: u64, k: &str, v: i64, o: i64) -> &mut H {
        self.push(p, OpType::Invoke, "send", json!([["send", k, v]]))
            .push(p, OpType::Ok, "send", json!([["send", k, [o, v]]]))
    }
    fn poll(&mut self, p: u64, k: &str, pairs: &[(i64, i64)]) -> &mut H {
        let reads: Vec<Value> = pairs.iter().map(|(o, v)| json!([o, v])).collect();
        self.push(p, OpType::Invoke, "poll", json!([["poll"]]))
            .push(p, OpType::Ok, "poll", json!([["poll", {k: reads}]]))
    }
    fn history(&self) -> History {
        History {
            ops: self.ops.clone(),
            warnings: Vec::new(),
        }
    }
}

fn assign() -> CheckOptions {
    CheckOptions {
        subscribe: false,
        idempotent: true,
        final_phase: true,
    }
}

#[test]
fn a_clean_history_is_valid() {
    let mut h = H::new();
    h.send(1, "k1", 0, 0)
        .send(1, "k1", 1, 1)
        .send(2, "k2", 0, 0);
    h.poll(3, "k1", &[(0, 0), (1, 1)]).poll(3, "k2", &[(0, 0)]);
    let r = check(&h.history(), &assign());
    assert_eq!(r.valid, json!(true), "{:#?}", r.anomalies);
    assert!(r.anomalies.is_empty());
}

#[test]
fn lost_write_when_a_later_offset_was_read() {
    let mut h = H::new();
    h.send(1, "k1", 0, 0)
        .send(1, "k1", 1, 1)
        .send(1, "k1", 2, 2);
    h.poll(2, "k1", &[(0, 0), (2, 2)]);
    let r = check(&h.history(), &assign());
    assert_eq!(r.valid, json!(false));
    let lost = &r.anomalies["lost-write"];
    assert_eq!(lost.count, 1);
    assert_eq!(lost.examples[0]["key"], "k1");
    assert_eq!(lost.examples[0]["value"], 1);
    assert_eq!(lost.examples[0]["offset"], 1);
    assert!(lost.explanation.contains("lost an acknowledged write"));
    // The same history also shows the reader skipping offset 1.
    assert_eq!(r.anomalies["int-poll-skip"].examples[0]["skipped"], 1);
}

#[test]
fn unseen_invalidates_only_after_a_final_phase() {
    let mut h = H::new();
    h.send(1, "k1", 0, 0).send(1, "k1", 1, 1);
    h.poll(2, "k1", &[(0, 0)]);
    let r = check(&h.history(), &assign());
    assert_eq!(r.anomalies["unseen"].count, 1);
    assert_eq!(r.valid, json!(false));
    let r = check(
        &h.history(),
        &CheckOptions {
            final_phase: false,
            ..assign()
        },
    );
    assert_eq!(
        r.valid,
        json!(true),
        "unseen without a final phase is not a verdict"
    );
}

#[test]
fn duplicates_and_inconsistent_offsets() {
    let mut h = H::new();
    h.send(1, "k1", 5, 0).send(1, "k1", 6, 1);
    h.poll(2, "k1", &[(0, 5), (1, 6), (2, 5)]);
    h.poll(3, "k1", &[(1, 7)]);
    let r = check(&h.history(), &assign());
    assert_eq!(
        r.anomalies["duplicate"].examples[0]["offsets"],
        json!([0, 2])
    );
    assert_eq!(r.anomalies["inconsistent-offsets"].examples[0]["offset"], 1);
    assert_eq!(
        r.anomalies["inconsistent-offsets"].examples[0]["values"],
        json!([6, 7])
    );
    // Without idempotence, a duplicate is reported but does not invalidate.
    let mut h2 = H::new();
    h2.send(1, "k1", 5, 0).poll(2, "k1", &[(0, 5), (1, 5)]);
    let r2 = check(
        &h2.history(),
        &CheckOptions {
            idempotent: false,
            ..assign()
        },
    );
    assert_eq!(r2.anomalies["duplicate"].count, 1);
    assert_eq!(r2.valid, json!(true));
}

#[test]
fn aborted_read_of_a_failed_send() {
    let mut h = H::new();
    h.push(1, OpType::Invoke, "send", json!([["send", "k1", 9]]))
        .push(1, OpType::Fail, "send", json!([["send", "k1", 9]]));
    h.poll(2, "k1", &[(0, 9)]);
    let r = check(&h.history(), &assign());
    assert_eq!(r.anomalies["G1a"].examples[0]["value"], 9);
    assert_eq!(r.valid, json!(false));
}

#[test]
fn indeterminate_sends_that_were_read_are_fine_and_unread_ones_are_not_lost() {
    let mut h = H::new();
    h.push(1, OpType::Invoke, "send", json!([["send", "k1", 0]]))
        .push(1, OpType::Info, "send", json!([["send", "k1", 0]]));
    h.push(4, OpType::Invoke, "send", json!([["send", "k1", 1]]))
        .push(4, OpType::Info, "send", Value::Null);
    h.send(5, "k1", 2, 1);
    h.poll(2, "k1", &[(0, 0), (1, 2)]);
    let r = check(&h.history(), &assign());
    assert_eq!(r.valid, json!(true), "{:#?}", r.anomalies);
}

#[test]
fn poll_order_across_polls_resets_on_reassignment() {
    let mut h = H::new();
    for i in 0..4 {
        h.send(1, "k1", i, i);
    }
    h.poll(2, "k1", &[(0, 0)]).poll(2, "k1", &[(2, 2)]); // skips offset 1
    h.poll(3, "k1", &[(1, 1)]).poll(3, "k1", &[(0, 0)]); // goes back
    h.poll(6, "k1", &[(3, 3)]);
    h.push(6, OpType::Invoke, "assign", json!([0]))
        .push(6, OpType::Ok, "assign", json!([0]));
    h.poll(6, "k1", &[(0, 0), (1, 1)]); // rewinds after an assign: fine
    let r = check(&h.history(), &assign());
    assert_eq!(r.anomalies["poll-skip"].count, 1);
    assert_eq!(r.anomalies["poll-skip"].examples[0]["skipped"], 1);
    assert_eq!(r.anomalies["nonmonotonic-poll"].count, 1);
    assert_eq!(r.anomalies["nonmonotonic-poll"].examples[0]["process"], 3);
    assert_eq!(r.valid, json!(false));
    let sub = check(
        &h.history(),
        &CheckOptions {
            subscribe: true,
            ..assign()
        },
    );
    assert_eq!(
        sub.valid,
        json!(true),
        "with subscribe, rebalances make these legitimate"
    );
}

#[test]
fn nonmonotonic_send() {
    let mut h = H::new();
    h.send(1, "k1", 0, 5).send(1, "k1", 1, 3);
    h.poll(2, "k1", &[(3, 1), (5, 0)]);
    let r = check(&h.history(), &assign());
    assert_eq!(r.anomalies["nonmonotonic-send"].examples[0]["offset"], 3);
}

#[test]
fn results_json_has_the_design_shape() {
    let mut h = H::new();
    h.send(1, "k1", 0, 0).poll(2, "k1", &[(0, 0)]);
    let r = check(&h.history(), &assign());
    let v = serde_json::to_value(&r).expect("serialises");
    assert_eq!(v["valid"], json!(true));
    assert!(v["anomalies"].is_object());
    assert!(v["invalidating"]
        .as_array()
        .expect("array")
        .iter()
        .any(|k| k == "lost-write"));
    assert_eq!(v["stats"]["sends"]["ok"], 1);
}
