//! Three real broker processes (each broker and controller): a broker that led an epoch without
//! appending to it, then follows a leader that never heard of that epoch with the same log end,
//! must rejoin the ISR. It holds an epoch-cache entry at its log end the leader lacks; unless the
//! truncation on the leader's diverging-epoch answer drops it (as Kafka's `UnifiedLog.truncateTo`
//! does), every fetch diverges again, the leader never records the follower as caught up, and
//! with `min.insync.replicas=3` the partition stays unwritable (the m9-a 4.1 matrix run).

mod support;

use std::time::{Duration, Instant};

use broker::log::batch::build_batch;
use support::{BrokerProc, Conn};

const TOPIC: &str = "rejoin";

/// Partition 0's (leader, isr) as the first answering live node other than `paused` reports it.
fn view(nodes: &[BrokerProc], paused: i32) -> Option<(i32, Vec<i32>)> {
    let live = nodes.iter().filter(|n| n.running() && n.node_id != paused);
    live.clone().find_map(|n| {
        let mut c = Conn::try_connect(&n.addr())?;
        let parts = c.topic_metadata(TOPIC).ok()?;
        parts.first().cloned()
    })
}

/// Waits up to `secs` for a live leader (not `paused`) whose (leader, isr) satisfies `pred`.
fn wait_for(
    nodes: &[BrokerProc],
    paused: i32,
    secs: u64,
    what: &str,
    pred: impl Fn(i32, &[i32]) -> bool,
) -> (i32, Vec<i32>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        if let Some((l, isr)) = view(nodes, paused) {
            if l > 0 && l != paused && nodes[(l - 1) as usize].running() && pred(l, &isr) {
                return (l, isr);
            }
            last = Some((l, isr));
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {secs} s; last seen (leader, isr) {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Produces `value` with acks=all to the current leader, retrying refusals for up to `secs`
/// (the metadata a node answers with may run ahead of the leader's own state); the last error
/// code, 0 once acknowledged.
fn produce_all(nodes: &[BrokerProc], secs: u64, value: &str) -> i16 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let code = view(nodes, 0)
            .filter(|(l, _)| *l > 0 && nodes[(*l - 1) as usize].running())
            .and_then(|(l, _)| Conn::try_connect(&nodes[(l - 1) as usize].addr()))
            .map_or(-1, |mut c| {
                let batch = build_batch(0, 0, &[(None, Some(value.as_bytes()))]);
                c.produce(TOPIC, 0, batch, -1).map_or(-1, |(code, _)| code)
            });
        if code == 0 || Instant::now() >= deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_former_leader_with_an_empty_epoch_rejoins_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = BrokerProc::start_cluster(dir.path(), 3, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = nodes[0]
            .connect()
            .create_topic_rf(TOPIC, 1, 3, &[("min.insync.replicas", "3")]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "create {TOPIC}: error {code}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (l0, _) = wait_for(&nodes, 0, 30, "all in sync", |_, isr| isr.len() == 3);
    for i in 0..3 {
        assert_eq!(produce_all(&nodes, 10, &format!("m{i}")), 0, "acks=all");
    }
    // The leader stops: another ISR member (l1) leads a new epoch and appends nothing to it
    // (min.insync.replicas=3 refuses acks=all meanwhile), holding an epoch entry at its log end.
    nodes[(l0 - 1) as usize].stop();
    let (l1, _) = wait_for(&nodes, 0, 20, "a new leader", |l, _| l != l0);
    nodes[(l0 - 1) as usize].restart();
    wait_for(
        &nodes,
        0,
        20,
        "the stopped leader back in sync",
        |l, isr| l == l1 && isr.len() == 3,
    );
    // l1 pauses past its session (a restart would rebuild its epoch cache from the log and
    // hide the bug): the controller fences it and elects l2, which never saw l1's empty epoch.
    nodes[(l1 - 1) as usize].signal("STOP");
    let (l2, _) = wait_for(
        &nodes,
        l1,
        20,
        "a leader other than the paused one",
        |l, isr| l != l1 && !isr.contains(&l1),
    );
    nodes[(l1 - 1) as usize].signal("CONT");
    let resumed = Instant::now();
    let (_, isr) = wait_for(
        &nodes,
        0,
        20,
        "the former leader back in the ISR",
        |_, isr| isr.contains(&l1) && isr.len() == 3,
    );
    println!(
        "leaders {l0} -> {l1} -> {l2}; {l1} back in the ISR {isr:?} {:?} after it resumed",
        resumed.elapsed()
    );
    assert_eq!(produce_all(&nodes, 5, "after"), 0, "acks=all again");
}
