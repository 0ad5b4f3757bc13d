//! [`ReplicaLog`] for the broker's segmented [`Log`]: records travel as `Bytes` of concatenated
//! RecordBatch v2 (as in Produce and Fetch), truncation goes back to the start of the batch that
//! holds the target offset (as Kafka's segment truncation does), and the batch epochs come from
//! the log's batch headers.

use bytes::Bytes;

use super::replica_log::{AppendedBatches, BatchEpoch, ReplicaLog};
use crate::log::batch::BatchHeader;
use crate::log::{AppendInfo, Log, LogError};

/// Errors of the segmented log seen through [`ReplicaLog`].
#[derive(Debug, thiserror::Error)]
pub enum LogAdapterError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Restarting the log empty after its current start is not offered by `log::Log` yet.
    #[error("cannot restart the log empty at offset {offset}: it starts at {log_start} and log::Log can only restart at or before its start (needs Log::truncate_fully_and_start_at)")]
    CannotRestartAt {
        /// The requested new start.
        offset: i64,
        /// The log start offset.
        log_start: i64,
    },
}

fn batch_epoch(h: &BatchHeader) -> BatchEpoch {
    BatchEpoch {
        base_offset: h.base_offset,
        last_offset: h.last_offset(),
        epoch: h.partition_leader_epoch,
    }
}

fn appended(info: AppendInfo) -> AppendedBatches {
    AppendedBatches {
        first_offset: info.base_offset,
        last_offset: info.last_offset,
        batches: info.batches.iter().map(batch_epoch).collect(),
    }
}

impl ReplicaLog for Log {
    type Records = Bytes;
    type Error = LogAdapterError;

    fn log_start_offset(&self) -> i64 {
        Log::log_start_offset(self)
    }

    fn log_end_offset(&self) -> i64 {
        Log::log_end_offset(self)
    }

    fn append_as_leader(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendedBatches, LogAdapterError> {
        Ok(appended(Log::append_as_leader(
            self,
            &records,
            leader_epoch,
            now_ms,
        )?))
    }

    fn append_as_follower(
        &mut self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<AppendedBatches, LogAdapterError> {
        Ok(appended(Log::append_as_follower(self, &records, now_ms)?))
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogAdapterError> {
        match Log::truncate_to(self, offset) {
            Err(LogError::NotBatchBoundary(_)) => {
                // Inside a batch: drop the whole batch, as Kafka's segment truncation does.
                let base = self
                    .batch_headers()?
                    .iter()
                    .find(|h| h.base_offset <= offset && offset <= h.last_offset())
                    .map_or(offset, |h| h.base_offset);
                Ok(Log::truncate_to(self, base)?)
            }
            other => Ok(other?),
        }
    }

    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogAdapterError> {
        let log_start = Log::log_start_offset(self);
        if offset > log_start {
            return Err(LogAdapterError::CannotRestartAt { offset, log_start });
        }
        // At or before the first segment, `Log::truncate_to` empties the log and restarts it.
        Ok(Log::truncate_to(self, offset)?)
    }

    fn batch_epochs(&self) -> Result<Vec<BatchEpoch>, LogAdapterError> {
        Ok(self.batch_headers()?.iter().map(batch_epoch).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::build_batch;
    use crate::log::LogConfig;
    use crate::replication::epoch_cache::{LeaderEpochCache, FILE_NAME};

    fn batch(values: &[&str]) -> Bytes {
        let records: Vec<_> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
        Bytes::from(build_batch(0, 1_000, &records))
    }

    #[test]
    fn epoch_cache_is_rebuilt_from_real_batch_headers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        let a = ReplicaLog::append_as_leader(&mut log, batch(&["a", "b"]), 3, 0).unwrap();
        assert_eq!((a.first_offset, a.last_offset), (0, 1));
        assert_eq!(a.batches[0].epoch, 3);
        ReplicaLog::append_as_leader(&mut log, batch(&["c"]), 3, 0).unwrap();
        ReplicaLog::append_as_leader(&mut log, batch(&["d"]), 5, 0).unwrap();
        let cache = LeaderEpochCache::open(dir.path(), &log).unwrap();
        let got: Vec<_> = cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        assert_eq!(got, vec![(3, 0), (5, 3)]);
        // The checkpoint sits next to the segments without disturbing the log's reopen.
        assert!(dir.path().join(FILE_NAME).exists());
        drop(log);
        let (log, _) = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        assert_eq!(ReplicaLog::log_end_offset(&log), 4);
    }

    #[test]
    fn truncation_inside_a_batch_drops_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        ReplicaLog::append_as_leader(&mut log, batch(&["a"]), 1, 0).unwrap();
        ReplicaLog::append_as_leader(&mut log, batch(&["b", "c", "d"]), 1, 0).unwrap();
        ReplicaLog::truncate_to(&mut log, 2).unwrap();
        assert_eq!(ReplicaLog::log_end_offset(&log), 1);
        assert!(matches!(
            ReplicaLog::truncate_fully_and_start_at(&mut log, 9),
            Err(LogAdapterError::CannotRestartAt {
                offset: 9,
                log_start: 0
            })
        ));
        ReplicaLog::truncate_fully_and_start_at(&mut log, 0).unwrap();
        assert_eq!(ReplicaLog::log_end_offset(&log), 0);
    }
}
