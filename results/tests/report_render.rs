//! The report over a stored fixture run with known anomalies (`tests/fixtures/anomalies`: a
//! hand-written history with a partition and a kill, its `results.json` from
//! `checkers::check`, a `test.json`): the HTML holds each anomaly's count and links to the ops
//! that prove it, every link lands on an op of the history view, it parses as HTML, needs no
//! network, and opens in headless Chromium, which writes a screenshot for people to look at.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scraper::{Html, Selector};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anomalies")
}

fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in [
        "history.jsonl",
        "results.json",
        "test.json",
        "metrics.jsonl",
    ] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).expect("copy fixture");
    }
    dir
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

/// The stored results.json is what the checker says of the stored history (kinds, counts and
/// which invalidate); `UPDATE_FIXTURES=1` rewrites it.
#[test]
fn fixture_results_are_the_checkers_answer() {
    let history = checkers::read_history(&fixture().join("history.jsonl")).expect("history");
    let options = checkers::CheckOptions {
        final_phase: true,
        ..Default::default()
    };
    let result = serde_json::to_value(checkers::check(&history, &options)).expect("json");
    let path = fixture().join("results.json");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&result).expect("json") + "\n",
        )
        .expect("write");
    }
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("results.json")).expect("json");
    let counts = |v: &Value| -> Vec<(String, u64)> {
        v["anomalies"]
            .as_object()
            .expect("anomalies")
            .iter()
            .map(|(k, f)| (k.clone(), f["count"].as_u64().expect("count")))
            .collect()
    };
    assert_eq!(counts(&stored), counts(&result));
    assert_eq!(stored["valid"], result["valid"]);
    for kind in [
        "lost-write",
        "unseen",
        "duplicate",
        "inconsistent-offsets",
        "G1a",
    ] {
        assert!(
            stored["anomalies"][kind]["count"].as_u64().unwrap_or(0) > 0,
            "the fixture has {kind}"
        );
    }
}

#[test]
fn report_shows_each_anomaly_with_its_count_and_op_links() {
    let dir = copy_fixture();
    let path = results::report::write(dir.path()).expect("report renders");
    let html = std::fs::read_to_string(&path).expect("report.html");
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("results.json")).expect("results"),
    )
    .expect("json");

    let doc = Html::parse_document(&html);
    // A real document: one title, the banner, the sections.
    let title: Vec<String> = doc
        .select(&sel("head > title"))
        .map(|t| t.text().collect())
        .collect();
    assert_eq!(title.len(), 1);
    assert!(title[0].contains("invalid"), "{title:?}");
    let banner: String = doc
        .select(&sel("#verdict"))
        .next()
        .expect("banner")
        .text()
        .collect();
    assert!(
        banner.contains("INVALID") && banner.contains("lost-write"),
        "{banner}"
    );
    for id in [
        "configuration",
        "anomalies",
        "timeline",
        "latency",
        "throughput",
        "keys",
        "faults",
        "history",
    ] {
        assert!(
            doc.select(&sel(&format!("#{id}"))).next().is_some(),
            "section #{id}"
        );
    }
    // The configuration comes after the findings, at the end.
    let config: String = doc
        .select(&sel("#configuration ~ table"))
        .next()
        .expect("config")
        .text()
        .collect();
    assert!(
        config.contains("min.insync.replicas") && config.contains("partition"),
        "{config}"
    );

    // Every op id in the history view.
    let ids: BTreeSet<String> = doc
        .select(&sel("tr[id^=op-]"))
        .filter_map(|e| e.value().id().map(String::from))
        .collect();
    assert!(!ids.is_empty());

    let anomalies = results["anomalies"].as_object().expect("anomalies");
    assert!(anomalies.len() >= 5);
    for (kind, f) in anomalies {
        let count = f["count"].as_u64().expect("count");
        let block = doc
            .select(&sel(&format!("#anomaly-{kind}")))
            .next()
            .unwrap_or_else(|| panic!("no block for {kind}"));
        let text: String = block.text().collect();
        assert!(text.contains(&format!("{kind}: {count}")), "{kind}: {text}");
        let explanation = f["explanation"].as_str().expect("explanation");
        assert!(text.contains(explanation), "{kind} explains itself");
        // Each op an example names is a link to that op's row.
        let links: BTreeSet<String> = block
            .select(&sel("a.op"))
            .filter_map(|a| a.value().attr("href").map(String::from))
            .collect();
        for ex in f["examples"].as_array().expect("examples") {
            for op in results::report::example_ops(ex) {
                let href = format!("#op-{op}");
                assert!(links.contains(&href), "{kind}: no link {href} in {links:?}");
                assert!(
                    ids.contains(&format!("op-{op}")),
                    "{kind}: {href} lands nowhere"
                );
            }
        }
    }
    // Every op link of the page lands on a row.
    for a in doc.select(&sel("a.op")) {
        let href = a.value().attr("href").expect("href");
        assert!(
            ids.contains(href.trim_start_matches('#')),
            "{href} lands nowhere"
        );
    }
    // The referenced rows are highlighted; the lost write's send is one of them.
    let lost_send = results["anomalies"]["lost-write"]["examples"][0]["send_op"]
        .as_u64()
        .expect("send_op");
    let row = doc
        .select(&sel(&format!("#op-{lost_send}")))
        .next()
        .expect("row");
    assert!(row.value().classes().any(|c| c == "ref"));

    // Plots: timeline, latency, throughput, and one per key with findings.
    let svgs = doc.select(&sel("div.plot > svg")).count();
    assert!(svgs >= 5, "{svgs} plots");
    let keys: Vec<String> = doc
        .select(&sel("#keys ~ h3"))
        .map(|h| h.text().collect())
        .collect();
    assert!(keys.iter().any(|k| k == "key k0"), "{keys:?}");
    // Fault bands and the fault table.
    let faults: String = doc
        .select(&sel("#faults + table"))
        .next()
        .expect("fault table")
        .text()
        .collect();
    assert!(
        faults.contains("partition") && faults.contains("kill"),
        "{faults}"
    );
    // The brokers' view (the fixture's metrics.jsonl): partition 0 led by n1 at epoch 1, then
    // n2 at epoch 2 (its log ending at 2) while n1 was cut off, then n3 at epoch 3 after n2 was
    // killed; each leadership drawn, each fault band labelled with its nodes.
    assert!(html.find("id=\"anomalies\"") < html.find("id=\"configuration\""));
    let leaders: BTreeSet<(String, String, String)> = doc
        .select(&sel("#brokers ~ div.plot g.leader-change"))
        .map(|g| {
            let a = |n: &str| g.value().attr(n).unwrap_or("").to_string();
            (a("data-partition"), a("data-leader"), a("data-epoch"))
        })
        .collect();
    for want in [
        ("0", "n1", "1"),
        ("0", "n2", "2"),
        ("0", "n3", "3"),
        ("1", "n3", "2"),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2.to_string());
        assert!(leaders.contains(&want), "{want:?} not in {leaders:?}");
    }
    let band_labels: Vec<String> = doc
        .select(&sel("g.fault-band > text"))
        .map(|t| t.text().collect())
        .collect();
    assert!(
        band_labels.iter().any(|l| l == "partition isolating n1"),
        "{band_labels:?}"
    );
    assert!(
        band_labels.iter().any(|l| l == "kill n2"),
        "{band_labels:?}"
    );
    // The killed node's unanswered scrapes are drawn on its row.
    assert!(
        doc.select(&sel("rect.node-state[data-node=n2]"))
            .next()
            .is_some(),
        "n2 shows as down while killed"
    );
    // The lost write explained by the events around it.
    let why: String = doc
        .select(&sel("#anomaly-lost-write .why"))
        .next()
        .expect("the lost write is explained")
        .text()
        .collect();
    assert!(
        why.starts_with(
            "value 3 of k0 at offset 2 (partition 0) acknowledged by n1 (leader, epoch 1) at 0.2 s"
        ) && why.contains("network partition isolating n1 at 0.2 s")
            && why.contains(
                "n2 elected, epoch 2, at 2.1 s with log end 2 (offset 2 was not in its log)"
            )
            && why.contains("n2 killed at 5.7 s"),
        "{why}"
    );
    assert!(banner.contains("bug modes: none"), "{banner}");
    // Each plot also as its own file, as Jepsen writes them.
    for f in results::report::PLOT_FILES {
        let svg =
            std::fs::read_to_string(dir.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(svg.starts_with("<svg"), "{f}");
    }
    // Self-contained: no script, no external style sheet, image or link.
    assert_eq!(doc.select(&sel("script, link, img, iframe")).count(), 0);
    for a in doc.select(&sel("a[href]")) {
        let href = a.value().attr("href").unwrap_or("");
        assert!(href.starts_with('#'), "external link {href}");
    }
    assert!(!html.contains("https://"), "no network resource");
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn report_opens_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        println!("SKIPPED: no chromium on PATH (apt-get install chromium); the report was not opened in a browser");
        return;
    };
    let dir = copy_fixture();
    let report = results::report::write(dir.path()).expect("report renders");
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shot = out_dir.join("report-fixture.png");
    screenshot(&chrome, &report, (1100, 2600), &shot);
    println!("screenshot of the fixture's report: {}", shot.display());
    // The broker timeline on its own, for a person to check the leaders, epochs and bands.
    let shot = out_dir.join("broker-timeline-fixture.png");
    screenshot(
        &chrome,
        &dir.path().join("broker-timeline.svg"),
        (980, 300),
        &shot,
    );
    println!(
        "screenshot of the fixture's broker timeline: {}",
        shot.display()
    );
}

/// Opens `page` in headless Chromium at `size` and checks it wrote a real PNG to `shot` (a
/// page of text and plots compresses to well over 10 kB; a blank one to about 1 kB).
fn screenshot(chrome: &Path, page: &Path, (w, h): (u32, u32), shot: &Path) {
    let _ = std::fs::remove_file(shot);
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // A safeguard against a wedged browser, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "chromium failed: {stderr}");
    let png = std::fs::read(shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {stderr}"));
    assert!(png.len() > 5_000, "a real screenshot, {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
