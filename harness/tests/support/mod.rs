//! Shared by the harness's end-to-end tests: running the `harness` binary with a store, and
//! finding the run folder a test wrote there.
#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `harness <args> --store <store>` to completion.
pub fn harness(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("the harness binary runs")
}

/// The folder of test `name`'s latest run in `store`.
pub fn latest_run(store: &Path, name: &str) -> PathBuf {
    results::store::resolve_latest(&store.join(name).join("latest")).expect("latest link")
}

/// Standard output and error, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Checks that each cell of `m` is the expected one (slug) and lost acknowledged writes,
/// first broken by the expected recipe, with every run able to run and no surprise (the
/// setting allows the loss); `log` is shown on failure.
pub fn assert_cells_lose_to(m: &results::matrix::Matrix, expected: &[(&str, &str)], log: &str) {
    assert_eq!(m.cells.len(), expected.len(), "{log}");
    for (cell, (slug, recipe)) in m.cells.iter().zip(expected) {
        let label = cell.config.label();
        assert_eq!(cell.config.slug(), *slug);
        assert!(
            cell.runs.iter().all(|r| r.error.is_none()),
            "{label} could not run\n{log}"
        );
        assert_eq!(
            cell.behaviour(),
            results::matrix::Behaviour::LosesAcknowledgedWrites,
            "{label}: {}\n{log}",
            cell.plain_line()
        );
        let (_, by, _) = cell.first_violation().expect("a violation");
        assert_eq!(by, *recipe, "{label}");
        assert!(cell.surprise().is_none(), "{label}: the setting allows it");
    }
}

/// Runs the CI matrices' command: `harness matrix` of 20 s runs, recipes only, failing on
/// surprises with every risk required shown, root seed 11, test `name`, with `extra` flags.
pub fn short_matrix(store: &Path, name: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "matrix",
        "--time-limit",
        "20",
        "--recipes-only",
        "--fail-on",
        "surprises",
        "--require-shown",
        "--seed",
        "11",
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    harness(&args, store)
}

/// The CI matrices' lossy grid: acks {1, all} × min.insync {1, 2} under Kafka 3.6's rules, 60 s
/// of wall budget per cell; each cell's documented loss must show.
pub const LOSSY_GRID: &[&str] = &[
    "--acks-axis",
    "1,all",
    "--min-isr",
    "1,2",
    "--kafka-release",
    "3.6",
    "--budget",
    "60",
];

/// The expected first breaker of each cell of [`LOSSY_GRID`], by cell slug.
pub const LOSSY_GRID_BREAKERS: &[(&str, &str)] = &[
    ("acks-1_mi-1_k3-6", "leader-failover"),
    ("acks-1_mi-2_k3-6", "leader-failover"),
    ("acks-all_mi-1_k3-6", "isr-shrink-crash"),
    ("acks-all_mi-2_k3-6", "last-replica-standing"),
];

/// The CI matrices' release and flush grid: acks=all, min.insync=2 under Kafka 3.6's and 4.1's
/// rules, with Kafka's default flush and an fsync per append; only 3.6 with the default flush
/// may lose (the last replica standing).
pub const RELEASE_FLUSH_GRID: &[&str] = &[
    "--acks-axis",
    "all",
    "--min-isr",
    "2",
    "--kafka-release",
    "3.6,4.1",
    "--flush",
    "default,every-message",
];
