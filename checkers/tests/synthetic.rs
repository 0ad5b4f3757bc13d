//! Property tests over seeded synthetic histories: valid histories of any shape give no
//! anomaly at all, and each injected anomaly is found, on the right key, naming the ops that
//! carry it.

use checkers::queue::example_ops;
use checkers::synth::{generate, Inject, SynthConfig};
use checkers::{check, CheckOptions};
use proptest::prelude::*;
use serde_json::{json, Value};

fn options() -> CheckOptions {
    CheckOptions {
        idempotent: true,
        transactions: true,
        ..CheckOptions::default()
    }
}

fn config() -> impl Strategy<Value = SynthConfig> {
    (
        any::<u64>(),
        50usize..1500,
        1usize..12,
        1usize..10,
        2usize..80,
        prop_oneof![Just(0.0), 0.0f64..0.6],
        0.0f64..0.1,
        0.0f64..0.1,
    )
        .prop_map(
            |(seed, ops, processes, active_keys, max_writes, txn, info, fail)| SynthConfig {
                seed,
                ops,
                processes,
                active_keys,
                max_writes_per_key: max_writes,
                txn_share: txn,
                info_share: info,
                fail_share: fail,
                final_reads: true,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn valid_histories_have_no_anomalies(cfg in config()) {
        let (h, injected) = generate(&cfg, &[]);
        prop_assert!(injected.is_empty());
        let r = check(&h, &options());
        prop_assert!(r.anomalies.is_empty(), "{:#?}", r.anomalies);
        prop_assert_eq!(&r.valid, &json!(true));
    }

    #[test]
    fn each_injected_anomaly_is_found_and_attributed(cfg in config(), which in 0usize..Inject::ALL.len()) {
        let inject = Inject::ALL[which];
        let (h, injected) = generate(&cfg, &[inject]);
        prop_assert_eq!(injected.len(), 1);
        let inj = &injected[0];
        let r = check(&h, &options());
        let kind = inject.kind();
        let finding = r.anomalies.get(kind);
        prop_assert!(finding.is_some(), "{} not found; found {:?}", kind, r.anomalies.keys().collect::<Vec<_>>());
        let finding = finding.expect("checked");
        let matching: Vec<&Value> = finding
            .examples
            .iter()
            .filter(|ex| {
                let ops = example_ops(ex);
                let ops_ok = inj.ops.iter().all(|o| ops.contains(o));
                match inject {
                    // A cycle is attributed by its ops (its example names no single key).
                    Inject::G0 | Inject::G1c => ops_ok && ops.len() == inj.ops.len(),
                    Inject::InconsistentOffsets => ex["key"] == json!(inj.key),
                    _ => ex["key"] == json!(inj.key) && ops_ok,
                }
            })
            .collect();
        prop_assert!(!matching.is_empty(), "{} found but not attributed to {:?}: {:#?}", kind, inj, finding.examples);
        if r.invalidating.iter().any(|k| k == kind) {
            prop_assert_eq!(&r.valid, &json!(false));
        }
    }
}

#[test]
fn every_kind_injected_at_once_is_found() {
    let cfg = SynthConfig {
        seed: 7,
        ops: 20_000,
        txn_share: 0.2,
        ..SynthConfig::default()
    };
    let (h, injected) = generate(&cfg, &Inject::ALL);
    assert_eq!(injected.len(), Inject::ALL.len());
    let r = check(&h, &options());
    for i in Inject::ALL {
        assert!(r.anomalies.contains_key(i.kind()), "{} missing", i.kind());
    }
    assert_eq!(r.valid, json!(false));
}

#[test]
fn cycle_explanations_read_step_by_step() {
    let cfg = SynthConfig {
        seed: 3,
        ops: 300,
        ..SynthConfig::default()
    };
    let (h, _) = generate(&cfg, &[Inject::G0]);
    let r = check(&h, &options());
    let g0 = &r.anomalies["G0"];
    let text = g0.examples[0]["explanation"].as_str().expect("text");
    assert!(
        text.contains("T1 (op ") && text.contains("before T2 (op "),
        "{text}"
    );
    assert!(
        text.ends_with("so T1 precedes itself: a G0 cycle."),
        "{text}"
    );
    assert_eq!(g0.examples[0]["steps"][0]["type"], "ww");
    assert!(!r.invalidating.contains(&"G0".to_string()));
    let (h, _) = generate(&cfg, &[Inject::G1c]);
    let r = check(&h, &options());
    let g1c = &r.anomalies["G1c"];
    let text = g1c.examples[0]["explanation"].as_str().expect("text");
    assert!(
        text.contains(", which T2 (op ") && text.contains("read at offset"),
        "{text}"
    );
    // Without ww inference, a wr-only cycle is certain and invalidates.
    let strict = CheckOptions {
        ww_deps: false,
        ..options()
    };
    let r = check(&h, &strict);
    assert!(r.anomalies.contains_key("G1c"));
    assert_eq!(r.valid, json!(false));
}

#[test]
fn the_streaming_file_check_agrees_with_the_in_memory_one() {
    let cfg = SynthConfig {
        seed: 11,
        ops: 5_000,
        txn_share: 0.3,
        ..SynthConfig::default()
    };
    let (h, _) = generate(&cfg, &Inject::ALL);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    let mut text = String::new();
    for op in &h.ops {
        text.push_str(&serde_json::to_string(op).expect("json"));
        text.push('\n');
    }
    // A nemesis op in the middle and a truncated tail, as a crashed harness leaves.
    let mid = text.len() / 2;
    let cut = text[mid..].find('\n').map_or(mid, |i| mid + i + 1);
    text.insert_str(
        cut,
        "{\"index\":999999,\"time_ns\":1,\"process\":\"nemesis\",\"type\":\"info\",\"f\":\"start-partition\",\"value\":{\"isolated\":[\"n1\"]}}\n",
    );
    text.push_str("{\"index\":1000000,\"time_ns\":");
    std::fs::write(&path, &text).expect("write");
    let from_file = checkers::check_file(&path, &options()).expect("check_file");
    let in_memory = check(&checkers::read_history(&path).expect("read"), &options());
    assert_eq!(from_file, in_memory);
    assert_eq!(from_file.warnings.len(), 1, "{:?}", from_file.warnings);
    assert!(from_file.warnings[0].contains("truncated"));

    // Ops without micro-ops (assign's partitions, subscribe, crash, error maps) are fine.
    let others = "{\"index\":0,\"time_ns\":1,\"process\":1,\"type\":\"invoke\",\"f\":\"assign\",\"value\":[0,2]}\n\
                  {\"index\":1,\"time_ns\":2,\"process\":1,\"type\":\"ok\",\"f\":\"assign\",\"value\":[0,2]}\n\
                  {\"index\":2,\"time_ns\":3,\"process\":1,\"type\":\"invoke\",\"f\":\"subscribe\",\"value\":[\"all\"]}\n\
                  {\"index\":3,\"time_ns\":4,\"process\":1,\"type\":\"info\",\"f\":\"subscribe\",\"value\":{\"error\":\"x\"}}\n";
    std::fs::write(&path, others).expect("write");
    let r = checkers::check_file(&path, &options()).expect("non-data ops parse");
    assert_eq!(r.valid, json!("unknown"));

    // Micro-ops of the wrong shape are an error naming the line.
    let bad = "{\"index\":0,\"time_ns\":1,\"process\":1,\"type\":\"invoke\",\"f\":\"poll\",\"value\":[[\"poll\"]]}\n\
               {\"index\":1,\"time_ns\":2,\"process\":1,\"type\":\"ok\",\"f\":\"poll\",\"value\":[[\"poll\",{\"k1\":[[0,\"x\"]]}]]}\n";
    std::fs::write(&path, bad).expect("write");
    let e = checkers::check_file(&path, &options())
        .expect_err("bad record")
        .to_string();
    assert!(e.contains(":2:") && e.contains("micro-ops"), "{e}");
}

/// One process doing 100k ops in sequence makes a 100k-node process chain (and a barrier chain
/// as long): the SCC search must not recurse along it (a recursive Tarjan overflowed the stack
/// on a 10M-op history).
#[test]
fn long_chains_do_not_overflow_the_stack() {
    let cfg = SynthConfig {
        seed: 5,
        ops: 100_000,
        processes: 1,
        info_share: 0.0,
        fail_share: 0.0,
        ..SynthConfig::default()
    };
    let (h, _) = generate(&cfg, &[]);
    let r = check(&h, &options());
    assert_eq!(r.valid, json!(true), "{:#?}", r.anomalies);
    assert!(r.stats["graph"]["edges"]["process"].as_u64().unwrap_or(0) > 90_000);
}

#[test]
fn real_run_shaped_histories_use_64_partitions_crashes_and_one_final_poll_per_partition() {
    use checkers::synth::{write_real_run, RealRunConfig};
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    let cfg = RealRunConfig {
        ops: 20_000,
        processes: 500,
        ..RealRunConfig::default()
    };
    let lines = write_real_run(&path, &cfg).expect("write");
    let h = checkers::read_history(&path).expect("read");
    assert_eq!(h.ops.len() as u64, lines);
    let mut partitions = BTreeSet::new();
    let mut processes = std::collections::HashSet::new();
    let mut final_polls = 0;
    for op in &h.ops {
        processes.insert(op.process.clone());
        if op.op_type != checkers::OpType::Ok {
            continue;
        }
        for m in op.value.as_array().into_iter().flatten() {
            if m[0] == "send" {
                partitions.extend(m[3].as_u64());
            }
        }
        if op.process == checkers::Process::Client(checkers::history::FINAL_PROCESS) {
            final_polls += 1;
        }
    }
    assert_eq!(partitions.len(), 64, "sends name 64 partitions");
    assert_eq!(final_polls, 64, "one final poll per partition");
    assert!(
        processes.len() > 300,
        "crashes start new processes: {}",
        processes.len()
    );
    let r = checkers::check_file(&path, &CheckOptions::default()).expect("check");
    assert_eq!(r.valid, json!(true), "{:?}", r.anomalies.keys());
}
