//! The client side of the queue workload, independent of the Kafka client library: the
//! [`QueueClient`] trait each library implements (the native `client` crate in [`native`], and
//! librdkafka in `rdkafka` behind the `rdkafka` feature), the settings they share, and the raw
//! results the runner turns into history ops. One library-independent runner ([`crate::runner`])
//! records every op, so both paths write exactly the same history shape.
//!
//! [`native`]: crate::native

use std::collections::BTreeMap;
use std::time::Duration;

/// What a client needs to know about the cluster and the producer/consumer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// `host:port` of each broker.
    pub bootstrap: Vec<String>,
    /// The workload topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: u32,
    /// Producer `acks`.
    pub acks: client::Acks,
    /// Producer `enable.idempotence`.
    pub idempotence: bool,
    /// Producer `retries`.
    pub retries: u32,
    /// `request.timeout.ms`; sends give up (as indeterminate) a little after it.
    pub request_timeout: Duration,
    /// Consumer `isolation.level`: `read_uncommitted` or `read_committed`.
    pub isolation_level: String,
    /// Consumers start subscribed to the topic (group protocol) instead of assigned to every
    /// partition.
    pub subscribe: bool,
    /// Subscribed consumers' `partition.assignment.strategy`: `range`, `roundrobin`, or both
    /// comma-separated, most preferred first.
    pub assignment_strategy: String,
    /// The consumer group of subscribed consumers (one per run).
    pub group_id: String,
    /// Producers are transactional (`txn` ops), each worker process with its own
    /// `transactional.id`.
    pub transactions: bool,
}

/// What one micro-op of a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MopResult {
    /// A send, acknowledged at this offset (in the still-open transaction).
    Sent(i64),
    /// A poll and the records it returned.
    Polled(Vec<Record>),
}

/// How a transaction ended, as the history needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    /// Committed; one result per micro-op, in order.
    Committed(Vec<MopResult>),
    /// Certainly not committed (aborted, or refused before anything was written).
    Aborted(String),
    /// Aborted after these micro-ops ran (in order; the history records their reads: Jepsen
    /// uses every poll, an aborted transaction's too).
    AbortedAfter(String, Vec<MopResult>),
    /// May or may not have committed.
    Unknown(String),
}

/// How one send ended, as the history needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Acknowledged at this offset.
    Ok(i64),
    /// Certainly not written (the reason).
    Fail(String),
    /// May or may not have been written (the reason).
    Info(String),
}

/// Offsets of the workload topic by partition: what a commit commits, or what the group has
/// committed (the next offset to read in each partition).
pub type Offsets = BTreeMap<u32, i64>;

/// How one offset commit ended, as the history needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// The group coordinator acknowledged it.
    Ok,
    /// Certainly refused (stale generation, unknown member, rebalance in progress, no
    /// coordinator reached before sending; the reason).
    Fail(String),
    /// May or may not have been stored (a timeout, a lost connection; the reason).
    Info(String),
}

/// One record a poll returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: i64,
    /// Its key as text, when it has one.
    pub key: Option<String>,
    /// Its value parsed as the workload's integer, when it is one.
    pub value: Option<u64>,
}

/// An error of a client operation other than a send (the text says what failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

impl TxnResult {
    /// The outcome of a one-send transaction as a send's (a transactional producer writes only
    /// inside transactions, so a transactional run's plain sends are transactions of one).
    pub fn as_send(self) -> SendResult {
        match self {
            TxnResult::Committed(r) => match r.first() {
                Some(MopResult::Sent(offset)) => SendResult::Ok(*offset),
                _ => SendResult::Info("commit without a send result".into()),
            },
            TxnResult::Aborted(why) | TxnResult::AbortedAfter(why, _) => SendResult::Fail(why),
            TxnResult::Unknown(why) => SendResult::Info(why),
        }
    }
}

/// A producer and a consumer, as one worker process of the workload uses them. The consumer
/// starts assigned to every partition from its start, or (with `subscribe`) subscribed to the
/// topic in the run's group; the runner then commits its positions after every poll
/// ([`QueueClient::to_commit`], [`QueueClient::commit`]) and reads the group's committed
/// offsets ([`QueueClient::committed`]), recording both. An assign-mode consumer never commits
/// to the run's group.
pub trait QueueClient: Send {
    /// Sends `value` under `key` to `partition` and waits for the outcome.
    fn send(&mut self, key: &str, partition: u32, value: u64) -> SendResult;
    /// Polls for up to `wait`; an error means the poll's outcome is unknown.
    fn poll(&mut self, wait: Duration) -> Result<Vec<Record>, ClientError>;
    /// Each partition's end offset (the high watermark: the next offset to be written).
    fn ends(&mut self) -> Result<Vec<i64>, ClientError>;
    /// The consumer's position (next offset to read) in each partition of the topic, -1 where
    /// it has none; it moves past control records (transaction markers) that polls never
    /// return, so the final reads compare it, not the last record, with the partition's end.
    fn positions(&mut self) -> Result<Vec<i64>, ClientError>;
    /// Assigns exactly these partitions (leaving the group if subscribed): partitions already
    /// assigned keep their positions, new ones start from the log's start.
    fn assign(&mut self, partitions: &[u32]) -> Result<(), ClientError>;
    /// Subscribes to the topic in the run's group (positions then come from the group's
    /// committed offsets).
    fn subscribe(&mut self) -> Result<(), ClientError>;
    /// Runs sends (`Some((key, partition, value))`) and polls (`None`) in one transaction.
    /// Clients without transactions refuse (nothing is sent).
    fn txn(&mut self, mops: &[Option<(String, u32, u64)>], poll_wait: Duration) -> TxnResult {
        let _ = (mops, poll_wait);
        TxnResult::Aborted("this client does not run transactions".into())
    }
    /// What a commit now would commit: the subscribed consumer's position in each partition
    /// assigned to it (empty while it has none). `None` outside the group (assign mode) and
    /// for clients without groups.
    fn to_commit(&mut self) -> Option<Offsets> {
        None
    }
    /// Commits `offsets` as the consumer's group member, waiting for the coordinator's answer.
    /// Clients without groups refuse (nothing is sent).
    fn commit(&mut self, offsets: &Offsets) -> CommitResult {
        let _ = offsets;
        CommitResult::Fail("this client does not commit offsets".into())
    }
    /// The run's group's committed offsets for the workload topic (OffsetFetch), partitions
    /// without one left out. Clients without groups refuse.
    fn committed(&mut self) -> Result<Offsets, ClientError> {
        Err(ClientError(
            "this client does not read committed offsets".into(),
        ))
    }
    /// How many times the consumer has joined its group (0 outside a group): when it changes,
    /// the assignment (and the positions taken from committed offsets) may have changed.
    fn joins(&self) -> u64 {
        0
    }
}

/// Opens the client of one worker process.
pub type OpenClient = dyn Fn(u64) -> Result<Box<dyn QueueClient>, ClientError> + Send + Sync;
