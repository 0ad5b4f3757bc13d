//! Transactions through librdkafka's transactional producer against real broker processes:
//! commit and abort across two partitions seen by read_committed and read_uncommitted
//! consumers (on a 3-node cluster, again after the partition leader is killed, so followers
//! derived the same transaction state); a zombie producer fenced by a newer one with the same
//! `transactional.id`; consume-transform-produce with `send_offsets_to_transaction` surviving a
//! crash mid-transaction; and an abandoned transaction aborted by its timeout.
#![cfg(feature = "rdkafka-tests")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::BrokerProc;

const T: Duration = Duration::from_secs(30);

fn bootstrap(nodes: &[BrokerProc]) -> String {
    nodes
        .iter()
        .filter(|n| n.running())
        .map(|n| n.addr())
        .collect::<Vec<_>>()
        .join(",")
}

fn create_topic(nodes: &[BrokerProc], topic: &str, partitions: i32, rf: i16) {
    let deadline = Instant::now() + T;
    loop {
        let code = nodes[0]
            .connect()
            .create_topic_rf(topic, partitions, rf, &[]);
        if code == 0 || code == 36 {
            break;
        }
        assert!(Instant::now() < deadline, "create {topic}: error {code}");
        std::thread::sleep(Duration::from_millis(200));
    }
    loop {
        let ok = nodes.iter().filter(|n| n.running()).all(|n| {
            n.connect()
                .topic_metadata(topic)
                .is_ok_and(|ps| ps.len() == partitions as usize && ps.iter().all(|(l, _)| *l > 0))
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{topic} never had leaders");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn txn_producer(nodes: &[BrokerProc], id: &str, timeout_ms: u64) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(nodes))
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    p.init_transactions(T).expect("init_transactions");
    p
}

fn send(p: &BaseProducer, topic: &str, partition: i32, value: &str) {
    let mut rec = BaseRecord::<(), str>::to(topic)
        .partition(partition)
        .payload(value);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((e, r)) => {
                assert!(format!("{e}").contains("Queue full"), "send {value}: {e}");
                p.poll(Duration::from_millis(10));
                rec = r;
            }
        }
    }
}

fn consumer(nodes: &[BrokerProc], group: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap(nodes))
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer")
}

/// Reads `partitions` of `topic` from the beginning until `want` values arrived and nothing
/// more came for `settle`; returns (partition, value) pairs in arrival order.
fn read_all(
    nodes: &[BrokerProc],
    topic: &str,
    partitions: i32,
    isolation: &str,
    want: usize,
    settle: Duration,
) -> Vec<(i32, String)> {
    let c = consumer(nodes, &format!("reader-{isolation}"), isolation);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                got.push((m.partition(), v));
                last = Instant::now();
            }
            // Transient errors (a killed broker's connection) are reported and retried.
            Some(Err(e)) => eprintln!("consume ({isolation}): {e}"),
            None => {
                if got.len() >= want && last.elapsed() >= settle {
                    break;
                }
            }
        }
    }
    got
}

fn values(v: &[(i32, String)]) -> BTreeSet<String> {
    v.iter().map(|(_, s)| s.clone()).collect()
}

#[test]
fn committed_and_aborted_transactions_across_two_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    create_topic(&nodes, "txn", 2, 3);
    let p = txn_producer(&nodes, "tx-two-partitions", 60_000);
    let mut committed = BTreeSet::new();
    let mut aborted = BTreeSet::new();
    // commit, abort, commit: the last shows the LSO moves past aborted data.
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        p.begin_transaction().expect("begin");
        for part in 0..2 {
            for i in 0..5 {
                let v = format!("r{round}-p{part}-{i}");
                send(&p, "txn", part, &v);
                if commit {
                    committed.insert(v);
                } else {
                    aborted.insert(v);
                }
            }
        }
        if commit {
            p.commit_transaction(T).expect("commit");
        } else {
            p.flush(T).expect("flush before abort");
            p.abort_transaction(T).expect("abort");
        }
    }
    let rc = read_all(
        &nodes,
        "txn",
        2,
        "read_committed",
        committed.len(),
        Duration::from_millis(500),
    );
    assert_eq!(
        values(&rc),
        committed,
        "read_committed sees exactly the committed records"
    );
    assert_eq!(rc.len(), committed.len(), "no duplicates");
    let ru = read_all(
        &nodes,
        "txn",
        2,
        "read_uncommitted",
        committed.len() + aborted.len(),
        Duration::from_millis(500),
    );
    let all: BTreeSet<String> = committed.union(&aborted).cloned().collect();
    assert_eq!(values(&ru), all, "read_uncommitted sees both");
    // Kill the leader of partition 0: the new leader derived the same transaction state from
    // the replicated batches and markers.
    let leader = nodes[0].connect().topic_metadata("txn").expect("metadata")[0].0;
    let idx = nodes
        .iter()
        .position(|n| n.node_id == leader)
        .expect("leader node");
    nodes[idx].kill9();
    let others: Vec<usize> = (0..nodes.len()).filter(|i| *i != idx).collect();
    let deadline = Instant::now() + T;
    loop {
        let l = nodes[others[0]]
            .connect()
            .topic_metadata("txn")
            .ok()
            .map(|ps| ps[0].0);
        if l.is_some_and(|l| l > 0 && l != leader) {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader for txn-0");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rc2 = read_all(
        &nodes,
        "txn",
        2,
        "read_committed",
        committed.len(),
        Duration::from_millis(500),
    );
    assert_eq!(
        values(&rc2),
        committed,
        "after failover read_committed still sees exactly the committed records"
    );
    assert_eq!(rc2.len(), committed.len());
}

/// The code of a transactional API error, for assertions.
fn txn_error(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::Transaction(r) => {
            format!("{:?} fatal={} {}", r.code(), r.is_fatal(), r)
        }
        other => format!("{other}"),
    }
}

#[test]
fn a_zombie_producer_is_fenced_by_a_newer_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = vec![BrokerProc::start(dir.path(), &[])];
    create_topic(&nodes, "zombie", 2, 1);
    let old = txn_producer(&nodes, "tx-zombie", 60_000);
    old.begin_transaction().expect("begin");
    send(&old, "zombie", 0, "old-1");
    old.flush(T).expect("flush");
    // Same transactional.id: the coordinator aborts the open transaction under a bumped epoch.
    let new = txn_producer(&nodes, "tx-zombie", 60_000);
    new.begin_transaction().expect("begin");
    send(&new, "zombie", 1, "new-1");
    new.commit_transaction(T).expect("the new producer commits");
    // The zombie's next send and its commit fail: it is fenced.
    let _ = old.send(
        BaseRecord::<(), str>::to("zombie")
            .partition(0)
            .payload("old-2"),
    );
    let _ = old.flush(Duration::from_secs(5));
    let err = old
        .commit_transaction(T)
        .expect_err("the zombie's commit must fail");
    let text = txn_error(&err);
    assert!(
        text.contains("Fenced") || text.contains("InvalidProducerEpoch") || text.contains("fenced"),
        "fenced expected, got {text}"
    );
    let rc = read_all(
        &nodes,
        "zombie",
        2,
        "read_committed",
        1,
        Duration::from_millis(500),
    );
    assert_eq!(values(&rc), BTreeSet::from(["new-1".to_string()]));
    let ru = read_all(
        &nodes,
        "zombie",
        2,
        "read_uncommitted",
        2,
        Duration::from_millis(500),
    );
    assert!(
        values(&ru).contains("old-1"),
        "the zombie's data is in the log, aborted"
    );
}

/// One consume-transform-produce transaction: up to `n` input records become `out:<value>` in
/// the output topic, and the input offsets after them go into the transaction. Returns how many
/// records it processed (0: the input is drained).
fn transform(c: &BaseConsumer, p: &BaseProducer, n: usize) -> usize {
    p.begin_transaction().expect("begin");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut done = 0;
    // The first poll of a fresh group may wait for __consumer_offsets to be created and
    // loaded (several seconds on a loaded machine); once records flow, an empty poll ends it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done < n && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                send(p, "ctp-out", m.partition(), &format!("out:{v}"));
                next.insert(m.partition(), m.offset() + 1);
                done += 1;
            }
            // Transient errors (a killed broker's connection) are reported and retried.
            Some(Err(e)) => eprintln!("consume (transform): {e}"),
            None if done > 0 => break,
            None => {}
        }
    }
    if done > 0 {
        let mut tpl = TopicPartitionList::new();
        for (part, off) in &next {
            tpl.add_partition_offset("ctp-in", *part, Offset::Offset(*off))
                .expect("tpl");
        }
        let meta = c.group_metadata().expect("group metadata");
        p.send_offsets_to_transaction(&tpl, &meta, T)
            .expect("send_offsets_to_transaction");
    }
    done
}

fn ctp_consumer(nodes: &[BrokerProc]) -> BaseConsumer {
    let c = consumer(nodes, "ctp-group", "read_committed");
    let mut tpl = TopicPartitionList::new();
    for part in 0..2 {
        tpl.add_partition_offset("ctp-in", part, Offset::Stored)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    c
}

/// Java's `String.hashCode`, as the broker places transactional ids.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Consume-transform-produce from `ctp-in` to `ctp-out` (2 partitions each, replication
/// `rf`) by transactional id `id`: a first instance commits four transactions, then produces
/// and adds offsets for a fifth and crashes (`crash` runs first, e.g. killing a broker); a
/// restarted instance finishes the input. Checks that read_committed output holds every input
/// exactly once; returns the commit latencies in ms.
fn run_ctp(
    nodes: &mut Vec<BrokerProc>,
    rf: i16,
    id: &str,
    crash: impl FnOnce(&mut Vec<BrokerProc>),
) -> Vec<f64> {
    create_topic(nodes, "ctp-in", 2, rf);
    create_topic(nodes, "ctp-out", 2, rf);
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(nodes))
        .set("acks", "all")
        .create()
        .expect("producer");
    let mut inputs = BTreeSet::new();
    for part in 0..2 {
        for i in 0..60 {
            let v = format!("in-{part}-{i:02}");
            send(&plain, "ctp-in", part, &v);
            inputs.insert(format!("out:{v}"));
        }
    }
    plain.flush(T).expect("flush inputs");

    // A first instance commits a few transactions, then crashes inside one that already
    // produced its output and added its offsets.
    let c1 = ctp_consumer(nodes);
    let p1 = txn_producer(nodes, id, 60_000);
    let mut commit_ms = Vec::new();
    let mut committed = 0;
    for _ in 0..4 {
        let n = transform(&c1, &p1, 10);
        assert!(n > 0);
        let t = Instant::now();
        p1.commit_transaction(T).expect("commit");
        commit_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        committed += n;
    }
    assert!(transform(&c1, &p1, 10) > 0);
    p1.flush(T)
        .expect("the doomed transaction's output is in the log");
    crash(nodes);
    // The crash: no commit, no abort, the clients just stop (their threads leak with them).
    std::mem::forget(p1);
    drop(c1);

    // The restarted instance: its consumer asks for committed offsets while the dead
    // transaction still holds them (UNSTABLE_OFFSET_COMMIT, retried), and its producer's
    // init_transactions fences and aborts that transaction.
    let c2 = ctp_consumer(nodes);
    let p2 = txn_producer(nodes, id, 60_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed < inputs.len() {
        assert!(
            Instant::now() < deadline,
            "only {committed} inputs processed"
        );
        let n = transform(&c2, &p2, 10);
        let t = Instant::now();
        p2.commit_transaction(T).expect("commit");
        if n > 0 {
            commit_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        committed += n;
    }

    let rc = read_all(
        nodes,
        "ctp-out",
        2,
        "read_committed",
        inputs.len(),
        Duration::from_millis(500),
    );
    let mut seen = BTreeMap::new();
    for (_, v) in &rc {
        *seen.entry(v.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "processed twice in the committed output: {twice:?}"
    );
    assert_eq!(values(&rc), inputs, "every input processed exactly once");
    let ru = read_all(
        nodes,
        "ctp-out",
        2,
        "read_uncommitted",
        inputs.len() + 10,
        Duration::from_millis(500),
    );
    assert!(
        ru.len() >= inputs.len() + 10,
        "the crashed transaction's output is in the log (aborted): {} records",
        ru.len()
    );
    commit_ms.sort_by(f64::total_cmp);
    commit_ms
}

fn report(what: &str, ms: &[f64]) {
    eprintln!(
        "commit_transaction latency ({what}): p50 {:.1} ms, max {:.1} ms over {}",
        ms[ms.len() / 2],
        ms[ms.len() - 1],
        ms.len()
    );
}

#[test]
fn consume_transform_produce_survives_a_crash_mid_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = vec![BrokerProc::start(dir.path(), &[])];
    let ms = run_ctp(&mut nodes, 1, "tx-ctp", |_| {});
    report("single broker, 2 output partitions + offsets", &ms);
}

#[test]
fn consume_transform_produce_survives_a_coordinator_kill_mid_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    let id = "tx-ctp-kill";
    let ms = run_ctp(&mut nodes, 3, id, |nodes| {
        // Kill the transaction coordinator (leader of the id's __transaction_state partition,
        // 10 partitions by default) with the transaction open.
        let part = (java_hash(id).unsigned_abs() % 10) as usize;
        let leaders = nodes[0]
            .connect()
            .topic_metadata("__transaction_state")
            .expect("__transaction_state metadata");
        let coordinator = leaders[part].0;
        let i = nodes
            .iter()
            .position(|n| n.node_id == coordinator)
            .expect("coordinator node");
        eprintln!("killing transaction coordinator node {coordinator}");
        nodes[i].kill9();
    });
    report("3 brokers RF=3, 2 output partitions + offsets", &ms);
}

#[test]
fn an_abandoned_transaction_is_aborted_by_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = vec![BrokerProc::start(
        dir.path(),
        &[(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "200",
        )],
    )];
    create_topic(&nodes, "timeout", 1, 1);
    let stale = txn_producer(&nodes, "tx-abandoned", 2000);
    stale.begin_transaction().expect("begin");
    send(&stale, "timeout", 0, "abandoned");
    stale.flush(T).expect("flush");
    let started = Instant::now();
    let other = txn_producer(&nodes, "tx-other", 60_000);
    other.begin_transaction().expect("begin");
    send(&other, "timeout", 0, "after");
    other.commit_transaction(T).expect("commit");
    // "after" is committed but sits behind the open transaction (the LSO) until the
    // coordinator aborts it at its timeout.
    let rc = read_all(
        &nodes,
        "timeout",
        1,
        "read_committed",
        1,
        Duration::from_millis(300),
    );
    let waited = started.elapsed();
    assert_eq!(values(&rc), BTreeSet::from(["after".to_string()]));
    assert!(
        waited >= Duration::from_millis(1500),
        "read_committed must wait for the timeout abort, waited {waited:?}"
    );
    let err = stale
        .commit_transaction(T)
        .expect_err("a timed-out transaction cannot commit");
    eprintln!("timed-out producer's commit: {}", txn_error(&err));
}
