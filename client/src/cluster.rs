//! Cluster metadata and connections: bootstrap from `bootstrap.servers`, Metadata requests,
//! the cached view of brokers and partition leaders, refresh (on demand after routing errors
//! and connection loss, and when older than `metadata.max.age.ms`), and one pipelined
//! [`Connection`] per broker, reopened when it fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
// tokio's Instant: the real clock in production, virtual time under `harness sim`.
use tokio::time::Instant;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::config::Config;
use crate::conn::Connection;
use crate::error::{ConnError, Error};

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader broker id (-1 if none).
    pub leader: i32,
    /// Leader epoch (-1 if unknown).
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica ids.
    pub isr: Vec<i32>,
    /// Partition-level error code from the Metadata response.
    pub error_code: i16,
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Partitions, by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A snapshot of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Broker id to `host:port`.
    pub brokers: BTreeMap<i32, String>,
    /// The active controller as the answering broker saw it (-1: unknown).
    pub controller: i32,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

/// Shared metadata cache and connection pool (one per producer, consumer or admin).
pub struct Cluster {
    config: Arc<Config>,
    info: RwLock<(ClusterInfo, Option<Instant>)>,
    /// Refreshes finished so far and the last one's error (concurrent refresh requests
    /// coalesce on it: a caller that waited while another refresh ran takes its result).
    generation: Mutex<(u64, Option<Error>)>,
    refresh_lock: tokio::sync::Mutex<()>,
    by_node: Mutex<HashMap<i32, Slot>>,
    by_addr: Mutex<HashMap<String, Slot>>,
    rotate: Mutex<usize>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// A cluster handle; nothing is contacted until first use.
    pub fn new(config: Arc<Config>) -> Arc<Cluster> {
        Arc::new(Cluster {
            config,
            info: RwLock::new((ClusterInfo::default(), None)),
            generation: Mutex::new((0, None)),
            refresh_lock: tokio::sync::Mutex::new(()),
            by_node: Mutex::new(HashMap::new()),
            by_addr: Mutex::new(HashMap::new()),
            rotate: Mutex::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The cached metadata (possibly empty or stale).
    pub fn snapshot(&self) -> ClusterInfo {
        self.info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn is_stale(&self) -> bool {
        let g = self.info.read().unwrap_or_else(|p| p.into_inner());
        g.1.is_none_or(|t| t.elapsed() > self.config.metadata_max_age)
    }

    /// A connection to `addr`, reusing an open one.
    pub async fn conn_to_addr(&self, addr: &str) -> Result<Arc<Connection>, ConnError> {
        let slot = lock(&self.by_addr)
            .entry(addr.to_string())
            .or_default()
            .clone();
        self.open(slot, addr).await
    }

    async fn open(&self, slot: Slot, addr: &str) -> Result<Arc<Connection>, ConnError> {
        let mut g = slot.lock().await;
        if let Some(c) = g.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        *g = None;
        let c = Arc::new(
            Connection::connect(
                addr,
                &self.config.client_id,
                self.config.connect_timeout,
                self.config.request_timeout,
            )
            .await?,
        );
        *g = Some(c.clone());
        Ok(c)
    }

    /// A connection to broker `node` (its address from the metadata).
    pub async fn conn_to_node(&self, node: i32) -> Result<Arc<Connection>, ConnError> {
        let addr = self.snapshot().brokers.get(&node).cloned();
        let Some(addr) = addr else {
            return Err(ConnError::NotSent(format!("broker {node} not in metadata")));
        };
        let slot = lock(&self.by_node).entry(node).or_default().clone();
        {
            // A broker whose address changed gets a fresh connection.
            let g = slot.lock().await;
            if let Some(c) = g.as_ref() {
                if c.addr() != addr {
                    c.close("broker address changed");
                }
            }
        }
        self.open(slot, &addr).await
    }

    /// Candidate addresses for a metadata request: known brokers then bootstrap servers,
    /// rotated so successive refreshes spread over them.
    fn candidates(&self) -> Vec<String> {
        let mut v: Vec<String> = self.snapshot().brokers.values().cloned().collect();
        for b in &self.config.bootstrap_servers {
            if !v.contains(b) {
                v.push(b.clone());
            }
        }
        if !v.is_empty() {
            let mut r = lock(&self.rotate);
            *r = r.wrapping_add(1);
            let n = *r % v.len();
            v.rotate_left(n);
        }
        v
    }

    /// Any usable connection (for metadata and admin requests).
    pub async fn any_conn(&self) -> Result<Arc<Connection>, Error> {
        let mut errors = Vec::new();
        for addr in self.candidates() {
            match self.conn_to_addr(&addr).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(Error::NoBroker(errors.join("; ")))
    }

    /// Refreshes metadata for all topics. Concurrent callers share one refresh (and its
    /// failure).
    pub async fn refresh(&self) -> Result<(), Error> {
        let seen = lock(&self.generation).0;
        let _g = self.refresh_lock.lock().await;
        {
            let g = lock(&self.generation);
            if g.0 != seen {
                return match &g.1 {
                    None => Ok(()),
                    Some(e) => Err(e.clone()),
                };
            }
        }
        let r = self.refresh_now().await;
        let mut g = lock(&self.generation);
        g.0 += 1;
        g.1 = r.as_ref().err().cloned();
        r
    }

    async fn refresh_now(&self) -> Result<(), Error> {
        let mut last = Error::NoBroker("no bootstrap servers".into());
        for addr in self.candidates() {
            let conn = match self.conn_to_addr(&addr).await {
                Ok(c) => c,
                Err(e) => {
                    last = Error::NoBroker(format!("{addr}: {e}"));
                    continue;
                }
            };
            match self.fetch_metadata(&conn, None).await {
                Ok(info) => {
                    *self.info.write().unwrap_or_else(|p| p.into_inner()) =
                        (info, Some(Instant::now()));
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Refreshes if the cached metadata is older than `metadata.max.age.ms` (or absent).
    pub async fn refresh_if_stale(&self) -> Result<(), Error> {
        if self.is_stale() {
            self.refresh().await
        } else {
            Ok(())
        }
    }

    /// One Metadata request on `conn` (all topics when `topics` is `None`).
    pub async fn fetch_metadata(
        &self,
        conn: &Connection,
        topics: Option<&[String]>,
    ) -> Result<ClusterInfo, Error> {
        let v = conn
            .version(ApiKey::Metadata)
            .ok_or_else(|| Error::UnsupportedVersion("Metadata".into()))?;
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut rt = MetadataRequestTopic::default();
                    rt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    rt
                })
                .collect()
        });
        if v >= 4 {
            req.allow_auto_topic_creation = false;
        }
        let resp: MetadataResponse = conn.call(v, &req, self.config.request_timeout).await?;
        let mut info = ClusterInfo {
            controller: resp.controller_id.0,
            ..ClusterInfo::default()
        };
        for b in &resp.brokers {
            info.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host, b.port));
        }
        for t in resp.topics {
            let Some(name) = t.name.map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                continue;
            }
            let mut parts: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            parts.sort_by_key(|p| p.partition);
            info.topics.insert(
                name.clone(),
                TopicInfo {
                    name,
                    partitions: parts,
                },
            );
        }
        Ok(info)
    }

    /// One FindCoordinator request on `conn` for `key` (`key_type` 0: a consumer group, 1: a
    /// transactional id): the coordinator's broker id and `host:port`.
    pub async fn find_coordinator(
        &self,
        conn: &Connection,
        key_type: i8,
        key: &str,
    ) -> Result<(i32, String), Error> {
        let v = conn
            .version(ApiKey::FindCoordinator)
            .ok_or_else(|| Error::UnsupportedVersion("FindCoordinator".into()))?;
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(key.to_string());
        req.key_type = key_type;
        let r = conn.call(v, &req, self.config.request_timeout).await?;
        if r.error_code != 0 {
            return Err(Error::broker(
                r.error_code,
                r.error_message
                    .map(|m| m.to_string())
                    .or_else(|| Some("FindCoordinator refused".into())),
            ));
        }
        Ok((r.node_id.0, format!("{}:{}", r.host.as_str(), r.port)))
    }

    /// The topic's metadata, refreshing once if it is not cached.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo, Error> {
        self.refresh_if_stale().await?;
        if let Some(t) = self.snapshot().topics.get(topic) {
            return Ok(t.clone());
        }
        self.refresh().await?;
        self.snapshot()
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(topic.to_string()))
    }

    /// The cached leader of a partition (no refresh): `(broker id, leader epoch)`.
    pub fn cached_leader(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        let g = self.info.read().unwrap_or_else(|p| p.into_inner());
        let p =
            g.0.topics
                .get(topic)?
                .partitions
                .iter()
                .find(|p| p.partition == partition)?;
        (p.leader >= 0).then_some((p.leader, p.leader_epoch))
    }

    /// The leader of a partition, refreshing metadata if it is stale or has no leader.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<(i32, i32), Error> {
        self.refresh_if_stale().await?;
        if let Some(l) = self.cached_leader(topic, partition) {
            return Ok(l);
        }
        self.refresh().await?;
        self.cached_leader(topic, partition)
            .ok_or_else(|| Error::NoLeader(format!("{topic}-{partition}")))
    }

    /// Marks the cached metadata stale: the next routing lookup refreshes it (after a routing
    /// error or a connection failure).
    pub fn invalidate(&self) {
        self.info.write().unwrap_or_else(|p| p.into_inner()).1 = None;
    }

    /// Forgets a broker's connection (after a failure) so the next use reconnects.
    pub async fn drop_conn(&self, node: i32) {
        let slot = lock(&self.by_node).get(&node).cloned();
        if let Some(slot) = slot {
            if let Some(c) = slot.lock().await.take() {
                c.close("dropped after failure");
            }
        }
    }
}
