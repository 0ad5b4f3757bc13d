//! Seeded fault schedules: start/stop pairs of the chosen fault kinds at random gaps over the
//! run, then a final phase healing everything in a fixed order (partitions, packet rules,
//! clocks, disks, resume, restart). The same seed and inputs give the same schedule.

use std::time::Duration;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::disk::{DiskFault, FileFault};
use crate::error::NemesisError;
use crate::net::Topology;
use crate::node::FaultKind;

/// The placeholder for "the current leader of a workload partition" in an action's node list
/// or an `IsolateNode` topology; the harness resolves it from cluster metadata when the action
/// is due ([`Action::resolve_roles`]).
pub const LEADER: &str = "@leader";
/// The placeholder for "the active controller", resolved like [`LEADER`].
pub const CONTROLLER: &str = "@controller";
/// The placeholder for "the other replicas of a workload partition's leader" (several nodes).
pub const FOLLOWERS: &str = "@followers";
/// The placeholder for "the coordinator of the run's consumer group".
pub const COORDINATOR: &str = "@coordinator";

/// Whether a node name is a role placeholder ([`LEADER`], [`CONTROLLER`], [`FOLLOWERS`], or
/// one pinned to a partition with [`pinned`]).
pub fn is_role(name: &str) -> bool {
    name.starts_with('@')
}

/// `role` pinned to one workload partition (`@leader/2`): the actions of one scripted fault
/// name the same partition's leader and followers. The index is taken modulo the partition
/// count when resolved.
pub fn pinned(role: &str, partition: u32) -> String {
    format!("{role}/{partition}")
}

/// Splits a role into its base (`@leader`) and pinned partition, if any.
pub fn split_role(role: &str) -> (&str, Option<u32>) {
    match role.split_once('/') {
        Some((base, p)) => (base, p.parse().ok()),
        None => (role, None),
    }
}

/// Which nodes a process/clock/disk fault targets, before resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Targets {
    /// One random node.
    One,
    /// A random minority (n/2 rounded down, at least 1).
    Minority,
    /// A random majority (n/2 + 1).
    Majority,
    /// Every node.
    All,
    /// These nodes (e.g. the current partition leader or the active controller).
    Named(Vec<String>),
}

impl Targets {
    /// Resolves to node names (sorted), checking named nodes exist.
    pub fn resolve<R: Rng>(
        &self,
        nodes: &[String],
        rng: &mut R,
    ) -> Result<Vec<String>, NemesisError> {
        let mut shuffled = nodes.to_vec();
        shuffled.shuffle(rng);
        let n = nodes.len();
        let take = match self {
            Targets::One => 1.min(n),
            Targets::Minority => (n / 2).max(1).min(n),
            Targets::Majority => (n / 2 + 1).min(n),
            Targets::All => n,
            Targets::Named(names) => {
                for name in names {
                    if !nodes.contains(name) {
                        return Err(NemesisError::UnknownNode(name.clone()));
                    }
                }
                let mut v = names.clone();
                v.sort();
                v.dedup();
                return Ok(v);
            }
        };
        let mut v: Vec<String> = shuffled.into_iter().take(take).collect();
        v.sort();
        Ok(v)
    }
}

/// One nemesis action, with its targets already resolved to node names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Start a partition.
    StartPartition {
        /// The topology.
        topology: Topology,
        /// Seed of the topology's random node choice (which node is isolated, the halves),
        /// drawn when the schedule was generated so the schedule alone says which nodes a
        /// partition cuts; None falls back to the nemesis's own seeded generator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    },
    /// Heal every partition.
    StopPartition,
    /// Drop a percentage of packets to and from peers on these nodes.
    StartPacketLoss {
        /// Target nodes.
        nodes: Vec<String>,
        /// Percent of packets dropped (1-100).
        percent: u8,
    },
    /// Remove every packet-loss rule.
    StopPacketLoss,
    /// Add network latency (refused where there is no netem).
    StartLatency {
        /// Target nodes.
        nodes: Vec<String>,
        /// Added delay.
        delay_ms: u64,
    },
    /// kill -9 the service.
    Kill {
        /// Target nodes.
        nodes: Vec<String>,
        /// Also drop writes not yet fsynced (needs the disk fault FS), as at a power loss.
        lose_unfsynced: bool,
    },
    /// SIGTERM the service and wait for it to exit.
    Stop {
        /// Target nodes.
        nodes: Vec<String>,
    },
    /// Start the service again.
    Start {
        /// Target nodes.
        nodes: Vec<String>,
    },
    /// SIGSTOP the service.
    Pause {
        /// Target nodes.
        nodes: Vec<String>,
    },
    /// SIGCONT the service.
    Resume {
        /// Target nodes.
        nodes: Vec<String>,
    },
    /// Move the service's clock by an offset.
    BumpClock {
        /// Target nodes.
        nodes: Vec<String>,
        /// Offset in milliseconds (may be negative).
        offset_ms: i64,
    },
    /// Flip the service's clock between +delta and 0 every period for a duration.
    StrobeClock {
        /// Target nodes.
        nodes: Vec<String>,
        /// Offset in milliseconds.
        delta_ms: i64,
        /// Flip period in milliseconds.
        period_ms: u64,
        /// Total duration in milliseconds.
        duration_ms: u64,
    },
    /// Reset clocks to a zero offset.
    ResetClock {
        /// Target nodes.
        nodes: Vec<String>,
    },
    /// Start a disk fault on the nodes' data dirs.
    StartDisk {
        /// Target nodes.
        nodes: Vec<String>,
        /// The fault.
        fault: DiskFault,
    },
    /// Clear disk faults.
    StopDisk {
        /// Target nodes.
        nodes: Vec<String>,
    },
    /// Make one subscribed consumer of the workload a zombie: it stops polling for `stall_ms`
    /// (past its session), then commits its old positions as its old generation. Applied
    /// through the nemesis's [`crate::nemesis::ClientFaults`], not on a node; it ends itself.
    StallConsumer {
        /// How long the consumer stops polling, in milliseconds.
        stall_ms: u64,
    },
    /// Stop the node's service, corrupt a file in its data dir, start it again.
    CorruptFile {
        /// Target node.
        node: String,
        /// The fault.
        fault: FileFault,
    },
}

impl Action {
    /// The action with every role placeholder replaced by the nodes `resolve` names for it
    /// (one for a leader or the controller, several for followers); an unresolvable role, or a
    /// role that must name one node and names several, is an error naming it.
    pub fn resolve_roles(
        &self,
        mut resolve: impl FnMut(&str) -> Option<Vec<String>>,
    ) -> Result<Action, NemesisError> {
        let mut many = |name: &String| -> Result<Vec<String>, NemesisError> {
            if !is_role(name) {
                return Ok(vec![name.clone()]);
            }
            match resolve(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(NemesisError::Invalid(format!(
                    "could not find which node is {name} (no broker answered metadata, or the role is vacant)"
                ))),
            }
        };
        let single = |name: &str, v: Vec<String>| -> Result<String, NemesisError> {
            match v.as_slice() {
                [n] => Ok(n.clone()),
                _ => Err(NemesisError::Invalid(format!(
                    "{name} names {} nodes where one is needed",
                    v.len()
                ))),
            }
        };
        let mut a = self.clone();
        match &mut a {
            Action::StartPartition {
                topology: Topology::IsolateNode { node } | Topology::CutPort { node, .. },
                ..
            }
            | Action::CorruptFile { node, .. } => *node = single(node, many(node)?)?,
            Action::StartPacketLoss { nodes, .. }
            | Action::StartLatency { nodes, .. }
            | Action::Kill { nodes, .. }
            | Action::Stop { nodes }
            | Action::Start { nodes }
            | Action::Pause { nodes }
            | Action::Resume { nodes }
            | Action::BumpClock { nodes, .. }
            | Action::StrobeClock { nodes, .. }
            | Action::ResetClock { nodes }
            | Action::StartDisk { nodes, .. }
            | Action::StopDisk { nodes } => {
                let mut resolved = Vec::new();
                for n in nodes.iter() {
                    resolved.extend(many(n)?);
                }
                resolved.sort();
                resolved.dedup();
                *nodes = resolved;
            }
            _ => {}
        }
        Ok(a)
    }
}

/// An action at an offset from the start of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledAction {
    /// When, from the start of the run.
    pub at_ms: u64,
    /// What.
    pub action: Action,
}

/// A seeded fault schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The seed it was generated from.
    pub seed: u64,
    /// The actions during the run, in time order.
    pub actions: Vec<ScheduledAction>,
    /// The final heal phase, in order.
    pub final_heal: Vec<Action>,
}

/// The final heal, in the fixed order: partitions, packet rules, clocks, disks, resume, restart.
pub fn final_heal(nodes: &[String]) -> Vec<Action> {
    let all = nodes.to_vec();
    vec![
        Action::StopPartition,
        Action::StopPacketLoss,
        Action::ResetClock { nodes: all.clone() },
        Action::StopDisk { nodes: all.clone() },
        Action::Resume { nodes: all.clone() },
        Action::Start { nodes: all },
    ]
}

/// Facts about the deployment a schedule needs beyond its node names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// The services' data port (Kafka's listener), which a replication cut drops.
    pub data_port: u16,
    /// How long a zombie consumer stops polling (longer than the consumers' session timeout).
    pub consumer_stall_ms: u64,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            data_port: 9092,
            consumer_stall_ms: 6000,
        }
    }
}

impl Schedule {
    /// Generates a schedule over `nodes` for `kinds` lasting `duration`, with fault start/stop
    /// events separated by random gaps around `interval` (between half and 1.5 times it),
    /// with the default [`ScheduleOptions`].
    pub fn generate(
        seed: u64,
        nodes: &[String],
        kinds: &[FaultKind],
        duration: Duration,
        interval: Duration,
    ) -> Result<Schedule, NemesisError> {
        Schedule::generate_with(
            seed,
            nodes,
            kinds,
            duration,
            interval,
            ScheduleOptions::default(),
        )
    }

    /// [`Schedule::generate`] with explicit deployment facts.
    pub fn generate_with(
        seed: u64,
        nodes: &[String],
        kinds: &[FaultKind],
        duration: Duration,
        interval: Duration,
        options: ScheduleOptions,
    ) -> Result<Schedule, NemesisError> {
        if nodes.is_empty() {
            return Err(NemesisError::Invalid(
                "a schedule needs at least one node".into(),
            ));
        }
        if interval.is_zero() {
            return Err(NemesisError::Invalid(
                "the nemesis interval must be above zero".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut actions = Vec::new();
        let total = duration.as_millis() as u64;
        let iv = interval.as_millis().max(2) as u64;
        let gap = |rng: &mut ChaCha8Rng| rng.random_range(iv / 2..=iv + iv / 2).max(1);
        let mut t = gap(&mut rng);
        while !kinds.is_empty() && t < total {
            let Some(kind) = kinds.choose(&mut rng).copied() else {
                break;
            };
            let (starts, stop) = steps(kind, nodes, iv, options, &mut rng)?;
            let mut last = t;
            for (after_ms, action) in starts {
                last = t + after_ms;
                actions.push(ScheduledAction {
                    at_ms: last,
                    action,
                });
            }
            t = last + gap(&mut rng);
            if let Some(stop) = stop {
                actions.push(ScheduledAction {
                    at_ms: t.min(total),
                    action: stop,
                });
                t += gap(&mut rng);
            }
        }
        Ok(Schedule {
            seed,
            actions,
            final_heal: final_heal(nodes),
        })
    }
}

/// Random targets for a process, clock or disk fault: one, a minority, a majority, all, or
/// (as role placeholders resolved when the action is due) the partition leader or the
/// controller.
fn random_targets(nodes: &[String], rng: &mut ChaCha8Rng) -> Result<Vec<String>, NemesisError> {
    match rng.random_range(0..6) {
        4 => return Ok(vec![LEADER.to_string()]),
        5 => return Ok(vec![CONTROLLER.to_string()]),
        _ => {}
    }
    let choice = [
        Targets::One,
        Targets::Minority,
        Targets::Majority,
        Targets::All,
    ];
    let t = choice.choose(rng).cloned().unwrap_or(Targets::One);
    t.resolve(nodes, rng)
}

/// The nodes a stop action undoes: the start's own targets, or every node when the start named
/// a role (the node it resolved to is only known when it ran; undoing on all is harmless).
fn undo_targets(targets: &[String], nodes: &[String]) -> Vec<String> {
    if targets.iter().any(|t| is_role(t)) {
        nodes.to_vec()
    } else {
        targets.to_vec()
    }
}

/// Pause between the steps of a scripted fault.
const STEP_MS: u64 = 300;

/// The start actions of a fault (each with its delay in ms from the first) and its stop action.
type Steps = (Vec<(u64, Action)>, Option<Action>);

/// The [`Steps`] of one fault of `kind`.
fn steps(
    kind: FaultKind,
    nodes: &[String],
    interval_ms: u64,
    options: ScheduleOptions,
    rng: &mut ChaCha8Rng,
) -> Result<Steps, NemesisError> {
    match kind {
        FaultKind::ReplicationCutFailover | FaultKind::CoordinatorCutFailover => {
            // The cut lasts one interval: long enough for the leader to shrink its ISR (with
            // `replica.lag.time.max.ms` below it) and to take writes alone if it wrongly may.
            let target = if kind == FaultKind::CoordinatorCutFailover {
                COORDINATOR.to_string()
            } else {
                pinned(LEADER, rng.random_range(0..1024u32))
            };
            Ok((
                vec![
                    (
                        0,
                        Action::StartPartition {
                            topology: Topology::CutPort {
                                node: target.clone(),
                                port: options.data_port,
                            },
                            seed: None,
                        },
                    ),
                    (
                        interval_ms,
                        Action::StartPartition {
                            topology: Topology::IsolateNode { node: target },
                            seed: None,
                        },
                    ),
                ],
                Some(Action::StopPartition),
            ))
        }
        // The isolation lasts one whole interval (longer than the controller's session
        // timeout, so an in-sync follower is elected while the old leader still takes
        // writes), not a random gap that may heal it first.
        FaultKind::LeaderIsolation => Ok((
            vec![
                (
                    0,
                    Action::StartPartition {
                        topology: Topology::IsolateNode {
                            node: pinned(LEADER, rng.random_range(0..1024u32)),
                        },
                        seed: None,
                    },
                ),
                (interval_ms, Action::StopPartition),
            ],
            None,
        )),
        FaultKind::IsrShrinkCrash => {
            // One partition for every step: its leader's replication cut one interval (longer
            // than `replica.lag.time.max.ms`, so the controller, still reached on its own port,
            // shrinks the ISR to the leader, which then acknowledges alone where min.insync
            // allows), then the leader crashes losing its page cache. Pausing the followers
            // instead would also stop the metadata quorum they host with it.
            let p = rng.random_range(0..1024u32);
            let leader = pinned(LEADER, p);
            Ok((
                vec![
                    (
                        0,
                        Action::StartPartition {
                            topology: Topology::CutPort {
                                node: leader.clone(),
                                port: options.data_port,
                            },
                            seed: None,
                        },
                    ),
                    (
                        interval_ms,
                        Action::Kill {
                            nodes: vec![leader],
                            lose_unfsynced: true,
                        },
                    ),
                    (interval_ms + STEP_MS, Action::StopPartition),
                    // The restart (every node: the crashed leader is only known when it ran)
                    // one interval after the crash, once the controller has fenced it, so the
                    // run goes on writing to the log it comes back with.
                    (
                        2 * interval_ms,
                        Action::Start {
                            nodes: nodes.to_vec(),
                        },
                    ),
                ],
                None,
            ))
        }
        FaultKind::FollowerRestartFailover => {
            // One partition for every step, so the followers killed are the isolated leader's.
            let p = rng.random_range(0..1024u32);
            Ok((
                vec![
                    (
                        0,
                        Action::Kill {
                            nodes: vec![pinned(FOLLOWERS, p)],
                            lose_unfsynced: false,
                        },
                    ),
                    (
                        STEP_MS,
                        Action::StartPartition {
                            topology: Topology::IsolateNode {
                                node: pinned(LEADER, p),
                            },
                            seed: None,
                        },
                    ),
                    (
                        2 * STEP_MS,
                        Action::Start {
                            nodes: nodes.to_vec(),
                        },
                    ),
                ],
                Some(Action::StopPartition),
            ))
        }
        FaultKind::ZombieConsumer => Ok((
            vec![(
                0,
                Action::StallConsumer {
                    stall_ms: options.consumer_stall_ms,
                },
            )],
            None,
        )),
        _ => {
            let (start, stop) = pair(kind, nodes, rng)?;
            Ok((vec![(0, start)], stop))
        }
    }
}

/// A start action and its stop action (None when the start undoes itself).
fn pair(
    kind: FaultKind,
    nodes: &[String],
    rng: &mut ChaCha8Rng,
) -> Result<(Action, Option<Action>), NemesisError> {
    let targets = random_targets(nodes, rng)?;
    let undo = undo_targets(&targets, nodes);
    Ok(match kind {
        FaultKind::Partition => {
            let topologies = [
                Topology::IsolateOne,
                Topology::MajorityMinority,
                Topology::MajoritiesRing,
                Topology::Bridge,
                Topology::CutClients { node: None },
                Topology::IsolateNode {
                    node: LEADER.to_string(),
                },
                Topology::IsolateNode {
                    node: CONTROLLER.to_string(),
                },
            ];
            let topology = topologies
                .choose(rng)
                .cloned()
                .unwrap_or(Topology::IsolateOne);
            (
                Action::StartPartition {
                    topology,
                    seed: Some(rng.random()),
                },
                Some(Action::StopPartition),
            )
        }
        FaultKind::PacketLoss => (
            Action::StartPacketLoss {
                nodes: targets,
                percent: rng.random_range(10..=60),
            },
            Some(Action::StopPacketLoss),
        ),
        FaultKind::Latency => (
            Action::StartLatency {
                nodes: targets.clone(),
                delay_ms: rng.random_range(10..=200),
            },
            None,
        ),
        FaultKind::Kill => {
            let lose = false;
            if rng.random_bool(0.5) {
                (
                    Action::Kill {
                        nodes: targets.clone(),
                        lose_unfsynced: lose,
                    },
                    Some(Action::Start {
                        nodes: undo.clone(),
                    }),
                )
            } else {
                (
                    Action::Stop {
                        nodes: targets.clone(),
                    },
                    Some(Action::Start {
                        nodes: undo.clone(),
                    }),
                )
            }
        }
        FaultKind::Pause => (
            Action::Pause {
                nodes: targets.clone(),
            },
            Some(Action::Resume { nodes: undo }),
        ),
        FaultKind::Clock => {
            // Jepsen-like magnitudes: 2^(4..18) ms, either sign (16 ms to ~4.4 min).
            let mag = 1i64 << rng.random_range(4..18);
            let sign = if rng.random_bool(0.5) { 1 } else { -1 };
            if rng.random_bool(0.5) {
                (
                    Action::BumpClock {
                        nodes: targets.clone(),
                        offset_ms: sign * mag,
                    },
                    Some(Action::ResetClock {
                        nodes: undo.clone(),
                    }),
                )
            } else {
                (
                    Action::StrobeClock {
                        nodes: targets.clone(),
                        delta_ms: sign * mag,
                        period_ms: 1 << rng.random_range(2..10),
                        duration_ms: rng.random_range(1_000..=10_000),
                    },
                    Some(Action::ResetClock {
                        nodes: undo.clone(),
                    }),
                )
            }
        }
        FaultKind::Disk => {
            let fault = match rng.random_range(0..5) {
                0 => DiskFault::Latency {
                    per_op_ms: rng.random_range(1..=50),
                },
                1 => DiskFault::Stall,
                2 => DiskFault::EioWrites,
                3 => DiskFault::EioFsync,
                _ => {
                    // One node's page cache at a time (a role, or one random node): a
                    // correlated loss of unfsynced writes on every replica holding a record
                    // loses it in every Kafka release (durability comes from replication, not
                    // fsync), which would make every acks=all verdict under this fault a
                    // statement about fsync, not about the broker. Correlated loss is a recipe
                    // of its own.
                    let one = if targets.iter().any(|t| is_role(t)) {
                        targets.clone()
                    } else {
                        Targets::One.resolve(nodes, rng)?
                    };
                    let undo = undo_targets(&one, nodes);
                    return Ok((
                        Action::Kill {
                            nodes: one,
                            lose_unfsynced: true,
                        },
                        Some(Action::Start { nodes: undo }),
                    ));
                }
            };
            (
                Action::StartDisk {
                    nodes: targets.clone(),
                    fault,
                },
                Some(Action::StopDisk { nodes: undo }),
            )
        }
        FaultKind::FollowerRestartFailover
        | FaultKind::ReplicationCutFailover
        | FaultKind::CoordinatorCutFailover
        | FaultKind::LeaderIsolation
        | FaultKind::IsrShrinkCrash
        | FaultKind::ZombieConsumer => {
            return Err(NemesisError::Invalid(
                "a scripted fault has no single start/stop pair".into(),
            ))
        }
        FaultKind::FileCorruption => {
            let node = targets
                .first()
                .cloned()
                .or_else(|| nodes.first().cloned())
                .unwrap_or_default();
            let fault = if rng.random_bool(0.5) {
                FileFault::TruncateTail {
                    bytes: rng.random_range(1..=4096),
                    seed: rng.random(),
                }
            } else {
                FileFault::BitFlip {
                    flips: rng.random_range(1..=16),
                    seed: rng.random(),
                }
            };
            (Action::CorruptFile { node, fault }, None)
        }
    })
}
