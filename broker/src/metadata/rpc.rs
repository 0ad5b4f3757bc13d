//! The controller RPC: length-prefixed JSON frames over TCP on the controller listener, carrying
//! Raft's messages between controllers (openraft's `RaftNetwork`) and brokers' requests to the
//! active controller (heartbeats, topic changes, AlterPartition).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::transport::{self, BoxStream};

use super::image::{Command, CommandResult, MetadataImage, NodeId};
use super::TypeConfig;

/// Largest frame accepted on the controller port.
pub const MAX_FRAME: usize = 64 << 20;

/// A request on the controller port.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft AppendEntries.
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft Vote.
    Vote(VoteRequest<u64>),
    /// Raft InstallSnapshot.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A broker's heartbeat (registers it when needed); answered with the current image.
    Heartbeat {
        /// Broker id.
        id: NodeId,
        /// Advertised Kafka host.
        host: String,
        /// Advertised Kafka port.
        port: u16,
        /// The broker process's incarnation id.
        #[serde(default)]
        incarnation: String,
        /// Controlled shutdown asked for (Kafka's `want_shut_down`).
        #[serde(default)]
        want_shut_down: bool,
        /// KIP-966 `PreviousBrokerEpoch`: the broker epoch the previous process wrote in its
        /// clean-shutdown file (`None`: it did not shut down cleanly).
        #[serde(default)]
        previous_broker_epoch: Option<i64>,
    },
    /// A metadata change (CreateTopic, DeleteTopic, AlterPartition, FenceBroker on shutdown).
    Propose(Command),
}

/// A response on the controller port.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Raft AppendEntries answer.
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// Raft Vote answer.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// Raft InstallSnapshot answer.
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// Heartbeat answer: whether the broker is fenced, and the image.
    Heartbeat {
        /// Fenced brokers must not lead.
        fenced: bool,
        /// The controller's image.
        image: MetadataImage,
    },
    /// The proposal's result.
    Proposed(CommandResult),
    /// This node is not the active controller; try `leader` if known.
    NotController {
        /// The active controller, if known.
        leader: Option<NodeId>,
    },
    /// The request failed on the controller.
    Failed(String),
}

/// Writes one frame.
pub async fn write_frame<T: Serialize, S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    msg: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    s.write_all(&frame).await
}

/// Reads one frame (bounded by [`MAX_FRAME`]).
pub async fn read_frame<T: DeserializeOwned, S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "controller frame of {len} bytes refused"
        )));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

/// One request/response exchange on a fresh or kept connection.
pub async fn call(
    conn: &mut Option<BoxStream>,
    addr: &str,
    req: &Request,
    timeout: Duration,
) -> std::io::Result<Response> {
    let fut = async {
        if conn.is_none() {
            *conn = Some(transport::connect(addr).await?);
        }
        let s = conn
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no connection"))?;
        write_frame(s, req).await?;
        read_frame(s).await
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            *conn = None;
            Err(e)
        }
        Err(_) => {
            *conn = None;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{addr} timed out"),
            ))
        }
    }
}

/// openraft's network factory: one [`PeerClient`] per target controller.
#[derive(Debug, Clone, Default)]
pub struct Network;

/// A connection to one peer controller.
#[derive(Debug)]
pub struct PeerClient {
    target: u64,
    addr: String,
    conn: Option<BoxStream>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            conn: None,
        }
    }
}

impl PeerClient {
    async fn send<E: std::error::Error>(
        &mut self,
        req: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<u64, BasicNode, E>> {
        let timeout = option.hard_ttl().max(Duration::from_millis(100));
        call(&mut self.conn, &self.addr, &req, timeout)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            })
    }

    fn unexpected<E: std::error::Error>(r: Response) -> RPCError<u64, BasicNode, E> {
        let e = std::io::Error::other(format!("unexpected controller response {r:?}"));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.send(Request::Append(rpc), &option).await? {
            Response::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self.send(Request::Snapshot(rpc), &option).await? {
            Response::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.send(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(other)),
        }
    }
}
