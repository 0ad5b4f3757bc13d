//! The workload's figures: what the history writer costs per op, and how many operations one
//! workload process (the harness, all its workers) sustains against a real 3-broker cluster.
//!
//! Part 1 writes invoke/completion pairs of typical `send` ops through [`HistoryWriter`] into a
//! temporary file (one flushed line each, as in a run), from one thread and then from
//! `WRITER_THREADS` threads sharing it, and prints nanoseconds per history line.
//!
//! Part 2 runs `harness test` in-process (no faults, rate unlimited) for each concurrency in
//! `BENCH_CONCURRENCY` (default `1,4,16`) for `BENCH_SECS` seconds (default 15) on the default
//! backend (netns as root, local otherwise; `BENCH_BACKEND` overrides), then reads the stored
//! history and prints completed client ops per second of the main phase, split by outcome.
//!
//! Run: `cargo build --release -p broker && cargo bench -p harness --bench workload`
//! (the broker binary is found beside the bench's `deps/` folder).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use checkers::history::{scan, FINAL_PROCESS};
use checkers::{HistoryWriter, OpType, Process};
use harness::spec::{Backend, TestSpec};
use serde_json::json;

/// Lines each writer measurement appends (half invokes, half completions).
const WRITER_LINES: u64 = 400_000;
/// Threads sharing one writer in the contended measurement.
const WRITER_THREADS: u64 = 4;

/// Appends `lines` lines from `threads` threads through one writer; returns ns per line.
fn writer_ns_per_line(dir: &Path, threads: u64, lines: u64) -> Result<f64, std::io::Error> {
    let path = dir.join(format!("writer-{threads}.jsonl"));
    let writer = Arc::new(HistoryWriter::create(&path)?);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || -> Result<(), std::io::Error> {
                for i in 0..lines / threads / 2 {
                    let key = format!("k{}", i % 64);
                    writer.invoke(t, "send", json!([["send", key, i]]))?;
                    writer.complete(t, OpType::Ok, "send", json!([["send", key, [i * 3, i]]]))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| std::io::Error::other("writer thread panicked"))??;
    }
    let ns = started.elapsed().as_nanos() as f64 / lines as f64;
    std::fs::remove_file(&path)?;
    Ok(ns)
}

/// Completed ops counted by `f` and outcome.
type Counts = BTreeMap<(String, String), u64>;

/// Main-phase client completions of a stored history: counts by `f` and outcome, and the span
/// from the first client invoke to the last main-phase completion, in seconds.
fn main_phase(history: &Path) -> Result<(Counts, f64), String> {
    let mut counts = Counts::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    scan(history, |op| {
        let Process::Client(p) = op.process else {
            return Ok(());
        };
        if p == FINAL_PROCESS {
            return Ok(());
        }
        first = first.min(op.time_ns);
        if op.op_type != OpType::Invoke {
            last = last.max(op.time_ns);
            let outcome = format!("{:?}", op.op_type).to_lowercase();
            *counts.entry((op.f.to_string(), outcome)).or_default() += 1;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let span = last.saturating_sub(first) as f64 / 1e9;
    Ok((counts, span))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    println!("history writer ({WRITER_LINES} lines of send ops, one flushed line each):");
    for threads in [1, WRITER_THREADS] {
        let ns = writer_ns_per_line(tmp.path(), threads, WRITER_LINES)?;
        println!(
            "  {threads} thread(s): {ns:.0} ns per line, {:.0}k lines/s",
            1e6 / ns
        );
    }

    let secs: u64 = env_or("BENCH_SECS", 15);
    let concurrencies: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let backend = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("local") => Backend::Local,
        Ok("netns") => Backend::Netns,
        _ => harness::spec::default_backend(),
    };
    println!(
        "workload (one harness process, 3 brokers on {backend:?} nodes, RF 3, 4 partitions, \
         acks=all, no faults, rate unlimited, {secs} s):"
    );
    for concurrency in concurrencies {
        let spec = TestSpec {
            name: format!("bench-c{concurrency}"),
            nodes: 3,
            backend,
            rate: 1e6,
            concurrency,
            time_limit: secs,
            final_time_limit: 60,
            seed: 1,
            store: tmp.path().join("store"),
            ..TestSpec::default()
        };
        let code = harness::run::run_test(&spec, &["bench".into()])?;
        let history = tmp
            .path()
            .join("store")
            .join(&spec.name)
            .join("latest")
            .join("history.jsonl");
        let (counts, span) = main_phase(&history)?;
        let total: u64 = counts.values().sum();
        let by: Vec<String> = counts
            .iter()
            .map(|((f, t), n)| format!("{f} {t} {:.0}/s", *n as f64 / span))
            .collect();
        println!(
            "  concurrency {concurrency:>2}: {:.0} ops/s ({total} ops in {span:.1} s; {}); exit {code}",
            total as f64 / span,
            by.join(", ")
        );
    }
    Ok(())
}
