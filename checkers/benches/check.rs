//! Check time and peak memory for valid synthetic histories of 100k, 1M and 10M client
//! operations (two history lines each): the history is generated to a JSON Lines file first,
//! then checked by `check_file`, streaming, as `harness check` does. Sizes can be chosen with
//! `CHECK_BENCH_SIZES=100000,1000000`. Prints one line per size.

use std::io::{BufWriter, Write};
use std::time::Instant;

use checkers::synth::{generate_into, SynthConfig};
use checkers::{check_file, CheckOptions};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn reset_peak() {
    // Writing 5 to clear_refs resets the peak resident set size (Linux).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::var("CHECK_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir()?;
    println!("ops        lines      file MB  check s  peak MB  valid");
    let mut previous: Option<(usize, f64)> = None;
    for n in sizes {
        let path = dir.path().join(format!("history-{n}.jsonl"));
        let cfg = SynthConfig {
            seed: 1,
            ops: n,
            processes: 16,
            active_keys: 32,
            max_writes_per_key: 1024,
            txn_share: 0.0,
            info_share: 0.01,
            fail_share: 0.01,
            final_reads: true,
        };
        {
            let mut w = BufWriter::new(std::fs::File::create(&path)?);
            let mut err = None;
            generate_into(&cfg, &[], &mut |op| {
                if err.is_none() {
                    if let Err(e) = serde_json::to_writer(&mut w, &op) {
                        err = Some(e.to_string());
                    } else if let Err(e) = w.write_all(b"\n") {
                        err = Some(e.to_string());
                    }
                }
            });
            if let Some(e) = err {
                return Err(e.into());
            }
            w.flush()?;
        }
        let size_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
        reset_peak();
        let t0 = Instant::now();
        let result = check_file(
            &path,
            &CheckOptions {
                idempotent: true,
                ..CheckOptions::default()
            },
        )?;
        let total = t0.elapsed().as_secs_f64();
        let lines = result.stats["ops"].as_u64().unwrap_or(0);
        println!(
            "{n:<10} {lines:<10} {size_mb:<8.0} {total:<8.2} {:<8.0} {}",
            peak_rss_mb(),
            result.valid
        );
        if let Some((pn, pt)) = previous {
            let ratio = total / pt;
            let n_ratio = n as f64 / pn as f64;
            let nlogn = n_ratio * (n as f64).ln() / (pn as f64).ln();
            println!(
                "  growth from {pn}: time x{ratio:.1} for ops x{n_ratio:.0} (n log n would be x{nlogn:.1})"
            );
        }
        previous = Some((n, total));
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
