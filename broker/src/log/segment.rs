//! One log segment: a `.log` file of whole record batches named by its base offset, with a sparse
//! offset index (`.index`: 4-byte relative offset, 4-byte position) and a time index
//! (`.timeindex`: 8-byte timestamp, 4-byte relative offset). Both indexes are kept in memory and
//! mirrored to their files; they are derived data, rebuilt from the `.log` when missing or
//! inconsistent.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::batch::{self, BatchHeader, HEADER_SIZE};
use super::LogError;

/// File name stem of a segment: the base offset, zero-padded to 20 digits.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// The error of an I/O call on `path`; the path is copied only when the call fails (reads and
/// appends are hot paths).
fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    }
}

/// What scanning a segment's `.log` file found.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanReport {
    /// Batches that were valid.
    pub batches: u64,
    /// Where the valid data ends (bytes); everything after it was cut off.
    pub valid_bytes: u64,
    /// Bytes cut off after the valid data.
    pub truncated_bytes: u64,
}

/// An open segment.
#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    /// The `.log`, `.index` and `.timeindex` paths (built once: they are in every error).
    paths: (PathBuf, PathBuf, PathBuf),
    log: File,
    index_file: File,
    time_index_file: File,
    size: u64,
    next_offset: i64,
    index: Vec<(u32, u32)>,
    time_index: Vec<(i64, u32)>,
    bytes_since_index: u64,
    max_timestamp: i64,
    /// Milliseconds (broker clock) of the first append, or of opening for loaded segments.
    created_ms: i64,
    index_interval_bytes: u32,
    /// A batch boundary a read ended at, `(base offset of the batch there, position)`: the
    /// next fetch usually starts there, so [`Segment::position_of`] scans from it instead of
    /// from the sparse index entry before it. Cleared when the segment is truncated.
    hint: std::sync::Mutex<Option<(i64, u64)>>,
}

impl Segment {
    fn paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
        let stem = file_stem(base);
        (
            dir.join(format!("{stem}.log")),
            dir.join(format!("{stem}.index")),
            dir.join(format!("{stem}.timeindex")),
        )
    }

    fn open_rw(path: &Path, truncate: bool) -> Result<File, LogError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(path)
            .map_err(io_err(path, "open"))
    }

    /// Creates a new, empty segment at `base_offset`.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let seg = Self::empty(dir, base_offset, index_interval_bytes, true, now_ms)?;
        crate::storage::durable(seg.log_path(), 0);
        Ok(seg)
    }

    /// A segment with its three files open (truncated when `truncate`) and nothing scanned yet.
    fn empty(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        truncate: bool,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let (log_p, idx_p, tidx_p) = Self::paths(dir, base_offset);
        Ok(Segment {
            base_offset,
            log: Self::open_rw(&log_p, truncate)?,
            index_file: Self::open_rw(&idx_p, truncate)?,
            time_index_file: Self::open_rw(&tidx_p, truncate)?,
            paths: (log_p, idx_p, tidx_p),
            size: 0,
            next_offset: base_offset,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            max_timestamp: -1,
            created_ms: now_ms,
            index_interval_bytes,
            hint: std::sync::Mutex::new(None),
        })
    }

    /// Opens an existing segment. It scans the `.log` file's batches (validating CRCs when
    /// `validate` is set, which recovery does for segments after the recovery point), cuts off
    /// anything after the last whole valid batch, and rebuilds the indexes; `rebuilt` tells whether
    /// the index files on disk differed from the rebuilt ones (missing or corrupt).
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        validate: bool,
        now_ms: i64,
    ) -> Result<(Segment, ScanReport, bool), LogError> {
        let log_p = Self::paths(dir, base_offset).0;
        let mut seg = Self::empty(dir, base_offset, index_interval_bytes, false, now_ms)?;
        let file_len = seg.log.metadata().map_err(io_err(&log_p, "stat"))?.len();
        let mut report = ScanReport::default();
        let mut pos = 0u64;
        let mut header = [0u8; HEADER_SIZE];
        let mut body = Vec::new();
        while pos + HEADER_SIZE as u64 <= file_len {
            if seg.log.read_exact_at(&mut header, pos).is_err() {
                break;
            }
            let h = match BatchHeader::parse(&header) {
                Ok(h) => h,
                Err(_) => break,
            };
            let total = h.total_size() as u64;
            if pos + total > file_len || h.base_offset != seg.next_offset || h.last_offset_delta < 0
            {
                break;
            }
            if validate {
                body.resize(total as usize, 0);
                if seg.log.read_exact_at(&mut body, pos).is_err() || batch::validate(&body).is_err()
                {
                    break;
                }
            }
            seg.note_batch(&h, pos);
            pos += total;
            report.batches += 1;
        }
        report.valid_bytes = pos;
        report.truncated_bytes = file_len - pos;
        if pos < file_len {
            seg.log.set_len(pos).map_err(io_err(&log_p, "truncate"))?;
            crate::storage::sync_all(&seg.log).map_err(io_err(&log_p, "fsync"))?;
        }
        seg.size = pos;
        // What recovery found on disk is what a simulated crash kept: durable.
        crate::storage::durable(&log_p, pos);
        let rebuilt = seg.rewrite_index_files_if_different()?;
        Ok((seg, report, rebuilt))
    }

    /// Records a batch written at `pos` in the in-memory state (indexes, next offset, timestamps).
    fn note_batch(&mut self, h: &BatchHeader, pos: u64) {
        let rel = (h.base_offset - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index >= u64::from(self.index_interval_bytes) {
            self.index.push((rel, pos as u32));
            self.bytes_since_index = 0;
            if h.max_timestamp > self.time_index.last().map_or(-1, |e| e.0) {
                self.time_index.push((h.max_timestamp, rel));
            }
        }
        self.bytes_since_index += h.total_size() as u64;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.next_offset = h.next_offset();
    }

    fn encode_indexes(&self) -> (Vec<u8>, Vec<u8>) {
        let mut idx = Vec::with_capacity(self.index.len() * 8);
        for (rel, pos) in &self.index {
            idx.extend_from_slice(&rel.to_be_bytes());
            idx.extend_from_slice(&pos.to_be_bytes());
        }
        let mut tidx = Vec::with_capacity(self.time_index.len() * 12);
        for (ts, rel) in &self.time_index {
            tidx.extend_from_slice(&ts.to_be_bytes());
            tidx.extend_from_slice(&rel.to_be_bytes());
        }
        (idx, tidx)
    }

    fn rewrite_index_files_if_different(&mut self) -> Result<bool, LogError> {
        let (idx, tidx) = self.encode_indexes();
        let (_, idx_p, tidx_p) = &self.paths;
        let same = |p: &Path, want: &[u8]| fs::read(p).map(|have| have == want).unwrap_or(false);
        let rebuilt = !same(idx_p, &idx) || !same(tidx_p, &tidx);
        if rebuilt {
            for (file, bytes, p) in [
                (&self.index_file, &idx, idx_p),
                (&self.time_index_file, &tidx, tidx_p),
            ] {
                file.set_len(0).map_err(io_err(p, "truncate index"))?;
                file.write_all_at(bytes, 0)
                    .map_err(io_err(p, "write index"))?;
            }
        }
        Ok(rebuilt)
    }

    /// Appends one validated batch (already patched) at the end of the file.
    pub fn append(&mut self, h: &BatchHeader, bytes: &[u8], now_ms: i64) -> Result<(), LogError> {
        if self.size == 0 {
            self.created_ms = now_ms;
        }
        let pos = self.size;
        let log_p = &self.paths.0;
        crate::storage::check_append(log_p).map_err(io_err(log_p, "append"))?;
        self.log
            .write_all_at(bytes, pos)
            .map_err(io_err(log_p, "append"))?;
        let (n_idx, n_tidx) = (self.index.len(), self.time_index.len());
        self.note_batch(h, pos);
        self.size += bytes.len() as u64;
        if self.index.len() > n_idx {
            let (rel, p) = self.index[n_idx];
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&rel.to_be_bytes());
            e[4..].copy_from_slice(&p.to_be_bytes());
            self.index_file
                .write_all_at(&e, n_idx as u64 * 8)
                .map_err(io_err(&self.paths.1, "append index"))?;
        }
        if self.time_index.len() > n_tidx {
            let (ts, rel) = self.time_index[n_tidx];
            let mut e = [0u8; 12];
            e[..8].copy_from_slice(&ts.to_be_bytes());
            e[8..].copy_from_slice(&rel.to_be_bytes());
            self.time_index_file
                .write_all_at(&e, n_tidx as u64 * 12)
                .map_err(io_err(&self.paths.2, "append time index"))?;
        }
        Ok(())
    }

    fn log_path(&self) -> &Path {
        &self.paths.0
    }

    /// Base offset (first offset the segment may hold).
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last record in the segment.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes in the `.log` file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest record timestamp in the segment (-1 when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// When the segment started taking appends (broker clock, ms).
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// Reads the header of the batch at `pos`, if a whole header is there.
    pub fn header_at(&self, pos: u64) -> Result<Option<BatchHeader>, LogError> {
        if pos + HEADER_SIZE as u64 > self.size {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_SIZE];
        self.log
            .read_exact_at(&mut header, pos)
            .map_err(io_err(self.log_path(), "read"))?;
        BatchHeader::parse(&header).map(Some)
    }

    /// A forward reader of this segment through one buffer ([`ReadAhead`]).
    pub fn read_ahead(&self) -> ReadAhead<'_> {
        ReadAhead {
            seg: self,
            at: 0,
            buf: Vec::new(),
        }
    }

    /// Reads `len` bytes at `pos`.
    pub fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; len];
        self.log
            .read_exact_at(&mut buf, pos)
            .map_err(io_err(self.log_path(), "read"))?;
        Ok(buf)
    }

    /// Appends the `len` bytes at `pos` to `out` (no buffer of its own).
    pub fn read_into(&self, pos: u64, len: usize, out: &mut Vec<u8>) -> Result<(), LogError> {
        let at = out.len();
        out.resize(at + len, 0);
        let r = self.log.read_exact_at(&mut out[at..], pos);
        if r.is_err() {
            out.truncate(at);
        }
        r.map_err(io_err(self.log_path(), "read"))
    }

    /// Position of the batch containing `offset` (or the first batch after it), from the sparse
    /// index and a short header scan; `None` when `offset` is past the segment's end.
    pub fn position_of(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset - self.base_offset).max(0) as u32;
        let slot = self.index.partition_point(|&(r, _)| r <= rel);
        let mut pos = if slot == 0 {
            0
        } else {
            u64::from(self.index[slot - 1].1)
        };
        // A boundary a read ended at, between the index entry and `offset`: a shorter scan
        // (the same answer: both are batch boundaries at or before `offset`'s batch).
        if let Some((o, p)) = *self.hint.lock().unwrap_or_else(|e| e.into_inner()) {
            if o <= offset && p > pos {
                pos = p;
            }
        }
        while let Some(h) = self.header_at(pos)? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }

    /// Notes that a read ended at `pos`, where the batch with base offset `offset` starts (or
    /// the segment ends): the next [`Segment::position_of`] at or after `offset` scans from
    /// there.
    pub fn note_read_end(&self, offset: i64, pos: u64) {
        if pos <= self.size {
            *self.hint.lock().unwrap_or_else(|e| e.into_inner()) = Some((offset, pos));
        }
    }

    /// Position from which batches with timestamps >= `ts` may start (time index lookup).
    pub fn position_for_timestamp(&self, ts: i64) -> Result<u64, LogError> {
        let slot = self.time_index.partition_point(|&(t, _)| t < ts);
        if slot == 0 {
            return Ok(0);
        }
        let rel = self.time_index[slot - 1].1;
        Ok(self
            .position_of(self.base_offset + i64::from(rel))?
            .map_or(0, |(p, _)| p))
    }

    /// Cuts the segment at `pos` (a batch boundary) with `next_offset` as its new end.
    pub fn truncate_at(&mut self, pos: u64, next_offset: i64) -> Result<(), LogError> {
        *self.hint.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        let log_p = &self.paths.0;
        self.log.set_len(pos).map_err(io_err(log_p, "truncate"))?;
        crate::storage::truncated(log_p, pos);
        self.size = pos;
        self.next_offset = next_offset;
        // Rebuild the in-memory indexes and timestamps from what remains.
        self.index.clear();
        self.time_index.clear();
        self.bytes_since_index = 0;
        self.max_timestamp = -1;
        self.next_offset = self.base_offset;
        let mut p = 0;
        while let Some(h) = self.header_at(p)? {
            self.note_batch(&h, p);
            p += h.total_size() as u64;
        }
        self.rewrite_index_files_if_different()?;
        Ok(())
    }

    /// fsyncs the log file (indexes are derived data and rebuilt on recovery).
    pub fn sync(&self) -> Result<(), LogError> {
        let log_p = self.log_path();
        crate::storage::check_fsync(log_p).map_err(io_err(log_p, "fsync"))?;
        crate::storage::sync_data(&self.log).map_err(io_err(log_p, "fsync"))?;
        crate::storage::durable(log_p, self.size);
        Ok(())
    }

    /// Removes the segment's files.
    pub fn delete(self) -> Result<(), LogError> {
        let (a, b, c) = self.paths.clone();
        crate::storage::deleted(&a);
        for p in [a, b, c] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p, "delete")(e)),
            }
        }
        Ok(())
    }
}

/// Bytes one read of a [`ReadAhead`] takes at least (bounded by the segment's end).
const READ_AHEAD: usize = 64 * 1024;

/// Reads a segment forward through one buffer: a fetch walks batch after batch, and one read
/// of a chunk serves many batch headers and bodies, where reading each header and each body on
/// its own costs two system calls per batch (a consumer reading a partition from its start,
/// one small batch per send, made thousands).
pub struct ReadAhead<'a> {
    seg: &'a Segment,
    /// The segment position of `buf[0]`.
    at: u64,
    buf: Vec<u8>,
}

impl ReadAhead<'_> {
    /// Whether `len` bytes at `pos` are in the segment; if so they are in the buffer after.
    fn fill(&mut self, pos: u64, len: usize) -> Result<bool, LogError> {
        let end = pos + len as u64;
        if end > self.seg.size {
            return Ok(false);
        }
        if pos >= self.at && end <= self.at + self.buf.len() as u64 {
            return Ok(true);
        }
        let want = (len.max(READ_AHEAD) as u64).min(self.seg.size - pos) as usize;
        self.buf.clear();
        self.buf.resize(want, 0);
        let r = self.seg.log.read_exact_at(&mut self.buf, pos);
        if let Err(e) = r {
            self.buf.clear();
            return Err(io_err(self.seg.log_path(), "read")(e));
        }
        self.at = pos;
        Ok(true)
    }

    /// As [`Segment::header_at`].
    pub fn header_at(&mut self, pos: u64) -> Result<Option<BatchHeader>, LogError> {
        if !self.fill(pos, HEADER_SIZE)? {
            return Ok(None);
        }
        let i = (pos - self.at) as usize;
        BatchHeader::parse(&self.buf[i..i + HEADER_SIZE]).map(Some)
    }

    /// As [`Segment::read_into`].
    pub fn read_into(&mut self, pos: u64, len: usize, out: &mut Vec<u8>) -> Result<(), LogError> {
        if !self.fill(pos, len)? {
            return self.seg.read_into(pos, len, out);
        }
        let i = (pos - self.at) as usize;
        out.extend_from_slice(&self.buf[i..i + len]);
        Ok(())
    }
}
