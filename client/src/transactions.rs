//! The transactional producer, as Kafka's Java producer does transactions:
//! [`TransactionalProducer::new`] finds the transaction coordinator (FindCoordinator with key
//! type 1) and takes a producer id and epoch with InitProducerId for the `transactional.id` (which
//! bumps the epoch and so fences every older instance with that id); [`begin`] opens a
//! transaction; [`send`] adds the partition to it (AddPartitionsToTxn, once per partition per
//! transaction) and then produces through [`Producer`]'s sender machinery in transactional mode
//! (batches flagged transactional, Produce carrying the `transactional.id`, idempotent
//! sequences); [`send_offsets`] adds a group's offsets (AddOffsetsToTxn to the transaction
//! coordinator, then TxnOffsetCommit to the group coordinator); [`commit`] and [`abort`] end
//! it (EndTxn).
//!
//! [`begin`]: TransactionalProducer::begin
//! [`send`]: TransactionalProducer::send
//! [`send_offsets`]: TransactionalProducer::send_offsets
//! [`commit`]: TransactionalProducer::commit
//! [`abort`]: TransactionalProducer::abort
//!
//! What the results mean (for a Jepsen history):
//! - `send` returns an [`Outcome`] classified as for any send (see [`crate::outcome`]); it says
//!   whether the record reached the log, not whether the transaction commits.
//! - `commit` returns a [`TxnOutcome`]: `Committed` only on an EndTxn(commit) success;
//!   `NotCommitted` when no EndTxn(commit) can have taken effect (the coordinator refused it
//!   before any attempt may have reached it, the transaction had already failed and was
//!   aborted instead, or there was nothing to commit); `Unknown` when an attempt may have
//!   reached the coordinator (lost connection, timeout, or a coordinator error that can follow
//!   a durable state write: NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, REQUEST_TIMED_OUT) and
//!   no later attempt got a success. EndTxn is retried on such failures until
//!   `delivery.timeout.ms`: a retry of a commit that did land is answered with success.
//! - `abort` can never commit anything; it reports whether the abort is known to be complete.
//!
//! Invariants: a transaction commits only if every send in it ended `Ok` and every offset
//! commit succeeded; any other send or offset result makes the transaction abortable only (its
//! `commit` aborts instead and says `NotCommitted`). PRODUCER_FENCED and INVALID_PRODUCER_EPOCH
//! are definite and make the producer unusable: every later call fails with
//! [`TxnError::Fenced`]. A transaction whose end is not known to be complete (an `Unknown`
//! commit, an abort that did not finish, a refused commit) leaves the producer unsettled: the
//! next `begin` re-initialises it first (InitProducerId with its producer id and epoch, v3+),
//! which lets the coordinator finish or abort what is open and bumps the epoch. After an abort
//! of a transaction in which a send failed, the epoch is bumped the same way, so partition
//! sequences restart cleanly. Calls on one producer are serialised around `begin`, `commit`
//! and `abort`: those wait until every `send` and `send_offsets` in flight has finished.
//! (A `send` future dropped before it completes may leave its record in the partition
//! sender; drop the producer rather than end a transaction after such a cancellation.)
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use client::{Config, TopicPartition, TransactionalProducer, TxnOutcome};
//!
//! # async fn demo() -> Result<(), client::TxnError> {
//! let config = Config::new(["10.0.0.1:9092"]);
//! let p = TransactionalProducer::new(config, "worker-3", Duration::from_secs(60)).await?;
//! p.begin().await?;
//! let sent = p.send("queue", 2, Some(Bytes::from("k2")), Some(Bytes::from("41"))).await;
//! p.send_offsets("g", &[(TopicPartition::new("queue", 0), 17)], "", -1).await?;
//! match p.commit().await {
//!     TxnOutcome::Committed => println!("ok: {sent:?}"),       // history: ok
//!     TxnOutcome::NotCommitted(e) => println!("fail: {e}"),   // history: fail
//!     TxnOutcome::Unknown(e) => println!("info: {e}"),        // history: info
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's Instant: the real clock in production, virtual time under `harness sim`.
use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::Cluster;
use crate::config::{Acks, Config};
use crate::conn::Connection;
use crate::consumer::TopicPartition;
use crate::error::{BrokerCode, ConnError, Error};
use crate::outcome::{Outcome, SendError};
use crate::producer::Producer;
use crate::records::ProducerIdentity;

/// FindCoordinator key type of a consumer group.
const GROUP_KEY: i8 = 0;
/// FindCoordinator key type of a transactional id.
const TXN_KEY: i8 = 1;

/// Why a transactional call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// PRODUCER_FENCED or INVALID_PRODUCER_EPOCH: a newer producer with the same
    /// `transactional.id` (or the coordinator's timeout abort) took the epoch. Definite; the
    /// producer is unusable from now on.
    #[error("producer fenced: {0}")]
    Fenced(String),
    /// The broker refused a request with a code that retrying does not change.
    #[error("{api} refused: {code}")]
    Refused {
        /// The API (`AddPartitionsToTxn`, `EndTxn`, ...).
        api: &'static str,
        /// The broker's code.
        code: BrokerCode,
    },
    /// Retries (connection failures, coordinator moves, CONCURRENT_TRANSACTIONS) ran out at
    /// `delivery.timeout.ms`; the last failure.
    #[error("{api}: gave up: {last}")]
    GaveUp {
        /// The API.
        api: &'static str,
        /// The last failure seen.
        last: String,
    },
    /// The transaction already had a failure (a send that did not end `Ok`, a refused offset
    /// commit); it can only be aborted.
    #[error("transaction can only abort: {0}")]
    Abortable(String),
    /// The transaction was aborted, as asked.
    #[error("transaction aborted")]
    Aborted,
    /// The call does not fit the producer's state (no transaction open, one already open).
    #[error("invalid transaction state: {0}")]
    State(String),
    /// A client-side failure outside the retry loops (configuration, no broker supports the
    /// API).
    #[error(transparent)]
    Client(#[from] Error),
}

impl TxnError {
    /// Whether this error fenced the producer.
    pub fn is_fenced(&self) -> bool {
        matches!(self, TxnError::Fenced(_))
    }
}

/// How a transaction ended, for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Committed: every record sent in it is visible to read_committed consumers (history
    /// `ok`).
    Committed,
    /// Certainly not committed (history `fail`): aborted, refused, or never able to commit.
    NotCommitted(TxnError),
    /// Maybe committed (history `info`): an EndTxn(commit) may have reached the coordinator
    /// and no answer said how it ended.
    Unknown(TxnError),
}

impl TxnOutcome {
    /// The history completion type: `"ok"`, `"fail"` or `"info"`.
    pub fn history_type(&self) -> &'static str {
        match self {
            TxnOutcome::Committed => "ok",
            TxnOutcome::NotCommitted(_) => "fail",
            TxnOutcome::Unknown(_) => "info",
        }
    }

    /// Whether the transaction certainly committed.
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed)
    }
}

/// The open transaction.
#[derive(Debug, Default)]
struct Txn {
    /// Partitions added with AddPartitionsToTxn.
    partitions: BTreeSet<TopicPartition>,
    /// Groups added with AddOffsetsToTxn.
    groups: BTreeSet<String>,
    /// The first failure; the transaction can only abort.
    failed: Option<String>,
    /// A send failed: partition sequences may be broken (bump the epoch after the abort).
    sequences_dirty: bool,
}

#[derive(Debug)]
enum Phase {
    /// No transaction open.
    Ready,
    /// A transaction is open.
    InTxn(Txn),
    /// The last transaction's end is not known to be complete: re-initialise before the next.
    Unsettled(String),
    /// Fenced: unusable.
    Fenced(String),
}

#[derive(Debug)]
struct State {
    identity: ProducerIdentity,
    phase: Phase,
}

/// What the retry loop does with a broker code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeClass {
    /// Retry after a backoff.
    Retry,
    /// Find the coordinator again, then retry. The request may have taken effect (codes a
    /// coordinator also returns after a state write it could not confirm).
    Rediscover,
    /// PRODUCER_FENCED / INVALID_PRODUCER_EPOCH.
    Fenced,
    /// Final.
    Fatal,
}

fn classify(code: i16) -> CodeClass {
    use ResponseError as E;
    match ResponseError::try_from_code(code) {
        Some(E::ProducerFenced | E::InvalidProducerEpoch) => CodeClass::Fenced,
        Some(
            E::NotCoordinator
            | E::CoordinatorNotAvailable
            | E::RequestTimedOut
            | E::NotEnoughReplicas
            | E::NotEnoughReplicasAfterAppend,
        ) => CodeClass::Rediscover,
        Some(
            E::CoordinatorLoadInProgress
            | E::ConcurrentTransactions
            | E::UnknownTopicOrPartition
            | E::OperationNotAttempted
            | E::UnstableOffsetCommit,
        ) => CodeClass::Retry,
        _ => CodeClass::Fatal,
    }
}

/// One coordinator round trip as the retry loop sees it.
enum Try<T> {
    /// Success.
    Done(T),
    /// A non-zero broker code.
    Code(i16),
    /// A client error; `maybe_sent`: the request may have reached the broker.
    Failed { error: Error, maybe_sent: bool },
}

impl<T> Try<T> {
    /// The broker supports no version of `api`: nothing was sent.
    fn unsupported(api: &str) -> Try<T> {
        Try::Failed {
            error: Error::UnsupportedVersion(api.into()),
            maybe_sent: false,
        }
    }

    /// The call failed in the client (maybe after the request left).
    fn failed(e: ConnError) -> Try<T> {
        Try::Failed {
            maybe_sent: e.may_have_been_sent(),
            error: e.into(),
        }
    }
}

/// How a retry loop ended.
struct Driven<T> {
    result: Result<T, TxnError>,
    /// Some attempt may have taken effect without a success answer (lost connection, timeout,
    /// or a code of [`CodeClass::Rediscover`]).
    maybe_applied: bool,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn code_name(code: i16) -> String {
    BrokerCode(code).to_string()
}

/// The outcome of a send refused because the producer is fenced.
fn fenced_outcome(why: &str) -> Outcome {
    Outcome::Definite(SendError::Refused(format!("producer fenced: {why}")))
}

/// Whether a send's outcome carries a fencing code.
fn send_fenced(o: &Outcome) -> bool {
    fn err_fenced(e: &SendError) -> bool {
        match e {
            SendError::Broker { code, .. } => classify(code.0) == CodeClass::Fenced,
            SendError::DeliveryTimeout(Some(inner)) => err_fenced(inner),
            _ => false,
        }
    }
    match o {
        Outcome::Ok(_) => false,
        Outcome::Definite(e) | Outcome::Indeterminate(e) => err_fenced(e),
    }
}

/// A transactional producer (one `transactional.id`). Calls take `&self`; sends may run
/// concurrently within a transaction.
pub struct TransactionalProducer {
    producer: Producer,
    config: Arc<Config>,
    transactional_id: String,
    transaction_timeout: Duration,
    /// Held shared by `send`/`send_offsets`, exclusively by `begin`/`commit`/`abort`.
    gate: tokio::sync::RwLock<()>,
    state: Mutex<State>,
    /// Serialises AddPartitionsToTxn / AddOffsetsToTxn of concurrent sends.
    add_lock: tokio::sync::Mutex<()>,
    /// Coordinator connections by (key type, key).
    coordinators: tokio::sync::Mutex<HashMap<(i8, String), Arc<Connection>>>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.transactional_id)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// A transactional producer for `transactional_id`: finds its coordinator and takes a
    /// producer id and epoch (InitProducerId), fencing every older producer with the same id
    /// and letting the coordinator abort (or finish) what they left open. `config` must allow
    /// idempotence (acks=all, `enable.idempotence` true). Coordinator steps here and below are
    /// retried until `delivery.timeout.ms`.
    pub async fn new(
        config: Config,
        transactional_id: &str,
        transaction_timeout: Duration,
    ) -> Result<TransactionalProducer, TxnError> {
        if transactional_id.is_empty() {
            return Err(Error::Config("transactional.id is empty".into()).into());
        }
        if config.acks != Acks::All {
            return Err(Error::Config("transactional.id requires acks=all".into()).into());
        }
        let producer = Producer::transactional(config, transactional_id)?;
        let config = producer.cluster().config().clone();
        let p = TransactionalProducer {
            producer,
            config,
            transactional_id: transactional_id.to_string(),
            transaction_timeout,
            gate: tokio::sync::RwLock::new(()),
            state: Mutex::new(State {
                identity: ProducerIdentity::NONE,
                phase: Phase::Ready,
            }),
            add_lock: tokio::sync::Mutex::new(()),
            coordinators: tokio::sync::Mutex::new(HashMap::new()),
        };
        let id = p.init(None).await?;
        p.install(id).await;
        tracing::debug!(txn = %p.transactional_id, producer_id = id.id, epoch = id.epoch, "transactional producer ready");
        Ok(p)
    }

    /// The `transactional.id`.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// The current producer id and epoch.
    pub fn identity(&self) -> ProducerIdentity {
        self.lock().identity
    }

    /// Whether the producer was fenced (every later call fails).
    pub fn is_fenced(&self) -> bool {
        matches!(self.lock().phase, Phase::Fenced(_))
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        matches!(self.lock().phase, Phase::InTxn(_))
    }

    /// The producer's metadata and connections.
    pub fn cluster(&self) -> &Arc<Cluster> {
        self.producer.cluster()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn install(&self, id: ProducerIdentity) {
        self.producer.install_identity(id).await;
        self.lock().identity = id;
    }

    fn fence(&self, why: String) -> TxnError {
        tracing::info!(txn = %self.transactional_id, reason = %why, "producer fenced");
        self.lock().phase = Phase::Fenced(why.clone());
        TxnError::Fenced(why)
    }

    /// Marks the open transaction failed (abortable), keeping the first reason.
    fn fail_txn(&self, why: String, sequences: bool) {
        if let Phase::InTxn(t) = &mut self.lock().phase {
            if t.failed.is_none() {
                t.failed = Some(why);
            }
            t.sequences_dirty |= sequences;
        }
    }

    // ---- coordinator plumbing ----

    async fn coordinator(&self, key_type: i8, key: &str) -> Result<Arc<Connection>, Error> {
        let k = (key_type, key.to_string());
        if let Some(c) = self.coordinators.lock().await.get(&k) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let cluster = self.producer.cluster();
        let conn = cluster.any_conn().await?;
        let (_, addr) = cluster.find_coordinator(&conn, key_type, key).await?;
        let c = cluster.conn_to_addr(&addr).await?;
        self.coordinators.lock().await.insert(k, c.clone());
        Ok(c)
    }

    async fn forget_coordinator(&self, key_type: i8, key: &str) {
        self.coordinators
            .lock()
            .await
            .remove(&(key_type, key.to_string()));
    }

    /// Runs `one` against the coordinator of `(key_type, key)` until it succeeds, fails
    /// for good, or `delivery.timeout.ms` passes.
    async fn drive<T, F, Fut>(
        &self,
        api: &'static str,
        key_type: i8,
        key: &str,
        mut one: F,
    ) -> Driven<T>
    where
        F: FnMut(Arc<Connection>) -> Fut,
        Fut: Future<Output = Try<T>>,
    {
        let deadline = Instant::now() + self.config.delivery_timeout;
        let mut maybe_applied = false;
        loop {
            let last: String;
            let step = match self.coordinator(key_type, key).await {
                // Finding the coordinator sends nothing of this request.
                Err(e) => Try::Failed {
                    error: e,
                    maybe_sent: false,
                },
                Ok(conn) => one(conn).await,
            };
            let rediscover = match step {
                Try::Done(t) => {
                    return Driven {
                        result: Ok(t),
                        maybe_applied,
                    }
                }
                Try::Code(code) => {
                    last = code_name(code);
                    match classify(code) {
                        CodeClass::Fenced => {
                            return Driven {
                                result: Err(TxnError::Fenced(format!("{api}: {last}"))),
                                maybe_applied,
                            }
                        }
                        CodeClass::Fatal => {
                            return Driven {
                                result: Err(TxnError::Refused {
                                    api,
                                    code: BrokerCode(code),
                                }),
                                maybe_applied,
                            }
                        }
                        CodeClass::Retry => false,
                        CodeClass::Rediscover => {
                            maybe_applied = true;
                            true
                        }
                    }
                }
                Try::Failed { error, maybe_sent } => {
                    if let Error::UnsupportedVersion(_) = error {
                        return Driven {
                            result: Err(error.into()),
                            maybe_applied,
                        };
                    }
                    // FindCoordinator's own refusals (COORDINATOR_NOT_AVAILABLE while the
                    // internal topic is created, ...) are retried like connection failures.
                    maybe_applied |= maybe_sent;
                    last = error.to_string();
                    true
                }
            };
            if rediscover {
                self.forget_coordinator(key_type, key).await;
            }
            tracing::debug!(txn = %self.transactional_id, api, last = %last, "retrying");
            if Instant::now() + self.config.retry_backoff >= deadline {
                return Driven {
                    result: Err(TxnError::GaveUp { api, last }),
                    maybe_applied,
                };
            }
            tokio::time::sleep(self.config.retry_backoff).await;
        }
    }

    // ---- the protocol steps ----

    /// InitProducerId with the transactional id; `current`: this producer's id and epoch when
    /// re-initialising (v3+ sends them, so the coordinator bumps exactly this epoch).
    async fn init(&self, current: Option<ProducerIdentity>) -> Result<ProducerIdentity, TxnError> {
        let tid = self.transactional_id.clone();
        let timeout_ms = self.transaction_timeout.as_millis().min(i32::MAX as u128) as i32;
        let rt = self.config.request_timeout;
        let driven = self
            .drive("InitProducerId", TXN_KEY, &tid, |conn| {
                let tid = tid.clone();
                async move {
                    let Some(v) = conn.version(ApiKey::InitProducerId) else {
                        return Try::unsupported("InitProducerId");
                    };
                    let mut req = InitProducerIdRequest::default();
                    req.transactional_id = Some(TransactionalId(sb(&tid)));
                    req.transaction_timeout_ms = timeout_ms;
                    let (pid, epoch) = match current {
                        Some(c) if v >= 3 => (c.id, c.epoch),
                        _ => (-1, -1),
                    };
                    req.producer_id = ProducerId(pid);
                    req.producer_epoch = epoch;
                    match conn.call(v, &req, rt).await {
                        Err(e) => Try::failed(e),
                        Ok(r) if r.error_code != 0 => Try::Code(r.error_code),
                        Ok(r) => Try::Done(ProducerIdentity {
                            id: r.producer_id.0,
                            epoch: r.producer_epoch,
                        }),
                    }
                }
            })
            .await;
        match driven.result {
            Err(TxnError::Fenced(why)) => Err(self.fence(why)),
            other => other,
        }
    }

    /// The producer identity to add something to the open transaction with, or `None` when
    /// `has` says the transaction holds it already; an error when no transaction is open.
    fn identity_to_add(
        &self,
        has: impl Fn(&Txn) -> bool,
    ) -> Result<Option<ProducerIdentity>, TxnError> {
        let st = self.lock();
        match &st.phase {
            Phase::InTxn(t) if has(t) => Ok(None),
            Phase::InTxn(_) => Ok(Some(st.identity)),
            _ => Err(TxnError::State("no transaction open".into())),
        }
    }

    /// AddPartitionsToTxn for `tp` unless it is in the open transaction already.
    async fn add_partition(&self, tp: &TopicPartition) -> Result<(), TxnError> {
        let _g = self.add_lock.lock().await;
        let Some(identity) = self.identity_to_add(|t| t.partitions.contains(tp))? else {
            return Ok(());
        };
        let tid = self.transactional_id.clone();
        let rt = self.config.request_timeout;
        let driven = self
            .drive("AddPartitionsToTxn", TXN_KEY, &tid, |conn| {
                let tid = tid.clone();
                let tp = tp.clone();
                async move {
                    let Some(v) = conn.version(ApiKey::AddPartitionsToTxn) else {
                        return Try::unsupported("AddPartitionsToTxn");
                    };
                    let mut t = AddPartitionsToTxnTopic::default();
                    t.name = TopicName(sb(&tp.topic));
                    t.partitions = vec![tp.partition];
                    let mut req = AddPartitionsToTxnRequest::default();
                    req.v3_and_below_transactional_id = TransactionalId(sb(&tid));
                    req.v3_and_below_producer_id = ProducerId(identity.id);
                    req.v3_and_below_producer_epoch = identity.epoch;
                    req.v3_and_below_topics = vec![t];
                    match conn.call(v, &req, rt).await {
                        Err(e) => Try::failed(e),
                        Ok(r) => {
                            let code = r
                                .results_by_topic_v3_and_below
                                .iter()
                                .filter(|t| t.name.0.as_str() == tp.topic)
                                .flat_map(|t| t.results_by_partition.iter())
                                .find(|p| p.partition_index == tp.partition)
                                .map(|p| p.partition_error_code);
                            match code {
                                Some(0) => Try::Done(()),
                                Some(c) => Try::Code(c),
                                None if r.error_code != 0 => Try::Code(r.error_code),
                                None => Try::Failed {
                                    error: Error::Records(
                                        "AddPartitionsToTxn response without the partition".into(),
                                    ),
                                    maybe_sent: true,
                                },
                            }
                        }
                    }
                }
            })
            .await;
        match driven.result {
            Ok(()) => {
                if let Phase::InTxn(t) = &mut self.lock().phase {
                    t.partitions.insert(tp.clone());
                }
                Ok(())
            }
            Err(TxnError::Fenced(why)) => Err(self.fence(why)),
            Err(e) => {
                self.fail_txn(format!("AddPartitionsToTxn {tp}: {e}"), false);
                Err(e)
            }
        }
    }

    /// AddOffsetsToTxn for `group` unless the open transaction has it already.
    async fn add_group(&self, group: &str) -> Result<(), TxnError> {
        let _g = self.add_lock.lock().await;
        let Some(identity) = self.identity_to_add(|t| t.groups.contains(group))? else {
            return Ok(());
        };
        let tid = self.transactional_id.clone();
        let rt = self.config.request_timeout;
        let driven = self
            .drive("AddOffsetsToTxn", TXN_KEY, &tid, |conn| {
                let tid = tid.clone();
                let group = group.to_string();
                async move {
                    let Some(v) = conn.version(ApiKey::AddOffsetsToTxn) else {
                        return Try::unsupported("AddOffsetsToTxn");
                    };
                    let mut req = AddOffsetsToTxnRequest::default();
                    req.transactional_id = TransactionalId(sb(&tid));
                    req.producer_id = ProducerId(identity.id);
                    req.producer_epoch = identity.epoch;
                    req.group_id = GroupId(sb(&group));
                    match conn.call(v, &req, rt).await {
                        Err(e) => Try::failed(e),
                        Ok(r) if r.error_code != 0 => Try::Code(r.error_code),
                        Ok(_) => Try::Done(()),
                    }
                }
            })
            .await;
        match driven.result {
            Ok(()) => {
                if let Phase::InTxn(t) = &mut self.lock().phase {
                    t.groups.insert(group.to_string());
                }
                Ok(())
            }
            Err(TxnError::Fenced(why)) => Err(self.fence(why)),
            Err(e) => {
                self.fail_txn(format!("AddOffsetsToTxn {group}: {e}"), false);
                Err(e)
            }
        }
    }

    /// EndTxn until it succeeds or fails for good; `maybe_applied` says whether a commit may
    /// have happened without a success answer.
    async fn end_txn(&self, commit: bool) -> Driven<()> {
        let identity = self.lock().identity;
        let tid = self.transactional_id.clone();
        let rt = self.config.request_timeout;
        self.drive("EndTxn", TXN_KEY, &tid, |conn| {
            let tid = tid.clone();
            async move {
                let Some(v) = conn.version(ApiKey::EndTxn) else {
                    return Try::unsupported("EndTxn");
                };
                let mut req = EndTxnRequest::default();
                req.transactional_id = TransactionalId(sb(&tid));
                req.producer_id = ProducerId(identity.id);
                req.producer_epoch = identity.epoch;
                req.committed = commit;
                match conn.call(v, &req, rt).await {
                    Err(e) => Try::failed(e),
                    Ok(r) if r.error_code != 0 => Try::Code(r.error_code),
                    Ok(_) => Try::Done(()),
                }
            }
        })
        .await
    }

    /// Re-initialises after an unsettled or sequence-broken transaction: bumps the epoch and
    /// replaces the partition senders. Fencing is recorded; other failures leave `phase`.
    async fn reinit(&self) -> Result<(), TxnError> {
        let current = self.lock().identity;
        let id = self.init(Some(current)).await?;
        self.install(id).await;
        tracing::debug!(txn = %self.transactional_id, producer_id = id.id, epoch = id.epoch, "re-initialised");
        Ok(())
    }

    // ---- the API ----

    /// Opens a transaction. An unsettled producer (its last transaction's end unknown) is
    /// re-initialised first.
    pub async fn begin(&self) -> Result<(), TxnError> {
        let _w = self.gate.write().await;
        let unsettled = match &self.lock().phase {
            Phase::Ready => false,
            Phase::Unsettled(_) => true,
            Phase::InTxn(_) => return Err(TxnError::State("a transaction is already open".into())),
            Phase::Fenced(why) => return Err(TxnError::Fenced(why.clone())),
        };
        if unsettled {
            self.reinit().await?;
        }
        self.lock().phase = Phase::InTxn(Txn::default());
        Ok(())
    }

    /// Sends one record to `topic`/`partition` inside the open transaction (adding the
    /// partition to it first). The outcome says whether the record reached the log; any
    /// outcome but `Ok` makes the transaction abortable only. Outside a transaction, after a
    /// failure in it, or when fenced: `Definite` without sending.
    pub async fn send(
        &self,
        topic: &str,
        partition: i32,
        key: Option<Bytes>,
        value: Option<Bytes>,
    ) -> Outcome {
        let _r = self.gate.read().await;
        match &self.lock().phase {
            Phase::InTxn(t) => {
                if let Some(why) = &t.failed {
                    return Outcome::Definite(SendError::Refused(format!(
                        "transaction can only abort: {why}"
                    )));
                }
            }
            Phase::Fenced(why) => return fenced_outcome(why),
            _ => {
                return Outcome::Definite(SendError::Refused("no transaction open".into()));
            }
        }
        let tp = TopicPartition::new(topic, partition);
        if let Err(e) = self.add_partition(&tp).await {
            return Outcome::Definite(SendError::Refused(format!(
                "partition not added to the transaction: {e}"
            )));
        }
        let out = self.producer.send(topic, Some(partition), key, value).await;
        if !matches!(out, Outcome::Ok(_)) {
            let why = match &out {
                Outcome::Definite(e) | Outcome::Indeterminate(e) => format!("send to {tp}: {e}"),
                Outcome::Ok(_) => String::new(),
            };
            if send_fenced(&out) {
                self.fence(why);
            } else {
                self.fail_txn(why, true);
            }
        }
        out
    }

    /// Commits consumer offsets (the next offsets to read) for `group_id` as part of the open
    /// transaction: AddOffsetsToTxn, then TxnOffsetCommit to the group's coordinator. The
    /// offsets become the group's committed offsets if and only if the transaction commits.
    /// `member_id` and `generation` (from the group membership, or `""` and `-1` for a
    /// consumer outside a group) let the coordinator fence a zombie member (TxnOffsetCommit
    /// v3+). A failure makes the transaction abortable only.
    pub async fn send_offsets(
        &self,
        group_id: &str,
        offsets: &[(TopicPartition, i64)],
        member_id: &str,
        generation: i32,
    ) -> Result<(), TxnError> {
        let _r = self.gate.read().await;
        let identity = {
            let st = self.lock();
            match &st.phase {
                Phase::InTxn(t) => {
                    if let Some(why) = &t.failed {
                        return Err(TxnError::Abortable(why.clone()));
                    }
                    st.identity
                }
                Phase::Fenced(why) => return Err(TxnError::Fenced(why.clone())),
                _ => return Err(TxnError::State("no transaction open".into())),
            }
        };
        self.add_group(group_id).await?;
        let mut by_topic: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
        for (tp, o) in offsets {
            by_topic
                .entry(tp.topic.clone())
                .or_default()
                .push((tp.partition, *o));
        }
        let tid = self.transactional_id.clone();
        let rt = self.config.request_timeout;
        let driven = self
            .drive("TxnOffsetCommit", GROUP_KEY, group_id, |conn| {
                let tid = tid.clone();
                let group = group_id.to_string();
                let member = member_id.to_string();
                let by_topic = by_topic.clone();
                async move {
                    let Some(v) = conn.version(ApiKey::TxnOffsetCommit) else {
                        return Try::unsupported("TxnOffsetCommit");
                    };
                    let mut req = TxnOffsetCommitRequest::default();
                    req.transactional_id = TransactionalId(sb(&tid));
                    req.group_id = GroupId(sb(&group));
                    req.producer_id = ProducerId(identity.id);
                    req.producer_epoch = identity.epoch;
                    if v >= 3 {
                        req.generation_id = generation;
                        req.member_id = sb(&member);
                    }
                    req.topics = by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            let mut rt = TxnOffsetCommitRequestTopic::default();
                            rt.name = TopicName(sb(&t));
                            rt.partitions = ps
                                .into_iter()
                                .map(|(p, o)| {
                                    let mut rp = TxnOffsetCommitRequestPartition::default();
                                    rp.partition_index = p;
                                    rp.committed_offset = o;
                                    if v >= 2 {
                                        rp.committed_leader_epoch = -1;
                                    }
                                    rp.committed_metadata = Some(sb(""));
                                    rp
                                })
                                .collect();
                            rt
                        })
                        .collect();
                    match conn.call(v, &req, rt).await {
                        Err(e) => Try::failed(e),
                        Ok(r) => {
                            let bad = r
                                .topics
                                .iter()
                                .flat_map(|t| t.partitions.iter())
                                .map(|p| p.error_code)
                                .find(|c| *c != 0);
                            match bad {
                                Some(c) => Try::Code(c),
                                None => Try::Done(()),
                            }
                        }
                    }
                }
            })
            .await;
        match driven.result {
            Ok(()) => Ok(()),
            Err(TxnError::Fenced(why)) => Err(self.fence(why)),
            Err(e) => {
                self.fail_txn(format!("TxnOffsetCommit {group_id}: {e}"), false);
                Err(e)
            }
        }
    }

    /// Commits the open transaction (after every send in flight has finished). A transaction
    /// that already failed is aborted instead (`NotCommitted`). See the module doc for what
    /// each [`TxnOutcome`] means.
    pub async fn commit(&self) -> TxnOutcome {
        let _w = self.gate.write().await;
        let txn = {
            let mut st = self.lock();
            match std::mem::replace(&mut st.phase, Phase::Ready) {
                Phase::InTxn(t) => t,
                other => {
                    let e = match &other {
                        Phase::Fenced(why) => TxnError::Fenced(why.clone()),
                        Phase::Unsettled(why) => {
                            TxnError::State(format!("no transaction open (unsettled: {why})"))
                        }
                        _ => TxnError::State("no transaction open".into()),
                    };
                    st.phase = other;
                    return TxnOutcome::NotCommitted(e);
                }
            }
        };
        if let Some(why) = txn.failed.clone() {
            if let Err(e) = self.abort_txn(txn).await {
                tracing::debug!(txn = %self.transactional_id, error = %e, "abort of a failed transaction did not finish");
            }
            return TxnOutcome::NotCommitted(TxnError::Abortable(why));
        }
        if txn.partitions.is_empty() && txn.groups.is_empty() {
            // Nothing reached the coordinator: nothing to end (as the Java client does).
            return TxnOutcome::Committed;
        }
        let driven = self.end_txn(true).await;
        match driven.result {
            Ok(()) => {
                tracing::debug!(txn = %self.transactional_id, partitions = txn.partitions.len(), "committed");
                TxnOutcome::Committed
            }
            Err(e) => {
                let why = format!("EndTxn(commit): {e}");
                if e.is_fenced() {
                    self.fence(why.clone());
                } else {
                    self.lock().phase = Phase::Unsettled(why.clone());
                }
                if driven.maybe_applied {
                    TxnOutcome::Unknown(e)
                } else {
                    TxnOutcome::NotCommitted(e)
                }
            }
        }
    }

    /// Aborts the open transaction (after every send in flight has finished). Nothing of it
    /// can commit afterwards: the result is always `NotCommitted`, carrying
    /// [`TxnError::Aborted`] when the abort is known complete, else why not (the producer is
    /// then re-initialised at the next `begin`, which settles it).
    pub async fn abort(&self) -> TxnOutcome {
        let _w = self.gate.write().await;
        let txn = {
            let mut st = self.lock();
            match std::mem::replace(&mut st.phase, Phase::Ready) {
                Phase::InTxn(t) => t,
                other => {
                    let e = match &other {
                        Phase::Fenced(why) => TxnError::Fenced(why.clone()),
                        _ => TxnError::State("no transaction open".into()),
                    };
                    st.phase = other;
                    return TxnOutcome::NotCommitted(e);
                }
            }
        };
        match self.abort_txn(txn).await {
            Ok(()) => TxnOutcome::NotCommitted(TxnError::Aborted),
            Err(e) => TxnOutcome::NotCommitted(e),
        }
    }

    /// EndTxn(abort) for `txn` (taken out of the phase), then the epoch bump its broken
    /// sequences need. Sets the phase: Ready, Unsettled or Fenced.
    async fn abort_txn(&self, txn: Txn) -> Result<(), TxnError> {
        if !txn.partitions.is_empty() || !txn.groups.is_empty() {
            if let Err(e) = self.end_txn(false).await.result {
                let why = format!("EndTxn(abort): {e}");
                if e.is_fenced() {
                    self.fence(why);
                } else {
                    self.lock().phase = Phase::Unsettled(why);
                }
                return Err(e);
            }
        }
        if txn.sequences_dirty {
            if let Err(e) = self.reinit().await {
                if !e.is_fenced() {
                    self.lock().phase = Phase::Unsettled(format!("epoch bump after abort: {e}"));
                }
                return Err(e);
            }
        }
        self.lock().phase = Phase::Ready;
        tracing::debug!(txn = %self.transactional_id, "aborted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_as_kafka_does() {
        use ResponseError as E;
        assert_eq!(classify(E::ProducerFenced.code()), CodeClass::Fenced);
        assert_eq!(classify(E::InvalidProducerEpoch.code()), CodeClass::Fenced);
        assert_eq!(classify(E::NotCoordinator.code()), CodeClass::Rediscover);
        assert_eq!(
            classify(E::CoordinatorNotAvailable.code()),
            CodeClass::Rediscover
        );
        assert_eq!(classify(E::ConcurrentTransactions.code()), CodeClass::Retry);
        assert_eq!(
            classify(E::CoordinatorLoadInProgress.code()),
            CodeClass::Retry
        );
        assert_eq!(classify(E::InvalidTxnState.code()), CodeClass::Fatal);
        assert_eq!(classify(E::IllegalGeneration.code()), CodeClass::Fatal);
        assert_eq!(classify(9999), CodeClass::Fatal);
    }

    #[test]
    fn fenced_sends_are_recognised() {
        let code = BrokerCode(ResponseError::ProducerFenced.code());
        let fenced = Outcome::Definite(SendError::Broker {
            code,
            message: None,
        });
        assert!(send_fenced(&fenced));
        let later = Outcome::Indeterminate(SendError::DeliveryTimeout(Some(Box::new(
            SendError::Broker {
                code: BrokerCode(ResponseError::InvalidProducerEpoch.code()),
                message: None,
            },
        ))));
        assert!(send_fenced(&later));
        assert!(!send_fenced(&Outcome::Ok(3)));
        assert!(!send_fenced(&Outcome::Indeterminate(SendError::Lost(
            "reset".into()
        ))));
    }

    #[test]
    fn outcomes_map_to_history_types() {
        assert_eq!(TxnOutcome::Committed.history_type(), "ok");
        assert_eq!(
            TxnOutcome::NotCommitted(TxnError::Aborted).history_type(),
            "fail"
        );
        assert_eq!(
            TxnOutcome::Unknown(TxnError::GaveUp {
                api: "EndTxn",
                last: "lost".into()
            })
            .history_type(),
            "info"
        );
    }
}
