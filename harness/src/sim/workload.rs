//! The queue workload inside the simulation: the native client's producer and consumer, the
//! seeded operation generator and the history values of real runs (`workloads`), driven as
//! tasks on the client side's runtime in virtual time. Workers send and poll (and reassign)
//! for the main phase; a worker whose op ends `info` continues as a new process with fresh
//! clients, as in real runs. Then, after the world healed every fault, a final reader reads
//! every partition from the start to its end. With transactions (`txn_weight` above 0) each
//! worker process has a transactional producer of its own (`transactional.id`
//! `<group>-txn-<process>`, as in real runs): `txn` ops run through the native client's
//! [`workloads::native::run_txn`], real runs' code, and a transactional run's plain sends are
//! transactions of one send, as in real runs. With subscribed consumers (`--subscribe`, or a
//! group recipe) each worker's consumer is a member of the run's group (real runs' group
//! settings, `workloads::native::group_consumer`): polls note rebalances, and after each ok
//! poll the worker reads the group's committed offsets (after every join and every few polls)
//! and commits its positions, recorded as real runs record them. Workers crash as in real runs
//! (`crash` ops with real runs' weight): the op is `info` and a new process goes on with fresh
//! clients, the old ones dropped mid-flight. A subscribed worker asked for a zombie by the
//! nemesis (`zombie`) stalls after an ok poll, then commits its old positions as the member
//! it was (`workloads::stall`, real runs' recording).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use checkers::commits::{offsets_value, COMMIT, COMMITTED};
use checkers::OpType;
use client::{Consumer, Outcome, Producer, Seek, TopicPartition, TransactionalProducer};
use serde_json::json;
use workloads::client::{CommitResult, SendResult, TxnResult};
use workloads::native::Reader;
use workloads::native::{ReaderPoll, TxnPoll};
use workloads::queue::{Invocation, Mop, QueueConfig, QueueGenerator};
use workloads::runner::{
    note_rebalance, poll_value, send_value, txn_mops, txn_value, GroupState, FINAL_PROCESS,
};

use checkers::HistoryWriter;

/// How long one poll op waits for records.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// What the workload needs.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// The client configuration (bootstrap, acks, timeouts).
    pub client: client::Config,
    /// The topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: u32,
    /// Its replication factor.
    pub replication_factor: i16,
    /// Topic configs (`min.insync.replicas`, ...).
    pub topic_configs: Vec<(String, String)>,
    /// The generator's seed.
    pub seed: u64,
    /// Concurrent workers.
    pub concurrency: u64,
    /// Target ops per second over all workers.
    pub rate: f64,
    /// When the main phase ends (virtual time since the start).
    pub main_end: Duration,
    /// How long the final reads may take after the heal.
    pub final_limit: Duration,
    /// The operation generator's settings (real runs' weights, client crashes included).
    pub queue: QueueConfig,
    /// Subscribed consumers' settings (group, assignors); None: assign mode.
    pub subscribe: Option<workloads::client::ClientSettings>,
    /// The run's group (transactional ids are `<group>-txn-<process>`).
    pub group_id: String,
    /// Zombie-consumer requests of the nemesis (`zombie`), which subscribed workers take.
    pub stalls: Arc<workloads::stall::ConsumerStalls>,
}

/// What the workload did.
#[derive(Debug, Clone, Default)]
pub struct WorkloadSummary {
    /// Client ops completed in the main phase.
    pub ops: u64,
    /// Whether the final reader reached every partition's end.
    pub final_complete: bool,
}

fn since_start() -> Duration {
    Duration::from_nanos(super::clock::now_ns())
}

/// Creates the topic (retrying until it exists and has leaders, up to a minute).
async fn create_topic(cfg: &WorkloadConfig) -> Result<()> {
    let admin = client::Admin::new(cfg.client.clone()).context("admin client")?;
    let mut topic = client::NewTopic::new(
        cfg.topic.clone(),
        cfg.partitions as i32,
        cfg.replication_factor,
    );
    for (k, v) in &cfg.topic_configs {
        topic = topic.config(k.clone(), v.clone());
    }
    crate::workload::create_topic_retrying(&admin, topic)
        .await
        .context("creating the workload topic")
}

/// A worker's clients.
struct Clients {
    producer: Producer,
    reader: Reader,
    /// The process's transactional producer (transactional runs).
    txn: Option<TransactionalProducer>,
}

async fn open(cfg: &WorkloadConfig, process: u64) -> Result<Clients> {
    let mut c = cfg.client.clone();
    c.client_id = format!("jepsen-{process}");
    let producer = Producer::new(c.clone()).context("producer")?;
    let txn = if cfg.queue.txn_weight > 0 {
        // Initialising needs the transaction coordinator, which faults may keep away.
        let id = format!("{}-txn-{process}", cfg.group_id);
        loop {
            match TransactionalProducer::new(c.clone(), &id, Duration::from_secs(10)).await {
                Ok(tp) => break Some(tp),
                Err(e) if since_start() >= cfg.main_end => {
                    return Err(anyhow::anyhow!("initialising transactions: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    } else {
        None
    };
    let reader = match &cfg.subscribe {
        Some(settings) => Reader::Group(Box::new(
            workloads::native::group_consumer(&c, settings).map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        None => {
            let mut consumer = Consumer::new(c.clone()).context("consumer")?;
            let all: Vec<u32> = (0..cfg.partitions).collect();
            assign(cfg, &mut consumer, &all).await?;
            Reader::Assigned(consumer)
        }
    };
    Ok(Clients {
        producer,
        reader,
        txn,
    })
}

async fn assign(cfg: &WorkloadConfig, c: &mut Consumer, partitions: &[u32]) -> Result<()> {
    workloads::native::assign_from_start(c, &cfg.topic, partitions)
        .await
        .context("seek")
}

async fn worker(
    cfg: Arc<WorkloadConfig>,
    first: u64,
    generator: Arc<Mutex<QueueGenerator>>,
    history: Arc<HistoryWriter>,
) -> Result<u64> {
    let gap = Duration::from_secs_f64(cfg.concurrency as f64 / cfg.rate.max(0.001));
    let mut process = first;
    let mut ops = 0;
    let mut clients = open(&cfg, process).await?;
    let mut group = GroupState::default();
    while since_start() < cfg.main_end {
        let inv = generator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_op();
        history.invoke(process, inv.f(), inv.to_json())?;
        let before = clients.reader.joins();
        let (t, v) = match &inv {
            Invocation::Send(Mop::Send {
                key,
                partition,
                value,
            }) if clients.txn.is_some() => {
                // A transactional producer writes only inside transactions.
                let one = [Some((key.clone(), *partition, *value))];
                let r = txn(&cfg, &mut clients, &one).await.as_send();
                send_value(key, *partition, *value, &r)
            }
            Invocation::Txn(ms) => txn_value(ms, &txn(&cfg, &mut clients, &txn_mops(ms)).await),
            Invocation::Send(Mop::Send {
                key,
                partition,
                value,
            }) => {
                let out = clients
                    .producer
                    .send(
                        &cfg.topic,
                        Some(*partition as i32),
                        Some(Bytes::from(key.clone())),
                        Some(Bytes::from(value.to_string())),
                    )
                    .await;
                let result = match out {
                    Outcome::Ok(offset) => SendResult::Ok(offset),
                    Outcome::Definite(e) => SendResult::Fail(e.to_string()),
                    Outcome::Indeterminate(e) => SendResult::Info(e.to_string()),
                };
                send_value(key, *partition, *value, &result)
            }
            Invocation::Assign(ps) => match &mut clients.reader {
                Reader::Assigned(c) => match assign(&cfg, c, ps).await {
                    Ok(()) => (OpType::Ok, inv.to_json()),
                    Err(e) => (OpType::Info, json!({"error": format!("{e:#}")})),
                },
                // Not generated for subscribed consumers (they get `subscribe` ops).
                Reader::Group(_) => (OpType::Fail, json!({"error": "subscribed"})),
            },
            // Subscribed consumers stay in the group; assign-mode runs never subscribe.
            Invocation::Subscribe => match clients.reader {
                Reader::Group(_) => (OpType::Ok, inv.to_json()),
                Reader::Assigned(_) => (OpType::Fail, json!({"error": "assign mode"})),
            },
            Invocation::Poll | Invocation::Send(_) => {
                let mut poll = ReaderPoll(&mut clients.reader, POLL_WAIT);
                match TxnPoll::poll(&mut poll).await {
                    Ok(records) => (OpType::Ok, poll_value(&records)),
                    Err(_) => (OpType::Info, json!([["poll"]])),
                }
            }
            // The worker's process crashes (as in real runs: an info op, then a new process
            // with fresh clients; the old ones are dropped without leaving their group or
            // ending their transaction).
            Invocation::Crash => (OpType::Info, serde_json::Value::Null),
        };
        let polled = match &inv {
            Invocation::Poll | Invocation::Send(Mop::Poll) => true,
            Invocation::Txn(ms) => ms.contains(&Mop::Poll),
            _ => false,
        };
        let mut v = v;
        let now_joins = clients.reader.joins();
        note_rebalance(&mut v, polled && now_joins != before, cfg.partitions);
        history.complete(process, t, inv.f(), v)?;
        ops += 1;
        if polled && t == OpType::Ok {
            process = group_ops(&cfg, &mut clients, &history, process, &mut group).await?;
            // A subscribed member may be asked to become a zombie: it stops polling (so its
            // session expires and the group rebalances without it), then commits the
            // positions it had as the member it was, as real runs' workers do.
            // Only a member with partitions to commit takes it (one without would stall with
            // nothing to commit late), and not once the main phase is over (the stall could
            // not happen; the request stays unanswered).
            let owns = clients
                .reader
                .to_commit(&cfg.topic)
                .is_some_and(|o| !o.is_empty());
            if owns && since_start() < cfg.main_end {
                if let Some(stall) = cfg.stalls.take() {
                    let end =
                        tokio::time::Instant::now() + cfg.main_end.saturating_sub(since_start());
                    process = workloads::stall::native_zombie_commit(
                        &mut clients.reader,
                        &cfg.topic,
                        &history,
                        process,
                        process + cfg.concurrency,
                        stall,
                        end,
                    )
                    .await?;
                    ops += 1;
                }
            }
        }
        if t == OpType::Info {
            process += cfg.concurrency;
            clients = open(&cfg, process).await?;
            group = GroupState::default();
        }
        tokio::time::sleep(gap).await;
    }
    Ok(ops)
}

/// Runs `mops` in one transaction of the process's transactional producer, polling with its
/// consumer, which moves back to where it was when the transaction certainly did not commit.
async fn txn(
    cfg: &WorkloadConfig,
    clients: &mut Clients,
    mops: &[Option<(String, u32, u64)>],
) -> TxnResult {
    let Some(tp) = &clients.txn else {
        return TxnResult::Aborted("transactions are off for this run".into());
    };
    let saved = clients.reader.saved_positions();
    let mut poll = ReaderPoll(&mut clients.reader, POLL_WAIT);
    let result = workloads::native::run_txn(tp, &cfg.topic, mops, &mut poll).await;
    if let (TxnResult::AbortedAfter(..), Reader::Assigned(c)) = (&result, &mut clients.reader) {
        for (t, o) in &saved {
            let _ = c.seek(t, Seek::Offset(*o)).await;
        }
    }
    result
}

/// After an ok poll of a subscribed consumer, as real runs do (`workloads::runner`): a read of
/// the group's committed offsets after every (re)join and every few polls, then a commit of
/// the consumer's positions. Returns the process that goes on (a new one after a commit whose
/// outcome is unknown).
async fn group_ops(
    cfg: &WorkloadConfig,
    clients: &mut Clients,
    history: &HistoryWriter,
    process: u64,
    state: &mut GroupState,
) -> Result<u64> {
    let reader = &mut clients.reader;
    let Some(offsets) = reader.to_commit(&cfg.topic) else {
        return Ok(process);
    };
    if state.committed_read_due(reader.joins()) {
        history.invoke(process, COMMITTED, serde_json::Value::Null)?;
        let (t, v) = match reader.committed(&cfg.topic, cfg.partitions).await {
            Ok(c) => (OpType::Ok, offsets_value(&c)),
            // A read that failed changed nothing.
            Err(e) => (OpType::Fail, json!({"error": e.to_string()})),
        };
        history.complete(process, t, COMMITTED, v)?;
    }
    if offsets.is_empty() {
        return Ok(process);
    }
    let value = offsets_value(&offsets);
    history.invoke(process, COMMIT, value.clone())?;
    let (t, next) = match reader.commit(&cfg.topic, &offsets).await {
        CommitResult::Ok => (OpType::Ok, process),
        CommitResult::Fail(_) => (OpType::Fail, process),
        CommitResult::Info(_) => (OpType::Info, process + cfg.concurrency),
    };
    history.complete(process, t, COMMIT, value)?;
    Ok(next)
}

/// The final phase: a fresh consumer reads every partition from offset 0 to its end.
async fn final_reads(cfg: &WorkloadConfig, history: &HistoryWriter) -> Result<bool> {
    let deadline = since_start() + cfg.final_limit;
    let process = FINAL_PROCESS;
    let mut c = cfg.client.clone();
    c.client_id = format!("jepsen-{process}");
    let mut consumer = Consumer::new(c).context("final consumer")?;
    let all: Vec<u32> = (0..cfg.partitions).collect();
    loop {
        match assign(cfg, &mut consumer, &all).await {
            Ok(()) => break,
            Err(e) if since_start() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let ends = loop {
        let mut ends = Vec::new();
        let mut failed = false;
        for p in &all {
            let tp = TopicPartition::new(cfg.topic.clone(), *p as i32);
            match consumer.list_offset(&tp, Seek::Latest).await {
                Ok(e) => ends.push(e),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            break ends;
        }
        if since_start() >= deadline {
            anyhow::bail!("the final reader could not list the partitions' ends");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut next: Vec<i64> = vec![0; ends.len()];
    let done = |next: &[i64]| next.iter().zip(&ends).all(|(n, e)| n >= e);
    while !done(&next) && since_start() < deadline {
        history.invoke(process, "poll", json!([["poll"]]))?;
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(parts) => {
                let records = workloads::native::records(parts);
                for r in &records {
                    if let Some(n) = next.get_mut(r.partition as usize) {
                        *n = (*n).max(r.offset + 1);
                    }
                }
                for (i, n) in next.iter_mut().enumerate() {
                    let tp = TopicPartition::new(cfg.topic.clone(), i as i32);
                    if let Some(p) = consumer.position(&tp) {
                        *n = (*n).max(p);
                    }
                }
                history.complete(process, OpType::Ok, "poll", poll_value(&records))?;
            }
            Err(_) => {
                history.complete(process, OpType::Info, "poll", json!([["poll"]]))?;
            }
        }
    }
    Ok(done(&next))
}

/// Creates the topic, runs the workers until the main phase ends, waits for `settle` (the
/// world heals every fault when the main phase ends), then runs the final reads.
pub async fn run(
    cfg: WorkloadConfig,
    history: Arc<HistoryWriter>,
    settle: Duration,
) -> Result<WorkloadSummary> {
    create_topic(&cfg).await?;
    let queue = QueueConfig {
        partitions: cfg.partitions,
        ..cfg.queue.clone()
    };
    let generator = Arc::new(Mutex::new(QueueGenerator::new(queue, cfg.seed)));
    let cfg = Arc::new(cfg);
    let mut handles = Vec::new();
    for first in 0..cfg.concurrency {
        handles.push(tokio::spawn(worker(
            cfg.clone(),
            first,
            generator.clone(),
            history.clone(),
        )));
    }
    let mut summary = WorkloadSummary::default();
    for h in handles {
        match h.await {
            Ok(Ok(n)) => summary.ops += n,
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "a simulated worker stopped"),
            Err(e) => tracing::warn!(error = %e, "a simulated worker panicked"),
        }
    }
    let end = cfg.main_end + settle;
    let now = since_start();
    if end > now {
        tokio::time::sleep(end - now).await;
    }
    summary.final_complete = final_reads(&cfg, &history).await?;
    Ok(summary)
}
