//! The simulated world: every broker runs on its own current-thread tokio runtime with paused
//! time, and the client workload on one more; all of them on the one simulation thread. The
//! world advances virtual time one tick at a time and runs each runtime up to the new time in
//! node order (tokio fires the runtime's timers in between in deadline order), so everything
//! that happens is ordered by the seed alone. Killing a node drops its runtime (every task of
//! the process ends, its connections close) and cuts its segment files back to what was
//! fsynced; restarting builds a new runtime over the same data directory. A paused node's
//! runtime is not run; on resume it catches up at once, as a SIGCONT'd process sees every
//! timer expired.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::runtime::Runtime;

use super::clock::{now_ns, set_current_node, set_now_ns, SimClock};
use super::disk::SimDisk;
use super::net::SimNet;

/// A current-thread runtime with paused (virtual) time.
pub fn new_runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("building a simulated node's runtime")
}

/// One broker node.
#[derive(Debug)]
pub struct Node {
    /// Node id (1-based, as `node.id`).
    pub id: u32,
    /// Its broker properties.
    pub props: Vec<(String, String)>,
    /// Its data directory (segments, checkpoints, Raft log).
    pub dir: PathBuf,
    /// Bug modes it runs with.
    pub bugs: Vec<String>,
    /// Its clock (offset by the clock nemesis).
    pub clock: SimClock,
    rt: Option<Runtime>,
    rt_ns: u64,
    /// Stopped (SIGSTOP): not run until resumed.
    pub paused: bool,
    /// Times started.
    pub starts: u32,
    /// Where a broker that stops (fails to open, or its listener ends) says why.
    stopped: Arc<std::sync::Mutex<Vec<(u32, String)>>>,
}

impl Node {
    /// A node that has not started yet.
    pub fn new(
        id: u32,
        props: Vec<(String, String)>,
        dir: PathBuf,
        bugs: Vec<String>,
        stopped: Arc<std::sync::Mutex<Vec<(u32, String)>>>,
    ) -> Node {
        Node {
            id,
            props,
            dir,
            bugs,
            clock: SimClock::default(),
            rt: None,
            rt_ns: 0,
            paused: false,
            starts: 0,
            stopped,
        }
    }

    /// Whether the broker process exists (started and not killed).
    pub fn alive(&self) -> bool {
        self.rt.is_some()
    }

    /// Starts the broker process: a fresh runtime whose first task opens the broker over the
    /// data directory and serves its listener.
    pub fn start(&mut self) -> Result<()> {
        if self.rt.is_some() {
            return Ok(());
        }
        let rt = new_runtime()?;
        let props = self.props.clone();
        let clock: Arc<dyn broker::clock::Clock> = Arc::new(self.clock.clone());
        let bugs = self.bugs.clone();
        let id = self.id;
        let stopped = self.stopped.clone();
        rt.spawn(async move {
            let why = match serve_broker(props, clock, bugs).await {
                Err(e) => format!("{e:#}"),
                Ok(()) => "its Kafka listener ended".to_string(),
            };
            tracing::warn!(node = id, error = %why, "simulated broker stopped");
            stopped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, why));
        });
        self.rt = Some(rt);
        self.rt_ns = now_ns();
        self.paused = false;
        self.starts += 1;
        Ok(())
    }

    /// Kills the process: its runtime and every task in it are dropped.
    pub fn kill(&mut self) {
        set_current_node(self.id);
        if let Some(rt) = self.rt.take() {
            drop(rt);
        }
        set_current_node(0);
        self.paused = false;
    }

    /// Runs the node's runtime up to the current virtual time.
    pub fn run_to_now(&mut self) {
        if self.paused {
            return;
        }
        let now = now_ns();
        let Some(rt) = &self.rt else { return };
        if now > self.rt_ns {
            set_current_node(self.id);
            let d = Duration::from_nanos(now - self.rt_ns);
            rt.block_on(async move { tokio::time::sleep(d).await });
            set_current_node(0);
            self.rt_ns = now;
        }
    }
}

/// Opens a broker as `broker::main` does and serves its Kafka listener until the runtime ends.
async fn serve_broker(
    props: Vec<(String, String)>,
    clock: Arc<dyn broker::clock::Clock>,
    bugs: Vec<String>,
) -> Result<()> {
    let config = broker::config::BrokerConfig::from_pairs(props).context("broker config")?;
    let mut rb = broker::replication::ReplicationBugs::none();
    for b in &bugs {
        rb.enable(b).context("bug mode")?;
    }
    let addr = config
        .listeners
        .first()
        .map(|l| l.bind_addr())
        .context("no listener")?;
    let broker = broker::server::Broker::open(config, clock, rb)
        .await
        .context("opening the broker")?;
    let listener = broker::transport::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let _background = broker.spawn_background();
    broker::server::net::serve(broker, listener).await;
    Ok(())
}

/// Every node, the client side's runtime, the network and the disk.
#[derive(Debug)]
pub struct World {
    /// Broker nodes, in id order.
    pub nodes: Vec<Node>,
    /// The client workload's runtime (node 0).
    pub control: Runtime,
    control_ns: u64,
    /// The network.
    pub net: Arc<SimNet>,
    /// The disk's page cache.
    pub disk: Arc<SimDisk>,
    /// One step of virtual time.
    pub tick: Duration,
    /// Zombie-consumer requests: the nemesis asks, the simulated workers take them.
    pub stalls: Arc<workloads::stall::ConsumerStalls>,
}

impl World {
    /// A world of `nodes` (not started) at virtual time zero.
    pub fn new(
        nodes: Vec<Node>,
        net: Arc<SimNet>,
        disk: Arc<SimDisk>,
        tick: Duration,
    ) -> Result<World> {
        set_now_ns(0);
        Ok(World {
            nodes,
            control: new_runtime()?,
            control_ns: 0,
            net,
            disk,
            tick,
            stalls: Arc::default(),
        })
    }

    /// Advances virtual time by one tick: arrivals are woken, then each broker's runtime and
    /// the client side's run up to the new time, in that order.
    pub fn step(&mut self) {
        set_now_ns(now_ns() + self.tick.as_nanos() as u64);
        self.net.deliver();
        for n in &mut self.nodes {
            n.run_to_now();
        }
        let now = now_ns();
        if now > self.control_ns {
            set_current_node(0);
            let d = Duration::from_nanos(now - self.control_ns);
            self.control
                .block_on(async move { tokio::time::sleep(d).await });
            self.control_ns = now;
        }
    }

    /// Brokers that stopped by themselves since the last call (the process exited: its runtime
    /// is dropped, its page cache kept), with why.
    pub fn take_stopped(&mut self) -> Vec<(u32, String)> {
        let stopped: Vec<(u32, String)> = match self.nodes.first() {
            Some(n) => std::mem::take(&mut *n.stopped.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        };
        for (id, _) in &stopped {
            if let Some(n) = self.node(*id) {
                n.kill();
            }
        }
        stopped
    }

    /// The node with `id`.
    pub fn node(&mut self, id: u32) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// Kills node `id` and cuts its files back to what was fsynced; returns what was lost.
    pub fn kill(&mut self, id: u32) -> Vec<(String, u64)> {
        let disk = self.disk.clone();
        match self.node(id) {
            Some(n) => {
                n.kill();
                disk.crash(&n.dir)
            }
            None => Vec::new(),
        }
    }

    /// Sets node `id`'s wall-clock offset.
    pub fn set_clock_offset(&mut self, id: u32, offset_ms: i64) {
        if let Some(n) = self.node(id) {
            n.clock.offset_ms.store(offset_ms, Ordering::Relaxed);
        }
    }

    /// Ends every runtime (brokers first), at the end of a simulation.
    pub fn shutdown(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}
