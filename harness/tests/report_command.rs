//! The report, exit-code, JUnit and serve commands as users run them, over the results crate's
//! fixture run (a history with known anomalies): `harness report` re-renders it, `harness check`
//! exits 1 on it, a test that cannot run exits 2 and its JUnit XML says so, and `harness serve`
//! lists the run with its verdict, serves its report, and refuses paths outside the store.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/tests/fixtures/anomalies")
}

/// A store holding the fixture as `store/fixture/20260101T000000.000Z/`.
fn store_with_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("store/fixture/20260101T000000.000Z");
    std::fs::create_dir_all(&run).expect("mkdir");
    for f in ["history.jsonl", "results.json", "test.json"] {
        std::fs::copy(fixture().join(f), run.join(f)).expect("copy");
    }
    (dir, run)
}

fn harness(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("harness runs")
}

#[test]
fn report_rerenders_a_stored_run() {
    let (_dir, run) = store_with_fixture();
    let out = harness(&["report", run.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(run.join("report.html")).expect("report.html");
    assert!(html.contains("lost-write: 2") && html.contains("href=\"#op-7\""));
    let missing = harness(&["report", "/nonexistent/run"]);
    assert_eq!(missing.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no history.jsonl"));
}

#[test]
fn exit_codes_and_junit_follow_the_nightly_contract() {
    let (dir, run) = store_with_fixture();
    // A finding invalidates the run: 1 (check re-checks and re-renders).
    let out = harness(&["check", run.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("report.html").is_file(), "check writes the report");
    let case = harness::report::run_case("fixture", Some(&run), None, Default::default());
    assert_eq!(case.verdict, results::verdict::Verdict::Invalid);
    assert!(case.message.contains("lost-write: 2"), "{}", case.message);
    let xml = results::junit::render("harness test", &[case]);
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("<failure"),
        "{xml}"
    );

    // The harness cannot run (an ssh backend without hosts): 2, and the JUnit case errors.
    let junit = dir.path().join("junit.xml");
    let out = harness(&[
        "test",
        "--backend",
        "ssh",
        "--name",
        "nohosts",
        "--junit",
        junit.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(254),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(&junit).expect("junit written even when nothing ran");
    assert!(
        xml.contains("tests=\"1\" failures=\"0\" errors=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("name=\"nohosts\"") && xml.contains("ssh"),
        "{xml}"
    );
}

fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_lists_runs_and_serves_reports_inside_the_store_only() {
    let (dir, run) = store_with_fixture();
    results::report::write(&run).expect("report");
    std::fs::write(dir.path().join("secret.txt"), "TOPSECRET-42").expect("write");
    let store = dir.path().join("store");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["serve", "--addr", "127.0.0.1:0", "--store"])
            .arg(&store)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("banner");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("address in the banner")
        .to_string();

    let (status, index) = get(&addr, "/");
    assert!(status.contains("200"), "{status}");
    assert!(
        index.contains("fixture/20260101T000000.000Z") && index.contains("invalid"),
        "{index}"
    );
    assert!(index.contains("lost-write: 2"), "{index}");
    let (status, report) = get(&addr, "/runs/fixture/20260101T000000.000Z/report.html");
    assert!(status.contains("200"), "{status}");
    assert!(report.contains("lost-write: 2"));
    let (status, history) = get(&addr, "/runs/fixture/20260101T000000.000Z/history.jsonl");
    assert!(
        status.contains("200") && history.contains("\"index\":0"),
        "{status}"
    );
    for bad in [
        "/runs/../secret.txt",
        "/runs/%2e%2e/secret.txt",
        "/runs/fixture/..%2f..%2fsecret.txt",
        "/runs//etc/passwd",
        "/../secret.txt",
    ] {
        let (status, body) = get(&addr, bad);
        assert!(status.contains("404"), "{bad}: {status}");
        assert!(
            !body.contains("TOPSECRET-42"),
            "{bad} leaked a file outside the store"
        );
    }
}
