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
