//! Disk faults: a FUSE passthrough filesystem (fuser, served in-process on background threads)
//! mounted as a node's data dir over a backing directory, controlled through [`DiskControl`]:
//! added latency per operation, a full stall until resumed, EIO on writes or on fsync, and
//! LazyFS-style "lose unfsynced writes" (every write since a file's last fsync is undone on
//! command, restoring overwritten bytes and the length at the last fsync). Metadata operations
//! (create, rename, unlink, mkdir) are treated as durable; a file created since mount and never
//! fsynced loses all of its contents.
//!
//! Also offline file faults, as Jepsen's: truncate the tail of a file, flip bits in a file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::NemesisError;
use crate::process::lock;

/// A disk fault on a fault FS mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DiskFault {
    /// Sleep this long before every operation.
    Latency {
        /// Milliseconds per operation.
        per_op_ms: u64,
    },
    /// Block every operation until the fault is stopped.
    Stall,
    /// Fail every write with EIO.
    EioWrites,
    /// Fail every fsync with EIO.
    EioFsync,
}

/// An offline fault on one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum FileFault {
    /// Cut this many bytes off the end of the file.
    TruncateTail {
        /// Bytes to remove (at most the file's length).
        bytes: u64,
        /// Seed used to choose the file when none is named.
        seed: u64,
    },
    /// Flip this many random bits in the file.
    BitFlip {
        /// Number of bits to flip.
        flips: u32,
        /// Seed for the positions.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct Undo {
    /// The length at the last fsync (or at the first write after mount).
    synced_len: u64,
    /// (offset, bytes that were there before) for every write since then, in order.
    overwritten: Vec<(u64, Vec<u8>)>,
}

/// Live controls of one fault FS mount (shared with the FS threads).
#[derive(Debug)]
pub struct DiskControl {
    backing: PathBuf,
    latency_ms: AtomicU64,
    eio_writes: AtomicBool,
    eio_fsync: AtomicBool,
    stalled: Mutex<bool>,
    resumed: Condvar,
    dirty: Mutex<HashMap<u64, Undo>>,
    inodes: Mutex<Inodes>,
}

impl DiskControl {
    fn new(backing: &Path) -> Self {
        Self {
            backing: backing.to_path_buf(),
            latency_ms: AtomicU64::new(0),
            eio_writes: AtomicBool::new(false),
            eio_fsync: AtomicBool::new(false),
            stalled: Mutex::new(false),
            resumed: Condvar::new(),
            dirty: Mutex::new(HashMap::new()),
            inodes: Mutex::new(Inodes::default()),
        }
    }

    /// Starts `fault` (faults of different kinds add up).
    pub fn start(&self, fault: &DiskFault) {
        match fault {
            DiskFault::Latency { per_op_ms } => self.latency_ms.store(*per_op_ms, Ordering::SeqCst),
            DiskFault::Stall => *lock(&self.stalled) = true,
            DiskFault::EioWrites => self.eio_writes.store(true, Ordering::SeqCst),
            DiskFault::EioFsync => self.eio_fsync.store(true, Ordering::SeqCst),
        }
    }

    /// Clears every fault and wakes stalled operations.
    pub fn clear(&self) {
        self.latency_ms.store(0, Ordering::SeqCst);
        self.eio_writes.store(false, Ordering::SeqCst);
        self.eio_fsync.store(false, Ordering::SeqCst);
        *lock(&self.stalled) = false;
        self.resumed.notify_all();
    }

    /// The backing directory the FUSE mount passes through to (readable while the mount is
    /// stalled).
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// True when any fault is active.
    pub fn active(&self) -> bool {
        self.latency_ms.load(Ordering::SeqCst) > 0
            || self.eio_writes.load(Ordering::SeqCst)
            || self.eio_fsync.load(Ordering::SeqCst)
            || *lock(&self.stalled)
    }

    /// Bytes written since the last fsync, over all files.
    pub fn unfsynced_bytes(&self) -> u64 {
        lock(&self.dirty)
            .values()
            .flat_map(|u| u.overwritten.iter())
            .map(|(_, b)| b.len() as u64)
            .sum()
    }

    /// Undoes every write since each file's last fsync. Call it only while nothing writes
    /// (after the service is killed). Returns (files touched, bytes of length dropped).
    pub fn lose_unfsynced(&self) -> Result<(usize, u64), NemesisError> {
        let backing = &self.backing;
        let dirty: HashMap<u64, Undo> = std::mem::take(&mut *lock(&self.dirty));
        let inodes = lock(&self.inodes);
        let mut dropped = 0;
        let mut files = 0;
        for (ino, undo) in dirty {
            let Some(rel) = inodes.paths.get(&ino) else {
                continue;
            };
            let path = backing.join(rel);
            let io = |source| NemesisError::Io {
                path: path.clone(),
                source,
            };
            let f = match OpenOptions::new().write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            for (off, old) in undo.overwritten.iter().rev() {
                if !old.is_empty() {
                    f.write_at(old, *off).map_err(io)?;
                }
            }
            let len = f.metadata().map_err(io)?.len();
            dropped += len.saturating_sub(undo.synced_len);
            f.set_len(undo.synced_len).map_err(io)?;
            files += 1;
        }
        Ok((files, dropped))
    }

    fn before_op(&self) {
        let mut stalled = lock(&self.stalled);
        while *stalled {
            stalled = self
                .resumed
                .wait(stalled)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(stalled);
        let ms = self.latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

#[derive(Debug)]
struct Inodes {
    paths: HashMap<u64, PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut s = Self {
            paths: HashMap::new(),
            by_path: HashMap::new(),
            next: 2,
        };
        s.paths.insert(1, PathBuf::new());
        s.by_path.insert(PathBuf::new(), 1);
        s
    }
}

impl Inodes {
    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(i) = self.by_path.get(rel) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.paths.insert(i, rel.to_path_buf());
        self.by_path.insert(rel.to_path_buf(), i);
        i
    }

    fn rename(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        if let Some(old) = self.by_path.remove(to) {
            self.paths.remove(&old);
        }
        for (p, i) in moved {
            self.by_path.remove(&p);
            let rest = p
                .strip_prefix(from)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let np = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.paths.insert(i, np.clone());
            self.by_path.insert(np, i);
        }
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(i) = self.by_path.remove(rel) {
            self.paths.remove(&i);
        }
    }
}

/// The FUSE filesystem: a passthrough over `backing` with the faults of `control`.
struct FaultFs {
    backing: PathBuf,
    control: Arc<DiskControl>,
    handles: Mutex<HashMap<u64, File>>,
    next_fh: AtomicU64,
}

const TTL: Duration = Duration::ZERO;

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn to_attr(ino: u64, md: &std::fs::Metadata) -> FileAttr {
    let t = |s: i64, ns: i64| {
        if s >= 0 {
            UNIX_EPOCH + Duration::new(s as u64, ns as u32)
        } else {
            UNIX_EPOCH
        }
    };
    let kind = if md.is_dir() {
        FileType::Directory
    } else if md.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: md.size(),
        blocks: md.blocks(),
        atime: t(md.atime(), md.atime_nsec()),
        mtime: t(md.mtime(), md.mtime_nsec()),
        ctime: t(md.ctime(), md.ctime_nsec()),
        crtime: t(md.ctime(), md.ctime_nsec()),
        kind,
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev() as u32,
        blksize: md.blksize() as u32,
        flags: 0,
    }
}

impl FaultFs {
    fn rel(&self, ino: INodeNo) -> Option<PathBuf> {
        lock(&self.control.inodes).paths.get(&ino.0).cloned()
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Option<PathBuf> {
        self.rel(parent).map(|p| p.join(name))
    }

    fn entry(&self, rel: &Path, reply: ReplyEntry) {
        match std::fs::symlink_metadata(self.backing.join(rel)) {
            Ok(md) => {
                let ino = lock(&self.control.inodes).ino_for(rel);
                reply.entry(&TTL, &to_attr(ino, &md), Generation(0));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open_file(&self, rel: &Path, flags: i32, create: Option<u32>) -> std::io::Result<u64> {
        let acc = flags & libc::O_ACCMODE;
        let mut o = OpenOptions::new();
        o.read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
            .append(flags & libc::O_APPEND != 0);
        if flags & libc::O_TRUNC != 0 {
            o.truncate(true);
        }
        if let Some(mode) = create {
            o.create(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
        }
        let f = o.open(self.backing.join(rel))?;
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        lock(&self.handles).insert(fh, f);
        Ok(fh)
    }

    fn record_write(&self, ino: u64, f: &File, offset: u64, len: usize) -> std::io::Result<()> {
        let cur = f.metadata()?.len();
        let mut dirty = lock(&self.control.dirty);
        let undo = dirty.entry(ino).or_insert_with(|| Undo {
            synced_len: cur,
            overwritten: Vec::new(),
        });
        let end = (offset + len as u64).min(cur);
        let mut old = Vec::new();
        if end > offset {
            old.resize((end - offset) as usize, 0);
            f.read_exact_at(&mut old, offset)?;
        }
        undo.overwritten.push((offset, old));
        Ok(())
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.control.before_op();
        match self.child(parent, name) {
            Some(rel) => self.entry(&rel, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.control.before_op();
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::symlink_metadata(self.backing.join(rel)) {
            Ok(md) => reply.attr(&TTL, &to_attr(ino.0, &md)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.control.before_op();
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let path = self.backing.join(&rel);
        let r = (|| -> std::io::Result<std::fs::Metadata> {
            if let Some(m) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m & 0o7777))?;
            }
            if let Some(len) = size {
                let f = OpenOptions::new().read(true).write(true).open(&path)?;
                let cur = f.metadata()?.len();
                if len < cur {
                    self.record_write(ino.0, &f, len, (cur - len) as usize)?;
                } else {
                    self.record_write(ino.0, &f, cur, 0)?;
                }
                f.set_len(len)?;
            }
            std::fs::symlink_metadata(&path)
        })();
        match r {
            Ok(md) => reply.attr(&TTL, &to_attr(ino.0, &md)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.control.before_op();
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        let path = self.backing.join(&rel);
        match std::fs::create_dir(&path).and_then(|_| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
        }) {
            Ok(()) => self.entry(&rel, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.control.before_op();
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_file(self.backing.join(&rel)) {
            Ok(()) => {
                let mut inodes = lock(&self.control.inodes);
                if let Some(i) = inodes.by_path.get(&rel).copied() {
                    lock(&self.control.dirty).remove(&i);
                }
                inodes.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.control.before_op();
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_dir(self.backing.join(&rel)) {
            Ok(()) => {
                lock(&self.control.inodes).forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.control.before_op();
        let (Some(from), Some(to)) = (self.child(parent, name), self.child(newparent, newname))
        else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::rename(self.backing.join(&from), self.backing.join(&to)) {
            Ok(()) => {
                lock(&self.control.inodes).rename(&from, &to);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.control.before_op();
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if flags.0 & libc::O_TRUNC != 0 {
            if let Ok(f) = OpenOptions::new().read(true).open(self.backing.join(&rel)) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = self.record_write(ino.0, &f, 0, len as usize);
            }
        }
        match self.open_file(&rel, flags.0, None) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.control.before_op();
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        let existed = self.backing.join(&rel).exists();
        match self.open_file(&rel, flags, Some(mode)) {
            Ok(fh) => match std::fs::symlink_metadata(self.backing.join(&rel)) {
                Ok(md) => {
                    let ino = lock(&self.control.inodes).ino_for(&rel);
                    if !existed {
                        lock(&self.control.dirty).entry(ino).or_default();
                    }
                    reply.created(
                        &TTL,
                        &to_attr(ino, &md),
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => reply.error(errno(&e)),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.control.before_op();
        let handles = lock(&self.handles);
        let Some(f) = handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..n]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.control.before_op();
        if self.control.eio_writes.load(Ordering::SeqCst) {
            return reply.error(Errno::EIO);
        }
        let handles = lock(&self.handles);
        let Some(f) = handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let offset = if flags.0 & libc::O_APPEND != 0 {
            f.metadata().map(|m| m.len()).unwrap_or(offset)
        } else {
            offset
        };
        if let Err(e) = self.record_write(ino.0, f, offset, data.len()) {
            return reply.error(errno(&e));
        }
        match f.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.control.before_op();
        if self.control.eio_fsync.load(Ordering::SeqCst) {
            return reply.error(Errno::EIO);
        }
        let handles = lock(&self.handles);
        let Some(f) = handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match f.sync_all() {
            Ok(()) => {
                lock(&self.control.dirty).remove(&ino.0);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        self.control.before_op();
        if self.control.eio_fsync.load(Ordering::SeqCst) {
            return reply.error(Errno::EIO);
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.control.before_op();
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let rd = match std::fs::read_dir(self.backing.join(&rel)) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (1, FileType::Directory, "..".into()),
        ];
        for e in rd.flatten() {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let child = rel.join(e.file_name());
            let i = lock(&self.control.inodes).ino_for(&child);
            entries.push((i, kind, e.file_name()));
        }
        for (idx, (i, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), idx as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(_) => reply.statfs(0, 0, 0, 0, 0, 512, 255, 0),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A mounted fault FS. Dropping it clears faults (waking stalled operations) and unmounts.
pub struct DiskMount {
    control: Arc<DiskControl>,
    backing: PathBuf,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl std::fmt::Debug for DiskMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskMount")
            .field("backing", &self.backing)
            .field("mountpoint", &self.mountpoint)
            .finish()
    }
}

/// The FS name our mounts carry in /proc/mounts (so leftovers can be found).
pub const FS_NAME: &str = "jepsen_nemesis";

impl DiskMount {
    /// Mounts a fault FS at `mountpoint` passing through to `backing` (both are created).
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<DiskMount, NemesisError> {
        for p in [backing, mountpoint] {
            std::fs::create_dir_all(p).map_err(|source| NemesisError::Io {
                path: p.to_path_buf(),
                source,
            })?;
        }
        let control = Arc::new(DiskControl::new(backing));
        let fs = FaultFs {
            backing: backing.to_path_buf(),
            control: control.clone(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName(FS_NAME.into()),
            fuser::MountOption::CUSTOM("allow_other".into()),
        ];
        config.n_threads = Some(4);
        let session =
            fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| NemesisError::Io {
                path: mountpoint.to_path_buf(),
                source,
            })?;
        Ok(DiskMount {
            control,
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
        })
    }

    /// The controls of this mount.
    pub fn control(&self) -> Arc<DiskControl> {
        self.control.clone()
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Drops every unfsynced write (see [`DiskControl::lose_unfsynced`]).
    pub fn lose_unfsynced(&self) -> Result<(usize, u64), NemesisError> {
        self.control.lose_unfsynced()
    }

    /// Clears faults and unmounts (lazily if busy).
    pub fn unmount(&mut self) {
        self.control.clear();
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Drop for DiskMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Applies `fault` to `file` (offline: the service should not be writing it).
/// Returns a description for the nemesis op.
pub fn corrupt_file(file: &Path, fault: &FileFault) -> Result<serde_json::Value, NemesisError> {
    let io = |source| NemesisError::Io {
        path: file.to_path_buf(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    match fault {
        FileFault::TruncateTail { bytes, .. } => {
            let cut = (*bytes).min(len);
            f.set_len(len - cut).map_err(io)?;
            Ok(serde_json::json!({"file": file, "truncated-bytes": cut, "new-length": len - cut}))
        }
        FileFault::BitFlip { flips, seed } => {
            if len == 0 {
                return Ok(serde_json::json!({"file": file, "flipped-bits": 0}));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let mut positions = Vec::new();
            for _ in 0..*flips {
                let off = rng.random_range(0..len);
                let bit = rng.random_range(0..8u8);
                let mut b = [0u8];
                f.read_exact_at(&mut b, off).map_err(io)?;
                b[0] ^= 1 << bit;
                f.write_all_at(&b, off).map_err(io)?;
                positions.push(serde_json::json!([off, bit]));
            }
            Ok(serde_json::json!({"file": file, "flipped-bits": positions}))
        }
    }
}

/// Picks a file under `dir` (largest first among regular files, chosen by `seed` among the
/// largest few) for a file fault.
pub fn pick_file(dir: &Path, seed: u64) -> Option<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() && m.len() > 0 => files.push((m.len(), p)),
                _ => {}
            }
        }
    }
    files.sort();
    files.reverse();
    files.truncate(4);
    if files.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let i = rng.random_range(0..files.len());
    Some(files.swap_remove(i).1)
}
