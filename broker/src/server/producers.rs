//! Idempotent-producer state of one partition (Kafka's `ProducerStateManager`, reduced): per
//! producer id the current epoch and the last five appended batches (first and last sequence,
//! base offset). A retried batch is recognised and answered with its original offset instead of
//! being appended twice; a gap in sequences is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is
//! INVALID_PRODUCER_EPOCH. Transaction markers carry the producer's epoch too: a marker with a
//! bumped epoch (a fenced or timed-out transaction) fences the old epoch's produces here. The
//! state is rebuilt from the log's batch headers whenever this broker
//! becomes leader, so it survives failover as Kafka's does (there from snapshots plus the log).

use std::collections::{BTreeMap, VecDeque};

use crate::log::batch::BatchHeader;

/// How many recent batches per producer are remembered (Kafka: 5, the in-flight limit).
pub const RETAINED_BATCHES: usize = 5;

/// OUT_OF_ORDER_SEQUENCE_NUMBER.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// INVALID_PRODUCER_EPOCH.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSeq {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchSeq>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or the next expected sequence: append it.
    Append,
    /// A retry of a batch already in the log at this base offset: answer without appending.
    Duplicate(i64),
    /// Refuse with this Kafka error code.
    Reject(i16),
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerTable {
    producers: BTreeMap<i64, ProducerEntry>,
}

fn seq_add(seq: i32, n: i32) -> i32 {
    // Sequences wrap at i32::MAX as in Kafka.
    ((i64::from(seq) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerTable {
    /// Rebuilds the table from a log's batch headers (oldest first).
    pub fn rebuild(headers: &[BatchHeader]) -> ProducerTable {
        let mut t = ProducerTable::default();
        for h in headers {
            if h.producer_id >= 0 && h.is_control() {
                t.record_epoch(h.producer_id, h.producer_epoch);
            } else if h.producer_id >= 0 && h.base_sequence >= 0 {
                t.record(h);
            }
        }
        t
    }

    /// Records an epoch of `producer_id` seen in a transaction marker (or a coordinator's
    /// transactional write): a newer epoch becomes the producer's current one (its sequences
    /// restart at 0), fencing older epochs.
    pub fn record_epoch(&mut self, producer_id: i64, epoch: i16) {
        if producer_id < 0 {
            return;
        }
        let e = self.producers.entry(producer_id).or_default();
        if epoch > e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
    }

    /// The current epoch of a producer known here.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// Checks a batch header against the table.
    pub fn check(&self, h: &BatchHeader) -> Check {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return Check::Append;
        }
        let last_seq = seq_add(h.base_sequence, h.last_offset_delta);
        match self.producers.get(&h.producer_id) {
            None => {
                // A new producer (or one whose batches were all deleted) must start at 0, but
                // Kafka accepts any sequence once its state is gone; we accept and track.
                Check::Append
            }
            Some(e) if h.producer_epoch < e.epoch => Check::Reject(INVALID_PRODUCER_EPOCH),
            Some(e) if h.producer_epoch > e.epoch => {
                if h.base_sequence == 0 {
                    Check::Append
                } else {
                    Check::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
                }
            }
            Some(e) => {
                if let Some(b) = e
                    .batches
                    .iter()
                    .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
                {
                    return Check::Duplicate(b.base_offset);
                }
                let expected = e.batches.back().map_or(0, |b| seq_add(b.last_seq, 1));
                if h.base_sequence == expected {
                    Check::Append
                } else {
                    Check::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
                }
            }
        }
    }

    /// Records an appended batch (its header after offsets were assigned).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let e = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch > e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchSeq {
            first_seq: h.base_sequence,
            last_seq: seq_add(h.base_sequence, h.last_offset_delta),
            base_offset: h.base_offset,
        });
        while e.batches.len() > RETAINED_BATCHES {
            e.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, BatchHeader};

    fn header(pid: i64, epoch: i16, seq: i32, records: usize, base_offset: i64) -> BatchHeader {
        let recs: Vec<crate::log::batch::KeyValue<'_>> = vec![(None, Some(b"v")); records];
        let b = build_batch(base_offset, 0, &recs);
        let mut h = BatchHeader::parse(&b).expect("header");
        h.producer_id = pid;
        h.producer_epoch = epoch;
        h.base_sequence = seq;
        h
    }

    #[test]
    fn retries_are_duplicates_gaps_are_out_of_order_old_epochs_are_fenced() {
        let mut t = ProducerTable::default();
        let b0 = header(7, 0, 0, 3, 100);
        assert_eq!(t.check(&b0), Check::Append);
        t.record(&b0);
        assert_eq!(t.check(&header(7, 0, 0, 3, -1)), Check::Duplicate(100));
        assert_eq!(
            t.check(&header(7, 0, 5, 1, -1)),
            Check::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let b1 = header(7, 0, 3, 2, 103);
        assert_eq!(t.check(&b1), Check::Append);
        t.record(&b1);
        // A bumped epoch restarts at 0; the old epoch is then fenced.
        let e1 = header(7, 1, 0, 1, 105);
        assert_eq!(t.check(&e1), Check::Append);
        t.record(&e1);
        assert_eq!(
            t.check(&header(7, 0, 5, 1, -1)),
            Check::Reject(INVALID_PRODUCER_EPOCH)
        );
        // Non-idempotent batches are always appended.
        assert_eq!(t.check(&header(-1, -1, -1, 1, -1)), Check::Append);
        // A marker with a bumped epoch fences the current one; the new epoch starts at 0.
        t.record_epoch(7, 2);
        assert_eq!(t.epoch_of(7), Some(2));
        assert_eq!(
            t.check(&header(7, 1, 1, 1, -1)),
            Check::Reject(INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(t.check(&header(7, 3, 0, 1, -1)), Check::Append);
        assert_eq!(t.check(&header(7, 2, 0, 1, -1)), Check::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_rebuild_matches() {
        let mut t = ProducerTable::default();
        let mut hs = Vec::new();
        for i in 0..8 {
            let h = header(9, 0, i, 1, i64::from(i) * 10);
            t.record(&h);
            hs.push(h);
        }
        assert_eq!(t.check(&header(9, 0, 7, 1, -1)), Check::Duplicate(70));
        assert_eq!(
            t.check(&header(9, 0, 2, 1, -1)),
            Check::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let r = ProducerTable::rebuild(&hs);
        assert_eq!(r.check(&header(9, 0, 7, 1, -1)), Check::Duplicate(70));
        assert_eq!(r.check(&header(9, 0, 8, 1, -1)), Check::Append);
    }
}
