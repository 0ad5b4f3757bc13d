//! The one analysis pass every queue check reads (Jepsen's `analysis`): each sent or read
//! record interned as a *record* (key, value), its writer, the ops that must have committed, the
//! first ok reader of each record, and per *unit* (a topic-partition, or a key of unknown
//! partition, see [`crate::txns`]) the version order: the (offset, record) pairs acknowledged by
//! committed sends or read by any poll (ok, info or fail), sorted, with the distinct offsets
//! whose position is a record's dense *index* (gaps from transaction markers removed).
//!
//! Invariants: built once, read by the queue, cycle and commit checks; everything here is
//! sorting and hashing, n log n in the history's size.

pub use crate::fasthash::FastMap as IntMap;
use crate::txns::{Kind, ReadRec, Status, Txn, Txns, NO_OFFSET};

/// No op, record or index.
pub const NONE: u32 = u32::MAX;

/// One unit's version order.
#[derive(Debug, Default)]
pub struct UnitOrder {
    /// (offset, record) acknowledged by committed sends or read by any poll; sorted, distinct.
    pub by_offset: Vec<(i64, u32)>,
    /// The distinct offsets of `by_offset`; an offset's position here is its dense index.
    pub offsets: Vec<i64>,
}

impl UnitOrder {
    /// The dense index of an offset known to hold a record.
    pub fn index_of(&self, offset: i64) -> Option<u32> {
        self.offsets.binary_search(&offset).ok().map(|i| i as u32)
    }

    /// The records at a dense index.
    pub fn at_index(&self, index: u32) -> &[(i64, u32)] {
        let Some(&o) = self.offsets.get(index as usize) else {
            return &[];
        };
        let lo = self.by_offset.partition_point(|(x, _)| *x < o);
        let hi = self.by_offset.partition_point(|(x, _)| *x <= o);
        &self.by_offset[lo..hi]
    }
}

/// The analysis of one history.
pub struct Analysis<'t> {
    /// The parsed ops.
    pub t: &'t Txns,
    /// Each record's key id ([`Txns::rec_key`]: records are interned as the history is parsed).
    pub rec_key: &'t [u32],
    /// Each record's value.
    pub rec_value: &'t [i64],
    /// Each record's writer: the position in [`Txns::txns`] of the op that sent it ([`NONE`]:
    /// no op sent it).
    pub writer: Vec<u32>,
    /// The offset its writer's acknowledgement gave, if any.
    writer_offset: Vec<i64>,
    /// The first ok op that read each record ([`NONE`] if none).
    pub first_ok_reader: Vec<u32>,
    /// Each record's lowest and highest dense index in its unit's version order ([`NONE`]: not
    /// in it).
    pub first_index: Vec<u32>,
    /// See `first_index`.
    pub last_index: Vec<u32>,
    /// Per op: it must have committed (ok, or info with a send some ok op read).
    pub committed: Vec<bool>,
    /// Per unit: its version order.
    pub units: Vec<UnitOrder>,
}

impl<'t> Analysis<'t> {
    /// Builds the analysis.
    pub fn build(t: &'t Txns) -> Analysis<'t> {
        let n = t.rec_key.len();
        let mut a = Analysis {
            t,
            rec_key: &t.rec_key,
            rec_value: &t.rec_value,
            writer: vec![NONE; n],
            writer_offset: vec![NO_OFFSET; n],
            first_ok_reader: vec![NONE; n],
            first_index: Vec::new(),
            last_index: Vec::new(),
            committed: vec![false; t.txns.len()],
            units: (0..t.unit_names.len())
                .map(|_| UnitOrder::default())
                .collect(),
        };
        // Writers: an ok send wins over an earlier attempt of the same value.
        for (i, tx) in t.txns.iter().enumerate() {
            for s in t.sends(tx) {
                let (r, off) = (s.rec, s.offset());
                let w = a.writer[r as usize];
                if w == NONE || (tx.status == Status::Ok && t.txns[w as usize].status != Status::Ok)
                {
                    a.writer[r as usize] = i as u32;
                    a.writer_offset[r as usize] = off.unwrap_or(NO_OFFSET);
                }
            }
        }
        for (i, tx) in t.txns.iter().enumerate() {
            if tx.status != Status::Ok {
                continue;
            }
            for r in t.reads(tx) {
                let f = &mut a.first_ok_reader[r.rec() as usize];
                if *f == NONE {
                    *f = i as u32;
                }
            }
        }
        for (i, tx) in t.txns.iter().enumerate() {
            a.committed[i] = tx.kind == Kind::Data
                && match tx.status {
                    Status::Ok => true,
                    Status::Fail => false,
                    Status::Info => t
                        .sends(tx)
                        .iter()
                        .any(|s| a.first_ok_reader[s.rec as usize] != NONE),
                };
        }
        // Version orders: committed sends with an offset, every read with one. A record seen
        // again at the offset it was first seen at adds nothing (most reads), so it is not
        // pushed again: the orders stay about as large as the log, not as the reads.
        let mut seen_at: Vec<i64> = vec![NO_OFFSET; a.rec_key.len()];
        for (i, tx) in t.txns.iter().enumerate() {
            if a.committed[i] {
                for s in t.sends(tx) {
                    let (k, _, off) = t.send(s);
                    let r = s.rec;
                    if let Some(o) = off {
                        if seen_at[r as usize] != o {
                            seen_at[r as usize] = o;
                            a.units[t.unit_of(k) as usize].by_offset.push((o, r));
                        }
                    }
                }
            }
            for rd in t.reads(tx) {
                let r = rd.rec();
                if let Some(o) = rd.offset() {
                    if seen_at[r as usize] != o {
                        seen_at[r as usize] = o;
                        a.units[t.unit_of(t.key_of(rd)) as usize]
                            .by_offset
                            .push((o, r));
                    }
                }
            }
        }
        drop(seen_at);
        let n = a.rec_key.len();
        a.first_index = vec![NONE; n];
        a.last_index = vec![NONE; n];
        for u in &mut a.units {
            u.by_offset.sort_unstable();
            u.by_offset.dedup();
            u.offsets = u.by_offset.iter().map(|(o, _)| *o).collect();
            u.offsets.dedup();
            for (index, run) in u.by_offset.chunk_by(|x, y| x.0 == y.0).enumerate() {
                let index = index as u32;
                for &(_, r) in run {
                    let f = &mut a.first_index[r as usize];
                    if *f == NONE {
                        *f = index;
                    }
                    a.last_index[r as usize] = index;
                }
            }
        }
        a
    }

    /// The offset a record's writer's acknowledgement gave, if any.
    pub fn writer_offset(&self, r: u32) -> Option<i64> {
        Some(self.writer_offset[r as usize]).filter(|o| *o != NO_OFFSET)
    }

    /// The record of (key, value), if the history mentions it.
    pub fn rec(&self, key: u32, value: i64) -> Option<u32> {
        self.t.rec(key, value)
    }

    /// The unit of a record.
    pub fn unit_of_rec(&self, r: u32) -> u32 {
        self.t.unit_of(self.rec_key[r as usize])
    }

    /// The writer op of a record, if any op sent it.
    pub fn writer_of(&self, r: u32) -> Option<&'t Txn> {
        let w = self.writer[r as usize];
        (w != NONE).then(|| &self.t.txns[w as usize])
    }

    /// Was the record read by an ok op?
    pub fn ok_read(&self, r: u32) -> bool {
        self.first_ok_reader[r as usize] != NONE
    }

    /// The dense index of a record as an op saw it: its own offset's index, else (no offset)
    /// the record's first index in the version order.
    pub fn index(&self, key: u32, value: i64, offset: Option<i64>) -> Option<u32> {
        let unit = &self.units[self.t.unit_of(key) as usize];
        match offset {
            Some(o) => unit.index_of(o),
            None => self
                .rec(key, value)
                .map(|r| self.first_index[r as usize])
                .filter(|i| *i != NONE),
        }
    }

    /// An op's reads grouped by unit, into `out` (reused between calls): each unit's reads in
    /// the order the op saw them, `out.runs` naming (unit, range in `out.reads`). Records of
    /// several keys of one unit returned by one poll are merged by offset, each key's own
    /// order kept (the history keeps each key's records in read order, not their
    /// interleaving); successive polls follow each other.
    pub fn unit_reads(&self, tx: &Txn, out: &mut UnitReads) {
        out.reads.clear();
        out.runs.clear();
        out.segs.clear();
        let reads = self.t.reads(tx);
        if reads.is_empty() {
            return;
        }
        // (unit, poll, segment start, segment end) for each run of one key in one poll.
        let mut start = 0;
        let t = self.t;
        let mut poll = 0u32;
        for run in reads.chunk_by(|a, b| t.key_of(a) == t.key_of(b) && !b.first_of_poll()) {
            let unit = t.unit_of(t.key_of(&run[0]));
            poll += u32::from(run[0].first_of_poll());
            out.segs
                .push((unit, poll, start as u32, (start + run.len()) as u32));
            start += run.len();
        }
        out.segs.sort_by_key(|s| (s.0, s.1));
        for unit_segs in out.segs.chunk_by(|a, b| a.0 == b.0) {
            let from = out.reads.len();
            for poll_segs in unit_segs.chunk_by(|a, b| a.1 == b.1) {
                if poll_segs.len() == 1 {
                    let (lo, hi) = (poll_segs[0].2 as usize, poll_segs[0].3 as usize);
                    out.reads.extend_from_slice(&reads[lo..hi]);
                    continue;
                }
                // Merge the keys' runs by their heads' offsets. Runs in offset order (every
                // valid history's) merge as a stable sort of their concatenation does (ties to
                // the earlier run), which finds the runs and merges them in n log k.
                let sorted = poll_segs.iter().all(|s| {
                    reads[s.2 as usize..s.3 as usize]
                        .windows(2)
                        .all(|w| w[0].raw_offset() <= w[1].raw_offset())
                });
                if sorted {
                    let from = out.reads.len();
                    for s in poll_segs {
                        out.reads
                            .extend_from_slice(&reads[s.2 as usize..s.3 as usize]);
                    }
                    out.reads[from..].sort_by_key(|r| r.raw_offset());
                    continue;
                }
                out.heads.clear();
                out.heads
                    .extend(poll_segs.iter().map(|s| (s.2 as usize, s.3 as usize)));
                loop {
                    let mut best: Option<usize> = None;
                    for (h, (at, end)) in out.heads.iter().enumerate() {
                        if at < end
                            && best.is_none_or(|b| {
                                reads[*at].raw_offset() < reads[out.heads[b].0].raw_offset()
                            })
                        {
                            best = Some(h);
                        }
                    }
                    let Some(b) = best else { break };
                    out.reads.push(reads[out.heads[b].0]);
                    out.heads[b].0 += 1;
                }
            }
            out.runs.push((unit_segs[0].0, from, out.reads.len()));
        }
    }
}

/// An op's reads grouped by unit ([`Analysis::unit_reads`]); reused between ops.
#[derive(Debug, Default)]
pub struct UnitReads {
    /// The reads, unit after unit.
    pub reads: Vec<ReadRec>,
    /// (unit, start, end) of each unit's reads in `reads`.
    pub runs: Vec<(u32, usize, usize)>,
    segs: Vec<(u32, u32, u32, u32)>,
    heads: Vec<(usize, usize)>,
}

impl UnitReads {
    /// Each unit with its reads.
    pub fn units(&self) -> impl Iterator<Item = (u32, &[ReadRec])> + '_ {
        self.runs.iter().map(|(u, a, b)| (*u, &self.reads[*a..*b]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpType, Process};
    use crate::txns::Builder;

    /// Jepsen's `log->value->first-index-test` and `log->last-index->values-test`: the log
    /// `[nil #{a} #{a b c} nil #{c} #{c d} #{d}]` gives first indices a 0, b 1, c 1, d 3 and
    /// last indices a 1, b 1, c 3, d 4 (gaps removed).
    #[test]
    fn first_and_last_dense_indices_follow_jepsen() {
        let (a, b, c, d) = (1, 2, 3, 4);
        let log: [(i64, &[i64]); 5] = [
            (1, &[a]),
            (2, &[a, b, c]),
            (4, &[c]),
            (5, &[c, d]),
            (6, &[d]),
        ];
        let mut builder = Builder::new();
        let p = Process::Client(0);
        for (i, (offset, values)) in log.iter().enumerate() {
            for v in *values {
                builder.invoke(i as u64 * 2, 0, &p, "poll");
                builder.end();
                builder.complete(i as u64 * 2 + 1, 0, &p, OpType::Ok, "poll", false);
                builder.poll();
                builder.read("x", Some(*offset), *v);
                builder.end();
            }
        }
        let t = builder.finish();
        let an = Analysis::build(&t);
        let idx = |v: i64| {
            let r = an.rec(0, v).expect("record") as usize;
            (an.first_index[r], an.last_index[r])
        };
        assert_eq!(
            [idx(a), idx(b), idx(c), idx(d)],
            [(0, 1), (1, 1), (1, 3), (3, 4)]
        );
        assert_eq!(an.units[0].offsets, vec![1, 2, 4, 5, 6]);
        assert_eq!(an.units[0].index_of(4), Some(2));
        assert_eq!(an.units[0].index_of(3), None);
    }
}
