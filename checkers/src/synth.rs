//! Seeded synthetic queue histories for property tests and benchmarks: a simulated, correct
//! log (every op takes effect atomically between its invoke and its completion) driven by
//! concurrent processes doing sends, polls and optionally transactions, with indeterminate and
//! failed ops and a final read phase; plus on-demand injection of each anomaly kind, recording
//! the key and ops that prove it so tests can check the checker's attribution. And
//! [`write_real_run`]: valid histories shaped like real runs (64 topic-partitions, thousands of
//! processes with crashes, final reads of one poll per partition), streamed to a file, for the
//! benchmark.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use crate::history::{History, Op, OpType, Process, FINAL_PROCESS};

/// Shape of a synthetic history.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Seed of every choice.
    pub seed: u64,
    /// Client operations to invoke in the main phase.
    pub ops: usize,
    /// Concurrent worker processes.
    pub processes: usize,
    /// Keys written at once; a key retires after `max_writes_per_key` writes.
    pub active_keys: usize,
    /// Writes per key before it retires.
    pub max_writes_per_key: usize,
    /// Share of ops that are multi-mop transactions (sends and polls).
    pub txn_share: f64,
    /// Share of ops that end `info` (the process then continues under a new id).
    pub info_share: f64,
    /// Share of sends that definitely fail.
    pub fail_share: f64,
    /// Read every key from the start after the main phase.
    pub final_reads: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            ops: 1000,
            processes: 8,
            active_keys: 8,
            max_writes_per_key: 64,
            txn_share: 0.0,
            info_share: 0.02,
            fail_share: 0.02,
            final_reads: true,
        }
    }
}

/// An anomaly the generator can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inject {
    /// An acknowledged write vanishes from the log; later writes to its key are read.
    LostWrite,
    /// A key's last acknowledged write vanishes and the key retires.
    Unseen,
    /// A write lands at two offsets.
    Duplicate,
    /// One reader sees a different value at an offset.
    InconsistentOffsets,
    /// A send fails but its value is in the log (G1a).
    AbortedRead,
    /// A process's poll skips one existing offset.
    PollSkip,
    /// A process's poll goes back one offset.
    NonmonotonicPoll,
    /// Within one poll, a record in the middle is missing.
    IntPollSkip,
    /// Within one poll, an offset repeats.
    IntNonmonotonicPoll,
    /// A process's second send to a key is acknowledged at an offset below its first.
    NonmonotonicSend,
    /// Another write lands between two sends of one transaction to one key.
    IntSendSkip,
    /// A transaction polls a value it sent itself.
    PrecommittedRead,
    /// Two concurrent transactions write two keys in opposite orders (ww cycle).
    G0,
    /// Two concurrent transactions each read the other's write (wr cycle).
    G1c,
}

impl Inject {
    /// Every injectable kind.
    pub const ALL: [Inject; 14] = [
        Inject::LostWrite,
        Inject::Unseen,
        Inject::Duplicate,
        Inject::InconsistentOffsets,
        Inject::AbortedRead,
        Inject::PollSkip,
        Inject::NonmonotonicPoll,
        Inject::IntPollSkip,
        Inject::IntNonmonotonicPoll,
        Inject::NonmonotonicSend,
        Inject::IntSendSkip,
        Inject::PrecommittedRead,
        Inject::G0,
        Inject::G1c,
    ];

    /// The anomaly name the checker reports for it.
    pub fn kind(self) -> &'static str {
        match self {
            Inject::LostWrite => "lost-write",
            Inject::Unseen => "unseen",
            Inject::Duplicate => "duplicate",
            Inject::InconsistentOffsets => "inconsistent-offsets",
            Inject::AbortedRead => "G1a",
            Inject::PollSkip => "poll-skip",
            Inject::NonmonotonicPoll => "nonmonotonic-poll",
            Inject::IntPollSkip => "int-poll-skip",
            Inject::IntNonmonotonicPoll => "int-nonmonotonic-poll",
            Inject::NonmonotonicSend => "nonmonotonic-send",
            Inject::IntSendSkip => "int-send-skip",
            Inject::PrecommittedRead => "precommitted-read",
            Inject::G0 => "G0",
            Inject::G1c => "G1c",
        }
    }
}

/// Where an injected anomaly is: its key and the history indices (completions) of the ops
/// that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// What was injected.
    pub inject: Inject,
    /// The key it concerns.
    pub key: String,
    /// Completion indices of the ops involved (for cycles: every op of the cycle).
    pub ops: Vec<u64>,
}

/// A mop as it will be completed.
#[derive(Debug, Clone)]
enum Mop {
    Send {
        key: String,
        value: i64,
        offset: Option<i64>,
    },
    Poll(Vec<(String, Vec<(i64, i64)>)>),
}

#[derive(Debug)]
struct Pending {
    f: &'static str,
    mops: Vec<Mop>,
    outcome: OpType,
}

#[derive(Debug, Default)]
struct Proc {
    id: u64,
    pending: Option<Pending>,
    /// Next offset to read, per key.
    positions: HashMap<String, usize>,
    /// Offset of this process's last acknowledged send, per key.
    last_ack: HashMap<String, i64>,
}

/// One record of a simulated log.
#[derive(Debug, Clone, Copy)]
struct Rec {
    value: i64,
    /// Hidden from every reader (a lost write).
    hidden: bool,
}

struct Sim<'s> {
    cfg: SynthConfig,
    rng: ChaCha8Rng,
    /// Receives each op as it is generated.
    sink: &'s mut dyn FnMut(Op),
    /// Ops generated so far.
    count: u64,
    time: u64,
    logs: HashMap<String, Vec<Rec>>,
    next_value: HashMap<String, i64>,
    active: Vec<String>,
    all_keys: Vec<String>,
    next_key: usize,
    next_process: u64,
    procs: Vec<Proc>,
    /// Injections still to do, with the op number at which each becomes due.
    due: Vec<(usize, Inject)>,
    injected: Vec<Injected>,
}

/// Generates a history of `cfg.ops` client operations with the given anomalies injected, and
/// where each one was put. Without injections the history is valid for every checker.
pub fn generate(cfg: &SynthConfig, injects: &[Inject]) -> (History, Vec<Injected>) {
    let mut ops = Vec::with_capacity(cfg.ops * 2 + 64);
    let injected = generate_into(cfg, injects, &mut |op| ops.push(op));
    (
        History {
            ops,
            warnings: Vec::new(),
        },
        injected,
    )
}

/// As [`generate`], handing each op to `sink` as it is made (histories larger than memory).
pub fn generate_into(
    cfg: &SynthConfig,
    injects: &[Inject],
    sink: &mut dyn FnMut(Op),
) -> Vec<Injected> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut due: Vec<(usize, Inject)> = injects
        .iter()
        .map(|i| {
            let lo = cfg.ops / 4;
            let hi = (cfg.ops * 3 / 4).max(lo + 1);
            (rng.random_range(lo..hi), *i)
        })
        .collect();
    due.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut sim = Sim {
        cfg: cfg.clone(),
        rng,
        sink,
        count: 0,
        time: 0,
        logs: HashMap::new(),
        next_value: HashMap::new(),
        active: Vec::new(),
        all_keys: Vec::new(),
        next_key: 0,
        next_process: 0,
        procs: Vec::new(),
        due,
        injected: Vec::new(),
    };
    for _ in 0..cfg.active_keys.max(1) {
        sim.new_key();
    }
    for _ in 0..cfg.processes.max(1) {
        let id = sim.fresh_id();
        sim.procs.push(Proc {
            id,
            ..Proc::default()
        });
    }
    let mut invoked = 0;
    while invoked < cfg.ops {
        let p = sim.rng.random_range(0..sim.procs.len());
        if sim.procs[p].pending.is_some() {
            sim.complete(p);
        } else {
            while sim.due.last().is_some_and(|(at, _)| *at <= invoked) {
                if let Some((_, inj)) = sim.due.pop() {
                    sim.inject(p, inj);
                }
            }
            if sim.procs[p].pending.is_none() {
                sim.invoke(p);
            }
            invoked += 1;
        }
    }
    for p in 0..sim.procs.len() {
        if sim.procs[p].pending.is_some() {
            sim.complete(p);
        }
    }
    // Injections never reached (tiny histories) happen now.
    while let Some((_, inj)) = sim.due.pop() {
        let p = 0;
        sim.inject(p, inj);
        if sim.procs[p].pending.is_some() {
            sim.complete(p);
        }
    }
    if cfg.final_reads {
        sim.final_reads();
    }
    sim.injected
}

impl Sim<'_> {
    fn fresh_id(&mut self) -> u64 {
        self.next_process += 1;
        self.next_process - 1
    }

    fn new_key(&mut self) -> String {
        let k = format!("k{}", self.next_key);
        self.next_key += 1;
        self.logs.insert(k.clone(), Vec::new());
        self.next_value.insert(k.clone(), 0);
        self.active.push(k.clone());
        self.all_keys.push(k.clone());
        k
    }

    fn retire(&mut self, key: &str) {
        if let Some(i) = self.active.iter().position(|k| k == key) {
            self.active.swap_remove(i);
            self.new_key();
        }
    }

    fn push(&mut self, process: u64, op_type: OpType, f: &str, value: Value) -> u64 {
        self.time += self.rng.random_range(1_000..200_000);
        let index = self.count;
        self.count += 1;
        (self.sink)(Op {
            index,
            time_ns: self.time,
            process: Process::Client(process),
            op_type,
            f: f.to_string(),
            value,
        });
        index
    }

    fn pick_key(&mut self) -> String {
        let i = self.rng.random_range(0..self.active.len());
        self.active[i].clone()
    }

    /// Appends a new value to `key` (visible unless `hidden`); returns (value, offset).
    fn append(&mut self, key: &str, hidden: bool) -> (i64, i64) {
        let v = self.next_value.get(key).copied().unwrap_or(0);
        self.next_value.insert(key.to_string(), v + 1);
        let log = self.logs.entry(key.to_string()).or_default();
        log.push(Rec { value: v, hidden });
        let off = log.len() as i64 - 1;
        if log.len() >= self.cfg.max_writes_per_key {
            self.retire(key);
        }
        (v, off)
    }

    /// Reads up to `n` visible records of `key` from process `p`'s position.
    fn read(&mut self, p: usize, key: &str, n: usize) -> Vec<(i64, i64)> {
        let log = self.logs.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let pos = self.procs[p].positions.get(key).copied().unwrap_or(0);
        let mut out = Vec::new();
        let mut i = pos;
        while i < log.len() && out.len() < n {
            if !log[i].hidden {
                out.push((i as i64, log[i].value));
            }
            i += 1;
        }
        self.procs[p].positions.insert(key.to_string(), i);
        out
    }

    fn poll_keys(&mut self, p: usize) -> Vec<(String, Vec<(i64, i64)>)> {
        let nkeys = self.rng.random_range(1..=2);
        let mut out: Vec<(String, Vec<(i64, i64)>)> = Vec::new();
        for _ in 0..nkeys {
            let key = if self.rng.random_bool(0.8) || self.all_keys.len() == 1 {
                self.pick_key()
            } else {
                let i = self.rng.random_range(0..self.all_keys.len());
                self.all_keys[i].clone()
            };
            if out.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let n = self.rng.random_range(1..=6);
            let recs = self.read(p, &key, n);
            out.push((key, recs));
        }
        out
    }

    fn invoke(&mut self, p: usize) {
        let roll: f64 = self.rng.random();
        let txn = roll < self.cfg.txn_share;
        let info = self.rng.random_bool(self.cfg.info_share);
        let (f, plan): (&'static str, Vec<bool>) = if txn {
            let n = self.rng.random_range(2..=4);
            ("txn", (0..n).map(|_| self.rng.random_bool(0.5)).collect())
        } else if self.rng.random_bool(0.5) {
            ("send", vec![true])
        } else {
            ("poll", vec![false])
        };
        let fail = !info && plan.iter().any(|s| *s) && self.rng.random_bool(self.cfg.fail_share);
        // Transactions read before they write (a read_committed consumer never sees its own
        // transaction's sends).
        let mut mops = Vec::new();
        let mut polls = Vec::new();
        // A failed op's reads are not recorded, and the workload seeks the consumer back.
        let saved = fail.then(|| self.procs[p].positions.clone());
        for is_send in &plan {
            if !is_send {
                polls.push(Mop::Poll(self.poll_keys(p)));
            }
        }
        if let Some(saved) = saved {
            self.procs[p].positions = saved;
        }
        let takes_effect = !fail && (!info || self.rng.random_bool(0.5));
        for is_send in &plan {
            if *is_send {
                let key = self.pick_key();
                let (value, offset) = if takes_effect {
                    self.append(&key, false)
                } else {
                    let v = self.next_value.get(&key).copied().unwrap_or(0);
                    self.next_value.insert(key.clone(), v + 1);
                    (v, -1)
                };
                mops.push(Mop::Send {
                    key,
                    value,
                    offset: (offset >= 0).then_some(offset),
                });
            }
        }
        mops.extend(polls);
        let invoke_value = invoke_value(&mops);
        let id = self.procs[p].id;
        self.push(id, OpType::Invoke, f, invoke_value);
        let outcome = if info {
            OpType::Info
        } else if fail {
            OpType::Fail
        } else {
            OpType::Ok
        };
        self.procs[p].pending = Some(Pending { f, mops, outcome });
    }

    fn complete(&mut self, p: usize) {
        let Some(pending) = self.procs[p].pending.take() else {
            return;
        };
        let id = self.procs[p].id;
        let value = match pending.outcome {
            OpType::Ok => complete_value(&pending.mops),
            _ => invoke_value(&pending.mops),
        };
        self.push(id, pending.outcome, pending.f, value);
        if pending.outcome == OpType::Ok {
            for m in &pending.mops {
                if let Mop::Send {
                    key,
                    offset: Some(o),
                    ..
                } = m
                {
                    self.procs[p].last_ack.insert(key.clone(), *o);
                }
            }
        }
        if pending.outcome == OpType::Info {
            // A crashed worker continues as a new process with a fresh consumer.
            let nid = self.fresh_id();
            self.procs[p] = Proc {
                id: nid,
                ..Proc::default()
            };
        }
    }

    /// Runs, on a fresh process in slot `p` (idle), the ops carrying the anomaly; records
    /// where it is. A fresh process keeps the injection from disturbing `p`'s earlier reads.
    fn inject(&mut self, p: usize, inj: Inject) {
        let id = self.fresh_id();
        self.procs[p] = Proc {
            id,
            ..Proc::default()
        };
        let send = |key: &str, value: i64, offset: Option<i64>| Mop::Send {
            key: key.to_string(),
            value,
            offset,
        };
        let key = self.pick_key();
        let ops = match inj {
            Inject::LostWrite | Inject::Unseen => {
                let (value, offset) = self.append(&key, true);
                let i = self.scripted(p, "send", vec![send(&key, value, Some(offset))], OpType::Ok);
                if inj == Inject::LostWrite {
                    // A later write to the key, read by the final phase at least.
                    self.append(&key, false);
                } else {
                    self.retire(&key);
                }
                vec![i]
            }
            Inject::Duplicate => {
                let (value, offset) = self.append(&key, false);
                if let Some(log) = self.logs.get_mut(&key) {
                    log.push(Rec {
                        value,
                        hidden: false,
                    });
                }
                vec![self.scripted(p, "send", vec![send(&key, value, Some(offset))], OpType::Ok)]
            }
            Inject::AbortedRead => {
                let (value, _) = self.append(&key, false);
                vec![self.scripted(p, "send", vec![send(&key, value, None)], OpType::Fail)]
            }
            Inject::InconsistentOffsets => {
                self.append(&key, false);
                let mut recs = self.read(p, &key, 6);
                if let Some(r) = recs.last_mut() {
                    r.1 += 1_000_000_000;
                }
                vec![self.scripted(
                    p,
                    "poll",
                    vec![Mop::Poll(vec![(key.clone(), recs)])],
                    OpType::Ok,
                )]
            }
            Inject::PollSkip | Inject::NonmonotonicPoll => {
                // A first poll sets the position, the second skips or rewinds one offset.
                for _ in 0..3 {
                    self.append(&key, false);
                }
                let len = self.logs.get(&key).map_or(0, Vec::len);
                self.procs[p].positions.insert(key.clone(), len - 3);
                let first = self.read(p, &key, 1);
                let i1 = self.scripted(
                    p,
                    "poll",
                    vec![Mop::Poll(vec![(key.clone(), first)])],
                    OpType::Ok,
                );
                let pos = if inj == Inject::PollSkip {
                    len - 1
                } else {
                    len - 3
                };
                self.procs[p].positions.insert(key.clone(), pos);
                let second = self.read(p, &key, 1);
                let i2 = self.scripted(
                    p,
                    "poll",
                    vec![Mop::Poll(vec![(key.clone(), second)])],
                    OpType::Ok,
                );
                vec![i1, i2]
            }
            Inject::IntPollSkip | Inject::IntNonmonotonicPoll => {
                for _ in 0..3 {
                    self.append(&key, false);
                }
                let len = self.logs.get(&key).map_or(0, Vec::len);
                self.procs[p].positions.insert(key.clone(), len - 3);
                let mut recs = self.read(p, &key, 3);
                if inj == Inject::IntPollSkip {
                    recs.remove(1);
                } else {
                    let r = recs[1];
                    recs.insert(2, r);
                }
                vec![self.scripted(
                    p,
                    "poll",
                    vec![Mop::Poll(vec![(key.clone(), recs)])],
                    OpType::Ok,
                )]
            }
            Inject::NonmonotonicSend => {
                // The process's first send is acknowledged at o + 1; its second lands at o
                // (the log's order disagrees with the order the sends happened in).
                let (v1, o1) = self.append(&key, false);
                let i1 = self.scripted(p, "send", vec![send(&key, v1, Some(o1 + 1))], OpType::Ok);
                let (v2, o2) = self.append(&key, false);
                if let Some(log) = self.logs.get_mut(&key) {
                    log.swap(o1 as usize, o2 as usize);
                }
                let i2 = self.scripted(p, "send", vec![send(&key, v2, Some(o1))], OpType::Ok);
                vec![i1, i2]
            }
            Inject::IntSendSkip => {
                let (v1, o1) = self.append(&key, false);
                self.append(&key, false); // someone else's write, read by the final phase
                let (v2, o2) = self.append(&key, false);
                let mops = vec![send(&key, v1, Some(o1)), send(&key, v2, Some(o2))];
                vec![self.scripted(p, "txn", mops, OpType::Ok)]
            }
            Inject::PrecommittedRead => {
                let (v, o) = self.append(&key, false);
                self.procs[p].positions.insert(key.clone(), o as usize);
                let recs = self.read(p, &key, 1);
                let mops = vec![send(&key, v, Some(o)), Mop::Poll(vec![(key.clone(), recs)])];
                vec![self.scripted(p, "txn", mops, OpType::Ok)]
            }
            Inject::G0 | Inject::G1c => self.inject_cycle(inj, &key),
        };
        self.injected.push(Injected {
            inject: inj,
            key,
            ops,
        });
    }

    /// Two fresh processes run concurrent transactions forming a G0 (ww) or G1c (wr) cycle
    /// over `a` and another key; returns their completion indices.
    fn inject_cycle(&mut self, inj: Inject, a: &str) -> Vec<u64> {
        let mut b = self.pick_key();
        if b == a {
            b = self.new_key();
        }
        let send = |k: &str, v: i64, o: i64| Mop::Send {
            key: k.to_string(),
            value: v,
            offset: Some(o),
        };
        let (ma, mb) = if inj == Inject::G0 {
            let (va1, oa1) = self.append(a, false);
            let (va2, oa2) = self.append(a, false);
            let (vb2, ob2) = self.append(&b, false);
            let (vb1, ob1) = self.append(&b, false);
            (
                vec![send(a, va1, oa1), send(&b, vb1, ob1)],
                vec![send(a, va2, oa2), send(&b, vb2, ob2)],
            )
        } else {
            let (va, oa) = self.append(a, false);
            let (vb, ob) = self.append(&b, false);
            (
                vec![
                    send(a, va, oa),
                    Mop::Poll(vec![(b.clone(), vec![(ob, vb)])]),
                ],
                vec![
                    send(&b, vb, ob),
                    Mop::Poll(vec![(a.to_string(), vec![(oa, va)])]),
                ],
            )
        };
        let (pa, pb) = (self.fresh_id(), self.fresh_id());
        self.push(pa, OpType::Invoke, "txn", invoke_value(&ma));
        self.push(pb, OpType::Invoke, "txn", invoke_value(&mb));
        let ca = self.push(pa, OpType::Ok, "txn", complete_value(&ma));
        let cb = self.push(pb, OpType::Ok, "txn", complete_value(&mb));
        vec![ca, cb]
    }

    /// Invokes and at once completes an op on process slot `p`; returns the completion index.
    fn scripted(&mut self, p: usize, f: &str, mops: Vec<Mop>, outcome: OpType) -> u64 {
        let id = self.procs[p].id;
        self.push(id, OpType::Invoke, f, invoke_value(&mops));
        let value = if outcome == OpType::Ok {
            complete_value(&mops)
        } else {
            invoke_value(&mops)
        };
        self.push(id, outcome, f, value)
    }

    fn final_reads(&mut self) {
        let keys = self.all_keys.clone();
        for chunk in keys.chunks(16) {
            let id = self.fresh_id();
            let p = self.procs.len();
            self.procs.push(Proc {
                id,
                ..Proc::default()
            });
            loop {
                let mut reads = Vec::new();
                for k in chunk {
                    let r = self.read(p, k, 64);
                    if !r.is_empty() {
                        reads.push((k.clone(), r));
                    }
                }
                if reads.is_empty() {
                    break;
                }
                let mops = vec![Mop::Poll(reads)];
                self.push(id, OpType::Invoke, "poll", invoke_value(&mops));
                self.push(id, OpType::Ok, "poll", complete_value(&mops));
            }
        }
    }
}

fn invoke_value(mops: &[Mop]) -> Value {
    Value::Array(
        mops.iter()
            .map(|m| match m {
                Mop::Send { key, value, .. } => json!(["send", key, value]),
                Mop::Poll(_) => json!(["poll"]),
            })
            .collect(),
    )
}

fn complete_value(mops: &[Mop]) -> Value {
    Value::Array(
        mops.iter()
            .map(|m| match m {
                Mop::Send { key, value, offset } => match offset {
                    Some(o) => json!(["send", key, [o, value]]),
                    None => json!(["send", key, value]),
                },
                Mop::Poll(reads) => {
                    let mut obj = Map::new();
                    for (k, recs) in reads {
                        obj.insert(
                            k.clone(),
                            Value::Array(recs.iter().map(|(o, v)| json!([o, v])).collect()),
                        );
                    }
                    json!(["poll", obj])
                }
            })
            .collect(),
    )
}

/// The shape of a history like a real run's ([`write_real_run`]): keys `k<i>` in
/// `partitions` topic-partitions (`i % partitions`, recorded in every send and poll as the
/// workload records them), `workers` workers whose ops overlap, crashes that end a process
/// (`processes` processes over the run), assign-mode consumers reading a few partitions each
/// (up to 20 records per partition per poll), and final reads of one poll per partition
/// holding all its records. Valid for every checker.
#[derive(Debug, Clone)]
pub struct RealRunConfig {
    /// Seed of every choice.
    pub seed: u64,
    /// Client operations (two lines each).
    pub ops: usize,
    /// Topic-partitions.
    pub partitions: usize,
    /// Concurrent workers.
    pub workers: usize,
    /// Processes over the run (each crash starts a new one).
    pub processes: usize,
    /// Keys written at once; a key retires after `writes_per_key` writes.
    pub active_keys: usize,
    /// Writes per key.
    pub writes_per_key: u64,
    /// A fresh consumer (after a crash) reads its partitions from the start, as the workload's
    /// do; otherwise it starts 100 records before each partition's end (caught up).
    pub reread: bool,
}

impl Default for RealRunConfig {
    fn default() -> Self {
        RealRunConfig {
            seed: 1,
            ops: 100_000,
            partitions: 64,
            workers: 64,
            processes: 24_000,
            active_keys: 256,
            writes_per_key: 512,
            reread: false,
        }
    }
}

/// A worker's op in flight: its completion line, written when the worker is next picked.
struct RealWorker {
    process: u64,
    pending: Option<(&'static str, &'static str, String)>,
    assigned: Vec<usize>,
    positions: Vec<usize>,
}

/// Writes one valid history shaped like a real run ([`RealRunConfig`]) to `path` as JSON
/// Lines, streaming (10M ops need no memory beyond the simulated logs); returns its lines.
pub fn write_real_run(path: &Path, cfg: &RealRunConfig) -> std::io::Result<u64> {
    let (ops, seed, reread) = (cfg.ops, cfg.seed, cfg.reread);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut logs: Vec<Vec<(u32, u64)>> = vec![Vec::new(); cfg.partitions];
    let mut keys: Vec<(u32, u64)> = (0..cfg.active_keys as u32).map(|k| (k, 0)).collect();
    let mut next_key = cfg.active_keys as u32;
    let mut next_process = cfg.workers as u64;
    let crash_p = cfg.processes.saturating_sub(cfg.workers) as f64 / ops.max(1) as f64;
    let assign = |rng: &mut ChaCha8Rng| -> Vec<usize> {
        let first = rng.random_range(0..cfg.partitions);
        (0..8).map(|i| (first + i * 8) % cfg.partitions).collect()
    };
    let mut workers: Vec<RealWorker> = (0..cfg.workers as u64)
        .map(|p| RealWorker {
            process: p,
            pending: None,
            assigned: assign(&mut rng),
            positions: vec![0; cfg.partitions],
        })
        .collect();
    let (mut index, mut time) = (0u64, 0u64);
    let mut line = |w: &mut BufWriter<std::fs::File>,
                    process: u64,
                    t: &str,
                    f: &str,
                    value: &str|
     -> std::io::Result<()> {
        time += rng_step(index);
        writeln!(
            w,
            r#"{{"index":{index},"time_ns":{time},"process":{process},"type":"{t}","f":"{f}","value":{value}}}"#
        )?;
        index += 1;
        Ok(())
    };
    let mut invoked = 0;
    while invoked < ops {
        let i = rng.random_range(0..cfg.workers);
        if let Some((t, f, value)) = workers[i].pending.take() {
            line(&mut w, workers[i].process, t, f, &value)?;
            if t == "info" {
                // A crashed worker continues as a new process with a fresh consumer.
                workers[i].process = next_process;
                next_process += 1;
                workers[i].assigned = assign(&mut rng);
                workers[i].positions = logs
                    .iter()
                    .map(|l| {
                        if reread {
                            0
                        } else {
                            l.len().saturating_sub(100)
                        }
                    })
                    .collect();
            }
            continue;
        }
        invoked += 1;
        let p = workers[i].process;
        if rng.random_bool(crash_p.min(1.0)) {
            line(&mut w, p, "invoke", "crash", "null")?;
            workers[i].pending = Some(("info", "crash", "null".into()));
        } else if rng.random_bool(0.5) {
            let slot = rng.random_range(0..keys.len());
            let (k, v) = keys[slot];
            let part = k as usize % cfg.partitions;
            logs[part].push((k, v));
            let offset = logs[part].len() - 1;
            keys[slot].1 += 1;
            if keys[slot].1 >= cfg.writes_per_key {
                keys[slot] = (next_key, 0);
                next_key += 1;
            }
            line(
                &mut w,
                p,
                "invoke",
                "send",
                &format!(r#"[["send","k{k}",{v},{part}]]"#),
            )?;
            let done = format!(r#"[["send","k{k}",[{offset},{v}],{part}]]"#);
            workers[i].pending = Some(("ok", "send", done));
        } else {
            line(&mut w, p, "invoke", "poll", r#"[["poll"]]"#)?;
            let worker = &mut workers[i];
            let mut by_key: std::collections::BTreeMap<u32, (usize, Vec<(usize, u64)>)> =
                Default::default();
            for &part in worker.assigned.iter().take(rng.random_range(1..=4)) {
                let pos = worker.positions[part];
                let end = logs[part].len().min(pos + 20);
                for (o, (k, v)) in logs[part][pos..end].iter().enumerate() {
                    by_key
                        .entry(*k)
                        .or_insert((part, Vec::new()))
                        .1
                        .push((pos + o, *v));
                }
                worker.positions[part] = end;
            }
            let reads: Vec<String> = by_key
                .iter()
                .map(|(k, (_, rs))| {
                    let pairs: Vec<String> = rs.iter().map(|(o, v)| format!("[{o},{v}]")).collect();
                    format!(r#""k{k}":[{}]"#, pairs.join(","))
                })
                .collect();
            let parts: Vec<String> = by_key
                .iter()
                .map(|(k, (part, _))| format!(r#""k{k}":{part}"#))
                .collect();
            let done = format!(
                r#"[["poll",{{{}}},{{{}}}]]"#,
                reads.join(","),
                parts.join(",")
            );
            worker.pending = Some(("ok", "poll", done));
        }
    }
    for worker in &mut workers {
        if let Some((t, f, value)) = worker.pending.take() {
            line(&mut w, worker.process, t, f, &value)?;
        }
    }
    // Final reads: one poll per partition holding all its records.
    for (part, log) in logs.iter().enumerate() {
        line(&mut w, FINAL_PROCESS, "invoke", "poll", r#"[["poll"]]"#)?;
        let mut by_key: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        for (o, (k, v)) in log.iter().enumerate() {
            by_key.entry(*k).or_default().push(format!("[{o},{v}]"));
        }
        let reads: Vec<String> = by_key
            .iter()
            .map(|(k, rs)| format!(r#""k{k}":[{}]"#, rs.join(",")))
            .collect();
        let parts: Vec<String> = by_key.keys().map(|k| format!(r#""k{k}":{part}"#)).collect();
        let done = format!(
            r#"[["poll",{{{}}},{{{}}}]]"#,
            reads.join(","),
            parts.join(",")
        );
        line(&mut w, FINAL_PROCESS, "ok", "poll", &done)?;
    }
    w.flush()?;
    Ok(index)
}

/// A deterministic time step (ns) between lines.
fn rng_step(index: u64) -> u64 {
    50_000 + (index.wrapping_mul(2_654_435_761) % 100_000)
}
