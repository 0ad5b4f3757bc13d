//! Test support: start the real `broker` binary on a temp dir and a free port, and a small
//! synchronous Kafka-protocol connection (built on `kafka-protocol`) to drive it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

mod ports;
pub use ports::free_port;

/// A running broker process.
pub struct BrokerProc {
    launching: bool,
    pub node_id: i32,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
    pub props: Vec<(String, String)>,
    /// Extra command-line arguments (e.g. `--bug NAME`).
    pub args: Vec<String>,
    child: Option<Child>,
}

impl BrokerProc {
    /// Starts a broker with `props` added to a minimal config, waiting until it accepts.
    pub fn start(dir: &Path, props: &[(&str, &str)]) -> BrokerProc {
        let mut b = BrokerProc {
            launching: false,
            node_id: 1,
            port: free_port(),
            metrics_port: free_port(),
            dir: dir.to_path_buf(),
            props: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: Vec::new(),
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let mut text = format!(
            "node.id={}\nlisteners=PLAINTEXT://127.0.0.1:{}\nlog.dirs={}\nmetrics.listener=http://127.0.0.1:{}\n",
            self.node_id,
            self.port,
            self.dir.join("data").display(),
            self.metrics_port
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
        cmd.arg("--config")
            .arg(&cfg)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log);
        // The broker dies with the test thread that started it: brokers held in statics (never
        // dropped) or left by a panicking test are not left running after the test binary.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn broker");
        self.child = Some(child);
        self.wait_port();
    }

    /// Launches without waiting (cluster nodes wait for each other's quorum before listening).
    fn launch(&mut self) {
        self.launching = true;
        self.spawn();
        self.launching = false;
    }

    /// Waits until the Kafka port accepts connections.
    fn wait_port(&self) {
        if self.launching {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() >= deadline {
                // The test's temporary folder goes with the panic: show the log's tail here.
                let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "broker did not start within 60 s; the tail of {}:\n{}",
                    self.dir.join("broker.log").display(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts an `n`-node cluster (every node broker and controller) under `dir`, with `props`
    /// added to each node's config.
    pub fn start_cluster(dir: &Path, n: i32, props: &[(&str, &str)]) -> Vec<BrokerProc> {
        Self::start_cluster_with_voters(dir, n, n, props)
    }

    /// Like [`Self::start_cluster`], with only the first `v` nodes controllers (the rest
    /// `process.roles=broker`).
    pub fn start_cluster_with_voters(
        dir: &Path,
        n: i32,
        v: i32,
        props: &[(&str, &str)],
    ) -> Vec<BrokerProc> {
        Self::start_cluster_with_args(dir, n, v, props, &[])
    }

    /// Like [`Self::start_cluster_with_voters`], every node started with the extra command-line
    /// arguments `args` (e.g. `["--bug", "NAME"]`).
    pub fn start_cluster_with_args(
        dir: &Path,
        n: i32,
        v: i32,
        props: &[(&str, &str)],
        args: &[&str],
    ) -> Vec<BrokerProc> {
        let ctrl: Vec<u16> = (0..v).map(|_| free_port()).collect();
        let voters: Vec<String> = (0..v)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ctrl[i as usize]))
            .collect();
        let voters = voters.join(",");
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut all: Vec<(String, String)> = vec![
                ("controller.quorum.voters".into(), voters.clone()),
                ("broker.heartbeat.interval.ms".into(), "200".into()),
                ("broker.session.timeout.ms".into(), "2000".into()),
                ("replica.lag.time.max.ms".into(), "2000".into()),
            ];
            if i >= v {
                all.push(("process.roles".into(), "broker".into()));
            }
            all.extend(props.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let ndir = dir.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&ndir).expect("node dir");
            let mut b = BrokerProc {
                launching: false,
                node_id: i + 1,
                port: free_port(),
                metrics_port: free_port(),
                dir: ndir,
                props: all,
                args: args.iter().map(|a| a.to_string()).collect(),
                child: None,
            };
            b.launch();
            nodes.push(b);
        }
        for b in &nodes {
            b.wait_port();
        }
        nodes
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Whether the process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// `kill -9` the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Starts the process again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(s) = status {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn term(&self) {
        self.signal("TERM");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(&self.addr())
    }

    /// Sends raw bytes on a fresh connection, half-closes it, and drains whatever comes back
    /// (for hostile-input tests; the answer is not checked).
    pub fn send_raw(&self, bytes: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.take(1 << 22).read_to_end(&mut sink);
    }

    pub fn http_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics connect");
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking Kafka connection.
pub struct Conn {
    pub stream: TcpStream,
    corr: i32,
}

impl Conn {
    /// Connects, or `None` when the broker is not reachable.
    pub fn try_connect(addr: &str) -> Option<Conn> {
        let stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        Some(Conn { stream, corr: 0 })
    }

    pub fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn { stream, corr: 0 }
    }

    /// Sends a request and returns the response body (after the header).
    pub fn call<Req: Encodable + HeaderVersion, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        self.corr += 1;
        self.stream
            .write_all(&request_frame(key, version, self.corr, req))?;
        let mut resp = self.read_frame()?;
        let rh = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut resp, rh).map_err(std::io::Error::other)?;
        assert_eq!(header.correlation_id, self.corr, "correlation id");
        Resp::decode(&mut resp, version).map_err(std::io::Error::other)
    }

    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
        self.create_topic_rf(name, partitions, 1, configs)
    }

    pub fn create_topic_rf(
        &mut self,
        name: &str,
        partitions: i32,
        rf: i16,
        configs: &[(&str, &str)],
    ) -> i16 {
        use kafka_protocol::messages::create_topics_request::{
            CreatableTopic, CreatableTopicConfig,
        };
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string(name.into()));
        t.num_partitions = partitions;
        t.replication_factor = rf;
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.to_string());
                c.value = Some(StrBytes::from_string(v.to_string()));
                c
            })
            .collect();
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 5000;
        let resp: CreateTopicsResponse = self
            .call(ApiKey::CreateTopics, 5, &req)
            .expect("create topics");
        resp.topics[0].error_code
    }

    /// Produces one batch; returns (error code, base offset).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        batch: Vec<u8>,
        acks: i16,
    ) -> std::io::Result<(i16, i64)> {
        let req = produce_request(topic, partition, batch, acks);
        let resp: ProduceResponse = self.call(ApiKey::Produce, 8, &req)?;
        let p = &resp.responses[0].partition_responses[0];
        Ok((p.error_code, p.base_offset))
    }

    /// Metadata of one topic: per partition (leader, isr), or the topic error code.
    /// The active controller as this broker reports it (-1: unknown).
    pub fn controller_id(&mut self) -> i32 {
        let mut req = MetadataRequest::default();
        req.topics = Some(Vec::new());
        self.call::<_, MetadataResponse>(ApiKey::Metadata, 9, &req)
            .map(|r| r.controller_id.0)
            .unwrap_or(-1)
    }

    pub fn topic_metadata(&mut self, topic: &str) -> Result<Vec<(i32, Vec<i32>)>, i16> {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(topic.into())));
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![t]);
        let resp: MetadataResponse = self.call(ApiKey::Metadata, 9, &req).map_err(|_| -1i16)?;
        let t = &resp.topics[0];
        if t.error_code != 0 {
            return Err(t.error_code);
        }
        Ok(t.partitions
            .iter()
            .map(|p| (p.leader_id.0, p.isr_nodes.iter().map(|b| b.0).collect()))
            .collect())
    }

    /// Fetches from `offset`; returns (error, high watermark, log start, records bytes).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> (i16, i64, i64, Bytes) {
        self.fetch_with(topic, partition, offset, 1, max_wait_ms)
    }

    /// Like [`Conn::fetch`], waiting for `min_bytes` (long poll) up to `max_wait_ms`.
    pub fn fetch_with(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        min_bytes: i32,
        max_wait_ms: i32,
    ) -> (i16, i64, i64, Bytes) {
        let req = fetch_request(topic, partition, offset, min_bytes, max_wait_ms, 0);
        let resp: FetchResponse = self.call(ApiKey::Fetch, 11, &req).expect("fetch");
        let p = &resp.responses[0].partitions[0];
        (
            p.error_code,
            p.high_watermark,
            p.log_start_offset,
            p.records.clone().unwrap_or_default(),
        )
    }

    /// ListOffsets with a timestamp (-1 latest, -2 earliest); returns (error, offset).
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let mut p = ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = timestamp;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.into()));
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![t];
        let resp: ListOffsetsResponse = self
            .call(ApiKey::ListOffsets, 5, &req)
            .expect("list offsets");
        let r = &resp.topics[0].partitions[0];
        (r.error_code, r.offset)
    }
}

/// Creates `topic` through `nodes[0]` (retrying until the cluster can, at most 30 s).
pub fn create_topic_retrying(nodes: &[BrokerProc], topic: &str, partitions: i32, rf: i16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes[0]
        .connect()
        .create_topic_rf(topic, partitions, rf, &[])
        != 0
    {
        assert!(Instant::now() < deadline, "creating {topic} failed");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The active controller as `node` reports it, waiting up to 30 s for one.
pub fn active_controller(node: &BrokerProc) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = node.connect().controller_id();
        if c > 0 {
            return c;
        }
        assert!(Instant::now() < deadline, "no active controller reported");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Empties every segment file of `topic-p` on `node` and drops its indexes: the records were
/// in the lost page cache only (kill -9 of a machine, not just the process).
pub fn lose_page_cache(node: &BrokerProc, topic: &str, p: usize) {
    let pdir = node.dir.join(format!("data/{topic}-{p}"));
    for e in std::fs::read_dir(&pdir).expect("partition dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") {
            std::fs::write(e.path(), b"").expect("empty segment");
        } else if name.ends_with(".index") || name.ends_with(".timeindex") {
            std::fs::remove_file(e.path()).expect("remove index");
        }
    }
}

/// How many segment files (`*.log`) a partition directory holds.
pub fn segment_files(partition_dir: &Path) -> usize {
    std::fs::read_dir(partition_dir)
        .expect("partition dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

/// One request frame (length prefix, header, body), encoded but not sent.
pub fn request_frame<Req: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
) -> Vec<u8> {
    let mut h = RequestHeader::default();
    h.request_api_key = key as i16;
    h.request_api_version = version;
    h.correlation_id = correlation_id;
    h.client_id = Some(StrBytes::from_static_str("test"));
    let mut body = BytesMut::new();
    h.encode(&mut body, Req::header_version(version))
        .expect("encode header");
    req.encode(&mut body, version).expect("encode body");
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put(body);
    frame.to_vec()
}

/// A consumer's Fetch (v11) of one partition from `offset`, waiting for `min_bytes` up to
/// `max_wait_ms`, at `isolation_level` (0 read_uncommitted, 1 read_committed).
pub fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    min_bytes: i32,
    max_wait_ms: i32,
    isolation_level: i8,
) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let mut fp = FetchPartition::default();
    fp.partition = partition;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string(topic.into()));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = min_bytes;
    req.max_bytes = 50 << 20;
    req.isolation_level = isolation_level;
    req.topics = vec![ft];
    req
}

/// A Produce request of one batch to one partition.
pub fn produce_request(topic: &str, partition: i32, batch: Vec<u8>, acks: i16) -> ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(Bytes::from(batch));
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.into()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    req
}

/// Every `(offset, value)` in a buffer of batches (uncompressed, as our tests write them).
pub fn records(mut bytes: Bytes) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    if bytes.is_empty() {
        return out;
    }
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
        .expect("decode records");
    for set in sets {
        for r in set.records {
            out.push((r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()));
        }
    }
    let _ = bytes.remaining();
    out
}
