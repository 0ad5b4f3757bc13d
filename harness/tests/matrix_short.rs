//! A short config-safety matrix on the default netns backend (root), recipes only: acks {1, all}
//! × min.insync.replicas {1, 2} at RF=3 with Kafka's default flush and Kafka 3.6's rules,
//! 20-second runs. Every cell whose setting allows loss shows it, broken by the recipe aimed at
//! its risk: acks=1 by the leader failover, acks=all/min.insync=1 by the crash of a leader alone
//! in its ISR, and acks=all/min.insync=2 by the last replica standing (3.6 has no Eligible Leader
//! Replicas). Then the release and flush axes on acks=all/min.insync=2: under 3.6 rules the
//! same crash loses acknowledged writes with the default flush and nothing with an fsync per
//! append; under 4.1 rules (ELR) it loses nothing with either. The reports, links, JUnit cases
//! and exit codes are checked on the way.

mod support;

use std::path::Path;
use std::process::Output;

use results::matrix::{Behaviour, Matrix};

fn matrix(store: &Path, name: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--nodes", "3"];
    args.extend_from_slice(extra);
    support::short_matrix(store, name, &args)
}

fn read(store: &Path, name: &str) -> (std::path::PathBuf, Matrix, String, String) {
    let dir = results::store::resolve_latest(&store.join(name).join("latest")).expect("latest");
    // minijinja escapes '/' in attribute text; undo that to look for links.
    let html = std::fs::read_to_string(dir.join("matrix.html"))
        .expect("matrix.html")
        .replace("&#x2f;", "/");
    let md = std::fs::read_to_string(dir.join("matrix.md")).expect("matrix.md");
    let m: Matrix =
        serde_json::from_str(&std::fs::read_to_string(dir.join("matrix.json")).expect("json"))
            .expect("matrix.json parses");
    (dir, m, html, md)
}

#[test]
fn aimed_recipes_show_every_documented_loss_and_the_fsynced_promise_holds() {
    let store = tempfile::tempdir().expect("tempdir");
    let junit = store.path().join("matrix.xml");
    let junit_arg = junit.display().to_string();
    let out = matrix(
        store.path(),
        "ci-matrix",
        &[support::LOSSY_GRID, &["--junit", &junit_arg]].concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (dir, m, html, md) = read(store.path(), "ci-matrix");
    support::assert_cells_lose_to(&m, support::LOSSY_GRID_BREAKERS, &stderr);
    for (cell, &(slug, recipe)) in m.cells.iter().zip(support::LOSSY_GRID_BREAKERS) {
        let label = cell.config.label();
        let (i, _, t) = cell.first_violation().expect("a violation");
        assert_eq!(
            i + 1,
            cell.runs.len(),
            "{label} stops at its first violation"
        );
        assert!(
            t > 0.0 && t <= 20.0 * cell.runs.len() as f64 + 1.0,
            "{label}: {t}"
        );
        for r in &cell.runs {
            assert!(dir.join(&r.rel).join("report.html").is_file(), "{label}");
            assert!(
                html.contains(&format!("href=\"{}/report.html\"", r.rel)),
                "{label}"
            );
        }
        // The picture's square links to the cell's evidence.
        assert!(html.contains(&format!("href=\"#cell-{slug}\"")), "{label}");
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row for {label} in\n{md}"));
        assert!(
            row.contains("| loses acknowledged writes |") && row.contains(recipe),
            "{row}"
        );
    }
    assert!(html.find("class=\"pic\"") < html.find("Evidence per cell"));
    assert!(html.contains("Kafka 3.6 rules") && md.contains("Kafka 3.6 rules"));
    assert!(md.contains("median time to first violation"), "{md}");
    assert!(
        stdout.contains("| setting | verdict |"),
        "the table is printed"
    );
    // Every loss is one the settings allow: no surprise, every risk shown.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert_eq!(xml.matches("<testcase").count(), 4, "{xml}");

    // The release and flush axes: the same aimed crash under 3.6 and 4.1 rules, with and
    // without an fsync per append. Only 3.6 with Kafka's default flush loses.
    let out = matrix(
        store.path(),
        "ci-releases",
        &[
            support::RELEASE_FLUSH_GRID,
            &["--recipes", "last-replica-standing", "--budget", "1"],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (_, m, html, _) = read(store.path(), "ci-releases");
    let expected = [
        ("acks-all_mi-2_k3-6", Behaviour::LosesAcknowledgedWrites),
        ("acks-all_mi-2_k3-6_fsync", Behaviour::Safe),
        ("acks-all_mi-2_k4-1", Behaviour::Safe),
        ("acks-all_mi-2_k4-1_fsync", Behaviour::Safe),
    ];
    assert_eq!(m.cells.len(), 4, "{stderr}");
    for (cell, (slug, behaviour)) in m.cells.iter().zip(expected) {
        assert_eq!(cell.config.slug(), slug);
        assert_eq!(cell.runs.len(), 1, "{slug}");
        assert_eq!(
            cell.runs[0].recipe.as_deref(),
            Some("last-replica-standing")
        );
        assert!(
            cell.runs[0].sends[0] > 50,
            "{slug} took writes: {:?}",
            cell.runs[0].sends
        );
        assert_eq!(
            cell.behaviour(),
            behaviour,
            "{slug}: {}\n{stderr}",
            cell.plain_line()
        );
        assert!(cell.surprise().is_none(), "{slug}: {}", cell.plain_line());
    }
    // One grid per release and flush setting, each saying which rules it shows.
    assert!(html.contains("Kafka 3.6 rules") && html.contains("Kafka 4.1 rules"));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
