//! The harness itself SIGKILLed mid-run (brokers up, a partition in place), then
//! `harness clean`: no namespace, link, fault mount or broker process of the run remains.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_sigkilled_run_is_cleaned_up_by_harness_clean() {
    let store = tempfile::tempdir().expect("tempdir");
    let before = harness::node::netns::list_netns();
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--nodes",
            "3",
            "--time-limit",
            "120",
            "--nemesis",
            "partition,disk",
            "--nemesis-interval",
            "1",
            "--name",
            "killed",
            "--store",
        ])
        .arg(store.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("harness starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push(line.clone());
        if line.contains("nemesis") && line.contains("actions over") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("brokers ready")),
        "the run got going: {seen:#?}"
    );
    // Let faults start (the first within ~1.5 s), then kill without any chance to clean up.
    std::thread::sleep(Duration::from_secs(4));
    child.kill().expect("SIGKILL the harness");
    let _ = child.wait();
    let run =
        results::store::resolve_latest(&store.path().join("killed/latest")).expect("run folder");
    let run_dir = run.display().to_string();
    let ours: Vec<String> = harness::node::netns::list_netns()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(
        !ours.is_empty(),
        "the killed run left namespaces behind (else this test shows nothing)"
    );
    // Namespaces are named jh<run id>-n<i>; links jh<run id>br / jh<run id>v...
    let prefix = ours[0].split('-').next().unwrap_or("jh").to_string();

    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("clean")
        .output()
        .expect("harness clean");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("removed"), "{said}");

    let ns = harness::node::netns::list_netns();
    assert!(
        !ns.iter().any(|n| ours.contains(n)),
        "namespaces left: {ns:?}"
    );
    let mounts = harness::node::netns::list_fault_mounts();
    assert!(
        !mounts.iter().any(|m| m.starts_with(&run)),
        "mounts left: {mounts:?}"
    );
    let links = harness::node::netns::list_links();
    assert!(
        !links.iter().any(|l| l.starts_with(&prefix)),
        "links left: {links:?}"
    );
    let ps = Command::new("pgrep")
        .args(["-f", &run_dir])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "processes of the run left"
    );
}
