//! Check and report time and peak memory on valid histories shaped like real runs
//! ([`checkers::synth::write_real_run`]): keys `k<i>` in 64 partitions (`i % 64`, recorded as
//! the workload records them), 64 workers whose ops overlap, crashes that end a process (24k
//! processes over a run), assign-mode consumers reading a few partitions each, and final reads
//! of one poll per partition holding all its records. A fresh consumer starts 100 records
//! before each partition's end (caught up, as steady-state consumers are);
//! `CHECK_BENCH_REREAD=1` makes it read from the start instead, as the workload's fresh
//! consumers do (every crash re-reads its partitions: far more reads). Each history is written
//! to a JSON Lines file first, then checked by `check_file_full`, streaming, as `harness check`
//! does; then the report's part (`results::report::Run::from_checked`): its statistics from the
//! check's pass (`stats::of_summary`) and its excerpt (`read_ops`, made to read the whole file
//! by naming the last op). Peak memory (VmHWM) is reset before each phase and printed per
//! phase. Sizes (client ops, two
//! lines each) can be chosen with `CHECK_BENCH_SIZES=1000000,10000000`; `CHECK_BENCH_KEEP=dir`
//! keeps the histories in `dir` and reuses them on the next run. Prints one line per
//! size.

use std::time::Instant;

use std::collections::BTreeSet;

use checkers::history::read_ops;
use checkers::synth::{write_real_run, RealRunConfig};
use checkers::{check_file_full, stats, CheckOptions, ExcerptLimits};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds this process used (user + system): the machine is shared, so wall time alone
/// says little.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'), from the state: utime is the 12th,
    // stime the 13th (in clock ticks, 100 a second).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    match (field(11), field(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn reset_peak() {
    // Writing 5 to clear_refs resets the peak resident set size (Linux).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::var("CHECK_BENCH_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir()?;
    println!(
        "ops        lines      file MB  write s  check s  cpu s    peak MB  report s cpu s    peak MB  total s  valid"
    );
    for n in sizes {
        let path = dir.path().join(format!("history-{n}.jsonl"));
        let t0 = Instant::now();
        let reread = std::env::var_os("CHECK_BENCH_REREAD").is_some();
        let cfg = RealRunConfig {
            ops: n,
            reread,
            ..RealRunConfig::default()
        };
        // CHECK_BENCH_KEEP=dir keeps each history there and reuses one already written
        // (profiling the check alone).
        let kept = std::env::var_os("CHECK_BENCH_KEEP").map(|d| {
            std::path::PathBuf::from(d).join(format!("history-{n}-{}.jsonl", u8::from(reread)))
        });
        let path = kept.clone().unwrap_or(path);
        let lines = match std::fs::metadata(&path) {
            Ok(_) if kept.is_some() => {
                std::fs::read(&path)?.split(|b| *b == b'\n').count() as u64 - 1
            }
            _ => write_real_run(&path, &cfg)?,
        };
        let write_s = t0.elapsed().as_secs_f64();
        let size_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        reset_peak();
        let (t0, c0) = (Instant::now(), cpu_s());
        let checked = check_file_full(&path, &CheckOptions::default())?;
        let (check_s, cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
        let check_peak = peak_rss_mb();
        // The report's part (what `results::report::Run::from_checked` does before rendering
        // its bounded plots): the statistics from the check's pass, then the excerpt's lines.
        // The ops a finding names, plus the history's last op, so the excerpt reads the whole
        // file (the worst case).
        let anomalies = checked.result.anomalies.len();
        let valid = checked.result.valid.clone();
        let mut linked: BTreeSet<u64> = checked
            .result
            .anomalies
            .values()
            .flat_map(|f| f.examples.iter().flat_map(checkers::queue::example_ops))
            .collect();
        linked.insert(lines.saturating_sub(1));
        reset_peak();
        let (t1, c1) = (Instant::now(), cpu_s());
        let s = stats::of_summary(&checked.summary, &linked);
        let limits = ExcerptLimits {
            context: 3,
            nemesis_context: 400,
            key_ops: 50_000,
        };
        let wanted = checked
            .summary
            .excerpt_indices(&linked, &BTreeSet::new(), limits);
        let excerpt = read_ops(&path, &wanted, checked.summary.indices_increasing)?;
        let (stats_s, stats_cpu) = (t1.elapsed().as_secs_f64(), cpu_s() - c1);
        let stats_peak = peak_rss_mb();
        drop(checked);
        println!(
            "{n:<10} {lines:<10} {size_mb:<8.0} {write_s:<8.1} {check_s:<8.2} {cpu:<8.2} {check_peak:<8.0} {stats_s:<8.2} {stats_cpu:<8.2} {stats_peak:<8.0} {:<8.2} {valid}",
            check_s + stats_s,
        );
        assert!(s.completed as usize >= n, "every op completed");
        assert!(!excerpt.is_empty(), "the excerpt has the last op");
        if valid != serde_json::json!(true) {
            println!("  {anomalies} anomaly kinds found on a valid history");
        }
        if kept.is_none() {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
