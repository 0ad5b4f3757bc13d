//! Scrapes every node's `/metrics` once a second during a run into `metrics.jsonl` in the run
//! folder (one [`results::timeline::Sample`] per node per scrape): per partition the leader,
//! leader epoch, ISR, high watermark and log end offset; per broker its id, fenced state and
//! under-replicated partitions. A node that does not answer is data, not an error: its sample
//! says `up: false` with why (`refused`: nothing listens, the process is down; `timeout`: cut
//! off by a partition or paused). Netns and docker nodes are reached from the root namespace at
//! their own address, as the clients reach them.
//!
//! Beside it, [`Scraper::watch_metadata`] records the Kafka Metadata the harness sees (each
//! partition's leader and leader epoch, from the first broker that answers, as the fault
//! targeting asks it) once a second into `metadata.jsonl`, so the brokers' own reports can be
//! checked against what clients are told.
//!
//! Times are nanoseconds since `start`, which the run takes right after creating the history,
//! so samples and history ops share (within microseconds) one time base.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use results::timeline::{PartitionSample, Sample};

/// How often each node is scraped.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long one scrape may take before the node counts as cut off.
pub const TIMEOUT: Duration = Duration::from_millis(800);

/// A running scraper: one thread per node; stopping (or dropping) it joins them.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Scraper {
    /// Starts scraping `http://<address>:<port>/metrics` of every `(name, address)` into `out`
    /// (created, truncated).
    pub fn start(
        nodes: &[(String, IpAddr)],
        port: u16,
        out: &Path,
        start: Instant,
    ) -> std::io::Result<Scraper> {
        let file = Arc::new(Mutex::new(std::io::BufWriter::new(std::fs::File::create(
            out,
        )?)));
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::blocking::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let mut threads = Vec::new();
        for (name, addr) in nodes {
            let url = match addr {
                IpAddr::V4(a) => format!("http://{a}:{port}/metrics"),
                IpAddr::V6(a) => format!("http://[{a}]:{port}/metrics"),
            };
            let (name, file, stop, client) =
                (name.clone(), file.clone(), stop.clone(), client.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("scrape-{name}"))
                    .spawn(move || {
                        every_interval(&stop, || {
                            let sample = scrape_one(&client, &url, &name, start);
                            if let Ok(line) = serde_json::to_string(&sample) {
                                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                                let _ = writeln!(f, "{line}");
                                let _ = f.flush();
                            }
                        })
                    })?,
            );
        }
        Ok(Scraper { stop, threads })
    }

    /// Also records, once a second until stopped, the Metadata of `topic` as the first of
    /// `nodes` that answers on `port` gives it, into `out`: `{"time_ns", "leaders", "epochs"}`
    /// per line, or `{"time_ns", "error"}` when no broker answered.
    pub fn watch_metadata(
        &mut self,
        nodes: Vec<std::sync::Arc<dyn nemesis::Node>>,
        port: u16,
        topic: &str,
        out: &Path,
        start: Instant,
    ) -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
        let stop = self.stop.clone();
        let topic = topic.to_string();
        self.threads.push(
            std::thread::Builder::new()
                .name("scrape-metadata".into())
                .spawn(move || {
                    every_interval(&stop, || {
                        let time_ns = start.elapsed().as_nanos() as u64;
                        let line = match crate::metadata::any_placement(&nodes, port, &topic) {
                            Some(p) => serde_json::json!({
                                "time_ns": time_ns, "leaders": p.leaders, "epochs": p.epochs,
                                "controller": p.controller,
                            }),
                            None => serde_json::json!({
                                "time_ns": time_ns, "error": "no broker answered Metadata",
                            }),
                        };
                        let _ = writeln!(file, "{line}");
                        let _ = file.flush();
                    })
                })?,
        );
        Ok(())
    }

    /// Stops scraping and waits for the threads.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Calls `f` once per [`INTERVAL`] until `stop` is set, sleeping in short steps so that
/// stopping is prompt; a call that overran skips the ticks it missed.
fn every_interval(stop: &AtomicBool, mut f: impl FnMut()) {
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        f();
        next += INTERVAL;
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
        }
        if Instant::now() > next + INTERVAL {
            next = Instant::now();
        }
    }
}

/// One scrape: the sample, `up: false` with the reason when the node did not answer.
fn scrape_one(client: &reqwest::blocking::Client, url: &str, node: &str, start: Instant) -> Sample {
    let time_ns = start.elapsed().as_nanos() as u64;
    let down = |error: String| Sample {
        time_ns,
        node: node.to_string(),
        up: false,
        error: Some(error),
        broker_id: None,
        fenced: false,
        under_replicated: 0,
        partitions: Vec::new(),
    };
    let response = match client.get(url).send() {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return down("timeout (cut off or paused)".into()),
        Err(e) if e.is_connect() => {
            return down(format!(
                "refused or unreachable (down): {}",
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
            ))
        }
        Err(e) => return down(format!("scrape failed: {e}")),
    };
    if !response.status().is_success() {
        return down(format!("HTTP {}", response.status()));
    }
    match response.text() {
        Ok(text) => {
            let mut s = parse(&text);
            s.time_ns = time_ns;
            s.node = node.to_string();
            s
        }
        Err(e) if e.is_timeout() => down("timeout (cut off or paused)".into()),
        Err(e) => down(format!("reading the answer: {e}")),
    }
}

/// A Prometheus sample line: name, labels, value.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = BTreeMap::new();
            for kv in body.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=')?;
                labels.insert(k, v.trim_matches('"'));
            }
            (n, labels)
        }
        None => (head, BTreeMap::new()),
    };
    Some((name, labels, value))
}

/// The broker and partition gauges of a `/metrics` text (the bundled broker's names).
pub fn parse(text: &str) -> Sample {
    let mut s = Sample {
        time_ns: 0,
        node: String::new(),
        up: true,
        error: None,
        broker_id: None,
        fenced: false,
        under_replicated: 0,
        partitions: Vec::new(),
    };
    let mut parts: BTreeMap<(String, i32), PartitionSample> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        match name {
            "kafka_broker_id" => s.broker_id = Some(value as i32),
            "kafka_broker_fenced" => s.fenced = value != 0.0,
            "kafka_broker_under_replicated_partitions" => s.under_replicated = value as u32,
            _ => {}
        }
        let (Some(topic), Some(Ok(partition))) = (
            labels.get("topic"),
            labels.get("partition").map(|p| p.parse::<i32>()),
        ) else {
            continue;
        };
        let p = parts
            .entry((topic.to_string(), partition))
            .or_insert_with(|| PartitionSample {
                topic: topic.to_string(),
                partition,
                leader: -1,
                is_leader: false,
                epoch: -1,
                isr: Vec::new(),
                hw: -1,
                leo: -1,
                epoch_start: None,
            });
        match name {
            "kafka_partition_leader_id" => p.leader = value as i32,
            "kafka_partition_is_leader" => p.is_leader = value != 0.0,
            "kafka_partition_leader_epoch" => p.epoch = value as i32,
            "kafka_high_watermark" => p.hw = value as i64,
            "kafka_log_end_offset" => p.leo = value as i64,
            "kafka_partition_leader_epoch_start_offset" => {
                // The broker gives -1 where it does not lead.
                p.epoch_start = (value >= 0.0).then_some(value as i64);
            }
            "kafka_partition_isr_member" => {
                if let Some(Ok(b)) = labels.get("broker").map(|b| b.parse::<i32>()) {
                    p.isr.push(b);
                }
            }
            _ => {}
        }
    }
    s.partitions = parts.into_values().collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_parsed() {
        let text = "# TYPE kafka_broker_id gauge\nkafka_broker_id 2\nkafka_broker_fenced 0\n\
                    kafka_broker_under_replicated_partitions 1\n\
                    kafka_partition_leader_id{topic=\"queue\",partition=\"1\"} 2\n\
                    kafka_partition_is_leader{topic=\"queue\",partition=\"1\"} 1\n\
                    kafka_partition_leader_epoch{topic=\"queue\",partition=\"1\"} 3\n\
                    kafka_high_watermark{topic=\"queue\",partition=\"1\"} 38\n\
                    kafka_log_end_offset{topic=\"queue\",partition=\"1\"} 40\n\
                    kafka_partition_leader_epoch_start_offset{topic=\"queue\",partition=\"1\"} 35\n\
                    kafka_partition_isr_member{topic=\"queue\",partition=\"1\",broker=\"2\"} 1\n\
                    kafka_partition_isr_member{topic=\"queue\",partition=\"1\",broker=\"3\"} 1\n\
                    kafka_requests_total{api=\"Produce\"} 7\n";
        let s = parse(text);
        assert_eq!(s.broker_id, Some(2));
        assert!(!s.fenced);
        assert_eq!(s.under_replicated, 1);
        assert_eq!(
            s.partitions,
            vec![PartitionSample {
                topic: "queue".into(),
                partition: 1,
                leader: 2,
                is_leader: true,
                epoch: 3,
                isr: vec![2, 3],
                hw: 38,
                leo: 40,
                epoch_start: Some(35),
            }]
        );
    }

    #[test]
    fn a_node_that_does_not_answer_is_a_sample_not_an_error() {
        // Nothing listens on this port: the sample says the node was down.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("metrics.jsonl");
        let scraper = Scraper::start(
            &[("n1".into(), "127.0.0.1".parse().expect("ip"))],
            port,
            &out,
            Instant::now(),
        )
        .expect("start");
        std::thread::sleep(Duration::from_millis(300));
        scraper.stop();
        let samples = results::timeline::read(&out);
        assert!(!samples.is_empty());
        assert!(!samples[0].up);
        assert!(
            samples[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("down")),
            "{samples:?}"
        );
    }
}
