//! Histories with the consumer group's `commit` and `committed` ops: every reader and checker
//! takes them (the queue, transaction and cycle checkers ignore them, the statistics count
//! them as ops), the streaming and in-memory checks agree, and only the commits checker uses
//! them, flagging `lost-commit` when an acknowledged commit goes back.

use checkers::{check, check_file, read_history, stats, CheckOptions};
use serde_json::{json, Value};

fn subscribe() -> CheckOptions {
    CheckOptions {
        subscribe: true,
        ..CheckOptions::default()
    }
}

/// A subscribed worker (process 0) sends, polls, commits and reads its group's offsets; a
/// final reader (process 1000000) reads everything. `read_back` is what the `committed` read
/// after the second commit returns for partition 0.
fn history(read_back: i64) -> String {
    let ops: Vec<(u64, &str, &str, Value)> = vec![
        (0, "invoke", "send", json!([["send", "k0", 1]])),
        (0, "ok", "send", json!([["send", "k0", [0, 1]]])),
        (0, "invoke", "send", json!([["send", "k0", 2]])),
        (0, "ok", "send", json!([["send", "k0", [1, 2]]])),
        (0, "invoke", "poll", json!([["poll"]])),
        (0, "ok", "poll", json!([["poll", {"k0": [[0, 1]]}]])),
        (0, "invoke", "commit", json!({"0": 1})),
        (0, "ok", "commit", json!({"0": 1})),
        (0, "invoke", "committed", Value::Null),
        (0, "ok", "committed", json!({"0": 1})),
        (0, "invoke", "poll", json!([["poll"]])),
        (0, "ok", "poll", json!([["poll", {"k0": [[1, 2]]}]])),
        (0, "invoke", "commit", json!({"0": 2})),
        (0, "ok", "commit", json!({"0": 2})),
        (0, "invoke", "commit", json!({"0": 2})),
        (0, "fail", "commit", json!({"0": 2})),
        (0, "invoke", "committed", Value::Null),
        (0, "ok", "committed", json!({"0": read_back})),
        (1_000_000, "invoke", "poll", json!([["poll"]])),
        (
            1_000_000,
            "ok",
            "poll",
            json!([["poll", {"k0": [[0, 1], [1, 2]]}]]),
        ),
    ];
    ops.iter()
        .enumerate()
        .map(|(i, (p, t, f, v))| {
            json!({"index": i, "time_ns": i * 1000, "process": p, "type": t, "f": f, "value": v})
                .to_string()
                + "\n"
        })
        .collect()
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("commit-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn commit_ops_are_read_counted_and_ignored_by_the_queue_checkers() {
    let path = write("clean.jsonl", &history(2));
    let h = read_history(&path).expect("the reader takes commit ops");
    let from_file = check_file(&path, &subscribe()).expect("check_file takes commit ops");
    let in_memory = check(&h, &subscribe());
    assert_eq!(from_file, in_memory);
    assert_eq!(from_file.valid, json!(true), "{:?}", from_file.anomalies);
    assert!(from_file.anomalies.is_empty(), "{:?}", from_file.anomalies);
    assert!(from_file.checked.iter().any(|k| k == "lost-commit"));
    assert_eq!(
        from_file.stats["sends"]["ok"], 2,
        "commit ops are not sends"
    );
    assert_eq!(from_file.stats["polls"], 3, "commit ops are not polls");
    assert_eq!(from_file.stats["commits"]["ok"], 2);
    assert_eq!(from_file.stats["commits"]["fail"], 1);
    assert_eq!(from_file.stats["commits"]["reads"], 2);
    let s = stats::analyze(&h);
    let fs: Vec<&str> = s.quantiles.iter().map(|q| q.f.as_str()).collect();
    assert!(
        fs.contains(&"commit") && fs.contains(&"committed"),
        "{fs:?}"
    );
    assert!(s.faults.is_empty());
}

#[test]
fn a_commit_read_back_lower_invalidates_the_run_and_cites_both_ops() {
    let path = write("lost.jsonl", &history(1));
    let r = check_file(&path, &subscribe()).expect("check");
    assert_eq!(r.valid, json!(false));
    let f = &r.anomalies["lost-commit"];
    assert_eq!(f.count, 1);
    assert_eq!(
        f.examples[0],
        json!({"partition": 0, "committed_offset": 2, "read_offset": 1, "commit_op": 13, "read_op": 17})
    );
    assert_eq!(
        checkers::queue::example_ops(&f.examples[0]),
        vec![13, 17],
        "the report links both ops"
    );
    assert!(!f.explanation.is_empty());
    assert_eq!(r, check(&read_history(&path).expect("read"), &subscribe()));
    // The same history without the group's ops has nothing to flag.
    let without: String = history(1)
        .lines()
        .filter(|l| !l.contains("\"commit"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = write("no-commits.jsonl", &without);
    let r = check_file(&path, &subscribe()).expect("check");
    assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
    assert_eq!(r.valid, json!(true));
}
