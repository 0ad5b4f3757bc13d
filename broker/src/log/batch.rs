//! Kafka RecordBatch v2 headers: parsing, validation (CRC-32C), splitting a buffer of
//! concatenated batches, and the in-place patches the broker is allowed to make (base offset,
//! partition leader epoch, and for LogAppendTime the max timestamp with a recomputed CRC).
//!
//! Layout (61-byte header): baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32 @12,
//! magic i8 @16, crc u32 @17, attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27,
//! maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53,
//! recordsCount i32 @57. The CRC covers bytes 21..end.

use super::LogError;

/// Size of the fixed RecordBatch v2 header.
pub const HEADER_SIZE: usize = 61;
/// Bytes before the `batchLength` field's coverage starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// The decoded header of one RecordBatch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Length of the batch after the `batchLength` field.
    pub batch_length: i32,
    /// Leader epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Magic byte (2 for v2).
    pub magic: i8,
    /// Stored CRC-32C.
    pub crc: u32,
    /// Attributes bit field.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (or the log append time).
    pub max_timestamp: i64,
    /// Producer id (-1 when not idempotent).
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which may hold more bytes than one batch).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, LogError> {
        if buf.len() < HEADER_SIZE {
            return Err(LogError::CorruptRecord(format!(
                "batch header needs {HEADER_SIZE} bytes, only {} present",
                buf.len()
            )));
        }
        let h = BatchHeader {
            base_offset: i64_at(buf, 0),
            batch_length: i32_at(buf, 8),
            partition_leader_epoch: i32_at(buf, 12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]),
            attributes: i16::from_be_bytes([buf[21], buf[22]]),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, 35),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16::from_be_bytes([buf[51], buf[52]]),
            base_sequence: i32_at(buf, 53),
            records_count: i32_at(buf, 57),
        };
        if h.magic != 2 {
            return Err(LogError::InvalidRecord(format!(
                "batch at offset {} has magic {}; only RecordBatch v2 (magic 2) is supported",
                h.base_offset, h.magic
            )));
        }
        if (h.batch_length as i64) < (HEADER_SIZE - LOG_OVERHEAD) as i64 {
            return Err(LogError::CorruptRecord(format!(
                "batch at offset {} declares length {}, shorter than its header",
                h.base_offset, h.batch_length
            )));
        }
        Ok(h)
    }

    /// Total size of the batch in bytes, header included.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    /// Whether the batch's timestamps are log-append times.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Whether the batch is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

/// CRC-32C of a whole batch's covered bytes (21..end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Parses and fully validates one complete batch: header, length, CRC, record count.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, LogError> {
    let h = BatchHeader::parse(batch)?;
    if h.total_size() != batch.len() {
        return Err(LogError::CorruptRecord(format!(
            "batch at offset {} declares {} bytes but {} are present",
            h.base_offset,
            h.total_size(),
            batch.len()
        )));
    }
    let crc = compute_crc(batch);
    if crc != h.crc {
        return Err(LogError::CorruptRecord(format!(
            "batch at offset {} fails its CRC-32C check (stored {:#010x}, computed {:#010x})",
            h.base_offset, h.crc, crc
        )));
    }
    if h.records_count <= 0 || h.last_offset_delta < 0 {
        return Err(LogError::InvalidRecord(format!(
            "batch at offset {} has {} records and last offset delta {}",
            h.base_offset, h.records_count, h.last_offset_delta
        )));
    }
    Ok(h)
}

/// Splits a buffer of concatenated batches, validating each. Errors on a partial trailing batch.
pub fn split_batches(buf: &[u8]) -> SplitBatches<'_> {
    SplitBatches { buf, pos: 0 }
}

/// Iterator over `(header, bytes)` of each batch in a buffer; see [`split_batches`].
pub struct SplitBatches<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SplitBatches<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.pos = self.buf.len();
                return Some(Err(e));
            }
        };
        let size = header.total_size();
        if size > rest.len() {
            self.pos = self.buf.len();
            return Some(Err(LogError::CorruptRecord(format!(
                "batch at offset {} needs {size} bytes, only {} remain",
                header.base_offset,
                rest.len()
            ))));
        }
        let bytes = &rest[..size];
        self.pos += size;
        Some(validate(bytes).map(|h| (h, bytes)))
    }
}

/// Iterates `(header, bytes)` of concatenated batches that were already validated (appended
/// to a log): headers only, no CRC work; stops at the first batch that does not parse.
pub fn batches_unchecked(buf: &[u8]) -> impl Iterator<Item = (BatchHeader, &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(pos..)?;
        let h = BatchHeader::parse(rest).ok()?;
        let bytes = rest.get(..h.total_size())?;
        pos += h.total_size();
        Some((h, bytes))
    })
}

/// Overwrites the base offset (bytes 0..8; not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// Overwrites the partition leader epoch (bytes 12..16; not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `time` as its max timestamp and recomputes the CRC.
pub fn set_log_append_time(batch: &mut [u8], time: i64) {
    let attrs = i16::from_be_bytes([batch[21], batch[22]]) | 0x08;
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    batch[35..43].copy_from_slice(&time.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Reads a zig-zag varint (Kafka's record fields) from `buf` at `*pos`.
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((value >> 1) as i64) ^ -((value & 1) as i64))
}

/// For an uncompressed batch, the `(offset, timestamp)` of each record; `None` when the batch is
/// compressed or its records do not parse (callers then fall back to the batch's header).
pub fn record_timestamps(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let h = BatchHeader::parse(batch).ok()?;
    if h.compression() != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(h.records_count.max(0) as usize);
    let mut pos = HEADER_SIZE;
    for _ in 0..h.records_count {
        let len = read_varint(batch, &mut pos)?;
        let start = pos;
        pos += 1; // attributes
        let ts_delta = read_varint(batch, &mut pos)?;
        let off_delta = read_varint(batch, &mut pos)?;
        let ts = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            h.base_timestamp + ts_delta
        };
        out.push((h.base_offset + off_delta, ts));
        pos = start.checked_add(usize::try_from(len).ok()?)?;
        if pos > batch.len() {
            return None;
        }
    }
    Some(out)
}

/// Kafka's control record types (the key of the single record of a control batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// An abort marker (type 0).
    Abort,
    /// A commit marker (type 1).
    Commit,
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            break;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Attributes of a transaction marker batch: transactional (0x10) and control (0x20).
pub const CONTROL_ATTRIBUTES: i16 = 0x30;

/// Builds a transaction marker: a control batch (attributes 0x30) of one record whose key is
/// Kafka's `EndTransactionMarker` key (version 0, type 0 abort / 1 commit) and whose value is
/// version 0 plus the coordinator epoch, stamped with the producer id and epoch and no sequence.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    kind: ControlType,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let key: [u8; 4] = [0, 0, 0, if kind == ControlType::Commit { 1 } else { 0 }];
    let mut value = vec![0u8, 0];
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut rec = vec![0u8]; // attributes
    put_varint(&mut rec, 0); // timestamp delta
    put_varint(&mut rec, 0); // offset delta
    put_varint(&mut rec, key.len() as i64);
    rec.extend_from_slice(&key);
    put_varint(&mut rec, value.len() as i64);
    rec.extend_from_slice(&value);
    put_varint(&mut rec, 0); // headers
    let mut body = Vec::new();
    put_varint(&mut body, rec.len() as i64);
    body.extend_from_slice(&rec);
    let mut b = Vec::with_capacity(HEADER_SIZE + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
    b.extend_from_slice(&CONTROL_ATTRIBUTES.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // records
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The marker type of a control batch (its first record's key); `None` when the batch is not
/// an uncompressed control batch or its key is not an `EndTransactionMarker` key.
pub fn control_type(batch: &[u8]) -> Option<ControlType> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.compression() != 0 || h.records_count < 1 {
        return None;
    }
    let mut pos = HEADER_SIZE;
    let _len = read_varint(batch, &mut pos)?;
    pos += 1; // attributes
    read_varint(batch, &mut pos)?; // timestamp delta
    read_varint(batch, &mut pos)?; // offset delta
    let key_len = usize::try_from(read_varint(batch, &mut pos)?).ok()?;
    let key = batch.get(pos..pos.checked_add(key_len)?)?;
    if key.len() < 4 {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    }
}

/// Stamps a batch built by [`build_batch`] as an idempotent (or transactional) producer's:
/// producer id, epoch and base sequence set, the transactional attribute (0x10) set when
/// `transactional`, and the CRC recomputed (for tests and tools).
pub fn stamp_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
) {
    if batch.len() < HEADER_SIZE {
        return;
    }
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    let attributes = if transactional {
        attributes | 0x10
    } else {
        attributes & !0x10
    };
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A record's optional key and optional value.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds a valid uncompressed RecordBatch v2 (used by tests, benches and tools): records are
/// `(key, value)` pairs, all with timestamp `timestamp`.
pub fn build_batch(base_offset: i64, timestamp: i64, records: &[KeyValue<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = vec![0u8]; // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        match key {
            Some(k) => {
                put_varint(&mut rec, k.len() as i64);
                rec.extend_from_slice(k);
            }
            None => put_varint(&mut rec, -1),
        }
        match value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i64);
                rec.extend_from_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut b = Vec::with_capacity(HEADER_SIZE + body.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_validate_and_patches_keep_the_crc() {
        let mut b = build_batch(0, 1000, &[(Some(b"k"), Some(b"v1")), (None, Some(b"v2"))]);
        let h = validate(&b).expect("valid");
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        let h = validate(&b).expect("still valid after offset/epoch patch");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (42, 7));
        set_log_append_time(&mut b, 5555);
        let h = validate(&b).expect("valid after LogAppendTime rewrite");
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 5555);
        assert_eq!(
            record_timestamps(&b).expect("uncompressed"),
            vec![(42, 5555), (43, 5555)]
        );
    }

    #[test]
    fn control_batches_round_trip_their_marker_type() {
        for kind in [ControlType::Abort, ControlType::Commit] {
            let b = build_control_batch(42, 3, kind, 7, 1000);
            let h = validate(&b).expect("valid control batch");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(control_type(&b), Some(kind));
        }
        // A data batch is not a marker; a truncated one does not parse.
        let data = build_batch(0, 1, &[(Some(b"k"), Some(b"v"))]);
        assert_eq!(control_type(&data), None);
        let b = build_control_batch(1, 0, ControlType::Commit, 0, 0);
        assert_eq!(control_type(&b[..HEADER_SIZE + 3]), None);
        // Header-only iteration over appended batches stops at a torn tail.
        let two = [data.clone(), b.clone(), b[..10].to_vec()].concat();
        let kinds: Vec<bool> = batches_unchecked(&two)
            .map(|(h, _)| h.is_control())
            .collect();
        assert_eq!(kinds, vec![false, true]);
    }

    #[test]
    fn corruption_is_detected() {
        let mut b = build_batch(0, 1, &[(None, Some(b"hello"))]);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(LogError::CorruptRecord(_))));
        let b = build_batch(0, 1, &[(None, Some(b"hello"))]);
        let two: Vec<u8> = [b.clone(), b[..b.len() - 3].to_vec()].concat();
        let parts: Vec<_> = split_batches(&two).collect();
        assert!(parts[0].is_ok());
        assert!(parts[1].is_err());
    }
}
