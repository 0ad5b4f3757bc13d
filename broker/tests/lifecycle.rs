//! Broker process lifecycle against real processes: the exclusive `.lock` on the log and
//! metadata dirs (a second broker on the same dirs exits non-zero, naming the dir and the
//! holder, and changes nothing), and controlled shutdown on SIGTERM (the leaderships move
//! before the process exits).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use support::{create_topic_retrying, free_port, BrokerProc, Conn};

/// What a second broker could have changed under `dir`: the set of files (temporary ones
/// aside), the contents of every `.lock`, and the inode and modification time of every Raft log
/// (the old behaviour rewrote `raft-log.jsonl` through a rename on open). The running broker
/// itself rewrites only its checkpoints meanwhile.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let m = e.metadata().expect("metadata");
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path().display().to_string();
            if m.is_dir() {
                stack.push(e.path());
            } else if name == ".lock" {
                out.insert(path, std::fs::read_to_string(e.path()).expect("lock"));
            } else if name == "raft-log.jsonl" {
                out.insert(
                    path,
                    format!("inode {} mtime {}.{}", m.ino(), m.mtime(), m.mtime_nsec()),
                );
            } else if !name.ends_with(".tmp") {
                out.insert(path, String::new());
            }
        }
    }
    out
}

#[test]
fn a_second_broker_on_the_same_dirs_exits_non_zero_naming_the_dir_and_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    create_topic_retrying(&nodes, "locked", 1, 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acked = 0;
    while acked < 5 {
        let leader = nodes[0]
            .connect()
            .topic_metadata("locked")
            .ok()
            .map_or(-1, |p| p[0].0);
        if leader > 0 {
            let mut c = nodes[(leader - 1) as usize].connect();
            if let Ok((0, _)) = c.produce("locked", 0, build_batch(0, 0, &[(None, Some(b"x"))]), -1)
            {
                acked += 1;
                continue;
            }
        }
        assert!(Instant::now() < deadline, "produce failed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Node 1's data dirs, with a config of other ports: only the dirs collide.
    let n1 = &nodes[0];
    let data = n1.dir.join("data");
    let before = snapshot(&data);
    let mut text = std::fs::read_to_string(n1.dir.join("server.properties")).expect("config");
    text = text.replace(
        &format!("127.0.0.1:{}", n1.port),
        &format!("127.0.0.1:{}", free_port()),
    );
    text = text.replace(
        &format!("127.0.0.1:{}", n1.metrics_port),
        &format!("127.0.0.1:{}", free_port()),
    );
    let second_cfg = n1.dir.join("second.properties");
    std::fs::write(&second_cfg, text).expect("write");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--config")
        .arg(&second_cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run second broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second broker must fail: {stderr}"
    );
    let pid = n1.pid().expect("first running").to_string();
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains(&pid),
        "the message names the dir and the holder pid {pid}: {stderr}"
    );
    println!(
        "second broker refused in {:?}: {}",
        started.elapsed(),
        stderr.lines().last().unwrap_or_default()
    );
    assert_eq!(
        snapshot(&data),
        before,
        "the refused broker changed nothing on disk"
    );
    // The first keeps running and serving, and restarts cleanly afterwards.
    assert!(
        Conn::try_connect(&n1.addr()).is_some(),
        "first broker still serves"
    );
    nodes[0].restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(parts) = nodes[0].connect().topic_metadata("locked") {
            if parts[0].0 > 0 && parts[0].1.len() == 3 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "restarted node never rejoined the ISR"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let leader = nodes[0].connect().topic_metadata("locked").expect("md")[0].0;
    let (_, hw, _, _) = nodes[(leader - 1) as usize]
        .connect()
        .fetch("locked", 0, 0, 0);
    assert_eq!(hw, 5, "every acknowledged record is still there");
}

#[test]
fn sigterm_of_a_leader_moves_its_partitions_before_the_process_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long session: without controlled shutdown nothing would move for 30 s.
    let mut nodes =
        BrokerProc::start_cluster(dir.path(), 3, &[("broker.session.timeout.ms", "30000")]);
    create_topic_retrying(&nodes, "moving", 3, 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Partition 1 is led by node 2 (round-robin).
    loop {
        if let Ok(parts) = nodes[0].connect().topic_metadata("moving") {
            if parts.iter().all(|(l, isr)| *l > 0 && isr.len() == 3) {
                assert_eq!(parts[1].0, 2);
                break;
            }
        }
        assert!(Instant::now() < deadline, "partitions never in sync");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = Instant::now();
    nodes[1].term();
    // While node 2 is still running, another broker already reports a new leader.
    let mut moved_at = None;
    let exited = loop {
        if let Some(status) = nodes[1].wait_exit(Duration::from_millis(20)) {
            break (status, sent.elapsed());
        }
        if moved_at.is_none() {
            let parts = Conn::try_connect(&nodes[2].addr())
                .and_then(|mut c| c.topic_metadata("moving").ok());
            if parts.is_some_and(|p| p[1].0 > 0 && p[1].0 != 2) {
                moved_at = Some(sent.elapsed());
            }
        }
        assert!(sent.elapsed() < Duration::from_secs(40), "never exited");
    };
    let (status, exit_after) = exited;
    println!(
        "SIGTERM of leader 2: new leader visible after {moved_at:?}, exit after {exit_after:?}"
    );
    assert!(status.success(), "clean exit: {status:?}");
    let moved = moved_at.expect("a new leader was visible before the process exited");
    assert!(moved < exit_after);
    assert!(
        exit_after < Duration::from_secs(15),
        "controlled shutdown took {exit_after:?}"
    );
}
