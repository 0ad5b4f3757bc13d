//! Check time and peak memory on valid histories shaped like real runs: keys `k<i>` in 64
//! partitions (`i % 64`, recorded as the workload records them), 64 workers whose ops overlap,
//! crashes that end a process (24k processes over a run), assign-mode consumers reading a few
//! partitions each, and final reads of one poll per partition holding all its records. A fresh
//! consumer starts 100 records before each partition's end (caught up, as steady-state
//! consumers are); `CHECK_BENCH_REREAD=1` makes it read from the start instead, as the
//! workload's fresh consumers do (every crash re-reads its partitions: far more reads). Each
//! history is written to a JSON Lines file first, then checked by `check_file`, streaming, as
//! `harness check` does. Sizes (client ops, two lines each) can be chosen with
//! `CHECK_BENCH_SIZES=1000000,10000000`. Prints one line per size.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use checkers::history::FINAL_PROCESS;
use checkers::{check_file, CheckOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PARTITIONS: usize = 64;
const WORKERS: usize = 64;
const PROCESSES: usize = 24_000;
const ACTIVE_KEYS: usize = 256;
const WRITES_PER_KEY: u64 = 512;

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

/// A worker's op in flight: its completion line, written when the worker is next picked.
struct Worker {
    process: u64,
    pending: Option<(&'static str, &'static str, String)>,
    assigned: Vec<usize>,
    positions: Vec<usize>,
}

/// Writes one real-run-shaped valid history of `ops` client operations; returns its lines.
fn write_history(path: &Path, ops: usize, seed: u64, reread: bool) -> std::io::Result<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut logs: Vec<Vec<(u32, u64)>> = vec![Vec::new(); PARTITIONS];
    let mut keys: Vec<(u32, u64)> = (0..ACTIVE_KEYS as u32).map(|k| (k, 0)).collect();
    let mut next_key = ACTIVE_KEYS as u32;
    let mut next_process = WORKERS as u64;
    let crash_p = (PROCESSES - WORKERS) as f64 / ops as f64;
    let assign = |rng: &mut ChaCha8Rng| -> Vec<usize> {
        let first = rng.random_range(0..PARTITIONS);
        (0..8).map(|i| (first + i * 8) % PARTITIONS).collect()
    };
    let mut workers: Vec<Worker> = (0..WORKERS as u64)
        .map(|p| Worker {
            process: p,
            pending: None,
            assigned: assign(&mut rng),
            positions: vec![0; PARTITIONS],
        })
        .collect();
    let (mut index, mut time) = (0u64, 0u64);
    let mut line = |w: &mut BufWriter<std::fs::File>,
                    process: u64,
                    t: &str,
                    f: &str,
                    value: &str|
     -> std::io::Result<()> {
        time += rng_step(index);
        writeln!(
            w,
            r#"{{"index":{index},"time_ns":{time},"process":{process},"type":"{t}","f":"{f}","value":{value}}}"#
        )?;
        index += 1;
        Ok(())
    };
    let mut invoked = 0;
    while invoked < ops {
        let i = rng.random_range(0..WORKERS);
        if let Some((t, f, value)) = workers[i].pending.take() {
            line(&mut w, workers[i].process, t, f, &value)?;
            if t == "info" {
                // A crashed worker continues as a new process with a fresh consumer.
                workers[i].process = next_process;
                next_process += 1;
                workers[i].assigned = assign(&mut rng);
                workers[i].positions = logs
                    .iter()
                    .map(|l| {
                        if reread {
                            0
                        } else {
                            l.len().saturating_sub(100)
                        }
                    })
                    .collect();
            }
            continue;
        }
        invoked += 1;
        let p = workers[i].process;
        if rng.random_bool(crash_p.min(1.0)) {
            line(&mut w, p, "invoke", "crash", "null")?;
            workers[i].pending = Some(("info", "crash", "null".into()));
        } else if rng.random_bool(0.5) {
            let slot = rng.random_range(0..keys.len());
            let (k, v) = keys[slot];
            let part = k as usize % PARTITIONS;
            logs[part].push((k, v));
            let offset = logs[part].len() - 1;
            keys[slot].1 += 1;
            if keys[slot].1 >= WRITES_PER_KEY {
                keys[slot] = (next_key, 0);
                next_key += 1;
            }
            line(
                &mut w,
                p,
                "invoke",
                "send",
                &format!(r#"[["send","k{k}",{v},{part}]]"#),
            )?;
            let done = format!(r#"[["send","k{k}",[{offset},{v}],{part}]]"#);
            workers[i].pending = Some(("ok", "send", done));
        } else {
            line(&mut w, p, "invoke", "poll", r#"[["poll"]]"#)?;
            let worker = &mut workers[i];
            let mut by_key: std::collections::BTreeMap<u32, (usize, Vec<(usize, u64)>)> =
                Default::default();
            for &part in worker.assigned.iter().take(rng.random_range(1..=4)) {
                let pos = worker.positions[part];
                let end = logs[part].len().min(pos + 20);
                for (o, (k, v)) in logs[part][pos..end].iter().enumerate() {
                    by_key
                        .entry(*k)
                        .or_insert((part, Vec::new()))
                        .1
                        .push((pos + o, *v));
                }
                worker.positions[part] = end;
            }
            let reads: Vec<String> = by_key
                .iter()
                .map(|(k, (_, rs))| {
                    let pairs: Vec<String> = rs.iter().map(|(o, v)| format!("[{o},{v}]")).collect();
                    format!(r#""k{k}":[{}]"#, pairs.join(","))
                })
                .collect();
            let parts: Vec<String> = by_key
                .iter()
                .map(|(k, (part, _))| format!(r#""k{k}":{part}"#))
                .collect();
            let done = format!(
                r#"[["poll",{{{}}},{{{}}}]]"#,
                reads.join(","),
                parts.join(",")
            );
            worker.pending = Some(("ok", "poll", done));
        }
    }
    for worker in &mut workers {
        if let Some((t, f, value)) = worker.pending.take() {
            line(&mut w, worker.process, t, f, &value)?;
        }
    }
    // Final reads: one poll per partition holding all its records.
    for (part, log) in logs.iter().enumerate() {
        line(&mut w, FINAL_PROCESS, "invoke", "poll", r#"[["poll"]]"#)?;
        let mut by_key: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        for (o, (k, v)) in log.iter().enumerate() {
            by_key.entry(*k).or_default().push(format!("[{o},{v}]"));
        }
        let reads: Vec<String> = by_key
            .iter()
            .map(|(k, rs)| format!(r#""k{k}":[{}]"#, rs.join(",")))
            .collect();
        let parts: Vec<String> = by_key.keys().map(|k| format!(r#""k{k}":{part}"#)).collect();
        let done = format!(
            r#"[["poll",{{{}}},{{{}}}]]"#,
            reads.join(","),
            parts.join(",")
        );
        line(&mut w, FINAL_PROCESS, "ok", "poll", &done)?;
    }
    w.flush()?;
    Ok(index)
}

/// A deterministic time step (ns) between lines.
fn rng_step(index: u64) -> u64 {
    50_000 + (index.wrapping_mul(2_654_435_761) % 100_000)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::var("CHECK_BENCH_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir()?;
    println!("ops        lines      file MB  write s  check s  cpu s    peak MB  valid");
    for n in sizes {
        let path = dir.path().join(format!("history-{n}.jsonl"));
        let t0 = Instant::now();
        let reread = std::env::var_os("CHECK_BENCH_REREAD").is_some();
        let lines = write_history(&path, n, 1, reread)?;
        let write_s = t0.elapsed().as_secs_f64();
        let size_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        reset_peak();
        let (t0, c0) = (Instant::now(), cpu_s());
        let result = check_file(&path, &CheckOptions::default())?;
        let (check_s, cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
        println!(
            "{n:<10} {lines:<10} {size_mb:<8.0} {write_s:<8.1} {check_s:<8.2} {cpu:<8.2} {:<8.0} {}",
            peak_rss_mb(),
            result.valid
        );
        if result.valid != serde_json::json!(true) {
            let kinds: Vec<(&String, usize)> =
                result.anomalies.iter().map(|(k, f)| (k, f.count)).collect();
            println!("  findings on a valid history: {kinds:?}");
        }
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
