//! Zombie consumers in `harness sim` (`--nemesis zombie`, with `--subscribe`): the nemesis
//! asks for a stall (`stall-consumer`, recorded as real runs record it), a subscribed worker
//! stops polling for real runs' 6 s (twice its session timeout, so the group rebalances
//! without it), then commits its old positions as the member it was (`zombie-commit`). The
//! correct broker refuses that commit, the run is valid, and the same seed gives the same
//! history byte for byte. Without `--subscribe` the fault is refused as a bad flag.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// 30 simulated s of subscribed consumers under zombies only, a zombie every 5 s or so.
const ZOMBIE: &str = "--nodes 3 --time-limit 30 --final-time-limit 20 --subscribe \
                      --nemesis zombie --nemesis-interval 5";

/// `harness sim --seed SEED FLAGS --store STORE`.
fn sim(store: &Path, seed: u64, flags: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["sim", "--seed", &seed.to_string()])
        .args(flags.split_whitespace())
        .arg("--store")
        .arg(store)
        .output()
        .expect("run harness sim")
}

/// Runs seed `seed` into `store`; returns the exit code and the run folder.
fn simulate(store: &Path, seed: u64) -> (i32, PathBuf) {
    let out = sim(store, seed, ZOMBIE);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        matches!(code, 0..=2),
        "harness sim failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut runs: Vec<PathBuf> = std::fs::read_dir(store.join("sim"))
        .expect("store")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !p.ends_with("latest"))
        .collect();
    runs.sort();
    (code, runs.pop().expect("a run folder"))
}

fn ops(history: &str, f: &str) -> Vec<serde_json::Value> {
    history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("history line"))
        .filter(|op| op["process"] == "nemesis" && op["f"] == f)
        .collect()
}

#[test]
fn a_zombies_late_commit_is_refused_and_the_run_replays() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let seed = 1;
    let (code_a, run_a) = simulate(a.path(), seed);
    let (_, run_b) = simulate(b.path(), seed);
    assert_eq!(code_a, 0, "the run is not valid: {}", run_a.display());
    let ha = std::fs::read(run_a.join("history.jsonl")).expect("history");
    let hb = std::fs::read(run_b.join("history.jsonl")).expect("history");
    let text = String::from_utf8_lossy(&ha).into_owned();

    // The stall requests, recorded as real runs' nemesis records them.
    let stalls = ops(&text, "stall-consumer");
    assert!(!stalls.is_empty(), "no stall-consumer op");
    for s in &stalls {
        assert_eq!(s["value"]["stall_ms"], 6000, "{s}");
        assert!(s["value"]["requests_waiting"].as_u64().is_some(), "{s}");
    }
    // The zombies' commits: refused by the coordinator (the member's session expired).
    let zombies = ops(&text, "zombie-commit");
    assert!(!zombies.is_empty(), "no zombie-commit op");
    let refused: Vec<&serde_json::Value> = zombies
        .iter()
        .filter(|z| {
            z["value"]["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("refused"))
        })
        .collect();
    assert!(!refused.is_empty(), "no refused zombie commit: {zombies:?}");
    for z in &refused {
        assert!(z["value"]["stalled_ms"].as_u64() >= Some(6000), "{z}");
        // The zombie's commit is an ordinary `commit` op of its process, failed.
        let process = &z["value"]["process"];
        let offsets = &z["value"]["offsets"];
        let failed = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("line"))
            .any(|op| {
                op["process"] == *process
                    && op["f"] == "commit"
                    && op["type"] == "fail"
                    && op["value"] == *offsets
            });
        assert!(failed, "no failed commit op of process {process}: {z}");
    }
    // Byte for byte the same history from the same seed.
    assert!(ha == hb, "seed {seed}'s two histories differ");
}

#[test]
fn a_zombie_needs_subscribed_consumers() {
    let store = tempfile::tempdir().expect("tempdir");
    let out = sim(store.path(), 1, "--nemesis zombie");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{stderr}");
    assert!(stderr.contains("--subscribe"), "{stderr}");
}
