//! A transaction coordinator failover with nobody asking about the transaction: the broker
//! that takes over the `__transaction_state` partition must load it on its own (as Kafka does
//! at election, `TransactionCoordinator.onElection`) and finish what it finds, here abort an
//! open transaction at its timeout. Before, a coordinator loaded a partition only when a
//! client's request for one of its transactional ids arrived: a producer that never came back
//! left its transaction open forever, and the data partition's last stable offset stayed at
//! the transaction's first record (a hanging transaction; read_committed consumers read
//! nothing more from that partition). Driven with raw protocol requests (no librdkafka).

mod support;

use std::time::{Duration, Instant};

use broker::log::batch::{build_batch, compute_crc};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::{BrokerProc, Conn};

const TXN_ID: &str = "tx-hanging";
const TOPIC: &str = "hang";

/// Java's `String.hashCode`, as the broker places transactional ids.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

fn node(nodes: &[BrokerProc], id: i32) -> &BrokerProc {
    nodes
        .iter()
        .find(|n| n.node_id == id)
        .expect("node in the cluster")
}

/// Retries `f` (which answers `Some` when done) every 100 ms for up to `within`.
fn retry<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: gave up after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The leader of `topic`-`partition` as any running node reports it.
fn leader(nodes: &[BrokerProc], topic: &str, partition: usize) -> Option<i32> {
    nodes.iter().filter(|n| n.running()).find_map(|n| {
        let ps = Conn::try_connect(&n.addr())?.topic_metadata(topic).ok()?;
        let l = ps.get(partition)?.0;
        (l > 0 && node(nodes, l).running()).then_some(l)
    })
}

/// A transactional batch of one record from producer `pid` at `epoch` (sequence 0).
fn txn_batch(pid: i64, epoch: i16, value: &[u8]) -> Vec<u8> {
    let mut b = build_batch(0, 0, &[(None, Some(value))]);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // attributes: transactional
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&0i32.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A read_committed fetch from offset 0: (error, high watermark, last stable offset).
fn committed_fetch(c: &mut Conn, topic: &str, partition: i32) -> Option<(i16, i64, i64)> {
    let req = support::fetch_request(topic, partition, 0, 0, 0, 1);
    let resp: FetchResponse = c.call(ApiKey::Fetch, 11, &req).ok()?;
    let p = &resp.responses[0].partitions[0];
    Some((p.error_code, p.high_watermark, p.last_stable_offset))
}

#[test]
fn a_new_coordinator_aborts_an_abandoned_transaction_nobody_asks_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(
        dir.path(),
        3,
        &[(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "200",
        )],
    );
    let t = Duration::from_secs(30);
    support::create_topic_retrying(&nodes, TOPIC, 1, 3);
    retry("the data partition has a leader", t, || {
        leader(&nodes, TOPIC, 0)
    });

    // The producer: InitProducerId at its coordinator (creating __transaction_state), then
    // AddPartitionsToTxn and one transactional record, acks=all; then it vanishes.
    let coordinator = retry("FindCoordinator", t, || {
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_static_str(TXN_ID);
        req.key_type = 1;
        let r: FindCoordinatorResponse = nodes[0]
            .connect()
            .call(ApiKey::FindCoordinator, 1, &req)
            .ok()?;
        (r.error_code == 0 && r.node_id.0 > 0).then_some(r.node_id.0)
    });
    let (pid, epoch) = retry("InitProducerId", t, || {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = Some(TransactionalId(StrBytes::from_static_str(TXN_ID)));
        req.transaction_timeout_ms = 4000;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        let r: InitProducerIdResponse = Conn::try_connect(&node(&nodes, coordinator).addr())?
            .call(ApiKey::InitProducerId, 1, &req)
            .ok()?;
        (r.error_code == 0).then_some((r.producer_id.0, r.producer_epoch))
    });
    retry("AddPartitionsToTxn", t, || {
        let mut tp = AddPartitionsToTxnTopic::default();
        tp.name = TopicName(StrBytes::from_static_str(TOPIC));
        tp.partitions = vec![0];
        let mut req = AddPartitionsToTxnRequest::default();
        req.v3_and_below_transactional_id = TransactionalId(StrBytes::from_static_str(TXN_ID));
        req.v3_and_below_producer_id = ProducerId(pid);
        req.v3_and_below_producer_epoch = epoch;
        req.v3_and_below_topics = vec![tp];
        let r: AddPartitionsToTxnResponse = Conn::try_connect(&node(&nodes, coordinator).addr())?
            .call(ApiKey::AddPartitionsToTxn, 3, &req)
            .ok()?;
        let code = r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
        (code == 0).then_some(())
    });
    let data_leader = leader(&nodes, TOPIC, 0).expect("data leader");
    let mut req = support::produce_request(TOPIC, 0, txn_batch(pid, epoch, b"abandoned"), -1);
    req.transactional_id = Some(TransactionalId(StrBytes::from_static_str(TXN_ID)));
    let r: ProduceResponse = node(&nodes, data_leader)
        .connect()
        .call(ApiKey::Produce, 8, &req)
        .expect("produce");
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "transactional produce");
    assert_eq!(p.base_offset, 0);
    let (code, hw, lso) =
        committed_fetch(&mut node(&nodes, data_leader).connect(), TOPIC, 0).expect("fetch");
    assert_eq!(
        (code, hw, lso),
        (0, 1, 0),
        "the open transaction holds the LSO"
    );

    // The coordinator dies well inside the transaction's timeout; no client asks about the
    // transactional id again.
    let part = (java_hash(TXN_ID).unsigned_abs() % 10) as usize;
    assert_eq!(
        leader(&nodes, "__transaction_state", part),
        Some(coordinator)
    );
    eprintln!("killing transaction coordinator node {coordinator}");
    let i = nodes
        .iter()
        .position(|n| n.node_id == coordinator)
        .expect("coordinator node");
    nodes[i].kill9();
    let killed = Instant::now();

    // The broker that takes over __transaction_state must abort the transaction at its
    // timeout on its own: the abort marker moves the LSO past the record.
    let (hw, lso) = retry("the LSO moves past the abandoned transaction", t, || {
        let l = leader(&nodes, TOPIC, 0)?;
        let (code, hw, lso) =
            committed_fetch(&mut Conn::try_connect(&node(&nodes, l).addr())?, TOPIC, 0)?;
        (code == 0 && lso > 0).then_some((hw, lso))
    });
    eprintln!(
        "LSO {lso} (HW {hw}) {:?} after the coordinator's kill",
        killed.elapsed()
    );
    assert_eq!(lso, hw, "nothing else is open");
    let new_coordinator = leader(&nodes, "__transaction_state", part).expect("new coordinator");
    assert_ne!(new_coordinator, coordinator);
}
