//! The metadata quorum, KRaft-like, on openraft 0.9: controllers (`process.roles` includes
//! `controller`, addresses in `controller.quorum.voters`) replicate a Raft log of metadata
//! [`Command`]s whose state machine is the [`MetadataImage`]. The Raft leader is the active
//! controller: it registers brokers on their heartbeats, fences brokers whose heartbeats stop for
//! `broker.session.timeout.ms` (which elects new partition leaders inside the state machine), and
//! serves topic changes and AlterPartition. Every broker (voter or not) heartbeats to the active
//! controller and receives the image in the answer; see `docs/METADATA.md`.

pub mod image;
pub mod rpc;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::Cursor;

use openraft::{BasicNode, Raft};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

pub use image::{
    ClusterFeatures, Command, CommandResult, MetadataImage, NodeId, PartitionInfo, NO_LEADER,
};
use rpc::{Request, Response};

use crate::clock::Clock;
use crate::transport::{BoxStream, Listener};

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata log.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        AsyncRuntime = crate::runtime::RaftRuntime,
);

/// Errors of the metadata quorum, each naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A configuration key has a bad value.
    #[error("config key `{key}` has invalid value `{value}`: {expected}")]
    Config {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// Storage or listener setup failed.
    #[error("metadata {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Raft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// No controller answered in time.
    #[error("no active controller answered within {0:?}")]
    NoController(Duration),
}

/// Settings of the metadata layer, from broker properties.
#[derive(Debug, Clone)]
pub struct MetadataConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Whether this node is a controller (a Raft voter).
    pub controller: bool,
    /// Whether this node is a broker (heartbeats, leads partitions).
    pub broker: bool,
    /// Voters: id → `host:port` of their controller listener.
    pub voters: BTreeMap<NodeId, String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    /// `unclean.leader.election.enable` (cluster default; topics may override).
    pub unclean: bool,
    /// `metadata.log.dir`.
    pub dir: PathBuf,
    /// This broker's advertised Kafka host.
    pub kafka_host: String,
    /// This broker's advertised Kafka port.
    pub kafka_port: u16,
    /// This process's incarnation id (fresh per process start, as Kafka's `incarnation.id`).
    pub incarnation: String,
    /// What the active controller does with a registration of a new incarnation while the old
    /// one's session is alive (`broker.reregistration.policy`).
    pub reregistration: Reregistration,
    /// Bug mode `restart-without-fencing`: the controller takes a heartbeat of any incarnation
    /// as the registered one's (see [`crate::replication::ReplicationBugs`]).
    pub restart_without_fencing: bool,
    /// The cluster settings this controller writes with registrations (ELR, min ISR).
    pub features: image::ClusterFeatures,
    /// The broker epoch this node's previous process wrote at a clean shutdown (KIP-966
    /// `PreviousBrokerEpoch`); `None` after a crash.
    pub previous_broker_epoch: Option<i64>,
}

/// How the active controller answers a broker that registers a new incarnation while the
/// previous incarnation's session has not expired (`broker.reregistration.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reregistration {
    /// Kafka 4.0 (KAFKA-18106, the default): fence the old incarnation at once (its partitions
    /// get new leaders in a new leader epoch, it leaves every ISR), then register the new one.
    #[default]
    Fence,
    /// Kafka before 4.0: refuse the new incarnation (DUPLICATE_BROKER_REGISTRATION) until the
    /// old session expires and the broker is fenced; the new process waits unregistered.
    Refuse,
}

/// A fresh incarnation id: 128 random bits as 32 hex digits (from `/dev/urandom`; the process
/// id and a stack address if that cannot be read).
pub fn new_incarnation() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if let Some(seeded) = crate::runtime::simulated_random_16() {
        return seeded.iter().map(|b| format!("{b:02x}")).collect();
    }
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        let here = &bytes as *const _ as usize as u64;
        bytes[..8].copy_from_slice(&u64::from(std::process::id()).to_be_bytes());
        bytes[8..].copy_from_slice(&here.to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl MetadataConfig {
    /// Reads the metadata keys from broker properties. `default_dir` is used when
    /// `metadata.log.dir` is absent.
    pub fn from_properties(
        node_id: NodeId,
        props: &BTreeMap<String, String>,
        default_dir: PathBuf,
        kafka_host: String,
        kafka_port: u16,
    ) -> Result<MetadataConfig, MetadataError> {
        let bad = |key: &str, value: &str, expected: &str| MetadataError::Config {
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        };
        let roles = props
            .get("process.roles")
            .map(String::as_str)
            .unwrap_or("broker,controller");
        let mut controller = false;
        let mut broker = false;
        for r in roles.split(',').map(str::trim) {
            match r {
                "controller" => controller = true,
                "broker" => broker = true,
                _ => return Err(bad("process.roles", roles, "broker, controller or both")),
            }
        }
        let voters_s = props.get("controller.quorum.voters").ok_or_else(|| {
            bad(
                "controller.quorum.voters",
                "",
                "id@host:port,... (e.g. 1@10.0.0.1:9093)",
            )
        })?;
        let mut voters = BTreeMap::new();
        for v in voters_s.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let (id, addr) = v
                .split_once('@')
                .ok_or_else(|| bad("controller.quorum.voters", v, "id@host:port"))?;
            let id: NodeId = id
                .parse()
                .map_err(|_| bad("controller.quorum.voters", v, "a numeric id before @"))?;
            if !addr.contains(':') {
                return Err(bad("controller.quorum.voters", v, "host:port after @"));
            }
            voters.insert(id, addr.to_string());
        }
        if voters.is_empty() {
            return Err(bad(
                "controller.quorum.voters",
                voters_s,
                "at least one voter",
            ));
        }
        if controller && !voters.contains_key(&node_id) {
            return Err(bad(
                "controller.quorum.voters",
                voters_s,
                "this controller's own node.id among the voters",
            ));
        }
        let ms = |key: &str, default: u64| -> Result<Duration, MetadataError> {
            match props.get(key) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad(key, v, "milliseconds")),
            }
        };
        let unclean = match props
            .get("unclean.leader.election.enable")
            .map(String::as_str)
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(bad("unclean.leader.election.enable", v, "true or false")),
        };
        // The release's rules (validated by `BrokerConfig`; the default release when absent).
        let rules = props
            .get(crate::release::RELEASE_KEY)
            .and_then(|v| v.parse::<crate::release::KafkaRelease>().ok())
            .unwrap_or_default()
            .rules();
        let reregistration = match props
            .get("broker.reregistration.policy")
            .map(String::as_str)
        {
            None if rules.fence_reregistration => Reregistration::Fence,
            None => Reregistration::Refuse,
            Some("fence") => Reregistration::Fence,
            Some("refuse") => Reregistration::Refuse,
            Some(v) => return Err(bad("broker.reregistration.policy", v, "fence or refuse")),
        };
        Ok(MetadataConfig {
            node_id,
            controller,
            broker,
            voters,
            heartbeat_interval: ms("broker.heartbeat.interval.ms", 2000)?,
            session_timeout: ms("broker.session.timeout.ms", 9000)?,
            unclean,
            dir: props
                .get("metadata.log.dir")
                .map(PathBuf::from)
                .unwrap_or(default_dir),
            kafka_host,
            kafka_port,
            incarnation: new_incarnation(),
            reregistration,
            restart_without_fencing: false,
            features: image::ClusterFeatures {
                eligible_leader_replicas: match props
                    .get("eligible.leader.replicas.enable")
                    .map(String::as_str)
                {
                    Some("true") => true,
                    Some("false") => false,
                    _ => rules.elr_default,
                },
                min_insync_replicas: props
                    .get("min.insync.replicas")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            },
            previous_broker_epoch: None,
        })
    }
}

/// Liveness bookkeeping of the active controller.
#[derive(Debug, Default)]
struct Liveness {
    leader_since: Option<Instant>,
    last_heartbeat: HashMap<NodeId, Instant>,
}

/// A running metadata node: the controller (if this node is one) and the broker's view.
pub struct MetadataNode {
    config: MetadataConfig,
    raft: Option<Raft<TypeConfig>>,
    image_rx: watch::Receiver<Arc<MetadataImage>>,
    fenced_rx: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Set to ask for a controlled shutdown.
    shutdown_tx: watch::Sender<bool>,
    /// Controlled shutdown's outcome: `Some(true)` once the controller has moved every
    /// leadership away, `Some(false)` when no controller answers.
    shut_down_rx: watch::Receiver<Option<bool>>,
}

impl std::fmt::Debug for MetadataNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataNode")
            .field("node_id", &self.config.node_id)
            .field("controller", &self.config.controller)
            .finish()
    }
}

struct Controller {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm_image: watch::Receiver<Arc<MetadataImage>>,
    liveness: Mutex<Liveness>,
    clock: Arc<dyn Clock>,
    config: MetadataConfig,
}

impl Controller {
    async fn leader(&self) -> Option<NodeId> {
        self.raft.current_leader().await.map(|l| l as NodeId)
    }

    async fn propose(&self, cmd: Command) -> Response {
        match self.raft.client_write(cmd).await {
            Ok(r) => Response::Proposed(r.data),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            )) => Response::NotController {
                leader: f.leader_id.map(|l| l as NodeId),
            },
            Err(e) => Response::Failed(e.to_string()),
        }
    }

    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Append(r) => Response::Append(self.raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
            Request::Snapshot(r) => Response::Snapshot(self.raft.install_snapshot(r).await),
            Request::Propose(cmd) => {
                if self.leader().await != Some(self.id) {
                    return Response::NotController {
                        leader: self.leader().await,
                    };
                }
                self.propose(cmd).await
            }
            Request::Heartbeat {
                id,
                host,
                port,
                incarnation,
                want_shut_down,
                previous_broker_epoch,
            } => {
                if self.leader().await != Some(self.id) {
                    return Response::NotController {
                        leader: self.leader().await,
                    };
                }
                // A freshly elected controller may not have applied the whole log yet: serve
                // the image only once it is linearizable (never a stale leader or ISR).
                if self.raft.ensure_linearizable().await.is_err() {
                    return Response::NotController {
                        leader: self.leader().await.filter(|l| *l != self.id),
                    };
                }
                let image = self.sm_image.borrow().clone();
                let registered = image.brokers.get(&id);
                if want_shut_down {
                    return self.controlled_shutdown(id, &incarnation, image).await;
                }
                // The decision point of bug mode restart-without-fencing: any process with this
                // id counts as the registered incarnation.
                let same_incarnation = registered.is_none_or(|b| b.incarnation == incarnation)
                    || self.config.restart_without_fencing;
                let old_session_live = registered.is_some_and(|b| !b.fenced);
                if !same_incarnation
                    && old_session_live
                    && self.config.reregistration == Reregistration::Refuse
                {
                    // Pre-4.0: DUPLICATE_BROKER_REGISTRATION until the old session expires. The
                    // new process's heartbeats do not keep the old session alive.
                    tracing::info!(
                        broker = id,
                        "DUPLICATE_BROKER_REGISTRATION: the previous incarnation's session is alive"
                    );
                    return Response::Heartbeat {
                        fenced: true,
                        image: (*image).clone(),
                    };
                }
                self.liveness
                    .lock()
                    .await
                    .last_heartbeat
                    .insert(id, self.clock.instant());
                let needs_register = match registered {
                    None => true,
                    Some(b) => b.fenced || b.host != host || b.port != port || !same_incarnation,
                };
                if needs_register {
                    // KIP-966: a new incarnation whose previous process did not write the
                    // registered broker epoch at a clean shutdown shut down uncleanly.
                    let unclean_shutdown = !same_incarnation
                        && registered.is_some_and(|b| previous_broker_epoch != Some(b.epoch));
                    let incarnation = match registered {
                        Some(b) if same_incarnation => b.incarnation.clone(),
                        _ => incarnation.clone(),
                    };
                    let cmd = Command::RegisterBroker {
                        id,
                        host,
                        port,
                        unclean: self.config.unclean,
                        incarnation,
                        unclean_shutdown,
                        features: Some(self.config.features.clone()),
                    };
                    if let r @ (Response::NotController { .. } | Response::Failed(_)) =
                        self.propose(cmd).await
                    {
                        return r;
                    }
                }
                let image = self.sm_image.borrow().clone();
                let current = image.brokers.get(&id).is_some_and(|b| {
                    b.incarnation == incarnation || self.config.restart_without_fencing
                });
                Response::Heartbeat {
                    fenced: !image.is_live(id) || !current,
                    image: (*image).clone(),
                }
            }
        }
    }

    /// A heartbeat with `want_shut_down`: the broker is fenced without unclean elections (its
    /// leaderships move to other ISR members, it leaves every ISR it is not the last member
    /// of), and is not registered again by these heartbeats (a restart registers anew). Only the registered incarnation
    /// can shut itself down.
    async fn controlled_shutdown(
        &self,
        id: NodeId,
        incarnation: &str,
        image: Arc<MetadataImage>,
    ) -> Response {
        let ours = image
            .brokers
            .get(&id)
            .is_some_and(|b| b.incarnation == incarnation || self.config.restart_without_fencing);
        if ours && image.is_live(id) {
            tracing::info!(broker = id, "controlled shutdown: moving its leaderships");
            if let r @ (Response::NotController { .. } | Response::Failed(_)) = self
                .propose(Command::FenceBroker { id, unclean: false })
                .await
            {
                return r;
            }
        }
        let image = self.sm_image.borrow().clone();
        Response::Heartbeat {
            fenced: true,
            image: (*image).clone(),
        }
    }

    /// On the active controller: fence brokers whose heartbeats stopped.
    async fn check_liveness(&self) {
        let now = self.clock.instant();
        let is_leader = self.leader().await == Some(self.id);
        let mut to_fence = Vec::new();
        {
            let mut l = self.liveness.lock().await;
            if !is_leader {
                l.leader_since = None;
                return;
            }
            if l.leader_since.is_none() {
                // A new active controller gives every broker a full session before fencing.
                l.leader_since = Some(now);
                l.last_heartbeat.clear();
            }
            let since = l.leader_since.unwrap_or(now);
            let image = self.sm_image.borrow().clone();
            for b in image.brokers.values().filter(|b| !b.fenced) {
                let last = l.last_heartbeat.get(&b.id).copied().unwrap_or(since);
                if now.duration_since(last) > self.config.session_timeout {
                    to_fence.push(b.id);
                }
            }
        }
        for id in to_fence {
            tracing::info!(
                broker = id,
                "no heartbeat within broker.session.timeout.ms: fencing"
            );
            let _ = self
                .propose(Command::FenceBroker {
                    id,
                    unclean: self.config.unclean,
                })
                .await;
        }
    }
}

async fn serve_controller(ctrl: Arc<Controller>, mut listener: Box<dyn Listener>) {
    // Connection tasks live in this set, so aborting the server (shutdown) ends them too.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let ctrl = ctrl.clone();
        conns.spawn(async move {
            loop {
                let req: Request = match rpc::read_frame(&mut stream).await {
                    Ok(r) => r,
                    Err(_) => return,
                };
                let resp = ctrl.handle(req).await;
                if rpc::write_frame(&mut stream, &resp).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Sends a request to the active controller, following NOT_CONTROLLER hints and trying every
/// voter, until `deadline` passes.
async fn to_active_controller(
    voters: &BTreeMap<NodeId, String>,
    guess: &mut Option<NodeId>,
    conns: &mut HashMap<NodeId, Option<BoxStream>>,
    req: &Request,
    deadline: Instant,
) -> Result<Response, MetadataError> {
    let ids: Vec<NodeId> = voters.keys().copied().collect();
    // The voter after `id` in id order: where to ask next when `id` cannot answer. Kept in
    // `guess` across calls, so a voter that is down or cut off is not asked first by every
    // heartbeat (which, with a call timeout above the heartbeat period, once kept every broker
    // from ever reaching a newly elected controller: all were fenced when the old one was
    // isolated).
    let next_after = |id: NodeId| {
        let pos = ids.iter().position(|v| *v == id).unwrap_or(0);
        ids[(pos + 1) % ids.len()]
    };
    loop {
        let id = guess.unwrap_or(ids[0]);
        let addr = &voters[&id];
        let conn = conns.entry(id).or_default();
        match rpc::call(conn, addr, req, Duration::from_millis(2000)).await {
            Ok(Response::NotController { leader }) => {
                match leader.filter(|l| voters.contains_key(l) && *l != id) {
                    Some(l) => *guess = Some(l),
                    None => {
                        *guess = Some(next_after(id));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            Ok(Response::Failed(e)) => {
                tracing::debug!(controller = id, error = %e, "controller request failed");
                *guess = Some(next_after(id));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(r) => return Ok(r),
            Err(_) => {
                *guess = Some(next_after(id));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if tokio::time::Instant::now().into_std() > deadline {
            return Err(MetadataError::NoController(Duration::ZERO));
        }
    }
}

impl MetadataNode {
    /// Starts the controller (when this node is one) and the broker's heartbeat loop (when it is
    /// a broker).
    pub async fn start(
        config: MetadataConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<MetadataNode, MetadataError> {
        let (image_tx, image_rx) = watch::channel(Arc::new(MetadataImage::default()));
        let (fenced_tx, fenced_rx) = watch::channel(true);
        let mut tasks = Vec::new();
        let mut raft_handle = None;
        if config.controller {
            let io = |what: &str| {
                let what = what.to_string();
                move |source| MetadataError::Io { what, source }
            };
            let log = store::LogStore::open(&config.dir).map_err(io("opening the raft log"))?;
            let (sm, sm_image) = store::StateMachine::new();
            let raft_config = openraft::Config {
                cluster_name: "kafka-jepsen".into(),
                heartbeat_interval: 100,
                election_timeout_min: 400,
                election_timeout_max: 800,
                snapshot_policy: openraft::SnapshotPolicy::Never,
                ..Default::default()
            }
            .validate()
            .map_err(|e| MetadataError::Raft(e.to_string()))?;
            let raft = Raft::new(
                config.node_id as u64,
                Arc::new(raft_config),
                rpc::Network,
                log,
                sm,
            )
            .await
            .map_err(|e| MetadataError::Raft(e.to_string()))?;
            let my_addr = config.voters[&config.node_id].clone();
            let listener = crate::transport::bind(&my_addr)
                .await
                .map_err(io(&format!("binding controller listener {my_addr}")))?;
            let ctrl = Arc::new(Controller {
                id: config.node_id,
                raft: raft.clone(),
                sm_image,
                liveness: Mutex::new(Liveness::default()),
                clock: clock.clone(),
                config: config.clone(),
            });
            tasks.push(tokio::spawn(serve_controller(ctrl.clone(), listener)));
            // The lowest voter id bootstraps the quorum on first start (a no-op afterwards).
            if config.voters.keys().next() == Some(&config.node_id) {
                let members: BTreeMap<u64, BasicNode> = config
                    .voters
                    .iter()
                    .map(|(id, addr)| (*id as u64, BasicNode { addr: addr.clone() }))
                    .collect();
                match raft.initialize(members).await {
                    Ok(()) => tracing::info!("metadata quorum initialised"),
                    Err(e) => tracing::debug!(error = %e, "quorum already initialised"),
                }
            }
            let c = ctrl.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    c.check_liveness().await;
                }
            }));
            raft_handle = Some(raft);
        }
        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        let (shut_down_tx, shut_down_rx) = watch::channel(None);
        if config.broker {
            let cfg = config.clone();
            tasks.push(tokio::spawn(async move {
                let mut guess = None;
                let mut conns = HashMap::new();
                let mut was_fenced = true;
                // Until the controller has registered this incarnation, no image is published:
                // the broker neither leads nor follows on what it finds on disk.
                let mut registered = false;
                loop {
                    let want_shut_down = *shutdown_rx.borrow_and_update();
                    let req = Request::Heartbeat {
                        id: cfg.node_id,
                        host: cfg.kafka_host.clone(),
                        port: cfg.kafka_port,
                        incarnation: cfg.incarnation.clone(),
                        want_shut_down,
                        previous_broker_epoch: cfg.previous_broker_epoch,
                    };
                    let deadline = tokio::time::Instant::now().into_std() + cfg.heartbeat_interval;
                    if let Ok(Response::Heartbeat { fenced, image }) =
                        to_active_controller(&cfg.voters, &mut guess, &mut conns, &req, deadline)
                            .await
                    {
                        if !fenced && !registered {
                            registered = true;
                            tracing::info!(broker = cfg.node_id, incarnation = %cfg.incarnation,
                                epoch = image.brokers.get(&cfg.node_id).map_or(-1, |b| b.epoch),
                                "registered as a new incarnation");
                        }
                        let leads_nothing = image
                            .topics
                            .values()
                            .all(|t| t.partitions.iter().all(|p| p.leader != cfg.node_id));
                        if registered && image.version != image_tx.borrow().version {
                            image_tx.send_replace(Arc::new(image));
                        }
                        if fenced != was_fenced {
                            tracing::info!(
                                broker = cfg.node_id,
                                fenced,
                                "broker fencing state changed"
                            );
                            was_fenced = fenced;
                            fenced_tx.send_replace(fenced);
                        }
                        if want_shut_down && fenced && leads_nothing {
                            shut_down_tx.send_replace(Some(true));
                        }
                    } else if want_shut_down {
                        // No controller answered for a whole heartbeat period (the quorum is
                        // gone, e.g. the last nodes of a cluster stopping): nothing can move.
                        tracing::warn!(
                            broker = cfg.node_id,
                            "controlled shutdown: no active controller answers"
                        );
                        shut_down_tx.send_replace(Some(false));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                        _ = shutdown_rx.changed() => {}
                    }
                }
            }));
        }
        Ok(MetadataNode {
            config,
            raft: raft_handle,
            image_rx,
            fenced_rx,
            tasks,
            shutdown_tx,
            shut_down_rx,
        })
    }

    /// Controlled shutdown (Kafka's BrokerHeartbeat `want_shut_down`): the heartbeats ask the
    /// active controller to move this broker's leaderships to other ISR members and take it out
    /// of every ISR; waits until an image shows it leads nothing, at most `timeout` (less when
    /// no controller answers for a heartbeat period). Returns whether that happened in time. Images keep being published meanwhile, so the broker
    /// steps down from its partitions while still serving.
    pub async fn controlled_shutdown(&self, timeout: Duration) -> bool {
        if !self.config.broker {
            return true;
        }
        self.shutdown_tx.send_replace(true);
        let mut rx = self.shut_down_rx.clone();
        let done = tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok_and(|d| *d == Some(true)));
        if done {
            // One more heartbeat period: every other broker then has the image with the new
            // leaders before this one stops answering.
            tokio::time::sleep(self.config.heartbeat_interval).await;
        }
        done
    }

    /// The latest image this broker received.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image_rx.borrow().clone()
    }

    /// A receiver that changes with every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image_rx.clone()
    }

    /// Whether the controller considers this broker fenced.
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced_rx.clone()
    }

    /// Proposes a command through the active controller (topic changes, AlterPartition).
    pub async fn propose(
        &self,
        cmd: Command,
        timeout: Duration,
    ) -> Result<CommandResult, MetadataError> {
        let mut guess = None;
        let mut conns = HashMap::new();
        let deadline = tokio::time::Instant::now().into_std() + timeout;
        match to_active_controller(
            &self.config.voters,
            &mut guess,
            &mut conns,
            &Request::Propose(cmd),
            deadline,
        )
        .await
        {
            Ok(Response::Proposed(r)) => Ok(r),
            Ok(_) | Err(_) => Err(MetadataError::NoController(timeout)),
        }
    }

    /// The active controller as this node's Raft sees it (controllers only).
    pub async fn active_controller(&self) -> Option<NodeId> {
        match &self.raft {
            Some(r) => r.current_leader().await.map(|l| l as NodeId),
            None => None,
        }
    }

    /// Stops every task and the Raft node.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(r) = self.raft {
            let _ = r.shutdown().await;
        }
    }
}
