//! Test support: real `broker` processes (single node and 3-node clusters) on loopback ports,
//! started from the binary built by `cargo build -p broker` in the same target dir.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker binary: `$BROKER_BIN`, else `broker` beside this test's `deps/` folder.
pub fn broker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BROKER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("broker"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} missing: build it first with `cargo build -p broker` (same CARGO_TARGET_DIR)",
        bin.display()
    );
    bin
}

#[path = "../../../broker/tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

/// One broker process.
pub struct Broker {
    pub node_id: i32,
    pub port: u16,
    pub dir: PathBuf,
    props: Vec<(String, String)>,
    child: Option<Child>,
}

impl Broker {
    fn spawn(&mut self) {
        let metrics = free_port();
        let mut text = format!(
            "node.id={}\nlisteners=PLAINTEXT://127.0.0.1:{}\nlog.dirs={}\nmetrics.listener=http://127.0.0.1:{}\n",
            self.node_id,
            self.port,
            self.dir.join("data").display(),
            metrics
        );
        for (k, v) in &self.props {
            text.push_str(&format!("{k}={v}\n"));
        }
        let cfg = self.dir.join("server.properties");
        std::fs::write(&cfg, text).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("log file");
        let mut cmd = Command::new(broker_bin());
        cmd.arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log);
        // The broker dies with the thread that started it, even if the test panics.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("spawn broker"));
    }

    /// Waits until the Kafka port accepts connections.
    pub fn wait_port(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not start; see {}",
                self.dir.join("broker.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a signal (`STOP`, `CONT`, ...). After `STOP` it waits (up to 2 s) until the
    /// process is really stopped, so nothing the test sends next can still be served.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
            if sig == "STOP" {
                let stat = format!("/proc/{}/stat", c.id());
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while std::time::Instant::now() < deadline {
                    // The state is the field after the parenthesised command name.
                    let stopped = std::fs::read_to_string(&stat).ok().is_some_and(|t| {
                        t.rsplit_once(')')
                            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                    });
                    if stopped {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills (if running) and starts again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_port();
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A single broker (a cluster of one) in `dir`.
pub fn single(dir: &Path) -> Broker {
    let mut b = Broker {
        node_id: 1,
        port: free_port(),
        dir: dir.to_path_buf(),
        props: Vec::new(),
        child: None,
    };
    b.spawn();
    b.wait_port();
    b
}

/// An `n`-node cluster, every node broker and controller.
pub fn cluster(dir: &Path, n: i32) -> Vec<Broker> {
    let ctrl: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let voters: Vec<String> = (0..n)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, ctrl[i as usize]))
        .collect();
    let voters = voters.join(",");
    let mut nodes = Vec::new();
    for i in 0..n {
        let ndir = dir.join(format!("n{}", i + 1));
        std::fs::create_dir_all(&ndir).expect("node dir");
        let mut b = Broker {
            node_id: i + 1,
            port: free_port(),
            dir: ndir,
            props: vec![
                ("controller.quorum.voters".into(), voters.clone()),
                ("broker.heartbeat.interval.ms".into(), "200".into()),
                ("broker.session.timeout.ms".into(), "2000".into()),
                ("replica.lag.time.max.ms".into(), "2000".into()),
            ],
            child: None,
        };
        b.spawn();
        nodes.push(b);
    }
    for b in &nodes {
        b.wait_port();
    }
    nodes
}

/// `host:port` of every node.
pub fn bootstrap(nodes: &[Broker]) -> Vec<String> {
    nodes.iter().map(|b| b.addr()).collect()
}
