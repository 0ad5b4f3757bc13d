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
    let mut timer = PhaseTimer::from_env();
    let mut b = txns::Builder::new();
    let mut commits = commits::Commits::new();
    let mut lines = 0usize;
    let nemesis = Process::nemesis();
    let warnings = history::scan(path, |raw| {
        lines += 1;
        if raw.process == nemesis {
            return Ok(());
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
        if let Some(v) = raw.value {
            txns::feed_raw(&mut b, v.get())
                .map_err(|e| format!("bad micro-ops in `value`: {e}"))?;
        }
        b.end();
        Ok(())
    })?;
    let t = b.finish();
    timer.phase("read and parse");
    Ok(queue::check_txns(&t, &commits, lines, &warnings, options))
}

/// Prints each phase's duration to stderr when `CHECKERS_TIMING` is set (profiling).
pub(crate) struct PhaseTimer(Option<std::time::Instant>);

impl PhaseTimer {
    /// Timing only if `CHECKERS_TIMING` is set.
    pub(crate) fn from_env() -> PhaseTimer {
        PhaseTimer(std::env::var_os("CHECKERS_TIMING").map(|_| std::time::Instant::now()))
    }

    /// Ends a phase: prints its duration and the resident memory, and starts the next.
    pub(crate) fn phase(&mut self, name: &str) {
        if let Some(t) = &mut self.0 {
            let rss = std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map_or_else(String::new, |kb| format!(", {} MB resident", kb / 1024));
            eprintln!("checkers: {name}: {:.2} s{rss}", t.elapsed().as_secs_f64());
            *t = std::time::Instant::now();
        }
    }
}
