//! The partition side of transactions (Kafka's ongoing-transaction tracking in
//! `ProducerStateManager` plus its `.txnindex`): which producers have a transaction open in this
//! partition and at which offset it began, which transactions were aborted (producer id, first
//! offset, marker offset), and from those the last stable offset (LSO).
//!
//! The index is derived from the log alone: transactional data batches open a transaction for
//! their producer, a control batch (commit or abort marker) closes it. Leaders and followers
//! therefore derive the same index from the same replicated batches. It is kept in memory and
//! rebuilt from the log when a partition is opened (lazily, at its first use) and whenever the
//! log was truncated ([`crate::replication::partition::Partition::log_generation`] changed);
//! between those it is applied incrementally from the last applied offset ([`TxnIndex::sync`]).
//!
//! Invariants: `end` is a batch boundary and every batch below it was applied exactly once; a
//! transaction whose marker is at or above the high watermark still holds the LSO down (its
//! outcome is not yet replicated), as in Kafka.

use std::collections::BTreeMap;

use crate::log::batch::{control_type, BatchHeader, ControlType};
use crate::log::{Log, LogError};
use crate::replication::partition::Partition;

/// An aborted transaction of one producer in this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// Offset of its first record in this partition.
    pub first_offset: i64,
    /// Offset of its abort marker.
    pub last_offset: i64,
}

/// Transaction state of one partition (see the module docs).
#[derive(Debug, Clone)]
pub struct TxnIndex {
    /// Next offset to apply (`-1`: never synced).
    end: i64,
    /// The partition's log generation the index was built against.
    generation: u64,
    /// Producer id → first offset of its open transaction.
    ongoing: BTreeMap<i64, i64>,
    /// Completed transactions whose marker may still be above the high watermark:
    /// (first offset, marker offset).
    completing: Vec<(i64, i64)>,
    /// Aborted transactions, by marker offset.
    aborted: Vec<AbortedTxn>,
}

impl Default for TxnIndex {
    fn default() -> Self {
        TxnIndex {
            end: -1,
            generation: 0,
            ongoing: BTreeMap::new(),
            completing: Vec::new(),
            aborted: Vec::new(),
        }
    }
}

impl TxnIndex {
    /// An empty index whose next offset is `start`.
    pub fn starting_at(start: i64, generation: u64) -> TxnIndex {
        TxnIndex {
            end: start,
            generation,
            ..TxnIndex::default()
        }
    }

    /// The next offset the index expects.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// Applies one batch (with its assigned offsets). `marker` is the control record type of a
    /// control batch. Batches already applied are ignored; a batch past `end` (a gap) is left
    /// for [`Self::sync`] to read from the log.
    pub fn apply(&mut self, h: &BatchHeader, marker: Option<ControlType>) {
        if self.end < 0 || h.base_offset != self.end {
            return;
        }
        self.end = h.next_offset();
        if h.producer_id < 0 || !h.is_transactional() {
            return;
        }
        if h.is_control() {
            if let Some(first) = self.ongoing.remove(&h.producer_id) {
                self.completing.push((first, h.base_offset));
                if marker == Some(ControlType::Abort) {
                    self.aborted.push(AbortedTxn {
                        producer_id: h.producer_id,
                        first_offset: first,
                        last_offset: h.base_offset,
                    });
                }
            }
        } else {
            self.ongoing.entry(h.producer_id).or_insert(h.base_offset);
        }
    }

    /// The last stable offset for high watermark `hw`: the first offset of the oldest
    /// transaction that is open or whose marker is not yet below `hw`, else `hw`.
    pub fn last_stable_offset(&mut self, hw: i64) -> i64 {
        self.completing.retain(|&(_, marker)| marker >= hw);
        let open = self.ongoing.values().copied().min();
        let completing = self.completing.iter().map(|&(first, _)| first).min();
        [open, completing].into_iter().flatten().fold(hw, i64::min)
    }

    /// Aborted transactions overlapping `[from, to)`: those with a record at or after `from`
    /// (marker at or after it) that began before `to`, ordered by first offset.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let mut v: Vec<AbortedTxn> = self
            .aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect();
        v.sort_by_key(|a| a.first_offset);
        v
    }

    /// The open transactions: (producer id, first offset).
    pub fn ongoing(&self) -> Vec<(i64, i64)> {
        self.ongoing.iter().map(|(p, f)| (*p, *f)).collect()
    }

    /// Brings the index up to the log end of `part`: rebuilt from the log start when the log
    /// was truncated since (or never synced), else applied from `end`.
    pub fn sync(&mut self, part: &Partition<Log>) -> Result<(), LogError> {
        let log = part.log();
        let (start, leo) = (log.log_start_offset(), log.log_end_offset());
        let generation = part.log_generation();
        if self.end < 0 || self.generation != generation || self.end > leo || self.end < start {
            *self = TxnIndex::starting_at(start, generation);
        }
        if self.end >= leo {
            return Ok(());
        }
        for h in log.batch_headers_from(self.end)? {
            let marker = if h.is_control() {
                let r = log.read(h.base_offset, h.total_size(), h.next_offset(), true)?;
                control_type(&r.bytes)
            } else {
                None
            };
            self.apply(&h, marker);
        }
        // Transactions wholly below the log start can no longer be read.
        self.aborted.retain(|a| a.last_offset >= start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, build_control_batch, set_base_offset, BatchHeader};

    fn data(pid: i64, base: i64, n: usize, txn: bool) -> BatchHeader {
        let recs: Vec<crate::log::batch::KeyValue<'_>> = vec![(None, Some(b"v")); n];
        let b = build_batch(base, 0, &recs);
        let mut h = BatchHeader::parse(&b).expect("header");
        h.producer_id = pid;
        h.producer_epoch = 0;
        if txn {
            h.attributes |= 0x10;
        }
        h
    }

    fn marker(pid: i64, base: i64, kind: ControlType) -> BatchHeader {
        let mut b = build_control_batch(pid, 0, kind, 0, 0);
        set_base_offset(&mut b, base);
        BatchHeader::parse(&b).expect("header")
    }

    #[test]
    fn lso_stops_at_open_transactions_and_unreplicated_markers() {
        let mut ix = TxnIndex::starting_at(0, 0);
        ix.apply(&data(-1, 0, 2, false), None); // 0..1 plain
        ix.apply(&data(7, 2, 3, true), None); // 2..4 txn of 7
        ix.apply(&data(8, 5, 1, true), None); // 5 txn of 8
        assert_eq!(ix.last_stable_offset(6), 2);
        ix.apply(&marker(7, 6, ControlType::Commit), None);
        // 7's marker at 6 is not below the HW yet: still unstable.
        assert_eq!(ix.last_stable_offset(6), 2);
        assert_eq!(ix.last_stable_offset(7), 5);
        ix.apply(&marker(8, 7, ControlType::Abort), Some(ControlType::Abort));
        assert_eq!(ix.last_stable_offset(8), 8);
        assert_eq!(
            ix.aborted_between(0, 8),
            vec![AbortedTxn {
                producer_id: 8,
                first_offset: 5,
                last_offset: 7
            }]
        );
        // Outside the range: nothing.
        assert!(ix.aborted_between(8, 20).is_empty());
        assert!(ix.aborted_between(0, 5).is_empty());
        assert_eq!(ix.end(), 8);
    }

    #[test]
    fn replays_and_gaps_are_ignored_and_markers_without_data_are_harmless() {
        let mut ix = TxnIndex::starting_at(10, 0);
        ix.apply(&data(3, 10, 1, true), None);
        ix.apply(&data(3, 10, 1, true), None); // replay of the same batch
        ix.apply(&data(3, 20, 1, true), None); // a gap: left to sync
        assert_eq!(ix.end(), 11);
        assert_eq!(ix.ongoing(), vec![(3, 10)]);
        ix.apply(&marker(9, 11, ControlType::Abort), Some(ControlType::Abort));
        assert_eq!(ix.ongoing(), vec![(3, 10)]);
        assert!(ix.aborted_between(0, 100).is_empty());
        // A second transactional batch of an open transaction keeps the first offset.
        ix.apply(&data(3, 12, 2, true), None);
        assert_eq!(ix.ongoing(), vec![(3, 10)]);
        assert_eq!(ix.last_stable_offset(14), 10);
    }

    #[test]
    fn sync_derives_the_state_from_a_real_log_and_rebuilds_after_truncation() {
        use crate::log::LogConfig;
        use crate::replication::partition::{PartitionConfig, PartitionState};
        use crate::replication::ReplicationBugs;
        use bytes::Bytes;
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = Log::open(dir.path(), LogConfig::default(), 0).expect("log");
        let mut part = Partition::open(
            1,
            dir.path(),
            log,
            0,
            PartitionConfig::default(),
            ReplicationBugs::default(),
        )
        .expect("partition");
        part.become_leader(
            &PartitionState {
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: vec![1],
                isr: vec![1],
            },
            0,
        )
        .expect("leader");
        let txn_batch = |pid: i64| {
            let mut b = build_batch(0, 0, &[(None, Some(b"x".as_slice()))]);
            b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
            b[43..51].copy_from_slice(&pid.to_be_bytes());
            b[51..53].copy_from_slice(&0i16.to_be_bytes());
            b[53..57].copy_from_slice(&0i32.to_be_bytes());
            let crc = crate::log::batch::compute_crc(&b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            Bytes::from(b)
        };
        use crate::replication::partition::Acks;
        part.append_as_leader(txn_batch(5), Acks::Leader, 0)
            .expect("append"); // 0
        part.append_as_leader(
            Bytes::from(build_control_batch(5, 0, ControlType::Abort, 0, 0)),
            Acks::Leader,
            0,
        )
        .expect("marker"); // 1
        part.append_as_leader(txn_batch(6), Acks::Leader, 0)
            .expect("append"); // 2
        let mut ix = TxnIndex::default();
        ix.sync(&part).expect("sync");
        assert_eq!(ix.end(), 3);
        assert_eq!(ix.ongoing(), vec![(6, 2)]);
        assert_eq!(ix.aborted_between(0, 3).len(), 1);
        assert_eq!(ix.aborted_between(0, 3)[0].last_offset, 1);
        // A fresh index over the same log (a restart) derives the same state.
        let mut again = TxnIndex::default();
        again.sync(&part).expect("sync");
        assert_eq!(again.ongoing(), ix.ongoing());
        assert_eq!(again.aborted_between(0, 3), ix.aborted_between(0, 3));
        // Becoming a follower whose leader ends epoch 0 at offset 1 truncates the marker away:
        // the index is rebuilt and producer 5's transaction is open again.
        part.become_follower(
            &PartitionState {
                leader: 2,
                leader_epoch: 1,
                partition_epoch: 1,
                replicas: vec![1, 2],
                isr: vec![2],
            },
            0,
        )
        .expect("follower");
        assert!(part.truncation_query().expect("query").is_some());
        part.apply_truncation_answer(Ok(crate::replication::EpochEndOffset {
            epoch: 0,
            end_offset: 1,
        }))
        .expect("truncated");
        assert_eq!(part.log_end_offset(), 1);
        ix.sync(&part).expect("sync");
        assert_eq!(ix.end(), 1);
        assert_eq!(ix.ongoing(), vec![(5, 0)]);
        assert!(ix.aborted_between(0, 3).is_empty());
    }
}
