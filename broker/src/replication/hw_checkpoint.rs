//! The high-watermark checkpoint of a log directory (Kafka's `replication-offset-checkpoint`):
//! version 0, a count, then `topic partition high_watermark` lines, replaced atomically. The
//! server writes it periodically and on clean shutdown; [`super::partition::Partition::open`]
//! takes the value back on restart. A stale value here is exactly what pre-KIP-101 truncation
//! (`ReplicationBugs::hw_truncation`) trusted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, CheckpointError};

/// The checkpoint file's name inside a log directory (as Kafka names it).
pub const FILE_NAME: &str = "replication-offset-checkpoint";

const VERSION: u32 = 0;

/// High watermarks by (topic, partition).
pub type HighWatermarks = BTreeMap<(String, i32), i64>;

/// The high-watermark checkpoint file of one log directory.
#[derive(Debug, Clone)]
pub struct HighWatermarkCheckpoint {
    path: PathBuf,
}

impl HighWatermarkCheckpoint {
    /// The checkpoint of the log directory `log_dir`.
    pub fn new(log_dir: &Path) -> Self {
        HighWatermarkCheckpoint {
            path: log_dir.join(FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every partition's high watermark (empty if the file does not exist yet).
    pub fn read(&self) -> Result<HighWatermarks, CheckpointError> {
        let Some(lines) = checkpoint::read_entries(&self.path, VERSION)? else {
            return Ok(HighWatermarks::new());
        };
        let mut out = HighWatermarks::new();
        for (i, line) in lines.iter().enumerate() {
            let malformed = |reason: String| CheckpointError::Malformed {
                path: self.path.clone(),
                line: i + 3,
                reason,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [topic, partition, offset] = fields[..] else {
                return Err(malformed(format!(
                    "expected `topic partition offset`, found {line:?}"
                )));
            };
            let partition: i32 = partition
                .parse()
                .map_err(|_| malformed(format!("partition {partition:?} is not a number")))?;
            let offset: i64 = offset
                .parse()
                .map_err(|_| malformed(format!("offset {offset:?} is not a number")))?;
            out.insert((topic.to_owned(), partition), offset);
        }
        Ok(out)
    }

    /// Replaces the file with `high_watermarks`.
    pub fn write(&self, high_watermarks: &HighWatermarks) -> Result<(), CheckpointError> {
        let lines: Vec<String> = high_watermarks
            .iter()
            .map(|((topic, partition), hw)| format!("{topic} {partition} {hw}"))
            .collect();
        checkpoint::write_atomically(&self.path, VERSION, &lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cp = HighWatermarkCheckpoint::new(dir.path());
        assert!(cp.read().unwrap().is_empty());
        let mut hws = HighWatermarks::new();
        hws.insert(("orders".into(), 0), 42);
        hws.insert(("orders".into(), 1), 7);
        hws.insert(("k.v-x_y".into(), 3), 0);
        cp.write(&hws).unwrap();
        assert_eq!(cp.read().unwrap(), hws);
        let text = std::fs::read_to_string(cp.path()).unwrap();
        assert_eq!(text, "0\n3\nk.v-x_y 3 0\norders 0 42\norders 1 7\n");
        std::fs::write(cp.path(), "0\n1\norders x 3\n").unwrap();
        let err = cp.read().unwrap_err().to_string();
        assert!(
            err.contains("partition \"x\"") && err.contains(FILE_NAME),
            "{err}"
        );
        std::fs::write(cp.path(), "0\n1\norders 1\n").unwrap();
        assert!(cp
            .read()
            .unwrap_err()
            .to_string()
            .contains("expected `topic partition offset`"));
    }
}
