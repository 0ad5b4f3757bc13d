//! The ssh backend against real `sshd` processes (Debian `openssh-server`), each running inside
//! a netns node with its own host key, as a stand-in for a VM: `harness test --backend ssh`
//! deploys the broker over SSH, runs a short workload, and brings every node's log and data dir
//! back into the store; an unreachable host, a host key that does not match and a host key that
//! is not known each stop the run with a one-line error naming the host and what to do; a
//! pinned fingerprint is accepted; after a SIGKILLed harness, `harness clean` reaches the hosts
//! and stops the brokers and removes the partition rules it left.
//!
//! Skipped, with the reason printed, where `/usr/sbin/sshd` is not installed.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::node::ssh::{HostKeyCheck, SshOptions};
use harness::node::{NetnsCluster, NetnsOptions, SshCluster};
use nemesis::net::Topology;
use nemesis::{Action, FaultKind, Node, Schedule};

const SSHD: &str = "/usr/sbin/sshd";

/// The tests that run brokers take turns (two 3-broker clusters at once crowd two cores).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Netns nodes each running an sshd with its own host key; a client key authorized on all.
struct SshdNodes {
    dir: tempfile::TempDir,
    sshds: Vec<Child>,
    cluster: NetnsCluster,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "harness-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen {}", path.display());
}

impl SshdNodes {
    /// None (with the reason printed) when sshd is not installed.
    fn start(count: usize) -> Option<SshdNodes> {
        if !Path::new(SSHD).exists() {
            eprintln!("skipped: {SSHD} is not installed (apt-get install openssh-server)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster =
            NetnsCluster::create(count, &dir.path().join("nodes"), NetnsOptions::default())
                .expect("netns nodes (needs root)");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let client = dir.path().join("client_key");
        keygen(&client);
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let mut known = String::new();
        let mut sshds = Vec::new();
        for (i, node) in cluster.netns_nodes().iter().enumerate() {
            let host_key = dir.path().join(format!("host_key_{i}"));
            keygen(&host_key);
            let public = std::fs::read_to_string(host_key.with_extension("pub")).expect("pub");
            let mut f = public.split_whitespace();
            let (kind, key) = (f.next().expect("type"), f.next().expect("key"));
            known.push_str(&format!("{} {kind} {key}\n", node.address()));
            let config = dir.path().join(format!("sshd_config_{i}"));
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {addr}\nPort 22\nHostKey {key}\nAuthorizedKeysFile {auth}\n\
                     PidFile {dir}/sshd_{i}.pid\nStrictModes no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                     Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel ERROR\n",
                    addr = node.address(),
                    key = host_key.display(),
                    auth = dir.path().join("authorized_keys").display(),
                    dir = dir.path().display(),
                ),
            )
            .expect("sshd config");
            let child = Command::new("ip")
                .args(["netns", "exec", node.netns(), SSHD, "-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(dir.path().join(format!("sshd_{i}.log")))
                        .expect("sshd log"),
                )
                .spawn()
                .expect("sshd starts");
            sshds.push(child);
        }
        std::fs::write(dir.path().join("known_hosts"), known).expect("known_hosts");
        let nodes = SshdNodes {
            dir,
            sshds,
            cluster,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in nodes.hosts() {
            let sock = SocketAddr::new(addr.parse().expect("ip"), 22);
            while TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err() {
                assert!(Instant::now() < deadline, "sshd on {addr} never listened");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(nodes)
    }

    fn hosts(&self) -> Vec<String> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| n.address().to_string())
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A spec file for one node per host with the given known_hosts file (`extra`: more
    /// top-level TOML lines).
    fn spec(
        &self,
        name: &str,
        hosts: &[String],
        known_hosts: &Path,
        time_limit: u64,
        extra: &str,
    ) -> PathBuf {
        let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
        let path = self.path(&format!("{name}.toml"));
        // Fault-free unless `extra` names faults (the default test injects some).
        let extra = if extra.contains("nemesis") {
            extra.to_string()
        } else {
            format!("nemesis = []\n{extra}")
        };
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\nnodes = {n}\nreplication-factor = {n}\nbackend = \"ssh\"\n\
                 time-limit = {time_limit}\nfinal-time-limit = 20\n{extra}\n\
                 [ssh]\nhosts = [{hosts}]\nuser = \"root\"\nprivate-key = \"{key}\"\n\
                 known-hosts = \"{kh}\"\nremote-dir = \"{remote}\"\n",
                n = hosts.len(),
                hosts = list.join(", "),
                key = self.path("client_key").display(),
                kh = known_hosts.display(),
                remote = self.path("remote").display(),
            ),
        )
        .expect("spec");
        path
    }

    fn harness(&self, spec: &Path) -> Output {
        Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["test", "--spec"])
            .arg(spec)
            .arg("--store")
            .arg(self.path("store"))
            .output()
            .expect("harness runs")
    }
}

impl Drop for SshdNodes {
    fn drop(&mut self) {
        for c in &mut self.sshds {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cluster.teardown();
    }
}

/// The `harness: error:` line of a failed run.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("harness: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}

fn remote_brokers(root: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-af", &root.display().to_string()])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("broker") && !l.contains("pgrep"))
        .map(String::from)
        .collect()
}

#[test]
fn harness_test_over_ssh_deploys_runs_and_collects() {
    let _serial = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(nodes) = SshdNodes::start(3) else {
        return;
    };
    // A seed whose schedule partitions the nodes (not only cuts clients) and kills or pauses.
    let kinds = [FaultKind::Partition, FaultKind::Kill, FaultKind::Pause];
    let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    let seed = (0..500u64)
        .find(|seed| {
            // The harness draws the schedule from the seed tree's schedule branch.
            let Ok(s) = Schedule::generate(
                harness::seeds::Seeds::new(*seed).schedule,
                &names,
                &kinds,
                Duration::from_secs(12),
                Duration::from_secs(2),
            ) else {
                return false;
            };
            let partitions = s.actions.iter().any(
                |a| matches!(&a.action, Action::StartPartition { topology, .. } if fixed(topology)),
            );
            let process = s.actions.iter().any(|a| match &a.action {
                Action::Kill { nodes, .. } | Action::Stop { nodes } | Action::Pause { nodes } => {
                    nodes.iter().all(|n| !n.starts_with('@'))
                }
                _ => false,
            });
            partitions && process
        })
        .expect("a seed with a partition and a process fault");
    let spec = nodes.spec(
        "ssh",
        &nodes.hosts(),
        &nodes.path("known_hosts"),
        12,
        &format!(
            "seed = {seed}\nnemesis = [\"partition\", \"kill\", \"pause\"]\nnemesis-interval = 2.0"
        ),
    );
    let t0 = Instant::now();
    let out = nodes.harness(&spec);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ssh run took {:?}", t0.elapsed());
    for l in stderr.lines().filter(|l| {
        std::env::var_os("JH_SHOW").is_some() || l.contains("uploaded") || l.starts_with("harness:")
    }) {
        eprintln!("  {l}");
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("3 brokers ready"), "{stderr}");
    let run = results::store::resolve_latest(&nodes.path("store/ssh/latest")).expect("latest link");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["valid"], true, "{results:#}");
    assert!(
        results["stats"]["sends"]["ok"].as_u64().unwrap_or(0) >= 50,
        "{results:#}"
    );
    // Faults went through the sessions: nft rules, signals to the daemon's process group,
    // restarts. Cutting "clients" is refused on ssh nodes (the control session would go too).
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    let faults: Vec<serde_json::Value> = history
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|op| op["process"] == "nemesis")
        .collect();
    // Not backend failures: a role (@leader) that no broker could name in time, a refused cut
    // of the clients.
    for op in &faults {
        let error = op["value"]["error"].as_str().unwrap_or("");
        if !error.is_empty() {
            eprintln!("nemesis op failed: {op}");
        }
        assert!(
            error.is_empty()
                || error.contains("no distinct client address")
                || error.contains("no broker answered metadata"),
            "{op}"
        );
    }
    let applied: Vec<&str> = faults
        .iter()
        .filter(|op| op["value"]["error"].is_null())
        .filter_map(|op| op["f"].as_str())
        .collect();
    eprintln!("nemesis ops: {applied:?}");
    assert!(applied.contains(&"start-partition"), "{applied:?}");
    assert!(
        applied
            .iter()
            .any(|f| ["kill", "stop", "pause"].contains(f)),
        "{applied:?}"
    );
    let test_json = std::fs::read_to_string(run.join("test.json")).expect("test.json");
    assert!(test_json.contains("\"backend\": \"ssh\""), "{test_json}");
    for n in ["n1", "n2", "n3"] {
        let dir = run.join("nodes").join(n);
        let log = std::fs::read_to_string(dir.join("broker.log")).expect("log collected");
        assert!(log.contains("broker listening"), "{n}: {log}");
        let props = std::fs::read_to_string(dir.join("server.properties")).expect("config");
        assert!(
            props.contains(&format!(
                "log.dirs={}",
                nodes.path("remote").join(n).join("data/data").display()
            )),
            "{props}"
        );
        assert!(
            dir.join("data-dir/meta").is_dir(),
            "{n}: metadata log collected"
        );
        assert!(
            dir.join("data-dir/data").is_dir(),
            "{n}: partition logs collected"
        );
    }
    assert_eq!(remote_brokers(&nodes.path("remote")), Vec::<String>::new());
    for n in nodes.cluster.netns_nodes() {
        let tables = n.exec(&["nft", "list", "tables"]).expect("nft");
        assert!(!tables.stdout.contains("jepsen"), "{}", tables.stdout);
    }
}

/// A `command` system over ssh: the bundled broker binary started as a foreign system would
/// be (its own properties file rendered from the spec's templates, no `--bug`, no `/health`),
/// readiness from Metadata alone; a fault-free run is valid and the service log comes back.
#[test]
fn a_command_system_runs_over_ssh() {
    let _serial = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(nodes) = SshdNodes::start(3) else {
        return;
    };
    let broker = harness::run::find_broker_bin().expect("broker binary");
    let command = format!(
        "system = \"command\"\n[command]\nstart = \"exec {} --config {{home}}/server.properties\"\n\
         [[command.files]]\npath = \"{{home}}/server.properties\"\ncontent = \"\"\"\n\
         node.id={{id}}\nprocess.roles=broker,controller\ncontroller.quorum.voters={{voters}}\n\
         listeners=PLAINTEXT://{{host}}:{{port}}\nlog.dirs={{data_dir}}/data\n\
         metadata.log.dir={{data_dir}}/meta\nbroker.heartbeat.interval.ms=500\n\
         broker.session.timeout.ms=3000\nauto.create.topics.enable=false\n\"\"\"\n",
        broker.display()
    );
    let spec = nodes.spec(
        "sshcmd",
        &nodes.hosts(),
        &nodes.path("known_hosts"),
        10,
        &format!("nemesis = []\n{command}"),
    );
    let out = nodes.harness(&spec);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let run = results::store::resolve_latest(&nodes.path("store/sshcmd/latest")).expect("run");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["valid"], true, "{results:#}");
    let log = std::fs::read_to_string(run.join("nodes/n1/service.log")).expect("service log");
    assert!(log.contains("broker listening"), "{log}");
    assert_eq!(remote_brokers(&nodes.path("remote")), Vec::<String>::new());
}

#[test]
fn unreachable_hosts_and_bad_host_keys_are_one_line_errors() {
    let Some(nodes) = SshdNodes::start(1) else {
        return;
    };
    let host = nodes.hosts()[0].clone();
    // Unreachable: an address of the nodes' subnet that nobody owns.
    let mut octets: Vec<&str> = host.split('.').collect();
    octets[3] = "250";
    let nobody = octets.join(".");
    let spec = nodes.spec(
        "unreachable",
        std::slice::from_ref(&nobody),
        &nodes.path("known_hosts"),
        5,
        "",
    );
    let out = nodes.harness(&spec);
    assert_eq!(
        out.status.code(),
        Some(255),
        "an ssh failure is a harness error"
    );
    let line = error_line(&out);
    assert!(
        line.contains(&format!("cannot reach {nobody}:22")),
        "{line}"
    );
    assert!(line.contains("check that the host is up"), "{line}");

    // A known_hosts entry with another key: refused as a mismatch.
    let other = nodes.path("other_key");
    keygen(&other);
    let public = std::fs::read_to_string(other.with_extension("pub")).expect("pub");
    let mut f = public.split_whitespace();
    let wrong = nodes.path("wrong_known_hosts");
    std::fs::write(
        &wrong,
        format!(
            "{host} {} {}\n",
            f.next().expect("type"),
            f.next().expect("key")
        ),
    )
    .expect("write");
    let spec = nodes.spec("wrongkey", std::slice::from_ref(&host), &wrong, 5, "");
    let out = nodes.harness(&spec);
    assert_eq!(
        out.status.code(),
        Some(255),
        "an ssh failure is a harness error"
    );
    let line = error_line(&out);
    assert!(line.contains(&format!("host key of {host}:22")), "{line}");
    assert!(line.contains("does NOT match"), "{line}");
    assert!(line.contains("SHA256:"), "{line}");

    // No entry at all: refused, never accepted silently.
    let empty = nodes.path("empty_known_hosts");
    std::fs::write(&empty, "").expect("write");
    let spec = nodes.spec("unknownkey", std::slice::from_ref(&host), &empty, 5, "");
    let out = nodes.harness(&spec);
    assert_eq!(
        out.status.code(),
        Some(255),
        "an ssh failure is a harness error"
    );
    let line = error_line(&out);
    assert!(line.contains("is not in"), "{line}");
    assert!(line.contains("ssh-keyscan"), "{line}");
    assert_eq!(remote_brokers(&nodes.path("remote")), Vec::<String>::new());

    // A pinned fingerprint (as ssh-keygen -lf prints it) is accepted; another one is not.
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(nodes.path("host_key_0.pub"))
        .output()
        .expect("ssh-keygen -lf");
    let fp = String::from_utf8_lossy(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    let options = |pins: Vec<String>| SshOptions {
        hosts: vec![host.clone()],
        user: "root".into(),
        private_key: nodes.path("client_key"),
        host_keys: HostKeyCheck::Fingerprints(pins),
        remote_dir: nodes.path("remote"),
        connect_timeout: Duration::from_secs(5),
    };
    let work = nodes.path("work");
    let cluster =
        SshCluster::connect(options(vec![fp.clone()]), &work).expect("pinned key accepted");
    let out = cluster.nodes()[0].exec(&["hostname", "-I"]).expect("exec");
    assert!(out.stdout.contains(&host), "{}", out.stdout);
    drop(cluster);
    let err = SshCluster::connect(options(vec!["SHA256:AAAA".into()]), &work)
        .expect_err("another pin refused")
        .to_string();
    assert!(err.contains("does NOT match") && err.contains(&fp), "{err}");
}

/// A partition whose targets need no role lookup (which fails while no broker answers
/// metadata) and that cuts peers rather than the harness's clients.
fn fixed(topology: &Topology) -> bool {
    matches!(
        topology,
        Topology::IsolateOne
            | Topology::MajorityMinority
            | Topology::MajoritiesRing
            | Topology::Bridge
    )
}

/// The first seed whose schedule (3 nodes, partitions only, 1 s interval over 120 s) starts
/// with a partition that is not a cut of the clients, and when that partition starts.
fn seed_partitioning_first() -> (u64, u64) {
    let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    (0..500u64)
        .find_map(|seed| {
            let s = Schedule::generate(
                harness::seeds::Seeds::new(seed).schedule,
                &names,
                &[FaultKind::Partition],
                Duration::from_secs(120),
                Duration::from_secs(1),
            )
            .ok()?;
            let first = s.actions.first()?;
            match &first.action {
                Action::StartPartition { topology, .. }
                    if fixed(topology) && first.at_ms < 3000 =>
                {
                    Some((seed, first.at_ms))
                }
                _ => None,
            }
        })
        .expect("a seed starting with a partition")
}

#[test]
fn a_sigkilled_ssh_run_is_cleaned_up_by_harness_clean() {
    let _serial = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(nodes) = SshdNodes::start(3) else {
        return;
    };
    let (seed, at_ms) = seed_partitioning_first();
    let spec = nodes.spec(
        "killed",
        &nodes.hosts(),
        &nodes.path("known_hosts"),
        120,
        &format!("seed = {seed}\nnemesis = [\"partition\"]\nnemesis-interval = 1.0"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--spec"])
        .arg(&spec)
        .arg("--store")
        .arg(nodes.path("store"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("harness starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push(line.clone());
        if line.contains("actions over") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("actions over")),
        "{}",
        seen.join("\n")
    );
    // Keep draining stderr so the harness never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let partitioned = |nodes: &SshdNodes| {
        nodes
            .cluster
            .netns_nodes()
            .iter()
            .filter(|n| {
                n.exec(&["nft", "list", "tables"])
                    .is_ok_and(|o| o.stdout.contains("jepsen"))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_millis(at_ms + 5000);
    while partitioned(&nodes) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(partitioned(&nodes) > 0, "the partition is in place");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert_eq!(
        remote_brokers(&nodes.path("remote")).len(),
        3,
        "the killed harness's brokers keep running"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("clean")
        .output()
        .expect("harness clean");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ssh run on"), "{stdout}");
    assert_eq!(remote_brokers(&nodes.path("remote")), Vec::<String>::new());
    assert_eq!(partitioned(&nodes), 0, "nft rules removed");
}
