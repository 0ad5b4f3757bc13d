//! Test specifications: what a run deploys, drives and injects. A spec comes from defaults, then a
//! TOML file (`--spec`), then command-line flags, each layer overriding the one before; the
//! merged spec is validated once and recorded with the run (`test.json`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the broker nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One Linux network namespace per node on a bridge the harness creates (needs root).
    Netns,
    /// One container per node from an image built locally from the broker binary.
    Docker,
    /// Real machines reached over SSH, like Jepsen's control node.
    Ssh,
    /// Plain processes on 127.0.0.x, for machines without root.
    Local,
}

impl FromStr for Backend {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "netns" => Ok(Backend::Netns),
            "docker" => Ok(Backend::Docker),
            "ssh" => Ok(Backend::Ssh),
            "local" => Ok(Backend::Local),
            other => Err(SpecError::Invalid {
                field: "backend".into(),
                reason: format!("`{other}` is not one of netns, docker, ssh, local"),
            }),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Backend::Netns => "netns",
            Backend::Docker => "docker",
            Backend::Ssh => "ssh",
            Backend::Local => "local",
        };
        f.write_str(s)
    }
}

/// The producer's `acks` setting: the client crate's type, the one an `acks` travels in from
/// the spec to the wire.
pub use client::Acks;

/// How consumers get their partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerMode {
    /// Manual assignment of partitions (no group protocol).
    Assign,
    /// Group subscription with rebalances.
    Subscribe,
}

/// Which client library drives the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Our own async client (`client` crate).
    Native,
    /// librdkafka through the `rdkafka` crate.
    Rdkafka,
}

/// Fault kinds the nemesis can schedule (`partition`, `packet-loss`, `latency`, `kill`, `pause`,
/// `clock`, `disk`, `file-corruption`, and the scripted `follower-restart-failover`,
/// `replication-cut-failover`, `coordinator-cut-failover`): the nemesis crate's own list, so
/// the two never differ.
pub use nemesis::FaultKind;

/// SSH settings for the `ssh` backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SshSpec {
    /// Hosts (`host` or `host:port`), one per node.
    pub hosts: Vec<String>,
    /// Remote user.
    pub user: String,
    /// Private key file used for authentication.
    pub private_key: Option<PathBuf>,
    /// known_hosts file used to verify host keys.
    pub known_hosts: Option<PathBuf>,
    /// Pinned host key fingerprints (`SHA256:...`, as `ssh-keygen -lf` prints them), instead of
    /// known_hosts: a host is accepted when its key's fingerprint is one of these.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// Remote directory for the broker binary, its config, log and data (`<node>/` per node)
    /// [default: /var/tmp/jepsen-harness].
    #[serde(default)]
    pub remote_dir: Option<PathBuf>,
}

/// The remote directory when the spec gives none.
pub const DEFAULT_REMOTE_DIR: &str = "/var/tmp/jepsen-harness";

/// Client-side settings of the workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClientSpec {
    /// Producer `acks`.
    pub acks: Acks,
    /// Producer `enable.idempotence`.
    pub idempotence: bool,
    /// Use transactions (`txn` ops).
    pub transactions: bool,
    /// Consumer `isolation.level`: `read_committed` or `read_uncommitted`.
    pub isolation_level: String,
    /// Assign or subscribe.
    pub consumer_mode: ConsumerMode,
    /// Subscribed consumers' `partition.assignment.strategy`: `range`, `roundrobin`, or both
    /// comma-separated, most preferred first.
    pub assignment_strategy: String,
    /// Which client library.
    pub client: ClientKind,
    /// Producer `retries`.
    pub retries: u32,
    /// `request.timeout.ms`.
    pub request_timeout_ms: u64,
}

impl Default for ClientSpec {
    fn default() -> Self {
        ClientSpec {
            acks: Acks::All,
            idempotence: false,
            transactions: false,
            isolation_level: "read_uncommitted".into(),
            consumer_mode: ConsumerMode::Assign,
            assignment_strategy: "range".into(),
            client: ClientKind::Native,
            retries: 0,
            request_timeout_ms: 5_000,
        }
    }
}

/// How the history is judged (beyond what the client settings imply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct CheckSpec {
    /// Anomaly kinds that do not invalidate this run (`--allow KIND`), stated in results.json.
    pub allow: Vec<String>,
    /// Write-write dependencies from log order in the cycle search (`--no-ww-deps` turns them
    /// off, as Elle's `:ww-deps false`).
    pub ww_deps: bool,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            allow: Vec::new(),
            ww_deps: true,
        }
    }
}

/// A whole test: cluster shape, configuration, workload, faults, seed and store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TestSpec {
    /// Test name: the store folder under `store/`.
    pub name: String,
    /// Number of broker nodes.
    pub nodes: usize,
    /// Node backend.
    pub backend: Backend,
    /// SSH settings (backend `ssh` only).
    pub ssh: Option<SshSpec>,
    /// Replication factor of the workload topic.
    pub replication_factor: u16,
    /// Partitions of the workload topic.
    pub partitions: u32,
    /// Broker properties written into every node's server.properties and the topic's configs
    /// (`min.insync.replicas`, `unclean.leader.election.enable`, `log.flush.interval.messages`, ...).
    pub broker: BTreeMap<String, String>,
    /// Client settings.
    pub client: ClientSpec,
    /// Checker settings.
    pub check: CheckSpec,
    /// Target rate of client operations per second, over all workers.
    pub rate: f64,
    /// Number of concurrent workers.
    pub concurrency: usize,
    /// Seconds of workload (with faults).
    pub time_limit: u64,
    /// Seconds the final phase may read before giving up.
    pub final_time_limit: u64,
    /// Fault kinds to schedule.
    pub nemesis: Vec<FaultKind>,
    /// Mean seconds between fault starts (and between start and stop).
    pub nemesis_interval: f64,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// Root of the run store.
    pub store: PathBuf,
    /// Historical bug modes switched on in every broker (`broker --bug NAME`; see
    /// docs/BUGS.md). Empty: Kafka's fixed behaviour.
    pub bugs: Vec<String>,
    /// The system under test: `bundled` (this project's broker) or `command` (the `[command]`
    /// table's templates start a Kafka-compatible cluster; see docs/SYSTEMS.md).
    pub system: crate::system::SystemKind,
    /// How a `command` system is run.
    pub command: Option<crate::system::CommandSpec>,
    /// Allow `min.insync.replicas` above the replication factor (a topic that refuses every
    /// acks=all write), on purpose, as the matrix's unwritable cells do.
    pub allow_unwritable: bool,
}

impl Default for TestSpec {
    fn default() -> Self {
        TestSpec {
            name: "queue".into(),
            nodes: 5,
            backend: default_backend(),
            ssh: None,
            replication_factor: 3,
            partitions: 4,
            broker: BTreeMap::new(),
            client: ClientSpec::default(),
            check: CheckSpec::default(),
            rate: 100.0,
            concurrency: 4,
            time_limit: 60,
            final_time_limit: 30,
            // A fault-injection test by default; `--nemesis none` turns faults off.
            nemesis: vec![FaultKind::Partition, FaultKind::Kill],
            nemesis_interval: 10.0,
            seed: 0,
            store: PathBuf::from("store"),
            bugs: Vec::new(),
            system: crate::system::SystemKind::Bundled,
            command: None,
            allow_unwritable: false,
        }
    }
}

/// The default backend: `netns` when running as root, else `local`.
pub fn default_backend() -> Backend {
    if is_root() {
        Backend::Netns
    } else {
        Backend::Local
    }
}

fn is_root() -> bool {
    // The effective uid from /proc avoids an unsafe libc call; anything unreadable means "not root".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// What was wrong with a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("cannot read spec file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The spec file is not valid TOML for a spec.
    #[error("spec file {path} is malformed: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field has a value the harness cannot run with.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as spelled in the spec file.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// A command-line argument that names something unusable (a folder without a run, an unknown
/// bug mode): the user's mistake, exit 254, like a bad spec.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl TestSpec {
    /// Reads a TOML spec file over the defaults.
    pub fn from_file(path: &Path) -> Result<TestSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| SpecError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Whether the spec file at `path` sets `seed` itself (else a run draws a fresh one).
    pub fn file_sets_seed(path: &Path) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .is_some_and(|t| t.contains_key("seed"))
    }

    /// `min.insync.replicas` as the run sets it (the spec's broker properties), if it does.
    pub fn min_insync(&self) -> Option<u16> {
        self.broker
            .get("min.insync.replicas")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<TestSpec, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }

    /// Checks the spec as a whole; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field: &str, reason: String| {
            Err(SpecError::Invalid {
                field: field.into(),
                reason,
            })
        };
        if !self.bugs.is_empty() && self.system == crate::system::SystemKind::Bundled {
            let known = crate::system::bundled_bugs().map_err(|e| SpecError::Invalid {
                field: "bugs".into(),
                reason: format!("cannot list the broker's bug modes: {e}"),
            })?;
            if let Some(bad) = self
                .bugs
                .iter()
                .find(|b| !known.iter().any(|(k, _)| k == *b))
            {
                let names: Vec<&str> = known.iter().map(|(k, _)| k.as_str()).collect();
                return invalid(
                    "bugs",
                    format!("unknown bug mode `{bad}`; known: {}", names.join(", ")),
                );
            }
        }
        let mut options = checkers::CheckOptions::default();
        for kind in &self.check.allow {
            if let Err(e) = options.allow(kind) {
                return invalid("check.allow", e.to_string());
            }
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid(
                "name",
                format!(
                    "`{}` must be non-empty letters, digits, '-' or '_' (it names a folder)",
                    self.name
                ),
            );
        }
        if !(1..=9).contains(&self.nodes) {
            return invalid(
                "nodes",
                format!("{} is outside 1..=9 (3 or 5 are usual)", self.nodes),
            );
        }
        if self.replication_factor == 0 || usize::from(self.replication_factor) > self.nodes {
            return invalid(
                "replication-factor",
                format!(
                    "{} must be between 1 and the node count {}",
                    self.replication_factor, self.nodes
                ),
            );
        }
        if self.partitions == 0 {
            return invalid("partitions", "must be at least 1".into());
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return invalid("rate", format!("{} must be a positive number", self.rate));
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1".into());
        }
        if self.time_limit == 0 {
            return invalid("time-limit", "must be at least 1 second".into());
        }
        if !(self.nemesis_interval > 0.0 && self.nemesis_interval.is_finite()) {
            return invalid(
                "nemesis-interval",
                format!(
                    "{} must be a positive number of seconds",
                    self.nemesis_interval
                ),
            );
        }
        if !matches!(
            self.client.isolation_level.as_str(),
            "read_committed" | "read_uncommitted"
        ) {
            return invalid(
                "client.isolation-level",
                format!(
                    "`{}` is not read_committed or read_uncommitted",
                    self.client.isolation_level
                ),
            );
        }
        let strategies: Vec<&str> = self.client.assignment_strategy.split(',').collect();
        if let Some(bad) = strategies
            .iter()
            .find(|s| client::Assignor::from_name(s.trim()).is_none())
        {
            return invalid(
                "client.assignment-strategy",
                format!("`{bad}` is not range or roundrobin (a comma-separated list of them)"),
            );
        }
        if self.client.transactions && !self.client.idempotence {
            return invalid(
                "client.transactions",
                "transactions need client.idempotence = true (as in Kafka)".into(),
            );
        }
        if self.client.transactions && self.client.isolation_level != "read_committed" {
            return invalid(
                "client.isolation-level",
                "with transactions, a read_uncommitted consumer reads aborted writes by design; \
                 use --isolation-level read_committed"
                    .into(),
            );
        }
        if let Some(v) = self.broker.get("min.insync.replicas") {
            match v.parse::<u16>() {
                Ok(n) if n >= 1 => {
                    if n > self.replication_factor && !self.allow_unwritable {
                        return invalid(
                            "broker.\"min.insync.replicas\"",
                            format!(
                                "{n} is above the replication factor {}: every acks=all write \
                                 would be refused; lower it, or pass --allow-unwritable \
                                 (allow-unwritable = true) if that is what you want to test",
                                self.replication_factor
                            ),
                        );
                    }
                }
                _ => {
                    return invalid(
                        "broker.\"min.insync.replicas\"",
                        format!("`{v}` is not a positive integer"),
                    )
                }
            }
        }
        let bundled = self.system == crate::system::SystemKind::Bundled;
        let known: Vec<String> = if bundled && !self.broker.is_empty() {
            crate::system::bundled_config_keys().map_err(|e| SpecError::Invalid {
                field: "broker".into(),
                reason: format!("cannot list the broker's configuration keys: {e}"),
            })?
        } else {
            Vec::new()
        };
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        if let Some(bad) = self
            .broker
            .keys()
            .find(|k| bundled && !known.contains(&k.as_str()))
        {
            let hint = nearest(bad, &known)
                .map(|k| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            return invalid(
                &format!("broker.\"{bad}\""),
                format!(
                    "`{bad}` is not a property the broker knows; {hint}(docs/BROKER.md lists them)"
                ),
            );
        }
        if let Err(reason) = crate::system::for_spec(self).and_then(|s| s.check(self)) {
            return invalid("system", reason);
        }
        match (self.backend, &self.ssh) {
            (Backend::Ssh, None) => {
                return invalid(
                    "ssh",
                    "backend ssh needs an [ssh] table with hosts and user".into(),
                )
            }
            (Backend::Ssh, Some(ssh)) if ssh.hosts.len() != self.nodes => {
                return invalid(
                    "ssh.hosts",
                    format!(
                        "{} hosts given for {} nodes; give one host per node",
                        ssh.hosts.len(),
                        self.nodes
                    ),
                )
            }
            (Backend::Ssh, Some(ssh)) => {
                if ssh.user.trim().is_empty() {
                    return invalid("ssh.user", "must name the remote user".into());
                }
                if ssh.known_hosts.is_some() && !ssh.fingerprints.is_empty() {
                    return invalid(
                        "ssh.fingerprints",
                        "give either ssh.known-hosts or ssh.fingerprints, not both".into(),
                    );
                }
                if let Some(bad) = ssh.fingerprints.iter().find(|f| !f.starts_with("SHA256:")) {
                    return invalid(
                        "ssh.fingerprints",
                        format!(
                            "`{bad}` is not a SHA256:... fingerprint (see `ssh-keygen -lf KEY`)"
                        ),
                    );
                }
                if let Some(dir) = &ssh.remote_dir {
                    if !dir.is_absolute() || dir == Path::new("/") {
                        return invalid(
                            "ssh.remote-dir",
                            format!("`{}` must be an absolute path other than /", dir.display()),
                        );
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The known name nearest `word`, if any is close (at most a third of its length away).
pub fn nearest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(word, k), *k))
        .filter(|(d, _)| *d <= (word.len() / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_insync_above_rf_and_unknown_broker_keys_are_refused() {
        let mut spec = TestSpec {
            nodes: 3,
            replication_factor: 3,
            ..TestSpec::default()
        };
        spec.broker.insert("min.insync.replicas".into(), "9".into());
        let err = spec.validate().expect_err("9 > 3").to_string();
        assert!(
            err.contains("min.insync.replicas") && err.contains("allow-unwritable"),
            "{err}"
        );
        spec.allow_unwritable = true;
        spec.validate().expect("on purpose");
        spec.broker.insert("bogus.key".into(), "1".into());
        let err = spec.validate().expect_err("unknown key").to_string();
        assert!(err.contains("bogus.key"), "{err}");
        spec.broker.remove("bogus.key");
        spec.broker.insert("min.insync.replica".into(), "2".into());
        let err = spec.validate().expect_err("typo").to_string();
        assert!(err.contains("did you mean `min.insync.replicas`"), "{err}");
        spec.broker.remove("min.insync.replica");
        spec.broker
            .insert("log.flush.interval.messages".into(), "1".into());
        spec.broker.insert("flush.messages".into(), "1".into());
        spec.validate().expect("broker and topic keys are known");
    }

    #[test]
    fn the_default_test_injects_partitions_and_kills() {
        let spec = TestSpec::default();
        assert_eq!(spec.nemesis, vec![FaultKind::Partition, FaultKind::Kill]);
    }

    #[test]
    fn toml_overrides_defaults_and_keeps_the_rest() {
        let spec = TestSpec::from_toml(
            r#"
            nodes = 3
            time-limit = 20
            nemesis = ["partition", "kill"]
            [broker]
            "min.insync.replicas" = "2"
            [client]
            acks = "1"
            "#,
        )
        .expect("valid spec");
        assert_eq!(spec.nodes, 3);
        assert_eq!(spec.time_limit, 20);
        assert_eq!(spec.nemesis, vec![FaultKind::Partition, FaultKind::Kill]);
        assert_eq!(spec.client.acks, Acks::Leader);
        assert_eq!(spec.partitions, TestSpec::default().partitions);
        assert_eq!(spec.broker["min.insync.replicas"], "2");
        spec.validate().expect("valid");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let err = TestSpec::from_toml("nodez = 3").expect_err("unknown field");
        assert!(err.contains("nodez"), "{err}");
        let err = TestSpec::from_toml("[client]\nacks = \"2\"").expect_err("bad acks");
        assert!(err.contains("acks") || err.contains('2'), "{err}");
        let spec = TestSpec {
            replication_factor: 7,
            nodes: 3,
            ..TestSpec::default()
        };
        let err = spec.validate().expect_err("rf > nodes").to_string();
        assert!(err.contains("replication-factor"), "{err}");
        let mut spec = TestSpec::from_toml("[client]\nassignment-strategy = \"roundrobin,range\"")
            .expect("spec");
        spec.validate().expect("both assignors are known");
        spec.client.assignment_strategy = "roundrobin,sticky".into();
        let err = spec.validate().expect_err("unknown assignor").to_string();
        assert!(
            err.contains("assignment-strategy") && err.contains("sticky"),
            "{err}"
        );
    }

    #[test]
    fn ssh_backend_needs_one_host_per_node() {
        let spec = TestSpec {
            backend: Backend::Ssh,
            nodes: 3,
            ssh: Some(SshSpec {
                hosts: vec!["a".into()],
                user: "root".into(),
                ..SshSpec::default()
            }),
            ..TestSpec::default()
        };
        let err = spec.validate().expect_err("too few hosts").to_string();
        assert!(err.contains("ssh.hosts"), "{err}");
    }

    #[test]
    fn ssh_settings_are_checked() {
        let spec = TestSpec::from_toml(
            r#"
            nodes = 1
            replication-factor = 1
            backend = "ssh"
            [ssh]
            hosts = ["10.0.0.1:2222"]
            user = "root"
            fingerprints = ["SHA256:abc"]
            remote-dir = "/srv/jh"
            "#,
        )
        .expect("valid spec");
        spec.validate().expect("valid");
        let with = |f: &dyn Fn(&mut SshSpec)| {
            let mut s = spec.clone();
            if let Some(ssh) = s.ssh.as_mut() {
                f(ssh);
            }
            s.validate().map_err(|e| e.to_string())
        };
        let err = with(&|s| s.known_hosts = Some("/k".into())).expect_err("both");
        assert!(err.contains("either"), "{err}");
        let err = with(&|s| s.fingerprints = vec!["MD5:aa".into()]).expect_err("not sha256");
        assert!(err.contains("SHA256"), "{err}");
        let err = with(&|s| s.remote_dir = Some("rel/dir".into())).expect_err("relative");
        assert!(err.contains("ssh.remote-dir"), "{err}");
        let err = with(&|s| s.user = String::new()).expect_err("no user");
        assert!(err.contains("ssh.user"), "{err}");
        let err = TestSpec::from_toml("[ssh]\nhosts = []\nuser = \"u\"\nknwon-hosts = \"/k\"")
            .expect_err("typo");
        assert!(err.contains("knwon-hosts"), "{err}");
    }
}
