//! The group APIs on the wire: FindCoordinator (groups, and transactional ids for the
//! transaction coordinator), JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! TxnOffsetCommit, OffsetFetch (UNSTABLE_OFFSET_COMMIT for `require_stable` while a
//! transaction holds an offset), DescribeGroups and ListGroups. Each response field is set only at
//! the versions that have it (kafka-protocol's encoder is strict).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as WireCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::group::{codes, JoinRequest, State};
use super::{Committed, OFFSETS_TOPIC};
use crate::server::txn::state::codes as txn_codes;
use crate::server::txn::TXN_TOPIC;
use crate::server::Broker;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Key type of a transactional id in FindCoordinator.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// An OffsetCommit-shaped response (`$resp` with topics of `$topic` with partitions of
/// `$part`) answering every partition of `$req` with `$code`. OffsetCommit and TxnOffsetCommit
/// share the shape but not the types.
macro_rules! answer_each_partition {
    ($req:expr, $code:expr, $resp:ty, $topic:ty, $part:ty) => {{
        let mut resp = <$resp>::default();
        for t in &$req.topics {
            let mut tr = <$topic>::default();
            tr.name = t.name.clone();
            for p in &t.partitions {
                let mut pr = <$part>::default();
                pr.partition_index = p.partition_index;
                pr.error_code = $code;
                tr.partitions.push(pr);
            }
            resp.topics.push(tr);
        }
        resp
    }};
}

/// The offsets an OffsetCommit-shaped request (`$req`) commits, as (topic, partition,
/// committed); the leader epoch only when `$has_epoch` (the versions that carry it).
macro_rules! requested_offsets {
    ($req:expr, $has_epoch:expr) => {{
        let has_epoch: bool = $has_epoch;
        $req.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.0.to_string(),
                        p.partition_index,
                        Committed {
                            offset: p.committed_offset,
                            leader_epoch: if has_epoch {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                        },
                    )
                })
            })
            .collect::<Vec<(String, i32, Committed)>>()
    }};
}

/// Finds the coordinator of one key: (error, node, host, port, message).
async fn find_one(
    broker: &Arc<Broker>,
    key: &str,
    key_type: i8,
) -> (i16, i32, String, i32, String) {
    if key_type == KEY_TYPE_TRANSACTION {
        let txns = &broker.txns;
        if let Err(code) = txns.ensure_topic(broker).await {
            return (code, -1, String::new(), -1, format!("creating {TXN_TOPIC}"));
        }
        let p = txns.partition_of(broker, key);
        let image = broker.image();
        let leader = image.partition(TXN_TOPIC, p).map_or(-1, |pi| pi.leader);
        return match image.brokers.get(&leader) {
            Some(b) if leader >= 0 => (0, leader, b.host.clone(), i32::from(b.port), String::new()),
            _ => (
                codes::COORDINATOR_NOT_AVAILABLE,
                -1,
                String::new(),
                -1,
                format!("{TXN_TOPIC} partition {p} has no leader"),
            ),
        };
    }
    let coord = &broker.groups;
    if let Err(code) = crate::server::internal::ensure_topic(
        broker,
        OFFSETS_TOPIC,
        coord.config.offsets_partitions,
        coord.config.offsets_replication_factor,
    )
    .await
    {
        return (
            code,
            -1,
            String::new(),
            -1,
            "creating __consumer_offsets".into(),
        );
    }
    let p = coord.partition_of(broker, key);
    let image = broker.image();
    let leader = image.partition(OFFSETS_TOPIC, p).map_or(-1, |pi| pi.leader);
    match image.brokers.get(&leader) {
        Some(b) if leader >= 0 => (0, leader, b.host.clone(), i32::from(b.port), String::new()),
        _ => (
            codes::COORDINATOR_NOT_AVAILABLE,
            -1,
            String::new(),
            -1,
            format!("{OFFSETS_TOPIC} partition {p} has no leader"),
        ),
    }
}

/// FindCoordinator (v0–4).
pub async fn find_coordinator(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        for key in &req.coordinator_keys {
            let (code, node, host, port, msg) = find_one(broker, key, req.key_type).await;
            let mut c = WireCoordinator::default();
            c.key = key.clone();
            c.error_code = code;
            c.node_id = node.into();
            c.host = sb(&host);
            c.port = port;
            if code != 0 {
                c.error_message = Some(sb(&msg));
            }
            resp.coordinators.push(c);
        }
        return resp;
    }
    let key_type = if version >= 1 { req.key_type } else { 0 };
    let (code, node, host, port, msg) = find_one(broker, &req.key, key_type).await;
    resp.error_code = code;
    resp.node_id = node.into();
    resp.host = sb(&host);
    resp.port = port;
    if version >= 1 && code != 0 {
        resp.error_message = Some(sb(&msg));
    }
    resp
}

fn join_error(resp: &mut JoinGroupResponse, code: i16, member: &str, version: i16) {
    resp.error_code = code;
    resp.generation_id = -1;
    resp.member_id = sb(member);
    resp.protocol_name = if version >= 7 { None } else { Some(sb("")) };
}

/// JoinGroup (v0–9).
pub async fn join_group(
    broker: &Arc<Broker>,
    req: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default();
    let group = req.group_id.0.to_string();
    let coord = &broker.groups;
    let owner = match coord.owner(broker, &group).await {
        Ok(o) => o,
        Err(code) => {
            join_error(&mut resp, code, &req.member_id, version);
            return resp;
        }
    };
    let session = i64::from(req.session_timeout_ms);
    if session < coord.config.min_session_timeout_ms
        || session > coord.config.max_session_timeout_ms
    {
        join_error(
            &mut resp,
            codes::INVALID_SESSION_TIMEOUT,
            &req.member_id,
            version,
        );
        return resp;
    }
    let rebalance = if version >= 1 {
        i64::from(req.rebalance_timeout_ms)
    } else {
        session
    };
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: if version >= 5 {
            req.group_instance_id.as_ref().map(|s| s.to_string())
        } else {
            None
        },
        client_id: String::new(),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session_timeout_ms: session,
        rebalance_timeout_ms: rebalance.max(0),
    };
    let now = broker.clock.now_ms();
    let rx = coord.with_group(&owner, &group, |g| g.join(join, now, coord.salt()));
    match rx.await {
        Ok(Ok(j)) => {
            if j.leader == j.member_id && !j.members.is_empty() {
                if let Err(code) = coord
                    .store_generation(broker, &owner, &group, j.generation, &j.protocol_type)
                    .await
                {
                    tracing::warn!(group = %group, code, "storing the new generation failed");
                }
            }
            resp.generation_id = j.generation;
            resp.protocol_name = Some(sb(&j.protocol));
            if version >= 7 {
                resp.protocol_type = Some(sb(&j.protocol_type));
            }
            resp.leader = sb(&j.leader);
            resp.member_id = sb(&j.member_id);
            resp.members = j
                .members
                .into_iter()
                .map(|(id, inst, meta)| {
                    let mut m = JoinGroupResponseMember::default();
                    m.member_id = sb(&id);
                    if version >= 5 {
                        m.group_instance_id = inst.map(|s| sb(&s));
                    }
                    m.metadata = meta;
                    m
                })
                .collect();
        }
        Ok(Err((code, member))) => join_error(&mut resp, code, &member, version),
        Err(_) => join_error(&mut resp, codes::NOT_COORDINATOR, &req.member_id, version),
    }
    resp
}

/// SyncGroup (v0–5).
pub async fn sync_group(
    broker: &Arc<Broker>,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let mut resp = SyncGroupResponse::default();
    let group = req.group_id.0.to_string();
    let coord = &broker.groups;
    let owner = match coord.owner(broker, &group).await {
        Ok(o) => o,
        Err(code) => {
            resp.error_code = code;
            return resp;
        }
    };
    let now = broker.clock.now_ms();
    let assignments: Vec<(String, Bytes)> = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let (rx, ptype, pname) = coord.with_group(&owner, &group, |g| {
        (
            g.sync(&req.member_id, req.generation_id, assignments, now),
            g.protocol_type.clone(),
            g.protocol.clone(),
        )
    });
    match rx.await {
        Ok(Ok(a)) => {
            resp.assignment = a;
            if version >= 5 {
                resp.protocol_type = ptype.map(|s| sb(&s));
                resp.protocol_name = pname.map(|s| sb(&s));
            }
        }
        Ok(Err(code)) => resp.error_code = code,
        Err(_) => resp.error_code = codes::NOT_COORDINATOR,
    }
    resp
}

/// Heartbeat (v0–4).
pub async fn heartbeat(broker: &Arc<Broker>, req: HeartbeatRequest) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    let group = req.group_id.0.to_string();
    let coord = &broker.groups;
    resp.error_code = match coord.owner(broker, &group).await {
        Ok(owner) => {
            let now = broker.clock.now_ms();
            coord.with_group(&owner, &group, |g| {
                g.heartbeat(&req.member_id, req.generation_id, now)
            })
        }
        Err(code) => code,
    };
    resp
}

/// LeaveGroup (v0–5).
pub async fn leave_group(
    broker: &Arc<Broker>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let mut resp = LeaveGroupResponse::default();
    let group = req.group_id.0.to_string();
    let coord = &broker.groups;
    let owner = match coord.owner(broker, &group).await {
        Ok(o) => o,
        Err(code) => {
            resp.error_code = code;
            return resp;
        }
    };
    let now = broker.clock.now_ms();
    if version >= 3 {
        for m in &req.members {
            let code = coord.with_group(&owner, &group, |g| {
                g.leave(
                    &m.member_id,
                    m.group_instance_id.as_ref().map(|s| s.as_str()),
                    now,
                )
            });
            let mut r = MemberResponse::default();
            r.member_id = m.member_id.clone();
            r.group_instance_id = m.group_instance_id.clone();
            r.error_code = code;
            resp.members.push(r);
        }
    } else {
        resp.error_code = coord.with_group(&owner, &group, |g| g.leave(&req.member_id, None, now));
    }
    resp
}

/// OffsetCommit (v2–8): validated against the group, stored with acks=all.
pub async fn offset_commit(
    broker: &Arc<Broker>,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let coord = &broker.groups;
    let answer = |code: i16| -> OffsetCommitResponse {
        answer_each_partition!(
            req,
            code,
            OffsetCommitResponse,
            OffsetCommitResponseTopic,
            OffsetCommitResponsePartition
        )
    };
    let owner = match coord.owner(broker, &group).await {
        Ok(o) => o,
        Err(code) => return answer(code),
    };
    let generation = req.generation_id_or_member_epoch;
    let member = req.member_id.to_string();
    let now = broker.clock.now_ms();
    let check = coord.with_group(&owner, &group, |g| {
        if generation < 0 && member.is_empty() {
            // A commit outside the group protocol (assign-mode consumers, admin tools) is only
            // accepted while no member owns the group's partitions.
            if g.members.is_empty() {
                Ok(())
            } else {
                Err(codes::UNKNOWN_MEMBER_ID)
            }
        } else {
            g.validate(&member, generation)?;
            if let Some(m) = g.members.get_mut(&member) {
                m.last_seen_ms = now;
            }
            match g.state {
                State::Stable => Ok(()),
                _ => Err(codes::REBALANCE_IN_PROGRESS),
            }
        }
    });
    if let Err(code) = check {
        return answer(code);
    }
    let offsets = requested_offsets!(req, version >= 6);
    match coord.store_offsets(broker, &owner, &group, offsets).await {
        Ok(()) => answer(0),
        Err(code) => {
            // The write may still commit (a timeout waiting for the ISR); the client retries.
            tracing::debug!(group = %group, code, "offset commit failed");
            answer(if code == 7 {
                codes::COORDINATOR_NOT_AVAILABLE
            } else {
                code
            })
        }
    }
}

/// TxnOffsetCommit (v0–3): offsets committed inside a producer's transaction, stored as a
/// transactional batch and pending until the producer's commit (or abort) marker lands in the
/// group's `__consumer_offsets` partition. A member and generation, when given (v3+), are
/// checked against the group as OffsetCommit does.
pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let coord = &broker.groups;
    let answer = |code: i16| -> TxnOffsetCommitResponse {
        answer_each_partition!(
            req,
            code,
            TxnOffsetCommitResponse,
            TxnOffsetCommitResponseTopic,
            TxnOffsetCommitResponsePartition
        )
    };
    let owner = match coord.owner(broker, &group).await {
        Ok(o) => o,
        Err(code) => return answer(code),
    };
    if version >= 3 && req.generation_id >= 0 {
        let member = req.member_id.to_string();
        let generation = req.generation_id;
        let check = coord.with_group(&owner, &group, |g| g.validate(&member, generation));
        if let Err(code) = check {
            return answer(code);
        }
    }
    let offsets = requested_offsets!(req, version >= 2);
    let producer = (req.producer_id.0, req.producer_epoch);
    match coord
        .store_txn_offsets(broker, &owner, &group, producer, offsets)
        .await
    {
        Ok(()) => answer(0),
        Err(code) => {
            tracing::debug!(group = %group, code, "transactional offset commit failed");
            answer(match code {
                7 => codes::COORDINATOR_NOT_AVAILABLE,
                txn_codes::INVALID_PRODUCER_EPOCH if version >= 3 => txn_codes::PRODUCER_FENCED,
                c => c,
            })
        }
    }
}

/// OffsetFetch (v1–7).
pub async fn offset_fetch(
    broker: &Arc<Broker>,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    let group = req.group_id.0.to_string();
    let coord = &broker.groups;
    let owner = match coord.owner(broker, &group).await {
        Ok(o) => o,
        Err(code) => {
            if version >= 2 {
                resp.error_code = code;
            } else if let Some(topics) = &req.topics {
                for t in topics {
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = t.name.clone();
                    for p in &t.partition_indexes {
                        let mut pr = OffsetFetchResponsePartition::default();
                        pr.partition_index = *p;
                        pr.committed_offset = -1;
                        pr.error_code = code;
                        tr.partitions.push(pr);
                    }
                    resp.topics.push(tr);
                }
            }
            return resp;
        }
    };
    let require_stable = version >= 7 && req.require_stable;
    let partition = |p: i32, c: Option<Committed>| {
        let mut pr = OffsetFetchResponsePartition::default();
        pr.partition_index = p;
        match c {
            Some(c) => {
                pr.committed_offset = c.offset;
                if version >= 5 {
                    pr.committed_leader_epoch = c.leader_epoch;
                }
                pr.metadata = Some(sb(c.metadata.as_deref().unwrap_or("")));
            }
            None => {
                pr.committed_offset = -1;
                if version >= 5 {
                    pr.committed_leader_epoch = -1;
                }
                pr.metadata = Some(sb(""));
            }
        }
        pr
    };
    match &req.topics {
        Some(topics) => {
            for t in topics {
                let mut tr = OffsetFetchResponseTopic::default();
                tr.name = t.name.clone();
                for p in &t.partition_indexes {
                    let mut pr = partition(*p, coord.committed(&owner, &group, &t.name, *p));
                    if require_stable && coord.has_pending(&owner, &group, &t.name, *p) {
                        // A transaction holds this offset: the client retries (KIP-447).
                        pr.committed_offset = -1;
                        pr.error_code = txn_codes::UNSTABLE_OFFSET_COMMIT;
                    }
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
        None => {
            let mut by_topic: Vec<OffsetFetchResponseTopic> = Vec::new();
            for (t, p, c) in coord.all_committed(&owner, &group) {
                if by_topic.last().is_none_or(|x| x.name.0.as_str() != t) {
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = sb(&t).into();
                    by_topic.push(tr);
                }
                if let Some(tr) = by_topic.last_mut() {
                    tr.partitions.push(partition(p, Some(c)));
                }
            }
            resp.topics = by_topic;
        }
    }
    resp
}

/// DescribeGroups (v0–5).
pub async fn describe_groups(
    broker: &Arc<Broker>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    let coord = &broker.groups;
    for gid in &req.groups {
        let id = gid.0.to_string();
        let mut d = DescribedGroup::default();
        d.group_id = gid.clone();
        match coord.owner(broker, &id).await {
            Err(code) => d.error_code = code,
            Ok(_) => {
                let desc = coord.existing_group(&id, |g| {
                    (
                        g.state.name().to_string(),
                        g.protocol_type.clone().unwrap_or_default(),
                        g.protocol.clone().unwrap_or_default(),
                        g.members
                            .iter()
                            .map(|(mid, m)| {
                                let mut dm = DescribedGroupMember::default();
                                dm.member_id = sb(mid);
                                if version >= 4 {
                                    dm.group_instance_id = m.instance_id.as_ref().map(|s| sb(s));
                                }
                                dm.client_id = sb(&m.client_id);
                                dm.client_host = sb("");
                                dm.member_assignment = m.assignment.clone();
                                dm
                            })
                            .collect::<Vec<_>>(),
                    )
                });
                match desc {
                    Some((state, ptype, proto, members)) => {
                        d.group_state = sb(&state);
                        d.protocol_type = sb(&ptype);
                        d.protocol_data = sb(&proto);
                        d.members = members;
                    }
                    None => d.group_state = sb("Dead"),
                }
            }
        }
        resp.groups.push(d);
    }
    resp
}

/// ListGroups (v0–4): the groups this broker coordinates.
pub fn list_groups(broker: &Broker, version: i16) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    resp.groups = broker
        .groups
        .list()
        .into_iter()
        .map(|(id, state, ptype)| {
            let mut g = ListedGroup::default();
            g.group_id = sb(&id).into();
            g.protocol_type = sb(&ptype);
            if version >= 4 {
                g.group_state = sb(&state);
            }
            g
        })
        .collect();
    resp
}
