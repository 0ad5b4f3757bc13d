//! How the report loads a run: the history is streamed into statistics and an excerpt (never
//! held whole), odd timestamps never blow up the series, and a bad `test.json` is an error
//! naming its field.

use std::io::Write;
use std::path::Path;

use results::report::{self, Run};

/// Writes `n` send ops (invoke + ok) by 4 processes, times from `t0`, one nemesis op in the
/// middle; returns the number of lines.
fn write_history(dir: &Path, n: u64, t0: u64) -> u64 {
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl")).expect("history"));
    let mut index = 0u64;
    for i in 0..n {
        let (p, t) = (i % 4, t0 + i * 1_000_000);
        writeln!(
            f,
            r#"{{"index":{index},"time_ns":{t},"process":{p},"type":"invoke","f":"send","value":[["send","k{p}",{i},{p}]]}}"#
        )
        .expect("w");
        index += 1;
        if i == n / 2 {
            writeln!(
                f,
                r#"{{"index":{index},"time_ns":{t},"process":"nemesis","type":"info","f":"kill","value":{{"nodes":["n1"]}}}}"#
            )
            .expect("w");
            index += 1;
        }
        writeln!(
            f,
            r#"{{"index":{index},"time_ns":{},"process":{p},"type":"ok","f":"send","value":[["send","k{p}",[{},{i}],{p}]]}}"#,
            t + 500_000,
            i / 4
        )
        .expect("w");
        index += 1;
    }
    index
}

/// A `results.json` whose one lost write names key k3 and op 30002.
fn write_results(dir: &Path) {
    std::fs::write(
        dir.join("results.json"),
        r#"{"valid": false, "invalidating": ["lost-write"], "checked": ["lost-write"],
            "anomalies": {"lost-write": {"count": 1, "explanation": "gone",
              "examples": [{"key": "k3", "offset": 7, "send_op": 30002}]}}}"#,
    )
    .expect("results");
}

#[test]
fn the_history_is_streamed_into_stats_and_an_excerpt_of_what_results_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = write_history(dir.path(), 20_000, 0);
    write_results(dir.path());
    let run = Run::load(dir.path()).expect("loads");
    assert_eq!(run.op_count, lines);
    assert_eq!(run.stats.completed, 20_000);
    assert_eq!(run.stats.quantiles[0].count, 20_000);
    assert_eq!(run.stats.faults.len(), 1, "the nemesis kill is an interval");
    let kept: Vec<u64> = run.history.ops.iter().map(|o| o.index).collect();
    // The named op with its neighbours and its invocation, the nemesis op with its
    // neighbours, and k3's ok sends (the key the example names) with their invocations.
    for i in [20_001, 20_004, 29_999, 30_001, 30_002, 30_005] {
        assert!(kept.contains(&i), "op {i} kept");
    }
    assert!(run.history.ops.iter().any(|o| o.process.is_nemesis()));
    let k3_oks = run
        .history
        .ops
        .iter()
        .filter(|o| o.op_type == checkers::OpType::Ok && o.value.to_string().contains("\"k3\""))
        .count();
    assert_eq!(k3_oks, 5_000, "every ok op of k3");
    assert!(
        kept.len() < 12_000,
        "an excerpt, not the whole history: {} of {lines}",
        kept.len()
    );
    assert!(run.stats.points.iter().any(|p| p.complete_index == 30_002));
    let html = report::render(&run).expect("renders");
    assert!(html.contains("lost-write"));
}

#[test]
fn epoch_nanosecond_times_load_and_render_with_bounded_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 4, 1_780_000_000_000_000_000);
    let run = Run::load(dir.path()).expect("loads");
    assert!(
        run.stats.throughput.buckets() <= 2,
        "{:?}",
        run.stats.throughput
    );
    assert!(run.stats.unseen.counts.len() <= checkers::stats::MAX_BUCKETS as usize + 1);
    report::render(&run).expect("renders");
}

#[test]
fn a_run_with_a_bad_test_json_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path(), 4, 0);
    std::fs::write(dir.path().join("test.json"), r#"{"spec": {}, "seed": "x"}"#).expect("w");
    let e = Run::load(dir.path())
        .expect_err("mistyped seed")
        .to_string();
    assert!(e.contains("field `seed`: must be number"), "{e}");
    std::fs::write(
        dir.path().join("test.json"),
        r#"{"spec": {}, "nemesis": {}}"#,
    )
    .expect("w");
    let e = Run::load(dir.path())
        .expect_err("unknown field")
        .to_string();
    assert!(e.contains("field `nemesis`: unknown"), "{e}");
}

/// A run just checked loads from the check's pass (`Run::from_checked`) into the same
/// statistics and excerpt as a fresh load of its files.
#[test]
fn a_checked_run_loads_as_its_files_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = write_history(dir.path(), 20_000, 0);
    write_results(dir.path());
    let checked = checkers::check_file_full(
        &dir.path().join("history.jsonl"),
        &checkers::CheckOptions::default(),
    )
    .expect("checks");
    let fresh = Run::load(dir.path()).expect("loads");
    let run = Run::from_checked(dir.path(), &checked.summary).expect("loads from the check");
    assert_eq!(run.op_count, lines);
    assert_eq!(run.stats, fresh.stats);
    assert_eq!(run.history.ops, fresh.history.ops);
    assert_eq!(
        report::render(&run).expect("renders"),
        report::render(&fresh).expect("renders")
    );
}
