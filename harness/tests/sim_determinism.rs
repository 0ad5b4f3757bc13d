//! `harness sim` is deterministic: one seed simulated twice (two processes) writes
//! byte-identical histories, under every fault kind the simulator has (partitions, kills that
//! lose unfsynced writes, pauses, clock jumps, disk faults, extra latency and packet loss
//! between brokers), with transactions (`txn` ops through the native client's transactional
//! producer, plain sends as transactions of one) and consumers in a group (commits, reads of
//! the committed offsets, rebalances). Any wall-clock read, OS-seeded
//! hash map order, OS thread or unseeded random choice that reaches behaviour shows up here as
//! a difference.
//! The second run traces, as a replay does: building the trace subscriber on the simulation
//! thread once shifted its hash keys and changed the run. A different seed gives a different
//! history, and the run is checked like a real one. One all-faults run has room for one disk
//! fault, so a disk-only seed is simulated twice too: it draws each of the four disk fault
//! kinds (latency, stall, EIO on appends, EIO on fsyncs).

use std::path::{Path, PathBuf};
use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

/// Every fault kind, transactions and a consumer group, 60 simulated s.
const ALL_FAULTS: &[&str] = &[
    "--time-limit",
    "60",
    "--nemesis-interval",
    "3",
    "--nemesis",
    "partition,kill,pause,clock,disk,latency,loss",
    "--transactions",
    "--subscribe",
];

/// Disk faults only, 30 simulated s (seed 37 draws latency, eio-fsync, eio-writes and stall).
const DISK_ONLY: &[&str] = &[
    "--time-limit",
    "30",
    "--nemesis-interval",
    "2",
    "--nemesis",
    "disk",
];

/// Runs one simulation into `store` (with `extra` flags); returns its run folder.
fn simulate(store: &Path, seed: u64, extra: &[&str]) -> PathBuf {
    simulate_with(store, seed, ALL_FAULTS, extra)
}

/// Runs one simulation of `faults` into `store` (with `extra` flags); returns its run folder.
fn simulate_with(store: &Path, seed: u64, faults: &[&str], extra: &[&str]) -> PathBuf {
    let out = harness()
        .args(["sim", "--seed", &seed.to_string(), "--nodes", "3"])
        .args(["--final-time-limit", "20"])
        .args(faults)
        .args(extra)
        .arg("--store")
        .arg(store)
        .output()
        .expect("run harness sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "harness sim failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<PathBuf> = std::fs::read_dir(store.join("sim"))
        .expect("store")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !p.ends_with("latest"))
        .collect();
    let mut runs = runs;
    runs.sort();
    runs.pop().expect("a run folder")
}

fn history(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("history.jsonl")).expect("history.jsonl")
}

/// Panics at the first line where two histories of `seed` differ.
fn assert_same(seed: u64, ha: &[u8], hb: &[u8]) {
    if ha != hb {
        let text = String::from_utf8_lossy(ha);
        let la: Vec<&str> = text.lines().collect();
        let hb_text = String::from_utf8_lossy(hb);
        let lb: Vec<&str> = hb_text.lines().collect();
        let first = la
            .iter()
            .zip(&lb)
            .position(|(x, y)| x != y)
            .unwrap_or(la.len().min(lb.len()));
        panic!(
            "seed {seed} diverged at line {first}:\n  {}\n  {}",
            la.get(first).unwrap_or(&"<end>"),
            lb.get(first).unwrap_or(&"<end>")
        );
    }
}

#[test]
fn one_seed_twice_gives_the_same_history_byte_for_byte() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let c = tempfile::tempdir().expect("tempdir");
    let seed = 11;
    let run_a = simulate(a.path(), seed, &[]);
    // The replay traces (as a replay command does): tracing must not change the run.
    let run_b = simulate(b.path(), seed, &["--trace", "info"]);
    assert!(run_b.join("sim.log").is_file());
    let (ha, hb) = (history(&run_a), history(&run_b));
    let text = String::from_utf8_lossy(&ha);
    // Every fault kind happened, and clients did work around them.
    for f in [
        "\"start-partition\"",
        "\"kill\"",
        "\"start\"",
        "\"pause\"",
        "\"bump-clock\"",
        "\"start-disk\"",
        "\"start-latency\"",
        "\"start-packet-loss\"",
    ] {
        assert!(text.contains(f), "no {f} op in seed {seed}'s history");
    }
    assert!(text.contains("\"lost-unfsynced\""));
    // Transactions ran (the native client's transactional producer): committed ones too.
    let txns_ok = text
        .lines()
        .filter(|l| l.contains("\"f\":\"txn\"") && l.contains("\"type\":\"ok\""))
        .count();
    assert!(txns_ok > 50, "only {txns_ok} committed txn ops");
    // Subscribed consumers: offset commits, committed-offset reads, rebalances.
    for f in ["\"f\":\"commit\"", "\"f\":\"committed\"", "\"rebalance\""] {
        assert!(text.contains(f), "no {f} in seed {seed}'s history");
    }
    let oks = text.matches("\"type\":\"ok\"").count();
    assert!(oks > 200, "only {oks} ok ops");
    assert!(text.contains("\"process\":1000000"), "no final reads");
    assert_same(seed, &ha, &hb);
    // The run is stored like a real one: checked, with the spec harness check reads.
    assert!(run_a.join("results.json").is_file());
    assert!(run_a.join("test.json").is_file());
    let recheck = harness()
        .arg("check")
        .arg(&run_a)
        .output()
        .expect("harness check");
    assert!(matches!(recheck.status.code(), Some(0..=2)));
    // Another seed: another history.
    let run_c = simulate(c.path(), seed + 1, &[]);
    assert_ne!(
        history(&run_c),
        ha,
        "seeds {seed} and {} gave the same history",
        seed + 1
    );
    // Each disk fault kind, twice over: the same history (stalls and latency wait in virtual
    // time, EIO is drawn per append or fsync).
    let d = tempfile::tempdir().expect("tempdir");
    let e = tempfile::tempdir().expect("tempdir");
    let disk_seed = 37;
    let run_d = simulate_with(d.path(), disk_seed, DISK_ONLY, &[]);
    let run_e = simulate_with(e.path(), disk_seed, DISK_ONLY, &["--trace", "info"]);
    let (hd, he) = (history(&run_d), history(&run_e));
    let text = String::from_utf8_lossy(&hd);
    for kind in [
        "{\"kind\":\"stall\"}",
        "{\"kind\":\"latency\",\"per_op_ms\":",
        "{\"kind\":\"eio-writes\"}",
        "{\"kind\":\"eio-fsync\"}",
    ] {
        let start = format!("\"f\":\"start-disk\",\"value\":{{\"fault\":{kind}");
        assert!(
            text.contains(&start),
            "no start-disk {kind} in seed {disk_seed}"
        );
    }
    assert!(text.contains("\"f\":\"stop-disk\""));
    assert!(text.matches("\"type\":\"ok\"").count() > 200);
    assert_same(disk_seed, &hd, &he);
}

/// A sweep's seeds run in parallel child processes (`--jobs`): each seed's history is the one
/// a run of that seed alone writes, the verdicts print in seed order, and runs that start in
/// the same millisecond get their own folders.
#[test]
fn a_parallel_sweep_gives_each_seed_the_history_of_a_lone_run() {
    let sweep = tempfile::tempdir().expect("tempdir");
    let lone = tempfile::tempdir().expect("tempdir");
    let flags = [
        "--nodes",
        "3",
        "--time-limit",
        "15",
        "--final-time-limit",
        "20",
        "--nemesis-interval",
        "3",
        "--nemesis",
        "partition,kill,disk",
    ];
    let out = harness()
        .args(["sim", "--seed", "5", "--seeds", "3", "--jobs", "3"])
        .args(flags)
        .arg("--store")
        .arg(sweep.path())
        .output()
        .expect("run harness sim --seeds");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(matches!(out.status.code(), Some(0..=2)), "{stdout}");
    let order: Vec<usize> = ["seed 5: ", "seed 6: ", "seed 7: "]
        .iter()
        .map(|s| {
            stdout
                .find(s)
                .unwrap_or_else(|| panic!("no `{s}` in {stdout}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "not in seed order: {stdout}"
    );
    assert!(stdout.contains("3 at once"), "{stdout}");
    // Three folders, one per seed; seed 6's history is a lone run's.
    let mut by_seed = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(sweep.path().join("sim")).expect("store") {
        let p = e.expect("entry").path();
        if !p.is_dir() || p.ends_with("latest") {
            continue;
        }
        let sim: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p.join("sim.json")).expect("sim.json"))
                .expect("sim.json parses");
        by_seed.insert(sim["seed"].as_u64().expect("seed"), p);
    }
    assert_eq!(by_seed.keys().copied().collect::<Vec<_>>(), vec![5, 6, 7]);
    let out = harness()
        .args(["sim", "--seed", "6"])
        .args(flags)
        .arg("--store")
        .arg(lone.path())
        .output()
        .expect("run harness sim");
    assert!(matches!(out.status.code(), Some(0..=2)));
    let lone_run = std::fs::read_dir(lone.path().join("sim"))
        .expect("store")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir() && !p.ends_with("latest"))
        .expect("a run folder");
    assert_same(6, &history(&by_seed[&6]), &history(&lone_run));
}
