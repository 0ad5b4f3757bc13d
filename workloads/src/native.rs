//! The queue workload through the native async client (`client` crate): each worker owns a
//! producer and a consumer (assign mode, or a [`GroupConsumer`] when subscribed, whose
//! positions the runner commits after each poll) on a small Tokio runtime of its own, and the client's own outcome
//! classification (`Ok` / `Definite` / `Indeterminate`) becomes `ok` / `fail` / `info`
//! directly.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use client::{
    Assignor, Config, Consumer, GroupConsumer, GroupSettings, IsolationLevel, OffsetReset, Outcome,
    PartitionRecords, Producer, Seek, TopicPartition, TransactionalProducer, TxnOutcome,
};

use crate::client::{
    ClientError, ClientSettings, CommitResult, MopResult, Offsets, QueueClient, Record, SendResult,
    TxnResult,
};

/// A worker's consumer: assigned, or in the run's group.
pub enum Reader {
    /// Assigned partitions (assign mode).
    Assigned(Consumer),
    /// A member of the run's group (subscribe mode).
    Group(Box<GroupConsumer>),
}

/// A worker's native producer and consumer.
pub struct NativeClient {
    rt: tokio::runtime::Runtime,
    settings: ClientSettings,
    config: Config,
    producer: Producer,
    /// The transactional producer of a transactional run (its own `transactional.id`).
    txn_producer: Option<TransactionalProducer>,
    reader: Reader,
}

fn err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError(format!("{what}: {e}"))
}

/// The client configuration for `settings`, named `client_id`.
pub fn config(settings: &ClientSettings, client_id: &str) -> Result<Config, ClientError> {
    let mut c = Config::new(settings.bootstrap.iter().cloned());
    c.client_id = client_id.to_string();
    c.acks = settings.acks;
    c.enable_idempotence = settings.idempotence;
    c.retries = settings.retries;
    c.request_timeout = settings.request_timeout;
    c.delivery_timeout = settings.request_timeout + Duration::from_secs(1);
    c.linger = Duration::ZERO;
    c.auto_offset_reset = OffsetReset::Earliest;
    c.isolation_level = match settings.isolation_level.as_str() {
        "read_committed" => IsolationLevel::ReadCommitted,
        "read_uncommitted" => IsolationLevel::ReadUncommitted,
        other => {
            return Err(ClientError(format!(
                "isolation.level `{other}` is not read_committed or read_uncommitted"
            )))
        }
    };
    c.fetch_max_wait = Duration::from_millis(50);
    Ok(c)
}

impl NativeClient {
    /// Opens a producer and a consumer for `process`: assigned every partition from offset 0,
    /// or subscribed to the topic in the run's group.
    pub fn open(settings: &ClientSettings, process: u64) -> Result<NativeClient, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err("tokio runtime", e))?;
        let config = config(settings, &format!("jepsen-{process}"))?;
        let producer = rt
            .block_on(async { Producer::new(config.clone()) })
            .map_err(|e| err("producer", e))?;
        let reader =
            Reader::Assigned(Consumer::new(config.clone()).map_err(|e| err("consumer", e))?);
        let txn_producer = if settings.transactions {
            // One transactional id per worker process, as on the librdkafka path.
            let id = format!("{}-txn-{process}", settings.group_id);
            let tp = rt
                .block_on(TransactionalProducer::new(
                    config.clone(),
                    &id,
                    Duration::from_secs(10),
                ))
                .map_err(|e| err("initialising transactions", e))?;
            Some(tp)
        } else {
            None
        };
        let mut c = NativeClient {
            rt,
            settings: settings.clone(),
            config,
            producer,
            txn_producer,
            reader,
        };
        if settings.subscribe {
            c.subscribe()?;
        } else {
            let all: Vec<u32> = (0..settings.partitions).collect();
            c.assign(&all)?;
        }
        Ok(c)
    }

    fn group(&self) -> Result<GroupConsumer, ClientError> {
        group_consumer(&self.config, &self.settings)
    }
}

/// A consumer in the run's group, subscribed to the workload topic (real runs and the
/// simulation).
pub fn group_consumer(
    config: &Config,
    settings: &ClientSettings,
) -> Result<GroupConsumer, ClientError> {
    {
        let mut g = GroupSettings::new(settings.group_id.clone());
        // A crashed member stalls the group until its session ends: keep sessions short.
        g.session_timeout = Duration::from_secs(3);
        g.heartbeat_interval = Duration::from_millis(500);
        g.rebalance_timeout = settings.request_timeout + Duration::from_secs(5);
        g.assignors = settings
            .assignment_strategy
            .split(',')
            .map(|name| {
                Assignor::from_name(name.trim()).ok_or_else(|| {
                    ClientError(format!(
                        "partition.assignment.strategy: `{name}` is not range or roundrobin"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut gc = GroupConsumer::new(config.clone(), g).map_err(|e| err("group consumer", e))?;
        gc.subscribe([settings.topic.clone()]);
        Ok(gc)
    }
}

impl NativeClient {
    /// The assign-mode consumer's positions (to move back after an aborted transaction).
    fn saved_positions(&self) -> Vec<(TopicPartition, i64)> {
        self.reader.saved_positions()
    }

    /// Moves the assign-mode consumer back to `saved` (after a transaction that did not commit).
    fn restore(&mut self, saved: &[(TopicPartition, i64)]) {
        if let Reader::Assigned(c) = &mut self.reader {
            self.rt.block_on(async {
                for (t, o) in saved {
                    let _ = c.seek(t, Seek::Offset(*o)).await;
                }
            });
        }
    }
}

impl Reader {
    /// The assign-mode consumer's positions, to move back to after a transaction that did not
    /// commit (none for a group member: the group's offsets decide).
    pub fn saved_positions(&self) -> Vec<(TopicPartition, i64)> {
        match self {
            Reader::Assigned(c) => c
                .assignment()
                .into_iter()
                .filter_map(|tp| c.position(&tp).map(|o| (tp, o)))
                .collect(),
            Reader::Group(_) => Vec::new(),
        }
    }

    /// How many times the group member joined its group (0 in assign mode).
    pub fn joins(&self) -> u64 {
        match self {
            Reader::Group(g) => g.rebalances(),
            Reader::Assigned(_) => 0,
        }
    }

    /// The group member's positions on `topic`'s assigned partitions, what a commit commits;
    /// None in assign mode (such consumers never commit to the run's group).
    pub fn to_commit(&self, topic: &str) -> Option<Offsets> {
        let Reader::Group(g) = self else {
            return None;
        };
        Some(
            g.assignment()
                .into_iter()
                .filter(|tp| tp.topic == topic)
                .filter_map(|tp| Some((u32::try_from(tp.partition).ok()?, g.position(&tp)?)))
                .collect(),
        )
    }

    /// Commits `offsets` of `topic` as the group member: refused ([`commit_refused`]) or of
    /// unknown outcome otherwise.
    pub async fn commit(&mut self, topic: &str, offsets: &Offsets) -> CommitResult {
        let Reader::Group(g) = self else {
            return CommitResult::Fail("not in the group (assign mode)".into());
        };
        let tps: Vec<(TopicPartition, i64)> = offsets
            .iter()
            .map(|(p, o)| (TopicPartition::new(topic.to_string(), *p as i32), *o))
            .collect();
        match g.commit(&tps).await {
            Ok(()) => CommitResult::Ok,
            Err(e) if commit_refused(&e) => CommitResult::Fail(e.to_string()),
            Err(e) => CommitResult::Info(e.to_string()),
        }
    }

    /// The group's committed offsets of `topic`'s partitions `0..partitions`.
    pub async fn committed(
        &mut self,
        topic: &str,
        partitions: u32,
    ) -> Result<Offsets, ClientError> {
        let Reader::Group(g) = self else {
            return Err(ClientError("not in the group (assign mode)".into()));
        };
        let tps: Vec<TopicPartition> = (0..partitions as i32)
            .map(|p| TopicPartition::new(topic.to_string(), p))
            .collect();
        let got = g
            .committed(&tps)
            .await
            .map_err(|e| err("committed offsets", e))?;
        Ok(got
            .into_iter()
            .filter_map(|(tp, o)| Some((u32::try_from(tp.partition).ok()?, o?)))
            .collect())
    }
}

/// One poll's future.
pub type PollFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Record>, ClientError>> + Send + 'a>>;

/// What a transaction's polls read through.
pub trait TxnPoll: Send {
    /// One poll.
    fn poll(&mut self) -> PollFuture<'_>;
}

/// An assign-mode consumer polling for up to its wait.
pub struct ConsumerPoll<'a>(pub &'a mut Consumer, pub Duration);

impl TxnPoll for ConsumerPoll<'_> {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(async move {
            self.0
                .poll(self.1)
                .await
                .map(records)
                .map_err(|e| err("poll", e))
        })
    }
}

/// A worker's consumer of either kind polling for up to its wait.
pub struct ReaderPoll<'a>(pub &'a mut Reader, pub Duration);

impl TxnPoll for ReaderPoll<'_> {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(async move {
            let parts = match &mut *self.0 {
                Reader::Assigned(c) => c.poll(self.1).await,
                Reader::Group(g) => g.poll(self.1).await,
            };
            parts.map(records).map_err(|e| err("poll", e))
        })
    }
}

/// Runs sends (`Some((key, partition, value))`) through `tp` and polls (`None`, through
/// `poll`) in one transaction of `tp`, and commits it (aborts it when a micro-op fails). A
/// result of [`TxnResult::AbortedAfter`] means the transaction certainly did not commit: the
/// caller moves its consumer back to where it was before (the aborted transaction's reads are
/// read again). Real runs (through [`NativeClient`]) and the simulation share it.
pub async fn run_txn(
    tp: &TransactionalProducer,
    topic: &str,
    mops: &[Option<(String, u32, u64)>],
    poll: &mut dyn TxnPoll,
) -> TxnResult {
    if let Err(e) = tp.begin().await {
        return TxnResult::Aborted(format!("begin: {e}"));
    }
    let mut results = Vec::with_capacity(mops.len());
    for m in mops {
        let failed = match m {
            Some((key, partition, value)) => {
                let out = tp
                    .send(
                        topic,
                        *partition as i32,
                        Some(Bytes::from(key.clone())),
                        Some(Bytes::from(value.to_string())),
                    )
                    .await;
                match out {
                    Outcome::Ok(offset) => {
                        results.push(MopResult::Sent(offset));
                        None
                    }
                    other => Some(format!("send: {other:?}")),
                }
            }
            None => match poll.poll().await {
                Ok(records) => {
                    results.push(MopResult::Polled(records));
                    None
                }
                Err(e) => Some(format!("poll: {e}")),
            },
        };
        if let Some(why) = failed {
            return match tp.abort().await {
                TxnOutcome::Committed => {
                    TxnResult::Unknown(format!("{why}; the abort answered committed"))
                }
                TxnOutcome::NotCommitted(_) => TxnResult::AbortedAfter(why, results),
                TxnOutcome::Unknown(e) => TxnResult::Unknown(format!("{why}; abort: {e}")),
            };
        }
    }
    match tp.commit().await {
        TxnOutcome::Committed => TxnResult::Committed(results),
        TxnOutcome::NotCommitted(e) => TxnResult::AbortedAfter(format!("commit: {e}"), results),
        TxnOutcome::Unknown(e) => TxnResult::Unknown(format!("commit: {e}")),
    }
}

/// Whether an OffsetCommit error means the commit was certainly not stored: the coordinator
/// refused it before appending (stale generation, unknown member, rebalance in progress, not
/// the coordinator, still loading), or no request was sent at all. Anything after the request
/// went out (timeouts, lost connections, COORDINATOR_NOT_AVAILABLE, which the coordinator also
/// answers when its append timed out) may have been stored.
pub fn commit_refused(e: &client::Error) -> bool {
    // ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, NOT_COORDINATOR,
    // COORDINATOR_LOAD_IN_PROGRESS, INVALID_GROUP_ID, FENCED_INSTANCE_ID,
    // GROUP_AUTHORIZATION_FAILED, NOT_ENOUGH_REPLICAS, OFFSET_METADATA_TOO_LARGE.
    const REFUSED: &[i16] = &[22, 25, 27, 16, 14, 24, 82, 30, 19, 12];
    match e {
        client::Error::Broker { code, .. } => REFUSED.contains(&code.0),
        client::Error::NoBroker(_)
        | client::Error::UnsupportedVersion(_)
        | client::Error::NotAssigned(_)
        | client::Error::Config(_) => true,
        _ => false,
    }
}

/// Assigns `partitions` of `topic` to `c`; the newly assigned ones start at offset 0 (the log
/// start is found, and reset to, on the first fetch).
pub async fn assign_from_start(
    c: &mut Consumer,
    topic: &str,
    partitions: &[u32],
) -> Result<(), client::Error> {
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(topic.to_string(), *p as i32))
        .collect();
    let fresh: Vec<TopicPartition> = tps
        .iter()
        .filter(|tp| !c.assignment().contains(tp))
        .cloned()
        .collect();
    c.assign(tps);
    for tp in &fresh {
        c.seek(tp, Seek::Offset(0)).await?;
    }
    Ok(())
}

/// The workload's records of a poll's partitions (keys as text, values as integers).
pub fn records(parts: Vec<PartitionRecords>) -> Vec<Record> {
    let mut out = Vec::new();
    for part in parts {
        for r in part.records {
            out.push(Record {
                partition: part.tp.partition as u32,
                offset: r.offset,
                key: r.key.map(|k| String::from_utf8_lossy(&k).to_string()),
                value: r
                    .value
                    .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()),
            });
        }
    }
    out
}

impl QueueClient for NativeClient {
    fn txn(&mut self, mops: &[Option<(String, u32, u64)>], poll_wait: Duration) -> TxnResult {
        let Some(tp) = &self.txn_producer else {
            return TxnResult::Aborted("transactions are off for this run".into());
        };
        let saved = self.saved_positions();
        let (rt, reader, topic) = (&self.rt, &mut self.reader, self.settings.topic.as_str());
        let result = rt.block_on(run_txn(tp, topic, mops, &mut ReaderPoll(reader, poll_wait)));
        if matches!(result, TxnResult::AbortedAfter(..)) {
            self.restore(&saved);
        }
        result
    }

    fn send(&mut self, key: &str, partition: u32, value: u64) -> SendResult {
        if self.txn_producer.is_some() {
            return self
                .txn(&[Some((key.to_string(), partition, value))], Duration::ZERO)
                .as_send();
        }
        let outcome = self.rt.block_on(self.producer.send(
            &self.settings.topic,
            Some(partition as i32),
            Some(Bytes::from(key.to_string())),
            Some(Bytes::from(value.to_string())),
        ));
        match outcome {
            Outcome::Ok(offset) => SendResult::Ok(offset),
            Outcome::Definite(e) => SendResult::Fail(e.to_string()),
            Outcome::Indeterminate(e) => SendResult::Info(e.to_string()),
        }
    }

    fn poll(&mut self, wait: Duration) -> Result<Vec<Record>, ClientError> {
        match &mut self.reader {
            Reader::Assigned(c) => {
                let parts = self.rt.block_on(c.poll(wait)).map_err(|e| err("poll", e))?;
                Ok(records(parts))
            }
            // The runner commits the positions after the poll (and records it).
            Reader::Group(g) => {
                let parts = self.rt.block_on(g.poll(wait)).map_err(|e| err("poll", e))?;
                Ok(records(parts))
            }
        }
    }

    fn to_commit(&mut self) -> Option<Offsets> {
        self.reader.to_commit(&self.settings.topic)
    }

    fn commit(&mut self, offsets: &Offsets) -> CommitResult {
        self.rt
            .block_on(self.reader.commit(&self.settings.topic, offsets))
    }

    fn committed(&mut self) -> Result<Offsets, ClientError> {
        self.rt.block_on(
            self.reader
                .committed(&self.settings.topic, self.settings.partitions),
        )
    }

    fn joins(&self) -> u64 {
        self.reader.joins()
    }

    fn positions(&mut self) -> Result<Vec<i64>, ClientError> {
        let topic = self.settings.topic.clone();
        Ok((0..self.settings.partitions as i32)
            .map(|p| {
                let tp = TopicPartition::new(topic.clone(), p);
                match &self.reader {
                    Reader::Assigned(c) => c.position(&tp),
                    Reader::Group(g) => g.position(&tp),
                }
                .unwrap_or(-1)
            })
            .collect())
    }

    fn assign(&mut self, partitions: &[u32]) -> Result<(), ClientError> {
        let topic = self.settings.topic.clone();
        if let Reader::Group(_) = self.reader {
            // Leaving the group: a fresh assign-mode consumer.
            let old = std::mem::replace(
                &mut self.reader,
                Reader::Assigned(
                    Consumer::new(self.config.clone()).map_err(|e| err("consumer", e))?,
                ),
            );
            if let Reader::Group(g) = old {
                let _ = self.rt.block_on(g.close());
            }
        }
        let Reader::Assigned(c) = &mut self.reader else {
            return Err(ClientError("consumer is not in assign mode".into()));
        };
        self.rt
            .block_on(assign_from_start(c, &topic, partitions))
            .map_err(|e| err("seek", e))
    }

    fn subscribe(&mut self) -> Result<(), ClientError> {
        if let Reader::Group(_) = self.reader {
            return Ok(());
        }
        let g = self.group()?;
        self.reader = Reader::Group(Box::new(g));
        Ok(())
    }

    fn ends(&mut self) -> Result<Vec<i64>, ClientError> {
        let topic = self.settings.topic.clone();
        let partitions = self.settings.partitions;
        // Any consumer of this client's cluster can list offsets.
        let consumer = Consumer::new(self.config.clone()).map_err(|e| err("consumer", e))?;
        let consumer = &consumer;
        self.rt.block_on(async {
            let mut ends = Vec::new();
            for p in 0..partitions as i32 {
                let tp = TopicPartition::new(topic.clone(), p);
                ends.push(
                    consumer
                        .list_offset(&tp, Seek::Latest)
                        .await
                        .map_err(|e| err("list offsets", e))?,
                );
            }
            Ok(ends)
        })
    }
}
