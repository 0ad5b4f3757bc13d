//! A seeded schedule of every fault kind applied to netns nodes running a service, then the
//! final heal: every action applies (or is refused with a reason), every fault is undone, and
//! nothing of the run remains.

use std::path::PathBuf;
use std::time::Duration;

use harness::node::netns::{list_fault_mounts, list_links, list_netns};
use harness::node::{NetnsCluster, NetnsOptions};
use nemesis::schedule::{split_role, FOLLOWERS, LEADER};
use nemesis::{FaultKind, Nemesis, NemesisError, Schedule, ServiceSpec};

#[test]
fn a_seeded_schedule_applies_and_heals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster =
        NetnsCluster::create(3, dir.path(), NetnsOptions { disk_faults: true }).expect("cluster");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    for n in &nodes {
        std::fs::write(n.data_dir().join("segment"), vec![7u8; 4096]).expect("seed file");
        n.set_service(ServiceSpec {
            program: PathBuf::from("/bin/sleep"),
            args: vec!["600".into()],
            env: vec![],
            log_file: dir.path().join(format!("{}.log", n.name())),
            fake_clock: true,
        });
        n.start_service().expect("start");
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name().to_string()).collect();
    let kinds = [
        FaultKind::Partition,
        FaultKind::PacketLoss,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Clock,
        FaultKind::Disk,
        FaultKind::FileCorruption,
        FaultKind::FollowerRestartFailover,
    ];
    let schedule = Schedule::generate(
        99,
        &names,
        &kinds,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .expect("schedule");
    let nemesis = Nemesis::new(nodes.clone(), schedule.seed);
    nemesis
        .check_supported(&kinds)
        .expect("netns supports these");
    let mut applied = 0;
    let t0 = std::time::Instant::now();
    for step in &schedule.actions {
        eprintln!("{:?} applying {:?}", t0.elapsed(), step.action);
        // Stalled disks would block the next kill's lose-unfsynced scan only if it read through
        // the mount; it works on the backing dir, so every action can run back to back.
        // Role placeholders are resolved by the harness from broker metadata; these nodes run
        // no broker, so the leader is n1, its followers n2 and n3, and the controller n2.
        let action = step
            .action
            .resolve_roles(|role| {
                let names: &[&str] = match split_role(role).0 {
                    LEADER => &["n1"],
                    FOLLOWERS => &["n2", "n3"],
                    _ => &["n2"],
                };
                Some(names.iter().map(|n| n.to_string()).collect())
            })
            .expect("roles resolve");
        match nemesis.apply(&action) {
            Ok(op) => {
                assert!(!op.f.is_empty());
                applied += 1;
            }
            Err(e @ NemesisError::Unsupported { .. }) => panic!("refused: {e}"),
            Err(e) => panic!("{:?} failed: {e}", step.action),
        }
    }
    assert!(applied >= 10, "applied {applied}");
    eprintln!("{:?} final heal", t0.elapsed());
    for action in &schedule.final_heal {
        nemesis.apply(action).expect("final heal step");
    }
    for n in &nodes {
        assert!(n.service_pid().is_some(), "{} restarted", n.name());
        let tables = n.exec(&["nft", "list", "tables"]).expect("nft");
        assert!(
            !tables.stdout.contains("jepsen_nemesis"),
            "{}",
            tables.stdout
        );
        assert_eq!(
            std::fs::read_to_string(n.clock_file().expect("clock file"))
                .expect("read")
                .trim(),
            "+0"
        );
        assert!(!n.disk().expect("disk").active());
    }
    eprintln!("{:?} healed", t0.elapsed());
    drop(nemesis);
    cluster.teardown().expect("teardown");
    let prefix = format!("jh{id}");
    assert!(!list_netns()
        .iter()
        .any(|n| n.starts_with(&format!("{prefix}-"))));
    assert!(!list_links()
        .iter()
        .any(|l| l == &format!("{prefix}br") || l.starts_with(&format!("{prefix}v"))));
    assert!(!list_fault_mounts()
        .iter()
        .any(|m| m.starts_with(dir.path())));
}
