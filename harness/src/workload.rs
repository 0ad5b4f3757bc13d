//! The queue workload as `harness test` runs it: the spec turned into client settings and a
//! run config, the topic created through the native admin client, and the main phase and final
//! reads of `workloads::runner` over the client the spec picks (`--client native`, the
//! default, or `--client rdkafka` when built with the `rdkafka` feature).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use checkers::HistoryWriter;
use workloads::client::{ClientSettings, OpenClient, QueueClient};
use workloads::queue::QueueConfig;
use workloads::runner::{self, RunConfig};
use workloads::stall::ConsumerStalls;

use crate::spec::{ClientKind, ConsumerMode, TestSpec};

/// The workload topic.
pub const TOPIC: &str = "jepsen-queue";
/// The consumer group of subscribed consumers (one per run).
pub const GROUP: &str = "jepsen-queue-group";

/// The client settings of a spec against `bootstrap` (comma-separated `host:port`s).
pub fn settings(spec: &TestSpec, bootstrap: &str) -> ClientSettings {
    ClientSettings {
        bootstrap: bootstrap.split(',').map(str::to_string).collect(),
        topic: TOPIC.into(),
        partitions: spec.partitions,
        acks: spec.client.acks,
        idempotence: spec.client.idempotence,
        retries: spec.client.retries,
        request_timeout: Duration::from_millis(spec.client.request_timeout_ms),
        isolation_level: spec.client.isolation_level.clone(),
        subscribe: spec.client.consumer_mode == ConsumerMode::Subscribe,
        assignment_strategy: spec.client.assignment_strategy.clone(),
        group_id: GROUP.to_string(),
        transactions: spec.client.transactions,
    }
}

/// The nemesis's way into the workload's consumers: `zombie-consumer` stall requests.
#[derive(Debug)]
pub struct WorkloadFaults(pub Arc<ConsumerStalls>);

impl nemesis::nemesis::ClientFaults for WorkloadFaults {
    fn stall_consumer(&self, stall: Duration) -> Result<serde_json::Value, nemesis::NemesisError> {
        let waiting = self.0.request(stall);
        Ok(serde_json::json!({
            "stall_ms": stall.as_millis() as u64,
            "requests_waiting": waiting,
        }))
    }
}

/// Whether the spec's consumers can be made zombies: subscribed consumers of the native
/// client, which heartbeats from `poll` (librdkafka heartbeats from its own thread, so a
/// stalled worker would stay a member and never be a zombie).
pub fn can_stall(spec: &TestSpec) -> bool {
    spec.client.consumer_mode == ConsumerMode::Subscribe && spec.client.client == ClientKind::Native
}

/// The run config of a spec.
pub fn run_config(spec: &TestSpec) -> RunConfig {
    let subscribe = spec.client.consumer_mode == ConsumerMode::Subscribe;
    RunConfig {
        concurrency: spec.concurrency,
        rate: spec.rate,
        time_limit: Duration::from_secs(spec.time_limit),
        final_time_limit: Duration::from_secs(spec.final_time_limit),
        seed: crate::seeds::Seeds::new(spec.seed).workload,
        queue: QueueConfig {
            partitions: spec.partitions,
            subscribe,
            // Now and then a worker reassigns (or resubscribes) its consumer, or crashes and
            // comes back as a new process with fresh clients. A crashed group member stalls
            // the whole group until its session times out, so subscribed workers crash rarer.
            send_weight: if subscribe { 40 } else { 10 },
            poll_weight: if subscribe { 40 } else { 10 },
            assign_weight: 1,
            crash_weight: 1,
            txn_weight: if spec.client.transactions { 10 } else { 0 },
            ..QueueConfig::default()
        },
    }
}

/// Opens worker clients of the kind the spec names.
pub fn opener(spec: &TestSpec, bootstrap: &str) -> Result<Arc<OpenClient>> {
    let settings = settings(spec, bootstrap);
    match spec.client.client {
        ClientKind::Native => Ok(Arc::new(move |process| {
            workloads::native::NativeClient::open(&settings, process)
                .map(|c| Box::new(c) as Box<dyn QueueClient>)
        })),
        #[cfg(feature = "rdkafka")]
        ClientKind::Rdkafka => Ok(Arc::new(move |process| {
            workloads::rdkafka::RdkafkaClient::open(&settings, process)
                .map(|c| Box::new(c) as Box<dyn QueueClient>)
        })),
        #[cfg(not(feature = "rdkafka"))]
        ClientKind::Rdkafka => anyhow::bail!(
            "this harness was built without the `rdkafka` feature; use --client native or \
             rebuild with `--features rdkafka`"
        ),
    }
}

/// Creates the workload topic with the spec's replication factor, partitions and topic configs
/// (`min.insync.replicas`, `unclean.leader.election.enable`) and waits until every partition
/// has a leader.
pub fn create_topic(bootstrap: &str, spec: &TestSpec) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let config = workloads::native::config(&settings(spec, bootstrap), "harness-admin")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let topic_keys = ["min.insync.replicas", "unclean.leader.election.enable"];
    let mut topic = client::NewTopic::new(
        TOPIC,
        spec.partitions as i32,
        spec.replication_factor as i16,
    );
    for (k, v) in spec
        .broker
        .iter()
        .filter(|(k, _)| topic_keys.contains(&k.as_str()))
    {
        topic = topic.config(k.clone(), v.clone());
    }
    rt.block_on(async {
        let admin = client::Admin::new(config)?;
        create_topic_retrying(&admin, topic).await
    })
    .with_context(|| format!("creating topic {TOPIC}"))
}

/// Creates `topic`, retrying for up to a minute (tokio's clock: virtual under `harness sim`),
/// until it exists and every partition has a leader (TOPIC_ALREADY_EXISTS: an earlier attempt
/// created it).
pub async fn create_topic_retrying(
    admin: &client::Admin,
    topic: client::NewTopic,
) -> Result<(), client::Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match admin
            .create_topic(topic.clone(), Duration::from_secs(15))
            .await
        {
            Ok(_) => return Ok(()),
            Err(client::Error::Broker { code, .. }) if code.0 == 36 => {
                admin
                    .wait_for_leaders(&topic.name, topic.partitions, Duration::from_secs(30))
                    .await?;
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Runs the workload's main phase for the spec's time limit (or until `stop`); returns how many
/// ops ran. The final reads are [`final_reads`], after the nemesis has healed.
pub fn run_main(
    spec: &TestSpec,
    bootstrap: &str,
    history: Arc<HistoryWriter>,
    stop: &'static AtomicBool,
    ops: Arc<std::sync::atomic::AtomicU64>,
    stalls: Arc<ConsumerStalls>,
    acked: Arc<runner::AckedEnds>,
) -> Result<u64> {
    let open = opener(spec, bootstrap)?;
    Ok(runner::run_main(
        open,
        &run_config(spec),
        history,
        stop,
        ops,
        stalls,
        acked,
    )?)
}

/// The final phase: a fresh client reads every partition from the start up to its end, or up to
/// its highest acknowledged offset when the high watermark still lags it (`acked`, noted during
/// the main phase), or the final time limit, recorded as polls by process
/// `workloads::runner::FINAL_PROCESS`.
pub fn final_reads(
    spec: &TestSpec,
    bootstrap: &str,
    history: &HistoryWriter,
    stop: &AtomicBool,
    acked: &runner::AckedEnds,
) -> Result<()> {
    let open = opener(spec, bootstrap)?;
    if !runner::final_reads(&*open, &run_config(spec), history, stop, acked)? {
        crate::runlog::say(&format!(
            "harness: warning: the final reads did not reach every partition's end within \
             {} s",
            spec.final_time_limit
        ));
    }
    Ok(())
}
