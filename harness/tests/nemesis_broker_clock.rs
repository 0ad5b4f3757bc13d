//! The broker really sees a clock fault: a broker deployed with libfaketime on a netns node
//! stamps records of a `LogAppendTime` topic with its own clock, so after a +1 h bump the
//! timestamps kcat reads back are an hour ahead of ours, and after the reset they are not.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::deploy::{start_brokers, stop_brokers, wait_ready, KAFKA_PORT};
use harness::node::{NetnsCluster, NetnsOptions};
use harness::spec::TestSpec;
use nemesis::{Action, Nemesis, Node};

fn broker_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("broker"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} missing: `cargo build -p broker`",
        bin.display()
    );
    bin
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Produces `value` with kcat and returns the timestamp the broker stored for it.
fn produce_and_read_timestamp(bootstrap: &str, value: &str) -> i64 {
    let mut p = Command::new("kcat")
        .args([
            "-P",
            "-b",
            bootstrap,
            "-t",
            harness::workload::TOPIC,
            "-p",
            "0",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat");
    {
        use std::io::Write;
        let mut stdin = p.stdin.take().expect("stdin");
        writeln!(stdin, "{value}").expect("write");
    }
    assert!(p.wait().expect("kcat").success());
    let out = Command::new("kcat")
        .args([
            "-C",
            "-b",
            bootstrap,
            "-t",
            harness::workload::TOPIC,
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%T %s\n",
        ])
        .output()
        .expect("kcat");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(_, v)| *v == value)
        .and_then(|(t, _)| t.parse().ok())
        .unwrap_or_else(|| panic!("{value} not read back: {text}"))
}

#[test]
fn a_bumped_clock_moves_the_brokers_log_append_timestamps() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        NetnsCluster::create(1, base.path(), NetnsOptions::default()).expect("netns (root)");
    let nodes: Vec<Arc<dyn Node>> = cluster.nodes();
    let mut spec = TestSpec {
        nodes: 1,
        replication_factor: 1,
        partitions: 1,
        ..TestSpec::default()
    };
    spec.broker
        .insert("log.message.timestamp.type".into(), "LogAppendTime".into());
    start_brokers(&nodes, &spec, &broker_bin(), true).expect("broker starts with libfaketime");
    wait_ready(&nodes, Duration::from_secs(60)).expect("ready");
    let bootstrap = format!("{}:{KAFKA_PORT}", nodes[0].address());
    harness::workload::create_topic(&bootstrap, &spec).expect("topic");
    let nemesis = Nemesis::new(nodes.clone(), 1);

    let before = produce_and_read_timestamp(&bootstrap, "before");
    assert!((before - now_ms()).abs() < 30_000, "unskewed: {before}");

    let hour = 3_600_000;
    nemesis
        .apply(&Action::BumpClock {
            nodes: vec!["n1".into()],
            offset_ms: hour,
        })
        .expect("bump");
    std::thread::sleep(Duration::from_secs(1));
    let skewed = produce_and_read_timestamp(&bootstrap, "skewed");
    let ahead = skewed - now_ms();
    assert!(
        (hour - 60_000..hour + 60_000).contains(&ahead),
        "the broker stamped {skewed}, {ahead} ms from our clock"
    );

    nemesis
        .apply(&Action::ResetClock {
            nodes: vec!["n1".into()],
        })
        .expect("reset");
    std::thread::sleep(Duration::from_secs(1));
    let after = produce_and_read_timestamp(&bootstrap, "after");
    assert!((after - now_ms()).abs() < 30_000, "reset: {after}");

    drop(nemesis);
    stop_brokers(&nodes, Duration::from_secs(5));
    cluster.teardown().expect("teardown");
}
