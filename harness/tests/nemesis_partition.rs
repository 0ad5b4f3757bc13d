//! Partition topologies on real netns nodes: every pair's TCP reachability matches the
//! topology's grudge, heal restores all pairs, and nothing with the run's prefix remains.

use std::collections::BTreeMap;
use std::sync::Arc;

use harness::node::netns::{list_links, list_netns};
use harness::node::{NetnsCluster, NetnsOptions};
use nemesis::net::{grudge_for_seed, Topology};
use nemesis::{Action, Nemesis, Node};

const PROBE: &str = r#"
import os, socket, sys, threading
res = {}
port = int(os.environ.get("PROBE_PORT", "9"))
def probe(ip):
    s = socket.socket(); s.settimeout(1.0)
    try:
        s.connect((ip, port)); res[ip] = "ok"
    except ConnectionRefusedError:
        res[ip] = "ok"
    except Exception:
        res[ip] = "cut"
    finally:
        s.close()
ts = [threading.Thread(target=probe, args=(ip,)) for ip in sys.argv[1:]]
[t.start() for t in ts]; [t.join() for t in ts]
for ip in sys.argv[1:]: print(ip, res[ip])
"#;

/// (a, b) -> reachable on port 9, for every ordered pair.
fn matrix(nodes: &[Arc<dyn Node>]) -> BTreeMap<(String, String), bool> {
    matrix_on(nodes, 9)
}

/// (a, b) -> reachable on TCP `port` (refused counts as reachable), for every ordered pair.
fn matrix_on(nodes: &[Arc<dyn Node>], port: u16) -> BTreeMap<(String, String), bool> {
    let mut m = BTreeMap::new();
    let handles: Vec<_> = nodes
        .iter()
        .map(|a| {
            let a = a.clone();
            let others: Vec<(String, String)> = nodes
                .iter()
                .filter(|b| b.name() != a.name())
                .map(|b| (b.name().to_string(), b.address().to_string()))
                .collect();
            std::thread::spawn(move || {
                let env_port = format!("PROBE_PORT={port}");
                let mut argv = vec!["env", env_port.as_str(), "python3", "-c", PROBE];
                argv.extend(others.iter().map(|(_, ip)| ip.as_str()));
                let out = a.exec(&argv).expect("probe runs");
                assert!(out.success(), "probe failed: {}", out.stderr);
                others
                    .iter()
                    .map(|(name, ip)| {
                        let line = out
                            .stdout
                            .lines()
                            .find(|l| l.starts_with(&format!("{ip} ")))
                            .expect("probe line");
                        ((a.name().to_string(), name.clone()), line.ends_with(" ok"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        m.extend(h.join().expect("probe thread"));
    }
    m
}

fn host_reaches(node: &dyn Node) -> bool {
    let addr = std::net::SocketAddr::new(node.address(), 9);
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

fn assert_clean(id: &str) {
    let prefix = format!("jh{id}");
    assert!(
        !list_netns()
            .iter()
            .any(|n| n.starts_with(&format!("{prefix}-"))),
        "namespaces left"
    );
    assert!(
        !list_links()
            .iter()
            .any(|l| l == &format!("{prefix}br") || l.starts_with(&format!("{prefix}v"))),
        "links left"
    );
}

#[test]
fn every_topology_cuts_exactly_its_grudge_and_heals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        NetnsCluster::create(5, dir.path(), NetnsOptions::default()).expect("cluster");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    let names: Vec<String> = nodes.iter().map(|n| n.name().to_string()).collect();
    let before = matrix(&nodes);
    assert!(
        before.values().all(|ok| *ok),
        "all pairs connect before: {before:?}"
    );
    let topologies = [
        Topology::IsolateOne,
        Topology::IsolateNode { node: "n3".into() },
        Topology::MajorityMinority,
        Topology::MajoritiesRing,
        Topology::Bridge,
        Topology::CutClients {
            node: Some("n2".into()),
        },
    ];
    for (i, topology) in topologies.iter().enumerate() {
        let seed = 40 + i as u64;
        let nemesis = Nemesis::new(nodes.clone(), seed);
        // The nemesis draws the grudge from its seeded rng: recompute it the same way.
        let expected = grudge_for_seed(topology, &names, seed).expect("grudge");
        let op = nemesis
            .apply(&Action::StartPartition {
                topology: topology.clone(),
                seed: None,
            })
            .expect("partition");
        assert_eq!(op.f, "start-partition");
        assert_eq!(op.value["topology"], topology.name());
        let cut_pairs = expected.drops.values().map(|s| s.len()).sum::<usize>();
        if !matches!(topology, Topology::CutClients { .. }) {
            assert!(cut_pairs > 0, "{} cuts something", topology.name());
        }
        let during = matrix(&nodes);
        for ((a, b), ok) in &during {
            assert_eq!(
                *ok,
                !expected.cut(a, b),
                "{}: {a}->{b} reachable={ok}",
                topology.name()
            );
        }
        if let Topology::CutClients { node: Some(target) } = topology {
            for n in &nodes {
                assert_eq!(
                    host_reaches(n.as_ref()),
                    n.name() != target,
                    "client reach {}",
                    n.name()
                );
            }
        }
        let healed = nemesis.apply(&Action::StopPartition).expect("heal");
        assert_eq!(healed.f, "stop-partition");
        let after = matrix(&nodes);
        assert!(
            after.values().all(|ok| *ok),
            "{}: all pairs connect after heal",
            topology.name()
        );
        assert!(nodes.iter().all(|n| host_reaches(n.as_ref())));
    }
    cluster.teardown().expect("teardown");
    assert_clean(&id);
}

#[test]
fn a_port_cut_isolates_one_node_on_that_port_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        NetnsCluster::create(3, dir.path(), NetnsOptions::default()).expect("cluster");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    let nemesis = Nemesis::new(nodes.clone(), 1);
    let op = nemesis
        .apply(&Action::StartPartition {
            topology: Topology::CutPort {
                node: "n1".into(),
                port: 9,
            },
            seed: None,
        })
        .expect("port cut");
    assert_eq!(op.value["port"], 9);
    for ((a, b), ok) in &matrix_on(&nodes, 9) {
        let touches_n1 = a == "n1" || b == "n1";
        assert_eq!(*ok, !touches_n1, "port 9: {a}->{b} reachable={ok}");
    }
    assert!(
        matrix_on(&nodes, 10).values().all(|ok| *ok),
        "other ports flow"
    );
    // Clients (the host) still reach the cut node on that port.
    assert!(host_reaches(nodes[0].as_ref()));
    nemesis.apply(&Action::StopPartition).expect("heal");
    assert!(matrix_on(&nodes, 9).values().all(|ok| *ok));
    drop(nemesis);
    cluster.teardown().expect("teardown");
    assert_clean(&id);
}

#[test]
fn packet_loss_drops_some_and_heal_removes_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        NetnsCluster::create(2, dir.path(), NetnsOptions::default()).expect("cluster");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    let nemesis = Nemesis::new(nodes.clone(), 1);
    nemesis
        .apply(&Action::StartPacketLoss {
            nodes: vec!["n1".into()],
            percent: 100,
        })
        .expect("loss");
    let tables = nodes[0].exec(&["nft", "list", "tables"]).expect("nft");
    assert!(tables.stdout.contains("jepsen_nemesis_loss"));
    assert!(
        !matrix(&nodes)[&("n2".to_string(), "n1".to_string())],
        "100% loss cuts n2->n1"
    );
    // Latency is refused with a reason on this kernel (no netem) or applied where it exists.
    if let Err(e) = nemesis.check_supported(&[nemesis::FaultKind::Latency]) {
        assert!(e.to_string().contains("netem"), "{e}");
    }
    drop(nemesis); // the guard heals
    let tables = nodes[0].exec(&["nft", "list", "tables"]).expect("nft");
    assert!(
        !tables.stdout.contains("jepsen_nemesis"),
        "table left: {}",
        tables.stdout
    );
    assert!(matrix(&nodes).values().all(|ok| *ok));
    cluster.teardown().expect("teardown");
    assert_clean(&id);
}
