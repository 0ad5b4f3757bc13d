//! A supervisor for one node's service process: spawn in its own process group (optionally
//! behind a prefix such as `ip netns exec NS`), signal the group, kill or stop it and reap it.
//! Node backends embed one per node.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal as NixSignal};
use nix::unistd::Pid;

use crate::clock;
use crate::error::NodeError;
use crate::node::{ServiceSpec, Signal, StopMode};

/// Supervises the service process of one node.
#[derive(Debug)]
pub struct Supervisor {
    node: String,
    spec: Mutex<Option<ServiceSpec>>,
    child: Mutex<Option<Child>>,
}

fn nix_signal(s: Signal) -> NixSignal {
    match s {
        Signal::Kill => NixSignal::SIGKILL,
        Signal::Term => NixSignal::SIGTERM,
        Signal::Stop => NixSignal::SIGSTOP,
        Signal::Cont => NixSignal::SIGCONT,
    }
}

/// Sends `signal` to the process group led by `pid` (ignores a group that is already gone).
pub fn signal_group(pid: u32, signal: Signal) -> Result<(), nix::Error> {
    let raw = i32::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
    match killpg(Pid::from_raw(raw), nix_signal(signal)) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Supervisor {
    /// A supervisor for node `node` with no service configured.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            spec: Mutex::new(None),
            child: Mutex::new(None),
        }
    }

    fn err(&self, what: impl Into<String>) -> NodeError {
        NodeError::Service {
            node: self.node.clone(),
            what: what.into(),
        }
    }

    /// Sets the service spec (used by every later start).
    pub fn set_spec(&self, spec: ServiceSpec) {
        *lock(&self.spec) = Some(spec);
    }

    /// Starts the service behind `prefix` (e.g. `["ip","netns","exec","jh1-n1"]`), with the
    /// libfaketime environment for `clock_file` when the spec asks for a fake clock.
    pub fn start(&self, prefix: &[String], clock_file: Option<&Path>) -> Result<u32, NodeError> {
        let spec = lock(&self.spec)
            .clone()
            .ok_or_else(|| self.err("no service configured (set_service was never called)"))?;
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                return Err(self.err(format!("service already running (pid {})", c.id())));
            }
        }
        let log = open_log(&self.node, &spec.log_file)?;
        let log2 = log.try_clone().map_err(|source| NodeError::Io {
            node: self.node.clone(),
            path: spec.log_file.clone(),
            source,
        })?;
        let (program, args): (PathBuf, Vec<String>) = match prefix.split_first() {
            Some((first, rest)) => {
                let mut args: Vec<String> = rest.to_vec();
                args.push(spec.program.display().to_string());
                args.extend(spec.args.iter().cloned());
                (PathBuf::from(first), args)
            }
            None => (spec.program.clone(), spec.args.clone()),
        };
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        if spec.fake_clock {
            let file = clock_file.ok_or_else(|| {
                self.err("the service asks for a fake clock but this node has no clock file")
            })?;
            clock::ensure_clock_file(file).map_err(|source| NodeError::Io {
                node: self.node.clone(),
                path: file.to_path_buf(),
                source,
            })?;
            let lib = clock::libfaketime_path().map_err(|e| self.err(e.to_string()))?;
            for (k, v) in clock::faketime_env(&lib, file) {
                cmd.env(k, v);
            }
        }
        let c = cmd.spawn().map_err(|source| NodeError::Spawn {
            node: self.node.clone(),
            command: format!("{} {}", program.display(), args.join(" ")),
            source,
        })?;
        let pid = c.id();
        tracing::debug!(node = %self.node, pid, "service started");
        *child = Some(c);
        Ok(pid)
    }

    /// The pid of the running service (None when never started, stopped or exited).
    pub fn pid(&self) -> Option<u32> {
        let mut child = lock(&self.child);
        let c = child.as_mut()?;
        match c.try_wait() {
            Ok(None) => Some(c.id()),
            _ => None,
        }
    }

    /// Sends `signal` to the service's process group (error when it is not running).
    pub fn signal(&self, signal: Signal) -> Result<(), NodeError> {
        let pid = self
            .pid()
            .ok_or_else(|| self.err(format!("cannot send {signal:?}: service is not running")))?;
        signal_group(pid, signal).map_err(|e| self.err(format!("signal {signal:?}: {e}")))
    }

    /// Stops the service and reaps it; a no-op when it is not running.
    pub fn stop(&self, mode: StopMode) -> Result<(), NodeError> {
        let mut guard = lock(&self.child);
        let Some(mut c) = guard.take() else {
            return Ok(());
        };
        let pid = c.id();
        if let StopMode::Graceful(grace) = mode {
            let _ = signal_group(pid, Signal::Term);
            let _ = signal_group(pid, Signal::Cont);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(c.try_wait(), Ok(None)) {
                    // The leader exited; make sure nothing of its group lingers.
                    let _ = signal_group(pid, Signal::Kill);
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = signal_group(pid, Signal::Kill);
        let _ = c.kill();
        c.wait().map_err(|source| NodeError::Io {
            node: self.node.clone(),
            path: PathBuf::from(format!("/proc/{pid}")),
            source,
        })?;
        Ok(())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.stop(StopMode::Kill);
    }
}

fn open_log(node: &str, path: &Path) -> Result<std::fs::File, NodeError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
                node: node.to_string(),
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| NodeError::Io {
            node: node.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

/// Locks a mutex, recovering the data of a poisoned one (a panicking fault thread must not
/// prevent healing).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
