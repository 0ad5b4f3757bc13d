//! Opt-in historical bug modes of the replication protocol. Every flag is off by default and is
//! consulted at exactly one decision point, so the harness's bug zoo can switch a documented
//! Kafka bug back on and check that the checkers catch it.

/// Which historical replication bugs to reproduce. `Default` is all off: Kafka's current
/// (fixed) behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationBugs {
    /// Pre-KIP-101 truncation (KAFKA-1211, fixed by KIP-101 in 0.11.0.0): a replica that becomes
    /// follower (including on restart) truncates its log to its own high watermark and never asks
    /// the leader OffsetsForLeaderEpoch. A follower whose HW lags (it learns the HW one fetch
    /// later) drops records the leader already acknowledged; see kafka-bugs.md scenarios 3 and 4.
    pub hw_truncation: bool,
    /// Pre-KIP-279 epoch lookup (KAFKA-6361, fixed in 2.0.0): the leader answers
    /// OffsetsForLeaderEpoch for an epoch it never had with the start offset of its next higher
    /// epoch (not the largest epoch at or below the request), and the follower truncates there
    /// in one step without iterating. A deposed leader's unreplicated suffix can survive.
    pub epoch_lookup_next_epoch: bool,
    /// KAFKA-7128 (fixed in 2.1.0): a follower rejoins the ISR once it reaches the high
    /// watermark even if it has not reached the start offset of the leader's current epoch. If
    /// the leader's HW lags, the readmitted follower lacks committed records and can be elected.
    pub isr_join_below_epoch_start: bool,
    /// Pre-KAFKA-1555 (`min.insync.replicas` added in 0.8.2; Jepsen 2013, kafka-bugs.md
    /// scenario 1): `min.insync.replicas` is ignored, so acks=all is accepted and acknowledged
    /// by an ISR that has shrunk to the leader alone.
    pub ignore_min_insync: bool,
    /// acks=all acknowledged as soon as the leader has appended, before the ISR has the record
    /// (the high watermark has not passed it): acks=all silently behaves as acks=1. No single
    /// upstream JIRA; it models the class of "ack before replication" bugs a Jepsen test must
    /// catch (lost acknowledged writes after a leader failover).
    pub ack_before_isr: bool,
    /// Consumer fetches served up to the log end instead of the high watermark, so consumers
    /// read records the ISR does not have yet; a leader failover then truncates them and the
    /// same offsets are reassigned to other records. It models the class of KAFKA-14704
    /// (kafka-bugs.md scenario 8: an uncommitted suffix exposed to readers before truncation),
    /// broadened to every consumer fetch. Shows as `inconsistent-offsets` (one offset, two values
    /// across readers) and reads of values later lost.
    pub read_above_hw: bool,
    /// The idempotent producer's sequence dedupe skipped: a retried batch the leader already
    /// has is appended again instead of being answered with its first offset. Models
    /// Redpanda#3039 (no dedup window: a client re-sending after a kill -9 or an isolation
    /// wrote duplicates, jepsen.io/analyses/redpanda-21.10.1) and the producer-retry duplicates
    /// of kafka-bugs.md scenario 12 that KIP-98 idempotence exists to prevent. Shows as
    /// `duplicate` (invalidating with idempotence on).
    pub dedupe_missing: bool,
    /// Unclean leader election regardless of `unclean.leader.election.enable`: when no ISR
    /// replica is alive the controller elects any live replica, as Kafka did by default before
    /// 0.11 (KAFKA-1028 made it configurable; kafka-bugs.md scenario 2). A lagging replica
    /// becomes leader and the acknowledged suffix it lacks is truncated away everywhere:
    /// `lost-write`, and `inconsistent-offsets` when later writes reuse those offsets.
    pub unclean_regardless: bool,
    /// Transaction abort markers not honoured by read_committed fetches: the fetch response
    /// lists no aborted transactions, so consumers keep records of aborted transactions. Models
    /// AutoMQ#754 (aborted transaction data read as committed) and the aborted reads of
    /// kafka-bugs.md scenarios 13 and 15. Shows as `G1a` (aborted read).
    pub ignore_abort_markers: bool,
    /// Offset commits acknowledged once the group coordinator has appended them to its own
    /// `__consumer_offsets` partition, without waiting for the ISR (acks=1), and served from
    /// its committed-offset cache from then on. Kafka's broker setting
    /// `offsets.commit.required.acks` ("The required acks before the commit can be accepted. In
    /// general, the default (-1) should not be overridden"; deprecated in 3.8 by KIP-1041,
    /// KAFKA-16735, removed in 4.0, KAFKA-16736) allowed exactly this. An isolated coordinator
    /// keeps acknowledging commits its followers never get; the replica elected in its place
    /// loads its own log, so the group's committed offsets go back: `lost-commit`.
    pub offset_commit_before_isr: bool,
    /// A restarted broker resumes its old registration: the controller takes a heartbeat from
    /// a new process (a new incarnation) inside the old session as the old one's, so the
    /// restarted broker leads, in the same leader epoch, the partitions it led before the crash
    /// and stays in their ISRs, on whatever its disk kept. With its page cache lost (an empty
    /// log) the followers truncate to it and every acknowledged record is gone. Kafka closed
    /// this with broker epochs in KIP-903 (3.5: a stale broker epoch cannot join the ISR) and
    /// KAFKA-18106 (4.0, PR #18045: a re-registration while the old session is alive fences the
    /// old incarnation and moves its leaderships first); before 4.0 the controller refused the
    /// new incarnation (DUPLICATE_BROKER_REGISTRATION) until the session expired. Shows as
    /// `lost-write` / `unseen` after a kill -9 and restart inside `broker.session.timeout.ms`
    /// with `--nemesis disk` (lost unflushed writes).
    pub restart_without_fencing: bool,
}

impl ReplicationBugs {
    /// Every bug mode off (Kafka's fixed behaviour).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any bug mode is on (for logging a warning at startup).
    pub fn any(&self) -> bool {
        self.hw_truncation
            || self.epoch_lookup_next_epoch
            || self.isr_join_below_epoch_start
            || self.ignore_min_insync
            || self.ack_before_isr
            || self.read_above_hw
            || self.dedupe_missing
            || self.unclean_regardless
            || self.ignore_abort_markers
            || self.offset_commit_before_isr
            || self.restart_without_fencing
    }
}

/// The bug-mode names accepted by `broker --bug NAME`, with a one-line description each.
pub const BUG_NAMES: &[(&str, &str)] = &[
    (
        "hw-truncation",
        "pre-KIP-101 truncation to the high watermark (KAFKA-1211)",
    ),
    (
        "epoch-lookup-next-epoch",
        "pre-KIP-279 OffsetsForLeaderEpoch lookup (KAFKA-6361)",
    ),
    (
        "isr-join-below-epoch-start",
        "ISR rejoin before the leader's epoch start (KAFKA-7128)",
    ),
    (
        "ignore-min-insync",
        "min.insync.replicas ignored (pre-KAFKA-1555)",
    ),
    (
        "ack-before-isr",
        "acks=all acknowledged before the ISR has the record",
    ),
    (
        "read-above-hw",
        "consumer fetches served above the high watermark",
    ),
    (
        "dedupe-missing",
        "idempotent producer retries appended again (Redpanda#3039 class)",
    ),
    (
        "unclean-regardless",
        "unclean leader election whatever the setting (pre-0.11 default, KAFKA-1028)",
    ),
    (
        "ignore-abort-markers",
        "read_committed fetches list no aborted transactions (AutoMQ#754 class)",
    ),
    (
        "offset-commit-before-isr",
        "offset commits acknowledged before the ISR has them (offsets.commit.required.acks=1)",
    ),
    (
        "restart-without-fencing",
        "a restarted broker resumes its old registration and leaderships (pre-KIP-903 / KAFKA-18106)",
    ),
];

/// Why a bug-mode name was refused.
#[derive(Debug, thiserror::Error)]
#[error("unknown bug mode `{0}`; known: hw-truncation, epoch-lookup-next-epoch, isr-join-below-epoch-start, ignore-min-insync, ack-before-isr, read-above-hw, dedupe-missing, unclean-regardless, ignore-abort-markers, offset-commit-before-isr, restart-without-fencing")]
pub struct UnknownBug(pub String);

impl ReplicationBugs {
    /// Switches on the bug mode called `name` (see [`BUG_NAMES`]).
    pub fn enable(&mut self, name: &str) -> Result<(), UnknownBug> {
        match name {
            "hw-truncation" => self.hw_truncation = true,
            "epoch-lookup-next-epoch" => self.epoch_lookup_next_epoch = true,
            "isr-join-below-epoch-start" => self.isr_join_below_epoch_start = true,
            "ignore-min-insync" => self.ignore_min_insync = true,
            "ack-before-isr" => self.ack_before_isr = true,
            "read-above-hw" => self.read_above_hw = true,
            "dedupe-missing" => self.dedupe_missing = true,
            "unclean-regardless" => self.unclean_regardless = true,
            "ignore-abort-markers" => self.ignore_abort_markers = true,
            "offset-commit-before-isr" => self.offset_commit_before_isr = true,
            "restart-without-fencing" => self.restart_without_fencing = true,
            other => return Err(UnknownBug(other.to_string())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_enables_exactly_one_flag_and_unknown_names_are_refused() {
        for (name, _) in BUG_NAMES {
            let mut b = ReplicationBugs::none();
            b.enable(name).expect("known");
            assert!(b.any(), "{name}");
        }
        let err = ReplicationBugs::none()
            .enable("lose-everything")
            .expect_err("unknown");
        assert!(err.to_string().contains("lose-everything"));
        for (name, _) in BUG_NAMES {
            assert!(
                err.to_string().contains(name),
                "{name} missing from the message"
            );
        }
        let mut b = ReplicationBugs::none();
        b.enable("offset-commit-before-isr").expect("known");
        assert_eq!(
            b,
            ReplicationBugs {
                offset_commit_before_isr: true,
                ..ReplicationBugs::none()
            }
        );
    }
}
