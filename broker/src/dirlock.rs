//! Exclusive ownership of a data directory, as Kafka's `.lock` file: each log dir and the
//! metadata dir hold a `.lock` file locked with `flock(LOCK_EX | LOCK_NB)` for the life of the
//! process, with the holder's pid written in it. A second broker process on the same dir
//! fails before it reads or writes anything else there, naming the dir and the holder. The
//! kernel drops the lock when the process dies (a `kill -9` included), so a crash never leaves
//! a stale lock behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = ".lock";

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds the lock.
    #[error("{} is in use by another broker process (pid {holder}, per {}); stop it or choose another directory", dir.display(), dir.join(LOCK_FILE).display())]
    Held {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid as written in the lock file (`unknown` if unreadable).
        holder: String,
    },
    /// The lock file could not be created, locked or written.
    #[error("locking {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A held directory lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it exclusively, writing this process's pid into the
    /// lock file once the lock is held (a refused attempt writes nothing).
    pub fn acquire(dir: &Path) -> Result<DirLock, DirLockError> {
        let io = |source| DirLockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
                    _ => "unknown".to_string(),
                };
                return Err(DirLockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            let unsupported = [libc::ENOSYS, libc::EOPNOTSUPP, libc::ENOLCK];
            if !err.raw_os_error().is_some_and(|c| unsupported.contains(&c)) {
                return Err(io(err));
            }
            // A filesystem without flock: run unprotected rather than not at all, and say so.
            tracing::warn!(dir = %dir.display(), error = %err,
                "this filesystem cannot lock the directory; a second broker on it would not be refused");
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        tracing::debug!(dir = %dir.display(), "directory locked");
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holder_named_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first lock");
        let err = DirLock::acquire(dir.path()).expect_err("second lock refused");
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        let pid = std::fs::read_to_string(dir.path().join(LOCK_FILE)).expect("lock file");
        assert_eq!(
            pid.trim(),
            std::process::id().to_string(),
            "refusal wrote nothing"
        );
        drop(first);
        DirLock::acquire(dir.path()).expect("free again once dropped");
    }
}
