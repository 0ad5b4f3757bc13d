//! `harness sim --recipe BUG`: the bug zoo's recipes (`harness reproduce`'s configuration,
//! client settings and faults for each bug mode) in simulation, plus what only the
//! simulation adds: aimed fault sequences resolved from live metadata (the scripted kinds of
//! the real nemesis, and KAFKA-7128's lagging-high-watermark window), and the recipe's verdict
//! on the checked run (the bug's anomaly found; the control clean of everything the recipe's
//! configuration does not itself allow).

use std::path::Path;

use anyhow::{bail, Result};

use super::nemesis::{Aimed, SimFault};
use super::SimArgs;
use crate::reproduce::{self, Recipe};
use crate::spec::{FaultKind, TestSpec};

/// What the simulation changes in a recipe, beyond the bug zoo's version of it.
struct SimExtra {
    /// The bug.
    bug: &'static str,
    /// Aimed faults that replace the recipe's schedule.
    aimed: &'static [Aimed],
    /// Random fault kinds that replace the recipe's (empty: keep the recipe's).
    random: &'static [SimFault],
    /// Broker properties on top of the recipe's.
    broker: &'static [(&'static str, &'static str)],
    /// Bug modes switched on with it (beyond the recipe's own `also`).
    also: &'static [&'static str],
    /// Brokers, when the recipe needs more than `--nodes` says.
    nodes: Option<u32>,
}

/// KAFKA-7128 needs a new leader whose high watermark lags its epoch's start: under 3.7+
/// rules the high watermark stays where it was while the ISR is below min.insync (3.6 lifts
/// it to the log end as soon as the ISR is the leader alone), and a leader restarted with its
/// checkpointed high watermark (kept up to 10 s old here) leads before it learns a newer one.
/// As for hw-truncation, the releases that had the bug kept a broker restarted inside its
/// session in the ISR (`restart-without-fencing`), which is what lets the restarted broker
/// lead. Its control runs with neither bug.
const EXTRAS: &[SimExtra] = &[
    SimExtra {
        bug: "isr-join-below-epoch-start",
        aimed: &[Aimed::LaggingHwRejoin],
        random: &[],
        broker: &[
            ("kafka.release", "3.7"),
            ("replica.lag.time.max.ms", "2000"),
            ("broker.session.timeout.ms", "3000"),
            ("replica.high.watermark.checkpoint.interval.ms", "10000"),
        ],
        also: &["restart-without-fencing"],
        // Five brokers: the metadata quorum (the first three) keeps two voters linked normally
        // while the partition's leader is dead and its followers' link is slow.
        nodes: Some(5),
    },
    // The replication cut (the real nemesis cuts the leader's data port only, keeping its
    // controller session): the simulated network cuts whole links, so the leader is cut from
    // its followers and keeps its link to an active controller that is not one of them,
    // which five brokers (three of them voters) make possible.
    SimExtra {
        bug: "ignore-min-insync",
        aimed: &[Aimed::ReplicationCutFailover],
        random: &[],
        broker: &[],
        also: &[],
        nodes: Some(5),
    },
    SimExtra {
        bug: "offset-commit-before-isr",
        aimed: &[Aimed::CoordinatorCutFailover],
        random: &[],
        broker: &[],
        also: &[],
        nodes: Some(5),
    },
    SimExtra {
        bug: "unclean-regardless",
        aimed: &[Aimed::ReplicationCutFailover],
        random: &[],
        broker: &[],
        also: &[],
        nodes: Some(5),
    },
];

/// The simulated fault of a real nemesis fault kind: random kinds map one to one (the real
/// `disk` fault is a kill -9 losing unfsynced writes, which the simulation's `kill` is), the
/// scripted ones to aimed sequences.
fn map_kind(kind: FaultKind) -> Result<Result<SimFault, Aimed>> {
    Ok(Ok(match kind {
        FaultKind::Partition => SimFault::Partition,
        FaultKind::Kill | FaultKind::Disk => SimFault::Kill,
        FaultKind::Pause => SimFault::Pause,
        FaultKind::Clock => SimFault::Clock,
        FaultKind::Latency => SimFault::Latency,
        FaultKind::PacketLoss => SimFault::Loss,
        FaultKind::ZombieConsumer => SimFault::Zombie,
        other => match Aimed::of(other) {
            Some(a) => return Ok(Err(a)),
            None => bail!("the simulation has no `{}` fault yet", other.name()),
        },
    }))
}

/// `args` with the recipe applied (bug modes, broker properties, faults, interval) and the
/// spec it records (the recipe's client settings included), or `args` as they are.
pub fn apply(args: &SimArgs, base: TestSpec) -> Result<(SimArgs, TestSpec)> {
    let Some(name) = &args.recipe else {
        return Ok((args.clone(), base));
    };
    let recipe = reproduce::recipe(name)?;
    let mut spec = reproduce::attempt_spec(&base, recipe, args.control, args.seed);
    spec.name = base.name.clone();
    let extra = EXTRAS.iter().find(|e| e.bug == recipe.bug);
    let mut out = args.clone();
    out.nemesis.clear();
    out.aimed.clear();
    for k in &spec.nemesis {
        match map_kind(*k)? {
            Ok(f) => out.nemesis.push(f),
            Err(a) => out.aimed.push(a),
        }
    }
    if let Some(e) = extra {
        out.aimed = e.aimed.to_vec();
        if !e.aimed.is_empty() || !e.random.is_empty() {
            out.nemesis = e.random.to_vec();
        }
        for (k, v) in e.broker {
            spec.broker.insert(k.to_string(), v.to_string());
        }
        if !args.control {
            spec.bugs.extend(e.also.iter().map(|b| b.to_string()));
        }
        if let Some(n) = e.nodes {
            out.nodes = out.nodes.max(n);
            spec.nodes = out.nodes as usize;
        }
    }
    out.nemesis_interval = spec.nemesis_interval.round().max(1.0) as u64;
    // The user's --broker properties win over the recipe's.
    for kv in &args.broker {
        if let Some((k, v)) = kv.split_once('=') {
            spec.broker
                .insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    take_settings(&mut out, &spec);
    out.acks = "all".into();
    out.no_faults = false;
    spec.nemesis = out.nemesis.iter().map(|f| f.kind()).collect();
    spec.nemesis.dedup();
    Ok((out, spec))
}

/// The spec's broker properties, bug modes, replication factor and client kind into `out`
/// (the flags a replay gives). Transactional specs run librdkafka in real runs; the
/// simulation runs the native client's transactional producer.
fn take_settings(out: &mut SimArgs, spec: &TestSpec) {
    out.broker = spec
        .broker
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.bugs = spec.bugs.clone();
    out.replication_factor = spec.replication_factor;
    out.transactions = spec.client.transactions;
    out.subscribe = spec.client.consumer_mode == crate::spec::ConsumerMode::Subscribe;
}

/// `args` for simulating the spec file `spec` (`harness sim --spec`): its cluster, workload,
/// client, faults (scripted kinds as aimed faults), bug modes, broker properties, store and
/// name; the seed stays --seed's. The spec is returned with that seed.
pub fn from_spec(args: &SimArgs, mut spec: TestSpec) -> Result<(SimArgs, TestSpec)> {
    // Also refuses bug modes the broker does not have.
    spec.validate()?;
    if spec.system != crate::system::SystemKind::Bundled {
        bail!("the simulation runs the bundled broker only; this spec's system is a command");
    }
    if spec.nodes < 3 {
        bail!(
            "the simulation needs at least 3 nodes (its metadata quorum has three voters); the \
             spec has {}",
            spec.nodes
        );
    }
    let mut out = args.clone();
    out.nodes = spec.nodes as u32;
    out.partitions = spec.partitions;
    out.rate = spec.rate;
    out.concurrency = spec.concurrency as u64;
    out.time_limit = spec.time_limit;
    out.final_time_limit = spec.final_time_limit;
    out.nemesis_interval = spec.nemesis_interval.round().max(1.0) as u64;
    out.nemesis.clear();
    out.aimed.clear();
    for k in &spec.nemesis {
        match map_kind(*k)? {
            Ok(f) if !out.nemesis.contains(&f) => out.nemesis.push(f),
            Ok(_) => {}
            Err(a) if !out.aimed.contains(&a) => out.aimed.push(a),
            Err(_) => {}
        }
    }
    out.no_faults = spec.nemesis.is_empty();
    take_settings(&mut out, &spec);
    out.acks = spec.client.acks.to_string();
    if out.nemesis.contains(&SimFault::Zombie) && !out.subscribe {
        bail!("the zombie-consumer fault stalls a subscribed consumer: the spec's consumers are assigned");
    }
    out.store = spec.store.clone();
    out.name = spec.name.clone();
    out.recipe = None;
    out.control = false;
    spec.seed = args.seed;
    Ok((out, spec))
}

/// The recipe's verdict on a checked run: for the bug, the expected anomaly found and when
/// (simulated seconds from the start until its first example was proven; an acknowledged
/// write overwritten is proven by the final reads only and counts as the whole main phase);
/// for the control, the invalidating kinds the recipe does not tolerate.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The bug's anomaly, first proven at this many simulated seconds.
    Found(String, f64),
    /// Not found.
    NotFound,
    /// The control is clean.
    Clean,
    /// The control shows these kinds.
    Broken(Vec<String>),
}

impl Verdict {
    /// The exit code: 1 when found (or the control broken), else 0.
    pub fn code(&self) -> u8 {
        match self {
            Verdict::Found(..) | Verdict::Broken(_) => 1,
            Verdict::NotFound | Verdict::Clean => 0,
        }
    }
}

/// Judges the run in `run` (checked: `results.json` exists) by `recipe`, as `harness
/// reproduce` judges its attempts ([`reproduce::judge`]).
pub fn verdict(run: &Path, recipe: &Recipe, control: bool, main_s: f64) -> Result<Verdict> {
    let judged = reproduce::judge(run, recipe, control, main_s)?;
    Ok(match (control, judged.found) {
        (true, _) if judged.invalid.is_empty() => Verdict::Clean,
        (true, _) => Verdict::Broken(judged.invalid),
        (false, Some((kind, at))) => Verdict::Found(kind, at),
        (false, None) => Verdict::NotFound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn args(flags: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(flags.iter().copied())).map(|c| c.sim)
    }

    #[test]
    fn a_spec_file_sets_the_simulation_and_the_seed_stays_the_flags() {
        let spec = TestSpec::from_toml(
            "nodes = 5\nname = \"cell\"\nnemesis = [\"leader-isolation\", \"partition\", \
             \"isr-shrink-crash\", \"kill\", \"disk\"]\nnemesis-interval = 4.6\nseed = 99\n\
             bugs = [\"ack-before-isr\"]\n[broker]\n\"min.insync.replicas\" = \"2\"\n\
             [client]\nacks = \"1\"\n",
        )
        .expect("spec");
        let (out, spec) = from_spec(&args(&["--seed", "7"]).expect("flags"), spec).expect("ok");
        assert_eq!(out.nodes, 5);
        assert_eq!(out.aimed, [Aimed::LeaderIsolation, Aimed::IsrShrinkCrash]);
        assert_eq!(out.nemesis, [SimFault::Partition, SimFault::Kill]);
        assert!(!out.no_faults);
        assert_eq!(out.nemesis_interval, 5);
        assert_eq!(out.acks, "1");
        assert_eq!(out.broker, ["min.insync.replicas=2"]);
        assert_eq!(out.bugs, ["ack-before-isr"]);
        assert_eq!(out.name, "cell");
        assert_eq!(spec.seed, 7, "--seed wins over the file's seed");
    }

    #[test]
    fn a_spec_the_simulation_cannot_run_is_refused_with_the_reason() {
        let refuse = |toml: &str| {
            let spec = TestSpec::from_toml(toml).expect("spec");
            format!(
                "{:#}",
                from_spec(&args(&[]).expect("flags"), spec).expect_err("refused")
            )
        };
        assert!(refuse("nodes = 2\nreplication-factor = 1").contains("at least 3 nodes"));
        assert!(refuse("nemesis = [\"file-corruption\"]").contains("file-corruption"));
        assert!(refuse("bugs = [\"no-such-bug\"]").contains("no-such-bug"));
        assert!(args(&["--spec", "x.toml", "--recipe", "ack-before-isr"]).is_err());
    }

    #[test]
    fn every_bug_zoo_recipe_maps_to_simulated_faults_and_others_are_refused() {
        for r in reproduce::RECIPES {
            for k in r.nemesis {
                assert!(map_kind(*k).is_ok(), "{}: {}", r.bug, k.name());
            }
        }
        for r in crate::recipes::RISK_RECIPES {
            for k in r.nemesis {
                assert!(
                    map_kind(*k).is_ok(),
                    "matrix recipe {}: {}",
                    r.name,
                    k.name()
                );
            }
        }
        assert!(map_kind(FaultKind::FileCorruption).is_err());
        assert_eq!(
            map_kind(FaultKind::Disk).ok(),
            Some(Ok(SimFault::Kill)),
            "the real disk fault is a kill losing unfsynced writes"
        );
    }
}
