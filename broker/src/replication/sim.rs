//! An in-process cluster of replicas of one partition, over [`MemLog`]s or real segmented
//! [`Log`]s, driving the same calls the server makes over the network (OffsetsForLeaderEpoch,
//! replica Fetch, AlterPartition), with the test playing the controller. Test-only.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use kafka_protocol::error::ResponseError;

use super::fetch::{FetchDecision, FetchPartitionRequest};
use super::mem_log::{MemBatch, MemLog};
use super::partition::{
    Acks, CommittedIsr, FetchApplied, Partition, PartitionConfig, PartitionState,
    ReplicaFetchResponse, ReplicationError, TruncationStep, WaiterCompletion,
};
use super::{BrokerId, ReplicaLog, ReplicationBugs};
use crate::log::{batch, Log, LogConfig};

/// What the simulation needs of a log beyond [`ReplicaLog`].
pub(crate) trait SimLog: ReplicaLog + Sized {
    /// A new empty log in `dir`.
    fn create(dir: &Path) -> Self;
    /// The log as found again after a crash (the segmented log recovers from its files).
    fn recover(self, dir: &Path) -> Self;
    /// One batch holding `values`, as a producer sends it.
    fn records_of(values: &[&str]) -> Self::Records;
    /// What a leader returns for a replica fetch (`None`: nothing).
    fn read_for_fetch(&self, start: i64, max_offset_exclusive: i64) -> Option<Self::Records>;
    /// Every `(offset, value, epoch)` in the log.
    fn contents(&self) -> Vec<(i64, String, i32)>;
}

impl SimLog for MemLog {
    fn create(_dir: &Path) -> Self {
        MemLog::new()
    }
    fn recover(self, _dir: &Path) -> Self {
        self
    }
    fn records_of(values: &[&str]) -> Vec<MemBatch> {
        vec![MemBatch::new(values.iter().copied())]
    }
    fn read_for_fetch(&self, start: i64, max_offset_exclusive: i64) -> Option<Vec<MemBatch>> {
        let batches = self.read(start, max_offset_exclusive);
        (!batches.is_empty()).then_some(batches)
    }
    fn contents(&self) -> Vec<(i64, String, i32)> {
        self.records()
    }
}

impl SimLog for Log {
    fn create(dir: &Path) -> Self {
        Log::open(dir, LogConfig::default(), 0).unwrap().0
    }
    fn recover(self, dir: &Path) -> Self {
        drop(self);
        Self::create(dir)
    }
    fn records_of(values: &[&str]) -> Bytes {
        let records: Vec<_> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
        Bytes::from(batch::build_batch(0, 1_000, &records))
    }
    fn read_for_fetch(&self, start: i64, max_offset_exclusive: i64) -> Option<Bytes> {
        let read = self
            .read(start, 1 << 20, max_offset_exclusive, true)
            .unwrap();
        (!read.bytes.is_empty()).then_some(read.bytes)
    }
    fn contents(&self) -> Vec<(i64, String, i32)> {
        let all = self
            .read(
                self.log_start_offset(),
                usize::MAX,
                self.log_end_offset(),
                true,
            )
            .unwrap();
        let mut out = Vec::new();
        for item in batch::split_batches(&all.bytes) {
            let (h, bytes) = item.unwrap();
            for (i, v) in batch_values(bytes).into_iter().enumerate() {
                out.push((h.base_offset + i as i64, v, h.partition_leader_epoch));
            }
        }
        out
    }
}

/// The values of an uncompressed batch as `batch::build_batch` writes it (no headers).
fn batch_values(b: &[u8]) -> Vec<String> {
    fn varint(b: &[u8], pos: &mut usize) -> i64 {
        let (mut z, mut shift) = (0u64, 0);
        loop {
            let byte = b[*pos];
            *pos += 1;
            z |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return (z >> 1) as i64 ^ -((z & 1) as i64);
            }
            shift += 7;
        }
    }
    let count = i32::from_be_bytes([b[57], b[58], b[59], b[60]]);
    let mut pos = 61;
    let mut out = Vec::new();
    for _ in 0..count {
        varint(b, &mut pos); // record length
        pos += 1; // attributes
        varint(b, &mut pos); // timestamp delta
        varint(b, &mut pos); // offset delta
        let key_len = varint(b, &mut pos);
        pos += key_len.max(0) as usize;
        let value_len = varint(b, &mut pos).max(0) as usize;
        out.push(String::from_utf8_lossy(&b[pos..pos + value_len]).into_owned());
        pos += value_len;
        varint(b, &mut pos); // header count
    }
    out
}

pub(crate) struct Node<L: SimLog> {
    dir: tempfile::TempDir,
    part: Option<Partition<L>>,
    /// The log and checkpointed HW kept over a crash.
    saved: Option<(L, i64)>,
}

pub(crate) struct Sim<L: SimLog> {
    pub nodes: BTreeMap<BrokerId, Node<L>>,
    pub state: PartitionState,
    pub now: i64,
    pub config: PartitionConfig,
    pub bugs: ReplicationBugs,
    next_waiter: u64,
    pub completions: Vec<WaiterCompletion>,
    /// The first offset each produce (by waiter id) was written at.
    pub offsets: BTreeMap<u64, i64>,
    /// `unclean.leader.election.enable`: the controller may elect a replica outside the ISR.
    pub unclean: bool,
    /// Brokers the controller has fenced.
    pub fenced: std::collections::BTreeSet<BrokerId>,
}

/// What one replication step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Idle,
    Truncation(TruncationStep),
    Fetch(FetchApplied),
}

impl<L: SimLog> Sim<L> {
    pub fn new(n: i32, config: PartitionConfig, bugs: ReplicationBugs) -> Self {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let dir = tempfile::tempdir().unwrap();
            let log = L::create(dir.path());
            let part = Partition::open(id, dir.path(), log, 0, config, bugs).unwrap();
            nodes.insert(
                id,
                Node {
                    dir,
                    part: Some(part),
                    saved: None,
                },
            );
        }
        Sim {
            nodes,
            state: PartitionState {
                leader: -1,
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: (1..=n).collect(),
                isr: (1..=n).collect(),
            },
            now: 0,
            config,
            bugs,
            next_waiter: 0,
            completions: Vec::new(),
            offsets: BTreeMap::new(),
            unclean: false,
            fenced: Default::default(),
        }
    }

    pub fn p(&self, id: BrokerId) -> &Partition<L> {
        self.nodes[&id].part.as_ref().expect("node is down")
    }

    pub fn pm(&mut self, id: BrokerId) -> &mut Partition<L> {
        self.nodes
            .get_mut(&id)
            .unwrap()
            .part
            .as_mut()
            .expect("node is down")
    }

    pub fn alive(&self, id: BrokerId) -> bool {
        self.nodes[&id].part.is_some()
    }

    pub fn records(&self, id: BrokerId) -> Vec<(i64, String, i32)> {
        match &self.nodes[&id].part {
            Some(p) => p.log().contents(),
            None => self.nodes[&id].saved.as_ref().unwrap().0.contents(),
        }
    }

    pub fn values(&self, id: BrokerId) -> Vec<String> {
        self.records(id).into_iter().map(|r| r.1).collect()
    }

    /// Elects `leader` with `isr` in a new leader epoch and tells the live nodes in `inform`.
    pub fn elect_informing(&mut self, leader: BrokerId, isr: &[BrokerId], inform: &[BrokerId]) {
        self.state.leader = leader;
        self.state.leader_epoch += 1;
        self.state.partition_epoch += 1;
        self.state.isr = isr.to_vec();
        for &id in inform {
            self.apply_metadata(id);
        }
    }

    /// Elects `leader` with `isr` in a new leader epoch and tells every live node.
    pub fn elect(&mut self, leader: BrokerId, isr: &[BrokerId]) {
        let all: Vec<BrokerId> = self.nodes.keys().copied().collect();
        self.elect_informing(leader, isr, &all);
    }

    pub fn apply_metadata(&mut self, id: BrokerId) {
        let state = self.state.clone();
        let now = self.now;
        let fenced = self.fenced.clone();
        if let Some(p) = self.nodes.get_mut(&id).unwrap().part.as_mut() {
            p.set_ineligible_replicas(fenced);
            if state.leader == id {
                p.become_leader(&state, now).unwrap();
            } else {
                p.become_follower(&state, now).unwrap();
            }
        }
        self.poll();
    }

    pub fn produce(&mut self, acks: Acks, values: &[&str]) -> Result<u64, ReplicationError> {
        let leader = self.state.leader;
        let now = self.now;
        let timeout = 30_000;
        self.next_waiter += 1;
        let id = self.next_waiter;
        let p = self.pm(leader);
        let appended = p.append_as_leader(L::records_of(values), acks, now)?;
        if acks == Acks::All {
            p.add_acks_all_waiter(id, appended.last_offset + 1, now + timeout);
        }
        self.offsets.insert(id, appended.first_offset);
        self.poll();
        Ok(id)
    }

    pub fn acked(&self, id: u64) -> Option<Result<(), ResponseError>> {
        self.completions
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.result)
    }

    fn poll(&mut self) {
        let now = self.now;
        for node in self.nodes.values_mut() {
            if let Some(p) = node.part.as_mut() {
                self.completions.extend(p.poll_waiters(now));
            }
        }
    }

    /// Plays the controller for an AlterPartition proposal (accepting it if current).
    fn alter_partition(&mut self, proposal: super::partition::AlterPartitionProposal) {
        let leader = self.state.leader;
        let ok = proposal.leader_epoch == self.state.leader_epoch
            && proposal.partition_epoch == self.state.partition_epoch;
        let result = if ok {
            self.state.partition_epoch += 1;
            self.state.isr = proposal.new_isr.clone();
            Ok(CommittedIsr {
                leader_epoch: self.state.leader_epoch,
                partition_epoch: self.state.partition_epoch,
                isr: proposal.new_isr,
            })
        } else {
            Err(ResponseError::InvalidUpdateVersion)
        };
        let now = self.now;
        self.pm(leader).complete_alter_partition(result, now);
        self.poll();
    }

    /// One RPC round of `follower` with the current leader.
    pub fn step(&mut self, follower: BrokerId) -> Step {
        let leader = self.state.leader;
        if follower == leader || leader < 0 || !self.alive(leader) || !self.alive(follower) {
            return Step::Idle;
        }
        let now = self.now;
        let mut f = self.nodes.get_mut(&follower).unwrap().part.take().unwrap();
        let step = self.step_with(&mut f, leader, now);
        self.nodes.get_mut(&follower).unwrap().part = Some(f);
        self.poll();
        step
    }

    fn step_with(&mut self, f: &mut Partition<L>, leader: BrokerId, now: i64) -> Step {
        if let Some(q) = f.truncation_query().unwrap() {
            let answer = self
                .p(leader)
                .offsets_for_leader_epoch(q.current_leader_epoch, q.leader_epoch);
            return Step::Truncation(f.apply_truncation_answer(answer).unwrap());
        }
        let Some(r) = f.fetch_request() else {
            return Step::Idle;
        };
        let decision = self.p(leader).decide_fetch(&FetchPartitionRequest {
            replica_id: r.replica_id,
            fetch_offset: r.fetch_offset,
            current_leader_epoch: r.current_leader_epoch,
            last_fetched_epoch: r.last_fetched_epoch,
        });
        let response = match decision {
            FetchDecision::Error(e) => ReplicaFetchResponse {
                error: Some(e),
                high_watermark: -1,
                log_start_offset: -1,
                diverging_epoch: None,
                records: None,
            },
            FetchDecision::Diverging {
                diverging_epoch,
                offsets,
            } => ReplicaFetchResponse {
                error: None,
                high_watermark: offsets.high_watermark,
                log_start_offset: offsets.log_start_offset,
                diverging_epoch: Some(diverging_epoch),
                records: None,
            },
            FetchDecision::Read {
                fetch_offset,
                max_offset_exclusive,
                offsets,
            } => {
                let lp = self.pm(leader);
                let records = lp.log().read_for_fetch(fetch_offset, max_offset_exclusive);
                let outcome = lp
                    .record_follower_fetch(
                        r.replica_id,
                        fetch_offset,
                        r.log_start_offset,
                        offsets.log_end_offset,
                        now,
                    )
                    .unwrap();
                if let Some(proposal) = outcome.alter_partition {
                    self.alter_partition(proposal);
                }
                ReplicaFetchResponse {
                    error: None,
                    high_watermark: offsets.high_watermark,
                    log_start_offset: offsets.log_start_offset,
                    diverging_epoch: None,
                    records,
                }
            }
        };
        let applied = f.apply_fetch_response(response, now).unwrap();
        if applied == FetchApplied::OffsetOutOfRange {
            let lp = self.p(leader);
            let (start, end) = (lp.log_start_offset(), lp.log_end_offset());
            f.follower_handle_out_of_range(start, end).unwrap();
        }
        Step::Fetch(applied)
    }

    /// Runs rounds of every live follower until nothing changes (at most `max_rounds`).
    pub fn replicate(&mut self, max_rounds: usize) {
        let ids: Vec<BrokerId> = self.nodes.keys().copied().collect();
        for _ in 0..max_rounds {
            let before: Vec<_> = ids.iter().map(|&i| self.snapshot(i)).collect();
            for &id in &ids {
                self.step(id);
            }
            let after: Vec<_> = ids.iter().map(|&i| self.snapshot(i)).collect();
            if before == after {
                return;
            }
        }
    }

    fn snapshot(&self, id: BrokerId) -> Option<(i64, i64, Vec<BrokerId>, bool)> {
        self.nodes[&id].part.as_ref().map(|p| {
            (
                p.log_end_offset(),
                p.high_watermark(),
                p.isr(),
                p.needs_truncation(),
            )
        })
    }

    /// Plays a KRaft controller fencing a broker that stopped heartbeating: it leaves the ISR
    /// (unless it is the last member) and, if it led, a live ISR member is elected; with none
    /// alive, any live replica if `unclean`, else no leader.
    pub fn fence(&mut self, id: BrokerId) {
        self.fenced.insert(id);
        self.publish_fenced();
        let mut isr = self.state.isr.clone();
        if isr.len() > 1 {
            isr.retain(|&b| b != id);
        }
        if self.state.leader == id || self.state.leader < 0 {
            let clean = isr.iter().copied().find(|&b| b != id && self.alive(b));
            let unclean = self
                .nodes
                .keys()
                .copied()
                .find(|&b| self.unclean && b != id && self.alive(b));
            match (clean, unclean) {
                (Some(next), _) => self.elect(next, &isr),
                (None, Some(next)) => self.elect(next, &[next]),
                (None, None) => self.elect(-1, &isr),
            }
        } else if isr != self.state.isr {
            self.state.isr = isr;
            self.state.partition_epoch += 1;
            let all: Vec<BrokerId> = self.nodes.keys().copied().collect();
            for b in all {
                self.apply_metadata(b);
            }
        }
    }

    /// Plays the controller when a broker registers again: with no leader, an ISR member is
    /// elected (any replica with unclean election).
    pub fn unfence(&mut self, id: BrokerId) {
        self.fenced.remove(&id);
        self.publish_fenced();
        if self.state.leader < 0 && self.state.isr.contains(&id) {
            let isr = self.state.isr.clone();
            self.elect(id, &isr);
        } else if self.state.leader < 0 && self.unclean {
            self.elect(id, &[id]);
        }
    }

    /// Tells every live replica which brokers are fenced (ineligible for the ISR and the HW).
    fn publish_fenced(&mut self) {
        let (fenced, now) = (self.fenced.clone(), self.now);
        for node in self.nodes.values_mut() {
            if let Some(p) = node.part.as_mut() {
                p.set_ineligible_replicas(fenced.iter().copied());
                p.update_high_watermark(now);
            }
        }
        self.poll();
    }

    /// Crashes `id`: its log survives as written (as after `kill -9` with the page cache
    /// intact) and its HW as last checkpointed.
    pub fn crash(&mut self, id: BrokerId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let part = node.part.take().unwrap();
        let hw = part.high_watermark();
        node.saved = Some((part.into_log(), hw));
    }

    /// Loses the unflushed tail of a crashed node's log (power loss): keeps offsets below `keep`.
    pub fn lose_tail(&mut self, id: BrokerId, keep: i64) {
        let saved = self.nodes.get_mut(&id).unwrap().saved.as_mut().unwrap();
        saved.0.truncate_to(keep).unwrap();
    }

    /// Restarts a crashed node and gives it the current metadata.
    pub fn restart(&mut self, id: BrokerId) {
        let (config, bugs) = (self.config, self.bugs);
        let node = self.nodes.get_mut(&id).unwrap();
        let (log, hw) = node.saved.take().unwrap();
        let log = log.recover(node.dir.path());
        node.part = Some(Partition::open(id, node.dir.path(), log, hw, config, bugs).unwrap());
        self.apply_metadata(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min_isr: usize) -> PartitionConfig {
        PartitionConfig {
            replica_lag_time_max_ms: 10_000,
            min_insync_replicas: min_isr,
            truncate_on_fetch: false,
            hw_requires_min_isr: false,
            effective_min_isr: false,
        }
    }

    fn cfg_fetch_truncation(min_isr: usize) -> PartitionConfig {
        PartitionConfig {
            truncate_on_fetch: true,
            ..cfg(min_isr)
        }
    }

    fn bug_hw_truncation() -> ReplicationBugs {
        ReplicationBugs {
            hw_truncation: true,
            ..ReplicationBugs::none()
        }
    }

    /// Asserts every live replica holds the same records up to the leader's HW.
    fn assert_consistent_to_hw<L: SimLog>(sim: &Sim<L>) {
        let leader = sim.state.leader;
        let hw = sim.p(leader).high_watermark();
        let reference: Vec<_> = sim
            .records(leader)
            .into_iter()
            .filter(|r| r.0 < hw)
            .collect();
        for (&id, node) in &sim.nodes {
            if node.part.is_some() {
                let mine: Vec<_> = sim.records(id).into_iter().filter(|r| r.0 < hw).collect();
                assert_eq!(mine, reference, "replica {id} differs below HW {hw}");
            }
        }
    }

    /// Kafka's KIP-101 divergent-log case: leader A appends at epoch 1 an entry nobody fetched,
    /// B becomes leader at epoch 2 and writes a different entry at the same offset, A returns.
    fn kip101_returning_leader_truncates_its_divergent_tail<L: SimLog>() {
        let mut sim = Sim::<L>::new(2, cfg(1), ReplicationBugs::none());
        sim.elect(1, &[1, 2]);
        let w = sim.produce(Acks::All, &["m0"]).unwrap();
        sim.replicate(10);
        assert_eq!(sim.acked(w), Some(Ok(())));
        // A (1) appends m1 at offset 1; B never fetches it. A crashes.
        sim.produce(Acks::Leader, &["a1"]).unwrap();
        sim.crash(1);
        sim.elect(2, &[2]);
        sim.produce(Acks::Leader, &["b1"]).unwrap();
        sim.produce(Acks::Leader, &["b2"]).unwrap();
        sim.restart(1);
        assert!(sim.p(1).needs_truncation());
        match sim.step(1) {
            Step::Truncation(TruncationStep::Done { log_end_offset }) => {
                assert_eq!(log_end_offset, 1)
            }
            s => panic!("{s:?}"),
        }
        sim.replicate(10);
        assert_eq!(sim.values(1), vec!["m0", "b1", "b2"]);
        assert_eq!(sim.records(1), sim.records(2));
        assert_eq!(
            sim.p(1).epoch_cache().entries(),
            sim.p(2).epoch_cache().entries()
        );
        assert_consistent_to_hw(&sim);
    }

    /// kafka-bugs.md scenario 3 (KIP-101 scenario 1, KAFKA-1211): the follower learns the HW one
    /// fetch late, restarts, and (pre-KIP-101) truncates to its stale HW; then the leader dies and
    /// the follower is elected: an acknowledged write is lost. With epochs it survives.
    fn fast_leader_change_after_follower_restart<L: SimLog>(
        bugs: ReplicationBugs,
    ) -> (Sim<L>, u64) {
        let mut sim = Sim::<L>::new(2, cfg(1), bugs);
        sim.elect(1, &[1, 2]);
        let w = sim.produce(Acks::All, &["m0"]).unwrap();
        // Fetch 1 copies m0 (response HW 0); fetch 2 reports LEO 1: leader HW 1, ack sent.
        sim.step(2);
        sim.step(2);
        assert_eq!(sim.acked(w), Some(Ok(())));
        assert_eq!(sim.p(1).high_watermark(), 1);
        assert_eq!(
            sim.p(2).high_watermark(),
            0,
            "the follower learns the HW one fetch late"
        );
        // The follower restarts, and the leader dies right after (two quick failures).
        sim.crash(2);
        sim.restart(2);
        sim.crash(1);
        sim.elect(2, &[2]);
        (sim, w)
    }

    fn kip101_follower_restart_keeps_acked_write<L: SimLog>() {
        let (sim, w) = fast_leader_change_after_follower_restart::<L>(ReplicationBugs::none());
        assert_eq!(sim.acked(w), Some(Ok(())));
        assert_eq!(sim.values(2), vec!["m0"]);
    }

    fn bug_hw_truncation_loses_acked_write_on_fast_leader_change<L: SimLog>() {
        let (sim, w) = fast_leader_change_after_follower_restart::<L>(bug_hw_truncation());
        assert_eq!(sim.acked(w), Some(Ok(())));
        assert!(
            sim.values(2).is_empty(),
            "the acknowledged m0 is gone, as in KAFKA-1211"
        );
    }

    /// kafka-bugs.md scenario 4 (KIP-101 scenario 2, KAFKA-3919): both replicas lose unflushed
    /// data; the one with the shorter log leads and reuses offsets; the other's HW does not force
    /// truncation, so (pre-KIP-101) the logs diverge. With epochs the returning replica truncates.
    fn power_loss_divergence<L: SimLog>(bugs: ReplicationBugs) -> Sim<L> {
        let mut sim = Sim::<L>::new(2, cfg(1), bugs);
        sim.elect(1, &[1, 2]);
        sim.produce(Acks::All, &["m0"]).unwrap();
        sim.produce(Acks::All, &["m1"]).unwrap();
        sim.replicate(10);
        assert_eq!(sim.p(1).high_watermark(), 2);
        sim.crash(1);
        sim.crash(2);
        sim.lose_tail(2, 1);
        sim.restart(2);
        sim.elect(2, &[2]);
        sim.produce(Acks::Leader, &["n1"]).unwrap();
        sim.restart(1);
        sim.replicate(10);
        sim
    }

    fn kip101_power_loss_replicas_converge<L: SimLog>() {
        let sim = power_loss_divergence::<L>(ReplicationBugs::none());
        assert_eq!(sim.values(1), vec!["m0", "n1"]);
        assert_eq!(sim.records(1), sim.records(2));
    }

    fn bug_hw_truncation_power_loss_logs_diverge<L: SimLog>() {
        let sim = power_loss_divergence::<L>(bug_hw_truncation());
        // Offset 1 holds m1 on broker 1 and n1 on broker 2: divergent logs.
        assert_eq!(sim.values(1)[1], "m1");
        assert_eq!(sim.values(2)[1], "n1");
    }

    /// kafka-bugs.md scenario 5 (KIP-279, KAFKA-6361): C leads epoch 3 after B's epoch 1 was
    /// never seen by A, who led epoch 2. A's latest epoch (2) is unknown to C, whose answer names
    /// epoch 1; A does not have epoch 1 and iterates.
    fn multi_epoch<L: SimLog>(bugs: ReplicationBugs) -> Sim<L> {
        multi_epoch_with::<L>(cfg(1), bugs)
    }

    fn multi_epoch_with<L: SimLog>(config: PartitionConfig, bugs: ReplicationBugs) -> Sim<L> {
        let mut sim = Sim::<L>::new(3, config, bugs);
        // Epoch 1 (A=1 leads): x0..x2 everywhere.
        sim.elect(1, &[1, 2, 3]);
        for v in ["x0", "x1", "x2"] {
            sim.produce(Acks::Leader, &[v]).unwrap();
        }
        sim.replicate(10);
        // Epoch 2: B=2 leads; A never hears of it. B writes b3..b6, C copies them.
        sim.elect_informing(2, &[2, 3], &[2, 3]);
        sim.replicate(10);
        for v in ["b3", "b4", "b5", "b6"] {
            sim.produce(Acks::Leader, &[v]).unwrap();
        }
        sim.replicate(10);
        // Epoch 3: A, which never learned of epoch 2, is told it leads, and writes a3, a4;
        // nobody fetches them.
        sim.elect_informing(1, &[1], &[1]);
        sim.produce(Acks::Leader, &["a3"]).unwrap();
        sim.produce(Acks::Leader, &["a4"]).unwrap();
        // Epoch 4: C leads (it has b3..b6), writes c7; A follows and must truncate: it asks for
        // epoch 3, C answers (2, 7), A has no epoch 2 and truncates to its end of epoch 1 (3),
        // asks for epoch 1, and is done at 3.
        sim.elect(3, &[3]);
        sim.produce(Acks::Leader, &["c7"]).unwrap();
        sim.crash(2);
        sim.replicate(20);
        sim
    }

    fn kip279_follower_iterates_to_the_divergence_point<L: SimLog>() {
        let sim = multi_epoch::<L>(ReplicationBugs::none());
        assert_eq!(
            sim.values(1),
            vec!["x0", "x1", "x2", "b3", "b4", "b5", "b6", "c7"]
        );
        assert_eq!(sim.records(1), sim.records(3));
    }

    /// The same case with truncation on fetch (Kafka 2.7+): no OffsetsForLeaderEpoch; the
    /// leader answers A's fetch (last epoch 3) with diverging epoch (2, 7), then (1, 3).
    fn kip320_diverging_epoch_fetches_iterate_to_the_same_point<L: SimLog>() {
        let sim = multi_epoch_with::<L>(cfg_fetch_truncation(1), ReplicationBugs::none());
        assert_eq!(
            sim.values(1),
            vec!["x0", "x1", "x2", "b3", "b4", "b5", "b6", "c7"]
        );
        assert_eq!(sim.records(1), sim.records(3));
    }

    fn truncation_on_fetch_goes_through_diverging_answers<L: SimLog>() {
        let mut sim = Sim::<L>::new(2, cfg_fetch_truncation(1), ReplicationBugs::none());
        sim.elect(1, &[1, 2]);
        sim.produce(Acks::Leader, &["m0"]).unwrap();
        sim.replicate(10);
        sim.produce(Acks::Leader, &["a1"]).unwrap();
        sim.crash(1);
        sim.elect(2, &[2]);
        sim.produce(Acks::Leader, &["b1"]).unwrap();
        sim.restart(1);
        assert!(!sim.p(1).needs_truncation());
        assert_eq!(
            sim.step(1),
            Step::Fetch(FetchApplied::Truncated { log_end_offset: 1 })
        );
        sim.replicate(10);
        assert_eq!(sim.values(1), vec!["m0", "b1"]);
    }

    fn bug_epoch_lookup_next_epoch_keeps_a_divergent_suffix<L: SimLog>() {
        let bugs = ReplicationBugs {
            epoch_lookup_next_epoch: true,
            ..ReplicationBugs::none()
        };
        let sim = multi_epoch::<L>(bugs);
        let a = sim.values(1);
        let c = sim.values(3);
        assert_eq!(a.len(), c.len());
        assert_eq!(
            &a[3..5],
            &["a3", "a4"],
            "A kept its unreplicated suffix: {a:?}"
        );
        assert_eq!(&c[3..5], &["b3", "b4"]);
    }

    /// Unclean election: the new leader's shorter log wins; the old leader truncates to it and
    /// the acknowledged records beyond it are lost, as Kafka loses them.
    fn unclean_election_loses_acked_records_as_kafka_does<L: SimLog>() {
        let mut sim = Sim::<L>::new(2, cfg(1), ReplicationBugs::none());
        sim.elect(1, &[1, 2]);
        sim.produce(Acks::All, &["m0"]).unwrap();
        sim.replicate(10);
        // Broker 2 stops fetching and leaves the ISR; broker 1 acknowledges alone.
        sim.crash(2);
        sim.produce(Acks::Leader, &["m1"]).unwrap();
        sim.now += 20_000;
        let now = sim.now;
        let proposal = sim.pm(1).maybe_shrink_isr(now).unwrap();
        sim.alter_partition(proposal);
        assert_eq!(sim.state.isr, vec![1]);
        let w = sim.produce(Acks::All, &["m2"]).unwrap();
        assert_eq!(sim.acked(w), Some(Ok(())));
        // Broker 1 dies; broker 2 (out of sync) is elected uncleanly.
        sim.crash(1);
        sim.restart(2);
        sim.elect(2, &[2]);
        sim.produce(Acks::Leader, &["n1"]).unwrap();
        sim.restart(1);
        sim.replicate(10);
        assert_eq!(
            sim.values(1),
            vec!["m0", "n1"],
            "acknowledged m1 lost to the unclean election"
        );
        assert_eq!(sim.records(1), sim.records(2));
    }

    /// The ISR-expansion rule of KAFKA-7128: a follower at the HW but short of the leader's
    /// epoch start must not rejoin (with the bug mode it does).
    fn lagging_hw_expansion<L: SimLog>(bugs: ReplicationBugs) -> Sim<L> {
        let mut sim = Sim::<L>::new(3, cfg(1), bugs);
        sim.elect(1, &[1, 2, 3]);
        sim.produce(Acks::Leader, &["m0"]).unwrap();
        sim.produce(Acks::Leader, &["m1"]).unwrap();
        // Broker 2 copies m0, m1 but the HW it learns lags; broker 3 is down.
        sim.step(2);
        sim.crash(3);
        // Broker 1 dies; broker 2 leads epoch 2 with a lagging HW (0), held there by broker 1,
        // still in the ISR; broker 3 comes back outside the ISR.
        sim.crash(1);
        sim.elect(2, &[1, 2]);
        assert_eq!(sim.p(2).high_watermark(), 0);
        sim.restart(3);
        sim
    }

    fn follower_below_epoch_start_does_not_rejoin_isr<L: SimLog>() {
        let mut sim = lagging_hw_expansion::<L>(ReplicationBugs::none());
        // Broker 3 (empty) fetches at 0: at the HW (0) but below the epoch start (2).
        sim.step(3);
        assert_eq!(sim.state.isr, vec![1, 2]);
        sim.replicate(10);
        assert_eq!(sim.state.isr, vec![1, 2, 3]);
        assert_eq!(sim.values(3), vec!["m0", "m1"]);
    }

    fn bug_isr_join_below_epoch_start_readmits_an_empty_follower<L: SimLog>() {
        let bugs = ReplicationBugs {
            isr_join_below_epoch_start: true,
            ..ReplicationBugs::none()
        };
        let mut sim = lagging_hw_expansion::<L>(bugs);
        sim.step(3);
        assert_eq!(
            sim.state.isr,
            vec![1, 2, 3],
            "readmitted while lacking m0, m1"
        );
        // The leader admitted it on a fetch at offset 0, below its epoch start (2).
        let f3 = sim
            .p(2)
            .follower_states()
            .find(|f| f.broker == 3)
            .unwrap()
            .clone();
        assert_eq!(f3.log_end_offset, 0);
    }

    /// The 4.1 matrix run m9-a (acks-all, min.insync 3): broker 1 led a new epoch without
    /// appending to it (its epoch cache ends with an entry at its log end), lost the leadership
    /// to broker 3, which never heard of that epoch, and followed it with the same log end. The
    /// leader answers its fetches (last fetched epoch 2) with the diverging epoch (1, 1); the
    /// truncation is to the log end, and must still drop the epoch entry there (Kafka's
    /// `UnifiedLog.truncateTo`), else every fetch diverges again, the follower never has a fetch
    /// recorded, never rejoins the ISR, and with min ISR 3 the partition stays unwritable.
    fn caught_up_follower_with_an_empty_epoch_at_its_end_rejoins_the_isr<L: SimLog>() {
        let config = PartitionConfig {
            hw_requires_min_isr: true,
            effective_min_isr: true,
            ..cfg_fetch_truncation(3)
        };
        let mut sim = empty_epoch_then_new_leader::<L>(config);
        // One fetch diverges (epoch 2 is unknown to the leader) and truncates nothing but the
        // epoch entry.
        assert_eq!(
            sim.step(1),
            Step::Fetch(FetchApplied::Truncated { log_end_offset: 1 })
        );
        rejoins_and_acknowledges(sim);
    }

    /// The same with OffsetsForLeaderEpoch truncation (before Kafka 2.7): the answer for epoch
    /// 2 is (1, 1), the truncation to 1 (the log end) must drop the entry 2@1 too, else the
    /// fetches that follow diverge forever.
    fn empty_epoch_entry_is_dropped_by_offsets_for_leader_epoch_truncation<L: SimLog>() {
        let mut sim = empty_epoch_then_new_leader::<L>(cfg(3));
        assert!(sim.p(1).needs_truncation());
        assert_eq!(
            sim.step(1),
            Step::Truncation(TruncationStep::Done { log_end_offset: 1 })
        );
        rejoins_and_acknowledges(sim);
    }

    /// m0 written in epoch 1 everywhere; broker 1 alone leads epoch 2 and appends nothing;
    /// broker 3 leads epoch 3 without knowing epoch 2, and everyone hears of it.
    fn empty_epoch_then_new_leader<L: SimLog>(config: PartitionConfig) -> Sim<L> {
        let mut sim = Sim::<L>::new(3, config, ReplicationBugs::none());
        sim.elect(1, &[1, 2, 3]);
        let w = sim.produce(Acks::All, &["m0"]).unwrap();
        sim.replicate(10);
        assert_eq!(sim.acked(w), Some(Ok(())));
        // Epoch 2: broker 1 alone is told it leads (2 and 3 are away); it appends nothing.
        sim.elect_informing(1, &[1], &[1]);
        assert_eq!(sim.p(1).epoch_cache().latest_epoch(), Some(2));
        // Epoch 3: broker 3 leads, knowing nothing of epoch 2; everyone hears of it.
        sim.elect(3, &[3]);
        assert_eq!(sim.p(1).log_end_offset(), sim.p(3).log_end_offset());
        sim
    }

    /// After its one truncation broker 1's latest epoch is 1 and its next fetch is an ordinary
    /// one; it is back in the ISR after some rounds, and an acks=all write is acknowledged.
    fn rejoins_and_acknowledges<L: SimLog>(mut sim: Sim<L>) {
        assert_eq!(sim.p(1).epoch_cache().latest_epoch(), Some(1));
        assert!(matches!(
            sim.step(1),
            Step::Fetch(FetchApplied::Appended { .. })
        ));
        sim.replicate(10);
        assert_eq!(sim.state.isr, vec![1, 2, 3], "broker 1 rejoined the ISR");
        let w = sim.produce(Acks::All, &["c1"]).unwrap();
        sim.replicate(10);
        assert_eq!(sim.acked(w), Some(Ok(())));
        assert_eq!(sim.values(1), vec!["m0", "c1"]);
        assert_eq!(sim.records(1), sim.records(3));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Produce,
        Fetch(BrokerId),
        Crash(BrokerId),
        Restart(BrokerId),
        /// A crash and a restart quicker than the controller notices (no fencing).
        Bounce(BrokerId),
        /// A crash losing the unflushed tail: keeps `n/255` of the log.
        PowerLoss(BrokerId, u8),
        Tick(i64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        ops(0)
    }

    fn ops(power_loss_weight: u32) -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            power_loss_weight => (1..=3i32, any::<u8>()).prop_map(|(b, k)| Op::PowerLoss(b, k)),
            4 => Just(Op::Produce),
            6 => (1..=3i32).prop_map(Op::Fetch),
            1 => (1..=3i32).prop_map(Op::Crash),
            2 => (1..=3i32).prop_map(Op::Restart),
            1 => (1..=3i32).prop_map(Op::Bounce),
            1 => (1..15_000i64).prop_map(Op::Tick),
        ]
    }

    /// Runs a schedule on RF=3, min.insync=2, acks=all, clean elections only, crashes keeping
    /// the log (kill -9 with the page cache intact); then heals and replicates. Returns the
    /// cluster and the acknowledged (offset, value) pairs.
    fn run_schedule(ops: &[Op], bugs: ReplicationBugs) -> (Sim<MemLog>, Vec<(i64, String)>) {
        run_schedule_with(ops, cfg(2), bugs, false, Acks::All)
    }

    fn run_schedule_with(
        ops: &[Op],
        config: PartitionConfig,
        bugs: ReplicationBugs,
        unclean: bool,
        acks: Acks,
    ) -> (Sim<MemLog>, Vec<(i64, String)>) {
        let mut sim = Sim::<MemLog>::new(3, config, bugs);
        sim.unclean = unclean;
        sim.elect(1, &[1, 2, 3]);
        let mut values = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Produce => {
                    let leader = sim.state.leader;
                    if leader > 0 && sim.alive(leader) {
                        let v = format!("v{n}");
                        if let Ok(id) = sim.produce(acks, &[&v]) {
                            values.insert(id, v);
                        }
                    }
                }
                Op::Fetch(id) => {
                    sim.step(id);
                }
                Op::Crash(id) => {
                    if sim.alive(id) {
                        sim.crash(id);
                        sim.fence(id);
                    }
                }
                Op::Restart(id) => {
                    if !sim.alive(id) {
                        sim.restart(id);
                        sim.unfence(id);
                    }
                }
                Op::PowerLoss(id, keep) => {
                    if sim.alive(id) {
                        sim.crash(id);
                        let leo = sim.records(id).last().map_or(0, |r| r.0 + 1);
                        sim.lose_tail(id, leo * i64::from(keep) / 255);
                        sim.fence(id);
                    }
                }
                Op::Bounce(id) => {
                    if sim.alive(id) {
                        sim.crash(id);
                        sim.restart(id);
                    }
                }
                Op::Tick(ms) => {
                    sim.now += ms;
                    let (leader, now) = (sim.state.leader, sim.now);
                    if leader > 0 && sim.alive(leader) {
                        if let Some(p) = sim.pm(leader).maybe_shrink_isr(now) {
                            sim.alter_partition(p);
                        }
                    }
                    sim.poll();
                }
            }
        }
        for id in 1..=3 {
            if !sim.alive(id) {
                sim.restart(id);
                sim.unfence(id);
            }
        }
        sim.replicate(50);
        let acked = sim
            .completions
            .iter()
            .filter(|c| c.result.is_ok())
            .map(|c| (sim.offsets[&c.id], values[&c.id].clone()))
            .collect();
        (sim, acked)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// acks=all with min.insync=2 and clean elections loses no acknowledged write under
        /// crash/restart/lag schedules, and every replica ends with the same log.
        #[test]
        fn acks_all_never_loses_acknowledged_writes(
            ops in proptest::collection::vec(op(), 1..80),
            on_fetch in proptest::bool::ANY,
        ) {
            let config = if on_fetch { cfg_fetch_truncation(2) } else { cfg(2) };
            let (sim, acked) = run_schedule_with(&ops, config, ReplicationBugs::none(), false, Acks::All);
            let leader = sim.state.leader;
            proptest::prop_assert!(leader > 0, "a leader after healing");
            let log = sim.records(leader);
            for (offset, value) in &acked {
                let found = log.iter().find(|r| r.0 == *offset).map(|r| r.1.clone());
                proptest::prop_assert_eq!(found.as_ref(), Some(value), "acked write lost at {}", offset);
            }
            for id in 1..=3 {
                proptest::prop_assert_eq!(sim.records(id), log.clone(), "replica {} differs", id);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// Whatever is lost (unclean elections, power loss of unflushed tails, acks=1), the
        /// replicas never diverge: after healing every replica holds the leader's log exactly.
        #[test]
        fn replicas_never_diverge_under_unclean_elections_and_power_loss(
            ops in proptest::collection::vec(ops(2), 1..80),
            on_fetch in proptest::bool::ANY,
            unclean in proptest::bool::ANY,
        ) {
            let config = if on_fetch { cfg_fetch_truncation(1) } else { cfg(1) };
            let (sim, _) = run_schedule_with(&ops, config, ReplicationBugs::none(), unclean, Acks::Leader);
            let leader = sim.state.leader;
            proptest::prop_assert!(leader > 0, "a leader after healing");
            let log = sim.records(leader);
            for id in 1..=3 {
                proptest::prop_assert_eq!(sim.records(id), log.clone(), "replica {} differs", id);
            }
        }
    }

    /// The same schedules with `hw_truncation` do lose acknowledged writes: the property above
    /// can fail, so it is not vacuous. A fixed schedule shows it.
    #[test]
    fn schedule_with_hw_truncation_loses_an_acknowledged_write() {
        // Produce; two fetches each by brokers 2 and 3 (leader HW 1, acked; their HWs 0);
        // broker 2 bounces (truncating to its HW 0 with the bug), brokers 3 and 1 crash, and
        // broker 2, still in the ISR, is elected.
        let ops = [
            Op::Produce,
            Op::Fetch(2),
            Op::Fetch(3),
            Op::Fetch(2),
            Op::Fetch(3),
            Op::Bounce(2),
            Op::Crash(3),
            Op::Crash(1),
        ];
        let (_, acked) = run_schedule(&ops, ReplicationBugs::none());
        assert_eq!(acked.len(), 1);
        let (sim, acked) = run_schedule(&ops, bug_hw_truncation());
        assert_eq!(acked.len(), 1);
        let leader = sim.state.leader;
        assert!(
            !sim.values(leader).contains(&acked[0].1),
            "the acked write is gone"
        );
    }

    /// `ack_before_isr`: acks=all answered before any follower has the record; the leader
    /// dies and a clean election loses the acknowledged write. Fixed: it is not acknowledged.
    fn bug_ack_before_isr_loses_an_acknowledged_write_on_failover<L: SimLog>() {
        for bug in [false, true] {
            let bugs = ReplicationBugs {
                ack_before_isr: bug,
                ..ReplicationBugs::none()
            };
            let mut sim = Sim::<L>::new(3, cfg(2), bugs);
            sim.elect(1, &[1, 2, 3]);
            let w = sim.produce(Acks::All, &["m0"]).unwrap();
            sim.crash(1);
            sim.fence(1);
            assert_eq!(sim.state.leader, 2);
            let acked = sim.acked(w);
            if bug {
                assert_eq!(acked, Some(Ok(())));
                assert!(
                    sim.values(2).is_empty(),
                    "acknowledged m0 is not on the new leader"
                );
            } else {
                assert_eq!(acked, None, "never acknowledged: the client sees a timeout");
            }
        }
    }

    /// Jepsen 2013 (kafka-bugs.md scenario 1): the ISR shrinks to the leader, which keeps
    /// acknowledging acks=all alone; it dies, an out-of-sync replica is elected uncleanly, and the
    /// acknowledged writes are lost. With `min.insync.replicas=2` the writes are refused instead.
    fn bug_ignore_min_insync_acknowledges_writes_an_unclean_election_loses<L: SimLog>() {
        for bug in [false, true] {
            let bugs = ReplicationBugs {
                ignore_min_insync: bug,
                ..ReplicationBugs::none()
            };
            let mut sim = Sim::<L>::new(2, cfg(2), bugs);
            sim.unclean = true;
            sim.elect(1, &[1, 2]);
            sim.crash(2);
            sim.fence(2);
            assert_eq!(sim.state.isr, vec![1]);
            let result = sim.produce(Acks::All, &["m0"]);
            if bug {
                let w = result.unwrap();
                assert_eq!(sim.acked(w), Some(Ok(())));
            } else {
                assert_eq!(
                    result.unwrap_err().kafka_error(),
                    ResponseError::NotEnoughReplicas
                );
            }
            sim.crash(1);
            sim.fence(1);
            sim.restart(2);
            sim.unfence(2);
            assert_eq!(
                sim.state.leader, 2,
                "unclean election of the out-of-sync replica"
            );
            sim.restart(1);
            sim.replicate(10);
            assert!(sim.values(1).is_empty() && sim.values(2).is_empty());
        }
    }

    /// The convergence property is not vacuous: over the same deterministic schedules each
    /// truncation bug mode produces divergent replicas, while the fixed protocol never does.
    #[test]
    fn convergence_property_catches_both_truncation_bugs() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = proptest::collection::vec(ops(2), 1..80);
        let modes = [
            ReplicationBugs::none(),
            bug_hw_truncation(),
            ReplicationBugs {
                epoch_lookup_next_epoch: true,
                ..ReplicationBugs::none()
            },
        ];
        let mut diverged = [0; 3];
        for _ in 0..100 {
            let schedule = strategy.new_tree(&mut runner).unwrap().current();
            for (mode, count) in modes.iter().zip(diverged.iter_mut()) {
                let (sim, _) = run_schedule_with(&schedule, cfg(1), *mode, true, Acks::Leader);
                let leader = sim.records(sim.state.leader);
                if (1..=3).any(|id| sim.records(id) != leader) {
                    *count += 1;
                }
            }
        }
        assert_eq!(diverged[0], 0, "fixed protocol diverged");
        assert!(
            diverged[1] > 0 && diverged[2] > 0,
            "bug modes never diverged: {diverged:?}"
        );
    }

    /// Runs each scenario on the in-memory log and on the real segmented log.
    macro_rules! on_both_logs {
        ($($name:ident),* $(,)?) => {
            mod on_mem_log {
                $( #[test] fn $name() { super::$name::<crate::replication::mem_log::MemLog>(); } )*
            }
            mod on_segmented_log {
                $( #[test] fn $name() { super::$name::<crate::log::Log>(); } )*
            }
        };
    }

    on_both_logs!(
        kip101_returning_leader_truncates_its_divergent_tail,
        kip101_follower_restart_keeps_acked_write,
        bug_hw_truncation_loses_acked_write_on_fast_leader_change,
        kip101_power_loss_replicas_converge,
        bug_hw_truncation_power_loss_logs_diverge,
        kip279_follower_iterates_to_the_divergence_point,
        kip320_diverging_epoch_fetches_iterate_to_the_same_point,
        truncation_on_fetch_goes_through_diverging_answers,
        bug_epoch_lookup_next_epoch_keeps_a_divergent_suffix,
        unclean_election_loses_acked_records_as_kafka_does,
        follower_below_epoch_start_does_not_rejoin_isr,
        bug_isr_join_below_epoch_start_readmits_an_empty_follower,
        caught_up_follower_with_an_empty_epoch_at_its_end_rejoins_the_isr,
        empty_epoch_entry_is_dropped_by_offsets_for_leader_epoch_truncation,
        bug_ack_before_isr_loses_an_acknowledged_write_on_failover,
        bug_ignore_min_insync_acknowledges_writes_an_unclean_election_loses,
    );
}
