//! The transaction coordinator's state of one `transactional.id` (Kafka's `TransactionMetadata`)
//! and its transitions as pure functions: InitProducerId (allocate, bump the epoch, or fence an
//! open transaction by aborting it with a bumped epoch), AddPartitionsToTxn/AddOffsetsToTxn
//! (Ongoing), EndTxn (PrepareCommit/PrepareAbort), completion after the markers are written
//! (CompleteCommit/CompleteAbort), and timeout aborts.
//!
//! Invariants: a producer is accepted only with the current producer id and epoch (an older
//! epoch is fenced: PRODUCER_FENCED); nothing but the completion leaves a Prepare state (other
//! requests get CONCURRENT_TRANSACTIONS); the partition set is non-empty only while Ongoing or
//! Prepare*, and is cleared on completion.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Error codes of the transaction APIs.
pub mod codes {
    /// UNKNOWN_TOPIC_OR_PARTITION
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// COORDINATOR_LOAD_IN_PROGRESS
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// COORDINATOR_NOT_AVAILABLE
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// NOT_COORDINATOR
    pub const NOT_COORDINATOR: i16 = 16;
    /// INVALID_REQUEST
    pub const INVALID_REQUEST: i16 = 42;
    /// INVALID_PRODUCER_EPOCH
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// INVALID_TXN_STATE
    pub const INVALID_TXN_STATE: i16 = 48;
    /// INVALID_PRODUCER_ID_MAPPING
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    /// INVALID_TRANSACTION_TIMEOUT
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    /// CONCURRENT_TRANSACTIONS
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    /// OPERATION_NOT_ATTEMPTED
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    /// UNSTABLE_OFFSET_COMMIT
    pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    /// PRODUCER_FENCED
    pub const PRODUCER_FENCED: i16 = 90;
}

/// Kafka's transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction yet for this producer epoch.
    Empty,
    /// Partitions were added; the transaction is open.
    Ongoing,
    /// EndTxn(commit) stored; markers being written.
    PrepareCommit,
    /// EndTxn(abort), a fence or a timeout stored; markers being written.
    PrepareAbort,
    /// Every commit marker written.
    CompleteCommit,
    /// Every abort marker written.
    CompleteAbort,
}

impl TxnState {
    /// Whether markers are being written.
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What the coordinator stores for one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    /// The producer id.
    pub producer_id: i64,
    /// The current producer epoch.
    pub epoch: i16,
    /// `transaction.timeout.ms` from InitProducerId.
    pub timeout_ms: i32,
    /// The state.
    pub state: TxnState,
    /// The partitions of the open (or completing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the open transaction began (its first AddPartitions/AddOffsets).
    pub started_ms: i64,
    /// Last change.
    pub updated_ms: i64,
}

/// What InitProducerId must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// A new producer id is needed (first use, or the epoch is exhausted): then store
    /// [`TxnMeta::fresh`].
    Allocate,
    /// Store this (an epoch bump) and answer with its id and epoch.
    Store(TxnMeta),
    /// An open transaction must be aborted first: store this PrepareAbort (epoch bumped, which
    /// fences the old producer), complete it, then answer with its id and epoch.
    FenceAndAbort(TxnMeta),
    /// Markers are being written: wait for the completion, then ask again.
    Wait,
    /// Refuse with this error code.
    Refuse(i16),
}

/// What EndTxn must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStep {
    /// Store this Prepare state, then write the markers and complete.
    Prepare(TxnMeta),
    /// A retry of an EndTxn that already completed: answer success.
    AlreadyDone,
    /// Refuse with this error code (CONCURRENT_TRANSACTIONS while completing).
    Refuse(i16),
}

/// Epochs at or above this start a new producer id (Kafka: `Short.MaxValue - 1`).
pub const MAX_EPOCH: i16 = i16::MAX - 1;

impl TxnMeta {
    /// A newly allocated producer's state.
    pub fn fresh(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMeta {
        TxnMeta {
            producer_id,
            epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            started_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// Checks the caller's producer id and epoch.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            Err(codes::INVALID_PRODUCER_ID_MAPPING)
        } else if epoch != self.epoch {
            Err(codes::PRODUCER_FENCED)
        } else {
            Ok(())
        }
    }

    /// InitProducerId. `expected` is the caller's (producer id, epoch) when it sent them
    /// (KIP-360 re-initialisation), which must match the current ones.
    pub fn init(
        current: Option<&TxnMeta>,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now_ms: i64,
    ) -> InitStep {
        let Some(m) = current else {
            return InitStep::Allocate;
        };
        if let Some((pid, epoch)) = expected {
            if pid != m.producer_id || epoch != m.epoch {
                return InitStep::Refuse(codes::PRODUCER_FENCED);
            }
        }
        if m.state.is_prepare() {
            return InitStep::Wait;
        }
        if m.epoch >= MAX_EPOCH {
            return if m.state == TxnState::Ongoing {
                // Abort with the last epoch; the next init allocates a new id.
                InitStep::FenceAndAbort(TxnMeta {
                    state: TxnState::PrepareAbort,
                    updated_ms: now_ms,
                    ..m.clone()
                })
            } else {
                InitStep::Allocate
            };
        }
        let bumped = TxnMeta {
            epoch: m.epoch + 1,
            timeout_ms,
            updated_ms: now_ms,
            ..m.clone()
        };
        if m.state == TxnState::Ongoing {
            InitStep::FenceAndAbort(TxnMeta {
                state: TxnState::PrepareAbort,
                ..bumped
            })
        } else {
            InitStep::Store(TxnMeta {
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                ..bumped
            })
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the new state (`None`: nothing to store, every
    /// partition is already in the open transaction).
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        parts: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnMeta>, i16> {
        self.check_producer(producer_id, epoch)?;
        if self.state.is_prepare() {
            return Err(codes::CONCURRENT_TRANSACTIONS);
        }
        if self.state == TxnState::Ongoing && parts.iter().all(|p| self.partitions.contains(p)) {
            return Ok(None);
        }
        let mut next = self.clone();
        if self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.started_ms = now_ms;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(parts.iter().cloned());
        next.updated_ms = now_ms;
        Ok(Some(next))
    }

    /// EndTxn.
    pub fn end(&self, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> EndStep {
        if let Err(code) = self.check_producer(producer_id, epoch) {
            return EndStep::Refuse(code);
        }
        match (self.state, commit) {
            (TxnState::Ongoing, _) => EndStep::Prepare(TxnMeta {
                state: if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                },
                updated_ms: now_ms,
                ..self.clone()
            }),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                EndStep::AlreadyDone
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                EndStep::Refuse(codes::CONCURRENT_TRANSACTIONS)
            }
            _ => EndStep::Refuse(codes::INVALID_TXN_STATE),
        }
    }

    /// The completed state once every marker of a Prepare state is written.
    pub fn completed(&self, now_ms: i64) -> Option<TxnMeta> {
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        Some(TxnMeta {
            state,
            partitions: BTreeSet::new(),
            updated_ms: now_ms,
            ..self.clone()
        })
    }

    /// A timeout abort of an open transaction older than its timeout: PrepareAbort with the
    /// epoch bumped (fencing the producer, as Kafka does), or `None`.
    pub fn timed_out(&self, now_ms: i64) -> Option<TxnMeta> {
        if self.state != TxnState::Ongoing || now_ms - self.started_ms <= i64::from(self.timeout_ms)
        {
            return None;
        }
        Some(TxnMeta {
            state: TxnState::PrepareAbort,
            epoch: if self.epoch < MAX_EPOCH {
                self.epoch + 1
            } else {
                self.epoch
            },
            updated_ms: now_ms,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: &[(&str, i32)]) -> Vec<(String, i32)> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn a_transaction_goes_empty_ongoing_prepare_complete() {
        assert_eq!(TxnMeta::init(None, None, 60_000, 0), InitStep::Allocate);
        let m = TxnMeta::fresh(7, 60_000, 0);
        let m = m
            .add_partitions(7, 0, &parts(&[("t", 0), ("t", 1)]), 10)
            .expect("add")
            .expect("changed");
        assert_eq!(m.state, TxnState::Ongoing);
        assert_eq!(m.started_ms, 10);
        // Adding the same partitions again stores nothing.
        assert_eq!(m.add_partitions(7, 0, &parts(&[("t", 1)]), 11), Ok(None));
        let EndStep::Prepare(p) = m.end(7, 0, true, 20) else {
            panic!("prepare expected");
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        // While the markers are written, everything else waits.
        assert_eq!(
            p.add_partitions(7, 0, &parts(&[("t", 2)]), 21),
            Err(codes::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            p.end(7, 0, true, 21),
            EndStep::Refuse(codes::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(TxnMeta::init(Some(&p), None, 1, 21), InitStep::Wait);
        let c = p.completed(30).expect("completes");
        assert_eq!(c.state, TxnState::CompleteCommit);
        assert!(c.partitions.is_empty());
        // A retried commit is answered; an abort after a commit is not.
        assert_eq!(c.end(7, 0, true, 31), EndStep::AlreadyDone);
        assert_eq!(
            c.end(7, 0, false, 31),
            EndStep::Refuse(codes::INVALID_TXN_STATE)
        );
        // The next transaction starts afresh.
        let n = c
            .add_partitions(7, 0, &parts(&[("u", 0)]), 40)
            .expect("add")
            .expect("changed");
        assert_eq!(n.partitions.len(), 1);
        assert_eq!(n.started_ms, 40);
    }

    #[test]
    fn reinit_bumps_the_epoch_and_fences_the_old_producer() {
        let m = TxnMeta::fresh(7, 60_000, 0);
        let InitStep::Store(b) = TxnMeta::init(Some(&m), None, 30_000, 5) else {
            panic!("bump expected");
        };
        assert_eq!((b.producer_id, b.epoch, b.timeout_ms), (7, 1, 30_000));
        assert_eq!(
            b.add_partitions(7, 0, &parts(&[("t", 0)]), 6),
            Err(codes::PRODUCER_FENCED)
        );
        assert_eq!(
            b.add_partitions(8, 1, &parts(&[("t", 0)]), 6),
            Err(codes::INVALID_PRODUCER_ID_MAPPING)
        );
        // An open transaction is aborted under the bumped epoch.
        let o = b
            .add_partitions(7, 1, &parts(&[("t", 0)]), 7)
            .expect("add")
            .expect("changed");
        let InitStep::FenceAndAbort(a) = TxnMeta::init(Some(&o), None, 30_000, 8) else {
            panic!("fence expected");
        };
        assert_eq!((a.epoch, a.state), (2, TxnState::PrepareAbort));
        assert_eq!(a.partitions, o.partitions);
        assert_eq!(
            o.end(7, 1, true, 9),
            EndStep::Prepare(TxnMeta {
                state: TxnState::PrepareCommit,
                updated_ms: 9,
                ..o.clone()
            })
        );
        assert_eq!(
            a.end(7, 1, true, 9),
            EndStep::Refuse(codes::PRODUCER_FENCED)
        );
        // KIP-360: re-init with a stale (id, epoch) is fenced.
        assert_eq!(
            TxnMeta::init(Some(&b), Some((7, 0)), 1, 9),
            InitStep::Refuse(codes::PRODUCER_FENCED)
        );
        // An exhausted epoch allocates a new id.
        let old = TxnMeta {
            epoch: MAX_EPOCH,
            ..b.clone()
        };
        assert_eq!(TxnMeta::init(Some(&old), None, 1, 9), InitStep::Allocate);
    }

    #[test]
    fn open_transactions_time_out_into_a_fencing_abort() {
        let m = TxnMeta::fresh(7, 1000, 0)
            .add_partitions(7, 0, &parts(&[("t", 0)]), 100)
            .expect("add")
            .expect("changed");
        assert_eq!(m.timed_out(1100), None);
        let a = m.timed_out(1101).expect("timed out");
        assert_eq!((a.state, a.epoch), (TxnState::PrepareAbort, 1));
        assert_eq!(TxnMeta::fresh(7, 1, 0).timed_out(1_000_000), None);
    }
}
