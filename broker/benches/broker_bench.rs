//! Single-node broker throughput and latency through librdkafka on loopback, 1 KiB records,
//! acks=1, with and without flush-per-batch. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p broker --features rdkafka-tests --bench broker_bench`
//! (`BENCH_MESSAGES=N` changes the message count, default 50000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use support::BrokerProc;

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn run(label: &str, props: &[(&str, &str)], n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = BrokerProc::start(dir.path(), props);
    assert_eq!(b.connect().create_topic("bench", 1, &[]), 0);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .set("acks", "1")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    let payload = vec![b'x'; 1024];
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let p = producer.clone();
        let payload = payload.clone();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let key = i.to_string();
            let r = p
                .send(
                    FutureRecord::to("bench").key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await;
            (r.is_ok(), t0.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut ok = 0;
    for h in handles {
        let (good, d) = h.await.expect("task");
        ok += usize::from(good);
        lat.push(d);
    }
    let produce_secs = start.elapsed().as_secs_f64();
    lat.sort();
    // Closed loop: one record in flight at a time, the latency a lone producer sees.
    let mut lone = Vec::with_capacity(2000);
    for i in 0..2000 {
        let t0 = Instant::now();
        let key = format!("lone-{i}");
        let r = producer
            .send(
                FutureRecord::to("bench").key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await;
        if r.is_ok() {
            lone.push(t0.elapsed());
        }
    }
    lone.sort();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.addr())
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("bench", 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut read = 0;
    while read < ok && start.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
        }
    }
    let fetch_secs = start.elapsed().as_secs_f64();
    let mb = (n * 1024) as f64 / 1e6;
    println!(
        "{label:<26} produce {:>7.0} msg/s {:>6.1} MB/s (burst p50 {:>6.2} ms p99 {:>6.2} ms, {ok}/{n} acked) | one in flight p50 {:>5.2} ms p99 {:>5.2} ms | fetch {:>7.0} msg/s {:>6.1} MB/s",
        n as f64 / produce_secs,
        mb / produce_secs,
        quantile(&lat, 0.5).as_secs_f64() * 1e3,
        quantile(&lat, 0.99).as_secs_f64() * 1e3,
        quantile(&lone, 0.5).as_secs_f64() * 1e3,
        quantile(&lone, 0.99).as_secs_f64() * 1e3,
        read as f64 / fetch_secs,
        (read * 1024) as f64 / 1e6 / fetch_secs,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    println!("single-node broker, loopback, librdkafka, 1 KiB records, acks=1, {n} messages");
    run("no fsync (Kafka default)", &[], n).await;
    run(
        "flush-per-batch",
        &[("log.flush.interval.messages", "1")],
        n,
    )
    .await;
}
