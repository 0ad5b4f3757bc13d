//! KIP-890 part 1 (Kafka 3.6+, KAFKA-14402; `transaction.partition.verification.enable`, whose
//! default `kafka.release` sets): before appending a transactional produce, the partition
//! leader asks the transaction coordinator whether the partition belongs to the producer's
//! ongoing transaction, and refuses the produce with INVALID_TXN_STATE otherwise, so a late or
//! zombie write cannot land in a transaction it was never added to (kafka-bugs.md #13). The
//! coordinator answers locally or through AddPartitionsToTxn v4 with `verify_only` (Kafka's
//! broker-to-broker form). Coordinator errors the producer should retry (not available, not
//! the coordinator, loading, concurrent transactions, unreachable) are answered as
//! NOT_ENOUGH_REPLICAS, as Kafka's `AddPartitionsToTxnManager` does for older clients.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::state::{codes, TxnState};
use super::TXN_TOPIC;
use crate::server::Broker;

/// NOT_ENOUGH_REPLICAS: what a retriable verification failure is answered with.
const NOT_ENOUGH_REPLICAS: i16 = 19;

/// How long the leader waits for a remote coordinator's answer.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// On the coordinator: for each of `parts`, 0 if it is in `id`'s ongoing transaction of this
/// producer id and epoch, else INVALID_TXN_STATE. `Err` for the whole request: not the
/// coordinator (or not loaded), an unknown id, or a stale producer id or epoch.
pub async fn verify_here(
    broker: &Arc<Broker>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    parts: &[(String, i32)],
) -> Result<Vec<i16>, i16> {
    let coord = &broker.txns;
    let owner = coord.owner(broker, id).await?;
    let meta = coord
        .get(&owner, id)
        .ok_or(codes::INVALID_PRODUCER_ID_MAPPING)?;
    meta.check_producer(producer_id, epoch)?;
    Ok(parts
        .iter()
        .map(|p| {
            if meta.state == TxnState::Ongoing && meta.partitions.contains(p) {
                0
            } else {
                codes::INVALID_TXN_STATE
            }
        })
        .collect())
}

/// On the partition leader, before a transactional append of `topic`-`partition`: `Ok` if the
/// coordinator says the partition is in the producer's ongoing transaction, else the error
/// code the produce is answered with.
pub async fn verify_produce(
    broker: &Arc<Broker>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(), i16> {
    let parts = [(topic.to_string(), partition)];
    let answer = match verify_here(broker, id, producer_id, epoch, &parts).await {
        Err(codes::NOT_COORDINATOR) => verify_remote(broker, id, producer_id, epoch, &parts).await,
        other => other,
    };
    let code = match answer {
        Ok(codes) => codes.first().copied().unwrap_or(codes::INVALID_TXN_STATE),
        Err(code) => code,
    };
    match code {
        0 => Ok(()),
        codes::NOT_COORDINATOR
        | codes::COORDINATOR_NOT_AVAILABLE
        | codes::COORDINATOR_LOAD_IN_PROGRESS
        | codes::CONCURRENT_TRANSACTIONS => Err(NOT_ENOUGH_REPLICAS),
        other => {
            tracing::debug!(transactional_id = id, topic, partition, code = other,
                "transactional produce refused: not in the producer's ongoing transaction (KIP-890)");
            Err(other)
        }
    }
}

/// Asks the broker leading `id`'s `__transaction_state` partition (AddPartitionsToTxn v4,
/// `verify_only`).
async fn verify_remote(
    broker: &Arc<Broker>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    parts: &[(String, i32)],
) -> Result<Vec<i16>, i16> {
    let image = broker.image();
    let p = broker.txns.partition_of(broker, id);
    let leader = image
        .partition(TXN_TOPIC, p)
        .map(|i| i.leader)
        .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
    if image.brokers.get(&leader).is_none_or(|b| b.fenced) {
        return Err(codes::COORDINATOR_NOT_AVAILABLE);
    }
    let mut tx = AddPartitionsToTxnTransaction::default();
    tx.transactional_id = TransactionalId(StrBytes::from_string(id.to_string()));
    tx.producer_id = ProducerId(producer_id);
    tx.producer_epoch = epoch;
    tx.verify_only = true;
    for (topic, partition) in parts {
        let mut t = AddPartitionsToTxnTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.clone()));
        t.partitions = vec![*partition];
        tx.topics.push(t);
    }
    let mut req = AddPartitionsToTxnRequest::default();
    req.transactions = vec![tx];
    let client_id = format!("broker-{}-txn-verify", broker.config.node_id);
    let resp: AddPartitionsToTxnResponse = super::call_broker(
        broker,
        leader,
        client_id,
        ApiKey::AddPartitionsToTxn,
        4,
        &req,
        VERIFY_TIMEOUT,
    )
    .await
    .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
    if resp.error_code != 0 {
        return Err(resp.error_code);
    }
    let result = resp
        .results_by_transaction
        .first()
        .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
    Ok(parts
        .iter()
        .map(|(topic, partition)| {
            result
                .topic_results
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| &t.results_by_partition)
                .find(|r| r.partition_index == *partition)
                .map_or(codes::INVALID_TXN_STATE, |r| r.partition_error_code)
        })
        .collect())
}
