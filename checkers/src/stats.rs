//! Statistics over a history, for reports and the config-safety matrix: each client op's
//! latency (invoke to completion), latency quantiles by function and outcome, throughput over
//! time in fixed buckets, and the fault intervals the nemesis ops describe.
//!
//! Everything here is one pass over the history plus a sort of each latency group, so it is
//! O(n log n) in the number of ops and fine for histories of millions of ops. Like the rest of
//! the crate it is pure: it reads ops and knows nothing of brokers or nodes.
//!
//! Fault intervals follow the names the nemesis writes (`nemesis/src/nemesis.rs`):
//! `start-<kind>` opens a `<kind>` interval and `stop-<kind>` closes it (partition,
//! packet-loss, disk); `kill` and `stop` open a node-down interval that `start` closes; `pause`
//! opens one that `resume` closes; `bump-clock` opens a `clock` interval that `reset-clock`
//! closes, and `strobe-clock` is a `clock` interval of its own `duration-ms`. Node-targeted
//! faults get one interval per node; a closing op naming nodes closes only theirs. Anything
//! else (`corrupt-file`, an action that failed and carries an `error`) is an instantaneous
//! [`FaultEvent`]. An interval still open at the end of the history has no end.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fasthash::FastMap;
use crate::history::{History, Op, OpType, Process, RawOp};
use crate::txns::MopSink;

/// One completed client op: when it was invoked and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyPoint {
    /// Invocation time, nanoseconds since the test started.
    pub invoke_ns: u64,
    /// Completion time minus invocation time, nanoseconds.
    pub latency_ns: u64,
    /// The op's function (`send`, `poll`, ...).
    pub f: String,
    /// The completion type (`ok`, `fail` or `info`).
    #[serde(rename = "type")]
    pub op_type: OpType,
    /// Who ran it.
    pub process: Process,
    /// Index of the invocation.
    pub invoke_index: u64,
    /// Index of the completion.
    pub complete_index: u64,
}

/// Latency quantiles of one (function, completion type) group, nearest-rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Function.
    pub f: String,
    /// Completion type.
    #[serde(rename = "type")]
    pub op_type: OpType,
    /// Ops in the group.
    pub count: usize,
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 90th percentile, nanoseconds.
    pub p90_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// Maximum, nanoseconds.
    pub max_ns: u64,
}

/// Completions per time bucket, by completion type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    /// Bucket width, nanoseconds (1 s by default, wider when the history spans more than
    /// [`MAX_BUCKETS`] of them).
    pub bucket_ns: u64,
    /// Start of the first bucket, nanoseconds (a multiple of `bucket_ns`; 0 for histories
    /// timed from the test's start).
    #[serde(default)]
    pub start_ns: u64,
    /// Per completion type, the number of completions in each bucket (bucket `i` covers
    /// `[start_ns + i * bucket_ns, start_ns + (i + 1) * bucket_ns)`); every series has the
    /// same length.
    pub series: BTreeMap<String, Vec<u64>>,
}

/// Most buckets a time series gets: a history whose times span more (absolute epoch
/// nanoseconds, a clock jump) gets wider buckets, never a bucket per second since 1970.
pub const MAX_BUCKETS: u64 = 100_000;

/// Buckets over `[lo, hi]`: (bucket width, start of the first bucket, number of buckets), at
/// most [`MAX_BUCKETS`] of them.
/// Histories timed from the test's start keep buckets from 0.
fn buckets(bucket_ns: u64, lo: u64, hi: u64) -> (u64, u64, usize) {
    let hi = hi.max(lo);
    let bucket_ns = bucket_ns.max(1);
    if hi / bucket_ns < MAX_BUCKETS {
        return (bucket_ns, 0, (hi / bucket_ns + 1) as usize);
    }
    let bucket_ns = bucket_ns.max((hi - lo) / MAX_BUCKETS + 1);
    let start = lo - lo % bucket_ns;
    (bucket_ns, start, ((hi - start) / bucket_ns + 1) as usize)
}

impl Throughput {
    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.series.values().map(Vec::len).max().unwrap_or(0)
    }
}

/// A fault that lasted a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultInterval {
    /// The fault kind: `partition`, `packet-loss`, `kill`, `stop`, `pause`, `clock`, `disk`, ...
    pub kind: String,
    /// The node it hit, for node-targeted faults.
    pub node: Option<String>,
    /// The nemesis op that started it.
    pub start_f: String,
    /// Start, nanoseconds since the test started.
    pub start_ns: u64,
    /// End, or None when the history ends with it still active.
    pub end_ns: Option<u64>,
    /// Index of the starting op.
    pub start_index: u64,
    /// Index of the op that ended it (None for strobes, which end by themselves, and for
    /// faults still active at the end).
    pub end_index: Option<u64>,
}

/// A nemesis op that is not part of an interval: a file corruption, or an action that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// The op's `f`.
    pub f: String,
    /// When, nanoseconds since the test started.
    pub time_ns: u64,
    /// Its index.
    pub index: u64,
    /// The error, when the action failed.
    pub error: Option<String>,
}

/// Everything this module computes for one history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Time of the last op, nanoseconds since the test started.
    pub duration_ns: u64,
    /// Completed client ops, in completion order: every one up to [`MAX_POINTS`] ok and
    /// [`MAX_POINTS`] others, an even sample of each past that (the ones a report links to are
    /// always in); `completed` counts them all.
    pub points: Vec<LatencyPoint>,
    /// Client ops completed (every one, sampled or not).
    #[serde(default)]
    pub completed: u64,
    /// Quantiles per (function, completion type), sorted by function then type.
    pub quantiles: Vec<Quantiles>,
    /// Completions per second.
    pub throughput: Throughput,
    /// Fault intervals, in start order.
    pub faults: Vec<FaultInterval>,
    /// Instantaneous nemesis events and failed nemesis actions.
    pub fault_events: Vec<FaultEvent>,
    /// Acknowledged values not yet read, over time.
    #[serde(default)]
    pub unseen: Unseen,
}

/// Acknowledged-but-unread values over time (Jepsen's unseen plot): a value counts from its
/// send's acknowledgement until an ok poll that read it completes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Unseen {
    /// Bucket width.
    pub bucket_ns: u64,
    /// Start of the first bucket, nanoseconds.
    #[serde(default)]
    pub start_ns: u64,
    /// Unseen count at the end of each bucket.
    pub counts: Vec<u64>,
    /// When the final reads began (the first op of [`crate::history::FINAL_PROCESS`]).
    pub final_start_ns: Option<u64>,
}

/// The unseen series of a history, in `bucket_ns` buckets up to `duration_ns` (n log n).
pub fn unseen(history: &History, bucket_ns: u64, duration_ns: u64) -> Unseen {
    let mut c = Collector::new();
    for op in &history.ops {
        c.op_value(op);
    }
    c.unseen_series(bucket_ns, duration_ns)
}

/// One second, the default throughput bucket.
pub const SECOND_NS: u64 = 1_000_000_000;

/// Computes every statistic with 1-second throughput buckets (see [`Collector`]).
pub fn analyze(history: &History) -> Stats {
    let mut c = Collector::new();
    for op in &history.ops {
        c.op_value(op);
    }
    c.finish()
}

/// Reads a history file and computes its statistics, streaming (see [`Collector`]); the
/// completions in `keep` always keep their latency points. Returns the warnings of reading.
pub fn analyze_file(
    path: &std::path::Path,
    keep: impl IntoIterator<Item = u64>,
) -> Result<(Stats, Vec<String>), crate::history::HistoryError> {
    let mut c = Collector::new();
    c.keep(keep);
    let warnings = crate::history::scan(path, |raw| c.op(&raw))?;
    Ok((c.finish(), warnings))
}

/// Latency points kept per class (ok completions; fail and info ones) before the collector
/// samples them: past this many, every other kept point is dropped and the stride doubles, so
/// a class keeps between half this and this many points, evenly spread over the history.
pub const MAX_POINTS: usize = 200_000;

/// A uniform sample of one class of points, thinned by halves.
#[derive(Debug)]
struct Sample {
    points: Vec<LatencyPoint>,
    stride: u64,
    seen: u64,
}

impl Sample {
    fn new() -> Sample {
        Sample {
            points: Vec::new(),
            stride: 1,
            seen: 0,
        }
    }

    fn offer(&mut self, make: impl FnOnce() -> LatencyPoint) {
        let take = self.seen.is_multiple_of(self.stride);
        self.seen += 1;
        if !take {
            return;
        }
        self.points.push(make());
        if self.points.len() >= MAX_POINTS {
            let mut i = 0usize;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
        }
    }
}

/// A client op between its invocation and completion.
#[derive(Debug, Default)]
struct OpenOp {
    index: u64,
    time_ns: u64,
    f: u16,
    /// The invocation's micro-ops, as JSON text (read only if the completion has none).
    value: String,
}

/// The micro-op parts the unseen series needs, of the op being read.
#[derive(Debug, Default)]
struct Mops {
    keys: FastMap<String, u32>,
    sends: Vec<(u32, i64)>,
    reads: Vec<(u32, i64)>,
}

impl MopSink for Mops {
    fn intern_key(&mut self, key: &str) -> u32 {
        if let Some(id) = self.keys.get(key) {
            return *id;
        }
        let id = self.keys.len() as u32;
        self.keys.insert(key.to_string(), id);
        id
    }
    fn send(&mut self, key: &str, value: i64, _offset: Option<i64>) {
        let k = self.intern_key(key);
        self.sends.push((k, value));
    }
    fn read_key(&mut self, key: u32, _offset: Option<i64>, value: i64) {
        self.reads.push((key, value));
    }
}

/// "Not yet" in the unseen table.
const NEVER: u64 = u64::MAX;

/// Computes [`Stats`] from ops fed one at a time, in history order, without holding the
/// history: per completed client op a few numbers (its latency and completion time, for
/// quantiles and throughput), a uniform sample of latency points ([`MAX_POINTS`] per class,
/// plus every completion asked for with [`Collector::keep`]), each acknowledged or read value's
/// first acknowledgement and first read (the unseen series), and the nemesis ops (fault
/// intervals).
#[derive(Debug)]
pub struct Collector {
    fns: Vec<String>,
    fn_ids: FastMap<String, u16>,
    open: FastMap<Process, OpenOp>,
    /// Latencies per (function id, completion type order).
    latencies: BTreeMap<(u16, u8), Vec<u64>>,
    /// Completion times per completion type.
    done: BTreeMap<&'static str, Vec<u64>>,
    ok: Sample,
    other: Sample,
    kept: Vec<LatencyPoint>,
    keep: std::collections::HashSet<u64>,
    completed: u64,
    mops: Mops,
    /// (key, value) → (first acknowledgement, first read), completion times of ok ops.
    values: FastMap<(u32, i64), (u64, u64)>,
    nemesis: Vec<Op>,
    first_ns: u64,
    last_ns: u64,
    final_start_ns: Option<u64>,
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new()
    }
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Collector {
        Collector {
            fns: Vec::new(),
            fn_ids: FastMap::default(),
            open: FastMap::default(),
            latencies: BTreeMap::new(),
            done: BTreeMap::new(),
            ok: Sample::new(),
            other: Sample::new(),
            kept: Vec::new(),
            keep: Default::default(),
            completed: 0,
            mops: Mops::default(),
            values: FastMap::default(),
            nemesis: Vec::new(),
            first_ns: NEVER,
            last_ns: 0,
            final_start_ns: None,
        }
    }

    /// Always keeps the latency points of these completions (the ops a report links to).
    pub fn keep(&mut self, completions: impl IntoIterator<Item = u64>) {
        self.keep.extend(completions);
    }

    fn fn_id(&mut self, f: &str) -> u16 {
        if let Some(id) = self.fn_ids.get(f) {
            return *id;
        }
        let id = u16::try_from(self.fns.len()).unwrap_or(u16::MAX);
        if id < u16::MAX {
            self.fns.push(f.to_string());
            self.fn_ids.insert(f.to_string(), id);
        }
        id
    }

    /// An op held in memory.
    pub fn op_value(&mut self, op: &Op) {
        let value = (!op.value.is_null())
            .then(|| serde_json::value::to_raw_value(&op.value).ok())
            .flatten();
        // The text came from a Value, so it parses; nothing else can fail.
        let _ = self.op(&RawOp {
            index: op.index,
            time_ns: op.time_ns,
            process: op.process.clone(),
            op_type: op.op_type,
            f: op.f.as_str().into(),
            value: value.as_deref().map(|v| crate::history::RawJson(v.get())),
        });
    }

    /// The next op of the history, as [`crate::history::scan`] reads it. An error names what
    /// in its `value` could not be read.
    pub fn op(&mut self, raw: &RawOp<'_>) -> Result<(), String> {
        let (index, time_ns, process, op_type) =
            (raw.index, raw.time_ns, &raw.process, raw.op_type);
        let (f, value) = (raw.f.as_ref(), raw.value.map(|v| v.get()));
        self.first_ns = self.first_ns.min(time_ns);
        self.last_ns = self.last_ns.max(time_ns);
        if process.is_nemesis() {
            let value = match value {
                Some(v) => serde_json::from_str(v).map_err(|e| format!("bad value: {e}"))?,
                None => Value::Null,
            };
            self.nemesis.push(Op {
                index,
                time_ns,
                process: process.clone(),
                op_type,
                f: f.to_string(),
                value,
            });
            return Ok(());
        }
        if self.final_start_ns.is_none()
            && *process == Process::Client(crate::history::FINAL_PROCESS)
        {
            self.final_start_ns = Some(time_ns);
        }
        if op_type == OpType::Invoke {
            let fid = self.fn_id(f);
            let o = self.open.entry(process.clone()).or_default();
            o.index = index;
            o.time_ns = time_ns;
            o.f = fid;
            o.value.clear();
            o.value.push_str(value.unwrap_or(""));
            return Ok(());
        }
        let Some(inv) = self.open.remove(process) else {
            return Ok(());
        };
        self.completed += 1;
        let latency = time_ns.saturating_sub(inv.time_ns);
        self.latencies
            .entry((inv.f, type_order(op_type)))
            .or_default()
            .push(latency);
        self.done
            .entry(type_name(op_type))
            .or_default()
            .push(time_ns);
        let fns = &self.fns;
        let point = || LatencyPoint {
            invoke_ns: inv.time_ns,
            latency_ns: latency,
            f: fns.get(inv.f as usize).cloned().unwrap_or_default(),
            op_type,
            process: process.clone(),
            invoke_index: inv.index,
            complete_index: index,
        };
        if self.keep.contains(&index) {
            self.kept.push(point());
        } else if op_type == OpType::Ok {
            self.ok.offer(point);
        } else {
            self.other.offer(point);
        }
        if op_type == OpType::Ok {
            let mops = value.or_else(|| (!inv.value.is_empty()).then_some(inv.value.as_str()));
            if let Some(text) = mops {
                self.mops.sends.clear();
                self.mops.reads.clear();
                crate::txns::feed_raw_into(&mut self.mops, text)
                    .map_err(|e| format!("bad micro-ops in `value`: {e}"))?;
                for &(k, v) in &self.mops.sends {
                    let e = self.values.entry((k, v)).or_insert((NEVER, NEVER));
                    if e.0 == NEVER {
                        e.0 = time_ns;
                    }
                }
                for &(k, v) in &self.mops.reads {
                    let e = self.values.entry((k, v)).or_insert((NEVER, NEVER));
                    if e.1 == NEVER {
                        e.1 = time_ns;
                    }
                }
            }
        }
        Ok(())
    }

    fn unseen_series(&self, bucket_ns: u64, duration_ns: u64) -> Unseen {
        unseen_of(
            self.values.values().copied(),
            self.first_ns,
            bucket_ns,
            duration_ns,
            self.final_start_ns,
        )
    }

    /// Every statistic, with 1-second throughput buckets and quarter-second unseen buckets.
    pub fn finish(self) -> Stats {
        let duration_ns = self.last_ns;
        let unseen = self.unseen_series(SECOND_NS / 4, duration_ns);
        let fns = &self.fns;
        let latencies = self
            .latencies
            .into_iter()
            .map(|((f, t), v)| (fns.get(f as usize).map_or("", String::as_str), t, v))
            .collect();
        let mut points = self.kept;
        points.extend(self.ok.points);
        points.extend(self.other.points);
        assemble(Parts {
            latencies,
            done: self.done,
            points,
            completed: self.completed,
            nemesis: self.nemesis,
            duration_ns,
            unseen,
        })
    }
}

/// The unseen series of (first acknowledgement, first ok read) times ([`NEVER`]: none), in
/// `bucket_ns` buckets from `first_ns` up to `duration_ns`.
fn unseen_of(
    values: impl Iterator<Item = (u64, u64)>,
    first_ns: u64,
    bucket_ns: u64,
    duration_ns: u64,
    final_start_ns: Option<u64>,
) -> Unseen {
    let first = if first_ns == NEVER { 0 } else { first_ns };
    let (bucket_ns, start_ns, n) = buckets(bucket_ns.max(1), first, duration_ns);
    let mut delta = vec![0i64; n + 1];
    let slot = |ns: u64| ((ns.saturating_sub(start_ns) / bucket_ns) as usize).min(n);
    for (ack, read) in values {
        if ack == NEVER || read <= ack {
            continue;
        }
        delta[slot(ack)] += 1;
        if read != NEVER {
            delta[slot(read)] -= 1;
        }
    }
    let mut counts = Vec::with_capacity(n);
    let mut cur = 0i64;
    for d in delta.iter().take(n) {
        cur += d;
        counts.push(cur.max(0) as u64);
    }
    Unseen {
        bucket_ns,
        start_ns,
        counts,
        final_start_ns,
    }
}

/// What [`Stats`] are assembled from, however the history was read.
struct Parts<'a> {
    /// Latencies per (function, completion type order).
    latencies: Vec<(&'a str, u8, Vec<u64>)>,
    /// Completion times per completion type.
    done: BTreeMap<&'static str, Vec<u64>>,
    /// Kept latency points (any order).
    points: Vec<LatencyPoint>,
    completed: u64,
    nemesis: Vec<Op>,
    duration_ns: u64,
    unseen: Unseen,
}

fn assemble(p: Parts<'_>) -> Stats {
    let mut groups = p.latencies;
    groups.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let quantiles = groups
        .into_iter()
        .map(|(f, t, v)| group_quantiles(f, type_of_order(t), v))
        .collect();
    let done = p
        .done
        .iter()
        .flat_map(|(t, v)| v.iter().map(move |ns| (*ns, *t)));
    let throughput = throughput_of(done, SECOND_NS, p.duration_ns);
    let mut points = p.points;
    points.sort_by_key(|p| p.complete_index);
    let (faults, fault_events) = fault_intervals(&History {
        ops: p.nemesis,
        warnings: Vec::new(),
    });
    Stats {
        duration_ns: p.duration_ns,
        points,
        completed: p.completed,
        quantiles,
        throughput,
        faults,
        fault_events,
        unseen: p.unseen,
    }
}

/// The statistics of a history already read by the check ([`crate::check_file_full`]): the
/// same as [`Collector`] computes reading the file, without reading it again. The completions
/// in `keep` always keep their latency points.
pub fn of_summary(s: &crate::HistorySummary, keep: &std::collections::BTreeSet<u64>) -> Stats {
    let t = &s.txns;
    let mut latencies: FastMap<(u8, u8), Vec<u64>> = FastMap::default();
    let mut done: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    let (mut ok, mut other, mut kept) = (Sample::new(), Sample::new(), Vec::new());
    let mut completed = 0u64;
    // Each record's first acknowledgement and first ok read.
    let mut values: Vec<(u64, u64)> = vec![(NEVER, NEVER); t.rec_key.len()];
    for (at, tx) in t.txns.iter().enumerate() {
        let (Some(done_ns), Some(invoke_index)) = (tx.complete_ns(), t.invoke_index(at)) else {
            continue;
        };
        let op_type = match tx.status {
            crate::txns::Status::Ok => OpType::Ok,
            crate::txns::Status::Info => OpType::Info,
            crate::txns::Status::Fail => OpType::Fail,
        };
        completed += 1;
        let latency = done_ns.saturating_sub(tx.invoke_ns);
        latencies
            .entry((tx.f, type_order(op_type)))
            .or_default()
            .push(latency);
        done.entry(type_name(op_type)).or_default().push(done_ns);
        let point = || LatencyPoint {
            invoke_ns: tx.invoke_ns,
            latency_ns: latency,
            f: t.f_name(tx).to_string(),
            op_type,
            process: t.processes[tx.process as usize].clone(),
            invoke_index,
            complete_index: tx.index,
        };
        if keep.contains(&tx.index) {
            kept.push(point());
        } else if op_type == OpType::Ok {
            ok.offer(point);
        } else {
            other.offer(point);
        }
        if op_type == OpType::Ok {
            for send in t.sends(tx) {
                let v = &mut values[send.rec as usize];
                if v.0 == NEVER {
                    v.0 = done_ns;
                }
            }
            for read in t.reads(tx) {
                let v = &mut values[read.rec() as usize];
                if v.1 == NEVER {
                    v.1 = done_ns;
                }
            }
        }
    }
    let (first_ns, duration_ns) = s.span_ns.unwrap_or((NEVER, 0));
    let unseen = unseen_of(
        values.into_iter(),
        first_ns,
        SECOND_NS / 4,
        duration_ns,
        s.final_start_ns,
    );
    let latencies = latencies
        .into_iter()
        .map(|((f, ty), v)| (t.fns.get(f as usize).map_or("", String::as_str), ty, v))
        .collect();
    kept.extend(ok.points);
    kept.extend(other.points);
    assemble(Parts {
        latencies,
        done,
        points: kept,
        completed,
        nemesis: s.nemesis.clone(),
        duration_ns,
        unseen,
    })
}

/// Pairs each client completion with its process's open invocation (O(n)); completions without
/// an invocation and invocations never completed are left out.
pub fn latency_points(history: &History) -> Vec<LatencyPoint> {
    let nemesis = Process::nemesis();
    let mut open: HashMap<&Process, &Op> = HashMap::new();
    let mut points = Vec::with_capacity(history.ops.len() / 2);
    for op in &history.ops {
        if op.process == nemesis {
            continue;
        }
        if op.op_type == OpType::Invoke {
            open.insert(&op.process, op);
        } else if let Some(inv) = open.remove(&op.process) {
            points.push(LatencyPoint {
                invoke_ns: inv.time_ns,
                latency_ns: op.time_ns.saturating_sub(inv.time_ns),
                f: inv.f.clone(),
                op_type: op.op_type,
                process: op.process.clone(),
                invoke_index: inv.index,
                complete_index: op.index,
            });
        }
    }
    points
}

fn type_order(t: OpType) -> u8 {
    match t {
        OpType::Ok => 0,
        OpType::Info => 1,
        OpType::Fail => 2,
        OpType::Invoke => 3,
    }
}

fn type_of_order(t: u8) -> OpType {
    match t {
        0 => OpType::Ok,
        1 => OpType::Info,
        2 => OpType::Fail,
        _ => OpType::Invoke,
    }
}

/// The name of a completion type as the history writes it.
pub fn type_name(t: OpType) -> &'static str {
    match t {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

/// Nearest-rank quantile `q` (0..=1) of sorted, non-empty `v`.
fn rank(v: &[u64], q: f64) -> u64 {
    let n = v.len();
    let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
    v[i]
}

/// Latency quantiles (p50, p90, p99, max) per (function, completion type); O(n log n).
pub fn quantiles(points: &[LatencyPoint]) -> Vec<Quantiles> {
    let mut groups: BTreeMap<(&str, u8), Vec<u64>> = BTreeMap::new();
    for p in points {
        groups
            .entry((p.f.as_str(), type_order(p.op_type)))
            .or_default()
            .push(p.latency_ns);
    }
    groups
        .into_iter()
        .map(|((f, t), v)| group_quantiles(f, type_of_order(t), v))
        .collect()
}

/// The quantiles of one non-empty group of latencies.
fn group_quantiles(f: &str, op_type: OpType, mut v: Vec<u64>) -> Quantiles {
    v.sort_unstable();
    Quantiles {
        f: f.to_string(),
        op_type,
        count: v.len(),
        p50_ns: rank(&v, 0.50),
        p90_ns: rank(&v, 0.90),
        p99_ns: rank(&v, 0.99),
        max_ns: v.last().copied().unwrap_or(0),
    }
}

/// The quantiles of `f` completing with `op_type`, if any op did.
pub fn quantile_of<'a>(qs: &'a [Quantiles], f: &str, op_type: OpType) -> Option<&'a Quantiles> {
    qs.iter().find(|q| q.f == f && q.op_type == op_type)
}

/// Completions per bucket of `bucket_ns` (by completion time), per completion type, from the
/// first completion's bucket to `duration_ns`, in at most [`MAX_BUCKETS`] buckets; O(n).
pub fn throughput(points: &[LatencyPoint], bucket_ns: u64, duration_ns: u64) -> Throughput {
    let done = points.iter().map(|p| {
        (
            p.invoke_ns.saturating_add(p.latency_ns),
            type_name(p.op_type),
        )
    });
    throughput_of(done, bucket_ns, duration_ns)
}

/// [`throughput`] of (completion time, completion type name) pairs.
fn throughput_of<'a>(
    done: impl Iterator<Item = (u64, &'a str)> + Clone,
    bucket_ns: u64,
    duration_ns: u64,
) -> Throughput {
    let first = done.clone().map(|d| d.0).min().unwrap_or(0);
    let end = done
        .clone()
        .map(|d| d.0)
        .max()
        .unwrap_or(0)
        .max(duration_ns);
    let (bucket_ns, start_ns, n) = buckets(bucket_ns, first, end);
    let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (ns, t) in done {
        let b = ((ns - start_ns) / bucket_ns) as usize;
        let s = series.entry(t.to_string()).or_insert_with(|| vec![0; n]);
        if let Some(slot) = s.get_mut(b) {
            *slot += 1;
        }
    }
    Throughput {
        bucket_ns,
        start_ns,
        series,
    }
}

/// The nodes an op's value names (`nodes`, or `node`).
fn nodes_of(value: &Value) -> Vec<String> {
    if let Some(a) = value.get("nodes").and_then(Value::as_array) {
        return a
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect();
    }
    value
        .get("node")
        .and_then(Value::as_str)
        .map(|n| vec![n.to_string()])
        .unwrap_or_default()
}

/// What a nemesis op does to intervals.
enum Effect {
    /// Opens intervals of this kind.
    Open(String),
    /// Opens an interval of this kind that lasts this long.
    For(String, u64),
    /// Closes open intervals of these kinds.
    Close(&'static [&'static str], Option<String>),
    /// Not an interval.
    Event,
}

fn effect(op: &Op) -> Effect {
    if op.value.get("error").is_some() {
        return Effect::Event;
    }
    match op.f.as_str() {
        "kill" => Effect::Open("kill".into()),
        "stop" => Effect::Open("stop".into()),
        "start" => Effect::Close(&["kill", "stop"], None),
        "pause" => Effect::Open("pause".into()),
        "resume" => Effect::Close(&["pause"], None),
        "bump-clock" => Effect::Open("clock".into()),
        "reset-clock" => Effect::Close(&["clock"], None),
        "strobe-clock" => {
            let ms = op
                .value
                .get("duration-ms")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Effect::For("clock".into(), ms.saturating_mul(1_000_000))
        }
        f => {
            if let Some(kind) = f.strip_prefix("start-").filter(|k| !k.is_empty()) {
                Effect::Open(kind.to_string())
            } else if let Some(kind) = f.strip_prefix("stop-").filter(|k| !k.is_empty()) {
                Effect::Close(&[], Some(kind.to_string()))
            } else {
                Effect::Event
            }
        }
    }
}

/// Fault intervals and instantaneous nemesis events, from the nemesis ops; O(n · open faults).
pub fn fault_intervals(history: &History) -> (Vec<FaultInterval>, Vec<FaultEvent>) {
    let nemesis = Process::nemesis();
    let mut intervals: Vec<FaultInterval> = Vec::new();
    let mut events = Vec::new();
    // Indices into `intervals` of those still open.
    let mut open: Vec<usize> = Vec::new();
    for op in history.ops.iter().filter(|o| o.process == nemesis) {
        let nodes = nodes_of(&op.value);
        let mut start = |kind: &str, end: Option<u64>| {
            let targets: Vec<Option<String>> = if nodes.is_empty() {
                vec![None]
            } else {
                nodes.iter().cloned().map(Some).collect()
            };
            for node in targets {
                if end.is_none() {
                    open.push(intervals.len());
                }
                intervals.push(FaultInterval {
                    kind: kind.to_string(),
                    node,
                    start_f: op.f.clone(),
                    start_ns: op.time_ns,
                    end_ns: end,
                    start_index: op.index,
                    end_index: None,
                });
            }
        };
        match effect(op) {
            Effect::Open(kind) => start(&kind, None),
            Effect::For(kind, ns) => start(&kind, Some(op.time_ns.saturating_add(ns))),
            Effect::Close(kinds, extra) => {
                open.retain(|&i| {
                    let iv = &mut intervals[i];
                    let kind_matches =
                        kinds.contains(&iv.kind.as_str()) || extra.as_deref() == Some(&iv.kind);
                    let node_matches = nodes.is_empty()
                        || iv.node.is_none()
                        || iv.node.as_ref().is_some_and(|n| nodes.contains(n));
                    if kind_matches && node_matches {
                        iv.end_ns = Some(op.time_ns);
                        iv.end_index = Some(op.index);
                        false
                    } else {
                        true
                    }
                });
            }
            Effect::Event => events.push(FaultEvent {
                f: op.f.clone(),
                time_ns: op.time_ns,
                index: op.index,
                error: op
                    .value
                    .get("error")
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), String::from)),
            }),
        }
    }
    (intervals, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn epoch_nanosecond_times_give_bounded_series() {
        // Four ops timed in absolute epoch nanoseconds (2026): a bucket per second since 1970
        // would be 1.7e9 buckets per series.
        let t0 = 1_780_000_000_000_000_000u64;
        let op = |index: u64, dt: u64, process: u64, op_type: OpType, value: Value| Op {
            index,
            time_ns: t0 + dt,
            process: Process::Client(process),
            op_type,
            f: "send".into(),
            value,
        };
        let h = History {
            ops: vec![
                op(0, 0, 1, OpType::Invoke, json!([["send", "k1", 1]])),
                op(
                    1,
                    2_000_000_000,
                    1,
                    OpType::Ok,
                    json!([["send", "k1", [0, 1]]]),
                ),
                op(
                    2,
                    3_000_000_000,
                    2,
                    OpType::Invoke,
                    json!([["send", "k1", 2]]),
                ),
                op(
                    3,
                    5_500_000_000,
                    2,
                    OpType::Ok,
                    json!([["send", "k1", [1, 2]]]),
                ),
            ],
            warnings: Vec::new(),
        };
        let s = analyze(&h);
        assert_eq!(s.throughput.start_ns, t0 + 2_000_000_000);
        assert_eq!(s.throughput.bucket_ns, SECOND_NS);
        assert_eq!(s.throughput.series["ok"], vec![1, 0, 0, 1]);
        assert!(s.unseen.counts.len() <= MAX_BUCKETS as usize + 1);
        assert!(s.unseen.start_ns >= t0);
        // A span wider than MAX_BUCKETS buckets widens them instead.
        let wide = throughput(&s.points, 1, t0);
        assert!(
            wide.buckets() as u64 <= MAX_BUCKETS + 1,
            "{}",
            wide.buckets()
        );
    }

    #[test]
    fn unseen_counts_values_from_ack_until_first_read() {
        let h = History {
            ops: vec![
                op(
                    0,
                    0,
                    Process::Client(1),
                    OpType::Invoke,
                    "send",
                    json!([["send", "k", 1]]),
                ),
                op(
                    1,
                    100,
                    Process::Client(1),
                    OpType::Ok,
                    "send",
                    json!([["send", "k", [0, 1]]]),
                ),
                op(
                    2,
                    200,
                    Process::Client(1),
                    OpType::Invoke,
                    "send",
                    json!([["send", "k", 2]]),
                ),
                op(
                    3,
                    300,
                    Process::Client(1),
                    OpType::Ok,
                    "send",
                    json!([["send", "k", [1, 2]]]),
                ),
                op(
                    4,
                    1100,
                    Process::Client(crate::history::FINAL_PROCESS),
                    OpType::Invoke,
                    "poll",
                    json!([["poll"]]),
                ),
                op(
                    5,
                    1200,
                    Process::Client(crate::history::FINAL_PROCESS),
                    OpType::Ok,
                    "poll",
                    json!([["poll", {"k": [[0, 1]]}]]),
                ),
            ],
            warnings: vec![],
        };
        let u = unseen(&h, 250 * 1_000_000, 1_200 * 1_000_000);
        // 0-250 ms: value 1 acked (100 ms); 250-500: both; ... 1000-1250: value 2 only.
        assert_eq!(u.counts, vec![1, 2, 2, 2, 1]);
        assert_eq!(u.final_start_ns, Some(1_100_000_000));
    }

    fn op(index: u64, time_ms: u64, process: Process, t: OpType, f: &str, value: Value) -> Op {
        Op {
            index,
            time_ns: time_ms * 1_000_000,
            process,
            op_type: t,
            f: f.into(),
            value,
        }
    }

    fn c(p: u64) -> Process {
        Process::Client(p)
    }

    #[test]
    fn latencies_pair_invocations_with_completions_per_process() {
        let n = Process::nemesis();
        let h = History {
            ops: vec![
                op(0, 0, c(1), OpType::Invoke, "send", json!(null)),
                op(1, 5, c(2), OpType::Invoke, "poll", json!(null)),
                op(2, 10, c(1), OpType::Ok, "send", json!(null)),
                op(3, 11, n.clone(), OpType::Info, "start-partition", json!({})),
                op(4, 1500, c(2), OpType::Info, "poll", json!(null)),
                op(5, 1600, c(1), OpType::Invoke, "send", json!(null)),
                op(6, 1630, c(1), OpType::Fail, "send", json!(null)),
                op(7, 1700, c(3), OpType::Invoke, "send", json!(null)),
            ],
            warnings: vec![],
        };
        let s = analyze(&h);
        assert_eq!(
            s.points.len(),
            3,
            "the open invocation of process 3 is left out"
        );
        assert_eq!(s.points[0].latency_ns, 10_000_000);
        assert_eq!(s.points[0].invoke_index, 0);
        assert_eq!(s.points[0].complete_index, 2);
        assert_eq!(s.points[1].f, "poll");
        assert_eq!(s.points[1].op_type, OpType::Info);
        assert_eq!(s.points[1].latency_ns, 1_495_000_000);
        assert_eq!(s.duration_ns, 1_700_000_000);
        assert_eq!(s.throughput.series["ok"], vec![1, 0]);
        assert_eq!(s.throughput.series["info"], vec![0, 1]);
        assert_eq!(s.throughput.series["fail"], vec![0, 1]);
        let q: Vec<(&str, OpType)> = s
            .quantiles
            .iter()
            .map(|q| (q.f.as_str(), q.op_type))
            .collect();
        assert_eq!(
            q,
            vec![
                ("poll", OpType::Info),
                ("send", OpType::Ok),
                ("send", OpType::Fail)
            ]
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let points: Vec<LatencyPoint> = (1..=100)
            .map(|i| LatencyPoint {
                invoke_ns: i,
                latency_ns: i * 10,
                f: "send".into(),
                op_type: OpType::Ok,
                process: c(0),
                invoke_index: i,
                complete_index: i,
            })
            .rev()
            .collect();
        let q = quantiles(&points);
        assert_eq!(q.len(), 1);
        assert_eq!(
            (
                q[0].count,
                q[0].p50_ns,
                q[0].p90_ns,
                q[0].p99_ns,
                q[0].max_ns
            ),
            (100, 500, 900, 990, 1000)
        );
        assert!(quantile_of(&q, "send", OpType::Ok).is_some());
        assert!(quantile_of(&q, "send", OpType::Fail).is_none());
        let one = quantiles(&points[..1]);
        assert_eq!((one[0].p50_ns, one[0].p99_ns), (1000, 1000));
    }

    #[test]
    fn fault_intervals_pair_starts_with_heals() {
        let n = Process::nemesis();
        let i = OpType::Info;
        let h = History {
            ops: vec![
                op(
                    0,
                    100,
                    n.clone(),
                    i,
                    "start-partition",
                    json!({"n1": ["n2"]}),
                ),
                op(1, 200, n.clone(), i, "kill", json!({"nodes": ["n1", "n2"]})),
                op(
                    2,
                    300,
                    n.clone(),
                    i,
                    "stop-partition",
                    json!({"healed": ["n1"]}),
                ),
                op(3, 400, n.clone(), i, "start", json!({"nodes": ["n1"]})),
                op(
                    4,
                    450,
                    n.clone(),
                    i,
                    "pause",
                    json!({"action": {}, "error": "boom"}),
                ),
                op(
                    5,
                    500,
                    n.clone(),
                    i,
                    "strobe-clock",
                    json!({"nodes": ["n3"], "duration-ms": 250}),
                ),
                op(6, 600, n.clone(), i, "corrupt-file", json!({"node": "n3"})),
                op(7, 700, n.clone(), i, "start-disk", json!({"nodes": ["n3"]})),
                op(8, 800, n.clone(), i, "start", json!({"nodes": ["n2"]})),
                op(9, 900, n.clone(), i, "bump-clock", json!({"nodes": ["n1"]})),
                op(
                    10,
                    950,
                    n.clone(),
                    i,
                    "reset-clock",
                    json!({"nodes": ["n1", "n2", "n3"]}),
                ),
            ],
            warnings: vec![],
        };
        let (iv, ev) = fault_intervals(&h);
        let got: Vec<(&str, Option<&str>, u64, Option<u64>)> = iv
            .iter()
            .map(|f| {
                (
                    f.kind.as_str(),
                    f.node.as_deref(),
                    f.start_ns / 1_000_000,
                    f.end_ns.map(|e| e / 1_000_000),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("partition", None, 100, Some(300)),
                ("kill", Some("n1"), 200, Some(400)),
                ("kill", Some("n2"), 200, Some(800)),
                ("clock", Some("n3"), 500, Some(750)),
                ("disk", Some("n3"), 700, None),
                ("clock", Some("n1"), 900, Some(950)),
            ]
        );
        assert_eq!(iv[1].end_index, Some(3));
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].error.as_deref(), Some("boom"));
        assert_eq!(ev[1].f, "corrupt-file");
    }

    #[test]
    fn a_large_history_is_analyzed_in_one_pass() {
        // 200k client ops over 8 processes: fast enough that a quadratic step would show.
        let mut ops = Vec::new();
        for i in 0..100_000u64 {
            let p = c(i % 8);
            ops.push(op(2 * i, i, p.clone(), OpType::Invoke, "send", json!(null)));
            ops.push(op(2 * i + 1, i + 1, p, OpType::Ok, "send", json!(null)));
        }
        let s = analyze(&History {
            ops,
            warnings: vec![],
        });
        assert_eq!(s.points.len(), 100_000);
        assert_eq!(s.quantiles[0].p99_ns, 1_000_000);
        assert_eq!(s.throughput.series["ok"].iter().sum::<u64>(), 100_000);
    }
}
