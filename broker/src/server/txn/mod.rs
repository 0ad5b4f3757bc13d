//! Transactions: the transaction coordinator (this module), its state machine per
//! `transactional.id` ([`state`]), the wire APIs ([`api`]), transaction markers
//! ([`markers`]: written locally or sent to partition leaders with WriteTxnMarkers) and the
//! partition side (ongoing transactions, aborted-transaction index, last stable offset:
//! [`index`]).
//!
//! A transactional id belongs to partition `abs(javaHash(id)) % partitions` of the replicated
//! internal topic `__transaction_state`; the broker leading that partition is its coordinator.
//! Every state change is appended there with acks=all before it is acted on or answered, and a
//! broker that becomes the partition's leader (at a new leader epoch) rebuilds its cache from the
//! log before answering, then finishes any transaction it finds in PrepareCommit/PrepareAbort
//! (the decision was durable; only the markers may be missing). EndTxn answers once the
//! markers are written and the Complete state is stored, or, if that takes longer than
//! `transaction.end.wait.ms`, once the Prepare state is stored (the completion carries on).
//!
//! Stored records (JSON): key `{"txn":ID}` → value [`state::TxnMeta`].
//!
//! Invariants: one completion task per transactional id at a time; only the completion moves a
//! Prepare state on; requests for one id are serialised by a per-id lock around their
//! read-check-store.

pub mod api;
pub mod index;
pub mod markers;
pub mod state;
pub mod verify;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use self::state::{codes, TxnMeta};
use super::internal;
use super::{Broker, Hosted};
use crate::config::BrokerConfig;

/// The transaction state topic.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Transaction coordinator settings (from `server.properties`).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions` (default 10; Kafka's is 50).
    pub partitions: i32,
    /// `transaction.state.log.replication.factor` (default 3, capped at the live brokers).
    pub replication_factor: i16,
    /// `transaction.max.timeout.ms` (default 900000): larger InitProducerId timeouts are
    /// refused with INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` (default 1000; Kafka's is
    /// 10000): how often open transactions are checked against their timeout.
    pub abort_check_interval_ms: i64,
    /// `transaction.state.write.timeout.ms` (ours, default 5000): how long a state write waits
    /// for the ISR.
    pub write_timeout_ms: i64,
    /// `transaction.end.wait.ms` (ours, default 10000): how long EndTxn waits for its markers
    /// before answering on the stored decision alone.
    pub end_wait_ms: i64,
}

impl TxnConfig {
    /// Reads the settings, with defaults.
    pub fn from_broker(config: &BrokerConfig) -> TxnConfig {
        let get = |k: &str, d: i64| config.raw_or(k, d);
        TxnConfig {
            partitions: get("transaction.state.log.num.partitions", 10).clamp(1, 1000) as i32,
            replication_factor: get("transaction.state.log.replication.factor", 3).clamp(1, 16)
                as i16,
            max_timeout_ms: get("transaction.max.timeout.ms", 900_000).max(1),
            abort_check_interval_ms: get(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                1000,
            )
            .max(10),
            write_timeout_ms: get("transaction.state.write.timeout.ms", 5000).max(1),
            end_wait_ms: get("transaction.end.wait.ms", 10_000).max(0),
        }
    }
}

/// A stored record's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// The transactional id.
    pub txn: String,
}

/// What one `__transaction_state` partition holds, as loaded by its leader.
#[derive(Debug, Default)]
struct TxnCache {
    epoch: i32,
    txns: HashMap<String, TxnMeta>,
}

/// Where a transactional id is coordinated.
#[derive(Debug, Clone)]
pub struct TxnOwner {
    /// The `__transaction_state` partition.
    pub partition: i32,
    /// Its hosted state (led here).
    pub hosted: Arc<Hosted>,
    /// Its leader epoch (the coordinator epoch stamped into markers).
    pub epoch: i32,
}

/// The transaction coordinator's state on one broker.
#[derive(Debug)]
pub struct TxnCoordinator {
    /// Settings.
    pub config: TxnConfig,
    caches: Mutex<HashMap<i32, TxnCache>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    completing: Mutex<HashSet<String>>,
    /// Bumped whenever a transaction completes (EndTxn and InitProducerId wait on it).
    completed: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes an id from the running completions when its task ends (even by panic or abort).
struct Completing {
    broker: Arc<Broker>,
    id: String,
}

impl Drop for Completing {
    fn drop(&mut self) {
        lock(&self.broker.txns.completing).remove(&self.id);
        self.broker.txns.completed.send_modify(|v| *v += 1);
    }
}

impl TxnCoordinator {
    /// A coordinator with nothing loaded.
    pub fn new(config: &BrokerConfig) -> TxnCoordinator {
        let (completed, _) = watch::channel(0);
        TxnCoordinator {
            config: TxnConfig::from_broker(config),
            caches: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            completing: Mutex::new(HashSet::new()),
            completed,
        }
    }

    fn partition_count(&self, broker: &Broker) -> i32 {
        internal::partition_count(broker, TXN_TOPIC, self.config.partitions)
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_of(&self, broker: &Broker, id: &str) -> i32 {
        internal::partition_for(id, self.partition_count(broker))
    }

    /// Makes sure `__transaction_state` exists (COORDINATOR_NOT_AVAILABLE while it is created).
    pub async fn ensure_topic(&self, broker: &Arc<Broker>) -> Result<(), i16> {
        internal::ensure_topic(
            broker,
            TXN_TOPIC,
            self.config.partitions,
            self.config.replication_factor,
        )
        .await
    }

    /// Checks that this broker coordinates `id` and that its partition is loaded; the error is
    /// NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or COORDINATOR_LOAD_IN_PROGRESS.
    pub async fn owner(&self, broker: &Arc<Broker>, id: &str) -> Result<TxnOwner, i16> {
        if id.is_empty() {
            return Err(codes::INVALID_REQUEST);
        }
        self.ensure_topic(broker).await?;
        let partition = self.partition_of(broker, id);
        let (hosted, epoch) = internal::coordinator_here(broker, TXN_TOPIC, partition)?;
        self.ensure_loaded(broker, partition, &hosted, epoch)
            .await?;
        Ok(TxnOwner {
            partition,
            hosted,
            epoch,
        })
    }

    /// Loads `__transaction_state` partition `partition` (led here at `epoch`, `hosted`) into
    /// the cache unless it is loaded at that epoch, then starts the completion of every
    /// transaction found in PrepareCommit/PrepareAbort (Kafka's
    /// `TransactionStateManager.loadTransactionsForTxnTopicPartition`, whose callback re-sends
    /// their markers). COORDINATOR_LOAD_IN_PROGRESS while the partition's log is not all
    /// replicated.
    async fn ensure_loaded(
        &self,
        broker: &Arc<Broker>,
        partition: i32,
        hosted: &Arc<Hosted>,
        epoch: i32,
    ) -> Result<(), i16> {
        let loaded = lock(&self.caches).get(&partition).map(|c| c.epoch) == Some(epoch);
        if !loaded {
            let recs = internal::load(hosted).await?;
            let mut cache = TxnCache {
                epoch,
                txns: HashMap::new(),
            };
            for r in &recs {
                let Some(k) = r
                    .key
                    .as_deref()
                    .and_then(|k| serde_json::from_slice::<StoredKey>(k).ok())
                else {
                    continue;
                };
                match r
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<TxnMeta>(v).ok())
                {
                    Some(m) => {
                        cache.txns.insert(k.txn, m);
                    }
                    None => {
                        cache.txns.remove(&k.txn);
                    }
                }
            }
            let unfinished: Vec<String> = cache
                .txns
                .iter()
                .filter(|(_, m)| m.state.is_prepare())
                .map(|(id, _)| id.clone())
                .collect();
            tracing::info!(
                partition,
                epoch,
                records = recs.len(),
                txns = cache.txns.len(),
                unfinished = unfinished.len(),
                "loaded transaction coordinator state"
            );
            let mut caches = lock(&self.caches);
            // Another request may have loaded it meanwhile: keep the first.
            if caches.get(&partition).map(|c| c.epoch) != Some(epoch) {
                caches.insert(partition, cache);
                drop(caches);
                for id in unfinished {
                    self.spawn_completion(broker, id);
                }
            }
        }
        Ok(())
    }

    /// The stored state of `id`.
    pub fn get(&self, owner: &TxnOwner, id: &str) -> Option<TxnMeta> {
        lock(&self.caches)
            .get(&owner.partition)
            .filter(|c| c.epoch == owner.epoch)
            .and_then(|c| c.txns.get(id).cloned())
    }

    /// Serialises the requests of one transactional id.
    pub async fn lock_id(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = lock(&self.locks)
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        m.lock_owned().await
    }

    /// Stores `meta` for `id` (acks=all) and, once the ISR has it, serves it. A failed write
    /// answers with Kafka's coordinator errors ([`state_write_error`]).
    pub async fn store(
        &self,
        broker: &Arc<Broker>,
        owner: &TxnOwner,
        id: &str,
        meta: &TxnMeta,
    ) -> Result<(), i16> {
        let k = serde_json::to_vec(&StoredKey {
            txn: id.to_string(),
        })
        .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
        let v = serde_json::to_vec(meta).map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
        internal::append(
            broker,
            owner.hosted.clone(),
            vec![(k.into(), Some(v.into()))],
            self.config.write_timeout_ms,
        )
        .await
        .map_err(state_write_error)?;
        let mut caches = lock(&self.caches);
        match caches.get_mut(&owner.partition) {
            Some(c) if c.epoch == owner.epoch => {
                c.txns.insert(id.to_string(), meta.clone());
                Ok(())
            }
            _ => Err(codes::NOT_COORDINATOR),
        }
    }

    /// Starts the completion of `id`'s Prepare state (markers, then Complete) unless one runs.
    pub fn spawn_completion(&self, broker: &Arc<Broker>, id: String) {
        if !lock(&self.completing).insert(id.clone()) {
            return;
        }
        let b = broker.clone();
        tokio::spawn(async move {
            let guard = Completing {
                broker: b.clone(),
                id: id.clone(),
            };
            complete(&b, &id).await;
            drop(guard);
        });
    }

    /// Waits up to `wait` until `id` is no longer in a Prepare state; returns its state.
    pub async fn wait_completed(
        &self,
        owner: &TxnOwner,
        id: &str,
        wait: Duration,
    ) -> Option<TxnMeta> {
        let mut rx = self.completed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            rx.borrow_and_update();
            let m = self.get(owner, id);
            if m.as_ref().is_none_or(|m| !m.state.is_prepare()) {
                return m;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .map_or(true, |r| r.is_err())
            {
                return self.get(owner, id);
            }
        }
    }

    /// Loads every `__transaction_state` partition led here that is not loaded at its current
    /// leader epoch. Kafka loads a partition as soon as its broker becomes the leader
    /// (`TransactionCoordinator.onElection`), not when a client first asks: a transaction
    /// whose producer never comes back (it gave up or crashed) must still be completed if it
    /// was in PrepareCommit/PrepareAbort, or aborted at its timeout if it was Ongoing. Waiting
    /// for a request instead leaves it open forever after a coordinator failover, and its
    /// data holds every partition's last stable offset down (a hanging transaction).
    /// A partition whose log is not yet all replicated is tried again at the next tick.
    pub async fn load_led_partitions(&self, broker: &Arc<Broker>) {
        let Some(count) = broker
            .image()
            .topics
            .get(TXN_TOPIC)
            .map(|t| t.partitions.len() as i32)
        else {
            return;
        };
        for partition in 0..count {
            let Some((hosted, epoch)) = internal::led_here(broker, TXN_TOPIC, partition) else {
                continue;
            };
            if lock(&self.caches).get(&partition).map(|c| c.epoch) == Some(epoch) {
                continue;
            }
            if let Err(code) = self.ensure_loaded(broker, partition, &hosted, epoch).await {
                tracing::debug!(
                    partition,
                    epoch,
                    code,
                    "loading transaction state: retrying"
                );
            }
        }
    }

    /// Aborts open transactions past their timeout (PrepareAbort with a bumped epoch, then
    /// markers), restarts completions of Prepare states that have none running, and drops the
    /// caches of partitions no longer led here.
    pub async fn tick(&self, broker: &Arc<Broker>, now_ms: i64) {
        self.load_led_partitions(broker).await;
        let led: HashMap<i32, i32> = {
            let parts: Vec<i32> = lock(&self.caches).keys().copied().collect();
            parts
                .into_iter()
                .filter_map(|p| internal::led_here(broker, TXN_TOPIC, p).map(|(_, e)| (p, e)))
                .collect()
        };
        let mut timed_out = Vec::new();
        let mut stuck = Vec::new();
        {
            let mut caches = lock(&self.caches);
            caches.retain(|p, c| led.get(p) == Some(&c.epoch));
            let completing = lock(&self.completing);
            for c in caches.values() {
                for (id, m) in &c.txns {
                    if m.timed_out(now_ms).is_some() {
                        timed_out.push(id.clone());
                    } else if m.state.is_prepare() && !completing.contains(id) {
                        stuck.push(id.clone());
                    }
                }
            }
        }
        for id in stuck {
            self.spawn_completion(broker, id);
        }
        for id in timed_out {
            let Ok(owner) = self.owner(broker, &id).await else {
                continue;
            };
            let guard = self.lock_id(&id).await;
            let Some(m) = self.get(&owner, &id) else {
                continue;
            };
            let Some(abort) = m.timed_out(broker.clock.now_ms()) else {
                continue;
            };
            tracing::info!(txn = %id, producer_id = m.producer_id, epoch = m.epoch,
                partitions = m.partitions.len(), "transaction timed out: aborting");
            match self.store(broker, &owner, &id, &abort).await {
                Ok(()) => {
                    drop(guard);
                    self.spawn_completion(broker, id);
                }
                Err(code) => {
                    tracing::warn!(txn = %id, code, "storing a timeout abort failed; will retry")
                }
            }
        }
    }
}

/// Writes the markers of `id`'s Prepare state to every partition of the transaction (retrying
/// until each partition's leader has it), then stores the Complete state. Ends early if this
/// broker stops coordinating `id`.
async fn complete(broker: &Arc<Broker>, id: &str) {
    let coord = &broker.txns;
    let mut backoff = Duration::from_millis(50);
    loop {
        let owner = match coord.owner(broker, id).await {
            Ok(o) => o,
            Err(codes::NOT_COORDINATOR) => return,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(meta) = coord.get(&owner, id) else {
            return;
        };
        if !meta.state.is_prepare() {
            return;
        }
        let commit = meta.state == state::TxnState::PrepareCommit;
        let started = broker.clock.instant();
        let mut left: BTreeSet<(String, i32)> = meta.partitions.clone();
        while !left.is_empty() {
            left = markers::write_all(
                broker,
                &left,
                meta.producer_id,
                meta.epoch,
                commit,
                owner.epoch,
            )
            .await;
            if left.is_empty() {
                break;
            }
            tracing::debug!(txn = %id, left = left.len(), "some markers not written yet; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            if internal::led_here(broker, TXN_TOPIC, owner.partition).map(|(_, e)| e)
                != Some(owner.epoch)
            {
                return;
            }
        }
        let Some(done) = meta.completed(broker.clock.now_ms()) else {
            return;
        };
        match coord.store(broker, &owner, id, &done).await {
            Ok(()) => {
                tracing::debug!(txn = %id, commit, partitions = meta.partitions.len(),
                    ms = started.elapsed().as_millis() as u64, "transaction completed");
                return;
            }
            Err(code) => {
                tracing::info!(txn = %id, code, "storing a completed transaction failed; retrying");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// The error a coordinator answers when a state write failed, as Kafka's
/// `TransactionStateManager.appendTransactionToLog` maps it: a write that may still land or a
/// partition not ready is COORDINATOR_NOT_AVAILABLE (UNKNOWN_TOPIC_OR_PARTITION,
/// NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT), a lost
/// leadership or a storage error NOT_COORDINATOR; clients retry both (with the same decision)
/// instead of taking the failure as abortable, which would have them abort a transaction
/// whose PrepareCommit a new coordinator then completes.
pub fn state_write_error(code: i16) -> i16 {
    match code {
        3 | 19 | 20 | 7 => codes::COORDINATOR_NOT_AVAILABLE,
        6 | 56 => codes::NOT_COORDINATOR,
        10 | 18 => 1, // MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE: UNKNOWN_SERVER_ERROR
        other => other,
    }
}

/// Sends one request to broker `node` (its address from the metadata image) on a fresh
/// connection named `client_id`, within `timeout` for the connection and again for the answer:
/// the coordinator's markers and a leader's KIP-890 verification both reach another broker so.
pub(crate) async fn call_broker<Req, Resp>(
    broker: &Arc<Broker>,
    node: i32,
    client_id: String,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
    timeout: Duration,
) -> std::io::Result<Resp>
where
    Req: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
    Resp: kafka_protocol::protocol::Decodable,
{
    let addr = broker
        .image()
        .brokers
        .get(&node)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("broker {node} is not in the metadata image"),
            )
        })?;
    let mut conn = super::peer::PeerConn::connect(&addr, client_id, timeout).await?;
    conn.call(key, version, req, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_state_writes_answer_with_kafkas_coordinator_errors() {
        for code in [3, 19, 20, 7] {
            assert_eq!(state_write_error(code), codes::COORDINATOR_NOT_AVAILABLE);
        }
        for code in [6, 56] {
            assert_eq!(state_write_error(code), codes::NOT_COORDINATOR);
        }
        assert_eq!(state_write_error(10), 1);
        assert_eq!(state_write_error(51), 51);
    }
}
