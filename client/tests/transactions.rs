//! The transactional producer ([`client::TransactionalProducer`]) against real broker
//! processes (built with `cargo build -p broker`): a committed and an aborted transaction
//! across two partitions seen through read_committed and read_uncommitted consumers, a second
//! producer with the same transactional id fencing the first, and offsets sent inside a
//! transaction moving the group's committed offsets only when it commits.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{
    Admin, Config, Consumer, Error, GroupConsumer, GroupSettings, IsolationLevel, NewTopic,
    Outcome, Seek, TopicPartition, TransactionalProducer, TxnError, TxnOutcome,
};
use kafka_protocol::error::ResponseError;

fn config(bootstrap: Vec<String>) -> Config {
    let mut c = Config::new(bootstrap);
    c.request_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(1);
    c.retry_backoff = Duration::from_millis(50);
    c.delivery_timeout = Duration::from_secs(20);
    c.fetch_max_wait = Duration::from_millis(100);
    c
}

const TXN_TIMEOUT: Duration = Duration::from_secs(20);

/// Creates a topic, retrying while the cluster is still forming.
async fn create(admin: &Admin, topic: NewTopic) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin
            .create_topic(topic.clone(), Duration::from_secs(10))
            .await
        {
            Ok(_) => return,
            Err(Error::Broker { code, .. })
                if code.0 == ResponseError::TopicAlreadyExists.code() =>
            {
                return
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "create {}: {e}", topic.name);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Everything a consumer at `isolation` reads from `tps` from the start up to the partition's
/// end (the last stable offset for read_committed), which is polled until it stops moving
/// past what was read: `(partition, offset) -> value`.
async fn read(
    boot: &[String],
    isolation: IsolationLevel,
    tps: &[TopicPartition],
) -> BTreeMap<(i32, i64), String> {
    let mut c = config(boot.to_vec());
    c.isolation_level = isolation;
    let mut consumer = Consumer::new(c).expect("consumer");
    consumer.assign(tps.iter().cloned());
    let mut ends = BTreeMap::new();
    for tp in tps {
        consumer.seek(tp, Seek::Earliest).await.expect("seek");
        ends.insert(
            tp.clone(),
            consumer.list_offset(tp, Seek::Latest).await.expect("end"),
        );
    }
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tps
        .iter()
        .any(|tp| consumer.position(tp).unwrap_or(0) < ends[tp])
    {
        assert!(
            Instant::now() < deadline,
            "read stuck: positions {:?}, ends {ends:?}",
            tps.iter()
                .map(|tp| consumer.position(tp))
                .collect::<Vec<_>>()
        );
        for pr in consumer
            .poll(Duration::from_millis(300))
            .await
            .expect("poll")
        {
            for r in pr.records {
                if isolation == IsolationLevel::ReadCommitted {
                    assert!(
                        r.offset < pr.last_stable_offset,
                        "read_committed read {} at or past the LSO {}",
                        r.offset,
                        pr.last_stable_offset
                    );
                }
                let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_string();
                let prev = out.insert((pr.tp.partition, r.offset), v);
                assert!(prev.is_none(), "offset {} delivered twice", r.offset);
            }
        }
    }
    out
}

fn values(m: &BTreeMap<(i32, i64), String>) -> Vec<&str> {
    m.values().map(|s| s.as_str()).collect()
}

async fn send_ok(p: &TransactionalProducer, topic: &str, partition: i32, v: &str) -> (i32, i64) {
    let o = p
        .send(topic, partition, None, Some(Bytes::from(v.to_string())))
        .await;
    match o {
        Outcome::Ok(off) => (partition, off),
        other => panic!("send {v}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_and_aborted_transactions_across_two_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let boot = vec![b.addr()];
    let admin = Admin::new(config(boot.clone())).expect("admin");
    create(&admin, NewTopic::new("tx", 2, 1)).await;
    let tps = [TopicPartition::new("tx", 0), TopicPartition::new("tx", 1)];

    let p = TransactionalProducer::new(config(boot.clone()), "tx-a", TXN_TIMEOUT)
        .await
        .expect("init");
    assert!(p.identity().id >= 0 && p.identity().epoch >= 0);
    // Outside a transaction nothing is sent.
    let o = p.send("tx", 0, None, Some(Bytes::from_static(b"x"))).await;
    assert!(matches!(o, Outcome::Definite(_)), "{o:?}");

    let started = Instant::now();
    p.begin().await.expect("begin 1");
    let mut committed = BTreeMap::new();
    for (part, v) in [(0, "c1-0"), (1, "c1-1"), (0, "c1-2")] {
        committed.insert(send_ok(&p, "tx", part, v).await, v.to_string());
    }
    let out = p.commit().await;
    assert_eq!(out, TxnOutcome::Committed);
    let first = started.elapsed();

    p.begin().await.expect("begin 2");
    let mut aborted = BTreeMap::new();
    for (part, v) in [(0, "a2-0"), (1, "a2-1")] {
        aborted.insert(send_ok(&p, "tx", part, v).await, v.to_string());
    }
    let out = p.abort().await;
    assert_eq!(out, TxnOutcome::NotCommitted(TxnError::Aborted));

    // A committed transaction after the aborted one, so read_committed must skip the aborted
    // records in the middle of the log, not just stop before them.
    p.begin().await.expect("begin 3");
    for (part, v) in [(1, "c3-1"), (0, "c3-0")] {
        committed.insert(send_ok(&p, "tx", part, v).await, v.to_string());
    }
    assert_eq!(p.commit().await, TxnOutcome::Committed);
    // An empty transaction commits without reaching the coordinator.
    p.begin().await.expect("begin 4");
    assert_eq!(p.commit().await, TxnOutcome::Committed);
    assert!(p.begin().await.is_ok());
    assert!(matches!(p.begin().await, Err(TxnError::State(_))));
    assert_eq!(p.abort().await, TxnOutcome::NotCommitted(TxnError::Aborted));
    eprintln!("first transaction (begin, 3 sends, commit): {first:?}");

    let rc = read(&boot, IsolationLevel::ReadCommitted, &tps).await;
    assert_eq!(
        rc, committed,
        "read_committed sees exactly the committed records"
    );
    let ru = read(&boot, IsolationLevel::ReadUncommitted, &tps).await;
    let mut all = committed.clone();
    all.extend(aborted.clone());
    assert_eq!(
        ru, all,
        "read_uncommitted sees both, and no control records"
    );
    eprintln!(
        "read_committed {:?}; read_uncommitted {:?}",
        values(&rc),
        values(&ru)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let boot = vec![b.addr()];
    let admin = Admin::new(config(boot.clone())).expect("admin");
    create(&admin, NewTopic::new("zt", 2, 1)).await;
    let tps = [TopicPartition::new("zt", 0), TopicPartition::new("zt", 1)];

    // A: an open transaction, then B takes the id: A's commit (EndTxn) is refused, definitely.
    let a = TransactionalProducer::new(config(boot.clone()), "zombie", TXN_TIMEOUT)
        .await
        .expect("a");
    a.begin().await.expect("a begin");
    send_ok(&a, "zt", 0, "a-0").await;
    let b1 = TransactionalProducer::new(config(boot.clone()), "zombie", TXN_TIMEOUT)
        .await
        .expect("b");
    assert_eq!(b1.identity().id, a.identity().id, "same producer id");
    assert!(b1.identity().epoch > a.identity().epoch, "epoch bumped");
    let out = a.commit().await;
    assert!(
        matches!(&out, TxnOutcome::NotCommitted(e) if e.is_fenced()),
        "{out:?}"
    );
    assert!(a.is_fenced());
    assert!(matches!(a.begin().await, Err(TxnError::Fenced(_))));

    // B: an open transaction with a partition added, then C takes the id: B's next send to
    // that partition is refused by the partition leader (the abort marker carried C's epoch),
    // definitely, and B is unusable.
    b1.begin().await.expect("b begin");
    send_ok(&b1, "zt", 1, "b-1").await;
    let c = TransactionalProducer::new(config(boot.clone()), "zombie", TXN_TIMEOUT)
        .await
        .expect("c");
    let o = b1
        .send("zt", 1, None, Some(Bytes::from_static(b"b-late")))
        .await;
    assert!(matches!(o, Outcome::Definite(_)), "{o:?}");
    assert!(
        b1.is_fenced(),
        "a fencing error makes the producer unusable"
    );
    let o = b1
        .send("zt", 0, None, Some(Bytes::from_static(b"b-later")))
        .await;
    assert!(matches!(o, Outcome::Definite(_)), "{o:?}");
    assert!(matches!(b1.commit().await, TxnOutcome::NotCommitted(e) if e.is_fenced()));

    // C works; only its records are committed.
    c.begin().await.expect("c begin");
    let mut want = BTreeMap::new();
    want.insert(send_ok(&c, "zt", 0, "c-0").await, "c-0".to_string());
    want.insert(send_ok(&c, "zt", 1, "c-1").await, "c-1".to_string());
    assert_eq!(c.commit().await, TxnOutcome::Committed);
    let rc = read(&boot, IsolationLevel::ReadCommitted, &tps).await;
    assert_eq!(rc, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_in_a_transaction_move_only_when_it_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let boot = vec![b.addr()];
    let admin = Admin::new(config(boot.clone())).expect("admin");
    create(&admin, NewTopic::new("in", 1, 1)).await;
    create(&admin, NewTopic::new("out", 1, 1)).await;
    let input = TopicPartition::new("in", 0);

    let p = TransactionalProducer::new(config(boot.clone()), "ctp", TXN_TIMEOUT)
        .await
        .expect("init");
    let mut group =
        GroupConsumer::new(config(boot.clone()), GroupSettings::new("g-tx")).expect("group handle");

    // Committed: output record and the input offset together.
    p.begin().await.expect("begin");
    send_ok(&p, "out", 0, "o-1").await;
    p.send_offsets("g-tx", &[(input.clone(), 5)], "", -1)
        .await
        .expect("send offsets");
    assert_eq!(p.commit().await, TxnOutcome::Committed);
    wait_committed(&mut group, &input, 5).await;

    // Aborted: the offset stays.
    p.begin().await.expect("begin 2");
    send_ok(&p, "out", 0, "o-2").await;
    p.send_offsets("g-tx", &[(input.clone(), 9)], "", -1)
        .await
        .expect("send offsets 2");
    assert_eq!(p.abort().await, TxnOutcome::NotCommitted(TxnError::Aborted));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        committed(&mut group, &input).await,
        Some(5),
        "an aborted transaction's offsets are not committed"
    );
    // A later committed transaction moves it again.
    p.begin().await.expect("begin 3");
    p.send_offsets("g-tx", &[(input.clone(), 11)], "", -1)
        .await
        .expect("send offsets 3");
    assert_eq!(p.commit().await, TxnOutcome::Committed);
    wait_committed(&mut group, &input, 11).await;
    let rc = read(
        &boot,
        IsolationLevel::ReadCommitted,
        &[TopicPartition::new("out", 0)],
    )
    .await;
    assert_eq!(values(&rc), vec!["o-1"]);
}

/// The group's committed offset of `tp` (`None` when nothing is committed).
async fn committed(group: &mut GroupConsumer, tp: &TopicPartition) -> Option<i64> {
    group
        .committed(std::slice::from_ref(tp))
        .await
        .expect("committed offsets")
        .get(tp)
        .copied()
        .flatten()
}

/// Waits (up to 20 s: the commit marker may land after EndTxn answers) until the group's
/// committed offset of `tp` is `want`.
async fn wait_committed(group: &mut GroupConsumer, tp: &TopicPartition, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = committed(group, tp).await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offset {got:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_generation_makes_the_transaction_abort_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let boot = vec![b.addr()];
    let admin = Admin::new(config(boot.clone())).expect("admin");
    create(&admin, NewTopic::new("gin", 1, 1)).await;
    create(&admin, NewTopic::new("gout", 1, 1)).await;
    let input = TopicPartition::new("gin", 0);
    let mut settings = GroupSettings::new("g-member");
    settings.session_timeout = Duration::from_secs(10);
    settings.rebalance_timeout = Duration::from_secs(5);
    let mut member = GroupConsumer::new(config(boot.clone()), settings).expect("member");
    member.subscribe(["gin"]);
    member
        .poll(Duration::from_millis(100))
        .await
        .expect("join the group");
    let (member_id, generation) = {
        let (m, g) = member.membership();
        (m.to_string(), g)
    };
    assert!(generation >= 1, "joined: generation {generation}");

    let p = TransactionalProducer::new(config(boot.clone()), "ctp-member", TXN_TIMEOUT)
        .await
        .expect("init");
    // As the member of the current generation: accepted and committed.
    p.begin().await.expect("begin");
    send_ok(&p, "gout", 0, "ok-1").await;
    p.send_offsets("g-member", &[(input.clone(), 3)], &member_id, generation)
        .await
        .expect("offsets as the current member");
    assert_eq!(p.commit().await, TxnOutcome::Committed);
    wait_committed(&mut member, &input, 3).await;

    // A zombie's generation: refused; the transaction can only abort, and commit aborts it.
    p.begin().await.expect("begin 2");
    send_ok(&p, "gout", 0, "zombie-1").await;
    let r = p
        .send_offsets(
            "g-member",
            &[(input.clone(), 7)],
            &member_id,
            generation + 3,
        )
        .await;
    assert!(
        matches!(&r, Err(TxnError::Refused { api: "TxnOffsetCommit", code })
            if code.0 == ResponseError::IllegalGeneration.code()),
        "{r:?}"
    );
    let o = p
        .send("gout", 0, None, Some(Bytes::from_static(b"zombie-2")))
        .await;
    assert!(
        matches!(o, Outcome::Definite(_)),
        "refused after the failure: {o:?}"
    );
    let out = p.commit().await;
    assert!(
        matches!(out, TxnOutcome::NotCommitted(TxnError::Abortable(_))),
        "{out:?}"
    );
    assert!(!p.is_fenced() && !p.in_transaction());
    // The producer goes on.
    p.begin().await.expect("begin 3");
    send_ok(&p, "gout", 0, "ok-2").await;
    assert_eq!(p.commit().await, TxnOutcome::Committed);
    assert_eq!(committed(&mut member, &input).await, Some(3));
    let rc = read(
        &boot,
        IsolationLevel::ReadCommitted,
        &[TopicPartition::new("gout", 0)],
    )
    .await;
    assert_eq!(values(&rc), vec!["ok-1", "ok-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_to_a_stopped_broker_is_unknown_and_settled_by_the_next_begin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = support::single(dir.path());
    let boot = vec![b.addr()];
    let admin = Admin::new(config(boot.clone())).expect("admin");
    create(&admin, NewTopic::new("ut", 2, 1)).await;
    let tps = [TopicPartition::new("ut", 0), TopicPartition::new("ut", 1)];
    let mut c = config(boot.clone());
    c.request_timeout = Duration::from_millis(800);
    c.delivery_timeout = Duration::from_secs(3);
    let p = TransactionalProducer::new(c, "lost-commit", TXN_TIMEOUT)
        .await
        .expect("init");
    let before = p.identity();
    p.begin().await.expect("begin");
    let mut maybe = BTreeMap::new();
    for (part, v) in [(0, "u-0"), (1, "u-1")] {
        maybe.insert(send_ok(&p, "ut", part, v).await, v.to_string());
    }
    b.signal("STOP");
    let out = p.commit().await;
    b.signal("CONT");
    assert!(matches!(out, TxnOutcome::Unknown(_)), "{out:?}");
    assert!(!p.in_transaction() && !p.is_fenced());
    // The next begin re-initialises: the coordinator finishes or aborts the unknown
    // transaction and the epoch moves on.
    p.begin().await.expect("begin after the unknown commit");
    assert!(
        p.identity().epoch > before.epoch,
        "epoch bumped by the re-init"
    );
    let mut want = BTreeMap::new();
    want.insert(send_ok(&p, "ut", 0, "n-0").await, "n-0".to_string());
    assert_eq!(p.commit().await, TxnOutcome::Committed);
    let rc = read(&boot, IsolationLevel::ReadCommitted, &tps).await;
    let unknown_committed = maybe.keys().all(|k| rc.contains_key(k));
    let unknown_absent = maybe.keys().all(|k| !rc.contains_key(k));
    assert!(
        unknown_committed || unknown_absent,
        "the unknown transaction is atomic: {rc:?}"
    );
    if unknown_committed {
        want.extend(maybe);
    }
    assert_eq!(rc, want);
    eprintln!(
        "the unknown commit turned out {}",
        if unknown_committed {
            "committed"
        } else {
            "aborted"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_transactions_through_a_leader_kill_stay_atomic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = support::cluster(dir.path(), 3);
    let boot = support::bootstrap(&nodes);
    let admin = Admin::new(config(boot.clone())).expect("admin");
    create(
        &admin,
        NewTopic::new("ct", 2, 3).config("min.insync.replicas", "2"),
    )
    .await;
    admin
        .wait_for_leaders("ct", 2, Duration::from_secs(20))
        .await
        .expect("leaders");
    let tps = [TopicPartition::new("ct", 0), TopicPartition::new("ct", 1)];
    let mut c = config(boot.clone());
    c.request_timeout = Duration::from_secs(3);
    c.delivery_timeout = Duration::from_secs(15);
    let p = TransactionalProducer::new(c, "ct-txn", Duration::from_secs(30))
        .await
        .expect("init");

    let (mut committed, mut not_committed) = (Vec::new(), Vec::new());
    let mut unknown: Vec<Vec<String>> = Vec::new();
    let mut killed = None;
    let started = Instant::now();
    for i in 0..30 {
        if i == 20 {
            if let Some(k) = killed {
                nodes[(k - 1) as usize].restart();
            }
        }
        if let Err(e) = p.begin().await {
            assert!(!e.is_fenced(), "nobody else has the id: {e}");
            eprintln!("txn {i}: begin failed: {e}");
            continue;
        }
        // Values whose send may have reached the log.
        let mut written = Vec::new();
        for part in [0, 1] {
            if i == 10 && part == 1 {
                // Mid-transaction: partition 0 written, partition 1 not yet.
                let (leader, _) = p.cluster().leader("ct", 1).await.expect("leader");
                nodes[(leader - 1) as usize].kill9();
                killed = Some(leader);
            }
            let v = format!("t{i}-p{part}");
            let o = p.send("ct", part, None, Some(Bytes::from(v.clone()))).await;
            if !matches!(o, Outcome::Definite(_)) {
                written.push(v);
            }
        }
        let out = if i % 3 == 2 {
            p.abort().await
        } else {
            p.commit().await
        };
        match out {
            TxnOutcome::Committed => committed.extend(written),
            TxnOutcome::NotCommitted(_) => not_committed.extend(written),
            TxnOutcome::Unknown(_) => unknown.push(written),
        }
    }
    let took = started.elapsed();
    let rc = read(&boot, IsolationLevel::ReadCommitted, &tps).await;
    let seen: std::collections::BTreeSet<&str> = rc.values().map(|s| s.as_str()).collect();
    for v in &committed {
        assert!(seen.contains(v.as_str()), "committed {v} not read");
    }
    for v in &not_committed {
        assert!(
            !seen.contains(v.as_str()),
            "{v} of a transaction that did not commit was read"
        );
    }
    let mut accounted: std::collections::BTreeSet<&str> =
        committed.iter().map(|s| s.as_str()).collect();
    for group in &unknown {
        let n = group.iter().filter(|v| seen.contains(v.as_str())).count();
        assert!(
            n == 0 || n == group.len(),
            "unknown transaction split: {group:?}"
        );
        accounted.extend(group.iter().map(|s| s.as_str()));
    }
    assert!(
        seen.is_subset(&accounted),
        "read values no committed or unknown transaction wrote: {:?}",
        seen.difference(&accounted).collect::<Vec<_>>()
    );
    eprintln!(
        "30 transactions with leader {killed:?} killed inside the 11th and back at the 21st in {took:?}: {} committed values, {} not committed, {} unknown transactions",
        committed.len(),
        not_committed.len(),
        unknown.len()
    );
    assert!(
        committed.len() >= 20,
        "most transactions commit: {}",
        committed.len()
    );
}
