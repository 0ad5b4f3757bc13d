//! The run store, laid out like Jepsen's: `store/<test-name>/<timestamp>/` holding
//! `history.jsonl`, `results.json`, `test.json`, `nodes/<node>/` and `report.html`, with
//! `store/latest` and `store/<test-name>/latest` symlinks to the newest run.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

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
        let mut path = test_dir.join(timestamp_name(at));
        // Two runs in the same millisecond get distinct folders.
        let mut n = 1;
        while path.exists() {
            path = test_dir.join(format!("{}-{n}", timestamp_name(at)));
            n += 1;
        }
        std::fs::create_dir_all(path.join("nodes")).map_err(io("creating", &path))?;
        let run = RunDir { path };
        run.link(&test_dir.join("latest"))?;
        run.link(&root.join("latest"))?;
        Ok(run)
    }

    fn link(&self, at: &Path) -> Result<(), StoreError> {
        let tmp = at.with_extension("tmp-link");
        let _ = std::fs::remove_file(&tmp);
        let target = self
            .path
            .canonicalize()
            .map_err(io("resolving", &self.path))?;
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
            assert_eq!(target, b.path.canonicalize().expect("exists"));
        }
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
    }
}
