//! The node trait faults are applied through, the service description and backend capabilities.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::disk::DiskControl;
use crate::error::{NemesisError, NodeError};

/// Every kind of fault the nemesis knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Network partitions (nft drop rules).
    Partition,
    /// Random packet loss.
    PacketLoss,
    /// Added network latency (needs netem).
    Latency,
    /// kill -9 and restart, graceful stop and restart.
    Kill,
    /// SIGSTOP / SIGCONT.
    Pause,
    /// Clock bumps and strobes.
    Clock,
    /// FUSE disk faults (latency, stall, EIO, lose unfsynced writes).
    Disk,
    /// Offline file faults (truncate, bit flips).
    FileCorruption,
    /// A scripted failover: kill -9 the followers of one partition's leader, isolate that
    /// leader, restart the followers (they can only elect among themselves), heal later. A
    /// restarted follower that trusts a stale state (KIP-101's scenario) becomes leader before
    /// it could fetch again from the old one. Built from kills and partitions.
    FollowerRestartFailover,
    /// A scripted failover: cut one partition leader's peers from its data port (replication
    /// stops while its control-plane traffic flows, so the leader can shrink the ISR to
    /// itself), then isolate it entirely so the others elect a new leader, heal later. Jepsen
    /// 2013's Kafka scenario. Built from partitions.
    ReplicationCutFailover,
    /// [`FaultKind::ReplicationCutFailover`] aimed at the group coordinator (the leader of the
    /// run's group's offsets partition): its replication is cut until its ISR is itself, then it
    /// is isolated (its clients still reaching it) and another replica takes over the group.
    /// Built from partitions.
    CoordinatorCutFailover,
    /// A scripted failover aimed at `acks=0`/`acks=1`: one partition's leader is cut from its
    /// peers (its clients still reach it, so it goes on acknowledging what its followers never
    /// fetch) until the others elect one of its in-sync followers, healed one interval later.
    /// Built from partitions.
    LeaderIsolation,
    /// A scripted crash aimed at `acks=all` with `min.insync.replicas=1`: one partition
    /// leader's replication cut for one interval (its followers fall out of the ISR while the
    /// controller still hears from the leader, which then acknowledges alone where min.insync
    /// allows), then the leader killed -9 losing its unfsynced writes (a power loss), the cut
    /// healed, and the leader restarted one interval after the crash, the only replica an
    /// election without unclean election may pick. Built from partitions, kills and the disk
    /// fault FS.
    IsrShrinkCrash,
    /// A zombie consumer, applied in the workload rather than on a node: one subscribed
    /// consumer stops polling (and so heartbeating) for longer than its session, as after a
    /// long GC pause, while the group rebalances its partitions to the others and they commit
    /// past its positions; then it commits its old positions as its old generation before it
    /// notices. Kafka refuses the commit (the member is gone or its generation is stale); a
    /// coordinator that took it would move the group's offsets back (`lost-commit`).
    ZombieConsumer,
}

impl FaultKind {
    /// Every fault kind, in a fixed order.
    pub const ALL: [FaultKind; 14] = [
        FaultKind::Partition,
        FaultKind::PacketLoss,
        FaultKind::Latency,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Clock,
        FaultKind::Disk,
        FaultKind::FileCorruption,
        FaultKind::FollowerRestartFailover,
        FaultKind::ReplicationCutFailover,
        FaultKind::CoordinatorCutFailover,
        FaultKind::LeaderIsolation,
        FaultKind::IsrShrinkCrash,
        FaultKind::ZombieConsumer,
    ];

    /// The name used on the command line (`--nemesis partition,kill`).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::Latency => "latency",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Clock => "clock",
            FaultKind::Disk => "disk",
            FaultKind::FileCorruption => "file-corruption",
            FaultKind::FollowerRestartFailover => "follower-restart-failover",
            FaultKind::ReplicationCutFailover => "replication-cut-failover",
            FaultKind::CoordinatorCutFailover => "coordinator-cut-failover",
            FaultKind::LeaderIsolation => "leader-isolation",
            FaultKind::IsrShrinkCrash => "isr-shrink-crash",
            FaultKind::ZombieConsumer => "zombie-consumer",
        }
    }

    /// The primitive kinds a node must support for this one (a scripted fault is built from
    /// kills and partitions).
    pub fn components(self) -> Vec<FaultKind> {
        match self {
            FaultKind::FollowerRestartFailover => vec![FaultKind::Kill, FaultKind::Partition],
            FaultKind::ReplicationCutFailover
            | FaultKind::CoordinatorCutFailover
            | FaultKind::LeaderIsolation => vec![FaultKind::Partition],
            FaultKind::IsrShrinkCrash => {
                vec![FaultKind::Partition, FaultKind::Kill, FaultKind::Disk]
            }
            // Nothing of a node: the workload's consumers do it.
            FaultKind::ZombieConsumer => Vec::new(),
            k => vec![k],
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<FaultKind, NemesisError> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                NemesisError::Invalid(format!(
                    "unknown fault kind `{s}`; known kinds: {}",
                    names.join(", ")
                ))
            })
    }
}

impl std::str::FromStr for FaultKind {
    type Err = NemesisError;
    fn from_str(s: &str) -> Result<FaultKind, NemesisError> {
        FaultKind::parse(s)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which faults a backend can do: everything not refused (with a reason) is supported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Refused fault kinds and why.
    pub refused: BTreeMap<FaultKind, String>,
}

impl Capabilities {
    /// A backend that can do every fault.
    pub fn all() -> Self {
        Self::default()
    }

    /// Marks `kind` unsupported with `reason`.
    pub fn refuse(mut self, kind: FaultKind, reason: impl Into<String>) -> Self {
        self.refused.insert(kind, reason.into());
        self
    }

    /// `Ok` when `kind` is supported, else the reason it is not.
    pub fn check(&self, kind: FaultKind) -> Result<(), String> {
        for k in kind.components() {
            if let Some(reason) = self.refused.get(&k) {
                return Err(reason.clone());
            }
        }
        Ok(())
    }
}

/// The output of a command run on a node.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// How the node's service (the broker) is started.
#[derive(Debug, Clone, Default)]
pub struct ServiceSpec {
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr are appended.
    pub log_file: PathBuf,
    /// Start it under libfaketime (needed for clock faults on netns/local/docker nodes).
    pub fake_clock: bool,
}

/// A signal the nemesis sends to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Term,
    /// SIGSTOP.
    Stop,
    /// SIGCONT.
    Cont,
}

/// How to stop a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGKILL the process group and reap it.
    Kill,
    /// SIGTERM (and SIGCONT, in case it is paused), wait up to the grace period, then SIGKILL.
    Graceful(Duration),
}

/// A node the harness deploys a service onto and the nemesis applies faults to.
///
/// Object-safe: the harness holds `Arc<dyn Node>`.
pub trait Node: Send + Sync + fmt::Debug {
    /// The node's name (`n1`, `n2`, ...).
    fn name(&self) -> &str;
    /// The address peers and clients use to reach it.
    fn address(&self) -> IpAddr;
    /// The address the node sees the harness's (clients') traffic come from, if distinct from
    /// peers (the bridge address on netns). Used by "cut clients from one node".
    fn client_address(&self) -> Option<IpAddr>;
    /// Runs a command on the node (inside its namespace, over ssh, ...).
    fn exec(&self, argv: &[&str]) -> Result<CommandOutput, NodeError>;
    /// Sets how the service is started (kept for restarts).
    fn set_service(&self, spec: ServiceSpec);
    /// Starts the service; returns its pid. Starting a running service is an error.
    fn start_service(&self) -> Result<u32, NodeError>;
    /// Stops the service and reaps it. Stopping a stopped service is a no-op.
    fn stop_service(&self, mode: StopMode) -> Result<(), NodeError>;
    /// Sends a signal to the service's process group.
    fn signal_service(&self, signal: Signal) -> Result<(), NodeError>;
    /// The pid of the running service, if it is running.
    fn service_pid(&self) -> Option<u32>;
    /// The node's data directory (as the service sees it): what the service writes and what
    /// disk faults act on (a fault FS mount when the run has disk faults).
    fn data_dir(&self) -> PathBuf;
    /// The node's own directory for what the harness writes for it (configs, scripts) and the
    /// service's log: never on the fault FS, so a fault can lose data but never the node's
    /// configuration. Every backend keeps [`Node::data_dir`] inside it.
    fn home_dir(&self) -> PathBuf;
    /// The libfaketime timestamp file of this node, when clocks can be faked.
    fn clock_file(&self) -> Option<PathBuf>;
    /// The disk-fault controls of the node's data dir, when it is a fault FS mount.
    fn disk(&self) -> Option<Arc<DiskControl>>;
    /// Which faults this backend can do.
    fn capabilities(&self) -> Capabilities;
}
