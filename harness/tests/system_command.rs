//! The system under test as a protocol: a `command` system whose templates start the bundled
//! broker binary as a foreign system would be started (its own properties file written from
//! the spec, no `--bug`, no `/health` listener), found by the process it runs in the
//! foreground or by a pid file; readiness and roles come from the Kafka protocol alone. A
//! fault-free run and a kill-and-partition run are valid on netns; partitions aimed at
//! `@leader/0`, `@controller` and `@coordinator` isolate the node Metadata (or FindCoordinator)
//! names, and the others then elect another leader, controller and coordinator; a broken start
//! command fails fast naming the node, the command and its output.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::faults::Roles;
use harness::node::{NetnsCluster, NetnsOptions};
use harness::spec::TestSpec;
use nemesis::net::Topology;
use nemesis::{Action, Nemesis, Node};

/// One netns cluster at a time in this file.
static NETNS: Mutex<()> = Mutex::new(());

fn broker() -> String {
    harness::run::find_broker_bin()
        .expect("broker binary")
        .display()
        .to_string()
}

/// A `[command]` table starting the bundled broker from its own properties file (`daemon`:
/// backgrounded with a pid file instead of in the foreground).
fn command_table(daemon: bool) -> String {
    let start = if daemon {
        format!(
            "{} --config {{home}}/server.properties & echo $! > {{home}}/broker.pid",
            broker()
        )
    } else {
        format!("exec {} --config {{home}}/server.properties", broker())
    };
    let pid = if daemon {
        "pid-file = \"{home}/broker.pid\"\n"
    } else {
        ""
    };
    format!(
        "[command]\nstart = \"{start}\"\nport = 9092\n{pid}logs = [\"{{home}}/service.log\"]\n\
         [[command.files]]\npath = \"{{home}}/server.properties\"\ncontent = \"\"\"\n\
         node.id={{id}}\nprocess.roles=broker,controller\ncontroller.quorum.voters={{voters}}\n\
         listeners=PLAINTEXT://{{host}}:{{port}}\nlog.dirs={{data_dir}}/data\n\
         metadata.log.dir={{data_dir}}/meta\nbroker.heartbeat.interval.ms=500\n\
         broker.session.timeout.ms=3000\nreplica.lag.time.max.ms=5000\n\
         auto.create.topics.enable=false\n\"\"\"\n"
    )
}

fn spec_file(dir: &Path, name: &str, top: &str, daemon: bool) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nnodes = 3\nsystem = \"command\"\n{top}\n{}",
            command_table(daemon)
        ),
    )
    .expect("write spec");
    path
}

fn harness_test(spec: &Path, store: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["test", "--spec"])
        .arg(spec)
        .arg("--store")
        .arg(store)
        .args(extra)
        .output()
        .expect("harness runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn results(store: &Path, name: &str) -> serde_json::Value {
    let run = results::store::resolve_latest(&store.join(name).join("latest")).expect("run");
    serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).expect("results"))
        .expect("json")
}

#[test]
fn a_command_system_runs_fault_free_and_under_kills_and_partitions() {
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let calm = spec_file(dir.path(), "calm", "time-limit = 20\nnemesis = []", false);
    let (code, out) = harness_test(&calm, &store, &[]);
    assert_eq!(code, Some(0), "{out}");
    let r = results(&store, "calm");
    assert_eq!(r["valid"], true, "{r:#}");
    let run = results::store::resolve_latest(&store.join("calm/latest")).expect("run");
    let log = std::fs::read_to_string(run.join("nodes/n1/service.log")).expect("service log kept");
    assert!(log.contains("broker listening"), "{log}");

    let faulty = spec_file(
        dir.path(),
        "faulty",
        "time-limit = 30\nnemesis = [\"kill\", \"partition\"]\nnemesis-interval = 2.5",
        true,
    );
    let (code, out) = harness_test(&faulty, &store, &["--seed", "3"]);
    assert_eq!(code, Some(0), "{out}");
    let run = results::store::resolve_latest(&store.join("faulty/latest")).expect("run");
    let history = std::fs::read_to_string(run.join("history.jsonl")).expect("history");
    assert!(
        history.contains("\"f\":\"kill\"") || history.contains("\"f\":\"stop\""),
        "a kill was applied through the pid file"
    );
    assert!(
        history.contains("\"f\":\"start-partition\""),
        "a partition was applied"
    );
    assert!(
        !history.contains("\"f\":\"start-failed\""),
        "every restart came back"
    );
}

#[test]
fn a_broken_start_command_fails_fast_naming_node_command_and_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        "name = \"broken\"\nnodes = 1\nreplication-factor = 1\nsystem = \"command\"\n\
         nemesis = []\nbackend = \"local\"\n[command]\n\
         start = \"echo no such kafka here >&2; exit 7\"\n",
    )
    .expect("write");
    let started = Instant::now();
    let (code, out) = harness_test(&path, &dir.path().join("store"), &[]);
    assert_eq!(code, Some(255), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60), "fails fast");
    assert!(out.contains("node n1"), "{out}");
    assert!(
        out.contains("no such kafka here"),
        "the command's output: {out}"
    );
    assert!(out.contains("command"), "{out}");
}

#[test]
fn role_aimed_faults_hit_the_nodes_metadata_and_find_coordinator_name() {
    let _serial = NETNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = TestSpec::from_toml(&format!(
        "nodes = 3\nsystem = \"command\"\nnemesis = []\n{}",
        command_table(true)
    ))
    .expect("spec");
    let system = harness::system::for_spec(&spec).expect("system");
    let mut cluster =
        NetnsCluster::create(3, dir.path(), NetnsOptions::default()).expect("netns cluster");
    let nodes = system.wrap(cluster.nodes());
    system
        .prepare(&nodes, &spec, &harness::deploy::HostFiles)
        .expect("prepare");
    harness::deploy::start_all(&nodes).expect("start");
    let log = |n: &dyn Node| n.home_dir().join("service.log");
    harness::deploy::wait_ready_protocol(&nodes, 9092, Duration::from_secs(60), &log)
        .expect("ready by Metadata");
    let bootstrap: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:9092", n.address()))
        .collect();
    harness::workload::create_topic(&bootstrap.join(","), &spec).expect("topic");
    let before = harness::metadata::any_placement(&nodes, 9092, harness::workload::TOPIC)
        .expect("placement");
    let mut roles = Roles::new(nodes.clone(), 9092, harness::workload::TOPIC, 4, 1);
    let target = roles.resolve("@leader/0").expect("leader resolved");
    let leader_name = format!("n{}", before.leaders[0]);
    assert_eq!(target, vec![leader_name.clone()]);
    let nemesis = Arc::new(Nemesis::new(nodes.clone(), 1));
    let history = checkers::HistoryWriter::create(&dir.path().join("h.jsonl")).expect("history");
    assert!(harness::faults::apply_and_record(
        &nemesis,
        &mut roles,
        &Action::StartPartition {
            topology: Topology::IsolateNode {
                node: "@leader/0".into()
            },
            seed: None,
        },
        &history,
    )
    .expect("recorded"));
    // The others elect a new leader for partition 0 in a newer epoch: the isolated node led it.
    let others: Vec<Arc<dyn Node>> = nodes
        .iter()
        .filter(|n| n.name() != leader_name)
        .cloned()
        .collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    loop {
        let after = harness::metadata::any_placement(&others, 9092, harness::workload::TOPIC);
        if let Some(a) = after {
            if a.leaders[0] >= 0
                && format!("n{}", a.leaders[0]) != leader_name
                && a.epochs[0] > before.epochs[0]
            {
                break;
            }
        }
        if Instant::now() >= deadline {
            for n in &nodes {
                println!(
                    "--- {}:\n{}",
                    n.name(),
                    harness::deploy::log_tail(&n.home_dir().join("service.log"), 40)
                );
            }
            panic!("partition 0 was not re-elected away from the isolated {leader_name}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    nemesis.heal_all().expect("heal");
    harness::deploy::wait_ready_protocol(&nodes, 9092, Duration::from_secs(60), &log)
        .expect("ready again after the heal");

    // @controller: isolated, the others elect another controller.
    let controller = roles.resolve("@controller").expect("controller resolved");
    let isolate = |target: &str| Action::StartPartition {
        topology: Topology::IsolateNode {
            node: target.into(),
        },
        seed: None,
    };
    assert!(harness::faults::apply_and_record(
        &nemesis,
        &mut roles,
        &isolate("@controller"),
        &history
    )
    .expect("recorded"));
    let others_of = |name: &str| -> Vec<Arc<dyn Node>> {
        nodes.iter().filter(|n| n.name() != name).cloned().collect()
    };
    let others = others_of(&controller[0]);
    wait_for(
        &format!("a controller other than {}", controller[0]),
        || {
            harness::metadata::any_placement(&others, 9092, harness::workload::TOPIC)
                .is_some_and(|p| p.controller >= 0 && format!("n{}", p.controller) != controller[0])
        },
    );
    nemesis.heal_all().expect("heal");
    harness::deploy::wait_ready_protocol(&nodes, 9092, Duration::from_secs(60), &log)
        .expect("ready again after the heal");

    // @coordinator: FindCoordinator's answer; isolated, another broker takes the group over.
    let mut coordinator = None;
    wait_for("a group coordinator", || {
        coordinator = roles.resolve("@coordinator");
        coordinator.is_some()
    });
    let coordinator = coordinator.unwrap_or_default();
    let named =
        harness::metadata::group_coordinator(&nodes, 9092, harness::workload::GROUP).expect("id");
    assert_eq!(coordinator, vec![format!("n{named}")]);
    assert!(harness::faults::apply_and_record(
        &nemesis,
        &mut roles,
        &isolate("@coordinator"),
        &history
    )
    .expect("recorded"));
    let others = others_of(&coordinator[0]);
    wait_for(
        &format!("a coordinator other than {}", coordinator[0]),
        || {
            harness::metadata::group_coordinator(&others, 9092, harness::workload::GROUP)
                .is_some_and(|id| format!("n{id}") != coordinator[0])
        },
    );
    nemesis.heal_all().expect("heal");
    harness::deploy::stop_brokers(&nodes, Duration::from_secs(5));
    cluster.teardown().expect("teardown");
}

/// Polls `done` every 250 ms for up to 30 s, failing with `what` when it never holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never saw {what} within 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}
