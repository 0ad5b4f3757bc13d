//! The simulated network: in-memory byte streams between nodes with a seeded latency per
//! write, FIFO per direction (as TCP), refused connections where nothing listens, and cuts
//! between nodes. Bytes written across a cut are held, not lost (TCP retransmits them once the
//! cut heals), so callers see what they see behind a real packet-dropping partition: silence
//! until their own timeouts fire. A connection attempt across a cut waits for the heal.
//!
//! The node a connection comes from is the node whose runtime the world is stepping
//! ([`super::clock::current_node`]); node 0 is the client and nemesis side.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::clock::{current_node, now_ns};

/// One direction of a connection.
#[derive(Debug)]
struct Pipe {
    id: u64,
    src: u32,
    dst: u32,
    /// Chunks written, each with the virtual time it arrives.
    in_flight: VecDeque<(u64, Bytes)>,
    /// Arrived, not yet read.
    ready: VecDeque<Bytes>,
    /// When the writer's close arrives (end of stream).
    eof_at: Option<u64>,
    /// The last arrival time: later writes never overtake earlier ones.
    last_at: u64,
    reader_gone: bool,
    waker: Option<Waker>,
}

impl Pipe {
    fn new(id: u64, src: u32, dst: u32) -> Pipe {
        Pipe {
            id,
            src,
            dst,
            in_flight: VecDeque::new(),
            ready: VecDeque::new(),
            eof_at: None,
            last_at: 0,
            reader_gone: false,
            waker: None,
        }
    }

    /// Moves what has arrived by `now` into `ready` (nothing while the link is cut).
    fn arrive(&mut self, now: u64, cut: bool) {
        if cut {
            return;
        }
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, b)) = self.in_flight.pop_front() {
                self.ready.push_back(b);
            }
        }
    }

    fn at_eof(&self, now: u64, cut: bool) -> bool {
        !cut && self.in_flight.is_empty() && self.eof_at.is_some_and(|t| t <= now)
    }

    /// Whether a parked reader has something to wake for at `now`.
    fn due(&self, now: u64, cut: bool) -> bool {
        !cut && (self.in_flight.front().is_some_and(|(at, _)| *at <= now)
            || self.eof_at.is_some_and(|t| t <= now))
    }
}

type PipeRef = Arc<Mutex<Pipe>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection waiting in a listener's backlog.
type Pending = (SimStream, String);

#[derive(Debug)]
struct Slot {
    node: u32,
    id: u64,
    backlog: VecDeque<Pending>,
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Inner {
    rng: ChaCha8Rng,
    min_latency_ns: u64,
    max_latency_ns: u64,
    listeners: BTreeMap<String, Slot>,
    /// Pipes with bytes or an end of stream in flight (the only ones a tick looks at).
    active: BTreeMap<u64, Weak<Mutex<Pipe>>>,
    next_pipe: u64,
    cuts: BTreeSet<(u32, u32)>,
    next_id: u64,
    connections: u64,
}

/// The network of one simulation.
#[derive(Debug)]
pub struct SimNet {
    inner: Mutex<Inner>,
}

impl SimNet {
    /// A network whose per-write latencies are drawn from `seed` in `[min, max]`.
    pub fn new(seed: u64, min: Duration, max: Duration) -> Arc<SimNet> {
        Arc::new(SimNet {
            inner: Mutex::new(Inner {
                rng: ChaCha8Rng::seed_from_u64(seed),
                min_latency_ns: min.as_nanos() as u64,
                max_latency_ns: max.as_nanos().max(min.as_nanos()) as u64,
                listeners: BTreeMap::new(),
                active: BTreeMap::new(),
                next_pipe: 0,
                cuts: BTreeSet::new(),
                next_id: 0,
                connections: 0,
            }),
        })
    }

    fn latency(inner: &mut Inner) -> u64 {
        inner
            .rng
            .random_range(inner.min_latency_ns..=inner.max_latency_ns)
    }

    fn is_cut(&self, a: u32, b: u32) -> bool {
        let inner = lock(&self.inner);
        inner.cuts.contains(&(a, b))
    }

    /// Cuts every link between a node in `a` and a node in `b` (both ways).
    pub fn cut(&self, a: &[u32], b: &[u32]) {
        let mut inner = lock(&self.inner);
        for x in a {
            for y in b {
                inner.cuts.insert((*x, *y));
                inner.cuts.insert((*y, *x));
            }
        }
    }

    /// Heals every cut.
    pub fn heal(&self) {
        lock(&self.inner).cuts.clear();
    }

    /// Connections opened so far.
    pub fn connections(&self) -> u64 {
        lock(&self.inner).connections
    }

    /// Wakes every reader with bytes or an end of stream due by now; forgets pipes with
    /// nothing left in flight.
    pub fn deliver(&self) {
        let now = now_ns();
        let (active, cuts) = {
            let inner = lock(&self.inner);
            let active: Vec<(u64, Weak<Mutex<Pipe>>)> = inner
                .active
                .iter()
                .map(|(id, w)| (*id, w.clone()))
                .collect();
            (active, inner.cuts.clone())
        };
        let mut idle = Vec::new();
        for (id, w) in active {
            let Some(p) = w.upgrade() else {
                idle.push(id);
                continue;
            };
            let waker = {
                let mut p = lock(&p);
                let cut = cuts.contains(&(p.src, p.dst));
                let waker = if p.waker.is_some() && p.due(now, cut) {
                    p.waker.take()
                } else {
                    None
                };
                if p.in_flight.is_empty() && p.eof_at.is_none_or(|t| t <= now) {
                    idle.push(id);
                }
                waker
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
        if !idle.is_empty() {
            let mut inner = lock(&self.inner);
            for id in idle {
                inner.active.remove(&id);
            }
        }
    }

    fn pipe(&self, src: u32, dst: u32) -> PipeRef {
        let mut inner = lock(&self.inner);
        inner.next_pipe += 1;
        Arc::new(Mutex::new(Pipe::new(inner.next_pipe, src, dst)))
    }

    /// Marks `pipe` as having something in flight.
    fn activate(&self, pipe: &PipeRef, id: u64) {
        lock(&self.inner).active.insert(id, Arc::downgrade(pipe));
    }

    /// Opens a connection from the current node to `addr`.
    pub async fn open(self: &Arc<Self>, addr: &str) -> io::Result<SimStream> {
        let src = current_node();
        let lat = Duration::from_nanos(Self::latency(&mut lock(&self.inner)));
        tokio::time::sleep(lat).await;
        loop {
            let dst = {
                let inner = lock(&self.inner);
                match inner.listeners.get(addr) {
                    Some(slot) => slot.node,
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("{addr}: connection refused (simulated)"),
                        ))
                    }
                }
            };
            if !self.is_cut(src, dst) {
                break;
            }
            // SYNs dropped: wait for the heal (the caller's timeout decides).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let inner = lock(&self.inner);
        let Some(slot) = inner.listeners.get(addr) else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{addr}: connection refused (simulated)"),
            ));
        };
        let dst = slot.node;
        drop(inner);
        let up = self.pipe(src, dst);
        let down = self.pipe(dst, src);
        let net = self.clone();
        let client = SimStream {
            read: SimRead {
                pipe: down.clone(),
                net: net.clone(),
            },
            write: SimWrite {
                pipe: up.clone(),
                net: net.clone(),
            },
        };
        let server = SimStream {
            read: SimRead {
                pipe: up,
                net: net.clone(),
            },
            write: SimWrite { pipe: down, net },
        };
        let mut inner = lock(&self.inner);
        inner.connections += 1;
        let waker = match inner.listeners.get_mut(addr) {
            Some(slot) => {
                slot.backlog.push_back((server, format!("node{src}")));
                slot.waker.take()
            }
            None => None,
        };
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(client)
    }

    /// Listens on `addr` for the current node.
    pub fn listen(self: &Arc<Self>, addr: &str) -> io::Result<SimListener> {
        let node = current_node();
        let mut inner = lock(&self.inner);
        if inner.listeners.contains_key(addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr}: address in use (simulated)"),
            ));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.listeners.insert(
            addr.to_string(),
            Slot {
                node,
                id,
                backlog: VecDeque::new(),
                waker: None,
            },
        );
        Ok(SimListener {
            net: self.clone(),
            addr: addr.to_string(),
            id,
        })
    }

    fn poll_accept(&self, addr: &str, id: u64, cx: &mut Context<'_>) -> Poll<io::Result<Pending>> {
        let mut inner = lock(&self.inner);
        match inner.listeners.get_mut(addr) {
            Some(slot) if slot.id == id => match slot.backlog.pop_front() {
                Some(c) => Poll::Ready(Ok(c)),
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            },
            _ => Poll::Ready(Err(io::Error::other("listener closed"))),
        }
    }

    fn send(&self, pipe: &PipeRef, buf: &[u8]) -> io::Result<()> {
        let lat = Self::latency(&mut lock(&self.inner));
        let mut p = lock(pipe);
        if p.reader_gone {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection reset (simulated)",
            ));
        }
        let at = (now_ns() + lat).max(p.last_at);
        p.last_at = at;
        p.in_flight.push_back((at, Bytes::copy_from_slice(buf)));
        let id = p.id;
        drop(p);
        self.activate(pipe, id);
        Ok(())
    }

    fn close(&self, pipe: &PipeRef) {
        let lat = Self::latency(&mut lock(&self.inner));
        let mut p = lock(pipe);
        if p.eof_at.is_none() {
            let at = (now_ns() + lat).max(p.last_at);
            p.eof_at = Some(at);
            let id = p.id;
            drop(p);
            self.activate(pipe, id);
        }
    }
}

/// A listener of the simulated network.
#[derive(Debug)]
pub struct SimListener {
    net: Arc<SimNet>,
    addr: String,
    id: u64,
}

impl SimListener {
    /// The next connection.
    pub async fn accept(&mut self) -> io::Result<(SimStream, String)> {
        std::future::poll_fn(|cx| self.net.poll_accept(&self.addr, self.id, cx)).await
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let removed = {
            let mut inner = lock(&self.net.inner);
            if inner
                .listeners
                .get(&self.addr)
                .is_some_and(|s| s.id == self.id)
            {
                inner.listeners.remove(&self.addr)
            } else {
                None
            }
        };
        // Connections still in the backlog close here, outside the network's lock (closing
        // takes it).
        drop(removed);
    }
}

/// The read half of a simulated connection.
#[derive(Debug)]
pub struct SimRead {
    pipe: PipeRef,
    net: Arc<SimNet>,
}

/// The write half of a simulated connection.
#[derive(Debug)]
pub struct SimWrite {
    pipe: PipeRef,
    net: Arc<SimNet>,
}

/// A simulated connection.
#[derive(Debug)]
pub struct SimStream {
    read: SimRead,
    write: SimWrite,
}

impl SimStream {
    /// Its two halves.
    pub fn split(self) -> (SimRead, SimWrite) {
        (self.read, self.write)
    }
}

impl AsyncRead for SimRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let now = now_ns();
        let (src, dst) = {
            let p = lock(&self.pipe);
            (p.src, p.dst)
        };
        let cut = self.net.is_cut(src, dst);
        let mut p = lock(&self.pipe);
        p.arrive(now, cut);
        let mut copied = false;
        while buf.remaining() > 0 {
            let Some(front) = p.ready.front_mut() else {
                break;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            copied = true;
            if front.is_empty() {
                p.ready.pop_front();
            }
        }
        if copied || p.at_eof(now, cut) {
            return Poll::Ready(Ok(()));
        }
        p.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimRead {
    fn drop(&mut self) {
        let mut p = lock(&self.pipe);
        p.reader_gone = true;
        p.in_flight.clear();
        p.ready.clear();
    }
}

impl AsyncWrite for SimWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.net.send(&self.pipe, buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.net.close(&self.pipe);
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimWrite {
    fn drop(&mut self) {
        self.net.close(&self.pipe);
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

/// The broker's view of this network (its `transport` seam).
#[derive(Debug, Clone)]
pub struct BrokerTransport(pub Arc<SimNet>);

impl broker::transport::Transport for BrokerTransport {
    fn connect(
        &self,
        addr: &str,
    ) -> broker::transport::BoxFuture<'static, io::Result<broker::transport::BoxStream>> {
        let net = self.0.clone();
        let addr = addr.to_string();
        Box::pin(async move {
            let s = net.open(&addr).await?;
            Ok(Box::new(s) as broker::transport::BoxStream)
        })
    }

    fn bind(
        &self,
        addr: &str,
    ) -> broker::transport::BoxFuture<'static, io::Result<Box<dyn broker::transport::Listener>>>
    {
        let r = self.0.listen(addr);
        Box::pin(async move { Ok(Box::new(r?) as Box<dyn broker::transport::Listener>) })
    }
}

impl broker::transport::Listener for SimListener {
    fn accept(
        &mut self,
    ) -> broker::transport::BoxFuture<'_, io::Result<(broker::transport::BoxStream, String)>> {
        Box::pin(async move {
            let (s, peer) = SimListener::accept(self).await?;
            Ok((Box::new(s) as broker::transport::BoxStream, peer))
        })
    }
}

/// The client's view of this network (its connector seam).
#[derive(Debug, Clone)]
pub struct ClientConnector(pub Arc<SimNet>);

impl client::conn::Connector for ClientConnector {
    fn connect(&self, addr: &str) -> client::conn::ConnectFuture {
        let net = self.0.clone();
        let addr = addr.to_string();
        Box::pin(async move {
            let (r, w) = net.open(&addr).await?.split();
            Ok((
                Box::new(r) as client::conn::ReadHalf,
                Box::new(w) as client::conn::WriteHalf,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn run<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(f)
    }

    #[test]
    fn bytes_arrive_in_order_cuts_hold_them_and_a_closed_listener_refuses() {
        let net = SimNet::new(1, Duration::from_micros(500), Duration::from_millis(2));
        super::super::clock::set_now_ns(0);
        run(async {
            let mut l = net.listen("10.0.0.1:9092").expect("listen");
            let mut c = net.open("10.0.0.1:9092").await.expect("connect");
            let (mut s, _) = l.accept().await.expect("accept");
            c.write_all(b"one").await.expect("write");
            c.write_all(b"two").await.expect("write");
            // Nothing arrives before the world's clock moves past the latency.
            super::super::clock::set_now_ns(5_000_000);
            let mut buf = [0u8; 6];
            s.read_exact(&mut buf).await.expect("read");
            assert_eq!(&buf, b"onetwo");
            // Across a cut bytes are held until the heal.
            net.cut(&[0], &[0]);
            c.write_all(b"x").await.expect("write");
            super::super::clock::set_now_ns(10_000_000);
            let mut one = [0u8; 1];
            let held =
                tokio::time::timeout(Duration::from_millis(50), s.read_exact(&mut one)).await;
            assert!(held.is_err(), "a byte crossed a cut");
            net.heal();
            s.read_exact(&mut one).await.expect("read after heal");
            assert_eq!(&one, b"x");
            // A listener dropped with a connection in its backlog (a killed node) closes it.
            let _pending = net.open("10.0.0.1:9092").await.expect("connect");
            drop(l);
            let refused = net.open("10.0.0.1:9092").await;
            assert_eq!(
                refused.map(|_| ()).map_err(|e| e.kind()),
                Err(io::ErrorKind::ConnectionRefused)
            );
        });
    }
}
