//! The leader's decisions on Fetch requests for one partition, as pure functions over the
//! partition state: epoch fencing (KIP-320: FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH),
//! NOT_LEADER_OR_FOLLOWER, OFFSET_OUT_OF_RANGE, the Fetch v12+ `diverging_epoch` answer, and how
//! far a read may go (the LEO for replicas, the HW for consumers). The server then reads the log
//! and, for a replica fetch answered with data, calls
//! [`Partition::record_follower_fetch`](super::partition::Partition::record_follower_fetch)
//! with the `log_end_offset` returned here.

use kafka_protocol::error::ResponseError;

use super::partition::Partition;
use super::replica_log::ReplicaLog;
use super::{BrokerId, EpochEndOffset, UNDEFINED_EPOCH};

/// One partition of a Fetch request, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartitionRequest {
    /// `replica_id` (or `ReplicaState.replica_id`): >= 0 for a follower, -1 for a consumer.
    pub replica_id: BrokerId,
    /// The offset to read from.
    pub fetch_offset: i64,
    /// The fetcher's current leader epoch (-1: absent).
    pub current_leader_epoch: i32,
    /// The epoch of the fetcher's last fetched record (-1: absent; Fetch v12+).
    pub last_fetched_epoch: i32,
}

/// The offsets every answer carries, taken before the read (Kafka uses the values from before
/// the read so that appends after it cannot keep a follower out of sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOffsets {
    /// The high watermark.
    pub high_watermark: i64,
    /// The log start offset.
    pub log_start_offset: i64,
    /// The log end offset (pass it to `record_follower_fetch`).
    pub log_end_offset: i64,
}

/// What the leader must answer for one partition of a Fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchDecision {
    /// An error code and nothing else.
    Error(ResponseError),
    /// No records; `diverging_epoch` set. The follower's state is not updated.
    Diverging {
        /// The `diverging_epoch` field: the leader's largest epoch <= the fetcher's last epoch
        /// and its end offset.
        diverging_epoch: EpochEndOffset,
        /// The offsets to report.
        offsets: FetchOffsets,
    },
    /// Read the log from `fetch_offset` up to `max_offset_exclusive` (whole batches, at most
    /// `max_bytes`, at least one batch if the request allows).
    Read {
        /// Where the read starts.
        fetch_offset: i64,
        /// Where the read must stop (exclusive).
        max_offset_exclusive: i64,
        /// The offsets to report.
        offsets: FetchOffsets,
    },
}

impl<L: ReplicaLog> Partition<L> {
    /// Decides a Fetch for this partition, in Kafka's order: epoch fencing and leadership;
    /// for a replica, membership in the assignment; with `last_fetched_epoch`, the divergence
    /// check (OFFSET_OUT_OF_RANGE when the leader cannot place the epoch or the offset is below
    /// its log start); then the offset range.
    pub fn decide_fetch(&self, req: &FetchPartitionRequest) -> FetchDecision {
        if let Err(e) = self.check_leader(req.current_leader_epoch) {
            return FetchDecision::Error(e);
        }
        let is_replica = req.replica_id >= 0;
        if is_replica
            && (req.replica_id == self.local_broker() || !self.replicas().contains(&req.replica_id))
        {
            return FetchDecision::Error(ResponseError::NotLeaderOrFollower);
        }
        let offsets = FetchOffsets {
            high_watermark: self.high_watermark(),
            log_start_offset: self.log_start_offset(),
            log_end_offset: self.log_end_offset(),
        };
        if req.last_fetched_epoch != UNDEFINED_EPOCH {
            let end = match self
                .offsets_for_leader_epoch(req.current_leader_epoch, req.last_fetched_epoch)
            {
                Ok(end) => end,
                Err(e) => return FetchDecision::Error(e),
            };
            if end.is_undefined() || req.fetch_offset < offsets.log_start_offset {
                return FetchDecision::Error(ResponseError::OffsetOutOfRange);
            }
            if end.epoch < req.last_fetched_epoch || end.end_offset < req.fetch_offset {
                return FetchDecision::Diverging {
                    diverging_epoch: end,
                    offsets,
                };
            }
        }
        if req.fetch_offset < offsets.log_start_offset || req.fetch_offset > offsets.log_end_offset
        {
            return FetchDecision::Error(ResponseError::OffsetOutOfRange);
        }
        FetchDecision::Read {
            fetch_offset: req.fetch_offset,
            max_offset_exclusive: if is_replica || self.bugs().read_above_hw {
                offsets.log_end_offset
            } else {
                offsets.high_watermark
            },
            offsets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::mem_log::{MemBatch, MemLog};
    use crate::replication::partition::{Acks, PartitionConfig, PartitionState};
    use crate::replication::ReplicationBugs;

    fn leader_with(epochs: &[(i32, usize)]) -> (tempfile::TempDir, Partition<MemLog>) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MemLog::new();
        for &(e, n) in epochs {
            for i in 0..n {
                log.append_as_leader(vec![MemBatch::new([format!("{e}-{i}")])], e, 0)
                    .unwrap();
            }
        }
        let mut p = Partition::open(
            1,
            dir.path(),
            log,
            0,
            PartitionConfig::default(),
            ReplicationBugs::none(),
        )
        .unwrap();
        let state = PartitionState {
            leader: 1,
            leader_epoch: 5,
            partition_epoch: 7,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        };
        p.become_leader(&state, 0).unwrap();
        (dir, p)
    }

    fn req(replica_id: i32, fetch_offset: i64, current: i32, last: i32) -> FetchPartitionRequest {
        FetchPartitionRequest {
            replica_id,
            fetch_offset,
            current_leader_epoch: current,
            last_fetched_epoch: last,
        }
    }

    fn assert_errors(p: &Partition<MemLog>, cases: &[(FetchPartitionRequest, ResponseError)]) {
        for (r, e) in cases {
            assert_eq!(p.decide_fetch(r), FetchDecision::Error(*e), "{r:?}");
        }
    }

    #[test]
    fn epoch_fencing_and_leadership() {
        let (_d, p) = leader_with(&[(1, 3), (3, 2)]);
        assert_errors(
            &p,
            &[
                (req(2, 0, 4, -1), ResponseError::FencedLeaderEpoch),
                (req(2, 0, 6, -1), ResponseError::UnknownLeaderEpoch),
                // Not in the assignment.
                (req(9, 0, 5, -1), ResponseError::NotLeaderOrFollower),
                // Out of range.
                (req(2, 6, 5, -1), ResponseError::OffsetOutOfRange),
            ],
        );
        // Absent current epoch: no fencing check.
        assert!(matches!(
            p.decide_fetch(&req(2, 0, -1, -1)),
            FetchDecision::Read { .. }
        ));
    }

    #[test]
    fn a_follower_is_not_a_leader() {
        let (_d, mut p) = leader_with(&[]);
        let state = PartitionState {
            leader: 2,
            leader_epoch: 6,
            partition_epoch: 8,
            replicas: vec![1, 2],
            isr: vec![1, 2],
        };
        p.become_follower(&state, 0).unwrap();
        assert_errors(
            &p,
            &[
                (req(3, 0, 6, -1), ResponseError::NotLeaderOrFollower),
                (req(3, 0, 5, -1), ResponseError::FencedLeaderEpoch),
            ],
        );
        assert_eq!(
            p.offsets_for_leader_epoch(6, 1),
            Err(ResponseError::NotLeaderOrFollower)
        );
    }

    #[test]
    fn diverging_epoch_answers() {
        // Leader epochs: 1 at 0..3, 3 at 3..5, 5 (current) from 5.
        let (_d, p) = leader_with(&[(1, 3), (3, 2)]);
        // Follower whose last epoch 2 the leader never had, fetching at 4: the leader's
        // largest epoch <= 2 is 1, ending at 3.
        match p.decide_fetch(&req(2, 4, 5, 2)) {
            FetchDecision::Diverging {
                diverging_epoch,
                offsets,
            } => {
                assert_eq!(
                    diverging_epoch,
                    EpochEndOffset {
                        epoch: 1,
                        end_offset: 3
                    }
                );
                assert_eq!(offsets.log_end_offset, 5);
            }
            d => panic!("{d:?}"),
        }
        // Follower at epoch 1 but past the leader's end of epoch 1.
        assert!(matches!(
            p.decide_fetch(&req(2, 4, 5, 1)),
            FetchDecision::Diverging {
                diverging_epoch: EpochEndOffset {
                    epoch: 1,
                    end_offset: 3
                },
                ..
            }
        ));
        // Consistent follower: read to the LEO.
        assert_eq!(
            p.decide_fetch(&req(2, 3, 5, 1)),
            FetchDecision::Read {
                fetch_offset: 3,
                max_offset_exclusive: 5,
                offsets: FetchOffsets {
                    high_watermark: 0,
                    log_start_offset: 0,
                    log_end_offset: 5
                }
            }
        );
        // An epoch newer than the leader's: undefined, OFFSET_OUT_OF_RANGE.
        assert_eq!(
            p.decide_fetch(&req(2, 5, 5, 9)),
            FetchDecision::Error(ResponseError::OffsetOutOfRange)
        );
    }

    #[test]
    fn consumers_read_to_the_high_watermark() {
        let (_d, mut p) = leader_with(&[]);
        p.append_as_leader(vec![MemBatch::new(["a", "b"])], Acks::Leader, 0)
            .unwrap();
        match p.decide_fetch(&req(-1, 0, -1, -1)) {
            FetchDecision::Read {
                max_offset_exclusive,
                ..
            } => assert_eq!(max_offset_exclusive, 0),
            d => panic!("{d:?}"),
        }
        match p.decide_fetch(&req(2, 0, 5, -1)) {
            FetchDecision::Read {
                max_offset_exclusive,
                ..
            } => assert_eq!(max_offset_exclusive, 2),
            d => panic!("{d:?}"),
        }
    }
}
