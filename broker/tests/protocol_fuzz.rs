//! Protocol fuzzing of the real `broker` binary with mutated valid frames of every API it serves
//! (flexible and non-flexible versions): flipped bytes, truncations, and huge integers written
//! over counts and lengths. After each case the broker must still answer ApiVersions and a
//! Produce on a fresh connection.
//!
//! Seeded: `FUZZ_SEED` (default 1) fixes the cases; `FUZZ_CASES` (default 40) sets how many.
//! A longer run: `FUZZ_CASES=2000 cargo test -p broker --test protocol_fuzz`.

mod support;

use broker::log::batch::build_batch;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use support::{produce_request, request_frame, BrokerProc};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One valid request frame per API and a few versions, aimed at the topic `fz-del`.
fn valid_frames() -> Vec<Vec<u8>> {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let mut out = Vec::new();
    let mut av = ApiVersionsRequest::default();
    av.client_software_name = StrBytes::from_static_str("fuzz");
    av.client_software_version = StrBytes::from_static_str("1");
    out.push(request_frame(ApiKey::ApiVersions, 3, 1, &av));
    let mut mt = MetadataRequestTopic::default();
    mt.name = Some(name("fz-del"));
    let mut md = MetadataRequest::default();
    md.topics = Some(vec![mt]);
    md.allow_auto_topic_creation = true;
    for v in [1, 9] {
        out.push(request_frame(ApiKey::Metadata, v, 2, &md));
    }
    let mut fp = FetchPartition::default();
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = name("fz-del");
    ft.partitions = vec![fp];
    let mut fetch = FetchRequest::default();
    fetch.replica_id = BrokerId(-1);
    fetch.max_wait_ms = 50;
    fetch.max_bytes = 1 << 20;
    fetch.topics = vec![ft];
    for v in [4, 12] {
        out.push(request_frame(ApiKey::Fetch, v, 3, &fetch));
    }
    let mut lp = ListOffsetsPartition::default();
    lp.timestamp = -1;
    let mut lt = ListOffsetsTopic::default();
    lt.name = name("fz-del");
    lt.partitions = vec![lp];
    let mut lo = ListOffsetsRequest::default();
    lo.replica_id = BrokerId(-1);
    lo.topics = vec![lt];
    for v in [1, 6] {
        out.push(request_frame(ApiKey::ListOffsets, v, 4, &lo));
    }
    let mut cfg = CreatableTopicConfig::default();
    cfg.name = StrBytes::from_static_str("retention.ms");
    cfg.value = Some(StrBytes::from_static_str("60000"));
    let mut ct = CreatableTopic::default();
    ct.name = name("fz-new");
    ct.num_partitions = 2;
    ct.replication_factor = 1;
    ct.configs = vec![cfg];
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![ct];
    create.timeout_ms = 1000;
    for v in [2, 7] {
        out.push(request_frame(ApiKey::CreateTopics, v, 5, &create));
    }
    let mut del = DeleteTopicsRequest::default();
    del.topic_names = vec![name("fz-del")];
    del.timeout_ms = 1000;
    out.push(request_frame(ApiKey::DeleteTopics, 4, 6, &del));
    let batch = build_batch(0, 0, &[(Some(b"k"), Some(b"fuzzed value"))]);
    for v in [3, 9] {
        out.push(request_frame(
            ApiKey::Produce,
            v,
            7,
            &produce_request("fz-del", 0, batch.clone(), 1),
        ));
    }
    let init = InitProducerIdRequest::default();
    out.push(request_frame(ApiKey::InitProducerId, 4, 8, &init));
    out
}

/// How a valid frame is damaged.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR these (position, mask) pairs into the frame after the length prefix.
    Flip(Vec<(usize, u8)>),
    /// Cut the body at this point (the length prefix is fixed up to match).
    Truncate(usize),
    /// Write i32::MAX (or -2) at this position after the header: a huge count or length.
    Huge(usize, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        proptest::collection::vec((any::<usize>(), 1u8..=255), 1..5).prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<bool>()).prop_map(|(p, neg)| Mutation::Huge(p, neg)),
    ]
}

fn apply(frame: &[u8], m: &Mutation) -> Vec<u8> {
    let mut f = frame.to_vec();
    let body = f.len() - 4;
    match m {
        Mutation::Flip(flips) => {
            for (pos, mask) in flips {
                f[4 + pos % body] ^= mask;
            }
        }
        Mutation::Truncate(at) => {
            let keep = at % body;
            f.truncate(4 + keep);
            f[..4].copy_from_slice(&(keep as i32).to_be_bytes());
        }
        Mutation::Huge(pos, neg) => {
            // Past the 8-byte api key/version/correlation id, so the frame stays routable.
            if body > 12 {
                let p = 4 + 8 + pos % (body - 12);
                let v: i32 = if *neg { -2 } else { i32::MAX };
                f[p..p + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
    }
    f
}

/// The broker still answers ApiVersions and accepts a Produce on a fresh connection.
fn still_serving(b: &BrokerProc) {
    let mut c = b.connect();
    let r: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .expect("still serving ApiVersions");
    assert_eq!(r.error_code, 0);
    let created = c.create_topic("fz-keep", 1, &[]);
    assert!(created == 0 || created == 36, "create fz-keep: {created}");
    let (err, _) = c
        .produce(
            "fz-keep",
            0,
            build_batch(0, 0, &[(None, Some(b"still here"))]),
            1,
        )
        .expect("still serving Produce");
    assert_eq!(err, 0);
}

fn config() -> Config {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    Config {
        cases: env("FUZZ_CASES", 40) as u32,
        rng_seed: RngSeed::Fixed(env("FUZZ_SEED", 1)),
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn mutated_valid_frames_never_stop_the_broker() {
    // One broker for every case, dropped (killed, its directory removed) at the end.
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[("socket.request.max.bytes", "1000000")]);
    let frames = valid_frames();
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&(any::<usize>(), mutation()), |(which, m)| {
        let frame = &frames[which % frames.len()];
        // The unmutated frame first (it must be served), then the damaged one.
        b.send_raw(frame);
        b.send_raw(&apply(frame, &m));
        still_serving(&b);
        Ok(())
    });
    if let Err(e) = result {
        let kept = dir.keep();
        panic!(
            "{e}; broker log kept: {}",
            kept.join("broker.log").display()
        );
    }
}
