//! The simulation's nemesis: a schedule of faults drawn from the seed before the run
//! (partitions into two sides, kills that lose unfsynced writes and restarts, pauses and
//! resumes, clock jumps and resets, disks failing with EIO and healing), one fault at a time
//! and every enabled kind in turn (in a seeded order each round), each undone before the next
//! and all undone by the end of the main phase; the world applies each at its virtual time and
//! records it in the history with the names real runs use.

use std::collections::BTreeSet;
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
    /// Fail a broker's segment appends and fsyncs with EIO, then heal its disk.
    Disk,
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Cut between the two sides.
    StartPartition(Vec<u32>, Vec<u32>),
    /// Heal every cut.
    StopPartition,
    /// Kill a node.
    Kill(u32),
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
    /// Fail a node's disk writes (EIO).
    DiskFail(u32),
    /// Heal a node's disk.
    DiskHeal(u32),
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
/// `interval` on average (uniform in half to one and a half times), each lasting 2 to 8 s.
pub fn schedule(
    seed: u64,
    kinds: &BTreeSet<SimFault>,
    nodes: u32,
    start: Duration,
    end: Duration,
    interval: Duration,
) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let kinds: Vec<SimFault> = kinds.iter().copied().collect();
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
        let dur = rng.random_range(2_000..=8_000).min(end - t);
        let node = rng.random_range(1..=nodes);
        let (on, off) = match kind {
            SimFault::Partition => {
                let mut all: Vec<u32> = (1..=nodes).collect();
                all.shuffle(&mut rng);
                let k = rng.random_range(1..nodes.max(2)) as usize;
                let (a, b) = all.split_at(k.min(all.len()));
                let (mut a, mut b) = (a.to_vec(), b.to_vec());
                a.sort_unstable();
                b.sort_unstable();
                (Action::StartPartition(a, b), Action::StopPartition)
            }
            SimFault::Kill => (Action::Kill(node), Action::Start(node)),
            SimFault::Pause => (Action::Pause(node), Action::Resume(node)),
            SimFault::Clock => {
                let jump = rng.random_range(-60_000i64..=60_000);
                (Action::BumpClock(node, jump), Action::ResetClock(node))
            }
            SimFault::Disk => (Action::DiskFail(node), Action::DiskHeal(node)),
        };
        out.push(Event {
            at_ns: t * 1_000_000,
            action: on,
        });
        out.push(Event {
            at_ns: (t + dur) * 1_000_000,
            action: off,
        });
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
                json!({"topology": "halves", "components": comps, "clients-cut": false}),
            )?;
        }
        Action::StopPartition => {
            world.net.heal();
            history.nemesis("stop-partition", json!({"healed": true}))?;
        }
        Action::Kill(id) => {
            let lost = world.kill(*id);
            let lost: Vec<serde_json::Value> = lost.iter().map(|(f, b)| json!([f, b])).collect();
            history.nemesis(
                "kill",
                json!({"nodes": [name(id)], "signal": "KILL", "lost-unfsynced": lost}),
            )?;
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
        Action::DiskFail(id) => {
            if let Some(dir) = world.node(*id).map(|n| n.dir.clone()) {
                world.disk.fail(&dir);
            }
            history.nemesis(
                "start-disk",
                json!({"nodes": [name(id)], "fault": "eio-writes-and-fsync"}),
            )?;
        }
        Action::DiskHeal(id) => {
            if let Some(dir) = world.node(*id).map(|n| n.dir.clone()) {
                world.disk.heal(&dir);
            }
            history.nemesis("stop-disk", json!({"nodes": [name(id)]}))?;
        }
    }
    Ok(())
}

/// Undoes every fault still in force (the end of the main phase).
pub fn heal_all(world: &mut World, history: &HistoryWriter) -> std::io::Result<()> {
    apply(world, &Action::StopPartition, history)?;
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
        if let Some(dir) = world.node(id).map(|n| n.dir.clone()) {
            world.disk.heal(&dir);
        }
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
}
