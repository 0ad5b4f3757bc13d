//! Jepsen's own Kafka checker cases (`jepsen/test/jepsen/tests/kafka_test.clj`), ported as
//! histories in our JSON Lines format under `tests/jepsen/`, each beside an `.expect.json`
//! with Jepsen's expected anomalies; plus a few of ours in the same format (`"source"`).
//!
//! An expectation file holds: `jepsen` or `source` (where the case comes from), `options`
//! (CheckOptions fields), `expect` (kind → `count` and `examples`, each example's fields
//! matched against one example found, in order), `absent` (kinds that must not be found),
//! `only` (nothing else may be found), `valid`, and `note`/`differs` (where and why we differ
//! from Jepsen, also in docs/CHECKERS.md). Values `:a`, `:b`, ... are 1, 2, ...; key `:x` is
//! `"x"`. Each case is checked both streaming (`check_file`) and in memory (`check`).

use std::path::{Path, PathBuf};

use checkers::{check, check_file, read_history, CheckOptions, CheckResult};
use serde_json::{json, Value};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jepsen");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/jepsen")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    out.sort();
    out
}

fn options(expect: &Value) -> CheckOptions {
    let mut o = serde_json::to_value(CheckOptions::default()).expect("options serialise");
    if let Some(given) = expect["options"].as_object() {
        for (k, v) in given {
            o[k] = v.clone();
        }
    }
    serde_json::from_value(o).expect("options in the expectation")
}

/// Does `found` hold every field of `want` with the same value?
fn matches(found: &Value, want: &Value) -> bool {
    want.as_object()
        .expect("an expected example is an object")
        .iter()
        .all(|(k, v)| found.get(k) == Some(v))
}

fn verify(name: &str, r: &CheckResult, expect: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let wanted = expect["expect"].as_object().cloned().unwrap_or_default();
    for (kind, want) in &wanted {
        let Some(found) = r.anomalies.get(kind) else {
            errors.push(format!("{name}: expected {kind}, found none"));
            continue;
        };
        if let Some(n) = want["count"].as_u64() {
            if found.count as u64 != n {
                errors.push(format!("{name}: {kind} count {} != {n}", found.count));
            }
        }
        for (i, ex) in want["examples"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            match found.examples.get(i) {
                Some(f) if matches(f, ex) => {}
                other => errors.push(format!(
                    "{name}: {kind} example {i}: want fields {ex}, found {}",
                    other.map_or("nothing".to_string(), Value::to_string)
                )),
            }
        }
    }
    for kind in expect["absent"].as_array().into_iter().flatten() {
        let kind = kind.as_str().expect("kind");
        if r.anomalies.contains_key(kind) {
            errors.push(format!(
                "{name}: {kind} must be absent: {:?}",
                r.anomalies[kind]
            ));
        }
    }
    if expect["only"] == json!(true) {
        for kind in r.anomalies.keys() {
            if !wanted.contains_key(kind) {
                errors.push(format!(
                    "{name}: unexpected {kind}: {:?}",
                    r.anomalies[kind]
                ));
            }
        }
    }
    if !expect["valid"].is_null() && r.valid != expect["valid"] {
        errors.push(format!("{name}: valid {} != {}", r.valid, expect["valid"]));
    }
    errors
}

#[test]
fn every_ported_jepsen_case_agrees() {
    let cases = cases();
    let jepsen = cases
        .iter()
        .filter(|p| {
            let e = std::fs::read_to_string(p.with_extension("expect.json")).unwrap_or_default();
            e.contains("\"jepsen\"")
        })
        .count();
    // Every deftest of kafka_test.clj with a checker verdict, and each of its `testing` cases.
    assert!(jepsen >= 38, "only {jepsen} Jepsen cases found");
    let mut errors = Vec::new();
    for path in &cases {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let text = std::fs::read_to_string(path.with_extension("expect.json"))
            .unwrap_or_else(|e| panic!("{name}: no expectation: {e}"));
        let expect: Value = serde_json::from_str(&text).expect("expectation JSON");
        let opts = options(&expect);
        let streamed = check_file(path, &opts).expect("fixture reads");
        errors.extend(verify(name, &streamed, &expect));
        let history = read_history(path).expect("fixture reads");
        let in_memory = check(&history, &opts);
        if in_memory.anomalies != streamed.anomalies || in_memory.valid != streamed.valid {
            errors.push(format!("{name}: check and check_file disagree"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn an_example_that_does_not_match_is_caught() {
    // The matcher itself: a wrong field value, a missing kind and an extra kind all fail.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jepsen/g1a.jsonl");
    let r = check_file(&path, &CheckOptions::default()).expect("reads");
    let wrong = json!({"expect": {"G1a": {"count": 1, "examples": [{"key": "x", "value": 3}]}}});
    assert_eq!(verify("g1a", &r, &wrong).len(), 1);
    let missing = json!({"expect": {"lost-write": {"count": 1}}});
    assert_eq!(verify("g1a", &r, &missing).len(), 1);
    let only = json!({"expect": {}, "only": true});
    assert!(!verify("g1a", &r, &only).is_empty());
}
