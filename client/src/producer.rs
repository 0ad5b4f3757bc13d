//! The producer: [`Producer::send`] routes a record to a partition (explicit, by key hash, or
//! round-robin), hands it to that partition's sender task, and returns its [`Outcome`].
//!
//! Each partition has one sender task that owns ordering: it cuts batches from waiting records
//! (`linger.ms`, `batch.size`), keeps up to `max.in.flight.requests.per.connection` Produce
//! requests in flight, always sends the lowest unfinished batch first, retries with
//! `retry.backoff.ms` after refreshing metadata, and gives up at `retries` or
//! `delivery.timeout.ms`. Classification of every attempt and of the final outcome is in
//! [`crate::outcome`].
//!
//! Idempotence (`enable.idempotence`): a producer id and epoch from InitProducerId, and per
//! partition a sequence number per record. A partition keeps its producer id and its sequence
//! numbers across retries, so a retried batch the broker already has is answered with its
//! original offset. When a batch of a partition ends without success (its sequence would leave
//! a gap), the partition's sender resets: batches that may have been appended are finished
//! `Indeterminate` (re-sending them under a new identity could duplicate them), the others are
//! renumbered under a fresh producer id from InitProducerId. (A non-transactional idempotent
//! producer may use different producer ids on different partitions; the broker tracks state per
//! partition.)
//!
//! Transactional mode ([`crate::transactions::TransactionalProducer`] builds on it): the
//! identity comes from InitProducerId with the `transactional.id` and is installed by the
//! transactional producer ([`Producer::install_identity`], which also replaces every partition
//! sender so sequences restart at 0 under a new epoch); batches carry the transactional
//! attribute and Produce carries the `transactional.id`. A partition sender whose sequence
//! breaks cannot take a fresh producer id (that would leave the transaction): it finishes what
//! it holds and refuses further records (`Definite`) until the transactional producer aborts
//! and installs a bumped epoch.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
// tokio's Instant: the real clock in production, virtual time under `harness sim`.
use tokio::time::Instant;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::Cluster;
use crate::config::{Acks, Config};
use crate::error::{ConnError, Error};
use crate::outcome::{Attempt, Delivery, Outcome, SendError, Step};
use crate::partitioner::partition_for_key;
use crate::records::{build_batch, OutRecord, ProducerIdentity};

/// Milliseconds since the Unix epoch, for record timestamps (through the connection seam's
/// wall clock: the system's, or a simulator's).
fn now_ms() -> i64 {
    crate::conn::wall_clock_ms()
}

struct Job {
    rec: OutRecord,
    size: usize,
    arrived: Instant,
    deadline: Instant,
    tx: oneshot::Sender<Outcome>,
}

/// What partition senders share with the producer. Senders hold this, not the producer, so
/// dropping the last [`Producer`] clone closes their channels and they finish and exit.
#[derive(Clone)]
struct Ctx {
    cluster: Arc<Cluster>,
    config: Arc<Config>,
    /// The producer's first identity, shared by partitions until one resets.
    identity: Arc<tokio::sync::Mutex<Option<ProducerIdentity>>>,
    /// The `transactional.id` in transactional mode.
    transactional_id: Option<Arc<str>>,
}

struct Inner {
    ctx: Ctx,
    workers: Mutex<HashMap<(String, i32), mpsc::UnboundedSender<Job>>>,
    round_robin: AtomicU32,
}

/// An async producer. Cheap to clone; clones share connections and partition senders.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer; nothing is contacted until the first send. Must be created inside a Tokio
    /// runtime (sender tasks are spawned on it).
    pub fn new(config: Config) -> Result<Producer, Error> {
        Producer::build(config, None)
    }

    /// A producer in transactional mode for `transactional_id` (idempotence required). It sends
    /// nothing until an identity is installed with [`Producer::install_identity`].
    pub(crate) fn transactional(config: Config, transactional_id: &str) -> Result<Producer, Error> {
        if !config.enable_idempotence {
            return Err(Error::Config(
                "transactional.id requires enable.idempotence=true".into(),
            ));
        }
        Producer::build(config, Some(Arc::from(transactional_id)))
    }

    fn build(config: Config, transactional_id: Option<Arc<str>>) -> Result<Producer, Error> {
        if config.enable_idempotence && config.acks != Acks::All {
            return Err(Error::Config("enable.idempotence requires acks=all".into()));
        }
        if config.max_in_flight == 0 {
            return Err(Error::Config(
                "max.in.flight.requests.per.connection must be at least 1".into(),
            ));
        }
        let config = Arc::new(config);
        Ok(Producer {
            inner: Arc::new(Inner {
                ctx: Ctx {
                    cluster: Cluster::new(config.clone()),
                    config,
                    identity: Arc::new(tokio::sync::Mutex::new(None)),
                    transactional_id,
                },
                workers: Mutex::new(HashMap::new()),
                round_robin: AtomicU32::new(0),
            }),
        })
    }

    /// The producer's metadata and connections.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.inner.ctx.cluster
    }

    /// Transactional mode: makes `id` the identity of every later batch. Every partition sender
    /// is replaced (the old ones finish what they hold and exit), so sequence numbers restart
    /// at 0 under the new epoch. Call only while no send is in flight.
    pub(crate) async fn install_identity(&self, id: ProducerIdentity) {
        *self.inner.ctx.identity.lock().await = Some(id);
        self.inner
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Sends one record and waits for its outcome. `partition: None` picks
    /// `partition_for_key(key)` for a keyed record and round-robin otherwise.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<Bytes>,
        value: Option<Bytes>,
    ) -> Outcome {
        self.send_with_partition(topic, partition, key, value)
            .await
            .1
    }

    /// Like [`Producer::send`], also returning the partition chosen (`None` if the send was
    /// refused before one could be chosen).
    pub async fn send_with_partition(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<Bytes>,
        value: Option<Bytes>,
    ) -> (Option<i32>, Outcome) {
        let cfg = &self.inner.ctx.config;
        let arrived = Instant::now();
        let deadline = arrived + cfg.delivery_timeout;
        // Partition count from metadata, retried until the delivery deadline.
        let count = loop {
            match self.inner.ctx.cluster.topic(topic).await {
                Ok(t) => break t.partitions.len() as i32,
                Err(Error::UnknownTopic(t)) => {
                    return (
                        None,
                        Outcome::Definite(SendError::Refused(format!("unknown topic {t}"))),
                    )
                }
                Err(e) => {
                    if Instant::now() + cfg.retry_backoff >= deadline {
                        return (
                            None,
                            Outcome::Definite(SendError::NotSent(format!(
                                "no metadata before delivery timeout: {e}"
                            ))),
                        );
                    }
                    tokio::time::sleep(cfg.retry_backoff).await;
                }
            }
        };
        if count <= 0 {
            return (
                None,
                Outcome::Definite(SendError::Refused(format!(
                    "topic {topic} has no partitions"
                ))),
            );
        }
        let p = match (partition, key.as_deref()) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => {
                (self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % count as u32) as i32
            }
        };
        if p < 0 || p >= count {
            return (
                Some(p),
                Outcome::Definite(SendError::Refused(format!(
                    "partition {p} of {topic} does not exist ({count} partitions)"
                ))),
            );
        }
        let size = key.as_ref().map_or(0, |k| k.len()) + value.as_ref().map_or(0, |v| v.len()) + 24;
        let (tx, rx) = oneshot::channel();
        let job = Job {
            rec: OutRecord {
                key,
                value,
                timestamp: now_ms(),
            },
            size,
            arrived,
            deadline,
            tx,
        };
        let sender = {
            let mut w = self.inner.workers.lock().unwrap_or_else(|e| e.into_inner());
            let entry = w.entry((topic.to_string(), p));
            match entry {
                std::collections::hash_map::Entry::Occupied(o) if !o.get().is_closed() => {
                    o.get().clone()
                }
                entry => {
                    let (stx, srx) = mpsc::unbounded_channel();
                    let worker = PartitionSender::new(self.inner.ctx.clone(), topic.to_string(), p);
                    tokio::spawn(worker.run(srx));
                    match entry {
                        std::collections::hash_map::Entry::Occupied(mut o) => {
                            o.insert(stx.clone());
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(stx.clone());
                        }
                    }
                    stx
                }
            }
        };
        if let Err(mpsc::error::SendError(job)) = sender.send(job) {
            let _ = job.tx;
            return (
                Some(p),
                Outcome::Definite(SendError::NotSent("partition sender stopped".into())),
            );
        }
        let outcome = rx.await.unwrap_or_else(|_| {
            Outcome::Indeterminate(SendError::Lost("partition sender stopped".into()))
        });
        (Some(p), outcome)
    }
}

impl Ctx {
    /// A producer identity: the shared one, or (`fresh`) a new producer id.
    async fn identity(&self, fresh: bool) -> Result<ProducerIdentity, Error> {
        if self.transactional_id.is_some() {
            // Only the transactional producer installs identities (InitProducerId with the
            // transactional.id); a sender cannot take a fresh one on its own.
            let g = self.identity.lock().await;
            return match (*g, fresh) {
                (Some(id), false) => Ok(id),
                _ => Err(Error::Config(
                    "transactional producer has no usable identity (abort the transaction)".into(),
                )),
            };
        }
        if !fresh {
            let mut g = self.identity.lock().await;
            if let Some(id) = *g {
                return Ok(id);
            }
            let id = self.init_producer_id().await?;
            *g = Some(id);
            return Ok(id);
        }
        self.init_producer_id().await
    }

    async fn init_producer_id(&self) -> Result<ProducerIdentity, Error> {
        let conn = self.cluster.any_conn().await?;
        let v = conn
            .version(ApiKey::InitProducerId)
            .ok_or_else(|| Error::UnsupportedVersion("InitProducerId".into()))?;
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = 60_000;
        req.producer_id = ProducerId(-1);
        req.producer_epoch = -1;
        let resp: InitProducerIdResponse = conn.call(v, &req, self.config.request_timeout).await?;
        if resp.error_code != 0 {
            return Err(Error::broker(resp.error_code, None));
        }
        Ok(ProducerIdentity {
            id: resp.producer_id.0,
            epoch: resp.producer_epoch,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Ready,
    InFlight,
    Backoff(Instant),
}

struct Batch {
    id: u64,
    records: Vec<OutRecord>,
    txs: Vec<oneshot::Sender<Outcome>>,
    deadline: Instant,
    base_seq: i32,
    identity: Option<ProducerIdentity>,
    delivery: Delivery,
    state: State,
    refresh_first: bool,
}

impl Batch {
    fn finish(self, outcome: Outcome) {
        for (i, tx) in self.txs.into_iter().enumerate() {
            let o = match &outcome {
                Outcome::Ok(base) => Outcome::Ok(base + i as i64),
                other => other.clone(),
            };
            let _ = tx.send(o);
        }
    }
}

type AttemptFuture = Pin<Box<dyn Future<Output = (u64, Attempt)> + Send>>;

/// One partition's sender task.
struct PartitionSender {
    inner: Ctx,
    topic: String,
    partition: i32,
    queue: VecDeque<Batch>,
    accum: VecDeque<Job>,
    next_id: u64,
    identity: Option<ProducerIdentity>,
    next_seq: i32,
    needs_reset: bool,
    /// Sequence resets so far (after the first, identities are fresh producer ids).
    resets: u32,
    /// Transactional mode after a sequence break: every record is refused (`Definite`) until
    /// the transactional producer replaces this sender.
    poisoned: bool,
}

fn conn_attempt(e: ConnError) -> Attempt {
    match e {
        ConnError::NotSent(m) => Attempt::NotSent(m),
        other => Attempt::Lost(other.to_string()),
    }
}

/// One Produce attempt of one batch.
async fn attempt(
    ctx: Ctx,
    topic: String,
    partition: i32,
    bytes: Bytes,
    refresh_first: bool,
    deadline: Instant,
) -> Attempt {
    let (cluster, cfg) = (&ctx.cluster, &ctx.config);
    // Everything before the request is written is bounded by the delivery deadline; a
    // timeout there is `NotSent`.
    let route = async {
        if refresh_first {
            if let Err(e) = cluster.refresh().await {
                return Err(Attempt::NotSent(format!("metadata refresh: {e}")));
            }
        }
        let leader = match cluster.leader(&topic, partition).await {
            Ok((l, _)) => l,
            Err(e) => return Err(Attempt::NotSent(e.to_string())),
        };
        cluster.conn_to_node(leader).await.map_err(conn_attempt)
    };
    let conn = match tokio::time::timeout_at(deadline, route).await {
        Err(_) => return Attempt::NotSent("delivery timeout before sending".into()),
        Ok(Err(a)) => return a,
        Ok(Ok(c)) => c,
    };
    let Some(v) = conn.version(ApiKey::Produce) else {
        return Attempt::NotSent("broker supports no usable Produce version".into());
    };
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(bytes);
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.clone()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.transactional_id = ctx
        .transactional_id
        .as_ref()
        .map(|t| TransactionalId(StrBytes::from_string(t.to_string())));
    req.acks = cfg.acks.wire();
    req.timeout_ms = cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32;
    req.topic_data = vec![td];
    if cfg.acks == Acks::None {
        return match conn.send_only(v, &req, cfg.request_timeout).await {
            Ok(()) => Attempt::Unacknowledged,
            Err(e) => conn_attempt(e),
        };
    }
    // A little longer than the broker's own timeout, so its REQUEST_TIMED_OUT can arrive.
    let wait = cfg.request_timeout + Duration::from_millis(500);
    let resp: ProduceResponse = match conn.call(v, &req, wait).await {
        Ok(r) => r,
        Err(e) => return conn_attempt(e),
    };
    let pr = resp
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition);
    match pr {
        None => Attempt::Lost("Produce response without the partition".into()),
        Some(p) if p.error_code == 0 => Attempt::Appended(p.base_offset),
        Some(p) => Attempt::Broker {
            code: p.error_code,
            message: p.error_message.as_ref().map(|m| m.to_string()),
        },
    }
}

/// Whether a failed attempt calls for fresh metadata before the next one.
fn wants_refresh(a: &Attempt) -> bool {
    use kafka_protocol::error::ResponseError as E;
    match a {
        Attempt::NotSent(_) | Attempt::Lost(_) => true,
        Attempt::Broker { code, .. } => matches!(
            E::try_from_code(*code),
            Some(
                E::NotLeaderOrFollower
                    | E::UnknownTopicOrPartition
                    | E::LeaderNotAvailable
                    | E::FencedLeaderEpoch
                    | E::UnknownLeaderEpoch
                    | E::KafkaStorageError
                    | E::NotEnoughReplicas
            )
        ),
        _ => false,
    }
}

impl PartitionSender {
    fn new(inner: Ctx, topic: String, partition: i32) -> PartitionSender {
        PartitionSender {
            inner,
            topic,
            partition,
            queue: VecDeque::new(),
            accum: VecDeque::new(),
            next_id: 0,
            identity: None,
            next_seq: 0,
            needs_reset: false,
            resets: 0,
            poisoned: false,
        }
    }

    fn idempotent(&self) -> bool {
        self.inner.config.enable_idempotence
    }

    fn in_flight(&self) -> usize {
        self.queue
            .iter()
            .filter(|b| b.state == State::InFlight)
            .count()
    }

    /// Cuts a batch from the accumulator when one may go out now.
    fn cut_batch(&mut self, now: Instant, channel_open: bool) {
        let cfg = &self.inner.config;
        if self.needs_reset || self.in_flight() >= cfg.max_in_flight {
            return;
        }
        if self.queue.iter().any(|b| b.state != State::InFlight) {
            return;
        }
        let Some(first) = self.accum.front() else {
            return;
        };
        let total: usize = self.accum.iter().map(|j| j.size).sum();
        if first.arrived + cfg.linger > now && total < cfg.batch_size && channel_open {
            return;
        }
        let mut records = Vec::new();
        let mut txs = Vec::new();
        let mut size = 0usize;
        let mut deadline = first.deadline;
        while let Some(j) = self.accum.front() {
            if !records.is_empty() && size + j.size > cfg.batch_size {
                break;
            }
            let Some(j) = self.accum.pop_front() else {
                break;
            };
            size += j.size;
            deadline = deadline.min(j.deadline);
            records.push(j.rec);
            txs.push(j.tx);
        }
        let n = records.len() as i32;
        let base_seq = if self.idempotent() {
            let s = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(n) & i32::MAX;
            s
        } else {
            -1
        };
        self.next_id += 1;
        self.queue.push_back(Batch {
            id: self.next_id,
            records,
            txs,
            deadline,
            base_seq,
            identity: self.identity,
            delivery: Delivery::default(),
            state: State::Ready,
            refresh_first: false,
        });
    }

    /// Finishes batches and waiting records past their delivery deadline (never in-flight ones).
    fn expire(&mut self, now: Instant) {
        while self.accum.front().is_some_and(|j| j.deadline <= now) {
            if let Some(j) = self.accum.pop_front() {
                let _ =
                    j.tx.send(Outcome::Definite(SendError::DeliveryTimeout(None)));
            }
        }
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].state != State::InFlight && self.queue[i].deadline <= now {
                if let Some(b) = self.queue.remove(i) {
                    let last = b.delivery.last.clone().map(Box::new);
                    let o = b.delivery.finish(Some(SendError::DeliveryTimeout(last)));
                    b.finish(o);
                    if self.idempotent() {
                        self.needs_reset = true;
                    }
                }
            } else {
                i += 1;
            }
        }
    }

    /// After a sequence gap: finish batches that may have been appended, renumber the rest
    /// under a fresh producer id (fetched before the next send).
    fn reset_sequences(&mut self) {
        if self.inner.transactional_id.is_some() {
            self.poison();
            return;
        }
        let old = std::mem::take(&mut self.queue);
        for mut b in old {
            if b.delivery.maybe_appended {
                let why = SendError::SequenceBroken(
                    "an earlier batch of this partition failed; not re-sent under a new producer id"
                        .into(),
                );
                let o = b.delivery.finish(Some(why));
                b.finish(o);
            } else {
                b.state = State::Ready;
                self.queue.push_back(b);
            }
        }
        self.identity = None;
        self.next_seq = 0;
        for b in self.queue.iter_mut() {
            b.identity = None;
            b.base_seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(b.records.len() as i32) & i32::MAX;
        }
        self.needs_reset = false;
        self.resets += 1;
    }

    /// Transactional mode: the sequence broke and no fresh producer id may be taken. Batches
    /// that may have been appended end `Indeterminate`, everything else `Definite`; later
    /// records are refused.
    fn poison(&mut self) {
        let why = "an earlier batch of this partition failed inside the transaction; abort it";
        for b in std::mem::take(&mut self.queue) {
            let o = b
                .delivery
                .finish(Some(SendError::SequenceBroken(why.into())));
            b.finish(o);
        }
        self.refuse_waiting();
        self.needs_reset = false;
        self.poisoned = true;
    }

    /// Finishes every waiting record `Definite` (a poisoned transactional sender).
    fn refuse_waiting(&mut self) {
        for j in self.accum.drain(..) {
            let _ = j.tx.send(Outcome::Definite(SendError::SequenceBroken(
                "this partition's sequence broke earlier in the transaction; abort it".into(),
            )));
        }
    }

    async fn ensure_identity(&mut self, fresh: bool) -> bool {
        if !self.idempotent() {
            return true;
        }
        if self.identity.is_none() {
            match self.inner.identity(fresh).await {
                Ok(id) => self.identity = Some(id),
                Err(e) => {
                    tracing::debug!(error = %e, "InitProducerId failed");
                    return false;
                }
            }
        }
        let id = self.identity;
        for b in self.queue.iter_mut() {
            if b.identity.is_none() {
                b.identity = id;
            }
        }
        true
    }

    /// Starts attempts for Ready batches, in order, up to the in-flight limit.
    fn launch(&mut self, now: Instant, inflight: &mut FuturesUnordered<AttemptFuture>) {
        let max = self.inner.config.max_in_flight;
        let mut n = self.in_flight();
        for i in 0..self.queue.len() {
            if n >= max {
                break;
            }
            let b = &mut self.queue[i];
            match b.state {
                State::InFlight => continue,
                State::Backoff(t) if t > now => break,
                _ => {}
            }
            let identity = if self.inner.config.enable_idempotence {
                match b.identity {
                    Some(id) => id,
                    None => break,
                }
            } else {
                ProducerIdentity::NONE
            };
            let transactional = self.inner.transactional_id.is_some();
            let bytes = match build_batch(&b.records, identity, b.base_seq, transactional) {
                Ok(bytes) => bytes,
                Err(e) => {
                    if let Some(b) = self.queue.remove(i) {
                        b.finish(Outcome::Definite(SendError::Refused(e.to_string())));
                    }
                    if self.idempotent() {
                        self.needs_reset = true;
                    }
                    return;
                }
            };
            b.state = State::InFlight;
            n += 1;
            let fut = attempt(
                self.inner.clone(),
                self.topic.clone(),
                self.partition,
                bytes,
                b.refresh_first,
                b.deadline,
            );
            let id = b.id;
            inflight.push(Box::pin(async move { (id, fut.await) }));
        }
    }

    /// Applies one attempt's result to its batch.
    fn complete(&mut self, id: u64, a: Attempt, now: Instant) {
        let Some(pos) = self.queue.iter().position(|b| b.id == id) else {
            return;
        };
        let cfg = self.inner.config.clone();
        let refresh = wants_refresh(&a);
        if refresh {
            self.inner.cluster.invalidate();
        }
        let earlier_unfinished = pos > 0;
        let b = &mut self.queue[pos];
        let may_retry = b.delivery.attempts < cfg.retries && now + cfg.retry_backoff < b.deadline;
        // Behind a reset, sequence errors are expected; the batch is renumbered and re-sent.
        let gap_expected = earlier_unfinished || self.needs_reset;
        match b.delivery.record(a, cfg.acks, may_retry, gap_expected) {
            Step::Retry => {
                b.state = State::Backoff(now + cfg.retry_backoff);
                b.refresh_first = refresh;
            }
            Step::Done(o) => {
                let ok = matches!(o, Outcome::Ok(_));
                if let Some(b) = self.queue.remove(pos) {
                    b.finish(o);
                }
                if !ok && self.idempotent() {
                    self.needs_reset = true;
                }
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let cfg = &self.inner.config;
        let mut t: Option<Instant> = None;
        // Linger and backoff ends matter only when something could be sent then; otherwise
        // an in-flight completion or a new record wakes the sender (no busy loop while the
        // window is full or a reset waits for in-flight requests).
        let can_send = !self.needs_reset && self.in_flight() < cfg.max_in_flight;
        let can_cut = can_send && self.queue.iter().all(|b| b.state == State::InFlight);
        let mut upd = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(j) = self.accum.front() {
            if can_cut {
                upd(j.arrived + cfg.linger);
            }
            upd(j.deadline);
        }
        for b in &self.queue {
            if let (State::Backoff(u), true) = (b.state, can_send) {
                upd(u);
            }
            if b.state != State::InFlight {
                upd(b.deadline);
            }
        }
        t
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut inflight: FuturesUnordered<AttemptFuture> = FuturesUnordered::new();
        let mut channel_open = true;
        loop {
            let now = Instant::now();
            self.expire(now);
            if self.needs_reset && inflight.is_empty() {
                self.reset_sequences();
            }
            if self.poisoned {
                self.refuse_waiting();
            }
            self.cut_batch(now, channel_open);
            let has_work = self.queue.iter().any(|b| b.state != State::InFlight);
            if has_work && !self.needs_reset && !self.ensure_identity(self.resets > 0).await {
                // No producer id yet: wait and try again (deadlines still apply).
                let backoff = Instant::now() + self.inner.config.retry_backoff;
                for b in self.queue.iter_mut() {
                    if b.state == State::Ready {
                        b.state = State::Backoff(backoff);
                    }
                }
            }
            if !self.needs_reset {
                self.launch(Instant::now(), &mut inflight);
            }
            if !channel_open
                && inflight.is_empty()
                && self.queue.is_empty()
                && self.accum.is_empty()
            {
                return;
            }
            let wake = self.next_wake();
            tokio::select! {
                job = rx.recv(), if channel_open => match job {
                    Some(j) => self.accum.push_back(j),
                    None => channel_open = false,
                },
                Some((id, a)) = inflight.next(), if !inflight.is_empty() => {
                    self.complete(id, a, Instant::now());
                }
                _ = async {
                    match wake {
                        Some(w) => tokio::time::sleep_until(w).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
    }
}
