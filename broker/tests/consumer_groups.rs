//! Consumer groups through real clients against real broker processes: librdkafka consumers
//! (in process) and a `kcat -G` member (a separate process we can SIGKILL) share six partitions;
//! a killed member's partitions move to the others once its session times out; committed
//! offsets resume exactly; and offsets committed before the coordinator broker is killed are
//! returned by the new coordinator.
#![cfg(feature = "rdkafka-tests")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::BrokerProc;

const SESSION_MS: u64 = 6000;

fn wait_topic(nodes: &[BrokerProc], topic: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = nodes[0]
            .connect()
            .create_topic_rf(topic, partitions, 3, &[]);
        if code == 0 || code == 36 {
            break;
        }
        assert!(Instant::now() < deadline, "create {topic}: error {code}");
        std::thread::sleep(Duration::from_millis(200));
    }
    loop {
        let ok = nodes.iter().filter(|n| n.running()).any(|n| {
            n.connect()
                .topic_metadata(topic)
                .is_ok_and(|ps| ps.len() == partitions as usize && ps.iter().all(|(l, _)| *l > 0))
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{topic} never had leaders");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bootstrap(nodes: &[BrokerProc]) -> String {
    nodes
        .iter()
        .filter(|n| n.running())
        .map(|n| n.addr())
        .collect::<Vec<_>>()
        .join(",")
}

fn produce(nodes: &[BrokerProc], topic: &str, partitions: i32, per_partition: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(nodes))
        .set("acks", "all")
        .create()
        .expect("producer");
    for part in 0..partitions {
        for i in 0..per_partition {
            let v = format!("{part}-{i}");
            p.send(BaseRecord::<(), str>::to(topic).partition(part).payload(&v))
                .expect("queued");
        }
    }
    p.flush(Duration::from_secs(30)).expect("flushed");
}

fn consumer(nodes: &[BrokerProc], group: &str) -> BaseConsumer {
    consumer_with(nodes, group, "range")
}

/// A librdkafka group consumer offering the assignors `strategy` names.
fn consumer_with(nodes: &[BrokerProc], group: &str, strategy: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap(nodes))
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_MS.to_string())
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", strategy)
        .create()
        .expect("consumer")
}

/// A consumer polling on its own thread, recording what it owns and reads.
struct Member {
    stop: Arc<AtomicBool>,
    owned: Arc<Mutex<BTreeSet<i32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn start(nodes: &[BrokerProc], group: &str, topic: &str) -> Member {
        Member::start_with(nodes, group, topic, "range")
    }

    fn start_with(nodes: &[BrokerProc], group: &str, topic: &str, strategy: &str) -> Member {
        let c = consumer_with(nodes, group, strategy);
        c.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let owned = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, o) = (stop.clone(), owned.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
                if let Ok(a) = c.assignment() {
                    let parts: BTreeSet<i32> = a.elements().iter().map(|e| e.partition()).collect();
                    *o.lock().expect("lock") = parts;
                }
            }
            c.unsubscribe();
        });
        Member {
            stop,
            owned,
            thread: Some(thread),
        }
    }

    fn owned(&self) -> BTreeSet<i32> {
        self.owned.lock().expect("lock").clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Kcat(Child);

impl Drop for Kcat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have_kcat() -> bool {
    Command::new("kcat").arg("-V").output().is_ok()
}

#[test]
fn three_members_share_six_partitions_and_a_killed_one_is_replaced_within_the_session_timeout() {
    if !have_kcat() {
        eprintln!("SKIPPED: kcat is not installed (apt-get install kcat)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    wait_topic(&nodes, "cg", 6);
    produce(&nodes, "cg", 6, 20);
    let a = Member::start(&nodes, "g1", "cg");
    let b = Member::start(&nodes, "g1", "cg");
    // The third member is a separate librdkafka process, so it can die without leaving.
    let kcat = Kcat(
        Command::new("kcat")
            .args(["-b", &bootstrap(&nodes), "-G", "g1", "-q", "-u"])
            .args(["-X", &format!("session.timeout.ms={SESSION_MS}")])
            .args(["-X", "heartbeat.interval.ms=500"])
            .args(["-X", "partition.assignment.strategy=range"])
            .args(["-X", "enable.auto.commit=false"])
            .arg("cg")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat"),
    );
    // Steady state: a and b own two partitions each, disjoint; the other two are kcat's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (oa, ob) = (a.owned(), b.owned());
        if oa.len() == 2 && ob.len() == 2 && oa.is_disjoint(&ob) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stable three-way assignment: a={oa:?} b={ob:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed_at = Instant::now();
    drop(kcat); // SIGKILL: no LeaveGroup, only the session timeout can evict it
    let deadline = Instant::now() + Duration::from_secs(SESSION_MS / 1000 + 30);
    loop {
        let (oa, ob) = (a.owned(), b.owned());
        let all: BTreeSet<i32> = oa.union(&ob).copied().collect();
        if all.len() == 6 && oa.is_disjoint(&ob) && oa.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed member's partitions never moved: a={oa:?} b={ob:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = killed_at.elapsed();
    eprintln!(
        "rebalanced onto the survivors {:.1} s after SIGKILL",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(SESSION_MS / 2),
        "partitions moved before the session could have timed out ({took:?})"
    );
}

/// Reads up to `n` messages per partition through the group, commits, returns the committed
/// positions.
fn consume_and_commit(
    nodes: &[BrokerProc],
    group: &str,
    topic: &str,
    n: usize,
) -> BTreeMap<i32, i64> {
    let c = consumer(nodes, group);
    c.subscribe(&[topic]).expect("subscribe");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.values().filter(|c| **c >= n).count() < 6 {
        assert!(Instant::now() < deadline, "consumed only {counts:?}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let cnt = counts.entry(m.partition()).or_default();
            if *cnt < n {
                *cnt += 1;
                next.insert(m.partition(), m.offset() + 1);
            }
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &next {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("tpl");
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    next
}

fn committed(nodes: &[BrokerProc], group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c = consumer(nodes, group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(20))
        .expect("committed offsets");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn committed_offsets_resume_exactly_and_survive_a_coordinator_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    wait_topic(&nodes, "co", 6);
    produce(&nodes, "co", 6, 30);
    let first = consume_and_commit(&nodes, "g2", "co", 10);
    assert_eq!(first.len(), 6);
    // A new member of the group starts exactly where the commit left off.
    let c = consumer(&nodes, "g2");
    c.subscribe(&["co"]).expect("subscribe");
    let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first_seen.len() < 6 {
        assert!(Instant::now() < deadline, "resumed only {first_seen:?}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            first_seen.entry(m.partition()).or_insert(m.offset());
        }
    }
    drop(c);
    assert_eq!(
        first_seen, first,
        "each partition resumed at its committed offset"
    );
    assert_eq!(committed(&nodes, "g2", "co"), first);

    // Kill the broker leading the group's __consumer_offsets partition (its coordinator).
    let part = broker::server::internal::partition_for("g2", 10);
    let leader = nodes[0]
        .connect()
        .topic_metadata("__consumer_offsets")
        .expect("offsets topic")[part as usize]
        .0;
    assert!(leader > 0);
    nodes[(leader - 1) as usize].kill9();
    let after = committed(&nodes, "g2", "co");
    assert_eq!(
        after, first,
        "offsets committed before the coordinator died are served by its successor"
    );
}

/// librdkafka's round-robin assignor through our coordinator: members offering
/// `roundrobin,range` get interleaved partitions; a member offering only `range` makes the
/// coordinator choose range for the whole group (contiguous ranges).
#[test]
fn librdkafka_members_assign_with_the_protocol_every_member_offers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    wait_topic(&nodes, "rr", 6);
    let split = |a: &Member, b: &Member| {
        let mut both = [a.owned(), b.owned()];
        both.sort();
        both
    };
    let settle = |what: &str, a: &Member, b: &Member, want: [BTreeSet<i32>; 2]| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while split(a, b) != want {
            assert!(
                Instant::now() < deadline,
                "no {what} assignment: {:?}",
                split(a, b)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let a = Member::start_with(&nodes, "g-rr", "rr", "roundrobin,range");
    let b = Member::start_with(&nodes, "g-rr", "rr", "roundrobin,range");
    settle("round-robin", &a, &b, [[0, 2, 4].into(), [1, 3, 5].into()]);
    drop((a, b));
    let a = Member::start_with(&nodes, "g-mixed", "rr", "roundrobin,range");
    let b = Member::start_with(&nodes, "g-mixed", "rr", "range");
    settle("range", &a, &b, [[0, 1, 2].into(), [3, 4, 5].into()]);
}
