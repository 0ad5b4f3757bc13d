//! The topic registry: topics, their configs and their partitions' logs, persisted as
//! `topics.json` in the first log dir so a restart restores them. Partition directories are
//! `<log.dir>/<topic>-<partition>` as in Kafka.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::log::{Log, LogConfig, LogError};

const REGISTRY_FILE: &str = "topics.json";

/// One partition on this broker.
#[derive(Debug)]
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    /// Leader epoch (0 on a single node; replication moves it).
    pub leader_epoch: i32,
    log: Mutex<Log>,
}

impl Partition {
    /// Locks the partition's log.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the log out (shutdown).
    pub fn into_log(self) -> Log {
        self.log.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// A topic's persisted description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor requested.
    pub replication_factor: i16,
    /// Topic-level config overrides.
    pub configs: BTreeMap<String, String>,
}

/// A topic with its open partitions.
#[derive(Debug)]
pub struct Topic {
    /// Persisted description.
    pub meta: TopicMeta,
    /// Partitions, by index.
    pub partitions: Vec<Arc<Partition>>,
}

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// Opening or creating a partition log failed.
    #[error("partition {topic}-{partition}: {source}")]
    Log {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Cause.
        source: LogError,
    },
    /// The registry file could not be read or written.
    #[error("topic registry {path}: {message}")]
    Registry {
        /// File.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Whether a topic name is legal in Kafka (1..249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`).
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// Path of a partition's directory.
pub fn partition_dir(log_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    log_dir.join(format!("{topic}-{partition}"))
}

/// Reads the persisted topic list (empty when there is none yet).
pub fn load_registry(log_dir: &Path) -> Result<Vec<TopicMeta>, TopicError> {
    let path = log_dir.join(REGISTRY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| TopicError::Registry {
            path,
            message: format!("malformed JSON ({e}); fix or remove the file"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(TopicError::Registry {
            path,
            message: e.to_string(),
        }),
    }
}

/// Atomically replaces the persisted topic list.
pub fn save_registry(log_dir: &Path, topics: &[TopicMeta]) -> Result<(), TopicError> {
    let path = log_dir.join(REGISTRY_FILE);
    let err = |e: std::io::Error| TopicError::Registry {
        path: path.clone(),
        message: e.to_string(),
    };
    let tmp = log_dir.join(format!("{REGISTRY_FILE}.tmp"));
    let text = serde_json::to_string_pretty(topics).map_err(|e| TopicError::Registry {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// Opens (or creates) every partition of a topic.
pub fn open_topic(
    log_dir: &Path,
    meta: TopicMeta,
    log_config: &LogConfig,
    now_ms: i64,
) -> Result<Topic, TopicError> {
    let mut partitions = Vec::with_capacity(meta.partitions.max(0) as usize);
    for index in 0..meta.partitions {
        let dir = partition_dir(log_dir, &meta.name, index);
        let (log, report) =
            Log::open(&dir, log_config.clone(), now_ms).map_err(|source| TopicError::Log {
                topic: meta.name.clone(),
                partition: index,
                source,
            })?;
        if report.truncated_bytes > 0 {
            tracing::warn!(topic = %meta.name, partition = index, bytes = report.truncated_bytes,
                at = ?report.truncated_at, "recovered partition had a torn tail");
        }
        partitions.push(Arc::new(Partition {
            topic: meta.name.clone(),
            index,
            leader_epoch: 0,
            log: Mutex::new(log),
        }));
    }
    Ok(Topic { meta, partitions })
}
