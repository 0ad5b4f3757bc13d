//! The queue workload through librdkafka (`rdkafka` crate, statically built; the `rdkafka`
//! feature), so a finding can be confirmed with the client applications use. Outcome
//! classification is conservative: an acknowledged send is `ok` with its offset; a send
//! refused by the client before it went out, or answered with a broker error that means "not
//! written", is `fail`; everything else (timeouts, lost connections, other errors) is `info`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::client::{
    ClientError, ClientSettings, CommitResult, MopResult, Offsets, QueueClient, Record, SendResult,
    TxnResult,
};

type Delivery = std::sync::mpsc::Sender<Result<i64, KafkaError>>;

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

/// Counts the consumer's group joins (assignments received), for [`QueueClient::joins`].
struct Joins(Arc<AtomicU64>);

impl ClientContext for Joins {}

impl ConsumerContext for Joins {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// OffsetCommit errors that mean the commit was certainly not stored: refused by the
/// coordinator before appending, or refused by librdkafka before sending.
fn commit_refused(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::InvalidGroupId
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::OffsetMetadataTooLarge
            | RDKafkaErrorCode::NoOffset
            | RDKafkaErrorCode::State
            | RDKafkaErrorCode::UnknownPartition
    )
}

/// Broker errors that mean the record was refused before it was appended.
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

fn err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError(format!("{what}: {e}"))
}

/// A worker's librdkafka producer and consumer.
pub struct RdkafkaClient {
    settings: ClientSettings,
    process: u64,
    producer: ThreadedProducer<Deliveries>,
    consumer: BaseConsumer<Joins>,
    subscribed: bool,
    /// Group joins of this client's consumers.
    joins: Arc<AtomicU64>,
    /// Per assigned partition, the offset after the last record this client consumed (or was
    /// moved back to): librdkafka reports no position for a partition assigned at an explicit
    /// offset until a record is consumed, so two assigns in a row would otherwise restart a
    /// kept partition from the beginning, a poll going backwards that the Java client (which
    /// keeps positions across `assign`) never makes.
    next: std::collections::BTreeMap<i32, i64>,
}

fn consumer(
    settings: &ClientSettings,
    group: &str,
    joins: &Arc<AtomicU64>,
) -> Result<BaseConsumer<Joins>, ClientError> {
    ClientConfig::new()
        .set("bootstrap.servers", settings.bootstrap.join(","))
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", &settings.isolation_level)
        .set(
            "partition.assignment.strategy",
            &settings.assignment_strategy,
        )
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(Joins(joins.clone()))
        .map_err(|e| err("creating the consumer", e))
}

impl RdkafkaClient {
    /// Opens a producer and a consumer: assigned every partition from the beginning, or
    /// subscribed to the topic in the run's group.
    pub fn open(settings: &ClientSettings, process: u64) -> Result<RdkafkaClient, ClientError> {
        let bootstrap = settings.bootstrap.join(",");
        let timeout_ms = settings.request_timeout.as_millis().to_string();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &bootstrap)
            .set("acks", settings.acks.to_string())
            .set("enable.idempotence", settings.idempotence.to_string())
            // An idempotent producer needs retries (Kafka's default for it is unbounded, capped
            // by the delivery timeout, here message.timeout.ms).
            .set(
                "retries",
                if settings.idempotence && settings.retries == 0 {
                    i32::MAX.to_string()
                } else {
                    settings.retries.to_string()
                },
            )
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("linger.ms", "0");
        if settings.transactions {
            // One transactional id per worker process: a crashed process's successor gets a
            // new one, so zombies are fenced only by the transaction timeout.
            config
                .set(
                    "transactional.id",
                    format!("{}-txn-{process}", settings.group_id),
                )
                .set("transaction.timeout.ms", "10000");
        }
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(Deliveries)
            .map_err(|e| err("creating the producer", e))?;
        if settings.transactions {
            producer
                .init_transactions(settings.request_timeout + Duration::from_secs(5))
                .map_err(|e| err("initialising transactions", e))?;
        }
        let joins = Arc::new(AtomicU64::new(0));
        let mut c = RdkafkaClient {
            settings: settings.clone(),
            process,
            producer,
            consumer: consumer(settings, &format!("jepsen-{process}"), &joins)?,
            subscribed: false,
            joins,
            next: std::collections::BTreeMap::new(),
        };
        if settings.subscribe {
            c.subscribe()?;
        } else {
            let all: Vec<u32> = (0..settings.partitions).collect();
            c.assign(&all)?;
        }
        Ok(c)
    }
}

impl RdkafkaClient {
    /// Sends one record and waits for its delivery report: the offset, or the error.
    fn deliver(&self, key: &str, partition: u32, value: u64) -> Result<i64, KafkaError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let payload = value.to_string();
        let record = BaseRecord::with_opaque_to(&self.settings.topic, Box::new(tx))
            .partition(partition as i32)
            .key(key)
            .payload(&payload);
        self.producer.send(record).map_err(|(e, _)| e)?;
        match rx.recv_timeout(self.settings.request_timeout + Duration::from_secs(2)) {
            Ok(r) => r,
            Err(_) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        }
    }

    /// Aborts the open transaction and moves the consumer back to `positions`; the result says
    /// whether the transaction certainly did not commit, with the micro-ops `done` before the
    /// abort (their reads go into the history).
    fn abort(
        &mut self,
        positions: Option<TopicPartitionList>,
        why: String,
        done: Vec<MopResult>,
    ) -> TxnResult {
        let timeout = self.settings.request_timeout + Duration::from_secs(5);
        match self.producer.abort_transaction(timeout) {
            Ok(()) => {
                if let Some(pos) = positions {
                    // The aborted transaction's reads are read again.
                    for e in pos.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            self.next.insert(e.partition(), o);
                            let _ = self.consumer.seek(
                                e.topic(),
                                e.partition(),
                                Offset::Offset(o),
                                Duration::from_secs(5),
                            );
                        }
                    }
                }
                TxnResult::AbortedAfter(why, done)
            }
            Err(e) => TxnResult::Unknown(format!("{why}; abort failed: {e}")),
        }
    }
}

impl QueueClient for RdkafkaClient {
    fn txn(&mut self, mops: &[Option<(String, u32, u64)>], poll_wait: Duration) -> TxnResult {
        if !self.settings.transactions {
            return TxnResult::Aborted("transactions are off for this run".into());
        }
        if let Err(e) = self.producer.begin_transaction() {
            return TxnResult::Aborted(format!("begin: {e}"));
        }
        let positions = self.consumer.position().ok();
        let mut results = Vec::with_capacity(mops.len());
        for m in mops {
            match m {
                Some((key, partition, value)) => match self.deliver(key, *partition, *value) {
                    Ok(offset) => results.push(MopResult::Sent(offset)),
                    Err(e) => return self.abort(positions, format!("send: {e}"), results),
                },
                None => match self.poll(poll_wait) {
                    Ok(records) => results.push(MopResult::Polled(records)),
                    Err(e) => return self.abort(positions, format!("poll: {e}"), results),
                },
            }
        }
        let timeout = self.settings.request_timeout + Duration::from_secs(5);
        match self.producer.commit_transaction(timeout) {
            Ok(()) => TxnResult::Committed(results),
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                self.abort(positions, format!("commit: {e}"), results)
            }
            Err(e) => TxnResult::Unknown(format!("commit: {e}")),
        }
    }

    fn send(&mut self, key: &str, partition: u32, value: u64) -> SendResult {
        if self.settings.transactions {
            return self
                .txn(&[Some((key.to_string(), partition, value))], Duration::ZERO)
                .as_send();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let payload = value.to_string();
        let record = BaseRecord::with_opaque_to(&self.settings.topic, Box::new(tx))
            .partition(partition as i32)
            .key(key)
            .payload(&payload);
        if let Err((e, _)) = self.producer.send(record) {
            // Refused by the client before it went out: certainly not written.
            return SendResult::Fail(e.to_string());
        }
        match rx.recv_timeout(self.settings.request_timeout + Duration::from_secs(2)) {
            Ok(Ok(offset)) => SendResult::Ok(offset),
            Ok(Err(KafkaError::MessageProduction(code))) if definite(code) => {
                SendResult::Fail(code.to_string())
            }
            Ok(Err(e)) => SendResult::Info(e.to_string()),
            Err(_) => SendResult::Info("no delivery report in time".into()),
        }
    }

    fn poll(&mut self, wait: Duration) -> Result<Vec<Record>, ClientError> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => {
                    self.next.insert(m.partition(), m.offset() + 1);
                    out.push(Record {
                        partition: m.partition() as u32,
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).to_string()),
                        value: m
                            .payload()
                            .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok()),
                    })
                }
                Some(Err(e)) => return Err(err("poll", e)),
                None => {}
            }
        }
        // The runner commits the positions after the poll (and records it).
        Ok(out)
    }

    fn to_commit(&mut self) -> Option<Offsets> {
        if !self.subscribed {
            return None;
        }
        let assigned = self.consumer.assignment().ok()?;
        let pos = self.consumer.position().ok()?;
        Some(
            assigned
                .elements_for_topic(&self.settings.topic)
                .iter()
                .filter_map(|e| {
                    let p = u32::try_from(e.partition()).ok()?;
                    match pos
                        .find_partition(&self.settings.topic, e.partition())?
                        .offset()
                    {
                        Offset::Offset(o) => Some((p, o)),
                        _ => None,
                    }
                })
                .collect(),
        )
    }

    fn commit(&mut self, offsets: &Offsets) -> CommitResult {
        if !self.subscribed {
            return CommitResult::Fail("not in the group (assign mode)".into());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            if let Err(e) =
                tpl.add_partition_offset(&self.settings.topic, *p as i32, Offset::Offset(*o))
            {
                return CommitResult::Fail(e.to_string());
            }
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => CommitResult::Ok,
            Err(KafkaError::ConsumerCommit(code)) if commit_refused(code) => {
                CommitResult::Fail(code.to_string())
            }
            Err(e) => CommitResult::Info(e.to_string()),
        }
    }

    fn committed(&mut self) -> Result<Offsets, ClientError> {
        if !self.subscribed {
            return Err(ClientError("not in the group (assign mode)".into()));
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.settings.partitions as i32 {
            tpl.add_partition(&self.settings.topic, p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, self.settings.request_timeout)
            .map_err(|e| err("committed offsets", e))?;
        Ok(got
            .elements_for_topic(&self.settings.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some((u32::try_from(e.partition()).ok()?, o)),
                _ => None,
            })
            .collect())
    }

    fn joins(&self) -> u64 {
        self.joins.load(Ordering::Relaxed)
    }

    fn ends(&mut self) -> Result<Vec<i64>, ClientError> {
        (0..self.settings.partitions as i32)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(&self.settings.topic, p, Duration::from_secs(10))
                    .map(|(_, high)| high)
                    .map_err(|e| err("reading partition ends", e))
            })
            .collect()
    }

    fn positions(&mut self) -> Result<Vec<i64>, ClientError> {
        let pos = self.consumer.position().map_err(|e| err("positions", e))?;
        Ok((0..self.settings.partitions as i32)
            .map(|p| {
                match pos
                    .find_partition(&self.settings.topic, p)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                }
            })
            .collect())
    }

    fn assign(&mut self, partitions: &[u32]) -> Result<(), ClientError> {
        if self.subscribed {
            // Leave the group: a fresh consumer outside it.
            self.consumer.unsubscribe();
            self.consumer = consumer(
                &self.settings,
                &format!("jepsen-{}", self.process),
                &self.joins,
            )?;
            self.subscribed = false;
            self.next.clear();
        }
        let current = self
            .consumer
            .assignment()
            .map_err(|e| err("assignment", e))?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let p = *p as i32;
            // Kept partitions keep their position; new ones start from the beginning.
            let offset = match current.find_partition(&self.settings.topic, p) {
                Some(_) => match self.next.get(&p) {
                    Some(o) => Offset::Offset(*o),
                    None => match self.consumer.position().ok().and_then(|pos| {
                        pos.find_partition(&self.settings.topic, p)
                            .map(|e| e.offset())
                    }) {
                        Some(Offset::Offset(o)) => Offset::Offset(o),
                        _ => Offset::Beginning,
                    },
                },
                None => {
                    self.next.remove(&p);
                    Offset::Beginning
                }
            };
            tpl.add_partition_offset(&self.settings.topic, p, offset)
                .map_err(|e| err("assignment", e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| err("assign", e))
    }

    fn subscribe(&mut self) -> Result<(), ClientError> {
        if self.subscribed {
            return Ok(());
        }
        self.consumer = consumer(&self.settings, &self.settings.group_id, &self.joins)?;
        self.next.clear();
        self.consumer
            .subscribe(&[&self.settings.topic])
            .map_err(|e| err("subscribe", e))?;
        self.subscribed = true;
        Ok(())
    }
}
