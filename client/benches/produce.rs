//! Produce throughput and latency against a local 3-broker cluster (real broker processes):
//! for acks=1 (idempotence off) and acks=all (idempotent), 64 concurrent senders and then one,
//! printing records/s and p50/p99/max send latency.
//!
//! Run: `cargo build --release -p broker && cargo bench -p client --bench produce`
//! (the broker binary is found beside the bench's `deps/` folder or at `$BROKER_BIN`).
//! `BENCH_RECORDS` sets the record count per run (default 20000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Acks, Admin, Config, Error, NewTopic, Producer};
use hdrhistogram::Histogram;

const PARTITIONS: i32 = 3;

fn config(boot: &[String], acks: Acks) -> Config {
    let mut c = Config::new(boot.iter().cloned());
    c.acks = acks;
    c.enable_idempotence = acks == Acks::All;
    c
}

async fn run(boot: &[String], topic: &str, acks: Acks, records: usize, senders: usize) {
    let producer = Producer::new(config(boot, acks)).expect("producer");
    // Warm up: metadata, connections, producer id.
    for p in 0..PARTITIONS {
        let o = producer
            .send(topic, Some(p), None, Some(Bytes::from_static(b"warmup")))
            .await;
        assert!(o.offset().is_some(), "warm-up send: {o:?}");
    }
    let value = Bytes::from(vec![b'x'; 100]);
    let per = records / senders;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let p = producer.clone();
        let topic = topic.to_string();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut failed = 0usize;
            for i in 0..per {
                let t = Instant::now();
                let part = ((s + i) % PARTITIONS as usize) as i32;
                let o = p.send(&topic, Some(part), None, Some(value.clone())).await;
                if o.offset().is_none() {
                    failed += 1;
                }
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
            (h, failed)
        }));
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut failed = 0;
    for t in tasks {
        let (th, f) = t.await.expect("sender");
        h.add(th).expect("merge");
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = per * senders;
    println!(
        "acks={:<4} senders={:<3} records={:<6} {:>9.0} records/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  failed {}",
        match acks {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        },
        senders,
        n,
        n as f64 / secs,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        failed
    );
}

fn main() {
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = support::cluster(dir.path(), 3);
    let boot = support::bootstrap(&nodes);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let admin = Admin::new(Config::new(boot.iter().cloned())).expect("admin");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = NewTopic::new("bench", PARTITIONS, 3).config("min.insync.replicas", "2");
            match admin.create_topic(t, Duration::from_secs(10)).await {
                Ok(_) => break,
                Err(Error::Broker { code, .. }) if code.0 == 36 => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "create topic: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        admin
            .wait_for_leaders("bench", PARTITIONS, Duration::from_secs(30))
            .await
            .expect("leaders");
        let boot = Arc::new(boot);
        for acks in [Acks::Leader, Acks::All] {
            run(&boot, "bench", acks, records, 64).await;
            run(&boot, "bench", acks, records / 10, 1).await;
        }
    });
    drop(nodes);
}
