//! The config-safety matrix in the deterministic simulation (`harness matrix --sim`): the same
//! cells and risk recipes as the netns matrix (`matrix_short`), each run a child
//! `harness sim --spec` on virtual time. acks {1, all} × min.insync.replicas {1, 2} under
//! Kafka 3.6's rules: every cell's documented loss is shown by the recipe aimed at it. Then
//! acks=all/min.insync=2 where Kafka promises no loss (an fsync per append under 3.6; Eligible
//! Leader Replicas under 4.1) stays clean over three rounds. A run replays byte for byte with
//! the command its `sim.json` gives.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use results::matrix::{Behaviour, Matrix};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("harness runs")
}

fn matrix(store: &Path, name: &str, extra: &[&str]) -> (Output, Matrix, std::path::PathBuf) {
    let mut args = vec!["--sim"];
    args.extend_from_slice(extra);
    let out = support::short_matrix(store, name, &args);
    let dir = support::latest_run(store, name);
    let m: Matrix =
        serde_json::from_str(&std::fs::read_to_string(dir.join("matrix.json")).expect("json"))
            .expect("matrix.json parses");
    (out, m, dir)
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_simulated_matrix_shows_every_documented_loss_and_keeps_every_promise() {
    let store = tempfile::tempdir().expect("tempdir");
    let (out, m, dir) = matrix(store.path(), "sim-lossy", support::LOSSY_GRID);
    let stderr = String::from_utf8_lossy(&out.stderr);
    support::assert_cells_lose_to(&m, support::LOSSY_GRID_BREAKERS, &stderr);
    for r in m.cells.iter().flat_map(|c| &c.runs) {
        let run = dir.join(&r.rel);
        assert!(run.join("report.html").is_file(), "{}", r.rel);
        assert!(run.join("sim.json").is_file(), "{}: a simulated run", r.rel);
    }
    let md = std::fs::read_to_string(dir.join("matrix.md")).expect("matrix.md");
    assert!(md.contains("simulated: harness sim"), "{md}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // The violating run of the last cell replays byte for byte from its sim.json's command.
    let cell = &m.cells[3];
    let run = dir.join(&cell.runs[cell.runs.len() - 1].rel);
    let sim: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("sim.json")).expect("sim.json"))
            .expect("sim.json parses");
    let replay = sim["replay"].as_str().expect("a replay command");
    let words: Vec<&str> = replay.split_whitespace().collect();
    assert_eq!(words[..2], ["harness", "sim"], "{replay}");
    assert!(replay.contains("--spec "), "{replay}");
    let again = harness(&words[1..]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "the replay finds the loss again: {}{}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
    let folder = run.parent().expect("the cell's folder");
    let newest = results::store::resolve_latest(&folder.join("latest")).expect("latest");
    assert_ne!(newest, run, "the replay is a new run");
    let (a, b) = (
        bytes(&newest.join("history.jsonl")),
        bytes(&run.join("history.jsonl")),
    );
    assert!(
        a == b,
        "the replay's history ({} bytes) is the run's ({} bytes), byte for byte",
        a.len(),
        b.len()
    );

    // Where Kafka promises no loss: an fsync per append under 3.6, Eligible Leader Replicas
    // under 4.1. Three rounds of each recipe, all clean.
    let (out, m, _) = matrix(
        store.path(),
        "sim-promised",
        &[
            support::RELEASE_FLUSH_GRID,
            &["--budget", "0", "--runs", "3"],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let promised: Vec<&str> = m
        .cells
        .iter()
        .filter(|c| c.config.flush == results::matrix::FLUSH_EVERY || c.config.release == "4.1")
        .map(|c| {
            let label = c.config.label();
            assert!(
                c.runs.iter().all(|r| r.error.is_none()),
                "{label}\n{stderr}"
            );
            assert!(c.runs.len() >= 3, "{label}: {} runs", c.runs.len());
            assert_eq!(
                c.behaviour(),
                Behaviour::Safe,
                "{label}: {}\n{stderr}",
                c.plain_line()
            );
            c.config.release.as_str()
        })
        .collect();
    assert_eq!(promised, ["3.6", "4.1", "4.1"], "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
