//! Log storage throughput: appends of 1 KiB records in 16-record batches without fsync and with
//! an fsync per batch (`flush_interval_messages = Some(1)`), then sequential reads of the whole
//! log in 1 MiB fetches. Prints MB/s and batches/s. Run: `cargo bench -p broker --bench log_bench`.

use std::time::Instant;

use broker::log::batch::{build_batch, split_batches, KeyValue};
use broker::log::{Log, LogConfig};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;

fn batch() -> Vec<u8> {
    let value = vec![b'x'; RECORD_BYTES];
    let recs: Vec<KeyValue<'_>> = (0..RECORDS_PER_BATCH)
        .map(|_| (None, Some(value.as_slice())))
        .collect();
    build_batch(0, 1_000, &recs)
}

fn append(label: &str, config: LogConfig, batches: usize, then_read: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut log, _) = Log::open(dir.path(), config, 1_000)?;
    let b = batch();
    let start = Instant::now();
    for i in 0..batches {
        log.append_as_leader(&b, 0, 1_000 + i as i64)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (b.len() * batches) as f64 / 1e6;
    println!(
        "append {label:<16} {batches:>6} batches of {RECORDS_PER_BATCH} x {RECORD_BYTES} B: \
         {:>8.1} MB/s {:>9.0} batches/s ({secs:.2} s)",
        mb / secs,
        batches as f64 / secs
    );
    if then_read {
        read_all(&log)?;
    }
    log.close()?;
    drop(dir);
    Ok(())
}

fn read_all(log: &Log) -> anyhow::Result<()> {
    let end = log.log_end_offset();
    let start = Instant::now();
    let (mut offset, mut bytes, mut batches) = (log.log_start_offset(), 0usize, 0usize);
    while offset < end {
        let r = log.read(offset, 1 << 20, end, true)?;
        bytes += r.bytes.len();
        for b in split_batches(&r.bytes) {
            offset = b?.0.next_offset();
            batches += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read   {:<16} {batches:>6} batches in 1 MiB fetches:    {:>8.1} MB/s {:>9.0} batches/s ({secs:.2} s)",
        "sequential",
        bytes as f64 / 1e6 / secs,
        batches as f64 / secs
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    append("no fsync", LogConfig::default(), 20_000, true)?;
    let fsync = LogConfig {
        flush_interval_messages: Some(1),
        ..LogConfig::default()
    };
    append("fsync per batch", fsync, 2_000, false)?;
    Ok(())
}
