//! Elle-style dependency cycles over a queue history, on a compressed-sparse-row graph (the
//! search inside one component uses a small petgraph graph).
//!
//! Nodes are the committed operations: ok sends, polls and transactions, and indeterminate
//! ones whose writes a read proved visible. Edges:
//! - `ww`: for each partition, successive committed records in the log's offset order (offsets
//!   holding several records break the chain; a duplicate counts at its first offset);
//! - `wr`: the op that sent a value → each op that read it;
//! - `process`: successive committed ops of one process;
//! - `realtime`: an ok op completed before another was invoked. Rather than an edge per pair
//!   (quadratic) or per frontier member (Elle's reduction, still ~concurrency edges per op),
//!   realtime goes through a chain of barrier nodes, one per ok completion
//!   ([`crate::txns`]): `a → barrier(a) → … → barrier_before(b) → b`, three edges per op, with
//!   the same reachability. A cycle's run of barrier nodes is shown as one realtime step.
//!
//! Strongly connected components (Pearce's one-number-per-node Tarjan, iterative, so
//! million-node chains cannot overflow the stack) bound the search; in each component the shortest
//! cycle is looked for with growing edge sets (ww; ww+wr; +process; +realtime), so the first
//! cycle found is the least suspect explanation, and is named by the edges it uses: `G0`
//! (ww only), `G1c` (with wr), and their `-process` and `-realtime` variants. Each finding
//! lists the ops of the cycle and explains every step.

use std::collections::{HashMap, VecDeque};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{json, Value};

use crate::analysis::{Analysis, NONE as NO_REC};
use crate::findings::Findings;
use crate::txns::{Status, Txns};

/// Edge type bits.
const WW: u8 = 1;
const WR: u8 = 2;
const PROCESS: u8 = 4;
const REALTIME: u8 = 8;

/// Edge sets tried in order, least suspect first.
const SEARCH: [u8; 6] = [
    WW,
    WW | WR,
    WW | PROCESS,
    WW | WR | PROCESS,
    WW | PROCESS | REALTIME,
    WW | WR | PROCESS | REALTIME,
];

/// Components larger than this are searched from a bounded number of start nodes.
const MAX_BFS_STARTS: usize = 32;

/// The dependency graph of one history, in compressed sparse row form: node `n`'s out-edges
/// are `targets[start[n]..start[n + 1]]` with their edge bits in `bits` (5 bytes an edge, where
/// an adjacency-list graph takes about 20).
pub struct DependencyGraph<'a> {
    /// Node weights: a txn position, or `BARRIER + k` for barrier `k`.
    weight: Vec<u32>,
    start: Vec<u32>,
    targets: Vec<u32>,
    bits: Vec<u8>,
    txns: &'a Txns,
    a: &'a Analysis<'a>,
}

/// No node.
const NONE: u32 = u32::MAX;

/// Node weights at or above this are barrier nodes (`BARRIER + k`), below it txn positions.
const BARRIER: u32 = 1 << 31;

/// One step of a cycle: from txn, to txn, edge bit.
type Step = (u32, u32, u8);

fn edge_name(bit: u8) -> &'static str {
    match bit {
        WW => "ww",
        WR => "wr",
        PROCESS => "process",
        _ => "realtime",
    }
}

/// Every edge of the graph over `a` (nodes numbered by `node_of`, barrier `k` at
/// `first_barrier + k - 1`), handed to `edge(from, to, bit)`; `ww_deps` false leaves out ww
/// edges. Run twice by [`DependencyGraph::build`]: once to count, once to fill.
fn edges(
    a: &Analysis,
    ww_deps: bool,
    node_of: &[u32],
    chain: &[u32],
    first_barrier: u32,
    edge: &mut dyn FnMut(u32, u32, u8),
) {
    let txns = a.t;
    let t = &txns.txns;
    let node = |i: u32| -> Option<u32> { Some(node_of[i as usize]).filter(|n| *n != NONE) };
    let writer = |r: u32| -> Option<u32> {
        let w = a.writer[r as usize];
        if w == NO_REC || t[w as usize].status == Status::Fail {
            return None;
        }
        node(w)
    };
    // ww
    if ww_deps {
        for u in &a.units {
            let mut prev: Option<u32> = None;
            for (index, run) in u.by_offset.chunk_by(|x, y| x.0 == y.0).enumerate() {
                if run.len() != 1 {
                    prev = None;
                    continue;
                }
                let r = run[0].1;
                if a.first_index[r as usize] != index as u32 {
                    continue;
                }
                let Some(w) = writer(r) else {
                    continue;
                };
                if let Some(pw) = prev {
                    if pw != w {
                        edge(pw, w, WW);
                    }
                }
                prev = Some(w);
            }
        }
    }
    // wr, process. With ww edges, a writer whose record sits in an unbroken stretch of its
    // partition's ww chain already reaches, through that chain, the writer of any later
    // record of the stretch: of a reader's records in one stretch only the latest needs its
    // wr edge (Jepsen's "T2's highest read"); the rest would add no reachability, and a
    // final read of every record would otherwise add an edge per record.
    let mut last_of_process: HashMap<u32, u32> = HashMap::new();
    let mut writers: Vec<u32> = Vec::new();
    let mut latest: Vec<(u32, u32, u32, u32)> = Vec::new();
    for (i, tx) in t.iter().enumerate() {
        let Some(me) = node(i as u32) else {
            continue;
        };
        writers.clear();
        latest.clear();
        for rd in txns.reads(tx) {
            let r = rd.rec();
            let Some(w) = writer(r) else { continue };
            match chain.get(r as usize).copied().filter(|s| *s != NONE) {
                Some(seg) => latest.push((
                    txns.unit_of(txns.key_of(rd)),
                    seg,
                    a.first_index[r as usize],
                    w,
                )),
                None if w != me => writers.push(w),
                None => {}
            }
        }
        latest.sort_unstable_by_key(|x| (x.0, x.1, std::cmp::Reverse(x.2)));
        for run in latest.chunk_by(|x, y| x.0 == y.0 && x.1 == y.1) {
            if run[0].3 != me {
                writers.push(run[0].3);
            }
        }
        writers.sort_unstable();
        writers.dedup();
        for w in &writers {
            edge(*w, me, WR);
        }
        if let Some(prev) = last_of_process.insert(tx.process, me) {
            edge(prev, me, PROCESS);
        }
    }
    // realtime, through the barrier chain
    let barrier_node = |k: u32| first_barrier + k - 1;
    for k in 2..=txns.barriers {
        edge(barrier_node(k - 1), barrier_node(k), REALTIME);
    }
    for (i, tx) in t.iter().enumerate() {
        let Some(me) = node(i as u32) else {
            continue;
        };
        if tx.barrier > 0 {
            edge(me, barrier_node(tx.barrier), REALTIME);
        }
        if tx.barrier_before > 0 {
            edge(barrier_node(tx.barrier_before), me, REALTIME);
        }
    }
}

impl<'a> DependencyGraph<'a> {
    /// Builds the graph over the analysis; `ww_deps` false leaves out ww edges.
    pub(crate) fn build(a: &'a Analysis<'a>, ww_deps: bool) -> Self {
        let txns = a.t;
        // Committed ops are the nodes, then one node per barrier.
        let mut weight: Vec<u32> = Vec::new();
        let mut node_of: Vec<u32> = vec![NONE; txns.txns.len()];
        for (i, n) in node_of.iter_mut().enumerate() {
            if a.committed[i] {
                *n = weight.len() as u32;
                weight.push(i as u32);
            }
        }
        let first_barrier = weight.len() as u32;
        weight.extend((1..=txns.barriers).map(|k| BARRIER + k));
        let chain = if ww_deps {
            chain_segments(a)
        } else {
            Vec::new()
        };
        // Count each node's out-edges, then fill them in place.
        // Edge positions are u32: 4 billion edges would take 20 GB, far past any history
        // this machine can check; counts saturate rather than wrap.
        let mut start = vec![0u32; weight.len() + 1];
        edges(
            a,
            ww_deps,
            &node_of,
            &chain,
            first_barrier,
            &mut |f, _, _| {
                let c = &mut start[f as usize + 1];
                *c = c.saturating_add(1);
            },
        );
        for i in 1..start.len() {
            start[i] = start[i].saturating_add(start[i - 1]);
        }
        let total = start.last().copied().unwrap_or(0) as usize;
        let mut targets = vec![0u32; total];
        let mut bits = vec![0u8; total];
        // Fill with each node's start as its cursor; after, start[n] is where n's edges end,
        // that is the next node's start: shift back by one.
        edges(
            a,
            ww_deps,
            &node_of,
            &chain,
            first_barrier,
            &mut |f, to, bit| {
                let c = &mut start[f as usize];
                if let (Some(t), Some(b)) =
                    (targets.get_mut(*c as usize), bits.get_mut(*c as usize))
                {
                    (*t, *b) = (to, bit);
                }
                *c = c.saturating_add(1);
            },
        );
        start.pop();
        start.insert(0, 0);
        DependencyGraph {
            weight,
            start,
            targets,
            bits,
            txns,
            a,
        }
    }

    /// Node `n`'s out-edges: (target, edge bit).
    fn out(&self, n: u32) -> impl Iterator<Item = (u32, u8)> + '_ {
        let (s, e) = (
            self.start[n as usize] as usize,
            self.start[n as usize + 1] as usize,
        );
        self.targets[s..e]
            .iter()
            .copied()
            .zip(self.bits[s..e].iter().copied())
    }

    /// Sizes, for the result's stats.
    pub fn stats(&self) -> Value {
        let mut counts = [0usize; 4];
        for e in &self.bits {
            counts[e.trailing_zeros() as usize] += 1;
        }
        json!({
            "nodes": self.weight.len(),
            "edges": {"ww": counts[0], "wr": counts[1], "process": counts[2], "realtime": counts[3]},
        })
    }

    /// The strongly connected components of more than one node ([`components`]).
    fn components(&self) -> Vec<Vec<u32>> {
        components(&self.start, &self.targets)
    }

    /// Finds one cycle per strongly connected component and adds it to the findings.
    pub(crate) fn report(&self, findings: &mut Findings) {
        let mut sccs = self.components();
        sccs.sort_by_key(|c| {
            c.iter()
                .map(|n| self.weight[*n as usize])
                .filter(|w| *w < BARRIER)
                .min()
        });
        for scc in sccs {
            if let Some((kind, cycle)) = self.shortest_cycle(&scc) {
                findings.add(kind, self.explain(kind, &cycle));
            }
        }
    }

    /// The shortest cycle in a component, with the least suspect edge set that has one:
    /// its kind and its steps (from, to, edge bit).
    fn shortest_cycle(&self, scc: &[u32]) -> Option<(&'static str, Vec<Step>)> {
        let local: HashMap<u32, usize> = scc.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        for mask in SEARCH {
            let mut sub: DiGraph<(), u8> = DiGraph::with_capacity(scc.len(), scc.len() * 2);
            for _ in scc {
                sub.add_node(());
            }
            for (i, n) in scc.iter().enumerate() {
                for (to, bit) in self.out(*n) {
                    if bit & mask == 0 {
                        continue;
                    }
                    if let Some(&j) = local.get(&to) {
                        sub.add_edge(NodeIndex::new(i), NodeIndex::new(j), bit);
                    }
                }
            }
            let Some(part) = kosaraju_scc(&sub).into_iter().find(|c| c.len() > 1) else {
                continue;
            };
            let inside: std::collections::HashSet<NodeIndex> = part.iter().copied().collect();
            let mut best: Option<Vec<NodeIndex>> = None;
            let mut starts: Vec<NodeIndex> = part
                .iter()
                .copied()
                .filter(|n| self.weight[scc[n.index()] as usize] < BARRIER)
                .collect();
            starts.sort();
            for s in starts.into_iter().take(MAX_BFS_STARTS) {
                if let Some(c) = bfs_cycle(&sub, s, &inside) {
                    if best.as_ref().is_none_or(|b| c.len() < b.len()) {
                        best = Some(c);
                    }
                }
            }
            let path = best?;
            let mut steps = Vec::new();
            let mut used = 0u8;
            // Walk the path from txn to txn; a run of barrier nodes is one realtime step.
            let mut from = self.weight[scc[path[0].index()] as usize];
            let mut via_barrier = false;
            for w in path.windows(2) {
                let to = self.weight[scc[w[1].index()] as usize];
                if to >= BARRIER {
                    via_barrier = true;
                    continue;
                }
                // The least suspect edge between these two nodes.
                let bit = if via_barrier {
                    REALTIME
                } else {
                    sub.edges_connecting(w[0], w[1])
                        .map(|e| *e.weight())
                        .min()
                        .unwrap_or(mask)
                };
                used |= bit;
                steps.push((from, to, bit));
                from = to;
                via_barrier = false;
            }
            // Tell the cycle from its earliest op.
            if let Some(first) =
                (0..steps.len()).min_by_key(|i| self.txns.txns[steps[*i].0 as usize].index)
            {
                steps.rotate_left(first);
            }
            let base = if used & WR != 0 { "G1c" } else { "G0" };
            let kind = match (base, used & REALTIME != 0, used & PROCESS != 0) {
                ("G0", true, _) => "G0-realtime",
                ("G0", false, true) => "G0-process",
                ("G0", false, false) => "G0",
                (_, true, _) => "G1c-realtime",
                (_, false, true) => "G1c-process",
                _ => "G1c",
            };
            return Some((kind, steps));
        }
        None
    }

    /// The finding's example: the ops of the cycle and a sentence per step.
    fn explain(&self, kind: &str, steps: &[Step]) -> Value {
        let t = &self.txns.txns;
        let names: HashMap<u32, String> = steps
            .iter()
            .enumerate()
            .map(|(n, (from, _, _))| (*from, format!("T{}", n + 1)))
            .collect();
        let name = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("op {i}"));
        let mut out_steps = Vec::new();
        let mut sentences = Vec::new();
        for &(from, to, bit) in steps {
            let (a, b) = (&t[from as usize], &t[to as usize]);
            let mut step = json!({"type": edge_name(bit), "from": a.index, "to": b.index});
            let text = match bit {
                WW => match self.ww_detail(from, to) {
                    Some((key, va, oa, vb, ob)) => {
                        step["key"] = json!(key);
                        step["value"] = json!(va);
                        step["value'"] = json!(vb);
                        format!(
                            "{} (op {}) sent {va} to {key} (offset {oa}) before {} (op {}) sent {vb} to it (offset {ob})",
                            name(from), a.index, name(to), b.index
                        )
                    }
                    None => format!("{} wrote before {}", name(from), name(to)),
                },
                WR => match self.wr_detail(from, to) {
                    Some((key, v, o)) => {
                        step["key"] = json!(key);
                        step["value"] = json!(v);
                        format!(
                            "{} (op {}) sent {v} to {key}, which {} (op {}) read at offset {o}",
                            name(from),
                            a.index,
                            name(to),
                            b.index
                        )
                    }
                    None => format!("{} read what {} wrote", name(to), name(from)),
                },
                PROCESS => format!(
                    "{} (op {}) and then {} (op {}) ran in process {}",
                    name(from),
                    a.index,
                    name(to),
                    b.index,
                    serde_json::to_string(&self.txns.processes[a.process as usize])
                        .unwrap_or_default()
                ),
                _ => format!(
                    "{} (op {}) completed at {:.3} s, before {} (op {}) was invoked at {:.3} s",
                    name(from),
                    a.index,
                    a.complete_ns().unwrap_or(0) as f64 / 1e9,
                    name(to),
                    b.index,
                    b.invoke_ns as f64 / 1e9
                ),
            };
            step["text"] = json!(text);
            sentences.push(text);
            out_steps.push(step);
        }
        let ops: Vec<u64> = steps.iter().map(|(f, _, _)| t[*f as usize].index).collect();
        let first = steps.first().map(|s| name(s.0)).unwrap_or_default();
        json!({
            "type": kind,
            "ops": ops,
            "steps": out_steps,
            "explanation": format!("{}; so {first} precedes itself: a {kind} cycle.", sentences.join("; ")),
        })
    }

    /// The first offset of a (key, value) in its partition's version order.
    fn first_offset(&self, k: u32, v: i64) -> Option<i64> {
        let r = self.a.rec(k, v)?;
        let i = self.a.first_index[r as usize];
        self.a.units[self.txns.unit_of(k) as usize]
            .offsets
            .get(i as usize)
            .copied()
    }

    fn ww_detail(&self, from: u32, to: u32) -> Option<(&str, i64, i64, i64, i64)> {
        let t = &self.txns.txns;
        let mut best: Option<(&str, i64, i64, i64, i64)> = None;
        for (k, va, _) in self
            .txns
            .sends(&t[from as usize])
            .iter()
            .map(|s| self.txns.send(s))
        {
            let Some(oa) = self.first_offset(k, va) else {
                continue;
            };
            for (k2, vb, _) in self
                .txns
                .sends(&t[to as usize])
                .iter()
                .map(|s| self.txns.send(s))
            {
                if self.txns.unit_of(k2) != self.txns.unit_of(k) {
                    continue;
                }
                let Some(ob) = self.first_offset(k2, vb) else {
                    continue;
                };
                if oa < ob && best.is_none_or(|b| ob - oa < b.4 - b.2) {
                    best = Some((self.txns.keys[k2 as usize].as_str(), va, oa, vb, ob));
                }
            }
        }
        best
    }

    fn wr_detail(&self, from: u32, to: u32) -> Option<(&str, i64, i64)> {
        self.txns
            .reads(&self.txns.txns[to as usize])
            .iter()
            .find(|r| self.a.writer[r.rec() as usize] == from)
            .map(|r| {
                let k = self.txns.key_of(r);
                (
                    self.txns.keys[k as usize].as_str(),
                    self.txns.value_of(r),
                    r.raw_offset(),
                )
            })
    }
}

/// The strongly connected components of more than one node of a graph in compressed sparse
/// row form (node `n`'s out-edges are `targets[start[n]..start[n + 1]]`): Pearce's space-efficient
/// variant of Tarjan's algorithm (one 4-byte number per node: its DFS rank while it is
/// active, its component's number, counted down from `u32::MAX`, once assigned), iterative,
/// so million-node chains cannot overflow the stack.
fn components(start: &[u32], targets: &[u32]) -> Vec<Vec<u32>> {
    let n = start.len().saturating_sub(1);
    let mut rindex = vec![0u32; n];
    let mut index = 1u32;
    let mut comp_no = u32::MAX;
    let mut stack: Vec<u32> = Vec::new();
    // (node, next out-edge position, still a root)
    let mut call: Vec<(u32, u32, bool)> = Vec::new();
    let mut out = Vec::new();
    for s in 0..n as u32 {
        if rindex[s as usize] != 0 {
            continue;
        }
        rindex[s as usize] = index;
        index += 1;
        call.push((s, start[s as usize], true));
        while let Some(top) = call.last_mut() {
            let v = top.0;
            if top.1 < start[v as usize + 1] {
                let w = targets[top.1 as usize];
                top.1 += 1;
                if rindex[w as usize] == 0 {
                    rindex[w as usize] = index;
                    index += 1;
                    call.push((w, start[w as usize], true));
                } else if rindex[w as usize] < rindex[v as usize] {
                    rindex[v as usize] = rindex[w as usize];
                    top.2 = false;
                }
                continue;
            }
            let root = top.2;
            call.pop();
            if root {
                index -= 1;
                let mut comp = vec![v];
                while let Some(&w) = stack.last() {
                    if rindex[v as usize] > rindex[w as usize] {
                        break;
                    }
                    stack.pop();
                    rindex[w as usize] = comp_no;
                    index -= 1;
                    comp.push(w);
                }
                rindex[v as usize] = comp_no;
                comp_no -= 1;
                if comp.len() > 1 {
                    out.push(comp);
                }
            } else {
                stack.push(v);
            }
            if let Some(parent) = call.last_mut() {
                let p = parent.0 as usize;
                if rindex[v as usize] < rindex[p] {
                    rindex[p] = rindex[v as usize];
                    parent.2 = false;
                }
            }
        }
    }
    out
}

/// Per record, the stretch of its partition's ww chain it sits in ([`NONE`] when it is off the
/// chain: at an offset holding several records). Stretches end at such offsets, where the
/// chain built in [`DependencyGraph::build`] breaks; within one, every committed writer
/// reaches the writers of all later records through ww edges.
fn chain_segments(a: &Analysis) -> Vec<u32> {
    let mut seg = vec![NONE; a.rec_key.len()];
    let mut next = 0u32;
    for u in &a.units {
        next += 1;
        for (index, run) in u.by_offset.chunk_by(|x, y| x.0 == y.0).enumerate() {
            if run.len() != 1 {
                next += 1;
                continue;
            }
            let r = run[0].1 as usize;
            if a.first_index[r] == index as u32 {
                seg[r] = next;
            }
        }
    }
    seg
}

/// The shortest cycle through `s` inside `inside`, as nodes from `s` back to `s`.
fn bfs_cycle(
    g: &DiGraph<(), u8>,
    s: NodeIndex,
    inside: &std::collections::HashSet<NodeIndex>,
) -> Option<Vec<NodeIndex>> {
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = VecDeque::new();
    queue.push_back(s);
    while let Some(n) = queue.pop_front() {
        for m in g.neighbors(n) {
            if !inside.contains(&m) {
                continue;
            }
            if m == s {
                let mut path = vec![s, n];
                let mut cur = n;
                while cur != s {
                    cur = *parent.get(&cur)?;
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            if m != s && !parent.contains_key(&m) {
                parent.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The components agree with petgraph's Kosaraju on random graphs, dense and sparse.
    #[test]
    fn components_agree_with_kosaraju() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..200 {
            let n = rng.random_range(1..60u32);
            let m = rng.random_range(0..(n * if round % 2 == 0 { 2 } else { 4 }));
            let edges: Vec<(u32, u32)> = (0..m)
                .map(|_| (rng.random_range(0..n), rng.random_range(0..n)))
                .collect();
            let mut start = vec![0u32; n as usize + 1];
            let mut sorted = edges.clone();
            sorted.sort();
            for (f, _) in &sorted {
                start[*f as usize + 1] += 1;
            }
            for i in 1..start.len() {
                start[i] += start[i - 1];
            }
            let targets: Vec<u32> = sorted.iter().map(|(_, t)| *t).collect();
            let mut ours: Vec<Vec<u32>> = components(&start, &targets)
                .into_iter()
                .map(|mut c| {
                    c.sort();
                    c
                })
                .collect();
            ours.sort();
            let mut g: DiGraph<(), ()> = DiGraph::new();
            for _ in 0..n {
                g.add_node(());
            }
            for (f, t) in &edges {
                g.add_edge(NodeIndex::new(*f as usize), NodeIndex::new(*t as usize), ());
            }
            let mut theirs: Vec<Vec<u32>> = kosaraju_scc(&g)
                .into_iter()
                .filter(|c| c.len() > 1)
                .map(|c| {
                    let mut c: Vec<u32> = c.iter().map(|x| x.index() as u32).collect();
                    c.sort();
                    c
                })
                .collect();
            theirs.sort();
            assert_eq!(ours, theirs, "round {round}: {edges:?}");
        }
    }
}
