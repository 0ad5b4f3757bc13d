//! The run store, laid out like Jepsen's: `store/<test-name>/<timestamp>/` holding
//! `history.jsonl`, `results.json`, `test.json`, `nodes/<node>/` and `report.html`, with
//! `store/latest` and `store/<test-name>/latest` symlinks to the newest run.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

/// Store errors, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A test name that cannot be a directory name.
    #[error("test name `{0}` must be letters, digits, '-' or '_'")]
    BadName(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// One run's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
}

/// Where the `latest` link at `link` points, as a path usable from the current directory
/// (links are relative to their own folder); None when there is no such link.
pub fn resolve_latest(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    Some(if target.is_absolute() {
        target
    } else {
        link.parent().unwrap_or(Path::new(".")).join(target)
    })
}

/// The folder name of a run started at `at`: `YYYYMMDDTHHMMSS.mmmZ` (sorts by time).
pub fn timestamp_name(at: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(at).to_string(); // 2026-11-24T21:22:40.123Z
    s.replace(['-', ':'], "")
}

impl RunDir {
    /// Creates `root/<test>/<timestamp>/` (and `nodes/`) and points the `latest` links at it.
    pub fn create(root: &Path, test: &str, at: SystemTime) -> Result<RunDir, StoreError> {
        if test.is_empty()
            || !test
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(StoreError::BadName(test.to_string()));
        }
        let test_dir = root.join(test);
        std::fs::create_dir_all(&test_dir).map_err(io("creating", &test_dir))?;
        // Two runs in the same millisecond (a parallel sweep's children) get distinct folders:
        // `create_dir` claims a name atomically.
        let mut path = test_dir.join(timestamp_name(at));
        let mut n = 1;
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    path = test_dir.join(format!("{}-{n}", timestamp_name(at)));
                    n += 1;
                }
                Err(e) => return Err(io("creating", &path)(e)),
            }
        }
        std::fs::create_dir_all(path.join("nodes")).map_err(io("creating", &path))?;
        let run = RunDir { path };
        run.link(&test_dir.join("latest"))?;
        run.link(&root.join("latest"))?;
        Ok(run)
    }

    /// Points the symlink `at` here, relative to `at`'s folder (so a store can be archived or
    /// moved), through a temporary link renamed over the old one.
    fn link(&self, at: &Path) -> Result<(), StoreError> {
        // One temporary name per process: runs created at once do not race on it.
        let tmp = at.with_extension(format!("tmp-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let base = at.parent().unwrap_or(Path::new("."));
        let target = match self.path.strip_prefix(base) {
            Ok(rel) => rel.to_path_buf(),
            Err(_) => self
                .path
                .canonicalize()
                .map_err(io("resolving", &self.path))?,
        };
        std::os::unix::fs::symlink(&target, &tmp).map_err(io("linking", &tmp))?;
        std::fs::rename(&tmp, at).map_err(io("replacing link", at))
    }

    /// `history.jsonl`.
    pub fn history(&self) -> PathBuf {
        self.path.join("history.jsonl")
    }

    /// `results.json`.
    pub fn results(&self) -> PathBuf {
        self.path.join("results.json")
    }

    /// `test.json` (spec, seed, versions, command line).
    pub fn test_json(&self) -> PathBuf {
        self.path.join("test.json")
    }

    /// `report.html`.
    pub fn report(&self) -> PathBuf {
        self.path.join("report.html")
    }

    /// `nodes/<node>/`, created on demand.
    pub fn node_dir(&self, node: &str) -> Result<PathBuf, StoreError> {
        let p = self.path.join("nodes").join(node);
        std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
        Ok(p)
    }

    /// Writes `value` as pretty JSON to `file` in the run directory, atomically.
    pub fn write_json(&self, file: &Path, value: &serde_json::Value) -> Result<(), StoreError> {
        let tmp = file.with_extension("tmp");
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
        std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, file).map_err(io("renaming", file))
    }
}

/// A matrix's directory: `root/<name>/<timestamp>/`, holding `matrix.html`, `matrix.md`,
/// `matrix.json` and one run store per cell (`<cell>/<timestamp>/`). `root/<name>/latest`
/// points at the newest; `root/latest` is left to runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixDir {
    /// The directory.
    pub path: PathBuf,
}

impl MatrixDir {
    /// Creates `root/<name>/<timestamp>/` and points `root/<name>/latest` at it.
    pub fn create(root: &Path, name: &str, at: SystemTime) -> Result<MatrixDir, StoreError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(StoreError::BadName(name.to_string()));
        }
        let dir = root.join(name);
        let mut path = dir.join(timestamp_name(at));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("{}-{n}", timestamp_name(at)));
            n += 1;
        }
        std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
        let m = MatrixDir { path };
        RunDir {
            path: m.path.clone(),
        }
        .link(&dir.join("latest"))?;
        Ok(m)
    }

    /// `matrix.html`.
    pub fn html(&self) -> PathBuf {
        self.path.join("matrix.html")
    }

    /// `matrix.md`.
    pub fn markdown(&self) -> PathBuf {
        self.path.join("matrix.md")
    }

    /// `matrix.json` (the cells' figures, for scripts).
    pub fn json(&self) -> PathBuf {
        self.path.join("matrix.json")
    }
}

/// What a store listing says of one run or matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// Path relative to the store root (`<test>/<timestamp>`, or deeper for a matrix's runs).
    pub rel: String,
    /// `run` or `matrix`.
    pub kind: &'static str,
    /// `valid`, `invalid`, `unknown`, or `unchecked` (no results.json yet); for a matrix,
    /// `matrix`.
    pub verdict: String,
    /// Invalidating anomaly kinds found, with counts (`lost-write: 3`).
    pub findings: Vec<String>,
    /// Whether a report (`report.html` or `matrix.html`) exists.
    pub has_report: bool,
}

/// Lists every run (a folder holding `test.json`, `history.jsonl` or `results.json`) and every matrix (a folder
/// holding `matrix.html` or `matrix.json`) under `root`, at most `depth` levels down, newest
/// first by path; symlinks (`latest`) are not followed.
pub fn list(root: &Path, depth: usize) -> Vec<Listed> {
    let mut out = Vec::new();
    walk(root, root, depth, &mut out);
    out.sort_by(|a, b| b.rel.cmp(&a.rel));
    out
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Listed>) {
    let rel = dir
        .strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir.join("matrix.html").is_file() || dir.join("matrix.json").is_file() {
        out.push(Listed {
            rel: rel.clone(),
            kind: "matrix",
            verdict: "matrix".into(),
            findings: Vec::new(),
            has_report: dir.join("matrix.html").is_file(),
        });
    } else if ["test.json", "history.jsonl", "results.json"]
        .iter()
        .any(|f| dir.join(f).is_file())
    {
        let (verdict, findings) = run_verdict(dir);
        out.push(Listed {
            rel,
            kind: "run",
            verdict,
            findings,
            has_report: dir.join("report.html").is_file(),
        });
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let name = e.file_name();
        if is_dir && name != "nodes" && name != "work" {
            walk(root, &e.path(), depth - 1, out);
        }
    }
}

/// The verdict word and the invalidating findings of a run folder, from its results.json.
pub fn run_verdict(dir: &Path) -> (String, Vec<String>) {
    let Some(results) = std::fs::read_to_string(dir.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return ("unchecked".into(), Vec::new());
    };
    let verdict = match crate::verdict::Verdict::from_valid(&results["valid"]) {
        crate::verdict::Verdict::Valid => "valid",
        crate::verdict::Verdict::Invalid => "invalid",
        _ => "unknown",
    };
    let invalidating: Vec<&str> = results["invalidating"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let findings = results["anomalies"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| invalidating.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}: {}", v["count"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    (verdict.into(), findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn runs_are_laid_out_by_test_and_time_with_latest_links() {
        let root = tempfile::tempdir().expect("tempdir");
        let t1 = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let a = RunDir::create(root.path(), "queue", t1).expect("run a");
        assert!(
            a.path.ends_with("queue/20261118T110640.123Z"),
            "{}",
            a.path.display()
        );
        let b = RunDir::create(root.path(), "queue", t1).expect("same millisecond");
        assert_ne!(a, b);
        for link in [root.path().join("latest"), root.path().join("queue/latest")] {
            let target = std::fs::read_link(&link).expect("a symlink");
            assert!(target.is_relative(), "{}", target.display());
            let resolved = resolve_latest(&link).expect("resolves");
            assert_eq!(
                resolved.canonicalize().expect("exists"),
                b.path.canonicalize().expect("exists")
            );
        }
        // A moved store keeps working links.
        let moved = tempfile::tempdir().expect("tempdir");
        let new_root = moved.path().join("archived");
        std::fs::rename(root.path(), &new_root).expect("move the store");
        let resolved = resolve_latest(&new_root.join("queue/latest")).expect("resolves");
        assert!(resolved.join("nodes").is_dir(), "{}", resolved.display());
        std::fs::rename(&new_root, root.path()).expect("move it back");
        assert!(b.path.join("nodes").is_dir());
        b.write_json(&b.results(), &serde_json::json!({"valid": true}))
            .expect("write");
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(b.results()).expect("read"))
                .expect("json");
        assert_eq!(back["valid"], true);
        assert!(matches!(
            RunDir::create(root.path(), "../escape", t1),
            Err(StoreError::BadName(_))
        ));
        a.write_json(&a.test_json(), &serde_json::json!({}))
            .expect("write");
        let listed = list(root.path(), 4);
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].verdict, "valid");
        assert_eq!(listed[1].verdict, "unchecked");
        let m = MatrixDir::create(root.path(), "matrix", t1).expect("matrix dir");
        std::fs::write(m.json(), "{}").expect("write");
        assert!(list(root.path(), 4).iter().any(|l| l.kind == "matrix"));
        assert_eq!(
            resolve_latest(&root.path().join("latest"))
                .and_then(|p| p.canonicalize().ok())
                .expect("link"),
            b.path.canonicalize().expect("exists"),
            "a matrix leaves store/latest to runs"
        );
    }
}
