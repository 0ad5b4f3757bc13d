//! Replication's core logic for one broker: the leader-epoch cache, the replica state machine of
//! each partition (high watermark, ISR, acks=all waiters, follower truncation) and the decisions
//! a leader makes on replica fetches. Everything here is pure state over a [`ReplicaLog`]; the
//! server drives it (network fetch loops, produce purgatory timers, AlterPartition RPCs).
//! See `docs/REPLICATION.md` for the API walk-through.

pub mod bugs;
pub mod checkpoint;
pub mod epoch_cache;
pub mod fetch;
pub mod hw_checkpoint;
pub mod log_adapter;
pub mod mem_log;
pub mod partition;
pub mod replica_log;

#[cfg(test)]
mod sim;

pub use bugs::ReplicationBugs;
pub use epoch_cache::{EpochEntry, LeaderEpochCache};
pub use replica_log::{AppendedBatches, BatchEpoch, ReplicaLog};

/// A broker's id (Kafka's `node.id`).
pub type BrokerId = i32;

/// Kafka's "no epoch" value (`UNDEFINED_EPOCH`).
pub const UNDEFINED_EPOCH: i32 = -1;

/// Kafka's "no offset" value (`UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_OFFSET: i64 = -1;

/// An epoch and the end offset Kafka answers for it (OffsetsForLeaderEpoch, or a Fetch
/// response's `diverging_epoch`). `(UNDEFINED_EPOCH, UNDEFINED_OFFSET)` means "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochEndOffset {
    /// The largest epoch at or below the requested one that the answering replica knows.
    pub epoch: i32,
    /// The first offset after that epoch (or the log end offset for the current epoch).
    pub end_offset: i64,
}

impl EpochEndOffset {
    /// The "unknown" answer.
    pub const UNDEFINED: EpochEndOffset = EpochEndOffset {
        epoch: UNDEFINED_EPOCH,
        end_offset: UNDEFINED_OFFSET,
    };

    /// Whether either part is undefined.
    pub fn is_undefined(&self) -> bool {
        self.epoch == UNDEFINED_EPOCH || self.end_offset == UNDEFINED_OFFSET
    }
}
