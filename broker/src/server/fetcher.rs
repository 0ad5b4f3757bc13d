//! The follower fetcher of one partition: truncates by leader epoch (OffsetsForLeaderEpoch) after
//! every leader change, then fetches from the leader as a replica (Fetch v12 with `replica_id`,
//! `current_leader_epoch`, `last_fetched_epoch` and this broker's epoch, KIP-903) and applies each
//! answer to the replica state.
//! Runs until the partition stops following (the reconciler aborts it).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::peer::PeerConn;
use super::{Broker, Hosted};
use crate::replication::partition::{FetchApplied, ReplicaFetchResponse, TruncationStep};
use crate::replication::EpochEndOffset;

const TIMEOUT: Duration = Duration::from_secs(5);

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// Runs the fetcher loop for `hosted`.
pub async fn run(broker: Arc<Broker>, hosted: Arc<Hosted>) {
    let mut conn: Option<(i32, PeerConn)> = None;
    let me = broker.config.node_id;
    loop {
        let leader = match hosted.state().role() {
            crate::replication::partition::Role::Follower { leader } if leader >= 0 => leader,
            _ => return,
        };
        let image = broker.image();
        let Some(info) = image.brokers.get(&leader) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let addr = format!("{}:{}", info.host, info.port);
        if conn.as_ref().map(|(l, _)| *l) != Some(leader) {
            match PeerConn::connect(&addr, format!("replica-{me}"), TIMEOUT).await {
                Ok(c) => conn = Some((leader, c)),
                Err(e) => {
                    tracing::debug!(topic = %hosted.topic, partition = hosted.index, leader, error = %e, "fetcher cannot reach leader");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some((_, c)) = conn.as_mut() else {
            continue;
        };
        let step = match one_round(&broker, &hosted, c).await {
            Ok(step) => step,
            Err(e) => {
                tracing::debug!(topic = %hosted.topic, partition = hosted.index, error = %e, "replica fetch failed");
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(backoff) = step {
            tokio::time::sleep(backoff).await;
        }
    }
}

/// One truncation or fetch exchange; `Ok(Some(d))` asks the loop to back off for `d`.
async fn one_round(
    broker: &Arc<Broker>,
    hosted: &Arc<Hosted>,
    c: &mut PeerConn,
) -> std::io::Result<Option<Duration>> {
    let me = broker.config.node_id;
    let query = hosted
        .state()
        .truncation_query()
        .map_err(std::io::Error::other)?;
    if let Some(q) = query {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = hosted.index;
        p.current_leader_epoch = q.current_leader_epoch;
        p.leader_epoch = q.leader_epoch;
        let mut t = OffsetForLeaderTopic::default();
        t.topic = topic_name(&hosted.topic);
        t.partitions = vec![p];
        let mut req = OffsetForLeaderEpochRequest::default();
        req.replica_id = BrokerId(me);
        req.topics = vec![t];
        let resp: OffsetForLeaderEpochResponse = c
            .call(ApiKey::OffsetForLeaderEpoch, 4, &req, TIMEOUT)
            .await?;
        let r = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| std::io::Error::other("empty OffsetsForLeaderEpoch answer"))?;
        let answer = match ResponseError::try_from_code(r.error_code) {
            Some(e) => Err(e),
            None => Ok(EpochEndOffset {
                epoch: r.leader_epoch,
                end_offset: r.end_offset,
            }),
        };
        let step = hosted
            .state()
            .apply_truncation_answer(answer)
            .map_err(std::io::Error::other)?;
        return Ok(match step {
            TruncationStep::Done { log_end_offset } => {
                tracing::info!(topic = %hosted.topic, partition = hosted.index, log_end_offset, "follower truncated by leader epoch");
                None
            }
            TruncationStep::AskAgain => None,
            TruncationStep::Retry(_) => Some(Duration::from_millis(200)),
        });
    }
    let Some(r) = hosted.state().fetch_request() else {
        return Ok(Some(Duration::from_millis(100)));
    };
    let mut fp = FetchPartition::default();
    fp.partition = hosted.index;
    fp.current_leader_epoch = r.current_leader_epoch;
    fp.fetch_offset = r.fetch_offset;
    fp.last_fetched_epoch = r.last_fetched_epoch;
    fp.log_start_offset = r.log_start_offset;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = topic_name(&hosted.topic);
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(r.replica_id);
    // KIP-903: this broker's epoch rides with every replica fetch, so the leader can name it
    // in an ISR expansion and the controller can refuse a stale incarnation.
    if let Some(epoch) = broker.image().brokers.get(&me).map(|b| b.epoch) {
        req.unknown_tagged_fields.insert(
            super::REPLICA_EPOCH_TAG,
            bytes::Bytes::copy_from_slice(&epoch.to_be_bytes()),
        );
    }
    req.max_wait_ms = 500;
    req.min_bytes = 1;
    req.max_bytes = 8 << 20;
    req.topics = vec![ft];
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req, TIMEOUT).await?;
    let pd = resp
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| std::io::Error::other("empty fetch answer"))?;
    let diverging = (pd.diverging_epoch.epoch >= 0).then_some(EpochEndOffset {
        epoch: pd.diverging_epoch.epoch,
        end_offset: pd.diverging_epoch.end_offset,
    });
    let response = ReplicaFetchResponse {
        error: ResponseError::try_from_code(pd.error_code),
        high_watermark: pd.high_watermark,
        log_start_offset: pd.log_start_offset,
        diverging_epoch: diverging,
        records: pd.records.clone().filter(|r| !r.is_empty()),
    };
    if response.records.is_some() || response.diverging_epoch.is_some() {
        // A simulated disk that stalls or is slow holds the follower's append (or truncation)
        // as it holds the leader's; nothing in production.
        crate::storage::ready().await;
    }
    let now = broker.clock.now_ms();
    let copied = response.records.clone();
    let applied = {
        let mut st = hosted.state();
        let applied = st
            .apply_fetch_response(response, now)
            .map_err(std::io::Error::other)?;
        if let (FetchApplied::Appended { .. }, Some(bytes)) = (&applied, &copied) {
            // Followers derive the same transaction state from the same batches.
            hosted.after_follower_append(bytes);
        }
        applied
    };
    match applied {
        FetchApplied::Appended { .. } | FetchApplied::Truncated { .. } => {
            broker.appended.send_modify(|v| *v += 1);
            Ok(None)
        }
        FetchApplied::OffsetOutOfRange => {
            let start = list_offset(c, hosted, me, -2).await?;
            let end = list_offset(c, hosted, me, -1).await?;
            hosted
                .state()
                .follower_handle_out_of_range(start, end)
                .map_err(std::io::Error::other)?;
            Ok(None)
        }
        FetchApplied::Retry(e) => {
            tracing::debug!(topic = %hosted.topic, partition = hosted.index, error = ?e, "leader asked the follower to retry");
            Ok(Some(Duration::from_millis(200)))
        }
    }
}

async fn list_offset(c: &mut PeerConn, hosted: &Hosted, me: i32, ts: i64) -> std::io::Result<i64> {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = hosted.index;
    p.timestamp = ts;
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(&hosted.topic);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(me);
    req.topics = vec![t];
    let resp: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 4, &req, TIMEOUT).await?;
    let r = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| std::io::Error::other("empty ListOffsets answer"))?;
    if r.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "ListOffsets error {}",
            r.error_code
        )));
    }
    Ok(r.offset)
}
