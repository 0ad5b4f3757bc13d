//! The config-safety matrix report: for each configuration cell (acks × min.insync.replicas,
//! and optionally unclean leader election, idempotence and the flush policy) the runs that
//! tested it (each aimed by a risk recipe, or the random nemesis), a verdict (loses
//! acknowledged writes / loses sent records / reorders / duplicates / unavailable / risk not
//! shown / safe), the recipe that broke it and the test time to its first violation, links to
//! each run's report, and what Kafka's documentation promises for that setting, so a surprise
//! (a promise broken) or a documented risk no run showed stands out. Rendered as `matrix.html`
//! (minijinja, `templates/matrix.html`: a picture first, a grid per release and flush setting),
//! `matrix.md` and `matrix.json`.

use std::collections::BTreeMap;
use std::path::Path;

use checkers::OpType;
use minijinja::{context, Environment, Value as JValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::report::{read_json, ReportError};
use crate::verdict::Verdict;

/// The page template.
pub const TEMPLATE: &str = include_str!("../templates/matrix.html");

/// Below this share of sends acknowledged, a cell without data findings is "unavailable".
pub const UNAVAILABLE_BELOW: f64 = 0.5;

/// One cell's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellConfig {
    /// Producer acks: `0`, `1` or `all`.
    pub acks: String,
    /// `min.insync.replicas`.
    pub min_isr: u32,
    /// `unclean.leader.election.enable`.
    pub unclean: bool,
    /// `enable.idempotence`.
    pub idempotence: bool,
    /// The topic's replication factor.
    pub replication_factor: u32,
    /// The flush policy: [`FLUSH_DEFAULT`] (Kafka's: no fsync, the OS writes back) or
    /// [`FLUSH_EVERY`] (`log.flush.interval.messages=1`, an fsync per append).
    #[serde(default = "flush_default")]
    pub flush: String,
    /// The Kafka release whose replication rules the brokers follow (`kafka.release`, e.g.
    /// `3.6`, `4.1`). Matrices written before the setting existed tested 3.6 rules.
    #[serde(default = "release_before_setting")]
    pub release: String,
    /// The rules that release follows, as the broker that ran the cell listed them
    /// (`broker --list-releases`); absent in matrices written before, whose rules
    /// [`CellConfig::rules`] infers from the release number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<ReleaseRules>,
}

/// The release rules a cell's promise depends on (a subset of what `broker --list-releases`
/// prints per release; unknown fields there are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRules {
    /// KAFKA-15583 (Kafka 3.7): effective min ISR = min(min.insync, replica count), and the
    /// high watermark waits while the ISR is below it.
    pub effective_min_isr: bool,
    /// KIP-966 (Kafka 4.1): Eligible Leader Replicas on by default, which closes the
    /// last-replica-standing loss.
    pub elr_default: bool,
}

/// The release a matrix written before `kafka.release` existed followed.
pub const RELEASE_BEFORE_SETTING: &str = "3.6";

fn release_before_setting() -> String {
    RELEASE_BEFORE_SETTING.to_string()
}

/// A release as (major, minor); anything unparsable counts as the oldest. Only for matrices
/// written before cells carried their [`ReleaseRules`].
fn release_number(release: &str) -> (u32, u32) {
    let mut it = release
        .split('.')
        .map(|p| p.trim().parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The rules of `release` for a matrix written before cells carried them: KAFKA-15583 from
/// 3.7, ELR by default from 4.1 (as `broker::release` has them).
fn legacy_rules(release: &str) -> ReleaseRules {
    let n = release_number(release);
    ReleaseRules {
        effective_min_isr: n >= (3, 7),
        elr_default: n >= (4, 1),
    }
}

/// Kafka's default flush policy: no fsync of appends (the page cache is written back by the OS).
pub const FLUSH_DEFAULT: &str = "default";
/// An fsync per append (`log.flush.interval.messages=1`).
pub const FLUSH_EVERY: &str = "every";

fn flush_default() -> String {
    FLUSH_DEFAULT.to_string()
}

/// The flush policy in words.
pub fn flush_words(flush: &str) -> &'static str {
    if flush == FLUSH_EVERY {
        "fsync per append (log.flush.interval.messages=1)"
    } else {
        "Kafka's default flush (no fsync; the OS writes back)"
    }
}

impl CellConfig {
    /// The release rules this cell ran under: the broker's own list, or for an old matrix the
    /// rules inferred from its release number.
    pub fn rules(&self) -> ReleaseRules {
        self.rules.unwrap_or_else(|| legacy_rules(&self.release))
    }

    /// A name usable as a store folder: `acks-all_mi-2_k4-1` (Kafka 4.1's rules), with `_unclean` / `_idem` /
    /// `_fsync`.
    pub fn slug(&self) -> String {
        let mut s = format!(
            "acks-{}_mi-{}_k{}",
            self.acks,
            self.min_isr,
            self.release.replace('.', "-")
        );
        if self.unclean {
            s.push_str("_unclean");
        }
        if self.idempotence {
            s.push_str("_idem");
        }
        if self.flush == FLUSH_EVERY {
            s.push_str("_fsync");
        }
        s
    }

    /// How people write it: `acks=all min.insync.replicas=2`.
    pub fn label(&self) -> String {
        let mut s = format!("acks={} min.insync.replicas={}", self.acks, self.min_isr);
        if self.unclean {
            s.push_str(" unclean.leader.election");
        }
        if self.idempotence {
            s.push_str(" idempotent");
        }
        if self.flush == FLUSH_EVERY {
            s.push_str(" log.flush.interval.messages=1");
        }
        s.push_str(&format!(" (Kafka {})", self.release));
        s
    }
}

/// What Kafka's documentation promises for a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    /// The promise in words.
    pub text: String,
    /// No acknowledged write is lost with one broker failure at a time.
    pub no_loss: bool,
    /// No duplicates from producer retries.
    pub no_duplicates: bool,
}

/// Kafka's documented guarantees for `c` (producer `acks`, topic `min.insync.replicas`,
/// `unclean.leader.election.enable`, `enable.idempotence`).
pub fn promise(c: &CellConfig) -> Promise {
    let rf = c.replication_factor;
    let mut parts: Vec<String> = Vec::new();
    let mut no_loss = false;
    match c.acks.as_str() {
        "0" => parts.push(
            "acks=0: nothing. The producer does not wait for the broker, so a record can be lost \
             on any failure and the client never learns its offset."
                .into(),
        ),
        "1" => parts.push(
            "acks=1: the leader has the record in its log. If the leader fails before followers \
             copy it, the record is lost; min.insync.replicas does not apply to acks=1."
                .into(),
        ),
        _ => {
            let effective = c.rules().effective_min_isr;
            let min_isr = if effective {
                c.min_isr.min(rf)
            } else {
                c.min_isr
            };
            if c.min_isr > rf && !effective {
                parts.push(format!(
                    "acks=all with min.insync.replicas={} above the replication factor {rf}: \
                     no send can be acknowledged (NOT_ENOUGH_REPLICAS; Kafka {} predates \
                     KAFKA-15583's effective min ISR).",
                    c.min_isr, c.release
                ));
                no_loss = true;
            } else if min_isr <= 1 {
                parts.push(
                    "acks=all with min.insync.replicas=1: every in-sync replica has the record, \
                     but the in-sync set may shrink to the leader alone, and then a failure of \
                     that leader loses acknowledged writes."
                        .into(),
                );
            } else {
                let survives = min_isr - 1;
                let mut t = if c.min_isr > rf {
                    format!(
                        "acks=all with min.insync.replicas={} above the replication factor \
                         {rf}: since Kafka 3.7 (KAFKA-15583) the effective minimum is the \
                         replica count, {rf}, so every replica must have a record before it is \
                         acknowledged, and it survives {survives} broker failure{}.",
                        c.min_isr,
                        if survives == 1 { "" } else { "s" },
                    )
                } else {
                    format!(
                        "acks=all with min.insync.replicas={}: an acknowledged record is on at \
                         least {} replicas and survives {survives} broker failure{}; with fewer \
                         than {} in-sync replicas sends fail with NOT_ENOUGH_REPLICAS instead.",
                        c.min_isr,
                        c.min_isr,
                        if survives == 1 { "" } else { "s" },
                        c.min_isr
                    )
                };
                if min_isr == rf {
                    t.push_str(" Any one broker down makes the topic unwritable.");
                }
                if c.flush == FLUSH_EVERY {
                    t.push_str(
                        " Every append is fsynced, so a crash of the last in-sync replica loses \
                         nothing it acknowledged.",
                    );
                    no_loss = true;
                } else if c.rules().elr_default {
                    t.push_str(&format!(
                        " Kafka does not fsync by default, but Kafka {} keeps Eligible Leader \
                         Replicas (KIP-966, on by default since 4.1): a replica leaving the ISR \
                         at min ISR stays electable and a broker back from an unclean shutdown \
                         is not, so the last replica standing crashing with its unflushed tail \
                         does not lose acknowledged writes (the partition may stay offline \
                         instead).",
                        c.release
                    ));
                    no_loss = true;
                } else {
                    t.push_str(&format!(
                        " But Kafka does not fsync by default, and Kafka {} has no Eligible \
                         Leader Replicas by default (KIP-966: 4.1): the ISR may shrink to the \
                         leader alone, and if that last replica standing then crashes losing its \
                         unflushed tail, it is the only electable replica and the others \
                         truncate to it, so acknowledged writes are lost.",
                        c.release
                    ));
                }
                parts.push(t);
            }
        }
    }
    if c.unclean {
        parts.push(
            "unclean.leader.election.enable=true lets an out-of-sync replica become leader: \
             acknowledged writes can be lost whatever acks says."
                .into(),
        );
        no_loss = false;
    }
    if c.idempotence {
        parts.push(
            "enable.idempotence=true: retries write no duplicates and keep order within a \
             producer session."
                .into(),
        );
    } else {
        parts.push("Without idempotence, producer retries may duplicate records.".into());
    }
    Promise {
        text: parts.join(" "),
        no_loss,
        no_duplicates: c.idempotence,
    }
}

/// What one run of a cell showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's folder, relative to the matrix folder (links are built from it).
    pub rel: String,
    /// Its seed.
    pub seed: u64,
    /// Its verdict.
    pub verdict: Verdict,
    /// Count per anomaly kind found.
    pub anomalies: BTreeMap<String, u64>,
    /// The kinds that invalidate this run.
    pub invalidating: Vec<String>,
    /// Acknowledged writes lost: `unseen` (which includes `lost-write`), plus the `inconsistent-offsets`
    /// examples whose acknowledged value the final reads did not find at its offset (an
    /// acknowledged write overwritten, the checker's `acked_overwritten`).
    pub lost: u64,
    /// Values written more than once (`duplicate`).
    pub duplicated: u64,
    /// Sends acknowledged / failed / unknown.
    pub sends: [u64; 3],
    /// Share of sends acknowledged (None when there were none).
    pub availability: Option<f64>,
    /// p99 latency of acknowledged sends, milliseconds.
    pub produce_p99_ms: Option<f64>,
    /// Why the harness could not run it.
    pub error: Option<String>,
    /// Wall-clock seconds it took.
    pub seconds: f64,
    /// The risk recipe that aimed this run's faults (None: the random nemesis).
    #[serde(default)]
    pub recipe: Option<String>,
    /// Distinct values sent (every send invoked, acknowledged or not).
    #[serde(default)]
    pub sent: u64,
    /// Sent values no read ever returned, after the final reads (the finding of `acks=0`,
    /// whose sends are never acknowledged).
    #[serde(default)]
    pub missing: u64,
    /// Seconds of test time from the run's start until its first violation was proven (the
    /// latest op an example of an invalidating finding names, the earliest over examples).
    #[serde(default)]
    pub first_violation_s: Option<f64>,
    /// The run's main phase, seconds of test time (what a run without a violation adds to a
    /// cell's time to its first violation).
    #[serde(default)]
    pub test_seconds: f64,
}

impl RunSummary {
    /// Reads a finished run's `results.json` and history (the produce p99, the sent records
    /// never read, the time of the first violation).
    pub fn from_run(dir: &Path, rel: &str, seed: u64, seconds: f64) -> Result<Self, ReportError> {
        let results = read_json(&dir.join("results.json"))?;
        let history = checkers::read_history(&dir.join("history.jsonl"))?;
        let points = checkers::stats::latency_points(&history);
        let qs = checkers::stats::quantiles(&points);
        let p99 =
            checkers::stats::quantile_of(&qs, "send", OpType::Ok).map(|q| q.p99_ns as f64 / 1e6);
        let mut r = Self::from_results(&results, rel, seed, seconds, p99);
        let d = delivery(&history);
        r.sent = d.sent;
        r.missing = d.missing;
        // The checker lists only the first few overwritten acknowledged writes, and flags one
        // only where the final reads reached its offset: once an offset held two records (or it
        // found a loss), the acknowledged sends the final reads did not return count them all.
        if r.lost > 0
            || r.anomalies
                .get("inconsistent-offsets")
                .is_some_and(|n| *n > 0)
        {
            r.lost = r.lost.max(d.acked_missing);
        }
        r.first_violation_s = first_violation(&history, &results, &r.invalidating);
        Ok(r)
    }

    /// From a results.json value.
    pub fn from_results(
        results: &Value,
        rel: &str,
        seed: u64,
        seconds: f64,
        produce_p99_ms: Option<f64>,
    ) -> Self {
        let anomalies: BTreeMap<String, u64> = results["anomalies"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v["count"].as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let count = |k: &str| anomalies.get(k).copied().unwrap_or(0);
        let s = &results["stats"]["sends"];
        let sends = [
            s["ok"].as_u64().unwrap_or(0),
            s["fail"].as_u64().unwrap_or(0),
            s["info"].as_u64().unwrap_or(0),
        ];
        let total: u64 = sends.iter().sum();
        RunSummary {
            rel: rel.to_string(),
            seed,
            verdict: if results.is_null() {
                Verdict::Unknown
            } else {
                Verdict::from_valid(&results["valid"])
            },
            // `unseen` includes the lost writes (Jepsen's count): the larger, not the sum.
            lost: count("lost-write").max(count("unseen")) + acked_overwritten(results),
            duplicated: count("duplicate"),
            anomalies,
            invalidating: results["invalidating"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            sends,
            availability: (total > 0).then(|| sends[0] as f64 / total as f64),
            produce_p99_ms,
            error: None,
            seconds,
            recipe: None,
            sent: 0,
            missing: 0,
            first_violation_s: None,
            test_seconds: 0.0,
        }
    }

    /// A run the harness could not complete.
    pub fn crashed(rel: &str, seed: u64, error: String, seconds: f64) -> Self {
        RunSummary {
            rel: rel.to_string(),
            seed,
            verdict: Verdict::Crashed,
            anomalies: BTreeMap::new(),
            invalidating: Vec::new(),
            lost: 0,
            duplicated: 0,
            sends: [0; 3],
            availability: None,
            produce_p99_ms: None,
            error: Some(error),
            seconds,
            recipe: None,
            sent: 0,
            missing: 0,
            first_violation_s: None,
            test_seconds: 0.0,
        }
    }
}

/// How many `inconsistent-offsets` examples are an acknowledged write overwritten.
fn acked_overwritten(results: &Value) -> u64 {
    results["anomalies"]["inconsistent-offsets"]["examples"]
        .as_array()
        .map_or(0, |a| {
            a.iter()
                .filter(|ex| ex["acked_overwritten"] == true)
                .count() as u64
        })
}

/// The `(key, value)` pairs of a send micro-op (`["send", key, value]`, or `[offset, value]`
/// in a completion) and of a poll's reads (`["poll", {key: [[offset, value], ...]}]`).
fn sent_pair(mop: &Value) -> Option<(String, i64)> {
    let m = mop.as_array()?;
    if m.first()?.as_str()? != "send" {
        return None;
    }
    let key = m.get(1)?.as_str()?.to_string();
    let v = m.get(2)?;
    let value = v
        .as_i64()
        .or_else(|| v.as_array().and_then(|p| p.get(1)).and_then(Value::as_i64))?;
    Some((key, value))
}

/// What reached the log, from a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivery {
    /// Distinct values sent (every send invoked).
    pub sent: u64,
    /// Sent values no read ever returned.
    pub missing: u64,
    /// Acknowledged sends.
    pub acked: u64,
    /// Acknowledged sends the final reads did not return.
    pub acked_missing: u64,
}

/// Sends and reads of a history: values sent, those no read returned, and acknowledged sends
/// the final reads (process [`checkers::history::FINAL_PROCESS`]) did not return.
pub fn delivery(history: &checkers::History) -> Delivery {
    use std::collections::BTreeSet;
    let mut sent: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut acked: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut read: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut final_read: BTreeSet<(String, i64)> = BTreeSet::new();
    for op in &history.ops {
        let checkers::Process::Client(process) = op.process else {
            continue;
        };
        let Some(mops) = op.value.as_array() else {
            continue;
        };
        for mop in mops {
            match op.op_type {
                OpType::Invoke => sent.extend(sent_pair(mop)),
                OpType::Ok => {
                    acked.extend(sent_pair(mop));
                    let reads = mop
                        .as_array()
                        .filter(|m| m.first().and_then(Value::as_str) == Some("poll"))
                        .and_then(|m| m.get(1))
                        .and_then(Value::as_object);
                    for (key, pairs) in reads.into_iter().flatten() {
                        for pair in pairs.as_array().into_iter().flatten() {
                            if let Some(v) = pair.get(1).and_then(Value::as_i64) {
                                read.insert((key.clone(), v));
                                if process == checkers::history::FINAL_PROCESS {
                                    final_read.insert((key.clone(), v));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Delivery {
        sent: sent.len() as u64,
        missing: sent.iter().filter(|p| !read.contains(*p)).count() as u64,
        acked: acked.len() as u64,
        acked_missing: acked.iter().filter(|p| !final_read.contains(*p)).count() as u64,
    }
}

/// Seconds from the run's start until the first example of an invalidating finding was
/// proven: per example the latest op it names (for a `lost-write`, the read of the highest
/// offset, so an upper bound), the earliest over every example of every invalidating kind; a
/// finding only the final reads prove (`unseen`, or no op named) counts at the last op of the
/// history.
pub fn first_violation(
    history: &checkers::History,
    results: &Value,
    invalidating: &[String],
) -> Option<f64> {
    let time_of: BTreeMap<u64, u64> = history.ops.iter().map(|o| (o.index, o.time_ns)).collect();
    let end = history.ops.last().map(|o| o.time_ns)?;
    invalidating
        .iter()
        .filter(|k| {
            results["anomalies"][k.as_str()]["count"]
                .as_u64()
                .unwrap_or(0)
                > 0
        })
        .map(|k| {
            // An unseen write is proven only by the final reads (its example names its send).
            if k == "unseen" {
                return end;
            }
            let examples = results["anomalies"][k.as_str()]["examples"].as_array();
            let proven = examples
                .into_iter()
                .flatten()
                .filter_map(|ex| {
                    checkers::queue::example_ops(ex)
                        .into_iter()
                        .filter_map(|i| time_of.get(&i).copied())
                        .max()
                })
                .min();
            proven.unwrap_or(end)
        })
        .min()
        .map(|ns| ns as f64 / 1e9)
}

/// How a cell behaved, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Acknowledged writes were lost.
    LosesAcknowledgedWrites,
    /// `acks=0`: records sent never arrived (nothing is acknowledged at acks=0).
    LosesSentRecords,
    /// Offsets disagree between observers, or reads went backwards or skipped.
    Reorders,
    /// A value was written more than once.
    Duplicates,
    /// The consumer group's committed offsets went back (`lost-commit`).
    LosesCommits,
    /// Another invalidating finding (e.g. a dependency cycle, an aborted read, a read of a
    /// value nobody wrote): the run is invalid for a reason the kinds above do not name.
    OtherFinding,
    /// The broker refused most sends (fewer than half acknowledged; at acks=0, more than half
    /// refused outright).
    Unavailable,
    /// Nothing decidable (nothing acknowledged, nothing read).
    Unknown,
    /// The harness could not run it.
    CouldNotRun,
    /// The setting allows loss but no run showed it: weak evidence, never "safe".
    RiskNotShown,
    /// None of the above, and the setting promises no loss.
    Safe,
}

impl Behaviour {
    /// In words.
    pub fn words(self) -> &'static str {
        match self {
            Behaviour::LosesAcknowledgedWrites => "loses acknowledged writes",
            Behaviour::LosesSentRecords => "loses sent records",
            Behaviour::Reorders => "reorders",
            Behaviour::Duplicates => "duplicates",
            Behaviour::LosesCommits => "loses committed offsets",
            Behaviour::OtherFinding => "other finding",
            Behaviour::Unavailable => "unavailable",
            Behaviour::Unknown => "unknown",
            Behaviour::CouldNotRun => "could not run",
            Behaviour::RiskNotShown => "risk not shown",
            Behaviour::Safe => "safe",
        }
    }

    /// CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Behaviour::LosesAcknowledgedWrites | Behaviour::LosesSentRecords => "loss",
            Behaviour::Reorders => "reorder",
            Behaviour::Duplicates => "dup",
            Behaviour::LosesCommits => "loss",
            Behaviour::OtherFinding => "other",
            Behaviour::Unavailable => "unavail",
            Behaviour::Unknown | Behaviour::CouldNotRun => "unknown",
            Behaviour::RiskNotShown => "notshown",
            Behaviour::Safe => "safe",
        }
    }

    /// Whether a run behaving so violated something a setting may or may not promise (the
    /// event that stops a cell).
    pub fn is_violation(self) -> bool {
        matches!(
            self,
            Behaviour::LosesAcknowledgedWrites
                | Behaviour::LosesSentRecords
                | Behaviour::Reorders
                | Behaviour::Duplicates
                | Behaviour::LosesCommits
                | Behaviour::OtherFinding
        )
    }
}

/// How a run without a risk recipe is named: the random nemesis of the base spec.
pub const RANDOM: &str = "random nemesis";

/// Ordering and consistency kinds, which make a run "reorder" when they invalidate it.
const REORDER_KINDS: &[&str] = &[
    "inconsistent-offsets",
    "G1a",
    "nonmonotonic-poll",
    "poll-skip",
    "int-poll-skip",
    "int-nonmonotonic-poll",
    "nonmonotonic-send",
];

/// Kinds by severity, for a cell's "worst finding".
const SEVERITY: &[&str] = &[
    "lost-write",
    "unseen",
    "inconsistent-offsets",
    "G1a",
    "G0",
    "G1c",
    "duplicate",
    "nonmonotonic-send",
    "nonmonotonic-poll",
    "poll-skip",
    "int-nonmonotonic-poll",
    "int-poll-skip",
];

/// How one run behaved, judged as an `acks=all`/`acks=1` run (see [`run_behaviour`]).
pub fn behaviour(r: &RunSummary) -> Behaviour {
    run_behaviour(r, "all")
}

/// How one run of a cell with producer `acks` behaved. At `acks=0` nothing is acknowledged:
/// the finding is sent records that never arrived, and the cell is unavailable only when the
/// broker refused most sends outright.
pub fn run_behaviour(r: &RunSummary, acks: &str) -> Behaviour {
    if r.verdict == Verdict::Crashed {
        return Behaviour::CouldNotRun;
    }
    let invalidates = |k: &str| r.invalidating.iter().any(|i| i == k);
    if r.lost > 0
        && (invalidates("lost-write")
            || invalidates("unseen")
            || invalidates("inconsistent-offsets"))
    {
        return Behaviour::LosesAcknowledgedWrites;
    }
    let acks0 = acks == "0";
    if acks0 && r.missing > 0 {
        return Behaviour::LosesSentRecords;
    }
    if REORDER_KINDS
        .iter()
        .any(|k| r.anomalies.get(*k).copied().unwrap_or(0) > 0 && invalidates(k))
    {
        return Behaviour::Reorders;
    }
    if r.duplicated > 0 {
        return Behaviour::Duplicates;
    }
    if r.anomalies.get("lost-commit").copied().unwrap_or(0) > 0 && invalidates("lost-commit") {
        return Behaviour::LosesCommits;
    }
    // Any other kind that invalidated the run: never "safe" while the checker says invalid.
    if r.invalidating
        .iter()
        .any(|k| k != "duplicate" && r.anomalies.get(k).copied().unwrap_or(0) > 0)
    {
        return Behaviour::OtherFinding;
    }
    let total: u64 = r.sends.iter().sum();
    let served = if acks0 {
        (total > 0).then(|| 1.0 - r.sends[1] as f64 / total as f64)
    } else {
        r.availability
    };
    if served.is_some_and(|a| a < UNAVAILABLE_BELOW) {
        return Behaviour::Unavailable;
    }
    if acks0 {
        return if r.sent > 0 {
            Behaviour::Safe
        } else {
            Behaviour::Unknown
        };
    }
    if r.verdict == Verdict::Unknown {
        return Behaviour::Unknown;
    }
    Behaviour::Safe
}

/// One cell: its configuration and runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The configuration.
    pub config: CellConfig,
    /// Its runs, in the order they ran.
    pub runs: Vec<RunSummary>,
    /// The risk recipes that bear on this configuration, in the order they ran (the random
    /// nemesis, when it ran, is the runs without a recipe).
    #[serde(default)]
    pub recipes: Vec<String>,
    /// Wall-clock seconds the cell could spend (`--budget`).
    #[serde(default)]
    pub budget_s: f64,
}

impl Cell {
    /// The worst behaviour over the runs that ran (could-not-run only when none did); a cell
    /// whose setting allows loss and that showed nothing is "risk not shown", never "safe".
    pub fn behaviour(&self) -> Behaviour {
        let ran: Vec<Behaviour> = self
            .runs
            .iter()
            .map(|r| run_behaviour(r, &self.config.acks))
            .filter(|b| *b != Behaviour::CouldNotRun)
            .collect();
        match ran.into_iter().min() {
            None => Behaviour::CouldNotRun,
            Some(Behaviour::Safe) if !promise(&self.config).no_loss => Behaviour::RiskNotShown,
            Some(b) => b,
        }
    }

    /// A setting that allows loss and no run showed it (weak evidence).
    pub fn risk_not_shown(&self) -> bool {
        self.behaviour() == Behaviour::RiskNotShown
    }

    /// The first violating run: its index, its recipe (`random nemesis` when none) and the
    /// seconds of test time to its first violation (every earlier run's main phase plus the
    /// violation's time in its run).
    pub fn first_violation(&self) -> Option<(usize, String, f64)> {
        let mut spent = 0.0;
        for (i, r) in self.runs.iter().enumerate() {
            if run_behaviour(r, &self.config.acks).is_violation() {
                let at = r.first_violation_s.unwrap_or(r.test_seconds);
                let recipe = r.recipe.clone().unwrap_or_else(|| RANDOM.to_string());
                return Some((i, recipe, spent + at));
            }
            spent += r.test_seconds;
        }
        None
    }

    /// Sent values over the runs, and those never read.
    pub fn sent_missing(&self) -> (u64, u64) {
        (
            self.runs.iter().map(|r| r.sent).sum(),
            self.runs.iter().map(|r| r.missing).sum(),
        )
    }

    /// One sentence a reviewer can paste into a design doc.
    pub fn plain_line(&self) -> String {
        let label = self.config.label();
        let runs = self.runs.len();
        let tested = format!(
            "{runs} run{} of {}",
            if runs == 1 { "" } else { "s" },
            self.tried()
        );
        match (self.behaviour(), self.first_violation()) {
            (Behaviour::LosesAcknowledgedWrites, Some((i, recipe, t))) => format!(
                "With {label}, {} acknowledged writes were lost: {} broke it {t:.1} s into \
                 testing (run {} of {runs}).",
                self.lost(),
                recipe,
                i + 1
            ),
            (Behaviour::LosesSentRecords, Some((_, recipe, t))) => {
                let (sent, missing) = self.sent_missing();
                format!(
                    "With {label}, {missing} of {sent} records sent ({}) never arrived; {} \
                     showed it {t:.1} s into testing. acks=0 never says which.",
                    pct((sent > 0).then(|| missing as f64 / sent as f64)),
                    recipe
                )
            }
            (b, Some((_, recipe, t))) if b.is_violation() => format!(
                "With {label}, the log {} ({}): {} showed it {t:.1} s into testing.",
                b.words(),
                self.worst_finding()
                    .map_or_else(|| "-".into(), |(k, n)| format!("{k} {n}")),
                recipe
            ),
            (Behaviour::RiskNotShown, _) => format!(
                "With {label}, Kafka documents possible loss, but {tested} did not show it: weak \
                 evidence, not a proof of safety."
            ),
            (Behaviour::Safe, _) => format!(
                "With {label}, no acknowledged write was lost in {tested}, as Kafka promises."
            ),
            (b, _) => format!("With {label}: {} over {tested}.", b.words()),
        }
    }

    /// What aimed the runs, in words: the recipes, and the random nemesis if it ran.
    pub fn tried(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for r in &self.runs {
            let n = r.recipe.clone().unwrap_or_else(|| RANDOM.to_string());
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if names.is_empty() {
            "nothing ran".into()
        } else {
            names.join(", ")
        }
    }

    /// The most severe anomaly kind found, with its total count over the runs.
    pub fn worst_finding(&self) -> Option<(String, u64)> {
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &self.runs {
            for (k, n) in &r.anomalies {
                *totals.entry(k.as_str()).or_default() += n;
            }
        }
        let rank = |k: &str| {
            SEVERITY
                .iter()
                .position(|s| *s == k)
                .unwrap_or(SEVERITY.len())
        };
        totals
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .min_by_key(|(k, _)| rank(k))
            .map(|(k, n)| (k.to_string(), n))
    }

    /// Lost acknowledged writes over the runs.
    pub fn lost(&self) -> u64 {
        self.runs.iter().map(|r| r.lost).sum()
    }

    /// Duplicated values over the runs.
    pub fn duplicated(&self) -> u64 {
        self.runs.iter().map(|r| r.duplicated).sum()
    }

    /// Share of sends acknowledged over the runs.
    pub fn availability(&self) -> Option<f64> {
        let ok: u64 = self.runs.iter().map(|r| r.sends[0]).sum();
        let all: u64 = self.runs.iter().map(|r| r.sends.iter().sum::<u64>()).sum();
        (all > 0).then(|| ok as f64 / all as f64)
    }

    /// The worst run's produce p99, milliseconds.
    pub fn produce_p99_ms(&self) -> Option<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.produce_p99_ms)
            .fold(None, |m, x| Some(m.map_or(x, |m: f64| m.max(x))))
    }

    /// The verdict per run for exit codes and JUnit: crashed, else invalid, else valid.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.runs.iter().map(|r| r.verdict).collect()
    }

    /// How this cell broke Kafka's documented promise, if it did.
    pub fn surprise(&self) -> Option<String> {
        let p = promise(&self.config);
        let mut s = Vec::new();
        if p.no_loss && self.lost() > 0 {
            s.push(format!(
                "lost {} acknowledged writes although this setting promises none",
                self.lost()
            ));
        }
        if p.no_loss && self.behaviour() == Behaviour::Reorders {
            s.push("the log's order or content diverged between observers".to_string());
        }
        match self.behaviour() {
            Behaviour::LosesCommits if p.no_loss => s.push(
                "the group's committed offsets went back (lost-commit) although this setting \
                 promises no loss"
                    .to_string(),
            ),
            Behaviour::OtherFinding => s.push(format!(
                "an invalidating finding Kafka never allows: {}",
                self.worst_finding()
                    .map_or_else(|| "?".to_string(), |(k, _)| k)
            )),
            _ => {}
        }
        if p.no_duplicates && self.duplicated() > 0 {
            s.push(format!(
                "{} duplicates although the producer is idempotent",
                self.duplicated()
            ));
        }
        (!s.is_empty()).then(|| s.join("; "))
    }
}

/// A whole matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Title (the test name).
    pub title: String,
    /// What every cell ran: workload, nemesis, time limit, nodes (free text rows).
    pub setup: Vec<(String, String)>,
    /// The command line.
    pub command_line: String,
    /// The cells, row-major.
    pub cells: Vec<Cell>,
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |a| format!("{:.1}%", a * 100.0))
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |m| format!("{m:.1} ms"))
}

/// Seconds of test time to the first violation per recipe, over the cells it broke first.
pub fn recipe_times(m: &Matrix) -> Vec<(String, Vec<f64>)> {
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for c in &m.cells {
        if let Some((_, recipe, t)) = c.first_violation() {
            match out.iter_mut().find(|(r, _)| *r == recipe) {
                Some((_, ts)) => ts.push(t),
                None => out.push((recipe, vec![t])),
            }
        }
    }
    out
}

/// The median of `xs` (None when empty).
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut t = xs.to_vec();
    t.sort_by(f64::total_cmp);
    match t.len() {
        0 => None,
        n if n % 2 == 1 => Some(t[n / 2]),
        n => Some((t[n / 2 - 1] + t[n / 2]) / 2.0),
    }
}

/// A cell's figures, as the templates use them.
#[derive(Serialize)]
struct CellView {
    label: String,
    slug: String,
    acks: String,
    min_isr: u32,
    behaviour: &'static str,
    class: &'static str,
    worst: String,
    lost: u64,
    missing: String,
    duplicated: u64,
    availability: String,
    p99: String,
    promise: String,
    surprise: Option<String>,
    broken_by: String,
    first_violation: String,
    plain: String,
    tried: String,
    short: String,
    runs: Vec<RunView>,
}

#[derive(Serialize)]
struct RunView {
    rel: String,
    seed: u64,
    recipe: String,
    verdict: String,
    behaviour: &'static str,
    findings: String,
    availability: String,
    p99: String,
    first_violation: String,
    error: Option<String>,
    has_report: bool,
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |t| format!("{t:.1} s"))
}

fn view(cell: &Cell, dir: Option<&Path>) -> CellView {
    let b = cell.behaviour();
    let (sent, missing) = cell.sent_missing();
    let first = cell.first_violation();
    CellView {
        label: cell.config.label(),
        slug: cell.config.slug(),
        acks: cell.config.acks.clone(),
        min_isr: cell.config.min_isr,
        behaviour: b.words(),
        class: b.class(),
        worst: cell
            .worst_finding()
            .map_or_else(|| "none".into(), |(k, n)| format!("{k} ({n})")),
        lost: cell.lost(),
        missing: if sent == 0 {
            "-".into()
        } else {
            format!(
                "{missing} of {sent} ({})",
                pct(Some(missing as f64 / sent as f64))
            )
        },
        duplicated: cell.duplicated(),
        availability: if cell.config.acks == "0" {
            "- (acks=0: nothing acknowledged)".into()
        } else {
            pct(cell.availability())
        },
        p99: ms(cell.produce_p99_ms()),
        promise: promise(&cell.config).text,
        surprise: cell.surprise(),
        broken_by: first
            .as_ref()
            .map_or_else(|| "-".into(), |(_, r, _)| r.clone()),
        first_violation: secs(first.as_ref().map(|(_, _, t)| *t)),
        plain: cell.plain_line(),
        tried: cell.tried(),
        short: match (&first, b) {
            (Some((_, r, t)), _) => format!("{r}, {t:.0} s"),
            (None, _) => format!(
                "{} run{}",
                cell.runs.len(),
                if cell.runs.len() == 1 { "" } else { "s" }
            ),
        },
        runs: cell
            .runs
            .iter()
            .map(|r| RunView {
                rel: r.rel.clone(),
                seed: r.seed,
                recipe: r.recipe.clone().unwrap_or_else(|| RANDOM.to_string()),
                verdict: format!("{:?}", r.verdict).to_lowercase(),
                behaviour: run_behaviour(r, &cell.config.acks).words(),
                findings: {
                    let mut f: Vec<String> = r
                        .anomalies
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect();
                    if cell.config.acks == "0" && r.sent > 0 {
                        f.push(format!("sent never read: {} of {}", r.missing, r.sent));
                    }
                    if f.is_empty() {
                        "none".into()
                    } else {
                        f.join(", ")
                    }
                },
                availability: pct(r.availability),
                p99: ms(r.produce_p99_ms),
                first_violation: secs(r.first_violation_s),
                error: r.error.clone(),
                has_report: dir.is_some_and(|d| d.join(&r.rel).join("report.html").is_file()),
            })
            .collect(),
    }
}

/// One picture of the matrix: the cells sharing every setting but acks and min.insync (a
/// release, a flush policy, unclean election, idempotence), acks across, min.insync down.
#[derive(Serialize)]
struct Grid {
    title: String,
    acks: Vec<String>,
    rows: Vec<(u32, Vec<Option<usize>>)>,
}

fn grids(m: &Matrix) -> Vec<Grid> {
    let mut out: Vec<(CellConfig, Grid)> = Vec::new();
    for (i, c) in m.cells.iter().enumerate() {
        let mut key = c.config.clone();
        key.acks = String::new();
        key.min_isr = 0;
        let pos = match out.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let mut title = format!(
                    "Kafka {} rules · {}",
                    c.config.release,
                    flush_words(&c.config.flush)
                );
                if c.config.unclean {
                    title.push_str(" · unclean leader election on");
                }
                if c.config.idempotence {
                    title.push_str(" · idempotent producer");
                }
                title.push_str(&format!(
                    " · replication factor {}",
                    c.config.replication_factor
                ));
                out.push((
                    key,
                    Grid {
                        title,
                        acks: Vec::new(),
                        rows: Vec::new(),
                    },
                ));
                out.len() - 1
            }
        };
        let g = &mut out[pos].1;
        if !g.acks.contains(&c.config.acks) {
            g.acks.push(c.config.acks.clone());
            for (_, slots) in g.rows.iter_mut() {
                slots.push(None);
            }
        }
        let col = g.acks.iter().position(|a| *a == c.config.acks).unwrap_or(0);
        let width = g.acks.len();
        let row = match g.rows.iter().position(|(mi, _)| *mi == c.config.min_isr) {
            Some(r) => r,
            None => {
                g.rows.push((c.config.min_isr, vec![None; width]));
                g.rows.len() - 1
            }
        };
        g.rows[row].1[col] = Some(i);
    }
    let mut gs: Vec<Grid> = out.into_iter().map(|(_, g)| g).collect();
    for g in &mut gs {
        g.rows.sort_by_key(|(mi, _)| *mi);
    }
    gs
}

/// `matrix.html`; `dir` (the matrix folder) is used to link only reports that exist.
pub fn render_html(m: &Matrix, dir: Option<&Path>) -> Result<String, ReportError> {
    let cells: Vec<CellView> = m.cells.iter().map(|c| view(c, dir)).collect();
    let grids = grids(m);
    let verdicts: Vec<Verdict> = m.cells.iter().flat_map(|c| c.verdicts()).collect();
    let times: Vec<(String, usize, String)> = recipe_times(m)
        .into_iter()
        .map(|(r, ts)| (r, ts.len(), secs(median(&ts))))
        .collect();
    let mut env = Environment::new();
    let tmpl_err = |source| ReportError::Template {
        what: "matrix.html",
        source,
    };
    env.add_template("matrix.html", TEMPLATE)
        .map_err(tmpl_err)?;
    env.get_template("matrix.html")
        .map_err(tmpl_err)?
        .render(context! {
            title => m.title.clone(),
            setup => JValue::from(minijinja::value::Serde(&m.setup)),
            command_line => m.command_line.clone(),
            css => JValue::from_safe_string(crate::report::CSS.to_string()),
            grids => JValue::from(minijinja::value::Serde(&grids)),
            cells => JValue::from(minijinja::value::Serde(&cells)),
            times => times,
            exit_code => crate::verdict::exit_code(&verdicts),
            threshold => format!("{:.0}%", UNAVAILABLE_BELOW * 100.0),
        })
        .map_err(tmpl_err)
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `matrix.md`: the same figures as a Markdown table, each cell's plain-language line, the
/// median time to first violation per recipe, then the runs that could not run.
pub fn render_markdown(m: &Matrix) -> String {
    let mut s = format!("# {}\n\n", md_escape(&m.title));
    for (k, v) in &m.setup {
        s.push_str(&format!("- {}: {}\n", md_escape(k), md_escape(v)));
    }
    s.push_str(&format!("- command line: `{}`\n\n", m.command_line));
    s.push_str(
        "| setting | verdict | broken by | time to first violation | worst finding | lost \
         | sent never read | duplicated | availability | produce p99 | runs | Kafka promises \
         | surprise |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in &m.cells {
        let v = view(c, None);
        let runs: Vec<String> = c
            .runs
            .iter()
            .map(|r| {
                format!(
                    "[{} seed {}]({}/report.html)",
                    r.recipe.as_deref().unwrap_or(RANDOM),
                    r.seed,
                    r.rel
                )
            })
            .collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            md_escape(&v.label),
            v.behaviour,
            md_escape(&v.broken_by),
            v.first_violation,
            md_escape(&v.worst),
            v.lost,
            v.missing,
            v.duplicated,
            md_escape(&v.availability),
            v.p99,
            runs.join(" "),
            md_escape(&v.promise),
            v.surprise
                .as_deref()
                .map_or("-".into(), |x| format!("**{}**", md_escape(x)))
        ));
    }
    s.push_str(&format!(
        "\nVerdicts: *loses acknowledged writes* (lost-write or unseen after the final reads), \
         *loses sent records* (acks=0: records sent that no read returned), *reorders* (offsets \
         disagree or reads go back or skip), *duplicates*, *unavailable* (under {:.0}% of sends \
         acknowledged; at acks=0, most sends refused), *risk not shown* (the setting allows loss \
         but no run showed it: weak evidence, never safe), *safe*.\n\nIn plain words:\n\n",
        UNAVAILABLE_BELOW * 100.0
    ));
    for c in &m.cells {
        s.push_str(&format!("- {}\n", md_escape(&c.plain_line())));
    }
    let times = recipe_times(m);
    if !times.is_empty() {
        s.push_str(
            "\n| recipe | cells it broke first | median time to first violation |\n|---|---|---|\n",
        );
        for (r, ts) in &times {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                md_escape(r),
                ts.len(),
                secs(median(ts))
            ));
        }
    }
    for c in &m.cells {
        for r in &c.runs {
            if let Some(e) = &r.error {
                s.push_str(&format!(
                    "\n{} seed {} could not run: {}\n",
                    c.config.label(),
                    r.seed,
                    md_escape(e)
                ));
            }
        }
    }
    s
}

/// Writes `matrix.html`, `matrix.md` and `matrix.json` into `dir`.
pub fn write(dir: &Path, m: &Matrix) -> Result<(), ReportError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ReportError::Io { path: p, source }
    };
    let html = render_html(m, Some(dir))?;
    let json = serde_json::to_string_pretty(m).map_err(|e| ReportError::Json {
        path: dir.join("matrix.json"),
        message: e.to_string(),
    })?;
    for (name, text) in [
        ("matrix.html", html),
        ("matrix.md", render_markdown(m)),
        ("matrix.json", json),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    Ok(())
}

/// The JUnit cases of a matrix: one per cell, its worst verdict over its runs.
pub fn junit_cases(m: &Matrix) -> Vec<crate::junit::Case> {
    m.cells
        .iter()
        .map(|c| {
            let vs = c.verdicts();
            // A JUnit case fails on a finding before it errors on an unknown run.
            let verdict = [Verdict::Crashed, Verdict::Invalid, Verdict::Unknown]
                .into_iter()
                .find(|v| vs.contains(v))
                .unwrap_or(if vs.is_empty() {
                    Verdict::Unknown
                } else {
                    Verdict::Valid
                });
            let mut message = format!(
                "{}: {}; worst finding {}",
                c.config.label(),
                c.behaviour().words(),
                c.worst_finding()
                    .map_or_else(|| "none".into(), |(k, n)| format!("{k} ({n})"))
            );
            if let Some(s) = c.surprise() {
                message.push_str(&format!("; SURPRISE: {s}"));
            }
            for r in c.runs.iter().filter_map(|r| r.error.as_ref()) {
                message.push_str(&format!("; could not run: {r}"));
            }
            crate::junit::Case {
                name: c.config.label(),
                verdict,
                seconds: c.runs.iter().map(|r| r.seconds).sum(),
                message,
                report: c
                    .runs
                    .iter()
                    .map(|r| format!("{}/report.html", r.rel))
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(acks: &str, mi: u32) -> CellConfig {
        CellConfig {
            acks: acks.into(),
            min_isr: mi,
            unclean: false,
            idempotence: false,
            replication_factor: 3,
            flush: FLUSH_DEFAULT.into(),
            release: RELEASE_BEFORE_SETTING.into(),
            rules: None,
        }
    }

    fn run(anomalies: Value, sends: [u64; 3], valid: Value) -> RunSummary {
        let results = json!({
            "valid": valid,
            "anomalies": anomalies,
            "invalidating": ["lost-write", "unseen", "inconsistent-offsets", "G1a", "poll-skip", "nonmonotonic-poll"],
            "stats": {"sends": {"ok": sends[0], "fail": sends[1], "info": sends[2]}},
        });
        RunSummary::from_results(&results, "cell/run", 1, 10.0, Some(12.5))
    }

    #[test]
    fn last_replica_standing_is_a_risk_with_the_default_flush_only() {
        let mut c = cfg("all", 2);
        let p = promise(&c);
        assert!(!p.no_loss && p.text.contains("KIP-966"), "{}", p.text);
        c.flush = FLUSH_EVERY.into();
        assert!(promise(&c).no_loss);
        assert_eq!(c.slug(), "acks-all_mi-2_k3-6_fsync");
        c.min_isr = 1;
        assert!(
            !promise(&c).no_loss,
            "min.insync=1 lets the leader acknowledge alone"
        );
    }

    #[test]
    fn lost_commits_and_other_findings_are_never_safe() {
        let commit = run(
            json!({"lost-commit": {"count": 2}}),
            [100, 0, 0],
            json!(false),
        );
        let commit = RunSummary {
            invalidating: vec!["lost-commit".into()],
            ..commit
        };
        assert_eq!(behaviour(&commit), Behaviour::LosesCommits);
        assert!(behaviour(&commit).is_violation());
        let mut safe_setting = cfg("all", 2);
        safe_setting.flush = FLUSH_EVERY.into();
        let c = Cell {
            config: safe_setting,
            runs: vec![commit],
            recipes: vec!["zombie-commit".into()],
            budget_s: 60.0,
        };
        assert!(c.surprise().is_some_and(|s| s.contains("lost-commit")));
        let cycle = run(json!({"G1c": {"count": 1}}), [100, 0, 0], json!(false));
        let cycle = RunSummary {
            invalidating: vec!["G1c".into()],
            ..cycle
        };
        assert_eq!(behaviour(&cycle), Behaviour::OtherFinding);
        // A kind present but not invalidating (allowed for the run) stays out of it.
        let allowed = run(json!({"G1c": {"count": 1}}), [100, 0, 0], json!(true));
        let allowed = RunSummary {
            invalidating: vec![],
            ..allowed
        };
        assert_eq!(behaviour(&allowed), Behaviour::Safe);
    }

    #[test]
    fn releases_change_the_promise_where_the_reference_says() {
        // Last replica standing: lossy before Eligible Leader Replicas are on by default (4.1).
        for (release, no_loss) in [
            ("3.6", false),
            ("3.9", false),
            ("4.0", false),
            ("4.1", true),
        ] {
            let mut c = cfg("all", 2);
            c.release = release.into();
            let p = promise(&c);
            assert_eq!(p.no_loss, no_loss, "{release}: {}", p.text);
            assert!(p.text.contains(&format!("Kafka {release}")), "{}", p.text);
        }
        // ELR does not help min.insync=1: the leader acknowledges alone.
        let mut c = cfg("all", 1);
        c.release = "4.1".into();
        assert!(!promise(&c).no_loss);
        // min.insync above the replication factor: unwritable before 3.7, the replica count
        // from 3.7 (KAFKA-15583).
        let mut c = cfg("all", 4);
        c.release = "3.6".into();
        assert!(promise(&c).text.contains("no send can be acknowledged"));
        c.release = "3.7".into();
        let p = promise(&c);
        assert!(
            p.text.contains("effective minimum is the replica count") && !p.no_loss,
            "{}",
            p.text
        );
        c.release = "4.1".into();
        assert!(promise(&c).no_loss);
        assert_eq!(c.slug(), "acks-all_mi-4_k4-1");
        assert!(c.label().ends_with("(Kafka 4.1)"), "{}", c.label());
        assert_eq!(release_number("4.10"), (4, 10));
        assert!(legacy_rules("3.7").effective_min_isr && !legacy_rules("3.6").effective_min_isr);
        // The rules the broker listed win over the release number.
        c.rules = Some(ReleaseRules {
            effective_min_isr: true,
            elr_default: false,
        });
        assert!(!promise(&c).no_loss);
    }

    #[test]
    fn promises_follow_kafkas_documentation() {
        assert!(!promise(&cfg("0", 2)).no_loss);
        assert!(!promise(&cfg("1", 3)).no_loss);
        assert!(!promise(&cfg("all", 1)).no_loss);
        let mut fsync = cfg("all", 2);
        fsync.flush = FLUSH_EVERY.into();
        let p = promise(&fsync);
        assert!(
            p.no_loss && p.text.contains("survives 1 broker failure"),
            "{}",
            p.text
        );
        assert!(promise(&cfg("all", 3)).text.contains("unwritable"));
        let mut unclean = fsync.clone();
        unclean.unclean = true;
        assert!(!promise(&unclean).no_loss);
    }

    #[test]
    fn cells_classify_and_flag_surprises() {
        let lossy = run(
            json!({"lost-write": {"count": 3}, "duplicate": {"count": 1}}),
            [90, 5, 5],
            json!(false),
        );
        let clean = run(json!({}), [100, 0, 0], json!(true));
        let both = run(
            json!({"lost-write": {"count": 2}, "unseen": {"count": 5}}),
            [90, 5, 5],
            json!(false),
        );
        assert_eq!(both.lost, 5, "unseen includes the lost writes");
        let down = run(json!({}), [10, 80, 10], json!(true));
        let dup = run(json!({"duplicate": {"count": 2}}), [100, 0, 0], json!(true));
        assert_eq!(behaviour(&lossy), Behaviour::LosesAcknowledgedWrites);
        assert_eq!(behaviour(&clean), Behaviour::Safe);
        assert_eq!(behaviour(&down), Behaviour::Unavailable);
        assert_eq!(behaviour(&dup), Behaviour::Duplicates);
        let c = Cell {
            config: cfg("all", 2),
            runs: vec![clean.clone(), lossy.clone()],
            recipes: Vec::new(),
            budget_s: 0.0,
        };
        let mut c = c;
        c.config.flush = FLUSH_EVERY.into();
        assert_eq!(c.behaviour(), Behaviour::LosesAcknowledgedWrites);
        assert_eq!(c.worst_finding(), Some(("lost-write".into(), 3)));
        assert_eq!((c.lost(), c.duplicated()), (3, 1));
        assert!(c.surprise().is_some_and(|s| s.contains("lost 3")));
        let expected = Cell {
            config: cfg("1", 2),
            runs: vec![lossy],
            recipes: Vec::new(),
            budget_s: 0.0,
        };
        assert_eq!(
            expected.surprise(),
            None,
            "acks=1 promises nothing on failover"
        );
        let crashed = Cell {
            config: cfg("0", 1),
            runs: vec![RunSummary::crashed("x", 1, "no broker".into(), 0.0)],
            recipes: Vec::new(),
            budget_s: 0.0,
        };
        assert_eq!(crashed.behaviour(), Behaviour::CouldNotRun);
        let m = Matrix {
            title: "matrix".into(),
            setup: vec![("nemesis".into(), "kill".into())],
            command_line: "harness matrix".into(),
            cells: vec![c, expected, crashed],
        };
        let md = render_markdown(&m);
        assert_eq!(md.matches("\n| acks=").count(), 3, "{md}");
        assert!(md.contains("loses acknowledged writes") && md.contains("could not run"));
        let html = render_html(&m, None).expect("html");
        assert!(html.contains("acks=all min.insync.replicas=2"));
        let cases = junit_cases(&m);
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].verdict, Verdict::Invalid);
        assert_eq!(cases[2].verdict, Verdict::Crashed);
        let xml = crate::junit::render("matrix", &cases);
        assert!(xml.contains("SURPRISE"), "{xml}");
    }

    fn history(lines: &[Value]) -> checkers::History {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        std::fs::write(&path, text.join("\n") + "\n").expect("write");
        checkers::read_history(&path).expect("history")
    }

    #[test]
    fn acks_zero_cells_count_sent_records_never_read() {
        let h = history(&[
            json!({"index":0,"time_ns":1,"process":1,"type":"invoke","f":"send","value":[["send","k1",1]]}),
            json!({"index":1,"time_ns":2,"process":1,"type":"info","f":"send","value":[["send","k1",1]]}),
            json!({"index":2,"time_ns":3,"process":2,"type":"invoke","f":"send","value":[["send","k1",2]]}),
            json!({"index":3,"time_ns":4,"process":2,"type":"ok","f":"send","value":[["send","k1",[0,2]]]}),
            json!({"index":4,"time_ns":5,"process":2,"type":"invoke","f":"send","value":[["send","k2",1]]}),
            json!({"index":5,"time_ns":6,"process":"nemesis","type":"info","f":"kill","value":{}}),
            json!({"index":6,"time_ns":7,"process":1000000,"type":"invoke","f":"poll","value":[["poll"]]}),
            json!({"index":7,"time_ns":8,"process":1000000,"type":"ok","f":"poll","value":[["poll",{"k1":[[0,2]]}]]}),
        ]);
        let d = delivery(&h);
        assert_eq!((d.sent, d.missing, d.acked, d.acked_missing), (3, 2, 1, 0));
        let mut r = run(json!({}), [0, 0, 3], json!("unknown"));
        r.sent = 3;
        r.missing = 2;
        assert_eq!(run_behaviour(&r, "0"), Behaviour::LosesSentRecords);
        // The same figures at acks=1 say the broker acknowledged nothing: unavailable.
        assert_eq!(run_behaviour(&r, "1"), Behaviour::Unavailable);
        r.missing = 0;
        assert_eq!(run_behaviour(&r, "0"), Behaviour::Safe);
        let refused = run(json!({}), [0, 90, 10], json!("unknown"));
        assert_eq!(run_behaviour(&refused, "0"), Behaviour::Unavailable);
        let c = Cell {
            config: cfg("0", 1),
            runs: vec![r],
            recipes: vec!["leader-failover".into()],
            budget_s: 60.0,
        };
        assert_eq!(
            c.behaviour(),
            Behaviour::RiskNotShown,
            "acks=0 never promises"
        );
    }

    #[test]
    fn a_violation_is_timed_when_proven() {
        let h = history(&[
            json!({"index":0,"time_ns":1_000_000_000u64,"process":1,"type":"invoke","f":"send","value":[["send","k1",1]]}),
            json!({"index":1,"time_ns":2_000_000_000u64,"process":1,"type":"ok","f":"send","value":[["send","k1",[0,1]]]}),
            json!({"index":2,"time_ns":8_000_000_000u64,"process":2,"type":"invoke","f":"poll","value":[["poll"]]}),
            json!({"index":3,"time_ns":9_000_000_000u64,"process":2,"type":"ok","f":"poll","value":[["poll",{"k1":[[1,2]]}]]}),
            json!({"index":4,"time_ns":11_000_000_000u64,"process":1000000,"type":"invoke","f":"poll","value":[["poll"]]}),
            json!({"index":5,"time_ns":12_000_000_000u64,"process":1000000,"type":"ok","f":"poll","value":[["poll",{}]]}),
        ]);
        let inv = vec!["lost-write".to_string(), "unseen".to_string()];
        let lost = json!({"anomalies": {"lost-write": {"count": 1, "examples": [{"send_op": 1, "max_read_op": 3}]}}});
        assert_eq!(first_violation(&h, &lost, &inv), Some(9.0));
        let unseen = json!({"anomalies": {"unseen": {"count": 1, "examples": [{"send_op": 1}]}}});
        assert_eq!(
            first_violation(&h, &unseen, &inv),
            Some(12.0),
            "the final reads prove it"
        );
    }

    #[test]
    fn acknowledged_sends_gone_from_a_rewritten_log_are_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = [
            json!({"index":0,"time_ns":1,"process":1,"type":"invoke","f":"send","value":[["send","k1",1]]}),
            json!({"index":1,"time_ns":2,"process":1,"type":"ok","f":"send","value":[["send","k1",[0,1]]]}),
            json!({"index":2,"time_ns":3,"process":2,"type":"invoke","f":"poll","value":[["poll"]]}),
            json!({"index":3,"time_ns":4,"process":2,"type":"ok","f":"poll","value":[["poll",{"k1":[[0,1]]}]]}),
            json!({"index":4,"time_ns":5,"process":1000000,"type":"invoke","f":"poll","value":[["poll"]]}),
            json!({"index":5,"time_ns":6,"process":1000000,"type":"ok","f":"poll","value":[["poll",{}]]}),
        ];
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        std::fs::write(dir.path().join("history.jsonl"), text.join("\n") + "\n").expect("write");
        // The checker saw offset 0 hold two records but the final reads never reached it.
        let results = json!({"valid": false,
            "anomalies": {"inconsistent-offsets": {"count": 1, "examples": [
                {"acked_overwritten": false, "final": null, "ops": [1, 3]}]}},
            "invalidating": ["inconsistent-offsets"],
            "stats": {"sends": {"ok": 1, "fail": 0, "info": 0}}});
        std::fs::write(dir.path().join("results.json"), results.to_string()).expect("write");
        let r = RunSummary::from_run(dir.path(), "r", 1, 1.0).expect("summary");
        assert_eq!(r.lost, 1);
        assert_eq!(behaviour(&r), Behaviour::LosesAcknowledgedWrites);
    }

    #[test]
    fn an_acknowledged_write_overwritten_is_a_loss() {
        let r = run(
            json!({"inconsistent-offsets": {"count": 2, "examples": [
                {"acked_overwritten": true, "ops": [1, 2]},
                {"acked_overwritten": false, "ops": [3, 4]}]}}),
            [100, 0, 0],
            json!(false),
        );
        assert_eq!(r.lost, 1);
        assert_eq!(behaviour(&r), Behaviour::LosesAcknowledgedWrites);
    }

    #[test]
    fn cells_name_the_recipe_that_broke_them_and_when() {
        let mut clean = run(json!({}), [100, 0, 0], json!(true));
        clean.recipe = Some("isr-shrink-crash".into());
        clean.test_seconds = 20.0;
        let mut lossy = run(
            json!({"lost-write": {"count": 4}}),
            [90, 5, 5],
            json!(false),
        );
        lossy.recipe = Some("isr-shrink-crash".into());
        lossy.test_seconds = 20.0;
        lossy.first_violation_s = Some(7.5);
        let c = Cell {
            config: cfg("all", 1),
            runs: vec![clean.clone(), lossy],
            recipes: vec!["isr-shrink-crash".into()],
            budget_s: 60.0,
        };
        let (i, recipe, t) = c.first_violation().expect("violated");
        assert_eq!((i, recipe.as_str(), t), (1, "isr-shrink-crash", 27.5));
        assert!(
            c.plain_line().contains("4 acknowledged writes were lost"),
            "{}",
            c.plain_line()
        );
        // A clean run where loss is allowed is weak evidence, never "safe".
        let weak = Cell {
            config: cfg("all", 1),
            runs: vec![clean.clone()],
            recipes: vec!["isr-shrink-crash".into()],
            budget_s: 60.0,
        };
        assert_eq!(weak.behaviour(), Behaviour::RiskNotShown);
        assert!(weak.risk_not_shown() && weak.plain_line().contains("weak evidence"));
        let mut fsync = cfg("all", 2);
        fsync.flush = FLUSH_EVERY.into();
        let safe = Cell {
            config: fsync,
            runs: vec![clean],
            recipes: vec!["last-replica-standing".into()],
            budget_s: 60.0,
        };
        assert_eq!(safe.behaviour(), Behaviour::Safe);
        let m = Matrix {
            title: "m".into(),
            setup: vec![("release".into(), "Kafka 3.6 rules: one release".into())],
            command_line: "harness matrix".into(),
            cells: vec![c, weak, safe],
        };
        assert_eq!(
            recipe_times(&m),
            vec![("isr-shrink-crash".to_string(), vec![27.5])]
        );
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
        let html = render_html(&m, None).expect("html").replace("&#x2f;", "/");
        // The picture comes first: one grid, acks across, min.insync down, squares linking to
        // their evidence.
        let pic = html.find("class=\"pic\"").expect("a picture");
        assert!(pic < html.find("Evidence per cell").expect("evidence"));
        assert!(html.contains("Kafka 3.6 rules"));
        assert!(html.contains("href=\"#cell-acks-all_mi-1_k3-6\""));
        assert!(html.contains("class=\"sq notshown\"") || html.contains("sq loss"));
        let md = render_markdown(&m);
        assert!(md.contains("| isr-shrink-crash | 1 | 27.5 s |"), "{md}");
        assert!(md.contains("risk not shown"), "{md}");
    }
}
