//! Kafka's leader-epoch cache of one partition (`LeaderEpochFileCache`): the start offset of
//! every leader epoch in the replica's log, persisted as `leader-epoch-checkpoint` in the
//! partition directory (version 0, a count, then `epoch start_offset` lines; replaced atomically
//! on every change) and rebuilt from the log's batch headers when the file is missing. It answers
//! OffsetsForLeaderEpoch and drives follower truncation (KIP-101, KIP-279).

use std::path::{Path, PathBuf};

use super::checkpoint::{self, CheckpointError};
use super::replica_log::ReplicaLog;
use super::{EpochEndOffset, UNDEFINED_EPOCH};

/// The checkpoint file's name inside the partition directory (as Kafka names it).
pub const FILE_NAME: &str = "leader-epoch-checkpoint";

/// The checkpoint file format version (Kafka's `LeaderEpochCheckpointFile` version 0).
pub const FILE_VERSION: u32 = 0;

/// One epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// The first offset of that epoch.
    pub start_offset: i64,
}

/// Errors of the epoch cache.
#[derive(Debug, thiserror::Error)]
pub enum EpochCacheError {
    /// Reading or writing the checkpoint file failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An entry with a negative epoch or offset was assigned or read.
    #[error("invalid leader epoch entry (epoch {epoch}, start offset {start_offset}) in {path}: epochs and offsets must be >= 0")]
    InvalidEntry {
        /// The checkpoint file.
        path: PathBuf,
        /// The epoch given.
        epoch: i32,
        /// The offset given.
        start_offset: i64,
    },
    /// Reading the log's batch headers to rebuild the cache failed.
    #[error("rebuilding {path} from the log failed: {source}")]
    Rebuild {
        /// The checkpoint file being rebuilt.
        path: PathBuf,
        /// The log's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The leader-epoch cache of one partition, kept in step with its checkpoint file.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    /// Sorted by epoch; start offsets are strictly increasing too.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Opens the cache of the partition in `dir`: reads `leader-epoch-checkpoint`, or rebuilds it
    /// from `log`'s batch headers if the file is missing; then drops entries outside the log
    /// (Kafka does the same after log recovery).
    pub fn open<L: ReplicaLog>(dir: &Path, log: &L) -> Result<Self, EpochCacheError> {
        let path = dir.join(FILE_NAME);
        let mut cache = LeaderEpochCache {
            path: path.clone(),
            entries: Vec::new(),
        };
        match checkpoint::read_entries(&path, FILE_VERSION)? {
            Some(lines) => {
                for (i, line) in lines.iter().enumerate() {
                    let [epoch, start_offset]: [i64; 2] = checkpoint::parse_fields(&path, i, line)?;
                    let epoch = i32::try_from(epoch).map_err(|_| CheckpointError::Malformed {
                        path: path.clone(),
                        line: i + 3,
                        reason: format!("epoch {epoch} out of range"),
                    })?;
                    cache.assign_in_memory(epoch, start_offset)?;
                }
            }
            None => {
                let batches = log.batch_epochs().map_err(|e| EpochCacheError::Rebuild {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                for b in batches {
                    if b.epoch >= 0 {
                        cache.assign_in_memory(b.epoch, b.base_offset)?;
                    }
                }
                tracing::info!(file = %path.display(), entries = cache.entries.len(),
                    "leader epoch checkpoint missing: rebuilt from the log");
                cache.flush()?;
            }
        }
        cache.truncate_from_end(log.log_end_offset())?;
        cache.truncate_from_start(log.log_start_offset())?;
        Ok(cache)
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry, in epoch order.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The latest entry, if any.
    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The latest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The start offset of `epoch`, if the cache has it.
    pub fn start_offset_of(&self, epoch: i32) -> Option<i64> {
        self.entries
            .binary_search_by_key(&epoch, |e| e.epoch)
            .ok()
            .map(|i| self.entries[i].start_offset)
    }

    /// Records that `epoch` starts at `start_offset` and persists the change. Like Kafka's
    /// `assign`: a no-op if `epoch` is the latest epoch and `start_offset` is not earlier than its
    /// start; otherwise entries that would break monotonicity (epoch or start offset not below
    /// the new entry's) are removed first. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, EpochCacheError> {
        let changed = self.assign_in_memory(epoch, start_offset)?;
        if changed {
            self.flush()?;
        }
        Ok(changed)
    }

    fn assign_in_memory(&mut self, epoch: i32, start_offset: i64) -> Result<bool, EpochCacheError> {
        if epoch < 0 || start_offset < 0 {
            return Err(EpochCacheError::InvalidEntry {
                path: self.path.clone(),
                epoch,
                start_offset,
            });
        }
        let needed = match self.entries.last() {
            Some(last) => epoch != last.epoch || start_offset < last.start_offset,
            None => true,
        };
        if !needed {
            return Ok(false);
        }
        let before = self.entries.len();
        while let Some(last) = self.entries.last() {
            if last.epoch >= epoch || last.start_offset >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        let removed = before - self.entries.len();
        if removed > 1 {
            tracing::warn!(file = %self.path.display(), epoch, start_offset, removed,
                "leader epoch cache: new entry removed non-monotonic entries");
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        Ok(true)
    }

    /// The answer shared by both lookups: UNDEFINED for `UNDEFINED_EPOCH`, the log end offset
    /// for the latest epoch; `None` otherwise.
    fn undefined_or_latest(
        &self,
        requested_epoch: i32,
        log_end_offset: i64,
    ) -> Option<EpochEndOffset> {
        if requested_epoch == UNDEFINED_EPOCH {
            Some(EpochEndOffset::UNDEFINED)
        } else if self.latest_epoch() == Some(requested_epoch) {
            Some(EpochEndOffset {
                epoch: requested_epoch,
                end_offset: log_end_offset,
            })
        } else {
            None
        }
    }

    /// The answer to OffsetsForLeaderEpoch for `requested_epoch`, exactly as Kafka's
    /// `endOffsetFor`: the largest known epoch at or below the request and the start offset of
    /// the next known epoch; `log_end_offset` for the latest epoch; the requested epoch and the
    /// first known epoch's start when the request is older than every known epoch; UNDEFINED
    /// for `UNDEFINED_EPOCH`, for an epoch newer than all known ones, and for an empty cache.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> EpochEndOffset {
        if let Some(answer) = self.undefined_or_latest(requested_epoch, log_end_offset) {
            return answer;
        }
        // First entry with epoch > requested.
        let higher = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let Some(higher_entry) = self.entries.get(higher) else {
            return EpochEndOffset::UNDEFINED;
        };
        if higher == 0 {
            EpochEndOffset {
                epoch: requested_epoch,
                end_offset: higher_entry.start_offset,
            }
        } else {
            EpochEndOffset {
                epoch: self.entries[higher - 1].epoch,
                end_offset: higher_entry.start_offset,
            }
        }
    }

    /// The pre-KIP-279 answer (KAFKA-6361, for [`super::ReplicationBugs::epoch_lookup_next_epoch`]):
    /// the start offset of the first epoch above the requested one, labelled with the requested
    /// epoch; the log end offset for the latest epoch; UNDEFINED when the request is older than
    /// every known epoch or newer than all of them.
    pub fn end_offset_for_pre_kip279(
        &self,
        requested_epoch: i32,
        log_end_offset: i64,
    ) -> EpochEndOffset {
        if let Some(answer) = self.undefined_or_latest(requested_epoch, log_end_offset) {
            return answer;
        }
        let first_epoch = match self.entries.first() {
            Some(e) => e.epoch,
            None => return EpochEndOffset::UNDEFINED,
        };
        let higher = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        match self.entries.get(higher) {
            Some(next) if requested_epoch >= first_epoch => EpochEndOffset {
                epoch: requested_epoch,
                end_offset: next.start_offset,
            },
            _ => EpochEndOffset::UNDEFINED,
        }
    }

    /// The log was truncated so that it ends at `end_offset`: removes entries starting at or
    /// after it (Kafka's `truncateFromEnd`). Persists if anything changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), EpochCacheError> {
        if end_offset < 0 {
            return Ok(());
        }
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.flush()?;
        }
        Ok(())
    }

    /// The log now starts at `start_offset` (retention, DeleteRecords, or a follower restarting
    /// at the leader's start): removes entries that start at or before it and re-adds the last
    /// of them starting at `start_offset` (Kafka's `truncateFromStart`). Persists if anything
    /// changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), EpochCacheError> {
        let removed = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if removed == 0 {
            return Ok(());
        }
        let last_removed = self.entries[removed - 1];
        let changed = removed > 1 || last_removed.start_offset != start_offset;
        self.entries.drain(..removed - 1);
        self.entries[0].start_offset = start_offset;
        if changed {
            self.flush()?;
        }
        Ok(())
    }

    /// Removes every entry (the log was emptied and restarted) and persists.
    pub fn clear(&mut self) -> Result<(), EpochCacheError> {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), EpochCacheError> {
        let lines: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} {}", e.epoch, e.start_offset))
            .collect();
        checkpoint::write_atomically(&self.path, FILE_VERSION, &lines)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::mem_log::{MemBatch, MemLog};
    use proptest::prelude::*;

    fn cache_with(dir: &Path, entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::open(dir, &MemLog::new()).unwrap();
        for &(e, o) in entries {
            c.assign(e, o).unwrap();
        }
        c
    }

    fn ee(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    fn eo(epoch: i32, end_offset: i64) -> EpochEndOffset {
        EpochEndOffset { epoch, end_offset }
    }

    #[test]
    fn end_offset_for_matches_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache_with(dir.path(), &[(2, 10), (4, 20), (7, 35)]);
        let leo = 50;
        assert_eq!(
            c.end_offset_for(UNDEFINED_EPOCH, leo),
            EpochEndOffset::UNDEFINED
        );
        // Latest epoch: the log end offset.
        assert_eq!(c.end_offset_for(7, leo), eo(7, 50));
        // Known, not latest: the next epoch's start.
        assert_eq!(c.end_offset_for(2, leo), eo(2, 20));
        assert_eq!(c.end_offset_for(4, leo), eo(4, 35));
        // Unknown epoch between known ones: largest epoch below, next epoch's start (KIP-279).
        assert_eq!(c.end_offset_for(3, leo), eo(2, 20));
        assert_eq!(c.end_offset_for(6, leo), eo(4, 35));
        // Older than all: requested epoch, first known start.
        assert_eq!(c.end_offset_for(1, leo), eo(1, 10));
        assert_eq!(c.end_offset_for(0, leo), eo(0, 10));
        // Newer than all: undefined.
        assert_eq!(c.end_offset_for(8, leo), EpochEndOffset::UNDEFINED);
        // Empty cache: undefined.
        let dir2 = tempfile::tempdir().unwrap();
        let empty = cache_with(dir2.path(), &[]);
        assert_eq!(empty.end_offset_for(0, 0), EpochEndOffset::UNDEFINED);
    }

    #[test]
    fn pre_kip279_answer_uses_the_next_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache_with(dir.path(), &[(1, 0), (3, 20)]);
        // Epoch 2 was never seen: Kafka 2.0+ says (1, 20); pre-KIP-279 said (2, 20).
        assert_eq!(c.end_offset_for(2, 30), eo(1, 20));
        assert_eq!(c.end_offset_for_pre_kip279(2, 30), eo(2, 20));
        assert_eq!(c.end_offset_for_pre_kip279(3, 30), eo(3, 30));
        assert_eq!(
            c.end_offset_for_pre_kip279(0, 30),
            EpochEndOffset::UNDEFINED
        );
        assert_eq!(
            c.end_offset_for_pre_kip279(4, 30),
            EpochEndOffset::UNDEFINED
        );
    }

    #[test]
    fn assign_keeps_monotonic_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cache_with(dir.path(), &[(1, 0), (2, 5)]);
        // Same epoch, later offset: no change.
        assert!(!c.assign(2, 9).unwrap());
        // Same epoch, earlier offset: replaced.
        assert!(c.assign(2, 3).unwrap());
        assert_eq!(c.entries(), &[ee(1, 0), ee(2, 3)]);
        // A new epoch at an offset not after existing ones removes those entries.
        assert!(c.assign(5, 3).unwrap());
        assert_eq!(c.entries(), &[ee(1, 0), ee(5, 3)]);
        // A lower epoch removes the higher ones.
        assert!(c.assign(3, 4).unwrap());
        assert_eq!(c.latest_epoch(), Some(3));
        assert_eq!(c.entries().len(), 2);
        assert!(matches!(
            c.assign(-1, 3),
            Err(EpochCacheError::InvalidEntry { .. })
        ));
        assert!(matches!(
            c.assign(3, -3),
            Err(EpochCacheError::InvalidEntry { .. })
        ));
    }

    #[test]
    fn truncation_from_end_and_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cache_with(dir.path(), &[(1, 0), (2, 10), (3, 20), (4, 30)]);
        c.truncate_from_end(20).unwrap();
        assert_eq!(c.latest_epoch(), Some(2));
        c.truncate_from_end(-1).unwrap();
        assert_eq!(c.entries().len(), 2);
        c.assign(3, 20).unwrap();
        c.truncate_from_start(15).unwrap();
        assert_eq!(c.entries(), &[ee(2, 15), ee(3, 20)]);
        c.truncate_from_start(20).unwrap();
        assert_eq!(c.entries(), &[ee(3, 20)]);
        c.truncate_from_start(5).unwrap();
        assert_eq!(c.entries(), &[ee(3, 20)]);
        c.clear().unwrap();
        assert!(c.entries().is_empty());
        let reopened = LeaderEpochCache::open(dir.path(), &MemLog::new()).unwrap();
        assert!(reopened.entries().is_empty());
    }

    fn log_with_epochs(epochs: &[(i32, usize)]) -> MemLog {
        let mut log = MemLog::new();
        for &(epoch, n) in epochs {
            for i in 0..n {
                log.append_as_leader(vec![MemBatch::new([format!("e{epoch}-{i}")])], epoch, 0)
                    .unwrap();
            }
        }
        log
    }

    #[test]
    fn file_survives_reopen_and_is_rebuilt_when_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_with_epochs(&[(0, 3), (2, 4), (5, 2)]);
        {
            let mut c = LeaderEpochCache::open(dir.path(), &log).unwrap();
            // Missing file: rebuilt from the batch headers and written.
            assert_eq!(c.entries(), &[ee(0, 0), ee(2, 3), ee(5, 7),]);
            // A leader epoch with no writes yet (KAFKA-7415) must be persisted too.
            c.assign(6, 9).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "0\n4\n0 0\n2 3\n5 7\n6 9\n");
        // Reopened against the same log, the epoch-6 entry (no write yet, starting at the log
        // end) is dropped, as Kafka's `truncateFromEnd(logEndOffset)` after loading drops it ...
        let c = LeaderEpochCache::open(dir.path(), &log).unwrap();
        assert_eq!(c.latest_entry(), Some(ee(5, 7)));
        // ... and kept once the log has a record in epoch 6.
        let mut log = log;
        log.append_as_leader(vec![MemBatch::new(["e6"])], 6, 0)
            .unwrap();
        let mut c = LeaderEpochCache::open(dir.path(), &log).unwrap();
        c.assign(6, 9).unwrap();
        let c = LeaderEpochCache::open(dir.path(), &log).unwrap();
        assert_eq!(c.latest_entry(), Some(ee(6, 9)));
        // Deleted: rebuilt from the batch headers, identical, and written again.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let rebuilt = LeaderEpochCache::open(dir.path(), &log).unwrap();
        assert_eq!(rebuilt.entries(), c.entries());
        assert!(dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn open_drops_entries_outside_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let long = log_with_epochs(&[(0, 3), (2, 4), (5, 2)]);
        LeaderEpochCache::open(dir.path(), &long).unwrap();
        // The log lost its tail (an unflushed crash) and its head (retention).
        let mut short = long.clone();
        short.truncate_to(5).unwrap();
        short.advance_start(1);
        let c = LeaderEpochCache::open(dir.path(), &short).unwrap();
        assert_eq!(c.entries(), &[ee(0, 1), ee(2, 3),]);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "0\n1\n3 x\n").unwrap();
        let err = LeaderEpochCache::open(dir.path(), &MemLog::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("leader-epoch-checkpoint") && err.contains("delete the file"),
            "{err}"
        );
    }

    /// A naive model of Kafka's answer, for the property test.
    fn model_end_offset(entries: &[(i32, i64)], requested: i32, leo: i64) -> EpochEndOffset {
        if requested < 0 || entries.is_empty() {
            return EpochEndOffset::UNDEFINED;
        }
        if entries.last().map(|e| e.0) == Some(requested) {
            return eo(requested, leo);
        }
        let floor = entries.iter().rev().find(|e| e.0 <= requested);
        let higher = entries.iter().find(|e| e.0 > requested);
        match (floor, higher) {
            (_, None) => EpochEndOffset::UNDEFINED,
            (None, Some(h)) => eo(requested, h.1),
            (Some(f), Some(h)) => eo(f.0, h.1),
        }
    }

    proptest! {
        #[test]
        fn end_offset_for_agrees_with_model(
            steps in proptest::collection::vec((0i32..4, 1i64..5), 0..8),
            requested in -1i32..20,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut entries = Vec::new();
            let (mut epoch, mut offset) = (0i32, 0i64);
            for (de, dof) in steps {
                epoch += de + 1;
                offset += dof;
                entries.push((epoch, offset));
            }
            let c = cache_with(dir.path(), &entries);
            let leo = offset + 3;
            prop_assert_eq!(c.end_offset_for(requested, leo), model_end_offset(&entries, requested, leo));
            // The answer never points past the log end.
            let ans = c.end_offset_for(requested, leo);
            prop_assert!(ans.end_offset <= leo);
        }
    }
}
