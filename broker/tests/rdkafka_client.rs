//! librdkafka (statically built through the `rdkafka` crate) against the real broker binary:
//! 10,000 keyed messages produced with acks=1 and consumed back identical, in order per partition.
#![cfg(feature = "rdkafka-tests")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::BrokerProc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_round_trips_10k_keyed_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    assert_eq!(b.connect().create_topic("rd", 3, &[]), 0);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .set("acks", "1")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut sent: BTreeMap<(i32, i64), (String, String)> = BTreeMap::new();
    let mut pending = Vec::new();
    for i in 0..10_000 {
        let key = format!("key-{}", i % 13);
        let value = format!("value-{i:05}");
        let p = producer.clone();
        pending.push(tokio::spawn(async move {
            let rec = FutureRecord::to("rd").key(&key).payload(&value);
            let r = p.send(rec, Duration::from_secs(10)).await;
            (r.map_err(|(e, _)| e.to_string()), key, value)
        }));
    }
    for h in pending {
        let (r, k, v) = h.await.expect("task");
        let d = r.expect("acknowledged");
        sent.insert((d.partition, d.offset), (k, v));
    }
    assert_eq!(sent.len(), 10_000);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .set("group.id", "unused-with-assign")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("rd", p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut got: BTreeMap<(i32, i64), (String, String)> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < sent.len() && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            let k = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8");
            let v = String::from_utf8(m.payload().expect("value").to_vec()).expect("utf-8");
            got.insert((m.partition(), m.offset()), (k, v));
        }
    }
    assert_eq!(
        got, sent,
        "every acknowledged message read back at its offset, identical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_idempotent_producer_writes_each_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    assert_eq!(b.connect().create_topic("idem", 1, &[]), 0);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut offsets = Vec::new();
    for i in 0..500 {
        let v = format!("idem-{i}");
        let d = producer
            .send(
                FutureRecord::to("idem").key("k").payload(&v),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e.to_string())
            .expect("acknowledged");
        offsets.push(d.offset);
    }
    assert_eq!(
        offsets,
        (0..500).collect::<Vec<i64>>(),
        "each record once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_admin_creates_topics() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), &[]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .create()
        .expect("admin");
    let t =
        NewTopic::new("made-by-admin", 3, TopicReplication::Fixed(1)).set("retention.ms", "60000");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let r = admin.create_topics([&t], &opts).await.expect("answered");
    assert!(r[0].is_ok(), "{r:?}");
    let parts = b.connect().topic_metadata("made-by-admin").expect("exists");
    assert_eq!(parts.len(), 3);
}
