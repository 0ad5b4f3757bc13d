//! What the brokers say about the workload topic: each partition's leader, leader epoch and
//! replicas as one broker's Metadata answer gives them, and the wait for every broker to agree
//! after the final heal. A deposed leader cut off from the controller keeps answering as
//! leader (and serving reads of its own log) until it learns otherwise, so the final reads
//! start only once no broker holds such a stale view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nemesis::Node;

use crate::deploy::KAFKA_PORT;

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

/// The placement of `topic`'s partitions as the broker on `node` answers, on a runtime made
/// for a round of requests (None: it did not answer, or does not know the topic).
fn placement_on(rt: &tokio::runtime::Runtime, node: &dyn Node, topic: &str) -> Option<Placement> {
    use broker::server::peer::PeerConn;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    let addr = format!("{}:{KAFKA_PORT}", node.address());
    let resp: std::io::Result<MetadataResponse> = rt.block_on(async {
        let mut c =
            PeerConn::connect(&addr, "harness-metadata".into(), Duration::from_secs(2)).await?;
        c.call(ApiKey::Metadata, 9, &req, Duration::from_secs(2))
            .await
    });
    let resp = resp.ok()?;
    let topic = resp.topics.first()?;
    if topic.error_code != 0 {
        return None;
    }
    let n = topic.partitions.len();
    let mut p = Placement {
        controller: resp.controller_id.0,
        leaders: vec![-1; n],
        epochs: vec![-1; n],
        replicas: vec![Vec::new(); n],
    };
    for part in &topic.partitions {
        let i = part.partition_index as usize;
        if i < n {
            p.leaders[i] = part.leader_id.0;
            p.epochs[i] = part.leader_epoch;
            p.replicas[i] = part.replica_nodes.iter().map(|r| r.0).collect();
        }
    }
    Some(p)
}

/// The placement from the first of `nodes` that answers.
pub fn any_placement(nodes: &[Arc<dyn Node>], topic: &str) -> Option<Placement> {
    let rt = runtime()?;
    nodes
        .iter()
        .find_map(|n| placement_on(&rt, n.as_ref(), topic))
}

/// Waits until every broker answers with the same leader and leader epoch for each partition
/// of `topic`, each partition has a leader, and two checks in a row agree; returns how long it
/// took, or None when `timeout` passed first.
pub fn wait_agreement(nodes: &[Arc<dyn Node>], topic: &str, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut last: Option<(Vec<i32>, Vec<i32>)> = None;
    let rt = runtime()?;
    while start.elapsed() < timeout {
        let views: Option<Vec<Placement>> = nodes
            .iter()
            .map(|n| placement_on(&rt, n.as_ref(), topic))
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
