//! The Kafka release the broker follows (`kafka.release`), shown on real broker processes:
//! - last replica standing (kafka-bugs.md #9): RF=3, acks=all, min.insync.replicas=2; the
//!   followers fall out of the ISR (paused), the leader crashes losing its page cache and
//!   returns. Under 3.6 rules it is the only electable replica and the acknowledged records are
//!   lost; under 4.1 rules (Eligible Leader Replicas, KIP-966) a replica that left the ISR while
//!   it was under min ISR leads and nothing is lost; with `flush.messages=1` 3.6 loses nothing.
//! - the last known leader (KIP-966 `LastKnownElr`): 4.1 rules with min.insync.replicas=1, the
//!   ISR shrinks to the leader (no follower enters the ELR: the ISR is at min ISR), the leader
//!   crashes losing its page cache and returns: with ISR and ELR empty it is elected again as
//!   the last known leader, and the records it acknowledged alone are gone, as in Kafka.
//! - 3.7+ rules (KAFKA-15583): an acks=1 record written while the ISR is under min ISR stays
//!   invisible until the ISR recovers, and min.insync.replicas=3 on RF=2 accepts acks=all.
//!
//! The clusters have four (or three) nodes with one controller (node 1) that hosts none of the
//! partition's replicas, so pausing followers never stops the metadata quorum.

mod support;

use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use support::{create_topic_retrying, lose_page_cache, records, BrokerProc, Conn};

const TOPIC: &str = "standing";
const RECORDS: usize = 40;

/// (leader, ISR) of partition `p` of `topic` as the controller (node 1) reports it.
fn view(nodes: &[BrokerProc], topic: &str, p: usize) -> Option<(i32, Vec<i32>)> {
    let mut c = Conn::try_connect(&nodes[0].addr())?;
    c.topic_metadata(topic).ok()?.get(p).cloned()
}

fn wait_view(
    nodes: &[BrokerProc],
    topic: &str,
    p: usize,
    what: &str,
    pred: impl Fn(&(i32, Vec<i32>)) -> bool,
) -> (i32, Vec<i32>) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(v) = view(nodes, topic, p).filter(|v| pred(v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pauses (SIGSTOP) the followers of `p` (led by `leader`, replicas on nodes 2-4) until the
/// ISR is the leader alone; returns their indexes in `nodes`.
fn pause_followers(nodes: &[BrokerProc], topic: &str, p: usize, leader: i32) -> Vec<usize> {
    let li = (leader - 1) as usize;
    let followers: Vec<usize> = (1..4).filter(|i| *i != li).collect();
    for f in &followers {
        nodes[*f].signal("STOP");
    }
    wait_view(
        nodes,
        topic,
        p,
        "the ISR shrunk to the leader",
        |(l, isr)| *l == leader && isr == &vec![leader],
    );
    followers
}

/// Produces `value` to `p` on `node` with `acks`, retrying retriable errors for up to 20 s;
/// returns the offset.
fn produce(node: &BrokerProc, topic: &str, p: usize, value: &str, acks: i16) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, off) = node
            .connect()
            .produce(
                topic,
                p as i32,
                build_batch(0, 0, &[(None, Some(value.as_bytes()))]),
                acks,
            )
            .expect("produce answered");
        if code == 0 {
            return off;
        }
        assert!(Instant::now() < deadline, "produce kept failing: {code}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of `p` below the leader's high watermark.
fn read_all(node: &BrokerProc, topic: &str, p: usize) -> (i64, Vec<(i64, Vec<u8>)>) {
    let mut c = node.connect();
    let mut seen = Vec::new();
    let mut next = 0;
    loop {
        let (err, hw, _, bytes) = c.fetch(topic, p as i32, next, 100);
        assert_eq!(err, 0, "fetch from node {}", node.node_id);
        let recs = records(bytes);
        if recs.is_empty() || next >= hw {
            return (hw, seen);
        }
        next = recs.last().map_or(next, |r| r.0 + 1);
        seen.extend(recs);
    }
}

/// Runs last replica standing under `release` (with `flush.messages=1` when `flush`) and
/// returns the acknowledged values lost.
fn last_replica_standing(release: &str, flush: bool) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut props = vec![
        ("kafka.release", release),
        ("min.insync.replicas", "2"),
        ("replica.lag.time.max.ms", "1000"),
    ];
    if flush {
        props.push(("log.flush.interval.messages", "1"));
    }
    let mut nodes = BrokerProc::start_cluster_with_args(dir.path(), 4, 1, &props, &[]);
    create_topic_retrying(&nodes, TOPIC, 4, 3);
    // Round-robin over brokers 1-4: partition 1 is on 2, 3, 4 (led by 2), not on controller 1.
    let p = 1;
    let (leader, _) = wait_view(&nodes, TOPIC, p, "the whole ISR", |(l, isr)| {
        *l > 1 && isr.len() == 3 && !isr.contains(&1)
    });
    let li = (leader - 1) as usize;
    for i in 0..RECORDS {
        let off = produce(&nodes[li], TOPIC, p, &format!("v{i}"), -1);
        assert_eq!(off, i as i64, "acknowledged at its offset");
    }
    let followers = pause_followers(&nodes, TOPIC, p, leader);
    nodes[li].kill9();
    if !flush {
        lose_page_cache(&nodes[li], TOPIC, p);
    }
    for f in &followers {
        nodes[*f].signal("CONT");
    }
    // The controller fences the crashed leader after the session timeout: 3.6 rules leave the
    // partition offline (its last ISR member is gone), 4.1 rules elect from the ELR.
    let (after, _) = wait_view(&nodes, TOPIC, p, "the crashed leader fenced", |(l, _)| {
        *l != leader
    });
    println!("kafka.release={release} flush={flush}: after the crash the leader is {after}");
    nodes[li].restart();
    let deadline = Instant::now() + Duration::from_secs(40);
    let leader = loop {
        let (l, _) = wait_view(&nodes, TOPIC, p, "all three back in the ISR", |(l, isr)| {
            *l > 1 && isr.len() == 3
        });
        // Confirmed by the leader itself (the controller's image may be ahead of it).
        let own = Conn::try_connect(&nodes[(l - 1) as usize].addr())
            .and_then(|mut c| c.topic_metadata(TOPIC).ok())
            .and_then(|v| v.get(p).cloned());
        if own.is_some_and(|(ol, isr)| ol == l && isr.len() == 3) {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader confirms the ISR");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Followers truncate right after the leader change; let them.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, seen) = read_all(&nodes[(leader - 1) as usize], TOPIC, p);
    (0..RECORDS)
        .map(|i| format!("v{i}"))
        .filter(|v| !seen.iter().any(|(_, val)| val == v.as_bytes()))
        .collect()
}

#[test]
fn last_replica_standing_loses_acknowledged_writes_under_3_6_rules() {
    let lost = last_replica_standing("3.6", false);
    println!("3.6, default flush: {} of {RECORDS} lost", lost.len());
    assert!(
        !lost.is_empty(),
        "the crashed last ISR member led again on its emptied log and nothing was lost?"
    );
}

#[test]
fn last_replica_standing_loses_nothing_under_4_1_rules_with_eligible_leader_replicas() {
    let lost = last_replica_standing("4.1", false);
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
}

#[test]
fn last_replica_standing_loses_nothing_under_3_6_rules_with_an_fsync_per_message() {
    let lost = last_replica_standing("3.6", true);
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
}

/// KIP-966's last known leader on real processes: 4.1 rules, RF=3, acks=all,
/// min.insync.replicas=1. The followers are paused until the ISR is the leader alone; the
/// records acknowledged then are on the leader only, which crashes losing its page cache. When
/// it is fenced the partition is offline (ISR empty; the leader is in the ELR and recorded as
/// last known leader); it returns uncleanly (out of the ELR) and, with ISR and ELR empty, is
/// elected again as last known leader on its emptied log: those acknowledged records are gone.
#[test]
fn under_4_1_rules_with_min_insync_1_the_crashed_last_leader_leads_again_without_its_acked_tail() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let props = [
        ("kafka.release", "4.1"),
        ("min.insync.replicas", "1"),
        ("replica.lag.time.max.ms", "1000"),
    ];
    let mut nodes = BrokerProc::start_cluster_with_args(dir.path(), 4, 1, &props, &[]);
    let topic = "last-known";
    create_topic_retrying(&nodes, topic, 4, 3);
    // Round-robin over brokers 1-4: partition 1 is on 2, 3, 4, not on controller 1.
    let p = 1;
    let (leader, _) = wait_view(&nodes, topic, p, "the whole ISR", |(l, isr)| {
        *l > 1 && isr.len() == 3 && !isr.contains(&1)
    });
    let li = (leader - 1) as usize;
    let followers = pause_followers(&nodes, topic, p, leader);
    let alone: Vec<String> = (0..RECORDS).map(|i| format!("alone{i}")).collect();
    for (i, v) in alone.iter().enumerate() {
        let off = produce(&nodes[li], topic, p, v, -1);
        assert_eq!(
            off, i as i64,
            "acknowledged by the leader alone (min.insync=1)"
        );
    }
    nodes[li].kill9();
    lose_page_cache(&nodes[li], topic, p);
    for f in &followers {
        nodes[*f].signal("CONT");
    }
    // Fenced at the session timeout: no ISR or ELR member is live (the followers left the ISR
    // while it was at min ISR, so they are not eligible), the partition is offline.
    wait_view(&nodes, topic, p, "the partition offline", |(l, isr)| {
        *l == -1 && isr.is_empty()
    });
    nodes[li].restart();
    let (again, isr) = wait_view(&nodes, topic, p, "a leader again", |(l, _)| *l > 0);
    println!("after the unclean restart: leader {again} (was {leader}), ISR {isr:?}");
    assert_eq!(again, leader, "the last known leader is elected");
    // The partition serves again, on the returned leader's emptied log.
    let off = produce(&nodes[li], topic, p, "after", -1);
    let (hw, seen) = read_all(&nodes[li], topic, p);
    let lost: Vec<&String> = alone
        .iter()
        .filter(|v| !seen.iter().any(|(_, val)| val == v.as_bytes()))
        .collect();
    println!(
        "{} of {RECORDS} acknowledged records lost; `after` at offset {off}, HW {hw}; {:.1} s",
        lost.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        lost.len(),
        RECORDS,
        "the unflushed acknowledged tail is gone: {seen:?}"
    );
    assert!(
        seen.iter().any(|(o, v)| *o == off && v == b"after"),
        "the new record is readable: {seen:?}"
    );
}

/// What the 3.7 rules change, under `release`: (HW includes an acks=1 record written while the
/// ISR is under min ISR; it does once the ISR recovered; the acks=all answer of a topic with
/// min.insync.replicas=3 and RF=2).
fn under_min_isr(release: &str) -> (bool, bool, i16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let props = [
        ("kafka.release", release),
        ("min.insync.replicas", "2"),
        ("replica.lag.time.max.ms", "1000"),
    ];
    let nodes = BrokerProc::start_cluster_with_args(dir.path(), 3, 1, &props, &[]);
    create_topic_retrying(&nodes, "under", 3, 2);
    // Round-robin over brokers 1-3: partition 1 is on 2 and 3 (led by 2).
    let p = 1;
    let (leader, _) = wait_view(&nodes, "under", p, "the whole ISR", |(l, isr)| {
        *l == 2 && isr.len() == 2
    });
    let li = (leader - 1) as usize;
    produce(&nodes[li], "under", p, "before", -1);
    nodes[2].signal("STOP");
    wait_view(
        &nodes,
        "under",
        p,
        "the ISR shrunk to the leader",
        |(_, isr)| isr == &vec![leader],
    );
    let off = produce(&nodes[li], "under", p, "under-min-isr", 1);
    std::thread::sleep(Duration::from_millis(500));
    let (hw, _) = read_all(&nodes[li], "under", p);
    let visible_under = hw > off;
    nodes[2].signal("CONT");
    wait_view(&nodes, "under", p, "the ISR recovered", |(_, isr)| {
        isr.len() == 2
    });
    let deadline = Instant::now() + Duration::from_secs(40);
    let visible_after = loop {
        let (hw, seen) = read_all(&nodes[li], "under", p);
        if seen.iter().any(|(o, v)| *o == off && v == b"under-min-isr") {
            break true;
        }
        if Instant::now() > deadline {
            println!(
                "kafka.release={release}: HW {hw}, records {seen:?}, ISR {:?}",
                view(&nodes, "under", p)
            );
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut c = nodes[0].connect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.create_topic_rf("capped", 3, 2, &[("min.insync.replicas", "3")]) != 0 {
        assert!(Instant::now() < deadline, "creating capped failed");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_view(&nodes, "capped", p, "the whole ISR", |(l, isr)| {
        *l == 2 && isr.len() == 2
    });
    // The leader may apply the ISR a moment after the controller: retry for a few seconds and
    // keep the last answer (3.6 keeps refusing).
    let deadline = Instant::now() + Duration::from_secs(8);
    let code = loop {
        let (code, _) = nodes[li]
            .connect()
            .produce(
                "capped",
                p as i32,
                build_batch(0, 0, &[(None, Some(b"capped"))]),
                -1,
            )
            .expect("produce answered");
        if code == 0 || Instant::now() > deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (visible_under, visible_after, code)
}

#[test]
fn under_3_7_rules_records_under_min_isr_wait_for_the_isr_and_min_isr_is_capped_at_rf() {
    let (under, after, code) = under_min_isr("3.7");
    assert!(!under, "an acks=1 record under min ISR was visible at once");
    assert!(after, "the record became visible once the ISR recovered");
    assert_eq!(code, 0, "min.insync.replicas=3 on RF=2 accepts acks=all");
}

#[test]
fn under_3_6_rules_records_under_min_isr_are_visible_and_min_isr_above_rf_refuses() {
    let (under, after, code) = under_min_isr("3.6");
    assert!(
        under,
        "3.6 advanced the HW with the ISR at the leader alone"
    );
    assert!(after);
    assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS");
}

/// KIP-890 part 1 under `release` on three real processes (RF=1 partitions led by brokers 1,
/// 2 and 3, one `__transaction_state` partition, so the coordinator is one of them and at least
/// one of partitions 0 and 1 has a leader that must ask it remotely): a transactional producer
/// adds partitions 0 and 1 to its transaction, then produces to all three. Returns (coordinator, the produce
/// error code per partition).
fn transactional_produce_outside_the_transaction(release: &str) -> (i32, Vec<i16>) {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().expect("tempdir");
    let props = [
        ("kafka.release", release),
        ("transaction.state.log.num.partitions", "1"),
        ("transaction.state.log.replication.factor", "1"),
    ];
    let nodes = BrokerProc::start_cluster_with_args(dir.path(), 3, 3, &props, &[]);
    create_topic_retrying(&nodes, "v", 3, 1);
    let tid = TransactionalId(StrBytes::from_static_str("verify-me"));
    // The coordinator is the node whose InitProducerId succeeds (the others: NOT_COORDINATOR).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (coordinator, pid, epoch) = 'found: loop {
        for n in &nodes {
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = Some(tid.clone());
            req.transaction_timeout_ms = 60_000;
            let resp: Option<InitProducerIdResponse> = Conn::try_connect(&n.addr())
                .and_then(|mut c| c.call(ApiKey::InitProducerId, 2, &req).ok());
            if let Some(r) = resp.filter(|r| r.error_code == 0) {
                break 'found (n.node_id, r.producer_id.0, r.producer_epoch);
            }
        }
        assert!(Instant::now() < deadline, "no transaction coordinator");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = TopicName(StrBytes::from_static_str("v"));
    t.partitions = vec![0, 1];
    let mut add = AddPartitionsToTxnRequest::default();
    add.v3_and_below_transactional_id = tid.clone();
    add.v3_and_below_producer_id = ProducerId(pid);
    add.v3_and_below_producer_epoch = epoch;
    add.v3_and_below_topics = vec![t];
    let resp: AddPartitionsToTxnResponse = nodes[(coordinator - 1) as usize]
        .connect()
        .call(ApiKey::AddPartitionsToTxn, 3, &add)
        .expect("AddPartitionsToTxn");
    for r in &resp.results_by_topic_v3_and_below[0].results_by_partition {
        assert_eq!(r.partition_error_code, 0, "partitions 0 and 1 added");
    }
    let codes = (0..3)
        .map(|p| {
            let (leader, _) = wait_view(&nodes, "v", p, "a leader", |(l, _)| *l > 0);
            let mut batch = build_batch(0, 0, &[(None, Some(format!("t{p}").as_bytes()))]);
            broker::log::batch::stamp_producer(&mut batch, pid, epoch, 0, true);
            let mut req = support::produce_request("v", p as i32, batch, -1);
            req.transactional_id = Some(tid.clone());
            let resp: ProduceResponse = nodes[(leader - 1) as usize]
                .connect()
                .call(ApiKey::Produce, 8, &req)
                .expect("produce answered");
            resp.responses[0].partition_responses[0].error_code
        })
        .collect();
    (coordinator, codes)
}

#[test]
fn a_transactional_produce_outside_the_transaction_is_refused_from_3_6_and_appended_before() {
    let (coordinator, codes) = transactional_produce_outside_the_transaction("3.6");
    println!("3.6: coordinator {coordinator}, produce codes {codes:?}");
    assert_eq!(
        codes,
        vec![0, 0, 48],
        "INVALID_TXN_STATE outside the transaction"
    );
    let (coordinator, codes) = transactional_produce_outside_the_transaction("3.5");
    println!("3.5: coordinator {coordinator}, produce codes {codes:?}");
    assert_eq!(
        codes,
        vec![0, 0, 0],
        "3.5 appends without asking the coordinator"
    );
}
