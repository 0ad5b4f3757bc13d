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
        let mut v: i64 = 0;
        while let Some(c) = self.b.get(self.at).filter(|c| c.is_ascii_digit()) {
            let d = i64::from(c - b'0');
            v = v
                .checked_mul(10)
                .and_then(|v| {
                    if neg {
                        v.checked_sub(d)
                    } else {
                        v.checked_add(d)
                    }
                })
                .ok_or(Unsupported)?;
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0
            || (digits > 1 && self.b[start] == b'0')
            || matches!(self.b.get(self.at), Some(b'.' | b'e' | b'E'))
        {
            return Err(Unsupported);
        }
        Ok(v)
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
        let mut c = Cursor {
            b: json.as_bytes(),
            at: 0,
        };
        if !c.literal(b"null") {
            self.list(&mut c)?;
        }
        c.ws();
        if c.at != c.b.len() {
            return Err(Unsupported);
        }
        let s = |(a, b): (u32, u32)| &json[a as usize..b as usize];
        let mut key = 0;
        for ev in &self.events {
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
        Ok(())
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
}
