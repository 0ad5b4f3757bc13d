//! Deploying the bundled broker: each node's `server.properties` derived from the test spec
//! (every node a broker, the first three — or all, when fewer — also controllers, as a KRaft
//! combined quorum), with the spec's broker properties applied last so users can override any
//! default here.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nemesis::{Node, ServiceSpec, StopMode};

use crate::spec::TestSpec;

/// Deployment errors, each naming the node and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Writing a node's config failed.
    #[error("node {node}: writing {path}: {source}")]
    Config {
        /// Node.
        node: String,
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The broker process could not be started.
    #[error("node {node}: starting the broker failed: {message}")]
    Start {
        /// Node.
        node: String,
        /// Why.
        message: String,
    },
    /// A broker never became ready.
    #[error("node {node}: broker not ready after {waited:?} ({what}); see its log {log}")]
    NotReady {
        /// Node.
        node: String,
        /// How long we waited.
        waited: Duration,
        /// What never answered.
        what: String,
        /// The broker's log.
        log: PathBuf,
    },
}

/// Kafka listener port on every node.
pub const KAFKA_PORT: u16 = 9092;
/// Controller listener port on every controller.
pub const CONTROLLER_PORT: u16 = 9093;
/// Metrics (`/metrics`, `/health`) port on every node.
pub const METRICS_PORT: u16 = 9100;

/// How many of `nodes` are controllers: 3 (or all nodes when fewer), as KRaft deployments do.
pub fn controller_count(nodes: usize) -> usize {
    nodes.min(3)
}

/// The `server.properties` text of node `index` (0-based; node ids start at 1).
pub fn broker_properties(
    spec: &TestSpec,
    index: usize,
    addrs: &[IpAddr],
    data_dir: &Path,
) -> String {
    let id = index + 1;
    let controllers = controller_count(addrs.len());
    let voters: Vec<String> = addrs
        .iter()
        .take(controllers)
        .enumerate()
        .map(|(i, a)| format!("{}@{a}:{CONTROLLER_PORT}", i + 1))
        .collect();
    let addr = addrs[index];
    let roles = if index < controllers {
        "broker,controller"
    } else {
        "broker"
    };
    let mut out = String::new();
    let mut set = |k: &str, v: String| {
        let _ = writeln!(out, "{k}={v}");
    };
    set("node.id", id.to_string());
    set("process.roles", roles.into());
    set("controller.quorum.voters", voters.join(","));
    set("listeners", format!("PLAINTEXT://{addr}:{KAFKA_PORT}"));
    set("metrics.listener", format!("http://{addr}:{METRICS_PORT}"));
    set("log.dirs", data_dir.join("data").display().to_string());
    set(
        "metadata.log.dir",
        data_dir.join("meta").display().to_string(),
    );
    set("num.partitions", spec.partitions.to_string());
    set(
        "default.replication.factor",
        spec.replication_factor.to_string(),
    );
    // Test-friendly timings: faults are detected in seconds, not Kafka's production defaults.
    set("broker.heartbeat.interval.ms", "500".into());
    set("broker.session.timeout.ms", "3000".into());
    set("replica.lag.time.max.ms", "5000".into());
    set("auto.create.topics.enable", "false".into());
    for (k, v) in &spec.broker {
        set(k, v.clone());
    }
    out
}

/// The broker's log file on a node: in its home dir, off the fault FS.
pub fn broker_log(node: &dyn Node) -> PathBuf {
    node.home_dir().join("broker.log")
}

/// A node's `server.properties`: in its home dir, so a disk fault on the data dir (lost
/// unfsynced writes, EIO) can never take the broker's configuration with it.
pub fn broker_config(node: &dyn Node) -> PathBuf {
    node.home_dir().join("server.properties")
}

/// Where deploy writes the files a node's service reads (its `server.properties`).
pub trait NodeFiles {
    /// Writes `contents` to `path` as `node`'s service sees it, creating the directory.
    fn write(&self, node: &dyn Node, path: &Path, contents: &[u8]) -> std::io::Result<()>;
}

/// Node dirs on the harness's own filesystem (netns, local, and docker, whose node dirs are
/// bind-mounted at the same path).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFiles;

impl NodeFiles for HostFiles {
    fn write(&self, _node: &dyn Node, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, contents)
    }
}

/// Writes every node's `server.properties` and starts its broker (`fake_clock` when the run
/// includes clock faults).
pub fn start_brokers(
    nodes: &[Arc<dyn Node>],
    spec: &TestSpec,
    broker_bin: &Path,
    fake_clock: bool,
) -> Result<(), DeployError> {
    start_brokers_with(nodes, spec, broker_bin, fake_clock, &HostFiles)
}

/// [`start_brokers`] writing each node's files through `files` (the ssh backend uploads them).
pub fn start_brokers_with(
    nodes: &[Arc<dyn Node>],
    spec: &TestSpec,
    broker_bin: &Path,
    fake_clock: bool,
    files: &dyn NodeFiles,
) -> Result<(), DeployError> {
    prepare_brokers(nodes, spec, broker_bin, fake_clock, files)?;
    start_all(nodes)
}

/// Writes every node's `server.properties` and sets its broker service (not started).
pub fn prepare_brokers(
    nodes: &[Arc<dyn Node>],
    spec: &TestSpec,
    broker_bin: &Path,
    fake_clock: bool,
    files: &dyn NodeFiles,
) -> Result<(), DeployError> {
    let addrs: Vec<IpAddr> = nodes.iter().map(|n| n.address()).collect();
    for (i, node) in nodes.iter().enumerate() {
        let dir = node.data_dir();
        let path = broker_config(node.as_ref());
        files
            .write(
                node.as_ref(),
                &path,
                broker_properties(spec, i, &addrs, &dir).as_bytes(),
            )
            .map_err(|source| DeployError::Config {
                node: node.name().to_string(),
                path: path.clone(),
                source,
            })?;
        node.set_service(ServiceSpec {
            program: broker_bin.to_path_buf(),
            args: ["--config".to_string(), path.display().to_string()]
                .into_iter()
                .chain(
                    spec.bugs
                        .iter()
                        .flat_map(|b| ["--bug".to_string(), b.clone()]),
                )
                .collect(),
            env: vec![("RUST_LOG".into(), "info".into())],
            log_file: broker_log(node.as_ref()),
            fake_clock,
        });
    }
    Ok(())
}

/// Starts every node's service as set.
pub fn start_all(nodes: &[Arc<dyn Node>]) -> Result<(), DeployError> {
    for node in nodes {
        node.start_service().map_err(|e| DeployError::Start {
            node: node.name().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Waits until every node answers the Kafka protocol on `port` and its Metadata lists every
/// node as a broker (as a registered KRaft broker's does), or names the first node that never
/// did, with the last lines of `log` (a service that exits at start shows up here).
pub fn wait_ready_protocol(
    nodes: &[Arc<dyn Node>],
    port: u16,
    timeout: Duration,
    log: &dyn Fn(&dyn Node) -> PathBuf,
) -> Result<(), DeployError> {
    let start = Instant::now();
    for node in nodes {
        loop {
            let seen = crate::metadata::brokers_seen(node.as_ref(), port);
            if seen.is_some_and(|n| n >= nodes.len()) {
                break;
            }
            let gone = node.service_pid().is_none();
            if gone || start.elapsed() > timeout {
                return Err(DeployError::NotReady {
                    node: node.name().to_string(),
                    waited: start.elapsed(),
                    what: if gone {
                        "the service process exited".into()
                    } else {
                        match seen {
                            None => format!("no Metadata answer on {}:{port}", node.address()),
                            Some(n) => format!("its Metadata lists {n} of {} brokers", nodes.len()),
                        }
                    },
                    log: log(node.as_ref()),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Waits until every bundled broker answers Metadata on the Kafka port listing every node (the
/// Kafka protocol alone: no `/health`), or names the first node that never did, with its log.
pub fn wait_ready(nodes: &[Arc<dyn Node>], timeout: Duration) -> Result<(), DeployError> {
    wait_ready_protocol(nodes, KAFKA_PORT, timeout, &|n| broker_log(n))
}

/// The last `lines` lines of a log file on the harness's filesystem (empty when it cannot be
/// read, e.g. on an ssh node).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How a (re)started broker fared within a bounded wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartCheck {
    /// Its Kafka port accepted a connection from the harness.
    Answering,
    /// Still running, but not answering yet (it may be cut off or still recovering).
    Silent,
    /// The process exited: the start failed.
    Exited,
}

/// Watches a node's service for up to `timeout` after a start: answering on its client
/// `port`, still running but silent, or exited.
pub fn check_started(node: &dyn Node, port: u16, timeout: Duration) -> StartCheck {
    let start = Instant::now();
    let addr = SocketAddr::new(node.address(), port);
    loop {
        if node.service_pid().is_none() {
            return StartCheck::Exited;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            // Exiting right after binding (e.g. a failed log recovery) still counts as a failure.
            std::thread::sleep(Duration::from_millis(200));
            return if node.service_pid().is_none() {
                StartCheck::Exited
            } else {
                StartCheck::Answering
            };
        }
        if start.elapsed() > timeout {
            return StartCheck::Silent;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops every broker gracefully (SIGTERM, then SIGKILL after `grace`).
pub fn stop_brokers(nodes: &[Arc<dyn Node>], grace: Duration) {
    for node in nodes {
        if let Err(e) = node.stop_service(StopMode::Graceful(grace)) {
            tracing::warn!(node = node.name(), error = %e, "stopping the broker failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::collections::BTreeMap;

    /// `key=value` lines, later lines winning, as the broker reads them.
    fn config_lines(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    fn addrs(n: u8) -> Vec<IpAddr> {
        (1..=n).map(|i| IpAddr::from([10, 88, 0, 10 + i])).collect()
    }

    #[test]
    fn five_nodes_have_three_controllers_and_spec_properties_win() {
        let cli = Cli::try_parse_from([
            "harness",
            "test",
            "--nodes",
            "5",
            "--broker-prop",
            "min.insync.replicas=2",
            "--broker-prop",
            "replica.lag.time.max.ms=9000",
        ])
        .expect("parses");
        let crate::cli::Command::Test(args) = cli.command else {
            panic!("test")
        };
        let spec = args.to_spec().expect("valid");
        let a = addrs(5);
        let p1 = config_lines(&broker_properties(&spec, 0, &a, Path::new("/d/n1")));
        let p5 = config_lines(&broker_properties(&spec, 4, &a, Path::new("/d/n5")));
        assert_eq!(p1["process.roles"], "broker,controller");
        assert_eq!(p5["process.roles"], "broker");
        assert_eq!(
            p5["controller.quorum.voters"],
            "1@10.88.0.11:9093,2@10.88.0.12:9093,3@10.88.0.13:9093"
        );
        assert_eq!(p5["listeners"], "PLAINTEXT://10.88.0.15:9092");
        assert_eq!(p1["min.insync.replicas"], "2");
        assert_eq!(
            p1["replica.lag.time.max.ms"], "9000",
            "the spec overrides defaults"
        );
        assert_eq!(p5["log.dirs"], "/d/n5/data");
    }
}
