//! `harness sim`: the whole cluster (brokers with their Raft metadata quorum), the native
//! client's queue workload and a nemesis in one process, on one thread, in virtual time, every
//! choice drawn from one seed. The run is stored like a real one (`test.json`,
//! `history.jsonl`, `results.json`, `report.html`), so `harness check` and `harness report`
//! work on it. `--seeds N` sweeps seeds, each in a child process of its own, and prints the
//! command that replays each failing seed. See docs/SIMULATION.md for what is and is not
//! simulated.

pub mod clock;
pub mod disk;
pub mod entropy;
pub mod nemesis;
pub mod net;
pub mod recipe;
pub mod workload;
pub mod world;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use checkers::HistoryWriter;
use clap::Args;
use results::store::RunDir;

use crate::spec::TestSpec;
use nemesis::SimFault;

/// Flags of `harness sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// The seed of everything: schedule, latencies, operations, hash keys, election timeouts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sweep this many seeds from --seed on, each in its own process; print each failing seed
    /// with the command that replays it.
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Broker nodes (the first three are also the Raft controllers).
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Simulated seconds of the main phase (faults and workload).
    #[arg(long = "time-limit", default_value_t = 30)]
    pub time_limit: u64,
    /// Simulated seconds the final reads may take after the heal.
    #[arg(long = "final-time-limit", default_value_t = 30)]
    pub final_time_limit: u64,
    /// Fault kinds (repeatable or comma-separated); `--no-faults` for none.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SimFault::Partition, SimFault::Kill, SimFault::Pause, SimFault::Clock, SimFault::Disk, SimFault::Latency, SimFault::Loss])]
    pub nemesis: Vec<SimFault>,
    /// Inject no faults.
    #[arg(long = "no-faults")]
    pub no_faults: bool,
    /// Mean simulated seconds between faults.
    #[arg(long = "nemesis-interval", default_value_t = 6)]
    pub nemesis_interval: u64,
    /// Workload partitions.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Replication factor.
    #[arg(long = "replication-factor", default_value_t = 3)]
    pub replication_factor: u16,
    /// Client ops per simulated second over all workers.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u64,
    /// Producer acks: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// A broker property, `key=value` (repeatable), e.g. `min.insync.replicas=2`.
    #[arg(long = "broker", value_name = "KEY=VALUE")]
    pub broker: Vec<String>,
    /// A historical bug mode every broker runs with (repeatable).
    #[arg(long = "bug")]
    pub bugs: Vec<String>,
    /// The run store.
    #[arg(long, default_value = "store")]
    pub store: PathBuf,
    /// The test name (the folder under the store).
    #[arg(long, default_value = "sim")]
    pub name: String,
    /// Trace level of the brokers, client and simulator into the run's sim.log (e.g. `debug`,
    /// `info`, `broker=debug`); lines carry virtual time and node.
    #[arg(long)]
    pub trace: Option<String>,
    /// Keep the brokers' data directories in the run folder (removed by default).
    #[arg(long = "keep-data")]
    pub keep_data: bool,
    /// With --seeds: how many seeds run at once (one child process each; results are printed
    /// in seed order). Speed lines then measure each seed on a shared machine.
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
    /// With --seeds: wall seconds a seed may take before it is killed and reported as hung.
    #[arg(long = "seed-timeout", default_value_t = 300)]
    pub seed_timeout: u64,
    /// Virtual milliseconds per step of the world.
    #[arg(long = "tick-ms", default_value_t = 1)]
    pub tick_ms: u64,
    /// A bug mode's recipe (`harness reproduce`'s, plus the simulation's aimed faults): its bug
    /// mode, configuration and faults replace --bug, --nemesis and --nemesis-interval
    /// (--broker properties still apply on top). The exit code is then the recipe's verdict:
    /// 1 when the bug's anomaly was found (or, with --control, when the control was not clean).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Transactional producers (`txn` ops, and plain sends as transactions of one) with
    /// read_committed consumers.
    #[arg(long)]
    pub transactions: bool,
    /// Consumers subscribed to the topic in the run's group (commits, committed reads,
    /// rebalances) instead of assigned every partition.
    #[arg(long)]
    pub subscribe: bool,
    /// With --recipe: the same recipe without its bug mode (it must stay clean).
    #[arg(long)]
    pub control: bool,
    /// Simulate a `harness test` spec file (TOML): its cluster, workload, client settings,
    /// faults (the scripted kinds as aimed faults), bug modes, broker properties, store and
    /// name replace those flags; --seed and the simulation's own flags (--trace, --tick-ms,
    /// --keep-data, --seeds, --jobs) still apply. `harness matrix --sim` runs each of its runs
    /// so.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["recipe", "control"])]
    pub spec: Option<PathBuf>,
    /// Aimed (scripted) faults, set by --recipe or --spec.
    #[arg(skip)]
    pub aimed: Vec<nemesis::Aimed>,
}

/// The spec recorded in `test.json` (what `harness check` reads back).
pub fn spec_of(args: &SimArgs) -> Result<TestSpec> {
    let mut spec = TestSpec {
        name: args.name.clone(),
        nodes: args.nodes as usize,
        replication_factor: args.replication_factor,
        partitions: args.partitions,
        rate: args.rate,
        concurrency: args.concurrency as usize,
        time_limit: args.time_limit,
        final_time_limit: args.final_time_limit,
        seed: args.seed,
        store: args.store.clone(),
        bugs: args.bugs.clone(),
        nemesis: Vec::new(),
        ..TestSpec::default()
    };
    if args.subscribe {
        spec.client.consumer_mode = crate::spec::ConsumerMode::Subscribe;
    }
    if args.transactions {
        spec.client.transactions = true;
        spec.client.idempotence = true;
        spec.client.isolation_level = "read_committed".into();
    }
    spec.client.acks = args
        .acks
        .parse()
        .map_err(|e| anyhow::anyhow!("--acks {}: {e}", args.acks))?;
    let invalid = |field: &str, reason: String| {
        anyhow::Error::new(crate::spec::SpecError::Invalid {
            field: field.into(),
            reason,
        })
    };
    for kv in &args.broker {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| invalid("--broker", format!("`{kv}`: expected key=value")))?;
        let k = k.trim();
        check_broker_key("--broker", k)?;
        spec.broker.insert(k.to_string(), v.trim().to_string());
    }
    for b in &args.bugs {
        broker::replication::ReplicationBugs::none()
            .enable(b)
            .map_err(|e| invalid("--bug", e.to_string()))?;
    }
    if !args.no_faults {
        // A recipe sets its own faults and consumers; the user's list must fit the flags.
        if args.recipe.is_none() && args.nemesis.contains(&SimFault::Zombie) && !args.subscribe {
            return Err(invalid(
                "--nemesis",
                "`zombie` stalls a subscribed consumer: add --subscribe".into(),
            ));
        }
        for f in &args.nemesis {
            let kind = f.kind();
            if !spec.nemesis.contains(&kind) {
                spec.nemesis.push(kind);
            }
        }
    }
    Ok(spec)
}

/// Refuses a broker property the linked broker does not know (a real run asks the binary for
/// the same list); `field` names where it came from.
fn check_broker_key(field: &str, key: &str) -> Result<()> {
    if broker::config::known_keys().any(|known| known == key) {
        return Ok(());
    }
    Err(anyhow::Error::new(crate::spec::SpecError::Invalid {
        field: field.into(),
        reason: format!("unknown broker property `{key}` (see `broker --list-config-keys`)"),
    }))
}

/// The address of node `id` (1-based) on the simulated network.
fn addr_of(id: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8))
}

/// What one simulation produced.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// The run folder.
    pub run: PathBuf,
    /// Simulated seconds.
    pub simulated_s: f64,
    /// Wall seconds of the simulation (without checking).
    pub wall_s: f64,
    /// History ops.
    pub ops: u64,
    /// Whether the final reads reached every partition's end.
    pub final_complete: bool,
}

/// Runs one seed: stores the run, simulates, checks. Returns the checker's exit code (0 valid,
/// 1 invalid, 2 unknown).
pub fn run(args: &SimArgs) -> Result<u8> {
    if let Some(n) = args.seeds {
        return sweep(args, n);
    }
    let (args, spec) = match &args.spec {
        Some(path) => {
            let file = TestSpec::from_file(path)?;
            for k in file.broker.keys() {
                check_broker_key(&format!("{} [broker]", path.display()), k)?;
            }
            recipe::from_spec(args, file)?
        }
        None => recipe::apply(args, spec_of(args)?)?,
    };
    let args = &args;
    let run = RunDir::create(&args.store, &args.name, SystemTime::now())
        .context("creating the run's store folder")?;
    let command_line: Vec<String> = std::env::args().collect();
    let test_json = serde_json::json!({
        "spec": spec,
        "seed": args.seed,
        "command_line": command_line,
        "versions": { "harness": env!("CARGO_PKG_VERSION") },
    });
    run.write_json(&run.test_json(), &test_json)
        .context("writing test.json")?;
    // What only a simulation has, beside test.json (whose fields the report reads strictly).
    let sim_json = serde_json::json!({
        "simulated": true,
        "seed": args.seed,
        "nodes": args.nodes,
        "tick_ms": args.tick_ms,
        "nemesis": if args.no_faults { Vec::new() } else {
            args.nemesis.iter().map(|f| format!("{f:?}").to_lowercase()).collect::<Vec<_>>()
        },
        "nemesis_interval_s": args.nemesis_interval,
        "aimed": args.aimed.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "recipe": args.recipe,
        "control": args.control,
        "replay": replay_command(args, args.seed),
    });
    run.write_json(&run.path.join("sim.json"), &sim_json)
        .context("writing sim.json")?;
    println!("harness sim: seed {} → {}", args.seed, run.path.display());
    let outcome = simulate(args, &spec, &run.path)?;
    println!(
        "harness sim: {:.1} simulated s in {:.2} wall s ({:.0}x), {} history ops{}",
        outcome.simulated_s,
        outcome.wall_s,
        outcome.simulated_s / outcome.wall_s.max(1e-9),
        outcome.ops,
        if outcome.final_complete {
            ""
        } else {
            "; the final reads did not reach every partition's end"
        }
    );
    let mut code = crate::run::check_run(&run.path)?;
    if let Some(name) = &args.recipe {
        let r = crate::reproduce::recipe(name)?;
        let v = recipe::verdict(&run.path, r, args.control, args.time_limit as f64)?;
        match &v {
            recipe::Verdict::Found(kind, at) => println!(
                "harness sim: recipe {name}: found {kind}, first proven at {at:.1} simulated s"
            ),
            recipe::Verdict::NotFound => println!("harness sim: recipe {name}: not found"),
            recipe::Verdict::Clean => println!("harness sim: recipe {name} (control): clean"),
            recipe::Verdict::Broken(kinds) => println!(
                "harness sim: recipe {name} (control): BROKEN: {}",
                kinds.join(", ")
            ),
        }
        code = v.code();
    }
    if code != 0 {
        println!(
            "harness sim: replay with: {}",
            replay_command(args, args.seed)
        );
    }
    Ok(code)
}

/// The command that replays `seed` with `args`' other flags, with tracing into sim.log.
pub fn replay_command(args: &SimArgs, seed: u64) -> String {
    let mut out = vec![
        "harness".to_string(),
        "sim".into(),
        "--seed".into(),
        seed.to_string(),
    ];
    out.extend(child_flags(args));
    out.extend(["--trace".to_string(), "debug".into()]);
    out.join(" ")
}

/// `--seeds N`: each seed in a child `harness sim --seed S` (one simulation per process keeps
/// the process-wide entropy override and tokio's seed counter at their starting points).
fn sweep(args: &SimArgs, n: u64) -> Result<u8> {
    let exe = std::env::current_exe().context("finding the harness binary")?;
    let started = std::time::Instant::now();
    let (mut simulated, mut wall) = (0.0f64, 0.0f64);
    let mut failing = Vec::new();
    let mut worst = 0u8;
    let (mut detect, mut walls) = (Vec::new(), Vec::new());
    // Up to --jobs children at once; results are taken in seed order, so the output is the
    // same whatever the parallelism.
    let jobs = args.jobs.max(1) as usize;
    let mut running: std::collections::VecDeque<(u64, Child)> = std::collections::VecDeque::new();
    let mut next_seed = args.seed;
    let end = args.seed + n;
    while next_seed < end || !running.is_empty() {
        while running.len() < jobs && next_seed < end {
            running.push_back((next_seed, Child::spawn(&exe, args, next_seed)?));
            next_seed += 1;
        }
        // The oldest child is the next to report; the others run meanwhile.
        let Some((seed, mut child)) = running.pop_front() else {
            break;
        };
        let (status, out) = child.finish(args.seed_timeout)?;
        let code = match status {
            Some(s) => s.code().unwrap_or(255).clamp(0, 255) as u8,
            None => 3,
        };
        if let Some((sim_s, wall_s)) = speed_line(&out) {
            simulated += sim_s;
            wall += wall_s;
            walls.push(wall_s);
        }
        let found_at = found_line(&out);
        if let Some(at) = found_at {
            detect.push(at);
        }
        let verdict = match (code, status, &args.recipe, args.control) {
            (_, None, ..) => "HUNG (killed after --seed-timeout)",
            (0, _, Some(_), false) => "not found",
            (1, _, Some(_), false) => "FOUND",
            (0, _, Some(_), true) => "clean",
            (1, _, Some(_), true) => "BROKEN",
            (0, ..) => "valid",
            (1, ..) => "INVALID",
            (2, ..) => "unknown",
            _ => "crashed",
        };
        match found_at {
            Some(at) => println!("seed {seed}: {verdict} (first proven at {at:.1} simulated s)"),
            None => println!("seed {seed}: {verdict}"),
        }
        if code != 0 {
            failing.push((seed, code));
            worst = worst.max(code.min(2));
        }
    }
    match (&args.recipe, args.control) {
        (Some(r), false) => {
            let found = failing.iter().filter(|(_, c)| *c == 1).count();
            println!("recipe {r}: found in {found} of {n} seeds");
            if let Some(m) = results::matrix::median(&detect) {
                println!(
                    "time to detect: median {m:.1} simulated s to the first proven anomaly \
                     (of the seeds that found it)"
                );
            }
            if let Some(m) = results::matrix::median(&walls) {
                println!("wall: median {m:.2} s of simulation per seed");
            }
        }
        (Some(r), true) => println!(
            "recipe {r} (control): {} of {n} seeds clean",
            n - failing.len() as u64
        ),
        (None, _) => println!("{} of {n} seeds valid", n - failing.len() as u64),
    }
    // With --jobs J, J seeds share the sweep's wall time: a seed costs J times its share of
    // one core (the per-core figure assumes one core per job).
    let jobs_used = (args.jobs.max(1) as u64).min(n.max(1)) as f64;
    let per_seed = started.elapsed().as_secs_f64() / n.max(1) as f64;
    let per_seed_core = per_seed * jobs_used;
    println!(
        "speed: {simulated:.0} simulated s in {wall:.1} wall s of simulation ({:.0}x); {per_seed_core:.2} \
         wall s per seed with its check and report: {:.0} seeds per 8-hour core{}",
        simulated / wall.max(1e-9),
        8.0 * 3600.0 / per_seed_core.max(1e-9),
        if jobs_used > 1.0 {
            format!(" ({jobs_used:.0} at once: {per_seed:.2} wall s per seed for the sweep)")
        } else {
            String::new()
        }
    );
    for (seed, _) in &failing {
        println!("replay: {}", replay_command(args, *seed));
    }
    Ok(worst)
}

/// One seed's child process of a sweep, with when it started (for `--seed-timeout`).
struct Child {
    proc: std::process::Child,
    started: std::time::Instant,
    /// Its stdout, drained by a thread so a chatty child never blocks on a full pipe.
    out: Option<std::thread::JoinHandle<String>>,
}

impl Child {
    /// Starts `harness sim --seed seed` with `args`' other flags.
    fn spawn(exe: &Path, args: &SimArgs, seed: u64) -> Result<Child> {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("sim").arg("--seed").arg(seed.to_string());
        cmd.args(child_flags(args));
        // The child's few report lines are read for its speed; its errors reach our stderr.
        cmd.stdout(std::process::Stdio::piped());
        let mut proc = cmd
            .spawn()
            .with_context(|| format!("running seed {seed}"))?;
        let out = proc.stdout.take().map(|mut pipe| {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut out = String::new();
                let _ = pipe.read_to_string(&mut out);
                out
            })
        });
        Ok(Child {
            proc,
            started: std::time::Instant::now(),
            out,
        })
    }

    /// Waits for the child (killing it once it has run `timeout_s` wall seconds: a
    /// simulation that stops advancing virtual time is a deadlock or busy loop in the code
    /// under test, a finding too); its exit status (None: killed) and stdout.
    fn finish(&mut self, timeout_s: u64) -> Result<(Option<std::process::ExitStatus>, String)> {
        let deadline = self.started + Duration::from_secs(timeout_s);
        let status = loop {
            if let Some(status) = self.proc.try_wait().context("waiting for a seed")? {
                break Some(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.proc.kill();
                let _ = self.proc.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok((status, out))
    }
}

/// The simulated and wall seconds of a child's `harness sim: X simulated s in Y wall s` line.
fn speed_line(out: &str) -> Option<(f64, f64)> {
    let line = out.lines().find(|l| l.contains(" simulated s in "))?;
    let rest = line.strip_prefix("harness sim: ")?;
    let (sim, rest) = rest.split_once(" simulated s in ")?;
    let (wall, _) = rest.split_once(" wall s")?;
    Some((sim.trim().parse().ok()?, wall.trim().parse().ok()?))
}

/// The simulated seconds of a child's `first proven at X simulated s` line.
fn found_line(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains(", first proven at "))?;
    let (_, rest) = line.split_once(", first proven at ")?;
    let (at, _) = rest.split_once(" simulated s")?;
    at.trim().parse().ok()
}

fn child_flags(args: &SimArgs) -> Vec<String> {
    if let Some(path) = &args.spec {
        // The file sets everything but the seed and the simulation's own flags.
        let mut v = vec![
            "--spec".to_string(),
            path.display().to_string(),
            "--tick-ms".into(),
            args.tick_ms.to_string(),
        ];
        if args.keep_data {
            v.push("--keep-data".into());
        }
        return v;
    }
    let mut v = vec![
        "--nodes".to_string(),
        args.nodes.to_string(),
        "--time-limit".into(),
        args.time_limit.to_string(),
        "--final-time-limit".into(),
        args.final_time_limit.to_string(),
        "--nemesis-interval".into(),
        args.nemesis_interval.to_string(),
        "--partitions".into(),
        args.partitions.to_string(),
        "--replication-factor".into(),
        args.replication_factor.to_string(),
        "--rate".into(),
        args.rate.to_string(),
        "--concurrency".into(),
        args.concurrency.to_string(),
        "--acks".into(),
        args.acks.clone(),
        "--store".into(),
        args.store.display().to_string(),
        "--name".into(),
        args.name.clone(),
        "--tick-ms".into(),
        args.tick_ms.to_string(),
    ];
    if args.no_faults {
        v.push("--no-faults".into());
    } else {
        let kinds: Vec<String> = args
            .nemesis
            .iter()
            .map(|f| format!("{f:?}").to_lowercase())
            .collect();
        v.push("--nemesis".into());
        v.push(kinds.join(","));
    }
    for b in &args.broker {
        v.push("--broker".into());
        v.push(b.clone());
    }
    for b in &args.bugs {
        v.push("--bug".into());
        v.push(b.clone());
    }
    if args.keep_data {
        v.push("--keep-data".into());
    }
    if let Some(r) = &args.recipe {
        v.push("--recipe".into());
        v.push(r.clone());
    }
    if args.control {
        v.push("--control".into());
    }
    if args.transactions {
        v.push("--transactions".into());
    }
    if args.subscribe {
        v.push("--subscribe".into());
    }
    v
}

/// Prints virtual time and the node stepped in trace lines.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let ns = clock::now_ns();
        write!(
            w,
            "{:>4}.{:03}s n{}",
            ns / 1_000_000_000,
            (ns / 1_000_000) % 1_000,
            clock::current_node()
        )
    }
}

/// Simulates the run into `dir` (history.jsonl) on a fresh thread with seeded entropy.
pub fn simulate(args: &SimArgs, spec: &TestSpec, dir: &Path) -> Result<SimOutcome> {
    entropy::enable(args.seed);
    let (args2, spec2, dir2) = (args.clone(), spec.clone(), dir.to_path_buf());
    let started = std::time::Instant::now();
    // The trace subscriber is built here, on the calling thread: building it creates hash
    // maps, and each map built on the simulation thread would shift that thread's sequence of
    // hash keys, so a traced replay would not be the run it replays.
    let dispatch = match &args.trace {
        Some(level) => {
            let f = std::fs::File::create(dir.join("sim.log")).context("creating sim.log")?;
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(std::sync::Mutex::new(f))
                    .with_ansi(false)
                    .with_timer(VirtualTime)
                    .with_env_filter(tracing_subscriber::EnvFilter::new(level))
                    .finish(),
            )
        }
        None => tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
    };
    let handle = std::thread::Builder::new()
        .name("sim".into())
        .spawn(move || -> Result<SimOutcome> {
            tracing::dispatcher::with_default(&dispatch, || simulate_here(&args2, &spec2, &dir2))
        })
        .context("starting the simulation thread")?;
    let r = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the simulation panicked"))?;
    entropy::disable();
    if entropy::seeded_calls() == 0 {
        // std draws the simulation thread's hash keys through getrandom: no seeded call means
        // the override was not linked into this binary, and the run may not replay.
        eprintln!(
            "harness sim: warning: the seeded getrandom was never called; hash map order and \
             select! choices came from the OS, so this seed may not replay byte for byte"
        );
    }
    let mut outcome = r?;
    outcome.wall_s = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// The simulation proper, on the simulation thread.
fn simulate_here(args: &SimArgs, spec: &TestSpec, dir: &Path) -> Result<SimOutcome> {
    use broker::runtime::set_simulated;
    let net = net::SimNet::new(
        args.seed ^ 0x006e_6574_776f_726b,
        Duration::from_micros(500),
        Duration::from_micros(2_500),
    );
    let disk = Arc::new(disk::SimDisk::default());
    set_simulated(true);
    broker::transport::set_thread_transport(Some(Arc::new(net::BrokerTransport(net.clone()))));
    client::conn::set_thread_connector(Some(Arc::new(net::ClientConnector(net.clone()))));
    client::conn::set_thread_wall_clock(Some(clock::client_wall_ms));
    broker::storage::set_thread_observer(Some(disk.clone()));
    let result = simulate_world(args, spec, dir, net, disk);
    broker::storage::set_thread_observer(None);
    client::conn::set_thread_connector(None);
    client::conn::set_thread_wall_clock(None);
    broker::transport::set_thread_transport(None);
    set_simulated(false);
    result
}

fn simulate_world(
    args: &SimArgs,
    spec: &TestSpec,
    dir: &Path,
    net: Arc<net::SimNet>,
    disk: Arc<disk::SimDisk>,
) -> Result<SimOutcome> {
    let data = dir.join("sim-data");
    let addrs: Vec<IpAddr> = (1..=args.nodes).map(addr_of).collect();
    let mut nodes = Vec::new();
    let stopped = Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..args.nodes as usize {
        let ndir = data.join(format!("n{}", i + 1));
        std::fs::create_dir_all(&ndir).with_context(|| format!("creating {}", ndir.display()))?;
        let text = crate::deploy::broker_properties(spec, i, &addrs, &ndir);
        let props: Vec<(String, String)> = broker::config::parse_properties(&text, "sim")
            .context("broker properties")?
            .into_iter()
            .filter(|(k, _)| k != "metrics.listener")
            .collect();
        nodes.push(world::Node::new(
            i as u32 + 1,
            props,
            ndir,
            args.bugs.clone(),
            stopped.clone(),
        ));
    }
    let tick = Duration::from_millis(args.tick_ms.max(1));
    let mut world = world::World::new(nodes, net, disk, tick)?;
    for n in &mut world.nodes {
        n.start()?;
    }
    let history = Arc::new(
        HistoryWriter::create_timed(&dir.join("history.jsonl"), clock::now_ns)
            .context("creating history.jsonl")?,
    );
    let bootstrap: Vec<String> = addrs
        .iter()
        .map(|a| format!("{a}:{}", crate::deploy::KAFKA_PORT))
        .collect();
    let settings = crate::workload::settings(spec, &bootstrap.join(","));
    let client_config =
        workloads::native::config(&settings, "jepsen-sim").map_err(|e| anyhow::anyhow!("{e}"))?;
    let topic_keys = ["min.insync.replicas", "unclean.leader.election.enable"];
    let main_end = Duration::from_secs(args.time_limit);
    let wcfg = workload::WorkloadConfig {
        client: client_config.clone(),
        topic: crate::workload::TOPIC.to_string(),
        partitions: args.partitions,
        replication_factor: args.replication_factor as i16,
        topic_configs: spec
            .broker
            .iter()
            .filter(|(k, _)| topic_keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        seed: args.seed,
        concurrency: args.concurrency.max(1),
        rate: args.rate,
        main_end,
        final_limit: Duration::from_secs(args.final_time_limit),
        queue: crate::workload::run_config(spec).queue,
        subscribe: settings.subscribe.then(|| settings.clone()),
        group_id: settings.group_id.clone(),
        stalls: world.stalls.clone(),
    };
    let subscribed = wcfg.subscribe.is_some();
    let settle = Duration::from_secs(10);
    let work = world
        .control
        .spawn(workload::run(wcfg, history.clone(), settle));
    let kinds: BTreeSet<SimFault> = if args.no_faults {
        BTreeSet::new()
    } else {
        args.nemesis.iter().copied().collect()
    };
    let schedule = nemesis::schedule(
        args.seed,
        &kinds,
        args.nodes,
        Duration::from_secs(5),
        main_end,
        Duration::from_secs(args.nemesis_interval.max(1)),
        subscribed,
    );
    let queue: nemesis::FaultQueue = Default::default();
    for (i, kind) in args.aimed.iter().enumerate() {
        world.control.spawn(nemesis::direct(
            nemesis::DirectorConfig {
                kind: *kind,
                client: client_config.clone(),
                topic: crate::workload::TOPIC.to_string(),
                partitions: args.partitions,
                seed: args.seed.wrapping_add(i as u64),
                start: Duration::from_secs(5),
                end: main_end,
                interval: Duration::from_secs(args.nemesis_interval.max(1)),
                voters: args.nodes.min(3),
                group: settings.group_id.clone(),
            },
            queue.clone(),
        ));
    }
    let hard_end = main_end + settle + Duration::from_secs(args.final_time_limit + 60);
    let mut next = 0;
    let mut healed = false;
    while !work.is_finished() {
        let now = Duration::from_nanos(clock::now_ns());
        while next < schedule.len() && schedule[next].at_ns <= clock::now_ns() {
            nemesis::apply(&mut world, &schedule[next].action, &history)?;
            next += 1;
        }
        let aimed: Vec<nemesis::Action> = queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        if !healed {
            for a in &aimed {
                nemesis::apply(&mut world, a, &history)?;
            }
        }
        if !healed && now >= main_end {
            nemesis::heal_all(&mut world, &history)?;
            healed = true;
        }
        if now >= hard_end {
            tracing::warn!("the simulation reached its hard end before the workload finished");
            break;
        }
        world.step();
        // A broker that exits on its own: `start-failed` while faults run (the final heal
        // starts it again), `broker-unrecoverable` after the heal (an invalidating finding,
        // as in real runs).
        for (id, why) in world.take_stopped() {
            let node = format!("n{id}");
            if healed {
                history
                    .nemesis(
                        crate::run::UNRECOVERABLE,
                        serde_json::json!({"node": node, "reason": why, "log_tail": ""}),
                    )
                    .context("recording an unrecoverable broker")?;
            } else {
                history
                    .nemesis(
                        "start-failed",
                        serde_json::json!({"nodes": [node], "reason": why}),
                    )
                    .context("recording a failed start")?;
            }
        }
    }
    let summary = if work.is_finished() {
        match world.control.block_on(work) {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "the simulated workload failed");
                None
            }
            Err(e) => return Err(anyhow::anyhow!("the simulated workload panicked: {e}")),
        }
    } else {
        work.abort();
        None
    };
    let simulated_s = clock::now_ns() as f64 / 1e9;
    world.shutdown();
    if !args.keep_data {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(SimOutcome {
        run: dir.to_path_buf(),
        simulated_s,
        wall_s: 0.0,
        ops: history.len(),
        final_complete: summary.as_ref().is_some_and(|s| s.final_complete),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_speed_line_is_read() {
        let out = "harness sim: seed 3 → store/sim/x\nharness sim: 70.0 simulated s in 1.25 wall s (56x), 6443 history ops\nvalid: true\n";
        assert_eq!(speed_line(out), Some((70.0, 1.25)));
        assert_eq!(speed_line("valid: true"), None);
    }
}
