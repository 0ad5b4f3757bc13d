//! The simulated disk's page cache: the broker's segment files report how far they are
//! durable (`broker::storage`), and a crash cuts each file of the crashed node back to that
//! length, as a power loss or a kill under a page-cache-dropping filesystem would. Other files
//! the broker writes are fsynced before use and survive whole.
//!
//! A node's disk can also be faulty, with the real nemesis's kinds
//! ([`nemesis::disk::DiskFault`]) until healed: `eio-writes` fails its segment appends with
//! EIO, `eio-fsync` its segment fsyncs; `stall` holds every piece of the node's blocking disk
//! work (`broker::runtime::spawn_blocking`) until healed, `latency` delays each by `per-op-ms`
//! (virtual time; the broker's `storage::ready` asks [`SimDisk`] through
//! `DiskObserver::wait`, for the node the world is running).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use broker::storage::{DiskWait, WriteOp};
use nemesis::disk::DiskFault;

/// Durable lengths of every segment file of the simulation, and the nodes' disk faults.
#[derive(Debug, Default)]
pub struct SimDisk {
    durable: Mutex<BTreeMap<PathBuf, u64>>,
    /// Faulty disks: node id to (its data directory, the fault).
    faults: Mutex<BTreeMap<u32, (PathBuf, DiskFault)>>,
}

impl SimDisk {
    /// Node `node`'s disk (its data directory `dir`) has `fault` until [`SimDisk::heal`] (one
    /// fault per node: a new one replaces the old).
    pub fn start(&self, node: u32, dir: &Path, fault: DiskFault) {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.insert(node, (dir.to_path_buf(), fault));
    }

    /// Node `node`'s disk works again: stalled work goes on at its next look (within
    /// `broker::storage::STALL_POLL` of virtual time).
    pub fn heal(&self, node: u32) {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&node);
    }

    /// Node `node`'s disk fault, if any.
    pub fn fault(&self, node: u32) -> Option<DiskFault> {
        let f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&node).map(|(_, k)| k.clone())
    }

    /// What node `node`'s blocking disk work waits for now.
    pub fn wait_of(&self, node: u32) -> DiskWait {
        match self.fault(node) {
            Some(DiskFault::Stall) => DiskWait::Stalled,
            Some(DiskFault::Latency { per_op_ms }) => {
                DiskWait::Slow(Duration::from_millis(per_op_ms))
            }
            _ => DiskWait::Ready,
        }
    }

    /// Cuts every tracked file under `dir` back to its durable length; returns the files that
    /// lost bytes and how many.
    pub fn crash(&self, dir: &Path) -> Vec<(String, u64)> {
        let map = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        let mut lost = Vec::new();
        for (path, keep) in map.iter().filter(|(p, _)| p.starts_with(dir)) {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            if meta.len() > *keep {
                let cut = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(*keep));
                if cut.is_ok() {
                    let name = path.strip_prefix(dir).unwrap_or(path);
                    lost.push((name.display().to_string(), meta.len() - keep));
                }
            }
        }
        lost
    }
}

impl broker::storage::DiskObserver for SimDisk {
    fn durable(&self, path: &Path, len: u64) {
        let mut m = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(path.to_path_buf(), len);
    }

    fn truncated(&self, path: &Path, len: u64) {
        let mut m = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(path.to_path_buf()).or_insert(len);
        *e = (*e).min(len);
    }

    fn deleted(&self, path: &Path) {
        let mut m = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(path);
    }

    fn write_error(&self, path: &Path, op: WriteOp) -> Option<std::io::Error> {
        let f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.values()
            .any(|(dir, fault)| {
                path.starts_with(dir)
                    && matches!(
                        (fault, op),
                        (DiskFault::EioWrites, WriteOp::Append)
                            | (DiskFault::EioFsync, WriteOp::Fsync)
                    )
            })
            .then(|| std::io::Error::from_raw_os_error(libc::EIO))
    }

    fn wait(&self) -> DiskWait {
        match super::clock::current_node() {
            0 => DiskWait::Ready,
            n => self.wait_of(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::storage::DiskObserver;

    #[test]
    fn a_crash_cuts_files_back_to_their_durable_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("n1");
        std::fs::create_dir_all(&node).expect("mkdir");
        let f = node.join("00000000000000000000.log");
        std::fs::write(&f, vec![7u8; 100]).expect("write");
        let disk = SimDisk::default();
        disk.durable(&f, 40);
        let other = dir.path().join("n2.log");
        std::fs::write(&other, vec![7u8; 100]).expect("write");
        disk.durable(&other, 10);
        let lost = disk.crash(&node);
        assert_eq!(lost, vec![("00000000000000000000.log".to_string(), 60)]);
        assert_eq!(std::fs::metadata(&f).expect("meta").len(), 40);
        // Another node's file is untouched.
        assert_eq!(std::fs::metadata(&other).expect("meta").len(), 100);
        disk.truncated(&f, 20);
        std::fs::write(&f, vec![7u8; 50]).expect("write");
        disk.crash(&node);
        assert_eq!(std::fs::metadata(&f).expect("meta").len(), 20);
    }

    #[test]
    fn each_fault_kind_fails_or_holds_what_it_names_on_its_node_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("n1");
        let f = node.join("00000000000000000000.log");
        let other = dir.path().join("n2").join("00000000000000000000.log");
        let disk = SimDisk::default();
        let eio = |p: &Path, op| disk.write_error(p, op).map(|e| e.raw_os_error());
        assert_eq!(disk.wait_of(1), DiskWait::Ready);
        // eio-writes: appends fail, fsyncs do not; other nodes' files are untouched.
        disk.start(1, &node, DiskFault::EioWrites);
        assert_eq!(eio(&f, WriteOp::Append), Some(Some(libc::EIO)));
        assert_eq!(eio(&f, WriteOp::Fsync), None);
        assert_eq!(eio(&other, WriteOp::Append), None);
        assert_eq!(disk.wait_of(1), DiskWait::Ready);
        // eio-fsync: the other way round (a new fault replaces the old).
        disk.start(1, &node, DiskFault::EioFsync);
        assert_eq!(eio(&f, WriteOp::Append), None);
        assert_eq!(eio(&f, WriteOp::Fsync), Some(Some(libc::EIO)));
        // stall and latency hold the node's work, fail nothing.
        disk.start(1, &node, DiskFault::Stall);
        assert_eq!(eio(&f, WriteOp::Fsync), None);
        assert_eq!(disk.wait_of(1), DiskWait::Stalled);
        assert_eq!(disk.wait_of(2), DiskWait::Ready);
        disk.start(1, &node, DiskFault::Latency { per_op_ms: 30 });
        assert_eq!(disk.wait_of(1), DiskWait::Slow(Duration::from_millis(30)));
        disk.heal(1);
        assert_eq!(disk.wait_of(1), DiskWait::Ready);
        assert_eq!(disk.fault(1), None);
        assert_eq!(eio(&f, WriteOp::Append), None);
    }

    /// Runs `ms` of virtual time on a paused runtime as node 1 (as the world steps it).
    fn run_as_node_1(rt: &tokio::runtime::Runtime, ms: u64) {
        super::super::clock::set_current_node(1);
        rt.block_on(async move { tokio::time::sleep(Duration::from_millis(ms)).await });
        super::super::clock::set_current_node(0);
    }

    #[test]
    fn a_stalled_disk_holds_blocking_work_until_healed_and_a_slow_one_delays_it() {
        let disk = std::sync::Arc::new(SimDisk::default());
        broker::runtime::set_simulated(true);
        broker::storage::set_thread_observer(Some(disk.clone()));
        let rt = super::super::world::new_runtime().expect("runtime");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let at = |rt: &tokio::runtime::Runtime| {
            let start = rt.block_on(async { tokio::time::Instant::now() });
            move || start.elapsed().as_millis() as u64
        };
        let since = at(&rt);
        disk.start(1, Path::new("/n1"), DiskFault::Stall);
        let d = done.clone();
        rt.spawn(async move {
            let r = broker::runtime::spawn_blocking(since).await;
            d.store(r.expect("join") + 1, std::sync::atomic::Ordering::SeqCst);
        });
        run_as_node_1(&rt, 3_000);
        assert_eq!(
            done.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "ran stalled"
        );
        disk.heal(1);
        run_as_node_1(&rt, 100);
        let ran_at = done.load(std::sync::atomic::Ordering::SeqCst) - 1;
        assert!((3_000..3_010).contains(&ran_at), "ran at {ran_at} ms");
        // Latency: each piece of work waits per-op-ms once.
        disk.start(1, Path::new("/n1"), DiskFault::Latency { per_op_ms: 40 });
        let d = done.clone();
        let since = at(&rt);
        rt.spawn(async move {
            let r = broker::runtime::spawn_blocking(since).await;
            d.store(r.expect("join") + 1, std::sync::atomic::Ordering::SeqCst);
        });
        run_as_node_1(&rt, 39);
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), ran_at + 1);
        run_as_node_1(&rt, 2);
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 41);
        broker::storage::set_thread_observer(None);
        broker::runtime::set_simulated(false);
    }
}
