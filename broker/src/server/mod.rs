//! The broker server: shared state (config, clock, topic registry, metrics), the TCP listener
//! and per-connection loop (`net`), the Kafka API handlers (`handlers`), and background tasks
//! (retention, time-based flush and roll).

pub mod handlers;
pub mod net;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::metrics::{GaugeSource, Metrics, PartitionGauges};
use crate::topics::{self, Topic, TopicError, TopicMeta};

/// Everything a connection handler needs.
#[derive(Debug)]
pub struct Broker {
    /// The configuration.
    pub config: BrokerConfig,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Topics by name.
    pub topics: RwLock<BTreeMap<String, Topic>>,
    /// Shared counters.
    pub metrics: Metrics,
    /// Bumped after every append, waking long-polling fetches.
    pub appended: watch::Sender<u64>,
}

impl Broker {
    /// Opens the broker's state: creates the log dir and reopens every registered topic.
    pub fn open(config: BrokerConfig, clock: Arc<dyn Clock>) -> Result<Arc<Broker>, TopicError> {
        let dir = config.log_dirs[0].clone();
        std::fs::create_dir_all(&dir).map_err(|e| TopicError::Registry {
            path: dir.clone(),
            message: format!("cannot create log dir: {e}"),
        })?;
        let now = clock.now_ms();
        let mut map = BTreeMap::new();
        for meta in topics::load_registry(&dir)? {
            let lc = config
                .topic_log_config(&meta.configs)
                .map_err(|e| TopicError::Registry {
                    path: dir.clone(),
                    message: format!("topic {}: {e}", meta.name),
                })?;
            let t = topics::open_topic(&dir, meta, &lc, now)?;
            map.insert(t.meta.name.clone(), t);
        }
        tracing::info!(node = config.node_id, topics = map.len(), dir = %dir.display(), "broker state opened");
        let (appended, _) = watch::channel(0);
        Ok(Arc::new(Broker {
            config,
            clock,
            topics: RwLock::new(map),
            metrics: Metrics::default(),
            appended,
        }))
    }

    /// Read access to the topic map.
    pub fn topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn topics_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Topic>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, map: &BTreeMap<String, Topic>) -> Result<(), TopicError> {
        let metas: Vec<TopicMeta> = map.values().map(|t| t.meta.clone()).collect();
        topics::save_registry(&self.config.log_dirs[0], &metas)
    }

    /// Creates a topic (the caller validated name, counts and configs).
    pub fn create_topic(&self, meta: TopicMeta) -> Result<(), TopicError> {
        let lc = self
            .config
            .topic_log_config(&meta.configs)
            .map_err(|e| TopicError::Registry {
                path: self.config.log_dirs[0].clone(),
                message: e.to_string(),
            })?;
        let mut map = self.topics_mut();
        if map.contains_key(&meta.name) {
            return Ok(());
        }
        let t = topics::open_topic(&self.config.log_dirs[0], meta, &lc, self.clock.now_ms())?;
        tracing::info!(topic = %t.meta.name, partitions = t.meta.partitions, "topic created");
        map.insert(t.meta.name.clone(), t);
        self.persist(&map)
    }

    /// Deletes a topic and its partition directories; false when it did not exist.
    pub fn delete_topic(&self, name: &str) -> Result<bool, TopicError> {
        let mut map = self.topics_mut();
        let Some(topic) = map.remove(name) else {
            return Ok(false);
        };
        self.persist(&map)?;
        drop(map);
        for p in &topic.partitions {
            let dir = p.log().dir().to_path_buf();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted partition's directory");
            }
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(true)
    }

    /// Runs retention, time-based flush and time-based roll on every partition once.
    pub fn housekeeping(&self, retention: bool) {
        let now = self.clock.now_ms();
        let parts: Vec<_> = self
            .topics()
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        for p in parts {
            let mut log = p.log();
            let r = (|| {
                log.maybe_roll(now)?;
                log.maybe_flush(now)?;
                if retention {
                    log.apply_retention(now)?;
                }
                Ok::<_, crate::log::LogError>(())
            })();
            if let Err(e) = r {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "housekeeping failed");
            }
        }
    }

    /// Spawns the housekeeping loop (every second; retention every check interval).
    pub fn spawn_housekeeping(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let b = self.clone();
        tokio::spawn(async move {
            let check = b.config.retention_check_interval_ms.max(1);
            let mut last_retention = b.clock.now_ms();
            let mut tick = tokio::time::interval(Duration::from_millis(check.min(1000)));
            loop {
                tick.tick().await;
                let now = b.clock.now_ms();
                let retention = now - last_retention >= check as i64;
                if retention {
                    last_retention = now;
                }
                let b2 = b.clone();
                let _ = tokio::task::spawn_blocking(move || b2.housekeeping(retention)).await;
            }
        })
    }

    /// Flushes and closes every log (graceful shutdown).
    pub fn shutdown(&self) {
        let map = std::mem::take(&mut *self.topics_mut());
        for (_, topic) in map {
            for p in topic.partitions {
                match Arc::try_unwrap(p) {
                    Ok(part) => {
                        let log = part.into_log();
                        if let Err(e) = log.close() {
                            tracing::error!(error = %e, "closing a log failed");
                        }
                    }
                    Err(p) => {
                        if let Err(e) = p.log().flush() {
                            tracing::error!(error = %e, "flushing a log failed");
                        }
                    }
                }
            }
        }
        tracing::info!("broker shut down cleanly");
    }
}

impl GaugeSource for Broker {
    fn partition_gauges(&self) -> Vec<PartitionGauges> {
        let topics = self.topics();
        let mut out = Vec::new();
        for t in topics.values() {
            for p in &t.partitions {
                let log = p.log();
                out.push(PartitionGauges {
                    topic: p.topic.clone(),
                    partition: p.index,
                    log_start_offset: log.log_start_offset(),
                    log_end_offset: log.log_end_offset(),
                    high_watermark: log.log_end_offset(),
                    size_bytes: log.size_bytes(),
                    segments: log.segment_count(),
                });
            }
        }
        out
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
