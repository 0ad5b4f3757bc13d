//! `harness reproduce <bug>`: the bug zoo's driver. Each broker bug mode has a recipe (the
//! configuration and faults that expose it, and the anomaly kinds it leaves in a history);
//! reproduce runs the recipe with successive seeds until the checker flags an expected anomaly
//! or the time budget ends, and reports the time to detect in seconds of test time. `--control`
//! runs the same recipe without the bug mode, which must come out clean.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::spec::{Acks, ClientKind, ConsumerMode, FaultKind, TestSpec};

/// How to expose one bug mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The broker's `--bug` name.
    pub bug: &'static str,
    /// Where the bug comes from (KIP / JIRA / report).
    pub source: &'static str,
    /// Fault kinds of the schedule.
    pub nemesis: &'static [FaultKind],
    /// Mean seconds between faults.
    pub interval: f64,
    /// Broker properties beyond the defaults.
    pub broker: &'static [(&'static str, &'static str)],
    /// The workload topic's replication factor where the recipe needs one (None: the base
    /// spec's). Recipes with unclean election on run with 2: with three replicas a follower
    /// may leave the ISR before the other, records then acknowledged by the remaining two
    /// (legitimately, min.insync.replicas=2) are missing on the first, and Kafka may elect it
    /// uncleanly; with two, every acknowledged record is on both replicas, so only the bug
    /// loses one and the control's claim (no acknowledged write lost) holds under Kafka's rules.
    pub replication_factor: Option<u16>,
    /// Anomaly kinds that count as detection (any of them); [`ACKED_OVERWRITE`] is an
    /// acknowledged write overwritten.
    pub expect: &'static [&'static str],
    /// Invalidating kinds the recipe's configuration allows without the bug (e.g. unclean
    /// election exposes records never acknowledged, then reuses their offsets), which the
    /// control tolerates; [`ACKED_OVERWRITE`] is never tolerated.
    pub tolerate: &'static [&'static str],
    /// Client settings the bug needs (idempotence, transactions, a client library).
    pub client: ClientNeeds,
    /// Other bug modes switched on with it: behaviour of the same historical releases without
    /// which the bug's scenario cannot happen (the control runs without any of them).
    pub also: &'static [&'static str],
    /// The Kafka release whose rules the broker follows for the bug and its control (the
    /// broker's `kafka.release`), so the recipe stays reproducible whatever the default
    /// release: 3.6 where the bug needs the high watermark to advance with the ISR below
    /// min.insync (3.7+ holds it, KAFKA-15583) or needs no Eligible Leader Replicas (4.1's
    /// default, KIP-966).
    pub release: &'static str,
}

/// The client side of a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientNeeds {
    /// Whatever the base spec says.
    #[default]
    Any,
    /// An idempotent producer (acks=all) that retries.
    Idempotent,
    /// librdkafka's transactional producer with read_committed consumers.
    Transactional,
    /// Consumers subscribed in the run's group (commit and committed ops in the history).
    Group,
}

/// The evidence "an acknowledged write was overwritten": an `inconsistent-offsets` example
/// whose acknowledged value the final reads did not find at its offset (the checker lists
/// those first).
pub const ACKED_OVERWRITE: &str = "inconsistent-offsets:acked";

/// What unclean election itself does to a history: records never acknowledged are exposed
/// (the high watermark passes them once the ISR is the leader alone), then truncated and their
/// offsets reused, so readers see one offset with two values and skip or revisit offsets.
const UNCLEAN_ELECTION: &[&str] = &[
    "inconsistent-offsets",
    "poll-skip",
    "int-poll-skip",
    "nonmonotonic-poll",
    "int-nonmonotonic-poll",
];

/// Every bug mode's recipe.
pub const RECIPES: &[Recipe] = &[
    Recipe {
        bug: "ack-before-isr",
        source: "acks=all acknowledged before replication (the class Jepsen's Kafka tests target)",
        nemesis: &[FaultKind::Partition],
        interval: 5.0,
        broker: &[("min.insync.replicas", "2")],
        replication_factor: None,
        expect: &["lost-write", "unseen"],
        tolerate: &[],
        client: ClientNeeds::Any,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "read-above-hw",
        source: "KAFKA-14704 class: uncommitted records exposed to readers before truncation",
        nemesis: &[FaultKind::Partition],
        interval: 5.0,
        broker: &[("min.insync.replicas", "2")],
        replication_factor: None,
        expect: &["inconsistent-offsets", "nonmonotonic-poll", "poll-skip"],
        tolerate: &[],
        client: ClientNeeds::Any,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "ignore-min-insync",
        source: "pre-KAFKA-1555, Jepsen 2013: the ISR shrinks to the leader, which keeps acking",
        // The leader's replication is cut (its controller session kept) until its ISR is
        // itself, then it is isolated and an out-of-ISR replica is elected.
        nemesis: &[FaultKind::ReplicationCutFailover],
        interval: 8.0,
        broker: &[
            ("min.insync.replicas", "2"),
            ("unclean.leader.election.enable", "true"),
            ("replica.lag.time.max.ms", "2000"),
            ("broker.session.timeout.ms", "3000"),
        ],
        replication_factor: Some(2),
        expect: &["lost-write", "unseen", ACKED_OVERWRITE],
        tolerate: UNCLEAN_ELECTION,
        client: ClientNeeds::Any,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "hw-truncation",
        source: "KAFKA-1211, fixed by KIP-101: followers truncate to their high watermark",
        // Restarted followers truncate to their (up to 5 s stale) checkpointed high watermark
        // and, cut off from the old leader, elect one of themselves.
        nemesis: &[FaultKind::FollowerRestartFailover],
        interval: 8.0,
        broker: &[
            ("min.insync.replicas", "2"),
            ("broker.session.timeout.ms", "3000"),
        ],
        replication_factor: None,
        expect: &["lost-write", "unseen", "inconsistent-offsets"],
        tolerate: &[],
        client: ClientNeeds::Any,
        // Before KIP-903 / KAFKA-18106 a follower restarted inside its session kept its ISR
        // membership, which is what lets the restarted followers elect one of themselves; with
        // restarts fencing the old incarnation they leave the ISR and the scenario cannot
        // happen.
        also: &["restart-without-fencing"],
        release: "3.6",
    },
    Recipe {
        bug: "epoch-lookup-next-epoch",
        source: "KAFKA-6361, fixed by KIP-279: divergence after fast leader fail-over",
        nemesis: &[FaultKind::Kill, FaultKind::Partition],
        interval: 3.0,
        broker: &[("min.insync.replicas", "2")],
        replication_factor: None,
        expect: &["lost-write", "unseen", "inconsistent-offsets"],
        tolerate: &[],
        client: ClientNeeds::Any,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "isr-join-below-epoch-start",
        source: "KAFKA-7128: ISR expansion with a lagging high watermark",
        nemesis: &[FaultKind::Kill, FaultKind::Partition],
        interval: 3.0,
        broker: &[("min.insync.replicas", "2")],
        replication_factor: None,
        expect: &["lost-write", "unseen"],
        tolerate: &[],
        client: ClientNeeds::Any,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "dedupe-missing",
        source: "Redpanda#3039 class: idempotent retries appended twice",
        nemesis: &[FaultKind::Partition, FaultKind::Kill],
        interval: 3.0,
        broker: &[("min.insync.replicas", "2")],
        replication_factor: None,
        expect: &["duplicate"],
        tolerate: &[],
        client: ClientNeeds::Idempotent,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "unclean-regardless",
        source: "pre-0.11 default (KAFKA-1028): a lagging replica elected when the ISR is gone",
        // With min.insync.replicas=1 the leader whose replication is cut legitimately acks
        // alone once its ISR is itself; isolated, it leaves no live ISR replica, and only the
        // bug elects a replica lacking those writes (without it the partition waits offline).
        nemesis: &[FaultKind::ReplicationCutFailover],
        interval: 8.0,
        broker: &[
            ("min.insync.replicas", "1"),
            ("replica.lag.time.max.ms", "2000"),
            ("broker.session.timeout.ms", "3000"),
        ],
        replication_factor: None,
        expect: &["lost-write", "unseen", ACKED_OVERWRITE],
        tolerate: &[],
        client: ClientNeeds::Any,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "ignore-abort-markers",
        source: "AutoMQ#754 class: aborted transactions read as committed",
        nemesis: &[FaultKind::Kill, FaultKind::Partition],
        interval: 3.0,
        broker: &[("min.insync.replicas", "2")],
        replication_factor: None,
        expect: &["G1a"],
        tolerate: &[],
        client: ClientNeeds::Transactional,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "offset-commit-before-isr",
        source: "offsets.commit.required.acks below -1 (deprecated by KIP-1041, removed in 4.0)",
        // The coordinator's replication is cut: it acknowledges commits its followers never
        // get, then its ISR shrinks to itself (further appends of the group's state refused,
        // so rebalances go on); isolated, it is replaced by a replica elected uncleanly, which
        // serves the offsets its own log has.
        nemesis: &[FaultKind::CoordinatorCutFailover],
        interval: 8.0,
        broker: &[
            ("min.insync.replicas", "2"),
            ("unclean.leader.election.enable", "true"),
            ("replica.lag.time.max.ms", "2000"),
            ("broker.session.timeout.ms", "3000"),
            // Two replicas of the group's offsets, for the reason `replication_factor` gives.
            ("offsets.topic.replication.factor", "2"),
        ],
        replication_factor: None,
        expect: &["lost-commit"],
        tolerate: UNCLEAN_ELECTION,
        client: ClientNeeds::Group,
        also: &[],
        release: "3.6",
    },
    Recipe {
        bug: "restart-without-fencing",
        source: "pre-KIP-903 / pre-KAFKA-18106: a broker restarted inside its session resumes its leaderships",
        // Disk faults include kill -9 with every unfsynced write lost (a lost page cache),
        // restarted one interval later: well inside the 30 s session, so the restarted broker
        // comes back while its old registration is alive. With the bug it leads again in the
        // same epoch on an empty log and the followers truncate to it.
        nemesis: &[FaultKind::Disk],
        interval: 4.0,
        broker: &[
            ("min.insync.replicas", "2"),
            ("broker.session.timeout.ms", "30000"),
        ],
        replication_factor: None,
        expect: &["lost-write", "unseen"],
        tolerate: &[],
        client: ClientNeeds::Any,
        also: &[],
        // 4.0 is the release that fixed it (KAFKA-18106): the bug switches its fencing off,
        // and the control shows the fix (3.6's default refuses the new incarnation instead).
        release: "4.0",
    },
];

/// The recipe of `bug`, or an error listing the known ones.
pub fn recipe(bug: &str) -> Result<&'static Recipe> {
    RECIPES.iter().find(|r| r.bug == bug).ok_or_else(|| {
        let names: Vec<&str> = RECIPES.iter().map(|r| r.bug).collect();
        anyhow::anyhow!("no recipe for bug `{bug}`; known: {}", names.join(", "))
    })
}

/// The spec of one attempt: `base` (nodes, time limit, store) with the recipe's settings.
pub fn attempt_spec(base: &TestSpec, recipe: &Recipe, control: bool, seed: u64) -> TestSpec {
    let mut spec = base.clone();
    spec.name = format!(
        "reproduce-{}{}",
        recipe.bug,
        if control { "-control" } else { "" }
    );
    spec.seed = seed;
    spec.nemesis = recipe.nemesis.to_vec();
    spec.nemesis_interval = recipe.interval;
    if let Some(rf) = recipe.replication_factor {
        spec.replication_factor = rf;
    }
    spec.client.acks = Acks::All;
    match recipe.client {
        ClientNeeds::Any => {}
        ClientNeeds::Idempotent => {
            // Retries are what the broker's dedupe exists for: a short request timeout makes
            // the client retry while an acks=all append still waits for a partitioned follower.
            spec.client.idempotence = true;
            spec.client.retries = spec.client.retries.max(10);
            spec.client.request_timeout_ms = 2000;
        }
        ClientNeeds::Transactional => {
            spec.client.idempotence = true;
            spec.client.transactions = true;
            spec.client.client = ClientKind::Rdkafka;
            spec.client.isolation_level = "read_committed".into();
        }
        ClientNeeds::Group => {
            spec.client.consumer_mode = ConsumerMode::Subscribe;
            // A send waiting for a cut follower must give up before the member's 3 s session
            // ends, or the whole group rebalances instead of committing.
            spec.client.request_timeout_ms = 2000;
        }
    }
    spec.broker
        .insert("kafka.release".into(), recipe.release.to_string());
    for (k, v) in recipe.broker {
        spec.broker.insert(k.to_string(), v.to_string());
    }
    spec.bugs = if control {
        Vec::new()
    } else {
        std::iter::once(recipe.bug)
            .chain(recipe.also.iter().copied())
            .map(String::from)
            .collect()
    };
    spec
}

/// What one reproduction found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The expected kind found first (None: not found within the budget).
    pub found: Option<String>,
    /// Every invalidating kind seen over all attempts.
    pub invalid_kinds: Vec<String>,
    /// Attempts run.
    pub attempts: u32,
    /// Seconds of test time until the first evidence of the found anomaly (prior attempts'
    /// main phases plus the evidence's time in the detecting run).
    pub time_to_detect: Option<f64>,
    /// The detecting run's folder.
    pub run: Option<std::path::PathBuf>,
}

/// Seconds from the run's start until the first example of `kind` was proven: for each
/// example, the latest of the ops it names (fields `op`, `ops`, `send_op`, `read_by_op`, ...;
/// an inconsistent offset is proven by its second observation), and the earliest over the
/// examples. None for [`ACKED_OVERWRITE`], which only the final reads prove (the caller then
/// counts the whole main phase).
fn first_evidence(run: &Path, results: &Value, kind: &str) -> Option<f64> {
    if kind == ACKED_OVERWRITE {
        return None;
    }
    let history = checkers::read_history(&run.join("history.jsonl")).ok()?;
    let time_of = |index: u64| {
        history
            .ops
            .iter()
            .find(|o| o.index == index)
            .map(|o| o.time_ns)
    };
    results["anomalies"][kind]["examples"]
        .as_array()?
        .iter()
        .filter_map(|ex| {
            checkers::queue::example_ops(ex)
                .into_iter()
                .map(time_of)
                .collect::<Option<Vec<u64>>>()?
                .into_iter()
                .max()
        })
        .min()
        .map(|ns| ns as f64 / 1e9)
}

/// The anomaly kinds a run's results show, plus [`ACKED_OVERWRITE`] when an acknowledged
/// write was overwritten.
fn observed(results: &Value) -> Vec<String> {
    let mut seen: Vec<String> = results["anomalies"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let acked = results["anomalies"]["inconsistent-offsets"]["examples"]
        .as_array()
        .is_some_and(|a| a.iter().any(|ex| ex["acked_overwritten"] == true));
    if acked {
        seen.push(ACKED_OVERWRITE.to_string());
    }
    seen
}

/// A checked run's `results.json` and its invalidating anomaly kinds.
fn read_results(run: &Path) -> Result<(Value, Vec<String>)> {
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("results.json")).context("reading results.json")?,
    )
    .context("parsing results.json")?;
    let invalidating: Vec<String> = results["invalidating"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok((results, invalidating))
}

/// What one checked attempt of a recipe shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The invalidating kinds it shows (and [`ACKED_OVERWRITE`]), without those the recipe
    /// tolerates when `control`: for a control, any of these is a failure.
    pub invalid: Vec<String>,
    /// Without `control`: the recipe's expected kind found, and the seconds into the test its
    /// first example was proven (at most `main_s`; the whole main phase when only the final
    /// reads prove it).
    pub found: Option<(String, f64)>,
}

/// Judges the checked attempt in `run` (its `results.json`) by `recipe`; `main_s` is the
/// attempt's main phase in seconds. `harness reproduce` and `harness sim --recipe` both judge
/// their attempts so.
pub fn judge(run: &Path, recipe: &Recipe, control: bool, main_s: f64) -> Result<Judgement> {
    let (results, invalidating) = read_results(run)?;
    let seen = observed(&results);
    let invalid = seen
        .iter()
        .filter(|k| *k == ACKED_OVERWRITE || invalidating.contains(k))
        .filter(|k| !(control && recipe.tolerate.contains(&k.as_str())))
        .cloned()
        .collect();
    let found = if control {
        None
    } else {
        recipe
            .expect
            .iter()
            .find(|k| seen.iter().any(|s| s == *k))
            .map(|kind| {
                let at = first_evidence(run, &results, kind).unwrap_or(main_s);
                (kind.to_string(), at.min(main_s))
            })
    };
    Ok(Judgement { invalid, found })
}

/// Runs attempts with seeds `seed`, `seed + 1`, ... until an expected anomaly is found or
/// `budget_s` seconds of test time are spent; with `control`, without the bug mode (then any
/// invalidating anomaly the recipe does not tolerate, or an acknowledged write overwritten, is
/// a failure of the control and is reported).
pub fn reproduce(
    base: &TestSpec,
    recipe: &Recipe,
    control: bool,
    budget_s: u64,
    argv: &[String],
) -> Result<Outcome> {
    let mut spent = 0.0;
    let mut outcome = Outcome {
        found: None,
        invalid_kinds: Vec::new(),
        attempts: 0,
        time_to_detect: None,
        run: None,
    };
    let mut seed = base.seed;
    while spent < budget_s as f64 {
        if crate::run::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            bail!("interrupted");
        }
        let spec = attempt_spec(base, recipe, control, seed);
        eprintln!(
            "harness: reproduce {}{}: attempt {} (seed {seed})",
            recipe.bug,
            if control { " (control)" } else { "" },
            outcome.attempts + 1
        );
        crate::run::run_test(&spec, argv)?;
        outcome.attempts += 1;
        let run = results::store::resolve_latest(&spec.store.join(&spec.name).join("latest"))
            .context("finding the attempt's run folder")?;
        let judged = judge(&run, recipe, control, spec.time_limit as f64)?;
        for k in judged.invalid {
            if !outcome.invalid_kinds.contains(&k) {
                outcome.invalid_kinds.push(k);
            }
        }
        if let Some((kind, at)) = judged.found {
            outcome.found = Some(kind);
            outcome.time_to_detect = Some(spent + at);
            outcome.run = Some(run);
            return Ok(outcome);
        } else if control && !outcome.invalid_kinds.is_empty() {
            outcome.run = Some(run);
            return Ok(outcome);
        }
        spent += spec.time_limit as f64;
        seed += 1;
    }
    Ok(outcome)
}

/// Median and worst of detection times (None when any seed missed).
pub fn summarize(times: &[Option<f64>]) -> Option<(f64, f64)> {
    let t: Vec<f64> = times.iter().copied().collect::<Option<Vec<f64>>>()?;
    let median = results::matrix::median(&t)?;
    let worst = t.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((median, worst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broker_bug_mode_has_a_recipe_and_unknown_names_are_refused() {
        let bugs = crate::system::bundled_bugs().expect("broker --list-bugs");
        assert!(bugs.len() >= 10, "{bugs:?}");
        for (name, _) in &bugs {
            assert!(recipe(name).is_ok(), "{name} has no recipe");
        }
        let e = recipe("lose-everything").expect_err("unknown");
        assert!(e.to_string().contains("ack-before-isr"), "{e}");
    }

    #[test]
    fn attempts_switch_the_bug_on_except_in_the_control() {
        let r = recipe("ack-before-isr").expect("recipe");
        let base = TestSpec::default();
        let s = attempt_spec(&base, r, false, 9);
        assert_eq!(s.bugs, vec!["ack-before-isr".to_string()]);
        assert_eq!(s.seed, 9);
        assert_eq!(s.nemesis, vec![FaultKind::Partition]);
        assert!(attempt_spec(&base, r, true, 9).bugs.is_empty());
        // The recipe's release, for the bug and its control alike, whatever the default.
        for control in [false, true] {
            let s = attempt_spec(&base, r, control, 9);
            assert_eq!(s.broker["kafka.release"], "3.6");
        }
        let r = recipe("restart-without-fencing").expect("recipe");
        assert_eq!(
            attempt_spec(&base, r, true, 9).broker["kafka.release"],
            "4.0"
        );
    }

    /// With unclean election on and three replicas, Kafka itself may lose an acknowledged
    /// record (acknowledged by two, then the third elected), so a control could not promise
    /// none is lost: every such recipe keeps two replicas of what it checks.
    #[test]
    fn recipes_with_unclean_election_keep_two_replicas_of_what_they_check() {
        let base = TestSpec::default();
        let mut seen = 0;
        for r in RECIPES {
            let spec = attempt_spec(&base, r, true, 1);
            if spec
                .broker
                .get("unclean.leader.election.enable")
                .map(String::as_str)
                != Some("true")
            {
                continue;
            }
            seen += 1;
            if r.expect.contains(&"lost-commit") {
                assert_eq!(
                    spec.broker
                        .get("offsets.topic.replication.factor")
                        .map(String::as_str),
                    Some("2"),
                    "{}",
                    r.bug
                );
            } else {
                assert_eq!(spec.replication_factor, 2, "{}", r.bug);
            }
        }
        assert_eq!(seen, 2);
    }

    #[test]
    fn the_lost_commit_recipe_runs_subscribed_consumers() {
        let r = recipe("offset-commit-before-isr").expect("recipe");
        let s = attempt_spec(&TestSpec::default(), r, false, 1);
        assert_eq!(s.client.consumer_mode, ConsumerMode::Subscribe);
        assert_eq!(s.client.acks, Acks::All);
        assert_eq!(r.expect, ["lost-commit"]);
        assert!(RECIPES.iter().any(|r| r.bug == "offset-commit-before-isr"));
    }

    #[test]
    fn hw_truncation_runs_with_restarts_that_keep_the_old_registration() {
        let r = recipe("hw-truncation").expect("recipe");
        let s = attempt_spec(&TestSpec::default(), r, false, 1);
        assert_eq!(s.bugs, vec!["hw-truncation", "restart-without-fencing"]);
        assert!(attempt_spec(&TestSpec::default(), r, true, 1)
            .bugs
            .is_empty());
    }

    #[test]
    fn the_restart_recipe_kills_with_lost_page_caches_inside_the_session() {
        let r = recipe("restart-without-fencing").expect("recipe");
        let s = attempt_spec(&TestSpec::default(), r, false, 1);
        assert_eq!(s.nemesis, vec![FaultKind::Disk]);
        assert_eq!(s.bugs, vec!["restart-without-fencing".to_string()]);
        let session: f64 = s.broker["broker.session.timeout.ms"].parse().expect("ms");
        assert!(
            session / 1000.0 > 2.0 * r.interval,
            "the restart, one interval after the kill, lands inside the session"
        );
    }

    #[test]
    fn times_to_detect_summarize_as_median_and_worst() {
        assert_eq!(
            summarize(&[Some(3.0), Some(1.0), Some(2.0)]),
            Some((2.0, 3.0))
        );
        assert_eq!(summarize(&[Some(3.0), None]), None);
    }
}
