//! A subscribe-mode consumer: Kafka's classic group protocol on top of the assign-mode
//! [`Consumer`]. It finds the group coordinator, joins (JoinGroup) offering its assignors
//! (`range`, `roundrobin`) in preference order, computes the assignment with the one the
//! coordinator chose when it is the leader, takes its partitions (SyncGroup), starts each from the
//! group's committed offset (OffsetFetch) or `auto.offset.reset`, heartbeats from `poll`, and
//! rejoins when the coordinator says the group is rebalancing or has forgotten it. Commits
//! (OffsetCommit) carry the member id and generation, so a fenced member's commit is refused.
//!
//! Invariants: records are only returned for partitions of the current generation's
//! assignment; after any rejoin the positions come from the committed offsets, never from
//! what a previous generation had read (so a rebalance can re-deliver, never skip).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
// tokio's Instant: the real clock in production, virtual time under `harness sim`.
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use crate::config::Config;
use crate::conn::Connection;
use crate::consumer::{Consumer, PartitionRecords, Seek, TopicPartition};
use crate::error::{BrokerCode, Error};

/// Group protocol settings.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `group.id`.
    pub group_id: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms` (the rebalance timeout).
    pub rebalance_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `group.instance.id` (static membership).
    pub instance_id: Option<String>,
    /// `partition.assignment.strategy`: the assignors offered, most preferred first; the
    /// coordinator picks the leader's most preferred one that every member offers.
    pub assignors: Vec<Assignor>,
}

/// A client-side partition assignor of the classic protocol (the group leader runs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Kafka's `RangeAssignor` ([`range_assign`]).
    Range,
    /// Kafka's `RoundRobinAssignor` ([`round_robin_assign`]).
    RoundRobin,
}

impl Assignor {
    /// The protocol name on the wire (`range`, `roundrobin`).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// The assignor with this protocol name.
    pub fn from_name(name: &str) -> Option<Assignor> {
        [Assignor::Range, Assignor::RoundRobin]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// Assigns the partitions of the members' subscribed topics (member id, topics) given each
    /// topic's partition count; every member appears in the result.
    pub fn assign(
        self,
        members: &[(String, Vec<String>)],
        partition_counts: &BTreeMap<String, i32>,
    ) -> Assignment {
        match self {
            Assignor::Range => range_assign(members, partition_counts),
            Assignor::RoundRobin => round_robin_assign(members, partition_counts),
        }
    }
}

impl GroupSettings {
    /// Defaults for a group: 10 s session, 30 s rebalance timeout, 1 s heartbeats, the range
    /// assignor.
    pub fn new(group_id: impl Into<String>) -> GroupSettings {
        GroupSettings {
            group_id: group_id.into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            instance_id: None,
            assignors: vec![Assignor::Range],
        }
    }
}

/// Each member's partitions, (topic, partition), by member id.
pub type Assignment = BTreeMap<String, Vec<(String, i32)>>;

/// Every member with nothing assigned yet.
fn empty_assignment(members: &[(String, Vec<String>)]) -> Assignment {
    members
        .iter()
        .map(|(m, _)| (m.clone(), Vec::new()))
        .collect()
}

/// The range assignor: per topic, partitions in order split into contiguous ranges over the
/// members sorted by id, the first `partitions % members` members getting one extra.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partition_counts: &BTreeMap<String, i32>,
) -> Assignment {
    let mut out = empty_assignment(members);
    for (topic, &n) in partition_counts {
        let mut subs: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subs.sort();
        if subs.is_empty() {
            continue;
        }
        let per = n / subs.len() as i32;
        let extra = n % subs.len() as i32;
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let count = per + i32::from((i as i32) < extra);
            for p in next..next + count {
                if let Some(v) = out.get_mut(*m) {
                    v.push((topic.clone(), p));
                }
            }
            next += count;
        }
    }
    out
}

/// The round-robin assignor: every subscribed topic's partitions, sorted by topic and
/// partition, dealt to the members sorted by id in turn, skipping members not subscribed to the
/// partition's topic.
pub fn round_robin_assign(
    members: &[(String, Vec<String>)],
    partition_counts: &BTreeMap<String, i32>,
) -> Assignment {
    let mut out = empty_assignment(members);
    let mut sorted: Vec<&(String, Vec<String>)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if sorted.is_empty() {
        return out;
    }
    let mut next = 0usize;
    for (topic, &n) in partition_counts {
        if !sorted.iter().any(|(_, topics)| topics.contains(topic)) {
            continue;
        }
        for p in 0..n {
            while !sorted[next % sorted.len()].1.contains(topic) {
                next += 1;
            }
            let member = &sorted[next % sorted.len()].0;
            if let Some(v) = out.get_mut(member) {
                v.push((topic.clone(), p));
            }
            next += 1;
        }
    }
    out
}

fn broker_err(code: i16, api: &str) -> Error {
    Error::Broker {
        code: BrokerCode(code),
        message: Some(format!("{api} refused")),
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn encode<M: Encodable>(m: &M, version: i16) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    m.encode(&mut buf, version)
        .map_err(|e| Error::Records(format!("encode consumer protocol: {e}")))?;
    Ok(buf.freeze())
}

fn decode_assignment(mut b: Bytes) -> Result<Vec<TopicPartition>, Error> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    if b.len() < 2 {
        return Err(Error::Records("assignment shorter than its version".into()));
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    let _ = b.split_to(2);
    let a = ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3))
        .map_err(|e| Error::Records(format!("decode assignment: {e}")))?;
    Ok(a.assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| TopicPartition::new(t.topic.0.to_string(), *p))
        })
        .collect())
}

fn decode_subscription(mut b: Bytes) -> Vec<String> {
    if b.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    let _ = b.split_to(2);
    ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3))
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// Error codes that mean "find the coordinator again".
fn coordinator_moved(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        )
    )
}

/// Error codes that mean "join again".
fn must_rejoin(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::FencedInstanceId
        )
    )
}

/// A consumer in a group.
pub struct GroupConsumer {
    consumer: Consumer,
    settings: GroupSettings,
    topics: Vec<String>,
    coordinator: Option<Arc<Connection>>,
    member_id: String,
    generation: i32,
    active: bool,
    last_heartbeat: Instant,
    rebalances: u64,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.settings.group_id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .finish()
    }
}

impl GroupConsumer {
    /// A member of `settings.group_id`, not yet subscribed.
    pub fn new(config: Config, settings: GroupSettings) -> Result<GroupConsumer, Error> {
        Ok(GroupConsumer {
            consumer: Consumer::new(config)?,
            settings,
            topics: Vec::new(),
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            active: false,
            last_heartbeat: Instant::now(),
            rebalances: 0,
        })
    }

    /// Subscribes to `topics`; the next `poll` joins the group.
    pub fn subscribe(&mut self, topics: impl IntoIterator<Item = impl Into<String>>) {
        self.topics = topics.into_iter().map(Into::into).collect();
        self.active = false;
    }

    /// The current assignment (empty until joined).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        if self.active {
            self.consumer.assignment()
        } else {
            Vec::new()
        }
    }

    /// The member id and generation of the current membership.
    pub fn membership(&self) -> (&str, i32) {
        (&self.member_id, self.generation)
    }

    /// How many times this member has (re)joined.
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }

    /// The next offset `poll` will read from `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.position(tp)
    }

    fn timeout(&self) -> Duration {
        self.consumer.cluster().config().request_timeout
    }

    async fn coordinator(&mut self) -> Result<Arc<Connection>, Error> {
        if let Some(c) = &self.coordinator {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let cluster = self.consumer.cluster().clone();
        let conn = cluster.any_conn().await?;
        let (_, addr) = cluster
            .find_coordinator(&conn, 0, &self.settings.group_id)
            .await?;
        let c = cluster.conn_to_addr(&addr).await?;
        self.coordinator = Some(c.clone());
        Ok(c)
    }

    fn forget_coordinator(&mut self) {
        self.coordinator = None;
    }

    /// Joins (or rejoins) the group and takes the assignment; retries coordinator moves and
    /// rebalances until `deadline`.
    async fn join(&mut self, deadline: Instant) -> Result<(), Error> {
        self.active = false;
        loop {
            match self.try_join().await {
                Ok(()) => {
                    self.active = true;
                    self.rebalances += 1;
                    self.last_heartbeat = Instant::now();
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(group = %self.settings.group_id, error = %e, "join failed; retrying");
                    if let Error::Broker {
                        code: BrokerCode(code),
                        ..
                    } = &e
                    {
                        if coordinator_moved(*code) {
                            self.forget_coordinator();
                        }
                        if *code == ResponseError::UnknownMemberId.code() {
                            self.member_id.clear();
                        }
                    } else {
                        self.forget_coordinator();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_join(&mut self) -> Result<(), Error> {
        let conn = self.coordinator().await?;
        let jv = conn
            .version(ApiKey::JoinGroup)
            .ok_or_else(|| Error::UnsupportedVersion("JoinGroup".into()))?;
        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = self.topics.iter().map(|t| sb(t)).collect();
        let metadata = encode(&sub, 0)?;
        let protocols: Vec<JoinGroupRequestProtocol> = self
            .settings
            .assignors
            .iter()
            .map(|a| {
                let mut proto = JoinGroupRequestProtocol::default();
                proto.name = sb(a.name());
                proto.metadata = metadata.clone();
                proto
            })
            .collect();
        let mut req = JoinGroupRequest::default();
        req.group_id = sb(&self.settings.group_id).into();
        req.session_timeout_ms = self.settings.session_timeout.as_millis() as i32;
        req.rebalance_timeout_ms = self.settings.rebalance_timeout.as_millis() as i32;
        req.member_id = sb(&self.member_id);
        if jv >= 5 {
            req.group_instance_id = self.settings.instance_id.as_deref().map(sb);
        }
        req.protocol_type = sb("consumer");
        req.protocols = protocols;
        // A join waits for the whole group: allow the rebalance timeout.
        let wait = self.settings.rebalance_timeout + self.timeout();
        let r = conn.call(jv, &req, wait).await?;
        if r.error_code == ResponseError::MemberIdRequired.code() {
            self.member_id = r.member_id.to_string();
            return Err(broker_err(r.error_code, "JoinGroup"));
        }
        if r.error_code != 0 {
            return Err(broker_err(r.error_code, "JoinGroup"));
        }
        self.member_id = r.member_id.to_string();
        self.generation = r.generation_id;
        let mut assignments = Vec::new();
        if r.leader == r.member_id {
            let members: Vec<(String, Vec<String>)> = r
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        decode_subscription(m.metadata.clone()),
                    )
                })
                .collect();
            let mut counts = BTreeMap::new();
            for (_, topics) in &members {
                for t in topics {
                    if !counts.contains_key(t) {
                        let info = self.consumer.cluster().topic(t).await?;
                        counts.insert(t.clone(), info.partitions.len() as i32);
                    }
                }
            }
            // The coordinator's choice among the protocols every member offered.
            let chosen = r.protocol_name.as_deref().unwrap_or_default();
            let assignor = Assignor::from_name(chosen).ok_or_else(|| {
                Error::Records(format!(
                    "the coordinator chose an unknown assignor `{chosen}`"
                ))
            })?;
            for (member, parts) in assignor.assign(&members, &counts) {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in parts {
                    by_topic.entry(t).or_default().push(p);
                }
                let mut a = ConsumerProtocolAssignment::default();
                a.assigned_partitions = by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        let mut tp = AssignedTp::default();
                        tp.topic = sb(&t).into();
                        tp.partitions = ps;
                        tp
                    })
                    .collect();
                let mut sa = SyncGroupRequestAssignment::default();
                sa.member_id = sb(&member);
                sa.assignment = encode(&a, 0)?;
                assignments.push(sa);
            }
        }
        let sv = conn
            .version(ApiKey::SyncGroup)
            .ok_or_else(|| Error::UnsupportedVersion("SyncGroup".into()))?;
        let mut sreq = SyncGroupRequest::default();
        sreq.group_id = sb(&self.settings.group_id).into();
        sreq.generation_id = self.generation;
        sreq.member_id = sb(&self.member_id);
        if sv >= 3 {
            sreq.group_instance_id = self.settings.instance_id.as_deref().map(sb);
        }
        sreq.assignments = assignments;
        let sr = conn.call(sv, &sreq, wait).await?;
        if sr.error_code != 0 {
            return Err(broker_err(sr.error_code, "SyncGroup"));
        }
        let tps = decode_assignment(sr.assignment)?;
        // Start every partition from the group's committed offset (auto.offset.reset if none).
        let committed = self.fetch_committed(&conn, &tps).await?;
        self.consumer.assign(Vec::<TopicPartition>::new());
        self.consumer.assign(tps.clone());
        for tp in &tps {
            if let Some(Some(o)) = committed.get(tp) {
                self.consumer.seek(tp, Seek::Offset(*o)).await?;
            }
        }
        tracing::debug!(group = %self.settings.group_id, member = %self.member_id, generation = self.generation, assignment = ?tps, "joined");
        Ok(())
    }

    async fn fetch_committed(
        &self,
        conn: &Connection,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, Error> {
        let v = conn
            .version(ApiKey::OffsetFetch)
            .ok_or_else(|| Error::UnsupportedVersion("OffsetFetch".into()))?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let mut req = OffsetFetchRequest::default();
        req.group_id = sb(&self.settings.group_id).into();
        req.topics = Some(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    let mut rt = OffsetFetchRequestTopic::default();
                    rt.name = sb(t).into();
                    rt.partition_indexes = ps;
                    rt
                })
                .collect(),
        );
        let r = conn.call(v, &req, self.timeout()).await?;
        if r.error_code != 0 {
            return Err(broker_err(r.error_code, "OffsetFetch"));
        }
        let mut out = BTreeMap::new();
        for t in &r.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(broker_err(p.error_code, "OffsetFetch"));
                }
                out.insert(
                    TopicPartition::new(t.name.0.to_string(), p.partition_index),
                    (p.committed_offset >= 0).then_some(p.committed_offset),
                );
            }
        }
        Ok(out)
    }

    /// The group's committed offsets for `tps` (`None`: nothing committed).
    pub async fn committed(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>, Error> {
        let conn = self.coordinator().await?;
        let r = self.fetch_committed(&conn, tps).await;
        if let Err(Error::Broker {
            code: BrokerCode(code),
            ..
        }) = &r
        {
            if coordinator_moved(*code) {
                self.forget_coordinator();
            }
        }
        r
    }

    async fn heartbeat(&mut self) -> Result<(), Error> {
        let conn = self.coordinator().await?;
        let v = conn
            .version(ApiKey::Heartbeat)
            .ok_or_else(|| Error::UnsupportedVersion("Heartbeat".into()))?;
        let mut req = HeartbeatRequest::default();
        req.group_id = sb(&self.settings.group_id).into();
        req.generation_id = self.generation;
        req.member_id = sb(&self.member_id);
        if v >= 3 {
            req.group_instance_id = self.settings.instance_id.as_deref().map(sb);
        }
        let r = conn.call(v, &req, self.timeout()).await?;
        self.last_heartbeat = Instant::now();
        if r.error_code != 0 {
            return Err(broker_err(r.error_code, "Heartbeat"));
        }
        Ok(())
    }

    /// Joins if needed and heartbeats when due; a rebalance or a lost membership rejoins.
    pub async fn ensure_active(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.settings.rebalance_timeout + self.timeout();
        if self.topics.is_empty() {
            return Err(Error::NotAssigned("not subscribed to any topic".into()));
        }
        if !self.active {
            return self.join(deadline).await;
        }
        if self.last_heartbeat.elapsed() >= self.settings.heartbeat_interval {
            match self.heartbeat().await {
                Ok(()) => {}
                Err(Error::Broker {
                    code: BrokerCode(code),
                    ..
                }) if must_rejoin(code) => {
                    if code == ResponseError::UnknownMemberId.code()
                        || code == ResponseError::FencedInstanceId.code()
                    {
                        self.member_id.clear();
                    }
                    return self.join(deadline).await;
                }
                Err(Error::Broker {
                    code: BrokerCode(code),
                    ..
                }) if coordinator_moved(code) => {
                    self.forget_coordinator();
                }
                Err(e) => {
                    // A lost connection: try again at the next poll.
                    self.forget_coordinator();
                    tracing::debug!(error = %e, "heartbeat failed");
                }
            }
        }
        Ok(())
    }

    /// Heartbeats (joining first if needed), then fetches from the assigned partitions.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<PartitionRecords>, Error> {
        self.ensure_active().await?;
        self.consumer.poll(timeout).await
    }

    /// Commits `offsets` (the next offsets to read) as this member of this generation.
    pub async fn commit(&mut self, offsets: &[(TopicPartition, i64)]) -> Result<(), Error> {
        let conn = self.coordinator().await?;
        let v = conn
            .version(ApiKey::OffsetCommit)
            .ok_or_else(|| Error::UnsupportedVersion("OffsetCommit".into()))?;
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (tp, o) in offsets {
            by_topic
                .entry(&tp.topic)
                .or_default()
                .push((tp.partition, *o));
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = sb(&self.settings.group_id).into();
        req.generation_id_or_member_epoch = self.generation;
        req.member_id = sb(&self.member_id);
        if v >= 7 {
            req.group_instance_id = self.settings.instance_id.as_deref().map(sb);
        }
        if (2..=4).contains(&v) {
            req.retention_time_ms = -1;
        }
        req.topics = by_topic
            .into_iter()
            .map(|(t, ps)| {
                let mut rt = OffsetCommitRequestTopic::default();
                rt.name = sb(t).into();
                rt.partitions = ps
                    .into_iter()
                    .map(|(p, o)| {
                        let mut rp = OffsetCommitRequestPartition::default();
                        rp.partition_index = p;
                        rp.committed_offset = o;
                        if v >= 6 {
                            rp.committed_leader_epoch = -1;
                        }
                        rp.committed_metadata = Some(sb(""));
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        let r = conn.call(v, &req, self.timeout()).await?;
        for t in &r.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    if coordinator_moved(p.error_code) {
                        self.forget_coordinator();
                    }
                    if must_rejoin(p.error_code) {
                        self.active = false;
                    }
                    return Err(broker_err(p.error_code, "OffsetCommit"));
                }
            }
        }
        Ok(())
    }

    /// Commits the current position of every assigned partition.
    pub async fn commit_positions(&mut self) -> Result<(), Error> {
        let offsets: Vec<(TopicPartition, i64)> = self
            .consumer
            .assignment()
            .into_iter()
            .filter_map(|tp| self.consumer.position(&tp).map(|o| (tp, o)))
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit(&offsets).await
    }

    /// Leaves the group (LeaveGroup), so the others rebalance at once.
    pub async fn close(mut self) -> Result<(), Error> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        let v = conn
            .version(ApiKey::LeaveGroup)
            .ok_or_else(|| Error::UnsupportedVersion("LeaveGroup".into()))?;
        let mut req = LeaveGroupRequest::default();
        req.group_id = sb(&self.settings.group_id).into();
        req.member_id = sb(&self.member_id);
        let r = conn.call(v, &req, self.timeout()).await?;
        if r.error_code != 0 {
            return Err(broker_err(r.error_code, "LeaveGroup"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_splits_contiguously_with_extras_first() {
        let members = vec![
            ("m-b".to_string(), vec!["t".to_string()]),
            ("m-a".to_string(), vec!["t".to_string()]),
            ("m-c".to_string(), vec!["t".to_string()]),
        ];
        let counts: BTreeMap<String, i32> = [("t".to_string(), 7)].into();
        let a = range_assign(&members, &counts);
        let parts = |m: &str| a[m].iter().map(|(_, p)| *p).collect::<Vec<_>>();
        assert_eq!(parts("m-a"), vec![0, 1, 2]);
        assert_eq!(parts("m-b"), vec![3, 4]);
        assert_eq!(parts("m-c"), vec![5, 6]);
    }

    #[test]
    fn round_robin_deals_all_topics_in_turn_and_skips_members_not_subscribed() {
        let both = vec!["t0".to_string(), "t1".to_string()];
        let members = vec![
            ("m2".to_string(), both.clone()),
            ("m1".to_string(), both),
            ("m3".to_string(), vec!["t1".to_string()]),
        ];
        let counts: BTreeMap<String, i32> = [("t0".to_string(), 3), ("t1".to_string(), 4)].into();
        let a = Assignor::RoundRobin.assign(&members, &counts);
        let got = |m: &str| {
            a[m].iter()
                .map(|(t, p)| format!("{t}-{p}"))
                .collect::<Vec<_>>()
        };
        // t0 (m3 not subscribed): m1, m2, m1; then t1 continues the turn: m2, m3, m1, m2.
        assert_eq!(got("m1"), vec!["t0-0", "t0-2", "t1-2"]);
        assert_eq!(got("m2"), vec!["t0-1", "t1-0", "t1-3"]);
        assert_eq!(got("m3"), vec!["t1-1"]);
        // Range on the same input: contiguous per topic.
        let r = Assignor::Range.assign(&members, &counts);
        let got = |m: &str| {
            r[m].iter()
                .map(|(t, p)| format!("{t}-{p}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(got("m1"), vec!["t0-0", "t0-1", "t1-0", "t1-1"]);
        assert_eq!(got("m3"), vec!["t1-3"]);
        assert_eq!(
            Assignor::from_name("roundrobin"),
            Some(Assignor::RoundRobin)
        );
        assert_eq!(Assignor::from_name("sticky"), None);
    }

    #[test]
    fn consumer_protocol_round_trips() {
        let mut a = ConsumerProtocolAssignment::default();
        let mut tp = AssignedTp::default();
        tp.topic = sb("t").into();
        tp.partitions = vec![2, 5];
        a.assigned_partitions = vec![tp];
        let b = encode(&a, 0).expect("encode");
        assert_eq!(
            decode_assignment(b).expect("decode"),
            vec![TopicPartition::new("t", 2), TopicPartition::new("t", 5)]
        );
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = vec![sb("x"), sb("y")];
        assert_eq!(
            decode_subscription(encode(&s, 0).expect("e")),
            vec!["x", "y"]
        );
        assert!(decode_assignment(Bytes::from_static(b"\x00")).is_err());
    }
}
