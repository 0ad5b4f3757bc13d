//! Kafka API handlers: ApiVersions, Metadata, CreateTopics, DeleteTopics, Produce, Fetch and
//! ListOffsets, plus error responses for known APIs this broker does not implement yet.
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
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
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

use super::Broker;
use crate::log::LogError;
use crate::topics::{valid_topic_name, TopicMeta};

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

/// Metadata: this node as the only broker and the leader of every partition.
pub fn metadata(broker: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node = broker.config.node_id;
    let adv = &broker.config.advertised_listeners[0];
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(node);
    b.host = sb(if adv.host.is_empty() {
        "127.0.0.1"
    } else {
        &adv.host
    });
    b.port = i32::from(adv.port);
    let mut resp = MetadataResponse::default();
    resp.brokers = vec![b];
    if version >= 1 {
        resp.controller_id = BrokerId(node);
    }
    if version >= 2 {
        resp.cluster_id = Some(sb(&broker.config.cluster_id));
    }
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
            if valid_topic_name(name) && !broker.topics().contains_key(name) {
                let meta = TopicMeta {
                    name: name.clone(),
                    partitions: broker.config.num_partitions.max(1),
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                };
                if let Err(e) = broker.create_topic(meta) {
                    tracing::error!(topic = %name, error = %e, "auto-create failed");
                }
            }
        }
    }
    let topics = broker.topics();
    let names: Vec<String> = requested.unwrap_or_else(|| topics.keys().cloned().collect());
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(sb(&name)));
        match topics.get(&name) {
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
                    .map(|p| {
                        let mut mp = MetadataResponsePartition::default();
                        mp.partition_index = p.index;
                        mp.leader_id = BrokerId(node);
                        if version >= 7 {
                            mp.leader_epoch = p.leader_epoch;
                        }
                        mp.replica_nodes = vec![BrokerId(node)];
                        mp.isr_nodes = vec![BrokerId(node)];
                        mp
                    })
                    .collect();
            }
        }
        resp.topics.push(t);
    }
    resp
}

/// CreateTopics.
pub fn create_topics(
    broker: &Broker,
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
        if !valid_topic_name(&name) {
            fail(
                &mut r,
                codes::INVALID_TOPIC_EXCEPTION,
                format!("topic name `{name}` is not legal"),
            );
        } else if broker.topics().contains_key(&name) {
            fail(
                &mut r,
                codes::TOPIC_ALREADY_EXISTS,
                format!("topic `{name}` already exists"),
            );
        } else if partitions <= 0 {
            fail(
                &mut r,
                codes::INVALID_PARTITIONS,
                format!("{partitions} partitions requested"),
            );
        } else if rf != 1 {
            fail(
                &mut r,
                codes::INVALID_REPLICATION_FACTOR,
                format!("replication factor {rf} is larger than the 1 available broker"),
            );
        } else if let Err(e) = broker.config.topic_log_config(&configs) {
            fail(&mut r, codes::INVALID_CONFIG, e.to_string());
        } else if !req.validate_only {
            let meta = TopicMeta {
                name: name.clone(),
                partitions,
                replication_factor: rf,
                configs: configs.clone(),
            };
            if let Err(e) = broker.create_topic(meta) {
                fail(&mut r, codes::KAFKA_STORAGE_ERROR, e.to_string());
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

/// DeleteTopics.
pub fn delete_topics(
    broker: &Broker,
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
        match broker.delete_topic(&name) {
            Ok(true) => {}
            Ok(false) => r.error_code = codes::UNKNOWN_TOPIC_OR_PARTITION,
            Err(e) => {
                r.error_code = codes::KAFKA_STORAGE_ERROR;
                if version >= 5 {
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
        }
        resp.responses.push(r);
    }
    resp
}

/// Produce. Returns `None` for acks=0 (Kafka sends no response at all).
pub async fn produce(
    broker: &Arc<Broker>,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let mut resp = ProduceResponse::default();
    let mut appended = false;
    for td in req.topic_data {
        let name = td.name.0.to_string();
        let mut tr = TopicProduceResponse::default();
        tr.name = td.name.clone();
        for pd in td.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            let part = broker
                .topics()
                .get(&name)
                .and_then(|t| t.partitions.get(pd.index as usize).cloned());
            match (part, pd.records) {
                _ if !(-1..=1).contains(&acks) => pr.error_code = codes::INVALID_REQUIRED_ACKS,
                (None, _) => pr.error_code = codes::UNKNOWN_TOPIC_OR_PARTITION,
                (Some(_), None) => pr.error_code = codes::INVALID_RECORD,
                (Some(part), Some(records)) => {
                    let now = broker.clock.now_ms();
                    let res = tokio::task::spawn_blocking(move || {
                        let mut log = part.log();
                        let r = log.append_as_leader(&records, part.leader_epoch, now);
                        (r, log.log_start_offset())
                    })
                    .await;
                    match res {
                        Ok((Ok(info), start)) => {
                            appended = true;
                            pr.base_offset = info.base_offset;
                            pr.log_append_time_ms = info.log_append_time;
                            if version >= 5 {
                                pr.log_start_offset = start;
                            }
                        }
                        Ok((Err(e), _)) => {
                            tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                            pr.error_code = log_error_code(&e);
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
    (acks != 0).then_some(resp)
}

/// Fetch, long-polling until `min_bytes` are available or `max_wait_ms` passes.
pub async fn fetch(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> FetchResponse {
    let start = broker.clock.instant();
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut rx = broker.appended.subscribe();
    loop {
        let (resp, bytes, any_error) = fetch_once(broker, &req, version);
        let waited = broker.clock.instant().duration_since(start);
        if bytes >= req.min_bytes.max(0) as usize || any_error || waited >= max_wait {
            return resp;
        }
        let remaining = max_wait - waited;
        if tokio::time::timeout(remaining, rx.changed()).await.is_err() {
            // Timed out: answer with whatever is there now.
            return fetch_once(broker, &req, version).0;
        }
    }
}

fn fetch_once(broker: &Broker, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let max_bytes = if version >= 3 && req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut any_error = false;
    for ft in &req.topics {
        let name = ft.topic.0.to_string();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = ft.topic.clone();
        for fp in &ft.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            let part = broker
                .topics()
                .get(&name)
                .and_then(|t| t.partitions.get(fp.partition as usize).cloned());
            match part {
                None => {
                    pd.error_code = codes::UNKNOWN_TOPIC_OR_PARTITION;
                    pd.high_watermark = -1;
                    any_error = true;
                }
                Some(part) => {
                    let log = part.log();
                    let hw = log.log_end_offset();
                    pd.high_watermark = hw;
                    pd.last_stable_offset = hw;
                    if version >= 5 {
                        pd.log_start_offset = log.log_start_offset();
                    }
                    let budget = (fp.partition_max_bytes.max(0) as usize)
                        .min(max_bytes.saturating_sub(total));
                    match log.read(fp.fetch_offset, budget, hw, total == 0) {
                        Ok(r) => {
                            total += r.bytes.len();
                            pd.records = Some(r.bytes);
                        }
                        Err(e) => {
                            pd.error_code = log_error_code(&e);
                            pd.records = Some(Bytes::new());
                            any_error = true;
                        }
                    }
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, any_error)
}

/// ListOffsets: earliest (-2), latest (-1) or by timestamp.
pub fn list_offsets(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            let part = broker
                .topics()
                .get(&name)
                .and_then(|t| t.partitions.get(p.partition_index as usize).cloned());
            match part {
                None => pr.error_code = codes::UNKNOWN_TOPIC_OR_PARTITION,
                Some(part) => {
                    let log = part.log();
                    let found = match p.timestamp {
                        -1 => Ok(Some((log.log_end_offset(), -1))),
                        -2 => Ok(Some((log.log_start_offset(), -1))),
                        ts if ts >= 0 => log.offset_for_timestamp(ts),
                        _ => Ok(None),
                    };
                    match found {
                        Ok(Some((offset, ts))) => {
                            pr.offset = offset;
                            pr.timestamp = ts;
                            if version >= 4 {
                                pr.leader_epoch = part.leader_epoch;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => pr.error_code = log_error_code(&e),
                    }
                }
            }
            tr.partitions.push(pr);
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
        RequestKind::InitProducerId(_) => {
            let mut resp = InitProducerIdResponse::default();
            resp.error_code = code;
            ResponseKind::InitProducerId(resp)
        }
        RequestKind::Heartbeat(_) => {
            let mut resp = HeartbeatResponse::default();
            resp.error_code = code;
            ResponseKind::Heartbeat(resp)
        }
        RequestKind::JoinGroup(_) => {
            let mut resp = JoinGroupResponse::default();
            resp.error_code = code;
            ResponseKind::JoinGroup(resp)
        }
        RequestKind::SyncGroup(_) => {
            let mut resp = SyncGroupResponse::default();
            resp.error_code = code;
            ResponseKind::SyncGroup(resp)
        }
        RequestKind::LeaveGroup(_) => {
            let mut resp = LeaveGroupResponse::default();
            resp.error_code = code;
            ResponseKind::LeaveGroup(resp)
        }
        _ => return None,
    })
}

/// Dispatches one decoded request; `Ok(None)` means "send no response" (acks=0 produce).
pub async fn handle(broker: &Arc<Broker>, req: RequestKind, version: i16) -> Option<ResponseKind> {
    Some(match req {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(0)),
        RequestKind::Metadata(r) => {
            let b = broker.clone();
            // Metadata may auto-create topics (file I/O): keep it off the async workers.
            let resp = tokio::task::spawn_blocking(move || metadata(&b, r, version))
                .await
                .ok()?;
            ResponseKind::Metadata(resp)
        }
        RequestKind::CreateTopics(r) => {
            let b = broker.clone();
            let resp = tokio::task::spawn_blocking(move || create_topics(&b, r, version))
                .await
                .ok()?;
            ResponseKind::CreateTopics(resp)
        }
        RequestKind::DeleteTopics(r) => {
            let b = broker.clone();
            let resp = tokio::task::spawn_blocking(move || delete_topics(&b, r, version))
                .await
                .ok()?;
            ResponseKind::DeleteTopics(resp)
        }
        RequestKind::Produce(r) => ResponseKind::Produce(produce(broker, r, version).await?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch(broker, r, version).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(broker, r, version)),
        other => return unsupported(&other, version),
    })
}
