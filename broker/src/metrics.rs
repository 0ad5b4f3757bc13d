//! Broker metrics: request counts and latencies per API, bytes in and out, and per-partition log
//! gauges, rendered as Prometheus text for the `/metrics` endpoint (served with `/health` by
//! [`serve`]). Replication adds its gauges (ISR size and members, high watermark, leader epoch,
//! the leader this broker believes in) here, and the broker its own (node id, fenced state,
//! under-replicated partitions): what the harness scrapes each second into `metrics.jsonl`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Debug, Default, Clone)]
struct ApiStats {
    count: u64,
    errors: u64,
    sum_secs: f64,
    buckets: [u64; BUCKETS.len()],
}

/// A partition's gauges, as the server reports them when rendering.
#[derive(Debug, Clone)]
pub struct PartitionGauges {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Log end offset.
    pub log_end_offset: i64,
    /// High watermark.
    pub high_watermark: i64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Segments on disk.
    pub segments: usize,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// On the leader, the offset its epoch starts at (its log end when it was elected);
    /// -1 elsewhere.
    pub leader_epoch_start_offset: i64,
    /// ISR size.
    pub isr_size: usize,
    /// Whether the ISR is smaller than the replica set.
    pub under_replicated: bool,
    /// Whether this broker leads the partition.
    pub leader: bool,
    /// The leader this broker's metadata names (-1: none known).
    pub leader_id: i32,
    /// The ISR members this broker knows of (the leader's own view on the leader).
    pub isr: Vec<i32>,
}

/// The broker's own gauges.
#[derive(Debug, Clone, Default)]
pub struct BrokerGauges {
    /// `node.id`.
    pub node_id: i32,
    /// Whether this broker's metadata has it fenced (or not registered).
    pub fenced: bool,
}

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub struct Metrics {
    apis: Mutex<BTreeMap<&'static str, ApiStats>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections: AtomicU64,
    bad_frames: AtomicU64,
}

impl Metrics {
    /// Records one request of `api` that took `elapsed`.
    pub fn record_request(&self, api: &'static str, elapsed: Duration, error: bool) {
        let secs = elapsed.as_secs_f64();
        let mut apis = self.apis.lock().unwrap_or_else(|p| p.into_inner());
        let s = apis.entry(api).or_default();
        s.count += 1;
        s.errors += u64::from(error);
        s.sum_secs += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    /// Adds request bytes received.
    pub fn add_bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds response bytes sent.
    pub fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts an accepted connection.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame refused as malformed or oversized.
    pub fn bad_frame(&self) {
        self.bad_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders everything as Prometheus text.
    pub fn render(&self, broker: &BrokerGauges, partitions: &[PartitionGauges]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# TYPE kafka_broker_id gauge\nkafka_broker_id {}",
            broker.node_id
        );
        let _ = writeln!(
            out,
            "# TYPE kafka_broker_fenced gauge\nkafka_broker_fenced {}",
            u8::from(broker.fenced)
        );
        let _ = writeln!(
            out,
            "# TYPE kafka_broker_under_replicated_partitions gauge\n\
             kafka_broker_under_replicated_partitions {}",
            partitions
                .iter()
                .filter(|p| p.leader && p.under_replicated)
                .count()
        );
        let apis = self.apis.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(out, "# TYPE kafka_requests_total counter");
        for (api, s) in &apis {
            let _ = writeln!(out, "kafka_requests_total{{api=\"{api}\"}} {}", s.count);
        }
        let _ = writeln!(out, "# TYPE kafka_request_errors_total counter");
        for (api, s) in &apis {
            let _ = writeln!(
                out,
                "kafka_request_errors_total{{api=\"{api}\"}} {}",
                s.errors
            );
        }
        let _ = writeln!(out, "# TYPE kafka_request_latency_seconds histogram");
        for (api, s) in &apis {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "kafka_request_latency_seconds_bucket{{api=\"{api}\",le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "kafka_request_latency_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "kafka_request_latency_seconds_sum{{api=\"{api}\"}} {}",
                s.sum_secs
            );
            let _ = writeln!(
                out,
                "kafka_request_latency_seconds_count{{api=\"{api}\"}} {}",
                s.count
            );
        }
        for (name, v) in [
            ("kafka_bytes_in_total", &self.bytes_in),
            ("kafka_bytes_out_total", &self.bytes_out),
            ("kafka_connections_total", &self.connections),
            ("kafka_bad_frames_total", &self.bad_frames),
        ] {
            let _ = writeln!(
                out,
                "# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        type Gauge = fn(&PartitionGauges) -> String;
        let gauges: [(&str, Gauge); 11] = [
            ("kafka_partition_leader_id", |p| p.leader_id.to_string()),
            ("kafka_partition_leader_epoch", |p| {
                p.leader_epoch.to_string()
            }),
            ("kafka_partition_leader_epoch_start_offset", |p| {
                p.leader_epoch_start_offset.to_string()
            }),
            ("kafka_partition_isr_size", |p| p.isr_size.to_string()),
            ("kafka_partition_under_replicated", |p| {
                u8::from(p.under_replicated).to_string()
            }),
            ("kafka_partition_is_leader", |p| {
                u8::from(p.leader).to_string()
            }),
            ("kafka_log_start_offset", |p| p.log_start_offset.to_string()),
            ("kafka_log_end_offset", |p| p.log_end_offset.to_string()),
            ("kafka_high_watermark", |p| p.high_watermark.to_string()),
            ("kafka_log_size_bytes", |p| p.size_bytes.to_string()),
            ("kafka_log_segments", |p| p.segments.to_string()),
        ];
        for (name, f) in gauges {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for p in partitions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                    p.topic,
                    p.partition,
                    f(p)
                );
            }
        }
        // The ISR's members, one sample per member (value 1), as Prometheus spells a set.
        let _ = writeln!(out, "# TYPE kafka_partition_isr_member gauge");
        for p in partitions {
            for b in &p.isr {
                let _ = writeln!(
                    out,
                    "kafka_partition_isr_member{{topic=\"{}\",partition=\"{}\",broker=\"{b}\"}} 1",
                    p.topic, p.partition
                );
            }
        }
        out
    }
}

/// Something that can report partition gauges (the broker state).
pub trait GaugeSource: Send + Sync + 'static {
    /// Current gauges of every partition.
    fn partition_gauges(&self) -> Vec<PartitionGauges>;
    /// The broker's own gauges.
    fn broker_gauges(&self) -> BrokerGauges {
        BrokerGauges::default()
    }
    /// The shared counters.
    fn metrics(&self) -> &Metrics;
}

/// Serves `/metrics` and `/health` on `addr` until the task is dropped.
pub async fn serve<S: GaugeSource>(addr: SocketAddr, source: Arc<S>) -> std::io::Result<()> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let metrics_source = source.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let s = metrics_source.clone();
                async move {
                    s.metrics()
                        .render(&s.broker_gauges(), &s.partition_gauges())
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_and_partition_gauges_are_rendered() {
        let m = Metrics::default();
        let p = PartitionGauges {
            topic: "queue".into(),
            partition: 2,
            log_start_offset: 0,
            log_end_offset: 40,
            high_watermark: 38,
            size_bytes: 100,
            segments: 1,
            leader_epoch: 3,
            leader_epoch_start_offset: 35,
            isr_size: 2,
            under_replicated: true,
            leader: true,
            leader_id: 2,
            isr: vec![2, 3],
        };
        let text = m.render(
            &BrokerGauges {
                node_id: 2,
                fenced: true,
            },
            &[p],
        );
        for line in [
            "kafka_broker_id 2",
            "kafka_broker_fenced 1",
            "kafka_broker_under_replicated_partitions 1",
            "kafka_partition_leader_id{topic=\"queue\",partition=\"2\"} 2",
            "kafka_partition_isr_member{topic=\"queue\",partition=\"2\",broker=\"3\"} 1",
            "kafka_high_watermark{topic=\"queue\",partition=\"2\"} 38",
            "kafka_partition_leader_epoch_start_offset{topic=\"queue\",partition=\"2\"} 35",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
