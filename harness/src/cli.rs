//! The command line: subcommands and the flags of `harness test`, which mirror the spec file's
//! fields and override them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::spec::{Acks, Backend, ClientKind, ConsumerMode, FaultKind, SpecError, TestSpec};

/// A Jepsen-style correctness harness for Kafka-style replicated logs.
#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about,
    long_about = None,
    after_help = "Exit codes (as Jepsen's): 0 valid, 1 invalid (a finding), 2 unknown (the \
                  checker could not decide), 130 interrupted (Ctrl-C/SIGTERM; faults healed), \
                  254 bad arguments or spec, 255 the harness failed (a run crashed)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a cluster, run a workload under faults, check the history and store a report.
    Test(Box<TestArgs>),
    /// Re-check a stored run's history and rewrite its results.json.
    Check {
        /// The run directory (holding history.jsonl).
        run: PathBuf,
    },
    /// Remove what a killed harness left behind: namespaces, links, mounts, nft rules and
    /// processes on this host, the run's Docker containers, network and image, and brokers and
    /// rules on the ssh hosts of runs whose harness died.
    Clean,
    /// Reproduce a historical bug mode: run its recipe (configuration and faults) with
    /// successive seeds until the checker flags the anomaly it leaves, and report the time to
    /// detect. Exit 0 when the bug was found (with --control: when the run stayed clean), 1
    /// otherwise, 2 when the harness could not run.
    Reproduce(Box<ReproduceArgs>),
    /// Re-render a stored run's report.html from its history, results.json and test.json.
    Report {
        /// The run directory (holding history.jsonl).
        run: PathBuf,
    },
    /// Run the config-safety matrix: the same workload and nemesis across acks ×
    /// min.insync.replicas (and optionally unclean election, idempotence), N runs per cell;
    /// writes matrix.html and matrix.md. Exit 0 all runs valid, 1 a finding invalidated a
    /// run, 2 a run could not run.
    Matrix(Box<crate::matrix::MatrixArgs>),
    /// Serve the run store over HTTP: runs with verdicts, each report and its files.
    Serve(crate::serve::ServeArgs),
    /// Deterministic simulation: the brokers with their Raft quorum, the native client's queue
    /// workload and the nemesis in one process on virtual time, every choice from --seed; the
    /// run is stored like a real one (check, report). --seeds N sweeps seeds. Exit 0 valid,
    /// 1 invalid, 2 unknown.
    #[cfg(feature = "sim")]
    Sim(Box<crate::sim::SimArgs>),
}

/// Flags of `harness reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// The bug mode (docs/BUGS.md lists them with the symptom each leaves).
    pub bug: String,
    /// Seconds of test time to spend before giving up.
    #[arg(long, default_value_t = 180)]
    pub budget: u64,
    /// Run the recipe without the bug mode (Kafka's fixed behaviour): it must stay clean.
    #[arg(long)]
    pub control: bool,
    /// Repeat the reproduction from this many base seeds (seed, seed+1000, ...) and print the
    /// median and worst time to detect.
    #[arg(long, default_value_t = 1)]
    pub seeds: u32,
    /// Cluster and run settings, as for `harness test` (defaults here: 3 nodes, 30 s runs).
    #[command(flatten)]
    pub test: TestArgs,
}

/// Flags of `harness test`; each overrides the same field of `--spec`.
#[derive(Debug, Args, Default, Clone)]
pub struct TestArgs {
    /// A TOML spec file; flags given here override its fields.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Test name (the folder under the store).
    #[arg(long)]
    pub name: Option<String>,
    /// Number of broker nodes [default: 5].
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Node backend: netns (default as root), docker, ssh, local.
    #[arg(long)]
    pub backend: Option<Backend>,
    /// The system under test: bundled (this project's broker) or command (the spec's
    /// `[command]` table starts it; docs/SYSTEMS.md) [default: bundled].
    #[arg(long, value_parser = parse_system)]
    pub system: Option<crate::system::SystemKind>,
    /// Replication factor of the workload topic [default: 3].
    #[arg(long)]
    pub replication_factor: Option<u16>,
    /// Partitions of the workload topic [default: 4].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// A broker or topic property, `key=value` (repeatable), e.g. min.insync.replicas=2;
    /// unknown keys are refused. With a replication factor of 3 or more and no
    /// min.insync.replicas given, runs use min.insync.replicas=2 (the safe configuration).
    #[arg(long = "broker-prop", value_name = "KEY=VALUE")]
    pub broker_props: Vec<String>,
    /// Producer acks: 0, 1 or all [default: all].
    #[arg(long)]
    pub acks: Option<Acks>,
    /// Enable the idempotent producer.
    #[arg(long)]
    pub idempotence: Option<bool>,
    /// Use transactions (needs --idempotence true).
    #[arg(long)]
    pub transactions: Option<bool>,
    /// Consumer isolation level: read_committed or read_uncommitted.
    #[arg(long)]
    pub isolation_level: Option<String>,
    /// Consumers assign partitions or subscribe to the topic.
    #[arg(long, value_parser = parse_mode)]
    pub consumer_mode: Option<ConsumerMode>,
    /// Subscribed consumers' partition assignors, most preferred first: range, roundrobin, or
    /// both comma-separated [default: range].
    #[arg(long)]
    pub assignment_strategy: Option<String>,
    /// Client library: native (our async client) or rdkafka (librdkafka) [default: native].
    #[arg(long, value_parser = parse_client)]
    pub client: Option<ClientKind>,
    /// Target client operations per second over all workers [default: 100].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Concurrent workers [default: 4].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Seconds of workload with faults [default: 60].
    #[arg(long)]
    pub time_limit: Option<u64>,
    /// Seconds the final reads may take [default: 30].
    #[arg(long)]
    pub final_time_limit: Option<u64>,
    /// Fault kinds, comma-separated: partition, packet-loss, latency, kill, pause, clock, disk,
    /// file-corruption, and the scripted follower-restart-failover, replication-cut-failover,
    /// coordinator-cut-failover, the risk-aimed leader-isolation, isr-shrink-crash, and
    /// zombie-consumer (a subscribed native consumer stalls past its session, then commits);
    /// `none` for a fault-free run [default: partition,kill].
    #[arg(long, value_name = "KINDS")]
    pub nemesis: Option<String>,
    /// Mean seconds between faults [default: 10].
    #[arg(long)]
    pub nemesis_interval: Option<f64>,
    /// Root seed of every random choice (schedule, fault targets, roles, workload); re-running
    /// with it replays the run [default: a fresh random seed, printed and kept in test.json].
    #[arg(long)]
    pub seed: Option<u64>,
    /// An anomaly kind that does not invalidate this run (repeatable), e.g. duplicate.
    #[arg(long = "allow", value_name = "KIND")]
    pub allow: Vec<String>,
    /// Leave write-write dependencies (log order) out of the cycle search.
    #[arg(long)]
    pub no_ww_deps: bool,
    /// Allow min.insync.replicas above the replication factor (a topic that refuses acks=all
    /// writes), on purpose; refused otherwise.
    #[arg(long)]
    pub allow_unwritable: bool,
    /// Root of the run store [default: store].
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Switch on a historical bug mode in every broker (repeatable; docs/BUGS.md lists them).
    #[arg(long = "bug", value_name = "NAME")]
    pub bugs: Vec<String>,
    /// Write JUnit XML here (a test case per run, or per matrix cell) for CI systems.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// `harness test` only: run the test N times with successive seeds (seed, seed+1, ...),
    /// then print a summary across them and write summary.json beside the runs; the exit
    /// code is the worst run's (Jepsen's order: 255 crashed, 2 unknown, 1 invalid, 0 valid).
    #[arg(long, value_name = "N")]
    pub test_count: Option<u32>,
}

/// `--nemesis`: comma-separated fault kinds, or `none`.
pub fn parse_nemesis(list: &str) -> Result<Vec<FaultKind>, SpecError> {
    let list = list.trim();
    if list == "none" || list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|k| {
            k.trim()
                .parse::<FaultKind>()
                .map_err(|e| SpecError::Invalid {
                    field: "--nemesis".into(),
                    reason: format!("{e} (or `none` for a fault-free run)"),
                })
        })
        .collect()
}

fn parse_system(s: &str) -> Result<crate::system::SystemKind, String> {
    match s {
        "bundled" => Ok(crate::system::SystemKind::Bundled),
        "command" => Ok(crate::system::SystemKind::Command),
        other => Err(format!("`{other}` is not bundled or command")),
    }
}

fn parse_mode(s: &str) -> Result<ConsumerMode, String> {
    match s {
        "assign" => Ok(ConsumerMode::Assign),
        "subscribe" => Ok(ConsumerMode::Subscribe),
        other => Err(format!("`{other}` is not assign or subscribe")),
    }
}

fn parse_client(s: &str) -> Result<ClientKind, String> {
    match s {
        "native" => Ok(ClientKind::Native),
        "rdkafka" => Ok(ClientKind::Rdkafka),
        other => Err(format!("`{other}` is not native or rdkafka")),
    }
}

impl TestArgs {
    /// Builds the spec: defaults, then the spec file, then these flags; then validates it.
    pub fn to_spec(&self) -> Result<TestSpec, SpecError> {
        let (mut spec, seed_given) = match &self.spec {
            Some(path) => {
                let spec = TestSpec::from_file(path)?;
                (spec, TestSpec::file_sets_seed(path))
            }
            None => (TestSpec::default(), false),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { spec.$field = v.clone(); } )* };
        }
        set!(
            name,
            nodes,
            backend,
            system,
            replication_factor,
            partitions,
            rate,
            concurrency,
            time_limit,
            final_time_limit,
            nemesis_interval,
            seed,
            store
        );
        if let Some(list) = &self.nemesis {
            spec.nemesis = parse_nemesis(list)?;
        }
        if self.seed.is_none() && !seed_given {
            spec.seed = crate::seeds::fresh();
        }
        if self.allow_unwritable {
            spec.allow_unwritable = true;
        }
        if !self.allow.is_empty() {
            spec.check.allow = self.allow.clone();
        }
        if self.no_ww_deps {
            spec.check.ww_deps = false;
        }
        macro_rules! set_client {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { spec.client.$field = v.clone(); } )* };
        }
        set_client!(
            acks,
            idempotence,
            transactions,
            isolation_level,
            consumer_mode,
            assignment_strategy,
            client
        );
        if !self.bugs.is_empty() {
            spec.bugs = self.bugs.clone();
        }
        for prop in &self.broker_props {
            let (k, v) = prop.split_once('=').ok_or_else(|| SpecError::Invalid {
                field: "--broker-prop".into(),
                reason: format!("`{prop}` is not KEY=VALUE"),
            })?;
            spec.broker
                .insert(k.trim().to_string(), v.trim().to_string());
        }
        // The safe configuration unless the run says otherwise: with three or more replicas,
        // acks=all writes need two in-sync copies (Kafka's recommended min.insync.replicas).
        if spec.replication_factor >= 3 && !spec.broker.contains_key("min.insync.replicas") {
            spec.broker.insert("min.insync.replicas".into(), "2".into());
        }
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_spec_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spec.toml");
        std::fs::write(
            &path,
            "nodes = 5\ntime-limit = 99\n[client]\nacks = \"1\"\n",
        )
        .expect("write spec");
        let cli = Cli::try_parse_from([
            "harness",
            "test",
            "--spec",
            path.to_str().expect("utf-8 path"),
            "--nodes",
            "3",
            "--acks",
            "all",
            "--broker-prop",
            "min.insync.replicas=2",
            "--nemesis",
            "partition,kill",
        ])
        .expect("parses");
        let Command::Test(args) = cli.command else {
            panic!("not test")
        };
        let spec = args.to_spec().expect("valid");
        assert_eq!(spec.nodes, 3);
        assert_eq!(spec.time_limit, 99);
        assert_eq!(spec.client.acks, Acks::All);
        assert_eq!(spec.broker["min.insync.replicas"], "2");
        assert_eq!(spec.nemesis, vec![FaultKind::Partition, FaultKind::Kill]);
    }

    #[test]
    fn allowed_kinds_and_ww_deps_reach_the_spec_and_unknown_kinds_are_refused() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["harness", "test", "--seed", "1"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).expect("parses").command {
                Command::Test(a) => a.to_spec(),
                _ => panic!("not test"),
            }
        };
        let spec = parse(&["--allow", "duplicate", "--no-ww-deps"]).expect("valid");
        assert_eq!(spec.check.allow, vec!["duplicate".to_string()]);
        assert!(!spec.check.ww_deps);
        assert!(parse(&[]).expect("valid").check.ww_deps, "on by default");
        let err = parse(&["--allow", "dupes"])
            .expect_err("unknown kind")
            .to_string();
        assert!(
            err.contains("check.allow") && err.contains("dupes"),
            "{err}"
        );
    }

    #[test]
    fn unknown_flags_are_refused() {
        let err = Cli::try_parse_from(["harness", "test", "--nodez", "3"]).expect_err("unknown");
        assert!(err.to_string().contains("--nodez"), "{err}");
    }
}
