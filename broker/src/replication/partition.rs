//! The replica state of one partition on one broker, as a state machine over its
//! [`ReplicaLog`] and [`LeaderEpochCache`], following Kafka's `Partition`/`Replica`:
//! - leader: each follower's fetch offset and `lastCaughtUpTimeMs`, the high watermark (the
//!   minimum LEO over the maximal ISR, never moving backwards), ISR shrink after
//!   `replica.lag.time.max.ms` and expansion on catch-up (once the follower reached the HW and the
//!   start of the leader's epoch, KAFKA-7128), the AlterPartition change in flight (its "maximal"
//!   ISR holds the HW), `min.insync.replicas`, and the acks=all waiters (the produce purgatory as
//!   data);
//! - follower: truncation by leader epoch (KIP-101, iterating as KIP-279) before fetching, never
//!   by high watermark alone, then appends of fetched batches and HW = min(leader HW, own LEO).
//!
//! Time comes in as `now_ms` arguments (the broker's `Clock`); nothing here blocks or spawns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kafka_protocol::error::ResponseError;

use super::epoch_cache::{EpochCacheError, LeaderEpochCache};
use super::replica_log::{AppendedBatches, ReplicaLog};
use super::{BrokerId, EpochEndOffset, ReplicationBugs, UNDEFINED_OFFSET};

/// Per-partition replication settings (Kafka's broker/topic properties of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionConfig {
    /// `replica.lag.time.max.ms`: a follower not caught up for longer leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `min.insync.replicas`: acks=all needs at least this many ISR members.
    pub min_insync_replicas: usize,
    /// Truncate on fetch (Kafka 2.7+, IBP >= 2.7, KIP-595/KAFKA-10554): a new follower that has
    /// epochs skips the OffsetsForLeaderEpoch round trip and fetches at once with its
    /// `last_fetched_epoch`, truncating on the leader's `diverging_epoch` answers. `false`: the
    /// OffsetsForLeaderEpoch step first (Kafka 0.11-2.6). Both truncate to the same point.
    pub truncate_on_fetch: bool,
    /// KIP-966 part 1 (Kafka 3.7+/4.x): the leader does not advance the HW while its committed
    /// ISR is smaller than `min.insync.replicas`. `false`: Kafka's classic rule (through 3.6).
    pub hw_requires_min_isr: bool,
    /// Kafka 3.7+ (KAFKA-15583): the min ISR acks=all and the HW rule use is
    /// min(`min.insync.replicas`, replica count). `false`: `min.insync.replicas` as set, so a
    /// value above the replica count refuses every acks=all produce (through 3.6).
    pub effective_min_isr: bool,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
            truncate_on_fetch: false,
            hw_requires_min_isr: false,
            effective_min_isr: false,
        }
    }
}

/// The partition's replication state as the metadata quorum publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The leader's broker id (-1: none).
    pub leader: BrokerId,
    /// The leader epoch (bumped on every leader election).
    pub leader_epoch: i32,
    /// The partition epoch (bumped on every change, ISR changes included).
    pub partition_epoch: i32,
    /// The assigned replicas.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
}

/// The `acks` of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no response.
    None,
    /// acks=1: the leader's log.
    Leader,
    /// acks=all (-1): every ISR member, and at least `min.insync.replicas` of them.
    All,
}

impl Acks {
    /// From the wire value (0, 1, -1); `None` for anything else (Kafka answers INVALID_REQUIRED_ACKS).
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// This broker's role for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No metadata applied yet (or the partition was stopped).
    Offline,
    /// This broker leads the partition.
    Leader,
    /// This broker follows `leader`.
    Follower {
        /// The leader it fetches from (-1: no leader).
        leader: BrokerId,
    },
}

/// What the leader knows of one follower (Kafka's `ReplicaState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerReplicaState {
    /// The follower's broker id.
    pub broker: BrokerId,
    /// The follower's log start offset from its last fetch (-1: unknown).
    pub log_start_offset: i64,
    /// The follower's log end offset = the offset of its last fetch (-1: unknown).
    pub log_end_offset: i64,
    /// The leader's LEO when the follower last fetched (-1: unknown).
    pub last_fetch_leader_log_end_offset: i64,
    /// When the follower last fetched.
    pub last_fetch_time_ms: Option<i64>,
    /// The last time the follower was known caught up with the leader (Kafka's
    /// `lastCaughtUpTimeMs`): the time of a fetch at the leader's LEO, or of the previous fetch
    /// when this fetch reached the LEO the leader had then.
    pub last_caught_up_time_ms: Option<i64>,
}

impl FollowerReplicaState {
    fn unknown(broker: BrokerId, last_caught_up_time_ms: Option<i64>) -> Self {
        FollowerReplicaState {
            broker,
            log_start_offset: UNDEFINED_OFFSET,
            log_end_offset: UNDEFINED_OFFSET,
            last_fetch_leader_log_end_offset: UNDEFINED_OFFSET,
            last_fetch_time_ms: None,
            last_caught_up_time_ms,
        }
    }

    /// Kafka's `isCaughtUp`: at the leader's LEO, or caught up within the lag time.
    pub fn is_caught_up(&self, leader_log_end_offset: i64, now_ms: i64, max_lag_ms: i64) -> bool {
        self.log_end_offset == leader_log_end_offset
            || self
                .last_caught_up_time_ms
                .is_some_and(|t| now_ms - t <= max_lag_ms)
    }
}

/// An ISR change the leader wants the controller to make (an AlterPartition request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionProposal {
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// The partition epoch the change is based on.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub new_isr: Vec<BrokerId>,
}

/// The controller's answer to an AlterPartition request that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedIsr {
    /// The leader epoch in the answer.
    pub leader_epoch: i32,
    /// The new partition epoch.
    pub partition_epoch: i32,
    /// The committed ISR.
    pub isr: Vec<BrokerId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PendingIsr {
    Expand(AlterPartitionProposal),
    Shrink(AlterPartitionProposal),
}

impl PendingIsr {
    fn proposal(&self) -> &AlterPartitionProposal {
        match self {
            PendingIsr::Expand(p) | PendingIsr::Shrink(p) => p,
        }
    }
}

/// What recording a follower's fetch changed on the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerFetchOutcome {
    /// The high watermark moved (poll the waiters; wake delayed consumer fetches).
    pub high_watermark_advanced: bool,
    /// An ISR expansion to send to the controller (now pending).
    pub alter_partition: Option<AlterPartitionProposal>,
}

/// How a waiting acks=all produce ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaiterCompletion {
    /// The id the server gave the waiter.
    pub id: u64,
    /// `Ok` to acknowledge; else NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS_AFTER_APPEND or
    /// REQUEST_TIMED_OUT.
    pub result: Result<(), ResponseError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AckWaiter {
    id: u64,
    required_offset: i64,
    deadline_ms: i64,
}

/// An OffsetsForLeaderEpoch request a truncating follower must send to its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochQuery {
    /// The leader it is addressed to.
    pub leader: BrokerId,
    /// The follower's view of the current leader epoch (fencing, KIP-320).
    pub current_leader_epoch: i32,
    /// The epoch whose end offset is asked: the follower's latest epoch.
    pub leader_epoch: i32,
}

/// Where a truncating follower stands after an OffsetsForLeaderEpoch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationStep {
    /// Truncation is complete: fetch from the log end offset.
    Done {
        /// The log end offset after truncation.
        log_end_offset: i64,
    },
    /// The leader answered with an epoch the follower does not have: it truncated part way and
    /// must ask again for its (new) latest epoch (KIP-279).
    AskAgain,
    /// The leader refused; retry after a backoff (UNKNOWN_LEADER_EPOCH and the like) or after new
    /// metadata (FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER).
    Retry(ResponseError),
}

/// A follower's fetch for this partition (the Fetch request fields that matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    /// The leader to send it to.
    pub leader: BrokerId,
    /// This broker's id (`replica_id` / `ReplicaState.replica_id`).
    pub replica_id: BrokerId,
    /// Fetch from this offset (the follower's LEO).
    pub fetch_offset: i64,
    /// The follower's current leader epoch.
    pub current_leader_epoch: i32,
    /// The epoch of the follower's last record (-1: none, or a pre-KIP-320 fetch).
    pub last_fetched_epoch: i32,
    /// The follower's log start offset.
    pub log_start_offset: i64,
}

/// The leader's answer to a replica fetch, as the follower receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse<R> {
    /// The partition error, if any.
    pub error: Option<ResponseError>,
    /// The leader's high watermark.
    pub high_watermark: i64,
    /// The leader's log start offset.
    pub log_start_offset: i64,
    /// Fetch v12+ `diverging_epoch` (KIP-320), if the leader found the follower's log diverged.
    pub diverging_epoch: Option<EpochEndOffset>,
    /// The records (whole batches from the fetch offset), if any.
    pub records: Option<R>,
}

/// What applying a fetch response did on the follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchApplied {
    /// Records (possibly none) were appended; the HW was updated.
    Appended {
        /// What the log wrote.
        appended: AppendedBatches,
        /// The follower's HW afterwards.
        high_watermark: i64,
    },
    /// The leader reported a diverging epoch; the follower truncated.
    Truncated {
        /// The log end offset after truncation.
        log_end_offset: i64,
    },
    /// OFFSET_OUT_OF_RANGE: ask the leader for its log start and end offsets (ListOffsets) and
    /// call [`Partition::follower_handle_out_of_range`].
    OffsetOutOfRange,
    /// Any other error: retry after a backoff, or after new metadata for FENCED_LEADER_EPOCH and
    /// NOT_LEADER_OR_FOLLOWER.
    Retry(ResponseError),
}

/// Failures of replication operations.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// A Kafka error to return to the client as is.
    #[error("{0}")]
    Kafka(ResponseError),
    /// The log failed.
    #[error("log: {0}")]
    Log(Box<dyn std::error::Error + Send + Sync>),
    /// The epoch cache failed.
    #[error(transparent)]
    EpochCache(#[from] EpochCacheError),
}

impl ReplicationError {
    /// The error code a response carries (storage failures are KAFKA_STORAGE_ERROR).
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            ReplicationError::Kafka(e) => *e,
            _ => ResponseError::KafkaStorageError,
        }
    }
}

fn log_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> ReplicationError {
    ReplicationError::Log(Box::new(e))
}

/// The replica state of one partition on this broker.
#[derive(Debug)]
pub struct Partition<L: ReplicaLog> {
    local: BrokerId,
    log: L,
    epochs: LeaderEpochCache,
    config: PartitionConfig,
    bugs: ReplicationBugs,
    role: Role,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    /// The committed ISR (empty on followers, as in Kafka).
    isr: BTreeSet<BrokerId>,
    pending_isr: Option<PendingIsr>,
    high_watermark: i64,
    leader_epoch_start_offset: Option<i64>,
    followers: BTreeMap<BrokerId, FollowerReplicaState>,
    ineligible: BTreeSet<BrokerId>,
    waiters: Vec<AckWaiter>,
    /// On a follower: truncation by epoch still to do before fetching.
    needs_truncation: bool,
    /// Bumped whenever records are removed from the log's end (or the log restarts), so state
    /// derived incrementally from the log (the transaction index) knows to rebuild.
    log_generation: u64,
}

impl<L: ReplicaLog> Partition<L> {
    /// Opens the replica of the partition whose directory is `dir` over `log` (already
    /// recovered), with the high watermark from the broker's HW checkpoint (clamped into the
    /// log). The epoch cache is read from `dir`, or rebuilt from the log.
    pub fn open(
        local: BrokerId,
        dir: &Path,
        log: L,
        checkpointed_high_watermark: i64,
        config: PartitionConfig,
        bugs: ReplicationBugs,
    ) -> Result<Self, ReplicationError> {
        let epochs = LeaderEpochCache::open(dir, &log)?;
        let high_watermark = checkpointed_high_watermark.clamp(
            log.log_start_offset(),
            log.log_end_offset().max(log.log_start_offset()),
        );
        Ok(Partition {
            local,
            log,
            epochs,
            config,
            bugs,
            role: Role::Offline,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: BTreeSet::new(),
            pending_isr: None,
            high_watermark,
            leader_epoch_start_offset: None,
            followers: BTreeMap::new(),
            ineligible: BTreeSet::new(),
            waiters: Vec::new(),
            needs_truncation: false,
            log_generation: 0,
        })
    }

    // ----- accessors -----

    /// Bumped whenever the log loses records at its end or restarts empty (truncation), so
    /// state derived from the log incrementally can tell it must be rebuilt.
    pub fn log_generation(&self) -> u64 {
        self.log_generation
    }

    /// This broker's id.
    pub fn local_broker(&self) -> BrokerId {
        self.local
    }
    /// The log (read it to serve fetches; mutate it only through this type).
    pub fn log(&self) -> &L {
        &self.log
    }
    /// Gives the log back (shutdown; the epoch cache is already on disk).
    pub fn into_log(self) -> L {
        self.log
    }
    /// Mutable access to the log for reads that need it; never append or truncate through it.
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }
    /// The leader-epoch cache.
    pub fn epoch_cache(&self) -> &LeaderEpochCache {
        &self.epochs
    }
    /// The settings.
    pub fn config(&self) -> PartitionConfig {
        self.config
    }
    /// Changes the settings (a topic config change).
    pub fn set_config(&mut self, config: PartitionConfig) {
        self.config = config;
    }
    /// The bug modes in force.
    pub fn bugs(&self) -> ReplicationBugs {
        self.bugs
    }
    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }
    /// The leader epoch from the last metadata applied.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }
    /// The partition epoch from the last metadata (or AlterPartition answer) applied.
    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }
    /// The high watermark (checkpoint it periodically, as Kafka's `replication-offset-checkpoint`).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    /// The log end offset.
    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }
    /// The log start offset.
    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }
    /// The assigned replicas.
    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }
    /// The committed ISR (empty unless leader).
    pub fn isr(&self) -> Vec<BrokerId> {
        self.isr.iter().copied().collect()
    }
    /// The ISR the HW waits for: the committed ISR plus a replica being added (Kafka's
    /// "maximal ISR", KIP-497); a pending shrink still counts the replicas being removed.
    pub fn maximal_isr(&self) -> BTreeSet<BrokerId> {
        let mut isr = self.isr.clone();
        if let Some(PendingIsr::Expand(p)) = &self.pending_isr {
            isr.extend(p.new_isr.iter().copied());
        }
        isr
    }
    /// The AlterPartition change in flight, if any.
    pub fn pending_alter_partition(&self) -> Option<&AlterPartitionProposal> {
        self.pending_isr.as_ref().map(PendingIsr::proposal)
    }
    /// The leader's view of each follower.
    pub fn follower_states(&self) -> impl Iterator<Item = &FollowerReplicaState> {
        self.followers.values()
    }
    /// The start offset of the leader's current epoch (leader only).
    pub fn leader_epoch_start_offset(&self) -> Option<i64> {
        self.leader_epoch_start_offset
    }
    /// Leader with fewer ISR members than replicas (`UnderReplicated`).
    pub fn is_under_replicated(&self) -> bool {
        self.is_leader() && self.isr.len() < self.replicas.len()
    }
    /// Leader with fewer ISR members than `min.insync.replicas` (`UnderMinIsr`).
    pub fn is_under_min_isr(&self) -> bool {
        self.is_leader() && self.isr.len() < self.min_isr()
    }
    /// The min ISR acks=all and (with `hw_requires_min_isr`) the HW follow: Kafka 3.7's
    /// `effectiveMinIsr` = min(`min.insync.replicas`, replica count) under
    /// [`PartitionConfig::effective_min_isr`], else `min.insync.replicas` as set.
    pub fn min_isr(&self) -> usize {
        if self.config.effective_min_isr && !self.replicas.is_empty() {
            self.config.min_insync_replicas.min(self.replicas.len())
        } else {
            self.config.min_insync_replicas
        }
    }

    /// The number of acks=all produces waiting.
    pub fn waiting_produces(&self) -> usize {
        self.waiters.len()
    }
    /// The earliest deadline among the waiting acks=all produces (when to call
    /// [`Self::poll_waiters`] next if nothing else happens).
    pub fn next_waiter_deadline(&self) -> Option<i64> {
        self.waiters.iter().map(|w| w.deadline_ms).min()
    }
    /// Whether a follower still has to truncate by epoch before fetching.
    pub fn needs_truncation(&self) -> bool {
        self.needs_truncation
    }

    /// Marks brokers that are fenced or shutting down: they cannot join the ISR and the HW does
    /// not wait for them unless they are in it (Kafka's `isReplicaIsrEligible`).
    pub fn set_ineligible_replicas(&mut self, brokers: impl IntoIterator<Item = BrokerId>) {
        self.ineligible = brokers.into_iter().collect();
    }

    // ----- role changes -----

    /// Whether `state` is older than the partition epoch applied (Kafka skips such updates).
    fn is_stale(&self, state: &PartitionState, change: &str) -> bool {
        let stale = state.partition_epoch < self.partition_epoch;
        if stale {
            tracing::info!(
                partition_epoch = state.partition_epoch,
                current = self.partition_epoch,
                change,
                "skipped a state change with a stale partition epoch"
            );
        }
        stale
    }

    /// Applies metadata naming this broker leader. Returns `Ok(false)` (ignored) when the
    /// partition epoch is older than the one applied. On a new leader epoch the epoch starts at
    /// the log end offset and is persisted at once (KAFKA-7415), and the followers' states are
    /// reset as Kafka's `makeLeader` does. A leader never truncates: after an unclean election
    /// its shorter log simply becomes the truth. May advance the HW (poll the waiters).
    pub fn become_leader(
        &mut self,
        state: &PartitionState,
        now_ms: i64,
    ) -> Result<bool, ReplicationError> {
        if self.is_stale(state, "become-leader") {
            return Ok(false);
        }
        let was_leader = self.is_leader();
        if was_leader
            && state.leader_epoch == self.leader_epoch
            && state.partition_epoch == self.partition_epoch
        {
            // The same state again (a metadata image that changed something else): a pending
            // AlterPartition stays pending; only a change to this partition settles it.
            return Ok(self.maybe_increment_high_watermark(now_ms));
        }
        let new_epoch = state.leader_epoch > self.leader_epoch;
        self.replicas = state.replicas.clone();
        self.isr = state.isr.iter().copied().collect();
        self.pending_isr = None;
        self.followers
            .retain(|id, _| state.replicas.contains(id) && *id != self.local);
        for &id in &state.replicas {
            if id != self.local {
                self.followers
                    .entry(id)
                    .or_insert_with(|| FollowerReplicaState::unknown(id, None));
            }
        }
        if new_epoch {
            let start = self.log.log_end_offset();
            self.epochs.assign(state.leader_epoch, start)?;
            for f in self.followers.values_mut() {
                let in_sync = state.isr.contains(&f.broker);
                let caught_up = in_sync.then_some(now_ms);
                if was_leader {
                    f.last_fetch_leader_log_end_offset = start;
                    f.last_fetch_time_ms = caught_up;
                    f.last_caught_up_time_ms = caught_up;
                } else {
                    *f = FollowerReplicaState::unknown(f.broker, caught_up);
                }
            }
            tracing::info!(broker = self.local, leader_epoch = state.leader_epoch, start_offset = start,
                partition_epoch = state.partition_epoch, high_watermark = self.high_watermark,
                isr = ?state.isr, "became leader");
            self.leader_epoch = state.leader_epoch;
            self.leader_epoch_start_offset = Some(start);
        }
        self.partition_epoch = state.partition_epoch;
        self.role = Role::Leader;
        self.needs_truncation = false;
        Ok(self.maybe_increment_high_watermark(now_ms))
    }

    /// Applies metadata naming another broker leader. Returns whether the leader epoch changed
    /// (then the follower must truncate before fetching: see [`Self::truncation_query`]);
    /// `Ok(false)` also when ignored for a stale partition epoch. Waiting acks=all produces fail
    /// with NOT_LEADER_OR_FOLLOWER at the next [`Self::poll_waiters`].
    ///
    /// With [`ReplicationBugs::hw_truncation`] the log is truncated to the high watermark here
    /// instead (pre-KIP-101).
    pub fn become_follower(
        &mut self,
        state: &PartitionState,
        _now_ms: i64,
    ) -> Result<bool, ReplicationError> {
        if self.is_stale(state, "become-follower") {
            return Ok(false);
        }
        let new_epoch = state.leader_epoch > self.leader_epoch
            || !matches!(self.role, Role::Follower { leader } if leader == state.leader);
        self.role = Role::Follower {
            leader: state.leader,
        };
        self.leader_epoch = state.leader_epoch;
        self.partition_epoch = state.partition_epoch;
        self.replicas = state.replicas.clone();
        self.isr.clear();
        self.pending_isr = None;
        self.followers.clear();
        self.leader_epoch_start_offset = None;
        if new_epoch {
            tracing::info!(
                broker = self.local,
                leader = state.leader,
                leader_epoch = state.leader_epoch,
                log_end_offset = self.log.log_end_offset(),
                "became follower"
            );
            if self.bugs.hw_truncation {
                // BUG MODE (KAFKA-1211, pre-KIP-101): truncate to the possibly stale HW.
                let hw = self.high_watermark;
                tracing::warn!(
                    broker = self.local,
                    high_watermark = hw,
                    "bug mode hw_truncation: truncating to the high watermark"
                );
                self.truncate_to(hw)?;
                self.needs_truncation = false;
            } else {
                let has_epochs = self.epochs.latest_epoch().is_some();
                self.needs_truncation = !(self.config.truncate_on_fetch && has_epochs);
            }
        }
        Ok(new_epoch)
    }

    /// Stops replicating (the partition was deleted or reassigned away): waiters fail at the next
    /// poll.
    pub fn become_offline(&mut self) {
        self.role = Role::Offline;
        self.isr.clear();
        self.pending_isr = None;
        self.followers.clear();
        self.needs_truncation = false;
    }

    // ----- leader: produce -----

    /// Appends a producer's records on the leader. Refuses with NOT_LEADER_OR_FOLLOWER unless
    /// leader, and with NOT_ENOUGH_REPLICAS for acks=all when the committed ISR is smaller than
    /// `min.insync.replicas` (nothing is appended then). May advance the HW (ISR = {leader}).
    /// For acks=all, register [`Self::add_acks_all_waiter`] with `last_offset + 1`.
    pub fn append_as_leader(
        &mut self,
        records: L::Records,
        acks: Acks,
        now_ms: i64,
    ) -> Result<AppendedBatches, ReplicationError> {
        if !self.is_leader() {
            return Err(ReplicationError::Kafka(ResponseError::NotLeaderOrFollower));
        }
        if acks == Acks::All && self.isr.len() < self.min_isr() && !self.bugs.ignore_min_insync {
            return Err(ReplicationError::Kafka(ResponseError::NotEnoughReplicas));
        }
        let appended = self
            .log
            .append_as_leader(records, self.leader_epoch, now_ms)
            .map_err(log_err)?;
        self.assign_epochs(&appended)?;
        self.maybe_increment_high_watermark(now_ms);
        Ok(appended)
    }

    /// Registers an acks=all produce that completes once the HW reaches `required_offset` (the
    /// last appended offset + 1) or fails at `deadline_ms`.
    pub fn add_acks_all_waiter(&mut self, id: u64, required_offset: i64, deadline_ms: i64) {
        self.waiters.push(AckWaiter {
            id,
            required_offset,
            deadline_ms,
        });
    }

    /// Completes the acks=all waiters that can complete now (Kafka's `DelayedProduce` checks):
    /// NOT_LEADER_OR_FOLLOWER once not leader; acknowledged when the HW reached the offset, or
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the maximal ISR is then below `min.insync.replicas`;
    /// REQUEST_TIMED_OUT at the deadline. Call after any HW, ISR or role change and on a timer.
    pub fn poll_waiters(&mut self, now_ms: i64) -> Vec<WaiterCompletion> {
        let leader = self.is_leader();
        let hw = self.high_watermark;
        let leo = self.log.log_end_offset();
        let enough = self.maximal_isr().len() >= self.min_isr() || self.bugs.ignore_min_insync;
        let ack_before_isr = self.bugs.ack_before_isr;
        let mut done = Vec::new();
        self.waiters.retain(|w| {
            let result = if !leader {
                Some(Err(ResponseError::NotLeaderOrFollower))
            } else if ack_before_isr && leo >= w.required_offset {
                // BUG MODE ack_before_isr: acknowledged once the leader has it.
                Some(Ok(()))
            } else if hw >= w.required_offset {
                Some(if enough {
                    Ok(())
                } else {
                    Err(ResponseError::NotEnoughReplicasAfterAppend)
                })
            } else if now_ms >= w.deadline_ms {
                Some(Err(ResponseError::RequestTimedOut))
            } else {
                None
            };
            match result {
                Some(result) => {
                    done.push(WaiterCompletion { id: w.id, result });
                    false
                }
                None => true,
            }
        });
        done
    }

    // ----- leader: followers, HW, ISR -----

    /// Records a follower's fetch the leader has just served (not one answered with a diverging
    /// epoch or an error): `fetch_offset` is the follower's LEO, `leader_log_end_offset` the
    /// leader's LEO when the read was made. Updates `lastCaughtUpTimeMs` as Kafka does, proposes
    /// an ISR expansion when the follower is back in sync, and advances the HW.
    pub fn record_follower_fetch(
        &mut self,
        replica: BrokerId,
        fetch_offset: i64,
        follower_log_start_offset: i64,
        leader_log_end_offset: i64,
        now_ms: i64,
    ) -> Result<FollowerFetchOutcome, ReplicationError> {
        if !self.is_leader() {
            return Err(ReplicationError::Kafka(ResponseError::NotLeaderOrFollower));
        }
        let Some(f) = self.followers.get_mut(&replica) else {
            return Err(ReplicationError::Kafka(ResponseError::NotLeaderOrFollower));
        };
        let previous_leo = f.log_end_offset;
        let caught_up = if fetch_offset >= leader_log_end_offset {
            f.last_caught_up_time_ms.max(Some(now_ms))
        } else if fetch_offset >= f.last_fetch_leader_log_end_offset {
            f.last_caught_up_time_ms.max(f.last_fetch_time_ms)
        } else {
            f.last_caught_up_time_ms
        };
        f.log_start_offset = follower_log_start_offset;
        f.log_end_offset = fetch_offset;
        f.last_fetch_leader_log_end_offset = leader_log_end_offset;
        f.last_fetch_time_ms = Some(now_ms);
        f.last_caught_up_time_ms = caught_up;
        let alter_partition = self.maybe_expand_isr(replica);
        let high_watermark_advanced =
            previous_leo != fetch_offset && self.maybe_increment_high_watermark(now_ms);
        Ok(FollowerFetchOutcome {
            high_watermark_advanced,
            alter_partition,
        })
    }

    fn maybe_expand_isr(&mut self, replica: BrokerId) -> Option<AlterPartitionProposal> {
        if self.pending_isr.is_some()
            || self.isr.contains(&replica)
            || self.ineligible.contains(&replica)
        {
            return None;
        }
        let f = self.followers.get(&replica)?;
        let at_hw = f.log_end_offset >= self.high_watermark;
        let in_epoch = self.bugs.isr_join_below_epoch_start
            || self
                .leader_epoch_start_offset
                .is_some_and(|s| f.log_end_offset >= s);
        if !(at_hw && in_epoch) {
            return None;
        }
        let mut new_isr = self.isr.clone();
        new_isr.insert(replica);
        let proposal = AlterPartitionProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr: new_isr.into_iter().collect(),
        };
        tracing::info!(broker = self.local, replica, isr = ?proposal.new_isr, "proposing ISR expansion");
        self.pending_isr = Some(PendingIsr::Expand(proposal.clone()));
        Some(proposal)
    }

    /// The ISR members (other than the leader) not caught up within `replica.lag.time.max.ms`.
    pub fn out_of_sync_replicas(&self, now_ms: i64) -> Vec<BrokerId> {
        let leo = self.log.log_end_offset();
        self.isr
            .iter()
            .copied()
            .filter(|id| *id != self.local)
            .filter(|id| {
                self.followers.get(id).is_none_or(|f| {
                    !f.is_caught_up(leo, now_ms, self.config.replica_lag_time_max_ms)
                })
            })
            .collect()
    }

    /// Proposes removing the out-of-sync followers from the ISR (Kafka's `maybeShrinkIsr`, run
    /// every `replica.lag.time.max.ms / 2`). Nothing while another change is pending.
    pub fn maybe_shrink_isr(&mut self, now_ms: i64) -> Option<AlterPartitionProposal> {
        if !self.is_leader() || self.pending_isr.is_some() {
            return None;
        }
        let out = self.out_of_sync_replicas(now_ms);
        if out.is_empty() {
            return None;
        }
        let proposal = AlterPartitionProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr: self
                .isr
                .iter()
                .copied()
                .filter(|id| !out.contains(id))
                .collect(),
        };
        tracing::info!(broker = self.local, out_of_sync = ?out, isr = ?proposal.new_isr,
            high_watermark = self.high_watermark, log_end_offset = self.log.log_end_offset(),
            "proposing ISR shrink");
        self.pending_isr = Some(PendingIsr::Shrink(proposal.clone()));
        Some(proposal)
    }

    /// Applies the controller's answer to the pending AlterPartition. On success (for this
    /// leader epoch and a partition epoch not older than ours) the ISR is committed and the HW may
    /// advance (returned); on an error the pending change is dropped and the committed ISR stays
    /// (the next fetch or shrink check proposes again).
    pub fn complete_alter_partition(
        &mut self,
        result: Result<CommittedIsr, ResponseError>,
        now_ms: i64,
    ) -> bool {
        if self.pending_isr.is_none() || !self.is_leader() {
            return false;
        }
        match result {
            Ok(c)
                if c.leader_epoch == self.leader_epoch
                    && c.partition_epoch >= self.partition_epoch =>
            {
                self.isr = c.isr.iter().copied().collect();
                self.partition_epoch = c.partition_epoch;
                self.pending_isr = None;
                tracing::info!(broker = self.local, isr = ?c.isr, partition_epoch = c.partition_epoch,
                    under_min_isr = self.is_under_min_isr(), "ISR updated");
                self.maybe_increment_high_watermark(now_ms)
            }
            Ok(c) => {
                tracing::info!(broker = self.local, answer = ?c, "ignored stale AlterPartition answer");
                self.pending_isr = None;
                false
            }
            Err(e) => {
                tracing::info!(broker = self.local, error = ?e, "AlterPartition failed; keeping the committed ISR");
                self.pending_isr = None;
                false
            }
        }
    }

    /// Kafka's `maybeIncrementLeaderHW`: the new HW is the smallest LEO among the leader, the
    /// maximal ISR, and followers caught up and eligible to join; it only moves forward (and,
    /// with `hw_requires_min_isr`, not at all while the ISR is below `min.insync.replicas`).
    fn maybe_increment_high_watermark(&mut self, now_ms: i64) -> bool {
        if !self.is_leader() || (self.config.hw_requires_min_isr && self.is_under_min_isr()) {
            return false;
        }
        let leo = self.log.log_end_offset();
        let maximal = self.maximal_isr();
        let mut new_hw = leo;
        for f in self.followers.values() {
            let counts = maximal.contains(&f.broker)
                || (f.is_caught_up(leo, now_ms, self.config.replica_lag_time_max_ms)
                    && !self.ineligible.contains(&f.broker));
            if counts && f.log_end_offset < new_hw {
                new_hw = f.log_end_offset;
            }
        }
        if new_hw > self.high_watermark {
            tracing::debug!(
                broker = self.local,
                from = self.high_watermark,
                to = new_hw,
                "high watermark advanced"
            );
            self.high_watermark = new_hw;
            true
        } else {
            false
        }
    }

    /// Re-evaluates the HW (e.g. after a follower was marked ineligible or on a timer).
    pub fn update_high_watermark(&mut self, now_ms: i64) -> bool {
        self.maybe_increment_high_watermark(now_ms)
    }

    /// The log start moved (retention or DeleteRecords): trims the epoch cache and lifts the HW
    /// to the new start if needed.
    pub fn on_log_start_offset_moved(&mut self) -> Result<(), ReplicationError> {
        let start = self.log.log_start_offset();
        self.epochs.truncate_from_start(start)?;
        self.high_watermark = self.high_watermark.max(start);
        Ok(())
    }

    /// The leader's answer to OffsetsForLeaderEpoch (replica requests): epoch fencing, leader
    /// only, then the epoch cache's answer (pre-KIP-279 with
    /// [`ReplicationBugs::epoch_lookup_next_epoch`]).
    pub fn offsets_for_leader_epoch(
        &self,
        current_leader_epoch: i32,
        requested_epoch: i32,
    ) -> Result<EpochEndOffset, ResponseError> {
        self.check_leader(current_leader_epoch)?;
        let leo = self.log.log_end_offset();
        Ok(if self.bugs.epoch_lookup_next_epoch {
            self.epochs.end_offset_for_pre_kip279(requested_epoch, leo)
        } else {
            self.epochs.end_offset_for(requested_epoch, leo)
        })
    }

    /// Kafka's `checkCurrentLeaderEpoch` then "leader required": FENCED_LEADER_EPOCH if the
    /// request's epoch is older, UNKNOWN_LEADER_EPOCH if newer, NOT_LEADER_OR_FOLLOWER if this
    /// broker does not lead. `current_leader_epoch` -1 means absent (no check).
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<(), ResponseError> {
        if current_leader_epoch >= 0 {
            if self.leader_epoch > current_leader_epoch {
                return Err(ResponseError::FencedLeaderEpoch);
            }
            if self.leader_epoch < current_leader_epoch {
                return Err(ResponseError::UnknownLeaderEpoch);
            }
        }
        if !self.is_leader() {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        Ok(())
    }

    // ----- follower -----

    /// The OffsetsForLeaderEpoch request a truncating follower must send, if any. With an empty
    /// epoch cache (an empty log) there is nothing to ask: truncation completes at once (to the
    /// HW, as Kafka does for partitions without epochs; a no-op on an empty log).
    pub fn truncation_query(&mut self) -> Result<Option<EpochQuery>, ReplicationError> {
        let Role::Follower { leader } = self.role else {
            return Ok(None);
        };
        if !self.needs_truncation {
            return Ok(None);
        }
        match self.epochs.latest_epoch() {
            Some(epoch) => Ok(Some(EpochQuery {
                leader,
                current_leader_epoch: self.leader_epoch,
                leader_epoch: epoch,
            })),
            None => {
                let hw = self.high_watermark;
                self.truncate_to(hw)?;
                self.needs_truncation = false;
                Ok(None)
            }
        }
    }

    /// Applies the leader's OffsetsForLeaderEpoch answer (Kafka's `getOffsetTruncationState`):
    /// if the leader answered with an epoch the follower knows, truncate to the smaller of the
    /// two end offsets for it; if not (KIP-279), truncate to the follower's own end of the
    /// largest epoch below the answer and ask again.
    pub fn apply_truncation_answer(
        &mut self,
        answer: Result<EpochEndOffset, ResponseError>,
    ) -> Result<TruncationStep, ReplicationError> {
        if !self.needs_truncation {
            return Ok(TruncationStep::Done {
                log_end_offset: self.log.log_end_offset(),
            });
        }
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return Ok(TruncationStep::Retry(e)),
        };
        let complete = if self.bugs.epoch_lookup_next_epoch {
            // BUG MODE (pre-KIP-279, KAFKA-6361): one step to the leader's offset.
            let target = if answer.end_offset == UNDEFINED_OFFSET {
                self.high_watermark
            } else {
                answer.end_offset
            };
            self.truncate_to(target)?;
            true
        } else {
            self.truncate_by_epoch(answer)?
        };
        if complete {
            self.needs_truncation = false;
            Ok(TruncationStep::Done {
                log_end_offset: self.log.log_end_offset(),
            })
        } else {
            Ok(TruncationStep::AskAgain)
        }
    }

    /// Truncates for a leader's epoch answer; returns whether truncation is complete.
    fn truncate_by_epoch(&mut self, leader: EpochEndOffset) -> Result<bool, ReplicationError> {
        let leo = self.log.log_end_offset();
        if leader.end_offset == UNDEFINED_OFFSET {
            // The leader knows no such epoch: Kafka falls back to the follower's HW.
            let hw = self.high_watermark;
            self.truncate_to(hw)?;
            return Ok(true);
        }
        let own = self.epochs.end_offset_for(leader.epoch, leo);
        let (target, complete) = if own.end_offset == UNDEFINED_OFFSET {
            (leader.end_offset.min(leo), true)
        } else if own.epoch != leader.epoch {
            (own.end_offset.min(leo), false)
        } else {
            (own.end_offset.min(leader.end_offset).min(leo), true)
        };
        tracing::info!(
            broker = self.local,
            leader_epoch = leader.epoch,
            leader_end = leader.end_offset,
            own_epoch = own.epoch,
            own_end = own.end_offset,
            target,
            complete,
            "truncating by leader epoch"
        );
        self.truncate_to(target)?;
        Ok(complete)
    }

    /// The fetch a follower sends next, or `None` while it must truncate first (or is not a
    /// follower). Pre-KIP-320 bug modes send no `last_fetched_epoch`.
    pub fn fetch_request(&self) -> Option<ReplicaFetchRequest> {
        let Role::Follower { leader } = self.role else {
            return None;
        };
        if self.needs_truncation || leader < 0 {
            return None;
        }
        let old_protocol = self.bugs.hw_truncation || self.bugs.epoch_lookup_next_epoch;
        Some(ReplicaFetchRequest {
            leader,
            replica_id: self.local,
            fetch_offset: self.log.log_end_offset(),
            current_leader_epoch: self.leader_epoch,
            last_fetched_epoch: if old_protocol {
                super::UNDEFINED_EPOCH
            } else {
                self.epochs.latest_epoch().unwrap_or(super::UNDEFINED_EPOCH)
            },
            log_start_offset: self.log.log_start_offset(),
        })
    }

    /// Applies the leader's fetch answer on a follower: a diverging epoch truncates (before any
    /// HW is applied, KAFKA-14704); otherwise the records are appended with the leader's offsets
    /// and epochs (the epoch cache follows the batch headers) and the HW becomes
    /// min(leader HW, own LEO).
    pub fn apply_fetch_response(
        &mut self,
        response: ReplicaFetchResponse<L::Records>,
        now_ms: i64,
    ) -> Result<FetchApplied, ReplicationError> {
        if !matches!(self.role, Role::Follower { .. }) || self.needs_truncation {
            return Ok(FetchApplied::Retry(ResponseError::NotLeaderOrFollower));
        }
        match response.error {
            None => {}
            Some(ResponseError::OffsetOutOfRange) => return Ok(FetchApplied::OffsetOutOfRange),
            Some(e) => return Ok(FetchApplied::Retry(e)),
        }
        if let Some(diverging) = response.diverging_epoch {
            self.truncate_by_epoch(diverging)?;
            return Ok(FetchApplied::Truncated {
                log_end_offset: self.log.log_end_offset(),
            });
        }
        let appended = match response.records {
            Some(records) => {
                let a = self
                    .log
                    .append_as_follower(records, now_ms)
                    .map_err(log_err)?;
                self.assign_epochs(&a)?;
                a
            }
            None => {
                let leo = self.log.log_end_offset();
                AppendedBatches {
                    first_offset: leo,
                    last_offset: leo - 1,
                    batches: Vec::new(),
                }
            }
        };
        let start = self.log.log_start_offset();
        let leo = self.log.log_end_offset();
        self.high_watermark = response.high_watermark.clamp(start, leo.max(start));
        Ok(FetchApplied::Appended {
            appended,
            high_watermark: self.high_watermark,
        })
    }

    /// After OFFSET_OUT_OF_RANGE, with the leader's log start and end offsets (ListOffsets):
    /// if the leader's log ends before ours, truncate to its end (an unclean election); if it
    /// starts after our end, restart our log at its start. Returns the offset to fetch from.
    pub fn follower_handle_out_of_range(
        &mut self,
        leader_log_start_offset: i64,
        leader_log_end_offset: i64,
    ) -> Result<i64, ReplicationError> {
        let leo = self.log.log_end_offset();
        if leader_log_end_offset < leo {
            tracing::warn!(
                broker = self.local,
                leader_log_end_offset,
                log_end_offset = leo,
                "leader's log is shorter: truncating to it"
            );
            self.truncate_to(leader_log_end_offset)?;
        } else if leader_log_start_offset > leo {
            self.log
                .truncate_fully_and_start_at(leader_log_start_offset)
                .map_err(log_err)?;
            self.log_generation += 1;
            self.epochs.clear()?;
            self.high_watermark = leader_log_start_offset;
        }
        Ok(self.log.log_end_offset())
    }

    // ----- shared -----

    fn assign_epochs(&mut self, appended: &AppendedBatches) -> Result<(), ReplicationError> {
        for b in &appended.batches {
            if b.epoch >= 0 {
                self.epochs.assign(b.epoch, b.base_offset)?;
            }
        }
        Ok(())
    }

    /// Truncates the log (and the epoch cache) to `offset`; the HW follows it down.
    ///
    /// At or beyond the log end the log keeps every record, but the epoch cache is still cut at
    /// the log end, as Kafka's `UnifiedLog.truncateTo` does: a broker that led an epoch without
    /// appending to it holds an entry starting at its log end that the new leader may never have
    /// seen. Kept, it would be this follower's `last_fetched_epoch` in every fetch, each answered
    /// with the same diverging epoch, so the follower would loop without ever being recorded as
    /// caught up (nor rejoin the ISR).
    fn truncate_to(&mut self, offset: i64) -> Result<(), ReplicationError> {
        let leo = self.log.log_end_offset();
        if offset >= leo {
            self.epochs.truncate_from_end(leo)?;
            return Ok(());
        }
        self.log.truncate_to(offset).map_err(log_err)?;
        self.log_generation += 1;
        let leo = self.log.log_end_offset();
        self.epochs.truncate_from_end(leo)?;
        self.high_watermark = self.high_watermark.min(leo);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::mem_log::{MemBatch, MemLog};

    const LAG: i64 = 10_000;

    fn config(min_isr: usize) -> PartitionConfig {
        PartitionConfig {
            replica_lag_time_max_ms: LAG,
            min_insync_replicas: min_isr,
            truncate_on_fetch: false,
            hw_requires_min_isr: false,
            effective_min_isr: false,
        }
    }

    fn state(leader: BrokerId, epoch: i32, isr: &[BrokerId]) -> PartitionState {
        PartitionState {
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        }
    }

    /// Broker 1 leading replicas {1,2,3} with `isr`, in epoch 1.
    fn leader(
        isr: &[BrokerId],
        min_isr: usize,
        bugs: ReplicationBugs,
    ) -> (tempfile::TempDir, Partition<MemLog>) {
        let dir = tempfile::tempdir().unwrap();
        let mut p =
            Partition::open(1, dir.path(), MemLog::new(), 0, config(min_isr), bugs).unwrap();
        p.become_leader(&state(1, 1, isr), 0).unwrap();
        (dir, p)
    }

    fn produce(
        p: &mut Partition<MemLog>,
        acks: Acks,
        n: usize,
        now: i64,
    ) -> Result<AppendedBatches, ReplicationError> {
        let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        p.append_as_leader(vec![MemBatch::new(values)], acks, now)
    }

    fn fetch(
        p: &mut Partition<MemLog>,
        replica: BrokerId,
        offset: i64,
        now: i64,
    ) -> FollowerFetchOutcome {
        let leo = p.log_end_offset();
        p.record_follower_fetch(replica, offset, 0, leo, now)
            .unwrap()
    }

    fn commit(p: &mut Partition<MemLog>, proposal: &AlterPartitionProposal, now: i64) -> bool {
        p.complete_alter_partition(
            Ok(CommittedIsr {
                leader_epoch: proposal.leader_epoch,
                partition_epoch: proposal.partition_epoch + 1,
                isr: proposal.new_isr.clone(),
            }),
            now,
        )
    }

    #[test]
    fn high_watermark_advances_only_with_the_whole_isr() {
        let (_d, mut p) = leader(&[1, 2, 3], 1, ReplicationBugs::none());
        produce(&mut p, Acks::All, 3, 0).unwrap();
        assert_eq!(p.high_watermark(), 0);
        assert!(!fetch(&mut p, 2, 3, 1).high_watermark_advanced);
        assert_eq!(p.high_watermark(), 0, "broker 3 has not fetched");
        assert!(fetch(&mut p, 3, 2, 2).high_watermark_advanced);
        assert_eq!(p.high_watermark(), 2, "min LEO over the ISR");
        fetch(&mut p, 3, 3, 3);
        assert_eq!(p.high_watermark(), 3);
        // Alone in the ISR, the leader's own LEO is the HW.
        let (_d2, mut solo) = leader(&[1], 1, ReplicationBugs::none());
        produce(&mut solo, Acks::Leader, 2, 0).unwrap();
        assert_eq!(solo.high_watermark(), 2);
    }

    #[test]
    fn isr_shrinks_after_the_lag_time_and_expands_on_catch_up() {
        let (_d, mut p) = leader(&[1, 2, 3], 1, ReplicationBugs::none());
        produce(&mut p, Acks::Leader, 1, 0).unwrap();
        fetch(&mut p, 2, 1, 100);
        fetch(&mut p, 3, 1, 100);
        assert_eq!(p.high_watermark(), 1);
        // Broker 3 stops fetching; broker 2 keeps fetching but new records keep arriving, so it
        // is never at the LEO when it fetches: it stays caught up because each fetch reaches the
        // LEO the leader had at its previous fetch (lastCaughtUpTimeMs semantics).
        let mut now = 100;
        for _ in 0..30 {
            now += 1_000;
            produce(&mut p, Acks::Leader, 1, now).unwrap();
            let prev_leo = p.log_end_offset() - 1;
            fetch(&mut p, 2, prev_leo, now);
            assert_eq!(
                p.maybe_shrink_isr(now).map(|x| x.new_isr.contains(&2)),
                if now - 100 > LAG { Some(true) } else { None }
            );
            if p.pending_alter_partition().is_some() {
                break;
            }
        }
        let proposal = p.pending_alter_partition().unwrap().clone();
        assert_eq!(proposal.new_isr, vec![1, 2]);
        assert!(
            now - 100 > LAG && now - 100 <= LAG + 1_000,
            "shrunk right after the lag time"
        );
        // While the shrink is pending, broker 3 still holds the HW (maximal ISR).
        assert_eq!(p.high_watermark(), 1);
        assert!(commit(&mut p, &proposal, now));
        assert_eq!(p.isr(), vec![1, 2]);
        assert_eq!(p.high_watermark(), p.log_end_offset() - 1);
        // Broker 3 comes back and catches up to the HW: expansion proposed, and while it is
        // pending broker 3 counts for the HW.
        let hw = p.high_watermark();
        assert!(
            fetch(&mut p, 3, hw - 1, now).alter_partition.is_none(),
            "below the HW"
        );
        let out = fetch(&mut p, 3, hw, now);
        let expand = out.alter_partition.unwrap();
        assert_eq!(expand.new_isr, vec![1, 2, 3]);
        assert_eq!(
            p.maximal_isr().into_iter().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(p.isr(), vec![1, 2]);
        let leo = p.log_end_offset();
        fetch(&mut p, 2, leo, now);
        assert_eq!(
            p.high_watermark(),
            hw,
            "held by broker 3 while its addition is pending"
        );
        commit(&mut p, &expand, now);
        assert_eq!(p.isr(), vec![1, 2, 3]);
    }

    #[test]
    fn a_pending_expansion_survives_a_metadata_image_that_does_not_change_the_partition() {
        let (_d, mut p) = leader(&[1, 2], 1, ReplicationBugs::none());
        produce(&mut p, Acks::Leader, 1, 0).unwrap();
        fetch(&mut p, 2, 1, 10);
        let hw = p.high_watermark();
        let expand = fetch(&mut p, 3, hw, 20).alter_partition.expect("expansion");
        assert_eq!(expand.new_isr, vec![1, 2, 3]);
        // An image that changed another partition or topic: the same state for this one.
        p.become_leader(&state(1, 1, &[1, 2]), 30).unwrap();
        assert_eq!(
            p.pending_alter_partition().map(|x| x.new_isr.clone()),
            Some(vec![1, 2, 3]),
            "still pending"
        );
        commit(&mut p, &expand, 40);
        assert_eq!(p.isr(), vec![1, 2, 3]);
        // A change to this partition (here a shrink decided elsewhere) does settle it.
        let (_d2, mut q) = leader(&[1, 2], 1, ReplicationBugs::none());
        produce(&mut q, Acks::Leader, 1, 0).unwrap();
        fetch(&mut q, 2, 1, 10);
        let hw = q.high_watermark();
        assert!(fetch(&mut q, 3, hw, 20).alter_partition.is_some());
        let mut changed = state(1, 1, &[1]);
        changed.partition_epoch = 2;
        q.become_leader(&changed, 30).unwrap();
        assert!(q.pending_alter_partition().is_none());
        assert_eq!(q.isr(), vec![1]);
    }

    #[test]
    fn shrink_waits_for_a_pending_change_and_alter_errors_revert() {
        let (_d, mut p) = leader(&[1, 2, 3], 1, ReplicationBugs::none());
        produce(&mut p, Acks::Leader, 1, 0).unwrap();
        let now = LAG + 1;
        let shrink = p.maybe_shrink_isr(now).unwrap();
        assert_eq!(shrink.new_isr, vec![1]);
        assert!(
            p.maybe_shrink_isr(now).is_none(),
            "one change in flight at a time"
        );
        assert!(!p.complete_alter_partition(Err(ResponseError::InvalidUpdateVersion), now));
        assert!(p.pending_alter_partition().is_none());
        assert_eq!(p.isr(), vec![1, 2, 3]);
        // A stale answer (another leader epoch) is ignored too.
        let shrink = p.maybe_shrink_isr(now).unwrap();
        let stale = CommittedIsr {
            leader_epoch: 0,
            partition_epoch: 9,
            isr: vec![1],
        };
        assert!(!p.complete_alter_partition(Ok(stale), now));
        assert_eq!(p.isr(), vec![1, 2, 3]);
        assert!(p.maybe_shrink_isr(now).is_some());
        let _ = shrink;
    }

    #[test]
    fn acks_all_needs_min_insync_replicas() {
        let (_d, mut p) = leader(&[1], 2, ReplicationBugs::none());
        let err = produce(&mut p, Acks::All, 1, 0).unwrap_err();
        assert_eq!(err.kafka_error(), ResponseError::NotEnoughReplicas);
        assert_eq!(p.log_end_offset(), 0, "nothing appended");
        produce(&mut p, Acks::Leader, 1, 0).unwrap();
        produce(&mut p, Acks::None, 1, 0).unwrap();
        assert_eq!(p.log_end_offset(), 2);
        // With two in the ISR acks=all is accepted.
        let (_d2, mut p2) = leader(&[1, 2], 2, ReplicationBugs::none());
        produce(&mut p2, Acks::All, 1, 0).unwrap();
    }

    #[test]
    fn bug_ignore_min_insync_acknowledges_with_the_leader_alone() {
        let bugs = ReplicationBugs {
            ignore_min_insync: true,
            ..ReplicationBugs::none()
        };
        let (_d, mut p) = leader(&[1], 2, bugs);
        let a = produce(&mut p, Acks::All, 1, 0).unwrap();
        p.add_acks_all_waiter(7, a.last_offset + 1, 1_000);
        assert_eq!(
            p.poll_waiters(0),
            vec![WaiterCompletion {
                id: 7,
                result: Ok(())
            }]
        );
    }

    #[test]
    fn acks_all_waiters_complete_time_out_or_fail() {
        let (_d, mut p) = leader(&[1, 2], 2, ReplicationBugs::none());
        let a = produce(&mut p, Acks::All, 2, 0).unwrap();
        p.add_acks_all_waiter(1, a.last_offset + 1, 5_000);
        let b = produce(&mut p, Acks::All, 1, 0).unwrap();
        p.add_acks_all_waiter(2, b.last_offset + 1, 5_000);
        assert!(p.poll_waiters(10).is_empty());
        assert_eq!(
            (p.waiting_produces(), p.next_waiter_deadline()),
            (2, Some(5_000))
        );
        fetch(&mut p, 2, 2, 20);
        assert_eq!(
            p.poll_waiters(20),
            vec![WaiterCompletion {
                id: 1,
                result: Ok(())
            }]
        );
        assert!(p.poll_waiters(4_999).is_empty());
        assert_eq!(
            p.poll_waiters(5_000),
            vec![WaiterCompletion {
                id: 2,
                result: Err(ResponseError::RequestTimedOut)
            }]
        );
        // Waiters fail once the broker stops leading.
        let c = produce(&mut p, Acks::All, 1, 30).unwrap();
        p.add_acks_all_waiter(3, c.last_offset + 1, 50_000);
        p.become_follower(&state(2, 2, &[1, 2]), 40).unwrap();
        assert_eq!(
            p.poll_waiters(40),
            vec![WaiterCompletion {
                id: 3,
                result: Err(ResponseError::NotLeaderOrFollower)
            }]
        );
        assert_eq!(
            produce(&mut p, Acks::Leader, 1, 50)
                .unwrap_err()
                .kafka_error(),
            ResponseError::NotLeaderOrFollower
        );
    }

    #[test]
    fn isr_shrinking_below_min_while_waiting_is_not_enough_after_append() {
        let (_d, mut p) = leader(&[1, 2], 2, ReplicationBugs::none());
        let a = produce(&mut p, Acks::All, 1, 0).unwrap();
        p.add_acks_all_waiter(1, a.last_offset + 1, 60_000);
        let shrink = p.maybe_shrink_isr(LAG + 1).unwrap();
        assert!(
            p.poll_waiters(LAG + 1).is_empty(),
            "pending shrink still holds the HW"
        );
        assert!(commit(&mut p, &shrink, LAG + 1));
        assert_eq!(
            p.poll_waiters(LAG + 1),
            vec![WaiterCompletion {
                id: 1,
                result: Err(ResponseError::NotEnoughReplicasAfterAppend)
            }]
        );
    }

    #[test]
    fn bug_ack_before_isr_acknowledges_unreplicated_records() {
        for bug in [false, true] {
            let bugs = ReplicationBugs {
                ack_before_isr: bug,
                ..ReplicationBugs::none()
            };
            let (_d, mut p) = leader(&[1, 2, 3], 2, bugs);
            let a = produce(&mut p, Acks::All, 1, 0).unwrap();
            p.add_acks_all_waiter(1, a.last_offset + 1, 60_000);
            let done = p.poll_waiters(0);
            if bug {
                assert_eq!(
                    done,
                    vec![WaiterCompletion {
                        id: 1,
                        result: Ok(())
                    }]
                );
                assert_eq!(
                    p.high_watermark(),
                    0,
                    "acknowledged though no follower has it"
                );
            } else {
                assert!(done.is_empty());
            }
        }
    }

    #[test]
    fn high_watermark_never_moves_backwards() {
        let (_d, mut p) = leader(&[1, 2], 1, ReplicationBugs::none());
        produce(&mut p, Acks::Leader, 4, 0).unwrap();
        fetch(&mut p, 2, 4, 1);
        assert_eq!(p.high_watermark(), 4);
        // Broker 2 re-fetching from an older offset (it truncated) does not lower the HW.
        fetch(&mut p, 2, 1, 2);
        assert_eq!(p.high_watermark(), 4);
        // A new leader epoch resets followers' LEOs to unknown, but not the HW.
        p.become_follower(&state(2, 2, &[1, 2]), 3).unwrap();
        p.become_leader(&state(1, 3, &[1, 2]), 4).unwrap();
        assert_eq!(p.high_watermark(), 4);
        assert_eq!(
            p.epoch_cache()
                .latest_entry()
                .map(|e| (e.epoch, e.start_offset)),
            Some((3, 4))
        );
    }

    #[test]
    fn stale_partition_epochs_are_ignored() {
        let (_d, mut p) = leader(&[1, 2], 1, ReplicationBugs::none());
        let mut newer = state(1, 1, &[1, 2, 3]);
        newer.partition_epoch = 5;
        p.become_leader(&newer, 0).unwrap();
        assert_eq!(p.isr(), vec![1, 2, 3]);
        let mut older = state(2, 2, &[2]);
        older.partition_epoch = 4;
        assert!(!p.become_follower(&older, 0).unwrap());
        assert!(p.is_leader());
    }

    fn follower(bugs: ReplicationBugs) -> (tempfile::TempDir, Partition<MemLog>) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MemLog::new();
        log.append_as_leader(vec![MemBatch::new(["a"]), MemBatch::new(["b"])], 1, 0)
            .unwrap();
        log.append_as_leader(vec![MemBatch::new(["c"])], 2, 0)
            .unwrap();
        let mut p = Partition::open(2, dir.path(), log, 1, config(1), bugs).unwrap();
        p.become_follower(&state(1, 3, &[1, 2]), 0).unwrap();
        (dir, p)
    }

    #[test]
    fn follower_truncates_by_epoch_not_by_high_watermark() {
        let (_d, mut p) = follower(ReplicationBugs::none());
        assert!(p.fetch_request().is_none(), "must truncate first");
        let q = p.truncation_query().unwrap().unwrap();
        assert_eq!(
            (q.leader, q.current_leader_epoch, q.leader_epoch),
            (1, 3, 2)
        );
        // The leader has epoch 2 up to offset 3: nothing to truncate, although the HW is 1.
        let step = p
            .apply_truncation_answer(Ok(EpochEndOffset {
                epoch: 2,
                end_offset: 3,
            }))
            .unwrap();
        assert_eq!(step, TruncationStep::Done { log_end_offset: 3 });
        let r = p.fetch_request().unwrap();
        assert_eq!(
            (r.fetch_offset, r.last_fetched_epoch, r.current_leader_epoch),
            (3, 2, 3)
        );
        // Errors are retried, not applied.
        let (_d2, mut p2) = follower(ReplicationBugs::none());
        assert_eq!(
            p2.apply_truncation_answer(Err(ResponseError::UnknownLeaderEpoch))
                .unwrap(),
            TruncationStep::Retry(ResponseError::UnknownLeaderEpoch)
        );
        assert!(p2.needs_truncation());
        // With the bug mode it truncates to the HW on becoming follower and sends old fetches.
        let (_d3, p3) = follower(ReplicationBugs {
            hw_truncation: true,
            ..ReplicationBugs::none()
        });
        assert_eq!(p3.log_end_offset(), 1);
        assert_eq!(p3.fetch_request().unwrap().last_fetched_epoch, -1);
    }

    #[test]
    fn follower_high_watermark_is_min_of_leader_hw_and_own_leo() {
        let (_d, mut p) = follower(ReplicationBugs::none());
        p.apply_truncation_answer(Ok(EpochEndOffset {
            epoch: 2,
            end_offset: 3,
        }))
        .unwrap();
        let resp = |hw: i64, records: Option<Vec<MemBatch>>| ReplicaFetchResponse {
            error: None,
            high_watermark: hw,
            log_start_offset: 0,
            diverging_epoch: None,
            records,
        };
        let applied = p.apply_fetch_response(resp(10, None), 0).unwrap();
        assert!(matches!(
            applied,
            FetchApplied::Appended {
                high_watermark: 3,
                ..
            }
        ));
        let batch = MemBatch {
            base_offset: 3,
            leader_epoch: 3,
            values: vec!["d".into()],
        };
        let applied = p
            .apply_fetch_response(resp(2, Some(vec![batch])), 0)
            .unwrap();
        assert!(matches!(
            applied,
            FetchApplied::Appended {
                high_watermark: 2,
                ..
            }
        ));
        assert_eq!(
            p.epoch_cache()
                .latest_entry()
                .map(|e| (e.epoch, e.start_offset)),
            Some((3, 3))
        );
        // A diverging epoch truncates before anything else is applied (KAFKA-14704).
        let mut diverging = resp(4, None);
        diverging.diverging_epoch = Some(EpochEndOffset {
            epoch: 1,
            end_offset: 2,
        });
        assert_eq!(
            p.apply_fetch_response(diverging, 0).unwrap(),
            FetchApplied::Truncated { log_end_offset: 2 }
        );
        assert_eq!(p.high_watermark(), 2);
        // Errors pass through.
        let mut fenced = resp(0, None);
        fenced.error = Some(ResponseError::FencedLeaderEpoch);
        assert_eq!(
            p.apply_fetch_response(fenced, 0).unwrap(),
            FetchApplied::Retry(ResponseError::FencedLeaderEpoch)
        );
    }

    #[test]
    fn offset_out_of_range_truncates_or_restarts_the_log() {
        let (_d, mut p) = follower(ReplicationBugs::none());
        p.apply_truncation_answer(Ok(EpochEndOffset {
            epoch: 2,
            end_offset: 3,
        }))
        .unwrap();
        // The leader's log is shorter (an unclean election): truncate to its end.
        assert_eq!(p.follower_handle_out_of_range(0, 2).unwrap(), 2);
        // The leader's log starts after ours ends (retention): restart there, empty.
        assert_eq!(p.follower_handle_out_of_range(10, 20).unwrap(), 10);
        assert_eq!(
            (p.log_start_offset(), p.log_end_offset(), p.high_watermark()),
            (10, 10, 10)
        );
        assert!(p.epoch_cache().entries().is_empty());
    }

    #[test]
    fn retention_trims_the_epoch_cache() {
        let (_d, mut p) = leader(&[1], 1, ReplicationBugs::none());
        produce(&mut p, Acks::Leader, 1, 0).unwrap();
        produce(&mut p, Acks::Leader, 1, 0).unwrap();
        p.become_leader(&state(1, 2, &[1]), 0).unwrap();
        produce(&mut p, Acks::Leader, 1, 0).unwrap();
        p.log_mut().advance_start(2);
        p.on_log_start_offset_moved().unwrap();
        let entries: Vec<_> = p
            .epoch_cache()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        assert_eq!(entries, vec![(2, 2)]);
    }

    #[test]
    fn kip966_hw_waits_for_min_isr_when_configured() {
        for rule in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = PartitionConfig {
                hw_requires_min_isr: rule,
                ..config(2)
            };
            let mut p = Partition::open(
                1,
                dir.path(),
                MemLog::new(),
                0,
                cfg,
                ReplicationBugs::none(),
            )
            .unwrap();
            p.become_leader(&state(1, 1, &[1]), 0).unwrap();
            produce(&mut p, Acks::Leader, 2, 0).unwrap();
            assert_eq!(p.high_watermark(), if rule { 0 } else { 2 }, "rule {rule}");
        }
    }
}
