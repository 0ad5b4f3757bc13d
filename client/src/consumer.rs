//! The assign-mode consumer: [`Consumer::assign`] a set of partitions, [`Consumer::seek`] to
//! an offset, the earliest or the latest (ListOffsets), and [`Consumer::poll`], which fetches
//! from each partition's leader (Fetch with session id 0 / epoch -1, i.e. no fetch sessions)
//! and returns records grouped per partition. Fetch (v9+) and ListOffsets (v4+) carry the
//! leader epoch from the metadata, so a deposed leader cannot serve them.
//!
//! Positions without an offset (new assignments, `OFFSET_OUT_OF_RANGE`) are reset by
//! `auto.offset.reset`. Routing errors (`NOT_LEADER_OR_FOLLOWER`, `UNKNOWN_TOPIC_OR_PARTITION`,
//! leader epoch errors) and connection failures refresh metadata and the next round goes to
//! the new leader. `isolation.level` is sent in every Fetch and ListOffsets; read_committed
//! reads only below the last stable offset, drops aborted transactions' records (by the
//! aborted ranges the Fetch response lists) and never delivers control records (transaction
//! markers), while the position still moves past both (see
//! [`crate::records::decode_fetched`]).
//!
//! Group subscription and offset commits are in [`crate::group`], on top of this consumer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
// tokio's Instant: the real clock in production, virtual time under `harness sim`.
use tokio::time::Instant;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::Cluster;
use crate::config::{Config, IsolationLevel, OffsetReset};
use crate::error::Error;
use crate::records::{decode_fetched, Aborted, ConsumerRecord};

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`-`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Where to seek.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// This offset.
    Offset(i64),
    /// The log start offset.
    Earliest,
    /// The log end (high watermark, or last stable offset under read_committed).
    Latest,
}

/// Records of one partition from one poll, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecords {
    /// The partition.
    pub tp: TopicPartition,
    /// The records.
    pub records: Vec<ConsumerRecord>,
    /// The partition's high watermark in the Fetch response.
    pub high_watermark: i64,
    /// The partition's last stable offset in the Fetch response (the end a read_committed
    /// consumer can reach; -1 if the broker did not say).
    pub last_stable_offset: i64,
}

/// An assign-mode consumer.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: Arc<Config>,
    /// Assigned partitions and their positions (`None`: to be reset by auto.offset.reset).
    positions: BTreeMap<TopicPartition, Option<i64>>,
    /// Fetches sent and not yet applied, by leader (at most one per leader).
    inflight: HashMap<i32, InFlight>,
}

/// A fetch sent to one leader and not yet applied: the offsets it asked for, and the task
/// that sends it and waits for the response.
struct InFlight {
    offsets: HashMap<TopicPartition, i64>,
    task: tokio::task::JoinHandle<Result<FetchResponse, Error>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("positions", &self.positions)
            .finish()
    }
}

fn is_routing_error(code: i16) -> bool {
    use ResponseError as E;
    matches!(
        ResponseError::try_from_code(code),
        Some(
            E::NotLeaderOrFollower
                | E::UnknownTopicOrPartition
                | E::LeaderNotAvailable
                | E::FencedLeaderEpoch
                | E::UnknownLeaderEpoch
                | E::ReplicaNotAvailable
                | E::KafkaStorageError
                | E::OffsetNotAvailable
        )
    )
}

impl Consumer {
    /// A consumer with nothing assigned; nothing is contacted until used.
    pub fn new(config: Config) -> Result<Consumer, Error> {
        let config = Arc::new(config);
        Ok(Consumer {
            cluster: Cluster::new(config.clone()),
            config,
            positions: BTreeMap::new(),
            inflight: HashMap::new(),
        })
    }

    /// The consumer's metadata and connections.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Replaces the assignment. Partitions kept keep their positions; new ones start by
    /// `auto.offset.reset` unless sought.
    pub fn assign(&mut self, tps: impl IntoIterator<Item = TopicPartition>) {
        let old = std::mem::take(&mut self.positions);
        for tp in tps {
            let pos = old.get(&tp).copied().flatten();
            self.positions.insert(tp, pos);
        }
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// The next offset `poll` will read from `tp` (`None` if unassigned or not yet resolved).
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied().flatten()
    }

    /// Moves `tp`'s position; `Earliest`/`Latest` are resolved now with ListOffsets.
    /// Returns the new position.
    pub async fn seek(&mut self, tp: &TopicPartition, to: Seek) -> Result<i64, Error> {
        if !self.positions.contains_key(tp) {
            return Err(Error::NotAssigned(tp.to_string()));
        }
        let off = match to {
            Seek::Offset(o) => o,
            other => self.list_offset(tp, other).await?,
        };
        self.positions.insert(tp.clone(), Some(off));
        Ok(off)
    }

    /// The earliest or latest offset of a partition (ListOffsets to its leader, with one
    /// metadata refresh and retry on routing errors). `Seek::Offset(o)` returns `o`.
    pub async fn list_offset(&self, tp: &TopicPartition, at: Seek) -> Result<i64, Error> {
        let ts = match at {
            Seek::Offset(o) => return Ok(o),
            Seek::Earliest => -2,
            Seek::Latest => -1,
        };
        let mut last = Error::NoLeader(tp.to_string());
        for round in 0..3 {
            if round > 0 {
                let _ = self.cluster.refresh().await;
                tokio::time::sleep(self.config.retry_backoff).await;
            }
            let (leader, epoch) = match self.cluster.leader(&tp.topic, tp.partition).await {
                Ok(l) => l,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let conn = match self.cluster.conn_to_node(leader).await {
                Ok(c) => c,
                Err(e) => {
                    last = e.into();
                    continue;
                }
            };
            let v = conn
                .version(ApiKey::ListOffsets)
                .ok_or_else(|| Error::UnsupportedVersion("ListOffsets".into()))?;
            let mut p = ListOffsetsPartition::default();
            p.partition_index = tp.partition;
            p.timestamp = ts;
            if v >= 4 {
                p.current_leader_epoch = epoch;
            }
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_string(tp.topic.clone()));
            t.partitions = vec![p];
            let mut req = ListOffsetsRequest::default();
            req.replica_id = BrokerId(-1);
            if v >= 2 {
                req.isolation_level = self.config.isolation_level.wire();
            }
            req.topics = vec![t];
            let resp: ListOffsetsResponse =
                match conn.call(v, &req, self.config.request_timeout).await {
                    Ok(r) => r,
                    Err(e) => {
                        last = e.into();
                        continue;
                    }
                };
            let r = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == tp.partition);
            match r {
                Some(r) if r.error_code == 0 => return Ok(r.offset),
                Some(r) if is_routing_error(r.error_code) => {
                    last = Error::broker(r.error_code, None);
                }
                Some(r) => return Err(Error::broker(r.error_code, None)),
                None => last = Error::Records("ListOffsets response without the partition".into()),
            }
        }
        Err(last)
    }

    /// Resolves positions that need `auto.offset.reset`.
    async fn reset_positions(&mut self) -> Result<(), Error> {
        let missing: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in missing {
            let at = match self.config.auto_offset_reset {
                OffsetReset::Earliest => Seek::Earliest,
                OffsetReset::Latest => Seek::Latest,
                OffsetReset::None => return Err(Error::OffsetOutOfRange(tp.to_string())),
            };
            let off = self.list_offset(&tp, at).await?;
            self.positions.insert(tp, Some(off));
        }
        Ok(())
    }

    /// Fetches until some records arrive or `timeout` passes; returns what was read, per
    /// partition, and advances the positions past it. An empty result means nothing new
    /// within the timeout. Errors: `auto.offset.reset=none` with an out-of-range position,
    /// and protocol failures that are not routing or connection problems.
    ///
    /// Each leader gets its own long-poll Fetch, and the poll returns as soon as any of them
    /// brings records (with whatever the others have already brought), as Kafka's consumer
    /// does: a leader with nothing new does not hold back records from another. Fetches still
    /// waiting are kept for the next poll, which takes them over if they ask for exactly the
    /// positions it would; a response is applied only to partitions still at the offset it was
    /// fetched from, so a seek or reassignment in between never skips or repeats records.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<PartitionRecords>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut need_refresh = false;
            match self.reset_positions().await {
                Ok(()) => {}
                Err(e @ Error::OffsetOutOfRange(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "offset reset failed");
                    need_refresh = true;
                }
            }
            let _ = self.cluster.refresh_if_stale().await;
            // Group the positioned partitions by leader.
            let mut by_leader: HashMap<i32, Vec<(TopicPartition, i64, i32)>> = HashMap::new();
            for (tp, pos) in &self.positions {
                let Some(pos) = pos else { continue };
                match self.cluster.cached_leader(&tp.topic, tp.partition) {
                    Some((l, epoch)) => {
                        by_leader
                            .entry(l)
                            .or_default()
                            .push((tp.clone(), *pos, epoch))
                    }
                    None => need_refresh = true,
                }
            }
            // A fetch for a leader this round does not ask anything of is left to finish on
            // its own; its response is not wanted.
            self.inflight.retain(|l, _| by_leader.contains_key(l));
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = remaining.min(self.config.fetch_max_wait);
            for (leader, parts) in by_leader {
                let offsets: HashMap<TopicPartition, i64> = parts
                    .iter()
                    .map(|(tp, pos, _)| (tp.clone(), *pos))
                    .collect();
                if self
                    .inflight
                    .get(&leader)
                    .is_some_and(|f| f.offsets == offsets)
                {
                    continue;
                }
                let cluster = self.cluster.clone();
                let cfg = self.config.clone();
                // A task, not a future of this poll: dropping a request half written would
                // break the connection's framing, and a task is never dropped midway.
                let task =
                    tokio::spawn(
                        async move { fetch_from(&cluster, &cfg, leader, &parts, wait).await },
                    );
                self.inflight.insert(leader, InFlight { offsets, task });
            }
            let mut out = Vec::new();
            if !self.inflight.is_empty() {
                let leaders: Vec<i32> = self.inflight.keys().copied().collect();
                let first =
                    futures::future::select_all(self.inflight.values_mut().map(|f| &mut f.task));
                // At the deadline the fetches stay in flight for the next poll.
                let Ok((first, i, _)) = tokio::time::timeout_at(deadline, first).await else {
                    return Ok(out);
                };
                // That fetch (its task has given its output up), then any other that has
                // finished meanwhile, are applied.
                let mut first = Some(first);
                let finished: Vec<i32> = leaders
                    .iter()
                    .enumerate()
                    .filter(|&(j, l)| {
                        j != i && self.inflight.get(l).is_some_and(|f| f.task.is_finished())
                    })
                    .map(|(_, l)| *l)
                    .collect();
                for leader in std::iter::once(leaders[i]).chain(finished) {
                    let Some(f) = self.inflight.remove(&leader) else {
                        continue;
                    };
                    let joined = match first.take() {
                        Some(output) => output,
                        None => f.task.await,
                    };
                    let r = joined
                        .unwrap_or_else(|e| Err(Error::Records(format!("fetch task failed: {e}"))));
                    let resp = match r {
                        Ok(resp) => resp,
                        Err(e) => {
                            tracing::debug!(leader, error = %e, "fetch failed");
                            self.cluster.drop_conn(leader).await;
                            need_refresh = true;
                            continue;
                        }
                    };
                    let (recs, refresh) = self.apply_fetch(resp, &f.offsets)?;
                    need_refresh |= refresh;
                    out.extend(recs);
                }
            }
            if !out.is_empty() {
                out.sort_by(|a, b| a.tp.cmp(&b.tp));
                return Ok(out);
            }
            if Instant::now() >= deadline {
                return Ok(out);
            }
            if need_refresh {
                let _ = self.cluster.refresh().await;
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(self.config.retry_backoff.min(left)).await;
            } else if self.positions.is_empty() {
                tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
            }
        }
    }

    /// Applies a Fetch response: records, new positions, resets. Returns the records and
    /// whether metadata needs a refresh. `fetched` is each partition's fetch offset; a
    /// partition whose position has moved since (a seek) is left alone.
    fn apply_fetch(
        &mut self,
        resp: FetchResponse,
        fetched: &HashMap<TopicPartition, i64>,
    ) -> Result<(Vec<PartitionRecords>, bool), Error> {
        let mut out = Vec::new();
        let mut refresh = false;
        if resp.error_code != 0 {
            return Ok((out, is_routing_error(resp.error_code)));
        }
        let read_committed = self.config.isolation_level == IsolationLevel::ReadCommitted;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let tp = TopicPartition::new(topic.clone(), p.partition_index);
                let Some(Some(pos)) = self.positions.get(&tp).copied() else {
                    continue;
                };
                if fetched.get(&tp) != Some(&pos) {
                    continue;
                }
                if p.error_code == ResponseError::OffsetOutOfRange.code() {
                    if self.config.auto_offset_reset == OffsetReset::None {
                        return Err(Error::OffsetOutOfRange(tp.to_string()));
                    }
                    self.positions.insert(tp, None);
                    continue;
                }
                if p.error_code != 0 {
                    if is_routing_error(p.error_code) {
                        refresh = true;
                        continue;
                    }
                    return Err(Error::broker(p.error_code, None));
                }
                let aborted: Vec<Aborted> = p
                    .aborted_transactions
                    .unwrap_or_default()
                    .iter()
                    .map(|a| Aborted {
                        producer_id: a.producer_id.0,
                        first_offset: a.first_offset,
                    })
                    .collect();
                let bytes = p.records.unwrap_or_default();
                let d = decode_fetched(bytes, pos, read_committed, &aborted)?;
                if let Some(next) = d.next_offset {
                    if next > pos {
                        self.positions.insert(tp.clone(), Some(next));
                    }
                }
                if !d.records.is_empty() {
                    out.push(PartitionRecords {
                        tp,
                        records: d.records,
                        high_watermark: p.high_watermark,
                        last_stable_offset: p.last_stable_offset,
                    });
                }
            }
        }
        Ok((out, refresh))
    }
}

async fn fetch_from(
    cluster: &Cluster,
    cfg: &Config,
    leader: i32,
    parts: &[(TopicPartition, i64, i32)],
    wait: Duration,
) -> Result<FetchResponse, Error> {
    let conn = cluster.conn_to_node(leader).await?;
    let v = conn
        .version(ApiKey::Fetch)
        .ok_or_else(|| Error::UnsupportedVersion("Fetch".into()))?;
    let req = fetch_request(cfg, parts, wait, v);
    let timeout = cfg.request_timeout + wait;
    Ok(conn.call(v, &req, timeout).await?)
}

/// A consumer's Fetch request of `parts` (partition, position, the leader epoch its metadata
/// names) at Fetch version `v`, waiting up to `wait`, with `cfg`'s byte limits and isolation
/// level.
pub fn fetch_request(
    cfg: &Config,
    parts: &[(TopicPartition, i64, i32)],
    wait: Duration,
    v: i16,
) -> FetchRequest {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (tp, pos, epoch) in parts {
        let mut fp = FetchPartition::default();
        fp.partition = tp.partition;
        fp.fetch_offset = *pos;
        fp.partition_max_bytes = cfg.max_partition_fetch_bytes;
        // The leader epoch the metadata names (v9+), so a deposed leader that has not yet
        // learnt of its successor refuses the fetch (UNKNOWN_LEADER_EPOCH) instead of serving
        // records that may be truncated.
        fp.current_leader_epoch = if v >= 9 { *epoch } else { -1 };
        fp.log_start_offset = -1;
        topics.entry(tp.topic.as_str()).or_default().push(fp);
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
    req.min_bytes = cfg.fetch_min_bytes;
    req.max_bytes = cfg.fetch_max_bytes;
    req.isolation_level = cfg.isolation_level.wire();
    req.session_id = 0;
    req.session_epoch = -1;
    req.topics = topics
        .into_iter()
        .map(|(t, ps)| {
            let mut ft = FetchTopic::default();
            ft.topic = TopicName(StrBytes::from_string(t.to_string()));
            ft.partitions = ps;
            ft
        })
        .collect();
    req
}
