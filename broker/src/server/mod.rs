//! The broker server: shared state (config, clock, metadata, hosted partitions, metrics), the
//! TCP listener and per-connection loop (`net`), the Kafka API handlers (`handlers`), follower
//! fetchers (`fetcher`), and background tasks (metadata reconciliation, ISR shrink checks,
//! acks=all deadlines, retention, time-based flush and roll).
//!
//! Metadata comes from one of two sources behind the same calls ([`Broker::image`],
//! [`Broker::propose`]): the Raft quorum (`controller.quorum.voters` set: a cluster), or a local
//! image persisted in the log dir (a single node, which is a cluster of one). Either way every
//! partition is a [`replication::partition::Partition`] over the segmented log, and each
//! metadata image is reconciled into roles (leader, follower) the same way.

pub mod configs;
pub mod fetcher;
pub mod groups;
pub mod handlers;
pub mod internal;
pub mod net;
pub mod peer;
pub mod producers;
pub mod txn;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::log::{Log, LogError};
use crate::metadata::{Command, CommandResult, MetadataConfig, MetadataImage, MetadataNode};
use crate::metrics::{BrokerGauges, GaugeSource, Metrics, PartitionGauges};
use crate::replication::hw_checkpoint::{HighWatermarkCheckpoint, HighWatermarks};
use crate::replication::partition::{
    CommittedIsr, Partition as ReplicaState, PartitionConfig, PartitionState,
};
use crate::replication::ReplicationBugs;
use crate::topics;

/// The tagged field of a Fetch request (v12, flexible) in which a follower sends its broker
/// epoch. Kafka carries it in `ReplicaState.ReplicaEpoch` from Fetch v15, whose requests name
/// topics by id (v13+), which this broker does not have; a Kafka broker skips an unknown tag.
pub const REPLICA_EPOCH_TAG: i32 = 903;

/// One hosted partition: its replica state machine over the log.
#[derive(Debug)]
pub struct Hosted {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    state: Mutex<ReplicaState<Log>>,
    /// Idempotent-producer state (lock after `state`).
    pub producers: Mutex<producers::ProducerTable>,
    /// Ongoing and aborted transactions, derived from the log (lock after `state`; never hold
    /// `producers` while taking it).
    txns: Mutex<txn::index::TxnIndex>,
    /// The follower fetcher, when this broker follows.
    fetcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// As leader: the broker epoch each follower sent with its latest fetch (KIP-903), named
    /// in ISR expansions.
    follower_epochs: Mutex<HashMap<i32, i64>>,
}

impl Hosted {
    /// Locks the replica state.
    pub fn state(&self) -> MutexGuard<'_, ReplicaState<Log>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the transaction index brought up to the log end of `st` (this partition's locked
    /// state): the LSO and aborted transactions are then current.
    pub fn txns_synced(&self, st: &ReplicaState<Log>) -> MutexGuard<'_, txn::index::TxnIndex> {
        let mut ix = self.txns.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = ix.sync(st) {
            tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                "reading the log for the transaction index failed");
        }
        ix
    }

    /// Applies batches just appended to this partition (`bytes` as handed to the log, their
    /// first offset `first_offset`) to the transaction index; called under the state lock
    /// `_st`. Batches it cannot place are read back from the log at the next sync.
    pub fn after_leader_append(&self, _st: &ReplicaState<Log>, bytes: &[u8], first_offset: i64) {
        let mut ix = self.txns.lock().unwrap_or_else(|p| p.into_inner());
        let mut base = first_offset;
        for (h, raw) in crate::log::batch::batches_unchecked(bytes) {
            let mut h = h;
            h.base_offset = base;
            base = h.next_offset();
            let marker = if h.is_control() {
                crate::log::batch::control_type(raw)
            } else {
                None
            };
            ix.apply(&h, marker);
        }
    }

    /// Applies batches a follower just copied (with the leader's offsets) to the transaction
    /// index.
    pub fn after_follower_append(&self, bytes: &[u8]) {
        let mut ix = self.txns.lock().unwrap_or_else(|p| p.into_inner());
        for (h, raw) in crate::log::batch::batches_unchecked(bytes) {
            let marker = if h.is_control() {
                crate::log::batch::control_type(raw)
            } else {
                None
            };
            ix.apply(&h, marker);
        }
    }

    /// Records the broker epoch a follower fetched with (-1: none sent).
    pub fn note_follower_epoch(&self, replica: i32, epoch: i64) {
        let mut m = self
            .follower_epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if epoch >= 0 {
            m.insert(replica, epoch);
        } else {
            m.remove(&replica);
        }
    }

    fn stop_fetcher(&self) {
        if let Some(h) = self
            .fetcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

/// Where metadata comes from.
pub enum MetadataSource {
    /// A single node's own image, persisted as `metadata-image.json` in the log dir.
    Local {
        /// The image.
        image: Mutex<MetadataImage>,
        /// Publishes every change.
        tx: watch::Sender<Arc<MetadataImage>>,
        /// Where it is persisted.
        path: PathBuf,
    },
    /// The Raft metadata quorum.
    Quorum(MetadataNode),
}

impl std::fmt::Debug for MetadataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataSource::Local { path, .. } => write!(f, "Local({})", path.display()),
            MetadataSource::Quorum(n) => write!(f, "Quorum({n:?})"),
        }
    }
}

/// Everything a connection handler needs.
#[derive(Debug)]
pub struct Broker {
    /// The configuration.
    pub config: BrokerConfig,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Metadata.
    pub metadata: MetadataSource,
    /// Partitions hosted here.
    pub partitions: RwLock<BTreeMap<(String, i32), Arc<Hosted>>>,
    /// Shared counters.
    pub metrics: Metrics,
    /// Bumped after every append and HW change, waking long-polling fetches.
    pub appended: watch::Sender<u64>,
    /// Waiting acks=all produces by id.
    waiters: Mutex<HashMap<u64, oneshot::Sender<Result<(), ResponseError>>>>,
    next_waiter: AtomicU64,
    /// Historical bug modes switched on (none by default).
    pub bugs: ReplicationBugs,
    /// Serialises reconciliations (the watch task and a single node's synchronous one).
    reconcile_lock: Mutex<u64>,
    /// The group coordinator (consumer groups, committed offsets).
    pub groups: groups::Coordinator,
    /// The transaction coordinator.
    pub txns: txn::TxnCoordinator,
    /// The `.lock` of every log dir, held for the life of the broker.
    _dir_locks: Vec<crate::dirlock::DirLock>,
}

/// Errors opening the broker.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The log dir or the local image could not be used.
    #[error("{what} {path}: {message}")]
    Dir {
        /// What was being done.
        what: String,
        /// Path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The metadata quorum could not start.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    /// A log dir is held by another process (or cannot be locked).
    #[error(transparent)]
    Locked(#[from] crate::dirlock::DirLockError),
}

/// The file a clean shutdown leaves in the first log dir with the broker epoch (Kafka's
/// `.kafka_cleanshutdown`, read for KIP-966's `PreviousBrokerEpoch`).
const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";

/// Reads and removes the clean-shutdown file: the previous process's broker epoch if it shut
/// down cleanly, `None` after a crash (or a first start).
fn take_clean_shutdown_epoch(dir: &Path) -> Option<i64> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let epoch = std::fs::read_to_string(&path).ok()?.trim().parse().ok();
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(error = %e, path = %path.display(), "removing the clean-shutdown file failed");
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    tracing::info!(previous_broker_epoch = ?epoch, "the previous process shut down cleanly");
    epoch
}

fn load_image(path: &Path) -> Result<MetadataImage, OpenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| OpenError::Dir {
            what: "reading metadata image".into(),
            path: path.to_path_buf(),
            message: format!("malformed JSON ({e}); fix or remove it"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataImage::default()),
        Err(e) => Err(OpenError::Dir {
            what: "reading metadata image".into(),
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

fn save_image(path: &Path, image: &MetadataImage) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(image).map_err(std::io::Error::other)?,
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Broker {
    /// Opens the broker: the log dir, and the metadata source (quorum when
    /// `controller.quorum.voters` is set, else a local image).
    pub async fn open(
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
        bugs: ReplicationBugs,
    ) -> Result<Arc<Broker>, OpenError> {
        // Every log dir is ours alone before anything in it is read or written.
        let dir_locks = config
            .log_dirs
            .iter()
            .map(|d| crate::dirlock::DirLock::acquire(d))
            .collect::<Result<Vec<_>, _>>()?;
        let dir = config.log_dirs[0].clone();
        std::fs::create_dir_all(&dir).map_err(|e| OpenError::Dir {
            what: "creating log dir".into(),
            path: dir.clone(),
            message: e.to_string(),
        })?;
        let adv = &config.advertised_listeners[0];
        let host = if adv.host.is_empty() {
            "127.0.0.1".to_string()
        } else {
            adv.host.clone()
        };
        let metadata = if config.raw.contains_key("controller.quorum.voters") {
            let mut mc = MetadataConfig::from_properties(
                config.node_id,
                &config.raw,
                dir.join("__cluster_metadata"),
                host,
                adv.port,
            )?;
            // Bug mode unclean-regardless: this controller elects out of the ISR whatever the
            // setting says.
            mc.unclean |= bugs.unclean_regardless;
            mc.restart_without_fencing = bugs.restart_without_fencing;
            mc.features.eligible_leader_replicas = config.eligible_leader_replicas;
            // KIP-966 unclean-shutdown detection: the epoch the previous process wrote at a
            // clean shutdown, read once (and removed, so a crash from here on is unclean).
            mc.previous_broker_epoch = take_clean_shutdown_epoch(&dir);
            let node = MetadataNode::start(mc, clock.clone()).await?;
            // Like a KRaft broker, serve clients only once registered with the active controller
            // and holding its image: a client's first Metadata then names every live broker and
            // the controller (librdkafka's admin client waits forever for an unknown one).
            let wait_ms: u64 = config.raw_or("broker.startup.timeout.ms", 120_000);
            let mut rx = node.subscribe();
            let me = config.node_id;
            let registered = tokio::time::timeout(Duration::from_millis(wait_ms), async {
                loop {
                    if rx.borrow_and_update().is_live(me) {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            if registered.is_err() {
                return Err(OpenError::Dir {
                    what: "registering with the controller quorum".into(),
                    path: dir.clone(),
                    message: format!(
                        "no active controller registered this broker within {wait_ms} ms; check controller.quorum.voters and that a majority of controllers runs"
                    ),
                });
            }
            MetadataSource::Quorum(node)
        } else {
            let path = dir.join("metadata-image.json");
            let mut image = load_image(&path)?;
            let next = image.version + 1;
            image.apply(
                next,
                &Command::RegisterBroker {
                    id: config.node_id,
                    host,
                    port: adv.port,
                    unclean: false,
                    incarnation: String::new(),
                    unclean_shutdown: false,
                    features: None,
                },
            );
            save_image(&path, &image).map_err(|e| OpenError::Dir {
                what: "writing metadata image".into(),
                path: path.clone(),
                message: e.to_string(),
            })?;
            let (tx, _) = watch::channel(Arc::new(image.clone()));
            MetadataSource::Local {
                image: Mutex::new(image),
                tx,
                path,
            }
        };
        let (appended, _) = watch::channel(0);
        let groups = groups::Coordinator::new(&config, clock.now_ms());
        let txns = txn::TxnCoordinator::new(&config);
        let broker = Arc::new(Broker {
            groups,
            txns,
            config,
            clock,
            metadata,
            partitions: RwLock::new(BTreeMap::new()),
            metrics: Metrics::default(),
            appended,
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            bugs,
            reconcile_lock: Mutex::new(0),
            _dir_locks: dir_locks,
        });
        if bugs != ReplicationBugs::default() {
            tracing::warn!(
                ?bugs,
                "HISTORICAL BUG MODES ARE ON: this broker is deliberately unsafe"
            );
        }
        let image = broker.image();
        broker.reconcile(&image);
        tracing::info!(node = broker.config.node_id, dir = %dir.display(), "broker state opened");
        Ok(broker)
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        match &self.metadata {
            MetadataSource::Local { tx, .. } => tx.borrow().clone(),
            MetadataSource::Quorum(n) => n.image(),
        }
    }

    /// A receiver of every new metadata image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        match &self.metadata {
            MetadataSource::Local { tx, .. } => tx.subscribe(),
            MetadataSource::Quorum(n) => n.subscribe(),
        }
    }

    /// Applies a metadata change (locally, or through the active controller).
    pub async fn propose(self: &Arc<Self>, cmd: Command) -> CommandResult {
        match &self.metadata {
            MetadataSource::Local { image, tx, path } => {
                let (result, snapshot) = {
                    let mut img = image.lock().unwrap_or_else(|p| p.into_inner());
                    let next = img.version + 1;
                    let r = img.apply(next, &cmd);
                    (r, img.clone())
                };
                if let Err(e) = save_image(path, &snapshot) {
                    tracing::error!(error = %e, "persisting the metadata image failed");
                }
                // A single node reconciles at once, so the topic is usable when the answer leaves.
                let snapshot = Arc::new(snapshot);
                tx.send_replace(snapshot.clone());
                let b = self.clone();
                let _ = crate::runtime::spawn_blocking(move || b.reconcile(&snapshot)).await;
                result
            }
            MetadataSource::Quorum(n) => {
                match n
                    .propose(cmd, Duration::from_millis(self.request_timeout_ms()))
                    .await
                {
                    Ok(r) => r,
                    Err(e) => CommandResult {
                        error_code: ResponseError::RequestTimedOut.code(),
                        message: e.to_string(),
                        ..CommandResult::default()
                    },
                }
            }
        }
    }

    fn request_timeout_ms(&self) -> u64 {
        self.config.raw_or("controller.request.timeout.ms", 10_000)
    }

    /// Whether this broker runs with the Raft quorum.
    pub fn clustered(&self) -> bool {
        matches!(self.metadata, MetadataSource::Quorum(_))
    }

    /// The hosted partition, if any.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Hosted>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), index))
            .cloned()
    }

    fn all_partitions(&self) -> Vec<Arc<Hosted>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn prop_i64(&self, topic_configs: &BTreeMap<String, String>, key: &str, default: i64) -> i64 {
        topic_configs
            .get(key)
            .or_else(|| self.config.raw.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn partition_config(&self, topic_configs: &BTreeMap<String, String>) -> PartitionConfig {
        let rules = self.config.rules();
        PartitionConfig {
            replica_lag_time_max_ms: self.prop_i64(
                topic_configs,
                "replica.lag.time.max.ms",
                30_000,
            ),
            min_insync_replicas: self
                .prop_i64(topic_configs, "min.insync.replicas", 1)
                .max(1) as usize,
            // The release's rules (crate::release::ReleaseRules), one decision each.
            truncate_on_fetch: rules.truncate_on_fetch,
            hw_requires_min_isr: rules.hw_requires_min_isr,
            effective_min_isr: rules.effective_min_isr,
        }
    }

    /// Applies an image: opens partitions assigned here, sets roles, starts or stops fetchers,
    /// removes partitions of deleted topics.
    pub fn reconcile(self: &Arc<Self>, image: &MetadataImage) {
        let mut last = self
            .reconcile_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if image.version < *last {
            return; // an older image than one already applied
        }
        *last = image.version;
        let me = self.config.node_id;
        let now = self.clock.now_ms();
        let dir = self.config.log_dirs[0].clone();
        let fenced: Vec<i32> = image
            .brokers
            .values()
            .filter(|b| b.fenced)
            .map(|b| b.id)
            .collect();
        let mut wanted = Vec::new();
        for t in image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&me) {
                    wanted.push((t.name.clone(), i as i32));
                    let hosted = match self.partition(&t.name, i as i32) {
                        Some(h) => h,
                        None => match self.open_partition(&dir, t, i as i32, now) {
                            Ok(h) => h,
                            Err(e) => {
                                tracing::error!(topic = %t.name, partition = i, error = %e, "cannot open partition");
                                continue;
                            }
                        },
                    };
                    let state = PartitionState {
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                    };
                    let mut st = hosted.state();
                    st.set_ineligible_replicas(fenced.iter().copied());
                    // Topic configs may have changed (AlterConfigs): replication's and the log's.
                    st.set_config(self.partition_config(&t.configs));
                    match self.config.topic_log_config(&t.configs) {
                        Ok(lc) => st.log_mut().set_config(lc),
                        Err(e) => {
                            tracing::warn!(topic = %t.name, error = %e, "topic configs not applied")
                        }
                    }
                    let was = (st.is_leader(), st.leader_epoch());
                    let res = if p.leader == me {
                        let r = st.become_leader(&state, now).map(|_| false);
                        if was != (st.is_leader(), st.leader_epoch()) {
                            // A new leadership: producer state comes from the log, as Kafka's.
                            match st.log().batch_headers() {
                                Ok(hs) => {
                                    *hosted.producers.lock().unwrap_or_else(|p| p.into_inner()) =
                                        producers::ProducerTable::rebuild(&hs)
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "rebuilding producer state failed")
                                }
                            }
                        }
                        r
                    } else {
                        st.become_follower(&state, now)
                    };
                    let completions = st.poll_waiters(now);
                    let follow = !st.is_leader() && p.leader >= 0;
                    drop(st);
                    self.complete(completions);
                    match res {
                        Err(e) => {
                            tracing::error!(topic = %t.name, partition = i, error = %e, "role change failed")
                        }
                        Ok(new_epoch) => {
                            let mut f = hosted.fetcher.lock().unwrap_or_else(|p| p.into_inner());
                            let running = f.as_ref().is_some_and(|h| !h.is_finished());
                            if !follow {
                                if let Some(h) = f.take() {
                                    h.abort();
                                }
                            } else if new_epoch || !running {
                                if let Some(h) = f.take() {
                                    h.abort();
                                }
                                *f = Some(tokio::spawn(fetcher::run(self.clone(), hosted.clone())));
                            }
                        }
                    }
                }
            }
        }
        let gone: Vec<(String, i32)> = self
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in gone {
            let removed = self
                .partitions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if let Some(h) = removed {
                h.stop_fetcher();
                let pdir = topics::partition_dir(&dir, &key.0, key.1);
                if !image.topics.contains_key(&key.0) {
                    if let Err(e) = std::fs::remove_dir_all(&pdir) {
                        tracing::warn!(dir = %pdir.display(), error = %e, "could not remove a deleted partition");
                    }
                }
                tracing::info!(topic = %key.0, partition = key.1, "partition no longer hosted here");
            }
        }
        self.appended.send_modify(|v| *v += 1);
    }

    fn open_partition(
        &self,
        dir: &Path,
        t: &crate::metadata::image::TopicInfo,
        index: i32,
        now: i64,
    ) -> Result<Arc<Hosted>, String> {
        let lc = self
            .config
            .topic_log_config(&t.configs)
            .map_err(|e| e.to_string())?;
        let pdir = topics::partition_dir(dir, &t.name, index);
        let (log, report) = Log::open(&pdir, lc, now).map_err(|e| e.to_string())?;
        if report.truncated_bytes > 0 {
            tracing::warn!(topic = %t.name, partition = index, bytes = report.truncated_bytes,
                at = ?report.truncated_at, "recovered partition had a torn tail");
        }
        let checkpointed_hw = HighWatermarkCheckpoint::new(dir)
            .read()
            .ok()
            .and_then(|hws| hws.get(&(t.name.clone(), index)).copied())
            .unwrap_or(0);
        let state = ReplicaState::open(
            self.config.node_id,
            &pdir,
            log,
            checkpointed_hw,
            self.partition_config(&t.configs),
            self.bugs,
        )
        .map_err(|e| e.to_string())?;
        let h = Arc::new(Hosted {
            topic: t.name.clone(),
            index,
            state: Mutex::new(state),
            producers: Mutex::new(producers::ProducerTable::default()),
            txns: Mutex::new(txn::index::TxnIndex::default()),
            fetcher: Mutex::new(None),
            follower_epochs: Mutex::new(HashMap::new()),
        });
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((t.name.clone(), index), h.clone());
        Ok(h)
    }

    /// Registers an acks=all waiter; the receiver resolves when the partition completes it.
    pub fn new_waiter(&self) -> (u64, oneshot::Receiver<Result<(), ResponseError>>) {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        (id, rx)
    }

    /// Routes waiter completions to their requests.
    pub fn complete(&self, done: Vec<crate::replication::partition::WaiterCompletion>) {
        if done.is_empty() {
            return;
        }
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for c in done {
            if let Some(tx) = w.remove(&c.id) {
                let _ = tx.send(c.result);
            }
        }
    }

    /// Sends an ISR change to the controller and applies the answer.
    pub fn send_alter_partition(
        self: &Arc<Self>,
        hosted: Arc<Hosted>,
        p: crate::replication::partition::AlterPartitionProposal,
    ) {
        let b = self.clone();
        tokio::spawn(async move {
            let cmd = Command::AlterPartition {
                topic: hosted.topic.clone(),
                partition: hosted.index,
                leader: b.config.node_id,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: p.new_isr.clone(),
                // KIP-903 (AlterPartition's NewIsrWithEpochs): the epoch each member fetched
                // with; the controller refuses a joining member whose epoch is stale.
                broker_epochs: {
                    let known = hosted
                        .follower_epochs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    p.new_isr
                        .iter()
                        .filter_map(|r| known.get(r).map(|e| (*r, *e)))
                        .collect()
                },
            };
            let r = b.propose(cmd).await;
            let result = match (r.error_code, r.partition) {
                (0, Some(info)) => Ok(CommittedIsr {
                    leader_epoch: info.leader_epoch,
                    partition_epoch: info.partition_epoch,
                    isr: info.isr,
                }),
                (code, _) => {
                    tracing::info!(topic = %hosted.topic, partition = hosted.index, code, msg = %r.message, "AlterPartition refused");
                    Err(ResponseError::try_from_code(code)
                        .unwrap_or(ResponseError::UnknownServerError))
                }
            };
            let now = b.clock.now_ms();
            let mut st = hosted.state();
            let advanced = st.complete_alter_partition(result, now);
            let done = st.poll_waiters(now);
            drop(st);
            b.complete(done);
            if advanced {
                b.appended.send_modify(|v| *v += 1);
            }
        });
    }

    /// Runs retention, time-based flush and roll, acks=all deadlines and, with `isr_check`,
    /// the ISR shrink check (Kafka's `isr-expiration` task, which the caller runs every
    /// `replica.lag.time.max.ms / 2`).
    pub fn housekeeping(self: &Arc<Self>, retention: bool, isr_check: bool) {
        let now = self.clock.now_ms();
        for h in self.all_partitions() {
            let mut st = h.state();
            let r = (|| {
                let log = st.log_mut();
                log.maybe_roll(now)?;
                log.maybe_flush(now)?;
                let deleted = if retention {
                    log.apply_retention(now)?
                } else {
                    0
                };
                Ok::<_, LogError>(deleted)
            })();
            match r {
                Ok(deleted) if deleted > 0 => {
                    if let Err(e) = st.on_log_start_offset_moved() {
                        tracing::error!(topic = %h.topic, partition = h.index, error = %e, "epoch cache trim failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(topic = %h.topic, partition = h.index, error = %e, "housekeeping failed")
                }
            }
            let shrink = if isr_check && st.is_leader() {
                st.maybe_shrink_isr(now)
            } else {
                None
            };
            let done = st.poll_waiters(now);
            drop(st);
            self.complete(done);
            if let Some(p) = shrink {
                tracing::info!(topic = %h.topic, partition = h.index, isr = ?p.new_isr, "shrinking ISR");
                self.send_alter_partition(h.clone(), p);
            }
        }
    }

    /// Spawns the background loops: metadata reconciliation, housekeeping (with the group
    /// coordinator's tick) and the transaction coordinator's timeout tick.
    pub fn spawn_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let b = self.clone();
        let mut rx = self.subscribe();
        tasks.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let image = rx.borrow_and_update().clone();
                let b2 = b.clone();
                let _ = crate::runtime::spawn_blocking(move || b2.reconcile(&image)).await;
            }
        }));
        let b = self.clone();
        tasks.push(tokio::spawn(async move {
            let check = b.config.retention_check_interval_ms.max(1);
            let hw_every: i64 = b
                .config
                .raw_or("replica.high.watermark.checkpoint.interval.ms", 5000);
            // Kafka schedules its ISR expiration check every replica.lag.time.max.ms / 2:
            // a follower admitted without being caught up stays in the ISR until then.
            let isr_every: i64 =
                (b.config.raw_or::<i64>("replica.lag.time.max.ms", 30_000) / 2).max(1);
            let mut last_hw_checkpoint = b.clock.now_ms();
            let mut last_retention = b.clock.now_ms();
            let mut last_isr_check = b.clock.now_ms();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let now = b.clock.now_ms();
                let retention = now - last_retention >= check as i64;
                if retention {
                    last_retention = now;
                }
                let hw_checkpoint = now - last_hw_checkpoint >= hw_every;
                if hw_checkpoint {
                    last_hw_checkpoint = now;
                }
                // A clock stepped back restarts the wait rather than stopping the checks.
                let isr_check = now - last_isr_check >= isr_every || now < last_isr_check;
                if isr_check {
                    last_isr_check = now;
                }
                let b2 = b.clone();
                let _ = crate::runtime::spawn_blocking(move || {
                    b2.groups.tick(&b2, now);
                    b2.housekeeping(retention, isr_check);
                    if hw_checkpoint {
                        b2.checkpoint_high_watermarks();
                    }
                })
                .await;
            }
        }));
        let b = self.clone();
        tasks.push(tokio::spawn(async move {
            let every = b.txns.config.abort_check_interval_ms.max(10) as u64;
            let mut tick = tokio::time::interval(Duration::from_millis(every));
            loop {
                tick.tick().await;
                let now = b.clock.now_ms();
                b.txns.tick(&b, now).await;
            }
        }));
        tasks
    }

    /// Writes every hosted partition's high watermark to `replication-offset-checkpoint`.
    pub fn checkpoint_high_watermarks(&self) {
        let hws: HighWatermarks = self
            .all_partitions()
            .iter()
            .map(|h| ((h.topic.clone(), h.index), h.state().high_watermark()))
            .collect();
        if let Err(e) = HighWatermarkCheckpoint::new(&self.config.log_dirs[0]).write(&hws) {
            tracing::error!(error = %e, "writing the high-watermark checkpoint failed");
        }
    }

    /// Controlled shutdown (SIGTERM): asks the active controller to move every leadership of
    /// this broker elsewhere and waits until it leads nothing, at most
    /// `controlled.shutdown.timeout.ms` (ours, default 15000). The broker keeps serving
    /// meanwhile. Returns whether the leaderships moved in time (a single node: nothing to move).
    pub async fn controlled_shutdown(&self) -> bool {
        match &self.metadata {
            MetadataSource::Local { .. } => true,
            MetadataSource::Quorum(n) => {
                let ms: u64 = self.config.raw_or("controlled.shutdown.timeout.ms", 15_000);
                n.controlled_shutdown(Duration::from_millis(ms)).await
            }
        }
    }

    /// Flushes every log (graceful shutdown), checkpoints high watermarks and stops fetchers.
    pub fn shutdown(&self) {
        for h in self.all_partitions() {
            h.stop_fetcher();
            if let Err(e) = h.state().log_mut().flush() {
                tracing::error!(error = %e, "flushing a log failed");
            }
        }
        self.checkpoint_high_watermarks();
        if let MetadataSource::Quorum(_) = &self.metadata {
            // KIP-966: the clean-shutdown file names this incarnation's broker epoch, so the
            // next process registers as having shut down cleanly.
            let me = self.config.node_id;
            if let Some(b) = self.image().brokers.get(&me) {
                let path = self.config.log_dirs[0].join(CLEAN_SHUTDOWN_FILE);
                let written = std::fs::write(&path, b.epoch.to_string())
                    .and_then(|()| std::fs::File::open(&path)?.sync_all());
                if let Err(e) = written {
                    tracing::error!(error = %e, path = %path.display(), "writing the clean-shutdown file failed");
                }
            }
        }
        tracing::info!("broker shut down cleanly");
    }
}

impl GaugeSource for Broker {
    fn partition_gauges(&self) -> Vec<PartitionGauges> {
        let image = self.image();
        self.all_partitions()
            .iter()
            .map(|h| {
                let st = h.state();
                let log = st.log();
                PartitionGauges {
                    topic: h.topic.clone(),
                    partition: h.index,
                    log_start_offset: log.log_start_offset(),
                    log_end_offset: log.log_end_offset(),
                    high_watermark: st.high_watermark(),
                    size_bytes: log.size_bytes(),
                    segments: log.segment_count(),
                    leader_epoch: st.leader_epoch(),
                    leader_epoch_start_offset: if st.is_leader() {
                        st.leader_epoch_start_offset().unwrap_or(-1)
                    } else {
                        -1
                    },
                    isr_size: st.isr().len(),
                    under_replicated: st.is_under_replicated(),
                    leader: st.is_leader(),
                    leader_id: image
                        .topics
                        .get(&h.topic)
                        .and_then(|t| t.partitions.get(h.index as usize))
                        .map_or(-1, |p| p.leader),
                    isr: st.isr(),
                }
            })
            .collect()
    }

    fn broker_gauges(&self) -> BrokerGauges {
        let me = self.config.node_id;
        let image = self.image();
        BrokerGauges {
            node_id: me,
            // A single-node (local metadata) broker registers nobody: never fenced.
            fenced: !image.brokers.is_empty() && !image.is_live(me),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
