//! Kafka API handlers: ApiVersions, Metadata, CreateTopics, DeleteTopics, Produce, Fetch,
//! ListOffsets, OffsetForLeaderEpoch and InitProducerId, dispatch to the group (`groups::api`)
//! and transaction (`txn::api`, `txn::markers`) APIs, plus error responses for known APIs this
//! broker does not implement. Fetch and ListOffsets honour `isolation_level`: read_committed
//! reads stop at the last stable offset and carry the aborted transactions they overlap.
//!
//! Responses are encoded strictly by `kafka-protocol`: a field set to a non-default value at a
//! version that lacks it is an encoding error, so version-specific fields are set only where the
//! negotiated version has them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset as OffsetEpochEndOffset, OffsetForLeaderTopicResult,
};

use super::producers::Check;
use super::Broker;
use crate::log::batch::{split_batches, BatchHeader};
use crate::log::{LogError, TimestampType};
use crate::metadata::Command;
use crate::replication::fetch::{FetchDecision, FetchPartitionRequest};
use crate::replication::log_adapter::LogAdapterError;
use crate::replication::partition::{Acks, ReplicationError};
use crate::replication::AppendedBatches;
use crate::topics::valid_topic_name;

/// Kafka error codes used by the handlers.
pub mod codes {
    /// OFFSET_OUT_OF_RANGE
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// CORRUPT_MESSAGE
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// UNKNOWN_TOPIC_OR_PARTITION
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// MESSAGE_TOO_LARGE
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// INVALID_TOPIC_EXCEPTION
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    /// INVALID_REQUIRED_ACKS
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    /// UNSUPPORTED_VERSION
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// TOPIC_ALREADY_EXISTS
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// INVALID_PARTITIONS
    pub const INVALID_PARTITIONS: i16 = 37;
    /// INVALID_REPLICATION_FACTOR
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// INVALID_CONFIG
    pub const INVALID_CONFIG: i16 = 40;
    /// LEADER_NOT_AVAILABLE
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// NOT_LEADER_OR_FOLLOWER
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// KAFKA_STORAGE_ERROR
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// INVALID_RECORD
    pub const INVALID_RECORD: i16 = 87;
}

/// The APIs and version ranges this broker implements (advertised by ApiVersions).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 9),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
];

/// The version range this broker implements for `key`, if any.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::CorruptRecord(_) => codes::CORRUPT_MESSAGE,
        LogError::InvalidRecord(_) | LogError::NotBatchBoundary(_) => codes::INVALID_RECORD,
        LogError::RecordTooLarge { .. } => codes::MESSAGE_TOO_LARGE,
        LogError::OffsetOutOfRange { .. } => codes::OFFSET_OUT_OF_RANGE,
        LogError::Io { .. } => codes::KAFKA_STORAGE_ERROR,
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The ApiVersions response (also used, at v0, for KIP-511's unsupported-version answer).
pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    r
}

fn replication_error_code(e: &ReplicationError) -> i16 {
    if let ReplicationError::Log(inner) = e {
        if let Some(LogAdapterError::Log(le)) = inner.downcast_ref::<LogAdapterError>() {
            return log_error_code(le);
        }
    }
    e.kafka_error().code()
}

/// Metadata: live brokers and every partition's leader, epoch, replicas and ISR from the image.
pub async fn metadata(
    broker: &Arc<Broker>,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<String>> = match req.topics {
        None => None,
        Some(ts) if ts.is_empty() && version == 0 => None,
        Some(ts) => Some(
            ts.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let allow_create =
        (version < 4 || req.allow_auto_topic_creation) && broker.config.auto_create_topics;
    if let (Some(names), true) = (&requested, allow_create) {
        for name in names {
            if valid_topic_name(name) && !broker.image().topics.contains_key(name) {
                let r = broker
                    .propose(Command::CreateTopic {
                        name: name.clone(),
                        partitions: broker.config.num_partitions.max(1),
                        replication_factor: broker.config.default_replication_factor.max(1),
                        configs: BTreeMap::new(),
                    })
                    .await;
                if r.error_code != 0 && r.error_code != codes::TOPIC_ALREADY_EXISTS {
                    tracing::warn!(topic = %name, code = r.error_code, msg = %r.message, "auto-create failed");
                }
            }
        }
    }
    let image = broker.image();
    resp.brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced || b.id == broker.config.node_id)
        .map(|b| {
            let mut mb = MetadataResponseBroker::default();
            mb.node_id = BrokerId(b.id);
            mb.host = sb(&b.host);
            mb.port = i32::from(b.port);
            mb
        })
        .collect();
    if version >= 1 {
        resp.controller_id = BrokerId(match &broker.metadata {
            super::MetadataSource::Quorum(n) => n.active_controller().await.unwrap_or(-1),
            super::MetadataSource::Local { .. } => broker.config.node_id,
        });
    }
    if version >= 2 {
        resp.cluster_id = Some(sb(&broker.config.cluster_id));
    }
    let names: Vec<String> = requested.unwrap_or_else(|| image.topics.keys().cloned().collect());
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(sb(&name)));
        match image.topics.get(&name) {
            None => {
                t.error_code = if valid_topic_name(&name) {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    codes::INVALID_TOPIC_EXCEPTION
                };
            }
            Some(topic) => {
                t.partitions = topic
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let mut mp = MetadataResponsePartition::default();
                        mp.partition_index = i as i32;
                        mp.leader_id = BrokerId(p.leader);
                        if p.leader < 0 {
                            mp.error_code = codes::LEADER_NOT_AVAILABLE;
                        }
                        if version >= 7 {
                            mp.leader_epoch = p.leader_epoch;
                        }
                        mp.replica_nodes = p.replicas.iter().map(|r| BrokerId(*r)).collect();
                        mp.isr_nodes = p.isr.iter().map(|r| BrokerId(*r)).collect();
                        if version >= 5 {
                            mp.offline_replicas = p
                                .replicas
                                .iter()
                                .filter(|r| !image.is_live(**r))
                                .map(|r| BrokerId(*r))
                                .collect();
                        }
                        mp
                    })
                    .collect();
            }
        }
        resp.topics.push(t);
    }
    resp
}

/// CreateTopics, through the metadata source (the controller in a cluster).
pub async fn create_topics(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        let partitions = if !t.assignments.is_empty() {
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            broker.config.num_partitions
        } else {
            t.num_partitions
        };
        let rf = if t.replication_factor == -1 {
            broker.config.default_replication_factor
        } else {
            t.replication_factor
        };
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let fail = |r: &mut CreatableTopicResult, code: i16, msg: String| {
            r.error_code = code;
            if version >= 1 {
                r.error_message = Some(StrBytes::from_string(msg));
            }
        };
        let live = broker
            .image()
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .count();
        if !valid_topic_name(&name) {
            fail(
                &mut r,
                codes::INVALID_TOPIC_EXCEPTION,
                format!("topic name `{name}` is not legal"),
            );
        } else if broker.image().topics.contains_key(&name) {
            fail(
                &mut r,
                codes::TOPIC_ALREADY_EXISTS,
                format!("topic `{name}` already exists"),
            );
        } else if partitions <= 0 || partitions > broker.config.max_partitions_per_topic {
            fail(
                &mut r,
                codes::INVALID_PARTITIONS,
                format!(
                    "{partitions} partitions requested; 1..={} allowed (topic.max.partitions)",
                    broker.config.max_partitions_per_topic
                ),
            );
        } else if rf <= 0 || rf as usize > live {
            fail(
                &mut r,
                codes::INVALID_REPLICATION_FACTOR,
                format!("replication factor {rf} with {live} live brokers"),
            );
        } else if let Err(e) = broker.config.validate_topic_configs(&configs) {
            fail(&mut r, codes::INVALID_CONFIG, e.to_string());
        } else if !req.validate_only {
            let res = broker
                .propose(Command::CreateTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor: rf,
                    configs: configs.clone(),
                })
                .await;
            if res.error_code != 0 {
                fail(&mut r, res.error_code, res.message);
            }
        }
        if version >= 5 && r.error_code == 0 {
            r.num_partitions = partitions;
            r.replication_factor = rf;
            r.configs = Some(
                configs
                    .iter()
                    .map(|(k, v)| {
                        let mut c = CreatableTopicConfigs::default();
                        c.name = sb(k);
                        c.value = Some(sb(v));
                        c.config_source = 1; // DYNAMIC_TOPIC_CONFIG
                        c
                    })
                    .collect(),
            );
        }
        resp.topics.push(r);
    }
    resp
}

/// DeleteTopics, through the metadata source.
pub async fn delete_topics(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let names: Vec<String> = if version >= 6 {
        req.topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect()
    } else {
        req.topic_names.iter().map(|n| n.0.to_string()).collect()
    };
    let mut resp = DeleteTopicsResponse::default();
    for name in names {
        let mut r = DeletableTopicResult::default();
        r.name = Some(TopicName(sb(&name)));
        let res = broker
            .propose(Command::DeleteTopic { name: name.clone() })
            .await;
        r.error_code = res.error_code;
        if version >= 5 && res.error_code != 0 {
            r.error_message = Some(StrBytes::from_string(res.message));
        }
        resp.responses.push(r);
    }
    resp
}

/// Why a partition's produce was refused.
enum Refused {
    /// Idempotence: OUT_OF_ORDER_SEQUENCE_NUMBER or INVALID_PRODUCER_EPOCH.
    Code(i16),
    /// The replica state or the log refused.
    Replication(ReplicationError),
}

/// InitProducerId. Idempotent producers get a new cluster-unique id from the metadata log at
/// epoch 0 on every call, as Kafka's do; a `transactional.id`
/// goes to its transaction coordinator ([`super::txn::api::init_producer_id`]).
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    req: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    if let Some(id) = req.transactional_id.as_ref().filter(|id| !id.0.is_empty()) {
        let id = id.0.to_string();
        return super::txn::api::init_producer_id(broker, &req, &id, version).await;
    }
    // Without a transactional id Kafka always hands out a new producer id at epoch 0, even
    // when the request names the current one (TransactionCoordinator.handleInitProducerId).
    let mut resp = InitProducerIdResponse::default();
    let r = broker.propose(Command::AllocateProducerId).await;
    if r.error_code != 0 {
        resp.error_code = r.error_code;
        return resp;
    }
    resp.producer_id = ProducerId(r.value);
    resp.producer_epoch = 0;
    resp
}

/// KIP-890 part 1 on the leader: a produce carrying a transactional batch must belong to the
/// producer's ongoing transaction, and name its transactional id. `Ok` for other produces.
async fn verify_transactional(
    broker: &Arc<Broker>,
    txn_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: &Bytes,
) -> Result<(), i16> {
    let Some(h) = split_batches(records)
        .filter_map(|b| b.ok().map(|(h, _)| h))
        .find(|h| h.is_transactional() && !h.is_control())
    else {
        return Ok(());
    };
    let Some(id) = txn_id else {
        return Err(crate::server::txn::state::codes::INVALID_TXN_STATE);
    };
    crate::server::txn::verify::verify_produce(
        broker,
        id,
        h.producer_id,
        h.producer_epoch,
        topic,
        partition,
    )
    .await
}

/// Produce. Returns `None` for acks=0 (Kafka sends no response at all). acks=all waits until
/// the high watermark passes the appended records (or the request's timeout).
pub async fn produce(
    broker: &Arc<Broker>,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let mode = Acks::from_wire(acks);
    let mut resp = ProduceResponse::default();
    let mut appended = false;
    let mut waits = Vec::new();
    let deadline = broker.clock.now_ms() + i64::from(req.timeout_ms.max(0));
    let txn_id = req
        .transactional_id
        .as_ref()
        .map(|t| t.0.to_string())
        .filter(|t| !t.is_empty());
    for td in req.topic_data {
        let name = td.name.0.to_string();
        let mut tr = TopicProduceResponse::default();
        tr.name = td.name.clone();
        // LogAppendTime topics report the append time (the `now` handed to the log) per partition.
        let log_append_time = broker
            .image()
            .topics
            .get(&name)
            .and_then(|t| broker.config.topic_log_config(&t.configs).ok())
            .is_some_and(|c| c.timestamp_type == TimestampType::LogAppendTime);
        for pd in td.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            let part = broker.partition(&name, pd.index);
            match (mode, part, pd.records) {
                (None, _, _) => pr.error_code = codes::INVALID_REQUIRED_ACKS,
                (_, None, _) => {
                    pr.error_code = if broker.image().partition(&name, pd.index).is_some() {
                        codes::NOT_LEADER_OR_FOLLOWER
                    } else {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    }
                }
                (_, Some(_), None) => pr.error_code = codes::INVALID_RECORD,
                (Some(mode), Some(part), Some(records)) => 'append: {
                    // Release rule `txn_verification_default` (KIP-890 part 1, Kafka 3.6+),
                    // through `transaction.partition.verification.enable`.
                    if broker.config.txn_partition_verification && part.state().is_leader() {
                        if let Err(code) = verify_transactional(
                            broker,
                            txn_id.as_deref(),
                            &name,
                            pd.index,
                            &records,
                        )
                        .await
                        {
                            pr.error_code = code;
                            break 'append;
                        }
                    }
                    let now = broker.clock.now_ms();
                    let b = broker.clone();
                    let res = crate::runtime::spawn_blocking(move || {
                        let mut st = part.state();
                        let headers: Vec<BatchHeader> = split_batches(&records)
                            .filter_map(|b| b.ok().map(|(h, _)| h))
                            .collect();
                        let mut producers =
                            part.producers.lock().unwrap_or_else(|p| p.into_inner());
                        let mut dup = None;
                        let mut reject = None;
                        if headers.iter().any(|h| h.is_control()) {
                            // Only transaction coordinators write control batches.
                            reject = Some(codes::INVALID_RECORD);
                        } else if st.is_leader() {
                            for h in &headers {
                                match producers.check(h) {
                                    Check::Append => {}
                                    // Bug mode dedupe-missing: the retry is appended again.
                                    Check::Duplicate(_) if b.bugs.dedupe_missing => {}
                                    Check::Duplicate(off) => dup = Some(off),
                                    Check::Reject(code) => reject = Some(code),
                                }
                            }
                        }
                        let r = match (reject, dup) {
                            (Some(code), _) => Err(Refused::Code(code)),
                            (None, Some(off)) => {
                                let count: i64 = headers
                                    .iter()
                                    .map(|h| i64::from(h.last_offset_delta) + 1)
                                    .sum();
                                Ok(AppendedBatches {
                                    first_offset: off,
                                    last_offset: off + count - 1,
                                    batches: Vec::new(),
                                })
                            }
                            (None, None) => st
                                .append_as_leader(records.clone(), mode, now)
                                .map_err(Refused::Replication),
                        };
                        if let (Ok(a), None) = (&r, dup) {
                            part.after_leader_append(&st, &records, a.first_offset);
                        }
                        if let (Ok(a), None) = (&r, dup) {
                            let mut base = a.first_offset;
                            for h in &headers {
                                let mut h = *h;
                                h.base_offset = base;
                                producers.record(&h);
                                base += i64::from(h.last_offset_delta) + 1;
                            }
                        }
                        drop(producers);
                        let mut waiter = None;
                        if let (Ok(a), Acks::All) = (&r, mode) {
                            let (id, rx) = b.new_waiter();
                            st.add_acks_all_waiter(id, a.last_offset + 1, deadline);
                            waiter = Some(rx);
                        }
                        let done = st.poll_waiters(now);
                        let start = st.log_start_offset();
                        drop(st);
                        b.complete(done);
                        (r, start, waiter)
                    })
                    .await;
                    match res {
                        Ok((Ok(a), start, waiter)) => {
                            appended = true;
                            pr.base_offset = a.first_offset;
                            if log_append_time && version >= 2 {
                                pr.log_append_time_ms = now;
                            }
                            if version >= 5 {
                                pr.log_start_offset = start;
                            }
                            if let Some(rx) = waiter {
                                waits.push((
                                    resp.responses.len(),
                                    tr.partition_responses.len(),
                                    rx,
                                ));
                            }
                        }
                        Ok((Err(Refused::Code(code)), _, _)) => pr.error_code = code,
                        Ok((Err(Refused::Replication(e)), _, _)) => {
                            tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                            pr.error_code = replication_error_code(&e);
                            if version >= 8 {
                                pr.error_message = Some(StrBytes::from_string(e.to_string()));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "append task failed");
                            pr.error_code = codes::KAFKA_STORAGE_ERROR;
                        }
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    if appended {
        broker.appended.send_modify(|v| *v += 1);
    }
    for (t, p, rx) in waits {
        let result = rx.await.unwrap_or(Err(ResponseError::RequestTimedOut));
        if let Err(e) = result {
            let pr = &mut resp.responses[t].partition_responses[p];
            pr.error_code = e.code();
            // The records are in the leader's log; the offset is still reported as Kafka does
            // only on success.
            pr.base_offset = -1;
        }
    }
    (acks != 0).then_some(resp)
}

/// Fetch, long-polling until `min_bytes` are available or `max_wait_ms` passes.
pub async fn fetch(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> FetchResponse {
    let start = broker.clock.instant();
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut rx = broker.appended.subscribe();
    loop {
        let b = broker.clone();
        let r = req.clone();
        let (resp, bytes, any_error) =
            match crate::runtime::spawn_blocking(move || fetch_once(&b, &r, version)).await {
                Ok(x) => x,
                Err(_) => return FetchResponse::default(),
            };
        let waited = broker.clock.instant().duration_since(start);
        if bytes >= req.min_bytes.max(0) as usize || any_error || waited >= max_wait {
            return resp;
        }
        let remaining = max_wait - waited;
        if tokio::time::timeout(remaining, rx.changed()).await.is_err() {
            let b = broker.clone();
            return crate::runtime::spawn_blocking(move || fetch_once(&b, &req, version).0)
                .await
                .unwrap_or_default();
        }
    }
}

fn fetch_once(
    broker: &Arc<Broker>,
    req: &FetchRequest,
    version: i16,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let max_bytes = if version >= 3 && req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    // KIP-903: the follower's broker epoch (ReplicaState.ReplicaEpoch from v15; our peers send
    // it as a tagged field at v12), -1 when absent.
    let replica_epoch = if version >= 15 {
        req.replica_state.replica_epoch
    } else {
        req.unknown_tagged_fields
            .get(&super::REPLICA_EPOCH_TAG)
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(-1, i64::from_be_bytes)
    };
    let now = broker.clock.now_ms();
    let read_committed = version >= 4 && req.isolation_level == 1 && replica_id < 0;
    let mut total = 0usize;
    let mut any_error = false;
    let mut hw_advanced = false;
    for ft in &req.topics {
        let name = ft.topic.0.to_string();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = ft.topic.clone();
        for fp in &ft.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            let Some(part) = broker.partition(&name, fp.partition) else {
                pd.error_code = if broker.image().partition(&name, fp.partition).is_some() {
                    codes::NOT_LEADER_OR_FOLLOWER
                } else {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                };
                pd.high_watermark = -1;
                any_error = true;
                tr.partitions.push(pd);
                continue;
            };
            let mut st = part.state();
            let decision = st.decide_fetch(&FetchPartitionRequest {
                replica_id,
                fetch_offset: fp.fetch_offset,
                current_leader_epoch: if version >= 9 {
                    fp.current_leader_epoch
                } else {
                    -1
                },
                last_fetched_epoch: if version >= 12 {
                    fp.last_fetched_epoch
                } else {
                    -1
                },
            });
            match decision {
                FetchDecision::Error(e) => {
                    pd.error_code = e.code();
                    pd.high_watermark = -1;
                    any_error = true;
                }
                FetchDecision::Diverging {
                    diverging_epoch,
                    offsets,
                } => {
                    pd.high_watermark = offsets.high_watermark;
                    pd.last_stable_offset = offsets.high_watermark;
                    if version >= 5 {
                        pd.log_start_offset = offsets.log_start_offset;
                    }
                    if version >= 12 {
                        pd.diverging_epoch.epoch = diverging_epoch.epoch;
                        pd.diverging_epoch.end_offset = diverging_epoch.end_offset;
                    }
                    pd.records = Some(Bytes::new());
                    any_error = true;
                }
                FetchDecision::Read {
                    fetch_offset,
                    max_offset_exclusive,
                    offsets,
                } => {
                    pd.high_watermark = offsets.high_watermark;
                    // Replicas read to the log end and need no LSO; clients get it (KIP-98).
                    let lso = if replica_id < 0 {
                        part.txns_synced(&st)
                            .last_stable_offset(offsets.high_watermark)
                    } else {
                        offsets.high_watermark
                    };
                    pd.last_stable_offset = lso;
                    if version >= 5 {
                        pd.log_start_offset = offsets.log_start_offset;
                    }
                    let max_offset_exclusive = if read_committed {
                        max_offset_exclusive.min(lso)
                    } else {
                        max_offset_exclusive
                    };
                    if version >= 4 && !read_committed {
                        pd.aborted_transactions = None;
                    }
                    let budget = (fp.partition_max_bytes.max(0) as usize)
                        .min(max_bytes.saturating_sub(total));
                    match st
                        .log()
                        .read(fetch_offset, budget, max_offset_exclusive, total == 0)
                    {
                        Ok(r) => {
                            total += r.bytes.len();
                            // Bug mode ignore-abort-markers: no aborted transactions listed.
                            if read_committed
                                && !r.bytes.is_empty()
                                && !broker.bugs.ignore_abort_markers
                            {
                                // Aborted transactions overlapping the batches returned.
                                let end = split_batches(&r.bytes)
                                    .filter_map(|b| b.ok().map(|(h, _)| h.next_offset()))
                                    .last()
                                    .unwrap_or(fetch_offset);
                                let from = r.first_batch_offset.unwrap_or(fetch_offset);
                                pd.aborted_transactions = Some(
                                    part.txns_synced(&st)
                                        .aborted_between(from, end)
                                        .into_iter()
                                        .map(|a| {
                                            let mut t = AbortedTransaction::default();
                                            t.producer_id = ProducerId(a.producer_id);
                                            t.first_offset = a.first_offset;
                                            t
                                        })
                                        .collect(),
                                );
                            }
                            pd.records = Some(r.bytes);
                        }
                        Err(e) => {
                            pd.error_code = log_error_code(&e);
                            pd.records = Some(Bytes::new());
                            any_error = true;
                        }
                    }
                    if replica_id >= 0 && pd.error_code == 0 {
                        let follower_start = if version >= 5 {
                            fp.log_start_offset
                        } else {
                            -1
                        };
                        part.note_follower_epoch(replica_id, replica_epoch);
                        match st.record_follower_fetch(
                            replica_id,
                            fetch_offset,
                            follower_start,
                            offsets.log_end_offset,
                            now,
                        ) {
                            Ok(out) => {
                                if out.high_watermark_advanced {
                                    hw_advanced = true;
                                    let done = st.poll_waiters(now);
                                    broker.complete(done);
                                }
                                if let Some(p) = out.alter_partition {
                                    tracing::info!(topic = %name, partition = fp.partition, isr = ?p.new_isr, "expanding ISR");
                                    broker.send_alter_partition(part.clone(), p);
                                }
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "recording a follower fetch failed")
                            }
                        }
                    }
                }
            }
            drop(st);
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    if hw_advanced {
        broker.appended.send_modify(|v| *v += 1);
    }
    (resp, total, any_error)
}

/// ListOffsets: earliest (-2), latest (-1: the HW for clients, the LEO for replicas) or by
/// timestamp; only the leader answers.
pub fn list_offsets(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    let replica = req.replica_id.0 >= 0;
    let read_committed = version >= 2 && req.isolation_level == 1 && !replica;
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            match broker.partition(&name, p.partition_index) {
                None => {
                    pr.error_code = if broker.image().partition(&name, p.partition_index).is_some()
                    {
                        codes::NOT_LEADER_OR_FOLLOWER
                    } else {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    }
                }
                Some(part) => {
                    let st = part.state();
                    let current = if version >= 4 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    if let Err(e) = st.check_leader(current) {
                        pr.error_code = e.code();
                    } else {
                        // read_committed sees up to the last stable offset, others the HW.
                        let visible = if read_committed {
                            part.txns_synced(&st)
                                .last_stable_offset(st.high_watermark())
                        } else {
                            st.high_watermark()
                        };
                        let found = match p.timestamp {
                            -1 if replica => Ok(Some((st.log_end_offset(), -1))),
                            -1 => Ok(Some((visible, -1))),
                            -2 => Ok(Some((st.log_start_offset(), -1))),
                            ts if ts >= 0 => st
                                .log()
                                .offset_for_timestamp(ts)
                                .map(|o| o.filter(|(off, _)| replica || *off < visible)),
                            _ => Ok(None),
                        };
                        match found {
                            Ok(Some((offset, ts))) => {
                                pr.offset = offset;
                                pr.timestamp = ts;
                                if version >= 4 {
                                    pr.leader_epoch = st.leader_epoch();
                                }
                            }
                            Ok(None) => {}
                            Err(e) => pr.error_code = log_error_code(&e),
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// OffsetsForLeaderEpoch (from follower replicas): the end offset of the requested epoch.
pub fn offsets_for_leader_epoch(
    broker: &Broker,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let name = t.topic.0.to_string();
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in t.partitions {
            let mut r = OffsetEpochEndOffset::default();
            r.partition = p.partition;
            match broker.partition(&name, p.partition) {
                None => r.error_code = codes::NOT_LEADER_OR_FOLLOWER,
                Some(part) => match part
                    .state()
                    .offsets_for_leader_epoch(p.current_leader_epoch, p.leader_epoch)
                {
                    Ok(eo) => {
                        r.leader_epoch = eo.epoch;
                        r.end_offset = eo.end_offset;
                    }
                    Err(e) => r.error_code = e.code(),
                },
            }
            tr.partitions.push(r);
        }
        resp.topics.push(tr);
    }
    resp
}

/// Known APIs this broker does not implement yet but answers with UNSUPPORTED_VERSION (their
/// responses carry an error code); any other unimplemented API closes the connection undecoded.
pub const ERROR_CAPABLE: &[ApiKey] = &[
    ApiKey::FindCoordinator,
    ApiKey::InitProducerId,
    ApiKey::Heartbeat,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::LeaveGroup,
];

/// An UNSUPPORTED_VERSION answer for a known API this broker does not implement yet, where the
/// API's response can carry it; `None` means the connection must be closed instead.
pub fn unsupported(req: &RequestKind, version: i16) -> Option<ResponseKind> {
    let code = codes::UNSUPPORTED_VERSION;
    // A response whose only content is its top-level error code.
    macro_rules! error_only {
        ($variant:ident, $resp:ty) => {{
            let mut resp = <$resp>::default();
            resp.error_code = code;
            ResponseKind::$variant(resp)
        }};
    }
    Some(match req {
        RequestKind::FindCoordinator(r) => {
            let mut resp = FindCoordinatorResponse::default();
            if version >= 4 {
                resp.coordinators = r
                    .coordinator_keys
                    .iter()
                    .map(|k| {
                        let mut c = Coordinator::default();
                        c.key = k.clone();
                        c.error_code = code;
                        c
                    })
                    .collect();
            } else {
                resp.error_code = code;
            }
            ResponseKind::FindCoordinator(resp)
        }
        RequestKind::InitProducerId(_) => error_only!(InitProducerId, InitProducerIdResponse),
        RequestKind::Heartbeat(_) => error_only!(Heartbeat, HeartbeatResponse),
        RequestKind::JoinGroup(_) => error_only!(JoinGroup, JoinGroupResponse),
        RequestKind::SyncGroup(_) => error_only!(SyncGroup, SyncGroupResponse),
        RequestKind::LeaveGroup(_) => error_only!(LeaveGroup, LeaveGroupResponse),
        _ => return None,
    })
}

/// Dispatches one decoded request; `None` means "send no response" (acks=0 produce).
pub async fn handle(broker: &Arc<Broker>, req: RequestKind, version: i16) -> Option<ResponseKind> {
    Some(match req {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(0)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(broker, r, version).await),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics(broker, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics(broker, r, version).await)
        }
        RequestKind::Produce(r) => ResponseKind::Produce(produce(broker, r, version).await?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch(broker, r, version).await),
        RequestKind::ListOffsets(r) => {
            let b = broker.clone();
            ResponseKind::ListOffsets(
                crate::runtime::spawn_blocking(move || list_offsets(&b, r, version))
                    .await
                    .ok()?,
            )
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id(broker, r, version).await)
        }
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            super::txn::api::add_partitions_to_txn(broker, r, version).await,
        ),
        RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(
            super::txn::api::add_offsets_to_txn(broker, r, version).await,
        ),
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(super::txn::api::end_txn(broker, r, version).await)
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(super::txn::markers::write_txn_markers(broker, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(
            super::groups::api::txn_offset_commit(broker, r, version).await,
        ),
        RequestKind::OffsetForLeaderEpoch(r) => {
            let b = broker.clone();
            ResponseKind::OffsetForLeaderEpoch(
                crate::runtime::spawn_blocking(move || offsets_for_leader_epoch(&b, r))
                    .await
                    .ok()?,
            )
        }
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(
            super::groups::api::find_coordinator(broker, r, version).await,
        ),
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(super::groups::api::join_group(broker, r, version).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(super::groups::api::sync_group(broker, r, version).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(super::groups::api::heartbeat(broker, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(super::groups::api::leave_group(broker, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(super::groups::api::offset_commit(broker, r, version).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(super::groups::api::offset_fetch(broker, r, version).await)
        }
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(
            super::groups::api::describe_groups(broker, r, version).await,
        ),
        RequestKind::ListGroups(_) => {
            ResponseKind::ListGroups(super::groups::api::list_groups(broker, version))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(super::configs::describe_configs(broker, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(super::configs::alter_configs(broker, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            super::configs::incremental_alter_configs(broker, r).await,
        ),
        other => return unsupported(&other, version),
    })
}
