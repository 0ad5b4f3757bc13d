//! The `netns` backend: per node a network namespace (`jh<id>-nN`) with its own address on a
//! bridge (`jh<id>br`, subnet 10.X.Y.0/24 chosen from the id) joined by veth pairs
//! (`jh<id>vN`), the service started inside it with `ip netns exec`, its own data dir
//! (optionally a nemesis fault FS mount) and libfaketime clock file. Teardown removes
//! processes, mounts, namespaces, veths and the bridge; [`cleanup_leftovers`] removes those of
//! runs whose owning process is dead (an owner file per run id under [`OWNER_DIR`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use nemesis::disk::{DiskControl, DiskMount};
use nemesis::net::probe_netem;
use nemesis::process::{signal_group, Supervisor};
use nemesis::{
    Capabilities, CommandOutput, FaultKind, Node, NodeError, ServiceSpec, Signal, StopMode,
};

/// The name prefix of everything this backend creates.
pub const PREFIX: &str = "jh";
/// Where each run's owner file (`<id>` containing the owning pid) lives.
pub const OWNER_DIR: &str = "/run/jepsen-harness";

/// Options of a netns cluster.
#[derive(Debug, Clone, Default)]
pub struct NetnsOptions {
    /// Mount a nemesis fault FS as each node's data dir (needed for disk faults).
    pub disk_faults: bool,
}

fn run(argv: &[&str]) -> Result<CommandOutput, NodeError> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|source| NodeError::Spawn {
            node: "host".into(),
            command: argv.join(" "),
            source,
        })?;
    Ok(CommandOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn run_ok(argv: &[&str]) -> Result<CommandOutput, NodeError> {
    let out = run(argv)?;
    if out.success() {
        Ok(out)
    } else {
        Err(NodeError::CommandFailed {
            node: "host".into(),
            command: argv.join(" "),
            status: format!("{:?}", out.code),
            stderr: out.stderr.trim().to_string(),
        })
    }
}

/// One netns node.
pub struct NetnsNode {
    name: String,
    netns: String,
    address: Ipv4Addr,
    bridge_address: Ipv4Addr,
    dir: PathBuf,
    supervisor: Supervisor,
    disk: Mutex<Option<DiskMount>>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for NetnsNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsNode")
            .field("name", &self.name)
            .field("netns", &self.netns)
            .field("address", &self.address)
            .finish()
    }
}

impl NetnsNode {
    /// The namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    fn prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.netns.clone(),
        ]
    }
}

impl Node for NetnsNode {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> IpAddr {
        IpAddr::V4(self.address)
    }
    fn client_address(&self) -> Option<IpAddr> {
        Some(IpAddr::V4(self.bridge_address))
    }
    fn exec(&self, argv: &[&str]) -> Result<CommandOutput, NodeError> {
        let mut full: Vec<&str> = vec!["ip", "netns", "exec", &self.netns];
        full.extend_from_slice(argv);
        run(&full).map_err(|e| match e {
            NodeError::Spawn {
                command, source, ..
            } => NodeError::Spawn {
                node: self.name.clone(),
                command,
                source,
            },
            other => other,
        })
    }
    fn set_service(&self, spec: ServiceSpec) {
        self.supervisor.set_spec(spec);
    }
    fn start_service(&self) -> Result<u32, NodeError> {
        self.supervisor
            .start(&self.prefix(), self.clock_file().as_deref())
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
        self.disk.lock().ok()?.as_ref().map(|d| d.control())
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
}

/// A set of netns nodes on one bridge; dropping it tears everything down.
#[derive(Debug)]
pub struct NetnsCluster {
    id: String,
    bridge: String,
    nodes: Vec<Arc<NetnsNode>>,
    torn_down: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl NetnsCluster {
    /// Creates `count` nodes named n1..nN with per-node dirs under `base_dir`.
    pub fn create(
        count: usize,
        base_dir: &Path,
        options: NetnsOptions,
    ) -> Result<NetnsCluster, NodeError> {
        if count == 0 || count > 200 {
            return Err(NodeError::Setup(format!(
                "node count must be 1-200, got {count}"
            )));
        }
        // A short id from the pid and a counter; skip ids whose bridge already exists.
        let mut id_num;
        loop {
            let c = COUNTER.fetch_add(1, Ordering::SeqCst);
            id_num = ((std::process::id() & 0xfff) << 4 | (c & 0xf)) & 0xffff;
            if !link_exists(&format!("{PREFIX}{id_num:x}br")) {
                break;
            }
            if c > 64 {
                return Err(NodeError::Setup(
                    "no free netns run id (run `harness clean`)".into(),
                ));
            }
        }
        let id = format!("{id_num:x}");
        let (a, b) = (128 + ((id_num >> 8) & 0x7f) as u8, (id_num & 0xff) as u8);
        let bridge = format!("{PREFIX}{id}br");
        let bridge_address = Ipv4Addr::new(10, a, b, 1);
        std::fs::create_dir_all(OWNER_DIR)
            .map_err(|e| NodeError::Setup(format!("{OWNER_DIR}: {e}")))?;
        std::fs::write(
            Path::new(OWNER_DIR).join(&id),
            std::process::id().to_string(),
        )
        .map_err(|e| NodeError::Setup(format!("{OWNER_DIR}/{id}: {e}")))?;
        let mut cluster = NetnsCluster {
            id: id.clone(),
            bridge: bridge.clone(),
            nodes: Vec::new(),
            torn_down: false,
        };
        run_ok(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        // Keep bridged traffic out of the host's iptables (e.g. Docker's FORWARD DROP policy
        // with br_netfilter): node-to-node packets are filtered only by the nemesis's rules.
        // Where br_netfilter is on globally (Docker hosts), the per-bridge switch cannot turn it
        // off, so accept our bridge's traffic at the top of FORWARD (removed at teardown).
        if bridge_nf_on() {
            let _ = run(&[
                "iptables", "-w", "-I", "FORWARD", "1", "-i", &bridge, "-o", &bridge, "-j",
                "ACCEPT",
            ]);
        }
        run_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{bridge_address}/24"),
            "dev",
            &bridge,
        ])?;
        run_ok(&["ip", "link", "set", &bridge, "up"])?;
        for i in 1..=count {
            let name = format!("n{i}");
            let netns = format!("{PREFIX}{id}-{name}");
            let veth = format!("{PREFIX}{id}v{i}");
            let address = Ipv4Addr::new(10, a, b, 10 + i as u8);
            run_ok(&["ip", "netns", "add", &netns])?;
            run_ok(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            run_ok(&["ip", "link", "set", &veth, "master", &bridge])?;
            run_ok(&["ip", "link", "set", &veth, "up"])?;
            run_ok(&[
                "ip",
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            run_ok(&["ip", "-n", &netns, "link", "set", "eth0", "up"])?;
            run_ok(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
            let dir = base_dir.join(&name);
            std::fs::create_dir_all(dir.join("data"))
                .map_err(|e| NodeError::Setup(format!("{}: {e}", dir.display())))?;
            let mut node = NetnsNode {
                name: name.clone(),
                netns,
                address,
                bridge_address,
                dir: dir.clone(),
                supervisor: Supervisor::new(&name),
                disk: Mutex::new(None),
                capabilities: Capabilities::all(),
            };
            if options.disk_faults {
                let m = DiskMount::mount(&dir.join("backing"), &dir.join("data"))
                    .map_err(|e| NodeError::Setup(format!("fault FS for {name}: {e}")))?;
                node.disk = Mutex::new(Some(m));
            } else {
                node.capabilities = node.capabilities.refuse(
                    FaultKind::Disk,
                    "the cluster was created without the fault FS (enable disk faults at start)",
                );
            }
            if let Err(reason) = probe_netem(&node) {
                node.capabilities = node.capabilities.refuse(FaultKind::Latency, reason);
            }
            cluster.nodes.push(Arc::new(node));
        }
        Ok(cluster)
    }

    /// The run id in every name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The nodes, as the nemesis and harness use them.
    pub fn nodes(&self) -> Vec<Arc<dyn Node>> {
        self.nodes
            .iter()
            .map(|n| n.clone() as Arc<dyn Node>)
            .collect()
    }

    /// The concrete nodes.
    pub fn netns_nodes(&self) -> &[Arc<NetnsNode>] {
        &self.nodes
    }

    /// Stops services, unmounts fault FSs, removes namespaces, veths and the bridge.
    pub fn teardown(&mut self) -> Result<(), NodeError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        for n in &self.nodes {
            let _ = n.supervisor.stop(StopMode::Kill);
        }
        // Anything else still running in the namespaces (a service the supervisor lost track
        // of, a command's stray child) would keep a fault FS busy and block its unmount.
        kill_namespace_processes(&self.id);
        for n in &self.nodes {
            if let Ok(mut d) = n.disk.lock() {
                if let Some(mut m) = d.take() {
                    m.unmount();
                }
            }
        }
        remove_run(&self.id)
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("netns teardown: {e}");
        }
    }
}

/// Removes everything of run `id`: processes in its namespaces, fault FS mounts under dirs of
/// its nodes, the namespaces, its links and the owner file.
fn remove_run(id: &str) -> Result<(), NodeError> {
    let mut errors = Vec::new();
    let ns_prefix = format!("{PREFIX}{id}-");
    kill_namespace_processes(id);
    for ns in list_netns() {
        if !ns.starts_with(&ns_prefix) {
            continue;
        }
        if let Err(e) = run_ok(&["ip", "netns", "del", &ns]) {
            errors.push(e.to_string());
        }
    }
    let link_prefix = format!("{PREFIX}{id}");
    let bridge = format!("{link_prefix}br");
    if bridge_nf_on() {
        let rule = ["-i", bridge.as_str(), "-o", bridge.as_str(), "-j", "ACCEPT"];
        while run(&[&["iptables", "-w", "-C", "FORWARD"][..], &rule[..]].concat())
            .is_ok_and(|o| o.success())
        {
            if !run(&[&["iptables", "-w", "-D", "FORWARD"][..], &rule[..]].concat())
                .is_ok_and(|o| o.success())
            {
                break;
            }
        }
    }
    for link in list_links() {
        if link.starts_with(&link_prefix)
            && (link.ends_with("br") || link[link_prefix.len()..].starts_with('v'))
        {
            let _ = run(&["ip", "link", "del", &link]);
        }
    }
    let _ = std::fs::remove_file(Path::new(OWNER_DIR).join(id));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NodeError::Setup(errors.join("; ")))
    }
}

/// SIGKILLs every process (and its group) inside run `id`'s namespaces.
fn kill_namespace_processes(id: &str) {
    let ns_prefix = format!("{PREFIX}{id}-");
    for ns in list_netns() {
        if !ns.starts_with(&ns_prefix) {
            continue;
        }
        if let Ok(out) = run(&["ip", "netns", "pids", &ns]) {
            for pid in out
                .stdout
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let _ = signal_group(pid, Signal::Kill);
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// Names of all network namespaces.
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Names of all links on the host.
pub fn list_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Mount points of nemesis fault FS mounts (from /proc/mounts).
pub fn list_fault_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (src, dst) = (f.next()?, f.next()?);
            (src == nemesis::disk::FS_NAME).then(|| PathBuf::from(dst.replace("\\040", " ")))
        })
        .collect()
}

/// True when bridged IPv4 traffic passes through iptables (br_netfilter loaded and on).
fn bridge_nf_on() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|s| s.trim() == "1")
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The run ids present on this host (from namespaces, links and owner files).
fn run_ids() -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for ns in list_netns() {
        if let Some(rest) = ns.strip_prefix(PREFIX) {
            if let Some((id, _)) = rest.split_once('-') {
                ids.insert(id.to_string());
            }
        }
    }
    for l in list_links() {
        if let Some(rest) = l.strip_prefix(PREFIX) {
            if let Some(id) = rest.strip_suffix("br") {
                ids.insert(id.to_string());
            } else if let Some((id, _)) = rest.split_once('v') {
                ids.insert(id.to_string());
            }
        }
    }
    for e in std::fs::read_dir(OWNER_DIR).into_iter().flatten().flatten() {
        ids.insert(e.file_name().to_string_lossy().into_owned());
    }
    ids.retain(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()));
    ids
}

/// Finds and removes what killed runs left behind: namespaces, links and processes of every
/// run whose owner process is gone, and fault FS mounts no live process serves. Returns what
/// was removed, one line each.
pub fn cleanup_leftovers() -> Result<Vec<String>, NodeError> {
    let mut removed = Vec::new();
    for id in run_ids() {
        let owner = std::fs::read_to_string(Path::new(OWNER_DIR).join(&id))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if owner.is_some_and(pid_alive) {
            continue;
        }
        remove_run(&id)?;
        removed.push(format!("netns run {id}"));
    }
    for m in list_fault_mounts() {
        // A mount whose serving process died answers ENOTCONN.
        if let Err(e) = std::fs::metadata(&m) {
            if e.raw_os_error() == Some(107) {
                let _ = run(&["umount", "-l", &m.display().to_string()]);
                removed.push(format!("mount {}", m.display()));
            }
        }
    }
    Ok(removed)
}
