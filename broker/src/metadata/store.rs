//! Durable Raft storage for the metadata quorum (openraft 0.9 storage-v2): the log as JSON lines
//! (`raft-log.jsonl`, fsynced before an append is acknowledged, rewritten atomically on
//! truncation and purge), the vote (`raft-vote.json`, fsynced, atomically replaced, before it is
//! acknowledged), the committed id, and a state machine holding the [`MetadataImage`] that
//! publishes every change on a watch channel. The store holds the metadata dir's `.lock`
//! ([`crate::dirlock`]) from before it reads anything until it is dropped, so no second process
//! ever rewrites the files a running one appends to.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};

use super::image::{CommandResult, MetadataImage};
use super::TypeConfig;

type SE = StorageError<u64>;

fn io_write(e: impl std::error::Error + 'static) -> SE {
    StorageError::IO {
        source: StorageIOError::write_logs(AnyError::new(&e)),
    }
}

fn io_read(e: impl std::error::Error + 'static) -> SE {
    StorageError::IO {
        source: StorageIOError::read_logs(AnyError::new(&e)),
    }
}

/// Writes `bytes` to `path` through a temporary file, fsyncing file and directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        crate::storage::sync_all(&f)?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        crate::storage::sync_all(&std::fs::File::open(dir)?)?;
    }
    crate::storage::durable(path, bytes.len() as u64);
    Ok(())
}

#[derive(Debug)]
struct LogInner {
    dir: PathBuf,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    file: std::fs::File,
    _lock: crate::dirlock::DirLock,
}

impl LogInner {
    fn log_path(dir: &Path) -> PathBuf {
        dir.join("raft-log.jsonl")
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut text = Vec::new();
        for e in self.log.values() {
            serde_json::to_writer(&mut text, e).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        write_atomic(&Self::log_path(&self.dir), &text)?;
        write_atomic(
            &self.dir.join("raft-purged.json"),
            &serde_json::to_vec(&self.last_purged).map_err(std::io::Error::other)?,
        )?;
        self.file = std::fs::OpenOptions::new()
            .append(true)
            .open(Self::log_path(&self.dir))?;
        Ok(())
    }
}

/// The Raft log and vote, on disk.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (or creates) the store in `dir`, locking it first (a dir another process holds
    /// is refused before anything is read or written). A torn last line (a crash mid-append,
    /// never acknowledged) is dropped by rewriting the file atomically (temp file, fsync,
    /// rename); an intact file is left as it is.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        let lock = crate::dirlock::DirLock::acquire(dir).map_err(std::io::Error::other)?;
        let path = LogInner::log_path(dir);
        let mut log = BTreeMap::new();
        let mut torn = false;
        if let Ok(text) = std::fs::read_to_string(&path) {
            torn = !text.is_empty() && !text.ends_with('\n');
            for line in text.lines() {
                match serde_json::from_str::<Entry<TypeConfig>>(line) {
                    Ok(e) => {
                        log.insert(e.log_id.index, e);
                    }
                    Err(_) => {
                        tracing::warn!(file = %path.display(), "dropping a torn raft log line");
                        torn = true;
                        break;
                    }
                }
            }
        }
        let read_json =
            |name: &str| -> Option<String> { std::fs::read_to_string(dir.join(name)).ok() };
        let vote = read_json("raft-vote.json").and_then(|s| serde_json::from_str(&s).ok());
        let committed =
            read_json("raft-committed.json").and_then(|s| serde_json::from_str(&s).ok());
        let last_purged: Option<LogId<u64>> = read_json("raft-purged.json")
            .and_then(|s| serde_json::from_str(&s).ok())
            .flatten();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        // What is on disk when a store opens is what a simulated crash kept.
        crate::storage::durable_file(&path, &file);
        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            log,
            vote,
            committed,
            last_purged,
            file,
            _lock: lock,
        };
        if torn {
            // Drops the torn tail for good, so later appends start on a line of their own.
            inner.rewrite()?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SE> {
        let inner = self.inner.lock().await;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SE> {
        let inner = self.inner.lock().await;
        let last = inner.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SE> {
        let mut inner = self.inner.lock().await;
        let bytes = serde_json::to_vec(vote).map_err(io_write)?;
        write_atomic(&inner.dir.join("raft-vote.json"), &bytes).map_err(io_write)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SE> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SE> {
        let mut inner = self.inner.lock().await;
        let bytes = serde_json::to_vec(&committed).map_err(io_write)?;
        // Not needed for safety (Raft re-derives it), so no fsync: a plain write, which a
        // crash may leave empty (a simulated disk cuts it to nothing at a kill).
        let path = inner.dir.join("raft-committed.json");
        std::fs::write(&path, bytes).map_err(io_write)?;
        crate::storage::truncated(&path, 0);
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SE> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // A simulated stalled or slow disk holds the Raft log's append too.
        crate::storage::ready().await;
        let mut inner = self.inner.lock().await;
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, &e).map_err(io_write)?;
            buf.push(b'\n');
            inner.log.insert(e.log_id.index, e);
        }
        let res = inner
            .file
            .write_all(&buf)
            .and_then(|_| crate::storage::sync_data(&inner.file));
        if res.is_ok() {
            crate::storage::durable_file(&LogInner::log_path(&inner.dir), &inner.file);
        }
        let failed = res
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(io_write(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SE> {
        let mut inner = self.inner.lock().await;
        inner.log.split_off(&log_id.index);
        inner.rewrite().map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SE> {
        let mut inner = self.inner.lock().await;
        inner.log = inner.log.split_off(&(log_id.index + 1));
        inner.last_purged = Some(log_id);
        inner.rewrite().map_err(io_write)
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    image: MetadataImage,
}

#[derive(Debug)]
struct SmInner {
    data: SmData,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
}

/// The state machine: the metadata image, published on every applied batch.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    tx: Arc<watch::Sender<Arc<MetadataImage>>>,
}

impl StateMachine {
    /// A fresh state machine (rebuilt from the log on start) and a receiver of its images.
    pub fn new() -> (StateMachine, watch::Receiver<Arc<MetadataImage>>) {
        let (tx, rx) = watch::channel(Arc::new(MetadataImage::default()));
        (
            StateMachine {
                inner: Arc::new(Mutex::new(SmInner {
                    data: SmData::default(),
                    snapshot: None,
                })),
                tx: Arc::new(tx),
            },
            rx,
        )
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SE> {
        let mut inner = self.inner.lock().await;
        let bytes = serde_json::to_vec(&inner.data).map_err(io_read)?;
        let meta = SnapshotMeta {
            last_log_id: inner.data.last_applied,
            last_membership: inner.data.membership.clone(),
            snapshot_id: format!("snap-{}", inner.data.last_applied.map_or(0, |l| l.index)),
        };
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), SE> {
        let inner = self.inner.lock().await;
        Ok((inner.data.last_applied, inner.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        for e in entries {
            inner.data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(CommandResult::default()),
                EntryPayload::Normal(cmd) => {
                    out.push(inner.data.image.apply(e.log_id.index, &cmd));
                }
                EntryPayload::Membership(m) => {
                    inner.data.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(CommandResult::default());
                }
            }
        }
        self.tx.send_replace(Arc::new(inner.data.image.clone()));
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SE> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SE> {
        let bytes = snapshot.into_inner();
        let data: SmData = serde_json::from_slice(&bytes).map_err(io_read)?;
        let mut inner = self.inner.lock().await;
        inner.data = data;
        inner.snapshot = Some((meta.clone(), bytes));
        self.tx.send_replace(Arc::new(inner.data.image.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SE> {
        let inner = self.inner.lock().await;
        Ok(inner.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Command;
    use openraft::CommittedLeaderId;
    use std::os::unix::fs::MetadataExt;

    fn line(index: u64) -> String {
        let e: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::AllocateProducerId),
        };
        serde_json::to_string(&e).expect("json")
    }

    async fn last_index(store: &mut LogStore) -> Option<u64> {
        store
            .get_log_state()
            .await
            .expect("state")
            .last_log_id
            .map(|l| l.index)
    }

    #[tokio::test]
    async fn an_intact_log_is_not_rewritten_and_a_torn_tail_is_dropped_keeping_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = LogInner::log_path(dir.path());
        std::fs::write(&path, format!("{}\n{}\n", line(1), line(2))).expect("write");
        let inode = std::fs::metadata(&path).expect("meta").ino();
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            assert_eq!(last_index(&mut s).await, Some(2));
        }
        assert_eq!(
            std::fs::metadata(&path).expect("meta").ino(),
            inode,
            "an intact file is appended to in place, never replaced"
        );
        // A crash mid-append: half of entry 3.
        let torn = line(3);
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(&torn[..torn.len() / 2]);
        std::fs::write(&path, text).expect("write");
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(last_index(&mut s).await, Some(2), "entries 1 and 2 survive");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            format!("{}\n{}\n", line(1), line(2)),
            "torn tail gone"
        );
    }

    /// What a simulated disk is told.
    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<(String, &'static str, u64)>>);

    impl crate::storage::DiskObserver for Recorder {
        fn durable(&self, path: &Path, len: u64) {
            self.note(path, "durable", len);
        }
        fn truncated(&self, path: &Path, len: u64) {
            self.note(path, "truncated", len);
        }
        fn deleted(&self, path: &Path) {
            self.note(path, "deleted", 0);
        }
    }

    impl Recorder {
        fn note(&self, path: &Path, what: &'static str, len: u64) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push((
                name.unwrap_or_default(),
                what,
                len,
            ));
        }
    }

    #[tokio::test]
    async fn a_simulated_disk_learns_the_raft_logs_durable_length_and_that_committed_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = LogInner::log_path(dir.path());
        let torn = line(2);
        let kept = format!("{}\n", line(1));
        std::fs::write(&path, format!("{kept}{}", &torn[..torn.len() / 2])).expect("write");
        let seen = Arc::new(Recorder::default());
        crate::storage::set_thread_observer(Some(seen.clone()));
        let mut s = LogStore::open(dir.path()).expect("open");
        s.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 1)))
            .await
            .expect("save committed");
        crate::storage::set_thread_observer(None);
        let seen = seen.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let log_lengths: Vec<u64> = seen
            .iter()
            .filter(|(n, w, _)| n == "raft-log.jsonl" && *w == "durable")
            .map(|(_, _, l)| *l)
            .collect();
        // The torn file as opened, then the rewrite without its torn tail (the last word).
        assert_eq!(log_lengths.last(), Some(&(kept.len() as u64)), "{seen:?}");
        assert!(
            seen.contains(&("raft-committed.json".into(), "truncated", 0)),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_second_store_on_a_held_dir_is_refused_before_touching_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = LogInner::log_path(dir.path());
        std::fs::write(&path, format!("{}\n", line(1))).expect("write");
        let _first = LogStore::open(dir.path()).expect("open");
        let before = std::fs::metadata(&path).expect("meta");
        let err = LogStore::open(dir.path()).expect_err("held");
        assert!(
            err.to_string().contains("in use by another broker"),
            "{err}"
        );
        let after = std::fs::metadata(&path).expect("meta");
        assert_eq!(
            (before.ino(), before.mtime_nsec()),
            (after.ino(), after.mtime_nsec())
        );
    }
}
