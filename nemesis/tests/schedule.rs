//! The seeded schedule: same seed same schedule, different seed different schedule, final heal
//! in the fixed order, and only the requested kinds.

use std::time::Duration;

use nemesis::schedule::final_heal;
use nemesis::{Action, FaultKind, Schedule};

fn nodes() -> Vec<String> {
    (1..=5).map(|i| format!("n{i}")).collect()
}

fn gen(seed: u64, kinds: &[FaultKind]) -> Schedule {
    Schedule::generate(
        seed,
        &nodes(),
        kinds,
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .expect("schedule")
}

#[test]
fn same_seed_same_schedule_different_seed_different() {
    let kinds = [
        FaultKind::Partition,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Clock,
        FaultKind::Disk,
    ];
    let a = gen(42, &kinds);
    let b = gen(42, &kinds);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert!(a.actions.len() > 5, "{} actions", a.actions.len());
    assert_ne!(a, gen(43, &kinds));
    assert!(a.actions.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(a.actions.iter().all(|s| s.at_ms <= 120_000));
    assert_eq!(a.final_heal, final_heal(&nodes()));
    assert!(matches!(a.final_heal[0], Action::StopPartition));
    assert!(matches!(a.final_heal.last(), Some(Action::Start { .. })));
}

#[test]
fn only_requested_kinds_appear() {
    let s = gen(1, &[FaultKind::Pause]);
    assert!(s
        .actions
        .iter()
        .all(|a| matches!(a.action, Action::Pause { .. } | Action::Resume { .. })));
    assert!(FaultKind::parse("bogus").is_err());
}

#[test]
fn scripted_failovers_name_one_partitions_leader_and_followers() {
    use nemesis::net::Topology;
    use nemesis::schedule::{split_role, ScheduleOptions, FOLLOWERS, LEADER};
    let s = gen(7, &[FaultKind::FollowerRestartFailover]);
    // kill @followers/P, isolate @leader/P, start every node, then heal: in that order.
    let steps: Vec<&Action> = s.actions.iter().take(4).map(|a| &a.action).collect();
    let (Action::Kill { nodes: killed, .. }, Action::StartPartition { topology, .. }) =
        (steps[0], steps[1])
    else {
        panic!("{steps:?}");
    };
    let Topology::IsolateNode { node: isolated } = topology else {
        panic!("{topology:?}");
    };
    let (f, fp) = split_role(&killed[0]);
    let (l, lp) = split_role(isolated);
    assert_eq!((f, l), (FOLLOWERS, LEADER));
    assert!(
        fp.is_some() && fp == lp,
        "one partition: {killed:?} {isolated}"
    );
    assert!(matches!(steps[2], Action::Start { nodes } if nodes.len() == 5));
    assert!(matches!(steps[3], Action::StopPartition));
    assert!(s.actions[1].at_ms > s.actions[0].at_ms);

    let s = Schedule::generate_with(
        7,
        &nodes(),
        &[FaultKind::ReplicationCutFailover],
        Duration::from_secs(120),
        Duration::from_secs(5),
        ScheduleOptions {
            data_port: 19092,
            ..Default::default()
        },
    )
    .expect("schedule");
    let Action::StartPartition {
        topology: Topology::CutPort { node, port },
        ..
    } = &s.actions[0].action
    else {
        panic!("{:?}", s.actions[0]);
    };
    assert_eq!(*port, 19092);
    assert!(matches!(
        &s.actions[1].action,
        Action::StartPartition { topology: Topology::IsolateNode { node: n }, .. } if n == node
    ));
    // The full isolation follows the replication cut by one interval.
    assert_eq!(s.actions[1].at_ms - s.actions[0].at_ms, 5_000);
    // Roles resolve to several nodes where a list is expected, and exactly one otherwise.
    let killed = Action::Kill {
        nodes: vec![format!("{FOLLOWERS}/3")],
        lose_unfsynced: false,
    }
    .resolve_roles(|_| Some(vec!["n2".into(), "n3".into()]))
    .expect("resolves");
    assert!(matches!(killed, Action::Kill { nodes, .. } if nodes == ["n2", "n3"]));
    let isolate = Action::StartPartition {
        topology: Topology::IsolateNode {
            node: format!("{LEADER}/3"),
        },
        seed: None,
    };
    assert!(isolate
        .resolve_roles(|_| Some(vec!["n2".into(), "n3".into()]))
        .is_err());
    assert!(isolate.resolve_roles(|_| None).is_err());
}

#[test]
fn a_port_cut_drops_only_that_ports_traffic() {
    use std::net::IpAddr;
    let peers: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
    let all = nemesis::net::drop_script("t", &peers, None);
    assert!(!all.contains("dport"), "{all}");
    let cut = nemesis::net::port_drop_script("t", &peers, None, Some(9092));
    for rule in [
        "input ip saddr { 10.0.0.2, 10.0.0.3 } tcp dport 9092 drop",
        "input ip saddr { 10.0.0.2, 10.0.0.3 } tcp sport 9092 drop",
        "output ip daddr { 10.0.0.2, 10.0.0.3 } tcp dport 9092 drop",
        "output ip daddr { 10.0.0.2, 10.0.0.3 } tcp sport 9092 drop",
    ] {
        assert!(cut.contains(rule), "{rule} in {cut}");
    }
}

#[test]
fn risk_aimed_faults_cut_one_partitions_leader_then_crash_it() {
    use nemesis::net::Topology;
    let s = gen(5, &[FaultKind::IsrShrinkCrash]);
    assert!(s.actions.len() >= 8, "several crashes in 120 s");
    for w in s.actions.chunks(4) {
        let [cut, kill, heal, start] = w else {
            continue;
        };
        let Action::StartPartition {
            topology:
                Topology::CutPort {
                    node: cut_node,
                    port,
                },
            ..
        } = &cut.action
        else {
            panic!("first step cuts the leader's replication: {cut:?}")
        };
        let Action::Kill {
            nodes: killed,
            lose_unfsynced,
        } = &kill.action
        else {
            panic!("second step kills: {kill:?}")
        };
        // The same partition's leader, the kill a power loss one interval on.
        assert!(
            cut_node.starts_with("@leader/") && *port == 9092,
            "{cut_node}"
        );
        assert_eq!(killed, &vec![cut_node.clone()]);
        assert!(*lose_unfsynced);
        assert_eq!(kill.at_ms - cut.at_ms, 5_000);
        assert!(heal.action == Action::StopPartition && heal.at_ms > kill.at_ms);
        assert!(matches!(start.action, Action::Start { .. }));
        assert_eq!(
            start.at_ms - kill.at_ms,
            5_000,
            "restarted one interval after the crash"
        );
    }
    assert_eq!(
        FaultKind::IsrShrinkCrash.components(),
        vec![FaultKind::Partition, FaultKind::Kill, FaultKind::Disk]
    );
    let s = gen(6, &[FaultKind::LeaderIsolation]);
    assert!(!s.actions.is_empty());
    for pair in s.actions.chunks(2) {
        match &pair[0].action {
            Action::StartPartition {
                topology: Topology::IsolateNode { node },
                ..
            } => assert!(node.starts_with("@leader/"), "{node}"),
            other => panic!("isolation first: {other:?}"),
        }
        if let Some(stop) = pair.get(1) {
            assert_eq!(stop.action, Action::StopPartition);
            assert_eq!(stop.at_ms - pair[0].at_ms, 5_000, "held one whole interval");
        }
    }
    assert_eq!(
        FaultKind::parse("leader-isolation").expect("named"),
        FaultKind::LeaderIsolation
    );
}

#[test]
fn random_kills_losing_unfsynced_writes_hit_one_node_at_a_time() {
    let mut seen = 0;
    for seed in 0..200 {
        for step in gen(seed, &[FaultKind::Disk]).actions {
            if let Action::Kill {
                nodes,
                lose_unfsynced: true,
            } = &step.action
            {
                seen += 1;
                assert_eq!(nodes.len(), 1, "seed {seed}: {nodes:?}");
            }
        }
    }
    assert!(
        seen > 50,
        "the disk nemesis still loses page caches ({seen} kills)"
    );
}
