//! Zombie consumers on request. The nemesis asks for one ([`ConsumerStalls::request`]); the
//! next subscribed worker with partitions assigned that finishes an ok poll takes the
//! request, stops polling (and so heartbeating) for the stall, then commits the positions it
//! had before the stall as the member and generation it was, before anything tells it the
//! group moved on, as a consumer does after a long GC pause. The commit is recorded as an
//! ordinary `commit` op of its process (the `lost-commit` checker reads it), and a nemesis op
//! `zombie-commit` says which process it was, how long it stalled and how the coordinator
//! answered. Real runs' workers stall on a thread (`zombie_commit`), the simulation's on
//! virtual time ([`native_zombie_commit`]); both record through the same code.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use checkers::commits::{offsets_value, COMMIT};
use checkers::{HistoryWriter, OpType};
use serde_json::json;

use crate::client::{CommitResult, Offsets, QueueClient};

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
    let zombie = Zombie {
        process,
        next_process,
        joins: client.joins(),
    };
    let started = Instant::now();
    // Asleep in short slices, so the end of the phase or an interrupt still ends it.
    while started.elapsed() < stall && !stop.load(Ordering::SeqCst) && Instant::now() < end {
        let rest = stall.saturating_sub(started.elapsed());
        std::thread::sleep(rest.min(Duration::from_millis(100)));
    }
    let Some(pending) = zombie.invoke(history, &offsets, started.elapsed())? else {
        return Ok(process);
    };
    let result = client.commit(&offsets);
    pending.complete(history, &result, client.joins())
}

/// [`zombie_commit`] for the native client's reader on a tokio runtime (the simulation's, in
/// virtual time): the stall is a `tokio::time::sleep`, cut short at `end`, and the commit the
/// reader's own.
pub async fn native_zombie_commit(
    reader: &mut crate::native::Reader,
    topic: &str,
    history: &HistoryWriter,
    process: u64,
    next_process: u64,
    stall: Duration,
    end: tokio::time::Instant,
) -> Result<u64, std::io::Error> {
    let Some(offsets) = reader.to_commit(topic) else {
        return Ok(process);
    };
    let zombie = Zombie {
        process,
        next_process,
        joins: reader.joins(),
    };
    let started = tokio::time::Instant::now();
    tokio::time::sleep_until((started + stall).min(end)).await;
    let Some(pending) = zombie.invoke(history, &offsets, started.elapsed())? else {
        return Ok(process);
    };
    let result = reader.commit(topic, &offsets).await;
    pending.complete(history, &result, reader.joins())
}

/// A zombie: the process it commits as, the process that goes on after an unknown outcome,
/// and the member's join count before the stall.
struct Zombie {
    process: u64,
    next_process: u64,
    joins: u64,
}

/// A zombie's commit whose invocation is recorded, awaiting the coordinator's answer.
struct PendingZombieCommit {
    zombie: Zombie,
    stalled: Duration,
    value: serde_json::Value,
}

impl Zombie {
    /// After a stall of `stalled`, records the invocation of the commit of `offsets` (None,
    /// nothing recorded, when there is nothing to commit).
    fn invoke(
        self,
        history: &HistoryWriter,
        offsets: &Offsets,
        stalled: Duration,
    ) -> Result<Option<PendingZombieCommit>, std::io::Error> {
        if offsets.is_empty() {
            return Ok(None);
        }
        let value = offsets_value(offsets);
        history.invoke(self.process, COMMIT, value.clone())?;
        Ok(Some(PendingZombieCommit {
            zombie: self,
            stalled,
            value,
        }))
    }
}

impl PendingZombieCommit {
    /// Records the commit's completion and the `zombie-commit` nemesis op; `joins` is the
    /// member's join count now. Returns the process that goes on.
    fn complete(
        self,
        history: &HistoryWriter,
        result: &CommitResult,
        joins: u64,
    ) -> Result<u64, std::io::Error> {
        let Self {
            zombie: z,
            stalled,
            value,
        } = self;
        let (t, next, outcome) = match result {
            CommitResult::Ok => (OpType::Ok, z.process, "acknowledged".to_string()),
            CommitResult::Fail(why) => (OpType::Fail, z.process, format!("refused: {why}")),
            CommitResult::Info(why) => (OpType::Info, z.next_process, format!("unknown: {why}")),
        };
        history.complete(z.process, t, COMMIT, value.clone())?;
        history.nemesis(
            ZOMBIE_COMMIT,
            json!({
                "process": z.process,
                "stalled_ms": stalled.as_millis() as u64,
                "offsets": value,
                "outcome": outcome,
                // A zombie commits as the member it was: the join count before the stall.
                "rejoined_before_commit": joins != z.joins,
            }),
        )?;
        Ok(next)
    }
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
