//! Issue 14's data-loss scenario on three real broker processes: RF=3, min.insync.replicas=2,
//! 100 records acknowledged with acks=all, then the partition leader (also the active
//! controller) is killed with `kill -9`, its segment files are emptied (a lost page cache) and
//! it is restarted, inside and after `broker.session.timeout.ms`. A restarted broker is a new
//! incarnation: the controller fences the old one first (KAFKA-18106), so it cannot lead or
//! count in an ISR on its old state, and no acknowledged record is lost. With
//! `--bug restart-without-fencing` it resumes its old leadership with an empty log and the
//! followers truncate to it.

mod support;

use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use support::{
    active_controller, create_topic_retrying, lose_page_cache, records, BrokerProc, Conn,
};

const TOPIC: &str = "fenced";
const RECORDS: usize = 100;

/// One partition as a broker reports it: (leader, leader epoch, ISR).
type PartView = (i32, i32, Vec<i32>);

/// The partitions of [`TOPIC`] as the broker at `addr` reports them.
fn partitions(addr: &str) -> Option<Vec<PartView>> {
    let mut c = Conn::try_connect(addr)?;
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str(TOPIC)));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 9, &req).ok()?;
    let t = resp.topics.first()?;
    if t.error_code != 0 {
        return None;
    }
    let mut parts: Vec<_> = t.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    Some(
        parts
            .iter()
            .map(|p| {
                (
                    p.leader_id.0,
                    p.leader_epoch,
                    p.isr_nodes.iter().map(|b| b.0).collect(),
                )
            })
            .collect(),
    )
}

/// Waits until a running node other than `not` reports partition `p` satisfying `pred`.
fn wait_for(
    nodes: &[BrokerProc],
    p: usize,
    not: Option<i32>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&PartView) -> bool,
) -> PartView {
    let deadline = Instant::now() + timeout;
    loop {
        for n in nodes
            .iter()
            .filter(|n| n.running() && Some(n.node_id) != not)
        {
            if let Some(parts) = partitions(&n.addr()) {
                if let Some(view) = parts.get(p).filter(|v| pred(v)) {
                    return view.clone();
                }
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the cluster, creates the topic and acknowledges [`RECORDS`] records with acks=all
/// on the partition led by the active controller. Returns the nodes and that partition.
fn setup(dir: &std::path::Path, session_ms: &str, args: &[&str]) -> (Vec<BrokerProc>, usize) {
    setup_with(dir, &[("broker.session.timeout.ms", session_ms)], args)
}

/// [`setup`] with any extra broker properties.
fn setup_with(
    dir: &std::path::Path,
    props: &[(&str, &str)],
    args: &[&str],
) -> (Vec<BrokerProc>, usize) {
    let mut all = vec![("min.insync.replicas", "2")];
    all.extend_from_slice(props);
    let nodes = BrokerProc::start_cluster_with_args(dir, 3, 3, &all, args);
    create_topic_retrying(&nodes, TOPIC, 3, 3);
    let controller = active_controller(&nodes[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Round-robin assignment: partition p is led by broker p + 1, so the controller's node leads
    // partition controller - 1.
    let p = (controller - 1) as usize;
    wait_for(
        &nodes,
        p,
        None,
        "the whole ISR",
        Duration::from_secs(30),
        |(l, _, isr)| *l == controller && isr.len() == 3,
    );
    let mut c = nodes[p].connect();
    let mut i = 0;
    while i < RECORDS {
        let v = format!("v{i}");
        let (code, off) = c
            .produce(
                TOPIC,
                p as i32,
                build_batch(0, 0, &[(None, Some(v.as_bytes()))]),
                -1,
            )
            .expect("produce answered");
        if code == 0 {
            assert_eq!(off, i as i64, "acknowledged at its offset");
            i += 1;
        } else {
            assert!(Instant::now() < deadline, "produce kept failing: {code}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (_, hw, _, _) = c.fetch(TOPIC, p as i32, 0, 0);
    assert_eq!(hw, RECORDS as i64, "every acknowledged record is committed");
    (nodes, p)
}

/// The acknowledged values the current leader of `p` does not serve once the restarted broker
/// is back in the ISR, with a leader epoch of at least `min_epoch` (the leader's own view).
fn lost_after_recovery(nodes: &[BrokerProc], p: usize, min_epoch: i32) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let (l, _, _) = wait_for(
            nodes,
            p,
            None,
            "all three replicas back in the ISR",
            Duration::from_secs(30),
            |(l, e, isr)| *l > 0 && *e >= min_epoch && isr.len() == 3,
        );
        // Confirmed by the leader itself (another broker's image may lag a heartbeat).
        let own = partitions(&nodes[(l - 1) as usize].addr());
        if own.is_some_and(|v| v[p].0 == l && v[p].1 >= min_epoch && v[p].2.len() == 3) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no leader confirms the whole ISR"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Followers truncate right after the leader change; let them.
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = nodes[(leader - 1) as usize].connect();
    let mut seen = Vec::new();
    let mut next = 0;
    loop {
        let (err, hw, _, bytes) = c.fetch(TOPIC, p as i32, next, 100);
        assert_eq!(err, 0, "fetch from leader {leader}");
        let recs = records(bytes);
        if recs.is_empty() || next >= hw {
            break;
        }
        next = recs.last().map_or(next, |r| r.0 + 1);
        seen.extend(recs);
    }
    (0..RECORDS)
        .filter(|i| !seen.contains(&(*i as i64, format!("v{i}").into_bytes())))
        .map(|i| format!("v{i}"))
        .collect()
}

/// Kills the leader of `p` (checked to be broker `p + 1`), empties its log and restarts it at
/// once. Returns the leader epoch before the crash and when the restart began.
fn crash_and_restart_inside_session(nodes: &mut [BrokerProc], p: usize) -> (i32, Instant) {
    let (leader, epoch, _) = partitions(&nodes[p].addr()).expect("metadata")[p].clone();
    assert_eq!(leader as usize, p + 1);
    nodes[p].kill9();
    lose_page_cache(&nodes[p], TOPIC, p);
    let restarted = Instant::now();
    nodes[p].restart();
    (epoch, restarted)
}

#[test]
fn leader_restarted_inside_the_session_with_an_empty_log_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A long session: the restart lands well inside it even on a loaded machine.
    let (mut nodes, p) = setup(dir.path(), "8000", &[]);
    let leader = (p + 1) as i32;
    let (epoch, restarted) = crash_and_restart_inside_session(&mut nodes, p);
    let (l, e, isr) = wait_for(
        &nodes,
        p,
        None,
        "a new leader in a new epoch (the old incarnation fenced)",
        Duration::from_secs(20),
        |(l, e, _)| *l > 0 && *l != leader && *e > epoch,
    );
    println!(
        "restarted inside the session: leadership moved {leader}@{epoch} -> {l}@{e} (isr {isr:?}) {:?} after the restart began",
        restarted.elapsed()
    );
    let lost = lost_after_recovery(&nodes, p, e);
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
}

#[test]
fn leader_restarted_after_the_session_with_an_empty_log_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, p) = setup(dir.path(), "2000", &[]);
    let leader = (p + 1) as i32;
    nodes[p].kill9();
    lose_page_cache(&nodes[p], TOPIC, p);
    let (_, e, _) = wait_for(
        &nodes,
        p,
        Some(leader),
        "a new leader after the session timeout",
        Duration::from_secs(30),
        |(l, _, _)| *l > 0 && *l != leader,
    );
    nodes[p].restart();
    let lost = lost_after_recovery(&nodes, p, e);
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
}

#[test]
fn restart_without_fencing_bug_loses_the_acknowledged_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, p) = setup(dir.path(), "8000", &["--bug", "restart-without-fencing"]);
    let leader = (p + 1) as i32;
    let (epoch, _) = crash_and_restart_inside_session(&mut nodes, p);
    let lost = lost_after_recovery(&nodes, p, epoch);
    println!(
        "with the bug: {} of {RECORDS} acknowledged records lost",
        lost.len()
    );
    let (l, e, _) = partitions(&nodes[p].addr()).expect("metadata")[p].clone();
    assert_eq!(
        (l, e),
        (leader, epoch),
        "the restarted broker resumed its leadership in the same epoch"
    );
    assert!(
        !lost.is_empty(),
        "the bug mode should lose the acknowledged records"
    );
}

#[test]
fn with_the_pre_4_0_policy_the_new_incarnation_waits_for_the_old_session_to_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = Duration::from_millis(4000);
    let (mut nodes, p) = setup_with(
        dir.path(),
        &[
            ("broker.session.timeout.ms", "4000"),
            ("broker.reregistration.policy", "refuse"),
        ],
        &[],
    );
    let leader = (p + 1) as i32;
    let (epoch, restarted) = crash_and_restart_inside_session(&mut nodes, p);
    // The restart returns once the broker listens, which it does only once registered: after
    // the old session expired (DUPLICATE_BROKER_REGISTRATION until then).
    let waited = restarted.elapsed();
    println!("refuse policy: the restarted broker registered {waited:?} after the restart began");
    assert!(
        waited + Duration::from_millis(500) >= session,
        "registered after {waited:?}, inside the old session"
    );
    let lost = lost_after_recovery(&nodes, p, epoch + 1);
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    let (l, _, _) = partitions(&nodes[p].addr()).expect("metadata")[p].clone();
    assert_ne!(
        l, leader,
        "another replica took over when the old session expired"
    );
}
