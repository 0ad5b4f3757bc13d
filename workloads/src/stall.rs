//! Zombie consumers on request. The nemesis asks for one ([`ConsumerStalls::request`]); the
//! next subscribed worker that finishes an ok poll takes the request, stops polling (and so
//! heartbeating) for the stall, then commits the positions it had before the stall as the
//! member and generation it was, before anything tells it the group moved on, as a consumer
//! does after a long GC pause. The commit is recorded as an ordinary `commit` op of its process
//! (the `lost-commit` checker reads it), and a nemesis op `zombie-commit` says which process
//! it was, how long it stalled and how the coordinator answered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use checkers::commits::{offsets_value, COMMIT};
use checkers::{HistoryWriter, OpType};
use serde_json::json;

use crate::client::{CommitResult, QueueClient};

/// The `f` of the nemesis op a zombie's commit is explained by.
pub const ZOMBIE_COMMIT: &str = "zombie-commit";

/// Stall requests waiting for a subscribed worker to take them.
#[derive(Debug, Default)]
pub struct ConsumerStalls {
    pending: Mutex<VecDeque<Duration>>,
}

impl ConsumerStalls {
    /// Asks for one zombie stalling `stall`; returns how many requests now wait.
    pub fn request(&self, stall: Duration) -> usize {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.push_back(stall);
        p.len()
    }

    /// Takes the oldest waiting request.
    pub fn take(&self) -> Option<Duration> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

/// What a zombie's commit came to: the process the worker goes on as (a new one when the
/// commit's outcome is unknown, as after any commit of unknown outcome).
pub(crate) fn zombie_commit(
    client: &mut dyn QueueClient,
    history: &HistoryWriter,
    process: u64,
    next_process: u64,
    stall: Duration,
    stop: &AtomicBool,
    end: Instant,
) -> Result<u64, std::io::Error> {
    let Some(offsets) = client.to_commit() else {
        return Ok(process);
    };
    let joins = client.joins();
    let started = Instant::now();
    // Asleep in short slices, so the end of the phase or an interrupt still ends it.
    while started.elapsed() < stall && !stop.load(Ordering::SeqCst) && Instant::now() < end {
        let rest = stall.saturating_sub(started.elapsed());
        std::thread::sleep(rest.min(Duration::from_millis(100)));
    }
    let stalled = started.elapsed();
    if offsets.is_empty() {
        return Ok(process);
    }
    let value = offsets_value(&offsets);
    history.invoke(process, COMMIT, value.clone())?;
    let (t, next, outcome) = match client.commit(&offsets) {
        CommitResult::Ok => (OpType::Ok, process, "acknowledged".to_string()),
        CommitResult::Fail(why) => (OpType::Fail, process, format!("refused: {why}")),
        CommitResult::Info(why) => (OpType::Info, next_process, format!("unknown: {why}")),
    };
    history.complete(process, t, COMMIT, value.clone())?;
    history.nemesis(
        ZOMBIE_COMMIT,
        json!({
            "process": process,
            "stalled_ms": stalled.as_millis() as u64,
            "offsets": value,
            "outcome": outcome,
            // A zombie commits as the member it was: the join count before the stall.
            "rejoined_before_commit": client.joins() != joins,
        }),
    )?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_oldest_first_once() {
        let s = ConsumerStalls::default();
        assert_eq!(s.take(), None);
        assert_eq!(s.request(Duration::from_secs(1)), 1);
        assert_eq!(s.request(Duration::from_secs(2)), 2);
        assert_eq!(s.take(), Some(Duration::from_secs(1)));
        assert_eq!(s.take(), Some(Duration::from_secs(2)));
        assert_eq!(s.take(), None);
    }
}
