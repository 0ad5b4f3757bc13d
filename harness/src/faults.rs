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
use checkers::HistoryWriter;
use nemesis::schedule::{split_role, CONTROLLER, COORDINATOR, FOLLOWERS, LEADER};
use nemesis::{Action, Nemesis, Node, Schedule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// Where a node's service log is (the system decides).
pub type LogPath = Arc<dyn Fn(&dyn Node) -> std::path::PathBuf + Send + Sync>;

/// Finds which node currently plays a role, from any broker's metadata.
pub struct Roles {
    nodes: Vec<Arc<dyn Node>>,
    port: u16,
    log: LogPath,
    topic: String,
    partitions: u32,
    rng: ChaCha8Rng,
}

impl Roles {
    /// Roles over `nodes` (node id `i + 1` is `nodes[i]`, as deploy numbers them), asked on
    /// their client `port`, for `topic`'s partitions; which partition's leader `@leader` means
    /// is drawn from `seed`.
    pub fn new(
        nodes: Vec<Arc<dyn Node>>,
        port: u16,
        topic: &str,
        partitions: u32,
        seed: u64,
    ) -> Roles {
        Roles {
            nodes,
            port,
            log: Arc::new(|n: &dyn Node| {
                crate::system::service_log(crate::system::SystemKind::Bundled, n)
            }),
            topic: topic.to_string(),
            partitions: partitions.max(1),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0001),
        }
    }

    /// The same roles, reading each node's service log at `log` (for failed starts).
    pub fn with_log(mut self, log: LogPath) -> Roles {
        self.log = log;
        self
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Arc<dyn Node>> {
        self.nodes.iter().find(|n| n.name() == name)
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
        let workload = || crate::metadata::any_placement(&self.nodes, self.port, &self.topic);
        let ids: Vec<i32> = match base {
            LEADER => vec![*workload()?.leaders.get(partition)?],
            CONTROLLER => vec![workload()?.controller],
            COORDINATOR => vec![crate::metadata::group_coordinator(
                &self.nodes,
                self.port,
                crate::workload::GROUP,
            )?],
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
            let restarted = restarted_nodes(&op.f, &op.value);
            history
                .nemesis(&op.f, op.value)
                .context("recording a nemesis op")?;
            for name in restarted {
                verify_start(roles, &name, history)?;
            }
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

/// The nodes an applied op (re)started: `start`'s `started` list, `corrupt-file`'s node.
fn restarted_nodes(f: &str, value: &serde_json::Value) -> Vec<String> {
    match f {
        "start" => value["started"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p[0].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        "corrupt-file" => value["node"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// How long a restart may take to answer before it is recorded as silent.
const START_CHECK: Duration = Duration::from_secs(15);

/// Lines of a broker's log kept with a failed start.
const LOG_TAIL_LINES: usize = 20;

/// Checks that a restarted broker came up; a process that exited is recorded as a
/// `start-failed` nemesis op with the reason and its log tail, and the run goes on.
fn verify_start(roles: &Roles, name: &str, history: &HistoryWriter) -> Result<()> {
    let Some(node) = roles.node(name) else {
        return Ok(());
    };
    match crate::deploy::check_started(node.as_ref(), roles.port, START_CHECK) {
        crate::deploy::StartCheck::Answering => {
            tracing::debug!(node = name, "restarted broker answers");
        }
        crate::deploy::StartCheck::Silent => {
            tracing::info!(
                node = name,
                "restarted broker runs but does not answer yet (cut off or recovering)"
            );
        }
        crate::deploy::StartCheck::Exited => {
            let tail = crate::deploy::log_tail(&(roles.log)(node.as_ref()), LOG_TAIL_LINES);
            crate::runlog::say(&format!(
                "harness: warning: {name}'s broker exited after its restart; the run goes on"
            ));
            history
                .nemesis(
                    "start-failed",
                    json!({"node": name, "reason": "the broker process exited after its start",
                           "log_tail": tail}),
                )
                .context("recording a failed start")?;
        }
    }
    Ok(())
}

/// A broker the final heal could not bring back: a finding about the broker when the faults
/// the harness injected (lost unfsynced writes, EIO, corruption) left it unable to start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unrecoverable {
    /// The node.
    pub node: String,
    /// What was seen.
    pub reason: String,
    /// The last lines of its broker log.
    pub log_tail: String,
}

/// After the final heal: every broker must be running and answering. A broker that is not
/// is restarted (up to `attempts` times, each watched for [`START_CHECK`]); one that still
/// fails is recorded as a `broker-unrecoverable` nemesis op and returned.
pub fn recover_brokers(
    roles: &Roles,
    history: &HistoryWriter,
    attempts: u32,
) -> Result<Vec<Unrecoverable>> {
    let mut lost = Vec::new();
    for node in &roles.nodes {
        let name = node.name().to_string();
        let mut outcome = crate::deploy::check_started(node.as_ref(), roles.port, START_CHECK);
        let mut tries = 0;
        while outcome == crate::deploy::StartCheck::Exited && tries < attempts {
            tries += 1;
            crate::runlog::say(&format!(
                "harness: {name}'s broker is down after the final heal; restart {tries} of {attempts}"
            ));
            if let Err(e) = node.start_service() {
                tracing::warn!(node = %name, "restart failed: {e}");
            }
            outcome = crate::deploy::check_started(node.as_ref(), roles.port, START_CHECK);
        }
        let reason = match outcome {
            crate::deploy::StartCheck::Answering => continue,
            crate::deploy::StartCheck::Silent => format!(
                "running but not answering on its Kafka port {START_CHECK:?} after the final heal"
            ),
            crate::deploy::StartCheck::Exited => {
                format!("the broker process exits at start ({tries} restarts after the final heal)")
            }
        };
        let u = Unrecoverable {
            node: name,
            reason,
            log_tail: crate::deploy::log_tail(&(roles.log)(node.as_ref()), LOG_TAIL_LINES),
        };
        crate::runlog::say(&format!(
            "harness: FINDING: {}'s broker cannot be recovered: {}",
            u.node, u.reason
        ));
        history
            .nemesis("broker-unrecoverable", json!(u))
            .context("recording an unrecoverable broker")?;
        lost.push(u);
    }
    Ok(lost)
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

/// How long the final heal retries steps that failed.
const HEAL_RETRY_FOR: Duration = Duration::from_secs(30);

/// The final heal, in the schedule's fixed order, each step recorded; then the guard's own
/// `heal_all` for anything still active. Errors are collected, not short-circuited, so every
/// step is tried.
pub fn final_heal(
    nemesis: &Nemesis,
    roles: &mut Roles,
    schedule: &Schedule,
    history: &HistoryWriter,
) -> Result<()> {
    // Every step is tried; the failed ones are retried (each attempt recorded) for up to
    // HEAL_RETRY_FOR, since a node busy recovering may refuse a command for a moment.
    let started = Instant::now();
    let mut pending: Vec<&Action> = schedule.final_heal.iter().collect();
    let heal_all_error = loop {
        let mut still = Vec::new();
        for action in pending {
            if !apply_and_record(nemesis, roles, action, history)? {
                still.push(action);
            }
        }
        let heal_all_error = nemesis.heal_all().err().map(|e| e.to_string());
        pending = still;
        if (pending.is_empty() && heal_all_error.is_none()) || started.elapsed() > HEAL_RETRY_FOR {
            break heal_all_error;
        }
        crate::runlog::say(&format!(
            "harness: {} final heal steps failed; retrying",
            pending.len() + usize::from(heal_all_error.is_some())
        ));
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut failed: Vec<String> = pending.iter().map(|a| action_name(a)).collect();
    failed.extend(heal_all_error.map(|e| format!("heal-all: {e}")));
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "final heal steps failed after retrying for {HEAL_RETRY_FOR:?}: {}",
            failed.join(", ")
        )
    }
}
