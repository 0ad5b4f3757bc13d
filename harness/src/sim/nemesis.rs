//! The simulation's nemesis: a schedule of faults drawn from the seed before the run
//! (partitions into two sides, kills that lose unfsynced writes and restarts, pauses and
//! resumes, clock jumps and resets, disks that stall, slow down or fail with EIO and heal),
//! one fault at a time
//! and every enabled kind in turn (in a seeded order each round), each undone before the next
//! and all undone by the end of the main phase; the world applies each at its virtual time and
//! records it in the history with the names real runs use.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::world::World;
use checkers::HistoryWriter;

/// A kind of fault the simulation can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum SimFault {
    /// Cut the brokers into two sides.
    Partition,
    /// Kill a broker (its unfsynced writes are lost) and restart it later.
    Kill,
    /// Pause a broker (SIGSTOP) and resume it later.
    Pause,
    /// Jump a broker's wall clock and reset it later.
    Clock,
    /// A broker's disk fault, drawn as the real nemesis's (`nemesis::disk::DiskFault`): 1-50
    /// ms per operation, a stall, EIO on segment appends or EIO on segment fsyncs; then healed.
    Disk,
    /// Extra latency (50-500 ms per write) between two brokers, then healed.
    Latency,
    /// Packet loss (10-50%, as TCP retransmission delays) between two brokers, then healed.
    Loss,
    /// A zombie consumer (`zombie-consumer`): a subscribed worker stops polling for real
    /// runs' stall (6 s, twice the session timeout), then commits its old positions as the
    /// member it was. Needs `--subscribe`; it ends by itself (no stop event).
    Zombie,
}

impl SimFault {
    /// The real nemesis's fault kind it stands for (recorded in `test.json`).
    pub fn kind(self) -> crate::spec::FaultKind {
        use crate::spec::FaultKind as K;
        match self {
            SimFault::Partition => K::Partition,
            SimFault::Kill => K::Kill,
            SimFault::Pause => K::Pause,
            SimFault::Clock => K::Clock,
            SimFault::Disk => K::Disk,
            SimFault::Latency => K::Latency,
            SimFault::Loss => K::PacketLoss,
            SimFault::Zombie => K::ZombieConsumer,
        }
    }
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Cut between the two sides.
    StartPartition(Vec<u32>, Vec<u32>),
    /// Heal every cut.
    StopPartition,
    /// Kill a node (its unfsynced writes are lost).
    Kill(u32),
    /// Kill a node keeping its page cache (kill -9 of the process only: nothing is lost).
    Crash(u32),
    /// Cut one node from every other broker (clients still reach it).
    Isolate(u32),
    /// Cut one node from every other broker and from the clients (the real nemesis's
    /// isolate-node plus cut-clients).
    IsolateFromAll(u32),
    /// Cut one node from the clients only (the real nemesis's cut-clients).
    CutClients(u32),
    /// Start every node that is not running.
    StartAll,
    /// Extra latency and packet loss on the link between nodes `a` and `b`, both directions.
    Degrade {
        /// One end of the link.
        a: u32,
        /// The other end.
        b: u32,
        /// Extra one-way latency in ms, drawn from this inclusive range per write ((0, 0):
        /// none).
        extra_latency_ms: (u64, u64),
        /// Percent of transmissions lost.
        loss_pct: u32,
    },
    /// Heal every degraded link (recorded as the end of a latency fault).
    StopDegrade,
    /// Heal every degraded link (recorded as the end of a packet-loss fault).
    StopLoss,
    /// Start a killed node.
    Start(u32),
    /// Pause a node.
    Pause(u32),
    /// Resume a node.
    Resume(u32),
    /// Offset a node's clock by this many ms.
    BumpClock(u32, i64),
    /// Reset a node's clock.
    ResetClock(u32),
    /// Start a disk fault on a node (latency, stall, EIO on appends or on fsyncs).
    DiskFail(u32, nemesis::disk::DiskFault),
    /// Heal a node's disk (stalled work goes on).
    DiskHeal(u32),
    /// Ask for a zombie consumer stalling this many ms (the next subscribed worker to finish
    /// an ok poll takes it).
    StallConsumer(u64),
}

/// How long a zombie stalls: real runs' default (`nemesis::schedule::ScheduleOptions`).
pub fn consumer_stall_ms() -> u64 {
    nemesis::schedule::ScheduleOptions::default().consumer_stall_ms
}

/// An action at a virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Virtual nanoseconds.
    pub at_ns: u64,
    /// What.
    pub action: Action,
}

/// The fault schedule between `start` and `end` over nodes `1..=nodes`: a fault every
/// `interval` on average (uniform in half to one and a half times), each lasting 2 to 8 s (a
/// zombie: its stall). Zombies only when the consumers are `subscribed` (the kind is left out
/// otherwise).
pub fn schedule(
    seed: u64,
    kinds: &BTreeSet<SimFault>,
    nodes: u32,
    start: Duration,
    end: Duration,
    interval: Duration,
    subscribed: bool,
) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let kinds: Vec<SimFault> = kinds
        .iter()
        .copied()
        .filter(|k| subscribed || *k != SimFault::Zombie)
        .collect();
    let mut out = Vec::new();
    if kinds.is_empty() || nodes == 0 {
        return out;
    }
    let ms = |d: Duration| d.as_millis() as u64;
    let (mut t, end) = (ms(start), ms(end));
    let iv = ms(interval).max(2);
    let mut bag: Vec<SimFault> = Vec::new();
    while t + 1_000 < end {
        // Every kind in turn, in a seeded order per round, so a run long enough for N faults
        // has each kind once per N of them.
        if bag.is_empty() {
            bag = kinds.clone();
            bag.shuffle(&mut rng);
        }
        let Some(kind) = bag.pop() else { break };
        let mut dur = rng.random_range(2_000..=8_000).min(end - t);
        let node = rng.random_range(1..=nodes);
        let (on, off) = match kind {
            SimFault::Zombie => {
                // It ends by itself; the next fault waits for the stall to be over.
                dur = consumer_stall_ms().min(end - t);
                (Action::StallConsumer(consumer_stall_ms()), None)
            }
            SimFault::Partition => {
                let mut all: Vec<u32> = (1..=nodes).collect();
                all.shuffle(&mut rng);
                let k = rng.random_range(1..nodes.max(2)) as usize;
                let (a, b) = all.split_at(k.min(all.len()));
                let (mut a, mut b) = (a.to_vec(), b.to_vec());
                a.sort_unstable();
                b.sort_unstable();
                (Action::StartPartition(a, b), Some(Action::StopPartition))
            }
            SimFault::Kill => (Action::Kill(node), Some(Action::Start(node))),
            SimFault::Pause => (Action::Pause(node), Some(Action::Resume(node))),
            SimFault::Clock => {
                let jump = rng.random_range(-60_000i64..=60_000);
                (
                    Action::BumpClock(node, jump),
                    Some(Action::ResetClock(node)),
                )
            }
            SimFault::Disk => {
                // The real schedule's draw (nemesis::schedule, FaultKind::Disk) without its
                // fifth kind, lost unfsynced writes, which the simulation's kills always are.
                use nemesis::disk::DiskFault;
                let fault = match rng.random_range(0..4) {
                    0 => DiskFault::Latency {
                        per_op_ms: rng.random_range(1..=50),
                    },
                    1 => DiskFault::Stall,
                    2 => DiskFault::EioWrites,
                    _ => DiskFault::EioFsync,
                };
                (Action::DiskFail(node, fault), Some(Action::DiskHeal(node)))
            }
            SimFault::Latency | SimFault::Loss => {
                let other = 1 + (node + rng.random_range(0..nodes.max(2) - 1)) % nodes;
                let on = if kind == SimFault::Latency {
                    let lo = rng.random_range(50..=200);
                    Action::Degrade {
                        a: node,
                        b: other,
                        extra_latency_ms: (lo, lo + rng.random_range(0..=300)),
                        loss_pct: 0,
                    }
                } else {
                    Action::Degrade {
                        a: node,
                        b: other,
                        extra_latency_ms: (0, 0),
                        loss_pct: rng.random_range(10..=50),
                    }
                };
                let off = if kind == SimFault::Latency {
                    Action::StopDegrade
                } else {
                    Action::StopLoss
                };
                (on, Some(off))
            }
        };
        out.push(Event {
            at_ns: t * 1_000_000,
            action: on,
        });
        if let Some(off) = off {
            out.push(Event {
                at_ns: (t + dur) * 1_000_000,
                action: off,
            });
        }
        t += dur + rng.random_range(iv / 2..=iv + iv / 2);
    }
    out
}

/// Applies `action` to the world and records it.
pub fn apply(world: &mut World, action: &Action, history: &HistoryWriter) -> std::io::Result<()> {
    let name = |id: &u32| format!("n{id}");
    match action {
        Action::StartPartition(a, b) => {
            world.net.cut(a, b);
            let comps: Vec<Vec<String>> =
                vec![a.iter().map(name).collect(), b.iter().map(name).collect()];
            history.nemesis(
                "start-partition",
                json!({"topology": "halves", "components": comps, "clients-cut": []}),
            )?;
        }
        Action::StopPartition => {
            world.net.heal();
            history.nemesis("stop-partition", json!({"healed": true}))?;
        }
        Action::Kill(id) => {
            // A whole-host crash: the page cache and the host's send queues are lost.
            let lost = world.kill(*id);
            let in_flight = world.net.power_loss(*id);
            let lost: Vec<serde_json::Value> = lost.iter().map(|(f, b)| json!([f, b])).collect();
            history.nemesis(
                "kill",
                json!({"nodes": [name(id)], "signal": "KILL", "lost-unfsynced": lost,
                    "lost-in-flight": in_flight}),
            )?;
        }
        Action::Crash(id) => {
            if let Some(n) = world.node(*id) {
                n.kill();
            }
            history.nemesis(
                "kill",
                json!({"nodes": [name(id)], "signal": "KILL", "page-cache": "kept"}),
            )?;
        }
        Action::Isolate(id) | Action::IsolateFromAll(id) => {
            let others: Vec<u32> = world
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|n| n != id)
                .collect();
            world.net.cut(&[*id], &others);
            let clients_cut: Vec<String> = if matches!(action, Action::IsolateFromAll(_)) {
                // Node 0 is every client.
                world.net.cut(&[*id], &[0]);
                vec![name(id)]
            } else {
                Vec::new()
            };
            let comps: Vec<Vec<String>> = vec![vec![name(id)], others.iter().map(name).collect()];
            history.nemesis(
                "start-partition",
                json!({"topology": "isolate-node", "components": comps,
                    "clients-cut": clients_cut}),
            )?;
        }
        Action::CutClients(id) => {
            // Node 0 is every client.
            world.net.cut(&[*id], &[0]);
            history.nemesis(
                "start-partition",
                json!({"topology": "cut-clients", "components": [], "clients-cut": [name(id)]}),
            )?;
        }
        Action::StartAll => {
            let mut started = Vec::new();
            for n in world.nodes.iter_mut() {
                if !n.alive() && n.start().is_ok() {
                    started.push(name(&n.id));
                }
            }
            history.nemesis("start", json!({"nodes": started}))?;
        }
        Action::Degrade {
            a,
            b,
            extra_latency_ms: (lo, hi),
            loss_pct,
        } => {
            world.net.set_link_fault(
                *a,
                *b,
                super::net::LinkFault {
                    loss: f64::from(*loss_pct) / 100.0,
                    extra_latency_ms: (*lo, *hi),
                },
            );
            let f = if *hi > 0 {
                "start-latency"
            } else {
                "start-packet-loss"
            };
            history.nemesis(
                f,
                json!({"nodes": [name(a), name(b)], "extra-latency-ms": [lo, hi],
                       "percent": loss_pct}),
            )?;
        }
        Action::StopDegrade => {
            world.net.clear_link_faults();
            history.nemesis("stop-latency", json!({"healed": true}))?;
        }
        Action::StopLoss => {
            world.net.clear_link_faults();
            history.nemesis("stop-packet-loss", json!({"healed": true}))?;
        }
        Action::Start(id) => {
            let started = match world.node(*id) {
                Some(n) if !n.alive() => n.start().is_ok(),
                _ => false,
            };
            let nodes: Vec<String> = if started { vec![name(id)] } else { Vec::new() };
            history.nemesis("start", json!({"nodes": nodes}))?;
        }
        Action::Pause(id) => {
            if let Some(n) = world.node(*id) {
                n.paused = n.alive();
            }
            history.nemesis("pause", json!({"nodes": [name(id)], "signal": "STOP"}))?;
        }
        Action::Resume(id) => {
            if let Some(n) = world.node(*id) {
                n.paused = false;
            }
            history.nemesis("resume", json!({"nodes": [name(id)], "signal": "CONT"}))?;
        }
        Action::BumpClock(id, ms) => {
            world.set_clock_offset(*id, *ms);
            history.nemesis("bump-clock", json!({"nodes": [name(id)], "offset-ms": ms}))?;
        }
        Action::ResetClock(id) => {
            world.set_clock_offset(*id, 0);
            history.nemesis("reset-clock", json!({"nodes": [name(id)]}))?;
        }
        Action::DiskFail(id, fault) => {
            if let Some(dir) = world.node(*id).map(|n| n.dir.clone()) {
                world.disk.start(*id, &dir, fault.clone());
            }
            history.nemesis("start-disk", json!({"nodes": [name(id)], "fault": fault}))?;
        }
        Action::DiskHeal(id) => {
            world.disk.heal(*id);
            history.nemesis("stop-disk", json!({"nodes": [name(id)]}))?;
        }
        Action::StallConsumer(ms) => {
            // Recorded as real runs' nemesis records it (`stall_ms`, `requests_waiting`).
            use nemesis::nemesis::ClientFaults;
            let faults = crate::workload::WorkloadFaults(world.stalls.clone());
            let value = faults
                .stall_consumer(Duration::from_millis(*ms))
                .map_err(std::io::Error::other)?;
            history.nemesis("stall-consumer", value)?;
        }
    }
    Ok(())
}

/// Undoes every fault still in force (the end of the main phase).
pub fn heal_all(world: &mut World, history: &HistoryWriter) -> std::io::Result<()> {
    apply(world, &Action::StopPartition, history)?;
    apply(world, &Action::StopDegrade, history)?;
    let ids: Vec<u32> = world.nodes.iter().map(|n| n.id).collect();
    for id in ids {
        let (dead, paused) = match world.node(id) {
            Some(n) => (!n.alive(), n.paused),
            None => continue,
        };
        if paused {
            apply(world, &Action::Resume(id), history)?;
        }
        if dead {
            apply(world, &Action::Start(id), history)?;
        }
        world.set_clock_offset(id, 0);
        // Stalled work goes on (every node's disk fault is undone, EIO, stall or latency).
        world.disk.heal(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_seeded_and_undo_each_fault_before_the_end() {
        let kinds: BTreeSet<SimFault> = [
            SimFault::Partition,
            SimFault::Kill,
            SimFault::Pause,
            SimFault::Clock,
        ]
        .into_iter()
        .collect();
        let s = |seed| {
            schedule(
                seed,
                &kinds,
                3,
                Duration::from_secs(5),
                Duration::from_secs(60),
                Duration::from_secs(5),
                true,
            )
        };
        assert_eq!(s(7), s(7));
        assert_ne!(s(7), s(8));
        let events = s(7);
        assert!(events.len() >= 4, "{events:?}");
        for pair in events.chunks(2) {
            assert!(pair[0].at_ns <= pair[1].at_ns);
            assert!(pair[1].at_ns <= 60_000_000_000);
        }
    }

    #[test]
    fn zombies_are_drawn_only_for_subscribed_consumers() {
        let s = |kinds: &[SimFault], subscribed| {
            schedule(
                3,
                &kinds.iter().copied().collect(),
                3,
                Duration::from_secs(5),
                Duration::from_secs(60),
                Duration::from_secs(5),
                subscribed,
            )
        };
        let stalls = |events: &[Event]| {
            events
                .iter()
                .filter(|e| matches!(e.action, Action::StallConsumer(_)))
                .count()
        };
        let both = [SimFault::Kill, SimFault::Zombie];
        let with = s(&both, true);
        assert!(stalls(&with) >= 2, "{with:?}");
        // Real runs' stall, and no stop event of its own.
        assert!(with
            .iter()
            .all(|e| !matches!(e.action, Action::StallConsumer(ms) if ms != 6_000)));
        let without = s(&both, false);
        assert_eq!(stalls(&without), 0, "{without:?}");
        assert!(without.iter().any(|e| matches!(e.action, Action::Kill(_))));
        // Without subscribers the schedule is that of the other kinds alone.
        assert_eq!(without, s(&[SimFault::Kill], false));
        // Events stay in time order (the world applies them in order).
        assert!(with.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    }
}

/// A scripted fault sequence aimed at one partition (or its leader and followers), its targets
/// resolved from live metadata when each step is due, as `harness reproduce`'s scripted
/// nemesis kinds do on real clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aimed {
    /// Kill -9 the leader's followers (page caches kept), isolate the leader, restart the
    /// followers (`follower-restart-failover`: hw-truncation).
    FollowerRestartFailover,
    /// Cut the leader from its followers only (it keeps its controller session and shrinks the
    /// ISR to itself), one interval later isolate it (`replication-cut-failover`).
    ReplicationCutFailover,
    /// The replication cut aimed at the group coordinator: the leader of the run group's
    /// `__consumer_offsets` partition (`coordinator-cut-failover`).
    CoordinatorCutFailover,
    /// KAFKA-7128's window (`isr-join-below-epoch-start`): a follower C cut off until the ISR
    /// is {leader A, B}; then B crashes (page cache kept) and restarts with its checkpointed,
    /// stale high watermark while A is killed, so B leads with a high watermark at or below
    /// C's log end and below its epoch's start; C returns over a slow link, and once C is in
    /// the ISR B is killed before C's fetch response arrives; A restarts, the controller
    /// elects C.
    LaggingHwRejoin,
    /// Cut the leader from every other broker (its clients still reach it) for one interval,
    /// so an in-sync follower is elected while it still takes writes (`leader-isolation`: the
    /// matrix's leader-failover recipe).
    LeaderIsolation,
    /// Cut the leader from its followers only (it keeps its controller session and shrinks the
    /// ISR to itself, then acknowledges alone where min.insync allows) for one interval, then
    /// kill it losing its unfsynced writes, heal, and restart it one interval later
    /// (`isr-shrink-crash`: the matrix's isr-shrink-crash and last-replica-standing recipes).
    IsrShrinkCrash,
}

impl Aimed {
    /// The aimed fault of a scripted `FaultKind` of the real nemesis, if the simulation has it.
    pub fn of(kind: crate::spec::FaultKind) -> Option<Aimed> {
        use crate::spec::FaultKind as K;
        match kind {
            K::FollowerRestartFailover => Some(Aimed::FollowerRestartFailover),
            K::ReplicationCutFailover => Some(Aimed::ReplicationCutFailover),
            K::CoordinatorCutFailover => Some(Aimed::CoordinatorCutFailover),
            K::LeaderIsolation => Some(Aimed::LeaderIsolation),
            K::IsrShrinkCrash => Some(Aimed::IsrShrinkCrash),
            _ => None,
        }
    }

    /// Its name in `sim.json` and the history.
    pub fn name(self) -> &'static str {
        match self {
            Aimed::FollowerRestartFailover => "follower-restart-failover",
            Aimed::ReplicationCutFailover => "replication-cut-failover",
            Aimed::CoordinatorCutFailover => "coordinator-cut-failover",
            Aimed::LaggingHwRejoin => "lagging-hw-rejoin",
            Aimed::LeaderIsolation => "leader-isolation",
            Aimed::IsrShrinkCrash => "isr-shrink-crash",
        }
    }
}

/// Actions the aimed faults' director queues for the world to apply between ticks.
pub type FaultQueue = Arc<Mutex<VecDeque<Action>>>;

/// What the director needs.
#[derive(Debug, Clone)]
pub struct DirectorConfig {
    /// The aimed fault.
    pub kind: Aimed,
    /// A client configuration (the director reads metadata as a client).
    pub client: client::Config,
    /// The workload topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: u32,
    /// The seed of the director's choices.
    pub seed: u64,
    /// When the first fault starts.
    pub start: Duration,
    /// When the main phase ends (no fault starts after it, every step is before it).
    pub end: Duration,
    /// Seconds between faults (a scripted fault's long steps are this long).
    pub interval: Duration,
    /// The Raft voters (nodes `1..=voters`).
    pub voters: u32,
    /// The run's consumer group (whose coordinator `coordinator-cut-failover` aims at).
    pub group: String,
}

fn since_start() -> Duration {
    Duration::from_nanos(super::clock::now_ns())
}

/// The leader and the other replicas of partition `p`, from fresh metadata.
async fn roles(admin: &client::Admin, topic: &str, p: u32) -> Option<(u32, Vec<u32>, Vec<u32>)> {
    let info = admin.describe_topic(topic).await.ok()?;
    let part = info.partitions.iter().find(|x| x.partition == p as i32)?;
    let leader = u32::try_from(part.leader).ok().filter(|l| *l > 0)?;
    let others = part
        .replicas
        .iter()
        .filter_map(|r| u32::try_from(*r).ok())
        .filter(|r| *r != leader)
        .collect();
    let isr = part
        .isr
        .iter()
        .filter_map(|r| u32::try_from(*r).ok())
        .collect();
    Some((leader, others, isr))
}

/// Runs the aimed faults on the client side's runtime: one every `interval` on average, each
/// a scripted sequence on a seeded partition, queued for the world to apply.
pub async fn direct(cfg: DirectorConfig, queue: FaultQueue) {
    let Ok(admin) = client::Admin::new(cfg.client.clone()) else {
        tracing::warn!("the aimed nemesis could not make its admin client");
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0061_696d_6564);
    let push = |a: Action| queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(a);
    let step = Duration::from_millis(300);
    let iv = cfg.interval;
    // The sequence's span (for the bug recipes' kinds, the longest one's), so every fault
    // ends before the main phase does.
    let span = match cfg.kind {
        Aimed::LeaderIsolation => iv,
        Aimed::IsrShrinkCrash => 2 * iv + step,
        _ => 3 * iv + Duration::from_secs(10),
    };
    if cfg.start > since_start() {
        tokio::time::sleep(cfg.start - since_start()).await;
    }
    while since_start() + span < cfg.end {
        let first = rng.random_range(0..cfg.partitions.max(1));
        let controller = match admin.describe_cluster().await {
            Ok(c) => u32::try_from(c.controller).unwrap_or(0),
            Err(_) => 0,
        };
        let mut chosen = None;
        // The coordinator's partition of `__consumer_offsets` (Kafka's abs(hashCode) % count),
        // else every workload partition from a seeded one.
        let (topic, candidates): (&str, Vec<u32>) = if cfg.kind == Aimed::CoordinatorCutFailover {
            let count = match admin
                .describe_topic(broker::server::groups::OFFSETS_TOPIC)
                .await
            {
                Ok(t) => t.partitions.len() as i32,
                Err(_) => 0,
            };
            let p = broker::server::internal::partition_for(&cfg.group, count);
            (
                broker::server::groups::OFFSETS_TOPIC,
                if count > 0 {
                    vec![p as u32]
                } else {
                    Vec::new()
                },
            )
        } else {
            let n = cfg.partitions.max(1);
            (&cfg.topic, (0..n).map(|i| (first + i) % n).collect())
        };
        for p in candidates {
            let Some((leader, others, isr)) = roles(&admin, topic, p).await else {
                continue;
            };
            // The lagging-HW window kills the leader and crashes a follower at once, then
            // slows the link between the two followers: the metadata quorum must keep two
            // voters linked normally, so not every replica may be a voter.
            let all_voters = std::iter::once(leader)
                .chain(others.iter().copied())
                .filter(|r| *r <= cfg.voters)
                .count() as u32
                >= cfg.voters;
            if cfg.kind == Aimed::LaggingHwRejoin && (all_voters || isr.len() < 3) {
                continue;
            }
            // A replication cut must leave the leader its controller session: the active
            // controller is not one of the followers it is cut from (and, when the leader is
            // the controller, a voter outside the partition keeps its quorum).
            if matches!(
                cfg.kind,
                Aimed::ReplicationCutFailover
                    | Aimed::CoordinatorCutFailover
                    | Aimed::IsrShrinkCrash
            ) {
                let spare_voter = (1..=cfg.voters).any(|v| v != leader && !others.contains(&v));
                if controller == 0
                    || others.contains(&controller)
                    || (controller == leader && !spare_voter)
                    || isr.len() < 2
                {
                    continue;
                }
            }
            chosen = Some((p, leader, others));
            break;
        }
        let Some((p, leader, others)) = chosen else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        tracing::info!(fault = cfg.kind.name(), partition = p, leader, followers = ?others,
            "aimed fault");
        match cfg.kind {
            Aimed::FollowerRestartFailover => {
                for f in &others {
                    push(Action::Crash(*f));
                }
                tokio::time::sleep(step).await;
                push(Action::Isolate(leader));
                tokio::time::sleep(step).await;
                push(Action::StartAll);
                tokio::time::sleep(iv).await;
                push(Action::StopPartition);
            }
            Aimed::ReplicationCutFailover | Aimed::CoordinatorCutFailover => {
                push(Action::StartPartition(vec![leader], others.clone()));
                tokio::time::sleep(iv).await;
                // An isolated coordinator that clients still reach serves its own (stale)
                // committed offsets, as Kafka's would (OffsetFetch is answered from the
                // coordinator's cache, with no check that it still leads): reads the checker
                // reports as lost commits whatever the acks. The coordinator's isolation cuts
                // the clients too, so only the bug's commits can be lost.
                let coordinator = cfg.kind == Aimed::CoordinatorCutFailover;
                push(if coordinator {
                    Action::IsolateFromAll(leader)
                } else {
                    Action::Isolate(leader)
                });
                tokio::time::sleep(iv).await;
                push(Action::StopPartition);
                if coordinator {
                    // It rejoins the brokers first and learns it no longer leads before the
                    // clients reach it again (Kafka's deposed coordinator answers from its
                    // cache until it learns; the checker cannot tell that from a lost commit).
                    push(Action::CutClients(leader));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    push(Action::StopPartition);
                }
            }
            Aimed::LeaderIsolation => {
                push(Action::Isolate(leader));
                tokio::time::sleep(iv).await;
                push(Action::StopPartition);
            }
            Aimed::IsrShrinkCrash => {
                push(Action::StartPartition(vec![leader], others.clone()));
                tokio::time::sleep(iv).await;
                // Its host crashes: what it acknowledged alone and had not fsynced is gone.
                push(Action::Kill(leader));
                tokio::time::sleep(step).await;
                push(Action::StopPartition);
                // Restarted once the controller has fenced it, the only electable replica
                // when the ISR was itself.
                tokio::time::sleep(iv).await;
                push(Action::StartAll);
            }
            Aimed::LaggingHwRejoin => {
                let [b, c] = others[..] else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let a = leader;
                // C is cut off until the ISR is {A, B} and A acknowledges past C's log end.
                push(Action::Isolate(c));
                tokio::time::sleep(iv).await;
                // B restarts with its checkpointed high watermark as A dies.
                push(Action::Crash(b));
                push(Action::Crash(a));
                tokio::time::sleep(step).await;
                push(Action::Start(b));
                push(Action::StopPartition);
                push(Action::Degrade {
                    a: b,
                    b: c,
                    extra_latency_ms: (1_500, 2_000),
                    loss_pct: 0,
                });
                // Once C is in B's ISR, B dies before C's fetch response arrives.
                let watch_end = since_start() + 2 * iv + Duration::from_secs(5);
                while since_start() < watch_end {
                    if let Some((l, _, isr)) = roles(&admin, &cfg.topic, p).await {
                        if l == b && isr.contains(&c) {
                            tracing::info!(partition = p, "aimed fault: C rejoined B's ISR");
                            break;
                        }
                    }
                    // The leader shrinks a member that is not caught up at its next ISR check
                    // (every replica.lag.time.max.ms / 2, as Kafka's isr-expiration task).
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // B's host crashes: its fetch response to C, still queued behind the slow
                // link, is lost with it (SimNet::power_loss), as are its unfsynced writes.
                push(Action::Kill(b));
                tokio::time::sleep(step).await;
                push(Action::Start(a));
                tokio::time::sleep(iv).await;
                push(Action::StopDegrade);
                push(Action::StartAll);
            }
        }
        let gap = iv.as_millis() as u64;
        let gap = rng.random_range(gap / 2..=gap + gap / 2);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
}
