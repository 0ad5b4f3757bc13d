//! The transaction APIs on the wire: InitProducerId with a `transactional.id` (v0–4),
//! AddPartitionsToTxn (v0–3), AddOffsetsToTxn (v0–3) and EndTxn (v0–3). Each response field is
//! set only at the versions that have it; PRODUCER_FENCED is answered as INVALID_PRODUCER_EPOCH
//! to versions older than KIP-588's (InitProducerId v4, the others v2), as Kafka does.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::*;

use super::state::{codes, EndStep, InitStep, TxnMeta};
use crate::metadata::Command;
use crate::server::groups::OFFSETS_TOPIC;
use crate::server::Broker;

/// PRODUCER_FENCED for clients that know it, INVALID_PRODUCER_EPOCH for older ones.
fn fenced(code: i16, version: i16, since: i16) -> i16 {
    if code == codes::PRODUCER_FENCED && version < since {
        codes::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// How many state rounds InitProducerId tries (a fence, then the bump).
const INIT_ROUNDS: usize = 4;

/// InitProducerId for a transactional id: a new producer id (epoch 0) on first use, else the
/// epoch bumped; an open transaction of the previous producer is aborted first (its markers
/// carry a bumped epoch, fencing it).
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    req: &InitProducerIdRequest,
    id: &str,
    version: i16,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    let code = match init(broker, req, id, version).await {
        Ok((pid, epoch)) => {
            resp.producer_id = ProducerId(pid);
            resp.producer_epoch = epoch;
            0
        }
        Err(code) => code,
    };
    resp.error_code = fenced(code, version, 4);
    resp
}

async fn init(
    broker: &Arc<Broker>,
    req: &InitProducerIdRequest,
    id: &str,
    version: i16,
) -> Result<(i64, i16), i16> {
    let coord = &broker.txns;
    let timeout = req.transaction_timeout_ms;
    if timeout <= 0 || i64::from(timeout) > coord.config.max_timeout_ms {
        return Err(codes::INVALID_TRANSACTION_TIMEOUT);
    }
    let owner = coord.owner(broker, id).await?;
    let mut expected =
        (version >= 3 && req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let wait = Duration::from_millis(coord.config.end_wait_ms.max(1000) as u64);
    for _ in 0..INIT_ROUNDS {
        let guard = coord.lock_id(id).await;
        let now = broker.clock.now_ms();
        let current = coord.get(&owner, id);
        match TxnMeta::init(current.as_ref(), expected, timeout, now) {
            InitStep::Allocate => {
                let r = broker.propose(Command::AllocateProducerId).await;
                if r.error_code != 0 {
                    return Err(r.error_code);
                }
                let m = TxnMeta::fresh(r.value, timeout, now);
                coord.store(broker, &owner, id, &m).await?;
                tracing::info!(txn = %id, producer_id = m.producer_id, "new transactional producer");
                return Ok((m.producer_id, m.epoch));
            }
            InitStep::Store(m) => {
                coord.store(broker, &owner, id, &m).await?;
                tracing::info!(txn = %id, producer_id = m.producer_id, epoch = m.epoch,
                    "transactional producer re-initialised");
                return Ok((m.producer_id, m.epoch));
            }
            InitStep::FenceAndAbort(m) => {
                tracing::info!(txn = %id, producer_id = m.producer_id, epoch = m.epoch,
                    partitions = m.partitions.len(), "re-init fences an open transaction: aborting it");
                coord.store(broker, &owner, id, &m).await?;
                drop(guard);
                coord.spawn_completion(broker, id.to_string());
                coord.wait_completed(&owner, id, wait).await;
                // The caller's (id, epoch) was just superseded on its behalf.
                expected = None;
            }
            InitStep::Wait => {
                drop(guard);
                coord.spawn_completion(broker, id.to_string());
                coord.wait_completed(&owner, id, wait).await;
            }
            InitStep::Refuse(code) => return Err(code),
        }
    }
    Err(codes::CONCURRENT_TRANSACTIONS)
}

/// Adds partitions to the transaction of `id` (shared by AddPartitionsToTxn and
/// AddOffsetsToTxn).
async fn add_partitions(
    broker: &Arc<Broker>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    parts: &[(String, i32)],
) -> Result<(), i16> {
    let coord = &broker.txns;
    let owner = coord.owner(broker, id).await?;
    let _guard = coord.lock_id(id).await;
    let current = coord
        .get(&owner, id)
        .ok_or(codes::INVALID_PRODUCER_ID_MAPPING)?;
    match current.add_partitions(producer_id, epoch, parts, broker.clock.now_ms())? {
        Some(next) => coord.store(broker, &owner, id, &next).await,
        None => Ok(()),
    }
}

/// AddPartitionsToTxn (v0–3 from clients; v4, batched by transaction, from brokers).
pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version >= 4 {
        return add_partitions_batched(broker, req).await;
    }
    let id = req.v3_and_below_transactional_id.0.to_string();
    let image = broker.image();
    let mut parts = Vec::new();
    let mut unknown = Vec::new();
    for t in &req.v3_and_below_topics {
        for p in &t.partitions {
            let key = (t.name.0.to_string(), *p);
            if image.partition(&key.0, *p).is_some() {
                parts.push(key);
            } else {
                unknown.push(key);
            }
        }
    }
    let code_of = |key: &(String, i32), all: i16| -> i16 {
        if unknown.is_empty() {
            all
        } else if unknown.contains(key) {
            codes::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            codes::OPERATION_NOT_ATTEMPTED
        }
    };
    let all = if unknown.is_empty() {
        match add_partitions(
            broker,
            &id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &parts,
        )
        .await
        {
            Ok(()) => 0,
            Err(code) => fenced(code, version, 2),
        }
    } else {
        codes::OPERATION_NOT_ATTEMPTED
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    for t in &req.v3_and_below_topics {
        let mut tr = AddPartitionsToTxnTopicResult::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = AddPartitionsToTxnPartitionResult::default();
            pr.partition_index = *p;
            pr.partition_error_code = code_of(&(t.name.0.to_string(), *p), all);
            tr.results_by_partition.push(pr);
        }
        resp.results_by_topic_v3_and_below.push(tr);
    }
    resp
}

/// AddPartitionsToTxn v4+, Kafka's broker-to-broker form: transactions batched, each either
/// added or, with `verify_only`, checked (KIP-890 part 1's verification, `super::verify`).
async fn add_partitions_batched(
    broker: &Arc<Broker>,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    use kafka_protocol::messages::add_partitions_to_txn_response::AddPartitionsToTxnResult;
    let mut resp = AddPartitionsToTxnResponse::default();
    for tx in &req.transactions {
        let id = tx.transactional_id.0.to_string();
        let parts: Vec<(String, i32)> = tx
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
            .collect();
        let (pid, epoch) = (tx.producer_id.0, tx.producer_epoch);
        let answers: Vec<i16> = if tx.verify_only {
            super::verify::verify_here(broker, &id, pid, epoch, &parts)
                .await
                .unwrap_or_else(|code| vec![code; parts.len()])
        } else {
            let code = add_partitions(broker, &id, pid, epoch, &parts)
                .await
                .err()
                .unwrap_or(0);
            vec![code; parts.len()]
        };
        let mut result = AddPartitionsToTxnResult::default();
        result.transactional_id = tx.transactional_id.clone();
        let mut answers = answers.into_iter();
        for t in &tx.topics {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = t.name.clone();
            for p in &t.partitions {
                let mut pr = AddPartitionsToTxnPartitionResult::default();
                pr.partition_index = *p;
                pr.partition_error_code = answers.next().unwrap_or(codes::INVALID_TXN_STATE);
                tr.results_by_partition.push(pr);
            }
            result.topic_results.push(tr);
        }
        resp.results_by_transaction.push(result);
    }
    resp
}

/// AddOffsetsToTxn (v0–3): adds the group's `__consumer_offsets` partition to the transaction,
/// so its commit or abort marker settles the offsets committed with TxnOffsetCommit.
pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let mut resp = AddOffsetsToTxnResponse::default();
    let groups = &broker.groups;
    let r = match crate::server::internal::ensure_topic(
        broker,
        OFFSETS_TOPIC,
        groups.config.offsets_partitions,
        groups.config.offsets_replication_factor,
    )
    .await
    {
        Ok(()) => {
            let p = groups.partition_of(broker, &req.group_id);
            add_partitions(
                broker,
                &req.transactional_id,
                req.producer_id.0,
                req.producer_epoch,
                &[(OFFSETS_TOPIC.to_string(), p)],
            )
            .await
        }
        Err(code) => Err(code),
    };
    resp.error_code = fenced(r.err().unwrap_or(0), version, 2);
    resp
}

/// EndTxn (v0–3): stores PrepareCommit/PrepareAbort, writes the markers, stores the Complete
/// state; answers when complete (or after `transaction.end.wait.ms` on the durable decision).
pub async fn end_txn(broker: &Arc<Broker>, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let mut resp = EndTxnResponse::default();
    resp.error_code = fenced(end(broker, &req).await.err().unwrap_or(0), version, 2);
    resp
}

async fn end(broker: &Arc<Broker>, req: &EndTxnRequest) -> Result<(), i16> {
    let coord = &broker.txns;
    let id = req.transactional_id.0.to_string();
    let owner = coord.owner(broker, &id).await?;
    let guard = coord.lock_id(&id).await;
    let current = coord
        .get(&owner, &id)
        .ok_or(codes::INVALID_PRODUCER_ID_MAPPING)?;
    match current.end(
        req.producer_id.0,
        req.producer_epoch,
        req.committed,
        broker.clock.now_ms(),
    ) {
        EndStep::Prepare(m) => {
            let started = broker.clock.instant();
            coord.store(broker, &owner, &id, &m).await?;
            let stored = started.elapsed();
            drop(guard);
            coord.spawn_completion(broker, id.clone());
            let wait = Duration::from_millis(coord.config.end_wait_ms as u64);
            let done = coord.wait_completed(&owner, &id, wait).await;
            tracing::debug!(txn = %id, commit = req.committed, partitions = m.partitions.len(),
                prepare_ms = stored.as_secs_f64() * 1000.0,
                total_ms = started.elapsed().as_secs_f64() * 1000.0,
                completed = done.is_some_and(|d| !d.state.is_prepare()), "EndTxn");
            Ok(())
        }
        EndStep::AlreadyDone => Ok(()),
        EndStep::Refuse(code) => Err(code),
    }
}
