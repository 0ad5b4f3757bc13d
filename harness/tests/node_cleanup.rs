//! `cleanup_leftovers` after a SIGKILLed owner: a child process (this test binary re-run with
//! an env var) builds a netns cluster with fault FS mounts, a running service and a partition,
//! and is killed with SIGKILL; cleanup then removes its namespaces, links, mounts and processes.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use harness::node::netns::{list_fault_mounts, list_links, list_netns};
use harness::node::{cleanup_leftovers, NetnsCluster, NetnsOptions};
use nemesis::net::Topology;
use nemesis::{Action, Nemesis, Node, ServiceSpec};

const CHILD_ENV: &str = "JH_CLEANUP_CHILD_DIR";

/// Runs only inside the child: builds the cluster, prints its id, then waits to be killed.
#[test]
#[ignore = "helper run by leftovers_of_a_killed_owner_are_removed"]
fn child_builds_a_cluster_and_waits() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cluster = NetnsCluster::create(2, &PathBuf::from(&dir), NetnsOptions { disk_faults: true })
        .expect("cluster");
    let nodes: Vec<Arc<dyn Node>> = cluster.nodes();
    nodes[0].set_service(ServiceSpec {
        program: "/bin/sleep".into(),
        args: vec!["600".into()],
        env: vec![],
        log_file: PathBuf::from(&dir).join("n1.log"),
        fake_clock: false,
    });
    let pid = nodes[0].start_service().expect("start");
    let nemesis = Nemesis::new(nodes.clone(), 1);
    nemesis
        .apply(&Action::StartPartition {
            topology: Topology::IsolateOne,
            seed: None,
        })
        .expect("partition");
    println!("READY {} {pid}", cluster.id());
    std::mem::forget(nemesis);
    std::mem::forget(cluster);
    std::thread::sleep(std::time::Duration::from_secs(600));
}

#[test]
fn leftovers_of_a_killed_owner_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--ignored",
            "--exact",
            "child_builds_a_cluster_and_waits",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("stdout");
    let mut ready = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("READY ") {
            ready = Some(rest.to_string());
            break;
        }
    }
    let ready = ready.expect("child reported READY");
    let (id, pid) = ready.split_once(' ').expect("id pid");
    let prefix = format!("jh{id}");
    assert!(list_netns()
        .iter()
        .any(|n| n.starts_with(&format!("{prefix}-"))));
    let mounts_before: Vec<PathBuf> = list_fault_mounts()
        .into_iter()
        .filter(|m| m.starts_with(dir.path()))
        .collect();
    assert_eq!(mounts_before.len(), 2, "two fault FS mounts");
    child.kill().expect("SIGKILL the owner");
    child.wait().expect("reap");
    // The owner is dead; its service (in its own process group) is not.
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "service outlived owner"
    );

    let removed = cleanup_leftovers().expect("cleanup");
    assert!(removed.iter().any(|r| r.contains(id)), "{removed:?}");
    assert!(
        !list_netns()
            .iter()
            .any(|n| n.starts_with(&format!("{prefix}-"))),
        "namespaces gone"
    );
    assert!(
        !list_links()
            .iter()
            .any(|l| l == &format!("{prefix}br") || l.starts_with(&format!("{prefix}v"))),
        "links gone"
    );
    assert!(
        !list_fault_mounts()
            .iter()
            .any(|m| m.starts_with(dir.path())),
        "mounts gone"
    );
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "service killed"
    );
}
