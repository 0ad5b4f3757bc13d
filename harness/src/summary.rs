//! The final summary of a run, with numbers: seed, verdict, acknowledged / failed / unknown
//! sends, lost, unseen and duplicated counts, faults applied by kind, throughput and p99
//! latency of acknowledged sends, and the report's path. Computed from the run folder alone
//! (one streaming pass over `history.jsonl`, then `results.json`), so it is the same after a
//! crash as after a clean run, and `--test-count` series reuse it for their table.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Nemesis ops that undo or follow a fault rather than inject one.
const NOT_FAULTS: &[&str] = &[
    "stop-partition",
    "stop-packet-loss",
    "resume",
    "start",
    "reset-clock",
    "stop-disk",
    "start-failed",
    "broker-unrecoverable",
];

/// One run's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The run folder.
    pub run: PathBuf,
    /// The root seed.
    pub seed: u64,
    /// `valid`, `invalid`, `unknown`, or `unchecked` (no results.json).
    pub verdict: String,
    /// Sends acknowledged (in ok send and txn ops).
    pub sends_ok: u64,
    /// Sends that certainly failed.
    pub sends_failed: u64,
    /// Sends whose outcome is unknown (info).
    pub sends_unknown: u64,
    /// `lost-write` count.
    pub lost: u64,
    /// `unseen` count.
    pub unseen: u64,
    /// `duplicate` count.
    pub duplicated: u64,
    /// The invalidating kinds found (count above zero), worst (largest) first.
    pub findings: Vec<(String, u64)>,
    /// Faults applied, by nemesis op name.
    pub faults: BTreeMap<String, u64>,
    /// Nemesis actions that failed to apply.
    pub faults_failed: u64,
    /// Completed ok operations per second over the history's span.
    pub ops_per_sec: f64,
    /// 99th percentile latency of acknowledged sends, in milliseconds.
    pub send_p99_ms: Option<f64>,
    /// The report, when written.
    pub report: Option<PathBuf>,
}

impl Summary {
    /// Reads the figures of the run in `run` (missing files leave their figures at zero).
    pub fn of_run(run: &Path, seed: u64) -> Summary {
        let mut s = Summary {
            run: run.to_path_buf(),
            seed,
            verdict: "unchecked".into(),
            ..Summary::default()
        };
        s.read_history(&run.join("history.jsonl"));
        s.read_results(&run.join("results.json"));
        let report = run.join("report.html");
        s.report = report.is_file().then_some(report);
        s
    }

    fn read_history(&mut self, path: &Path) {
        let Ok(file) = std::fs::File::open(path) else {
            return;
        };
        let mut invoked: HashMap<String, i64> = HashMap::new();
        let mut latencies: Vec<i64> = Vec::new();
        let (mut first, mut last, mut oks) = (i64::MAX, i64::MIN, 0u64);
        for line in std::io::BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            let Ok(op) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let t = op["time_ns"].as_i64().unwrap_or(0);
            first = first.min(t);
            last = last.max(t);
            let f = op["f"].as_str().unwrap_or("");
            if op["process"] == "nemesis" {
                if op["value"].get("error").is_some() {
                    self.faults_failed += 1;
                } else if !NOT_FAULTS.contains(&f) {
                    *self.faults.entry(f.to_string()).or_default() += 1;
                }
                continue;
            }
            let process = op["process"].to_string();
            let kind = op["type"].as_str().unwrap_or("");
            if kind == "invoke" {
                invoked.insert(process, t);
                continue;
            }
            let started = invoked.remove(&process);
            if kind == "ok" {
                oks += 1;
            }
            if f != "send" && f != "txn" {
                continue;
            }
            let sends = op["value"]
                .as_array()
                .map(|m| m.iter().filter(|m| m[0] == "send").count() as u64)
                .unwrap_or(0);
            match kind {
                "ok" => {
                    self.sends_ok += sends;
                    if f == "send" {
                        if let Some(s) = started {
                            latencies.push(t - s);
                        }
                    }
                }
                "fail" => self.sends_failed += sends,
                _ => self.sends_unknown += sends,
            }
        }
        if last > first {
            self.ops_per_sec = oks as f64 / ((last - first) as f64 / 1e9);
        }
        if !latencies.is_empty() {
            latencies.sort_unstable();
            let rank = ((latencies.len() as f64) * 0.99).ceil() as usize;
            let i = rank.clamp(1, latencies.len()) - 1;
            self.send_p99_ms = Some(latencies[i] as f64 / 1e6);
        }
    }

    fn read_results(&mut self, path: &Path) {
        let Some(v) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            return;
        };
        self.verdict = match &v["valid"] {
            serde_json::Value::Bool(true) => "valid".into(),
            serde_json::Value::Bool(false) => "invalid".into(),
            _ => "unknown".into(),
        };
        let count = |k: &str| v["anomalies"][k]["count"].as_u64().unwrap_or(0);
        self.lost = count("lost-write");
        self.unseen = count("unseen");
        self.duplicated = count("duplicate");
        let mut findings: Vec<(String, u64)> = v["invalidating"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str())
                    .map(|k| (k.to_string(), count(k)))
                    .filter(|(_, n)| *n > 0)
                    .collect()
            })
            .unwrap_or_default();
        findings.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        self.findings = findings;
    }

    /// The worst finding as `kind (count)`, or `-`.
    pub fn worst_finding(&self) -> String {
        self.findings
            .first()
            .map(|(k, c)| format!("{k} ({c})"))
            .unwrap_or_else(|| "-".into())
    }

    /// Faults by kind as `kill 3, start-partition 2`, or `none`.
    pub fn faults_line(&self) -> String {
        if self.faults.is_empty() {
            return "none".into();
        }
        self.faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The summary as the terminal shows it at the end of a run (`error`: why the run did not
    /// finish, when it did not).
    pub fn render(&self, error: Option<&anyhow::Error>) -> String {
        let verdict = match error {
            Some(e) => format!("no verdict: {e:#}"),
            None => self.verdict.clone(),
        };
        let mut out = format!("harness: summary\n  verdict    {verdict}\n");
        out += &format!(
            "  seed       {} (replay: --seed {})\n",
            self.seed, self.seed
        );
        out += &format!(
            "  sends      {} acknowledged, {} failed, {} unknown\n",
            self.sends_ok, self.sends_failed, self.sends_unknown
        );
        out += &format!(
            "  findings   lost {}, unseen {}, duplicated {}; invalidating: {}\n",
            self.lost,
            self.unseen,
            self.duplicated,
            if self.findings.is_empty() {
                "none".to_string()
            } else {
                self.findings
                    .iter()
                    .map(|(k, c)| format!("{k} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        out += &format!(
            "  faults     {}{}\n",
            self.faults_line(),
            if self.faults_failed > 0 {
                format!(" ({} nemesis actions failed)", self.faults_failed)
            } else {
                String::new()
            }
        );
        out += &format!(
            "  rate       {:.1} ok ops/s; acknowledged send p99 {}\n",
            self.ops_per_sec,
            self.send_p99_ms
                .map(|p| format!("{p:.1} ms"))
                .unwrap_or_else(|| "-".into())
        );
        out += &format!(
            "  report     {}",
            self.report
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| format!("none ({})", self.run.display()))
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_history_and_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = [
            r#"{"index":0,"time_ns":0,"process":0,"type":"invoke","f":"send","value":[["send","k0",1]]}"#,
            r#"{"index":1,"time_ns":2000000,"process":0,"type":"ok","f":"send","value":[["send","k0",[0,1]]]}"#,
            r#"{"index":2,"time_ns":2500000,"process":"nemesis","type":"info","f":"kill","value":{"nodes":["n1"]}}"#,
            r#"{"index":3,"time_ns":3000000,"process":1,"type":"invoke","f":"send","value":[["send","k1",2]]}"#,
            r#"{"index":4,"time_ns":4000000,"process":1,"type":"info","f":"send","value":[["send","k1",2]]}"#,
            r#"{"index":5,"time_ns":5000000,"process":"nemesis","type":"info","f":"start","value":{"nodes":["n1"]}}"#,
            r#"{"index":6,"time_ns":6000000,"process":2,"type":"invoke","f":"send","value":[["send","k2",3]]}"#,
            r#"{"index":7,"time_ns":1000000000,"process":2,"type":"fail","f":"send","value":[["send","k2",3]]}"#,
        ];
        std::fs::write(dir.path().join("history.jsonl"), lines.join("\n")).expect("write");
        std::fs::write(
            dir.path().join("results.json"),
            r#"{"valid":false,"invalidating":["lost-write","duplicate"],
                "anomalies":{"lost-write":{"count":2},"duplicate":{"count":5},"unseen":{"count":1}}}"#,
        )
        .expect("write");
        let s = Summary::of_run(dir.path(), 7);
        assert_eq!((s.sends_ok, s.sends_unknown, s.sends_failed), (1, 1, 1));
        assert_eq!((s.lost, s.unseen, s.duplicated), (2, 1, 5));
        assert_eq!(s.faults_line(), "kill 1", "a restart is not a fault");
        assert_eq!(s.worst_finding(), "duplicate (5)");
        assert_eq!(s.send_p99_ms, Some(2.0));
        assert_eq!(s.verdict, "invalid");
        let text = s.render(None);
        assert!(
            text.contains("seed       7") && text.contains("1 acknowledged"),
            "{text}"
        );
    }
}
