//! The group coordinator: consumer groups (membership in [`group`], the Kafka APIs in [`api`])
//! and committed offsets stored in the replicated internal topic `__consumer_offsets`.
//!
//! A group belongs to partition `abs(hash(group)) % partitions` of `__consumer_offsets`; the
//! broker leading that partition is its coordinator. Commits (and each new generation) are
//! appended there with acks=all before they are acknowledged. A broker that becomes the
//! partition's leader (at a new leader epoch) rebuilds its cache of committed offsets and
//! generations from the log before answering, so offsets committed before a coordinator
//! failover are returned after it. Membership itself lives in memory: after a failover members
//! get UNKNOWN_MEMBER_ID and rejoin, and the generation continues from the stored one.
//!
//! Stored records (JSON, readable with any consumer): key
//! `{"type":"offset","group":G,"topic":T,"partition":P}` → value
//! `{"offset":O,"leader_epoch":E,"metadata":M}`; key `{"type":"group","group":G}` → value
//! `{"generation":N,"protocol_type":PT}`.
//!
//! Offsets committed inside a transaction (TxnOffsetCommit) are appended as a transactional
//! batch of the producer and stay pending, invisible to OffsetFetch, until that producer's
//! marker lands in the partition: a commit marker makes them committed, an abort marker drops
//! them. Pending offsets are added and settled under the partition's state lock at append time,
//! so the cache follows log order, and a reload replays the same records and markers.

pub mod api;
pub mod group;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use self::group::{codes, Group};
use super::internal;
use super::{Broker, Hosted};
use crate::config::BrokerConfig;
use crate::replication::partition::Acks;

/// The offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Group coordinator settings (from `server.properties`).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions` (default 10; Kafka's is 50, fewer keep test clusters
    /// light).
    pub offsets_partitions: i32,
    /// `offsets.topic.replication.factor` (default 3, capped at the live brokers).
    pub offsets_replication_factor: i16,
    /// `group.min.session.timeout.ms` (default 1000).
    pub min_session_timeout_ms: i64,
    /// `group.max.session.timeout.ms` (default 1800000).
    pub max_session_timeout_ms: i64,
    /// `offsets.commit.timeout.ms` (default 5000): how long a commit waits for the ISR.
    pub commit_timeout_ms: i64,
}

impl GroupConfig {
    /// Reads the settings, with defaults.
    pub fn from_broker(config: &BrokerConfig) -> GroupConfig {
        let get = |k: &str, d: i64| config.raw_or(k, d);
        GroupConfig {
            offsets_partitions: get("offsets.topic.num.partitions", 10).clamp(1, 1000) as i32,
            offsets_replication_factor: get("offsets.topic.replication.factor", 3).clamp(1, 16)
                as i16,
            min_session_timeout_ms: get("group.min.session.timeout.ms", 1000),
            max_session_timeout_ms: get("group.max.session.timeout.ms", 1_800_000),
            commit_timeout_ms: get("offsets.commit.timeout.ms", 5000),
        }
    }
}

/// A stored record's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoredKey {
    /// A committed offset.
    Offset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A group's generation.
    Group {
        /// Group.
        group: String,
    },
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: i64,
    /// Leader epoch of the record before it (-1 unknown).
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredGroup {
    generation: i32,
    protocol_type: Option<String>,
}

/// An offset key: (group, topic, partition).
pub type OffsetKey = (String, String, i32);

/// What one `__consumer_offsets` partition holds, as loaded by its leader.
#[derive(Debug, Default)]
pub struct OffsetsCache {
    /// Leader epoch at which it was loaded.
    pub epoch: i32,
    /// (group, topic, partition) → committed offset.
    pub committed: HashMap<OffsetKey, Committed>,
    /// group → last stored generation.
    pub generations: HashMap<String, i32>,
    /// producer id → offsets committed in its open transaction, in log order.
    pub pending: HashMap<i64, Vec<(OffsetKey, Committed)>>,
}

impl OffsetsCache {
    /// Replays one stored record (a reload): plain records apply, transactional offset commits
    /// become pending for their producer, markers settle the producer's pending offsets.
    pub fn load(&mut self, r: &internal::LoadedRecord) {
        if let Some(commit) = r.marker {
            self.complete_txn(r.producer_id, commit);
            return;
        }
        let Some(key) = r.key.as_deref() else {
            return;
        };
        if r.transactional && r.producer_id >= 0 {
            if let (
                Ok(StoredKey::Offset {
                    group,
                    topic,
                    partition,
                }),
                Some(c),
            ) = (
                serde_json::from_slice::<StoredKey>(key),
                r.value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<Committed>(v).ok()),
            ) {
                self.pending
                    .entry(r.producer_id)
                    .or_default()
                    .push(((group, topic, partition), c));
            }
            return;
        }
        self.apply(key, r.value.as_deref());
    }

    /// Settles a producer's pending offsets: committed on `commit`, dropped otherwise.
    pub fn complete_txn(&mut self, producer_id: i64, commit: bool) {
        if let Some(v) = self.pending.remove(&producer_id) {
            if commit {
                for (k, c) in v {
                    self.committed.insert(k, c);
                }
            }
        }
    }

    /// Whether an open transaction holds an offset for this key.
    pub fn has_pending(&self, key: &OffsetKey) -> bool {
        self.pending
            .values()
            .any(|v| v.iter().any(|(k, _)| k == key))
    }

    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(k) = serde_json::from_slice::<StoredKey>(key) else {
            return;
        };
        match k {
            StoredKey::Offset {
                group,
                topic,
                partition,
            } => match value.and_then(|v| serde_json::from_slice::<Committed>(v).ok()) {
                Some(c) => {
                    self.committed.insert((group, topic, partition), c);
                }
                None => {
                    self.committed.remove(&(group, topic, partition));
                }
            },
            StoredKey::Group { group } => {
                if let Some(g) = value.and_then(|v| serde_json::from_slice::<StoredGroup>(v).ok()) {
                    self.generations.insert(group, g.generation);
                }
            }
        }
    }
}

/// The coordinator's state on one broker.
#[derive(Debug)]
pub struct Coordinator {
    /// Settings.
    pub config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    caches: Mutex<HashMap<i32, OffsetsCache>>,
    salt: u64,
}

/// Where a group is coordinated.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The `__consumer_offsets` partition.
    pub partition: i32,
    /// Its hosted state (led here).
    pub hosted: Arc<Hosted>,
    /// Its leader epoch.
    pub epoch: i32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Coordinator {
    /// A coordinator with no groups.
    pub fn new(config: &BrokerConfig, now_ms: i64) -> Coordinator {
        Coordinator {
            config: GroupConfig::from_broker(config),
            groups: Mutex::new(HashMap::new()),
            caches: Mutex::new(HashMap::new()),
            salt: (config.node_id as u64) << 40 ^ now_ms as u64,
        }
    }

    /// Salt for new member ids.
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// The `__consumer_offsets` partition of a group (its current partition count).
    pub fn partition_of(&self, broker: &Broker, group: &str) -> i32 {
        internal::partition_for(group, self.partition_count(broker))
    }

    /// Checks that this broker coordinates `group` and that its partition is loaded; the error
    /// is NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or COORDINATOR_LOAD_IN_PROGRESS.
    pub async fn owner(&self, broker: &Arc<Broker>, group: &str) -> Result<Owner, i16> {
        if group.is_empty() {
            return Err(codes::INVALID_GROUP_ID);
        }
        internal::ensure_topic(
            broker,
            OFFSETS_TOPIC,
            self.config.offsets_partitions,
            self.config.offsets_replication_factor,
        )
        .await?;
        let partition = self.partition_of(broker, group);
        let (hosted, epoch) = internal::coordinator_here(broker, OFFSETS_TOPIC, partition)?;
        let loaded = lock(&self.caches).get(&partition).map(|c| c.epoch) == Some(epoch);
        if !loaded {
            let recs = internal::load(&hosted).await?;
            let mut cache = OffsetsCache {
                epoch,
                ..OffsetsCache::default()
            };
            for r in &recs {
                cache.load(r);
            }
            tracing::info!(
                partition,
                epoch,
                records = recs.len(),
                offsets = cache.committed.len(),
                "loaded group coordinator state"
            );
            // Groups of this partition restart from what was stored, unless a concurrent
            // request loaded this epoch first: then its groups (already joined) are current.
            let n = self.partition_count(broker);
            let mut groups = lock(&self.groups);
            let mut caches = lock(&self.caches);
            if caches.get(&partition).map(|c| c.epoch) != Some(epoch) {
                groups.retain(|id, _| internal::partition_for(id, n) != partition);
                caches.insert(partition, cache);
            }
        }
        Ok(Owner {
            partition,
            hosted,
            epoch,
        })
    }

    fn partition_count(&self, broker: &Broker) -> i32 {
        internal::partition_count(broker, OFFSETS_TOPIC, self.config.offsets_partitions)
    }

    /// Runs `f` on the group (created empty, continuing the stored generation, if absent).
    pub fn with_group<R>(&self, owner: &Owner, id: &str, f: impl FnOnce(&mut Group) -> R) -> R {
        let generation = lock(&self.caches)
            .get(&owner.partition)
            .and_then(|c| c.generations.get(id).copied())
            .unwrap_or(0);
        let mut groups = lock(&self.groups);
        let g = groups
            .entry(id.to_string())
            .or_insert_with(|| Group::new(id, generation));
        f(g)
    }

    /// Runs `f` on the group if it exists in memory.
    pub fn existing_group<R>(&self, id: &str, f: impl FnOnce(&Group) -> R) -> Option<R> {
        lock(&self.groups).get(id).map(f)
    }

    /// Every group in memory: (id, state name, protocol type).
    pub fn list(&self) -> Vec<(String, String, String)> {
        lock(&self.groups)
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.state.name().to_string(),
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// A committed offset.
    pub fn committed(&self, owner: &Owner, group: &str, topic: &str, p: i32) -> Option<Committed> {
        lock(&self.caches).get(&owner.partition).and_then(|c| {
            c.committed
                .get(&(group.to_string(), topic.to_string(), p))
                .cloned()
        })
    }

    /// Every committed offset of a group.
    pub fn all_committed(&self, owner: &Owner, group: &str) -> Vec<(String, i32, Committed)> {
        let mut v: Vec<(String, i32, Committed)> = lock(&self.caches)
            .get(&owner.partition)
            .map(|c| {
                c.committed
                    .iter()
                    .filter(|((g, _, _), _)| g == group)
                    .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    /// Stores offsets (acks=all) and, once the ISR has them, serves them (with the
    /// `offset-commit-before-isr` bug mode: once the leader's log has them).
    pub async fn store_offsets(
        &self,
        broker: &Arc<Broker>,
        owner: &Owner,
        group: &str,
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), i16> {
        let records = offsets
            .iter()
            .map(|(t, p, c)| {
                let k = StoredKey::Offset {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                };
                (
                    serde_json::to_vec(&k).unwrap_or_default().into(),
                    Some(serde_json::to_vec(c).unwrap_or_default().into()),
                )
            })
            .collect();
        // BUG MODE offset_commit_before_isr: acknowledged (and cached below) once the leader's
        // log has the commit, as `offsets.commit.required.acks=1` did.
        let acks = if broker.bugs.offset_commit_before_isr {
            Acks::Leader
        } else {
            Acks::All
        };
        internal::append_with_acks(
            broker,
            owner.hosted.clone(),
            records,
            acks,
            self.config.commit_timeout_ms,
        )
        .await?;
        if let Some(cache) = lock(&self.caches).get_mut(&owner.partition) {
            if cache.epoch == owner.epoch {
                for (t, p, c) in offsets {
                    cache.committed.insert((group.to_string(), t, p), c);
                }
            }
        }
        Ok(())
    }

    /// Stores a group's new generation.
    pub async fn store_generation(
        &self,
        broker: &Arc<Broker>,
        owner: &Owner,
        group: &str,
        generation: i32,
        protocol_type: &str,
    ) -> Result<(), i16> {
        let k = StoredKey::Group {
            group: group.to_string(),
        };
        let v = StoredGroup {
            generation,
            protocol_type: Some(protocol_type.to_string()),
        };
        internal::append(
            broker,
            owner.hosted.clone(),
            vec![(
                serde_json::to_vec(&k).unwrap_or_default().into(),
                Some(serde_json::to_vec(&v).unwrap_or_default().into()),
            )],
            self.config.commit_timeout_ms,
        )
        .await?;
        if let Some(cache) = lock(&self.caches).get_mut(&owner.partition) {
            let e = cache.generations.entry(group.to_string()).or_insert(0);
            *e = (*e).max(generation);
        }
        Ok(())
    }

    /// Stores offsets committed in a transaction as one transactional batch of the producer
    /// (acks=all); they stay pending until its marker. A producer epoch older than one this
    /// partition has seen is fenced (INVALID_PRODUCER_EPOCH).
    pub async fn store_txn_offsets(
        &self,
        broker: &Arc<Broker>,
        owner: &Owner,
        group: &str,
        producer: (i64, i16),
        offsets: Vec<(String, i32, Committed)>,
    ) -> Result<(), i16> {
        if let Some(known) = owner
            .hosted
            .producers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .epoch_of(producer.0)
        {
            if producer.1 < known {
                return Err(super::producers::INVALID_PRODUCER_EPOCH);
            }
        }
        let records = offsets
            .iter()
            .map(|(t, p, c)| {
                let k = StoredKey::Offset {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                };
                (
                    serde_json::to_vec(&k).unwrap_or_default().into(),
                    Some(serde_json::to_vec(c).unwrap_or_default().into()),
                )
            })
            .collect();
        let pending: Vec<(OffsetKey, Committed)> = offsets
            .into_iter()
            .map(|(t, p, c)| ((group.to_string(), t, p), c))
            .collect();
        let b = broker.clone();
        let (partition, epoch) = (owner.partition, owner.epoch);
        internal::append_txn_offsets(
            broker,
            owner.hosted.clone(),
            records,
            producer,
            self.config.commit_timeout_ms,
            Box::new(move || {
                if let Some(cache) = lock(&b.groups.caches).get_mut(&partition) {
                    if cache.epoch == epoch {
                        cache.pending.entry(producer.0).or_default().extend(pending);
                    }
                }
            }),
        )
        .await
        .map(|_| ())
    }

    /// A transaction marker was appended to `__consumer_offsets` partition `partition` (called
    /// under that partition's state lock): settles the producer's pending offsets.
    pub fn on_txn_marker(&self, partition: i32, producer_id: i64, commit: bool) {
        if let Some(cache) = lock(&self.caches).get_mut(&partition) {
            cache.complete_txn(producer_id, commit);
        }
    }

    /// Whether an open transaction holds an offset of (group, topic, partition).
    pub fn has_pending(&self, owner: &Owner, group: &str, topic: &str, p: i32) -> bool {
        lock(&self.caches)
            .get(&owner.partition)
            .is_some_and(|c| c.has_pending(&(group.to_string(), topic.to_string(), p)))
    }

    /// Session expiry and rebalance deadlines; groups whose partition is no longer led here
    /// are dropped (their waiting members are told NOT_COORDINATOR by the dropped channels).
    /// Lock order: partition state before `caches` (markers settle offsets under the state
    /// lock), so leadership is read before `caches` is taken.
    pub fn tick(&self, broker: &Broker, now_ms: i64) {
        let n = self.partition_count(broker);
        let mut groups = lock(&self.groups);
        groups.retain(|id, _| {
            internal::led_here(broker, OFFSETS_TOPIC, internal::partition_for(id, n)).is_some()
        });
        for g in groups.values_mut() {
            g.tick(now_ms);
        }
        drop(groups);
        let parts: Vec<i32> = lock(&self.caches).keys().copied().collect();
        let led: HashMap<i32, i32> = parts
            .into_iter()
            .filter_map(|p| internal::led_here(broker, OFFSETS_TOPIC, p).map(|(_, e)| (p, e)))
            .collect();
        let mut caches = lock(&self.caches);
        caches.retain(|p, c| led.get(p) == Some(&c.epoch));
    }
}
