//! The narrow view of a partition's log that replication needs ([`ReplicaLog`]). The broker's
//! segmented `log::Log` implements it; [`crate::replication::mem_log::MemLog`] is an in-memory
//! implementation for the deterministic simulator and for unit tests.

/// One record batch's position and the partition leader epoch stamped in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEpoch {
    /// The batch's base offset.
    pub base_offset: i64,
    /// The batch's last offset.
    pub last_offset: i64,
    /// `partition_leader_epoch` from the batch header.
    pub epoch: i32,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendedBatches {
    /// The first offset written (the log end offset before the append).
    pub first_offset: i64,
    /// The last offset written (`first_offset - 1` when nothing was written).
    pub last_offset: i64,
    /// Every batch written, in order.
    pub batches: Vec<BatchEpoch>,
}

/// The operations replication performs on a partition's log.
pub trait ReplicaLog {
    /// The records handed to an append (as received from a producer or a leader).
    type Records;
    /// The log's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The first offset still in the log.
    fn log_start_offset(&self) -> i64;
    /// The offset the next appended record will get.
    fn log_end_offset(&self) -> i64;
    /// Appends on the leader: assigns offsets from the log end offset and stamps `leader_epoch`
    /// into every batch header.
    fn append_as_leader(
        &mut self,
        records: Self::Records,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendedBatches, Self::Error>;
    /// Appends on a follower: keeps the offsets and epochs the leader assigned; the first batch
    /// must start at the log end offset.
    fn append_as_follower(
        &mut self,
        records: Self::Records,
        now_ms: i64,
    ) -> Result<AppendedBatches, Self::Error>;
    /// Removes every record at or after `offset` (no-op if `offset >= log_end_offset`).
    fn truncate_to(&mut self, offset: i64) -> Result<(), Self::Error>;
    /// Removes every record and restarts the log empty at `offset` (a follower whose log ends
    /// before the leader's log start).
    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), Self::Error>;
    /// Every batch's position and leader epoch, in offset order (rebuilding the epoch cache).
    fn batch_epochs(&self) -> Result<Vec<BatchEpoch>, Self::Error>;
}
