//! The client against real broker processes (built with `cargo build -p broker`): admin,
//! producer (acks=1 and acks=all, idempotent), assign-mode consumer, a leader killed
//! mid-stream, and outcome classification when the broker is stopped or killed.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::conn::Connection;
use client::partitioner::partition_for_key;
use client::{
    Acks, Admin, Config, Consumer, Error, NewTopic, Outcome, Producer, Seek, SendError,
    TopicPartition,
};
use kafka_protocol::error::ResponseError;

fn config(bootstrap: Vec<String>) -> Config {
    let mut c = Config::new(bootstrap);
    c.request_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(1);
    c.retry_backoff = Duration::from_millis(50);
    c.delivery_timeout = Duration::from_secs(20);
    c
}

/// Creates a topic, retrying while the cluster is still forming (brokers not yet registered).
async fn create(admin: &Admin, topic: NewTopic) -> client::TopicInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = admin
            .create_topic(topic.clone(), Duration::from_secs(10))
            .await;
        match r {
            Ok(t) => return t,
            Err(Error::Broker { code, .. })
                if code.0 == ResponseError::TopicAlreadyExists.code() =>
            {
                return admin
                    .wait_for_leaders(&topic.name, topic.partitions, Duration::from_secs(10))
                    .await
                    .expect("leaders");
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "create {}: {e}", topic.name);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Reads `tp` from the start until `end` (exclusive); offset -> value.
async fn read_all(consumer: &mut Consumer, tp: &TopicPartition, end: i64) -> BTreeMap<i64, Bytes> {
    consumer.assign([tp.clone()]);
    consumer.seek(tp, Seek::Earliest).await.expect("seek");
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.position(tp).unwrap_or(0) < end {
        assert!(
            Instant::now() < deadline,
            "read {tp} stuck at {:?} of {end}",
            consumer.position(tp)
        );
        for pr in consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
        {
            assert_eq!(&pr.tp, tp);
            for r in pr.records {
                let prev = out.insert(r.offset, r.value.unwrap_or_default());
                assert!(prev.is_none(), "offset {} delivered twice", r.offset);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_broker_admin_produce_consume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    // ApiVersions negotiation: the highest version both sides speak.
    {
        use kafka_protocol::messages::ApiKey;
        let conn = Connection::connect(
            &b.addr(),
            "t",
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .await
        .expect("connect");
        for (key, v) in [
            (ApiKey::Produce, 9),
            (ApiKey::Fetch, 12),
            (ApiKey::ListOffsets, 6),
            (ApiKey::Metadata, 9),
            (ApiKey::CreateTopics, 7),
            (ApiKey::DeleteTopics, 6),
            (ApiKey::InitProducerId, 4),
            (ApiKey::ApiVersions, 3),
            (ApiKey::FindCoordinator, 3),
            (ApiKey::JoinGroup, 5),
            (ApiKey::OffsetFetch, 5),
            (ApiKey::AddPartitionsToTxn, 3),
            (ApiKey::AddOffsetsToTxn, 3),
            (ApiKey::EndTxn, 3),
            (ApiKey::TxnOffsetCommit, 3),
        ] {
            assert_eq!(conn.version(key), Some(v), "{key:?}");
        }
        // An API the client does not speak has no version, whatever the broker serves.
        assert_eq!(conn.version(ApiKey::WriteTxnMarkers), None);
        // A first ApiVersions at a version the broker lacks (v4) gets KIP-511's v0 answer with
        // UNSUPPORTED_VERSION and the broker's ranges, which are used.
        let conn4 = Connection::connect_with(
            &b.addr(),
            "t",
            Duration::from_secs(1),
            Duration::from_secs(5),
            4,
        )
        .await
        .expect("connect with ApiVersions v4");
        assert_eq!(conn4.version(ApiKey::Produce), Some(9));
        assert_eq!(conn4.version(ApiKey::ApiVersions), Some(3));
    }
    let admin = Admin::new(config(vec![b.addr()])).expect("admin");
    let t = create(&admin, NewTopic::new("t1", 2, 1)).await;
    assert_eq!(t.partitions.len(), 2);

    // Errors are mapped from the broker's codes.
    let again = admin
        .create_topics(&[NewTopic::new("t1", 2, 1)], Duration::from_secs(5))
        .await
        .expect("create again");
    assert!(matches!(&again[0].1, Err(Error::Broker { code, .. })
        if code.0 == ResponseError::TopicAlreadyExists.code()));
    let bad = admin
        .create_topics(&[NewTopic::new("bad name!", 1, 1)], Duration::from_secs(5))
        .await
        .expect("create bad");
    assert!(matches!(&bad[0].1, Err(Error::Broker { code, .. })
        if code.0 == ResponseError::InvalidTopicException.code()));

    let mut pc = config(vec![b.addr()]);
    pc.acks = Acks::Leader;
    pc.enable_idempotence = false;
    let producer = Producer::new(pc).expect("producer");
    let mut sent: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for i in 0..50 {
        let key = format!("k{}", i % 7);
        let value = format!("v{i}");
        let (p, o) = producer
            .send_with_partition(
                "t1",
                None,
                Some(Bytes::from(key.clone())),
                Some(Bytes::from(value.clone())),
            )
            .await;
        let p = p.expect("partition");
        assert_eq!(
            p,
            partition_for_key(key.as_bytes(), 2),
            "documented key hash"
        );
        let off = o.offset().unwrap_or_else(|| panic!("send {i}: {o:?}"));
        sent.insert((p, off), value);
    }
    // acks=0: written, never acknowledged, so indeterminate; it does reach the log.
    let mut c0 = config(vec![b.addr()]);
    c0.acks = Acks::None;
    c0.enable_idempotence = false;
    let p0 = Producer::new(c0).expect("acks=0 producer");
    let o = p0
        .send("t1", Some(1), None, Some(Bytes::from_static(b"unacked")))
        .await;
    assert_eq!(o, Outcome::Indeterminate(SendError::Unacknowledged));
    // A batch over message.max.bytes is refused before the append: definite.
    let o = producer
        .send("t1", Some(0), None, Some(Bytes::from(vec![b'x'; 2 << 20])))
        .await;
    assert!(
        matches!(&o, Outcome::Definite(SendError::Broker { code, .. })
            if code.0 == ResponseError::MessageTooLarge.code()),
        "{o:?}"
    );
    // An unknown topic is refused before anything is sent.
    let o = producer
        .send("no-such-topic", None, None, Some(Bytes::from_static(b"x")))
        .await;
    assert!(
        matches!(o, Outcome::Definite(SendError::Refused(_))),
        "{o:?}"
    );

    let mut consumer = Consumer::new(config(vec![b.addr()])).expect("consumer");
    let mut read: BTreeMap<(i32, i64), String> = BTreeMap::new();
    for p in 0..2 {
        let tp = TopicPartition::new("t1", p);
        let end = consumer
            .list_offset(&tp, Seek::Latest)
            .await
            .expect("latest");
        for (off, v) in read_all(&mut consumer, &tp, end).await {
            read.insert((p, off), String::from_utf8_lossy(&v).into_owned());
        }
    }
    let unacked: Vec<(i32, i64)> = read
        .iter()
        .filter(|(_, v)| v.as_str() == "unacked")
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(unacked.len(), 1, "the acks=0 record is in the log once");
    read.remove(&unacked[0]);
    assert_eq!(
        read, sent,
        "every acknowledged record read back at its offset"
    );

    // Seek to latest: nothing new.
    let tp = TopicPartition::new("t1", 0);
    consumer.assign([tp.clone()]);
    let latest = consumer.seek(&tp, Seek::Latest).await.expect("seek latest");
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .expect("poll")
        .is_empty());
    assert_eq!(consumer.position(&tp), Some(latest));
    // An out-of-range position is reset by auto.offset.reset (latest by default).
    consumer
        .seek(&tp, Seek::Offset(latest + 1000))
        .await
        .expect("seek");
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .expect("poll")
        .is_empty());
    assert_eq!(consumer.position(&tp), Some(latest));

    // read_committed is sent in Fetch and ListOffsets; without transactions it reads the same.
    let mut rc = config(vec![b.addr()]);
    rc.isolation_level = client::IsolationLevel::ReadCommitted;
    rc.auto_offset_reset = client::OffsetReset::Earliest;
    let mut committed = Consumer::new(rc).expect("read_committed consumer");
    let tp0 = TopicPartition::new("t1", 0);
    let end0 = committed
        .list_offset(&tp0, Seek::Latest)
        .await
        .expect("latest");
    committed.assign([tp0.clone()]);
    let mut n = 0;
    while committed.position(&tp0).unwrap_or(0) < end0 {
        for pr in committed.poll(Duration::from_secs(2)).await.expect("poll") {
            n += pr.records.len();
        }
    }
    let want = sent.keys().filter(|(p, _)| *p == 0).count();
    assert_eq!(
        n, want,
        "auto.offset.reset=earliest then read_committed sees partition 0"
    );

    // auto.offset.reset=none: an out-of-range position is an error, not a silent jump.
    let mut nc = config(vec![b.addr()]);
    nc.auto_offset_reset = client::OffsetReset::None;
    let mut strict = Consumer::new(nc).expect("consumer");
    strict.assign([tp0.clone()]);
    assert!(matches!(
        strict.poll(Duration::from_millis(200)).await,
        Err(Error::OffsetOutOfRange(_))
    ));
    strict
        .seek(&tp0, Seek::Offset(end0 + 5))
        .await
        .expect("seek");
    assert!(matches!(
        strict.poll(Duration::from_millis(200)).await,
        Err(Error::OffsetOutOfRange(_))
    ));

    // Dropping the producer stops its partition senders (they hold its cluster handle).
    let cluster = producer.cluster().clone();
    drop(producer);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&cluster) > 1 {
        assert!(
            Instant::now() < deadline,
            "partition senders outlive the producer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let del = admin
        .delete_topics(&["t1"], Duration::from_secs(5))
        .await
        .expect("delete");
    assert!(del[0].1.is_ok(), "{del:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.describe_topic("t1").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "topic still described after delete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_killed_broker_outcomes_with_acks_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = support::single(dir.path());
    let admin = Admin::new(config(vec![b.addr()])).expect("admin");
    create(&admin, NewTopic::new("s", 1, 1)).await;
    let mut pc = config(vec![b.addr()]);
    pc.acks = Acks::Leader;
    pc.enable_idempotence = false;
    pc.delivery_timeout = Duration::from_secs(3);
    pc.request_timeout = Duration::from_secs(10);
    let producer = Producer::new(pc.clone()).expect("producer");
    let o = producer
        .send("s", Some(0), None, Some(Bytes::from_static(b"a")))
        .await;
    assert_eq!(o, Outcome::Ok(0));

    // Written to a stopped broker, which is then killed: may have been appended.
    b.signal("STOP");
    let p2 = producer.clone();
    let pending = tokio::spawn(async move {
        p2.send("s", Some(0), None, Some(Bytes::from_static(b"b")))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.kill9();
    let o = pending.await.expect("task");
    assert!(matches!(o, Outcome::Indeterminate(_)), "{o:?}");

    // The broker is gone: every attempt is refused before sending.
    let o = producer
        .send("s", Some(0), None, Some(Bytes::from_static(b"c")))
        .await;
    assert!(matches!(o, Outcome::Definite(_)), "{o:?}");
    // A fresh producer cannot even get metadata: also definite.
    let fresh = Producer::new(pc).expect("producer");
    let o = fresh
        .send("s", Some(0), None, Some(Bytes::from_static(b"d")))
        .await;
    assert!(
        matches!(o, Outcome::Definite(SendError::NotSent(_))),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_rf3_ordered_idempotent_and_leader_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = support::cluster(dir.path(), 3);
    let boot = support::bootstrap(&nodes);
    let admin = Admin::new(config(boot.clone())).expect("admin");
    let t = create(
        &admin,
        NewTopic::new("ordered", 1, 3).config("min.insync.replicas", "2"),
    )
    .await;
    assert_eq!(t.partitions[0].replicas.len(), 3, "{t:?}");

    // acks=all, idempotent: 2,000 pipelined sends, read back exactly in order.
    let producer = Producer::new(config(boot.clone())).expect("producer");
    let sends = (0..2000).map(|i| {
        let p = producer.clone();
        async move {
            p.send("ordered", Some(0), None, Some(Bytes::from(format!("v{i}"))))
                .await
        }
    });
    let outcomes = futures::future::join_all(sends).await;
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o, &Outcome::Ok(i as i64), "send {i}");
    }
    let mut consumer = Consumer::new(config(boot.clone())).expect("consumer");
    let tp = TopicPartition::new("ordered", 0);
    let read = read_all(&mut consumer, &tp, 2000).await;
    assert_eq!(read.len(), 2000);
    for (i, (off, v)) in read.iter().enumerate() {
        assert_eq!(*off, i as i64);
        assert_eq!(v, &Bytes::from(format!("v{i}")));
    }

    // The batches carry a producer id and sequence numbers that follow the offsets.
    let leader = t.partitions[0].leader;
    let addr = nodes[(leader - 1) as usize].addr();
    let conn = Connection::connect(&addr, "t", Duration::from_secs(1), Duration::from_secs(5))
        .await
        .expect("connect");
    let raw = raw_fetch(&conn, "ordered", 0).await;
    let infos = kafka_protocol::records::RecordBatchDecoder::decode_batch_info(&mut raw.clone())
        .expect("batch info");
    assert!(!infos.is_empty());
    for info in &infos {
        assert!(
            info.producer_id >= 0,
            "idempotent batches carry a producer id"
        );
        assert_eq!(
            i64::from(info.base_sequence),
            info.min_offset,
            "sequence follows offset"
        );
    }

    // Leader killed mid-stream: every send ends, and every Ok offset holds its value.
    // First with the idempotent acks=all producer (retries dedupe), then, after the killed
    // node is back, without idempotence and without retries (in-flight sends stay uncertain).
    let mut pc = config(boot.clone());
    pc.delivery_timeout = Duration::from_secs(15);
    pc.request_timeout = Duration::from_secs(3);
    let killed = kill_leader_mid_stream(&mut nodes, &admin, "kill", pc.clone()).await;
    nodes[(killed - 1) as usize].restart();
    pc.enable_idempotence = false;
    pc.retries = 0;
    kill_leader_mid_stream(&mut nodes, &admin, "kill2", pc).await;
}

/// Streams sends from 16 tasks to a new RF=3 topic, kill -9s its leader after 300 are
/// acknowledged, keeps sending through the failover, then checks every `Ok` offset holds its
/// value. Returns the killed node id.
async fn kill_leader_mid_stream(
    nodes: &mut [support::Broker],
    admin: &Admin,
    topic: &'static str,
    pc: Config,
) -> i32 {
    create(
        admin,
        NewTopic::new(topic, 1, 3).config("min.insync.replicas", "2"),
    )
    .await;
    let producer = Producer::new(pc).expect("producer");
    let oks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let p = producer.clone();
        let oks = oks.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let v = format!("w{w}-{k}");
                let o = p
                    .send(topic, Some(0), None, Some(Bytes::from(v.clone())))
                    .await;
                if o.offset().is_some() {
                    oks.fetch_add(1, Ordering::Relaxed);
                }
                out.push((v, o));
            }
            out
        }));
    }
    while oks.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A consumer that knows the old leader keeps reading across the failover.
    let mut consumer = Consumer::new(config(support::bootstrap(nodes))).expect("consumer");
    let tp = TopicPartition::new(topic, 0);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, Seek::Earliest).await.expect("seek");
    assert!(!consumer
        .poll(Duration::from_secs(5))
        .await
        .expect("poll")
        .is_empty());
    let leader = admin
        .describe_topic(topic)
        .await
        .expect("describe")
        .partitions[0]
        .leader;
    nodes[(leader - 1) as usize].kill9();
    let at_kill = oks.load(Ordering::Relaxed);
    // Keep sending through the failover.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.expect("sender task"));
    }
    let (mut ok, mut definite, mut indeterminate) = (0, 0, 0);
    for (_, o) in &results {
        match o {
            Outcome::Ok(_) => ok += 1,
            Outcome::Definite(_) => definite += 1,
            Outcome::Indeterminate(_) => indeterminate += 1,
        }
    }
    eprintln!(
        "leader {leader} killed after {at_kill} ok: {ok} ok, {definite} definite, \
         {indeterminate} indeterminate"
    );
    assert!(ok > at_kill, "sends succeed after the failover");
    let end = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match consumer.list_offset(&tp, Seek::Latest).await {
                Ok(e) => break e,
                Err(e) => {
                    assert!(Instant::now() < deadline, "latest offset: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let read = read_all(&mut consumer, &tp, end).await;
    // No two acknowledged sends share an offset.
    let mut offsets = std::collections::HashSet::new();
    for (v, o) in &results {
        if let Outcome::Ok(off) = o {
            assert!(
                offsets.insert(*off),
                "{v} acknowledged at offset {off} twice"
            );
        }
    }
    // A definite failure never shows up in the log.
    let present: std::collections::HashSet<String> = read
        .values()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    for (v, o) in &results {
        if let Outcome::Definite(e) = o {
            assert!(
                !present.contains(v),
                "{v} failed definitely ({e}) but was written"
            );
        }
    }
    for (v, o) in &results {
        if let Outcome::Ok(off) = o {
            assert_eq!(
                read.get(off)
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
                Some(v.clone()),
                "acknowledged {v} at offset {off}"
            );
        }
    }
    leader
}

async fn raw_fetch(conn: &Connection, topic: &str, partition: i32) -> Bytes {
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    let v = conn.version(ApiKey::Fetch).expect("fetch version");
    let tp = TopicPartition::new(topic, partition);
    let req = client::consumer::fetch_request(
        &config(Vec::new()),
        &[(tp, 0, -1)],
        Duration::from_millis(100),
        v,
    );
    let resp: FetchResponse = conn
        .call(v, &req, Duration::from_secs(5))
        .await
        .expect("fetch");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    // Only whole batches.
    let mut bytes = p.records.clone().unwrap_or_default();
    let mut whole = 0usize;
    while bytes.len() - whole >= 12 {
        let len = i32::from_be_bytes([
            bytes[whole + 8],
            bytes[whole + 9],
            bytes[whole + 10],
            bytes[whole + 11],
        ]) as usize;
        if bytes.len() - whole < 12 + len {
            break;
        }
        whole += 12 + len;
    }
    bytes.truncate(whole);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_is_indeterminate_and_idempotent_sequences_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let admin = Admin::new(config(vec![b.addr()])).expect("admin");
    create(&admin, NewTopic::new("r", 1, 1)).await;
    let mut pc = config(vec![b.addr()]);
    pc.request_timeout = Duration::from_millis(700);
    pc.delivery_timeout = Duration::from_secs(2);
    let producer = Producer::new(pc).expect("producer");
    assert!(
        producer
            .send("r", Some(0), None, Some(Bytes::from_static(b"a")))
            .await
            .offset()
            == Some(0)
    );

    // The broker is paused: the request goes out and times out; its fate is unknown.
    b.signal("STOP");
    let o = producer
        .send("r", Some(0), None, Some(Bytes::from_static(b"b")))
        .await;
    b.signal("CONT");
    assert!(matches!(o, Outcome::Indeterminate(_)), "{o:?}");

    // The sequence gap is repaired with a new producer id: later sends succeed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let c_off = loop {
        let o = producer
            .send("r", Some(0), None, Some(Bytes::from_static(b"c")))
            .await;
        if let Some(off) = o.offset() {
            break off;
        }
        assert!(
            Instant::now() < deadline,
            "no send succeeds after the pause: {o:?}"
        );
    };
    let conn = Connection::connect(
        &b.addr(),
        "t",
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await
    .expect("connect");
    let raw = raw_fetch(&conn, "r", 0).await;
    let infos = kafka_protocol::records::RecordBatchDecoder::decode_batch_info(&mut raw.clone())
        .expect("batch info");
    let first = infos.first().expect("a batch");
    let last = infos.last().expect("a batch");
    assert_eq!(last.min_offset, c_off);
    assert_ne!(
        first.producer_id, last.producer_id,
        "a fresh producer id after the reset"
    );
    assert_eq!(last.base_sequence, 0);
    // The paused request was in fact appended once the broker resumed: why it was not `fail`.
    let mut consumer = Consumer::new(config(vec![b.addr()])).expect("consumer");
    let tp = TopicPartition::new("r", 0);
    let values: Vec<Bytes> = read_all(&mut consumer, &tp, c_off + 1)
        .await
        .into_values()
        .collect();
    eprintln!("after the pause the log holds {values:?}");
    assert_eq!(values.first(), Some(&Bytes::from_static(b"a")));
    assert_eq!(values.last(), Some(&Bytes::from_static(b"c")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_broker_large_writes_are_classified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let admin = Admin::new(config(vec![b.addr()])).expect("admin");
    create(&admin, NewTopic::new("w", 4, 1)).await;
    let mut pc = config(vec![b.addr()]);
    pc.acks = Acks::Leader;
    pc.enable_idempotence = false;
    pc.request_timeout = Duration::from_secs(1);
    pc.delivery_timeout = Duration::from_secs(3);
    let producer = Producer::new(pc).expect("producer");
    for p in 0..4 {
        let o = producer
            .send("w", Some(p), None, Some(Bytes::from_static(b"warm")))
            .await;
        assert!(o.offset().is_some(), "{o:?}");
    }
    // 40 half-megabyte records, 20 in flight at once on one connection to a paused broker:
    // more than the socket buffers hold, so some writes stall as well.
    b.signal("STOP");
    let started = Instant::now();
    let sends = (0..40).map(|i| {
        let p = producer.clone();
        let mut v = format!("big-{i}-").into_bytes();
        v.resize(500_000, b'x');
        async move {
            (
                i,
                p.send("w", Some(i % 4), None, Some(Bytes::from(v))).await,
            )
        }
    });
    let results = futures::future::join_all(sends).await;
    let took = started.elapsed();
    b.signal("CONT");
    assert!(took < Duration::from_secs(15), "sends took {took:?}");
    let mut definite = Vec::new();
    let mut indeterminate = 0;
    for (i, o) in &results {
        match o {
            Outcome::Ok(_) => panic!("send {i} acknowledged by a paused broker"),
            Outcome::Definite(_) => definite.push(*i),
            Outcome::Indeterminate(_) => indeterminate += 1,
        }
    }
    eprintln!(
        "paused broker: {} definite, {indeterminate} indeterminate in {took:?}",
        definite.len()
    );
    assert!(
        indeterminate > 0,
        "requests were written before the pause was noticed"
    );
    // Whatever the resumed broker appended, no definite failure is among it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut consumer = Consumer::new(config(vec![b.addr()])).expect("consumer");
    let mut present = std::collections::HashSet::new();
    for p in 0..4 {
        let tp = TopicPartition::new("w", p);
        let end = consumer
            .list_offset(&tp, Seek::Latest)
            .await
            .expect("latest");
        for v in read_all(&mut consumer, &tp, end).await.into_values() {
            let tag: Vec<u8> = v.iter().take_while(|&&c| c != b'x').copied().collect();
            present.insert(String::from_utf8_lossy(&tag).into_owned());
        }
    }
    for i in definite {
        assert!(
            !present.contains(&format!("big-{i}-")),
            "send {i} failed definitely but is in the log"
        );
    }
}

/// Longer: three rounds of kill -9 and restart of a partition leader under a steady idempotent
/// acks=all stream to three partitions; afterwards every Ok is read back at its offset, no
/// offset is acknowledged twice, and no definite failure is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute; run with --ignored"]
async fn soak_repeated_leader_kills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = support::cluster(dir.path(), 3);
    let boot = support::bootstrap(&nodes);
    let admin = Admin::new(config(boot.clone())).expect("admin");
    create(
        &admin,
        NewTopic::new("soak", 3, 3).config("min.insync.replicas", "2"),
    )
    .await;
    let mut pc = config(boot.clone());
    pc.delivery_timeout = Duration::from_secs(10);
    pc.request_timeout = Duration::from_secs(2);
    let producer = Producer::new(pc).expect("producer");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..12 {
        let p = producer.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let v = format!("w{w}-{k}");
                let part = w % 3;
                let o = p
                    .send("soak", Some(part), None, Some(Bytes::from(v.clone())))
                    .await;
                out.push((part, v, o));
            }
            out
        }));
    }
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let leader = admin
            .describe_topic("soak")
            .await
            .expect("describe")
            .partitions[round % 3]
            .leader;
        if leader < 1 {
            continue;
        }
        nodes[(leader - 1) as usize].kill9();
        tokio::time::sleep(Duration::from_secs(5)).await;
        nodes[(leader - 1) as usize].restart();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.expect("sender"));
    }
    let mut counts = [0usize; 3];
    for (_, _, o) in &results {
        counts[match o {
            Outcome::Ok(_) => 0,
            Outcome::Definite(_) => 1,
            Outcome::Indeterminate(_) => 2,
        }] += 1;
    }
    eprintln!(
        "soak: {} ok, {} definite, {} indeterminate",
        counts[0], counts[1], counts[2]
    );
    let mut consumer = Consumer::new(config(boot)).expect("consumer");
    for part in 0..3 {
        let tp = TopicPartition::new("soak", part);
        let end = consumer
            .list_offset(&tp, Seek::Latest)
            .await
            .expect("latest");
        let read = read_all(&mut consumer, &tp, end).await;
        let present: std::collections::HashSet<String> = read
            .values()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let mut offsets = std::collections::HashSet::new();
        for (p, v, o) in &results {
            if *p != part {
                continue;
            }
            match o {
                Outcome::Ok(off) => {
                    assert!(offsets.insert(*off), "offset {off} acknowledged twice");
                    assert_eq!(
                        read.get(off)
                            .map(|b| String::from_utf8_lossy(b).into_owned()),
                        Some(v.clone()),
                        "acknowledged {v} at {tp} offset {off}"
                    );
                }
                Outcome::Definite(e) => {
                    assert!(
                        !present.contains(v),
                        "{v} failed definitely ({e}) but is in {tp}"
                    )
                }
                Outcome::Indeterminate(_) => {}
            }
        }
    }
}

/// A poll returns one leader's records without waiting out the long polls of leaders that
/// have nothing new (as Kafka's consumer does), and a fetch left in flight by one poll is not
/// applied after a seek moved the position it was sent from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_does_not_wait_for_idle_leaders_and_a_seek_discards_a_fetch_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = support::cluster(dir.path(), 3);
    let boot = support::bootstrap(&nodes);
    let admin = Admin::new(config(boot.clone())).expect("admin");
    let t = create(&admin, NewTopic::new("spread", 3, 1)).await;
    let leaders: std::collections::BTreeSet<i32> = t.partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "one partition per broker: {t:?}");

    let producer = Producer::new(config(boot.clone())).expect("producer");
    let send = |p: i32, i: usize| {
        let producer = producer.clone();
        async move {
            let o = producer
                .send(
                    "spread",
                    Some(p),
                    None,
                    Some(Bytes::from(format!("p{p}-{i}"))),
                )
                .await;
            assert!(matches!(o, Outcome::Ok(_)), "send to {p}: {o:?}");
        }
    };
    for i in 0..10 {
        send(0, i).await;
    }

    // Idle leaders hold their fetches for fetch.max.wait.ms = 5 s.
    let mut c = config(boot.clone());
    c.fetch_max_wait = Duration::from_secs(5);
    let mut consumer = Consumer::new(c).expect("consumer");
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("spread", p)).collect();
    consumer.assign(tps.clone());
    for tp in &tps {
        consumer.seek(tp, Seek::Earliest).await.expect("seek");
    }
    let started = Instant::now();
    let got = consumer.poll(Duration::from_secs(10)).await.expect("poll");
    let took = started.elapsed();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].tp, tps[0]);
    let offsets: Vec<i64> = got[0].records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    assert!(
        took < Duration::from_millis(2500),
        "poll waited {took:?} for leaders with nothing to read"
    );

    // Read partition 1 up to offset 3; then one record on partition 2 ends the next poll
    // early, leaving a fetch of partition 1 from offset 3 in flight. Two more records on
    // partition 1 answer that fetch, and a seek back to offset 1 comes before the next poll:
    // what the old fetch brought (from 3) must not be applied at position 1.
    for i in 0..3 {
        send(1, i).await;
    }
    let mut read: Vec<(i64, Option<Bytes>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumer.position(&tps[1]) < Some(3) {
        assert!(Instant::now() < deadline, "partition 1 stuck");
        consumer.poll(Duration::from_secs(10)).await.expect("poll");
    }
    send(2, 0).await;
    let got = consumer.poll(Duration::from_secs(10)).await.expect("poll");
    assert!(got.iter().any(|pr| pr.tp == tps[2]), "{got:?}");
    for i in 3..5 {
        send(1, i).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    consumer.seek(&tps[1], Seek::Offset(1)).await.expect("seek");
    while consumer.position(&tps[1]) < Some(5) {
        assert!(Instant::now() < deadline, "partition 1 stuck: {read:?}");
        for pr in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            assert_eq!(pr.tp, tps[1], "{pr:?}");
            read.extend(pr.records.iter().map(|r| (r.offset, r.value.clone())));
        }
    }
    let want: Vec<(i64, Option<Bytes>)> = (1..5)
        .map(|i| (i, Some(Bytes::from(format!("p1-{i}")))))
        .collect();
    assert_eq!(read, want);
}
