//! The `docker` backend: one container per node on a private Docker network the run creates
//! (`jhd<id>net`), all from an image built locally from host files with no registry pull
//! (`docker import` of a tarball holding `sleep` as the container's idle main process, the
//! host's `/bin/sh`, the stripped bundled broker or the files a `command` system lists in
//! `image-files` at their own paths, every shared library `ldd` lists for these executables,
//! and libfaketime when installed).
//!
//! Each node's host dir is bind-mounted into its container at the same path, so the
//! `server.properties`, data dir, log and clock file have one path on both sides; with disk
//! faults the data dir is a nemesis fault FS mounted before the container starts. The broker runs
//! inside the container's mount, UTS, IPC, network and PID namespaces (`nsenter` from the host,
//! as `docker exec` does, but with a host pid the supervisor can signal: kill, pause, restart);
//! the container (and so its network namespace and any nft rules in it) outlives broker
//! restarts. Commands for faults run host tools (`nft`, `tc`) inside the container's network
//! namespace. Everything the run creates carries the labels [`LABEL_RUN`] and [`LABEL_OWNER`]:
//! teardown (also on drop) removes containers, network and image tag, and
//! [`cleanup_leftovers`] removes those of runs whose owner process is gone.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use nemesis::disk::{DiskControl, DiskMount};
use nemesis::net::probe_netem;
use nemesis::process::Supervisor;
use nemesis::{
    Capabilities, CommandOutput, FaultKind, Node, NodeError, ServiceSpec, Signal, StopMode,
};

/// The label naming the run id on every container, network and image of a run.
pub const LABEL_RUN: &str = "jepsen-harness.run";
/// The label holding the pid of the harness process that owns the run.
pub const LABEL_OWNER: &str = "jepsen-harness.owner";
/// Where the broker lives inside the image.
pub const IMAGE_BROKER: &str = "/opt/harness/broker";
/// The container's idle main process inside the image.
const IMAGE_SLEEP: &str = "/opt/harness/sleep";
/// The image repository; the tag is the run id.
pub const IMAGE_REPO: &str = "jepsen-harness-broker";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn run(argv: &[&str]) -> Result<CommandOutput, NodeError> {
    let (first, rest) = argv
        .split_first()
        .ok_or_else(|| NodeError::Setup("empty command".into()))?;
    let out = Command::new(first)
        .args(rest)
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

/// `Ok(server version)` when a Docker engine answers `docker info`, else why not (one line).
pub fn engine_available() -> Result<String, String> {
    match run(&["docker", "info", "--format", "{{.ServerVersion}}"]) {
        Ok(out) if out.success() && !out.stdout.trim().is_empty() => {
            Ok(out.stdout.trim().to_string())
        }
        Ok(out) => Err(format!(
            "no Docker engine answers (`docker info` failed: {})",
            first_line(&out.stderr)
        )),
        Err(e) => Err(format!("the docker CLI could not run ({e})")),
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string()
}

/// Options of a docker cluster.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The bundled broker binary, baked into the image at [`IMAGE_BROKER`] (a service naming
    /// it runs that copy); `None` for a `command` system, whose image holds its image files.
    pub broker_bin: Option<PathBuf>,
    /// Mount a nemesis fault FS (FUSE, served by the harness) as each node's data dir before
    /// its container starts, so the container sees it through the bind mount (disk faults).
    pub disk_faults: bool,
    /// Host files and directories (absolute paths) copied into the image at the same paths,
    /// for a `command` system's start command; services may run programs among them or
    /// `/bin/sh`.
    pub image_files: Vec<PathBuf>,
}

/// The shell every image holds (the host's, with its libraries), for `/bin/sh -c` services.
pub const IMAGE_SHELL: &str = "/bin/sh";

/// One docker node: a container whose namespaces the broker runs in.
pub struct DockerNode {
    name: String,
    container: String,
    /// Host pid of the container's main process (the namespaces' anchor).
    anchor_pid: u32,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    dir: PathBuf,
    broker_bin: Option<PathBuf>,
    /// Programs the image holds at their host paths: [`IMAGE_SHELL`] and the image files
    /// (a directory holds every program under it).
    image_paths: Vec<PathBuf>,
    /// Set by `set_service` when the spec names another program than the image's broker.
    foreign_program: Mutex<Option<PathBuf>>,
    supervisor: Supervisor,
    disk: Mutex<Option<DiskMount>>,
    capabilities: Capabilities,
}

impl std::fmt::Debug for DockerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerNode")
            .field("name", &self.name)
            .field("container", &self.container)
            .field("address", &self.address)
            .finish()
    }
}

impl DockerNode {
    /// The container's name.
    pub fn container(&self) -> &str {
        &self.container
    }

    fn pid_arg(&self) -> String {
        self.anchor_pid.to_string()
    }

    /// `nsenter` into every namespace of the container but the cgroup and user ones.
    fn service_prefix(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            "-t".into(),
            self.pid_arg(),
            "-m".into(),
            "-u".into(),
            "-i".into(),
            "-n".into(),
            "-p".into(),
            format!("--wd={}", self.dir.display()),
            "--".into(),
        ]
    }
}

impl Node for DockerNode {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> IpAddr {
        IpAddr::V4(self.address)
    }
    fn client_address(&self) -> Option<IpAddr> {
        Some(IpAddr::V4(self.gateway))
    }
    /// Runs a host program inside the container's network namespace (the image holds only what
    /// the service needs, so fault tools such as `nft` and `tc` come from the host).
    fn exec(&self, argv: &[&str]) -> Result<CommandOutput, NodeError> {
        let pid = self.pid_arg();
        let mut full: Vec<&str> = vec!["nsenter", "-t", &pid, "-n", "--"];
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
    fn set_service(&self, mut spec: ServiceSpec) {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        };
        let foreign = if self
            .broker_bin
            .as_deref()
            .is_some_and(|b| same(&spec.program, b))
        {
            spec.program = PathBuf::from(IMAGE_BROKER);
            None
        } else if self.image_paths.iter().any(|p| spec.program.starts_with(p)) {
            None
        } else {
            Some(spec.program.clone())
        };
        if let Ok(mut f) = self.foreign_program.lock() {
            *f = foreign;
        }
        self.supervisor.set_spec(spec);
    }
    fn start_service(&self) -> Result<u32, NodeError> {
        if let Some(p) = self.foreign_program.lock().ok().and_then(|f| f.clone()) {
            return Err(NodeError::Service {
                node: self.name.clone(),
                what: format!(
                    "docker nodes run only what their image holds ({IMAGE_SHELL}, the bundled \
                     broker {} and a command system's image-files), not {}",
                    self.broker_bin
                        .as_deref()
                        .map_or("(none)".into(), |b| b.display().to_string()),
                    p.display()
                ),
            });
        }
        self.supervisor
            .start(&self.service_prefix(), self.clock_file().as_deref())
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

/// The containers, network and image of one run; dropping it tears everything down.
#[derive(Debug)]
pub struct DockerCluster {
    id: String,
    network: String,
    image: String,
    nodes: Vec<Arc<DockerNode>>,
    torn_down: bool,
}

impl DockerCluster {
    /// Builds the image, creates the network and starts `count` containers n1..nN with per-node
    /// dirs under `base_dir`. On any error everything created so far is removed.
    pub fn create(
        count: usize,
        base_dir: &Path,
        options: DockerOptions,
    ) -> Result<DockerCluster, NodeError> {
        if count == 0 || count > 200 {
            return Err(NodeError::Setup(format!(
                "node count must be 1-200, got {count}"
            )));
        }
        let version = engine_available().map_err(|why| {
            NodeError::Setup(format!(
                "{why}; start a Docker engine or choose another backend (--backend netns)"
            ))
        })?;
        tracing::debug!(%version, "docker engine");
        let c = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:x}", (std::process::id() << 4) | (c & 0xf));
        let owner = std::process::id().to_string();
        let labels = [
            "--label".to_string(),
            format!("{LABEL_RUN}={id}"),
            "--label".to_string(),
            format!("{LABEL_OWNER}={owner}"),
        ];
        let mut cluster = DockerCluster {
            network: format!("jhd{id}net"),
            image: format!("{IMAGE_REPO}:{id}"),
            id: id.clone(),
            nodes: Vec::new(),
            torn_down: false,
        };
        std::fs::create_dir_all(base_dir)
            .map_err(|e| NodeError::Setup(format!("{}: {e}", base_dir.display())))?;
        let base_dir = base_dir
            .canonicalize()
            .map_err(|e| NodeError::Setup(format!("{}: {e}", base_dir.display())))?;
        let faketime = nemesis::clock::libfaketime_path().ok();
        build_image(
            &cluster.image,
            &base_dir.join("image"),
            &options,
            faketime.as_deref(),
            &id,
            &owner,
        )?;
        let image_paths: Vec<PathBuf> = std::iter::once(PathBuf::from(IMAGE_SHELL))
            .chain(options.image_files.iter().cloned())
            .collect();
        let mut net_cmd: Vec<&str> = vec!["docker", "network", "create"];
        net_cmd.extend(labels.iter().map(String::as_str));
        net_cmd.push(&cluster.network);
        run_ok(&net_cmd)?;
        let has_nft = run(&["nft", "--version"]).is_ok_and(|o| o.success());
        for i in 1..=count {
            let name = format!("n{i}");
            let container = format!("jhd{id}-{name}");
            let dir = base_dir.join(&name);
            std::fs::create_dir_all(dir.join("data"))
                .map_err(|e| NodeError::Setup(format!("{}: {e}", dir.display())))?;
            // Mounted before the container exists: its recursive bind of the node dir then
            // carries the fault FS into the container.
            let disk = if options.disk_faults {
                Some(
                    DiskMount::mount(&dir.join("backing"), &dir.join("data"))
                        .map_err(|e| NodeError::Setup(format!("fault FS for {name}: {e}")))?,
                )
            } else {
                None
            };
            let mount = format!("{0}:{0}", dir.display());
            let mut cmd: Vec<&str> = vec![
                "docker",
                "run",
                "-d",
                "--name",
                &container,
                "--hostname",
                &name,
                "--network",
                &cluster.network,
                "-v",
                &mount,
            ];
            cmd.extend(labels.iter().map(String::as_str));
            cmd.push(&cluster.image);
            let started = run_ok(&cmd).and_then(|_| inspect(&container, &cluster.network));
            let (anchor_pid, address, gateway) = match started {
                Ok(v) => v,
                Err(e) => {
                    // The fault FS must not outlive a failed setup (teardown only sees nodes).
                    let _ = run(&["docker", "rm", "-f", &container]);
                    drop(disk);
                    return Err(e);
                }
            };
            let mut caps = Capabilities::all();
            if disk.is_none() {
                caps = caps.refuse(
                    FaultKind::Disk,
                    "the cluster was created without the fault FS (enable disk faults at start)",
                );
            }
            if !has_nft {
                caps = caps
                    .refuse(
                        FaultKind::Partition,
                        "`nft` is not installed on the host (install the Debian package nftables)",
                    )
                    .refuse(
                        FaultKind::PacketLoss,
                        "`nft` is not installed on the host (install the Debian package nftables)",
                    );
            }
            if faketime.is_none() {
                caps = caps.refuse(
                    FaultKind::Clock,
                    "libfaketime is not installed on the host, so the image has none (install libfaketime)",
                );
            }
            let mut node = DockerNode {
                supervisor: Supervisor::new(&name),
                name,
                container,
                anchor_pid,
                address,
                gateway,
                dir,
                broker_bin: options.broker_bin.clone(),
                image_paths: image_paths.clone(),
                foreign_program: Mutex::new(None),
                disk: Mutex::new(disk),
                capabilities: caps,
            };
            if let Err(reason) = probe_netem(&node) {
                node.capabilities = node.capabilities.refuse(FaultKind::Latency, reason);
            }
            cluster.nodes.push(Arc::new(node));
        }
        Ok(cluster)
    }

    /// The run id in every name and label.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The private network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The image tag built for this run.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The nodes, as the nemesis and harness use them.
    pub fn nodes(&self) -> Vec<Arc<dyn Node>> {
        self.nodes
            .iter()
            .map(|n| n.clone() as Arc<dyn Node>)
            .collect()
    }

    /// The concrete nodes.
    pub fn docker_nodes(&self) -> &[Arc<DockerNode>] {
        &self.nodes
    }

    /// Stops the brokers, removes the containers, the network and the image tag.
    pub fn teardown(&mut self) -> Result<(), NodeError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        for n in &self.nodes {
            let _ = n.supervisor.stop(StopMode::Kill);
        }
        // Containers first: their mount namespaces hold the fault FS mounts.
        let removed = remove_run(&self.id);
        for n in &self.nodes {
            if let Ok(mut d) = n.disk.lock() {
                if let Some(mut m) = d.take() {
                    m.unmount();
                }
            }
        }
        removed
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("docker teardown: {e}");
        }
    }
}

/// The container's main pid, its address on `network` and that network's gateway.
fn inspect(container: &str, network: &str) -> Result<(u32, Ipv4Addr, Ipv4Addr), NodeError> {
    let format = format!(
        "{{{{.State.Pid}}}} {{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}} \
         {{{{(index .NetworkSettings.Networks \"{network}\").Gateway}}}}"
    );
    let out = run_ok(&["docker", "inspect", "--format", &format, container])?;
    let mut f = out.stdout.split_whitespace();
    let bad = || {
        NodeError::Setup(format!(
            "container {container}: unexpected `docker inspect` answer `{}`",
            out.stdout.trim()
        ))
    };
    let pid: u32 = f.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let addr: Ipv4Addr = f.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let gw: Ipv4Addr = f.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    if pid == 0 {
        return Err(NodeError::Setup(format!(
            "container {container} is not running (see `docker logs {container}`)"
        )));
    }
    Ok((pid, addr, gw))
}

/// The shared libraries `ldd` lists for `file` (absolute paths).
fn shared_libs(file: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let f = file.display().to_string();
    let out = run(&["ldd", &f])?;
    // A static binary makes ldd exit non-zero ("not a dynamic executable"): no libraries.
    if !out.success() {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in out.stdout.lines() {
        if line.contains("not found") {
            return Err(NodeError::Setup(format!(
                "{f} needs a library the host lacks: {}",
                line.trim()
            )));
        }
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Copies `src` to `stage` + `at` (an absolute path inside the image), creating directories.
fn stage_file(stage: &Path, src: &Path, at: &Path) -> Result<PathBuf, NodeError> {
    let rel = at.strip_prefix("/").unwrap_or(at);
    let dst = stage.join(rel);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| NodeError::Setup(format!("{}: {e}", parent.display())))?;
    }
    std::fs::copy(src, &dst).map_err(|e| {
        NodeError::Setup(format!(
            "staging {} as {}: {e}",
            src.display(),
            dst.display()
        ))
    })?;
    Ok(dst)
}

/// Copies the host file or directory `src` into the image at its own path (symlinks inside a
/// directory stay symlinks; a named symlink is followed); returns the host paths of the
/// executable regular files copied, whose libraries the image also needs.
fn stage_tree(stage: &Path, src: &Path, top: bool) -> Result<Vec<PathBuf>, NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let setup = |e: std::io::Error| NodeError::Setup(format!("image file {}: {e}", src.display()));
    let meta = if top {
        std::fs::metadata(src)
    } else {
        std::fs::symlink_metadata(src)
    }
    .map_err(setup)?;
    let dst = stage.join(src.strip_prefix("/").unwrap_or(src));
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src).map_err(setup)?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(setup)?;
        }
        std::os::unix::fs::symlink(target, &dst).map_err(setup)?;
        return Ok(Vec::new());
    }
    if meta.is_dir() {
        std::fs::create_dir_all(&dst).map_err(setup)?;
        let mut executables = Vec::new();
        for entry in std::fs::read_dir(src).map_err(setup)? {
            executables.extend(stage_tree(stage, &entry.map_err(setup)?.path(), false)?);
        }
        return Ok(executables);
    }
    if !meta.is_file() {
        return Ok(Vec::new());
    }
    stage_file(stage, src, src)?;
    Ok(if meta.permissions().mode() & 0o111 != 0 {
        vec![src.to_path_buf()]
    } else {
        Vec::new()
    })
}

/// Builds image `tag` from files of this host only: `sleep`, `/bin/sh`, the broker if given,
/// the image files, libfaketime if given, and the shared libraries of every executable among them
/// (executables are stripped of debug info when `strip` is there: the image does not need it,
/// and it is most of a debug build's size).
fn build_image(
    tag: &str,
    stage: &Path,
    options: &DockerOptions,
    faketime: Option<&Path>,
    id: &str,
    owner: &str,
) -> Result<(), NodeError> {
    if let Some(broker_bin) = options.broker_bin.as_deref().filter(|b| !b.is_file()) {
        return Err(NodeError::Setup(format!(
            "broker binary {} not found (build it with `cargo build -p broker`)",
            broker_bin.display()
        )));
    }
    for f in &options.image_files {
        if !f.is_absolute() || !f.exists() {
            return Err(NodeError::Setup(format!(
                "image file {} must be an absolute path that exists on this host",
                f.display()
            )));
        }
    }
    let _ = std::fs::remove_dir_all(stage);
    let root = stage.join("rootfs");
    let sleep = which("sleep").ok_or_else(|| {
        NodeError::Setup("no `sleep` on the host PATH to idle the containers".into())
    })?;
    // (host path, its copy in the stage) of every executable, for `strip` and `ldd`.
    let mut executables = vec![
        (
            sleep.clone(),
            stage_file(&root, &sleep, Path::new(IMAGE_SLEEP))?,
        ),
        (
            PathBuf::from(IMAGE_SHELL),
            stage_file(&root, Path::new(IMAGE_SHELL), Path::new(IMAGE_SHELL))?,
        ),
    ];
    if let Some(broker_bin) = options.broker_bin.as_deref() {
        executables.push((
            broker_bin.to_path_buf(),
            stage_file(&root, broker_bin, Path::new(IMAGE_BROKER))?,
        ));
    }
    for f in &options.image_files {
        for host in stage_tree(&root, f, true)? {
            let copy = root.join(host.strip_prefix("/").unwrap_or(&host));
            executables.push((host, copy));
        }
    }
    let mut libs: Vec<PathBuf> = Vec::new();
    for (host, copy) in &executables {
        let copy = copy.display().to_string();
        // Fails harmlessly on scripts and already stripped files.
        let _ = run(&["strip", "--strip-debug", &copy]);
        libs.extend(shared_libs(host)?);
    }
    if let Some(lib) = faketime {
        stage_file(&root, lib, lib)?;
        libs.extend(shared_libs(lib)?);
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        stage_file(&root, lib, lib)?;
    }
    std::fs::create_dir_all(root.join("tmp"))
        .map_err(|e| NodeError::Setup(format!("{}: {e}", root.display())))?;
    let tar = stage.join("rootfs.tar");
    let tar_s = tar.display().to_string();
    let root_s = root.display().to_string();
    run_ok(&["tar", "-C", &root_s, "-cf", &tar_s, "."])?;
    let cmd = format!("CMD [\"{IMAGE_SLEEP}\", \"infinity\"]");
    let label_run = format!("LABEL {LABEL_RUN}={id}");
    let label_owner = format!("LABEL {LABEL_OWNER}={owner}");
    run_ok(&[
        "docker",
        "import",
        "--change",
        &cmd,
        "--change",
        &label_run,
        "--change",
        &label_owner,
        &tar_s,
        tag,
    ])?;
    let _ = std::fs::remove_dir_all(stage);
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Lines of a `docker ... --format` listing (empty when docker is missing or fails).
fn docker_lines(argv: &[&str]) -> Vec<String> {
    match run(argv) {
        Ok(out) if out.success() => out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// Removes the containers, networks and images labelled with run `id`.
fn remove_run(id: &str) -> Result<(), NodeError> {
    let filter = format!("label={LABEL_RUN}={id}");
    let mut errors = Vec::new();
    let containers = docker_lines(&["docker", "ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let mut cmd = vec!["docker", "rm", "-f", "-v"];
        cmd.extend(containers.iter().map(String::as_str));
        if let Err(e) = run_ok(&cmd) {
            errors.push(e.to_string());
        }
    }
    for net in docker_lines(&["docker", "network", "ls", "-q", "--filter", &filter]) {
        if let Err(e) = run_ok(&["docker", "network", "rm", &net]) {
            errors.push(e.to_string());
        }
    }
    for image in docker_lines(&[
        "docker",
        "images",
        "--filter",
        &filter,
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]) {
        if let Err(e) = run_ok(&["docker", "rmi", "-f", &image]) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NodeError::Setup(errors.join("; ")))
    }
}

/// The run ids and owner pids found on containers, networks and images.
fn labelled_runs() -> std::collections::BTreeMap<String, Option<u32>> {
    let mut runs = std::collections::BTreeMap::new();
    let fmt = format!("{{{{.Label \"{LABEL_RUN}\"}}}} {{{{.Label \"{LABEL_OWNER}\"}}}}");
    let filter = format!("label={LABEL_RUN}");
    let mut lines = docker_lines(&["docker", "ps", "-a", "--filter", &filter, "--format", &fmt]);
    lines.extend(docker_lines(&[
        "docker", "network", "ls", "--filter", &filter, "--format", &fmt,
    ]));
    // `docker images` has no `.Labels` map in its format context; inspect each labelled image.
    for image in docker_lines(&["docker", "images", "-q", "--filter", &filter]) {
        lines.extend(docker_lines(&[
            "docker",
            "image",
            "inspect",
            "--format",
            &format!(
                "{{{{index .Config.Labels \"{LABEL_RUN}\"}}}} {{{{index .Config.Labels \"{LABEL_OWNER}\"}}}}"
            ),
            &image,
        ]));
    }
    for line in lines {
        let mut f = line.split_whitespace();
        if let Some(id) = f.next() {
            let owner = f.next().and_then(|p| p.parse::<u32>().ok());
            runs.entry(id.to_string()).or_insert(owner);
        }
    }
    runs
}

/// Removes the containers, networks and image tags of every run whose owning harness process
/// is gone; returns one line per removed run. Without a Docker engine there is nothing to do.
pub fn cleanup_leftovers() -> Result<Vec<String>, NodeError> {
    if engine_available().is_err() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for (id, owner) in labelled_runs() {
        if owner.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
            continue;
        }
        remove_run(&id)?;
        removed.push(format!("docker run {id} (containers, network, image)"));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn image_files_keep_their_paths_symlinks_and_name_their_executables() {
        let host = tempfile::tempdir().expect("tempdir");
        let stage = tempfile::tempdir().expect("tempdir");
        let tree = host.path().join("opt/sys");
        std::fs::create_dir_all(tree.join("bin")).expect("dirs");
        let script = tree.join("bin/start.sh");
        std::fs::write(&script, "#!/bin/sh\nexec true\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(tree.join("config"), "k=v\n").expect("config");
        std::os::unix::fs::symlink("bin/start.sh", tree.join("run")).expect("symlink");
        let named_link = host.path().join("link-to-config");
        std::os::unix::fs::symlink(tree.join("config"), &named_link).expect("symlink");

        let mut executables = stage_tree(stage.path(), &tree, true).expect("staged");
        executables.extend(stage_tree(stage.path(), &named_link, true).expect("staged"));
        assert_eq!(executables, vec![script.clone()]);
        let at = |p: &Path| stage.path().join(p.strip_prefix("/").expect("absolute"));
        assert_eq!(
            std::fs::read_to_string(at(&script)).expect("copied"),
            "#!/bin/sh\nexec true\n"
        );
        let mode = std::fs::metadata(at(&script)).expect("meta").permissions();
        assert_ne!(mode.mode() & 0o111, 0, "still executable");
        assert_eq!(
            std::fs::read_link(at(&tree.join("run"))).expect("a symlink inside stays one"),
            PathBuf::from("bin/start.sh")
        );
        let followed = std::fs::symlink_metadata(at(&named_link)).expect("meta");
        assert!(
            followed.is_file(),
            "a named symlink is copied as its target"
        );
        assert!(stage_tree(stage.path(), &host.path().join("missing"), true).is_err());
    }
}
