//! Three real broker processes (each broker and controller) on loopback: replication under
//! leader failure with acks=all, and min.insync.replicas refusing acks=all when followers die.

mod support;

use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use support::{records, BrokerProc, Conn};

/// Waits until some live node reports a leader (and ISR) for partition 0 of `topic`.
fn leader_of(
    nodes: &[BrokerProc],
    topic: &str,
    pred: impl Fn(i32, &[i32]) -> bool,
) -> (i32, Vec<i32>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for n in nodes.iter().filter(|n| n.running()) {
            if let Ok(mut c) = std::panic::catch_unwind(|| n.connect()) {
                if let Ok(parts) = c.topic_metadata(topic) {
                    let (l, isr) = parts[0].clone();
                    if l > 0 && nodes[(l - 1) as usize].running() && pred(l, &isr) {
                        return (l, isr);
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader for {topic} matching the condition"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create(nodes: &[BrokerProc], topic: &str, configs: &[(&str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = nodes[0].connect().create_topic_rf(topic, 1, 3, configs);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "create {topic}: error {code}");
        std::thread::sleep(Duration::from_millis(200));
    }
    leader_of(nodes, topic, |_, isr| isr.len() == 3);
}

#[test]
fn acks_all_min_insync_2_survives_leader_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    create(&nodes, "safe", &[("min.insync.replicas", "2")]);
    let (first_leader, _) = leader_of(&nodes, "safe", |_, _| true);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let producer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut i = 0u32;
        let mut leader = first_leader;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(mut c) = std::net::TcpStream::connect(&addrs[(leader - 1) as usize])
                .map(|_| Conn::connect(&addrs[(leader - 1) as usize]))
            else {
                leader = leader % 3 + 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            loop {
                if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let v = format!("v{i}");
                i += 1;
                match c.produce(
                    "safe",
                    0,
                    build_batch(0, 0, &[(None, Some(v.as_bytes()))]),
                    -1,
                ) {
                    Ok((0, off)) => acked.push((off, v)),
                    Ok((_, _)) | Err(_) => {
                        // Not leader, timed out or connection lost: find the leader again.
                        for (j, a) in addrs.iter().enumerate() {
                            if let Ok(s) = std::net::TcpStream::connect(a) {
                                drop(s);
                                if let Ok(parts) = Conn::connect(a).topic_metadata("safe") {
                                    if parts[0].0 > 0 {
                                        leader = parts[0].0;
                                        break;
                                    }
                                }
                            }
                            let _ = j;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    nodes[(first_leader - 1) as usize].kill9();
    let (new_leader, _) = leader_of(&nodes, "safe", |l, _| l != first_leader);
    println!(
        "new leader {new_leader} elected {:?} after kill -9 of {first_leader}",
        killed_at.elapsed()
    );
    std::thread::sleep(Duration::from_millis(2000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = producer.join().expect("producer");
    assert!(
        acked.len() > 20,
        "writes were acknowledged ({})",
        acked.len()
    );
    let after: Vec<_> = acked.iter().filter(|(o, _)| *o >= 0).collect();
    let mut c = nodes[(new_leader - 1) as usize].connect();
    let mut seen = Vec::new();
    let mut next = 0;
    loop {
        let (err, hw, _, bytes) = c.fetch("safe", 0, next, 200);
        assert_eq!(err, 0);
        let recs = records(bytes);
        if recs.is_empty() {
            assert_eq!(next, hw);
            break;
        }
        next = recs.last().map(|r| r.0 + 1).unwrap_or(next);
        seen.extend(recs);
    }
    for (off, v) in after {
        let found = seen
            .iter()
            .find(|(o, _)| o == off)
            .map(|(_, val)| val.as_slice());
        assert_eq!(
            found,
            Some(v.as_bytes()),
            "acknowledged {v} at offset {off} survives the leader's death"
        );
    }
    println!(
        "{} acknowledged writes all readable at their offsets",
        acked.len()
    );
}

#[test]
fn min_insync_2_refuses_acks_all_with_two_followers_down_but_acks_1_succeeds() {
    // Five nodes, controllers on 1-3: partition 3 of a 4-partition RF=3 topic is assigned
    // [4, 5, 1], so killing its followers 5 and 1 keeps the controller quorum (2 and 3) alive.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster_with_voters(dir.path(), 5, 3, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = |c: &mut Conn| c.topic_metadata("strict");
    loop {
        let code =
            nodes[0]
                .connect()
                .create_topic_rf("strict", 4, 3, &[("min.insync.replicas", "2")]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "create: error {code}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let parts = loop {
        if let Ok(p) = live(&mut nodes[1].connect()) {
            if p[3].1.len() == 3 {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "partition 3 never fully in sync");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (leader, isr) = parts[3].clone();
    assert_eq!(leader, 4, "round-robin assignment: {parts:?}");
    for id in isr.iter().filter(|id| **id != leader) {
        nodes[(*id - 1) as usize].kill9();
    }
    let mut c = nodes[(leader - 1) as usize].connect();
    let code = loop {
        let (code, _) = c
            .produce("strict", 3, build_batch(0, 0, &[(None, Some(b"all"))]), -1)
            .expect("answered");
        if code == 19 || Instant::now() > deadline + Duration::from_secs(30) {
            break code;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        code, 19,
        "NOT_ENOUGH_REPLICAS once the ISR is below min.insync.replicas"
    );
    let (code, off) = c
        .produce("strict", 3, build_batch(0, 0, &[(None, Some(b"one"))]), 1)
        .expect("answered");
    assert_eq!(code, 0, "acks=1 is still accepted");
    assert!(off >= 0);
}
