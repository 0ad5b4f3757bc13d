//! Virtual time and the node being stepped. Both are thread-locals of the simulation thread:
//! the world advances [`now_ns`] tick by tick and sets [`current_node`] while it runs a node's
//! runtime, so the network knows where a connection comes from and the clocks what time it is.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The wall clock's reading at virtual time zero (ms since the Unix epoch: 2026-01-01).
pub const EPOCH_MS: i64 = 1_767_225_600_000;

thread_local! {
    static NOW_NS: Cell<u64> = const { Cell::new(0) };
    static NODE: Cell<u32> = const { Cell::new(0) };
}

/// Virtual nanoseconds since the simulation started.
pub fn now_ns() -> u64 {
    NOW_NS.with(Cell::get)
}

/// Sets the virtual time (the world's stepper only).
pub(crate) fn set_now_ns(ns: u64) {
    NOW_NS.with(|c| c.set(ns));
}

/// The node whose tasks are running (0: the client and nemesis side).
pub fn current_node() -> u32 {
    NODE.with(Cell::get)
}

/// Sets the node being stepped (the world's stepper only).
pub(crate) fn set_current_node(n: u32) {
    NODE.with(|c| c.set(n));
}

/// The clients' wall clock: virtual wall time (record timestamps).
pub fn client_wall_ms() -> i64 {
    EPOCH_MS + (now_ns() / 1_000_000) as i64
}

/// A broker's clock: virtual wall time plus the node's clock offset (the clock nemesis), and
/// its runtime's virtual monotonic time.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    /// The node's wall-clock offset in ms.
    pub offset_ms: Arc<AtomicI64>,
}

impl broker::clock::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        EPOCH_MS + (now_ns() / 1_000_000) as i64 + self.offset_ms.load(Ordering::Relaxed)
    }

    fn instant(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}
