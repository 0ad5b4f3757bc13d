//! One `harness test` run, wired end to end as far as the pieces exist: the run's store folder
//! and `test.json`, nodes on the chosen backend, the broker deployed and ready, then (when the
//! workload, nemesis and checker land) the run itself; and always the teardown: brokers stopped,
//! their logs copied into `nodes/<node>/`, nodes removed — on success, error, or Ctrl-C/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use nemesis::Node;
use results::store::RunDir;

use crate::deploy;
use crate::node::{LocalCluster, NetnsCluster, NetnsOptions};
use crate::spec::{Backend, FaultKind, TestSpec};

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
}

impl Cluster {
    fn nodes(&self) -> Vec<Arc<dyn Node>> {
        match self {
            Cluster::Netns(c) => c.nodes(),
            Cluster::Local(c) => c.nodes(),
        }
    }

    fn teardown(&mut self) -> Result<()> {
        match self {
            Cluster::Netns(c) => c.teardown().context("removing netns nodes"),
            Cluster::Local(c) => {
                c.teardown();
                Ok(())
            }
        }
    }
}

/// Runs one test; returns the process exit code (0 valid, 1 invalid, 2 could not run).
pub fn run_test(spec: &TestSpec, command_line: &[String]) -> Result<u8> {
    if !spec.nemesis.is_empty() {
        bail!("faults (--nemesis) are not wired into `harness test` yet; run without --nemesis");
    }
    if spec.client.client == crate::spec::ClientKind::Native {
        bail!("the native client is not built yet; use --client rdkafka (the default)");
    }
    let run = RunDir::create(&spec.store, &spec.name, SystemTime::now())
        .context("creating the run's store folder")?;
    eprintln!("harness: run folder {}", run.path.display());
    let test_json = serde_json::json!({
        "spec": spec,
        "seed": spec.seed,
        "command_line": command_line,
        "versions": { "harness": env!("CARGO_PKG_VERSION") },
    });
    run.write_json(&run.test_json(), &test_json)
        .context("writing test.json")?;
    let work = run.path.join("work");
    let mut cluster = match spec.backend {
        Backend::Netns => Cluster::Netns(
            NetnsCluster::create(
                spec.nodes,
                &work,
                NetnsOptions {
                    disk_faults: spec.nemesis.contains(&FaultKind::Disk),
                },
            )
            .context("creating netns nodes (needs root; `harness clean` removes leftovers)")?,
        ),
        Backend::Local => {
            Cluster::Local(LocalCluster::create(spec.nodes, &work).context("creating local nodes")?)
        }
        other => bail!("backend `{other}` is not built yet; use netns or local"),
    };
    let outcome = deploy_and_run(spec, &cluster.nodes(), &run);
    // Teardown always runs: stop brokers, keep their logs, remove the nodes.
    let nodes = cluster.nodes();
    deploy::stop_brokers(&nodes, Duration::from_secs(5));
    for n in &nodes {
        if let Ok(dir) = run.node_dir(n.name()) {
            let _ = std::fs::copy(deploy::broker_log(n.as_ref()), dir.join("broker.log"));
            let _ = std::fs::copy(
                n.data_dir().join("server.properties"),
                dir.join("server.properties"),
            );
        }
    }
    let teardown = cluster.teardown();
    let _ = std::fs::remove_dir_all(&work);
    let code = outcome?;
    teardown?;
    Ok(code)
}

fn deploy_and_run(spec: &TestSpec, nodes: &[Arc<dyn Node>], run: &RunDir) -> Result<u8> {
    let broker = find_broker_bin()?;
    deploy::start_brokers(
        nodes,
        spec,
        &broker,
        spec.nemesis.contains(&FaultKind::Clock),
    )?;
    deploy::wait_ready(nodes, Duration::from_secs(90))?;
    eprintln!("harness: {} brokers ready", nodes.len());
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; the cluster was torn down");
    }
    let bootstrap: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:{}", n.address(), deploy::KAFKA_PORT))
        .collect();
    let bootstrap = bootstrap.join(",");
    crate::workload::create_topic(&bootstrap, spec)?;
    let history = Arc::new(
        checkers::HistoryWriter::create(&run.history())
            .with_context(|| format!("creating {}", run.history().display()))?,
    );
    let ops = crate::workload::run(spec, &bootstrap, history, &INTERRUPTED)?;
    eprintln!("harness: {ops} operations, final reads done; checking");
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!(
            "interrupted; the history so far is in {}",
            run.history().display()
        );
    }
    check_run(&run.path)
}

/// `harness check <run>`: re-checks `history.jsonl` with the options of the run's `test.json`,
/// rewrites `results.json`, prints the verdict; returns 0 valid, 1 invalid, 2 unknown.
pub fn check_run(run: &Path) -> Result<u8> {
    let history = run.join("history.jsonl");
    if !history.exists() {
        bail!(
            "{} has no history.jsonl; give a run folder such as store/<test>/latest",
            run.display()
        );
    }
    let spec: Option<TestSpec> = std::fs::read_to_string(run.join("test.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| serde_json::from_value(v["spec"].clone()).ok());
    let options = match &spec {
        Some(s) => checkers::CheckOptions {
            subscribe: s.client.consumer_mode == crate::spec::ConsumerMode::Subscribe,
            idempotent: s.client.idempotence,
            final_phase: true,
        },
        None => {
            eprintln!(
                "harness: warning: no readable test.json in {}; checking with assign, \
                 non-idempotent, final-phase options",
                run.display()
            );
            checkers::CheckOptions {
                subscribe: false,
                idempotent: false,
                final_phase: true,
            }
        }
    };
    let result = checkers::check_file(&history, &options)
        .with_context(|| format!("checking {}", history.display()))?;
    let value = serde_json::to_value(&result).context("serialising results")?;
    let tmp = run.join("results.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, run.join("results.json")).context("replacing results.json")?;
    for w in &result.warnings {
        eprintln!("harness: warning: {w}");
    }
    for (kind, f) in &result.anomalies {
        let marker = if result.invalidating.contains(kind) {
            "INVALID"
        } else {
            "info"
        };
        println!("{kind}: {} ({marker}) — {}", f.count, f.explanation);
    }
    let verdict = results::verdict::Verdict::from_valid(&result.valid);
    println!("valid: {}", result.valid);
    Ok(results::verdict::exit_code(&[verdict]))
}
