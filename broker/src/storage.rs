//! The broker's storage seam: what a simulated disk needs to know to lose unfsynced writes at a
//! crash. Segment `.log` files report their durable length (after an fsync, at creation, after
//! recovery on open, and after a truncation) to the thread's [`DiskObserver`], and ask it
//! before each append and fsync whether the disk fails ([`check_write`]); production has none,
//! so this is one thread-local check per append and fsync. The Raft metadata store reports
//! its log (durable after each fsynced append or atomic rewrite) and its unfsynced
//! `raft-committed.json` (durable length 0: a crash may leave it empty). Other files the broker
//! writes (checkpoints) are fsynced before they are used and count as durable.
//!
//! fsyncs go through [`sync_all`] and [`sync_data`]: the system call in production; under a
//! simulated disk (an observer installed) nothing, since the simulator, not the kernel, decides
//! what a crash keeps, and a real fsync per simulated one only costs time.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

/// Told the durable length of segment files.
pub trait DiskObserver: Send + Sync + std::fmt::Debug {
    /// `path` is durable up to `len` bytes (anything past it is in the page cache only).
    fn durable(&self, path: &Path, len: u64);
    /// `path` was cut to `len` bytes: its durable length is at most `len`.
    fn truncated(&self, path: &Path, len: u64);
    /// `path` was deleted.
    fn deleted(&self, path: &Path);
    /// The error a write or fsync of `path` fails with now (a failing disk), if any.
    fn write_error(&self, _path: &Path) -> Option<std::io::Error> {
        None
    }
}

thread_local! {
    static OBSERVER: RefCell<Option<Arc<dyn DiskObserver>>> = const { RefCell::new(None) };
}

/// Installs (or removes) the calling thread's disk observer (a simulator's disk).
pub fn set_thread_observer(o: Option<Arc<dyn DiskObserver>>) {
    OBSERVER.with(|c| *c.borrow_mut() = o);
}

fn with(f: impl FnOnce(&dyn DiskObserver)) {
    OBSERVER.with(|c| {
        if let Some(o) = c.borrow().as_ref() {
            f(o.as_ref());
        }
    });
}

/// `path` is durable up to `len`.
pub fn durable(path: &Path, len: u64) {
    with(|o| o.durable(path, len));
}

/// `path` is durable up to `file`'s current length (looked up only under a simulated disk).
pub fn durable_file(path: &Path, file: &std::fs::File) {
    with(|o| {
        if let Ok(m) = file.metadata() {
            o.durable(path, m.len());
        }
    });
}

/// `path` was truncated to `len`.
pub fn truncated(path: &Path, len: u64) {
    with(|o| o.truncated(path, len));
}

/// `path` was deleted.
pub fn deleted(path: &Path) {
    with(|o| o.deleted(path));
}

/// Before a write or fsync of `path`: the error a simulated failing disk gives it (EIO), or
/// `Ok` (always in production).
pub fn check_write(path: &Path) -> std::io::Result<()> {
    let mut err = None;
    with(|o| err = o.write_error(path));
    err.map_or(Ok(()), Err)
}

fn observed() -> bool {
    OBSERVER.with(|c| c.borrow().is_some())
}

/// `file.sync_all()`, or nothing under a simulated disk (see the module comment).
pub fn sync_all(file: &std::fs::File) -> std::io::Result<()> {
    if observed() {
        return Ok(());
    }
    file.sync_all()
}

/// `file.sync_data()`, or nothing under a simulated disk (see the module comment).
pub fn sync_data(file: &std::fs::File) -> std::io::Result<()> {
    if observed() {
        return Ok(());
    }
    file.sync_data()
}
