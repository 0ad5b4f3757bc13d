//! The real `broker` binary driven by real clients (kcat) and by raw Kafka frames: round trips,
//! crash recovery, retention, metrics, bad config, unsupported APIs and hostile input.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::log::batch::build_batch;
use kafka_protocol::messages::*;
use proptest::prelude::*;
use support::{records, BrokerProc, Conn};

fn kcat() -> &'static str {
    "kcat"
}

#[test]
fn kcat_round_trips_10k_keyed_messages_and_lists_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[("num.partitions", "3")]);
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!(
            "key-{}\tvalue-{i:05}-{}\n",
            i % 17,
            "x".repeat(i % 50)
        ));
    }
    let mut p = Command::new(kcat())
        .args([
            "-b",
            &b.addr(),
            "-P",
            "-t",
            "rt",
            "-K",
            "\t",
            "-X",
            "linger.ms=5",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (Debian package kcat)");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    assert!(p.wait().expect("kcat producer").success());
    let out = Command::new(kcat())
        .args([
            "-b",
            &b.addr(),
            "-C",
            "-t",
            "rt",
            "-e",
            "-q",
            "-f",
            "%k\t%s\t%p\t%o\n",
        ])
        .output()
        .expect("kcat consumer");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10_000, "every message consumed once");
    // Per key: values in the order produced (a key maps to one partition), bytes identical.
    let mut by_key: std::collections::BTreeMap<&str, Vec<(&str, i64)>> = Default::default();
    for l in &lines {
        let f: Vec<&str> = l.split('\t').collect();
        by_key
            .entry(f[0])
            .or_default()
            .push((f[1], f[3].parse().expect("offset")));
    }
    let mut expected: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for l in input.lines() {
        let (k, v) = l.split_once('\t').expect("tab");
        expected
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    for (k, vals) in &expected {
        let got: Vec<&str> = by_key[k.as_str()].iter().map(|(v, _)| *v).collect();
        assert_eq!(&got, vals, "key {k} in order with identical bytes");
        let offs: Vec<i64> = by_key[k.as_str()].iter().map(|(_, o)| *o).collect();
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "offsets increase for {k}"
        );
    }
    let meta = Command::new(kcat())
        .args(["-b", &b.addr(), "-L", "-t", "rt"])
        .output()
        .expect("kcat -L");
    let meta = String::from_utf8_lossy(&meta.stdout);
    assert!(
        meta.contains(&format!("broker 1 at 127.0.0.1:{}", b.port)),
        "{meta}"
    );
    assert!(meta.contains("topic \"rt\" with 3 partitions"), "{meta}");
    assert!(
        meta.contains("partition 2, leader 1, replicas: 1, isrs: 1"),
        "{meta}"
    );
}

#[test]
fn kill_9_mid_stream_keeps_every_acknowledged_batch_with_flush_per_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = BrokerProc::start(dir.path(), &[("log.flush.interval.messages", "1")]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("crash", 1, &[]), 0);
    let addr = b.addr();
    // A producer thread streams batches; the main thread kills the broker under it.
    let producer = std::thread::spawn(move || {
        let mut c = Conn::connect(&addr);
        let mut acked = Vec::new();
        for i in 0..100_000u32 {
            let v = format!("v{i}");
            match c.produce(
                "crash",
                0,
                build_batch(0, i as i64, &[(None, Some(v.as_bytes()))]),
                1,
            ) {
                Ok((0, off)) => acked.push((off, v)),
                Ok((e, _)) => panic!("unexpected error code {e}"),
                Err(_) => break, // the broker died mid-request: unknown outcome, not acknowledged
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(700));
    b.kill9();
    let acked = producer.join().expect("producer");
    assert!(
        acked.len() > 10,
        "some writes were acknowledged before the kill ({})",
        acked.len()
    );
    b.restart();
    let mut c = b.connect();
    let mut seen = Vec::new();
    let mut next = 0;
    loop {
        let (err, hw, _, bytes) = c.fetch("crash", 0, next, 100);
        assert_eq!(err, 0);
        let recs = records(bytes);
        if recs.is_empty() {
            assert_eq!(next, hw);
            break;
        }
        next = recs.last().map(|r| r.0 + 1).unwrap_or(next);
        seen.extend(recs);
    }
    for (off, v) in &acked {
        let found = seen
            .iter()
            .find(|(o, _)| o == off)
            .map(|(_, val)| val.as_slice());
        assert_eq!(
            found,
            Some(v.as_bytes()),
            "acknowledged {v} at offset {off} survives"
        );
    }
    // New writes continue right after the recovered end.
    let (err, off) = c
        .produce("crash", 0, build_batch(0, 0, &[(None, Some(b"after"))]), 1)
        .expect("produce");
    assert_eq!((err, off), (0, next));
}

#[test]
fn a_tail_truncated_mid_batch_is_recovered_to_the_last_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("torn", 1, &[]), 0);
    for i in 0..20 {
        let v = format!("value-{i}");
        assert_eq!(
            c.produce(
                "torn",
                0,
                build_batch(0, 0, &[(None, Some(v.as_bytes()))]),
                1
            )
            .expect("produce")
            .0,
            0
        );
    }
    b.stop();
    let seg = dir.path().join("data/torn-0/00000000000000000000.log");
    let len = std::fs::metadata(&seg).expect("segment").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 10)
        .expect("cut");
    b.restart();
    let mut c = b.connect();
    assert_eq!(
        c.list_offset("torn", 0, -1),
        (0, 19),
        "the torn 20th batch is gone"
    );
    let (_, _, _, bytes) = c.fetch("torn", 0, 0, 100);
    let recs = records(bytes);
    assert_eq!(recs.len(), 19);
    assert_eq!(recs[18].1, b"value-18");
    assert_eq!(
        c.produce("torn", 0, build_batch(0, 0, &[(None, Some(b"new"))]), 1)
            .expect("produce"),
        (0, 19)
    );
}

#[test]
fn retention_deletes_old_segments_and_earliest_offset_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[("log.retention.check.interval.ms", "200")]);
    let mut c = b.connect();
    assert_eq!(
        c.create_topic(
            "ret",
            1,
            &[("segment.bytes", "2000"), ("retention.bytes", "4000")]
        ),
        0
    );
    for i in 0..200 {
        let v = format!("{i:0100}");
        assert_eq!(
            c.produce(
                "ret",
                0,
                build_batch(0, 0, &[(None, Some(v.as_bytes()))]),
                1
            )
            .expect("produce")
            .0,
            0
        );
        if i == 0 {
            // One segment, nothing retention may delete yet. (Later checks race the
            // 200 ms retention task, which runs while the batches are produced.)
            assert_eq!(c.list_offset("ret", 0, -2), (0, 0));
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let earliest = loop {
        let (_, e) = c.list_offset("ret", 0, -2);
        if e > 0 || std::time::Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        earliest > 100,
        "earliest moved past deleted segments: {earliest}"
    );
    assert_eq!(c.list_offset("ret", 0, -1), (0, 200));
    let (err, ..) = c.fetch("ret", 0, 0, 0);
    assert_eq!(err, 1, "OFFSET_OUT_OF_RANGE below the log start");
    let segs = support::segment_files(&dir.path().join("data/ret-0"));
    assert!(segs <= 3, "only the newest segments remain ({segs})");
}

#[test]
fn metrics_and_health_endpoints_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("m", 2, &[]), 0);
    for _ in 0..7 {
        c.produce("m", 1, build_batch(0, 0, &[(None, Some(b"x"))]), 1)
            .expect("produce");
    }
    assert!(b.http_get("/health").contains("ok"));
    let m = b.http_get("/metrics");
    assert!(
        m.contains("kafka_log_end_offset{topic=\"m\",partition=\"1\"} 7"),
        "{m}"
    );
    assert!(m.contains("kafka_requests_total{api=\"Produce\"} 7"), "{m}");
}

#[test]
fn bad_config_exits_non_zero_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |text: &str| {
        let p = dir.path().join("bad.properties");
        std::fs::write(&p, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("--config")
            .arg(&p)
            .output()
            .expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run("node.id=1\nlisteners=localhost:9092\n").contains("listeners"));
    assert!(run("node.id=1\nnum.partitions=three\n").contains("num.partitions"));
    let err = run("node.id=1\nlisteners=PLAINTEXT://127.0.0.1:0\nlog.dirs=/proc/nope\n");
    assert!(err.contains("/proc/nope"), "{err}");
    let missing = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--config", "/nonexistent.properties"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.properties"));
}

#[test]
fn unsupported_apis_and_versions_get_kafka_errors_and_keep_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    // FindCoordinator v5 is past our range (0-4): each key gets UNSUPPORTED_VERSION.
    let mut fc = FindCoordinatorRequest::default();
    fc.coordinator_keys = vec![kafka_protocol::protocol::StrBytes::from_static_str("g")];
    let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 5, &fc).expect("answered");
    assert_eq!(r.coordinators.len(), 1);
    assert_eq!(r.coordinators[0].error_code, 35);
    // ApiVersions v99 (KIP-511): a v0 answer with UNSUPPORTED_VERSION and our ranges.
    let mut frame = Vec::new();
    let body: Vec<u8> = [18i16.to_be_bytes(), 99i16.to_be_bytes()]
        .concat()
        .into_iter()
        .chain(7i32.to_be_bytes())
        .chain((-1i16).to_be_bytes())
        .collect();
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    c.stream.write_all(&frame).expect("write");
    let mut resp = c.read_frame().expect("answered");
    let _ = <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut resp, 0)
        .expect("header");
    let av: ApiVersionsResponse =
        kafka_protocol::protocol::Decodable::decode(&mut resp, 0).expect("v0 body");
    assert_eq!(av.error_code, 35);
    assert!(av
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
    // The same connection still works.
    let r: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .expect("ok");
    assert_eq!(r.error_code, 0);
}

fn survives(b: &BrokerProc) {
    let mut c = b.connect();
    let r: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
        .expect("still serving");
    assert_eq!(r.error_code, 0);
    let (err, _) = c
        .produce("fuzz", 0, build_batch(0, 0, &[(None, Some(b"ok"))]), 1)
        .expect("produce");
    assert_eq!(err, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn hostile_frames_never_stop_the_broker(garbage in proptest::collection::vec(any::<u8>(), 0..300), len in any::<i32>(), key in 0i16..80, version in -2i16..20, flip in 0usize..200) {
        static BROKER: std::sync::OnceLock<(tempfile::TempDir, BrokerProc)> = std::sync::OnceLock::new();
        let (_, b) = BROKER.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let b = BrokerProc::start(dir.path(), &[("socket.request.max.bytes", "100000")]);
            assert_eq!(b.connect().create_topic("fuzz", 1, &[]), 0);
            (dir, b)
        });
        // 1: arbitrary length prefix (negative, huge) then garbage.
        let mut f = len.to_be_bytes().to_vec();
        f.extend_from_slice(&garbage);
        b.send_raw(&f);
        // 2: a plausible header (any key/version) with a garbage body.
        let mut body = key.to_be_bytes().to_vec();
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&garbage);
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        b.send_raw(&f);
        // 3: a valid produce frame with one byte flipped.
        let mut c = b.connect();
        let _ = &mut c;
        let batch = build_batch(0, 0, &[(None, Some(b"fuzzed"))]);
        let mut frame = produce_frame(&batch);
        let i = 4 + flip % (frame.len() - 4);
        frame[i] ^= 0x5a;
        b.send_raw(&frame);
        survives(b);
    }
}

fn produce_frame(batch: &[u8]) -> Vec<u8> {
    support::request_frame(
        ApiKey::Produce,
        8,
        1,
        &support::produce_request("fuzz", 0, batch.to_vec(), 1),
    )
}

#[test]
fn huge_declared_array_lengths_do_not_abort_the_broker() {
    // kafka-protocol pre-allocates arrays from the wire count (upstream PRs #152/#161/#200):
    // a Produce v3 frame declaring i32::MAX topics used to abort the process.
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    assert_eq!(b.connect().create_topic("fuzz", 1, &[]), 0);
    for (key, version) in [(0i16, 3i16), (3, 1), (1, 4), (2, 1)] {
        let mut body = Vec::new();
        body.extend_from_slice(&key.to_be_bytes());
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&9i32.to_be_bytes()); // correlation id
        body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        if key == 0 {
            body.extend_from_slice(&(-1i16).to_be_bytes()); // null transactional id
            body.extend_from_slice(&1i16.to_be_bytes()); // acks
            body.extend_from_slice(&1000i32.to_be_bytes()); // timeout
        }
        body.extend_from_slice(&i32::MAX.to_be_bytes()); // an impossible array length
        let mut f = (body.len() as i32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        b.send_raw(&f);
    }
    survives(&b);
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, value: &[u8]) -> Vec<u8> {
    let mut b = build_batch(0, 0, &[(None, Some(value))]);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = broker::log::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn idempotent_retry_of_a_batch_whose_ack_was_lost_is_written_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("idem", 1, &[]), 0);
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    let init: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 2, &req).expect("init");
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    let first = c
        .produce("idem", 0, idempotent_batch(pid, 0, 0, b"a"), -1)
        .expect("produce");
    assert_eq!(first, (0, 0));
    // The client never saw the ack and retries the same batch: same offset, no second copy.
    let retry = c
        .produce("idem", 0, idempotent_batch(pid, 0, 0, b"a"), -1)
        .expect("retry");
    assert_eq!(retry, (0, 0), "the retry is recognised as a duplicate");
    assert_eq!(
        c.produce("idem", 0, idempotent_batch(pid, 0, 1, b"b"), -1)
            .expect("next"),
        (0, 1)
    );
    // A gap in sequence numbers is OUT_OF_ORDER_SEQUENCE_NUMBER; an old epoch is fenced.
    assert_eq!(
        c.produce("idem", 0, idempotent_batch(pid, 0, 5, b"x"), -1)
            .expect("gap")
            .0,
        45
    );
    // Without a transactional id, InitProducerId always hands out a new producer id at epoch
    // 0, even when the request names the current one (Kafka's TransactionCoordinator
    // `handleInitProducerId` with a null transactional id).
    let mut again = InitProducerIdRequest::default();
    again.transactional_id = None;
    again.producer_id = ProducerId(pid);
    again.producer_epoch = 0;
    let renewed: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 3, &again).expect("again");
    assert_eq!(renewed.error_code, 0);
    assert_ne!(renewed.producer_id.0, pid, "a new producer id");
    assert_eq!(renewed.producer_epoch, 0, "at epoch 0");
    let pid2 = renewed.producer_id.0;
    assert_eq!(
        c.produce("idem", 0, idempotent_batch(pid2, 0, 0, b"c"), -1)
            .expect("new producer"),
        (0, 2)
    );
    let (_, _, _, bytes) = c.fetch("idem", 0, 0, 100);
    let vals: Vec<Vec<u8>> = records(bytes).into_iter().map(|(_, v)| v).collect();
    assert_eq!(vals, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    // A second producer gets a different id.
    let other: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 2, &req).expect("init");
    assert_ne!(other.producer_id.0, pid);
}

#[test]
fn graceful_stop_checkpoints_high_watermarks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut b = BrokerProc::start(dir.path(), &[]);
    let mut c = b.connect();
    assert_eq!(c.create_topic("hwc", 2, &[]), 0);
    for _ in 0..3 {
        assert_eq!(
            c.produce("hwc", 1, build_batch(0, 0, &[(None, Some(b"x"))]), -1)
                .expect("produce")
                .0,
            0
        );
    }
    b.stop();
    let text = std::fs::read_to_string(dir.path().join("data/replication-offset-checkpoint"))
        .expect("checkpoint written on graceful stop");
    assert!(text.lines().any(|l| l.trim() == "hwc 1 3"), "{text}");
    assert!(text.lines().any(|l| l.trim() == "hwc 0 0"), "{text}");
}
