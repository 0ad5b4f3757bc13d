//! The real `broker` binary, API by API, through raw Kafka frames: Fetch long-polling
//! (`max_wait_ms`, `min_bytes`, woken by appends), CreateTopics/DeleteTopics errors and
//! validate-only, Metadata auto-creation on and off, Produce errors, acks=0 (no response),
//! LogAppendTime, ListOffsets by timestamp, and topic configs surviving a restart.

mod support;

use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::{records, BrokerProc, Conn};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_CONFIG: i16 = 40;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A Fetch of partition 0 waiting for `min_bytes` up to `max_wait_ms`; returns the partition's
/// (error, high watermark, records).
fn fetch_min(
    c: &mut Conn,
    topic: &str,
    offset: i64,
    min_bytes: i32,
    max_wait_ms: i32,
) -> (i16, i64, Bytes) {
    let (err, hw, _, bytes) = c.fetch_with(topic, 0, offset, min_bytes, max_wait_ms);
    (err, hw, bytes)
}

fn produce_ok(c: &mut Conn, topic: &str, value: &[u8]) -> i64 {
    let (err, off) = c
        .produce(topic, 0, build_batch(0, 0, &[(None, Some(value))]), 1)
        .expect("produce answered");
    assert_eq!(err, 0, "produce to {topic}");
    off
}

#[test]
fn fetch_long_poll_waits_for_min_bytes_and_is_woken_by_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("lp", 1, &[]), 0);

    // Nothing to read: the broker holds the fetch for max_wait_ms, then answers empty.
    let t0 = Instant::now();
    let (err, hw, recs) = fetch_min(&mut c, "lp", 0, 1, 400);
    assert_eq!((err, hw), (0, 0));
    assert!(recs.is_empty());
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "an empty fetch waits max_wait_ms instead of answering at once ({:?})",
        t0.elapsed()
    );

    // A fetch waiting for 1 byte is answered by the next append, long before max_wait_ms.
    let addr = b.addr();
    let waiter = std::thread::spawn(move || {
        let mut c = Conn::connect(&addr);
        let t0 = Instant::now();
        let r = fetch_min(&mut c, "lp", 0, 1, 9_000);
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    produce_ok(&mut c, "lp", b"wake");
    let ((err, hw, bytes), took) = waiter.join().expect("waiter");
    assert_eq!((err, hw), (0, 1));
    assert_eq!(records(bytes), vec![(0, b"wake".to_vec())]);
    assert!(
        took < Duration::from_secs(7),
        "woken by the append, not by the 9 s max wait ({took:?})"
    );

    // min_bytes: a small append does not complete a fetch that wants 2,000 bytes; the fetch
    // answers once enough has been appended, with everything from its offset.
    let addr = b.addr();
    let waiter = std::thread::spawn(move || {
        let mut c = Conn::connect(&addr);
        fetch_min(&mut c, "lp", 1, 2_000, 9_000)
    });
    std::thread::sleep(Duration::from_millis(300));
    produce_ok(&mut c, "lp", b"small");
    std::thread::sleep(Duration::from_millis(300));
    let big = vec![b'b'; 3_000];
    produce_ok(&mut c, "lp", &big);
    let (err, hw, bytes) = waiter.join().expect("waiter");
    assert_eq!((err, hw), (0, 3));
    assert!(bytes.len() >= 2_000, "min_bytes honoured ({})", bytes.len());
    assert_eq!(
        records(bytes),
        vec![(1, b"small".to_vec()), (2, big)],
        "the answer came after the second append and holds both"
    );

    // A fetch beyond the log end is OFFSET_OUT_OF_RANGE, answered without waiting.
    let (err, ..) = fetch_min(&mut c, "lp", 10, 1, 9_000);
    assert_eq!(err, OFFSET_OUT_OF_RANGE);
}

fn create(c: &mut Conn, topic: &str, partitions: i32, validate_only: bool) -> (i16, i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    req.validate_only = validate_only;
    let resp: CreateTopicsResponse = c
        .call(ApiKey::CreateTopics, 7, &req)
        .expect("create answered");
    (resp.topics[0].error_code, resp.topics[0].num_partitions)
}

fn delete(c: &mut Conn, topic: &str) -> i16 {
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = vec![name(topic)];
    req.timeout_ms = 5000;
    let resp: DeleteTopicsResponse = c
        .call(ApiKey::DeleteTopics, 4, &req)
        .expect("delete answered");
    resp.responses[0].error_code
}

/// Metadata v9 of one topic with the request's auto-creation flag.
fn metadata(c: &mut Conn, topic: &str, allow_auto_create: bool) -> (i16, usize) {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let mut t = MetadataRequestTopic::default();
    t.name = Some(name(topic));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = allow_auto_create;
    let resp: MetadataResponse = c
        .call(ApiKey::Metadata, 9, &req)
        .expect("metadata answered");
    assert_eq!(resp.controller_id.0, 1, "this node is the controller");
    assert_eq!(resp.brokers.len(), 1);
    (resp.topics[0].error_code, resp.topics[0].partitions.len())
}

#[test]
fn create_and_delete_topics_answer_kafka_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[("auto.create.topics.enable", "false")]);
    let mut c = b.connect();
    assert_eq!(create(&mut c, "t1", 2, false), (0, 2));
    assert_eq!(create(&mut c, "t1", 2, false).0, TOPIC_ALREADY_EXISTS);
    assert_eq!(
        create(&mut c, "bad name!", 1, false).0,
        INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(create(&mut c, "..", 1, false).0, INVALID_TOPIC_EXCEPTION);
    assert_eq!(create(&mut c, "t2", 0, false).0, INVALID_PARTITIONS);
    assert_eq!(
        c.create_topic("t3", 1, &[("retention.ms", "soon")]),
        INVALID_CONFIG
    );
    assert_eq!(
        c.create_topic("t3", 1, &[("retention.msec", "1")]),
        INVALID_CONFIG,
        "unknown topic config names are refused, as Kafka does"
    );
    assert_eq!(
        c.create_topic("t3", 1, &[("min.insync.replicas", "0")]),
        INVALID_CONFIG
    );
    assert_eq!(
        metadata(&mut c, "t3", false).0,
        UNKNOWN_TOPIC_OR_PARTITION,
        "a refused topic is not created"
    );
    // validate_only checks without creating.
    assert_eq!(create(&mut c, "t4", 3, true), (0, 3));
    assert_eq!(metadata(&mut c, "t4", false).0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(create(&mut c, "t4", 0, true).0, INVALID_PARTITIONS);

    // The created topic is there with its partitions and a directory per partition.
    assert_eq!(metadata(&mut c, "t1", false), (0, 2));
    assert!(dir.path().join("data/t1-1").is_dir());
    produce_ok(&mut c, "t1", b"x");
    assert_eq!(delete(&mut c, "t1"), 0);
    assert_eq!(metadata(&mut c, "t1", false).0, UNKNOWN_TOPIC_OR_PARTITION);
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.path().join("data/t1-0").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !dir.path().join("data/t1-0").exists(),
        "partition directory removed"
    );
    assert_eq!(delete(&mut c, "t1"), UNKNOWN_TOPIC_OR_PARTITION);
    // With auto-creation disabled, producing to the deleted topic is refused.
    let (err, _) = c
        .produce("t1", 0, build_batch(0, 0, &[(None, Some(b"y"))]), 1)
        .expect("produce answered");
    assert_eq!(err, UNKNOWN_TOPIC_OR_PARTITION);
    // The name can be used again.
    assert_eq!(create(&mut c, "t1", 1, false), (0, 1));
    assert_eq!(
        c.create_topic("t6", 1, &[("cleanup.policy", "delete")]),
        0,
        "Kafka topic configs this broker does not act on are accepted"
    );
    assert_eq!(
        c.list_offset("t1", 0, -1),
        (0, 0),
        "a re-created topic is empty"
    );
}

#[test]
fn metadata_auto_creates_only_when_enabled_and_requested() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[("num.partitions", "4")]);
    let mut c = b.connect();
    assert_eq!(
        metadata(&mut c, "not-asked", false).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        metadata(&mut c, "auto", true),
        (0, 4),
        "num.partitions applies"
    );
    assert_eq!(
        metadata(&mut c, "not-asked", false).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

/// Writes a Produce v8 with acks=0 (correlation id 9999) without waiting for an answer.
fn send_acks_zero(c: &mut Conn, topic: &str, batch: Vec<u8>) {
    use std::io::Write;
    let req = support::produce_request(topic, 0, batch, 0);
    c.stream
        .write_all(&support::request_frame(ApiKey::Produce, 8, 9999, &req))
        .expect("write");
}

#[test]
fn produce_errors_acks_zero_and_log_append_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[("auto.create.topics.enable", "false")]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("p", 1, &[("max.message.bytes", "1000")]), 0);

    // A flipped byte inside the records fails the CRC: CORRUPT_MESSAGE, nothing written.
    let mut batch = build_batch(0, 0, &[(None, Some(b"hello world"))]);
    let last = batch.len() - 3;
    batch[last] ^= 0xff;
    let (err, _) = c.produce("p", 0, batch, 1).expect("answered");
    assert_eq!(err, CORRUPT_MESSAGE);
    // Larger than the topic's max.message.bytes: MESSAGE_TOO_LARGE.
    let big = vec![0u8; 2000];
    let (err, _) = c
        .produce("p", 0, build_batch(0, 0, &[(None, Some(&big))]), 1)
        .expect("answered");
    assert_eq!(err, MESSAGE_TOO_LARGE);
    // Unknown partition and unknown topic.
    let (err, _) = c
        .produce("p", 7, build_batch(0, 0, &[(None, Some(b"x"))]), 1)
        .expect("answered");
    assert_eq!(err, UNKNOWN_TOPIC_OR_PARTITION);
    let (err, _) = c
        .produce("nope", 0, build_batch(0, 0, &[(None, Some(b"x"))]), 1)
        .expect("answered");
    assert_eq!(err, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        c.list_offset("p", 0, -1),
        (0, 0),
        "refused batches wrote nothing"
    );

    // acks=0 gets no response at all: the next answer on the connection is for the next request
    // (`Conn::call` checks the correlation id).
    for i in 0..3 {
        let v = format!("fire-and-forget-{i}");
        send_acks_zero(
            &mut c,
            "p",
            build_batch(0, 0, &[(None, Some(v.as_bytes()))]),
        );
    }
    assert_eq!(produce_ok(&mut c, "p", b"acked"), 3);
    let (_, _, _, bytes) = c.fetch("p", 0, 0, 100);
    let got: Vec<Vec<u8>> = records(bytes).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        got,
        vec![
            b"fire-and-forget-0".to_vec(),
            b"fire-and-forget-1".to_vec(),
            b"fire-and-forget-2".to_vec(),
            b"acked".to_vec()
        ]
    );

    // LogAppendTime topics report the append time in the response; CreateTime ones -1.
    assert_eq!(
        c.create_topic("lat", 1, &[("message.timestamp.type", "LogAppendTime")]),
        0
    );
    let append_time = |c: &mut Conn, topic: &str| {
        let req = support::produce_request(topic, 0, build_batch(0, 5, &[(None, Some(b"t"))]), 1);
        let resp: ProduceResponse = c.call(ApiKey::Produce, 8, &req).expect("answered");
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        p.log_append_time_ms
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let t = append_time(&mut c, "lat");
    assert!(
        t >= before - 1000,
        "log append time {t} is now-ish ({before})"
    );
    assert_eq!(append_time(&mut c, "p"), -1, "CreateTime topics report -1");
}

#[test]
fn list_offsets_by_timestamp_finds_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("ts", 1, &[]), 0);
    for (i, ts) in [1_000i64, 2_000, 3_000, 3_000, 5_000].iter().enumerate() {
        let v = format!("at-{ts}");
        let (err, off) = c
            .produce(
                "ts",
                0,
                build_batch(0, *ts, &[(None, Some(v.as_bytes()))]),
                1,
            )
            .expect("answered");
        assert_eq!((err, off), (0, i as i64));
    }
    assert_eq!(c.list_offset("ts", 0, 0), (0, 0));
    assert_eq!(c.list_offset("ts", 0, 1_000), (0, 0));
    assert_eq!(c.list_offset("ts", 0, 1_500), (0, 1));
    assert_eq!(c.list_offset("ts", 0, 3_000), (0, 2));
    assert_eq!(c.list_offset("ts", 0, 4_000), (0, 4));
    assert_eq!(
        c.list_offset("ts", 0, 6_000),
        (0, -1),
        "no record that late: offset -1"
    );
    assert_eq!(c.list_offset("ts", 0, -2), (0, 0));
    assert_eq!(c.list_offset("ts", 0, -1), (0, 5));
    assert_eq!(c.list_offset("ts", 3, -1).0, UNKNOWN_TOPIC_OR_PARTITION);
}

#[test]
fn topics_and_their_configs_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = BrokerProc::start(dir.path(), &[("auto.create.topics.enable", "false")]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("keep", 3, &[("segment.bytes", "1024")]), 0);
    produce_ok(&mut c, "keep", b"before");
    b.stop();
    b.restart();
    let mut c = b.connect();
    assert_eq!(metadata(&mut c, "keep", false), (0, 3));
    assert_eq!(c.list_offset("keep", 0, -1), (0, 1));
    // The topic's segment.bytes still applies: 200-byte records roll a segment every few.
    for i in 0..30 {
        produce_ok(&mut c, "keep", format!("{i:0200}").as_bytes());
    }
    let segments = support::segment_files(&dir.path().join("data/keep-0"));
    assert!(
        segments >= 5,
        "segment.bytes=1024 survived the restart ({segments} segments)"
    );
}

#[test]
fn time_based_roll_and_time_retention_through_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[("log.retention.check.interval.ms", "200")]);
    let mut c = b.connect();
    assert_eq!(
        c.create_topic(
            "aged",
            1,
            &[("segment.ms", "200"), ("retention.ms", "60000")]
        ),
        0
    );
    // A record stamped in 1970 is far past retention.ms, but lives in the active segment,
    // which retention never deletes.
    let (err, off) = c
        .produce(
            "aged",
            0,
            build_batch(0, 1_000, &[(None, Some(b"ancient"))]),
            1,
        )
        .expect("answered");
    assert_eq!((err, off), (0, 0));
    std::thread::sleep(Duration::from_millis(600));
    // segment.ms has passed: the segment is rolled, so the ancient record's segment is closed
    // and the next retention check deletes it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let (err, off) = c
        .produce("aged", 0, build_batch(0, now, &[(None, Some(b"fresh"))]), 1)
        .expect("answered");
    assert_eq!((err, off), (0, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.list_offset("aged", 0, -2).1 == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        c.list_offset("aged", 0, -2),
        (0, 1),
        "earliest moved past the old segment"
    );
    let (err, hw, start, bytes) = c.fetch("aged", 0, 1, 100);
    assert_eq!((err, hw, start), (0, 2, 1));
    assert_eq!(records(bytes), vec![(1, b"fresh".to_vec())]);
    assert_eq!(c.fetch("aged", 0, 0, 100).0, OFFSET_OUT_OF_RANGE);
    // Idle time does not pile up empty segments.
    std::thread::sleep(Duration::from_millis(800));
    let segments = support::segment_files(&dir.path().join("data/aged-0"));
    assert!(
        segments <= 2,
        "no empty segments rolled while idle ({segments})"
    );
}

#[test]
fn a_busy_port_fails_fast_and_sigterm_exits_cleanly() {
    use std::process::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let cfg = dir.path().join("server.properties");
    let write_cfg = |port: u16| {
        std::fs::write(
            &cfg,
            format!(
                "node.id=1\nlisteners=PLAINTEXT://127.0.0.1:{port}\nlog.dirs={}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config")
    };
    write_cfg(port);
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a taken port is an error");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    drop(busy);

    // SIGTERM: logs flushed and closed, exit status 0, and the restart finds every record.
    let port = support::free_port();
    write_cfg(port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--config")
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = loop {
        if let Some(c) = Conn::try_connect(&addr) {
            break c;
        }
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(c.create_topic("bye", 1, &[]), 0);
    for i in 0..50 {
        assert_eq!(produce_ok(&mut c, "bye", format!("r{i}").as_bytes()), i);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "SIGTERM is a clean shutdown ({exit})");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.list_offset("bye", 0, -1), (0, 50));
}

/// One Fetch (v11, no waiting) of partitions `(index, offset, partition_max_bytes)` of `topic`
/// with response limit `max_bytes`; returns per partition (error, offsets read).
fn fetch_limited(
    c: &mut Conn,
    topic: &str,
    parts: &[(i32, i64, i32)],
    max_bytes: i32,
) -> Vec<(i16, Vec<i64>)> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let mut ft = FetchTopic::default();
    ft.topic = name(topic);
    ft.partitions = parts
        .iter()
        .map(|&(index, offset, limit)| {
            let mut fp = FetchPartition::default();
            fp.partition = index;
            fp.fetch_offset = offset;
            fp.partition_max_bytes = limit;
            fp
        })
        .collect();
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_bytes = max_bytes;
    req.topics = vec![ft];
    let resp: FetchResponse = c.call(ApiKey::Fetch, 11, &req).expect("fetch answered");
    resp.responses[0]
        .partitions
        .iter()
        .map(|p| {
            let offs = records(p.records.clone().unwrap_or_default())
                .into_iter()
                .map(|(o, _)| o)
                .collect();
            (p.error_code, offs)
        })
        .collect()
}

#[test]
fn fetch_honours_partition_and_response_byte_limits_in_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("lim", 2, &[]), 0);
    let value = vec![b'v'; 1000];
    for p in 0..2 {
        for _ in 0..5 {
            c.produce("lim", p, build_batch(0, 0, &[(None, Some(&value))]), 1)
                .expect("answered");
        }
    }
    let big = 50 << 20;
    // Each batch is a little over 1,000 bytes: 2,500 bytes hold two whole batches.
    assert_eq!(
        fetch_limited(&mut c, "lim", &[(0, 0, 2_500)], big),
        vec![(0, vec![0, 1])]
    );
    // A limit smaller than one batch still returns the first batch whole (KIP-74).
    assert_eq!(
        fetch_limited(&mut c, "lim", &[(0, 3, 10)], big),
        vec![(0, vec![3])]
    );
    // The response limit spans partitions: the second gets what the first left over (nothing
    // whole), and only the first partition with data may exceed the limit.
    assert_eq!(
        fetch_limited(&mut c, "lim", &[(0, 0, 1 << 20), (1, 0, 1 << 20)], 2_500),
        vec![(0, vec![0, 1]), (0, vec![])]
    );
    assert_eq!(
        fetch_limited(&mut c, "lim", &[(0, 5, 1 << 20), (1, 0, 1 << 20)], 10),
        vec![(0, vec![]), (0, vec![0])],
        "the first partition that has data gets one batch"
    );
    // One partition out of range does not spoil the other.
    assert_eq!(
        fetch_limited(&mut c, "lim", &[(0, 99, 1 << 20), (1, 4, 1 << 20)], big),
        vec![(OFFSET_OUT_OF_RANGE, vec![]), (0, vec![4])]
    );
}

#[test]
fn absurd_partition_counts_are_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    for n in [i32::MAX, 1_000_000] {
        assert_eq!(
            create(&mut c, &format!("huge{n}"), n, false).0,
            INVALID_PARTITIONS
        );
    }
    assert_eq!(create(&mut c, "fine", 3, false), (0, 3));
    assert_eq!(metadata(&mut c, "fine", false), (0, 3));
}
