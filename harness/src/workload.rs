//! The queue workload driven through librdkafka (`--client rdkafka`; the native client of the
//! `client` crate is not built yet): worker threads draw seeded operations from
//! `workloads::queue`, run them against the cluster and record invoke/completion pairs in the
//! history; then the final phase reads every partition from the start up to its end.
//!
//! Outcome classification is conservative: an acknowledged send is `ok` with its offset; a send
//! refused before it was appended (librdkafka reports the broker's error and the error is one
//! that means "not written") is `fail`; everything else (timeouts, lost connections, unknown
//! errors) is `info`, and the worker continues as a new process, as Jepsen does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use checkers::{HistoryWriter, OpType};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use workloads::queue::{Invocation, Mop, QueueConfig, QueueGenerator};

use crate::spec::{Acks, TestSpec};

/// The workload topic.
pub const TOPIC: &str = "jepsen-queue";

/// Creates the workload topic with the spec's replication factor, partitions and topic configs
/// (a raw CreateTopics v5 through the broker crate's peer connection: librdkafka's admin client
/// does not yet get an answer from a multi-broker cluster of ours, see the stop note).
pub fn create_topic(bootstrap: &str, spec: &TestSpec) -> Result<()> {
    use broker::server::peer::PeerConn;
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_static_str(TOPIC));
    t.num_partitions = spec.partitions as i32;
    t.replication_factor = spec.replication_factor as i16;
    let topic_keys = ["min.insync.replicas", "unclean.leader.election.enable"];
    t.configs = spec
        .broker
        .iter()
        .filter(|(k, _)| topic_keys.contains(&k.as_str()))
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.clone());
            c.value = Some(StrBytes::from_string(v.clone()));
            c
        })
        .collect();
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 10_000;
    let addr = bootstrap.split(',').next().unwrap_or(bootstrap).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: std::io::Result<CreateTopicsResponse> = rt.block_on(async {
            let mut c = PeerConn::connect(&addr, "harness".into(), Duration::from_secs(5)).await?;
            c.call(ApiKey::CreateTopics, 5, &req, Duration::from_secs(15))
                .await
        });
        let code = r.as_ref().map(|resp| resp.topics[0].error_code);
        match code {
            Ok(0) | Ok(36) => break, // created, or TOPIC_ALREADY_EXISTS
            other if Instant::now() > deadline => bail!("creating topic {TOPIC}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    // Wait until every partition has a leader in the metadata clients see.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

type Delivery = std::sync::mpsc::Sender<std::result::Result<i64, KafkaError>>;

/// Routes each delivery report to the worker waiting for it.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Box<Delivery>) {
        let _ = tx.send(match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

fn producer(bootstrap: &str, spec: &TestSpec) -> Result<ThreadedProducer<Deliveries>> {
    let acks = match spec.client.acks {
        Acks::Zero => "0",
        Acks::One => "1",
        Acks::All => "all",
    };
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("enable.idempotence", spec.client.idempotence.to_string())
        .set("retries", spec.client.retries.to_string())
        .set(
            "message.timeout.ms",
            spec.client.request_timeout_ms.to_string(),
        )
        .set(
            "request.timeout.ms",
            spec.client.request_timeout_ms.to_string(),
        )
        .set("linger.ms", "0")
        .create_with_context(Deliveries)
        .context("creating the producer")
}

fn consumer(bootstrap: &str, spec: &TestSpec, process: u64) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("jepsen-{process}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", spec.client.isolation_level.clone())
        .set("session.timeout.ms", "6000")
        .create()
        .context("creating the consumer")
}

/// Errors that mean the broker refused the record before appending it.
fn definite(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::InvalidRequiredAcks
            | RDKafkaErrorCode::TopicAuthorizationFailed
    )
}

struct Worker {
    process: u64,
    concurrency: u64,
    spec: TestSpec,
    bootstrap: String,
    producer: ThreadedProducer<Deliveries>,
    consumer: BaseConsumer,
}

impl Worker {
    fn new(process: u64, concurrency: u64, spec: &TestSpec, bootstrap: &str) -> Result<Worker> {
        let consumer = consumer(bootstrap, spec, process)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..spec.partitions as i32 {
            tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
                .context("assignment")?;
        }
        consumer.assign(&tpl).context("assign")?;
        Ok(Worker {
            process,
            concurrency,
            spec: spec.clone(),
            bootstrap: bootstrap.to_string(),
            producer: producer(bootstrap, spec)?,
            consumer,
        })
    }

    /// Becomes a new process after an indeterminate op, with fresh clients.
    fn reincarnate(&mut self) -> Result<()> {
        self.process += self.concurrency;
        *self = Worker::new(self.process, self.concurrency, &self.spec, &self.bootstrap)?;
        Ok(())
    }

    fn send(&self, key: &str, partition: u32, value: u64) -> (OpType, Value) {
        let (tx, rx) = std::sync::mpsc::channel();
        let payload = value.to_string();
        let record = BaseRecord::with_opaque_to(TOPIC, Box::new(tx))
            .partition(partition as i32)
            .key(key)
            .payload(&payload);
        if let Err((e, _)) = self.producer.send(record) {
            // Refused by the client before it went out: certainly not written.
            return (
                OpType::Fail,
                json!([["send", key, value], {"error": e.to_string()}]),
            );
        }
        let wait = Duration::from_millis(self.spec.client.request_timeout_ms + 2000);
        match rx.recv_timeout(wait) {
            Ok(Ok(offset)) => (OpType::Ok, json!([["send", key, [offset, value]]])),
            Ok(Err(KafkaError::MessageProduction(code))) if definite(code) => {
                (OpType::Fail, json!([["send", key, value]]))
            }
            _ => (OpType::Info, json!([["send", key, value]])),
        }
    }

    fn poll(&self) -> (OpType, Value) {
        let mut reads: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    let key = m.key().map(|k| String::from_utf8_lossy(k).to_string());
                    let value = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(|s| s.parse::<u64>().ok());
                    if let (Some(k), Some(v)) = (key, value) {
                        reads.entry(k).or_default().push(json!([m.offset(), v]));
                    }
                }
                Some(Err(_)) => return (OpType::Info, json!([["poll"]])),
                None => {}
            }
        }
        (OpType::Ok, json!([["poll", reads]]))
    }
}

/// Runs the workload for the spec's time limit, then the final reads; returns how many ops ran.
pub fn run(
    spec: &TestSpec,
    bootstrap: &str,
    history: Arc<HistoryWriter>,
    stop: &'static AtomicBool,
) -> Result<u64> {
    let generator = Arc::new(Mutex::new(QueueGenerator::new(
        QueueConfig {
            partitions: spec.partitions,
            subscribe: false,
            assign_weight: 0,
            ..QueueConfig::default()
        },
        spec.seed,
    )));
    let end = Instant::now() + Duration::from_secs(spec.time_limit);
    let per_worker_gap = Duration::from_secs_f64(spec.concurrency as f64 / spec.rate.max(0.001));
    let ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for p in 0..spec.concurrency as u64 {
        let (spec, bootstrap, history, generator, ops) = (
            spec.clone(),
            bootstrap.to_string(),
            history.clone(),
            generator.clone(),
            ops.clone(),
        );
        handles.push(std::thread::spawn(move || -> Result<()> {
            let mut w = Worker::new(p, spec.concurrency as u64, &spec, &bootstrap)?;
            while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                let inv = generator
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .next_op();
                history.invoke(w.process, inv.f(), inv.to_json())?;
                let (t, v) = match &inv {
                    Invocation::Send(Mop::Send {
                        key,
                        partition,
                        value,
                    }) => w.send(key, *partition, *value),
                    _ => w.poll(),
                };
                history.complete(w.process, t, inv.f(), v)?;
                ops.fetch_add(1, Ordering::Relaxed);
                if t == OpType::Info {
                    w.reincarnate()?;
                }
                std::thread::sleep(per_worker_gap);
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a workload worker panicked"))??;
    }
    final_reads(spec, bootstrap, &history)?;
    Ok(ops.load(Ordering::Relaxed))
}

/// The final phase: a fresh consumer assigned every partition from the start reads up to each
/// partition's end (or the final time limit), recorded as polls by a new process.
fn final_reads(spec: &TestSpec, bootstrap: &str, history: &HistoryWriter) -> Result<()> {
    let process = 1_000_000;
    let c = consumer(bootstrap, spec, process)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..spec.partitions as i32 {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .context("assignment")?;
    }
    c.assign(&tpl).context("assign")?;
    let mut ends = BTreeMap::new();
    for p in 0..spec.partitions as i32 {
        let (_, high) = c
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .context("reading partition ends for the final phase")?;
        ends.insert(p, high);
    }
    let deadline = Instant::now() + Duration::from_secs(spec.final_time_limit);
    let mut reached: BTreeMap<i32, i64> = BTreeMap::new();
    while Instant::now() < deadline
        && ends
            .iter()
            .any(|(p, e)| reached.get(p).copied().unwrap_or(-1) + 1 < *e)
    {
        history.invoke(process, "poll", json!([["poll"]]))?;
        let mut reads: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                reached.insert(m.partition(), m.offset());
                let key = m.key().map(|k| String::from_utf8_lossy(k).to_string());
                let value = m
                    .payload()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|s| s.parse::<u64>().ok());
                if let (Some(k), Some(v)) = (key, value) {
                    reads.entry(k).or_default().push(json!([m.offset(), v]));
                }
            }
        }
        history.complete(process, OpType::Ok, "poll", json!([["poll", reads]]))?;
    }
    Ok(())
}
