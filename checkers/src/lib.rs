//! The history model (`history`: ops, JSON Lines writer and reader) and the checkers: `txns`
//! pairs and parses client ops, `queue` finds Jepsen's Kafka queue anomalies, `cycles` the
//! Elle-style dependency cycles (G0, G1c and variants) on petgraph, `commits` the consumer
//! group's committed offsets (`lost-commit`); `synth` generates seeded
//! synthetic histories with anomalies injected on demand (tests, benchmarks). Pure over a
//! history: nothing here knows brokers, nodes or networks.

pub mod analysis;
pub mod commits;
pub mod cycles;
pub mod fasthash;
pub mod fastparse;
pub mod findings;
pub mod history;
pub mod queue;
pub mod stats;
pub mod synth;
pub mod txns;

use std::path::Path;

pub use history::{read_history, History, HistoryError, HistoryWriter, Op, OpType, Process};
pub use queue::{check, CheckOptions, CheckResult, Finding, OptionsError, Rule, POLICY};

/// Reads a history file and checks it, streaming: each line's micro-ops are parsed straight
/// into the checker's compact form, so memory holds no JSON of the history.
pub fn check_file(path: &Path, options: &CheckOptions) -> Result<CheckResult, HistoryError> {
    check_file_full(path, options).map(|c| c.result)
}

/// A history checked in one pass ([`check_file_full`]): the verdict, and what the report needs
/// from the history without reading it again.
#[derive(Debug)]
pub struct Checked {
    /// The checker's result.
    pub result: CheckResult,
    /// The history as the check read it: its client ops (compact) and nemesis ops.
    pub summary: HistorySummary,
}

/// What one pass over a history keeps besides the verdict: every client op in the checker's
/// compact form ([`txns::Txns`]), the nemesis ops whole, and the span of times. The report's
/// statistics ([`stats::of_summary`]) and the ops it shows ([`HistorySummary::ok_ops_of_keys`],
/// [`history::read_ops`]) come from it.
#[derive(Debug, Default)]
pub struct HistorySummary {
    /// Client ops.
    pub txns: txns::Txns,
    /// Nemesis ops, in order.
    pub nemesis: Vec<Op>,
    /// Lines read (ops).
    pub ops: u64,
    /// Earliest and latest op time, ns (`None` for an empty history).
    pub span_ns: Option<(u64, u64)>,
    /// When the final reads began (the first op of [`history::FINAL_PROCESS`]).
    pub final_start_ns: Option<u64>,
    /// Reader warnings.
    pub warnings: Vec<String>,
    /// Every line's index was above the previous line's (as the harness writes histories):
    /// [`history::read_ops`] may stop at the last index it wants.
    pub indices_increasing: bool,
}

impl HistorySummary {
    /// The invocation indices of the completions at these history indices (one pass over the
    /// ops; completions not found, and ops that are not completions, give none).
    pub fn invokes_of(&self, completions: &std::collections::BTreeSet<u64>) -> Vec<u64> {
        if completions.is_empty() {
            return Vec::new();
        }
        let t = &self.txns;
        (0..t.txns.len())
            .filter(|at| {
                let tx = &t.txns[*at];
                tx.complete_ns().is_some() && completions.contains(&tx.index)
            })
            .filter_map(|at| t.invoke_index(at))
            .collect()
    }

    /// The history indices a report shows ([`history::read_ops`] reads them): every nemesis op
    /// with `limits.context` ops on each side of the first `limits.nemesis_context`, the ops
    /// within `limits.context` of each `linked` index with the invocations of linked
    /// completions, and the first `limits.key_ops` ok ops touching one of `keys` with their
    /// invocations.
    pub fn excerpt_indices(
        &self,
        linked: &std::collections::BTreeSet<u64>,
        keys: &std::collections::BTreeSet<String>,
        limits: ExcerptLimits,
    ) -> std::collections::BTreeSet<u64> {
        let around = |i: u64| i.saturating_sub(limits.context)..=i.saturating_add(limits.context);
        let mut wanted = std::collections::BTreeSet::new();
        for (n, op) in self.nemesis.iter().enumerate() {
            if n < limits.nemesis_context {
                wanted.extend(around(op.index));
            } else {
                wanted.insert(op.index);
            }
        }
        for &i in linked {
            wanted.extend(around(i));
        }
        wanted.extend(self.invokes_of(linked));
        for (done, invoke) in self.ok_ops_of_keys(keys, limits.key_ops) {
            wanted.insert(done);
            wanted.extend(invoke);
        }
        wanted
    }

    /// The first `limit` ok client ops that send or read one of `keys` (or name one in an
    /// `assign`), as (completion index, invocation index), in history order.
    pub fn ok_ops_of_keys(
        &self,
        keys: &std::collections::BTreeSet<String>,
        limit: usize,
    ) -> Vec<(u64, Option<u64>)> {
        let t = &self.txns;
        let mut named = vec![false; t.keys.len()];
        for (k, name) in t.keys.iter().enumerate() {
            named[k] = keys.contains(name);
        }
        if !named.contains(&true) {
            return Vec::new();
        }
        let is_named = |k: u32| named.get(k as usize).copied().unwrap_or(false);
        let mut out = Vec::new();
        for (at, tx) in t.txns.iter().enumerate() {
            if out.len() >= limit {
                break;
            }
            if tx.status != txns::Status::Ok || tx.complete_ns().is_none() {
                continue;
            }
            let touches = t
                .sends(tx)
                .iter()
                .any(|s| is_named(t.rec_key[s.rec as usize]))
                || t.reads(tx).iter().any(|r| is_named(t.key_of(r)))
                || t.targets(tx)
                    .iter()
                    .any(|g| matches!(g, txns::Target::Key(k) if is_named(*k)));
            if touches {
                out.push((tx.index, t.invoke_index(at)));
            }
        }
        out
    }
}

/// How much of a history a report's excerpt takes ([`HistorySummary::excerpt_indices`]).
#[derive(Debug, Clone, Copy)]
pub struct ExcerptLimits {
    /// Ops kept on each side of a linked op or a nemesis op.
    pub context: u64,
    /// Nemesis ops that get their context kept (every nemesis op is kept).
    pub nemesis_context: usize,
    /// Ok ops kept for the keys the findings name.
    pub key_ops: usize,
}

/// Reads a history file and checks it in one streaming pass, keeping what the report needs
/// ([`Checked`]); see [`check_file`].
pub fn check_file_full(path: &Path, options: &CheckOptions) -> Result<Checked, HistoryError> {
    let mut timer = PhaseTimer::from_env();
    let mut b = txns::Builder::new();
    let mut commits = commits::Commits::new();
    let mut s = HistorySummary {
        indices_increasing: true,
        ..HistorySummary::default()
    };
    let mut prev_index = None::<u64>;
    let nemesis = Process::nemesis();
    let final_process = Process::Client(history::FINAL_PROCESS);
    let warnings = history::scan_with(path, true, |raw, parsed| {
        s.ops += 1;
        s.indices_increasing &= prev_index.is_none_or(|p| p < raw.index);
        prev_index = Some(raw.index);
        s.span_ns = Some(match s.span_ns {
            None => (raw.time_ns, raw.time_ns),
            Some((lo, hi)) => (lo.min(raw.time_ns), hi.max(raw.time_ns)),
        });
        if raw.process == nemesis {
            s.nemesis.push(raw.into_op()?);
            return Ok(());
        }
        if s.final_start_ns.is_none() && raw.process == final_process {
            s.final_start_ns = Some(raw.time_ns);
        }
        commits.op_raw(
            raw.index,
            &raw.process,
            raw.op_type,
            &raw.f,
            raw.value.map(|v| v.get()),
        );
        if raw.op_type == OpType::Invoke {
            b.invoke(raw.index, raw.time_ns, &raw.process, &raw.f);
        } else {
            b.complete(
                raw.index,
                raw.time_ns,
                &raw.process,
                raw.op_type,
                &raw.f,
                raw.value.is_none(),
            );
        }
        match (parsed, raw.value) {
            (Some(p), _) => p.replay(&mut b),
            (None, Some(v)) => txns::feed_raw(&mut b, v.get())
                .map_err(|e| format!("bad micro-ops in `value`: {e}"))?,
            (None, None) => {}
        }
        b.end();
        Ok(())
    })?;
    s.txns = b.finish();
    timer.phase("read and parse");
    let result = queue::check_txns(&s.txns, &commits, s.ops as usize, &warnings, options);
    s.warnings = warnings;
    Ok(Checked { result, summary: s })
}

/// Prints each phase's duration, the process's CPU time in it (two threads in some phases) and
/// the resident memory after it to stderr when `CHECKERS_TIMING` is set (profiling).
pub(crate) struct PhaseTimer(Option<(std::time::Instant, f64)>);

/// CPU seconds the process used so far (user + system; Linux, else 0).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name (which ends with ')'): utime and stime are the 12th and 13th
    // fields, in clock ticks (100 a second).
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

impl PhaseTimer {
    /// Timing only if `CHECKERS_TIMING` is set.
    pub(crate) fn from_env() -> PhaseTimer {
        PhaseTimer(
            std::env::var_os("CHECKERS_TIMING").map(|_| (std::time::Instant::now(), cpu_seconds())),
        )
    }

    /// Ends a phase: prints its duration, CPU time and the resident memory, and starts the
    /// next.
    pub(crate) fn phase(&mut self, name: &str) {
        if let Some((t, cpu)) = &mut self.0 {
            let rss = std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map_or_else(String::new, |kb| format!(", {} MB resident", kb / 1024));
            let now = cpu_seconds();
            eprintln!(
                "checkers: {name}: {:.2} s, CPU {:.2} s{rss}",
                t.elapsed().as_secs_f64(),
                now - *cpu
            );
            *t = std::time::Instant::now();
            *cpu = now;
        }
    }
}
