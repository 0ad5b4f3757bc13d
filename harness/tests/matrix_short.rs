//! A short config-safety matrix on the default netns backend (root): acks {1, all} ×
//! min.insync.replicas {1, 2} at RF=3, one 10-second run per cell with leader kills. Both matrix
//! files are written with a verdict per cell, each run's report exists and is linked, the JUnit
//! XML has a case per cell, and the exit code agrees with the runs' verdicts.

use std::process::Command;

#[test]
fn a_two_by_two_matrix_writes_both_reports_with_a_verdict_per_cell() {
    let store = tempfile::tempdir().expect("tempdir");
    let junit = store.path().join("matrix.xml");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "matrix",
            "--acks-axis",
            "1,all",
            "--min-isr",
            "1,2",
            "--nodes",
            "3",
            "--time-limit",
            "10",
            "--nemesis",
            "kill",
            "--nemesis-interval",
            "3",
            "--seed",
            "11",
            "--name",
            "ci-matrix",
            "--junit",
        ])
        .arg(&junit)
        .arg("--store")
        .arg(store.path())
        .output()
        .expect("harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = results::store::resolve_latest(&store.path().join("ci-matrix/latest"))
        .expect("latest link");
    // minijinja escapes '/' in attribute text; undo that to look for links.
    let html = std::fs::read_to_string(dir.join("matrix.html"))
        .expect("matrix.html")
        .replace("&#x2f;", "/");
    let md = std::fs::read_to_string(dir.join("matrix.md")).expect("matrix.md");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("matrix.json")).expect("json"))
            .expect("matrix.json parses");
    let m: results::matrix::Matrix = serde_json::from_value(json).expect("a matrix");
    assert_eq!(m.cells.len(), 4, "{stderr}");
    let verdicts = [
        "safe",
        "loses acknowledged writes",
        "duplicates",
        "reorders",
        "unavailable",
        "unknown",
        "could not run",
    ];
    let mut all = Vec::new();
    for cell in &m.cells {
        let label = cell.config.label();
        assert_eq!(cell.runs.len(), 1, "{label}");
        let run = &cell.runs[0];
        assert!(
            run.error.is_none(),
            "{label} could not run: {:?}\n{stderr}",
            run.error
        );
        assert!(
            dir.join(&run.rel).join("report.html").is_file(),
            "{label}: report of {}",
            run.rel
        );
        assert!(
            html.contains(&format!("href=\"{}/report.html\"", run.rel)),
            "{label} links its run"
        );
        let word = cell.behaviour().words();
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row for {label} in\n{md}"));
        assert!(row.contains(&format!("| {word} |")), "{row}");
        assert!(verdicts.contains(&word));
        assert!(row.contains("Kafka") || row.contains("acks="), "{row}");
        let cell_html = html
            .split(&format!("id=\"cell-{}\"", cell.config.slug()))
            .nth(1)
            .unwrap_or_else(|| panic!("no cell {label} in matrix.html"));
        assert!(cell_html.contains(word), "{label}");
        all.extend(cell.verdicts());
    }
    assert!(md.contains("acks=all min.insync.replicas=2"), "{md}");
    assert!(
        stdout.contains("| setting | verdict |"),
        "the table is printed"
    );
    let code = results::verdict::exit_code(&all);
    assert_eq!(out.status.code(), Some(i32::from(code)), "{stderr}");
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert_eq!(xml.matches("<testcase").count(), 4, "{xml}");
    let failures = all
        .iter()
        .filter(|v| **v == results::verdict::Verdict::Invalid)
        .count();
    assert!(xml.contains(&format!("failures=\"{failures}\"")), "{xml}");
}
