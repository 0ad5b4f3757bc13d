//! `harness test` as users run it, on the default netns backend: the run folder and test.json
//! are written, three real brokers are deployed, the queue workload runs through librdkafka and
//! the final reads follow, the history is checked (a fault-free run is valid: exit 0), and the
//! teardown keeps the broker logs and leaves no namespace.

use std::process::Command;

#[test]
fn harness_test_deploys_stores_and_tears_down() {
    let store = tempfile::tempdir().expect("tempdir");
    let before: Vec<String> = harness::node::netns::list_netns();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--nodes",
            "3",
            "--time-limit",
            "1",
            "--name",
            "smoke",
            "--store",
        ])
        .arg(store.path())
        .output()
        .expect("harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("3 brokers ready"), "{stderr}");
    let run = std::fs::read_link(store.path().join("smoke/latest")).expect("latest link");
    let test_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).expect("test.json"))
            .expect("json");
    assert_eq!(test_json["spec"]["nodes"], 3);
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["valid"], true, "{results:#}");
    assert!(
        results["stats"]["sends"]["ok"].as_u64().unwrap_or(0) >= 5,
        "{results:#}"
    );
    assert!(
        results["stats"]["reads"].as_u64().unwrap_or(0) >= 5,
        "{results:#}"
    );
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    assert!(history.lines().count() > 20);
    for n in ["n1", "n2", "n3"] {
        let log = std::fs::read_to_string(run.join("nodes").join(n).join("broker.log"))
            .expect("broker log kept");
        assert!(log.contains("broker listening"), "{n}: {log}");
        assert!(log.contains("broker shut down cleanly"), "{n}: {log}");
    }
    let after: Vec<String> = harness::node::netns::list_netns();
    assert_eq!(before, after, "no namespace left behind");
}

#[test]
fn faults_not_wired_yet_are_refused_before_anything_starts() {
    let store = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--nodes", "3", "--nemesis", "partition", "--store"])
        .arg(store.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not wired"));
}

#[test]
fn bad_input_is_one_clear_line_and_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--nodes", "3", "--replication-factor", "5"])
        .output()
        .expect("harness runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replication-factor"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--nodez", "3"])
        .output()
        .expect("runs");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodez"));
}
