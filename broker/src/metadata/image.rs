//! The cluster metadata image and the commands that change it: broker registrations and fencing,
//! topics, replica assignment, partition leaders, leader epochs, partition epochs and ISRs.
//!
//! `apply` is the Raft state machine's transition function: pure and deterministic, so every
//! controller computes the same image from the same log. Leader elections that follow from a
//! command (a broker fenced, a broker back) happen inside `apply`, as KRaft's controller does
//! when it writes PartitionChangeRecords.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A broker id (`node.id`).
pub type NodeId = i32;

/// "No leader".
pub const NO_LEADER: NodeId = -1;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Id.
    pub id: NodeId,
    /// Advertised Kafka host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: u16,
    /// Fenced brokers lead nothing and are not elected.
    pub fenced: bool,
    /// The broker epoch: the Raft log index of the registration that created this incarnation
    /// (Kafka's broker epoch is the offset of its `RegisterBrokerRecord`). Unfencing the same
    /// incarnation keeps it; a new incarnation gets a new one.
    pub epoch: i64,
    /// The incarnation id the broker process chose at start (fresh per process start).
    #[serde(default)]
    pub incarnation: String,
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Assigned replicas; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Current leader or [`NO_LEADER`].
    pub leader: NodeId,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    /// Bumped on every change of leader or ISR.
    pub partition_epoch: i32,
    /// KIP-966 Eligible Leader Replicas: replicas out of the ISR that still hold every
    /// committed record (they left while the ISR was below min ISR, when the high watermark
    /// cannot advance), so they may be elected when no ISR member can. Empty unless
    /// [`ClusterFeatures::eligible_leader_replicas`].
    #[serde(default)]
    pub elr: Vec<NodeId>,
    /// KIP-966 `LastKnownElr` as Kafka's controller keeps it in production
    /// (`useLastKnownLeaderInBalancedRecovery`): the leader the partition had when its ISR
    /// first became empty, kept while it stays leaderless and cleared once it has a leader
    /// again. With ISR and ELR both empty this broker is elected (uncleanly) when it is live
    /// (see [`MetadataImage::apply`]'s elections). Empty unless
    /// [`ClusterFeatures::eligible_leader_replicas`].
    #[serde(default)]
    pub last_known_elr: Vec<NodeId>,
}

/// Cluster-wide settings the controller's decisions follow, from the active controller's
/// config (written with each broker registration, so every controller applies the same ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFeatures {
    /// `eligible.leader.replicas.enable` (KIP-966; `kafka.release` 4.0+, default on from 4.1).
    pub eligible_leader_replicas: bool,
    /// The controller's `min.insync.replicas` (topics may override it).
    pub min_insync_replicas: i32,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Topic-level configs.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: Vec<PartitionInfo>,
}

/// The whole metadata image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Brokers by id.
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// Raft log index of the last applied command (0: empty).
    pub version: u64,
    /// The next idempotent-producer id to hand out.
    #[serde(default)]
    pub next_producer_id: i64,
    /// The settings the controller's elections follow (ELR, min ISR).
    #[serde(default)]
    pub features: ClusterFeatures,
}

/// A change proposed to the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker (re)registers: unfenced, and leaderless partitions it can lead get it as leader.
    RegisterBroker {
        /// Id.
        id: NodeId,
        /// Kafka host.
        host: String,
        /// Kafka port.
        port: u16,
        /// `unclean.leader.election.enable` of the controller.
        unclean: bool,
        /// The registering process's incarnation id. A registration with a new incarnation while
        /// the old one is still live (unfenced) fences the old one first, as Kafka 4.0 does
        /// (KAFKA-18106): its partitions get new leaders and it leaves every ISR before the new
        /// incarnation is unfenced.
        #[serde(default)]
        incarnation: String,
        /// KIP-966 unclean-shutdown detection: the new incarnation's previous process did not
        /// shut down cleanly (its clean-shutdown file did not name the registered broker
        /// epoch). With ELR on, the broker leaves every ISR and ELR: its log may have lost
        /// records it had acknowledged.
        #[serde(default)]
        unclean_shutdown: bool,
        /// The active controller's cluster settings (ELR, min ISR), applied to the image.
        #[serde(default)]
        features: Option<ClusterFeatures>,
    },
    /// The controller saw no heartbeat within the session timeout (or a clean shutdown).
    FenceBroker {
        /// Id.
        id: NodeId,
        /// `unclean.leader.election.enable` of the controller.
        unclean: bool,
    },
    /// CreateTopics.
    CreateTopic {
        /// Name.
        name: String,
        /// Partition count.
        partitions: i32,
        /// Replication factor.
        replication_factor: i16,
        /// Topic configs.
        configs: BTreeMap<String, String>,
    },
    /// DeleteTopics.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// InitProducerId: hand out the next producer id (answered in `CommandResult::value`).
    AllocateProducerId,
    /// AlterConfigs / IncrementalAlterConfigs: a topic's whole new config set.
    AlterTopicConfigs {
        /// Topic.
        name: String,
        /// Its configs from now on.
        configs: BTreeMap<String, String>,
    },
    /// A leader's ISR change (Kafka's AlterPartition).
    AlterPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The requesting leader.
        leader: NodeId,
        /// Leader epoch the leader believes current.
        leader_epoch: i32,
        /// Partition epoch the leader believes current.
        partition_epoch: i32,
        /// The proposed ISR.
        isr: Vec<NodeId>,
        /// KIP-903 (`NewIsrWithEpochs`): the broker epoch each proposed member fetched with, as
        /// the leader saw it. A member joining the ISR whose epoch here is not its current
        /// registration's is refused (it restarted: its fetch state is from an older process).
        #[serde(default)]
        broker_epochs: BTreeMap<NodeId, i64>,
    },
}

/// What applying a command answered, with Kafka error codes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// 0 on success, else a Kafka error code.
    pub error_code: i16,
    /// Human-readable detail.
    pub message: String,
    /// For AlterPartition: the partition's state after the command.
    pub partition: Option<PartitionInfo>,
    /// For AllocateProducerId: the id.
    #[serde(default)]
    pub value: i64,
}

/// Kafka error codes the image answers with.
pub mod codes {
    /// UNKNOWN_TOPIC_OR_PARTITION
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// TOPIC_ALREADY_EXISTS
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// INVALID_PARTITIONS
    pub const INVALID_PARTITIONS: i16 = 37;
    /// INVALID_REPLICATION_FACTOR
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// FENCED_LEADER_EPOCH
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    /// INVALID_UPDATE_VERSION
    pub const INVALID_UPDATE_VERSION: i16 = 108;
    /// NOT_LEADER_OR_FOLLOWER
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// INELIGIBLE_REPLICA
    pub const INELIGIBLE_REPLICA: i16 = 107;
}

fn err(code: i16, message: String) -> CommandResult {
    CommandResult {
        error_code: code,
        message,
        ..CommandResult::default()
    }
}

impl MetadataImage {
    /// Whether `id` is registered and not fenced.
    pub fn is_live(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// A topic's partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
    }

    fn topic_unclean(&self, topic: &TopicInfo, default: bool) -> bool {
        match topic
            .configs
            .get("unclean.leader.election.enable")
            .map(String::as_str)
        {
            Some("true") => true,
            Some("false") => false,
            _ => default,
        }
    }

    /// Applies one command at log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        self.version = index;
        match cmd {
            Command::RegisterBroker {
                id,
                host,
                port,
                unclean,
                incarnation,
                unclean_shutdown,
                features,
            } => {
                if let Some(f) = features {
                    self.features = f.clone();
                }
                let previous = self.brokers.get(id).cloned();
                if let Some(b) = &previous {
                    if !b.fenced && b.incarnation != *incarnation {
                        // KAFKA-18106: the old incarnation is fenced at once (its leaderships
                        // move with a new leader epoch, it leaves every ISR), so the new process
                        // never leads or counts in an ISR on the old one's state.
                        tracing::info!(broker = id, old_incarnation = %b.incarnation, new_incarnation = %incarnation,
                            "broker re-registers with a new incarnation: fencing the old one first");
                        self.fence(*id, *unclean);
                    }
                }
                if *unclean_shutdown && self.features.eligible_leader_replicas {
                    // Before any election: it must not be elected from the ELR it leaves.
                    self.remove_unclean_replica(*id);
                }
                let epoch = match &previous {
                    Some(b) if b.incarnation == *incarnation => b.epoch,
                    _ => i64::try_from(index).unwrap_or(i64::MAX),
                };
                self.brokers.insert(
                    *id,
                    BrokerInfo {
                        id: *id,
                        host: host.clone(),
                        port: *port,
                        fenced: false,
                        epoch,
                        incarnation: incarnation.clone(),
                    },
                );
                tracing::info!(broker = id, epoch, incarnation = %incarnation, "broker registered and unfenced");
                self.elect_leaderless(*unclean);
                CommandResult::default()
            }
            Command::FenceBroker { id, unclean } => {
                self.fence(*id, *unclean);
                CommandResult::default()
            }
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    return err(
                        codes::TOPIC_ALREADY_EXISTS,
                        format!("topic `{name}` already exists"),
                    );
                }
                if *partitions <= 0 {
                    return err(
                        codes::INVALID_PARTITIONS,
                        format!("{partitions} partitions requested"),
                    );
                }
                let live: Vec<NodeId> = self
                    .brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .map(|b| b.id)
                    .collect();
                let rf = usize::try_from(*replication_factor).unwrap_or(0);
                if rf == 0 || rf > live.len() {
                    return err(
                        codes::INVALID_REPLICATION_FACTOR,
                        format!(
                            "replication factor {replication_factor} with {} live brokers",
                            live.len()
                        ),
                    );
                }
                // Round-robin like Kafka's rack-unaware assignment: partition p starts at broker p.
                let parts = (0..*partitions as usize)
                    .map(|p| {
                        let replicas: Vec<NodeId> =
                            (0..rf).map(|r| live[(p + r) % live.len()]).collect();
                        PartitionInfo {
                            leader: replicas[0],
                            isr: replicas.clone(),
                            replicas,
                            leader_epoch: 0,
                            partition_epoch: 0,
                            elr: Vec::new(),
                            last_known_elr: Vec::new(),
                        }
                    })
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicInfo {
                        name: name.clone(),
                        configs: configs.clone(),
                        partitions: parts,
                    },
                );
                tracing::info!(topic = %name, partitions, rf, "topic created");
                CommandResult::default()
            }
            Command::AllocateProducerId => {
                let id = self.next_producer_id;
                self.next_producer_id += 1;
                CommandResult {
                    value: id,
                    ..CommandResult::default()
                }
            }
            Command::AlterTopicConfigs { name, configs } => {
                let Some(t) = self.topics.get_mut(name) else {
                    return err(
                        codes::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic `{name}` does not exist"),
                    );
                };
                t.configs = configs.clone();
                tracing::info!(topic = %name, ?configs, "topic configs changed");
                CommandResult::default()
            }
            Command::DeleteTopic { name } => {
                if self.topics.remove(name).is_none() {
                    return err(
                        codes::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic `{name}` does not exist"),
                    );
                }
                tracing::info!(topic = %name, "topic deleted");
                CommandResult::default()
            }
            Command::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
                broker_epochs,
            } => {
                let live_isr = isr.iter().all(|r| self.is_live(*r));
                let stale_epoch = broker_epochs
                    .iter()
                    .find(|(r, e)| self.brokers.get(r).is_some_and(|b| b.epoch != **e));
                let stale_epoch = stale_epoch.map(|(r, e)| (*r, *e));
                let elr_on = self.features.eligible_leader_replicas;
                let min_isr = self.topics.get(topic).map_or(1, |t| self.min_isr(t));
                let Some(p) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?))
                else {
                    return err(
                        codes::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("{topic}-{partition} does not exist"),
                    );
                };
                if p.leader != *leader || p.leader_epoch != *leader_epoch {
                    return err(
                        codes::FENCED_LEADER_EPOCH,
                        format!(
                            "{topic}-{partition}: leader {leader} epoch {leader_epoch} is stale (current leader {} epoch {})",
                            p.leader, p.leader_epoch
                        ),
                    );
                }
                if p.partition_epoch != *partition_epoch {
                    return err(
                        codes::INVALID_UPDATE_VERSION,
                        format!(
                            "{topic}-{partition}: partition epoch {partition_epoch} is stale (current {})",
                            p.partition_epoch
                        ),
                    );
                }
                if !isr.contains(leader) || !isr.iter().all(|r| p.replicas.contains(r)) || !live_isr
                {
                    return err(
                        codes::INELIGIBLE_REPLICA,
                        format!("{topic}-{partition}: proposed ISR {isr:?} is not eligible"),
                    );
                }
                if let Some((r, e)) = stale_epoch.filter(|(r, _)| !p.isr.contains(r)) {
                    return err(
                        codes::INELIGIBLE_REPLICA,
                        format!("{topic}-{partition}: replica {r} fetched with broker epoch {e}, which is not its current registration's"),
                    );
                }
                let old = p.clone();
                set_isr(p, isr.clone(), min_isr, elr_on, &[]);
                track_last_known_leader(p, &old, elr_on);
                p.partition_epoch += 1;
                tracing::info!(topic = %topic, partition, isr = ?p.isr, elr = ?p.elr, partition_epoch = p.partition_epoch, "ISR changed");
                CommandResult {
                    partition: Some(p.clone()),
                    ..CommandResult::default()
                }
            }
        }
    }

    /// Fences a live broker: each partition it led gets a new leader (leader epoch + 1) and it
    /// leaves every ISR it is not the last member of. A no-op for unknown or fenced brokers.
    fn fence(&mut self, id: NodeId, unclean: bool) {
        match self.brokers.get_mut(&id) {
            Some(b) if !b.fenced => b.fenced = true,
            _ => return,
        }
        tracing::info!(broker = id, "broker fenced");
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            let t = &self.topics[&name];
            let unclean_t = self.topic_unclean(t, unclean);
            let min_isr = self.min_isr(t);
            let elr_on = self.features.eligible_leader_replicas;
            for p in 0..t.partitions.len() {
                let info = &self.topics[&name].partitions[p];
                if info.leader == id {
                    self.elect(&name, p, unclean_t, Some(id));
                } else if info.isr.contains(&id) && (info.isr.len() > 1 || elr_on) {
                    // KRaft removes a fenced broker from every ISR it is in; without ELR the
                    // last member stays (so it can be elected when it returns), with ELR the
                    // ISR may become empty and the broker stays eligible in the ELR.
                    let part = self.topics.get_mut(&name).map(|t| &mut t.partitions[p]);
                    if let Some(part) = part {
                        let isr = part.isr.iter().copied().filter(|r| *r != id).collect();
                        let old = part.clone();
                        set_isr(part, isr, min_isr, elr_on, &[]);
                        track_last_known_leader(part, &old, elr_on);
                        part.partition_epoch += 1;
                        tracing::info!(topic = %name, partition = p, isr = ?part.isr, elr = ?part.elr, "ISR shrunk: fenced broker removed");
                    }
                }
            }
        }
    }

    /// Elects a new leader for one partition whose leader is gone (`gone`), in the order of
    /// Kafka's `PartitionChangeBuilder.electAnyLeader`: a live ISR member; else (ELR on) a live
    /// Eligible Leader Replica; else (ELR on, ISR and ELR both empty) the last known leader if
    /// it is live; else (unclean) any live replica; else none.
    fn elect(&mut self, topic: &str, p: usize, unclean: bool, gone: Option<NodeId>) {
        let live: Vec<NodeId> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect();
        let elr_on = self.features.eligible_leader_replicas;
        let min_isr = self.topics.get(topic).map_or(1, |t| self.min_isr(t));
        let Some(part) = self.topics.get_mut(topic).map(|t| &mut t.partitions[p]) else {
            return;
        };
        let old = part.clone();
        let electable = |r: &NodeId| live.contains(r) && Some(*r) != gone;
        let clean = part
            .replicas
            .iter()
            .copied()
            .find(|r| part.isr.contains(r) && electable(r));
        // KIP-966: with no live ISR member, a live Eligible Leader Replica is elected (it has
        // every committed record: it left the ISR while the high watermark was held).
        let eligible = part
            .replicas
            .iter()
            .copied()
            .find(|r| elr_on && part.elr.contains(r) && electable(r));
        // The ISR without the gone leader: with ELR the last ISR member leaves too (into the
        // ELR); without it Kafka keeps the last member so it can be elected when it returns.
        let mut remaining = part.isr.clone();
        if let Some(g) = gone {
            if remaining.len() > 1 || elr_on {
                remaining.retain(|r| *r != g);
            }
        }
        // KIP-966 `canElectLastKnownLeader`: nothing in the ISR or ELR (after this change) and
        // exactly one last known leader. Kafka only logs when that broker is not alive; here a
        // fenced broker cannot lead, so it is elected once it is live (at its registration).
        let elr_after = if elr_on {
            next_elr(&old, &remaining, min_isr, &[])
        } else {
            Vec::new()
        };
        let last_known = match part.last_known_elr.as_slice() {
            [l] if elr_on && remaining.is_empty() && elr_after.is_empty() && electable(l) => {
                Some(*l)
            }
            _ => None,
        };
        let any = part.replicas.iter().copied().find(electable);
        // `forced`: an unclean election, which sets the ISR to the new leader and clears the ELR
        // (Kafka's `tryElection` and `maybeUpdateRecordElr`).
        let (leader, isr, forced) = if let Some(l) = clean {
            (l, remaining, false)
        } else if let Some(l) = eligible {
            tracing::info!(topic, partition = p, leader = l, elr = ?part.elr,
                "leader elected from the Eligible Leader Replicas (KIP-966)");
            (l, vec![l], false)
        } else if let Some(l) = last_known {
            tracing::warn!(topic, partition = p, leader = l, last_known_elr = ?part.last_known_elr,
                "last known leader elected with empty ISR and ELR (KIP-966, unclean): records it lost are gone");
            (l, vec![l], true)
        } else if let Some(l) = any.filter(|_| unclean) {
            // With ELR this is KIP-966's unclean recovery: nothing in ISR or ELR can lead, and
            // unclean election is allowed.
            tracing::warn!(topic, partition = p, leader = l, old_isr = ?part.isr, elr = ?part.elr,
                "UNCLEAN leader election: a replica outside the ISR leads; acknowledged writes may be lost");
            (l, vec![l], true)
        } else {
            (NO_LEADER, remaining, false)
        };
        if forced {
            part.elr.clear();
            part.isr = isr;
        } else {
            set_isr(part, isr, min_isr, elr_on, &[]);
        }
        part.leader_epoch += i32::from(leader != part.leader);
        part.leader = leader;
        track_last_known_leader(part, &old, elr_on);
        if part.leader != old.leader
            || part.isr != old.isr
            || part.elr != old.elr
            || part.last_known_elr != old.last_known_elr
        {
            part.partition_epoch += 1;
            tracing::info!(topic, partition = p, leader, leader_epoch = part.leader_epoch, isr = ?part.isr, elr = ?part.elr, last_known_elr = ?part.last_known_elr, "partition leader changed");
        }
    }

    /// A topic's `min.insync.replicas`, else the controller's; capped at the replica count
    /// (the effective min ISR of Kafka 3.7+, which every release with ELR has).
    fn min_isr(&self, topic: &TopicInfo) -> usize {
        let configured = topic
            .configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(self.features.min_insync_replicas)
            .max(1) as usize;
        let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
        configured.min(rf.max(1))
    }

    /// KIP-966 unclean-shutdown handling at registration: the broker leaves every ISR and ELR
    /// it is in (its log may lack records it acknowledged), then leaderless partitions are
    /// elected again without it.
    fn remove_unclean_replica(&mut self, id: NodeId) {
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            let min_isr = self.min_isr(&self.topics[&name]);
            let Some(t) = self.topics.get_mut(&name) else {
                continue;
            };
            for (p, part) in t.partitions.iter_mut().enumerate() {
                if !part.isr.contains(&id) && !part.elr.contains(&id) {
                    continue;
                }
                let isr: Vec<NodeId> = part.isr.iter().copied().filter(|r| *r != id).collect();
                let old = part.clone();
                set_isr(part, isr, min_isr, true, &[id]);
                if part.leader == id {
                    part.leader = NO_LEADER;
                    part.leader_epoch += 1;
                }
                track_last_known_leader(part, &old, true);
                part.partition_epoch += 1;
                tracing::info!(topic = %name, partition = p, broker = id, isr = ?part.isr, elr = ?part.elr,
                    "unclean shutdown detected at registration: removed from ISR and ELR (KIP-966)");
            }
        }
    }

    fn elect_leaderless(&mut self, unclean_default: bool) {
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            let unclean = self.topic_unclean(&self.topics[&name], unclean_default);
            for p in 0..self.topics[&name].partitions.len() {
                if self.topics[&name].partitions[p].leader == NO_LEADER {
                    self.elect(&name, p, unclean, None);
                }
            }
        }
    }
}

/// Sets a partition's ISR, keeping its ELR as KIP-966's `PartitionChangeBuilder` does
/// ([`next_elr`]). Without ELR only the ISR changes (and the ELR lists stay empty).
fn set_isr(
    part: &mut PartitionInfo,
    isr: Vec<NodeId>,
    min_isr: usize,
    elr_on: bool,
    unclean_shutdown: &[NodeId],
) {
    part.elr = if elr_on {
        next_elr(part, &isr, min_isr, unclean_shutdown)
    } else {
        Vec::new()
    };
    part.isr = isr;
}

/// The ELR a partition gets with ISR `isr` (Kafka's `maybePopulateTargetElr`): with the ISR at
/// or above min ISR it is empty; below it, the old ISR and ELR minus the new ISR and minus
/// replicas that shut down uncleanly.
fn next_elr(
    part: &PartitionInfo,
    isr: &[NodeId],
    min_isr: usize,
    unclean_shutdown: &[NodeId],
) -> Vec<NodeId> {
    if isr.len() >= min_isr {
        return Vec::new();
    }
    let mut elr: Vec<NodeId> = part
        .isr
        .iter()
        .chain(&part.elr)
        .copied()
        .filter(|r| !isr.contains(r) && !unclean_shutdown.contains(r))
        .collect();
    elr.sort_unstable();
    elr.dedup();
    elr
}

/// KIP-966 `LastKnownElr` after a change from `old` (Kafka's `maybeUpdateLastKnownLeader`):
/// the first time the ISR becomes empty it records the leader the partition had; once the
/// partition has a leader again it is cleared. Without ELR it stays empty.
fn track_last_known_leader(part: &mut PartitionInfo, old: &PartitionInfo, elr_on: bool) {
    if !elr_on {
        part.last_known_elr.clear();
    } else if part.isr.is_empty() && !old.isr.is_empty() {
        // Kafka writes `[old leader]`, -1 when it had none (which elects nobody, not even
        // uncleanly); not reached here: with ELR a leaderless partition's ISR has no live
        // member left to remove. Cleared then.
        part.last_known_elr = if old.leader == NO_LEADER {
            Vec::new()
        } else {
            vec![old.leader]
        };
    } else if part.leader != NO_LEADER {
        part.last_known_elr.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(img: &mut MetadataImage, i: &mut u64, id: NodeId) {
        reregister(img, i, id, &format!("inc-{id}"));
    }

    fn cluster() -> (MetadataImage, u64) {
        let mut img = MetadataImage::default();
        let mut i = 0;
        for id in 1..=3 {
            register(&mut img, &mut i, id);
        }
        i += 1;
        let r = img.apply(
            i,
            &Command::CreateTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 3,
                configs: BTreeMap::new(),
            },
        );
        assert_eq!(r.error_code, 0);
        (img, i)
    }

    #[test]
    fn topics_are_assigned_round_robin_with_the_first_replica_leading() {
        let (img, _) = cluster();
        let p1 = img.partition("t", 1).expect("exists");
        assert_eq!(p1.replicas, vec![2, 3, 1]);
        assert_eq!((p1.leader, p1.leader_epoch), (2, 0));
        let mut img2 = img.clone();
        let r = img2.apply(
            9,
            &Command::CreateTopic {
                name: "x".into(),
                partitions: 1,
                replication_factor: 4,
                configs: BTreeMap::new(),
            },
        );
        assert_eq!(r.error_code, codes::INVALID_REPLICATION_FACTOR);
    }

    #[test]
    fn fencing_the_leader_elects_from_the_isr_with_a_new_epoch() {
        let (mut img, i) = cluster();
        img.apply(
            i + 1,
            &Command::FenceBroker {
                id: 1,
                unclean: false,
            },
        );
        let p0 = img.partition("t", 0).expect("exists");
        assert_eq!((p0.leader, p0.leader_epoch), (2, 1));
        assert_eq!(p0.isr, vec![2, 3]);
        let p1 = img.partition("t", 1).expect("exists");
        assert_eq!(p1.leader, 2, "partitions led by others keep their leader");
        assert_eq!(p1.isr, vec![2, 3], "but the fenced broker leaves their ISR");
    }

    #[test]
    fn without_a_live_isr_member_unclean_decides() {
        for unclean in [false, true] {
            let (mut img, mut i) = cluster();
            // ISR of t-0 shrinks to {1} (followers lagged), then 1 is fenced.
            i += 1;
            let r = img.apply(
                i,
                &Command::AlterPartition {
                    topic: "t".into(),
                    partition: 0,
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    isr: vec![1],
                    broker_epochs: BTreeMap::new(),
                },
            );
            assert_eq!(r.error_code, 0);
            i += 1;
            img.apply(i, &Command::FenceBroker { id: 1, unclean });
            let p0 = img.partition("t", 0).expect("exists").clone();
            if unclean {
                assert_eq!(
                    (p0.leader, p0.leader_epoch, p0.isr.clone()),
                    (2, 1, vec![2])
                );
            } else {
                assert_eq!((p0.leader, p0.isr.clone()), (NO_LEADER, vec![1]));
                // The last ISR member returns: it leads again.
                register(&mut img, &mut i, 1);
                let p0 = img.partition("t", 0).expect("exists");
                // Epoch 1 went to "no leader", as Kafka bumps it on every leader change.
                assert_eq!((p0.leader, p0.leader_epoch), (1, 2));
            }
        }
    }

    #[test]
    fn stale_alter_partition_is_refused() {
        let (mut img, i) = cluster();
        let alter = |le, pe| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: le,
            partition_epoch: pe,
            isr: vec![1, 2],
            broker_epochs: BTreeMap::new(),
        };
        assert_eq!(img.apply(i + 1, &alter(0, 0)).error_code, 0);
        assert_eq!(
            img.apply(i + 2, &alter(0, 0)).error_code,
            codes::INVALID_UPDATE_VERSION
        );
        assert_eq!(
            img.apply(i + 3, &alter(5, 1)).error_code,
            codes::FENCED_LEADER_EPOCH
        );
    }

    fn reregister(img: &mut MetadataImage, i: &mut u64, id: NodeId, incarnation: &str) {
        *i += 1;
        img.apply(
            *i,
            &Command::RegisterBroker {
                id,
                host: "h".into(),
                port: 1,
                unclean: false,
                incarnation: incarnation.into(),
                unclean_shutdown: false,
                features: None,
            },
        );
    }

    #[test]
    fn a_new_incarnation_fences_the_live_old_one_and_gets_a_new_broker_epoch() {
        let (mut img, mut i) = cluster();
        let before = img.brokers[&1].epoch;
        assert_eq!(
            before, 1,
            "the broker epoch is the registration's log index"
        );
        // Same incarnation while live: nothing moves.
        reregister(&mut img, &mut i, 1, "inc-1");
        let p0 = img.partition("t", 0).expect("exists");
        assert_eq!((p0.leader, p0.leader_epoch), (1, 0));
        assert_eq!(img.brokers[&1].epoch, before);
        // A restart inside the session: the old incarnation is fenced first.
        reregister(&mut img, &mut i, 1, "inc-1b");
        let p0 = img.partition("t", 0).expect("exists");
        assert_eq!((p0.leader, p0.leader_epoch), (2, 1), "leadership moved");
        assert_eq!(p0.isr, vec![2, 3], "the restarted broker left the ISR");
        let p1 = img.partition("t", 1).expect("exists");
        assert_eq!(p1.isr, vec![2, 3]);
        let b = &img.brokers[&1];
        assert!(!b.fenced, "the new incarnation is registered");
        assert_eq!(b.epoch, i as i64, "with a new broker epoch");
        assert_eq!(b.incarnation, "inc-1b");
        // Fenced by the session timeout, then back as the same process: the epoch is kept.
        fence_broker(&mut img, &mut i, 1, false);
        let epoch = img.brokers[&1].epoch;
        reregister(&mut img, &mut i, 1, "inc-1b");
        assert_eq!(img.brokers[&1].epoch, epoch);
    }

    #[test]
    fn isr_expansion_with_a_stale_broker_epoch_is_refused() {
        let (mut img, mut i) = cluster();
        let old_epoch = img.brokers[&3].epoch;
        reregister(&mut img, &mut i, 3, "inc-3b");
        let p0 = img.partition("t", 0).expect("exists").clone();
        assert_eq!(p0.isr, vec![1, 2]);
        let expand = |e: i64, pe: i32| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: p0.leader_epoch,
            partition_epoch: pe,
            isr: vec![1, 2, 3],
            broker_epochs: [(1, 1), (2, 2), (3, e)].into_iter().collect(),
        };
        let r = img.apply(i + 1, &expand(old_epoch, p0.partition_epoch));
        assert_eq!(r.error_code, codes::INELIGIBLE_REPLICA, "{}", r.message);
        let current = img.brokers[&3].epoch;
        let r = img.apply(i + 2, &expand(current, p0.partition_epoch));
        assert_eq!(r.error_code, 0, "{}", r.message);
    }

    /// Last replica standing (kafka-bugs.md #9) in the controller: ISR {1,2,3}, min ISR 2, the
    /// leader shrinks the ISR to itself, is fenced, and re-registers after an unclean shutdown.
    /// Without ELR it stays the only electable replica and leads again; with ELR (KIP-966) a
    /// replica that left the ISR while it was under min ISR leads, and the unclean broker
    /// leaves the ELR.
    #[test]
    fn eligible_leader_replicas_elect_past_an_unclean_last_isr_member() {
        for elr in [false, true] {
            let (mut img, mut i) = cluster();
            img.features = ClusterFeatures {
                eligible_leader_replicas: elr,
                min_insync_replicas: 2,
            };
            let p0 = img.partition("t", 0).expect("p0").clone();
            assert_eq!((p0.leader, p0.replicas.clone()), (1, vec![1, 2, 3]));
            shrink_isr(&mut img, &mut i, 1, vec![1]);
            let p = img.partition("t", 0).expect("p0");
            assert_eq!(p.elr, if elr { vec![2, 3] } else { vec![] });
            fence_broker(&mut img, &mut i, 1, false);
            let p = img.partition("t", 0).expect("p0").clone();
            if elr {
                assert_eq!(
                    (p.leader, p.isr.clone()),
                    (2, vec![2]),
                    "elected from the ELR"
                );
                assert_eq!(p.elr, vec![1, 3], "the fenced leader stays eligible");
            } else {
                assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]), "offline");
            }
            register_after_crash(&mut img, &mut i, 1, false);
            let p = img.partition("t", 0).expect("p0");
            if elr {
                assert_eq!(p.leader, 2);
                assert_eq!(p.elr, vec![3], "the unclean broker left the ELR");
            } else {
                assert_eq!(
                    (p.leader, p.isr.clone()),
                    (1, vec![1]),
                    "the crashed last ISR member leads again on whatever it kept"
                );
            }
        }
    }

    #[test]
    fn with_elr_an_unclean_last_isr_member_leaves_the_partition_offline_or_to_unclean_recovery() {
        for unclean in [false, true] {
            let (mut img, mut i) = cluster();
            img.features = ClusterFeatures {
                eligible_leader_replicas: true,
                min_insync_replicas: 2,
            };
            // Brokers 2 and 3 fenced first: 2 leaves an ISR still at min ISR (so not into the
            // ELR: the HW may move past it), 3 leaves it under min ISR (into the ELR); neither is
            // live when 1 goes.
            for id in [2, 3] {
                i += 1;
                img.apply(i, &Command::FenceBroker { id, unclean });
            }
            i += 1;
            img.apply(i, &Command::FenceBroker { id: 1, unclean });
            let p = img.partition("t", 0).expect("p0").clone();
            assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![]));
            assert_eq!(p.elr, vec![1, 3]);
            register_after_crash(&mut img, &mut i, 1, unclean);
            let p = img.partition("t", 0).expect("p0");
            assert!(!p.elr.contains(&1), "{p:?}");
            if unclean {
                assert_eq!(p.leader, 1, "unclean recovery: the only live replica");
            } else {
                assert_eq!(p.leader, NO_LEADER, "offline until an ELR member returns");
                assert_eq!(p.elr, vec![3]);
            }
        }
    }

    fn features(img: &mut MetadataImage, min_insync_replicas: i32) {
        img.features = ClusterFeatures {
            eligible_leader_replicas: true,
            min_insync_replicas,
        };
    }

    fn fence_broker(img: &mut MetadataImage, i: &mut u64, id: NodeId, unclean: bool) {
        *i += 1;
        img.apply(*i, &Command::FenceBroker { id, unclean });
    }

    fn register_after_crash(img: &mut MetadataImage, i: &mut u64, id: NodeId, unclean: bool) {
        *i += 1;
        img.apply(
            *i,
            &Command::RegisterBroker {
                id,
                host: "h".into(),
                port: 1,
                unclean,
                incarnation: format!("inc-{id}-after-crash-{i}"),
                unclean_shutdown: true,
                features: None,
            },
        );
    }

    fn shrink_isr(img: &mut MetadataImage, i: &mut u64, leader: NodeId, isr: Vec<NodeId>) {
        let p = img.partition("t", 0).expect("p0").clone();
        *i += 1;
        let r = img.apply(
            *i,
            &Command::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr,
                broker_epochs: BTreeMap::new(),
            },
        );
        assert_eq!(r.error_code, 0, "{}", r.message);
    }

    /// KIP-966 `LastKnownElr` (Kafka's `useLastKnownLeaderInBalancedRecovery`): min ISR 1, the
    /// ISR shrinks to the leader, the leader is fenced (ISR empty, it stays in the ELR, and is
    /// recorded as last known leader) and comes back after an unclean shutdown (out of the
    /// ELR): with ISR and ELR empty the last known leader is elected, uncleanly (ISR forced to
    /// it), and the record is cleared once the partition has a leader.
    #[test]
    fn the_last_known_leader_is_elected_when_isr_and_elr_are_empty() {
        let (mut img, mut i) = cluster();
        features(&mut img, 1);
        shrink_isr(&mut img, &mut i, 1, vec![1]);
        let p = img.partition("t", 0).expect("p0");
        assert!(p.elr.is_empty() && p.last_known_elr.is_empty(), "{p:?}");
        fence_broker(&mut img, &mut i, 1, false);
        let p = img.partition("t", 0).expect("p0").clone();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![]));
        assert_eq!(
            (p.elr.clone(), p.last_known_elr.clone()),
            (vec![1], vec![1])
        );
        register_after_crash(&mut img, &mut i, 1, false);
        let q = img.partition("t", 0).expect("p0");
        assert_eq!((q.leader, q.isr.clone()), (1, vec![1]), "{q:?}");
        assert!(q.elr.is_empty() && q.last_known_elr.is_empty(), "{q:?}");
        assert_eq!(q.leader_epoch, p.leader_epoch + 1);
        // Other partitions kept their leaders and recorded nothing.
        let p1 = img.partition("t", 1).expect("p1");
        assert!(
            p1.leader != NO_LEADER && p1.last_known_elr.is_empty(),
            "{p1:?}"
        );
    }

    /// Kafka's `electAnyLeader` order: ISR, ELR, the last known leader, and only then (with
    /// `unclean.leader.election.enable`) any live replica. The last known leader here (2) is
    /// not the first live replica (1), which the unclean path would pick; while it is fenced
    /// nothing is elected without unclean.
    #[test]
    fn the_last_known_leader_comes_before_an_unclean_election() {
        let (mut img, mut i) = cluster();
        features(&mut img, 1);
        // Broker 1 restarts: 2 leads t-0, whose replicas are [1, 2, 3].
        reregister(&mut img, &mut i, 1, "inc-1b");
        assert_eq!(img.partition("t", 0).expect("p0").leader, 2);
        shrink_isr(&mut img, &mut i, 2, vec![2]);
        fence_broker(&mut img, &mut i, 2, false);
        let p = img.partition("t", 0).expect("p0").clone();
        assert_eq!(
            (p.leader, p.elr.clone(), p.last_known_elr.clone()),
            (NO_LEADER, vec![2], vec![2])
        );
        // Broker 3 registers again: still nothing electable without unclean.
        reregister(&mut img, &mut i, 3, "inc-3");
        assert_eq!(img.partition("t", 0).expect("p0").leader, NO_LEADER);
        // 2 returns uncleanly with unclean election allowed: it leads as last known leader,
        // ahead of the unclean pick (1, the first live replica).
        register_after_crash(&mut img, &mut i, 2, true);
        let p = img.partition("t", 0).expect("p0");
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]), "{p:?}");
        assert!(p.last_known_elr.is_empty(), "{p:?}");
    }
}
