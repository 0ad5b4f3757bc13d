//! Broker configuration: Kafka's `server.properties` (Java properties syntax) parsed into a typed
//! [`BrokerConfig`], with command-line overrides applied on top, and topic-level overrides
//! (`segment.bytes`, `retention.ms`, ...) turned into a [`LogConfig`]. Unknown keys are kept (and
//! warned about once) so later features read their own keys from [`BrokerConfig::raw`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::log::{LogConfig, TimestampType};
use crate::release::{KafkaRelease, ReleaseRules, RELEASE_KEY};

/// A configuration problem, naming the key, the value and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The properties file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `key=value` or `key: value`.
    #[error("{origin}:{line}: `{text}` is not `key=value`")]
    Syntax {
        /// File (or "overrides").
        origin: String,
        /// Line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A value has the wrong form.
    #[error("config key `{key}` has invalid value `{value}`: {expected}")]
    Invalid {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A required key is missing.
    #[error("config key `{0}` is required")]
    Missing(String),
    /// A topic-level config name Kafka does not define.
    #[error("unknown topic config `{0}` (see Kafka's topic configs, e.g. retention.ms)")]
    UnknownTopicConfig(String),
}

/// A `listeners` entry: `NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Listener name (PLAINTEXT, CONTROLLER, ...).
    pub name: String,
    /// Host to bind (empty for all interfaces).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Listener {
    /// Parses `NAME://host:port` (host may be empty or a bracketed IPv6 address).
    pub fn parse(key: &str, s: &str) -> Result<Listener, ConfigError> {
        let bad = || ConfigError::Invalid {
            key: key.into(),
            value: s.into(),
            expected: "NAME://host:port, e.g. PLAINTEXT://127.0.0.1:9092".into(),
        };
        let (name, rest) = s.split_once("://").ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        Ok(Listener {
            name: name.to_string(),
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
        })
    }

    /// Address to bind.
    pub fn bind_addr(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The typed broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id` (or `broker.id`).
    pub node_id: i32,
    /// `listeners`.
    pub listeners: Vec<Listener>,
    /// `advertised.listeners` (defaults to `listeners`).
    pub advertised_listeners: Vec<Listener>,
    /// `log.dirs` / `log.dir` (the first holds the topic registry).
    pub log_dirs: Vec<PathBuf>,
    /// `num.partitions` for auto-created topics.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// Log defaults from `log.*` keys and `message.max.bytes`.
    pub log: LogConfig,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`: largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `topic.max.partitions` (ours, default 10,000): CreateTopics asking for more is refused
    /// with INVALID_PARTITIONS, so one request cannot make the broker build millions of logs.
    pub max_partitions_per_topic: i32,
    /// `metrics.listener` (ours): `http://host:port` for `/metrics` and `/health`.
    pub metrics_listener: Option<SocketAddr>,
    /// `cluster.id`.
    pub cluster_id: String,
    /// `kafka.release` (ours): the Kafka release whose replication rules the broker follows
    /// (default [`crate::release::DEFAULT_RELEASE`]); its rules are [`BrokerConfig::rules`].
    pub release: KafkaRelease,
    /// `transaction.partition.verification.enable` (KIP-890 part 1): default true from 3.6.
    pub txn_partition_verification: bool,
    /// `eligible.leader.replicas.enable` (KIP-966): available from 4.0, default true from 4.1.
    pub eligible_leader_replicas: bool,
    /// Every property as given (later features read their own keys here).
    pub raw: BTreeMap<String, String>,
}

/// Keys this module understands; others are kept in `raw` and warned about.
const KNOWN_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "listeners",
    "advertised.listeners",
    "log.dirs",
    "log.dir",
    "num.partitions",
    "default.replication.factor",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.index.interval.bytes",
    "log.message.timestamp.type",
    "message.max.bytes",
    "auto.create.topics.enable",
    "socket.request.max.bytes",
    "metrics.listener",
    "topic.max.partitions",
    "cluster.id",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "controller.listener.names",
    // Read by the replication and metadata-quorum parts of the server.
    "process.roles",
    "controller.quorum.voters",
    "controller.request.timeout.ms",
    "metadata.log.dir",
    "broker.heartbeat.interval.ms",
    "broker.session.timeout.ms",
    "replica.lag.time.max.ms",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    // The Kafka release whose rules the broker follows, and the settings it defaults.
    "kafka.release",
    "transaction.partition.verification.enable",
    "eligible.leader.replicas.enable",
];

/// Topic-level config names Kafka defines. CreateTopics refuses any other name with
/// INVALID_CONFIG (as Kafka does); names this broker does not act on are accepted and stored.
const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.storage.enable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Broker keys read outside this module through [`BrokerConfig::raw_or`].
const RAW_KEYS: &[&str] = &[
    "broker.startup.timeout.ms",
    "replica.high.watermark.checkpoint.interval.ms",
];

/// Every configuration key this broker knows: its broker keys and Kafka's topic-level config
/// names (topic defaults may be given as broker properties). Test harnesses check a user's
/// properties against it to refuse typos up front.
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    KNOWN_KEYS
        .iter()
        .chain(TOPIC_CONFIG_KEYS)
        .chain(RAW_KEYS)
        .copied()
}

/// Kafka's smallest segment size (one legacy record's overhead).
const MIN_SEGMENT_BYTES: u64 = 14;

/// Parses Java-properties text into key/value pairs (comments `#`/`!`, `=` or `:` separators).
pub fn parse_properties(text: &str, origin: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            continue;
        }
        let sep = t.find(['=', ':']).ok_or_else(|| ConfigError::Syntax {
            origin: origin.into(),
            line: i + 1,
            text: t.into(),
        })?;
        let key = t[..sep].trim();
        if key.is_empty() {
            return Err(ConfigError::Syntax {
                origin: origin.into(),
                line: i + 1,
                text: t.into(),
            });
        }
        out.push((key.to_string(), t[sep + 1..].trim().to_string()));
    }
    Ok(out)
}

fn num<T: std::str::FromStr>(
    raw: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, ConfigError> {
    match raw.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|_| ConfigError::Invalid {
            key: key.into(),
            value: v.clone(),
            expected: format!("a number ({})", std::any::type_name::<T>()),
        }),
    }
}

fn boolean(raw: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, ConfigError> {
    match raw.get(key).map(|v| v.to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v == "true" => Ok(Some(true)),
        Some(v) if v == "false" => Ok(Some(false)),
        Some(v) => Err(ConfigError::Invalid {
            key: key.into(),
            value: v,
            expected: "true or false".into(),
        }),
    }
}

fn timestamp_type(key: &str, v: &str) -> Result<TimestampType, ConfigError> {
    match v {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(ConfigError::Invalid {
            key: key.into(),
            value: v.into(),
            expected: "CreateTime or LogAppendTime".into(),
        }),
    }
}

/// -1 (or any negative) means "no limit" for retention keys, as in Kafka.
fn limit<T>(v: i64, conv: impl Fn(i64) -> T) -> Option<T> {
    (v >= 0).then(|| conv(v))
}

impl BrokerConfig {
    /// Reads a properties file and applies `overrides` (`key=value` strings) on top.
    pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut pairs = parse_properties(&text, &path.display().to_string())?;
        pairs.extend(overrides.iter().cloned());
        Self::from_pairs(pairs)
    }

    /// A property read as given (`raw`) and parsed, or `default` when it is absent or does not
    /// parse: for the settings the broker's parts read beyond the validated ones.
    pub fn raw_or<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.raw
            .get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }

    /// Builds the config from key/value pairs (later pairs win).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<BrokerConfig, ConfigError> {
        let raw: BTreeMap<String, String> = pairs.into_iter().collect();
        let unknown: Vec<&str> = raw
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(
                keys = %unknown.join(", "),
                "config keys this broker does not use (kept, ignored)"
            );
        }
        let node_id = match num::<i32>(&raw, "node.id")? {
            Some(n) => n,
            None => num::<i32>(&raw, "broker.id")?
                .ok_or_else(|| ConfigError::Missing("node.id".into()))?,
        };
        let listeners: Vec<Listener> = raw
            .get("listeners")
            .map(String::as_str)
            .unwrap_or("PLAINTEXT://127.0.0.1:9092")
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| Listener::parse("listeners", s.trim()))
            .collect::<Result<_, _>>()?;
        if listeners.is_empty() {
            return Err(ConfigError::Missing("listeners".into()));
        }
        let advertised_listeners = match raw.get("advertised.listeners") {
            Some(v) => v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| Listener::parse("advertised.listeners", s.trim()))
                .collect::<Result<_, _>>()?,
            None => listeners.clone(),
        };
        let log_dirs: Vec<PathBuf> = raw
            .get("log.dirs")
            .or_else(|| raw.get("log.dir"))
            .map(String::as_str)
            .unwrap_or("/tmp/kraft-combined-logs")
            .split(',')
            .map(|s| PathBuf::from(s.trim()))
            .collect();
        let mut log = LogConfig::default();
        if let Some(v) = num::<u64>(&raw, "log.segment.bytes")? {
            log.segment_bytes = at_least("log.segment.bytes", v, MIN_SEGMENT_BYTES)?;
        }
        if let Some(v) = num::<i64>(&raw, "log.roll.hours")? {
            log.segment_ms = v * 3_600_000;
        }
        if let Some(v) = num::<i64>(&raw, "log.roll.ms")? {
            log.segment_ms = v;
        }
        if let Some(v) = num::<i64>(&raw, "log.retention.hours")? {
            log.retention_ms = limit(v, |v| v * 3_600_000);
        }
        if let Some(v) = num::<i64>(&raw, "log.retention.minutes")? {
            log.retention_ms = limit(v, |v| v * 60_000);
        }
        if let Some(v) = num::<i64>(&raw, "log.retention.ms")? {
            log.retention_ms = limit(v, |v| v);
        }
        if let Some(v) = num::<i64>(&raw, "log.retention.bytes")? {
            log.retention_bytes = limit(v, |v| v as u64);
        }
        if let Some(v) = num::<i64>(&raw, "log.flush.interval.messages")? {
            log.flush_interval_messages = (v > 0 && v != i64::MAX).then_some(v as u64);
        }
        if let Some(v) = num::<i64>(&raw, "log.flush.interval.ms")? {
            log.flush_interval_ms = limit(v, |v| v);
        }
        if let Some(v) = num::<u32>(&raw, "log.index.interval.bytes")? {
            log.index_interval_bytes = v;
        }
        if let Some(v) = raw.get("log.message.timestamp.type") {
            log.timestamp_type = timestamp_type("log.message.timestamp.type", v)?;
        }
        if let Some(v) = num::<usize>(&raw, "message.max.bytes")? {
            log.max_message_bytes = v;
        }
        let metrics_listener = match raw.get("metrics.listener") {
            None => None,
            Some(v) => {
                let addr = v.strip_prefix("http://").unwrap_or(v);
                Some(
                    addr.parse::<SocketAddr>()
                        .map_err(|_| ConfigError::Invalid {
                            key: "metrics.listener".into(),
                            value: v.clone(),
                            expected: "http://ip:port, e.g. http://127.0.0.1:9100".into(),
                        })?,
                )
            }
        };
        // Keys the replication side reads from `raw`: refuse malformed values here, so a typo
        // never silently falls back to a default.
        if let Some(v) = num::<i32>(&raw, "min.insync.replicas")? {
            at_least("min.insync.replicas", v, 1)?;
        }
        boolean(&raw, "unclean.leader.election.enable")?;
        for key in [
            "replica.lag.time.max.ms",
            "broker.heartbeat.interval.ms",
            "broker.session.timeout.ms",
            "controller.request.timeout.ms",
        ] {
            num::<u64>(&raw, key)?;
        }
        let max_partitions_per_topic = at_least(
            "topic.max.partitions",
            num(&raw, "topic.max.partitions")?.unwrap_or(10_000),
            1,
        )?;
        let num_partitions = at_least(
            "num.partitions",
            num(&raw, "num.partitions")?.unwrap_or(1),
            1,
        )?;
        if num_partitions > max_partitions_per_topic {
            return Err(ConfigError::Invalid {
                key: "num.partitions".into(),
                value: num_partitions.to_string(),
                expected: format!("at most topic.max.partitions={max_partitions_per_topic}"),
            });
        }
        let release: KafkaRelease = match raw.get(RELEASE_KEY) {
            None => KafkaRelease::default(),
            Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                key: RELEASE_KEY.into(),
                value: v.clone(),
                expected: format!(
                    "a Kafka release whose rules this broker implements: one of {} (a patch such as 3.6.2 is allowed)",
                    crate::release::allowed_list()
                ),
            })?,
        };
        let rules = release.rules();
        let txn_partition_verification =
            boolean(&raw, "transaction.partition.verification.enable")?
                .unwrap_or(rules.txn_verification_default);
        let eligible_leader_replicas = match boolean(&raw, "eligible.leader.replicas.enable")? {
            Some(true) if !rules.elr_available => {
                return Err(ConfigError::Invalid {
                    key: "eligible.leader.replicas.enable".into(),
                    value: "true".into(),
                    expected: format!(
                        "false under kafka.release={release}: Eligible Leader Replicas (KIP-966) exist from Kafka 4.0"
                    ),
                })
            }
            Some(v) => v,
            None => rules.elr_default,
        };
        Ok(BrokerConfig {
            release,
            txn_partition_verification,
            eligible_leader_replicas,
            node_id,
            listeners,
            advertised_listeners,
            log_dirs,
            num_partitions,
            default_replication_factor: num(&raw, "default.replication.factor")?.unwrap_or(1),
            log,
            retention_check_interval_ms: num(&raw, "log.retention.check.interval.ms")?
                .unwrap_or(300_000),
            auto_create_topics: boolean(&raw, "auto.create.topics.enable")?.unwrap_or(true),
            socket_request_max_bytes: num(&raw, "socket.request.max.bytes")?.unwrap_or(104_857_600),
            max_partitions_per_topic,
            metrics_listener,
            cluster_id: raw
                .get("cluster.id")
                .cloned()
                .unwrap_or_else(|| "kafka-jepsen-cluster".into()),
            raw,
        })
    }

    /// The replication rules of the configured release (`kafka.release`).
    pub fn rules(&self) -> ReleaseRules {
        self.release.rules()
    }

    /// The log config of a topic: these broker defaults overridden by the topic's configs.
    pub fn topic_log_config(
        &self,
        topic_configs: &BTreeMap<String, String>,
    ) -> Result<LogConfig, ConfigError> {
        let mut c = self.log.clone();
        let raw = topic_configs;
        if let Some(v) = num::<u64>(raw, "segment.bytes")? {
            c.segment_bytes = at_least("segment.bytes", v, MIN_SEGMENT_BYTES)?;
        }
        if let Some(v) = num::<i64>(raw, "segment.ms")? {
            c.segment_ms = v;
        }
        if let Some(v) = num::<i64>(raw, "retention.ms")? {
            c.retention_ms = limit(v, |v| v);
        }
        if let Some(v) = num::<i64>(raw, "retention.bytes")? {
            c.retention_bytes = limit(v, |v| v as u64);
        }
        if let Some(v) = num::<i64>(raw, "flush.messages")? {
            c.flush_interval_messages = (v > 0 && v != i64::MAX).then_some(v as u64);
        }
        if let Some(v) = num::<i64>(raw, "flush.ms")? {
            c.flush_interval_ms = limit(v, |v| v);
        }
        if let Some(v) = num::<u32>(raw, "index.interval.bytes")? {
            c.index_interval_bytes = v;
        }
        if let Some(v) = raw.get("message.timestamp.type") {
            c.timestamp_type = timestamp_type("message.timestamp.type", v)?;
        }
        if let Some(v) = num::<usize>(raw, "max.message.bytes")? {
            c.max_message_bytes = v;
        }
        Ok(c)
    }

    /// Checks a new topic's configs as CreateTopics must: every name one Kafka defines, every
    /// value this broker acts on well-formed (the log's and replication's).
    pub fn validate_topic_configs(
        &self,
        topic_configs: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        if let Some(k) = topic_configs
            .keys()
            .find(|k| !TOPIC_CONFIG_KEYS.contains(&k.as_str()))
        {
            return Err(ConfigError::UnknownTopicConfig(k.clone()));
        }
        self.topic_log_config(topic_configs)?;
        if let Some(v) = num::<i32>(topic_configs, "min.insync.replicas")? {
            at_least("min.insync.replicas", v, 1)?;
        }
        boolean(topic_configs, "unclean.leader.election.enable")?;
        Ok(())
    }
}

fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    min: T,
) -> Result<T, ConfigError> {
    if v < min {
        return Err(ConfigError::Invalid {
            key: key.into(),
            value: v.to_string(),
            expected: format!("at least {min}"),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse_properties(text, "test").expect("parses")
    }

    #[test]
    fn parses_kafka_properties_with_overrides() {
        let mut p = pairs(
            "# comment\nnode.id=3\nlisteners = PLAINTEXT://127.0.0.1:19092\nlog.dirs: /tmp/a,/tmp/b\n\
             log.retention.hours=1\nlog.flush.interval.messages=1\nsome.future.key=x\n",
        );
        p.push(("log.retention.ms".into(), "5000".into()));
        let c = BrokerConfig::from_pairs(p).expect("valid");
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listeners[0].port, 19092);
        assert_eq!(c.log_dirs.len(), 2);
        assert_eq!(
            c.log.retention_ms,
            Some(5000),
            "retention.ms wins over hours"
        );
        assert_eq!(c.log.flush_interval_messages, Some(1));
        assert_eq!(c.raw["some.future.key"], "x");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = BrokerConfig::from_pairs(pairs("node.id=1\nlog.segment.bytes=big"))
            .expect_err("not a number")
            .to_string();
        assert!(
            err.contains("log.segment.bytes") && err.contains("big"),
            "{err}"
        );
        let err = BrokerConfig::from_pairs(pairs("node.id=1\nlisteners=127.0.0.1:9092"))
            .expect_err("no scheme")
            .to_string();
        assert!(err.contains("listeners"), "{err}");
        let err = BrokerConfig::from_pairs(pairs("listeners=PLAINTEXT://:9092"))
            .expect_err("no id")
            .to_string();
        assert!(err.contains("node.id"), "{err}");
        assert!(parse_properties("just words", "f").is_err());
    }

    #[test]
    fn kafka_release_defaults_to_the_newest_and_sets_its_defaults() {
        let c = BrokerConfig::from_pairs(pairs("node.id=1")).expect("valid");
        assert_eq!(c.release, crate::release::DEFAULT_RELEASE);
        assert!(c.txn_partition_verification && c.eligible_leader_replicas);
        let c = BrokerConfig::from_pairs(pairs("node.id=1\nkafka.release=3.5")).expect("valid");
        assert!(!c.txn_partition_verification && !c.eligible_leader_replicas);
        assert!(!c.rules().hw_requires_min_isr);
        let c = BrokerConfig::from_pairs(pairs(
            "node.id=1\nkafka.release=4.0\neligible.leader.replicas.enable=true\n\
             transaction.partition.verification.enable=false",
        ))
        .expect("valid");
        assert!(c.eligible_leader_replicas && !c.txn_partition_verification);
        let err = BrokerConfig::from_pairs(pairs("node.id=1\nkafka.release=3.8"))
            .expect_err("not implemented")
            .to_string();
        assert!(
            err.contains("kafka.release") && err.contains("3.8") && err.contains("3.7, 3.9"),
            "{err}"
        );
        let err = BrokerConfig::from_pairs(pairs(
            "node.id=1\nkafka.release=3.9\neligible.leader.replicas.enable=true",
        ))
        .expect_err("no ELR before 4.0")
        .to_string();
        assert!(err.contains("eligible.leader.replicas.enable"), "{err}");
    }

    #[test]
    fn topic_overrides_apply() {
        let c = BrokerConfig::from_pairs(pairs("node.id=1")).expect("valid");
        let t: BTreeMap<String, String> = [
            ("segment.bytes".to_string(), "1000".to_string()),
            (
                "message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            ),
        ]
        .into();
        let l = c.topic_log_config(&t).expect("valid");
        assert_eq!(l.segment_bytes, 1000);
        assert_eq!(l.timestamp_type, TimestampType::LogAppendTime);
        let bad: BTreeMap<String, String> = [("retention.ms".to_string(), "x".to_string())].into();
        assert!(c.topic_log_config(&bad).is_err());
    }

    #[test]
    fn create_topics_validation_refuses_unknown_names_and_bad_values() {
        let c = BrokerConfig::from_pairs(pairs("node.id=1")).expect("valid");
        let cfg = |k: &str, v: &str| -> BTreeMap<String, String> {
            [(k.to_string(), v.to_string())].into()
        };
        assert!(c
            .validate_topic_configs(&cfg("cleanup.policy", "delete"))
            .is_ok());
        assert!(c
            .validate_topic_configs(&cfg("min.insync.replicas", "2"))
            .is_ok());
        for (k, v) in [
            ("retention.msec", "1"),
            ("min.insync.replicas", "two"),
            ("min.insync.replicas", "0"),
            ("unclean.leader.election.enable", "yes"),
            ("segment.bytes", "0"),
        ] {
            let err = c
                .validate_topic_configs(&cfg(k, v))
                .expect_err("refused")
                .to_string();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
        let err = BrokerConfig::from_pairs(pairs("node.id=1\nlog.segment.bytes=3"))
            .expect_err("too small")
            .to_string();
        assert!(
            err.contains("log.segment.bytes") && err.contains("at least"),
            "{err}"
        );
        let err = BrokerConfig::from_pairs(pairs("node.id=1\nmin.insync.replicas=two"))
            .expect_err("not a number")
            .to_string();
        assert!(err.contains("min.insync.replicas"), "{err}");
        let err = BrokerConfig::from_pairs(pairs("node.id=1\nnum.partitions=20000"))
            .expect_err("over topic.max.partitions")
            .to_string();
        assert!(
            err.contains("num.partitions") && err.contains("topic.max.partitions"),
            "{err}"
        );
    }
}
