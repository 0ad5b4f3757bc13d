//! The system under test, as Jepsen's DB protocol: the one place that knows what runs on a
//! node. A [`System`] writes each node's files, says how its service starts (the nemesis
//! restarts it the same way), which port clients use, which files are its logs, and which
//! bundled-only features it lacks; process control (stop, kill, pause, resume) goes through
//! the node it returns from [`System::wrap`]. Readiness and roles come from the Kafka protocol
//! alone ([`crate::metadata`]), so they hold for any Kafka-compatible system.
//!
//! Two systems: [`Bundled`] (this project's broker, with bug modes) and [`Command`]: a cluster
//! started by the user's command templates (`[command]` in the spec), found for signals by
//! the process the start command runs in the foreground, a pid file or a pattern.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nemesis::disk::DiskControl;
use nemesis::{Capabilities, CommandOutput, Node, NodeError, ServiceSpec, Signal, StopMode};
use serde::{Deserialize, Serialize};

use crate::deploy::{self, DeployError, NodeFiles};
use crate::spec::TestSpec;

/// Which system a spec deploys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// The bundled broker.
    #[default]
    Bundled,
    /// A cluster started by the spec's `[command]` templates.
    Command,
}

impl std::fmt::Display for SystemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SystemKind::Bundled => "bundled",
            SystemKind::Command => "command",
        })
    }
}

/// A file a command system's node needs, rendered from templates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileTemplate {
    /// Where (a template, e.g. `{home}/server.properties`).
    pub path: String,
    /// What (a template).
    pub content: String,
}

/// The `[command]` table: how to run a Kafka-compatible system the harness did not build.
/// Every string is a template: `{node}` (n1), `{id}` (1), `{host}` (the node's address),
/// `{port}` (the client port), `{home}` (the node's own dir: configs, logs), `{data_dir}` (its
/// data dir, where disk faults act), `{log_dir}` (= `{home}`), `{peers}` (every node's
/// `host:port`, comma-separated), `{voters}` (`id@host:controller-port` of the first three
/// nodes, as KRaft's `controller.quorum.voters` wants), `{controller_port}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandSpec {
    /// The start command (run with `/bin/sh -c`). Foreground unless `pid-file` or `pattern` is
    /// given: then it may daemonize, and the process is found by them.
    pub start: String,
    /// The client listener port on every node [default: 9092].
    #[serde(default = "default_port")]
    pub port: u16,
    /// The controller port `{voters}` uses [default: 9093].
    #[serde(default = "default_controller_port")]
    pub controller_port: u16,
    /// A file holding the service's pid once it started.
    #[serde(default)]
    pub pid_file: Option<String>,
    /// A pattern `pgrep -f` finds the service by.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Files written before the first start.
    #[serde(default)]
    pub files: Vec<FileTemplate>,
    /// Log files collected into the run store (the start command's own output is always
    /// kept as `{home}/service.log`).
    #[serde(default)]
    pub logs: Vec<String>,
    /// Host files and directories (absolute paths, not templates) the docker backend copies
    /// into the run's image at the same paths, with the shared libraries `ldd` lists for
    /// executables among them; other backends run on hosts that already hold the system.
    #[serde(default)]
    pub image_files: Vec<PathBuf>,
    /// A port on every node serving Prometheus `/metrics`, scraped once a second into
    /// `metrics.jsonl` (the bundled broker's gauge names are read; others are kept as a node
    /// that answered). None: nothing is scraped.
    #[serde(default)]
    pub metrics_port: Option<u16>,
}

fn default_port() -> u16 {
    deploy::KAFKA_PORT
}

fn default_controller_port() -> u16 {
    deploy::CONTROLLER_PORT
}

/// What a system does on the nodes.
pub trait System: Send + Sync {
    /// Which kind.
    fn kind(&self) -> SystemKind;
    /// The port clients (and the harness's role queries) use on every node.
    fn client_port(&self) -> u16;
    /// The port of each node's Prometheus `/metrics`, scraped during a run (None: it has none).
    fn metrics_port(&self) -> Option<u16> {
        None
    }
    /// Refuses what this system cannot do for `spec` (bundled-only features, backends), with
    /// the reason; called before anything is deployed.
    fn check(&self, spec: &TestSpec) -> Result<(), String>;
    /// The nodes the nemesis and the harness drive: `nodes` themselves, or wrappers that find
    /// the service by a pid file or pattern.
    fn wrap(&self, nodes: Vec<Arc<dyn Node>>) -> Vec<Arc<dyn Node>> {
        nodes
    }
    /// Writes every node's files and sets how its service starts (not started yet).
    fn prepare(
        &self,
        nodes: &[Arc<dyn Node>],
        spec: &TestSpec,
        files: &dyn NodeFiles,
    ) -> Result<(), DeployError>;
    /// How the service starts, for error messages (the start command for command systems).
    fn describe_start(&self) -> String;
    /// The log and config files of `node` worth keeping in the run store (paths as the node
    /// sees them), each with the name it gets there.
    fn log_files(&self, node: &dyn Node) -> Vec<(String, PathBuf)>;
}

/// The system a spec names.
pub fn for_spec(spec: &TestSpec) -> Result<Box<dyn System>, String> {
    match spec.system {
        SystemKind::Bundled => Ok(Box::new(Bundled)),
        SystemKind::Command => spec
            .command
            .clone()
            .map(|c| Box::new(Command { spec: c }) as Box<dyn System>)
            .ok_or_else(|| {
                "system = \"command\" needs a [command] table with a start command".into()
            }),
    }
}

/// The bundled broker's bug modes (name, real-world source), as `broker --list-bugs` prints
/// them: the harness learns them from the binary, not by linking the broker.
pub fn bundled_bugs() -> Result<Vec<(String, String)>, String> {
    let v = broker_json("--list-bugs")?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| {
                    Some((
                        b["name"].as_str()?.to_string(),
                        b["source"].as_str().unwrap_or("").to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Every configuration key the bundled broker knows (`broker --list-config-keys`).
pub fn bundled_config_keys() -> Result<Vec<String>, String> {
    let v = broker_json("--list-config-keys")?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The Kafka releases the bundled broker can follow (`kafka.release`), as `broker
/// --list-releases` prints them.
#[derive(Debug, Clone)]
pub struct BundledReleases {
    /// The release the broker follows when `kafka.release` is not set.
    pub default: String,
    /// Every release it accepts, oldest first, with the rules its promises depend on.
    pub releases: Vec<(String, results::matrix::ReleaseRules)>,
}

impl BundledReleases {
    /// The rules of `release`, if the broker knows it.
    pub fn rules_of(&self, release: &str) -> Option<results::matrix::ReleaseRules> {
        self.releases
            .iter()
            .find(|(r, _)| r == release)
            .map(|(_, rules)| *rules)
    }

    /// The releases' names, comma-separated.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.releases.iter().map(|(r, _)| r.as_str()).collect();
        names.join(", ")
    }
}

/// The bundled broker's releases (`broker --list-releases`): the harness learns them from the
/// binary, not by linking the broker.
pub fn bundled_releases() -> Result<BundledReleases, String> {
    let v = broker_json("--list-releases")?;
    let bad = |what: &str| format!("`broker --list-releases` printed no {what}: {v}");
    let default = v["default"]
        .as_str()
        .ok_or_else(|| bad("default"))?
        .to_string();
    let mut releases = Vec::new();
    for r in v["releases"].as_array().ok_or_else(|| bad("releases"))? {
        let name = r["release"].as_str().ok_or_else(|| bad("release name"))?;
        let rules: results::matrix::ReleaseRules =
            serde_json::from_value(r.clone()).map_err(|e| bad(&format!("rules ({e})")))?;
        releases.push((name.to_string(), rules));
    }
    Ok(BundledReleases { default, releases })
}

/// Runs the bundled broker binary with `flag` and parses its JSON output (cached per flag).
fn broker_json(flag: &str) -> Result<serde_json::Value, String> {
    static CACHE: std::sync::Mutex<BTreeMap<String, serde_json::Value>> =
        std::sync::Mutex::new(BTreeMap::new());
    if let Some(v) = CACHE.lock().ok().and_then(|c| c.get(flag).cloned()) {
        return Ok(v);
    }
    let bin = crate::run::find_broker_bin().map_err(|e| format!("{e:#}"))?;
    let out = std::process::Command::new(&bin)
        .arg(flag)
        .output()
        .map_err(|e| format!("running {} {flag}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {flag} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{} {flag} printed no JSON: {e}", bin.display()))?;
    if let Ok(mut c) = CACHE.lock() {
        c.insert(flag.to_string(), v.clone());
    }
    Ok(v)
}

/// This project's broker: `server.properties` from the spec, bug modes as flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bundled;

impl System for Bundled {
    fn kind(&self) -> SystemKind {
        SystemKind::Bundled
    }

    fn client_port(&self) -> u16 {
        deploy::KAFKA_PORT
    }

    fn metrics_port(&self) -> Option<u16> {
        Some(deploy::METRICS_PORT)
    }

    fn check(&self, _spec: &TestSpec) -> Result<(), String> {
        Ok(())
    }

    fn describe_start(&self) -> String {
        "the bundled broker (`broker --config server.properties`)".into()
    }

    fn prepare(
        &self,
        nodes: &[Arc<dyn Node>],
        spec: &TestSpec,
        files: &dyn NodeFiles,
    ) -> Result<(), DeployError> {
        let broker = crate::run::find_broker_bin().map_err(|e| DeployError::Start {
            node: "all".into(),
            message: format!("{e:#}"),
        })?;
        deploy::prepare_brokers(
            nodes,
            spec,
            &broker,
            spec.nemesis.contains(&nemesis::FaultKind::Clock),
            files,
        )
    }

    fn log_files(&self, node: &dyn Node) -> Vec<(String, PathBuf)> {
        vec![
            ("broker.log".into(), service_log(SystemKind::Bundled, node)),
            ("server.properties".into(), deploy::broker_config(node)),
        ]
    }
}

/// A cluster started by the user's commands.
#[derive(Debug, Clone)]
pub struct Command {
    /// The `[command]` table.
    pub spec: CommandSpec,
}

/// One node's placeholder values as [`template_vars`] names them; `id` and `peers` are empty
/// where the caller has no cluster at hand (log paths, the up-front check).
fn vars(
    spec: &CommandSpec,
    node: Option<&dyn Node>,
    id: String,
    peers: &[IpAddr],
) -> BTreeMap<&'static str, String> {
    let field = |f: &dyn Fn(&dyn Node) -> String| node.map(f).unwrap_or_default();
    let home = field(&|n| n.home_dir().display().to_string());
    let voters: Vec<String> = peers
        .iter()
        .take(deploy::controller_count(peers.len()))
        .enumerate()
        .map(|(i, a)| format!("{}@{a}:{}", i + 1, spec.controller_port))
        .collect();
    let peers: Vec<String> = peers.iter().map(|a| format!("{a}:{}", spec.port)).collect();
    BTreeMap::from([
        ("node", field(&|n| n.name().to_string())),
        ("id", id),
        ("host", field(&|n| n.address().to_string())),
        ("port", spec.port.to_string()),
        ("controller_port", spec.controller_port.to_string()),
        ("home", home.clone()),
        ("log_dir", home),
        ("data_dir", field(&|n| n.data_dir().display().to_string())),
        ("peers", peers.join(",")),
        ("voters", voters.join(",")),
    ])
}

/// The values of the template placeholders for node `index` of `nodes`.
fn template_vars(
    spec: &CommandSpec,
    nodes: &[Arc<dyn Node>],
    index: usize,
) -> BTreeMap<&'static str, String> {
    let addrs: Vec<IpAddr> = nodes.iter().map(|n| n.address()).collect();
    vars(
        spec,
        Some(nodes[index].as_ref()),
        (index + 1).to_string(),
        &addrs,
    )
}

/// Renders `template` with `vars`; an unknown `{name}` is an error naming it.
pub fn render(template: &str, vars: &BTreeMap<&'static str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("unclosed `{{` in `{template}`"));
        };
        let name = &after[..close];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                let known: Vec<&str> = vars.keys().copied().collect();
                return Err(format!(
                    "unknown placeholder `{{{name}}}` in `{template}`; known: {}",
                    known.join(", ")
                ));
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The log a system's service writes on a node (its output, or the bundled broker's log):
/// where failed starts and readiness errors point.
pub fn service_log(kind: SystemKind, node: &dyn Node) -> PathBuf {
    match kind {
        SystemKind::Bundled => deploy::broker_log(node),
        SystemKind::Command => node.home_dir().join("service.log"),
    }
}

impl System for Command {
    fn kind(&self) -> SystemKind {
        SystemKind::Command
    }

    fn client_port(&self) -> u16 {
        self.spec.port
    }

    fn metrics_port(&self) -> Option<u16> {
        self.spec.metrics_port
    }

    fn describe_start(&self) -> String {
        format!("the start command `{}`", self.spec.start)
    }

    fn check(&self, spec: &TestSpec) -> Result<(), String> {
        if !spec.bugs.is_empty() {
            return Err(format!(
                "bug modes ({}) exist only in the bundled broker; drop --bug or use system = \
                 \"bundled\"",
                spec.bugs.join(", ")
            ));
        }
        for f in &self.spec.image_files {
            if !f.is_absolute() {
                return Err(format!(
                    "command.image-files: `{}` is not an absolute path",
                    f.display()
                ));
            }
            if !f.exists() {
                return Err(format!(
                    "command.image-files: `{}` does not exist on this host",
                    f.display()
                ));
            }
        }
        if spec.backend == crate::spec::Backend::Docker
            && (self.spec.pid_file.is_some() || self.spec.pattern.is_some())
        {
            return Err(
                "command: on the docker backend the start command must run the service in the \
                 foreground (no pid-file or pattern): a node's commands run host tools in the \
                 container's network namespace only, so a daemonizing start would run outside \
                 the container and a pid file would hold a container-namespace pid"
                    .into(),
            );
        }
        if spec.nemesis.contains(&nemesis::FaultKind::Clock) {
            return Err(
                "clock faults start the service under libfaketime, which only the bundled \
                 broker is run under; drop clock from --nemesis"
                    .into(),
            );
        }
        // Every template must render (placeholders known) before anything starts.
        let vars = vars(&self.spec, None, String::new(), &[]);
        let c = &self.spec;
        for t in std::iter::once(&c.start)
            .chain(c.pid_file.iter())
            .chain(c.pattern.iter())
            .chain(c.logs.iter())
            .chain(c.files.iter().flat_map(|f| [&f.path, &f.content]))
        {
            render(t, &vars).map_err(|e| format!("command: {e}"))?;
        }
        if c.pid_file.is_some() && c.pattern.is_some() {
            return Err("command: give pid-file or pattern, not both".into());
        }
        Ok(())
    }

    fn wrap(&self, nodes: Vec<Arc<dyn Node>>) -> Vec<Arc<dyn Node>> {
        let finder =
            |vars: &BTreeMap<&'static str, String>| match (&self.spec.pid_file, &self.spec.pattern)
            {
                (Some(p), _) => Some(Finder::PidFile(render_checked(p, vars))),
                (None, Some(p)) => Some(Finder::Pattern(render_checked(p, vars))),
                (None, None) => None,
            };
        (0..nodes.len())
            .map(|i| {
                let vars = template_vars(&self.spec, &nodes, i);
                match finder(&vars) {
                    Some(finder) => Arc::new(FoundNode {
                        inner: nodes[i].clone(),
                        start: render_checked(&self.spec.start, &vars),
                        finder,
                    }) as Arc<dyn Node>,
                    None => nodes[i].clone(),
                }
            })
            .collect()
    }

    fn prepare(
        &self,
        nodes: &[Arc<dyn Node>],
        _spec: &TestSpec,
        files: &dyn NodeFiles,
    ) -> Result<(), DeployError> {
        for (i, node) in nodes.iter().enumerate() {
            let vars = template_vars(&self.spec, nodes, i);
            let bad = |message: String| DeployError::Start {
                node: node.name().to_string(),
                message,
            };
            for f in &self.spec.files {
                let path = PathBuf::from(render(&f.path, &vars).map_err(bad)?);
                let content = render(&f.content, &vars).map_err(bad)?;
                files
                    .write(node.as_ref(), &path, content.as_bytes())
                    .map_err(|source| DeployError::Config {
                        node: node.name().to_string(),
                        path: path.clone(),
                        source,
                    })?;
            }
            let start = render(&self.spec.start, &vars).map_err(bad)?;
            let service = ServiceSpec {
                program: PathBuf::from("/bin/sh"),
                args: vec!["-c".into(), start],
                env: Vec::new(),
                log_file: service_log(SystemKind::Command, node.as_ref()),
                fake_clock: false,
            };
            node.set_service(service);
        }
        Ok(())
    }

    fn log_files(&self, node: &dyn Node) -> Vec<(String, PathBuf)> {
        let mut out = vec![(
            "service.log".to_string(),
            service_log(SystemKind::Command, node),
        )];
        for (i, l) in self.spec.logs.iter().enumerate() {
            // Logs are rendered with this node's own values; id, peers and voters are not
            // meaningful in a log path and render empty here.
            if let Ok(p) = render(l, &vars(&self.spec, Some(node), String::new(), &[])) {
                let name = Path::new(&p)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("log-{i}"));
                out.push((name, PathBuf::from(p)));
            }
        }
        out
    }
}

/// [`render`] for templates [`System::check`] already rendered once: an error cannot happen
/// here, and would leave the template as written (and fail visibly when run).
fn render_checked(template: &str, vars: &BTreeMap<&'static str, String>) -> String {
    render(template, vars).unwrap_or_else(|_| template.to_string())
}

/// How a daemonizing service is found for signals.
#[derive(Debug, Clone)]
enum Finder {
    /// The pid in this file.
    PidFile(String),
    /// The oldest process whose command line matches (`pgrep -o -f`).
    Pattern(String),
}

/// A node whose service daemonizes: started by running its start command to completion on
/// the node, then found by a pid file or pattern for every signal; the rest is the backend
/// node's.
pub struct FoundNode {
    inner: Arc<dyn Node>,
    start: String,
    finder: Finder,
}

impl std::fmt::Debug for FoundNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FoundNode({})", self.inner.name())
    }
}

impl FoundNode {
    fn err(&self, message: String) -> NodeError {
        NodeError::Setup(format!("{}: {message}", self.inner.name()))
    }

    fn find_pid(&self) -> Option<u32> {
        let script = match &self.finder {
            Finder::PidFile(p) => format!("cat {} 2>/dev/null", shell_quote(p)),
            Finder::Pattern(p) => format!("pgrep -o -f {}", shell_quote(p)),
        };
        let out = self.inner.exec(&["/bin/sh", "-c", &script]).ok()?;
        let pid: u32 = out.stdout.trim().lines().next()?.trim().parse().ok()?;
        let alive = self
            .inner
            .exec(&["/bin/sh", "-c", &format!("kill -0 {pid}")])
            .map(|o| o.code == Some(0))
            .unwrap_or(false);
        alive.then_some(pid)
    }

    fn kill(&self, pid: u32, signal: &str) -> Result<(), NodeError> {
        let out = self
            .inner
            .exec(&["/bin/sh", "-c", &format!("kill -{signal} {pid}")])?;
        if out.code != Some(0) && self.find_pid() == Some(pid) {
            return Err(self.err(format!(
                "kill -{signal} {pid} failed: {}",
                out.stderr.trim()
            )));
        }
        Ok(())
    }

    fn wait_gone(&self, pid: u32, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.find_pid() != Some(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// Single-quotes `s` for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Node for FoundNode {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn address(&self) -> IpAddr {
        self.inner.address()
    }
    fn client_address(&self) -> Option<IpAddr> {
        self.inner.client_address()
    }
    fn exec(&self, argv: &[&str]) -> Result<CommandOutput, NodeError> {
        self.inner.exec(argv)
    }
    fn set_service(&self, spec: ServiceSpec) {
        self.inner.set_service(spec);
    }
    fn start_service(&self) -> Result<u32, NodeError> {
        if let Some(pid) = self.find_pid() {
            return Err(self.err(format!("service already running (pid {pid})")));
        }
        let start = &self.start;
        let log = service_log(SystemKind::Command, self.inner.as_ref());
        // Grouped on its own line, so a start command ending in `&` still parses and every
        // process it leaves behind writes to the log, not to this exec's pipes.
        let script = format!(
            "{{ {start}\n}} >> {} 2>&1 < /dev/null",
            shell_quote(&log.display().to_string())
        );
        let out = self.inner.exec(&["/bin/sh", "-c", &script])?;
        if out.code != Some(0) {
            return Err(self.err(format!(
                "start command `{start}` exited {:?}: {}",
                out.code,
                out.stderr.trim()
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(pid) = self.find_pid() {
                return Ok(pid);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.err(format!(
            "start command `{start}` ran, but no process was found by its pid file or pattern \
             within 10 s; see {}",
            log.display()
        )))
    }
    fn stop_service(&self, mode: StopMode) -> Result<(), NodeError> {
        let Some(pid) = self.find_pid() else {
            return Ok(());
        };
        match mode {
            StopMode::Kill => {
                self.kill(pid, "KILL")?;
                self.wait_gone(pid, Duration::from_secs(10));
            }
            StopMode::Graceful(grace) => {
                self.kill(pid, "CONT")?;
                self.kill(pid, "TERM")?;
                if !self.wait_gone(pid, grace) {
                    self.kill(pid, "KILL")?;
                    self.wait_gone(pid, Duration::from_secs(10));
                }
            }
        }
        Ok(())
    }
    fn signal_service(&self, signal: Signal) -> Result<(), NodeError> {
        let pid = self
            .find_pid()
            .ok_or_else(|| self.err("the service is not running".into()))?;
        let name = match signal {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        };
        self.kill(pid, name)
    }
    fn service_pid(&self) -> Option<u32> {
        self.find_pid()
    }
    fn data_dir(&self) -> PathBuf {
        self.inner.data_dir()
    }
    fn home_dir(&self) -> PathBuf {
        self.inner.home_dir()
    }
    fn clock_file(&self) -> Option<PathBuf> {
        self.inner.clock_file()
    }
    fn disk(&self) -> Option<Arc<DiskControl>> {
        self.inner.disk()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_known_placeholders_and_name_unknown_ones() {
        let vars: BTreeMap<&'static str, String> =
            BTreeMap::from([("node", "n1".to_string()), ("port", "9092".to_string())]);
        assert_eq!(render("{node}:{port}", &vars).as_deref(), Ok("n1:9092"));
        let err = render("{nod}", &vars).expect_err("unknown");
        assert!(err.contains("{nod}") && err.contains("node, port"), "{err}");
        assert!(render("{node", &vars).is_err());
    }

    #[test]
    fn command_systems_refuse_bundled_only_features() {
        let spec = TestSpec {
            bugs: vec!["ack-before-isr".into()],
            ..TestSpec::default()
        };
        let c = Command {
            spec: CommandSpec {
                start: "exec sleep 1".into(),
                port: 9092,
                controller_port: 9093,
                pid_file: None,
                pattern: None,
                files: Vec::new(),
                logs: Vec::new(),
                image_files: Vec::new(),
                metrics_port: None,
            },
        };
        let err = c.check(&spec).expect_err("bug modes");
        assert!(err.contains("bundled"), "{err}");
        let mut bad = c.clone();
        bad.spec.start = "run {binary}".into();
        let err = bad
            .check(&TestSpec {
                nemesis: Vec::new(),
                ..TestSpec::default()
            })
            .expect_err("placeholder");
        assert!(err.contains("{binary}"), "{err}");
    }
}
