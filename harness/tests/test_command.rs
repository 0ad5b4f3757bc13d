//! `harness test` as users run it, on the default netns backend: the run folder and test.json
//! are written, three real brokers are deployed, the queue workload runs for 30 s through the
//! native client (and, in a second run, through librdkafka) and the final reads follow, the
//! history is checked (a fault-free run is valid: exit 0; `unseen` invalidates, so every
//! acknowledged value was read in the final phase), and the teardown keeps the broker logs and
//! leaves no namespace.

use std::process::Command;
use std::sync::Mutex;

/// Runs on netns nodes one at a time: the "no namespace left behind" check compares the host's
/// namespaces before and after, which another test's cluster would disturb.
static NETNS: Mutex<()> = Mutex::new(());

/// What one `harness test` run left in its store.
struct StoredRun {
    #[cfg_attr(not(feature = "rdkafka"), allow(dead_code))] // read by the librdkafka test only
    run: std::path::PathBuf,
    results: serde_json::Value,
    history: String,
    _store: tempfile::TempDir,
}

/// Runs `harness test` with `args` as test `name` in a fresh store (one netns run at a time),
/// asserts exit 0 (`what` names the run in failures) and reads what it stored.
fn run_ok(what: &str, name: &str, args: &[&str]) -> StoredRun {
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let store = tempfile::tempdir().expect("tempdir");
    // Fault-free unless the caller names faults (the default test injects partitions and kills).
    let faults: &[&str] = if args.contains(&"--nemesis") {
        &[]
    } else {
        &["--nemesis", "none"]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("test")
        .args(args)
        .args(faults)
        .args(["--name", name, "--store"])
        .arg(store.path())
        .output()
        .expect("harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    let run = results::store::resolve_latest(&store.path().join(name).join("latest"))
        .expect("latest link");
    let results = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("json");
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    StoredRun {
        run,
        results,
        history,
        _store: store,
    }
}

#[test]
fn harness_test_deploys_stores_and_tears_down() {
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let store = tempfile::tempdir().expect("tempdir");
    let before: Vec<String> = harness::node::netns::list_netns();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--nodes",
            "3",
            "--time-limit",
            "30",
            "--nemesis",
            "none",
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
    let run =
        results::store::resolve_latest(&store.path().join("smoke/latest")).expect("latest link");
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
        results["stats"]["sends"]["ok"].as_u64().unwrap_or(0) >= 300,
        "{results:#}"
    );
    assert!(
        results["stats"]["reads"].as_u64().unwrap_or(0) >= 300,
        "{results:#}"
    );
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    assert!(history.lines().count() > 20);
    for n in ["n1", "n2", "n3"] {
        let log = std::fs::read_to_string(run.join("nodes").join(n).join("broker.log"))
            .expect("broker log kept");
        assert!(log.contains("broker listening"), "{n}: {log}");
        assert!(log.contains("broker shut down cleanly"), "{n}: {log}");
        let data = run.join("nodes").join(n).join("data-dir");
        assert!(
            data.join("meta").is_dir() && data.join("data").is_dir(),
            "{n}'s data dir (metadata log and partition logs) is kept in the store"
        );
    }
    let after: Vec<String> = harness::node::netns::list_netns();
    assert_eq!(before, after, "no namespace left behind");
}

/// The same 30 s run through librdkafka: the history has the same shape and checks valid
/// (`unseen` invalidates, so every acknowledged value was read in the final phase).
#[cfg(feature = "rdkafka")]
#[test]
fn the_rdkafka_client_path_runs_and_checks_valid() {
    let r = run_ok(
        "rdkafka",
        "rd",
        &["--nodes", "3", "--time-limit", "30", "--client", "rdkafka"],
    );
    let test_json = std::fs::read_to_string(r.run.join("test.json")).expect("test.json");
    assert!(test_json.contains("\"rdkafka\""), "{test_json}");
    let results = &r.results;
    assert_eq!(results["valid"], true, "{results:#}");
    assert!(
        results["stats"]["sends"]["ok"].as_u64().unwrap_or(0) >= 300,
        "{results:#}"
    );
}

/// The clients a run can use in this build.
fn clients() -> Vec<&'static str> {
    let mut clients = vec!["native"];
    if cfg!(feature = "rdkafka") {
        clients.push("rdkafka");
    }
    clients
}

/// Subscribed consumers (the group protocol, commits after each poll) through both clients,
/// with brokers killed under them: the run is valid and the workers really read through the
/// group before the final phase.
#[test]
fn subscribed_consumers_read_through_the_group_under_kills() {
    for client in clients() {
        let r = run_ok(
            client,
            "sub",
            &[
                "--nodes",
                "3",
                "--time-limit",
                "15",
                "--concurrency",
                "3",
                "--consumer-mode",
                "subscribe",
                "--client",
                client,
                "--nemesis",
                "kill",
                "--nemesis-interval",
                "5",
            ],
        );
        let results = &r.results;
        assert_eq!(results["valid"], true, "{client}: {results:#}");
        assert_eq!(results["options"]["subscribe"], true);
        // Reads by the workers themselves (not only the final reader, process 1000000).
        let worker_reads = r
            .history
            .lines()
            .filter(|l| l.contains("\"type\":\"ok\"") && l.contains("\"f\":\"poll\""))
            .filter(|l| !l.contains("\"process\":1000000"))
            .filter(|l| l.contains("[["))
            .filter(|l| !l.contains("[[\"poll\",{}]]"))
            .count();
        assert!(
            worker_reads > 0,
            "{client}: no worker read through the group"
        );
    }
}

/// Transactions (sends and read_committed polls in one `txn` op) through the native
/// `TransactionalProducer` and through librdkafka's, with brokers killed under them:
/// committed transactions carry their offsets and reads, and each run checks valid with the
/// transactional options.
#[test]
fn transactional_runs_check_valid_under_kills() {
    for client in clients() {
        let r = run_ok(
            client,
            "txn",
            &[
                "--nodes",
                "3",
                "--time-limit",
                "12",
                "--client",
                client,
                "--idempotence",
                "true",
                "--transactions",
                "true",
                "--isolation-level",
                "read_committed",
                "--nemesis",
                "kill",
                "--nemesis-interval",
                "5",
            ],
        );
        let results = &r.results;
        assert_eq!(results["valid"], true, "{client}: {results:#}");
        assert_eq!(results["options"]["transactions"], true);
        let committed = r
            .history
            .lines()
            .filter(|l| l.contains("\"type\":\"ok\"") && l.contains("\"f\":\"txn\""))
            .count();
        assert!(committed > 0, "{client}: no transaction committed");
    }
    // read_uncommitted consumers read aborted writes by design: refused up front, exit 2.
    let refused = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--idempotence", "true", "--transactions", "true"])
        .output()
        .expect("harness runs");
    assert_eq!(refused.status.code(), Some(254), "a bad spec exits 254");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read_committed"));
}

#[test]
fn faults_the_backend_cannot_do_are_refused_before_anything_starts() {
    let store = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--nodes",
            "3",
            "--backend",
            "local",
            "--nemesis",
            "kill,partition",
            "--store",
        ])
        .arg(store.path())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{stderr}");
    assert!(stderr.contains("partition"), "{stderr}");
    assert!(stderr.contains("root"), "the reason is given: {stderr}");
    assert!(!stderr.contains("brokers ready"), "{stderr}");
}

#[test]
fn bad_input_is_one_clear_line_and_exit_254() {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--nodes", "3", "--replication-factor", "5"])
        .output()
        .expect("harness runs");
    assert_eq!(out.status.code(), Some(254));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replication-factor"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--nodez", "3"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(254),
        "an unknown flag is a bad argument"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodez"));
    for (args, needle) in [
        (
            &["--nodes", "3", "--broker-prop", "min.insync.replicas=9"][..],
            "allow-unwritable",
        ),
        (
            &["--nodes", "3", "--broker-prop", "bogus.key=1"][..],
            "bogus.key",
        ),
        (&["--nemesis", "partition,meteor"][..], "meteor"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("test")
            .args(args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(254), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("--help")
        .output()
        .expect("runs");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("254 bad arguments"));
}
