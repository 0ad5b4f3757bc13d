//! The subscribe-mode consumer ([`client::GroupConsumer`]) against a real broker process:
//! members split the partitions, a member that stops heartbeating loses them to the others
//! after its session timeout, a fenced member's commit is refused, and committed offsets are
//! where the next member of the group starts.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{
    Admin, Assignor, Config, GroupConsumer, GroupSettings, NewTopic, Outcome, Producer,
    TopicPartition,
};

fn config(bootstrap: Vec<String>) -> Config {
    let mut c = Config::new(bootstrap);
    c.request_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(1);
    c.fetch_max_wait = Duration::from_millis(50);
    c
}

fn settings(group: &str) -> GroupSettings {
    let mut s = GroupSettings::new(group);
    s.session_timeout = Duration::from_secs(3);
    s.rebalance_timeout = Duration::from_secs(5);
    s.heartbeat_interval = Duration::from_millis(300);
    s
}

fn parts(c: &GroupConsumer) -> BTreeSet<i32> {
    c.assignment().iter().map(|tp| tp.partition).collect()
}

/// A member polling on its own task (members must run concurrently: a join waits for the
/// others to rejoin), publishing its assignment; `stop` hands the consumer back.
struct Running {
    stop: Arc<AtomicBool>,
    owned: Arc<Mutex<BTreeSet<i32>>>,
    task: tokio::task::JoinHandle<GroupConsumer>,
}

impl Running {
    fn start(mut c: GroupConsumer) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let owned = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, o) = (stop.clone(), owned.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let _ = c.poll(Duration::from_millis(50)).await;
                *o.lock().expect("lock") = parts(&c);
            }
            c
        });
        Running { stop, owned, task }
    }

    fn owned(&self) -> BTreeSet<i32> {
        self.owned.lock().expect("lock").clone()
    }

    async fn stop(self) -> GroupConsumer {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("member task")
    }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never reached: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_partitions_fence_stale_commits_and_resume_from_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let boot = vec![b.addr()];
    let admin = Admin::new(config(boot.clone())).expect("admin");
    admin
        .create_topic(NewTopic::new("gt", 4, 1), Duration::from_secs(10))
        .await
        .expect("topic");
    let producer = Producer::new(config(boot.clone())).expect("producer");
    for p in 0..4 {
        for i in 0..5 {
            let out = producer
                .send("gt", Some(p), None, Some(Bytes::from(format!("{p}-{i}"))))
                .await;
            assert!(matches!(out, Outcome::Ok(_)), "{out:?}");
        }
    }

    let mut a = GroupConsumer::new(config(boot.clone()), settings("g")).expect("a");
    let mut c = GroupConsumer::new(config(boot.clone()), settings("g")).expect("c");
    a.subscribe(["gt"]);
    c.subscribe(["gt"]);
    let (ra, rc) = (Running::start(a), Running::start(c));
    let dbg = std::env::var("GROUPS_DEBUG").is_ok();
    wait_for("a 2/2 split", || {
        if dbg {
            eprintln!("a={:?} c={:?}", ra.owned(), rc.owned());
        }
        let (x, y) = (ra.owned(), rc.owned());
        x.len() == 2 && y.len() == 2 && x.is_disjoint(&y)
    })
    .await;
    let mut a = ra.stop().await;
    let c = rc.stop().await;
    let (_, gen_before) = c.membership();
    assert_eq!(a.membership().1, gen_before);

    // `a` commits offset 3 everywhere it owns, then goes silent (no polls: no heartbeats)
    // while c keeps polling.
    let owned_by_a: Vec<TopicPartition> = a.assignment();
    let commits: Vec<(TopicPartition, i64)> = owned_by_a.iter().map(|tp| (tp.clone(), 3)).collect();
    a.commit(&commits)
        .await
        .expect("a's commit as a member of the generation");
    let silent_since = Instant::now();
    let rc = Running::start(c);
    wait_for("c owns all four", || rc.owned().len() == 4).await;
    let took = silent_since.elapsed();
    let mut c = rc.stop().await;
    assert!(
        took >= Duration::from_secs(2),
        "moved before a's 3 s session could expire ({took:?})"
    );
    assert!(c.membership().1 > gen_before, "a new generation");
    // The evicted member's commit is refused, not silently applied.
    let stale = a.commit(&[(owned_by_a[0].clone(), 5)]).await;
    assert!(stale.is_err(), "a fenced member's commit must fail");
    // c took a's partitions from a's committed offset 3 (and has polled past it since).
    let committed = c.committed(&owned_by_a).await.expect("committed");
    assert!(committed.values().all(|o| *o == Some(3)), "{committed:?}");
    for tp in &owned_by_a {
        assert!(
            c.position(tp).is_some_and(|p| p >= 3),
            "{tp} resumed at the commit"
        );
    }
    c.close().await.expect("leave");
}

/// The leader assigns with the protocol the coordinator chose among those every member offers:
/// round-robin when both offer it (interleaved partitions), range when one offers only range
/// (contiguous ranges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_assigns_with_the_protocol_every_member_offers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let boot = vec![b.addr()];
    let admin = Admin::new(config(boot.clone())).expect("admin");
    admin
        .create_topic(NewTopic::new("rr", 6, 1), Duration::from_secs(10))
        .await
        .expect("topic");
    let member = |group: &str, assignors: Vec<Assignor>| {
        let mut s = settings(group);
        s.assignors = assignors;
        let mut c = GroupConsumer::new(config(boot.clone()), s).expect("member");
        c.subscribe(["rr"]);
        Running::start(c)
    };
    let split = |x: &BTreeSet<i32>, y: &BTreeSet<i32>| {
        let mut both = [x.clone(), y.clone()];
        both.sort();
        both
    };
    let evens: BTreeSet<i32> = [0, 2, 4].into();
    let odds: BTreeSet<i32> = [1, 3, 5].into();
    let low: BTreeSet<i32> = [0, 1, 2].into();
    let high: BTreeSet<i32> = [3, 4, 5].into();

    let a = member("g-rr", vec![Assignor::RoundRobin, Assignor::Range]);
    let c = member("g-rr", vec![Assignor::RoundRobin]);
    wait_for("a round-robin split", || {
        split(&a.owned(), &c.owned()) == [evens.clone(), odds.clone()]
    })
    .await;
    a.stop().await.close().await.expect("leave");
    c.stop().await.close().await.expect("leave");

    let a = member("g-mixed", vec![Assignor::RoundRobin, Assignor::Range]);
    let c = member("g-mixed", vec![Assignor::Range]);
    wait_for("a range split", || {
        split(&a.owned(), &c.owned()) == [low.clone(), high.clone()]
    })
    .await;
    a.stop().await.close().await.expect("leave");
    c.stop().await.close().await.expect("leave");
}
