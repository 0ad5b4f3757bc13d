//! One pipelined Kafka connection: length-prefixed framing, request headers and correlation
//! ids, many requests in flight (responses are matched by correlation id), a per-request
//! timeout, and ApiVersions negotiation at connect time.
//!
//! Every failure is a [`ConnError`] that says whether the request may have reached the broker:
//! `NotSent` only when no byte of it was handed to the socket.
//!
//! Connections are opened through a seam: TCP by default, or a [`Connector`] a simulation
//! thread installs with [`set_thread_connector`] (the in-memory network of `harness sim`);
//! record timestamps read [`wall_clock_ms`], which such a thread points at virtual time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::error::ConnError;

/// Largest response frame accepted.
const MAX_RESPONSE: usize = 256 << 20;

/// The API version ranges this client can speak (matching what the bundled broker serves).
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 9),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::JoinGroup, 1, 5),
    (ApiKey::SyncGroup, 1, 3),
    (ApiKey::Heartbeat, 1, 3),
    (ApiKey::LeaveGroup, 1, 2),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 5),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
];

/// The read half of a connection's byte stream.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection's byte stream.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
/// What a [`Connector`] returns.
pub type ConnectFuture =
    Pin<Box<dyn Future<Output = std::io::Result<(ReadHalf, WriteHalf)>> + Send>>;

/// Opens byte streams to brokers in place of TCP (a simulator's network).
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Connects to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> ConnectFuture;
}

thread_local! {
    static CONNECTOR: RefCell<Option<Arc<dyn Connector>>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) the calling thread's connector; threads without one
/// connect over TCP. Only a simulation thread installs one.
pub fn set_thread_connector(c: Option<Arc<dyn Connector>>) {
    CONNECTOR.with(|cell| *cell.borrow_mut() = c);
}

thread_local! {
    static WALL_CLOCK: std::cell::Cell<Option<fn() -> i64>> = const { std::cell::Cell::new(None) };
}

/// Installs (or with `None` removes) the calling thread's wall clock for record timestamps (a
/// simulator's virtual time); threads without one read the system clock.
pub fn set_thread_wall_clock(clock: Option<fn() -> i64>) {
    WALL_CLOCK.with(|c| c.set(clock));
}

/// Milliseconds since the Unix epoch for record timestamps: the thread's wall clock if one is
/// installed, else the system clock (the client's only wall-clock read).
pub fn wall_clock_ms() -> i64 {
    if let Some(clock) = WALL_CLOCK.with(std::cell::Cell::get) {
        return clock();
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens a stream to `addr`: through the thread's connector, else TCP with `TCP_NODELAY`.
async fn open_stream(addr: &str) -> std::io::Result<(ReadHalf, WriteHalf)> {
    let connector = CONNECTOR.with(|cell| cell.borrow().clone());
    if let Some(c) = connector {
        return c.connect(addr).await;
    }
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    Ok((Box::new(r), Box::new(w)))
}

type Waiter = oneshot::Sender<Result<Bytes, ConnError>>;

#[derive(Default)]
struct Pending {
    waiters: HashMap<i32, Waiter>,
    /// Set once the connection is unusable; the reason.
    closed: Option<String>,
}

struct Shared {
    pending: Mutex<Pending>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection closed and fails every waiter with `Lost`.
    fn close(&self, reason: &str) {
        let waiters = {
            let mut p = self.lock();
            if p.closed.is_none() {
                p.closed = Some(reason.to_string());
            }
            std::mem::take(&mut p.waiters)
        };
        for (_, w) in waiters {
            let _ = w.send(Err(ConnError::Lost(reason.to_string())));
        }
    }
}

struct Writer {
    half: WriteHalf,
    next_corr: i32,
}

/// A connection to one broker. Cheap to share behind an `Arc`; requests from many tasks are
/// pipelined on it.
pub struct Connection {
    addr: String,
    client_id: String,
    writer: tokio::sync::Mutex<Writer>,
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
    versions: HashMap<i16, (i16, i16)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.shared.close("connection dropped");
    }
}

async fn read_loop(mut half: ReadHalf, shared: Arc<Shared>) {
    let reason = loop {
        let mut len = [0u8; 4];
        if let Err(e) = half.read_exact(&mut len).await {
            break format!("read: {e}");
        }
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > MAX_RESPONSE {
            break format!("response frame of {len} bytes refused");
        }
        let mut buf = vec![0u8; len as usize];
        if let Err(e) = half.read_exact(&mut buf).await {
            break format!("read: {e}");
        }
        let corr = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let waiter = shared.lock().waiters.remove(&corr);
        match waiter {
            Some(w) => {
                let _ = w.send(Ok(Bytes::from(buf)));
            }
            // A response to a request whose caller gave up (timeout): dropped.
            None => tracing::debug!(corr, "response without a waiter"),
        }
    };
    shared.close(&reason);
}

fn encode_frame<R: Request>(
    version: i16,
    corr: i32,
    client_id: &str,
    req: &R,
) -> Result<BytesMut, ConnError> {
    let mut h = RequestHeader::default();
    h.request_api_key = R::KEY;
    h.request_api_version = version;
    h.correlation_id = corr;
    h.client_id = Some(StrBytes::from_string(client_id.to_string()));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    h.encode(&mut frame, R::header_version(version))
        .map_err(|e| ConnError::NotSent(format!("encode header: {e}")))?;
    req.encode(&mut frame, version)
        .map_err(|e| ConnError::NotSent(format!("encode request: {e}")))?;
    let len = (frame.len() - 4) as i32;
    frame[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

impl Connection {
    /// Connects to `addr` and negotiates API versions. Every failure here is `NotSent`
    /// (ApiVersions has no effect on the broker).
    pub async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Connection, ConnError> {
        Self::connect_with(addr, client_id, connect_timeout, request_timeout, 3).await
    }

    /// Like [`Connection::connect`], opening with ApiVersions at `first_version`. A broker that
    /// does not speak it answers (KIP-511) with a v0 body carrying `UNSUPPORTED_VERSION` and
    /// its own ranges, which are then used.
    pub async fn connect_with(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        first_version: i16,
    ) -> Result<Connection, ConnError> {
        let (r, w) = match tokio::time::timeout(connect_timeout, open_stream(addr)).await {
            Err(_) => return Err(ConnError::NotSent(format!("connect {addr}: timed out"))),
            Ok(Err(e)) => return Err(ConnError::NotSent(format!("connect {addr}: {e}"))),
            Ok(Ok(halves)) => halves,
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
        });
        let reader = tokio::spawn(read_loop(r, shared.clone()));
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            writer: tokio::sync::Mutex::new(Writer {
                half: w,
                next_corr: 0,
            }),
            shared,
            reader,
            versions: HashMap::new(),
        };
        let as_not_sent = |e: ConnError| match e {
            ConnError::NotSent(m) => ConnError::NotSent(m),
            other => ConnError::NotSent(format!("ApiVersions with {addr}: {other}")),
        };
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("jepsen-kafka-client");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut body = conn
            .call_body(first_version, &req, request_timeout)
            .await
            .map_err(as_not_sent)?;
        let unsupported = kafka_protocol::error::ResponseError::UnsupportedVersion.code();
        let code = if body.len() >= 2 {
            i16::from_be_bytes([body[0], body[1]])
        } else {
            -1
        };
        let decode_version = if code == unsupported {
            0
        } else {
            first_version
        };
        let resp = ApiVersionsResponse::decode(&mut body, decode_version)
            .map_err(|e| ConnError::NotSent(format!("ApiVersions with {addr}: decode: {e}")))?;
        // An UNSUPPORTED_VERSION answer that lists the broker's ranges is usable.
        let usable_error = resp.error_code == unsupported && !resp.api_keys.is_empty();
        if resp.error_code != 0 && !usable_error {
            return Err(ConnError::NotSent(format!(
                "ApiVersions with {addr}: error code {}",
                resp.error_code
            )));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The broker address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some() || self.reader.is_finished()
    }

    /// Closes the connection; requests in flight fail with `Lost`.
    pub fn close(&self, reason: &str) {
        self.reader.abort();
        self.shared.close(reason);
    }

    /// The highest version of `key` both this client and the broker support.
    pub fn version(&self, key: ApiKey) -> Option<i16> {
        let &(_, lo, hi) = CLIENT_VERSIONS.iter().find(|(k, _, _)| *k == key)?;
        let &(blo, bhi) = self.versions.get(&(key as i16))?;
        let v = hi.min(bhi);
        (v >= lo.max(blo)).then_some(v)
    }

    /// Writes one request; registers a waiter first when a response is expected.
    async fn write<R: Request>(
        &self,
        version: i16,
        req: &R,
        expect_response: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(i32, oneshot::Receiver<Result<Bytes, ConnError>>)>, ConnError> {
        // Waiting for our turn to write: nothing of this request is on the socket yet.
        let Ok(mut w) = tokio::time::timeout_at(deadline, self.writer.lock()).await else {
            return Err(ConnError::NotSent(format!(
                "timed out waiting to write to {}",
                self.addr
            )));
        };
        w.next_corr = w.next_corr.wrapping_add(1);
        let corr = w.next_corr;
        let frame = encode_frame(version, corr, &self.client_id, req)?;
        // The closed check and the waiter's registration happen under one lock, so a reader
        // that fails concurrently either sees the waiter (and fails it) or we see `closed`.
        let rx = {
            let mut p = self.shared.lock();
            if let Some(reason) = &p.closed {
                return Err(ConnError::NotSent(format!(
                    "connection to {} closed: {reason}",
                    self.addr
                )));
            }
            if expect_response {
                let (tx, rx) = oneshot::channel();
                p.waiters.insert(corr, tx);
                Some((corr, rx))
            } else {
                None
            }
        };
        match tokio::time::timeout_at(deadline, w.half.write_all(&frame)).await {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(e)) => {
                drop(w);
                let reason = format!("write to {}: {e}", self.addr);
                self.close(&reason);
                // Some bytes may have left: the broker may have the whole request.
                Err(ConnError::Lost(reason))
            }
            Err(_) => {
                // A full socket buffer (a stalled broker): part of the frame may be out, so
                // the stream is no longer framed; close it.
                drop(w);
                self.close("write timed out");
                Err(ConnError::TimedOut)
            }
        }
    }

    /// Sends a request and waits for its response, all within `timeout` (waiting to write,
    /// writing, and waiting for the answer). On timeout after writing began the connection is
    /// closed (as the Java client does), so a late response cannot be mistaken for another.
    pub async fn call<R: Request>(
        &self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, ConnError> {
        let mut buf = self.call_body(version, req, timeout).await?;
        let resp = R::Response::decode(&mut buf, version)
            .map_err(|e| ConnError::Protocol(format!("decode api {} v{version}: {e}", R::KEY)))?;
        if buf.has_remaining() {
            tracing::debug!(
                key = R::KEY,
                version,
                left = buf.remaining(),
                "trailing response bytes"
            );
        }
        Ok(resp)
    }

    /// Like [`Connection::call`], returning the undecoded response body (after the header).
    async fn call_body<R: Request>(
        &self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<Bytes, ConnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some((corr, rx)) = self.write(version, req, true, deadline).await? else {
            return Err(ConnError::Protocol("no waiter".into()));
        };
        let mut buf = match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => {
                self.shared.lock().waiters.remove(&corr);
                self.close("request timed out");
                return Err(ConnError::TimedOut);
            }
            Ok(Err(_)) => return Err(ConnError::Lost("connection closed".into())),
            Ok(Ok(r)) => r?,
        };
        let key = ApiKey::try_from(R::KEY)
            .map_err(|_| ConnError::Protocol(format!("unknown api key {}", R::KEY)))?;
        // ApiVersions responses always use header v0 (so clients can read an error answer).
        let hv = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut buf, hv)
            .map_err(|e| ConnError::Protocol(format!("response header: {e}")))?;
        if header.correlation_id != corr {
            return Err(ConnError::Protocol("correlation id mismatch".into()));
        }
        Ok(buf)
    }

    /// Sends a request that gets no response (Produce with acks=0). `Ok` means it was written.
    /// Writing is bounded by `timeout`.
    pub async fn send_only<R: Request>(
        &self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.write(version, req, false, deadline).await.map(|_| ())
    }
}
