//! The simulator's speed: simulated seconds per wall second of `harness sim` for a 5-broker
//! cluster under every fault kind, 60 simulated seconds of main phase per seed (70 with the
//! settle and final reads), and how many such seeds one core covers in an 8-hour night with
//! each seed's check and report, as a sweep runs them.
//!
//! It runs a sweep (`harness sim --seeds N`, each seed in its own process) into a temporary
//! store and prints the sweep's verdicts and speed line, with the load average before and
//! after: the figures are wall time on a shared machine, so pin it to one core,
//! `taskset -c 1 cargo bench -p harness --bench sim`, and note the load.
//!
//! Environment: `BENCH_SIM_SEEDS` (default 10: seeds 1..=N), `BENCH_SIM_NODES` (default 5),
//! `BENCH_SIM_TIME_LIMIT` (default 60), `BENCH_SIM_NEMESIS` (default
//! `partition,kill,pause,clock,disk`), `BENCH_SIM_ARGS` (more flags, space-separated).

use std::process::Command;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let seeds = env_or("BENCH_SIM_SEEDS", "10");
    let nodes = env_or("BENCH_SIM_NODES", "5");
    let limit = env_or("BENCH_SIM_TIME_LIMIT", "60");
    let nemesis = env_or("BENCH_SIM_NEMESIS", "partition,kill,pause,clock,disk");
    let extra = env_or("BENCH_SIM_ARGS", "");
    let store = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench sim: no temporary folder: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "bench sim: {seeds} seeds, {nodes} brokers, {limit} simulated s of faults ({nemesis}) \
         each; load average before: {}",
        load_average()
    );
    let status = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["sim", "--seed", "1", "--seeds", &seeds])
        .args(["--nodes", &nodes, "--time-limit", &limit])
        .args(["--nemesis", &nemesis])
        .args(extra.split_whitespace())
        .arg("--store")
        .arg(store.path())
        .status();
    println!("bench sim: load average after: {}", load_average());
    match status {
        // The sweep exits 1 or 2 when a seed is invalid or unknown; the figures still stand.
        Ok(s) if matches!(s.code(), Some(0..=2)) => {}
        Ok(s) => {
            eprintln!("bench sim: the sweep failed: {s}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("bench sim: running harness sim: {e}");
            std::process::exit(1);
        }
    }
}
