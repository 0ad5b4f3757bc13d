//! The report's statistics taken from the check's pass ([`checkers::stats::of_summary`]) are
//! exactly those of the report's own streaming pass over the file
//! ([`checkers::stats::analyze_file`]): latencies, samples, throughput, faults and the unseen
//! series, on synthetic histories with transactions, failures, crashes and nemesis ops.

use std::collections::BTreeSet;
use std::io::Write;

use checkers::synth::{generate, write_real_run, RealRunConfig, SynthConfig};
use checkers::{check_file_full, stats, CheckOptions, Op, OpType, Process};
use serde_json::json;

fn compare(path: &std::path::Path, keep: &BTreeSet<u64>) {
    let (expected, _) = stats::analyze_file(path, keep.iter().copied()).expect("stats pass");
    let checked = check_file_full(path, &CheckOptions::default()).expect("check");
    let got = stats::of_summary(&checked.summary, keep);
    assert_eq!(got, expected);
    assert_eq!(
        checked.summary.ops,
        checked.result.stats["ops"].as_u64().unwrap_or(0)
    );
}

#[test]
fn summary_stats_equal_the_streaming_pass_on_synthetic_histories() {
    let dir = tempfile::tempdir().expect("tempdir");
    for seed in 0..6u64 {
        let cfg = SynthConfig {
            seed,
            ops: 3_000,
            txn_share: 0.3,
            info_share: 0.05,
            fail_share: 0.05,
            ..SynthConfig::default()
        };
        let (h, _) = generate(&cfg, &[]);
        let path = dir.path().join(format!("h{seed}.jsonl"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
        let mut index = 0u64;
        let mut time = 0u64;
        let mut line = |w: &mut std::io::BufWriter<std::fs::File>, op: &Op| {
            let mut op = op.clone();
            op.index = index;
            time = time.max(op.time_ns);
            op.time_ns = time;
            index += 1;
            serde_json::to_writer(&mut *w, &op).expect("json");
            w.write_all(b"\n").expect("write");
        };
        for (i, op) in h.ops.iter().enumerate() {
            if i % 500 == 250 {
                let f = if i % 1000 == 250 { "kill" } else { "start" };
                let nemesis = Op {
                    index: 0,
                    time_ns: op.time_ns,
                    process: Process::nemesis(),
                    op_type: OpType::Info,
                    f: f.into(),
                    value: json!({"nodes": ["n1"]}),
                };
                line(&mut w, &nemesis);
            }
            line(&mut w, op);
        }
        drop(w);
        let keep: BTreeSet<u64> = (0..index).step_by(97).collect();
        compare(&path, &keep);
        compare(&path, &BTreeSet::new());
    }
}

#[test]
fn summary_stats_equal_the_streaming_pass_on_a_real_run_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("real.jsonl");
    let mut cfg = RealRunConfig::default();
    (cfg.ops, cfg.processes) = (20_000, 2_000);
    let lines = write_real_run(&path, &cfg).expect("write");
    compare(&path, &(0..lines).step_by(1_001).collect());
}
