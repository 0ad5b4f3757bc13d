//! A reproduced bug explains itself: `harness reproduce ack-before-isr` on 3 netns nodes finds
//! lost writes, and the report says why in words beside the finding: which leader at which
//! epoch acknowledged the write, the fault that cut it off, the leader elected after it whose
//! log did not hold the write, what the final reads found; the bug mode and the Kafka release
//! rules stand beside the verdict.

mod support;

/// The text of every `<div class="why">` inside the anomaly block `kind`.
fn whys(html: &str, kind: &str) -> Vec<String> {
    let Some(start) = html.find(&format!("id=\"anomaly-{kind}\"")) else {
        return Vec::new();
    };
    let block = &html[start..];
    let block = &block[..block[1..]
        .find("class=\"anomaly")
        .map_or(block.len(), |e| e + 1)];
    block
        .split("<div class=\"why\">")
        .skip(1)
        .filter_map(|s| s.split("</div>").next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_report_of_a_reproduced_lost_write_names_the_leader_change_and_the_fault() {
    let store = tempfile::tempdir().expect("tempdir");
    let out = support::harness(
        &[
            "reproduce",
            "ack-before-isr",
            "--nodes",
            "3",
            "--seed",
            "1",
            "--budget",
            "90",
            "--time-limit",
            "20",
        ],
        store.path(),
    );
    let text = support::output_text(&out);
    assert_eq!(out.status.code(), Some(0), "the bug was found: {text}");
    let run = support::latest_run(store.path(), "reproduce-ack-before-isr");
    let html = std::fs::read_to_string(run.join("report.html")).expect("report.html");
    // The final phase's reader is named for what it is, in the history view and the timeline.
    assert!(
        !html.contains("1000000"),
        "the final reader shows as a number"
    );
    let timeline = std::fs::read_to_string(run.join("timeline.svg")).expect("timeline.svg");
    assert!(timeline.contains("final-reads"), "no final-reads row");

    // Beside the verdict: the bug mode in force and the release rules.
    let banner = &html[html.find("id=\"verdict\"").expect("banner")..];
    let banner = &banner[..banner.find("</div>\n</div>").unwrap_or(banner.len())];
    assert!(banner.contains("bug modes: ack-before-isr"), "{banner}");
    assert!(banner.contains("Kafka release rules: "), "{banner}");

    // A lost write (or, failing that, an unseen one) told by the events around it.
    let mut told = whys(&html, "lost-write");
    if told.is_empty() {
        told = whys(&html, "unseen");
    }
    assert!(!told.is_empty(), "no explanation in the report");
    let named = told.iter().find(|w| {
        w.contains(" acknowledged by n")
            && w.contains("(leader, epoch ")
            && (w.contains("network partition") || w.contains("killed"))
            && w.contains(" elected, epoch ")
            && w.contains("was not in its log")
            && w.contains("the final reads")
    });
    assert!(
        named.is_some(),
        "no explanation names the acknowledging leader, the fault, the election that lost the \
         write and the final reads: {told:#?}"
    );
}
