//! The `zombie-consumer` fault end to end on netns nodes running real brokers: subscribed
//! consumers of the native client commit after every poll; the nemesis makes one at a time stop
//! polling for twice its session, the group rebalances its partitions to the others, which
//! commit past it, and then the zombie commits its old positions as the member it was. The
//! coordinator refuses every zombie commit (the member is gone), the group's committed offsets
//! never go back (no `lost-commit`), and the run checks valid.

use std::collections::BTreeMap;

use serde_json::Value;

mod support;

#[test]
fn zombie_commits_after_a_rebalance_are_refused_and_no_commit_is_lost() {
    let store = tempfile::tempdir().expect("tempdir");
    let out = support::harness(
        &[
            "test",
            "--nodes",
            "3",
            "--time-limit",
            "30",
            "--nemesis",
            "zombie-consumer",
            "--nemesis-interval",
            "8",
            "--consumer-mode",
            "subscribe",
            "--seed",
            "21",
            "--name",
            "zombie",
        ],
        store.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = support::latest_run(store.path(), "zombie");
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let ops: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).expect("history line"))
        .collect();
    // A stall the end of the main phase cut short is no zombie (it may still be a member);
    // the others stalled their whole 6 s, past the 3 s session.
    let zombies: Vec<(usize, &Value)> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o["process"] == "nemesis" && o["f"] == "zombie-commit")
        .filter(|(_, o)| o["value"]["stalled_ms"].as_u64().unwrap_or(0) >= 5_900)
        .collect();
    assert!(
        !zombies.is_empty(),
        "no zombie stalled its whole time\n{stderr}"
    );
    let mut shown = 0;
    for (i, z) in &zombies {
        let v = &z["value"];
        assert_eq!(v["rejoined_before_commit"], false, "{v}");
        let outcome = v["outcome"].as_str().unwrap_or("");
        assert!(
            outcome.starts_with("refused"),
            "a zombie's commit must be refused: {v}"
        );
        // The window really opened: during the stall another member committed one of the
        // zombie's partitions at or past the zombie's position.
        let zp = v["process"].as_u64().expect("process");
        let offsets: BTreeMap<String, i64> =
            serde_json::from_value(v["offsets"].clone()).expect("offsets");
        let stall_ops = (v["stalled_ms"].as_u64().unwrap_or(0) * 1_000_000) as i64;
        let t_end = z["time_ns"].as_i64().unwrap_or(0);
        let overtaken = ops[..*i].iter().any(|o| {
            o["f"] == "commit"
                && o["type"] == "ok"
                && o["process"].as_u64().is_some_and(|p| p != zp)
                && o["time_ns"].as_i64().unwrap_or(0) >= t_end - stall_ops
                && offsets
                    .iter()
                    .any(|(p, off)| o["value"][p.as_str()].as_i64().is_some_and(|c| c >= *off))
        });
        if overtaken {
            shown += 1;
        }
    }
    assert!(
        shown > 0,
        "no zombie was overtaken by another member's commit: {zombies:?}"
    );
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["valid"], true, "{results}");
    assert!(
        results["anomalies"].get("lost-commit").is_none(),
        "{results}"
    );
}
