//! The [`Nemesis`] guard: applies actions to nodes, returns the nemesis op for each, remembers
//! every active fault, and undoes them all on [`Nemesis::heal_all`] and on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::clock::{self, Strobe};
use crate::disk;
use crate::error::NemesisError;
use crate::net::{self, Grudge, LOSS_TABLE, PARTITION_TABLE};
use crate::node::{FaultKind, Node, Signal, StopMode};
use crate::op::NemesisOp;
use crate::process::lock;
use crate::schedule::Action;

/// How long a graceful stop waits before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Active {
    partitioned: BTreeSet<String>,
    lossy: BTreeSet<String>,
    clocks: BTreeSet<String>,
    strobes: Vec<Strobe>,
    disks: BTreeSet<String>,
    paused: BTreeSet<String>,
    down: BTreeSet<String>,
}

/// Faults the nemesis applies through the workload's clients rather than on a node.
pub trait ClientFaults: Send + Sync + std::fmt::Debug {
    /// Makes one subscribed consumer a zombie: it stops polling for `stall`, then commits its
    /// old positions. Returns what the op records.
    fn stall_consumer(&self, stall: Duration) -> Result<serde_json::Value, NemesisError>;
}

/// Applies faults to a set of nodes and guarantees they are undone.
#[derive(Debug)]
pub struct Nemesis {
    nodes: BTreeMap<String, Arc<dyn Node>>,
    rng: Mutex<ChaCha8Rng>,
    active: Mutex<Active>,
    clients: Option<Arc<dyn ClientFaults>>,
}

impl Nemesis {
    /// A nemesis over `nodes`, its random choices (topologies) seeded by `seed`.
    pub fn new(nodes: Vec<Arc<dyn Node>>, seed: u64) -> Self {
        Self {
            nodes: nodes
                .into_iter()
                .map(|n| (n.name().to_string(), n))
                .collect(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            active: Mutex::new(Active::default()),
            clients: None,
        }
    }

    /// The nemesis with the workload's client faults (what `zombie-consumer` needs).
    pub fn with_client_faults(mut self, clients: Arc<dyn ClientFaults>) -> Self {
        self.clients = Some(clients);
        self
    }

    /// The node names, sorted.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Refuses fault kinds that some node cannot do, with the reason (call it at run start).
    pub fn check_supported(&self, kinds: &[FaultKind]) -> Result<(), NemesisError> {
        for kind in kinds {
            if *kind == FaultKind::ZombieConsumer && self.clients.is_none() {
                return Err(NemesisError::Invalid(
                    "zombie-consumer needs the workload's subscribed consumers; this run has \
                     none to stall"
                        .into(),
                ));
            }
            for node in self.nodes.values() {
                node.capabilities()
                    .check(*kind)
                    .map_err(|reason| NemesisError::Unsupported {
                        node: node.name().to_string(),
                        fault: *kind,
                        reason,
                    })?;
            }
        }
        Ok(())
    }

    fn node(&self, name: &str) -> Result<&Arc<dyn Node>, NemesisError> {
        self.nodes
            .get(name)
            .ok_or_else(|| NemesisError::UnknownNode(name.to_string()))
    }

    fn require(
        &self,
        names: &[String],
        kind: FaultKind,
    ) -> Result<Vec<Arc<dyn Node>>, NemesisError> {
        names
            .iter()
            .map(|n| {
                let node = self.node(n)?;
                node.capabilities()
                    .check(kind)
                    .map_err(|reason| NemesisError::Unsupported {
                        node: n.clone(),
                        fault: kind,
                        reason,
                    })?;
                Ok(node.clone())
            })
            .collect()
    }

    /// Applies one action; returns the op to record in the history.
    pub fn apply(&self, action: &Action) -> Result<NemesisOp, NemesisError> {
        match action {
            Action::StallConsumer { stall_ms } => {
                let clients = self.clients.as_ref().ok_or_else(|| {
                    NemesisError::Invalid("no workload consumers to stall".into())
                })?;
                let value = clients.stall_consumer(Duration::from_millis(*stall_ms))?;
                Ok(NemesisOp::new("stall-consumer", value))
            }
            Action::StartPartition { topology, seed } => {
                let names = self.node_names();
                let grudge = match seed {
                    Some(seed) => net::grudge_for_seed(topology, &names, *seed)?,
                    None => net::grudge(topology, &names, &mut *lock(&self.rng))?,
                };
                self.partition(&grudge)?;
                Ok(NemesisOp::new("start-partition", grudge.describe()))
            }
            Action::StopPartition => {
                let healed = self.heal_tables(PARTITION_TABLE, |a| &mut a.partitioned)?;
                Ok(NemesisOp::new("stop-partition", json!({"healed": healed})))
            }
            Action::StartPacketLoss { nodes, percent } => {
                if *percent == 0 || *percent > 100 {
                    return Err(NemesisError::Invalid(format!(
                        "packet loss percent must be 1-100, got {percent}"
                    )));
                }
                let targets = self.require(nodes, FaultKind::PacketLoss)?;
                for node in &targets {
                    let peers: Vec<IpAddr> = self
                        .nodes
                        .values()
                        .filter(|p| p.name() != node.name())
                        .map(|p| p.address())
                        .collect();
                    lock(&self.active).lossy.insert(node.name().to_string());
                    net::install_drops(node.as_ref(), LOSS_TABLE, &peers, Some(*percent))?;
                }
                Ok(NemesisOp::new(
                    "start-packet-loss",
                    json!({"nodes": nodes, "percent": percent}),
                ))
            }
            Action::StopPacketLoss => {
                let healed = self.heal_tables(LOSS_TABLE, |a| &mut a.lossy)?;
                Ok(NemesisOp::new(
                    "stop-packet-loss",
                    json!({"healed": healed}),
                ))
            }
            Action::StartLatency { nodes, .. } => {
                self.require(nodes, FaultKind::Latency)?;
                Err(NemesisError::Unsupported {
                    node: nodes.join(","),
                    fault: FaultKind::Latency,
                    reason: "latency injection is not implemented by this nemesis yet".into(),
                })
            }
            Action::Kill {
                nodes,
                lose_unfsynced,
            } => {
                let targets = self.require(nodes, FaultKind::Kill)?;
                let mut lost = BTreeMap::new();
                for node in &targets {
                    lock(&self.active).down.insert(node.name().to_string());
                    node.stop_service(StopMode::Kill)?;
                    lock(&self.active).paused.remove(node.name());
                    if *lose_unfsynced {
                        let disk = node.disk().ok_or_else(|| NemesisError::Unsupported {
                            node: node.name().to_string(),
                            fault: FaultKind::Disk,
                            reason: "its data dir is not a fault FS mount (start the run with disk faults)".into(),
                        })?;
                        let (files, bytes) = disk.lose_unfsynced()?;
                        lost.insert(
                            node.name().to_string(),
                            json!({"files": files, "bytes": bytes}),
                        );
                    }
                }
                let mut value = json!({"nodes": nodes, "signal": "KILL"});
                if *lose_unfsynced {
                    value["lost-unfsynced"] = json!(lost);
                }
                Ok(NemesisOp::new("kill", value))
            }
            Action::Stop { nodes } => {
                let targets = self.require(nodes, FaultKind::Kill)?;
                for node in &targets {
                    lock(&self.active).down.insert(node.name().to_string());
                    node.stop_service(StopMode::Graceful(GRACE))?;
                    lock(&self.active).paused.remove(node.name());
                }
                Ok(NemesisOp::new(
                    "stop",
                    json!({"nodes": nodes, "signal": "TERM"}),
                ))
            }
            Action::Start { nodes } => {
                let mut started = Vec::new();
                for name in nodes {
                    let node = self.node(name)?;
                    if node.service_pid().is_none() {
                        let pid = node.start_service()?;
                        started.push(json!([name, pid]));
                    }
                    lock(&self.active).down.remove(name);
                }
                Ok(NemesisOp::new(
                    "start",
                    json!({"nodes": nodes, "started": started}),
                ))
            }
            Action::Pause { nodes } => {
                let targets = self.require(nodes, FaultKind::Pause)?;
                for node in &targets {
                    lock(&self.active).paused.insert(node.name().to_string());
                    node.signal_service(Signal::Stop)?;
                }
                Ok(NemesisOp::new(
                    "pause",
                    json!({"nodes": nodes, "signal": "STOP"}),
                ))
            }
            Action::Resume { nodes } => {
                for name in nodes {
                    let node = self.node(name)?;
                    if node.service_pid().is_some() {
                        node.signal_service(Signal::Cont)?;
                    }
                    lock(&self.active).paused.remove(name);
                }
                Ok(NemesisOp::new(
                    "resume",
                    json!({"nodes": nodes, "signal": "CONT"}),
                ))
            }
            Action::BumpClock { nodes, offset_ms } => {
                let files = self.clock_files(nodes)?;
                for (name, f) in &files {
                    lock(&self.active).clocks.insert(name.clone());
                    clock::set_offset(f, *offset_ms)?;
                }
                Ok(NemesisOp::new(
                    "bump-clock",
                    json!({"nodes": nodes, "offset-ms": offset_ms}),
                ))
            }
            Action::StrobeClock {
                nodes,
                delta_ms,
                period_ms,
                duration_ms,
            } => {
                let files = self.clock_files(nodes)?;
                let mut a = lock(&self.active);
                a.clocks.extend(files.iter().map(|(n, _)| n.clone()));
                a.strobes.push(Strobe::start(
                    files.into_iter().map(|(_, f)| f).collect(),
                    *delta_ms,
                    Duration::from_millis(*period_ms),
                    Duration::from_millis(*duration_ms),
                ));
                Ok(NemesisOp::new(
                    "strobe-clock",
                    json!({"nodes": nodes, "delta-ms": delta_ms, "period-ms": period_ms, "duration-ms": duration_ms}),
                ))
            }
            Action::ResetClock { nodes } => {
                let reset = self.reset_clocks(nodes)?;
                Ok(NemesisOp::new("reset-clock", json!({"nodes": reset})))
            }
            Action::StartDisk { nodes, fault } => {
                for name in nodes {
                    let disk = self.disk_of(name)?;
                    lock(&self.active).disks.insert(name.clone());
                    disk.start(fault);
                }
                Ok(NemesisOp::new(
                    "start-disk",
                    json!({"nodes": nodes, "fault": fault}),
                ))
            }
            Action::StopDisk { nodes } => {
                let mut cleared = Vec::new();
                for name in nodes {
                    if let Some(d) = self.node(name)?.disk() {
                        d.clear();
                        cleared.push(name.clone());
                    }
                    lock(&self.active).disks.remove(name);
                }
                Ok(NemesisOp::new("stop-disk", json!({"nodes": cleared})))
            }
            Action::CorruptFile { node, fault } => {
                let n = self.require(std::slice::from_ref(node), FaultKind::FileCorruption)?;
                let n = &n[0];
                let was_running = n.service_pid().is_some();
                n.stop_service(StopMode::Graceful(GRACE))?;
                let seed = match fault {
                    disk::FileFault::TruncateTail { seed, .. }
                    | disk::FileFault::BitFlip { seed, .. } => *seed,
                };
                // Through the backing dir when the data dir is a fault FS (a stalled mount would
                // block the scan), and within the broker's log dirs (`data/`) when they exist,
                // so the fault hits segments rather than the service's own log file.
                let root = n
                    .disk()
                    .map(|d| d.backing().to_path_buf())
                    .unwrap_or_else(|| n.data_dir());
                let dir = if root.join("data").is_dir() {
                    root.join("data")
                } else {
                    root
                };
                let detail = match disk::pick_file(&dir, seed) {
                    Some(file) => disk::corrupt_file(&file, fault)?,
                    None => json!({"file": null, "note": "no non-empty file in the data dir"}),
                };
                if was_running {
                    n.start_service()?;
                }
                Ok(NemesisOp::new(
                    "corrupt-file",
                    json!({"node": node, "fault": fault, "detail": detail}),
                ))
            }
        }
    }

    fn disk_of(&self, name: &str) -> Result<Arc<disk::DiskControl>, NemesisError> {
        let node = self.require(&[name.to_string()], FaultKind::Disk)?;
        node[0].disk().ok_or_else(|| NemesisError::Unsupported {
            node: name.to_string(),
            fault: FaultKind::Disk,
            reason: "its data dir is not a fault FS mount (start the run with disk faults)".into(),
        })
    }

    fn clock_files(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, std::path::PathBuf)>, NemesisError> {
        self.require(names, FaultKind::Clock)?
            .into_iter()
            .map(|n| {
                let f = n.clock_file().ok_or_else(|| NemesisError::Unsupported {
                    node: n.name().to_string(),
                    fault: FaultKind::Clock,
                    reason: "the node has no clock file".into(),
                })?;
                Ok((n.name().to_string(), f))
            })
            .collect()
    }

    fn reset_clocks(&self, names: &[String]) -> Result<Vec<String>, NemesisError> {
        let strobes: Vec<Strobe> = std::mem::take(&mut lock(&self.active).strobes);
        drop(strobes); // each resets its files to 0
        let mut reset = Vec::new();
        for name in names {
            if let Some(f) = self.node(name)?.clock_file() {
                if f.exists() {
                    clock::set_offset(&f, 0)?;
                    reset.push(name.clone());
                }
            }
            lock(&self.active).clocks.remove(name);
        }
        Ok(reset)
    }

    fn partition(&self, grudge: &Grudge) -> Result<(), NemesisError> {
        for name in grudge.targets() {
            let node = self.require(std::slice::from_ref(&name), FaultKind::Partition)?;
            let node = &node[0];
            let mut addrs: Vec<IpAddr> = grudge
                .drops
                .get(&name)
                .into_iter()
                .flatten()
                .map(|p| self.node(p).map(|n| n.address()))
                .collect::<Result<_, _>>()?;
            if grudge.clients_cut.contains(&name) {
                let client = node
                    .client_address()
                    .ok_or_else(|| NemesisError::Unsupported {
                        node: name.clone(),
                        fault: FaultKind::Partition,
                        reason: "the backend has no distinct client address to cut".into(),
                    })?;
                addrs.push(client);
            }
            lock(&self.active).partitioned.insert(name.clone());
            net::install_port_drops(node.as_ref(), PARTITION_TABLE, &addrs, None, grudge.port)?;
        }
        Ok(())
    }

    fn heal_tables(
        &self,
        table: &str,
        set: impl Fn(&mut Active) -> &mut BTreeSet<String>,
    ) -> Result<Vec<String>, NemesisError> {
        let names: Vec<String> = std::mem::take(set(&mut lock(&self.active)))
            .into_iter()
            .collect();
        let mut errors = Vec::new();
        for name in &names {
            if let Err(e) = net::delete_table(self.node(name)?.as_ref(), table) {
                errors.push(e.to_string());
                set(&mut lock(&self.active)).insert(name.clone());
            }
        }
        if errors.is_empty() {
            Ok(names)
        } else {
            Err(NemesisError::Heal(errors))
        }
    }

    /// Undoes every active fault in the fixed order (partitions, packet rules, clocks, disks,
    /// resume, restart) and returns the ops; keeps going past errors and reports them all.
    pub fn heal_all(&self) -> Result<Vec<NemesisOp>, NemesisError> {
        self.heal(true)
    }

    fn heal(&self, restart: bool) -> Result<Vec<NemesisOp>, NemesisError> {
        let (clocks, disks, paused, down) = {
            let a = lock(&self.active);
            let v = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
            (v(&a.clocks), v(&a.disks), v(&a.paused), v(&a.down))
        };
        let has_strobes = !lock(&self.active).strobes.is_empty();
        let mut actions = vec![Action::StopPartition, Action::StopPacketLoss];
        if !clocks.is_empty() || has_strobes {
            actions.push(Action::ResetClock { nodes: clocks });
        }
        if !disks.is_empty() {
            actions.push(Action::StopDisk { nodes: disks });
        }
        if !paused.is_empty() {
            actions.push(Action::Resume { nodes: paused });
        }
        if restart && !down.is_empty() {
            actions.push(Action::Start { nodes: down });
        }
        let mut ops = Vec::new();
        let mut errors = Vec::new();
        for a in &actions {
            match self.apply(a) {
                Ok(op) => ops.push(op),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(ops)
        } else {
            Err(NemesisError::Heal(errors))
        }
    }
}

impl Drop for Nemesis {
    /// Heals network rules, clocks, disks and pauses (restarting services is left to the
    /// harness, which is tearing down when the guard drops).
    fn drop(&mut self) {
        if let Err(e) = self.heal(false) {
            tracing::warn!("nemesis heal on drop: {e}");
        }
    }
}
