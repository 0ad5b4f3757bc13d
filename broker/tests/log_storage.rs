//! Storage tests of the segmented log on real files: round trips across rolls, index lookups,
//! retention, recovery of torn and corrupt tails, rebuilt indexes, flush policy, truncation.

use std::fs::OpenOptions;
use std::io::Write;

use broker::log::batch::{build_batch, validate, KeyValue};
use broker::log::{Log, LogConfig, LogError, TimestampType};
use proptest::prelude::*;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// Appends `n` batches of `per` records each, value = "v<offset-ish counter>", timestamp = i.
fn fill(log: &mut Log, n: usize, per: usize, t0: i64) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    for i in 0..n {
        let vals: Vec<Vec<u8>> = (0..per)
            .map(|j| format!("value-{i}-{j}").into_bytes())
            .collect();
        let recs: Vec<KeyValue<'_>> = vals
            .iter()
            .map(|v| (Some(&b"key"[..]), Some(v.as_slice())))
            .collect();
        let b = build_batch(0, t0 + i as i64, &recs);
        let info = log.append_as_leader(&b, 3, t0 + i as i64).expect("append");
        spans.push((info.base_offset, info.last_offset));
    }
    spans
}

fn all_batches(log: &Log) -> Vec<broker::log::batch::BatchHeader> {
    let r = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .expect("read all");
    broker::log::batch::split_batches(&r.bytes)
        .map(|b| b.expect("valid batch").0)
        .collect()
}

#[test]
fn round_trip_across_rolls_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
    let spans = fill(&mut log, 200, 3, 1000);
    assert_eq!(log.log_end_offset(), 600);
    assert!(log.segment_count() > 5, "segments: {}", log.segment_count());
    let headers = all_batches(&log);
    assert_eq!(headers.len(), 200);
    for (h, (base, last)) in headers.iter().zip(&spans) {
        assert_eq!((h.base_offset, h.last_offset()), (*base, *last));
        assert_eq!(h.partition_leader_epoch, 3);
    }
    log.close().expect("close");
    let (log, report) = Log::open(dir.path(), small_config(), 0).expect("reopen");
    assert_eq!(log.log_end_offset(), 600);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(all_batches(&log).len(), 200);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn read_at_any_offset_starts_with_the_batch_containing_it(per in 1usize..5, n in 1usize..120, pick in 0usize..1000) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
        fill(&mut log, n, per, 0);
        let offset = (pick % (n * per)) as i64;
        let r = log.read(offset, 1, i64::MAX, true).expect("read");
        let bytes = r.bytes.to_vec();
        let h = validate(&bytes).expect("one whole batch");
        prop_assert!(h.base_offset <= offset && offset <= h.last_offset());
        prop_assert_eq!(h.base_offset, (offset / per as i64) * per as i64);
    }
}

#[test]
fn reads_stop_at_the_high_watermark_and_out_of_range_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
    fill(&mut log, 10, 2, 0);
    let r = log.read(0, usize::MAX, 6, false).expect("read");
    let hs: Vec<_> = broker::log::batch::split_batches(&r.bytes)
        .map(|b| b.expect("ok").0)
        .collect();
    assert_eq!(hs.last().map(|h| h.last_offset()), Some(5));
    assert!(log
        .read(20, 100, i64::MAX, false)
        .expect("at end")
        .bytes
        .is_empty());
    assert!(matches!(
        log.read(21, 100, i64::MAX, false),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn torn_tail_is_truncated_to_the_last_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone(), 0).expect("open");
    fill(&mut log, 10, 2, 0);
    drop(log);
    let seg = dir.path().join("00000000000000000000.log");
    let len = std::fs::metadata(&seg).expect("stat").len();
    // Cut the last batch in half, then append garbage, as a torn write would leave.
    let f = OpenOptions::new().write(true).open(&seg).expect("open seg");
    f.set_len(len - 20).expect("truncate");
    let mut f = OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open seg");
    f.write_all(&[0xab; 7]).expect("garbage");
    drop(f);
    let (mut log, report) = Log::open(dir.path(), cfg, 0).expect("recover");
    assert_eq!(log.log_end_offset(), 18, "last whole batch ends at 17");
    assert_eq!(report.truncated_at, Some(18));
    assert!(report.truncated_bytes > 0);
    let info = log
        .append_as_leader(&build_batch(0, 5, &[(None, Some(b"after"))]), 4, 5)
        .expect("append after recovery");
    assert_eq!(info.base_offset, 18);
}

#[test]
fn corrupt_crc_in_the_tail_is_cut_and_missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone(), 0).expect("open");
    fill(&mut log, 10, 2, 0);
    drop(log);
    let seg = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).expect("read");
    let n = bytes.len();
    bytes[n - 2] ^= 0x55; // flip bits inside the last batch's records
    std::fs::write(&seg, &bytes).expect("write");
    std::fs::remove_file(dir.path().join("00000000000000000000.index")).expect("rm index");
    let (log, report) = Log::open(dir.path(), cfg, 0).expect("recover");
    assert_eq!(log.log_end_offset(), 18);
    assert!(report.rebuilt_indexes >= 1);
    assert_eq!(all_batches(&log).len(), 9);
}

#[test]
fn retention_by_size_and_time_deletes_whole_closed_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        retention_bytes: Some(8192),
        retention_ms: None,
        ..small_config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg.clone(), 0).expect("open");
    fill(&mut log, 200, 3, 1000);
    let before = log.segment_count();
    let deleted = log.apply_retention(2000).expect("retention");
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(log.size_bytes() >= 8192 - 4096 && log.log_start_offset() > 0);
    let start = log.log_start_offset();
    assert!(matches!(
        log.read(0, 10, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let (mut log, _) = Log::open(dir.path(), cfg, 0).expect("reopen");
    assert_eq!(log.log_start_offset(), start);
    // By time: everything but the active segment is older than 1 ms at t=10_000.
    log.set_config(LogConfig {
        retention_ms: Some(1),
        retention_bytes: None,
        ..small_config()
    });
    log.apply_retention(10_000).expect("retention by time");
    assert_eq!(
        log.segment_count(),
        1,
        "the active segment is never deleted"
    );
}

#[test]
fn roll_by_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_ms: 100,
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg, 0).expect("open");
    fill(&mut log, 1, 1, 0);
    assert!(!log.maybe_roll(50).expect("roll"));
    assert!(log.maybe_roll(150).expect("roll"));
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn log_append_time_rewrites_timestamp_with_a_valid_crc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..small_config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg, 0).expect("open");
    let info = log
        .append_as_leader(&build_batch(0, 5, &[(None, Some(b"x"))]), 0, 777_000)
        .expect("append");
    assert_eq!(info.log_append_time, 777_000);
    let r = log.read(0, 1000, i64::MAX, true).expect("read");
    let h = validate(&r.bytes).expect("CRC recomputed");
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 777_000);
}

#[test]
fn flush_every_message_advances_the_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        flush_interval_messages: Some(1),
        ..small_config()
    };
    let (mut log, _) = Log::open(dir.path(), cfg, 0).expect("open");
    for i in 0..5 {
        fill(&mut log, 1, 1, i);
        assert_eq!(log.recovery_point(), log.log_end_offset());
    }
    let (mut lazy, _) = Log::open(&dir.path().join("lazy"), small_config(), 0).expect("open");
    fill(&mut lazy, 5, 1, 0);
    assert_eq!(
        lazy.recovery_point(),
        0,
        "default policy never fsyncs per write"
    );
    assert!(!lazy.maybe_flush(1_000_000).expect("no flush.ms"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Reads remember where they ended to shorten the next one's scan; whatever reads came
    /// before (and truncations and appends in between), a read returns what a freshly opened
    /// log returns.
    #[test]
    fn reads_after_other_reads_equal_reads_of_a_fresh_log(
        per in 1usize..4,
        starts in proptest::collection::vec((0usize..1000, 1usize..3000), 1..30),
        cut in 0usize..1000,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
        fill(&mut log, 80, per, 0);
        let mut end = log.log_end_offset() as usize;
        let fresh = |start: i64, max: usize| {
            let (log, _) = Log::open(dir.path(), small_config(), 0).expect("reopen");
            log.read(start, max, i64::MAX, true).expect("read").bytes
        };
        for (i, (pick, max)) in starts.iter().enumerate() {
            let start = (pick % (end + 1)) as i64;
            let start = start - start % per as i64;
            let got = log.read(start, *max, i64::MAX, true).expect("read").bytes;
            prop_assert_eq!(&got, &fresh(start, *max));
            if i == starts.len() / 2 {
                // A cut below where earlier reads ended, and new batches after it.
                let at = ((cut % end) / per * per) as i64;
                log.truncate_to(at).expect("truncate");
                fill(&mut log, 5, per, 0);
                end = log.log_end_offset() as usize;
            }
        }
        for (pick, max) in &starts {
            let start = (pick % (end + 1)) as i64;
            let start = start - start % per as i64;
            let got = log.read(start, *max, i64::MAX, true).expect("read").bytes;
            prop_assert_eq!(&got, &fresh(start, *max));
        }
    }
}

#[test]
fn truncate_to_a_batch_boundary_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
    fill(&mut log, 100, 2, 0);
    assert!(matches!(
        log.truncate_to(31),
        Err(LogError::NotBatchBoundary(31))
    ));
    log.truncate_to(30).expect("truncate");
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(all_batches(&log).last().map(|h| h.last_offset()), Some(29));
    let info = log
        .append_as_leader(&build_batch(0, 0, &[(None, Some(b"x"))]), 9, 0)
        .expect("append");
    assert_eq!(info.base_offset, 30);
    drop(log);
    let (log, report) = Log::open(dir.path(), small_config(), 0).expect("reopen");
    assert_eq!((log.log_end_offset(), report.truncated_bytes), (31, 0));
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
    fill(&mut log, 100, 2, 1000); // batch i has timestamp 1000 + i, offsets 2i, 2i+1
    assert_eq!(
        log.offset_for_timestamp(1050).expect("ts"),
        Some((100, 1050))
    );
    assert_eq!(log.offset_for_timestamp(0).expect("ts"), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(5000).expect("ts"), None);
}

#[test]
fn follower_appends_must_be_contiguous() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
    let b = build_batch(5, 0, &[(None, Some(b"x"))]);
    assert!(matches!(
        log.append_as_follower(&b, 0),
        Err(LogError::InvalidRecord(_))
    ));
    let b = build_batch(0, 0, &[(None, Some(b"x")), (None, Some(b"y"))]);
    assert_eq!(
        log.append_as_follower(&b, 0).expect("append").last_offset,
        1
    );
}

#[test]
fn truncate_to_the_base_offset_of_a_later_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), small_config(), 0).expect("open");
    fill(&mut log, 80, 3, 0);
    assert!(log.segment_count() > 2, "segments: {}", log.segment_count());
    // The base offset of the second segment: a batch boundary where the first segment ends.
    let (_, report) = Log::open(dir.path(), small_config(), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    let names: Vec<i64> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    let mut bases = names;
    bases.sort_unstable();
    let at = bases[1];
    log.truncate_to(at)
        .expect("truncate to a segment's base offset");
    assert_eq!(log.log_end_offset(), at);
    assert_eq!(all_batches(&log).last().map(|h| h.next_offset()), Some(at));
    let info = log
        .append_as_leader(&build_batch(0, 0, &[(None, Some(b"x"))]), 9, 0)
        .expect("append");
    assert_eq!(info.base_offset, at);
}

/// Reads through the read-ahead buffer (64 KiB chunks in one large segment) return exactly the
/// batches read one at a time: across chunk boundaries, with a batch larger than a chunk, under
/// byte limits and a high watermark.
#[test]
fn reads_across_read_ahead_chunks_equal_batch_by_batch_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = Log::open(dir.path(), LogConfig::default(), 0).expect("open");
    fill(&mut log, 1500, 1, 0);
    let big = vec![b'x'; 100 * 1024];
    let b = build_batch(0, 5000, &[(None, Some(big.as_slice()))]);
    log.append_as_leader(&b, 3, 5000).expect("append");
    fill(&mut log, 1500, 2, 6000);
    assert_eq!(log.segment_count(), 1);
    let end = log.log_end_offset();
    // Each batch alone, by its base offset.
    let mut one = Vec::new();
    let mut o = 0;
    while o < end {
        let r = log.read(o, 1, i64::MAX, true).expect("read one");
        let (h, _) = broker::log::batch::split_batches(&r.bytes)
            .next()
            .expect("a batch")
            .expect("valid");
        one.push((h.base_offset, h.last_offset(), r.bytes.clone()));
        o = h.last_offset() + 1;
    }
    for (start, max, hw) in [
        (0, usize::MAX, i64::MAX),
        (0, 70_000, i64::MAX),
        (1400, 200_000, i64::MAX),
        (1499, usize::MAX, 3000),
        (1501, 50_000, end),
        (2000, usize::MAX, end - 7),
    ] {
        let got = log.read(start, max, hw, true).expect("read").bytes;
        let mut want = Vec::new();
        for (base, _, bytes) in one.iter().skip_while(|(_, last, _)| *last < start) {
            if *base >= hw || (want.len() + bytes.len() > max && !want.is_empty()) {
                break;
            }
            want.extend_from_slice(bytes);
        }
        assert_eq!(got.len(), want.len(), "start {start} max {max} hw {hw}");
        assert!(got == want, "start {start} max {max} hw {hw}: bytes differ");
    }
}
