//! Transaction markers: the coordinator writes a commit or abort marker (a control batch, see
//! [`crate::log::batch::build_control_batch`]) to every partition of a transaction, directly
//! when this broker leads the partition, else through WriteTxnMarkers to its leader (an
//! inter-broker request, answered by [`write_txn_markers`]).
//!
//! A marker is appended on the leader's normal path with acks=all and counts as written only
//! once the ISR has it. Appending it also updates the partition's derived state under the same
//! lock: the producer's epoch (a bumped epoch fences the old producer's produces), the
//! transaction index (the LSO moves past the transaction), and for a `__consumer_offsets`
//! partition the group coordinator's offsets committed in the transaction (applied on commit,
//! dropped on abort), so in-memory state follows log order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::state::codes;
use crate::log::batch::{build_control_batch, ControlType};
use crate::replication::partition::Acks;
use crate::server::groups::OFFSETS_TOPIC;
use crate::server::Broker;

/// NOT_LEADER_OR_FOLLOWER
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// How long a marker waits for the ISR.
const MARKER_TIMEOUT_MS: i64 = 5000;
/// Inter-broker request timeout.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends one marker to a partition this broker leads and waits for the ISR; the error is a
/// Kafka error code (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS,
/// REQUEST_TIMED_OUT, ...).
pub async fn write_marker(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), i16> {
    let Some(part) = broker.partition(topic, partition) else {
        return Err(if broker.image().partition(topic, partition).is_some() {
            NOT_LEADER_OR_FOLLOWER
        } else {
            codes::UNKNOWN_TOPIC_OR_PARTITION
        });
    };
    let now = broker.clock.now_ms();
    let kind = if commit {
        ControlType::Commit
    } else {
        ControlType::Abort
    };
    let bytes = Bytes::from(build_control_batch(
        producer_id,
        producer_epoch,
        kind,
        coordinator_epoch,
        now,
    ));
    let b = broker.clone();
    let offsets = topic == OFFSETS_TOPIC;
    let rx = crate::runtime::spawn_blocking(move || {
        let mut st = part.state();
        let r = st.append_as_leader(bytes.clone(), Acks::All, now);
        let rx = match &r {
            Ok(a) => {
                part.after_leader_append(&st, &bytes, a.first_offset);
                part.producers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record_epoch(producer_id, producer_epoch);
                if offsets {
                    b.groups.on_txn_marker(part.index, producer_id, commit);
                }
                let (id, rx) = b.new_waiter();
                st.add_acks_all_waiter(id, a.last_offset + 1, now + MARKER_TIMEOUT_MS);
                Some(rx)
            }
            Err(_) => None,
        };
        let done = st.poll_waiters(now);
        drop(st);
        b.complete(done);
        r.map_err(|e| e.kafka_error().code()).map(|_| rx)
    })
    .await
    .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)??;
    broker.appended.send_modify(|v| *v += 1);
    if let Some(rx) = rx {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.code()),
            Err(_) => return Err(codes::COORDINATOR_NOT_AVAILABLE),
        }
    }
    Ok(())
}

/// Writes a transaction's markers to `partitions` (grouped by leader: local appends, one
/// WriteTxnMarkers per other broker, concurrently); returns the partitions still to retry.
/// Partitions of deleted topics count as written.
pub async fn write_all(
    broker: &Arc<Broker>,
    partitions: &BTreeSet<(String, i32)>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> BTreeSet<(String, i32)> {
    let image = broker.image();
    let me = broker.config.node_id;
    let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut failed = BTreeSet::new();
    for (t, p) in partitions {
        match image.partition(t, *p) {
            None => {} // the topic is gone: nothing to mark
            Some(info) if info.leader < 0 => {
                failed.insert((t.clone(), *p));
            }
            Some(info) => by_leader
                .entry(info.leader)
                .or_default()
                .push((t.clone(), *p)),
        }
    }
    let mut tasks = Vec::new();
    for (leader, parts) in by_leader {
        let b = broker.clone();
        tasks.push(tokio::spawn(async move {
            if leader == me {
                let mut failed = Vec::new();
                for (t, p) in parts {
                    if let Err(code) = write_marker(
                        &b,
                        &t,
                        p,
                        producer_id,
                        producer_epoch,
                        commit,
                        coordinator_epoch,
                    )
                    .await
                    {
                        if code != codes::UNKNOWN_TOPIC_OR_PARTITION {
                            tracing::debug!(topic = %t, partition = p, code, "local marker failed");
                            failed.push((t, p));
                        }
                    }
                }
                failed
            } else {
                send_markers(
                    &b,
                    leader,
                    parts,
                    producer_id,
                    producer_epoch,
                    commit,
                    coordinator_epoch,
                )
                .await
            }
        }));
    }
    for t in tasks {
        match t.await {
            Ok(f) => failed.extend(f),
            Err(e) => tracing::warn!(error = %e, "marker task failed"),
        }
    }
    failed
}

/// Sends one WriteTxnMarkers to `leader`; returns the partitions that failed.
async fn send_markers(
    broker: &Arc<Broker>,
    leader: i32,
    parts: Vec<(String, i32)>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Vec<(String, i32)> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in &parts {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(producer_id);
    m.producer_epoch = producer_epoch;
    m.transaction_result = commit;
    m.coordinator_epoch = coordinator_epoch;
    m.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut wt = WritableTxnMarkerTopic::default();
            wt.name = TopicName(StrBytes::from_string(t));
            wt.partition_indexes = ps;
            wt
        })
        .collect();
    let mut req = WriteTxnMarkersRequest::default();
    req.markers = vec![m];
    let client_id = format!("txn-coordinator-{}", broker.config.node_id);
    let call = super::call_broker(
        broker,
        leader,
        client_id,
        ApiKey::WriteTxnMarkers,
        1,
        &req,
        PEER_TIMEOUT,
    );
    let resp: WriteTxnMarkersResponse = match call.await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(leader, error = %e, "WriteTxnMarkers to the partition leader failed");
            return parts;
        }
    };
    let mut ok = BTreeSet::new();
    for mr in &resp.markers {
        for tr in &mr.topics {
            for pr in &tr.partitions {
                if pr.error_code == 0 || pr.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION {
                    ok.insert((tr.name.0.to_string(), pr.partition_index));
                } else {
                    tracing::debug!(leader, topic = %tr.name.0, partition = pr.partition_index,
                        code = pr.error_code, "remote marker failed");
                }
            }
        }
    }
    parts.into_iter().filter(|p| !ok.contains(p)).collect()
}

/// WriteTxnMarkers (v1, from a transaction coordinator): appends each marker to the named
/// partitions this broker leads, waiting for their ISR.
pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut resp = WriteTxnMarkersResponse::default();
    for m in req.markers {
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id;
        for t in m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            tr.name = t.name.clone();
            let mut waits = Vec::new();
            for p in t.partition_indexes {
                let b = broker.clone();
                let topic = t.name.0.to_string();
                waits.push((
                    p,
                    tokio::spawn(async move {
                        write_marker(
                            &b,
                            &topic,
                            p,
                            m.producer_id.0,
                            m.producer_epoch,
                            m.transaction_result,
                            m.coordinator_epoch,
                        )
                        .await
                    }),
                ));
            }
            for (p, w) in waits {
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = match w.await {
                    Ok(Ok(())) => 0,
                    Ok(Err(code)) => code,
                    Err(_) => codes::COORDINATOR_NOT_AVAILABLE,
                };
                tr.partitions.push(pr);
            }
            mr.topics.push(tr);
        }
        resp.markers.push(mr);
    }
    resp
}
