//! The broker's one view of time. Core logic reads wall-clock and monotonic time only through
//! [`Clock`] (deadlines that must follow a paused runtime use `tokio::time::Instant`), so the
//! deterministic simulator (`harness sim`) drives the whole broker from a seed: it gives each
//! simulated broker a clock of virtual time with a per-node offset for clock faults.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock and monotonic time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch (record timestamps, segment roll and retention ages).
    fn now_ms(&self) -> i64;
    /// A monotonic instant (timeouts, rates, latencies).
    fn instant(&self) -> Instant;
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}
