//! The history turned into what the checkers reason about: one [`Txn`] per client operation
//! (invocation paired with its completion), its micro-ops parsed once into flat arrays of
//! sends and reads with interned keys and processes, in completion order; ops never completed
//! become indeterminate transactions at the end. Also the realtime order, in linear space:
//! every ok data op (send, poll, transaction) raises a *barrier* when it completes (barriers are
//! numbered 1, 2, ... in completion order; completions with no invocation between them share
//! one, since no op can tell them apart), and every op remembers the last barrier raised
//! before it was invoked; so `a` completed before `b` was invoked exactly when
//! `barrier(a) <= barrier_before(b)`. Only ok data ops raise barriers: an indeterminate op may
//! take effect after its completion was recorded.
//!
//! Every completion's reads are kept, whatever its outcome (Jepsen uses failed and
//! indeterminate polls for version orders and skip checks too); a record read without an offset
//! (`[null, v]`) is kept with [`NO_OFFSET`]. Keys are grouped into *units*, the logs version
//! orders are built over: a key whose partition the history records (the fourth element of a
//! send, `["send", k, v, p]`, or the third of a poll, `["poll", {k: [...]}, {k: p}]`) belongs to
//! the unit of that partition; a key whose partition is never recorded is a unit of its own
//! (older histories, hand-written ones). `assign`/`subscribe` values (partition numbers or key
//! names) and `["rebalance", [...]]` micro-ops are kept as each op's *targets*.
//!
//! A [`Builder`] takes ops one at a time, so a history file can be checked while it is read
//! without holding its JSON in memory ([`crate::check_file`]); [`build`] feeds it an in-memory
//! [`History`].

use std::collections::HashMap;
use std::ops::Range;

use serde_json::Value;

use crate::fasthash::FastMap;
use crate::history::{History, OpType, Process};

/// How a client operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It happened.
    Ok,
    /// Unknown (timeout, lost connection, or never completed).
    Info,
    /// It certainly did not happen.
    Fail,
}

/// What an operation did, by its `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sends, polls or both.
    Data,
    /// `assign`, `subscribe` or `crash`: the process's consumer position may change.
    Reposition,
    /// Anything else.
    Other,
}

/// A send micro-op: its record (key, value; see [`Txns::send`]) and acknowledged offset
/// ([`NO_OFFSET`]: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// The record sent.
    pub rec: u32,
    /// The offset its acknowledgement gave ([`NO_OFFSET`] when none).
    pub offset: i64,
}

impl Send {
    /// The acknowledged offset, if any.
    pub fn offset(&self) -> Option<i64> {
        (self.offset != NO_OFFSET).then_some(self.offset)
    }
}

/// No record (an empty slot of the dense record index).
const NO_REC: u32 = u32::MAX;

/// The offset of a record read without one (`[null, v]`).
pub const NO_OFFSET: i64 = i64::MIN;

/// One record a poll returned, in 12 bytes: the (key, value) pair interned as a record
/// ([`Txns::key_of`] and [`Txns::value_of`] give it back), a bit marking the first record of
/// each poll micro-op, and the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct ReadRec {
    /// The record, with [`FIRST_OF_POLL`] set on a poll's first record.
    tagged: u32,
    /// Offset ([`NO_OFFSET`] when the history has none).
    offset: i64,
}

/// The bit of [`ReadRec`]'s record marking the first record of a poll micro-op (so records
/// number below 2^31).
const FIRST_OF_POLL: u32 = 1 << 31;

impl ReadRec {
    /// The record (key, value) read: an index into [`Txns::rec_key`] and [`Txns::rec_value`].
    pub fn rec(&self) -> u32 {
        self.tagged & !FIRST_OF_POLL
    }

    /// Whether this is the first record its poll micro-op returned.
    pub fn first_of_poll(&self) -> bool {
        self.tagged & FIRST_OF_POLL != 0
    }

    /// The offset, if the history has one.
    pub fn offset(&self) -> Option<i64> {
        let o = self.offset;
        (o != NO_OFFSET).then_some(o)
    }

    /// The offset, [`NO_OFFSET`] when the history has none.
    pub fn raw_offset(&self) -> i64 {
        self.offset
    }
}

/// What an `assign`, `subscribe` or `rebalance` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A partition number.
    Partition(u32),
    /// A key id (a unit by its key's name).
    Key(u32),
    /// Everything (`"all"`: the whole topic).
    All,
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Txn {
    /// History index of its completion (of its invocation if it never completed).
    pub index: u64,
    /// Process id (index into [`Txns::processes`]).
    pub process: u32,
    /// Invocation time, ns.
    pub invoke_ns: u64,
    /// Completion time, ns ([`NEVER`] if it never completed; see [`Txn::complete_ns`]).
    complete: u64,
    /// Outcome.
    pub status: Status,
    /// What it did.
    pub kind: Kind,
    /// It carried a poll micro-op (ok completions only).
    pub polled: bool,
    /// Its invocation's function, an index into [`Txns::fns`].
    pub f: u8,
    /// The barrier this op raised when it completed (ok data ops; 0 for none).
    pub barrier: u32,
    /// The last barrier raised before this op was invoked (0 for none).
    pub barrier_before: u32,
    sends: Range<u32>,
    reads: Range<u32>,
    /// Its targets and rebalances (rare) in [`Txns`]'s `extras`, or [`NEVER_EXTRA`].
    extra: u32,
    /// History index of its completion minus that of its invocation ([`NO_INVOKE`]: no
    /// invocation, or too far apart: see [`Txns::invoke_index`]).
    invoke_gap: u32,
}

/// No invocation gap recorded (see [`Txns::invoke_index`]).
const NO_INVOKE: u32 = u32::MAX;

/// The completion time of an op that never completed.
pub const NEVER: u64 = u64::MAX;

/// No targets or rebalances.
const NEVER_EXTRA: u32 = u32::MAX;

impl Txn {
    /// Completion time, ns (None if it never completed).
    pub fn complete_ns(&self) -> Option<u64> {
        (self.complete != NEVER).then_some(self.complete)
    }
}

/// The targets (`assign`/`subscribe`) and rebalances of an op, as ranges of `target_store`.
#[derive(Debug, Clone)]
struct Extra {
    targets: Range<u32>,
    rebalances: Range<u32>,
}

/// Every client operation of a history.
#[derive(Debug, Default)]
pub struct Txns {
    /// Operations in completion order (never-completed ones last).
    pub txns: Vec<Txn>,
    /// Interned key names.
    pub keys: Vec<String>,
    /// Interned invocation functions (`send`, `poll`, ...; at most 255, later ones share the
    /// last).
    pub fns: Vec<String>,
    /// Invocation indices too far from their completions for [`Txn`]'s gap, by position in
    /// `txns`.
    far_invokes: FastMap<u32, u64>,
    /// Interned processes.
    pub processes: Vec<Process>,
    send_store: Vec<Send>,
    read_store: Vec<ReadRec>,
    target_store: Vec<Target>,
    extras: Vec<Extra>,
    /// Barriers raised (the highest barrier number).
    pub barriers: u32,
    /// Each key's recorded partition, by key id.
    pub key_partition: Vec<Option<u32>>,
    /// Each key's unit (the log it belongs to), by key id.
    pub key_unit: Vec<u32>,
    /// Each unit's partition (`None`: a key of unknown partition, a unit of its own).
    pub unit_partition: Vec<Option<u32>>,
    /// Each unit's name: `"p<n>"` for a partition, the key's name otherwise.
    pub unit_names: Vec<String>,
    /// The unit of each partition number (u32::MAX for partitions never seen).
    partition_unit: Vec<u32>,
    /// Each record's key id: every (key, value) sent or read, interned as it was parsed.
    pub rec_key: Vec<u32>,
    /// Each record's value.
    pub rec_value: Vec<i64>,
    /// Per key id, the record of each small non-negative value (the workload's values count
    /// from 0 per key): `dense[k][v]` ([`NO_REC`]: none yet). No hashing per read, 4 bytes
    /// per record.
    rec_dense: Vec<Vec<u32>>,
    /// (key, value) → record for values `rec_dense` does not hold (negative or far apart).
    rec_sparse: FastMap<(u32, i64), u32>,
}

fn slice<'s, T>(store: &'s [T], r: &Range<u32>) -> &'s [T] {
    &store[r.start as usize..r.end as usize]
}

impl Txns {
    /// History index of an op's invocation (None for a completion without one).
    pub fn invoke_index(&self, at: usize) -> Option<u64> {
        let t = self.txns.get(at)?;
        if t.complete == NEVER {
            return Some(t.index);
        }
        match t.invoke_gap {
            NO_INVOKE => self.far_invokes.get(&(at as u32)).copied(),
            gap => Some(t.index - u64::from(gap)),
        }
    }

    /// The function an op was invoked with.
    pub fn f_name(&self, t: &Txn) -> &str {
        self.fns.get(t.f as usize).map_or("", String::as_str)
    }

    /// The op's sends, in op order.
    pub fn sends(&self, t: &Txn) -> &[Send] {
        slice(&self.send_store, &t.sends)
    }

    /// A send as (key id, value, acknowledged offset).
    pub fn send(&self, s: &Send) -> (u32, i64, Option<i64>) {
        (
            self.rec_key[s.rec as usize],
            self.rec_value[s.rec as usize],
            s.offset(),
        )
    }

    /// The records the op's polls returned, in read order (every completion type).
    pub fn reads(&self, t: &Txn) -> &[ReadRec] {
        slice(&self.read_store, &t.reads)
    }

    /// Where the op's reads start among every op's reads (reads are stored in op order, so
    /// `read_start(t) + i` numbers the op's `i`-th read across the history).
    pub fn read_start(&self, t: &Txn) -> usize {
        t.reads.start as usize
    }

    /// The op's reads split into runs of one key, as the poll returned them.
    pub fn read_groups<'s>(&'s self, t: &Txn) -> impl Iterator<Item = &'s [ReadRec]> + 's {
        self.reads(t)
            .chunk_by(|a, b| self.key_of(a) == self.key_of(b) && !b.first_of_poll())
    }

    /// The key id of a read.
    pub fn key_of(&self, r: &ReadRec) -> u32 {
        self.rec_key[r.rec() as usize]
    }

    /// The value of a read.
    pub fn value_of(&self, r: &ReadRec) -> i64 {
        self.rec_value[r.rec() as usize]
    }

    /// The record of (key, value), if the history sends or reads it.
    pub fn rec(&self, key: u32, value: i64) -> Option<u32> {
        let dense = self
            .rec_dense
            .get(key as usize)
            .and_then(|d| d.get(usize::try_from(value).ok()?));
        match dense {
            Some(&r) if r != NO_REC => Some(r),
            // A value the dense index grew over after it was interned sparsely.
            _ => self.rec_sparse.get(&(key, value)).copied(),
        }
    }

    fn intern_rec(&mut self, key: u32, value: i64) -> u32 {
        let next = self.rec_key.len() as u32;
        let k = key as usize;
        if self.rec_dense.len() <= k {
            self.rec_dense.resize_with(k + 1, Vec::new);
        }
        let dense = &mut self.rec_dense[k];
        let slot = match usize::try_from(value) {
            // Grow only while the values stay about dense (at most a few thousand ahead).
            Ok(v) if v < dense.len() => Some(v),
            Ok(v) if v <= dense.len().saturating_mul(2) + 4096 => {
                dense.resize(v + 1, NO_REC);
                Some(v)
            }
            _ => None,
        };
        let id = match slot {
            Some(v) => {
                let r = &mut dense[v];
                if *r == NO_REC {
                    // Interned sparsely before the dense index grew over it?
                    *r = match self.rec_sparse.is_empty() {
                        true => next,
                        false => self.rec_sparse.get(&(key, value)).copied().unwrap_or(next),
                    };
                }
                *r
            }
            None => *self.rec_sparse.entry((key, value)).or_insert(next),
        };
        if id == next {
            self.rec_key.push(key);
            self.rec_value.push(value);
        }
        id
    }

    /// The keys/partitions an `assign`/`subscribe` op names.
    pub fn targets(&self, t: &Txn) -> &[Target] {
        match self.extras.get(t.extra as usize) {
            Some(e) => slice(&self.target_store, &e.targets),
            None => &[],
        }
    }

    /// The keys/partitions the op's `rebalance` micro-ops name.
    pub fn rebalances(&self, t: &Txn) -> &[Target] {
        match self.extras.get(t.extra as usize) {
            Some(e) => slice(&self.target_store, &e.rebalances),
            None => &[],
        }
    }

    /// The unit a key belongs to.
    pub fn unit_of(&self, key: u32) -> u32 {
        self.key_unit[key as usize]
    }

    /// Whether `target` names `unit`.
    pub fn names_unit(&self, target: Target, unit: u32) -> bool {
        match target {
            Target::All => true,
            Target::Partition(p) => self.unit_partition[unit as usize] == Some(p),
            Target::Key(k) => self.key_unit[k as usize] == unit,
        }
    }

    /// The unit of a partition number, if the history has one.
    pub fn partition_unit(&self, p: u32) -> Option<u32> {
        self.partition_unit
            .get(p as usize)
            .copied()
            .filter(|u| *u != u32::MAX)
    }

    /// Groups keys into units (after every op is in).
    fn resolve_units(&mut self) {
        self.key_partition.resize(self.keys.len(), None);
        let mut by_partition: HashMap<u32, u32> = HashMap::new();
        self.key_unit = Vec::with_capacity(self.keys.len());
        for (k, p) in self.key_partition.iter().enumerate() {
            let unit = match p {
                Some(p) => *by_partition.entry(*p).or_insert_with(|| {
                    self.unit_partition.push(Some(*p));
                    self.unit_names.push(format!("p{p}"));
                    (self.unit_partition.len() - 1) as u32
                }),
                None => {
                    self.unit_partition.push(None);
                    self.unit_names.push(self.keys[k].clone());
                    (self.unit_partition.len() - 1) as u32
                }
            };
            self.key_unit.push(unit);
        }
        for (p, u) in by_partition {
            let p = p as usize;
            if p < (1 << 20) {
                if self.partition_unit.len() <= p {
                    self.partition_unit.resize(p + 1, u32::MAX);
                }
                self.partition_unit[p] = u;
            }
        }
    }
}

#[derive(Debug)]
struct OpenOp {
    index: u64,
    kind: Kind,
    f: u8,
    time_ns: u64,
    sends: Vec<Send>,
    barrier_before: u32,
}

#[derive(Debug, Clone, Copy)]
enum Current {
    None,
    Invoke(u32),
    Complete {
        pid: u32,
        null_value: bool,
        polls: u32,
        /// `polls` when the last record was read (a new poll's first record differs).
        read_poll: u32,
    },
}

/// Builds [`Txns`] from ops fed one at a time: `invoke` or `complete`, then the op's micro-ops
/// (`send`, `poll`, `read`), then `end`.
#[derive(Debug)]
pub struct Builder {
    out: Txns,
    key_ids: FastMap<String, u32>,
    proc_ids: FastMap<Process, u32>,
    open: HashMap<u32, OpenOp>,
    current: Current,
    /// An op was invoked since the last barrier was raised (the next ok data completion
    /// raises a new one; otherwise it shares the last).
    invoked_since_barrier: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// An empty builder.
    pub fn new() -> Builder {
        Builder {
            out: Txns::default(),
            key_ids: FastMap::default(),
            proc_ids: FastMap::default(),
            open: HashMap::new(),
            current: Current::None,
            invoked_since_barrier: true,
        }
    }

    /// The id of a key name (interned on first use).
    pub fn intern_key(&mut self, k: &str) -> u32 {
        self.key_id(k)
    }

    fn key_id(&mut self, k: &str) -> u32 {
        if let Some(id) = self.key_ids.get(k) {
            return *id;
        }
        let id = self.out.keys.len() as u32;
        self.out.keys.push(k.to_string());
        self.key_ids.insert(k.to_string(), id);
        id
    }

    fn proc_id(&mut self, p: &Process) -> u32 {
        if let Some(id) = self.proc_ids.get(p) {
            return *id;
        }
        let id = self.out.processes.len() as u32;
        self.out.processes.push(p.clone());
        self.proc_ids.insert(p.clone(), id);
        id
    }

    fn fn_id(&mut self, f: &str) -> u8 {
        if let Some(i) = self.out.fns.iter().position(|x| x == f) {
            return i as u8;
        }
        if self.out.fns.len() < usize::from(u8::MAX) {
            self.out.fns.push(f.to_string());
        }
        (self.out.fns.len() - 1) as u8
    }

    /// A client process invokes an op.
    pub fn invoke(&mut self, index: u64, time_ns: u64, process: &Process, f: &str) {
        let pid = self.proc_id(process);
        let fid = self.fn_id(f);
        let barrier_before = self.out.barriers;
        self.invoked_since_barrier = true;
        self.open.insert(
            pid,
            OpenOp {
                index,
                kind: kind_of(f),
                f: fid,
                time_ns,
                sends: Vec::new(),
                barrier_before,
            },
        );
        self.current = Current::Invoke(pid);
    }

    /// A client process completes its op; `null_value` when the completion carries no
    /// micro-ops (the invocation's are used).
    pub fn complete(
        &mut self,
        index: u64,
        time_ns: u64,
        process: &Process,
        op_type: OpType,
        f: &str,
        null_value: bool,
    ) {
        let pid = self.proc_id(process);
        let (invoke_ns, barrier_before, invoke, fid) = match self.open.get(&pid) {
            Some(o) => (o.time_ns, o.barrier_before, Some(o.index), o.f),
            None => (time_ns, 0, None, self.fn_id(f)),
        };
        let at = self.out.txns.len() as u32;
        let invoke_gap = match invoke {
            Some(i) if i <= index && index - i < u64::from(NO_INVOKE) => (index - i) as u32,
            Some(i) => {
                self.out.far_invokes.insert(at, i);
                NO_INVOKE
            }
            None => NO_INVOKE,
        };
        let status = match op_type {
            OpType::Ok => Status::Ok,
            OpType::Fail => Status::Fail,
            _ => Status::Info,
        };
        let sends = self.out.send_store.len() as u32;
        let reads = self.out.read_store.len() as u32;
        self.out.txns.push(Txn {
            index,
            process: pid,
            invoke_ns,
            complete: time_ns,
            status,
            kind: kind_of(f),
            polled: false,
            f: fid,
            sends: sends..sends,
            reads: reads..reads,
            extra: NEVER_EXTRA,
            invoke_gap,
            barrier: 0,
            barrier_before,
        });
        self.current = Current::Complete {
            pid,
            null_value,
            polls: 0,
            read_poll: 0,
        };
    }

    /// Records the partition of a key (the first one recorded wins).
    pub fn partition(&mut self, key: &str, partition: u32) {
        let k = self.key_id(key) as usize;
        if self.out.key_partition.len() <= k {
            self.out.key_partition.resize(k + 1, None);
        }
        self.out.key_partition[k].get_or_insert(partition);
    }

    /// A partition number or key name an `assign`/`subscribe` completion names.
    pub fn target(&mut self, target: TargetRef<'_>) {
        if let (Current::Complete { .. }, Some(Kind::Reposition)) =
            (self.current, self.out.txns.last().map(|t| t.kind))
        {
            let t = self.resolve_target(target);
            let at = self.out.target_store.len() as u32;
            self.out.target_store.push(t);
            if let Some(e) = self.last_extra(at) {
                e.targets.end = at + 1;
                e.rebalances = at + 1..at + 1;
            }
        }
    }

    /// A partition number or key name a `rebalance` micro-op of the current completion names.
    pub fn rebalance(&mut self, target: TargetRef<'_>) {
        if let Current::Complete { .. } = self.current {
            let t = self.resolve_target(target);
            let at = self.out.target_store.len() as u32;
            self.out.target_store.push(t);
            if let Some(e) = self.last_extra(at) {
                if e.rebalances.end != at {
                    e.rebalances = at..at;
                }
                e.rebalances.end = at + 1;
            }
        }
    }

    /// The current completion's targets and rebalances, made (empty, at `at`) on first use.
    fn last_extra(&mut self, at: u32) -> Option<&mut Extra> {
        let tx = self.out.txns.last_mut()?;
        if tx.extra == NEVER_EXTRA {
            tx.extra = self.out.extras.len() as u32;
            self.out.extras.push(Extra {
                targets: at..at,
                rebalances: at..at,
            });
        }
        self.out.extras.get_mut(tx.extra as usize)
    }

    fn resolve_target(&mut self, target: TargetRef<'_>) -> Target {
        match target {
            TargetRef::Partition(p) => Target::Partition(p),
            TargetRef::Name("all") => Target::All,
            TargetRef::Name(k) => Target::Key(self.key_id(k)),
        }
    }

    /// A send micro-op of the current op.
    pub fn send(&mut self, key: &str, value: i64, offset: Option<i64>) {
        match self.current {
            Current::Invoke(pid) => {
                let k = self.key_id(key);
                let rec = self.out.intern_rec(k, value);
                if let Some(o) = self.open.get_mut(&pid) {
                    o.sends.push(Send {
                        rec,
                        offset: offset.unwrap_or(NO_OFFSET),
                    });
                }
            }
            Current::Complete { .. } => {
                let k = self.key_id(key);
                let rec = self.out.intern_rec(k, value);
                self.out.send_store.push(Send {
                    rec,
                    offset: offset.unwrap_or(NO_OFFSET),
                });
            }
            Current::None => {}
        }
    }

    /// The current op carried a poll micro-op.
    pub fn poll(&mut self) {
        if let (Current::Complete { polls, .. }, Some(t)) =
            (&mut self.current, self.out.txns.last_mut())
        {
            t.polled |= t.status == Status::Ok;
            *polls += 1;
        }
    }

    /// A record read by the current op's latest poll (`offset` None when the history has
    /// none).
    pub fn read(&mut self, key: &str, offset: Option<i64>, value: i64) {
        let key = self.key_id(key);
        self.read_key(key, offset, value);
    }

    /// As [`Builder::read`], with the key already interned ([`Builder::intern_key`]): a poll's
    /// records of one key intern it once.
    pub fn read_key(&mut self, key: u32, offset: Option<i64>, value: i64) {
        if let Current::Complete {
            polls,
            ref mut read_poll,
            ..
        } = self.current
        {
            let first = polls != *read_poll;
            *read_poll = polls;
            let rec = self.out.intern_rec(key, value);
            self.out.read_store.push(ReadRec {
                tagged: rec | if first { FIRST_OF_POLL } else { 0 },
                offset: offset.unwrap_or(NO_OFFSET),
            });
        }
    }

    /// The current op's micro-ops are all in.
    pub fn end(&mut self) {
        if let Current::Complete {
            pid, null_value, ..
        } = self.current
        {
            let open = self.open.remove(&pid);
            if null_value {
                if let Some(o) = &open {
                    self.out.send_store.extend_from_slice(&o.sends);
                }
            }
            let sends_end = self.out.send_store.len() as u32;
            let reads_end = self.out.read_store.len() as u32;
            if let Some(t) = self.out.txns.last_mut() {
                t.sends.end = sends_end;
                t.reads.end = reads_end;
                if t.status == Status::Ok && t.kind == Kind::Data {
                    if self.invoked_since_barrier {
                        self.out.barriers += 1;
                        self.invoked_since_barrier = false;
                    }
                    t.barrier = self.out.barriers;
                }
            }
        }
        self.current = Current::None;
    }

    /// Feeds a micro-op list held as JSON (`[["send", k, v | [o, v], p?], ["poll", {k: [[o,
    /// v]]}, {k: p}?], ["rebalance", [p | k, ...]]]`, or an `assign`'s list of partitions or
    /// keys).
    pub fn mops(&mut self, mops: &Value) {
        for m in mops.as_array().into_iter().flatten() {
            match m {
                Value::Number(n) => {
                    if let Some(p) = n.as_u64().and_then(|p| u32::try_from(p).ok()) {
                        self.target(TargetRef::Partition(p));
                    }
                    continue;
                }
                Value::String(s) => {
                    self.target(TargetRef::Name(s));
                    continue;
                }
                _ => {}
            }
            let Some(a) = m.as_array() else { continue };
            match a.first().and_then(Value::as_str) {
                Some("rebalance") => {
                    for t in a.get(1).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(p) = t.as_u64().and_then(|p| u32::try_from(p).ok()) {
                            self.rebalance(TargetRef::Partition(p));
                        } else if let Some(k) = t.as_str() {
                            self.rebalance(TargetRef::Name(k));
                        }
                    }
                }
                Some("send") => {
                    let Some(key) = a.get(1).and_then(Value::as_str) else {
                        continue;
                    };
                    if let Some(p) = a.get(3).and_then(Value::as_u64) {
                        if let Ok(p) = u32::try_from(p) {
                            self.partition(key, p);
                        }
                    }
                    match a.get(2) {
                        Some(Value::Array(ov)) => {
                            if let Some(v) = ov.get(1).and_then(Value::as_i64) {
                                self.send(key, v, ov.first().and_then(Value::as_i64));
                            }
                        }
                        Some(v) => {
                            if let Some(v) = v.as_i64() {
                                self.send(key, v, None);
                            }
                        }
                        None => {}
                    }
                }
                Some("poll") => {
                    self.poll();
                    if let Some(parts) = a.get(2).and_then(Value::as_object) {
                        for (k, p) in parts {
                            if let Some(p) = p.as_u64().and_then(|p| u32::try_from(p).ok()) {
                                self.partition(k, p);
                            }
                        }
                    }
                    let Some(obj) = a.get(1).and_then(Value::as_object) else {
                        continue;
                    };
                    for (k, pairs) in obj {
                        for p in pairs.as_array().into_iter().flatten() {
                            if let Some(v) = p.get(1).and_then(Value::as_i64) {
                                self.read(k, p.get(0).and_then(Value::as_i64), v);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Ops still open become indeterminate; the result.
    pub fn finish(mut self) -> Txns {
        let mut dangling: Vec<(u32, OpenOp)> = self.open.drain().collect();
        dangling.sort_by_key(|(_, o)| o.index);
        for (pid, o) in dangling {
            let start = self.out.send_store.len() as u32;
            self.out.send_store.extend_from_slice(&o.sends);
            let end = self.out.send_store.len() as u32;
            let r = self.out.read_store.len() as u32;
            self.out.txns.push(Txn {
                index: o.index,
                process: pid,
                invoke_ns: o.time_ns,
                complete: NEVER,
                status: Status::Info,
                kind: o.kind,
                polled: false,
                f: o.f,
                sends: start..end,
                reads: r..r,
                extra: NEVER_EXTRA,
                invoke_gap: 0,
                barrier: 0,
                barrier_before: o.barrier_before,
            });
        }
        self.out.resolve_units();
        self.out
    }
}

/// Pairs invocations with completions and parses every client op of an in-memory history.
pub fn build(history: &History) -> Txns {
    let mut b = Builder::new();
    let nemesis = Process::nemesis();
    for op in &history.ops {
        if op.process == nemesis {
            continue;
        }
        if op.op_type == OpType::Invoke {
            b.invoke(op.index, op.time_ns, &op.process, &op.f);
        } else {
            b.complete(
                op.index,
                op.time_ns,
                &op.process,
                op.op_type,
                &op.f,
                op.value.is_null(),
            );
        }
        b.mops(&op.value);
        b.end();
    }
    b.finish()
}

/// A target as written in the history, before interning.
#[derive(Debug, Clone, Copy)]
pub enum TargetRef<'a> {
    /// A partition number.
    Partition(u32),
    /// A key name (or `"all"`).
    Name(&'a str),
}

/// The kind of an op by its `f`.
pub fn kind_of(f: &str) -> Kind {
    match f {
        "send" | "poll" | "txn" => Kind::Data,
        "assign" | "subscribe" | "crash" => Kind::Reposition,
        _ => Kind::Other,
    }
}

/// What the micro-op parser ([`feed_raw_into`]) hands each micro-op's parts to: a
/// [`Builder`], or a lighter collector that needs only some of them (the report's unseen
/// series, [`crate::stats::Collector`]).
pub trait MopSink {
    /// The id of a key name (interned on first use).
    fn intern_key(&mut self, key: &str) -> u32;
    /// A send micro-op.
    fn send(&mut self, key: &str, value: i64, offset: Option<i64>);
    /// The partition a send or poll records for a key.
    fn partition(&mut self, _key: &str, _partition: u32) {}
    /// A poll micro-op begins.
    fn poll(&mut self) {}
    /// A record the latest poll returned.
    fn read_key(&mut self, key: u32, offset: Option<i64>, value: i64);
    /// A partition or key an `assign`/`subscribe` names.
    fn target(&mut self, _target: TargetRef<'_>) {}
    /// A partition or key a `rebalance` micro-op names.
    fn rebalance(&mut self, _target: TargetRef<'_>) {}
}

impl MopSink for Builder {
    fn intern_key(&mut self, key: &str) -> u32 {
        self.key_id(key)
    }
    fn send(&mut self, key: &str, value: i64, offset: Option<i64>) {
        Builder::send(self, key, value, offset)
    }
    fn partition(&mut self, key: &str, partition: u32) {
        Builder::partition(self, key, partition)
    }
    fn poll(&mut self) {
        Builder::poll(self)
    }
    fn read_key(&mut self, key: u32, offset: Option<i64>, value: i64) {
        Builder::read_key(self, key, offset, value)
    }
    fn target(&mut self, target: TargetRef<'_>) {
        Builder::target(self, target)
    }
    fn rebalance(&mut self, target: TargetRef<'_>) {
        Builder::rebalance(self, target)
    }
}

/// Feeds micro-ops given as raw JSON text straight into a [`Builder`], without building a
/// `serde_json::Value` (the fast path of [`crate::check_file`]).
pub fn feed_raw(b: &mut Builder, json: &str) -> Result<(), serde_json::Error> {
    feed_raw_into(b, json)
}

/// Feeds micro-ops given as raw JSON text into any [`MopSink`], without building a
/// `serde_json::Value`.
pub fn feed_raw_into<S: MopSink>(sink: &mut S, json: &str) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde::de::DeserializeSeed::deserialize(raw::Mops(sink), &mut de)?;
    de.end()
}

mod raw {
    //! Serde seeds and visitors that parse micro-ops into a [`MopSink`].

    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::{MopSink, TargetRef};

    /// A string, borrowed from the input when it has no escapes.
    pub struct Str<'de>(pub Cow<'de, str>);

    impl<'de> de::Deserialize<'de> for Str<'de> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Str<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                    Ok(Str(Cow::Owned(v.to_string())))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// Visitor methods that accept and skip maps, null and non-integer scalars.
    macro_rules! ignore_maps_and_others {
        () => {
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(())
            }
            fn visit_unit<E: de::Error>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
                Ok(())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
                Ok(())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
                Ok(())
            }
        };
    }

    /// The micro-op list.
    pub struct Mops<'b, S>(pub &'b mut S);

    impl<'de, S: MopSink> DeserializeSeed<'de> for Mops<'_, S> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de, S: MopSink> Visitor<'de> for Mops<'_, S> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of micro-ops")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Mop(&mut *self.0))?.is_some() {}
            Ok(())
        }
        // Non-client values (details maps, numbers, strings) carry no micro-ops.
        ignore_maps_and_others!();
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
    }

    /// One micro-op: `["send", k, v | [o, v], p?]`, `["poll", {k: [[o, v], ...]}, {k: p}?]`,
    /// `["rebalance", [p | k, ...]]`, an `assign`'s partition number or key name, or anything
    /// else (ignored).
    struct Mop<'b, S>(&'b mut S);

    impl<'de, S: MopSink> DeserializeSeed<'de> for Mop<'_, S> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de, S: MopSink> Visitor<'de> for Mop<'_, S> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a micro-op such as [\"send\", key, value]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let b = self.0;
            let tag: Option<Str> = seq.next_element()?;
            match tag.as_ref().map(|t| t.0.as_ref()) {
                Some("send") => {
                    let key: Option<Str> = seq.next_element()?;
                    let sent: Option<Sent> = seq.next_element()?;
                    let partition: Option<Option<u32>> = seq.next_element()?;
                    if let (Some(k), Some(Sent(off, v))) = (key, sent) {
                        b.send(&k.0, v, off);
                        if let Some(Some(p)) = partition {
                            b.partition(&k.0, p);
                        }
                    }
                }
                Some("poll") => {
                    b.poll();
                    seq.next_element_seed(Polled(&mut *b))?;
                    let parts: Option<Option<Vec<(Str, u32)>>> =
                        seq.next_element_seed(PartitionMap)?;
                    for (k, p) in parts.flatten().into_iter().flatten() {
                        b.partition(&k.0, p);
                    }
                }
                Some("rebalance") => {
                    let named: Option<Option<Vec<Named>>> = seq.next_element()?;
                    for n in named.flatten().into_iter().flatten() {
                        match n {
                            Named::Partition(p) => b.rebalance(TargetRef::Partition(p)),
                            Named::Key(k) => b.rebalance(TargetRef::Name(&k.0)),
                        }
                    }
                }
                _ => {}
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
        // An `assign`'s partition numbers and key names.
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            if let Ok(p) = u32::try_from(v) {
                self.0.target(TargetRef::Partition(p));
            }
            Ok(())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.0.target(TargetRef::Name(v));
            Ok(())
        }
        ignore_maps_and_others!();
    }

    /// A partition number or a key name.
    enum Named<'de> {
        Partition(u32),
        Key(Str<'de>),
    }

    impl<'de> de::Deserialize<'de> for Named<'de> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Named<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a partition number or a key")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Named<'de>, E> {
                    u32::try_from(v)
                        .map(Named::Partition)
                        .map_err(|_| E::custom("partition out of range"))
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Named<'de>, E> {
                    Ok(Named::Key(Str(Cow::Borrowed(v))))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Named<'de>, E> {
                    Ok(Named::Key(Str(Cow::Owned(v.to_string()))))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A poll's `{key: partition}` map (or null).
    struct PartitionMap;

    impl<'de> DeserializeSeed<'de> for PartitionMap {
        type Value = Option<Vec<(Str<'de>, u32)>>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for PartitionMap {
        type Value = Option<Vec<(Str<'de>, u32)>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of key to partition")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, p)) = map.next_entry::<Str, u32>()? {
                out.push((k, p));
            }
            Ok(Some(out))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    /// A send's value: `v` (not acknowledged) or `[offset, v]` (offset may be null).
    struct Sent(Option<i64>, i64);

    impl<'de> de::Deserialize<'de> for Sent {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Sent;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a value or [offset, value]")
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Sent, E> {
                    Ok(Sent(None, v))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Sent, E> {
                    i64::try_from(v)
                        .map(|v| Sent(None, v))
                        .map_err(|_| E::custom("value out of range"))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sent, A::Error> {
                    let off: Option<Option<i64>> = seq.next_element()?;
                    let v: Option<i64> = seq.next_element()?;
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    match v {
                        Some(v) => Ok(Sent(off.flatten(), v)),
                        None => Err(de::Error::custom("[offset, value] without a value")),
                    }
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A poll's result: `{key: [[offset, value], ...]}` (or null).
    struct Polled<'b, S>(&'b mut S);

    impl<'de, S: MopSink> DeserializeSeed<'de> for Polled<'_, S> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de, S: MopSink> Visitor<'de> for Polled<'_, S> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of key to [[offset, value], ...]")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Str>()? {
                let key = self.0.intern_key(&key.0);
                map.next_value_seed(Records {
                    b: &mut *self.0,
                    key,
                })?;
            }
            Ok(())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
    }

    struct Records<'b, S> {
        b: &'b mut S,
        key: u32,
    }

    impl<'de, S: MopSink> DeserializeSeed<'de> for Records<'_, S> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de, S: MopSink> Visitor<'de> for Records<'_, S> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of [offset, value]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some((o, v)) = seq.next_element::<(Option<i64>, i64)>()? {
                self.b.read_key(self.key, o, v);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_takes_12_bytes_and_marks_each_polls_first_record() {
        assert_eq!(std::mem::size_of::<ReadRec>(), 12);
        assert_eq!(std::mem::size_of::<Txn>(), 64);
        let mut b = Builder::new();
        let p = Process::Client(1);
        b.invoke(0, 0, &p, "txn");
        b.end();
        b.complete(1, 1, &p, OpType::Ok, "txn", false);
        b.poll();
        b.read("k", Some(0), 1);
        b.read("k", Some(1), 2);
        b.poll();
        b.read("k", Some(2), 3);
        b.end();
        let t = b.finish();
        let firsts: Vec<bool> = t
            .reads(&t.txns[0])
            .iter()
            .map(|r| r.first_of_poll())
            .collect();
        assert_eq!(firsts, vec![true, false, true]);
        assert_eq!(t.read_groups(&t.txns[0]).count(), 2, "one group per poll");
        let values: Vec<i64> = t.reads(&t.txns[0]).iter().map(|r| t.value_of(r)).collect();
        assert_eq!(values, vec![1, 2, 3]);
    }

    /// A (key, value) is one record whether its value is interned densely or sparsely, also
    /// when the dense index later grows over a value first interned sparsely.
    #[test]
    fn records_are_interned_once_dense_or_sparse() {
        let mut t = Txns::default();
        let far = t.intern_rec(0, 10_000);
        let neg = t.intern_rec(0, -3);
        let zero = t.intern_rec(0, 0);
        for v in 1..12_000 {
            t.intern_rec(0, v);
        }
        assert_eq!(t.intern_rec(0, 10_000), far);
        assert_eq!(t.intern_rec(0, -3), neg);
        assert_eq!(t.intern_rec(0, 0), zero);
        assert_eq!(t.rec(0, 10_000), Some(far));
        assert_eq!(t.rec(0, -3), Some(neg));
        assert_eq!(t.rec(0, 12_000), None);
        assert_eq!(t.rec(1, 0), None);
        assert_eq!(t.rec_key.len(), 12_001);
    }

    /// Completions with no invocation between them share a barrier; the realtime order read
    /// from barriers stays exact.
    #[test]
    fn back_to_back_completions_share_a_barrier() {
        let mut b = Builder::new();
        let p = |n| Process::Client(n);
        let mut index = 0;
        let mut step = |b: &mut Builder, proc: u64, t: OpType| {
            if t == OpType::Invoke {
                b.invoke(index, index, &p(proc), "send");
            } else {
                b.complete(index, index, &p(proc), t, "send", false);
            }
            b.end();
            index += 1;
        };
        // a and b invoked and complete back to back; c and d invoked, d completes, then c.
        step(&mut b, 1, OpType::Invoke); // a
        step(&mut b, 2, OpType::Invoke); // b
        step(&mut b, 1, OpType::Ok); // a done
        step(&mut b, 2, OpType::Ok); // b done: no invocation since a's barrier
        step(&mut b, 3, OpType::Invoke); // c
        step(&mut b, 4, OpType::Invoke); // d
        step(&mut b, 4, OpType::Ok); // d done: a new barrier
        step(&mut b, 3, OpType::Ok); // c done: shares d's
        let t = b.finish();
        let by = |i: u64| t.txns.iter().find(|x| x.index == i).expect("op");
        let (a, b_, d, c) = (by(2), by(3), by(6), by(7));
        assert_eq!(t.barriers, 2);
        assert_eq!((a.barrier, b_.barrier), (1, 1));
        assert_eq!((d.barrier, c.barrier), (2, 2));
        // a completed before c and d were invoked; d did not complete before c was invoked.
        assert!(a.barrier <= c.barrier_before && a.barrier <= d.barrier_before);
        assert!(d.barrier > c.barrier_before);
        assert!(
            a.barrier > b_.barrier_before,
            "b was invoked before a completed"
        );
    }
}
