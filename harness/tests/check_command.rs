//! `harness check <run>` re-checks a stored history: a clean history exits 0 with valid true, a
//! history with a lost acknowledged write exits 1 and names it, a missing history exits 2.

use std::process::Command;

fn write_run(dir: &std::path::Path, lines: &[&str]) {
    std::fs::write(dir.join("history.jsonl"), lines.join("\n") + "\n").expect("history");
}

const SEND0: [&str; 2] = [
    r#"{"index":0,"time_ns":1,"process":1,"type":"invoke","f":"send","value":[["send","k1",0]]}"#,
    r#"{"index":1,"time_ns":2,"process":1,"type":"ok","f":"send","value":[["send","k1",[0,0]]]}"#,
];
const SEND1: [&str; 2] = [
    r#"{"index":2,"time_ns":3,"process":1,"type":"invoke","f":"send","value":[["send","k1",1]]}"#,
    r#"{"index":3,"time_ns":4,"process":1,"type":"ok","f":"send","value":[["send","k1",[1,1]]]}"#,
];

#[test]
fn check_exit_codes_and_results_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = [
        SEND0[0],
        SEND0[1],
        r#"{"index":2,"time_ns":3,"process":2,"type":"invoke","f":"poll","value":[["poll"]]}"#,
        r#"{"index":3,"time_ns":4,"process":2,"type":"ok","f":"poll","value":[["poll",{"k1":[[0,0]]}]]}"#,
    ];
    write_run(dir.path(), &clean);
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("check")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("results.json")).expect("results"),
    )
    .expect("json");
    assert_eq!(results["valid"], true);

    let lost = [
        SEND0[0],
        SEND0[1],
        SEND1[0],
        SEND1[1],
        r#"{"index":4,"time_ns":5,"process":3,"type":"invoke","f":"send","value":[["send","k1",2]]}"#,
        r#"{"index":5,"time_ns":6,"process":3,"type":"ok","f":"send","value":[["send","k1",[2,2]]]}"#,
        r#"{"index":6,"time_ns":7,"process":2,"type":"invoke","f":"poll","value":[["poll"]]}"#,
        r#"{"index":7,"time_ns":8,"process":2,"type":"ok","f":"poll","value":[["poll",{"k1":[[0,0],[2,2]]}]]}"#,
    ];
    write_run(dir.path(), &lost);
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("check")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("lost-write: 1 (INVALID)"));

    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("check")
        .arg(empty.path())
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(254),
        "a folder without a run is a bad argument"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no history.jsonl"));
}
