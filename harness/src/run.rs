//! One `harness test` run, wired end to end: the run's store folder and `test.json` (with the
//! nemesis schedule), nodes on the chosen backend, faults the backend cannot do refused before
//! anything starts, the broker deployed and ready, the topic created, the workload's main phase
//! with the nemesis replaying its schedule, the final heal, recovery, the final reads, the
//! check; and always the teardown: faults healed (the `Nemesis` guard), brokers stopped, their
//! logs copied into `nodes/<node>/`, nodes removed — on success, error, or Ctrl-C/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use nemesis::{Nemesis, Node, Schedule};
use results::store::RunDir;

use crate::deploy;
use crate::faults::{self, FaultDriver, Roles};
use crate::node::ssh::{HostKeyCheck, SshOptions};
use crate::node::{
    DockerCluster, DockerOptions, LocalCluster, NetnsCluster, NetnsOptions, SshCluster,
};
use crate::spec::{Backend, FaultKind, SshSpec, TestSpec};

/// Set by SIGINT/SIGTERM; every waiting step checks it and unwinds through the teardown.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handlers that turn a signal into an orderly teardown.
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// The broker binary: `--broker-bin`, else beside the harness binary, else in the same
/// cargo target dir.
pub fn find_broker_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for candidate in [dir.join("broker"), dir.join("../broker")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "no broker binary next to {}; build it with `cargo build --release -p broker`",
        exe.display()
    )
}

enum Cluster {
    Netns(NetnsCluster),
    Local(LocalCluster),
    Docker(DockerCluster),
    Ssh(SshCluster),
}

impl Cluster {
    fn nodes(&self) -> Vec<Arc<dyn Node>> {
        match self {
            Cluster::Netns(c) => c.nodes(),
            Cluster::Local(c) => c.nodes(),
            Cluster::Docker(c) => c.nodes(),
            Cluster::Ssh(c) => c.nodes(),
        }
    }

    fn teardown(&mut self) -> Result<()> {
        match self {
            Cluster::Netns(c) => c.teardown().context("removing netns nodes"),
            Cluster::Local(c) => {
                c.teardown();
                Ok(())
            }
            Cluster::Docker(c) => c
                .teardown()
                .context("removing the run's containers, network and image"),
            Cluster::Ssh(c) => c
                .teardown()
                .context("stopping the brokers on the ssh hosts"),
        }
    }

    /// How deploy writes a node's files: uploads for ssh, the host filesystem otherwise.
    fn files(&self) -> &dyn deploy::NodeFiles {
        match self {
            Cluster::Ssh(c) => c,
            _ => &deploy::HostFiles,
        }
    }
}

/// The ssh backend's options from the spec's `[ssh]` table, with OpenSSH's defaults for what
/// it leaves out (`~/.ssh/known_hosts`, the first of `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`).
pub fn ssh_options(ssh: &SshSpec) -> Result<SshOptions> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let dot_ssh = |f: &str| home.as_ref().map(|h| h.join(".ssh").join(f));
    let private_key = match &ssh.private_key {
        Some(k) => k.clone(),
        None => ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .filter_map(|f| dot_ssh(f))
            .find(|p| p.is_file())
            .context("no ssh.private-key given and no ~/.ssh/id_ed25519, id_ecdsa or id_rsa")?,
    };
    let host_keys = if ssh.fingerprints.is_empty() {
        HostKeyCheck::KnownHosts(match &ssh.known_hosts {
            Some(f) => f.clone(),
            None => dot_ssh("known_hosts")
                .context("no ssh.known-hosts or ssh.fingerprints given and no HOME")?,
        })
    } else {
        HostKeyCheck::Fingerprints(ssh.fingerprints.clone())
    };
    Ok(SshOptions {
        hosts: ssh.hosts.clone(),
        user: ssh.user.clone(),
        private_key,
        host_keys,
        remote_dir: ssh
            .remote_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::spec::DEFAULT_REMOTE_DIR)),
        connect_timeout: Duration::from_secs(5),
    })
}

/// Runs one test; returns the process exit code (0 valid, 1 invalid, 2 unknown); an error is
/// a run the harness could not finish (exit 255, or 130 when interrupted).
pub fn run_test(spec: &TestSpec, command_line: &[String]) -> Result<u8> {
    let system =
        crate::system::for_spec(spec).map_err(|reason| crate::spec::SpecError::Invalid {
            field: "system".into(),
            reason,
        })?;
    let seeds = crate::seeds::Seeds::new(spec.seed);
    let node_names: Vec<String> = (1..=spec.nodes).map(|i| format!("n{i}")).collect();
    let schedule = Schedule::generate_with(
        seeds.schedule,
        &node_names,
        &spec.nemesis,
        Duration::from_secs(spec.time_limit),
        Duration::from_secs_f64(spec.nemesis_interval),
        nemesis::schedule::ScheduleOptions {
            data_port: system.client_port(),
            // Twice the native consumers' 3 s session: the group has rebalanced and the new
            // owners have committed by the time a zombie commits.
            ..Default::default()
        },
    )
    .context("generating the nemesis schedule")?;
    let run = RunDir::create(&spec.store, &spec.name, SystemTime::now())
        .context("creating the run's store folder")?;
    if let Err(e) = crate::runlog::open(&run.path.join("harness.log")) {
        eprintln!("harness: warning: no harness.log in the run folder: {e}");
    }
    crate::runlog::say(&format!(
        "harness: test {} seed {} (replay with --seed {}); nemesis {}; {}",
        spec.name,
        spec.seed,
        spec.seed,
        nemesis_names(&spec.nemesis),
        kafka_release(spec).map_or_else(
            || "the command system's own release".to_string(),
            |r| format!("Kafka {r} rules")
        )
    ));
    crate::runlog::say(&format!("harness: run folder {}", run.path.display()));
    crate::runlog::write_line(&format!("harness: command line {}", command_line.join(" ")));
    let test_json = serde_json::json!({
        "spec": spec,
        "seed": spec.seed,
        "seeds": seeds,
        "command_line": command_line,
        "versions": { "harness": env!("CARGO_PKG_VERSION") },
        "nemesis_schedule": schedule,
        "kafka_release": kafka_release(spec),
    });
    run.write_json(&run.test_json(), &test_json)
        .context("writing test.json")?;
    let outcome = run_in(spec, system.as_ref(), &seeds, &schedule, &run);
    let summary = crate::summary::Summary::of_run(&run.path, spec.seed);
    crate::runlog::say(&summary.render(outcome.as_ref().err()));
    crate::runlog::close();
    outcome
}

/// The Kafka release whose rules the bundled broker follows in this run (its `kafka.release`
/// setting, or the default `broker --list-releases` names); None for a command system, which
/// runs whatever release it is.
pub fn kafka_release(spec: &TestSpec) -> Option<String> {
    (spec.system == crate::system::SystemKind::Bundled).then(|| {
        spec.broker
            .get("kafka.release")
            .cloned()
            .unwrap_or_else(|| {
                crate::system::bundled_releases().map_or_else(
                    |e| format!("the broker's default (not listed: {e})"),
                    |r| r.default,
                )
            })
    })
}

/// The comma-separated fault kinds, or `none`.
fn nemesis_names(kinds: &[FaultKind]) -> String {
    if kinds.is_empty() {
        "none".into()
    } else {
        kinds
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The run inside its folder: nodes, deploy, workload, check, and always the teardown.
fn run_in(
    spec: &TestSpec,
    system: &dyn crate::system::System,
    seeds: &crate::seeds::Seeds,
    schedule: &Schedule,
    run: &RunDir,
) -> Result<u8> {
    let node_names: Vec<String> = (1..=spec.nodes).map(|i| format!("n{i}")).collect();
    let work = run.path.join("work");
    // Disk faults, alone or inside a scripted kind, need each data dir on the fault FS.
    let disk_faults = spec
        .nemesis
        .iter()
        .any(|k| k.components().contains(&FaultKind::Disk));
    let mut cluster = match spec.backend {
        Backend::Netns => Cluster::Netns(
            NetnsCluster::create(spec.nodes, &work, NetnsOptions { disk_faults })
                .context("creating netns nodes (needs root; `harness clean` removes leftovers)")?,
        ),
        Backend::Local => {
            Cluster::Local(LocalCluster::create(spec.nodes, &work).context("creating local nodes")?)
        }
        Backend::Docker => Cluster::Docker(
            DockerCluster::create(
                spec.nodes,
                &work,
                DockerOptions {
                    broker_bin: match spec.system {
                        crate::system::SystemKind::Bundled => Some(find_broker_bin()?),
                        crate::system::SystemKind::Command => None,
                    },
                    disk_faults,
                    image_files: match (&spec.system, &spec.command) {
                        (crate::system::SystemKind::Command, Some(c)) => c.image_files.clone(),
                        _ => Vec::new(),
                    },
                },
            )
            .context("creating docker nodes (`harness clean` removes leftovers)")?,
        ),
        Backend::Ssh => {
            let ssh = spec
                .ssh
                .as_ref()
                .context("backend ssh needs an [ssh] table in the spec")?;
            Cluster::Ssh(
                SshCluster::connect(ssh_options(ssh)?, &work)
                    .context("connecting to the ssh nodes")?,
            )
        }
    };
    let nodes = system.wrap(cluster.nodes());
    let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
    let outcome = if names != node_names.iter().map(String::as_str).collect::<Vec<_>>() {
        Err(anyhow::anyhow!(
            "the backend named its nodes {names:?}, the schedule expects {node_names:?}"
        ))
    } else {
        let stalls = Arc::new(workloads::stall::ConsumerStalls::default());
        let mut nemesis = Nemesis::new(nodes.clone(), seeds.nemesis);
        if crate::workload::can_stall(spec) {
            nemesis = nemesis
                .with_client_faults(Arc::new(crate::workload::WorkloadFaults(stalls.clone())));
        }
        let nemesis = Arc::new(nemesis);
        match nemesis.check_supported(&spec.nemesis) {
            Ok(()) => deploy_and_run(
                &Plan {
                    spec,
                    system,
                    seeds,
                    schedule,
                    stalls,
                },
                &nodes,
                cluster.files(),
                run,
                &nemesis,
            ),
            Err(e) => Err(anyhow::Error::new(crate::spec::SpecError::Invalid {
                field: "nemesis".into(),
                reason: format!(
                    "the {} backend cannot do a requested fault ({e}); drop it from --nemesis",
                    spec.backend
                ),
            })),
        }
        // The nemesis guard is dropped here: anything still active is healed before teardown.
    };
    // Teardown always runs: stop brokers, keep their logs, remove the nodes.
    deploy::stop_brokers(&nodes, Duration::from_secs(5));
    if let Cluster::Ssh(c) = &cluster {
        // Remote nodes: bring each log, config and data dir back over SSH.
        for n in &nodes {
            let collected = run
                .node_dir(n.name())
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|dir| c.collect(n.name(), &dir).map_err(anyhow::Error::new));
            if let Err(e) = collected {
                crate::runlog::say(&format!(
                    "harness: warning: collecting {}'s logs and data: {e:#}",
                    n.name()
                ));
            }
        }
    }
    let host_fs = !matches!(cluster, Cluster::Ssh(_));
    for n in nodes.iter().filter(|_| host_fs) {
        if let Ok(dir) = run.node_dir(n.name()) {
            for (name, path) in system.log_files(n.as_ref()) {
                let _ = std::fs::copy(path, dir.join(name));
            }
        }
    }
    let data_dirs: Vec<(String, PathBuf)> = nodes
        .iter()
        .filter(|_| host_fs)
        .map(|n| (n.name().to_string(), n.data_dir()))
        .collect();
    let teardown = cluster.teardown();
    // Keep each node's data (segments, indexes, checkpoints, the metadata log) beside its log:
    // the fault FS's backing dir when disk faults were on (the mount is gone now), else the
    // data dir itself. A rename within the store's filesystem costs nothing.
    for (name, data) in &data_dirs {
        let backing = data.with_file_name("backing");
        let src = if backing.is_dir() {
            backing
        } else {
            data.clone()
        };
        if let Ok(dir) = run.node_dir(name) {
            if let Err(e) = std::fs::rename(&src, dir.join("data-dir")) {
                crate::runlog::say(&format!(
                    "harness: warning: keeping {}'s data dir {} failed: {e}",
                    name,
                    src.display()
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    // A run that stopped before its check still gets a report of what it recorded.
    if !run.report().exists() {
        crate::report::render_after_run(&run.path);
    }
    let code = outcome?;
    teardown?;
    Ok(code)
}

/// What a run is: the spec, the system it deploys, its seed tree and nemesis schedule.
struct Plan<'a> {
    spec: &'a TestSpec,
    system: &'a dyn crate::system::System,
    seeds: &'a crate::seeds::Seeds,
    schedule: &'a Schedule,
    /// Zombie-consumer requests, shared by the nemesis and the workload.
    stalls: Arc<workloads::stall::ConsumerStalls>,
}

fn deploy_and_run(
    plan: &Plan<'_>,
    nodes: &[Arc<dyn Node>],
    files: &dyn deploy::NodeFiles,
    run: &RunDir,
    nemesis: &Arc<Nemesis>,
) -> Result<u8> {
    let Plan {
        spec,
        system,
        seeds,
        schedule,
        ..
    } = *plan;
    let progress = crate::progress::Progress::new();
    progress.phase("deploying brokers");
    let port = system.client_port();
    let log_path = service_log_path(system);
    system.prepare(nodes, spec, files)?;
    deploy::start_all(nodes)?;
    // A start command that fails fails fast, naming the node, the command and its output.
    for n in nodes {
        if deploy::check_started(n.as_ref(), port, Duration::from_secs(3))
            == deploy::StartCheck::Exited
        {
            bail!(
                "node {}: the {} system's service ({}) exited right after its start; its log \
                 {} ends:\n{}",
                n.name(),
                system.kind(),
                system.describe_start(),
                log_path(n.as_ref()).display(),
                deploy::log_tail(&log_path(n.as_ref()), 20)
            );
        }
    }
    deploy::wait_ready_protocol(nodes, port, Duration::from_secs(90), &*log_path)?;
    progress.line(&format!("harness: {} brokers ready", nodes.len()));
    progress.phase("creating the topic");
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; the cluster was torn down");
    }
    let bootstrap = bootstrap_of(nodes, port);
    crate::workload::create_topic(&bootstrap, spec)?;
    let history = Arc::new(
        checkers::HistoryWriter::create(&run.history())
            .with_context(|| format!("creating {}", run.history().display()))?,
    );
    // Each node's /metrics once a second into metrics.jsonl until this function returns.
    let _scraper = system.metrics_port().and_then(|mport| {
        let targets: Vec<_> = nodes
            .iter()
            .map(|n| (n.name().to_string(), n.address()))
            .collect();
        let out = run.path.join("metrics.jsonl");
        let (meta, now) = (run.path.join("metadata.jsonl"), std::time::Instant::now());
        crate::scrape::Scraper::start(&targets, mport, &out, now)
            .and_then(|mut s| {
                s.watch_metadata(nodes.to_vec(), port, crate::workload::TOPIC, &meta, now)?;
                Ok(s)
            })
            .map_err(|e| crate::runlog::say(&format!("harness: warning: no metrics.jsonl: {e}")))
            .ok()
    });
    let mut roles = Roles::new(
        nodes.to_vec(),
        port,
        crate::workload::TOPIC,
        spec.partitions,
        seeds.heal_roles,
    )
    .with_log(log_path.clone());
    let last_fault = Arc::new(std::sync::Mutex::new(String::new()));
    let driver = (!schedule.actions.is_empty()).then(|| {
        progress.line(&format!(
            "harness: nemesis {} actions over {} s",
            schedule.actions.len(),
            spec.time_limit
        ));
        FaultDriver::start(
            nemesis.clone(),
            Roles::new(
                nodes.to_vec(),
                port,
                crate::workload::TOPIC,
                spec.partitions,
                seeds.roles,
            )
            .with_log(log_path.clone()),
            schedule.clone(),
            history.clone(),
            &INTERRUPTED,
            last_fault.clone(),
        )
    });
    let ops_done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watch = progress.watch_run(
        Duration::from_secs(spec.time_limit),
        ops_done.clone(),
        last_fault,
    );
    let acked = Arc::new(workloads::runner::AckedEnds::default());
    let main = crate::workload::run_main(
        spec,
        &bootstrap,
        history.clone(),
        &INTERRUPTED,
        ops_done,
        plan.stalls.clone(),
        acked.clone(),
    );
    drop(watch);
    if let Some(driver) = driver {
        let applied = driver.finish()?;
        progress.line(&format!(
            "harness: {applied} nemesis actions applied; healing"
        ));
    }
    let mut live: Vec<Arc<dyn Node>> = nodes.to_vec();
    if !spec.nemesis.is_empty() {
        progress.phase("final heal and recovery");
        // Each heal step is tried; a failed step is a harness failure (a fault left in place
        // would make every verdict after it meaningless), but a broker that will not come back
        // is a finding about the broker, recorded, and the run goes on without it.
        faults::final_heal(nemesis, &mut roles, schedule, &history)?;
        let lost = faults::recover_brokers(&roles, &history, 3)?;
        live.retain(|n| !lost.iter().any(|u| u.node == n.name()));
        if live.is_empty() {
            bail!("no broker could be recovered after the final heal; see each node's broker.log");
        }
        deploy::wait_ready_protocol(&live, port, Duration::from_secs(90), &*log_path)
            .context("recovery after the final heal")?;
        // A deposed leader that was cut off answers (and serves reads) as leader until it
        // learns of the election; final reads from it would miss the new leader's records.
        match crate::metadata::wait_agreement(
            &live,
            port,
            crate::workload::TOPIC,
            Duration::from_secs(30),
        ) {
            Some(took) => tracing::debug!(?took, "every broker agrees on the partition leaders"),
            None => progress.line(
                "harness: brokers still disagree about partition leaders after 30 s; reading anyway",
            ),
        }
    }
    let ops = main?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!(
            "interrupted; the history so far is in {}",
            run.history().display()
        );
    }
    progress.phase("final reads");
    let bootstrap = bootstrap_of(&live, port);
    crate::workload::final_reads(spec, &bootstrap, &history, &INTERRUPTED, &acked)?;
    progress.line(&format!(
        "harness: {ops} operations, final reads done; checking"
    ));
    progress.phase("checking");
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!(
            "interrupted; the history so far is in {}",
            run.history().display()
        );
    }
    let code = check_run(&run.path);
    progress.finish();
    code
}

/// The clients' bootstrap list: every node's `host:port`.
fn bootstrap_of(nodes: &[Arc<dyn Node>], port: u16) -> String {
    nodes
        .iter()
        .map(|n| format!("{}:{port}", n.address()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Where a system's service log is on a node ([`crate::system::service_log`]), as roles and
/// readiness errors take it.
fn service_log_path(system: &dyn crate::system::System) -> faults::LogPath {
    let kind = system.kind();
    Arc::new(move |n: &dyn Node| crate::system::service_log(kind, n))
}

/// `harness check <run>`: re-checks `history.jsonl` with the options of the run's `test.json`,
/// rewrites `results.json`, prints the verdict; returns 0 valid, 1 invalid, 2 unknown.
pub fn check_run(run: &Path) -> Result<u8> {
    let history = run.join("history.jsonl");
    if !history.exists() {
        return Err(crate::spec::UsageError(format!(
            "{} has no history.jsonl; give a run folder such as store/<test>/latest",
            run.display()
        ))
        .into());
    }
    let spec = read_test_spec(run)?;
    let options = match &spec {
        Some(s) => {
            let mut o = checkers::CheckOptions {
                subscribe: s.client.consumer_mode == crate::spec::ConsumerMode::Subscribe,
                idempotent: s.client.idempotence,
                final_phase: true,
                transactions: s.client.transactions,
                // Retries without idempotence may write a record twice (allowed then only).
                retries: s.client.retries > 0,
                ww_deps: s.check.ww_deps,
                ..Default::default()
            };
            for kind in &s.check.allow {
                o.allow(kind).map_err(|e| crate::spec::SpecError::Invalid {
                    field: "check.allow".into(),
                    reason: e.to_string(),
                })?;
            }
            o
        }
        None => {
            crate::runlog::say(&format!(
                "harness: warning: no test.json in {}; checking with assign, \
                 non-idempotent, final-phase options",
                run.display()
            ));
            checkers::CheckOptions::default()
        }
    };
    let checkers::Checked { result, summary } = checkers::check_file_full(&history, &options)
        .with_context(|| format!("checking {}", history.display()))?;
    let mut value = serde_json::to_value(&result).context("serialising results")?;
    add_unrecoverable_brokers(&summary.nemesis, &mut value);
    let tmp = run.join("results.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, run.join("results.json")).context("replacing results.json")?;
    for w in &result.warnings {
        crate::runlog::say(&format!("harness: warning: {w}"));
    }
    let invalidating: Vec<&str> = value["invalidating"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str()).collect())
        .unwrap_or_default();
    if let Some(anomalies) = value["anomalies"].as_object() {
        for (kind, f) in anomalies {
            let marker = if invalidating.contains(&kind.as_str()) {
                "INVALID"
            } else {
                "info"
            };
            let line = format!(
                "{kind}: {} ({marker}) — {}",
                f["count"],
                f["explanation"].as_str().unwrap_or("")
            );
            println!("{line}");
            crate::runlog::write_line(&line);
        }
    }
    let verdict = results::verdict::Verdict::from_valid(&value["valid"]);
    println!("valid: {}", value["valid"]);
    crate::runlog::write_line(&format!("valid: {}", value["valid"]));
    crate::report::render_checked_after_run(run, &summary);
    Ok(results::verdict::exit_code(&[verdict]))
}

/// The spec a run recorded in its `test.json`: None when the file is absent (a history from
/// elsewhere); an error naming the file and the field when it is unreadable or has a field
/// this harness does not know (never a silent default).
pub fn read_test_spec(run: &Path) -> Result<Option<TestSpec>> {
    let path = run.join("test.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON; fix or remove it", path.display()))?;
    let spec = value
        .get("spec")
        .with_context(|| format!("{} has no \"spec\" field", path.display()))?;
    let spec = serde_json::from_value(spec.clone()).with_context(|| {
        format!(
            "{}: its \"spec\" does not match this harness's spec (a field renamed, unknown or \
             of the wrong type); fix the file or re-check with the harness that wrote it",
            path.display()
        )
    })?;
    Ok(Some(spec))
}

/// The anomaly kind of a broker the final heal could not bring back.
pub const UNRECOVERABLE: &str = "broker-unrecoverable";

/// Adds the `broker-unrecoverable` nemesis ops of the history to a checker result (as an
/// invalidating anomaly: a fault the harness injected left a broker unable to start, which
/// Kafka's recovery is meant to survive).
fn add_unrecoverable_brokers(nemesis: &[checkers::Op], value: &mut serde_json::Value) {
    let mut examples = Vec::new();
    for op in nemesis.iter().filter(|op| op.f == UNRECOVERABLE) {
        // The op's details with its index (details that are not a map go under `value`).
        let mut ex = match &op.value {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            other => serde_json::Map::from_iter([("value".to_string(), other.clone())]),
        };
        ex.insert("op".into(), op.index.into());
        examples.push(serde_json::Value::Object(ex));
    }
    if examples.is_empty() {
        return;
    }
    let nodes: Vec<String> = examples
        .iter()
        .filter_map(|e| e["node"].as_str().map(str::to_string))
        .collect();
    value["anomalies"][UNRECOVERABLE] = serde_json::json!({
        "count": examples.len(),
        "explanation": format!(
            "{} could not be brought back after the final heal: the faults injected into \
             {} (kills, lost unfsynced writes, disk errors) left the broker unable to start \
             or to answer, which a Kafka broker's log recovery is meant to survive; the \
             examples carry each broker's log tail",
            nodes.join(", "),
            if nodes.len() == 1 { "it" } else { "them" }
        ),
        "examples": examples,
    });
    if let Some(inv) = value["invalidating"].as_array_mut() {
        inv.push(serde_json::json!(UNRECOVERABLE));
    }
    value["valid"] = serde_json::json!(false);
}
