//! Broker metrics during a real run (netns nodes, the bundled broker, kills and partitions):
//! `metrics.jsonl` holds a sample per node per second, with down or cut-off nodes as samples
//! saying so; the leader changes it shows agree with the Metadata the harness saw during the
//! run (`metadata.jsonl`); and the report's broker timeline draws each of them, with the fault
//! bands naming their nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

mod support;

#[test]
fn metrics_show_the_leader_changes_metadata_saw_and_the_report_draws_them() {
    let store = tempfile::tempdir().expect("tempdir");
    // The first seed whose schedule kills a node and partitions the network.
    let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    let seed = (1..100u64)
        .find(|s| {
            let schedule = nemesis::Schedule::generate(
                harness::seeds::Seeds::new(*s).schedule,
                &names,
                &[nemesis::FaultKind::Kill, nemesis::FaultKind::Partition],
                std::time::Duration::from_secs(25),
                std::time::Duration::from_secs(4),
            )
            .expect("schedule");
            let text = serde_json::to_string(&schedule.actions).expect("json");
            text.contains("\"action\":\"kill\"") && text.contains("\"action\":\"start-partition\"")
        })
        .expect("a seed with a kill and a partition");
    let out = support::harness(
        &[
            "test",
            "--nodes",
            "3",
            "--time-limit",
            "25",
            "--nemesis",
            "kill,partition",
            "--nemesis-interval",
            "4",
            "--seed",
            &seed.to_string(),
            "--name",
            "metrics",
        ],
        store.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = support::latest_run(store.path(), "metrics");
    // Whatever the verdict (or none, if the cluster did not recover), the metrics are there.
    println!("exit {:?}\n{stderr}", out.status.code());

    // A sample per node per second, through the faults.
    let samples = results::timeline::read(&run.join("metrics.jsonl"));
    let nodes: BTreeSet<&str> = samples.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["n1", "n2", "n3"]));
    assert!(samples.len() >= 3 * 20, "{} samples", samples.len());
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    let killed = history.contains("\"f\":\"kill\"");
    assert!(killed, "seed {seed} kills a node");
    {
        assert!(
            samples
                .iter()
                .any(|s| !s.up && s.error.as_deref().is_some_and(|e| e.contains("down"))),
            "a killed broker shows as down"
        );
    }
    // Every sample that answered names its broker id and reports the topic's partitions.
    for s in samples.iter().filter(|s| s.up) {
        assert_eq!(
            s.broker_id.map(|b| format!("n{b}")).as_deref(),
            Some(s.node.as_str())
        );
    }

    // Leader changes: each partition's first leader and at least one election after a fault.
    let changes = results::timeline::leader_changes(&samples);
    let partitions: BTreeSet<i32> = changes.iter().map(|c| c.partition).collect();
    assert!(!partitions.is_empty(), "no leader reported");
    assert!(
        changes.len() > partitions.len(),
        "kills and partitions moved no leadership: {changes:?}"
    );

    // They agree with Metadata: every (partition, leader, epoch) the harness's Metadata showed
    // in two or more samples is a leader change metrics.jsonl recorded, by the same node.
    let metadata = std::fs::read_to_string(run.join("metadata.jsonl")).expect("metadata.jsonl");
    let mut seen: BTreeMap<(i32, i32, i32), usize> = BTreeMap::new();
    for line in metadata.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("metadata line");
        let (Some(leaders), Some(epochs)) = (v["leaders"].as_array(), v["epochs"].as_array())
        else {
            continue;
        };
        for (p, (l, e)) in leaders.iter().zip(epochs).enumerate() {
            let (l, e) = (l.as_i64().unwrap_or(-1), e.as_i64().unwrap_or(-1));
            if l >= 0 {
                *seen.entry((p as i32, l as i32, e as i32)).or_default() += 1;
            }
        }
    }
    let recorded: BTreeSet<(i32, String, i32)> = changes
        .iter()
        .map(|c| (c.partition, c.leader.clone(), c.epoch))
        .collect();
    let steady: Vec<&(i32, i32, i32)> = seen
        .iter()
        .filter(|(_, n)| **n >= 2)
        .map(|(k, _)| k)
        .collect();
    assert!(steady.len() > partitions.len(), "{seen:?}");
    for (p, l, e) in steady {
        assert!(
            recorded.contains(&(*p, format!("n{l}"), *e)),
            "Metadata showed partition {p} led by n{l} at epoch {e}; metrics.jsonl has {recorded:?}"
        );
    }

    // The report draws each leader change, and labels the fault bands with their nodes.
    let html = std::fs::read_to_string(run.join("report.html")).expect("report.html");
    for c in &changes {
        let mark = format!(
            "data-partition=\"{}\" data-leader=\"{}\" data-epoch=\"{}\"",
            c.partition, c.leader, c.epoch
        );
        assert!(html.contains(&mark), "the report lacks {mark}");
    }
    {
        assert!(
            regex_like_kill_label(&html),
            "no fault band labelled `kill nX`"
        );
    }
    assert!(run.join("broker-timeline.svg").is_file());

    // Kept for a person to look at: the run's report and broker timeline, and a headless
    // Chromium screenshot of the timeline when a browser is installed.
    let keep = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broker-metrics-run");
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(&keep).expect("keep dir");
    for f in [
        "report.html",
        "broker-timeline.svg",
        "metrics.jsonl",
        "metadata.jsonl",
    ] {
        std::fs::copy(run.join(f), keep.join(f)).expect("copy");
    }
    if let Some(chrome) = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|c| {
            Command::new("which")
                .arg(c)
                .output()
                .is_ok_and(|o| o.status.success())
        })
    {
        let profile = tempfile::tempdir().expect("profile");
        let shot = keep.join("broker-timeline.png");
        let status = Command::new(chrome)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=980,360",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!(
                "file://{}",
                keep.join("broker-timeline.svg").display()
            ))
            .output()
            .expect("chromium runs");
        assert!(status.status.success(), "chromium failed");
        let png = std::fs::read(&shot).expect("screenshot");
        assert!(png.len() > 5_000, "a real screenshot, {} bytes", png.len());
        println!(
            "screenshot of the run's broker timeline: {}",
            shot.display()
        );
    }
}

/// Whether the page has a fault band label `kill n<digit>`.
fn regex_like_kill_label(html: &str) -> bool {
    html.match_indices(">kill n").any(|(i, m)| {
        html[i + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}
