//! Running the nemesis during a test: the seeded [`Schedule`] replayed against the nodes on its
//! own thread (each action at its time from the workload's start), role placeholders
//! (`@leader`, `@controller`) resolved from live cluster metadata when an action is due, every
//! fault and heal written to the history as a `nemesis` op, and the final heal in its fixed
//! order. The [`Nemesis`] guard heals whatever is still active if anything here fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use broker::server::groups::OFFSETS_TOPIC;
use checkers::HistoryWriter;
use nemesis::schedule::{split_role, CONTROLLER, COORDINATOR, FOLLOWERS, LEADER};
use nemesis::{Action, Nemesis, Node, Schedule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// Finds which node currently plays a role, from any broker's metadata.
pub struct Roles {
    nodes: Vec<Arc<dyn Node>>,
    topic: String,
    partitions: u32,
    rng: ChaCha8Rng,
}

impl Roles {
    /// Roles over `nodes` (node id `i + 1` is `nodes[i]`, as deploy numbers them) for `topic`'s
    /// partitions; which partition's leader `@leader` means is drawn from `seed`.
    pub fn new(nodes: Vec<Arc<dyn Node>>, topic: &str, partitions: u32, seed: u64) -> Roles {
        Roles {
            nodes,
            topic: topic.to_string(),
            partitions: partitions.max(1),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0001),
        }
    }

    /// The node names playing `role`: [`LEADER`] of a partition (seeded, or pinned as
    /// `@leader/P`), [`CONTROLLER`], [`FOLLOWERS`] (the other replicas of a partition's
    /// leader), or [`COORDINATOR`] (the leader of the run group's offsets partition); None when
    /// no broker answers or the role is vacant.
    pub fn resolve(&mut self, role: &str) -> Option<Vec<String>> {
        let (base, pinned) = split_role(role);
        let partition = match pinned {
            Some(p) => p % self.partitions,
            None => self.rng.random_range(0..self.partitions),
        } as usize;
        let workload = || crate::metadata::any_placement(&self.nodes, &self.topic);
        let ids: Vec<i32> = match base {
            LEADER => vec![*workload()?.leaders.get(partition)?],
            CONTROLLER => vec![workload()?.controller],
            COORDINATOR => {
                let offsets = crate::metadata::any_placement(&self.nodes, OFFSETS_TOPIC)?;
                let n = i32::try_from(offsets.leaders.len()).ok()?;
                let p = broker::server::internal::partition_for(crate::workload::GROUP, n);
                vec![*offsets.leaders.get(usize::try_from(p).ok()?)?]
            }
            FOLLOWERS => {
                let meta = workload()?;
                let leader = *meta.leaders.get(partition)?;
                meta.replicas
                    .get(partition)?
                    .iter()
                    .copied()
                    .filter(|id| *id != leader)
                    .collect()
            }
            _ => return None,
        };
        ids.into_iter()
            .map(|id| {
                let index = usize::try_from(id).ok()?.checked_sub(1)?;
                self.nodes.get(index).map(|n| n.name().to_string())
            })
            .collect()
    }
}

/// The `f` of an action in the history when applying it failed (its serde tag).
fn action_name(action: &Action) -> String {
    serde_json::to_value(action)
        .ok()
        .and_then(|v| v["action"].as_str().map(str::to_string))
        .unwrap_or_else(|| "nemesis".into())
}

/// Applies one action (roles resolved first) and records it: the nemesis op on success, the
/// action and the error otherwise. Returns whether it applied.
pub fn apply_and_record(
    nemesis: &Nemesis,
    roles: &mut Roles,
    action: &Action,
    history: &HistoryWriter,
) -> Result<bool> {
    let outcome = action
        .resolve_roles(|role| roles.resolve(role))
        .and_then(|resolved| Ok((nemesis.apply(&resolved)?, resolved)));
    match outcome {
        Ok((mut op, resolved)) => {
            // A role-targeted fault says which role it hit, beside the node it resolved to.
            if resolved != *action {
                if let Some(obj) = op.value.as_object_mut() {
                    obj.insert("targeted".into(), json!(action));
                }
            }
            history
                .nemesis(&op.f, op.value)
                .context("recording a nemesis op")?;
            Ok(true)
        }
        Err(e) => {
            tracing::warn!("nemesis action {action:?} failed: {e}");
            history
                .nemesis(
                    &action_name(action),
                    json!({"action": action, "error": e.to_string()}),
                )
                .context("recording a failed nemesis op")?;
            Ok(false)
        }
    }
}

/// The schedule running on its own thread.
pub struct FaultDriver {
    handle: Option<JoinHandle<Result<u64>>>,
    stop: Arc<AtomicBool>,
}

impl FaultDriver {
    /// Starts replaying `schedule.actions` now (its time zero), until every action ran, `stop`
    /// is called, or `interrupted` is set; `last` names the latest applied action (progress).
    pub fn start(
        nemesis: Arc<Nemesis>,
        mut roles: Roles,
        schedule: Schedule,
        history: Arc<HistoryWriter>,
        interrupted: &'static AtomicBool,
        last: Arc<std::sync::Mutex<String>>,
    ) -> FaultDriver {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle =
            std::thread::Builder::new()
                .name("nemesis".into())
                .spawn(move || -> Result<u64> {
                    let t0 = Instant::now();
                    let mut applied = 0;
                    for step in &schedule.actions {
                        let due = t0 + Duration::from_millis(step.at_ms);
                        while Instant::now() < due {
                            if flag.load(Ordering::SeqCst) || interrupted.load(Ordering::SeqCst) {
                                return Ok(applied);
                            }
                            std::thread::sleep(
                                due.saturating_duration_since(Instant::now())
                                    .min(Duration::from_millis(100)),
                            );
                        }
                        if apply_and_record(&nemesis, &mut roles, &step.action, &history)? {
                            applied += 1;
                            if let Ok(mut l) = last.lock() {
                                *l = action_name(&step.action);
                            }
                        }
                    }
                    Ok(applied)
                });
        FaultDriver {
            handle: handle.ok(),
            stop,
        }
    }

    /// Stops the schedule (an action in progress finishes) and returns how many actions applied.
    pub fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the nemesis thread panicked"))?,
            None => anyhow::bail!("the nemesis thread could not be started"),
        }
    }
}

impl Drop for FaultDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The final heal, in the schedule's fixed order, each step recorded; then the guard's own
/// `heal_all` for anything still active. Errors are collected, not short-circuited, so every
/// step is tried.
pub fn final_heal(
    nemesis: &Nemesis,
    roles: &mut Roles,
    schedule: &Schedule,
    history: &HistoryWriter,
) -> Result<()> {
    let mut failed = Vec::new();
    for action in &schedule.final_heal {
        if !apply_and_record(nemesis, roles, action, history)? {
            failed.push(action_name(action));
        }
    }
    if let Err(e) = nemesis.heal_all() {
        failed.push(format!("heal-all: {e}"));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("final heal steps failed: {}", failed.join(", "))
    }
}
