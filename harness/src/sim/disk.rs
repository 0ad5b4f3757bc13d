//! The simulated disk's page cache: the broker's segment files report how far they are
//! durable (`broker::storage`), and a crash cuts each file of the crashed node back to that
//! length, as a power loss or a kill under a page-cache-dropping filesystem would. Other files
//! the broker writes are fsynced before use and survive whole. A node's disk can also fail:
//! its segment appends and fsyncs then return EIO until healed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Durable lengths of every segment file of the simulation.
#[derive(Debug, Default)]
pub struct SimDisk {
    durable: Mutex<BTreeMap<PathBuf, u64>>,
    /// Directories whose segment writes and fsyncs fail with EIO.
    failing: Mutex<std::collections::BTreeSet<PathBuf>>,
}

impl SimDisk {
    /// Segment appends and fsyncs under `dir` fail with EIO until [`SimDisk::heal`].
    pub fn fail(&self, dir: &Path) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        f.insert(dir.to_path_buf());
    }

    /// Writes under `dir` succeed again.
    pub fn heal(&self, dir: &Path) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(dir);
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

    fn write_error(&self, path: &Path) -> Option<std::io::Error> {
        let f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        f.iter()
            .any(|d| path.starts_with(d))
            .then(|| std::io::Error::from_raw_os_error(libc::EIO))
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
        // A failing disk fails writes under its directory only, until healed.
        disk.fail(&node);
        assert_eq!(
            disk.write_error(&f).map(|e| e.raw_os_error()),
            Some(Some(libc::EIO))
        );
        assert!(disk.write_error(&other).is_none());
        disk.heal(&node);
        assert!(disk.write_error(&f).is_none());
    }
}
