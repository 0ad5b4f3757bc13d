//! Nightly runs that always finish: a `--test-count` series under every fault kind ends each
//! run with a verdict and writes its summary; a kill that loses unfsynced writes on a majority
//! of nodes (their data dirs on the fault FS) still lets every broker restart, because configs
//! and logs live outside the fault FS; seeds are fresh by default and recorded; runs keep their
//! own `harness.log` and relative `latest` links.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use harness::deploy::{broker_config, check_started, start_brokers, wait_ready, StartCheck};
use harness::node::{NetnsCluster, NetnsOptions};
use harness::spec::TestSpec;
use nemesis::{Action, Nemesis};

/// One netns cluster at a time in this file.
static NETNS: Mutex<()> = Mutex::new(());

#[test]
fn a_series_under_every_fault_gives_every_run_a_verdict() {
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let store = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--test-count",
            "3",
            "--time-limit",
            "30",
            "--nemesis",
            "partition,kill,pause,clock,disk,packet-loss",
            "--nemesis-interval",
            "5",
            "--name",
            "nightly",
            "--store",
        ])
        .arg(store.path())
        .output()
        .expect("harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let series_dir = store.path().join("nightly/series");
    let summary_path = std::fs::read_dir(&series_dir)
        .unwrap_or_else(|e| panic!("no series folder ({e}): {stderr}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("summary.json"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no summary.json: {stderr}"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).expect("read")).expect("json");
    println!("{stdout}");
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{summary:#}");
    let first = summary["first_seed"].as_u64().expect("seed");
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(
            r["seed"].as_u64(),
            Some(first + i as u64),
            "successive seeds"
        );
        assert!(
            r["verdict"] == "valid" || r["verdict"] == "invalid",
            "run {i} ended without a verdict: {r:#}\n{stderr}"
        );
        assert!(
            r["summary"]["sends_ok"].as_u64().unwrap_or(0) > 0,
            "run {i} acknowledged nothing: {r:#}"
        );
        assert!(
            r["summary"]["faults"]
                .as_object()
                .is_some_and(|f| !f.is_empty()),
            "run {i} injected no fault: {r:#}"
        );
    }
    let code = out.status.code().expect("exit code");
    assert_eq!(
        u64::from(code as u8),
        summary["exit_code"].as_u64().expect("code")
    );
    assert!(code == 0 || code == 1, "{stderr}");
    assert!(stdout.contains("3 runs:"), "the table is printed: {stdout}");
    // Each run keeps its own log with the seed and the final summary in it.
    let run = runs[0]["summary"]["run"].as_str().expect("run folder");
    let log = std::fs::read_to_string(PathBuf::from(run).join("harness.log")).expect("log");
    assert!(log.contains(&format!("seed {first}")), "{log}");
    assert!(log.contains("harness: summary"), "{log}");
    let test_json = std::fs::read_to_string(PathBuf::from(run).join("test.json")).expect("json");
    assert!(test_json.contains("\"seeds\""), "the seed tree is recorded");
    // The latest link is relative (a store can be moved).
    let link = std::fs::read_link(store.path().join("nightly/latest")).expect("link");
    assert!(link.is_relative(), "{}", link.display());
}

#[test]
fn a_kill_losing_unfsynced_writes_on_a_majority_still_restarts_every_broker() {
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let base = tempfile::tempdir().expect("tempdir");
    let mut cluster = NetnsCluster::create(3, base.path(), NetnsOptions { disk_faults: true })
        .expect("netns cluster with the fault FS (needs root)");
    let nodes = cluster.nodes();
    let spec = TestSpec {
        nodes: 3,
        replication_factor: 3,
        ..TestSpec::default()
    };
    start_brokers(
        &nodes,
        &spec,
        &harness::run::find_broker_bin().expect("broker binary"),
        false,
    )
    .expect("brokers start");
    wait_ready(&nodes, Duration::from_secs(60)).expect("brokers ready");
    for n in &nodes {
        let config = broker_config(n.as_ref());
        assert!(
            !config.starts_with(n.data_dir()),
            "{}'s config {} must not be on the fault FS",
            n.name(),
            config.display()
        );
    }
    let nemesis = Nemesis::new(nodes.clone(), 5);
    let op = nemesis
        .apply(&Action::Kill {
            nodes: vec!["n1".into(), "n2".into()],
            lose_unfsynced: true,
        })
        .expect("kill losing unfsynced writes");
    println!("{}", op.value);
    nemesis
        .apply(&Action::Start {
            nodes: vec!["n1".into(), "n2".into()],
        })
        .expect("restart");
    for n in &nodes {
        let config = std::fs::read_to_string(broker_config(n.as_ref())).expect("config kept");
        assert!(config.contains("node.id="), "{}: {config}", n.name());
        assert_eq!(
            check_started(
                n.as_ref(),
                harness::deploy::KAFKA_PORT,
                Duration::from_secs(30)
            ),
            StartCheck::Answering,
            "{} did not come back: {}",
            n.name(),
            harness::deploy::log_tail(&harness::deploy::broker_log(n.as_ref()), 20)
        );
    }
    wait_ready(&nodes, Duration::from_secs(60)).expect("every broker ready again");
    drop(nemesis);
    harness::deploy::stop_brokers(&nodes, Duration::from_secs(5));
    cluster.teardown().expect("teardown");
}

#[test]
fn the_seed_is_fresh_by_default_printed_and_replayable() {
    let store = tempfile::tempdir().expect("tempdir");
    // Local backend, one node: quick; the seed handling is the same on every backend.
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args([
                "test",
                "--backend",
                "local",
                "--nodes",
                "1",
                "--replication-factor",
                "1",
                "--nemesis",
                "kill",
                "--time-limit",
                "3",
                "--name",
                "seeds",
                "--store",
            ])
            .arg(store.path())
            .args(extra)
            .output()
            .expect("harness runs");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let run = results::store::resolve_latest(&store.path().join("seeds/latest"))
            .unwrap_or_else(|| panic!("no run: {stderr}"));
        let test_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).expect("read"))
                .expect("json");
        (stderr, test_json)
    };
    let (e1, t1) = run(&[]);
    let (_, t2) = run(&[]);
    let s1 = t1["seed"].as_u64().expect("seed recorded");
    assert_ne!(Some(s1), t2["seed"].as_u64(), "two default runs, two seeds");
    assert!(
        e1.contains(&format!("seed {s1}")),
        "the seed is printed: {e1}"
    );
    let (_, t3) = run(&["--seed", &s1.to_string()]);
    assert_eq!(t3["seed"], t1["seed"]);
    assert_eq!(
        t3["nemesis_schedule"], t1["nemesis_schedule"],
        "--seed replays the schedule"
    );
    assert_eq!(t3["seeds"], t1["seeds"]);
}
