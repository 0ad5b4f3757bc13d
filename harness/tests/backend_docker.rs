//! The docker backend, where a Docker engine answers (each test prints why it is skipped when
//! none does): a short `harness test --backend docker` run is valid, keeps every node's log and
//! data dir, and leaves no container, network or image; faults (nft partitions inside a
//! container's network namespace, kill and restart, pause, clock, EIO on the fault FS data dir,
//! file corruption) apply and heal;
//! a SIGKILLed harness's containers, network and image are removed by `harness clean`; a
//! `command` system whose start command runs the broker binary listed in `image-files` (copied
//! into the image with its libraries) is valid fault-free and under kills.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::node::docker::{engine_available, LABEL_RUN};
use harness::node::{DockerCluster, DockerOptions};
use nemesis::{Action, FaultKind, Nemesis, Node, ServiceSpec, Signal, StopMode};

/// One docker test at a time: each checks that nothing labelled for the harness remains.
static DOCKER: Mutex<()> = Mutex::new(());

fn engine() -> bool {
    match engine_available() {
        Ok(_) => true,
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// Names of containers, networks and images carrying the harness's run label.
fn labelled(run: Option<&str>) -> Vec<String> {
    let filter = match run {
        Some(id) => format!("label={LABEL_RUN}={id}"),
        None => format!("label={LABEL_RUN}"),
    };
    let mut found = Vec::new();
    for argv in [
        vec!["ps", "-a", "--format", "container {{.Names}}"],
        vec!["network", "ls", "--format", "network {{.Name}}"],
        vec!["images", "--format", "image {{.Repository}}:{{.Tag}}"],
    ] {
        let out = Command::new("docker")
            .args(&argv[..argv.len() - 2])
            .args(["--filter", &filter])
            .args(&argv[argv.len() - 2..])
            .output()
            .expect("docker runs");
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    found
}

/// The latest run under the test's store dir `name_dir`, whose results.json says valid with
/// at least 50 acknowledged sends.
fn valid_run(name_dir: &std::path::Path) -> PathBuf {
    let run = results::store::resolve_latest(&name_dir.join("latest")).expect("latest link");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert_eq!(results["valid"], true, "{results:#}");
    assert!(
        results["stats"]["sends"]["ok"].as_u64().unwrap_or(0) >= 50,
        "{results:#}"
    );
    run
}

fn broker_processes_under(dir: &std::path::Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-af", &dir.display().to_string()])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("broker"))
        .map(String::from)
        .collect()
}

#[test]
fn harness_test_on_docker_is_valid_and_leaves_nothing() {
    if !engine() {
        return;
    }
    let _serial = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    let store = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--backend",
            "docker",
            "--nodes",
            "3",
            "--time-limit",
            "10",
            "--nemesis",
            "none",
            "--name",
            "docker",
            "--store",
        ])
        .arg(store.path())
        .output()
        .expect("harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("docker run took {:?}", t0.elapsed());
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("3 brokers ready"), "{stderr}");
    let run = valid_run(&store.path().join("docker"));
    for n in ["n1", "n2", "n3"] {
        let dir = run.join("nodes").join(n);
        let log = std::fs::read_to_string(dir.join("broker.log")).expect("broker log kept");
        assert!(log.contains("broker listening"), "{n}: {log}");
        let props = std::fs::read_to_string(dir.join("server.properties")).expect("config kept");
        assert!(props.contains("listeners=PLAINTEXT://"), "{props}");
        assert!(dir.join("data-dir/meta").is_dir() && dir.join("data-dir/data").is_dir());
    }
    assert_eq!(labelled(None), Vec::<String>::new(), "nothing left behind");
    assert_eq!(broker_processes_under(store.path()), Vec::<String>::new());
}

/// Faults through the backend's `Node` implementation, on containers whose "broker" is
/// `sleep` (the image bakes in whatever binary the cluster is created with).
#[test]
fn faults_apply_inside_containers_and_heal() {
    if !engine() {
        return;
    }
    let _serial = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let sleep = PathBuf::from("/bin/sleep");
    let mut cluster = DockerCluster::create(
        2,
        dir.path(),
        DockerOptions {
            broker_bin: Some(sleep.clone()),
            disk_faults: true,
            image_files: Vec::new(),
        },
    )
    .expect("docker cluster");
    let id = cluster.id().to_string();
    let nodes = cluster.nodes();
    let faketime = nodes[0].capabilities().check(FaultKind::Clock).is_ok();
    for n in &nodes {
        std::fs::write(n.data_dir().join("segment"), vec![7u8; 4096]).expect("seed file");
        n.set_service(ServiceSpec {
            program: sleep.clone(),
            args: vec!["600".into()],
            env: vec![],
            log_file: n.data_dir().join("service.log"),
            fake_clock: faketime,
        });
        n.start_service().expect("start inside the container");
    }
    // The service runs in the container's namespaces: its hostname is the node's.
    let pid = nodes[0].service_pid().expect("running");
    let children = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep");
    let child = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .next()
        .map(String::from)
        .expect("nsenter's child");
    let uts = std::fs::read_link(format!("/proc/{child}/ns/uts")).expect("uts ns");
    let host_uts = std::fs::read_link("/proc/self/ns/uts").expect("own uts ns");
    assert_ne!(
        uts, host_uts,
        "the service runs in the container's namespaces"
    );
    // Its data dir is the fault FS, seen through the container's bind mount.
    let mounts = std::fs::read_to_string(format!("/proc/{child}/mountinfo")).expect("mountinfo");
    let data = nodes[0].data_dir().display().to_string();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(&data) && l.contains(nemesis::disk::FS_NAME)),
        "{mounts}"
    );
    // A refused connection (RST) means reachable; a timeout means the packets were dropped.
    let probe = |from: &dyn Node, to: &dyn Node| -> bool {
        let script = format!("timeout 2 bash -c '</dev/tcp/{}/7' 2>&1", to.address());
        let out = from.exec(&["bash", "-c", &script]).expect("exec");
        out.stdout.contains("refused")
    };
    assert!(
        probe(nodes[0].as_ref(), nodes[1].as_ref()),
        "reachable before"
    );
    nemesis::net::install_drops(
        nodes[0].as_ref(),
        nemesis::net::PARTITION_TABLE,
        &[nodes[1].address()],
        None,
    )
    .expect("partition");
    assert!(!probe(nodes[0].as_ref(), nodes[1].as_ref()), "cut");
    nemesis::net::delete_table(nodes[0].as_ref(), nemesis::net::PARTITION_TABLE).expect("heal");
    assert!(probe(nodes[0].as_ref(), nodes[1].as_ref()), "healed");
    // Kill, pause, file corruption through the nemesis; then its final heal.
    let nemesis = Nemesis::new(nodes.clone(), 7);
    nemesis
        .check_supported(&[
            FaultKind::Partition,
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::FileCorruption,
            FaultKind::Disk,
        ])
        .expect("supported");
    nemesis
        .apply(&Action::StartDisk {
            nodes: vec!["n2".into()],
            fault: nemesis::disk::DiskFault::EioWrites,
        })
        .expect("disk fault");
    let write = std::fs::write(nodes[1].data_dir().join("new"), b"x");
    assert!(write.is_err(), "writes fail with EIO");
    let names = vec!["n1".to_string()];
    nemesis
        .apply(&Action::Kill {
            nodes: names.clone(),
            lose_unfsynced: false,
        })
        .expect("kill");
    assert!(nodes[0].service_pid().is_none(), "killed");
    nemesis
        .apply(&Action::Start {
            nodes: names.clone(),
        })
        .expect("restart");
    nemesis
        .apply(&Action::Pause {
            nodes: names.clone(),
        })
        .expect("pause");
    let pid = nodes[0].service_pid().expect("running");
    let stopped =
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") T "));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stopped(), "paused");
    if faketime {
        nemesis
            .apply(&Action::BumpClock {
                nodes: names.clone(),
                offset_ms: 5000,
            })
            .expect("clock");
    }
    let op = nemesis
        .apply(&Action::CorruptFile {
            node: "n2".into(),
            fault: nemesis::disk::FileFault::BitFlip { flips: 4, seed: 3 },
        })
        .expect("file fault");
    assert!(op.value.to_string().contains("segment"), "{}", op.value);
    nemesis.heal_all().expect("heal");
    for n in &nodes {
        assert!(n.service_pid().is_some(), "{} running after heal", n.name());
        let tables = n.exec(&["nft", "list", "tables"]).expect("nft");
        assert!(!tables.stdout.contains("jepsen"), "{}", tables.stdout);
    }
    nodes[0].signal_service(Signal::Term).expect("signal");
    drop(nemesis);
    for n in &nodes {
        n.stop_service(StopMode::Kill).expect("stop");
    }
    cluster.teardown().expect("teardown");
    assert_eq!(labelled(Some(&id)), Vec::<String>::new());
}

#[test]
fn a_sigkilled_docker_run_is_removed_by_harness_clean() {
    if !engine() {
        return;
    }
    let _serial = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    let store = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "test",
            "--backend",
            "docker",
            "--nodes",
            "3",
            "--time-limit",
            "120",
            "--name",
            "killed",
            "--store",
        ])
        .arg(store.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("harness starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push(line.clone());
        if line.contains("brokers ready") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("brokers ready")),
        "{}",
        seen.join("\n")
    );
    std::thread::sleep(Duration::from_secs(1));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        labelled(None)
            .iter()
            .filter(|l| l.starts_with("container"))
            .count()
            == 3,
        "the killed run's containers remain: {:?}",
        labelled(None)
    );
    assert!(
        !broker_processes_under(store.path()).is_empty(),
        "brokers still running"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("clean")
        .output()
        .expect("harness clean");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("docker run"), "{stdout}");
    assert_eq!(
        labelled(None),
        Vec::<String>::new(),
        "clean removed everything"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker_processes_under(store.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(broker_processes_under(store.path()), Vec::<String>::new());
}

/// The broker's own properties, as templates the `command` system renders per node (short
/// heartbeats and sessions, so a killed node's partitions move within the run).
const COMMAND_PROPERTIES: &[(&str, &str)] = &[
    ("node.id", "{id}"),
    ("process.roles", "broker,controller"),
    ("controller.quorum.voters", "{voters}"),
    ("listeners", "PLAINTEXT://{host}:{port}"),
    ("log.dirs", "{data_dir}/data"),
    ("metadata.log.dir", "{data_dir}/meta"),
    ("broker.heartbeat.interval.ms", "500"),
    ("broker.session.timeout.ms", "3000"),
    ("replica.lag.time.max.ms", "5000"),
    ("auto.create.topics.enable", "false"),
];

/// A docker spec for a `command` system running the broker binary (copied into the image by
/// `image-files`) in the foreground from its own properties file.
fn command_spec(dir: &std::path::Path, name: &str, top: &str) -> PathBuf {
    let broker = harness::run::find_broker_bin()
        .expect("broker binary")
        .display()
        .to_string();
    let properties: String = COMMAND_PROPERTIES
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nnodes = 3\nbackend = \"docker\"\nsystem = \"command\"\n{top}\n\
             [command]\nstart = \"exec {broker} --config {{home}}/server.properties\"\n\
             image-files = [\"{broker}\"]\n[[command.files]]\n\
             path = \"{{home}}/server.properties\"\ncontent = \"\"\"\n{properties}\"\"\"\n"
        ),
    )
    .expect("write spec");
    path
}

fn run_spec(spec: &std::path::Path, store: &std::path::Path) -> (Option<i32>, String) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--spec"])
        .arg(spec)
        .arg("--store")
        .arg(store)
        .output()
        .expect("harness runs");
    eprintln!("{} took {:?}", spec.display(), t0.elapsed());
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_command_system_runs_from_image_files_on_docker() {
    if !engine() {
        return;
    }
    let _serial = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    // Refused up front: a relative image file (naming the field and the path), and a
    // daemonizing start (a pid file) on docker.
    let good =
        std::fs::read_to_string(command_spec(dir.path(), "bad", "nemesis = []")).expect("spec");
    let bad = dir.path().join("bad.toml");
    for (text, expected) in [
        (
            good.replace("image-files = [\"", "image-files = [\"relative/"),
            "command.image-files: `relative/",
        ),
        (
            good.replace("[command]\n", "[command]\npid-file = \"{home}/pid\"\n"),
            "foreground",
        ),
    ] {
        std::fs::write(&bad, text).expect("write");
        let (code, out) = run_spec(&bad, &store);
        assert_eq!(code, Some(254), "a bad spec: {out}");
        assert!(out.contains(expected), "{out}");
    }

    let calm = command_spec(dir.path(), "calm", "time-limit = 10\nnemesis = []");
    let (code, out) = run_spec(&calm, &store);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 brokers ready"), "{out}");
    let run = valid_run(&store.join("calm"));
    let log = std::fs::read_to_string(run.join("nodes/n1/service.log")).expect("service log");
    assert!(log.contains("broker listening"), "{log}");
    assert_eq!(labelled(None), Vec::<String>::new(), "nothing left behind");

    let killed = command_spec(
        dir.path(),
        "killed",
        "time-limit = 20\nnemesis = [\"kill\", \"pause\"]\nnemesis-interval = 2.5\nseed = 3",
    );
    let (code, out) = run_spec(&killed, &store);
    assert_eq!(code, Some(0), "{out}");
    let run = results::store::resolve_latest(&store.join("killed/latest")).expect("run");
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    assert!(history.contains("\"f\":\"kill\""), "a kill was applied");
    assert!(history.contains("\"f\":\"pause\""), "a pause was applied");
    assert!(
        !history.contains("\"f\":\"start-failed\""),
        "every restart came back"
    );
    assert_eq!(labelled(None), Vec::<String>::new(), "nothing left behind");
    assert_eq!(broker_processes_under(dir.path()), Vec::<String>::new());
}
