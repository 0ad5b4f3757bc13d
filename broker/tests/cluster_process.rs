//! Three real broker processes (each broker and controller) on loopback: replication under
//! leader failure with acks=all, and min.insync.replicas refusing acks=all when followers die.

mod support;

use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetFetchRequest,
    OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use support::{active_controller, create_topic_retrying, records, BrokerProc, Conn};

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
            let Some(mut c) = Conn::try_connect(&addrs[(leader - 1) as usize]) else {
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
                        for a in &addrs {
                            if let Some(Ok(parts)) =
                                Conn::try_connect(a).map(|mut c| c.topic_metadata("safe"))
                            {
                                if parts[0].0 > 0 {
                                    leader = parts[0].0;
                                    break;
                                }
                            }
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

#[test]
fn acks_1_loses_an_acknowledged_write_when_the_leader_dies_first_and_the_deposed_leader_truncates()
{
    let dir = tempfile::tempdir().expect("tempdir");
    // A generous lag time keeps the paused followers in the ISR on a slow machine.
    let mut nodes =
        BrokerProc::start_cluster(dir.path(), 3, &[("replica.lag.time.max.ms", "6000")]);
    create(&nodes, "lossy", &[]);
    let (leader, _) = leader_of(&nodes, "lossy", |_, isr| isr.len() == 3);
    let mut c = nodes[(leader - 1) as usize].connect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while i < 5 {
        let v = format!("replicated-{i}");
        let batch = build_batch(0, 0, &[(None, Some(v.as_bytes()))]);
        // The leader may not have applied the new topic's metadata yet: retry until it has.
        match c.produce("lossy", 0, batch, -1).expect("acks=all").0 {
            0 => i += 1,
            code => {
                assert!(
                    Instant::now() < deadline,
                    "produce kept failing with {code}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // Followers stop fetching (paused inside replica.lag.time.max.ms = 6 s, so the ISR stays
    // whole; after the fetchers' 500 ms long-polls have expired, so no pending fetch at the
    // leader can carry the next record); the leader acknowledges an acks=1 write only it has,
    // then dies.
    let followers: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();
    for f in &followers {
        nodes[(*f - 1) as usize].signal("STOP");
    }
    std::thread::sleep(Duration::from_millis(800));
    let (code, lost_offset) = c
        .produce(
            "lossy",
            0,
            build_batch(0, 0, &[(None, Some(b"acked-then-lost"))]),
            1,
        )
        .expect("acks=1");
    assert_eq!(code, 0, "acks=1 is acknowledged by the leader alone");
    nodes[(leader - 1) as usize].kill9();
    for f in &followers {
        nodes[(*f - 1) as usize].signal("CONT");
    }
    let (new_leader, _) = leader_of(&nodes, "lossy", |l, _| l != leader);
    let mut c = nodes[(new_leader - 1) as usize].connect();
    let (_, hw, _, bytes) = c.fetch("lossy", 0, 0, 200);
    let vals: Vec<Vec<u8>> = records(bytes).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        hw, lost_offset,
        "the new leader's log ends where the lost write was"
    );
    assert!(
        !vals.iter().any(|v| v == b"acked-then-lost"),
        "the acknowledged acks=1 write is gone after failover"
    );
    // The new leader takes a different record at the same offset.
    assert_eq!(
        c.produce(
            "lossy",
            0,
            build_batch(0, 0, &[(None, Some(b"new-era"))]),
            -1
        )
        .expect("produce"),
        (0, lost_offset)
    );
    // The deposed leader returns with its divergent tail, truncates it by leader epoch, and
    // every replica ends byte-identical.
    nodes[(leader - 1) as usize].restart();
    leader_of(&nodes, "lossy", |_, isr| isr.len() == 3);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let files: Vec<Vec<u8>> = nodes
            .iter()
            .map(|n| {
                std::fs::read(n.dir.join("data/lossy-0/00000000000000000000.log"))
                    .unwrap_or_default()
            })
            .collect();
        if files.iter().all(|f| f == &files[0]) {
            let recs = records(bytes::Bytes::from(files[0].clone()));
            assert_eq!(recs.last().map(|r| r.1.clone()), Some(b"new-era".to_vec()));
            assert!(!recs.iter().any(|r| r.1 == b"acked-then-lost"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never converged byte for byte"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn killing_the_active_controller_still_lets_partition_leaders_be_elected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    create_topic_retrying(&nodes, "ctl", 3, 3);
    let controller = active_controller(&nodes[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The controller's node also leads one of the three partitions (round-robin assignment).
    let survivor = nodes
        .iter()
        .position(|n| n.node_id != controller)
        .expect("another node");
    let led: Vec<usize> = loop {
        if let Ok(parts) = nodes[survivor].connect().topic_metadata("ctl") {
            if parts.iter().all(|(l, isr)| *l > 0 && isr.len() == 3) {
                break parts
                    .iter()
                    .enumerate()
                    .filter(|(_, (l, _))| *l == controller)
                    .map(|(i, _)| i)
                    .collect();
            }
        }
        assert!(Instant::now() < deadline, "partitions never fully in sync");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!led.is_empty(), "the controller's node leads a partition");
    let killed = Instant::now();
    nodes[(controller - 1) as usize].kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Conn::try_connect(&nodes[survivor].addr())
            .and_then(|mut c| {
                let new_controller = c.controller_id();
                let parts = c.topic_metadata("ctl").ok()?;
                Some(
                    new_controller > 0
                        && new_controller != controller
                        && led
                            .iter()
                            .all(|&p| parts[p].0 > 0 && parts[p].0 != controller),
                )
            })
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new controller and leaders within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "new controller and partition leaders {:?} after killing controller {controller}",
        killed.elapsed()
    );
}

/// OffsetFetch v7 for partition 0 of `topic` in `group`, sent to `node`: the top-level error.
fn offset_fetch(node: &BrokerProc, group: &str, topic: &str) -> (i16, i64) {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = StrBytes::from_string(topic.to_string()).into();
    t.partition_indexes = vec![0];
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(StrBytes::from_string(group.to_string()));
    req.topics = Some(vec![t]);
    let r: OffsetFetchResponse = node
        .connect()
        .call(ApiKey::OffsetFetch, 7, &req)
        .expect("OffsetFetch answered");
    let committed = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.committed_offset);
    (r.error_code, committed)
}

/// A coordinator request can reach a broker whose metadata image does not hold
/// `__consumer_offsets` yet: the client learned the coordinator from a broker whose image was
/// ahead, or nobody has created the topic. Kafka answers NOT_COORDINATOR or the retriable
/// COORDINATOR_LOAD_IN_PROGRESS there, never COORDINATOR_NOT_AVAILABLE. The difference
/// matters: librdkafka does not retry an OffsetFetch that fails with COORDINATOR_NOT_AVAILABLE,
/// and its assigned partitions then never start fetching (a CI failure of the
/// consume-transform-produce test). Then the coordinator FindCoordinator names answers.
#[test]
fn offset_fetch_before_the_offsets_topic_reaches_the_image_gets_a_retriable_answer() {
    const NOT_AVAILABLE: i16 = 15;
    const LOADING: i16 = 14;
    const NOT_COORDINATOR: i16 = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    // The quorum answers proposals (so creating the offsets topic can succeed).
    create_topic_retrying(&nodes, "early", 1, 3);
    for n in &nodes {
        let (code, _) = offset_fetch(n, "early-group", "early");
        assert!(
            [0, LOADING, NOT_COORDINATOR].contains(&code),
            "node {} answered OffsetFetch with error {code} (15 is COORDINATOR_NOT_AVAILABLE)",
            n.node_id
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let coordinator = loop {
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_static_str("early-group");
        let r: FindCoordinatorResponse = nodes[0]
            .connect()
            .call(ApiKey::FindCoordinator, 1, &req)
            .expect("FindCoordinator answered");
        if r.error_code == 0 && r.node_id.0 > 0 {
            break r.node_id.0;
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator: error {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let node = &nodes[(coordinator - 1) as usize];
    loop {
        let (code, committed) = offset_fetch(node, "early-group", "early");
        assert_ne!(
            code, NOT_AVAILABLE,
            "the coordinator answered COORDINATOR_NOT_AVAILABLE"
        );
        if code == 0 {
            assert_eq!(committed, -1, "nothing was committed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator kept answering {code}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
