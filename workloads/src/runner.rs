//! Runs the queue workload over any [`QueueClient`]: worker threads draw seeded operations from
//! one [`QueueGenerator`], pace themselves to the target rate, and record an invoke and a
//! completion for every op in the history as it happens; a worker whose op ends `info` (or that
//! crashes on purpose) continues as a new process with fresh clients, as Jepsen's do. Then the
//! final phase: a fresh client assigned every partition reads from the start up to each
//! partition's end, or until the final time limit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkers::commits::{offsets_value, COMMIT, COMMITTED};
use checkers::{HistoryWriter, OpType};
use serde_json::{json, Value};

use crate::client::{
    ClientError, CommitResult, MopResult, OpenClient, QueueClient, Record, SendResult, TxnResult,
};
use crate::queue::{Invocation, Mop, QueueConfig, QueueGenerator};
use crate::stall::{zombie_commit, ConsumerStalls};

/// The process id of the final phase's reader (the checkers' convention).
pub use checkers::history::FINAL_PROCESS;

/// How long one poll op waits for records.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// A subscribed worker reads its group's committed offsets after a poll that (re)joined the
/// group, and otherwise after every this many ok polls.
pub const COMMITTED_EVERY: u32 = 5;

/// A subscribed worker's group bookkeeping between polls (real and simulated runs).
#[derive(Debug, Default)]
pub struct GroupState {
    /// The client's join count at the last committed read.
    joins: u64,
    /// Ok polls since the last committed read.
    polls: u32,
}

impl GroupState {
    /// After an ok poll with the client's join count `joins`: whether to read the group's
    /// committed offsets now (the membership changed, or [`COMMITTED_EVERY`] polls passed).
    pub fn committed_read_due(&mut self, joins: u64) -> bool {
        self.polls += 1;
        if joins != self.joins || self.polls >= COMMITTED_EVERY {
            self.joins = joins;
            self.polls = 0;
            true
        } else {
            false
        }
    }
}

/// After an ok poll of a subscribed consumer: a `committed` read when its membership changed
/// (or every [`COMMITTED_EVERY`] polls), then a `commit` of its positions, each recorded as an
/// invoke and a completion. A commit of unknown outcome ends `process`: the worker goes on as
/// `next_process` with the same client (only the commit's outcome is unknown, nothing the
/// client holds), and the process it continues as is returned. Outside a group nothing
/// happens: assign-mode consumers never commit to the run's group.
fn group_ops(
    client: &mut dyn QueueClient,
    history: &HistoryWriter,
    process: u64,
    next_process: u64,
    state: &mut GroupState,
    ops: &AtomicU64,
) -> Result<u64, WorkloadError> {
    let Some(offsets) = client.to_commit() else {
        return Ok(process);
    };
    if state.committed_read_due(client.joins()) {
        history.invoke(process, COMMITTED, Value::Null)?;
        let (t, v) = match client.committed() {
            Ok(c) => (OpType::Ok, offsets_value(&c)),
            // A read that failed changed nothing.
            Err(e) => (OpType::Fail, json!({"error": e.to_string()})),
        };
        history.complete(process, t, COMMITTED, v)?;
        ops.fetch_add(1, Ordering::Relaxed);
    }
    if offsets.is_empty() {
        return Ok(process);
    }
    let value = offsets_value(&offsets);
    history.invoke(process, COMMIT, value.clone())?;
    let (t, next) = match client.commit(&offsets) {
        CommitResult::Ok => (OpType::Ok, process),
        CommitResult::Fail(why) => {
            tracing::debug!(process, %why, "commit refused");
            (OpType::Fail, process)
        }
        CommitResult::Info(why) => {
            tracing::debug!(process, %why, "commit outcome unknown");
            (OpType::Info, next_process)
        }
    };
    history.complete(process, t, COMMIT, value)?;
    ops.fetch_add(1, Ordering::Relaxed);
    Ok(next)
}

/// Settings of one run of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Worker processes.
    pub concurrency: usize,
    /// Target operations per second over all workers.
    pub rate: f64,
    /// Length of the main phase.
    pub time_limit: Duration,
    /// Longest the final reads may take.
    pub final_time_limit: Duration,
    /// The seed of the operation generator.
    pub seed: u64,
    /// The generator's settings.
    pub queue: QueueConfig,
}

/// Each partition's highest acknowledged offset + 1, noted as the main phase records its ops.
/// The final reads read at least this far: a leader's high watermark may lag what was
/// acknowledged for a while after a failover (from Kafka 3.7 it waits while the ISR is below
/// min.insync, KAFKA-15583), and reading only up to the end offset of that moment would call
/// acknowledged records unseen that a few seconds later are readable.
#[derive(Debug, Default)]
pub struct AckedEnds {
    ends: Mutex<Vec<i64>>,
}

impl AckedEnds {
    /// Notes the acknowledged sends of a completed op's value (`["send", key, [offset, value],
    /// partition]` micro-ops).
    pub fn note(&self, value: &Value) {
        let Some(mops) = value.as_array() else {
            return;
        };
        let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        for m in mops {
            if m.get(0).and_then(Value::as_str) != Some("send") {
                continue;
            }
            let (Some(offset), Some(partition)) = (
                m.get(2).and_then(|p| p.get(0)).and_then(Value::as_i64),
                m.get(3).and_then(Value::as_u64),
            ) else {
                continue;
            };
            let p = partition as usize;
            if ends.len() <= p {
                ends.resize(p + 1, 0);
            }
            ends[p] = ends[p].max(offset + 1);
        }
    }

    /// The ends noted so far, by partition (missing partitions: 0).
    pub fn get(&self, partitions: usize) -> Vec<i64> {
        let mut v = self.ends.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.resize(partitions.max(v.len()), 0);
        v
    }
}

/// How long the final reads wait for records between the end offsets they were given and the
/// highest acknowledged offsets, once nothing new arrives.
const ACKED_TAIL_PATIENCE: Duration = Duration::from_secs(10);

/// Why the workload could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Writing the history failed: the run's evidence is incomplete, so it stops.
    #[error("writing the history: {0}")]
    History(#[from] std::io::Error),
    /// A client could not be opened before the phase ended.
    #[error("process {process}: {source}")]
    Client {
        /// The process.
        process: u64,
        /// Why.
        source: ClientError,
    },
    /// A worker thread panicked.
    #[error("a workload worker panicked")]
    Panicked,
}

/// The history value of a completed send: `[["send", key, [offset, value] | value,
/// partition]]` (the offset only when acknowledged).
pub fn send_value(key: &str, partition: u32, value: u64, result: &SendResult) -> (OpType, Value) {
    match result {
        SendResult::Ok(offset) => (
            OpType::Ok,
            json!([["send", key, [offset, value], partition]]),
        ),
        SendResult::Fail(_) => (OpType::Fail, json!([["send", key, value, partition]])),
        SendResult::Info(_) => (OpType::Info, json!([["send", key, value, partition]])),
    }
}

/// A transaction's micro-ops as the client takes them.
pub fn txn_mops(ms: &[Mop]) -> Vec<Option<(String, u32, u64)>> {
    ms.iter()
        .map(|m| match m {
            Mop::Send {
                key,
                partition,
                value,
            } => Some((key.clone(), *partition, *value)),
            Mop::Poll => None,
        })
        .collect()
}

/// One micro-op's history value after it ran: a send with its offset when `acked`
/// (committed), a poll with its records. `None` when the result does not fit the micro-op.
fn ran_mop(m: &Mop, r: &MopResult, acked: bool) -> Option<Value> {
    match (m, r) {
        (
            Mop::Send {
                key,
                partition,
                value,
            },
            MopResult::Sent(offset),
        ) => Some(if acked {
            json!(["send", key, [offset, value], partition])
        } else {
            json!(["send", key, value, partition])
        }),
        (Mop::Poll, MopResult::Polled(records)) => Some(poll_value(records)[0].clone()),
        _ => None,
    }
}

/// The history value of a completed transaction: committed ones carry each send's offset and
/// each poll's records; aborted ones each poll's records that ran before the abort (Jepsen
/// uses every poll) and the sends without offsets; others repeat the invocation.
pub fn txn_value(ms: &[Mop], result: &TxnResult) -> (OpType, Value) {
    let invoked = Invocation::Txn(ms.to_vec()).to_json();
    match result {
        TxnResult::Committed(results) => {
            let mops: Option<Vec<Value>> = (results.len() == ms.len())
                .then(|| {
                    ms.iter()
                        .zip(results)
                        .map(|(m, r)| ran_mop(m, r, true))
                        .collect()
                })
                .flatten();
            match mops {
                Some(mops) => (OpType::Ok, Value::Array(mops)),
                // Results that do not line up with the micro-ops are not evidence.
                None => (OpType::Info, invoked),
            }
        }
        TxnResult::AbortedAfter(_, done) if done.len() <= ms.len() => {
            let mut mops: Vec<Value> = invoked.as_array().cloned().unwrap_or_default();
            for (i, (m, r)) in ms.iter().zip(done).enumerate() {
                match (ran_mop(m, r, false), mops.get_mut(i)) {
                    (Some(v), Some(slot)) => *slot = v,
                    // A result that does not fit its micro-op: nothing of it is evidence.
                    _ => return (OpType::Fail, invoked),
                }
            }
            (OpType::Fail, Value::Array(mops))
        }
        TxnResult::Aborted(_) | TxnResult::AbortedAfter(..) => (OpType::Fail, invoked),
        TxnResult::Unknown(_) => (OpType::Info, invoked),
    }
}

/// The history value of a completed poll: per key, the `[offset, value]` pairs in read order,
/// then each key's partition (`[["poll", {k: [[o, v], ...]}, {k: p}]]`: the checkers build
/// version orders per partition).
pub fn poll_value(records: &[Record]) -> Value {
    let mut reads: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut partitions: BTreeMap<&str, u32> = BTreeMap::new();
    for r in records {
        if let (Some(k), Some(v)) = (r.key.as_deref(), r.value) {
            reads.entry(k).or_default().push(json!([r.offset, v]));
            partitions.insert(k, r.partition);
        }
    }
    json!([["poll", reads, partitions]])
}

/// Appends to a poll's or transaction's micro-ops a `["rebalance", [partitions]]` naming every
/// partition when the consumer's group membership changed during the op (the client does not
/// say which partitions moved): Jepsen's `:rebalance-log`, whose partitions the checker leaves
/// out of the op's internal poll checks.
pub fn note_rebalance(value: &mut Value, rebalanced: bool, partitions: u32) {
    if let (true, Some(mops)) = (rebalanced, value.as_array_mut()) {
        let all: Vec<u32> = (0..partitions.max(1)).collect();
        mops.push(json!(["rebalance", all]));
    }
}

/// Opens a client for `process`, retrying (a fault may make brokers unreachable) until
/// `deadline` or `stop`.
fn open_retrying(
    open: &OpenClient,
    process: u64,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Box<dyn QueueClient>, WorkloadError> {
    loop {
        match open(process) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline || stop.load(Ordering::SeqCst) => {
                return Err(WorkloadError::Client { process, source: e })
            }
            Err(e) => {
                tracing::warn!("process {process}: opening the client failed ({e}); retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// The main phase: `config.concurrency` workers for `config.time_limit` (or until `stop`).
/// Counts completed operations in `ops` as they happen (for progress displays) and returns
/// the final count.
pub fn run_main(
    open: Arc<OpenClient>,
    config: &RunConfig,
    history: Arc<HistoryWriter>,
    stop: &'static AtomicBool,
    ops: Arc<AtomicU64>,
    stalls: Arc<ConsumerStalls>,
    acked: Arc<AckedEnds>,
) -> Result<u64, WorkloadError> {
    let generator = Arc::new(Mutex::new(QueueGenerator::new(
        config.queue.clone(),
        config.seed,
    )));
    let end = Instant::now() + config.time_limit;
    let concurrency = config.concurrency.max(1) as u64;
    let gap = Duration::from_secs_f64(concurrency as f64 / config.rate.max(0.001));
    let partitions = config.queue.partitions;
    let mut handles = Vec::new();
    for first in 0..concurrency {
        let (open, history, generator, ops, stalls, acked) = (
            open.clone(),
            history.clone(),
            generator.clone(),
            ops.clone(),
            stalls.clone(),
            acked.clone(),
        );
        handles.push(std::thread::spawn(move || -> Result<(), WorkloadError> {
            let mut process = first;
            // A worker that cannot (re)open its client before the phase ends just stops: the
            // faults may have kept the cluster down; its ops so far are all recorded.
            let reopen = |process: u64| match open_retrying(&*open, process, end, stop) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("{e}; this worker stops for the rest of the phase");
                    None
                }
            };
            let Some(mut client) = reopen(process) else {
                return Ok(());
            };
            let mut group = GroupState::default();
            while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                let inv = generator
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .next_op();
                history.invoke(process, inv.f(), inv.to_json())?;
                let joins = client.joins();
                let (t, mut v) = match &inv {
                    Invocation::Send(Mop::Send {
                        key,
                        partition,
                        value,
                    }) => send_value(
                        key,
                        *partition,
                        *value,
                        &client.send(key, *partition, *value),
                    ),
                    Invocation::Crash => (OpType::Info, Value::Null),
                    Invocation::Assign(ps) => match client.assign(ps) {
                        Ok(()) => (OpType::Ok, inv.to_json()),
                        Err(e) => (OpType::Info, json!({"error": e.to_string()})),
                    },
                    Invocation::Subscribe => match client.subscribe() {
                        Ok(()) => (OpType::Ok, inv.to_json()),
                        Err(e) => (OpType::Info, json!({"error": e.to_string()})),
                    },
                    Invocation::Txn(ms) => txn_value(ms, &client.txn(&txn_mops(ms), POLL_WAIT)),
                    Invocation::Poll | Invocation::Send(_) => match client.poll(POLL_WAIT) {
                        Ok(records) => (OpType::Ok, poll_value(&records)),
                        Err(_) => (OpType::Info, json!([["poll"]])),
                    },
                };
                let polled = match &inv {
                    Invocation::Poll | Invocation::Send(Mop::Poll) => true,
                    Invocation::Txn(ms) => ms.contains(&Mop::Poll),
                    _ => false,
                };
                let rebalanced = polled && client.joins() != joins;
                note_rebalance(&mut v, rebalanced, partitions);
                if t == OpType::Ok {
                    acked.note(&v);
                }
                history.complete(process, t, inv.f(), v)?;
                ops.fetch_add(1, Ordering::Relaxed);
                if polled && t == OpType::Ok {
                    process = group_ops(
                        &mut *client,
                        &history,
                        process,
                        process + concurrency,
                        &mut group,
                        &ops,
                    )?;
                    // A subscribed member with partitions to commit may be asked to become a
                    // zombie (one without any would stall with nothing to commit late).
                    if client.to_commit().is_some_and(|o| !o.is_empty()) {
                        if let Some(stall) = stalls.take() {
                            process = zombie_commit(
                                &mut *client,
                                &history,
                                process,
                                process + concurrency,
                                stall,
                                stop,
                                end,
                            )?;
                            ops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if t == OpType::Info {
                    // Unknown outcome: this process is done; a new one takes its place with
                    // fresh clients (its consumer starts again from the log's start).
                    drop(client);
                    process += concurrency;
                    client = match reopen(process) {
                        Some(c) => c,
                        None => return Ok(()),
                    };
                    group = GroupState::default();
                }
                std::thread::sleep(gap);
            }
            Ok(())
        }));
    }
    let mut first_error = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| WorkloadError::Panicked)
            .and_then(|r| r);
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ops.load(Ordering::Relaxed)),
    }
}

/// The final phase: a fresh client (process [`FINAL_PROCESS`]) reads every partition from its
/// start until it has reached each partition's end (its end offset when the phase began, or
/// the highest acknowledged offset noted in `acked` when that is further: the client waits for
/// the high watermark to get there while records keep coming, at most [`ACKED_TAIL_PATIENCE`]
/// without any), or `config.final_time_limit` passes. Returns whether every end offset was
/// reached.
pub fn final_reads(
    open: &OpenClient,
    config: &RunConfig,
    history: &HistoryWriter,
    stop: &AtomicBool,
    acked: &AckedEnds,
) -> Result<bool, WorkloadError> {
    let deadline = Instant::now() + config.final_time_limit;
    let process = FINAL_PROCESS;
    let mut client = open_retrying(open, process, deadline, stop)?;
    // Assigned every partition from its start, whatever mode the workers used.
    let all: Vec<u32> = (0..config.queue.partitions.max(1)).collect();
    client
        .assign(&all)
        .map_err(|source| WorkloadError::Client { process, source })?;
    let ends = loop {
        match client.ends() {
            Ok(ends) => break ends,
            Err(e) if Instant::now() >= deadline => {
                return Err(WorkloadError::Client { process, source: e })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let mut ends = ends;
    let mut next: Vec<i64> = vec![0; ends.len()];
    // Past the end offsets, up to the highest acknowledged offsets, while records still come.
    let acked_ends = acked.get(ends.len());
    let targets = |ends: &[i64]| -> Vec<i64> {
        ends.iter()
            .zip(acked_ends.iter().chain(std::iter::repeat(&0)))
            .map(|(e, a)| (*e).max(*a))
            .collect()
    };
    let reached = |next: &[i64], goal: &[i64]| next.iter().zip(goal).all(|(n, e)| n >= e);
    let mut last_progress = Instant::now();
    let mut last_ends_query = Instant::now();
    let mut in_tail = false;
    while !reached(&next, &targets(&ends))
        && Instant::now() < deadline
        && !stop.load(Ordering::SeqCst)
    {
        if reached(&next, &ends) {
            if !in_tail {
                in_tail = true;
                last_progress = Instant::now();
            }
            // Only the acknowledged tail is left: the high watermark may still be catching
            // up. Look at the end offsets again now and then; give up once nothing moved for
            // a while (the tail may be lost, which the checker then says).
            if last_progress.elapsed() >= ACKED_TAIL_PATIENCE {
                break;
            }
            if last_ends_query.elapsed() >= Duration::from_secs(1) {
                last_ends_query = Instant::now();
                if let Ok(now) = client.ends() {
                    if now.iter().zip(&ends).any(|(n, e)| n > e) {
                        last_progress = Instant::now();
                    }
                    for (e, n) in ends.iter_mut().zip(now) {
                        *e = (*e).max(n);
                    }
                }
            }
        }
        history.invoke(process, "poll", json!([["poll"]]))?;
        match client.poll(Duration::from_millis(200)) {
            Ok(records) => {
                if !records.is_empty() {
                    last_progress = Instant::now();
                }
                for r in &records {
                    if let Some(n) = next.get_mut(r.partition as usize) {
                        *n = (*n).max(r.offset + 1);
                    }
                }
                // Positions also move past transaction markers, which no poll returns.
                if let Ok(pos) = client.positions() {
                    for (n, p) in next.iter_mut().zip(pos) {
                        *n = (*n).max(p);
                    }
                }
                history.complete(process, OpType::Ok, "poll", poll_value(&records))?;
            }
            Err(e) => {
                history.complete(process, OpType::Info, "poll", json!([["poll"]]))?;
                tracing::warn!("final read failed ({e}); continuing");
            }
        }
    }
    Ok(reached(&next, &ends))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_ends_keep_the_highest_acknowledged_offset_per_partition() {
        let a = AckedEnds::default();
        a.note(&json!([
            ["send", "k1", [4, 7], 1],
            ["send", "k2", 9, 0],
            ["poll", {}]
        ]));
        a.note(&json!([
            ["send", "k1", [2, 8], 1],
            ["send", "k3", [0, 1], 3]
        ]));
        a.note(&json!(null));
        assert_eq!(a.get(4), vec![0, 5, 0, 1]);
        assert_eq!(
            a.get(2),
            vec![0, 5, 0, 1],
            "never shorter than what was noted"
        );
    }

    #[test]
    fn poll_values_group_by_key_in_read_order_and_skip_foreign_records() {
        let r = |p, o, k: Option<&str>, v| Record {
            partition: p,
            offset: o,
            key: k.map(str::to_string),
            value: v,
        };
        let v = poll_value(&[
            r(0, 4, Some("k1"), Some(7)),
            r(1, 2, Some("k2"), Some(3)),
            r(0, 5, Some("k1"), Some(8)),
            r(0, 6, None, Some(9)),
            r(0, 7, Some("k1"), None),
        ]);
        assert_eq!(
            v,
            json!([["poll", {"k1": [[4, 7], [5, 8]], "k2": [[2, 3]]}, {"k1": 0, "k2": 1}]])
        );
    }

    #[test]
    fn transactions_record_offsets_when_committed_and_reads_when_committed_or_aborted() {
        let ms = vec![
            Mop::Send {
                key: "k1".into(),
                partition: 1,
                value: 4,
            },
            Mop::Poll,
        ];
        let rec = Record {
            partition: 0,
            offset: 9,
            key: Some("k0".into()),
            value: Some(2),
        };
        let ok = TxnResult::Committed(vec![
            MopResult::Sent(17),
            MopResult::Polled(vec![rec.clone()]),
        ]);
        assert_eq!(
            txn_value(&ms, &ok),
            (
                OpType::Ok,
                json!([["send", "k1", [17, 4], 1], ["poll", {"k0": [[9, 2]]}, {"k0": 0}]])
            )
        );
        let invoked = json!([["send", "k1", 4, 1], ["poll"]]);
        assert_eq!(
            txn_value(&ms, &TxnResult::Aborted("x".into())),
            (OpType::Fail, invoked.clone())
        );
        // Aborted after its poll ran: the records read are kept, the send has no offset.
        let aborted = TxnResult::AbortedAfter(
            "commit".into(),
            vec![MopResult::Sent(17), MopResult::Polled(vec![rec])],
        );
        assert_eq!(
            txn_value(&ms, &aborted),
            (
                OpType::Fail,
                json!([["send", "k1", 4, 1], ["poll", {"k0": [[9, 2]]}, {"k0": 0}]])
            )
        );
        // Aborted at its send: the poll never ran.
        let early = TxnResult::AbortedAfter("send".into(), vec![]);
        assert_eq!(txn_value(&ms, &early), (OpType::Fail, invoked.clone()));
        assert_eq!(
            txn_value(&ms, &TxnResult::Unknown("x".into())),
            (OpType::Info, invoked.clone())
        );
        let mismatched = TxnResult::Committed(vec![MopResult::Sent(1), MopResult::Sent(2)]);
        assert_eq!(txn_value(&ms, &mismatched), (OpType::Info, invoked));
    }

    use crate::client::Offsets;

    /// A subscribed consumer stand-in: fixed positions, scripted commit outcomes.
    struct Member {
        in_group: bool,
        joins: u64,
        outcomes: Vec<CommitResult>,
        committed: Vec<Offsets>,
    }

    impl QueueClient for Member {
        fn send(&mut self, _: &str, _: u32, _: u64) -> SendResult {
            SendResult::Fail("unused".into())
        }
        fn poll(&mut self, _: Duration) -> Result<Vec<Record>, ClientError> {
            Ok(Vec::new())
        }
        fn ends(&mut self) -> Result<Vec<i64>, ClientError> {
            Ok(Vec::new())
        }
        fn positions(&mut self) -> Result<Vec<i64>, ClientError> {
            Ok(Vec::new())
        }
        fn assign(&mut self, _: &[u32]) -> Result<(), ClientError> {
            Ok(())
        }
        fn subscribe(&mut self) -> Result<(), ClientError> {
            Ok(())
        }
        fn to_commit(&mut self) -> Option<Offsets> {
            self.in_group.then(|| [(0, 4), (2, 7)].into())
        }
        fn commit(&mut self, _: &Offsets) -> CommitResult {
            self.outcomes.remove(0)
        }
        fn committed(&mut self) -> Result<Offsets, ClientError> {
            if self.committed.is_empty() {
                Err(ClientError("down".into()))
            } else {
                Ok(self.committed.remove(0))
            }
        }
        fn joins(&self) -> u64 {
            self.joins
        }
    }

    #[test]
    fn group_members_record_reads_after_joins_and_commits_with_their_outcomes() {
        let dir = std::env::temp_dir().join(format!("runner-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("history.jsonl");
        let history = HistoryWriter::create(&path).expect("history");
        let ops = AtomicU64::new(0);
        let mut m = Member {
            in_group: true,
            joins: 1,
            outcomes: vec![
                CommitResult::Ok,
                CommitResult::Fail("ILLEGAL_GENERATION".into()),
                CommitResult::Info("timed out".into()),
            ],
            committed: vec![[(0, 3)].into()],
        };
        let mut st = GroupState::default();
        // Joined: a committed read, then the commit.
        assert_eq!(
            group_ops(&mut m, &history, 5, 9, &mut st, &ops).expect("ok"),
            5
        );
        // Same membership, fewer than COMMITTED_EVERY polls: the commit only (refused).
        assert_eq!(
            group_ops(&mut m, &history, 5, 9, &mut st, &ops).expect("ok"),
            5
        );
        // Rejoined: a read (failing), then a commit of unknown outcome ends process 5.
        m.joins = 2;
        assert_eq!(
            group_ops(&mut m, &history, 5, 9, &mut st, &ops).expect("ok"),
            9
        );
        // Outside the group nothing is recorded.
        m.in_group = false;
        assert_eq!(
            group_ops(&mut m, &history, 9, 13, &mut st, &ops).expect("ok"),
            9
        );
        drop(history);
        let h = checkers::read_history(&path).expect("read");
        let got: Vec<(String, OpType, Value)> = h
            .ops
            .iter()
            .map(|o| (o.f.clone(), o.op_type, o.value.clone()))
            .collect();
        let c = json!({"0": 4, "2": 7});
        let expect = vec![
            ("committed".to_string(), OpType::Invoke, Value::Null),
            ("committed".to_string(), OpType::Ok, json!({"0": 3})),
            ("commit".to_string(), OpType::Invoke, c.clone()),
            ("commit".to_string(), OpType::Ok, c.clone()),
            ("commit".to_string(), OpType::Invoke, c.clone()),
            ("commit".to_string(), OpType::Fail, c.clone()),
            ("committed".to_string(), OpType::Invoke, Value::Null),
            (
                "committed".to_string(),
                OpType::Fail,
                json!({"error": "down"}),
            ),
            ("commit".to_string(), OpType::Invoke, c.clone()),
            ("commit".to_string(), OpType::Info, c),
        ];
        assert_eq!(got, expect);
        assert_eq!(ops.load(Ordering::Relaxed), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rebalance_during_an_op_names_every_partition() {
        let mut v = json!([["poll", {}]]);
        note_rebalance(&mut v, false, 3);
        assert_eq!(v, json!([["poll", {}]]));
        note_rebalance(&mut v, true, 3);
        assert_eq!(v, json!([["poll", {}], ["rebalance", [0, 1, 2]]]));
    }

    #[test]
    fn sends_become_ok_fail_or_info_with_the_offset_only_when_acknowledged() {
        assert_eq!(
            send_value("k1", 3, 5, &SendResult::Ok(12)),
            (OpType::Ok, json!([["send", "k1", [12, 5], 3]]))
        );
        assert_eq!(
            send_value("k1", 3, 5, &SendResult::Fail("x".into())).0,
            OpType::Fail
        );
        assert_eq!(
            send_value("k1", 3, 5, &SendResult::Info("x".into())),
            (OpType::Info, json!([["send", "k1", 5, 3]]))
        );
    }
}
