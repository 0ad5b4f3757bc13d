//! A 3-broker loopback cluster: acks=all RF=3 produce throughput and latency through librdkafka
//! (1 KiB records), and failover time (leader kill -9 to the first acknowledged acks=all
//! produce), median over repeated kills. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p broker --features rdkafka-tests --bench cluster_bench`
//! (`BENCH_MESSAGES`, default 20000; `BENCH_KILLS`, default 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::{BrokerProc, Conn};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn leader(nodes: &[BrokerProc], topic: &str, not: Option<i32>, isr: usize) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for n in nodes.iter().filter(|n| n.running()) {
            if let Some(Ok(p)) = Conn::try_connect(&n.addr()).map(|mut c| c.topic_metadata(topic)) {
                let l = p[0].0;
                // Trust only the leader's own view (a just-restarted node's image may be stale).
                if l == n.node_id && Some(l) != not && p[0].1.len() >= isr {
                    return l;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn q(sorted: &[Duration], f: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * f).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("BENCH_MESSAGES", 20_000);
    let kills = env("BENCH_KILLS", 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes[0]
        .connect()
        .create_topic_rf("bench", 1, 3, &[("min.insync.replicas", "2")])
        != 0
    {
        assert!(Instant::now() < deadline, "create failed");
        std::thread::sleep(Duration::from_millis(200));
    }
    leader(&nodes, "bench", None, 3);
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap.join(","))
        .set("acks", "all")
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
            let key = i.to_string();
            p.send(
                FutureRecord::to("bench").key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .is_ok()
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap_or(false));
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lone = Vec::new();
    for i in 0..1000 {
        let t0 = Instant::now();
        let key = format!("lone-{i}");
        if producer
            .send(
                FutureRecord::to("bench").key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .is_ok()
        {
            lone.push(t0.elapsed());
        }
    }
    lone.sort();
    println!("3-broker cluster, loopback, librdkafka, RF=3, acks=all, min.insync=2, 1 KiB records");
    println!(
        "produce {:.0} msg/s {:.1} MB/s ({ok}/{n} acked); one in flight p50 {:.2} ms p99 {:.2} ms",
        n as f64 / secs,
        (n * 1024) as f64 / 1e6 / secs,
        q(&lone, 0.5),
        q(&lone, 0.99)
    );
    drop(producer);
    // Failover: kill -9 the leader, time until an acks=all produce to the new leader succeeds;
    // then restart the old leader and wait for the ISR to be whole again.
    let mut times = Vec::new();
    for _ in 0..kills {
        let l = leader(&nodes, "bench", None, 3);
        let killed = Instant::now();
        nodes[(l - 1) as usize].kill9();
        loop {
            let nl = leader(&nodes, "bench", Some(l), 1);
            if let Some(mut c) = Conn::try_connect(&nodes[(nl - 1) as usize].addr()) {
                if let Ok((0, _)) =
                    c.produce("bench", 0, build_batch(0, 0, &[(None, Some(b"f"))]), -1)
                {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        times.push(killed.elapsed());
        eprintln!("kill {} of leader {l}: {:?}", times.len(), killed.elapsed());
        nodes[(l - 1) as usize].restart();
    }
    times.sort();
    println!(
        "failover (leader kill -9 to first acks=all success), {} kills: median {:.0} ms, worst {:.0} ms (broker.session.timeout.ms=2000)",
        times.len(),
        q(&times, 0.5),
        q(&times, 1.0)
    );
}
