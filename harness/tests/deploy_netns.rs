//! Deploys the real broker onto a 3-node netns cluster: every broker comes up in its own
//! namespace, they form the metadata quorum (kcat from the host sees three brokers and a
//! controller), and teardown leaves no namespace behind.

use std::path::PathBuf;
use std::time::Duration;

use harness::deploy::{start_brokers, stop_brokers, wait_ready, KAFKA_PORT};
use harness::node::{NetnsCluster, NetnsOptions};
use harness::spec::TestSpec;

/// The broker binary built in the same target dir (`cargo test --workspace` builds it first).
fn broker_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("broker"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} missing: build it with `cargo build -p broker`",
        bin.display()
    );
    bin
}

#[test]
fn three_brokers_deploy_into_namespaces_and_form_a_cluster() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut cluster = NetnsCluster::create(3, base.path(), NetnsOptions::default())
        .expect("netns cluster (needs root)");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    let spec = TestSpec {
        nodes: 3,
        replication_factor: 3,
        ..TestSpec::default()
    };
    start_brokers(&nodes, &spec, &broker_bin(), false).expect("brokers start");
    wait_ready(&nodes, Duration::from_secs(60)).expect("brokers ready");
    // The quorum registers every broker; poll metadata from the host through node 1.
    let bootstrap = format!("{}:{KAFKA_PORT}", nodes[0].address());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let out = std::process::Command::new("kcat")
            .args(["-b", &bootstrap, "-L", "-m", "5"])
            .output()
            .expect("kcat installed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(" 3 brokers:") && text.contains("(controller)") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cluster never showed 3 brokers: {text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    println!("{listing}");
    for n in &nodes {
        assert!(
            listing.contains(&format!("at {}:{KAFKA_PORT}", n.address())),
            "{listing}"
        );
    }
    stop_brokers(&nodes, Duration::from_secs(5));
    for n in &nodes {
        let log =
            std::fs::read_to_string(harness::deploy::broker_log(n.as_ref())).unwrap_or_default();
        assert!(
            log.contains("broker shut down cleanly"),
            "{}: {log}",
            n.name()
        );
    }
    cluster.teardown().expect("teardown");
    let left: Vec<String> = harness::node::netns::list_netns()
        .into_iter()
        .filter(|n| n.contains(&id))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
