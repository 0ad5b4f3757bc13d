//! One consumer group's membership state machine, Kafka's classic (eager) protocol: members
//! join (JoinGroup), the coordinator waits for every known member to rejoin or for the
//! rebalance timeout, bumps the generation and names a leader, the leader's assignment is
//! handed out (SyncGroup), and heartbeats keep sessions alive. Pure: time comes in as `now_ms`
//! and answers to waiting requests go out through oneshot channels, so it is tested without
//! I/O.
//!
//! Invariants: a JoinGroup or SyncGroup waiter is always answered (with a result or an error
//! code) when its member leaves, is fenced or the rebalance completes; the generation only
//! grows; requests from an unknown member or an old generation are refused with
//! UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION, and during a rebalance with REBALANCE_IN_PROGRESS.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::sync::oneshot;

/// Kafka error codes of the group APIs.
pub mod codes {
    /// COORDINATOR_LOAD_IN_PROGRESS
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// COORDINATOR_NOT_AVAILABLE
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// NOT_COORDINATOR
    pub const NOT_COORDINATOR: i16 = 16;
    /// ILLEGAL_GENERATION
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// INCONSISTENT_GROUP_PROTOCOL
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// INVALID_GROUP_ID
    pub const INVALID_GROUP_ID: i16 = 24;
    /// UNKNOWN_MEMBER_ID
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// INVALID_SESSION_TIMEOUT
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// REBALANCE_IN_PROGRESS
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// GROUP_ID_NOT_FOUND
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    /// FENCED_INSTANCE_ID
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// A group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No members.
    Empty,
    /// Waiting for members to (re)join until the deadline.
    PreparingRebalance {
        /// When members that have not rejoined are dropped.
        deadline_ms: i64,
    },
    /// Joined; waiting for the leader's assignment until the deadline.
    CompletingRebalance {
        /// When a missing assignment restarts the rebalance.
        deadline_ms: i64,
    },
    /// Assignment handed out.
    Stable,
}

impl State {
    /// Kafka's name for the state (DescribeGroups, ListGroups).
    pub fn name(&self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance { .. } => "PreparingRebalance",
            State::CompletingRebalance { .. } => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The new generation.
    pub generation: i32,
    /// The chosen protocol (assignor).
    pub protocol: String,
    /// The protocol type (`consumer`).
    pub protocol_type: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// Every member with its metadata (only for the leader).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A JoinGroup answer: joined, or an error code (with the member id when one was assigned).
pub type JoinAnswer = Result<Joined, (i16, String)>;

/// A SyncGroup answer: the member's assignment, or an error code.
pub type SyncAnswer = Result<Bytes, i16>;

/// One member.
#[derive(Debug)]
pub struct Member {
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// Client id (for DescribeGroups).
    pub client_id: String,
    /// Session timeout.
    pub session_timeout_ms: i64,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i64,
    /// Supported protocols in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Current assignment.
    pub assignment: Bytes,
    /// Last sign of life.
    pub last_seen_ms: i64,
    join_waiter: Option<oneshot::Sender<JoinAnswer>>,
    sync_waiter: Option<oneshot::Sender<SyncAnswer>>,
}

/// A JoinGroup request, as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a new member.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Protocols with metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Session timeout.
    pub session_timeout_ms: i64,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i64,
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    /// The group id.
    pub id: String,
    /// Its state.
    pub state: State,
    /// Current generation (0 before the first rebalance).
    pub generation: i32,
    /// Protocol type of its members.
    pub protocol_type: Option<String>,
    /// The protocol chosen at the last rebalance.
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: Option<String>,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id → member id.
    pub static_members: HashMap<String, String>,
    next_member: u64,
}

impl Group {
    /// A new, empty group continuing from `generation` (as loaded from the offsets topic).
    pub fn new(id: &str, generation: i32) -> Group {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            next_member: 0,
        }
    }

    fn new_member_id(&mut self, client_id: &str, salt: u64) -> String {
        self.next_member += 1;
        let base = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!("{base}-{}-{:08x}", self.next_member, salt & 0xffff_ffff)
    }

    /// Handles a JoinGroup; the answer comes through the returned receiver (at once when no
    /// rebalance is needed). `salt` makes new member ids unique across coordinators.
    pub fn join(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        salt: u64,
    ) -> oneshot::Receiver<JoinAnswer> {
        let (tx, rx) = oneshot::channel();
        if let Some(pt) = &self.protocol_type {
            if !self.members.is_empty() && *pt != req.protocol_type {
                let _ = tx.send(Err((codes::INCONSISTENT_GROUP_PROTOCOL, req.member_id)));
                return rx;
            }
        }
        if req.protocols.is_empty()
            || (!self.members.is_empty()
                && !req.protocols.iter().any(|(name, _)| {
                    self.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                }))
        {
            let _ = tx.send(Err((codes::INCONSISTENT_GROUP_PROTOCOL, req.member_id)));
            return rx;
        }
        // Resolve the member id: known, static rejoin under a new id, or new.
        let mut member_id = req.member_id.clone();
        let mut static_replaced = false;
        if let Some(inst) = &req.instance_id {
            if let Some(old) = self.static_members.get(inst).cloned() {
                if member_id.is_empty() || member_id != old {
                    // A new incarnation of a static member fences the old one.
                    let new_id = self.new_member_id(&req.client_id, salt);
                    if let Some(mut m) = self.members.remove(&old) {
                        if let Some(w) = m.join_waiter.take() {
                            let _ = w.send(Err((codes::FENCED_INSTANCE_ID, old.clone())));
                        }
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(Err(codes::FENCED_INSTANCE_ID));
                        }
                        self.members.insert(new_id.clone(), m);
                    }
                    if self.leader.as_deref() == Some(old.as_str()) {
                        self.leader = Some(new_id.clone());
                    }
                    self.static_members.insert(inst.clone(), new_id.clone());
                    member_id = new_id;
                    static_replaced = true;
                }
            }
        }
        let known = self.members.contains_key(&member_id);
        if !member_id.is_empty() && !known {
            let _ = tx.send(Err((codes::UNKNOWN_MEMBER_ID, member_id)));
            return rx;
        }
        let new_member = member_id.is_empty();
        if new_member {
            member_id = self.new_member_id(&req.client_id, salt);
            if let Some(inst) = &req.instance_id {
                self.static_members.insert(inst.clone(), member_id.clone());
            }
        }
        let protocols_changed = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols != req.protocols);
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                last_seen_ms: now_ms,
                join_waiter: None,
                sync_waiter: None,
            });
        member.protocols = req.protocols.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.last_seen_ms = now_ms;
        self.protocol_type = Some(req.protocol_type.clone());
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        // A known follower rejoining a stable group with the same protocols (or a static member
        // coming back) gets the current generation without a rebalance.
        if self.state == State::Stable && !new_member && !protocols_changed && !is_leader {
            let _ = tx.send(Ok(Joined {
                generation: self.generation,
                protocol: self.protocol.clone().unwrap_or_default(),
                protocol_type: req.protocol_type,
                leader: self.leader.clone().unwrap_or_default(),
                member_id,
                members: Vec::new(),
            }));
            let _ = static_replaced;
            return rx;
        }
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(Err((codes::REBALANCE_IN_PROGRESS, member_id.clone())));
        }
        self.prepare_rebalance(now_ms);
        self.maybe_complete_join(now_ms, false);
        rx
    }

    /// Starts a rebalance (if not already preparing one): pending syncs are told to rejoin.
    pub fn prepare_rebalance(&mut self, now_ms: i64) {
        if matches!(self.state, State::PreparingRebalance { .. }) {
            return;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(codes::REBALANCE_IN_PROGRESS));
            }
        }
        self.state = State::PreparingRebalance {
            deadline_ms: now_ms + timeout,
        };
    }

    /// Completes the join phase when every member has rejoined, or (`deadline_passed`) drops
    /// those that have not.
    fn maybe_complete_join(&mut self, now_ms: i64, deadline_passed: bool) {
        if !matches!(self.state, State::PreparingRebalance { .. }) {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if !all_joined && !deadline_passed {
            return;
        }
        let absent: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in absent {
            self.remove_member(&id);
        }
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            return;
        }
        self.generation += 1;
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        // The leader's most preferred protocol that every member supports.
        let protocol = self
            .members
            .get(&leader)
            .and_then(|l| {
                l.protocols.iter().map(|(n, _)| n.clone()).find(|name| {
                    self.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                })
            })
            .unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (id.clone(), m.instance_id.clone(), meta)
            })
            .collect();
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.leader = Some(leader.clone());
        self.protocol = Some(protocol.clone());
        self.state = State::CompletingRebalance {
            deadline_ms: now_ms + timeout,
        };
        let ptype = self.protocol_type.clone().unwrap_or_default();
        for (id, m) in self.members.iter_mut() {
            m.assignment = Bytes::new();
            m.last_seen_ms = now_ms;
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Ok(Joined {
                    generation: self.generation,
                    protocol: protocol.clone(),
                    protocol_type: ptype.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(Err((codes::UNKNOWN_MEMBER_ID, id.to_string())));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(Err(codes::UNKNOWN_MEMBER_ID));
            }
            if let Some(inst) = &m.instance_id {
                if self.static_members.get(inst).map(String::as_str) == Some(id) {
                    self.static_members.remove(inst);
                }
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Checks a member and generation for SyncGroup, Heartbeat and OffsetCommit.
    pub fn validate(&self, member_id: &str, generation: i32) -> Result<(), i16> {
        if !self.members.contains_key(member_id) {
            return Err(codes::UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation {
            return Err(codes::ILLEGAL_GENERATION);
        }
        Ok(())
    }

    /// Handles a SyncGroup.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> oneshot::Receiver<SyncAnswer> {
        let (tx, rx) = oneshot::channel();
        if let Err(code) = self.validate(member_id, generation) {
            let _ = tx.send(Err(code));
            return rx;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen_ms = now_ms;
        }
        match self.state {
            State::Empty | State::PreparingRebalance { .. } => {
                let _ = tx.send(Err(codes::REBALANCE_IN_PROGRESS));
            }
            State::Stable => {
                let a = self
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let _ = tx.send(Ok(a));
            }
            State::CompletingRebalance { .. } => {
                if let Some(m) = self.members.get_mut(member_id) {
                    if let Some(old) = m.sync_waiter.replace(tx) {
                        let _ = old.send(Err(codes::REBALANCE_IN_PROGRESS));
                    }
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.state = State::Stable;
                    for m in self.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(Ok(m.assignment.clone()));
                        }
                    }
                }
            }
        }
        rx
    }

    /// Handles a Heartbeat: 0 or an error code.
    pub fn heartbeat(&mut self, member_id: &str, generation: i32, now_ms: i64) -> i16 {
        if !self.members.contains_key(member_id) {
            return codes::UNKNOWN_MEMBER_ID;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen_ms = now_ms;
        }
        if matches!(self.state, State::PreparingRebalance { .. }) {
            return codes::REBALANCE_IN_PROGRESS;
        }
        if generation != self.generation {
            return codes::ILLEGAL_GENERATION;
        }
        0
    }

    /// Handles one member leaving (by member id, or by instance id for static members).
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now_ms: i64) -> i16 {
        let id = match instance_id {
            Some(inst) => match self.static_members.get(inst) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => return codes::FENCED_INSTANCE_ID,
                None => return codes::UNKNOWN_MEMBER_ID,
            },
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&id) {
            return codes::UNKNOWN_MEMBER_ID;
        }
        self.remove_member(&id);
        self.after_departure(now_ms);
        0
    }

    fn after_departure(&mut self, now_ms: i64) {
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            return;
        }
        match self.state {
            State::PreparingRebalance { .. } => self.maybe_complete_join(now_ms, false),
            _ => self.prepare_rebalance(now_ms),
        }
    }

    /// Expires members whose session ran out, ends rebalance phases past their deadline.
    /// Returns true when the group changed.
    pub fn tick(&mut self, now_ms: i64) -> bool {
        let mut changed = false;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.join_waiter.is_none() && now_ms - m.last_seen_ms > m.session_timeout_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(&id);
            changed = true;
        }
        if changed {
            self.after_departure(now_ms);
        }
        match self.state {
            State::PreparingRebalance { deadline_ms } if now_ms >= deadline_ms => {
                self.maybe_complete_join(now_ms, true);
                changed = true;
            }
            State::CompletingRebalance { deadline_ms } if now_ms >= deadline_ms => {
                // The leader never sent the assignment: start over.
                self.prepare_rebalance(now_ms);
                changed = true;
            }
            _ => {}
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(member: &str) -> JoinRequest {
        JoinRequest {
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000,
        }
    }

    fn joined(rx: &mut oneshot::Receiver<JoinAnswer>) -> Option<JoinAnswer> {
        rx.try_recv().ok()
    }

    #[test]
    fn two_members_join_sync_and_a_third_triggers_a_new_generation() {
        let mut g = Group::new("g", 0);
        let mut a = g.join(req(""), 0, 1);
        let ja = joined(&mut a)
            .expect("alone: completes at once")
            .expect("ok");
        assert_eq!(ja.generation, 1);
        assert_eq!(ja.leader, ja.member_id);
        assert_eq!(ja.members.len(), 1);
        let mut s = g.sync(
            &ja.member_id,
            1,
            vec![(ja.member_id.clone(), Bytes::from_static(b"A"))],
            1,
        );
        assert_eq!(s.try_recv().expect("answer"), Ok(Bytes::from_static(b"A")));
        assert_eq!(g.state, State::Stable);

        // A second member: the group rebalances; the first learns through its heartbeat.
        let mut b = g.join(req(""), 2, 2);
        assert!(
            joined(&mut b).is_none(),
            "waits for the first member to rejoin"
        );
        assert_eq!(
            g.heartbeat(&ja.member_id, 1, 3),
            codes::REBALANCE_IN_PROGRESS
        );
        let mut a2 = g.join(req(&ja.member_id), 4, 1);
        let ja2 = joined(&mut a2).expect("done").expect("ok");
        let jb = joined(&mut b).expect("done").expect("ok");
        assert_eq!((ja2.generation, jb.generation), (2, 2));
        assert_eq!(ja2.members.len(), 2, "the leader sees every member");
        assert!(jb.members.is_empty());
        // The follower's sync waits for the leader's.
        let mut sb = g.sync(&jb.member_id, 2, vec![], 5);
        assert!(sb.try_recv().is_err());
        assert_eq!(
            g.heartbeat(&jb.member_id, 1, 5),
            codes::ILLEGAL_GENERATION,
            "an old generation is fenced"
        );
        let mut sa = g.sync(
            &ja2.member_id,
            2,
            vec![
                (ja2.member_id.clone(), Bytes::from_static(b"A")),
                (jb.member_id.clone(), Bytes::from_static(b"B")),
            ],
            6,
        );
        assert_eq!(sa.try_recv().expect("a"), Ok(Bytes::from_static(b"A")));
        assert_eq!(sb.try_recv().expect("b"), Ok(Bytes::from_static(b"B")));
        assert_eq!(g.heartbeat(&jb.member_id, 2, 7), 0);
    }

    #[test]
    fn a_silent_member_expires_and_the_rest_rebalance() {
        let mut g = Group::new("g", 7);
        let a = joined(&mut g.join(req(""), 0, 1)).expect("a").expect("ok");
        g.sync(&a.member_id, 8, vec![], 0);
        let mut b = g.join(req(""), 1, 2);
        let mut a2 = g.join(req(&a.member_id), 1, 1);
        let a2 = joined(&mut a2).expect("a2").expect("ok");
        let b = joined(&mut b).expect("b").expect("ok");
        assert_eq!(a2.generation, 9, "generations continue from the loaded one");
        g.sync(&a2.member_id, 9, vec![], 2);
        // b heartbeats; a goes silent past its session timeout.
        assert_eq!(g.heartbeat(&b.member_id, 9, 9_000), 0);
        assert!(g.tick(10_500));
        assert!(!g.members.contains_key(&a2.member_id));
        assert!(matches!(g.state, State::PreparingRebalance { .. }));
        let mut b2 = g.join(req(&b.member_id), 10_600, 2);
        let b2 = joined(&mut b2).expect("b2").expect("ok");
        assert_eq!(b2.generation, 10);
        assert_eq!(b2.leader, b.member_id);
    }

    #[test]
    fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_incarnation() {
        let mut g = Group::new("g", 0);
        let mut r = req("");
        r.instance_id = Some("i1".into());
        let a = joined(&mut g.join(req(""), 0, 1)).expect("a").expect("ok");
        g.sync(&a.member_id, 1, vec![], 0);
        let mut s = g.join(r.clone(), 1, 2);
        let mut a2 = g.join(req(&a.member_id), 1, 1);
        let a2 = joined(&mut a2).expect("a2").expect("ok");
        let s1 = joined(&mut s).expect("s").expect("ok");
        g.sync(
            &a2.member_id,
            2,
            vec![(s1.member_id.clone(), Bytes::from_static(b"S"))],
            2,
        );
        assert_eq!(g.state, State::Stable);
        // The static member restarts with an empty member id.
        let mut s2 = g.join(r, 3, 3);
        let s2 = joined(&mut s2).expect("at once").expect("ok");
        assert_eq!(s2.generation, 2, "no rebalance");
        assert_ne!(s2.member_id, s1.member_id);
        assert_eq!(g.heartbeat(&s1.member_id, 2, 4), codes::UNKNOWN_MEMBER_ID);
        let mut sync = g.sync(&s2.member_id, 2, vec![], 4);
        assert_eq!(sync.try_recv().expect("s"), Ok(Bytes::from_static(b"S")));
        assert_eq!(g.leave("", Some("i1"), 5), 0);
        assert!(matches!(g.state, State::PreparingRebalance { .. }));
    }
}
