//! The broker's storage seam: what a simulated disk needs to know to lose unfsynced writes at a
//! crash. Segment `.log` files report their durable length (after an fsync, at creation, after
//! recovery on open, and after a truncation) to the thread's [`DiskObserver`], and ask it
//! before each append ([`check_append`]) and each fsync ([`check_fsync`]) whether the disk
//! fails; production has none, so this is one thread-local check per append and fsync. The Raft metadata store reports
//! its log (durable after each fsynced append or atomic rewrite) and its unfsynced
//! `raft-committed.json` (durable length 0: a crash may leave it empty). Other files the broker
//! writes (checkpoints) are fsynced before they are used and count as durable.
//!
//! A simulated disk can also be slow or stalled: on a simulation thread
//! `crate::runtime::spawn_blocking` (the broker's blocking disk work) first awaits [`ready`],
//! which asks the observer whether the disk of the node being run is stalled (then it sleeps
//! in the runtime's virtual time until it is not) or slow (then it sleeps the delay once).
//! Production never calls it.
//!
//! fsyncs go through [`sync_all`] and [`sync_data`]: the system call in production; under a
//! simulated disk (an observer installed) nothing, since the simulator, not the kernel, decides
//! what a crash keeps, and a real fsync per simulated one only costs time.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Which write a failing disk is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    /// Appending bytes to a segment file.
    Append,
    /// fsyncing a segment file.
    Fsync,
}

/// Whether the disk of the node being run takes work now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskWait {
    /// It does.
    Ready,
    /// Every operation waits until the stall ends.
    Stalled,
    /// Every operation takes this much longer.
    Slow(Duration),
}

/// How often work waiting on a stalled disk looks again (virtual time).
pub const STALL_POLL: Duration = Duration::from_millis(5);

/// Told the durable length of segment files.
pub trait DiskObserver: Send + Sync + std::fmt::Debug {
    /// `path` is durable up to `len` bytes (anything past it is in the page cache only).
    fn durable(&self, path: &Path, len: u64);
    /// `path` was cut to `len` bytes: its durable length is at most `len`.
    fn truncated(&self, path: &Path, len: u64);
    /// `path` was deleted.
    fn deleted(&self, path: &Path);
    /// The error an append or fsync of `path` fails with now (a failing disk), if any.
    fn write_error(&self, _path: &Path, _op: WriteOp) -> Option<std::io::Error> {
        None
    }
    /// Whether the disk of the node whose tasks are running now is stalled or slow.
    fn wait(&self) -> DiskWait {
        DiskWait::Ready
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

/// Before an append to `path`: the error a simulated failing disk gives it (EIO), or `Ok`
/// (always in production).
pub fn check_append(path: &Path) -> std::io::Result<()> {
    check(path, WriteOp::Append)
}

/// Before an fsync of `path`: the error a simulated failing disk gives it (EIO), or `Ok`
/// (always in production).
pub fn check_fsync(path: &Path) -> std::io::Result<()> {
    check(path, WriteOp::Fsync)
}

fn check(path: &Path, op: WriteOp) -> std::io::Result<()> {
    let mut err = None;
    with(|o| err = o.write_error(path, op));
    err.map_or(Ok(()), Err)
}

/// The simulated disk's answer for the node being run now ([`DiskWait::Ready`] without one).
pub fn disk_wait() -> DiskWait {
    let mut w = DiskWait::Ready;
    with(|o| w = o.wait());
    w
}

/// Waits (in the runtime's time) until the disk of the node being run takes work: while it is
/// stalled, and once more for a slow disk's delay. Returns at once without a simulated disk.
/// Called by `crate::runtime::spawn_blocking` on a simulation thread, before a follower
/// applies a fetch response with records or a divergence, and before a Raft log append.
pub async fn ready() {
    loop {
        match disk_wait() {
            DiskWait::Ready => return,
            DiskWait::Stalled => tokio::time::sleep(STALL_POLL).await,
            DiskWait::Slow(d) => {
                tokio::time::sleep(d).await;
                return;
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Fails appends only; stalled (1), slow (2) or ready (0) as `state` says.
    #[derive(Debug, Default)]
    struct Stub {
        state: AtomicU8,
    }

    impl DiskObserver for Stub {
        fn durable(&self, _: &Path, _: u64) {}
        fn truncated(&self, _: &Path, _: u64) {}
        fn deleted(&self, _: &Path) {}
        fn write_error(&self, _: &Path, op: WriteOp) -> Option<std::io::Error> {
            (op == WriteOp::Append).then(|| std::io::Error::other("eio"))
        }
        fn wait(&self) -> DiskWait {
            match self.state.load(Ordering::SeqCst) {
                1 => DiskWait::Stalled,
                2 => DiskWait::Slow(Duration::from_millis(20)),
                _ => DiskWait::Ready,
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn appends_and_fsyncs_are_checked_apart_and_ready_waits_out_a_stall() {
        let p = Path::new("/x/0.log");
        // Production: no observer, nothing fails or waits.
        assert!(check_append(p).is_ok() && check_fsync(p).is_ok());
        assert_eq!(disk_wait(), DiskWait::Ready);
        let stub = Arc::new(Stub::default());
        set_thread_observer(Some(stub.clone()));
        assert!(check_append(p).is_err());
        assert!(check_fsync(p).is_ok());
        stub.state.store(1, Ordering::SeqCst);
        let waiting = tokio::spawn(ready());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "ready() returned on a stalled disk");
        stub.state.store(0, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("ready() after the stall")
            .expect("join");
        stub.state.store(2, Ordering::SeqCst);
        let t = std::time::Instant::now();
        ready().await;
        assert!(t.elapsed() >= Duration::from_millis(20));
        set_thread_observer(None);
    }
}
