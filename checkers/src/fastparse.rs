//! A hand-rolled parser for history lines as this crate writes them, the fast path of
//! [`crate::check_file_full`]: the line's fields in the writer's order (`index`, `time_ns`,
//! `process`, `type`, `f`, `value`) and its micro-ops (`send`, `poll`, `rebalance`, an
//! `assign`'s targets) read straight from the bytes, with no `serde_json` machinery per token.
//!
//! Anything it does not expect (another field order, escapes in strings, floats, unknown
//! micro-ops, extra elements) makes it give up *before* anything is handed on: micro-ops are
//! first parsed into a reusable buffer of events and replayed into the sink only when the whole
//! value parsed, so the caller falls back to the `serde_json` path ([`crate::txns::feed_raw`],
//! [`crate::history::RawOp`]), which reads everything valid and names what is not. Both paths
//! give the sink the same calls in the same order.

use std::borrow::Cow;

use crate::history::{OpType, Process, RawJson, RawOp};
use crate::txns::{MopSink, TargetRef, NO_OFFSET};

/// The parser gave up: the caller takes the general path.
#[derive(Debug)]
pub struct Unsupported;

type R<T> = Result<T, Unsupported>;

/// One parsed micro-op part; strings are byte ranges of the value's text.
#[derive(Debug, Clone, Copy)]
enum Ev {
    Send {
        key: (u32, u32),
        value: i64,
        offset: i64,
        partition: Option<u32>,
    },
    Poll,
    ReadKey(u32, u32),
    Read(i64, i64),
    Partition(u32, u32, u32),
    TargetPartition(u32),
    TargetName(u32, u32),
    RebalancePartition(u32),
    RebalanceName(u32, u32),
}

/// A reusable micro-op parser (its event buffer is kept between values).
#[derive(Debug, Default)]
pub struct MopParser {
    events: Vec<Ev>,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.at) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    /// Eats `c` if it is next.
    fn maybe(&mut self, c: u8) -> bool {
        let yes = self.peek() == Some(c);
        self.at += usize::from(yes);
        yes
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        self.ws();
        let yes = self.b[self.at..].starts_with(word);
        if yes {
            self.at += word.len();
        }
        yes
    }

    /// A string without escapes or control characters: its content's byte range.
    fn string(&mut self) -> R<(u32, u32)> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match self.b.get(self.at) {
                Some(b'"') => break,
                Some(b'\\') | None => return Err(Unsupported),
                Some(c) if *c < 0x20 => return Err(Unsupported),
                Some(_) => self.at += 1,
            }
        }
        self.at += 1;
        Ok((start as u32, (self.at - 1) as u32))
    }

    /// An integer (no fraction or exponent).
    fn int(&mut self) -> R<i64> {
        self.ws();
        let neg = self.b.get(self.at) == Some(&b'-');
        self.at += usize::from(neg);
        let start = self.at;
        // At most 19 digits: no u64 overflow; the range is checked once at the end.
        let mut v: u64 = 0;
        let end = self.b.len().min(start + 19);
        while self.at < end {
            let d = self.b[self.at].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v * 10 + u64::from(d);
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0
            || digits > 19
            || (digits > 1 && self.b[start] == b'0')
            || matches!(self.b.get(self.at), Some(b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            return Err(Unsupported);
        }
        if neg {
            0i64.checked_sub_unsigned(v).ok_or(Unsupported)
        } else {
            i64::try_from(v).map_err(|_| Unsupported)
        }
    }

    fn u64(&mut self) -> R<u64> {
        self.ws();
        if self.b.get(self.at) == Some(&b'-') {
            return Err(Unsupported);
        }
        u64::try_from(self.int()?).map_err(|_| Unsupported)
    }

    fn u32(&mut self) -> R<u32> {
        u32::try_from(self.int()?).map_err(|_| Unsupported)
    }

    /// An integer or null.
    fn opt_int(&mut self) -> R<i64> {
        if self.literal(b"null") {
            Ok(NO_OFFSET)
        } else {
            self.int()
        }
    }

    fn is_number_next(&mut self) -> bool {
        matches!(self.peek(), Some(b'-' | b'0'..=b'9'))
    }
}

impl MopParser {
    /// Parses a micro-op list (`null` or `[...]`) and hands it to `sink`; nothing is handed on
    /// if it gives up.
    pub fn feed<S: MopSink>(&mut self, sink: &mut S, json: &str) -> R<()> {
        self.events.clear();
        self.parse(json.as_bytes(), 0)?;
        Parsed {
            events: &self.events,
            text: json,
        }
        .replay(sink);
        Ok(())
    }

    /// Parses the micro-op list `text[start..]` into `self.events` (appended, with byte
    /// ranges of `text`); on giving up, the events appended so far are removed.
    fn parse(&mut self, text: &[u8], start: usize) -> R<()> {
        let before = self.events.len();
        let mut c = Cursor { b: text, at: start };
        let parsed = (|| {
            if !c.literal(b"null") {
                self.list(&mut c)?;
            }
            c.ws();
            if c.at == c.b.len() {
                Ok(())
            } else {
                Err(Unsupported)
            }
        })();
        if parsed.is_err() {
            self.events.truncate(before);
        }
        parsed
    }

    fn list(&mut self, c: &mut Cursor<'_>) -> R<()> {
        c.eat(b'[')?;
        if c.maybe(b']') {
            return Ok(());
        }
        loop {
            match c.peek() {
                Some(b'[') => self.mop(c)?,
                Some(b'"') => {
                    let (a, b) = c.string()?;
                    self.events.push(Ev::TargetName(a, b));
                }
                // An assign's partition; a number past u32 is ignored, as the general path
                // does.
                Some(b'0'..=b'9') => {
                    if let Ok(p) = u32::try_from(c.u64()?) {
                        self.events.push(Ev::TargetPartition(p));
                    }
                }
                _ => return Err(Unsupported),
            }
            if !c.maybe(b',') {
                return c.eat(b']');
            }
        }
    }

    fn mop(&mut self, c: &mut Cursor<'_>) -> R<()> {
        c.eat(b'[')?;
        let tag = c.string()?;
        let tag = &c.b[tag.0 as usize..tag.1 as usize];
        match tag {
            b"send" => {
                c.eat(b',')?;
                let key = c.string()?;
                c.eat(b',')?;
                let (offset, value) = if c.maybe(b'[') {
                    let o = c.opt_int()?;
                    c.eat(b',')?;
                    let v = c.int()?;
                    c.eat(b']')?;
                    (o, v)
                } else {
                    (NO_OFFSET, c.int()?)
                };
                let partition = if c.maybe(b',') {
                    if c.literal(b"null") {
                        None
                    } else {
                        Some(c.u32()?)
                    }
                } else {
                    None
                };
                self.events.push(Ev::Send {
                    key,
                    value,
                    offset,
                    partition,
                });
            }
            b"poll" => {
                self.events.push(Ev::Poll);
                if c.maybe(b',') {
                    if !c.literal(b"null") {
                        self.polled(c)?;
                    }
                    if c.maybe(b',') && !c.literal(b"null") {
                        c.eat(b'{')?;
                        if !c.maybe(b'}') {
                            loop {
                                let (a, b) = c.string()?;
                                c.eat(b':')?;
                                let p = c.u32()?;
                                self.events.push(Ev::Partition(a, b, p));
                                if !c.maybe(b',') {
                                    c.eat(b'}')?;
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            b"rebalance" => {
                c.eat(b',')?;
                if !c.literal(b"null") {
                    c.eat(b'[')?;
                    if !c.maybe(b']') {
                        loop {
                            if c.is_number_next() {
                                let p = c.u32()?;
                                self.events.push(Ev::RebalancePartition(p));
                            } else {
                                let (a, b) = c.string()?;
                                self.events.push(Ev::RebalanceName(a, b));
                            }
                            if !c.maybe(b',') {
                                c.eat(b']')?;
                                break;
                            }
                        }
                    }
                }
            }
            _ => return Err(Unsupported),
        }
        c.eat(b']')
    }

    /// `{key: [[offset, value], ...], ...}`.
    fn polled(&mut self, c: &mut Cursor<'_>) -> R<()> {
        c.eat(b'{')?;
        if c.maybe(b'}') {
            return Ok(());
        }
        loop {
            let (a, b) = c.string()?;
            self.events.push(Ev::ReadKey(a, b));
            c.eat(b':')?;
            c.eat(b'[')?;
            if !c.maybe(b']') {
                loop {
                    c.eat(b'[')?;
                    let o = c.opt_int()?;
                    c.eat(b',')?;
                    let v = c.int()?;
                    c.eat(b']')?;
                    self.events.push(Ev::Read(o, v));
                    if !c.maybe(b',') {
                        c.eat(b']')?;
                        break;
                    }
                }
            }
            if !c.maybe(b',') {
                return c.eat(b'}');
            }
        }
    }
}

/// A line's micro-ops as parsed ahead ([`scan_pipelined`]): events over the text they were
/// read from.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    events: &'a [Ev],
    text: &'a str,
}

impl Parsed<'_> {
    /// Hands the micro-ops to `sink`, as [`crate::txns::feed_raw_into`] would.
    pub fn replay<S: MopSink>(&self, sink: &mut S) {
        let s = |(a, b): (u32, u32)| self.text.get(a as usize..b as usize).unwrap_or("");
        let mut key = 0;
        for ev in self.events {
            match *ev {
                Ev::Send {
                    key,
                    value,
                    offset,
                    partition,
                } => {
                    let offset = (offset != NO_OFFSET).then_some(offset);
                    sink.send(s(key), value, offset);
                    if let Some(p) = partition {
                        sink.partition(s(key), p);
                    }
                }
                Ev::Poll => sink.poll(),
                // A key's records follow it: the key is interned once for them.
                Ev::ReadKey(a, b) => key = sink.intern_key(s((a, b))),
                Ev::Read(o, v) => sink.read_key(key, (o != NO_OFFSET).then_some(o), v),
                Ev::Partition(a, b, p) => sink.partition(s((a, b)), p),
                Ev::TargetPartition(p) => sink.target(TargetRef::Partition(p)),
                Ev::TargetName(a, b) => sink.target(TargetRef::Name(s((a, b)))),
                Ev::RebalancePartition(p) => sink.rebalance(TargetRef::Partition(p)),
                Ev::RebalanceName(a, b) => sink.rebalance(TargetRef::Name(s((a, b)))),
            }
        }
    }
}

/// Lines read and parsed ahead, handed from the reading thread to the checking one.
#[derive(Debug, Default)]
struct Batch {
    /// The lines' text, trimmed, one after another.
    text: String,
    lines: Vec<Line>,
    /// Every fast line's micro-ops, with ranges of `text`.
    events: Vec<Ev>,
}

#[derive(Debug)]
struct Line {
    /// 1-based line number.
    n: usize,
    /// Its text in the batch (empty when it is not UTF-8).
    span: (u32, u32),
    /// It ended with a newline (a last line without one may be cut short).
    complete: bool,
    /// It is not UTF-8.
    bad_utf8: bool,
    /// Read by [`raw_op`], if it could be.
    fast: Option<FastLine>,
}

#[derive(Debug)]
struct FastLine {
    index: u64,
    time_ns: u64,
    process: Process,
    op_type: OpType,
    f: (u32, u32),
    value: Option<(u32, u32)>,
    /// Its micro-ops in the batch's events, when they parsed (client ops only).
    events: Option<(u32, u32)>,
}

/// Bytes of text per batch.
const BATCH_BYTES: usize = 1 << 20;

/// Reads the file in chunks of whole lines into batches, parsing what it can; stops when the
/// receiver hangs up.
fn produce(file: std::fs::File, tx: std::sync::mpsc::SyncSender<Batch>) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = file;
    let mut n = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut parser = MopParser::default();
    let mut eof = false;
    while !eof {
        let mut buf = std::mem::take(&mut carry);
        // Read a chunk, and on until it holds a newline (or the file ends).
        let cut = loop {
            let from = buf.len();
            if (&mut file).take(BATCH_BYTES as u64).read_to_end(&mut buf)? == 0 {
                eof = true;
                break buf.len();
            }
            if let Some(i) = buf[from..].iter().rposition(|b| *b == b'\n') {
                break from + i + 1;
            }
        };
        carry = buf.split_off(cut);
        if buf.is_empty() {
            continue;
        }
        let mut batch = match String::from_utf8(buf) {
            Ok(text) => Batch {
                text,
                ..Batch::default()
            },
            Err(e) => lines_of_bytes(&e.into_bytes()),
        };
        let text = std::mem::take(&mut batch.text);
        if batch.lines.is_empty() {
            for line in text.split_inclusive('\n') {
                n += 1;
                let complete = line.ends_with('\n');
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let at = (trimmed.as_ptr() as usize - text.as_ptr() as usize) as u32;
                batch.lines.push(Line {
                    n,
                    span: (at, at + trimmed.len() as u32),
                    complete,
                    bad_utf8: false,
                    fast: None,
                });
            }
        } else {
            for line in &mut batch.lines {
                n += 1;
                line.n = n;
            }
        }
        std::mem::swap(&mut parser.events, &mut batch.events);
        for line in batch.lines.iter_mut().filter(|l| l.complete && !l.bad_utf8) {
            line.fast = fast_line(&text, line.span, &mut parser);
        }
        std::mem::swap(&mut parser.events, &mut batch.events);
        batch.text = text;
        if tx.send(batch).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A chunk that is not all UTF-8, line by line: its UTF-8 lines copied into the batch's text,
/// the others marked (line numbers are set by the caller; empty lines count as lines).
fn lines_of_bytes(bytes: &[u8]) -> Batch {
    let mut batch = Batch::default();
    for raw in bytes.split_inclusive(|b| *b == b'\n') {
        let complete = raw.ends_with(b"\n");
        let at = batch.text.len() as u32;
        let (text, bad_utf8) = match std::str::from_utf8(raw) {
            Ok(t) => (t.trim(), false),
            Err(_) => ("", true),
        };
        batch.text.push_str(text);
        batch.lines.push(Line {
            n: 0,
            span: (at, batch.text.len() as u32),
            complete,
            bad_utf8,
            fast: None,
        });
    }
    batch
}

/// The line at `span` of `text`, read by [`raw_op`] with its micro-ops parsed into
/// `parser.events` (client ops).
fn fast_line(text: &str, span: (u32, u32), parser: &mut MopParser) -> Option<FastLine> {
    let line = &text[span.0 as usize..span.1 as usize];
    let op = raw_op(line)?;
    let base = text.as_ptr() as usize;
    let range = |s: &str| {
        let a = (s.as_ptr() as usize - base) as u32;
        (a, a + s.len() as u32)
    };
    let f = range(&op.f);
    let value = op.value.map(|v| range(v.get()));
    let events = match value {
        Some((a, b)) if !op.process.is_nemesis() => {
            let from = parser.events.len() as u32;
            parser
                .parse(&text.as_bytes()[..b as usize], a as usize)
                .ok()
                .map(|()| (from, parser.events.len() as u32))
        }
        _ => None,
    };
    Some(FastLine {
        index: op.index,
        time_ns: op.time_ns,
        process: op.process,
        op_type: op.op_type,
        f,
        value,
        events,
    })
}

/// [`crate::history::scan_with`] with the reading and parsing on a second thread: lines in the
/// writer's layout come with their micro-ops parsed ([`Parsed`]); other lines are parsed here
/// by `serde_json`, as [`crate::history::scan`] does.
pub(crate) fn scan_pipelined(
    path: &std::path::Path,
    file: std::fs::File,
    mut each: impl FnMut(RawOp<'_>, Option<Parsed<'_>>) -> Result<(), String>,
) -> Result<Vec<String>, crate::history::HistoryError> {
    use crate::history::{truncated, HistoryError, Pairing};
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
        let reader = scope.spawn(move || produce(file, tx));
        let mut warnings = Vec::new();
        let mut pairing = Pairing::default();
        let consumed = (|| {
            for mut batch in rx.iter() {
                let lines = std::mem::take(&mut batch.lines);
                for line in lines {
                    let n = line.n;
                    let malformed = |message: String| HistoryError::Malformed {
                        path: path.to_path_buf(),
                        line: n,
                        message,
                    };
                    let text = &batch.text[line.span.0 as usize..line.span.1 as usize];
                    if text.is_empty() && !line.bad_utf8 {
                        continue;
                    }
                    let span = |(a, b): (u32, u32)| &batch.text[a as usize..b as usize];
                    let (op, parsed) = match line.fast {
                        Some(fl) => (
                            RawOp {
                                index: fl.index,
                                time_ns: fl.time_ns,
                                process: fl.process,
                                op_type: fl.op_type,
                                f: Cow::Borrowed(span(fl.f)),
                                value: fl.value.map(|v| RawJson(span(v))),
                            },
                            fl.events.map(|(a, b)| Parsed {
                                events: &batch.events[a as usize..b as usize],
                                text: &batch.text,
                            }),
                        ),
                        None => {
                            let op = if line.bad_utf8 {
                                Err("the line is not UTF-8".to_string())
                            } else {
                                serde_json::from_str::<RawOp>(text).map_err(|e| e.to_string())
                            };
                            match op {
                                Ok(op) => (op, None),
                                Err(e) if !line.complete => {
                                    warnings.push(truncated(n, &e));
                                    return Ok(());
                                }
                                Err(e) => return Err(malformed(format!("not a history op: {e}"))),
                            }
                        }
                    };
                    pairing.check(&op).map_err(malformed)?;
                    each(op, parsed).map_err(malformed)?;
                }
            }
            Ok(())
        })();
        // Stops the reader if it is still going.
        drop(rx);
        let read = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        consumed?;
        read.map_err(|source| HistoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(warnings)
    })
}

/// Parses a history line written as this crate writes it (fields in order, no escapes, the
/// value last), leaving the value unparsed and *unvalidated*: only for callers that parse every
/// value themselves ([`crate::check_file_full`]).
pub fn raw_op(line: &str) -> Option<RawOp<'_>> {
    let mut c = Cursor {
        b: line.as_bytes(),
        at: 0,
    };
    let field = |c: &mut Cursor<'_>, name: &[u8], first: bool| -> Option<()> {
        if !first {
            c.eat(b',').ok()?;
        }
        let (a, b) = c.string().ok()?;
        (&c.b[a as usize..b as usize] == name).then_some(())?;
        c.eat(b':').ok()
    };
    c.eat(b'{').ok()?;
    field(&mut c, b"index", true)?;
    let index = c.u64().ok()?;
    field(&mut c, b"time_ns", false)?;
    let time_ns = c.u64().ok()?;
    field(&mut c, b"process", false)?;
    let process = if c.peek() == Some(b'"') {
        let (a, b) = c.string().ok()?;
        Process::Named(line[a as usize..b as usize].to_string())
    } else {
        Process::Client(c.u64().ok()?)
    };
    field(&mut c, b"type", false)?;
    let (a, b) = c.string().ok()?;
    let op_type = match &line[a as usize..b as usize] {
        "invoke" => OpType::Invoke,
        "ok" => OpType::Ok,
        "fail" => OpType::Fail,
        "info" => OpType::Info,
        _ => return None,
    };
    field(&mut c, b"f", false)?;
    let (a, b) = c.string().ok()?;
    let f = Cow::Borrowed(&line[a as usize..b as usize]);
    field(&mut c, b"value", false)?;
    let rest = line[c.at..].trim_end();
    let value = rest.strip_suffix('}')?.trim();
    if value.is_empty() {
        return None;
    }
    Some(RawOp {
        index,
        time_ns,
        process,
        op_type,
        f,
        value: (value != "null").then_some(RawJson(value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every call, as text.
    #[derive(Default)]
    struct Log(Vec<String>, Vec<String>);

    impl MopSink for Log {
        fn intern_key(&mut self, key: &str) -> u32 {
            self.1.push(key.to_string());
            (self.1.len() - 1) as u32
        }
        fn send(&mut self, key: &str, value: i64, offset: Option<i64>) {
            self.0.push(format!("send {key} {value} {offset:?}"));
        }
        fn partition(&mut self, key: &str, partition: u32) {
            self.0.push(format!("partition {key} {partition}"));
        }
        fn poll(&mut self) {
            self.0.push("poll".into());
        }
        fn read_key(&mut self, key: u32, offset: Option<i64>, value: i64) {
            self.0
                .push(format!("read {} {offset:?} {value}", self.1[key as usize]));
        }
        fn target(&mut self, target: TargetRef<'_>) {
            self.0.push(format!("target {target:?}"));
        }
        fn rebalance(&mut self, target: TargetRef<'_>) {
            self.0.push(format!("rebalance {target:?}"));
        }
    }

    /// The fast path gives the sink exactly the calls of the general path, or gives up
    /// without a call.
    #[test]
    fn the_fast_path_agrees_with_serde_or_gives_up() {
        let cases = [
            (r#"[["send","k2",41,2]]"#, true),
            (r#"[["send","k2",[412,41],2]]"#, true),
            (r#"[["send","k2",[null,41]]]"#, true),
            (r#"[["send","k2",-5,null]]"#, true),
            (
                r#" [ ["poll" , {"k2":[[411,40],[412,41]],"k3":[]} , {"k2":2,"k3":3}] ] "#,
                true,
            ),
            (r#"[["poll"]]"#, true),
            (r#"[["poll",null,null],["poll",{}]]"#, true),
            (r#"[["poll",{"k":[[null,4]]}],["send","k",5]]"#, true),
            (r#"[["rebalance",[0,1,"k2"]],["rebalance",null]]"#, true),
            (r#"[0,1,"k3","all"]"#, true),
            (r#"null"#, true),
            (r#"[]"#, true),
            (r#"[["send","k\"2",41]]"#, false),
            (r#"[["send","k2",4.5]]"#, false),
            (r#"[["send","k2",41,2,"extra"]]"#, false),
            (r#"[["commit",{"p0":4}]]"#, false),
            (r#"{"nodes":["n1"]}"#, false),
            (r#"[null,true]"#, false),
            (r#"[-1]"#, false),
            (r#"[["poll",{"k":[[1,2]]}]] x"#, false),
            (
                r#"[["send","k",[9223372036854775807,-9223372036854775808]]]"#,
                true,
            ),
            (r#"[["send","k",[0,9223372036854775808]]]"#, false),
            (r#"[["send","k",[0,12345678901234567890]]]"#, false),
            (r#"[["send","k",[0,01]]]"#, false),
        ];
        let mut parser = MopParser::default();
        for (json, fast) in cases {
            let mut slow = Log::default();
            let slow_ok = crate::txns::feed_raw_into(&mut slow, json).is_ok();
            let mut quick = Log::default();
            let quick_ok = parser.feed(&mut quick, json).is_ok();
            assert_eq!(quick_ok, fast, "{json}");
            if quick_ok {
                assert!(slow_ok, "{json}");
                assert_eq!(quick.0, slow.0, "{json}");
            } else {
                assert!(quick.0.is_empty(), "{json}: nothing handed on");
            }
        }
    }

    #[test]
    fn lines_in_the_writers_layout_are_read_and_others_left_to_serde() {
        let line = r#"{"index":7,"time_ns":99,"process":3,"type":"ok","f":"send","value":[["send","k",[1,2]]]}"#;
        let op = raw_op(line).expect("fast");
        assert_eq!(
            (op.index, op.time_ns, op.process),
            (7, 99, Process::Client(3))
        );
        assert_eq!(op.op_type, OpType::Ok);
        assert_eq!(op.value.map(|v| v.get()), Some(r#"[["send","k",[1,2]]]"#));
        let nemesis =
            r#"{"index":8,"time_ns":99,"process":"nemesis","type":"info","f":"kill","value":null}"#;
        let op = raw_op(nemesis).expect("fast");
        assert!(op.process.is_nemesis() && op.value.is_none());
        for other in [
            r#"{"time_ns":99,"index":7,"process":3,"type":"ok","f":"send","value":null}"#,
            r#"{"index":7,"time_ns":99,"process":3,"type":"okay","f":"send","value":null}"#,
            r#"{"index":7,"time_ns":99,"process":-3,"type":"ok","f":"send","value":null}"#,
            r#"{"index":7,"time_ns":99,"process":3,"type":"ok","f":"send"}"#,
            r#"{"index":7,"time_ns":1.5,"process":3,"type":"ok","f":"send","value":null}"#,
        ] {
            assert!(raw_op(other).is_none(), "{other}");
        }
    }

    /// The pipelined reader keeps the general reader's rules: a truncated last line is
    /// dropped with a warning, a malformed or non-UTF-8 line is an error naming it, a bad
    /// pairing too.
    #[test]
    fn the_pipelined_reader_names_bad_lines_and_drops_a_truncated_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("h.jsonl");
        let inv =
            r#"{"index":0,"time_ns":1,"process":1,"type":"invoke","f":"poll","value":[["poll"]]}"#;
        let ok = r#"{"index":1,"time_ns":2,"process":1,"type":"ok","f":"poll","value":[["poll",{"k":[[0,1]]}]]}"#;
        let check = |text: &[u8]| {
            std::fs::write(&p, text).expect("write");
            crate::check_file(&p, &crate::CheckOptions::default())
        };
        let r = check(format!("{inv}\n{ok}\n{{\"index\":2,\"time_ns\"").as_bytes()).expect("ok");
        assert!(
            r.warnings.iter().any(|w| w.contains("line 3")),
            "{:?}",
            r.warnings
        );
        assert_eq!(r.stats["reads"], 1);
        let e = check(format!("{inv}\nnot json\n{ok}\n").as_bytes()).expect_err("bad line");
        assert!(e.to_string().contains(":2:"), "{e}");
        let mut bytes = format!("{inv}\n").into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\n");
        let e = check(&bytes).expect_err("not UTF-8");
        assert!(e.to_string().contains(":2:"), "{e}");
        let e = check(format!("{ok}\n").as_bytes()).expect_err("orphan");
        assert!(e.to_string().contains("without a matching invoke"), "{e}");
        let bad_mops = r#"{"index":1,"time_ns":2,"process":1,"type":"ok","f":"poll","value":[["poll",{"k":[[0]]}]]}"#;
        let e = check(format!("{inv}\n{bad_mops}\n").as_bytes()).expect_err("bad micro-ops");
        assert!(
            e.to_string().contains(":2:") && e.to_string().contains("micro-ops"),
            "{e}"
        );
    }
}
