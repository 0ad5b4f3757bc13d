//! The metadata quorum over real TCP on loopback: three combined broker+controller nodes in one
//! test process (each with its own Raft log on disk): election, replicated topic creation,
//! controller failover, fencing with leader re-election, and restart from disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::clock::SystemClock;
use broker::metadata::{Command, MetadataConfig, MetadataImage, MetadataNode};

mod support;
use support::free_port;

struct Cluster {
    dir: tempfile::TempDir,
    voters: BTreeMap<i32, String>,
    nodes: BTreeMap<i32, MetadataNode>,
}

impl Cluster {
    fn config(&self, id: i32) -> MetadataConfig {
        let mut props = BTreeMap::new();
        let voters: Vec<String> = self
            .voters
            .iter()
            .map(|(i, a)| format!("{i}@{a}"))
            .collect();
        props.insert("controller.quorum.voters".to_string(), voters.join(","));
        props.insert(
            "broker.heartbeat.interval.ms".to_string(),
            "100".to_string(),
        );
        props.insert("broker.session.timeout.ms".to_string(), "1200".to_string());
        MetadataConfig::from_properties(
            id,
            &props,
            self.dir.path().join(format!("meta-{id}")),
            "127.0.0.1".into(),
            9000 + id as u16,
        )
        .expect("config")
    }

    async fn start(&mut self, id: i32) {
        let node = MetadataNode::start(self.config(id), Arc::new(SystemClock))
            .await
            .expect("start");
        self.nodes.insert(id, node);
    }

    async fn new(n: i32) -> Cluster {
        let voters = (1..=n)
            .map(|i| (i, format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            voters,
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            c.start(id).await;
        }
        c
    }

    async fn wait_all(&self, what: &str, f: impl Fn(&MetadataImage) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.nodes.values().all(|n| f(&n.image())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}; images: {:#?}",
                self.nodes.values().map(|n| n.image()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn active(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for n in self.nodes.values() {
                if let Some(l) = n.active_controller().await {
                    if self.nodes.contains_key(&l) {
                        return l;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no active controller");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn create(name: &str) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions: 3,
        replication_factor: 3,
        configs: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_elects_replicates_fails_over_fences_and_recovers_from_disk() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
    let mut c = Cluster::new(3).await;
    c.wait_all("three live brokers", |i| (1..=3).all(|b| i.is_live(b)))
        .await;
    let any = c.nodes.values().next().expect("node");
    let r = any
        .propose(create("t"), Duration::from_secs(10))
        .await
        .expect("created");
    assert_eq!(r.error_code, 0);
    c.wait_all("topic t everywhere", |i| i.topics.contains_key("t"))
        .await;
    let again = any
        .propose(create("t"), Duration::from_secs(10))
        .await
        .expect("answered");
    assert_eq!(again.error_code, 36, "TOPIC_ALREADY_EXISTS");

    // Controller failover: stop the active controller's node entirely.
    let old = c.active().await;
    let led_by_old: Vec<usize> = c.nodes[&old].image().topics["t"]
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.leader == old)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !led_by_old.is_empty(),
        "round-robin gives every broker a partition"
    );
    let started = Instant::now();
    c.nodes.remove(&old).expect("node").shutdown().await;
    let new = c.active().await;
    assert_ne!(new, old);
    println!("new active controller {new} after {:?}", started.elapsed());
    // Its broker misses heartbeats: fenced, its partitions move to ISR members with epoch + 1.
    c.wait_all("old broker fenced, partitions moved", |i| {
        !i.is_live(old)
            && led_by_old.iter().all(|&p| {
                let p = &i.topics["t"].partitions[p];
                p.leader != old && p.leader > 0 && p.leader_epoch == 1 && !p.isr.contains(&old)
            })
    })
    .await;
    println!("partitions re-led {:?} after the kill", started.elapsed());
    let survivor = c.nodes.values().next().expect("node");
    let r = survivor
        .propose(create("u"), Duration::from_secs(10))
        .await
        .expect("answered");
    assert_eq!(
        r.error_code, 38,
        "RF=3 with two live brokers is INVALID_REPLICATION_FACTOR: {r:?}"
    );
    let rf2 = Command::CreateTopic {
        name: "u".into(),
        partitions: 2,
        replication_factor: 2,
        configs: BTreeMap::new(),
    };
    let r = survivor
        .propose(rf2, Duration::from_secs(10))
        .await
        .expect("created after failover");
    assert_eq!(r.error_code, 0, "{r:?}");
    c.wait_all("topic u on the survivors", |i| i.topics.contains_key("u"))
        .await;

    // The old node comes back from its disk and is unfenced.
    c.start(old).await;
    c.wait_all("old broker back", |i| {
        i.is_live(old) && i.topics.contains_key("t")
    })
    .await;

    // Whole-cluster restart from disk keeps topics and leaders.
    let before = c
        .nodes
        .values()
        .next()
        .expect("node")
        .image()
        .topics
        .clone();
    for (_, n) in std::mem::take(&mut c.nodes) {
        n.shutdown().await;
    }
    for id in 1..=3 {
        c.start(id).await;
    }
    c.wait_all("topics after full restart", |i| {
        i.topics.keys().eq(before.keys())
    })
    .await;
    for (_, n) in std::mem::take(&mut c.nodes) {
        n.shutdown().await;
    }
}
