//! An in-memory [`ReplicaLog`] of whole batches of string values: for the deterministic
//! simulator and for replication tests that need many brokers' logs side by side.

use super::replica_log::{AppendedBatches, BatchEpoch, ReplicaLog};

/// One batch as the in-memory log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemBatch {
    /// Base offset (assigned by the leader's append).
    pub base_offset: i64,
    /// Partition leader epoch (stamped by the leader's append).
    pub leader_epoch: i32,
    /// The records' values.
    pub values: Vec<String>,
}

impl MemBatch {
    /// A batch of `values` to hand to a leader append (offset and epoch are assigned there).
    pub fn new<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Self {
        MemBatch {
            base_offset: 0,
            leader_epoch: -1,
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    /// The last offset in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.values.len() as i64 - 1
    }
}

/// Errors of the in-memory log.
#[derive(Debug, thiserror::Error)]
pub enum MemLogError {
    /// A follower append did not start at the log end offset.
    #[error("follower append at offset {got} but the log ends at {expected}")]
    NonContiguous {
        /// Expected base offset.
        expected: i64,
        /// Base offset received.
        got: i64,
    },
    /// An empty batch was appended.
    #[error("empty batch")]
    EmptyBatch,
}

/// An in-memory log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemLog {
    start: i64,
    batches: Vec<MemBatch>,
}

impl MemLog {
    /// An empty log starting at offset 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored batches.
    pub fn batches(&self) -> &[MemBatch] {
        &self.batches
    }

    /// Every `(offset, value, epoch)` in the log, in order.
    pub fn records(&self) -> Vec<(i64, String, i32)> {
        self.batches
            .iter()
            .flat_map(|b| {
                b.values
                    .iter()
                    .enumerate()
                    .map(move |(i, v)| (b.base_offset + i as i64, v.clone(), b.leader_epoch))
            })
            .collect()
    }

    /// The whole batches holding offsets in `[start, max_offset_exclusive)`, as a leader serves
    /// a fetch.
    pub fn read(&self, start: i64, max_offset_exclusive: i64) -> Vec<MemBatch> {
        self.batches
            .iter()
            .filter(|b| b.last_offset() >= start && b.base_offset < max_offset_exclusive)
            .cloned()
            .collect()
    }

    /// Deletes whole batches that end before `offset` and moves the log start there, as
    /// retention (or DeleteRecords) does.
    pub fn advance_start(&mut self, offset: i64) {
        self.batches.retain(|b| b.last_offset() >= offset);
        self.start = self.start.max(offset);
    }

    fn append(&mut self, records: Vec<MemBatch>) -> AppendedBatches {
        let first = self.log_end_offset();
        let mut out = AppendedBatches {
            first_offset: first,
            last_offset: first - 1,
            batches: Vec::new(),
        };
        for b in records {
            out.last_offset = b.last_offset();
            out.batches.push(BatchEpoch {
                base_offset: b.base_offset,
                last_offset: b.last_offset(),
                epoch: b.leader_epoch,
            });
            self.batches.push(b);
        }
        out
    }
}

impl ReplicaLog for MemLog {
    type Records = Vec<MemBatch>;
    type Error = MemLogError;

    fn log_start_offset(&self) -> i64 {
        self.start
    }

    fn log_end_offset(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.start, |b| b.last_offset() + 1)
    }

    fn append_as_leader(
        &mut self,
        mut records: Vec<MemBatch>,
        leader_epoch: i32,
        _now_ms: i64,
    ) -> Result<AppendedBatches, MemLogError> {
        let mut next = self.log_end_offset();
        for b in &mut records {
            if b.values.is_empty() {
                return Err(MemLogError::EmptyBatch);
            }
            b.base_offset = next;
            b.leader_epoch = leader_epoch;
            next = b.last_offset() + 1;
        }
        Ok(self.append(records))
    }

    fn append_as_follower(
        &mut self,
        records: Vec<MemBatch>,
        _now_ms: i64,
    ) -> Result<AppendedBatches, MemLogError> {
        let mut next = self.log_end_offset();
        for b in &records {
            if b.values.is_empty() {
                return Err(MemLogError::EmptyBatch);
            }
            if b.base_offset != next {
                return Err(MemLogError::NonContiguous {
                    expected: next,
                    got: b.base_offset,
                });
            }
            next = b.last_offset() + 1;
        }
        Ok(self.append(records))
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), MemLogError> {
        // Kafka truncates to a batch boundary at or below `offset` (the real log does the same).
        self.batches.retain(|b| b.last_offset() < offset);
        Ok(())
    }

    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), MemLogError> {
        self.batches.clear();
        self.start = offset;
        Ok(())
    }

    fn batch_epochs(&self) -> Result<Vec<BatchEpoch>, MemLogError> {
        Ok(self
            .batches
            .iter()
            .map(|b| BatchEpoch {
                base_offset: b.base_offset,
                last_offset: b.last_offset(),
                epoch: b.leader_epoch,
            })
            .collect())
    }
}
