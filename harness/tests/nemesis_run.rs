//! `harness test --nemesis ...` end to end on netns nodes running real brokers: the seeded
//! schedule is stored in test.json and is the one `Schedule::generate` gives for the seed, its
//! faults really run (nemesis ops in the history between client ops), the final heal runs in
//! its fixed order at the end of the main phase, the cluster recovers, the final reads follow,
//! the history checks valid (acks=all, RF=3, min.insync.replicas=2 is safe under these faults),
//! and nothing of the run — namespaces, nft tables, paused or stray brokers — remains.

use std::process::Command;
use std::time::Duration;

use nemesis::{FaultKind, Schedule};

#[test]
fn a_faulty_run_records_faults_heals_and_checks() {
    let store = tempfile::tempdir().expect("tempdir");
    let before = harness::node::netns::list_netns();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--nodes",
            "3",
            "--time-limit",
            "20",
            "--nemesis",
            "partition,kill,pause,clock",
            "--nemesis-interval",
            "3",
            "--seed",
            "7",
            "--name",
            "faulty",
            "--store",
        ])
        .arg(store.path())
        .output()
        .expect("harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run =
        results::store::resolve_latest(&store.path().join("faulty/latest")).expect("latest link");
    let history = std::fs::read_to_string(run.join("history.jsonl")).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{stderr}\n{}",
        history
            .lines()
            .filter(|l| l.contains("nemesis"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The schedule in test.json is the seed's schedule.
    let test_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).expect("test.json"))
            .expect("json");
    let stored: Schedule =
        serde_json::from_value(test_json["nemesis_schedule"].clone()).expect("schedule stored");
    let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    // The run draws its schedule from the seed tree's schedule branch of --seed 7.
    let expected = Schedule::generate(
        harness::seeds::Seeds::new(7).schedule,
        &names,
        &[
            FaultKind::Partition,
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Clock,
        ],
        Duration::from_secs(20),
        Duration::from_secs(3),
    )
    .expect("schedule");
    assert_eq!(stored, expected);
    assert!(stored.actions.len() >= 4, "{:?}", stored.actions);

    // Faults ran during the main phase, among client ops.
    let ops: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).expect("history line"))
        .collect();
    let nemesis: Vec<&serde_json::Value> =
        ops.iter().filter(|o| o["process"] == "nemesis").collect();
    let applied = nemesis
        .iter()
        .filter(|o| o["value"].get("error").is_none())
        .count();
    assert!(
        applied >= stored.actions.len() / 2 + stored.final_heal.len(),
        "{nemesis:#?}"
    );
    let first_fault = ops
        .iter()
        .position(|o| o["process"] == "nemesis")
        .expect("a fault");
    assert!(
        ops[first_fault..]
            .iter()
            .any(|o| o["process"] != "nemesis" && o["type"] == "ok"),
        "client ops continue after the first fault"
    );
    // The final heal, in its fixed order, before the final reads.
    let heal: Vec<&str> = nemesis
        .iter()
        .rev()
        .take(6)
        .rev()
        .map(|o| o["f"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        heal,
        [
            "stop-partition",
            "stop-packet-loss",
            "reset-clock",
            "stop-disk",
            "resume",
            "start"
        ]
    );
    let last_heal = ops
        .iter()
        .rposition(|o| o["process"] == "nemesis")
        .expect("heal");
    assert!(
        ops[last_heal..].iter().any(|o| o["f"] == "poll"),
        "final reads follow the heal"
    );

    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["valid"], true, "{results:#}");

    // Nothing left: namespaces gone, no nemesis nft table on the host, no broker process.
    assert_eq!(before, harness::node::netns::list_netns());
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("jepsen_nemesis"));
    let ps = Command::new("pgrep")
        .args(["-f", &run.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "no broker of the run still runs"
    );
}
