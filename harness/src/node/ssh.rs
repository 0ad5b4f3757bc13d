//! The `ssh` backend: real machines reached over SSH, as Jepsen's control node does. One
//! `ssh2` session per node with public-key authentication and strict host-key checking
//! (against a known_hosts file or pinned `SHA256:` fingerprints; an unknown or changed key is
//! an error, never accepted). The broker binary is uploaded over SFTP (debug info stripped),
//! `server.properties` written the same way, and the broker started as a daemon (`setsid`, output
//! to its log, a pid file); kill, pause and stop are signals to its process group by pid. Fault
//! commands (`nft`) run over the session, through `sudo -n` when the user is not root. At the
//! end [`SshCluster::collect`] brings each node's log, config and data dir back into the run
//! store.
//!
//! Remote layout, per node: `<remote-dir>/<node>/bin/<program>`, `<remote-dir>/<node>/broker.pid`
//! and the data dir `<remote-dir>/<node>/data` (wiped when a run connects; a broker left running
//! by a killed harness is killed then, found by its pid file).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nemesis::disk::DiskControl;
use nemesis::net::probe_netem;
use nemesis::{
    Capabilities, CommandOutput, FaultKind, Node, NodeError, ServiceSpec, Signal, StopMode,
};
use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

/// How host keys are verified; there is no "accept anything" mode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyCheck {
    /// An OpenSSH known_hosts file (hashed host names are fine).
    KnownHosts(PathBuf),
    /// A host is accepted when its key's fingerprint (`SHA256:<base64>`, as `ssh-keygen -lf`
    /// prints it) is one of these.
    Fingerprints(Vec<String>),
}

/// Settings of an ssh cluster.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SshOptions {
    /// One `host` or `host:port` per node, in node order.
    pub hosts: Vec<String>,
    /// Remote user (commands go through `sudo -n` unless it is root).
    pub user: String,
    /// Private key file for public-key authentication.
    pub private_key: PathBuf,
    /// Host-key verification.
    pub host_keys: HostKeyCheck,
    /// Absolute remote directory under which each node gets `<node>/`.
    pub remote_dir: PathBuf,
    /// TCP connect and handshake timeout.
    pub connect_timeout: Duration,
}

/// Errors reaching and authenticating to a host, each naming it and saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host name did not resolve.
    #[error("ssh: cannot resolve host `{host}` ({reason}); check ssh.hosts")]
    Resolve {
        /// The host as given.
        host: String,
        /// Why.
        reason: String,
    },
    /// The TCP connection failed.
    #[error(
        "ssh: cannot reach {host}:{port} within {timeout:?} ({source}); check that the host is up, \
         sshd listens on that address and port and no firewall drops the connection"
    )]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Timeout used.
        timeout: Duration,
        /// The socket error.
        source: std::io::Error,
    },
    /// The SSH handshake failed.
    #[error(
        "ssh: handshake with {host}:{port} failed ({reason}); is an SSH server listening there?"
    )]
    Handshake {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// libssh2's message.
        reason: String,
    },
    /// The host's key is not known: never accepted silently.
    #[error(
        "ssh: host key of {host}:{port} ({fingerprint}) is not in {known_hosts}; verify it out of \
         band, then add it (`ssh-keyscan -p {port} {host} >> {known_hosts}`) or pin it in ssh.fingerprints"
    )]
    UnknownHostKey {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The key's SHA256 fingerprint.
        fingerprint: String,
        /// The known_hosts file checked.
        known_hosts: String,
    },
    /// The host's key differs from the recorded one.
    #[error(
        "ssh: host key of {host}:{port} ({fingerprint}) does NOT match the one in {source_name} \
         (a reinstalled host or a man in the middle); verify the host, then fix that entry"
    )]
    HostKeyMismatch {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The key's SHA256 fingerprint.
        fingerprint: String,
        /// The known_hosts file or "ssh.fingerprints".
        source_name: String,
    },
    /// Public-key authentication was refused.
    #[error(
        "ssh: {user}@{host}:{port} refused the key {key} ({reason}); add its public key to that \
         user's authorized_keys or fix ssh.user / ssh.private-key"
    )]
    Auth {
        /// User.
        user: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Key file.
        key: String,
        /// libssh2's message.
        reason: String,
    },
    /// Reading the known_hosts file failed.
    #[error("ssh: cannot read known_hosts file {path} ({reason}); fix ssh.known-hosts")]
    KnownHostsFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Any other libssh2 failure on an established session.
    #[error("ssh: {host}: {what}: {reason}")]
    Session {
        /// Host.
        host: String,
        /// What was being done.
        what: String,
        /// libssh2's message.
        reason: String,
    },
}

impl From<SshError> for NodeError {
    fn from(e: SshError) -> Self {
        NodeError::Setup(e.to_string())
    }
}

/// Standard base64 without padding, as OpenSSH prints fingerprints.
fn base64_nopad(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn quote_path(p: &Path) -> String {
    shell_quote(&p.display().to_string())
}

/// Splits `host` or `host:port` (or `[v6]:port`).
fn split_host(spec: &str) -> (String, u16) {
    if let Some(rest) = spec.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            if let Ok(port) = p.parse() {
                return (h.to_string(), port);
            }
        }
        return (rest.trim_end_matches(']').to_string(), 22);
    }
    match spec.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), port),
            Err(_) => (spec.to_string(), 22),
        },
        _ => (spec.to_string(), 22),
    }
}

/// An authenticated session to one host.
struct Connection {
    session: Session,
    local: IpAddr,
}

/// Connects, verifies the host key, authenticates.
fn connect(
    host: &str,
    port: u16,
    addr: SocketAddr,
    opts: &SshOptions,
) -> Result<Connection, SshError> {
    let tcp = TcpStream::connect_timeout(&addr, opts.connect_timeout).map_err(|source| {
        SshError::Connect {
            host: host.to_string(),
            port,
            timeout: opts.connect_timeout,
            source,
        }
    })?;
    let local = tcp
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let handshake = |reason: String| SshError::Handshake {
        host: host.to_string(),
        port,
        reason,
    };
    let mut session = Session::new().map_err(|e| handshake(e.to_string()))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(u32::try_from(opts.connect_timeout.as_millis()).unwrap_or(u32::MAX));
    session.handshake().map_err(|e| handshake(e.to_string()))?;
    verify_host_key(&session, host, port, opts)?;
    session
        .userauth_pubkey_file(&opts.user, None, &opts.private_key, None)
        .map_err(|e| SshError::Auth {
            user: opts.user.clone(),
            host: host.to_string(),
            port,
            key: opts.private_key.display().to_string(),
            reason: e.message().to_string(),
        })?;
    if !session.authenticated() {
        return Err(SshError::Auth {
            user: opts.user.clone(),
            host: host.to_string(),
            port,
            key: opts.private_key.display().to_string(),
            reason: "not authenticated".into(),
        });
    }
    // Long enough for a graceful stop (the nemesis waits 10 s) to finish remotely.
    session.set_timeout(60_000);
    session.set_keepalive(true, 10);
    Ok(Connection { session, local })
}

/// The `SHA256:...` fingerprint of the session's host key.
fn fingerprint(session: &Session) -> Option<String> {
    session
        .host_key_hash(HashType::Sha256)
        .map(|h| format!("SHA256:{}", base64_nopad(h)))
}

fn verify_host_key(
    session: &Session,
    host: &str,
    port: u16,
    opts: &SshOptions,
) -> Result<(), SshError> {
    let session_err = |what: &str, reason: String| SshError::Session {
        host: host.to_string(),
        what: what.to_string(),
        reason,
    };
    let fp = fingerprint(session)
        .ok_or_else(|| session_err("host key", "the server sent no host key".into()))?;
    match &opts.host_keys {
        HostKeyCheck::Fingerprints(pinned) => {
            if pinned.iter().any(|p| p.trim() == fp) {
                Ok(())
            } else {
                Err(SshError::HostKeyMismatch {
                    host: host.to_string(),
                    port,
                    fingerprint: fp,
                    source_name: "ssh.fingerprints".into(),
                })
            }
        }
        HostKeyCheck::KnownHosts(path) => {
            let (key, _) = session
                .host_key()
                .ok_or_else(|| session_err("host key", "the server sent no host key".into()))?;
            let mut kh = session
                .known_hosts()
                .map_err(|e| session_err("known_hosts", e.to_string()))?;
            if !path.is_file() {
                return Err(SshError::KnownHostsFile {
                    path: path.display().to_string(),
                    reason: "no such file".into(),
                });
            }
            kh.read_file(path, KnownHostFileKind::OpenSSH)
                .map_err(|e| SshError::KnownHostsFile {
                    path: path.display().to_string(),
                    reason: e.message().to_string(),
                })?;
            match kh.check_port(host, port, key) {
                CheckResult::Match => Ok(()),
                CheckResult::Mismatch => Err(SshError::HostKeyMismatch {
                    host: host.to_string(),
                    port,
                    fingerprint: fp,
                    source_name: path.display().to_string(),
                }),
                CheckResult::NotFound | CheckResult::Failure => Err(SshError::UnknownHostKey {
                    host: host.to_string(),
                    port,
                    fingerprint: fp,
                    known_hosts: path.display().to_string(),
                }),
            }
        }
    }
}

/// Shell function testing whether pid `$p` is alive and not a zombie.
const ALIVE_FN: &str = "alive() { s=$(cat /proc/$p/stat 2>/dev/null) || return 1; s=${s##*) }; [ \"${s%% *}\" != Z ]; }";

fn signal_name(s: Signal) -> &'static str {
    match s {
        Signal::Kill => "KILL",
        Signal::Term => "TERM",
        Signal::Stop => "STOP",
        Signal::Cont => "CONT",
    }
}

/// One ssh node.
pub struct SshNode {
    name: String,
    host: String,
    port: u16,
    addr: SocketAddr,
    conn: Mutex<Option<Connection>>,
    local: IpAddr,
    opts: Arc<SshOptions>,
    dir: PathBuf,
    spec: Mutex<Option<ServiceSpec>>,
    pid: Mutex<Option<u32>>,
    /// Local program path -> its remote copy.
    uploaded: Mutex<HashMap<PathBuf, PathBuf>>,
    /// Local program path -> the stripped copy to upload (shared by the cluster's nodes).
    stripped: Arc<Mutex<HashMap<PathBuf, PathBuf>>>,
    work: PathBuf,
    capabilities: Capabilities,
}

impl std::fmt::Debug for SshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshNode")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SshNode {
    /// The host as given in the spec (without the port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The node's remote directory.
    pub fn remote_dir(&self) -> &Path {
        &self.dir
    }

    fn service_err(&self, what: impl Into<String>) -> NodeError {
        NodeError::Service {
            node: self.name.clone(),
            what: format!("{} ({}:{})", what.into(), self.host, self.port),
        }
    }

    fn ssh_err(&self, what: &str, e: impl std::fmt::Display) -> NodeError {
        NodeError::Service {
            node: self.name.clone(),
            what: format!("ssh {}:{}: {what}: {e}", self.host, self.port),
        }
    }

    /// Wraps a shell script for the remote login shell, through `sudo -n` for non-root users.
    fn wrap(&self, script: &str) -> String {
        let sh = format!("sh -c {}", shell_quote(script));
        if self.opts.user == "root" {
            sh
        } else {
            format!("sudo -n {sh}")
        }
    }

    /// Opens an exec channel running `command`, reconnecting once if the session broke.
    fn open_channel(
        &self,
        guard: &mut MutexGuard<'_, Option<Connection>>,
        command: &str,
    ) -> Result<ssh2::Channel, NodeError> {
        for attempt in 0..2 {
            if guard.is_none() {
                let c = connect(&self.host, self.port, self.addr, &self.opts)?;
                **guard = Some(c);
            }
            let Some(conn) = guard.as_ref() else {
                continue;
            };
            match conn.session.channel_session() {
                Ok(mut ch) => {
                    ch.exec(command).map_err(|e| self.ssh_err("exec", e))?;
                    return Ok(ch);
                }
                Err(e) if attempt == 0 => {
                    tracing::warn!(node = %self.name, error = %e, "ssh session broken; reconnecting");
                    **guard = None;
                }
                Err(e) => return Err(self.ssh_err("opening a channel", e)),
            }
        }
        Err(self.ssh_err("opening a channel", "no session"))
    }

    /// Runs a shell script remotely; returns its exit code, stdout and stderr.
    fn run_script(&self, script: &str) -> Result<CommandOutput, NodeError> {
        let command = self.wrap(script);
        let mut guard = lock(&self.conn);
        let mut ch = self.open_channel(&mut guard, &command)?;
        let mut stdout = Vec::new();
        ch.read_to_end(&mut stdout)
            .map_err(|e| self.ssh_err("reading stdout", e))?;
        let mut stderr = Vec::new();
        ch.stderr()
            .read_to_end(&mut stderr)
            .map_err(|e| self.ssh_err("reading stderr", e))?;
        ch.wait_close()
            .map_err(|e| self.ssh_err("closing the channel", e))?;
        let code = ch.exit_status().ok();
        Ok(CommandOutput {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    fn run_script_ok(&self, script: &str, what: &str) -> Result<CommandOutput, NodeError> {
        let out = self.run_script(script)?;
        if out.success() {
            Ok(out)
        } else {
            Err(NodeError::CommandFailed {
                node: self.name.clone(),
                command: format!("{what} on {}:{}", self.host, self.port),
                status: format!("{:?}", out.code),
                stderr: out.stderr.trim().replace('\n', " / "),
            })
        }
    }

    /// Writes `contents` to the remote `path` (mode `mode`) over SFTP, creating its directory.
    pub fn put_file(
        &self,
        path: &Path,
        contents: &mut dyn Read,
        mode: i32,
    ) -> Result<(), NodeError> {
        if let Some(dir) = path.parent() {
            self.run_script_ok(&format!("mkdir -p {}", quote_path(dir)), "mkdir")?;
        }
        let mut guard = lock(&self.conn);
        if guard.is_none() {
            *guard = Some(connect(&self.host, self.port, self.addr, &self.opts)?);
        }
        let Some(conn) = guard.as_ref() else {
            return Err(self.ssh_err("sftp", "no session"));
        };
        let sftp = conn
            .session
            .sftp()
            .map_err(|e| self.ssh_err("starting sftp", e))?;
        let tmp = path.with_extension("upload");
        let mut file = sftp
            .open_mode(
                &tmp,
                ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                mode,
                ssh2::OpenType::File,
            )
            .map_err(|e| self.ssh_err(&format!("creating {}", tmp.display()), e))?;
        std::io::copy(contents, &mut file)
            .map_err(|e| self.ssh_err(&format!("writing {}", tmp.display()), e))?;
        file.flush()
            .map_err(|e| self.ssh_err(&format!("writing {}", tmp.display()), e))?;
        drop(file);
        let _ = sftp.unlink(path);
        sftp.rename(&tmp, path, None)
            .map_err(|e| self.ssh_err(&format!("renaming into {}", path.display()), e))?;
        Ok(())
    }

    /// The remote copy of local `program`, uploading it (debug info stripped) the first time.
    fn remote_program(&self, program: &Path) -> Result<PathBuf, NodeError> {
        // A command line for the host's own shell (command systems): run the remote shell,
        // nothing to upload.
        if program == Path::new("/bin/sh") {
            return Ok(program.to_path_buf());
        }
        if let Some(p) = lock(&self.uploaded).get(program) {
            return Ok(p.clone());
        }
        let file_name = program
            .file_name()
            .ok_or_else(|| self.service_err(format!("{} is not a file", program.display())))?;
        let source = {
            let mut cache = lock(&self.stripped);
            match cache.get(program) {
                Some(p) => p.clone(),
                None => {
                    let p = strip_copy(program, &self.work).map_err(|e| {
                        self.service_err(format!("preparing {}: {e}", program.display()))
                    })?;
                    cache.insert(program.to_path_buf(), p.clone());
                    p
                }
            }
        };
        let remote = self.dir.join("bin").join(file_name);
        let mut f = std::fs::File::open(&source).map_err(|source_err| NodeError::Io {
            node: self.name.clone(),
            path: source.clone(),
            source: source_err,
        })?;
        let started = std::time::Instant::now();
        self.put_file(&remote, &mut f, 0o755)?;
        tracing::info!(node = %self.name, host = %self.host, file = %remote.display(), elapsed = ?started.elapsed(), "uploaded");
        lock(&self.uploaded).insert(program.to_path_buf(), remote.clone());
        Ok(remote)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("broker.pid")
    }

    /// Streams a remote dir of this node as a tar into `local` (created), which receives the
    /// dir's contents; `excludes` are paths inside it (`./bin`) left out.
    pub fn fetch_dir(
        &self,
        remote: &Path,
        excludes: &[&str],
        local: &Path,
    ) -> Result<(), NodeError> {
        std::fs::create_dir_all(local).map_err(|source| NodeError::Io {
            node: self.name.clone(),
            path: local.to_path_buf(),
            source,
        })?;
        let excludes: String = excludes
            .iter()
            .map(|e| format!(" --exclude={}", shell_quote(e)))
            .collect();
        let script = format!("tar -C {}{excludes} -cf - .", quote_path(remote));
        let command = self.wrap(&script);
        let mut guard = lock(&self.conn);
        let mut ch = self.open_channel(&mut guard, &command)?;
        let mut child = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(local)
            .arg("-f")
            .arg("-")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NodeError::Spawn {
                node: "host".into(),
                command: "tar -x".into(),
                source,
            })?;
        let copied = match child.stdin.take() {
            Some(mut stdin) => std::io::copy(&mut ch, &mut stdin),
            None => Ok(0),
        };
        let mut stderr = String::new();
        let _ = ch.stderr().read_to_string(&mut stderr);
        let _ = ch.wait_close();
        let status = child.wait().map_err(|source| NodeError::Spawn {
            node: "host".into(),
            command: "tar -x".into(),
            source,
        })?;
        let bytes = copied.map_err(|e| self.ssh_err("receiving the data dir", e))?;
        let remote_ok = ch.exit_status().ok() == Some(0);
        if !remote_ok || !status.success() {
            return Err(self.service_err(format!(
                "fetching the data dir failed (remote tar: {}; local tar: {status})",
                stderr.trim()
            )));
        }
        tracing::debug!(node = %self.name, bytes, "data dir fetched");
        Ok(())
    }
}

/// A copy of `program` without debug info under `work` (the original when `strip` fails).
fn strip_copy(program: &Path, work: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(work)?;
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".into());
    let dst = work.join(format!("{name}.upload"));
    std::fs::copy(program, &dst)?;
    match Command::new("strip")
        .arg("--strip-debug")
        .arg(&dst)
        .status()
    {
        Ok(s) if s.success() => Ok(dst),
        _ => Ok(program.to_path_buf()),
    }
}

impl Node for SshNode {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> IpAddr {
        self.addr.ip()
    }
    /// None: clients run on the control node, so cutting "clients" would cut the SSH session
    /// the heal needs.
    fn client_address(&self) -> Option<IpAddr> {
        None
    }
    fn exec(&self, argv: &[&str]) -> Result<CommandOutput, NodeError> {
        if argv.is_empty() {
            return Err(self.service_err("empty command"));
        }
        let script: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        self.run_script(&script.join(" "))
    }
    fn set_service(&self, spec: ServiceSpec) {
        *lock(&self.spec) = Some(spec);
    }
    fn start_service(&self) -> Result<u32, NodeError> {
        let spec = lock(&self.spec).clone().ok_or_else(|| {
            self.service_err("no service configured (set_service was never called)")
        })?;
        if spec.fake_clock {
            return Err(self.service_err(
                "fake clocks (libfaketime) are not available on ssh nodes; drop clock from --nemesis",
            ));
        }
        if let Some(pid) = self.service_pid() {
            return Err(self.service_err(format!("service already running (pid {pid})")));
        }
        let program = self.remote_program(&spec.program)?;
        let mut cmd = vec!["env".to_string()];
        cmd.extend(
            spec.env
                .iter()
                .map(|(k, v)| shell_quote(&format!("{k}={v}"))),
        );
        cmd.push(quote_path(&program));
        cmd.extend(spec.args.iter().map(|a| shell_quote(a)));
        let log = quote_path(&spec.log_file);
        let log_dir = spec
            .log_file
            .parent()
            .map(quote_path)
            .unwrap_or_else(|| ".".into());
        let script = format!(
            "mkdir -p {log_dir} && cd {dir} && {{ setsid {cmd} >> {log} 2>&1 < /dev/null & \
             echo $! > {pidfile}; echo $!; }}",
            dir = quote_path(&self.dir),
            cmd = cmd.join(" "),
            pidfile = quote_path(&self.pid_file()),
        );
        let out = self.run_script_ok(&script, "starting the broker")?;
        let pid: u32 = out.stdout.trim().parse().map_err(|_| {
            self.service_err(format!("unexpected start output `{}`", out.stdout.trim()))
        })?;
        *lock(&self.pid) = Some(pid);
        tracing::debug!(node = %self.name, pid, "service started over ssh");
        Ok(pid)
    }
    fn stop_service(&self, mode: StopMode) -> Result<(), NodeError> {
        let Some(pid) = *lock(&self.pid) else {
            return Ok(());
        };
        let (first, tenths) = match mode {
            StopMode::Kill => ("kill -KILL -$p 2>/dev/null; kill -KILL $p 2>/dev/null", 50),
            StopMode::Graceful(grace) => (
                "kill -TERM -$p 2>/dev/null; kill -CONT -$p 2>/dev/null",
                (grace.as_millis() / 100).max(1),
            ),
        };
        let script = format!(
            "p={pid}; {ALIVE_FN}; {first}; i=0; while alive; do i=$((i+1)); \
             if [ $i -ge {tenths} ]; then kill -KILL -$p 2>/dev/null; kill -KILL $p 2>/dev/null; fi; \
             if [ $i -ge $(({tenths}+50)) ]; then echo still alive >&2; exit 1; fi; sleep 0.1; done; \
             rm -f {pidfile}",
            pidfile = quote_path(&self.pid_file()),
        );
        self.run_script_ok(&script, "stopping the broker")?;
        *lock(&self.pid) = None;
        Ok(())
    }
    fn signal_service(&self, signal: Signal) -> Result<(), NodeError> {
        let pid = self.service_pid().ok_or_else(|| {
            self.service_err(format!("cannot send {signal:?}: service is not running"))
        })?;
        let sig = signal_name(signal);
        self.run_script_ok(
            &format!("kill -{sig} -{pid} 2>/dev/null || kill -{sig} {pid}"),
            &format!("kill -{sig}"),
        )?;
        Ok(())
    }
    fn service_pid(&self) -> Option<u32> {
        let pid = (*lock(&self.pid))?;
        match self.run_script(&format!("p={pid}; {ALIVE_FN}; alive")) {
            Ok(out) if out.success() => Some(pid),
            Ok(_) => {
                *lock(&self.pid) = None;
                None
            }
            // Unknown (the session failed): report it running rather than start a second one.
            Err(e) => {
                tracing::warn!(node = %self.name, error = %e, "checking the service over ssh");
                Some(pid)
            }
        }
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn home_dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn clock_file(&self) -> Option<PathBuf> {
        None
    }
    fn disk(&self) -> Option<Arc<DiskControl>> {
        None
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
}

/// The nodes of one ssh run; dropping it stops their brokers.
#[derive(Debug)]
pub struct SshCluster {
    nodes: Vec<Arc<SshNode>>,
    /// This run's record (for `harness clean` after a killed harness), removed at teardown.
    record: Option<PathBuf>,
    torn_down: bool,
}

/// What `harness clean` needs to reach the hosts of a run whose harness was killed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    /// Pid of the harness that owns the run.
    owner: u32,
    /// How to reach the hosts.
    options: SshOptions,
}

/// Where run records live: beside the netns owner files when writable (root), else in the
/// temp dir.
fn record_dirs() -> [PathBuf; 2] {
    [
        Path::new(super::netns::OWNER_DIR).join("ssh"),
        std::env::temp_dir().join("jepsen-harness-ssh"),
    ]
}

fn write_record(options: &SshOptions) -> Option<PathBuf> {
    let record = RunRecord {
        owner: std::process::id(),
        options: options.clone(),
    };
    let text = serde_json::to_string(&record).ok()?;
    let name = format!(
        "{}-{}.json",
        std::process::id(),
        RECORDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    for dir in record_dirs() {
        let path = dir.join(&name);
        if std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&path, &text))
            .is_ok()
        {
            return Some(path);
        }
    }
    tracing::warn!("could not write an ssh run record; `harness clean` will not reach these hosts");
    None
}

static RECORDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Stops the brokers and removes the nemesis's nft rules left on the hosts of every ssh run
/// whose harness process is gone (data dirs are kept for inspection). A host that cannot be
/// reached keeps its run's record (and is reported) so a later `harness clean` can retry.
pub fn cleanup_leftovers() -> Vec<String> {
    let mut done = Vec::new();
    for dir in record_dirs() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Some(record) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<RunRecord>(&t).ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{}", record.owner)).exists() {
                continue;
            }
            let hosts = record.options.hosts.join(", ");
            match SshCluster::reach(Arc::new(record.options), &std::env::temp_dir()) {
                Ok(nodes) => {
                    let mut errors = Vec::new();
                    for n in &nodes {
                        if let Err(e) = n.kill_leftover() {
                            errors.push(e.to_string());
                        }
                        if n.run_script("command -v nft >/dev/null")
                            .is_ok_and(|o| o.success())
                        {
                            if let Err(e) = nemesis::net::delete_all_tables(n) {
                                errors.push(e.to_string());
                            }
                        }
                    }
                    if errors.is_empty() {
                        let _ = std::fs::remove_file(&path);
                        done.push(format!("ssh run on {hosts} (brokers, nft rules)"));
                    } else {
                        done.push(format!(
                            "ssh run on {hosts}: partly ({})",
                            errors.join("; ")
                        ));
                    }
                }
                Err(e) => {
                    // A record whose hosts stayed unreachable for a day is dropped: the next
                    // run using that remote dir kills a leftover broker anyway.
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(24 * 3600));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        done.push(format!(
                            "record of the ssh run on {hosts} (unreachable for a day: {e})"
                        ));
                    } else {
                        done.push(format!(
                            "nothing yet: the ssh run on {hosts} is not reachable now (retry later): {e}"
                        ));
                    }
                }
            }
        }
    }
    done
}

impl SshCluster {
    /// Connects to every host (verifying its key, authenticating), kills a broker a killed
    /// earlier run left under the same remote dir, wipes and creates each node's remote dir,
    /// and probes which faults the host can do. `work` is a local scratch dir.
    pub fn connect(opts: SshOptions, work: &Path) -> Result<SshCluster, NodeError> {
        if opts.hosts.is_empty() {
            return Err(NodeError::Setup("ssh: no hosts given (ssh.hosts)".into()));
        }
        if !opts.remote_dir.is_absolute() || opts.remote_dir == Path::new("/") {
            return Err(NodeError::Setup(format!(
                "ssh: remote dir `{}` must be an absolute path other than / (ssh.remote-dir)",
                opts.remote_dir.display()
            )));
        }
        if !opts.private_key.is_file() {
            return Err(NodeError::Setup(format!(
                "ssh: private key {} not found; set ssh.private-key",
                opts.private_key.display()
            )));
        }
        let record = write_record(&opts);
        let mut cluster = SshCluster {
            nodes: Vec::new(),
            record,
            torn_down: false,
        };
        let nodes = Self::reach(Arc::new(opts), work)?;
        for mut node in nodes {
            node.prepare()?;
            node.capabilities = node.probe_capabilities();
            cluster.nodes.push(Arc::new(node));
        }
        Ok(cluster)
    }

    /// Connects to every host (host key verified, authenticated) without touching anything.
    fn reach(opts: Arc<SshOptions>, work: &Path) -> Result<Vec<SshNode>, NodeError> {
        let stripped = Arc::new(Mutex::new(HashMap::new()));
        let mut nodes = Vec::new();
        for (i, spec) in opts.hosts.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let (host, port) = split_host(spec);
            let addr = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| SshError::Resolve {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .next()
                .ok_or_else(|| SshError::Resolve {
                    host: host.clone(),
                    reason: "no addresses".into(),
                })?;
            let conn = connect(&host, port, addr, &opts)?;
            let local = conn.local;
            let dir = opts.remote_dir.join(&name);
            nodes.push(SshNode {
                name: name.clone(),
                host,
                port,
                addr,
                conn: Mutex::new(Some(conn)),
                local,
                opts: opts.clone(),
                dir,
                spec: Mutex::new(None),
                pid: Mutex::new(None),
                uploaded: Mutex::new(HashMap::new()),
                stripped: stripped.clone(),
                work: work.to_path_buf(),
                capabilities: Capabilities::all(),
            });
        }
        Ok(nodes)
    }

    /// The nodes, as the nemesis and harness use them.
    pub fn nodes(&self) -> Vec<Arc<dyn Node>> {
        self.nodes
            .iter()
            .map(|n| n.clone() as Arc<dyn Node>)
            .collect()
    }

    /// The concrete nodes.
    pub fn ssh_nodes(&self) -> &[Arc<SshNode>] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Arc<SshNode>> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Copies node `name`'s remote data dir (partition and metadata logs) into
    /// `local/data-dir`, and its home dir's files (broker or service log, configs) into `local/`.
    pub fn collect(&self, name: &str, local: &Path) -> Result<(), NodeError> {
        let node = self
            .node(name)
            .ok_or_else(|| NodeError::Setup(format!("ssh: no node {name}")))?;
        // The data dir (partition and metadata logs) as `data-dir/`, as on the other backends;
        // the home dir's own files (logs, configs) beside it, without the uploaded binaries.
        node.fetch_dir(&node.data_dir(), &[], &local.join("data-dir"))?;
        node.fetch_dir(&node.home_dir(), &["./bin", "./data"], local)?;
        Ok(())
    }

    /// Kills every broker and removes the nemesis's nft tables; the remote data stays until
    /// the next run's connect wipes it.
    pub fn teardown(&mut self) -> Result<(), NodeError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        for n in &self.nodes {
            if let Err(e) = n.stop_service(StopMode::Kill) {
                errors.push(e.to_string());
            }
            if n.capabilities.check(FaultKind::Partition).is_ok() {
                if let Err(e) = nemesis::net::delete_all_tables(n.as_ref()) {
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            if let Some(r) = self.record.take() {
                let _ = std::fs::remove_file(r);
            }
            Ok(())
        } else {
            Err(NodeError::Setup(errors.join("; ")))
        }
    }
}

impl crate::deploy::NodeFiles for SshCluster {
    /// Uploads the file to the node's host over SFTP.
    fn write(&self, node: &dyn Node, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        let n = self.node(node.name()).ok_or_else(|| {
            std::io::Error::other(format!("{} is not a node of this ssh cluster", node.name()))
        })?;
        n.put_file(path, &mut &contents[..], 0o644)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl Drop for SshCluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("ssh teardown: {e}");
        }
    }
}

impl SshNode {
    /// The script killing a broker an earlier run left (found by its pid file, checked
    /// against the binary path so a reused pid is left alone); `$d` is the node dir.
    const KILL_LEFTOVER: &'static str = "if [ -f $d/broker.pid ]; then p=$(cat $d/broker.pid); \
             case \"$(readlink /proc/$p/exe 2>/dev/null)\" in $d/bin/*) kill -KILL -$p 2>/dev/null; kill -KILL $p 2>/dev/null;; esac; \
             rm -f $d/broker.pid; fi";

    /// Kills a broker a killed harness left on this host.
    fn kill_leftover(&self) -> Result<(), NodeError> {
        let script = format!("d={}; {}", quote_path(&self.dir), Self::KILL_LEFTOVER);
        self.run_script_ok(&script, "killing a leftover broker")?;
        Ok(())
    }

    /// Kills a broker left by an earlier run, wipes the data dir and creates the node's dirs.
    fn prepare(&self) -> Result<(), NodeError> {
        let script = format!(
            "d={dir}; {kill}; rm -rf $d/data && mkdir -p $d/data $d/bin{chown}",
            kill = Self::KILL_LEFTOVER,
            dir = quote_path(&self.dir),
            // Commands run through sudo, uploads (SFTP) as the user: let it write there.
            chown = if self.opts.user == "root" {
                String::new()
            } else {
                format!(" && chown -R {} $d", shell_quote(&self.opts.user))
            },
        );
        self.run_script_ok(&script, "preparing the remote dir")?;
        Ok(())
    }

    fn probe_capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::all()
            .refuse(
                FaultKind::Clock,
                "ssh nodes have no per-process fake clock (libfaketime) and real clock steps are not built yet",
            )
            .refuse(
                FaultKind::Disk,
                "ssh nodes have no fault FS data dirs; use the netns backend for disk faults",
            )
            .refuse(
                FaultKind::FileCorruption,
                "file faults edit the data dir on the harness's own filesystem, not on a remote host",
            );
        match self.run_script("nft list tables") {
            Ok(out) if out.success() => {}
            Ok(out) => {
                let reason = format!(
                    "`nft list tables` failed on {} ({}); install nftables there and give the user root or passwordless sudo",
                    self.host,
                    out.stderr.trim().replace('\n', " / ")
                );
                caps = caps
                    .refuse(FaultKind::Partition, reason.clone())
                    .refuse(FaultKind::PacketLoss, reason);
            }
            Err(e) => {
                caps = caps
                    .refuse(FaultKind::Partition, e.to_string())
                    .refuse(FaultKind::PacketLoss, e.to_string());
            }
        }
        if let Err(reason) = probe_netem(self) {
            caps = caps.refuse(FaultKind::Latency, reason);
        }
        caps
    }

    /// The harness's address as this host sees it (the local end of the SSH connection).
    pub fn control_address(&self) -> IpAddr {
        self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_openssh_base64_without_padding() {
        assert_eq!(base64_nopad(b""), "");
        assert_eq!(base64_nopad(b"f"), "Zg");
        assert_eq!(base64_nopad(b"fo"), "Zm8");
        assert_eq!(base64_nopad(b"foo"), "Zm9v");
        assert_eq!(base64_nopad(b"foobar!"), "Zm9vYmFyIQ");
    }

    #[test]
    fn hosts_split_into_host_and_port() {
        assert_eq!(split_host("10.0.0.1"), ("10.0.0.1".into(), 22));
        assert_eq!(split_host("db1:2222"), ("db1".into(), 2222));
        assert_eq!(split_host("[::1]:2200"), ("::1".into(), 2200));
        assert_eq!(split_host("::1"), ("::1".into(), 22));
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("abc/d.e"), "abc/d.e");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
