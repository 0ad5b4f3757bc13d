//! Per-partition durable segmented log, as Kafka's: segments named by base offset with sparse
//! offset and time indexes, roll by size and time, retention of whole closed segments by time and
//! size, a flush (fsync) policy, and recovery on open that validates batches after the recovery
//! point and truncates a torn tail.
//!
//! Invariants: record batches are stored as received; only the base offset and partition leader
//! epoch are patched (bytes the CRC does not cover), except with `LogAppendTime`, where the max
//! timestamp is set and the CRC recomputed, as Kafka does. Appends are written straight to the
//! file (no user-space buffer), so an acknowledged write survives a process kill but not a lost
//! page cache unless it was fsynced.

pub mod batch;
pub mod segment;

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use batch::BatchHeader;
use segment::Segment;

const RECOVERY_POINT_FILE: &str = "recovery-point";
const LOG_START_FILE: &str = "log-start-offset";

/// Whether record timestamps come from producers or from the broker at append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    CreateTime,
    /// The broker sets each batch's timestamp to its clock at append.
    LogAppendTime,
}

/// Settings of one partition's log (broker properties, overridden by topic configs).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this at an append.
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose newest record is older (None: keep forever).
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete oldest closed segments while the log is bigger (None: no limit).
    pub retention_bytes: Option<u64>,
    /// `flush.messages`: fsync after this many messages (None: never by count).
    pub flush_interval_messages: Option<u64>,
    /// `flush.ms`: fsync when the oldest unflushed message is this old (None: never by time).
    pub flush_interval_ms: Option<i64>,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush_interval_messages: None,
            flush_interval_ms: None,
            index_interval_bytes: 4096,
            timestamp_type: TimestampType::CreateTime,
            max_message_bytes: 1_048_588,
        }
    }
}

/// Errors of the log; each names what and where.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operation.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Bytes that do not form a valid batch (CRC, lengths).
    #[error("corrupt record: {0}")]
    CorruptRecord(String),
    /// A well-formed batch the log refuses (magic, counts, offsets).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A batch larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge {
        /// Batch size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A read outside `[log start, log end]`.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: i64,
        /// Log start offset.
        start: i64,
        /// Log end offset.
        end: i64,
    },
    /// `truncate_to` at an offset inside a batch.
    #[error("offset {0} is not a batch boundary")]
    NotBatchBoundary(i64),
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The log append time used, or -1 with CreateTime.
    pub log_append_time: i64,
    /// Largest timestamp appended.
    pub max_timestamp: i64,
    /// Records appended.
    pub record_count: u64,
    /// Headers of the appended batches (after patching).
    pub batches: Vec<BatchHeader>,
}

/// Batches read from the log.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches, concatenated.
    pub bytes: Bytes,
    /// Base offset of the first batch returned.
    pub first_batch_offset: Option<i64>,
}

/// What recovery found when opening a log.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Bytes cut off a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// Offset at which the log was cut, if it was.
    pub truncated_at: Option<i64>,
    /// Segments after recovery.
    pub segments: usize,
    /// Segments whose index files were rebuilt.
    pub rebuilt_indexes: usize,
    /// Batches whose CRC was validated.
    pub validated_batches: u64,
}

/// One partition's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    unflushed_messages: u64,
    first_unflushed_ms: Option<i64>,
}

fn io_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| LogError::Io { path, what, source }
}

fn read_offset_file(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_offset_file(path: &Path, value: i64) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{value}\n")).map_err(io_err(&tmp, "write"))?;
    let f = fs::File::open(&tmp).map_err(io_err(&tmp, "open"))?;
    crate::storage::sync_all(&f).map_err(io_err(&tmp, "fsync"))?;
    fs::rename(&tmp, path).map_err(io_err(path, "rename"))
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering its tail.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Log, RecoveryReport), LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir, "create dir"))?;
        let mut bases: Vec<i64> = fs::read_dir(dir)
            .map_err(io_err(dir, "list"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".log")?;
                (stem.len() == 20)
                    .then(|| stem.parse::<i64>().ok())
                    .flatten()
            })
            .collect();
        bases.sort_unstable();
        let recovery_point = read_offset_file(&dir.join(RECOVERY_POINT_FILE)).unwrap_or(0);
        let mut report = RecoveryReport::default();
        let mut segments: Vec<Segment> = Vec::new();
        let mut cut = false;
        for (i, &base) in bases.iter().enumerate() {
            if cut {
                // Everything after a cut is unreachable: remove it, as Kafka's recovery does.
                let (seg, _, _) =
                    Segment::open(dir, base, config.index_interval_bytes, false, now_ms)?;
                tracing::warn!(dir = %dir.display(), base, "deleting segment after a truncated tail");
                seg.delete()?;
                continue;
            }
            let next_base = bases.get(i + 1).copied();
            let validate = next_base.is_none_or(|nb| nb > recovery_point);
            let (seg, scan, rebuilt) =
                Segment::open(dir, base, config.index_interval_bytes, validate, now_ms)?;
            if validate {
                report.validated_batches += scan.batches;
            }
            if rebuilt {
                report.rebuilt_indexes += 1;
            }
            let contiguous = segments.last().is_none_or(|p| p.next_offset() == base);
            if !contiguous {
                tracing::warn!(dir = %dir.display(), base, "segment does not follow the previous one; cutting the log there");
                cut = true;
                report.truncated_at.get_or_insert(base);
                report.truncated_bytes += seg.size();
                seg.delete()?;
                continue;
            }
            if scan.truncated_bytes > 0 {
                tracing::warn!(dir = %dir.display(), segment = base, bytes = scan.truncated_bytes,
                    at = seg.next_offset(), "recovery truncated a torn or corrupt tail");
                report.truncated_bytes += scan.truncated_bytes;
                report.truncated_at.get_or_insert(seg.next_offset());
                cut = true;
            }
            segments.push(seg);
        }
        let persisted_start = read_offset_file(&dir.join(LOG_START_FILE)).unwrap_or(0);
        if segments.is_empty() {
            let base = persisted_start.max(0);
            segments.push(Segment::create(
                dir,
                base,
                config.index_interval_bytes,
                now_ms,
            )?);
        }
        let first_base = segments[0].base_offset();
        let log_start_offset = persisted_start.max(first_base);
        let leo = segments.last().map_or(0, |s| s.next_offset());
        report.segments = segments.len();
        let log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: log_start_offset.min(leo),
            recovery_point: leo,
            unflushed_messages: 0,
            first_unflushed_ms: None,
        };
        // Everything now on disk was just validated or lies below the old recovery point.
        log.active().sync()?;
        write_offset_file(&dir.join(RECOVERY_POINT_FILE), leo)?;
        tracing::info!(dir = %dir.display(), segments = log.segments.len(), log_start = log.log_start_offset,
            log_end = leo, truncated = report.truncated_bytes, "log opened");
        Ok((log, report))
    }

    fn active(&self) -> &Segment {
        // A log always has at least one segment (open creates one).
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let n = self.segments.len();
        &mut self.segments[n - 1]
    }

    /// Directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Validates and appends a producer's batches, assigning offsets from the log end and
    /// stamping `leader_epoch`.
    pub fn append_as_leader(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append(records, Some(leader_epoch), now_ms)
    }

    /// Appends batches that already carry their offsets (a follower copying its leader). The
    /// first batch must start at the log end.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append(records, None, now_ms)
    }

    fn append(
        &mut self,
        records: &[u8],
        leader_epoch: Option<i32>,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let mut buf = records.to_vec();
        let mut spans = Vec::new();
        let mut pos = 0;
        for item in batch::split_batches(records) {
            let (h, bytes) = item?;
            if bytes.len() > self.config.max_message_bytes {
                return Err(LogError::RecordTooLarge {
                    size: bytes.len(),
                    max: self.config.max_message_bytes,
                });
            }
            spans.push((pos, bytes.len(), h));
            pos += bytes.len();
        }
        if spans.is_empty() {
            return Err(LogError::InvalidRecord(
                "no record batches in the request".into(),
            ));
        }
        let mut next = self.log_end_offset();
        if leader_epoch.is_none() && spans[0].2.base_offset != next {
            return Err(LogError::InvalidRecord(format!(
                "follower append starts at offset {} but the log ends at {next}",
                spans[0].2.base_offset
            )));
        }
        let append_time = match (leader_epoch, self.config.timestamp_type) {
            (Some(_), TimestampType::LogAppendTime) => now_ms,
            _ => -1,
        };
        let mut info = AppendInfo {
            base_offset: next,
            last_offset: next - 1,
            log_append_time: append_time,
            max_timestamp: -1,
            record_count: 0,
            batches: Vec::with_capacity(spans.len()),
        };
        for (start, len, h) in spans {
            let bytes = &mut buf[start..start + len];
            if let Some(epoch) = leader_epoch {
                batch::set_base_offset(bytes, next);
                batch::set_partition_leader_epoch(bytes, epoch);
                if append_time >= 0 {
                    batch::set_log_append_time(bytes, append_time);
                }
            } else if h.base_offset != next {
                return Err(LogError::InvalidRecord(format!(
                    "follower batch at offset {} does not follow offset {}",
                    h.base_offset,
                    next - 1
                )));
            }
            let h = BatchHeader::parse(bytes)?;
            self.maybe_roll_for(len as u64, h.last_offset(), now_ms)?;
            self.active_mut().append(&h, bytes, now_ms)?;
            next = h.next_offset();
            info.last_offset = h.last_offset();
            info.max_timestamp = info.max_timestamp.max(h.max_timestamp);
            info.record_count += h.records_count as u64;
            info.batches.push(h);
        }
        self.unflushed_messages += info.record_count;
        self.first_unflushed_ms.get_or_insert(now_ms);
        if let Some(n) = self.config.flush_interval_messages {
            if self.unflushed_messages >= n {
                self.flush()?;
            }
        }
        Ok(info)
    }

    fn maybe_roll_for(&mut self, size: u64, last_offset: i64, now_ms: i64) -> Result<(), LogError> {
        let active = self.active();
        if active.size() == 0 {
            return Ok(());
        }
        let full = active.size() + size > self.config.segment_bytes;
        let old = now_ms - active.created_ms() >= self.config.segment_ms;
        let overflow = last_offset - active.base_offset() > i64::from(u32::MAX) - 1;
        if full || old || overflow {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let base = self.log_end_offset();
        self.active().sync()?;
        let seg = Segment::create(&self.dir, base, self.config.index_interval_bytes, now_ms)?;
        tracing::debug!(dir = %self.dir.display(), base, "rolled a new segment");
        self.segments.push(seg);
        Ok(())
    }

    /// Reads whole batches from the one containing `start`, stopping before any batch whose base
    /// offset is at or past `max_offset_exclusive` (the high watermark) and at `max_bytes`
    /// (unless `min_one_message` and the first batch alone is bigger).
    pub fn read(
        &self,
        start: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
        min_one_message: bool,
    ) -> Result<ReadResult, LogError> {
        let (ls, le) = (self.log_start_offset, self.log_end_offset());
        if start < ls || start > le {
            return Err(LogError::OffsetOutOfRange {
                offset: start,
                start: ls,
                end: le,
            });
        }
        let mut out = Vec::new();
        let mut first = None;
        let idx = self
            .segments
            .partition_point(|s| s.base_offset() <= start)
            .saturating_sub(1);
        for seg in &self.segments[idx..] {
            let Some((mut pos, found)) = seg.position_of(start.max(seg.base_offset()))? else {
                continue;
            };
            // Where this read stops in the segment: `(base offset of the batch there, pos)`.
            let mut end = None;
            // The first header is the one the lookup read.
            let mut next = Some(found);
            let mut ahead = seg.read_ahead();
            while let Some(h) = match next.take() {
                Some(h) => Some(h),
                None => ahead.header_at(pos)?,
            } {
                if h.base_offset >= max_offset_exclusive {
                    end = Some((h.base_offset, pos));
                    break;
                }
                let size = h.total_size();
                if out.len() + size > max_bytes && !(out.is_empty() && min_one_message) {
                    end = Some((h.base_offset, pos));
                    break;
                }
                ahead.read_into(pos, size, &mut out)?;
                first.get_or_insert(h.base_offset);
                pos += size as u64;
                if out.len() >= max_bytes {
                    end = Some((h.next_offset(), pos));
                    break;
                }
            }
            match end {
                Some((offset, pos)) => {
                    // The next fetch usually starts here.
                    seg.note_read_end(offset, pos);
                    break;
                }
                None => seg.note_read_end(seg.next_offset(), pos),
            }
        }
        Ok(ReadResult {
            bytes: Bytes::from(out),
            first_batch_offset: first,
        })
    }

    /// ListOffsets by timestamp: the earliest record with timestamp >= `ts` and its timestamp.
    /// Uncompressed batches are refined to the record; compressed ones answer with the batch's
    /// base offset and max timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in &self.segments {
            if seg.max_timestamp() < ts {
                continue;
            }
            let mut pos = seg.position_for_timestamp(ts)?;
            while let Some(h) = seg.header_at(pos)? {
                if h.max_timestamp >= ts && h.last_offset() >= self.log_start_offset {
                    let bytes = seg.read_at(pos, h.total_size())?;
                    if let Some(recs) = batch::record_timestamps(&bytes) {
                        if let Some(&(off, t)) = recs
                            .iter()
                            .find(|&&(o, t)| t >= ts && o >= self.log_start_offset)
                        {
                            return Ok(Some((off, t)));
                        }
                    } else {
                        return Ok(Some((
                            h.base_offset.max(self.log_start_offset),
                            h.max_timestamp,
                        )));
                    }
                }
                pos += h.total_size() as u64;
            }
        }
        Ok(None)
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size()).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Offset up to which data is known to be fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// fsyncs the active segment and advances the recovery point to the log end.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.active().sync()?;
        self.recovery_point = self.log_end_offset();
        self.unflushed_messages = 0;
        self.first_unflushed_ms = None;
        Ok(())
    }

    /// Applies the time-based flush policy (`flush.ms`); returns whether it flushed.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<bool, LogError> {
        match (self.config.flush_interval_ms, self.first_unflushed_ms) {
            (Some(ms), Some(first)) if now_ms - first >= ms => {
                self.flush()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Rolls the active segment if it is older than `segment.ms` and not empty.
    pub fn maybe_roll(&mut self, now_ms: i64) -> Result<bool, LogError> {
        let a = self.active();
        if a.size() > 0 && now_ms - a.created_ms() >= self.config.segment_ms {
            self.roll(now_ms)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Deletes whole closed segments past retention (time, then size); returns how many.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let mut deleted = 0;
        let mut total = self.size_bytes();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let by_time = self.config.retention_ms.is_some_and(|ms| {
                oldest.max_timestamp() >= 0 && now_ms - oldest.max_timestamp() > ms
            });
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|max| total.saturating_sub(oldest.size()) >= max);
            if !(by_time || by_size) {
                break;
            }
            let seg = self.segments.remove(0);
            total -= seg.size();
            tracing::info!(dir = %self.dir.display(), base = seg.base_offset(), by_time, by_size,
                "retention deleted a segment");
            seg.delete()?;
            deleted += 1;
        }
        if deleted > 0 {
            let start = self.segments[0].base_offset();
            self.set_log_start_offset(start)?;
        }
        Ok(deleted)
    }

    fn set_log_start_offset(&mut self, start: i64) -> Result<(), LogError> {
        if start > self.log_start_offset {
            self.log_start_offset = start;
            write_offset_file(&self.dir.join(LOG_START_FILE), start)?;
        }
        Ok(())
    }

    /// Removes every record at and after `offset`, which must be a batch boundary.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        if offset <= self.segments[0].base_offset() {
            // Everything goes: start over with an empty segment at `offset`.
            let now = self.active().created_ms();
            for seg in self.segments.drain(..) {
                seg.delete()?;
            }
            self.segments.push(Segment::create(
                &self.dir,
                offset,
                self.config.index_interval_bytes,
                now,
            )?);
            self.log_start_offset = offset;
            write_offset_file(&self.dir.join(LOG_START_FILE), offset)?;
        } else {
            while self.active().base_offset() >= offset {
                if let Some(seg) = self.segments.pop() {
                    seg.delete()?;
                }
            }
            let seg = self.active_mut();
            // `offset` was the base of a segment just deleted: the log ends there already.
            if seg.next_offset() != offset {
                let (pos, h) = seg
                    .position_of(offset)?
                    .ok_or(LogError::NotBatchBoundary(offset))?;
                if h.base_offset != offset {
                    return Err(LogError::NotBatchBoundary(offset));
                }
                seg.truncate_at(pos, offset)?;
            }
        }
        self.recovery_point = self.recovery_point.min(offset);
        write_offset_file(&self.dir.join(RECOVERY_POINT_FILE), self.recovery_point)?;
        tracing::info!(dir = %self.dir.display(), offset, "log truncated");
        Ok(())
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the log's settings (topic config changes).
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Batch headers from `start` (inclusive) to the log end, for rebuilding derived state such as
    /// the leader-epoch cache.
    pub fn batch_headers(&self) -> Result<Vec<BatchHeader>, LogError> {
        let mut out = Vec::new();
        for seg in &self.segments {
            let mut pos = 0;
            while let Some(h) = seg.header_at(pos)? {
                pos += h.total_size() as u64;
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Batch headers from the batch starting at `start` (a batch boundary; an offset inside a
    /// batch starts at that batch) to the log end.
    pub fn batch_headers_from(&self, start: i64) -> Result<Vec<BatchHeader>, LogError> {
        let mut out = Vec::new();
        let idx = self
            .segments
            .partition_point(|s| s.base_offset() <= start)
            .saturating_sub(1);
        for seg in &self.segments[idx..] {
            let Some((mut pos, _)) = seg.position_of(start.max(seg.base_offset()))? else {
                continue;
            };
            while let Some(h) = seg.header_at(pos)? {
                pos += h.total_size() as u64;
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Flushes and fsyncs, persisting the recovery point.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        write_offset_file(&self.dir.join(RECOVERY_POINT_FILE), self.recovery_point)
    }
}
