//! Record batches on the wire: building a v2 batch (CRC-32C, producer id/epoch/sequence) for
//! Produce with `kafka_protocol::records`, and reading Fetch responses: splitting the record
//! bytes into whole batches (a response may end in a partial one), decoding them, dropping
//! control batches and, for read_committed, batches of aborted transactions.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::error::Error;

/// Producer identity stamped into a batch (`-1`s when not idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// Producer id.
    pub id: i64,
    /// Producer epoch.
    pub epoch: i16,
}

impl ProducerIdentity {
    /// The identity of a non-idempotent producer.
    pub const NONE: ProducerIdentity = ProducerIdentity { id: -1, epoch: -1 };
}

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Create time (ms since the epoch).
    pub timestamp: i64,
}

/// Encodes `records` as one v2 batch with base sequence `base_sequence` (`-1` if none).
/// `transactional` sets the batch's transactional attribute (bit 0x10): the records belong to
/// the producer's open transaction and stay invisible to read_committed consumers until its
/// commit marker.
pub fn build_batch(
    records: &[OutRecord],
    producer: ProducerIdentity,
    base_sequence: i32,
    transactional: bool,
) -> Result<Bytes, Error> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while `offset - sequence` is
            // constant, and writes `base_sequence` = first sequence; so without idempotence
            // the sequences are -1, 0, 1, ... (base sequence -1).
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: r.value.clone(),
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
    .map_err(|e| Error::Records(format!("encode batch: {e}")))?;
    Ok(buf.freeze())
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Offset in the partition.
    pub offset: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Timestamp (create or log-append time, per the topic).
    pub timestamp: i64,
}

/// An aborted transaction range as a Fetch response lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted {
    /// The producer.
    pub producer_id: i64,
    /// The first offset of its aborted transaction.
    pub first_offset: i64,
}

/// Records of a Fetch partition response from `position` on, and the next fetch position.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Records to deliver.
    pub records: Vec<ConsumerRecord>,
    /// The offset after the last whole batch read (control and aborted batches included), or
    /// `None` if no whole batch was present.
    pub next_offset: Option<i64>,
}

/// Splits `bytes` into whole batches (each 12 header bytes + its length field).
fn whole_batches(mut bytes: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while bytes.len() >= 12 {
        let len = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if len < 0 {
            break;
        }
        let total = 12 + len as usize;
        if bytes.len() < total {
            break;
        }
        out.push(bytes.split_to(total));
    }
    out
}

/// Decodes a Fetch partition's records for a consumer at `position`. With `read_committed`,
/// batches of transactions in `aborted` are dropped (Kafka's algorithm: a producer's aborted
/// range starts at its `first_offset` and ends at its abort marker). Control batches are
/// never delivered.
pub fn decode_fetched(
    bytes: Bytes,
    position: i64,
    read_committed: bool,
    aborted: &[Aborted],
) -> Result<Decoded, Error> {
    let mut aborted: Vec<Aborted> = if read_committed {
        aborted.to_vec()
    } else {
        Vec::new()
    };
    aborted.sort_by_key(|a| a.first_offset);
    let mut next_aborted = 0usize;
    let mut active: std::collections::HashSet<i64> = Default::default();
    let mut out = Decoded::default();
    for mut batch in whole_batches(bytes) {
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| Error::Records(format!("decode fetched batch: {e}")))?;
        let _ = batch.remaining();
        let Some(first) = set.records.first() else {
            continue;
        };
        let last_offset = set
            .records
            .iter()
            .map(|r| r.offset)
            .max()
            .unwrap_or(first.offset);
        out.next_offset = Some(out.next_offset.unwrap_or(i64::MIN).max(last_offset + 1));
        while next_aborted < aborted.len() && aborted[next_aborted].first_offset <= last_offset {
            active.insert(aborted[next_aborted].producer_id);
            next_aborted += 1;
        }
        if first.control {
            // Control record key: version (i16), type (i16; 0 = abort, 1 = commit).
            let is_abort = first
                .key
                .as_ref()
                .is_some_and(|k| k.len() >= 4 && i16::from_be_bytes([k[2], k[3]]) == 0);
            if is_abort {
                active.remove(&first.producer_id);
            }
            continue;
        }
        if first.transactional && active.contains(&first.producer_id) {
            continue;
        }
        for r in set.records {
            if r.offset < position {
                continue;
            }
            out.records.push(ConsumerRecord {
                offset: r.offset,
                key: r.key,
                value: r.value,
                timestamp: r.timestamp,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &str) -> OutRecord {
        OutRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(v.to_string())),
            timestamp: 1,
        }
    }

    /// A batch as a broker would store it: base offset patched in.
    fn at(base: i64, b: Bytes) -> Bytes {
        let mut v = b.to_vec();
        v[0..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(v)
    }

    #[test]
    fn round_trip_and_partial_tail() {
        let b1 = at(
            10,
            build_batch(&[rec("a"), rec("b")], ProducerIdentity::NONE, -1, false).unwrap(),
        );
        let b2 = at(
            12,
            build_batch(&[rec("c")], ProducerIdentity::NONE, -1, false).unwrap(),
        );
        let mut all = b1.to_vec();
        all.extend_from_slice(&b2);
        // A partial third batch is ignored.
        all.extend_from_slice(&b2[..b2.len() - 3]);
        let mut one = b1.clone();
        assert_eq!(
            RecordBatchDecoder::decode_batch_info(&mut one)
                .unwrap()
                .len(),
            1
        );
        let d = decode_fetched(Bytes::from(all), 11, false, &[]).unwrap();
        let offs: Vec<i64> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(offs, vec![11, 12]);
        assert_eq!(d.records[0].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(d.next_offset, Some(13));
    }

    #[test]
    fn idempotent_batch_carries_sequence() {
        let b = build_batch(
            &[rec("a"), rec("b")],
            ProducerIdentity { id: 7, epoch: 2 },
            40,
            false,
        )
        .unwrap();
        let mut bb = b.clone();
        let info = RecordBatchDecoder::decode_batch_info(&mut bb).unwrap();
        assert_eq!(info[0].producer_id, 7);
        assert_eq!(info[0].producer_epoch, 2);
        assert_eq!(info[0].base_sequence, 40);
        assert_eq!(info[0].record_count, 2);
    }

    fn txn_batch(base: i64, pid: i64, control_abort: Option<bool>, v: &str) -> Bytes {
        let mut r = Record {
            transactional: true,
            control: control_abort.is_some(),
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: base,
            sequence: 0,
            timestamp: 1,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: Default::default(),
        };
        if let Some(abort) = control_abort {
            let t: i16 = if abort { 0 } else { 1 };
            let mut k = vec![0u8, 0u8];
            k.extend_from_slice(&t.to_be_bytes());
            r.key = Some(Bytes::from(k));
            r.value = Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0]));
        }
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&r],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn read_committed_drops_aborted_and_control() {
        let mut all = Vec::new();
        all.extend_from_slice(&txn_batch(0, 1, None, "aborted"));
        all.extend_from_slice(&txn_batch(1, 2, None, "committed"));
        all.extend_from_slice(&txn_batch(2, 1, Some(true), ""));
        all.extend_from_slice(&txn_batch(3, 2, Some(false), ""));
        all.extend_from_slice(&txn_batch(4, 1, None, "later"));
        let aborted = [Aborted {
            producer_id: 1,
            first_offset: 0,
        }];
        let d = decode_fetched(Bytes::from(all.clone()), 0, true, &aborted).unwrap();
        let vals: Vec<&[u8]> = d
            .records
            .iter()
            .filter_map(|r| r.value.as_deref())
            .collect();
        assert_eq!(vals, vec![&b"committed"[..], &b"later"[..]]);
        assert_eq!(d.next_offset, Some(5));
        // read_uncommitted sees the aborted record too, never the markers.
        let d = decode_fetched(Bytes::from(all), 0, false, &aborted).unwrap();
        assert_eq!(d.records.len(), 3);
    }
}
