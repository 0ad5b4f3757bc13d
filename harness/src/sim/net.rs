//! The simulated network: in-memory byte streams between nodes with a seeded latency per
//! write, FIFO per direction (as TCP), refused connections where nothing listens, and cuts
//! between nodes. Bytes written across a cut are held, not lost (TCP retransmits them once the
//! cut heals), so callers see what they see behind a real packet-dropping partition: silence
//! until their own timeouts fire. A connection attempt across a cut waits for the heal.
//!
//! The node a connection comes from is the node whose runtime the world is stepping
//! ([`super::clock::current_node`]); node 0 is the client and nemesis side.
//!
//! Links can also be degraded without being cut ([`SimNet::set_link_fault`]): packet loss,
//! modelled as TCP experiences it (a lost segment is retransmitted after a retransmission
//! timeout, and everything behind it on that connection waits: loss is delay, never missing
//! bytes), and extra latency. Every draw comes from the network's seeded generator, and only
//! for writes across a degraded link, so runs without link faults draw exactly as before.

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

/// A degraded link: what [`SimNet::set_link_fault`] puts on the writes from one node to
/// another (a connection's two directions are two links).
///
/// How it is modelled, per write (one segment as far as the model goes) and per connection
/// attempt across the link:
///
/// - **Extra latency**: a uniform draw from `extra_latency_ms` (inclusive; `(lo, hi)` with
///   `lo > hi` is read as `(hi, lo)`) added to the usual 0.5–2.5 ms.
/// - **Loss**: each transmission of a write is lost with probability `loss` (clamped to
///   `0.0..=1.0`). TCP retransmits a lost data segment after its retransmission timeout: 200 ms
///   (Linux's minimum RTO) for the first retransmission, doubling each time up to 120 s, plus
///   a seeded jitter of up to a quarter of the timeout (ack timing, the timer's granularity).
///   The write arrives after the sum of the timeouts of its lost transmissions; every later
///   write on the connection waits behind it (in-order delivery), as behind a real
///   retransmission. After 15 lost transmissions (Linux's `tcp_retries2`) a real kernel would
///   abort the connection; here the bytes arrive after the summed timeouts (over 15 simulated
///   minutes), which within a run is a connection that never recovers. Use [`SimNet::cut`]
///   for a link that drops everything.
/// - **Connection attempts** across a lossy link (either direction lossy): the SYN or the
///   SYN-ACK is lost with probability `1 - (1 - p_ab)(1 - p_ba)` per attempt, and the attempt
///   is repeated after 1 s, doubling (Linux's initial SYN timeout); a connection also pays the
///   extra latency of both directions once (the handshake's round trip).
/// - An end of stream (FIN) pays the extra latency and waits behind the data as data does.
///
/// Loss never resets a connection and never drops bytes: a TCP stream cannot lose data in the
/// middle without the connection failing, so the only honest effects are delay and, at the
/// extreme, a connection that stalls until the caller's own timeout fires.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkFault {
    /// Probability that one transmission of a write is lost (0.0 to 1.0).
    pub loss: f64,
    /// Extra one-way latency in ms, drawn uniformly from this inclusive range per write.
    pub extra_latency_ms: (u64, u64),
}

/// Linux's minimum retransmission timeout for data.
const RTO_MIN_NS: u64 = 200_000_000;
/// Linux's maximum retransmission timeout.
const RTO_MAX_NS: u64 = 120_000_000_000;
/// Retransmissions of a data segment before Linux gives up (`tcp_retries2`).
const MAX_RETRIES: u32 = 15;
/// Linux's initial SYN retransmission timeout.
const SYN_RTO_NS: u64 = 1_000_000_000;
/// SYN retransmissions before a connect fails (`tcp_syn_retries`).
const SYN_RETRIES: u32 = 6;

impl LinkFault {
    fn loss(&self) -> f64 {
        if self.loss.is_nan() {
            0.0
        } else {
            self.loss.clamp(0.0, 1.0)
        }
    }

    fn latency_range_ns(&self) -> (u64, u64) {
        let (a, b) = self.extra_latency_ms;
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        (lo.saturating_mul(1_000_000), hi.saturating_mul(1_000_000))
    }

    /// The delay this fault adds to one write (extra latency plus retransmission timeouts).
    fn write_delay(&self, rng: &mut ChaCha8Rng) -> u64 {
        let (lo, hi) = self.latency_range_ns();
        let mut delay = if hi > 0 { rng.random_range(lo..=hi) } else { 0 };
        let p = self.loss();
        if p > 0.0 {
            let mut rto = RTO_MIN_NS;
            for _ in 0..MAX_RETRIES {
                if !rng.random_bool(p) {
                    break;
                }
                delay = delay.saturating_add(rto + rng.random_range(0..=rto / 4));
                rto = (rto * 2).min(RTO_MAX_NS);
            }
        }
        delay
    }
}

#[derive(Debug)]
struct Inner {
    rng: ChaCha8Rng,
    /// Degraded links, by (from, to).
    faults: BTreeMap<(u32, u32), LinkFault>,
    min_latency_ns: u64,
    max_latency_ns: u64,
    listeners: BTreeMap<String, Slot>,
    /// Pipes with bytes or an end of stream in flight (the only ones a tick looks at).
    active: BTreeMap<u64, Weak<Mutex<Pipe>>>,
    /// No active pipe has anything arriving before this time (0: look at them all): ticks
    /// before it skip [`SimNet::deliver`]'s walk.
    next_due: u64,
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
                faults: BTreeMap::new(),
                min_latency_ns: min.as_nanos() as u64,
                max_latency_ns: max.as_nanos().max(min.as_nanos()) as u64,
                listeners: BTreeMap::new(),
                active: BTreeMap::new(),
                next_due: u64::MAX,
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

    /// The one-way delay of a write from `src` to `dst`: the base latency, plus what a link
    /// fault adds (drawn only when the link has one).
    fn write_latency(inner: &mut Inner, src: u32, dst: u32) -> u64 {
        let base = Self::latency(inner);
        match inner.faults.get(&(src, dst)).copied() {
            Some(f) => base.saturating_add(f.write_delay(&mut inner.rng)),
            None => base,
        }
    }

    /// What link faults add to a connection attempt from `src` to `dst`: SYN retransmissions
    /// and the handshake's extra round trip (nothing, and no draw, without a fault).
    fn connect_delay(inner: &mut Inner, src: u32, dst: u32) -> u64 {
        let there = inner.faults.get(&(src, dst)).copied();
        let back = inner.faults.get(&(dst, src)).copied();
        if there.is_none() && back.is_none() {
            return 0;
        }
        let mut delay = 0u64;
        for f in [there, back].into_iter().flatten() {
            let (lo, hi) = f.latency_range_ns();
            if hi > 0 {
                delay = delay.saturating_add(inner.rng.random_range(lo..=hi));
            }
        }
        let ok = there.map_or(1.0, |f| 1.0 - f.loss()) * back.map_or(1.0, |f| 1.0 - f.loss());
        let lost = (1.0 - ok).clamp(0.0, 1.0);
        if lost > 0.0 {
            let mut rto = SYN_RTO_NS;
            for _ in 0..SYN_RETRIES {
                if !inner.rng.random_bool(lost) {
                    break;
                }
                delay = delay.saturating_add(rto);
                rto = rto.saturating_mul(2);
            }
        }
        delay
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

    /// Heals every cut (link faults stay: see [`SimNet::clear_link_faults`]).
    pub fn heal(&self) {
        let mut inner = lock(&self.inner);
        inner.cuts.clear();
        // Bytes held at the cut are due now.
        inner.next_due = 0;
    }

    /// Degrades the link between nodes `a` and `b` in both directions (see [`LinkFault`] for
    /// the model), replacing what either direction had. Node 0 is the client side (every
    /// client), brokers are `1..=n`. Writes already in flight keep their arrival times; the
    /// fault applies to writes and connection attempts from now on. Deterministic: the draws
    /// come from the network's seeded generator.
    ///
    /// From the nemesis: `world.net.set_link_fault(1, 2, LinkFault { loss: 0.2,
    /// extra_latency_ms: (5, 50) })`, healed by `world.net.clear_link_faults()`.
    pub fn set_link_fault(&self, a: u32, b: u32, fault: LinkFault) {
        let mut inner = lock(&self.inner);
        inner.faults.insert((a, b), fault);
        inner.faults.insert((b, a), fault);
    }

    /// Degrades only the writes from node `from` to node `to` (the other direction keeps
    /// what it has): e.g. a leader whose outgoing replies are lossy while it hears fine.
    pub fn set_directed_link_fault(&self, from: u32, to: u32, fault: LinkFault) {
        lock(&self.inner).faults.insert((from, to), fault);
    }

    /// Heals the link between `a` and `b` in both directions.
    pub fn clear_link_fault(&self, a: u32, b: u32) {
        let mut inner = lock(&self.inner);
        inner.faults.remove(&(a, b));
        inner.faults.remove(&(b, a));
    }

    /// Heals every link fault (cuts stay: see [`SimNet::heal`]). Writes already delayed by a
    /// fault keep their arrival times, as retransmissions already scheduled do.
    pub fn clear_link_faults(&self) {
        lock(&self.inner).faults.clear();
    }

    /// The fault on writes from `from` to `to`, if any.
    pub fn link_fault(&self, from: u32, to: u32) -> Option<LinkFault> {
        lock(&self.inner).faults.get(&(from, to)).copied()
    }

    /// A power loss of node `node` (after its runtime was dropped): what it wrote that is
    /// still queued on its own host is lost. Bytes due within the base latency bound are on
    /// the wire and still arrive; anything due later is waiting in the host's send queue
    /// (a link fault's extra latency, as netem's egress queue holds it, or retransmissions of
    /// lost segments, which only the sender keeps) and dies with the host. Each of its
    /// connections then ends where its kept bytes end, as the reader sees a connection reset
    /// (a power loss sends no FIN; the reset the peer eventually gets is modelled as an end
    /// of stream by then). A kill -9 of the process alone keeps the kernel's queues: use
    /// this only for a whole-host crash. Returns the bytes lost.
    pub fn power_loss(&self, node: u32) -> u64 {
        let now = now_ns();
        let (pipes, cutoff) = {
            let inner = lock(&self.inner);
            let pipes: Vec<PipeRef> = inner.active.values().filter_map(Weak::upgrade).collect();
            (pipes, now.saturating_add(inner.max_latency_ns))
        };
        let mut lost = 0u64;
        let mut due = u64::MAX;
        for pipe in pipes {
            let mut p = lock(&pipe);
            if p.src != node {
                continue;
            }
            while p.in_flight.back().is_some_and(|(at, _)| *at > cutoff) {
                if let Some((_, b)) = p.in_flight.pop_back() {
                    lost += b.len() as u64;
                }
            }
            let end = p.in_flight.back().map_or(now, |(at, _)| *at).max(now);
            p.last_at = p.last_at.min(cutoff).max(end);
            p.eof_at = Some(p.eof_at.map_or(cutoff, |t| t.min(cutoff)).max(end));
            due = due.min(p.eof_at.unwrap_or(cutoff));
        }
        let mut inner = lock(&self.inner);
        inner.next_due = inner.next_due.min(due);
        lost
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
            let mut inner = lock(&self.inner);
            if now < inner.next_due {
                return;
            }
            // Recomputed below from what stays in flight.
            inner.next_due = u64::MAX;
            let active: Vec<(u64, Weak<Mutex<Pipe>>)> = inner
                .active
                .iter()
                .map(|(id, w)| (*id, w.clone()))
                .collect();
            (active, inner.cuts.clone())
        };
        let mut idle = Vec::new();
        let mut next_due = u64::MAX;
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
                // The next arrival after now. What is due already either woke its reader or
                // waits for a reader that will take it when it next reads, or for the heal of
                // a cut (which makes every pipe due again).
                if let Some(at) = p.in_flight.iter().map(|(at, _)| *at).find(|at| *at > now) {
                    next_due = next_due.min(at);
                }
                if let Some(at) = p.eof_at.filter(|at| *at > now) {
                    next_due = next_due.min(at);
                }
                waker
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
        let mut inner = lock(&self.inner);
        inner.next_due = inner.next_due.min(next_due);
        for id in idle {
            inner.active.remove(&id);
        }
    }

    fn pipe(&self, src: u32, dst: u32) -> PipeRef {
        let mut inner = lock(&self.inner);
        inner.next_pipe += 1;
        Arc::new(Mutex::new(Pipe::new(inner.next_pipe, src, dst)))
    }

    /// Marks `pipe` as having something in flight, arriving at `at`.
    fn activate(&self, pipe: &PipeRef, id: u64, at: u64) {
        let mut inner = lock(&self.inner);
        inner.active.insert(id, Arc::downgrade(pipe));
        inner.next_due = inner.next_due.min(at);
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
                // A degraded link: the handshake's retransmissions and extra round trip.
                let extra = Self::connect_delay(&mut lock(&self.inner), src, dst);
                if extra > 0 {
                    tokio::time::sleep(Duration::from_nanos(extra)).await;
                }
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
        let (src, dst) = {
            let p = lock(pipe);
            (p.src, p.dst)
        };
        let lat = Self::write_latency(&mut lock(&self.inner), src, dst);
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
        self.activate(pipe, id, at);
        Ok(())
    }

    fn close(&self, pipe: &PipeRef) {
        let (src, dst) = {
            let p = lock(pipe);
            (p.src, p.dst)
        };
        let lat = {
            let mut inner = lock(&self.inner);
            let base = Self::latency(&mut inner);
            // A FIN pays a link fault's extra latency; its loss is not modelled (it would be
            // retransmitted like data, and only the reader's end of stream waits on it).
            match inner
                .faults
                .get(&(src, dst))
                .map(LinkFault::latency_range_ns)
            {
                Some((lo, hi)) if hi > 0 => base + inner.rng.random_range(lo..=hi),
                _ => base,
            }
        };
        let mut p = lock(pipe);
        if p.eof_at.is_none() {
            let at = (now_ns() + lat).max(p.last_at);
            p.eof_at = Some(at);
            let id = p.id;
            drop(p);
            self.activate(pipe, id, at);
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

    #[test]
    fn a_power_loss_drops_what_is_queued_on_the_host_and_keeps_what_is_on_the_wire() {
        use super::super::clock::{set_current_node, set_now_ns};
        let net = SimNet::new(3, Duration::from_micros(500), Duration::from_millis(2));
        set_now_ns(0);
        run(async {
            set_current_node(1);
            let mut l = net.listen("10.0.0.1:9092").expect("listen");
            set_current_node(0);
            let mut c = net.open("10.0.0.1:9092").await.expect("connect");
            set_current_node(1);
            let (mut s, _) = l.accept().await.expect("accept");
            // Node 1 answers over a fast link, then over a slow one (1 s of extra latency).
            s.write_all(b"fast").await.expect("write");
            net.set_link_fault(0, 1, fault(0.0, 1_000, 1_000));
            s.write_all(b"slow").await.expect("write");
            // Node 0's own bytes to node 1 are not node 1's to lose.
            set_current_node(0);
            c.write_all(b"ask").await.expect("write");
            // Node 1's host dies: its runtime (and the stream) goes, then its queues.
            drop(s);
            assert_eq!(
                net.power_loss(1),
                4,
                "only the slow reply was still on the host"
            );
            assert_eq!(net.power_loss(1), 0, "nothing is lost twice");
            // The fast reply arrives, then the stream ends where it ends.
            set_now_ns(3_000_000);
            net.deliver();
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_millis(10), c.read_to_end(&mut got));
            read.await.expect("the stream ends").expect("read");
            assert_eq!(got, b"fast");
        });
        set_current_node(0);
    }

    /// Gap between the test's writes: longer than any delay but a retransmitted one.
    const GAP: u64 = 100_000_000;

    /// Arrival times (ns after `t0`) of `n` one-byte writes from node 0 to node 1, the i-th
    /// made at `t0 + i * GAP`, and of as many replies from node 1 to node 0 made beside them,
    /// on a fresh connection of `net`.
    fn arrivals(net: &Arc<SimNet>, n: usize) -> (Vec<u64>, Vec<u64>) {
        let (up, down, _) = arrivals_and_connect(net, n);
        (up, down)
    }

    /// [`arrivals`] and the virtual time the connection took.
    fn arrivals_and_connect(net: &Arc<SimNet>, n: usize) -> (Vec<u64>, Vec<u64>, Duration) {
        use super::super::clock::{set_current_node, set_now_ns};
        run(async {
            set_current_node(1);
            let mut l = net.listen("10.0.0.1:9092").expect("listen");
            set_current_node(0);
            let started = tokio::time::Instant::now();
            let mut c = net.open("10.0.0.1:9092").await.expect("connect");
            let connect = started.elapsed();
            let (mut s, _) = l.accept().await.expect("accept");
            let t0 = now_ns();
            for i in 0..n as u64 {
                set_now_ns(t0 + i * GAP);
                c.write_all(b"x").await.expect("write");
                s.write_all(b"y").await.expect("write");
            }
            set_now_ns(t0);
            let times = |p: &PipeRef| -> Vec<u64> {
                lock(p).in_flight.iter().map(|(at, _)| at - t0).collect()
            };
            (times(&c.write.pipe), times(&s.write.pipe), connect)
        })
    }

    /// Each write's delay: its arrival less the time it was written.
    fn delays(times: &[u64]) -> Vec<u64> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| t - i as u64 * GAP)
            .collect()
    }

    fn fault(loss: f64, lo: u64, hi: u64) -> LinkFault {
        LinkFault {
            loss,
            extra_latency_ms: (lo, hi),
        }
    }

    #[test]
    fn link_faults_delay_writes_in_order_deterministically_and_heal() {
        super::super::clock::set_now_ns(0);
        let new = || SimNet::new(9, Duration::from_micros(500), Duration::from_micros(2_500));
        let base = arrivals(&new(), 200);
        let fast = |d: &[u64]| delays(d).iter().all(|t| *t <= 2_500_000);
        assert!(fast(&base.0) && fast(&base.1), "{base:?}");

        // A fault on a link no write crosses changes nothing, not even the draws.
        let other = new();
        other.set_link_fault(2, 3, fault(0.5, 5, 9));
        assert_eq!(arrivals(&other, 200), base);

        // Extra latency only, one direction: requests are late by 10-20 ms, replies are not.
        let slow = new();
        slow.set_directed_link_fault(0, 1, fault(0.0, 20, 10));
        let (up, down) = arrivals(&slow, 200);
        let up = delays(&up);
        assert!(
            up.iter().all(|t| (10_500_000..=22_500_000).contains(t)),
            "{up:?}"
        );
        assert!(fast(&down), "{down:?}");

        // Loss both ways: some writes wait for a retransmission (at least 200 ms), nothing is
        // reordered, most arrive at once; the same seed gives the same times.
        let lossy = || {
            let net = new();
            net.set_link_fault(1, 0, fault(0.3, 0, 0));
            net
        };
        let (up, down) = arrivals(&lossy(), 200);
        for dir in [&up, &down] {
            assert!(dir.windows(2).all(|w| w[0] <= w[1]), "reordered: {dir:?}");
            let d = delays(dir);
            assert!(
                d.iter().any(|t| *t >= RTO_MIN_NS),
                "no retransmission: {d:?}"
            );
            assert!(d.iter().any(|t| *t <= 2_500_000), "every write late: {d:?}");
        }
        assert_eq!(arrivals(&lossy(), 200), (up, down));

        // Healed: new connections are back to the base latency.
        let healed = lossy();
        healed.clear_link_faults();
        assert_eq!(healed.link_fault(0, 1), None);
        let (up, down) = arrivals(&healed, 50);
        assert!(fast(&up) && fast(&down));
    }

    #[test]
    fn a_lossy_link_delays_connections_and_an_extreme_one_still_delivers() {
        super::super::clock::set_now_ns(0);
        let net = SimNet::new(3, Duration::from_micros(500), Duration::from_micros(2_500));
        net.set_link_fault(0, 1, fault(1.0, 0, 0));
        assert_eq!(net.link_fault(1, 0).map(|f| f.loss), Some(1.0));
        // Every SYN lost: the attempt waits out all of its retransmissions (1+2+...+32 s) in
        // virtual time, then connects (the model never drops a connection).
        let (up, _, connect) = arrivals_and_connect(&net, 1);
        let syn_floor: u64 = (0..SYN_RETRIES).map(|k| SYN_RTO_NS << k).sum();
        assert!(connect >= Duration::from_nanos(syn_floor), "{connect:?}");
        // Every transmission lost: the write arrives after 15 doubling timeouts.
        let floor: u64 = (0..MAX_RETRIES)
            .map(|k| (RTO_MIN_NS << k).min(RTO_MAX_NS))
            .sum();
        assert!(up[0] >= floor, "{up:?}");
        net.clear_link_fault(1, 0);
        assert_eq!(net.link_fault(0, 1), None);
    }
}
