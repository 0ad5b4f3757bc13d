//! Internal topics (`__consumer_offsets`, `__transaction_state`): which partition owns a
//! key (Kafka's `abs(hashCode) % partitions`), creating the topic on first use, appending
//! records through the partition's normal leader path with acks=all (so they survive a
//! coordinator's failover exactly as produced data does), and reading a partition back to load
//! a coordinator's cache.
//!
//! Invariant: a coordinator answers only while this broker leads the key's partition, and loads
//! only a log whose every record is committed (high watermark = log end), so what it serves was
//! acknowledged by the ISR.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::groups::group::codes;
use super::{Broker, Hosted};
use crate::log::batch::split_batches;
use crate::metadata::image::codes as image_codes;
use crate::metadata::Command;
use crate::replication::partition::Acks;

/// Java's `String.hashCode` (UTF-16 code units), as Kafka hashes group and transactional ids.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The partition of an internal topic that owns `key`.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    // Kafka's Utils.abs: i32::MIN maps to 0.
    let h = java_hash(key);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// An internal topic's partition count: as created, or `configured` before it exists.
pub fn partition_count(broker: &Broker, topic: &str, configured: i32) -> i32 {
    broker
        .image()
        .topics
        .get(topic)
        .map_or(configured, |t| t.partitions.len() as i32)
}

/// How long [`ensure_topic`] waits for this broker's metadata image to show a topic that the
/// controller has committed.
const IMAGE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Makes sure the internal topic exists in this broker's metadata image;
/// `Err(COORDINATOR_NOT_AVAILABLE)` while it is being created.
///
/// A client can learn of the topic from another broker (FindCoordinator answers from that
/// broker's image) before this broker's image has it. This broker then proposes the topic
/// (TOPIC_ALREADY_EXISTS when it is there) and waits for its own image to catch up, so a
/// coordinator request (OffsetFetch, JoinGroup) goes on to NOT_COORDINATOR or the retriable
/// COORDINATOR_LOAD_IN_PROGRESS instead of answering COORDINATOR_NOT_AVAILABLE. librdkafka
/// does not retry an OffsetFetch that fails with COORDINATOR_NOT_AVAILABLE: the assigned
/// partitions stay waiting for offsets and the consumer never fetches.
pub async fn ensure_topic(
    broker: &Arc<Broker>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
) -> Result<(), i16> {
    if broker.image().topics.contains_key(name) {
        return Ok(());
    }
    let live = broker
        .image()
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .count()
        .max(1);
    let rf = replication_factor.min(live as i16).max(1);
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    let r = broker
        .propose(Command::CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor: rf,
            configs,
        })
        .await;
    tracing::info!(
        topic = name,
        partitions,
        rf,
        code = r.error_code,
        "created internal topic"
    );
    if r.error_code != 0 && r.error_code != image_codes::TOPIC_ALREADY_EXISTS {
        return Err(codes::COORDINATOR_NOT_AVAILABLE);
    }
    let mut images = broker.subscribe();
    let shown = tokio::time::timeout(
        IMAGE_CATCH_UP,
        images.wait_for(|image| image.topics.contains_key(name)),
    )
    .await;
    match shown {
        Ok(Ok(_)) => Ok(()),
        _ => Err(codes::COORDINATOR_NOT_AVAILABLE),
    }
}

/// The hosted partition when this broker leads it, with its leader epoch.
pub fn led_here(broker: &Broker, topic: &str, partition: i32) -> Option<(Arc<Hosted>, i32)> {
    let h = broker.partition(topic, partition)?;
    let st = h.state();
    if !st.is_leader() {
        return None;
    }
    let epoch = st.leader_epoch();
    drop(st);
    Some((h, epoch))
}

/// [`led_here`] for a coordinator request: `NOT_COORDINATOR` when another broker leads the
/// partition, `COORDINATOR_LOAD_IN_PROGRESS` (retriable) while the metadata already names this
/// broker leader but the local partition has not become leader yet. FindCoordinator answers
/// from metadata, so a client sent here in that window retries instead of giving up.
pub fn coordinator_here(
    broker: &Broker,
    topic: &str,
    partition: i32,
) -> Result<(Arc<Hosted>, i32), i16> {
    if let Some(led) = led_here(broker, topic, partition) {
        return Ok(led);
    }
    let leader = broker
        .image()
        .partition(topic, partition)
        .map_or(-1, |p| p.leader);
    if leader == broker.config.node_id {
        Err(codes::COORDINATOR_LOAD_IN_PROGRESS)
    } else {
        Err(codes::NOT_COORDINATOR)
    }
}

/// Appends key/value records to a led internal partition and waits until the ISR has them
/// (acks=all); the error is a Kafka error code.
pub async fn append(
    broker: &Arc<Broker>,
    part: Arc<Hosted>,
    records: Vec<(Bytes, Option<Bytes>)>,
    timeout_ms: i64,
) -> Result<i64, i16> {
    append_as(broker, part, records, None, Acks::All, timeout_ms, None).await
}

/// [`append`] with explicit acks: with [`Acks::Leader`] it answers as soon as the leader's
/// log has the records, without waiting for the ISR (only the `offset-commit-before-isr` bug
/// mode asks for that).
pub async fn append_with_acks(
    broker: &Arc<Broker>,
    part: Arc<Hosted>,
    records: Vec<(Bytes, Option<Bytes>)>,
    acks: Acks,
    timeout_ms: i64,
) -> Result<i64, i16> {
    append_as(broker, part, records, None, acks, timeout_ms, None).await
}

/// Called under the partition's state lock right after a successful append.
pub type OnAppend = Box<dyn FnOnce() + Send>;

/// [`append`] as one transactional batch of `producer` (producer id, epoch): it stays pending
/// until that producer's marker. `on_append` runs under the partition's state lock once the
/// batch is in the log, so state it updates follows log order; the producer's epoch is
/// recorded there too.
pub async fn append_txn_offsets(
    broker: &Arc<Broker>,
    part: Arc<Hosted>,
    records: Vec<(Bytes, Option<Bytes>)>,
    producer: (i64, i16),
    timeout_ms: i64,
    on_append: OnAppend,
) -> Result<i64, i16> {
    append_as(
        broker,
        part,
        records,
        Some(producer),
        Acks::All,
        timeout_ms,
        Some(on_append),
    )
    .await
}

async fn append_as(
    broker: &Arc<Broker>,
    part: Arc<Hosted>,
    records: Vec<(Bytes, Option<Bytes>)>,
    producer: Option<(i64, i16)>,
    acks: Acks,
    timeout_ms: i64,
    on_append: Option<OnAppend>,
) -> Result<i64, i16> {
    let now = broker.clock.now_ms();
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let recs: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1 + i as i32,
            timestamp: now,
            key: Some(k),
            value: v,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
    let bytes = buf.freeze();
    let b = broker.clone();
    let deadline = now + timeout_ms;
    let res = crate::runtime::spawn_blocking(move || {
        let mut st = part.state();
        let r = st.append_as_leader(bytes.clone(), acks, now);
        let waiter = match &r {
            Ok(a) => {
                part.after_leader_append(&st, &bytes, a.first_offset);
                if let Some((pid, epoch)) = producer {
                    part.producers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record_epoch(pid, epoch);
                }
                if let Some(f) = on_append {
                    f();
                }
                if acks == Acks::All {
                    let (id, rx) = b.new_waiter();
                    st.add_acks_all_waiter(id, a.last_offset + 1, deadline);
                    Some(rx)
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        let done = st.poll_waiters(now);
        drop(st);
        b.complete(done);
        (
            r.map(|a| a.last_offset).map_err(|e| e.kafka_error().code()),
            waiter,
        )
    })
    .await
    .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
    broker.appended.send_modify(|v| *v += 1);
    let (r, waiter) = res;
    let last = r.map_err(|code| {
        if code == 6 {
            codes::NOT_COORDINATOR
        } else {
            code
        }
    })?;
    if let Some(rx) = waiter {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.code()),
            Err(_) => return Err(codes::COORDINATOR_NOT_AVAILABLE),
        }
    }
    Ok(last)
}

/// One record of an internal partition as loaded by its coordinator.
#[derive(Debug, Clone)]
pub struct LoadedRecord {
    /// Its offset.
    pub offset: i64,
    /// Its key (`None` for a keyless record).
    pub key: Option<Bytes>,
    /// Its value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// The producer of its batch (-1: none).
    pub producer_id: i64,
    /// Whether its batch is transactional (pending until the producer's marker).
    pub transactional: bool,
    /// For a transaction marker: `Some(true)` commit, `Some(false)` abort.
    pub marker: Option<bool>,
}

/// Every record of a led partition, in offset order; `Ok(None)` while records above the high
/// watermark remain (the caller answers COORDINATOR_LOAD_IN_PROGRESS).
pub type LoadedRecords = Vec<LoadedRecord>;

/// Loads a led partition for a coordinator's cache, off the async threads: its records, or
/// COORDINATOR_LOAD_IN_PROGRESS while records above the high watermark remain.
pub async fn load(part: &Arc<Hosted>) -> Result<LoadedRecords, i16> {
    let h = part.clone();
    crate::runtime::spawn_blocking(move || read_all(&h))
        .await
        .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)??
        .ok_or(codes::COORDINATOR_LOAD_IN_PROGRESS)
}

/// Reads a whole led partition (see [`LoadedRecords`]).
pub fn read_all(part: &Hosted) -> Result<Option<LoadedRecords>, i16> {
    let st = part.state();
    let (start, hw, leo) = (
        st.log_start_offset(),
        st.high_watermark(),
        st.log_end_offset(),
    );
    if hw < leo {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut next = start;
    while next < hw {
        let r = st
            .log()
            .read(next, 1 << 20, hw, true)
            .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
        if r.bytes.is_empty() {
            break;
        }
        let mut progressed = false;
        for batch in split_batches(&r.bytes) {
            let Ok((_, raw)) = batch else {
                return Err(codes::COORDINATOR_NOT_AVAILABLE);
            };
            let mut raw = Bytes::copy_from_slice(raw);
            let set = RecordBatchDecoder::decode(&mut raw)
                .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
            for rec in set.records {
                if rec.offset >= next {
                    next = rec.offset + 1;
                    progressed = true;
                }
                if rec.offset >= hw {
                    continue;
                }
                let marker = if rec.control {
                    // EndTransactionMarker key: version i16, type i16 (0 abort, 1 commit).
                    match rec.key.as_deref() {
                        Some([_, _, 0, t, ..]) => Some(*t == 1),
                        _ => continue,
                    }
                } else {
                    None
                };
                out.push(LoadedRecord {
                    offset: rec.offset,
                    key: rec.key,
                    value: rec.value,
                    producer_id: rec.producer_id,
                    transactional: rec.transactional,
                    marker,
                });
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_java_does() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        // "Aa" and "BB" collide in Java.
        assert_eq!(java_hash("Aa"), java_hash("BB"));
        assert_eq!(java_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
    }
}
