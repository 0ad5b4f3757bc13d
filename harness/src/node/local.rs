//! The `local` backend: plain processes on 127.0.0.x addresses (loopback aliases need no root
//! to bind), for machines without root. It can kill, pause and fake clocks (libfaketime) and
//! corrupt files; it refuses partitions, packet loss, latency and disk faults with a reason.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nemesis::disk::DiskControl;
use nemesis::process::Supervisor;
use nemesis::{
    Capabilities, CommandOutput, FaultKind, Node, NodeError, ServiceSpec, Signal, StopMode,
};

const NO_ROOT: &str = "the local backend runs plain processes without namespaces or root; use the netns backend (root) for this fault";

/// One local node.
#[derive(Debug)]
pub struct LocalNode {
    name: String,
    address: Ipv4Addr,
    dir: PathBuf,
    supervisor: Supervisor,
}

impl Node for LocalNode {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> IpAddr {
        IpAddr::V4(self.address)
    }
    fn client_address(&self) -> Option<IpAddr> {
        None
    }
    fn exec(&self, argv: &[&str]) -> Result<CommandOutput, NodeError> {
        let (first, rest) = argv
            .split_first()
            .ok_or_else(|| NodeError::Setup("empty command".into()))?;
        let out = Command::new(first)
            .args(rest)
            .output()
            .map_err(|source| NodeError::Spawn {
                node: self.name.clone(),
                command: argv.join(" "),
                source,
            })?;
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
    fn set_service(&self, spec: ServiceSpec) {
        self.supervisor.set_spec(spec);
    }
    fn start_service(&self) -> Result<u32, NodeError> {
        self.supervisor.start(&[], self.clock_file().as_deref())
    }
    fn stop_service(&self, mode: StopMode) -> Result<(), NodeError> {
        self.supervisor.stop(mode)
    }
    fn signal_service(&self, signal: Signal) -> Result<(), NodeError> {
        self.supervisor.signal(signal)
    }
    fn service_pid(&self) -> Option<u32> {
        self.supervisor.pid()
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn home_dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn clock_file(&self) -> Option<PathBuf> {
        Some(self.dir.join("faketime"))
    }
    fn disk(&self) -> Option<Arc<DiskControl>> {
        None
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
            .refuse(FaultKind::Partition, NO_ROOT)
            .refuse(FaultKind::PacketLoss, NO_ROOT)
            .refuse(FaultKind::Latency, NO_ROOT)
            .refuse(FaultKind::Disk, NO_ROOT)
    }
}

/// A set of local nodes n1..nN on 127.0.0.(10+i).
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<Arc<LocalNode>>,
}

impl LocalCluster {
    /// Creates `count` nodes with dirs under `base_dir`.
    pub fn create(count: usize, base_dir: &Path) -> Result<LocalCluster, NodeError> {
        if count == 0 || count > 200 {
            return Err(NodeError::Setup(format!(
                "node count must be 1-200, got {count}"
            )));
        }
        let mut nodes = Vec::new();
        for i in 1..=count {
            let name = format!("n{i}");
            let dir = base_dir.join(&name);
            std::fs::create_dir_all(dir.join("data"))
                .map_err(|e| NodeError::Setup(format!("{}: {e}", dir.display())))?;
            nodes.push(Arc::new(LocalNode {
                supervisor: Supervisor::new(&name),
                name,
                address: Ipv4Addr::new(127, 0, 0, 10 + i as u8),
                dir,
            }));
        }
        Ok(LocalCluster { nodes })
    }

    /// The nodes.
    pub fn nodes(&self) -> Vec<Arc<dyn Node>> {
        self.nodes
            .iter()
            .map(|n| n.clone() as Arc<dyn Node>)
            .collect()
    }

    /// Stops every service.
    pub fn teardown(&self) {
        for n in &self.nodes {
            let _ = n.supervisor.stop(StopMode::Kill);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}
