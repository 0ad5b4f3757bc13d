//! Hand-written histories, one per anomaly, each checked for the kind found, the key and
//! offsets it names, and whether it invalidates the run under the options.

use checkers::history::FINAL_PROCESS;
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
        ..CheckOptions::default()
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
    assert!(lost.explanation.contains("the log lost a committed write"));
    // The same history also shows the reader skipping offset 1.
    assert_eq!(
        r.anomalies["int-poll-skip"].examples[0]["skipped"],
        json!([1])
    );
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
    // The first op observing each value there: the send acknowledging 6, then the poll of 7.
    let ops = r.anomalies["inconsistent-offsets"].examples[0]["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .map(|v| v.as_u64().expect("op index"))
        .collect::<Vec<_>>();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(ops[0] < ops[1], "{ops:?}");
    // 6 was acknowledged at offset 1 (an acknowledged write overwritten); 7 only read.
    assert_eq!(
        r.anomalies["inconsistent-offsets"].examples[0]["acked"],
        json!([6])
    );
    // Two reads disagreeing about an offset no acknowledged send named: nothing acked.
    let mut h3 = H::new();
    h3.poll(2, "k1", &[(4, 8)]).poll(3, "k1", &[(4, 9)]);
    h3.send(1, "k2", 1, 0).poll(2, "k2", &[(0, 2)]);
    let r3 = check(&h3.history(), &assign());
    let ex = &r3.anomalies["inconsistent-offsets"].examples;
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0]["key"], "k1");
    assert_eq!(ex[0]["acked"], json!([]));
    assert_eq!(ex[1]["acked"], json!([1]));
    // No final reads: nothing says the acknowledged value was overwritten.
    assert_eq!(ex[1]["acked_overwritten"], json!(false));
    // The final reader finds another value where an acknowledged one was: overwritten, and
    // listed first; where it finds the acknowledged one, a stale read contradicted it only.
    h3.poll(FINAL_PROCESS, "k2", &[(0, 2)]);
    h3.send(1, "k3", 7, 0)
        .poll(2, "k3", &[(0, 8)])
        .poll(FINAL_PROCESS, "k3", &[(0, 7)]);
    let r4 = check(&h3.history(), &assign());
    let ex = &r4.anomalies["inconsistent-offsets"].examples;
    assert_eq!(ex.len(), 3);
    assert_eq!(ex[0]["key"], "k2");
    assert_eq!(ex[0]["final"], json!(2));
    assert_eq!(ex[0]["acked_overwritten"], json!(true));
    let k3 = ex.iter().find(|e| e["key"] == "k3").expect("k3");
    assert_eq!(k3["acked_overwritten"], json!(false));
    // Two acknowledged values at one offset (the first leader's, lost; the next one's, kept):
    // the first was overwritten.
    let mut h5 = H::new();
    h5.send(1, "k4", 1, 5)
        .send(2, "k4", 2, 5)
        .poll(FINAL_PROCESS, "k4", &[(5, 2)]);
    let r5 = check(&h5.history(), &assign());
    let ex = &r5.anomalies["inconsistent-offsets"].examples[0];
    assert_eq!(ex["acked"], json!([1, 2]));
    assert_eq!(ex["acked_overwritten"], json!(true));
    // A producer that retried without idempotence may write twice: a duplicate is then
    // reported but does not invalidate; without retries it does (Jepsen's default).
    let mut h2 = H::new();
    h2.send(1, "k1", 5, 0).poll(2, "k1", &[(0, 5), (1, 5)]);
    let retrying = CheckOptions {
        idempotent: false,
        retries: true,
        ..assign()
    };
    let r2 = check(&h2.history(), &retrying);
    assert_eq!(r2.anomalies["duplicate"].count, 1);
    assert_eq!(r2.valid, json!(true));
    let no_retries = CheckOptions {
        retries: false,
        ..retrying.clone()
    };
    assert_eq!(check(&h2.history(), &no_retries).valid, json!(false));
    let idempotent = CheckOptions {
        idempotent: true,
        ..retrying
    };
    assert_eq!(check(&h2.history(), &idempotent).valid, json!(false));
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
    assert_eq!(r.anomalies["poll-skip"].examples[0]["skipped"], json!([1]));
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

#[test]
fn a_write_acknowledged_before_another_began_but_ordered_after_it_is_g0_realtime() {
    let mut h = H::new();
    h.send(1, "k1", 0, 1); // T1: acknowledged at offset 1
    h.send(2, "k1", 1, 0); // T2 begins after T1 completed, lands at offset 0
    h.poll(3, "k1", &[(0, 1), (1, 0)]);
    let r = check(&h.history(), &assign());
    let f = &r.anomalies["G0-realtime"];
    assert_eq!(f.count, 1);
    let ex = &f.examples[0];
    assert_eq!(ex["ops"], json!([1, 3]));
    assert_eq!(
        ex["explanation"],
        "T1 (op 1) completed at 0.000 s, before T2 (op 3) was invoked at 0.000 s; \
         T2 (op 3) sent 1 to k1 (offset 0) before T1 (op 1) sent 0 to it (offset 1); \
         so T1 precedes itself: a G0-realtime cycle."
    );
    assert!(
        !r.invalidating.contains(&"G0-realtime".to_string()),
        "ww-inferred cycles are reported, as in Jepsen, without invalidating"
    );
}

#[test]
fn reads_from_the_future_through_process_order_are_g1c_process() {
    let mut h = H::new();
    h.poll(1, "k1", &[(0, 5)]); // T1 reads 5, which T4 only sends later
    h.send(1, "k2", 7, 0); // T2, next in process 1
    h.poll(2, "k2", &[(0, 7)]); // T3 reads T2's write
    h.send(2, "k1", 5, 0); // T4, next in process 2, sends what T1 read
    let r = check(&h.history(), &assign());
    let f = &r.anomalies["G1c-process"];
    let text = f.examples[0]["explanation"].as_str().expect("text");
    assert!(
        text.contains("and then") && text.contains("ran in process 1"),
        "{text}"
    );
    assert!(
        text.contains("which T1 (op 1) read at offset 0") || text.contains("read at offset 0"),
        "{text}"
    );
    let strict = CheckOptions {
        ww_deps: false,
        ..assign()
    };
    assert_eq!(check(&h.history(), &strict).valid, json!(false));
}

#[test]
fn transactions_skipping_within_their_sends_and_reading_their_own_writes() {
    let mut h = H::new();
    h.push(
        1,
        OpType::Invoke,
        "txn",
        json!([["send", "k1", 0], ["send", "k1", 2], ["poll"]]),
    )
    .push(
        1,
        OpType::Ok,
        "txn",
        json!([["send", "k1", [0, 0]], ["send", "k1", [2, 2]], ["poll", {"k1": [[2, 2]]}]]),
    );
    h.send(2, "k1", 1, 1);
    h.poll(3, "k1", &[(0, 0), (1, 1), (2, 2)]);
    let opts = CheckOptions {
        transactions: true,
        ..assign()
    };
    let r = check(&h.history(), &opts);
    let skip = &r.anomalies["int-send-skip"].examples[0];
    assert_eq!(skip["offsets"], json!([0, 2]));
    assert_eq!(skip["skipped"], json!([1]));
    let pre = &r.anomalies["precommitted-read"];
    assert_eq!(pre.examples[0]["value"], 2);
    assert!(pre.explanation.contains("polled a value it sent itself"));
    assert_eq!(
        r.valid,
        json!(false),
        "precommitted reads invalidate transactional runs"
    );
    assert!(!r.invalidating.contains(&"int-send-skip".to_string()));
}
