//! What the brokers say, through the Kafka protocol alone (the `client` crate), so it holds
//! for any Kafka-compatible system: each partition's leader, leader epoch and replicas and the
//! controller as one broker's Metadata answer gives them, a group's coordinator from
//! FindCoordinator, readiness (a broker answers and sees every broker), and the wait for every
//! broker to agree after the final heal. A deposed leader cut off from the controller keeps
//! answering as leader (and serving reads of its own log) until it learns otherwise, so the
//! final reads start only once no broker holds such a stale view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nemesis::Node;

/// Who leads what, as one broker's metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The active controller's id.
    pub controller: i32,
    /// Per partition: its leader's id (-1: none).
    pub leaders: Vec<i32>,
    /// Per partition: its leader epoch.
    pub epochs: Vec<i32>,
    /// Per partition: its replicas' ids.
    pub replicas: Vec<Vec<i32>>,
}

/// A runtime for one round of metadata requests.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
}

/// A client cluster handle and a connection to the broker at `addr` (short timeouts: a
/// broker that is down or cut off must not hold the caller up).
async fn connect(
    addr: &str,
) -> Option<(Arc<client::cluster::Cluster>, Arc<client::conn::Connection>)> {
    let mut config = client::Config::new([addr.to_string()]);
    config.client_id = "harness-metadata".into();
    config.request_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(2);
    let cluster = client::cluster::Cluster::new(Arc::new(config));
    let conn = cluster.conn_to_addr(addr).await.ok()?;
    Some((cluster, conn))
}

/// What one broker's Metadata answer says: every broker it knows, the controller, and the
/// topics asked for (`None`: all).
fn metadata_on(
    rt: &tokio::runtime::Runtime,
    node: &dyn Node,
    port: u16,
    topics: Option<&[String]>,
) -> Option<client::ClusterInfo> {
    let addr = format!("{}:{port}", node.address());
    rt.block_on(async {
        let (cluster, conn) = connect(&addr).await?;
        cluster.fetch_metadata(&conn, topics).await.ok()
    })
}

/// The placement of `topic`'s partitions as the broker on `node` answers, on a runtime made
/// for a round of requests (None: it did not answer, or does not know the topic).
fn placement_on(
    rt: &tokio::runtime::Runtime,
    node: &dyn Node,
    port: u16,
    topic: &str,
) -> Option<Placement> {
    let info = metadata_on(rt, node, port, Some(&[topic.to_string()]))?;
    let t = info.topics.get(topic)?;
    let n = t.partitions.len();
    let mut p = Placement {
        controller: info.controller,
        leaders: vec![-1; n],
        epochs: vec![-1; n],
        replicas: vec![Vec::new(); n],
    };
    for part in &t.partitions {
        let i = usize::try_from(part.partition).ok()?;
        if i < n {
            p.leaders[i] = part.leader;
            p.epochs[i] = part.leader_epoch;
            p.replicas[i] = part.replicas.clone();
        }
    }
    Some(p)
}

/// The broker id coordinating consumer group `group`, from the first of `nodes` that answers
/// FindCoordinator.
pub fn group_coordinator(nodes: &[Arc<dyn Node>], port: u16, group: &str) -> Option<i32> {
    let rt = runtime()?;
    nodes.iter().find_map(|n| {
        let addr = format!("{}:{port}", n.address());
        rt.block_on(async {
            let (cluster, conn) = connect(&addr).await?;
            cluster
                .find_coordinator(&conn, 0, group)
                .await
                .ok()
                .map(|(id, _)| id)
        })
    })
}

/// How many brokers the broker on `node` reports in Metadata (None: it did not answer).
pub fn brokers_seen(node: &dyn Node, port: u16) -> Option<usize> {
    let rt = runtime()?;
    metadata_on(&rt, node, port, Some(&[])).map(|i| i.brokers.len())
}

/// The placement from the first of `nodes` that answers.
pub fn any_placement(nodes: &[Arc<dyn Node>], port: u16, topic: &str) -> Option<Placement> {
    let rt = runtime()?;
    nodes
        .iter()
        .find_map(|n| placement_on(&rt, n.as_ref(), port, topic))
}

/// Waits until every broker answers with the same leader and leader epoch for each partition
/// of `topic`, each partition has a leader, and two checks in a row agree; returns how long it
/// took, or None when `timeout` passed first.
pub fn wait_agreement(
    nodes: &[Arc<dyn Node>],
    port: u16,
    topic: &str,
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut last: Option<(Vec<i32>, Vec<i32>)> = None;
    let rt = runtime()?;
    while start.elapsed() < timeout {
        let views: Option<Vec<Placement>> = nodes
            .iter()
            .map(|n| placement_on(&rt, n.as_ref(), port, topic))
            .collect();
        let agreed = views.and_then(|v| {
            let first = v.first()?;
            let same = v
                .iter()
                .all(|p| p.leaders == first.leaders && p.epochs == first.epochs);
            let led = first.leaders.iter().all(|l| *l >= 0);
            (same && led).then(|| (first.leaders.clone(), first.epochs.clone()))
        });
        match agreed {
            Some(view) if last.as_ref() == Some(&view) => return Some(start.elapsed()),
            other => last = other,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}
