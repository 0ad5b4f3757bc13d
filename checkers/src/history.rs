//! The history model and its JSON Lines I/O (DESIGN.md): one op per line, an `invoke` and a
//! completion (`ok`, `fail`, `info`) per client operation, nemesis ops with process `"nemesis"`.
//! The writer appends and flushes each op as it happens, so a crash loses nothing recorded; the
//! reader names the line of anything malformed and tolerates a truncated last line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who performed an op: a client process number, or a named actor (`"nemesis"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Process {
    /// A client worker's process id.
    Client(u64),
    /// The nemesis (or another named actor).
    Named(String),
}

/// A number or a string, read directly (serde's untagged enums buffer every value first, which
/// costs on every line of a history).
impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Process;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a process number or a name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Process, E> {
                Ok(Process::Client(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Process, E> {
                u64::try_from(v)
                    .map(Process::Client)
                    .map_err(|_| E::custom("a process number must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Process, E> {
                Ok(Process::Named(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Process {
    /// The nemesis.
    pub fn nemesis() -> Process {
        Process::Named("nemesis".into())
    }

    /// Is this the nemesis?
    pub fn is_nemesis(&self) -> bool {
        matches!(self, Process::Named(n) if n == "nemesis")
    }
}

/// The process id of the workload's final reader (the reads after the nemesis healed).
pub const FINAL_PROCESS: u64 = 1_000_000;

/// The type of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation started.
    Invoke,
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown: a timeout or a lost connection.
    Info,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub index: u64,
    /// Nanoseconds since the test started.
    pub time_ns: u64,
    /// Who.
    pub process: Process,
    /// Invoke or completion type.
    #[serde(rename = "type")]
    pub op_type: OpType,
    /// The function (`send`, `poll`, `txn`, `assign`, `subscribe`, `crash`, `commit`,
    /// `committed`, nemesis names).
    pub f: String,
    /// The micro-ops (clients) or details (nemesis).
    #[serde(default)]
    pub value: Value,
}

/// A history read back from disk.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every op, in order.
    pub ops: Vec<Op>,
    /// Things tolerated while reading (a truncated last line).
    pub warnings: Vec<String>,
}

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line is not a valid op.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Appends ops to a history file, one flushed line each; share it (`Arc`) between client
/// workers and the nemesis so the history has one order.
#[derive(Debug)]
pub struct HistoryWriter {
    inner: Mutex<(BufWriter<File>, u64)>,
    start: Instant,
    /// Where op times come from instead of `start.elapsed()` (a simulator's virtual time).
    clock: Option<fn() -> u64>,
}

impl HistoryWriter {
    /// Creates (truncates) the history file; times are measured from now.
    pub fn create(path: &Path) -> std::io::Result<HistoryWriter> {
        Ok(HistoryWriter {
            inner: Mutex::new((BufWriter::new(File::create(path)?), 0)),
            start: Instant::now(),
            clock: None,
        })
    }

    /// Creates (truncates) the history file; op times are `clock()` (nanoseconds since the
    /// test started, e.g. a simulator's virtual time).
    pub fn create_timed(path: &Path, clock: fn() -> u64) -> std::io::Result<HistoryWriter> {
        let mut w = Self::create(path)?;
        w.clock = Some(clock);
        Ok(w)
    }

    /// Ops written so far.
    pub fn len(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Whether no op was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends an op with the next index and the current time; returns its index.
    pub fn write(
        &self,
        process: Process,
        op_type: OpType,
        f: &str,
        value: Value,
    ) -> std::io::Result<u64> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let op = Op {
            index: g.1,
            time_ns: match self.clock {
                Some(clock) => clock(),
                None => self.start.elapsed().as_nanos() as u64,
            },
            process,
            op_type,
            f: f.to_string(),
            value,
        };
        serde_json::to_writer(&mut g.0, &op).map_err(std::io::Error::other)?;
        g.0.write_all(b"\n")?;
        g.0.flush()?;
        g.1 += 1;
        Ok(op.index)
    }

    /// Records an invocation.
    pub fn invoke(&self, process: u64, f: &str, value: Value) -> std::io::Result<u64> {
        self.write(Process::Client(process), OpType::Invoke, f, value)
    }

    /// Records a completion.
    pub fn complete(
        &self,
        process: u64,
        op_type: OpType,
        f: &str,
        value: Value,
    ) -> std::io::Result<u64> {
        self.write(Process::Client(process), op_type, f, value)
    }

    /// Records a nemesis op (`info`, as Jepsen does).
    pub fn nemesis(&self, f: &str, value: Value) -> std::io::Result<u64> {
        self.write(Process::nemesis(), OpType::Info, f, value)
    }
}

/// One history line as read, its micro-ops left as raw JSON for the caller to parse.
#[derive(Debug, Deserialize)]
pub struct RawOp<'a> {
    /// Position in the history.
    pub index: u64,
    /// Nanoseconds since the test started.
    pub time_ns: u64,
    /// Who.
    pub process: Process,
    /// Invoke or completion type.
    #[serde(rename = "type")]
    pub op_type: OpType,
    /// The function.
    #[serde(borrow)]
    pub f: std::borrow::Cow<'a, str>,
    /// The micro-ops or details, unparsed (absent or `null` when the op carries none).
    #[serde(borrow, default)]
    pub value: Option<RawJson<'a>>,
}

impl RawOp<'_> {
    /// The op with its value parsed (an error says what is wrong with the value).
    pub fn into_op(self) -> Result<Op, String> {
        let value = match self.value {
            Some(v) => serde_json::from_str(v.get()).map_err(|e| format!("bad value: {e}"))?,
            None => Value::Null,
        };
        Ok(Op {
            index: self.index,
            time_ns: self.time_ns,
            process: self.process,
            op_type: self.op_type,
            f: self.f.into_owned(),
            value,
        })
    }
}

/// A JSON value's text, unparsed (from a history line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(pub &'a str);

impl<'a> RawJson<'a> {
    /// The text.
    pub fn get(&self) -> &'a str {
        self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawJson<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de serde_json::value::RawValue>::deserialize(d).map(|r| RawJson(r.get()))
    }
}

/// Reads a history line by line, checking each (JSON shape, an invoke per completion, no
/// second invoke while one is open) and handing it to `each`; returns the warnings. A
/// truncated last line (a crash mid-write) is dropped with a warning; anything else malformed,
/// or an error from `each`, is an error naming the line.
pub fn scan(
    path: &Path,
    mut each: impl FnMut(RawOp<'_>) -> Result<(), String>,
) -> Result<Vec<String>, HistoryError> {
    scan_with(path, false, |op, _| each(op))
}

/// As [`scan`]; with `values_checked_by_caller`, lines are read and parsed on a second thread,
/// lines written as this crate writes them by [`crate::fastparse`] (their micro-ops included:
/// `each` gets them as a [`crate::fastparse::Parsed`] when they parsed), which leaves each
/// `value` unvalidated otherwise: for callers that parse every value themselves
/// ([`crate::check_file_full`]).
pub fn scan_with(
    path: &Path,
    values_checked_by_caller: bool,
    mut each: impl FnMut(RawOp<'_>, Option<crate::fastparse::Parsed<'_>>) -> Result<(), String>,
) -> Result<Vec<String>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    if values_checked_by_caller {
        return crate::fastparse::scan_pipelined(path, file, each);
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut warnings = Vec::new();
    let mut pairing = Pairing::default();
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(io)?;
        if read == 0 {
            break;
        }
        n += 1;
        let complete_line = line.ends_with('\n');
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let malformed = |message: String| HistoryError::Malformed {
            path: path.to_path_buf(),
            line: n,
            message,
        };
        let op: RawOp = match serde_json::from_str(text) {
            Ok(op) => op,
            Err(e) if !complete_line => {
                warnings.push(truncated(n, &e));
                break;
            }
            Err(e) => return Err(malformed(format!("not a history op: {e}"))),
        };
        pairing.check(&op).map_err(malformed)?;
        each(op, None).map_err(malformed)?;
    }
    Ok(warnings)
}

/// The warning for a truncated last line.
pub(crate) fn truncated(n: usize, e: &dyn std::fmt::Display) -> String {
    format!("line {n} is truncated ({e}); dropped it (the harness probably stopped mid-write)")
}

/// Checks that each client process invokes one op at a time and completes only what it
/// invoked, line by line.
#[derive(Debug, Default)]
pub(crate) struct Pairing {
    open: std::collections::HashMap<Process, u64>,
}

impl Pairing {
    /// The next op: an error says what is wrong with its pairing.
    pub(crate) fn check(&mut self, op: &RawOp<'_>) -> Result<(), String> {
        if op.process.is_nemesis() {
            return Ok(());
        }
        if op.op_type == OpType::Invoke {
            if let Some(prev) = self.open.get(&op.process) {
                return Err(format!(
                    "process {:?} invokes again while its op at index {prev} is still open",
                    op.process
                ));
            }
            self.open.insert(op.process.clone(), op.index);
        } else if self.open.remove(&op.process).is_none() {
            return Err(format!(
                "completion of `{}` by process {:?} without a matching invoke",
                op.f, op.process
            ));
        }
        Ok(())
    }
}

/// The `index` of a history line written as this crate writes them (`{"index":N,...`).
fn leading_index(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(br#"{"index":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Reads the ops at these history indices (an excerpt: the lines' indices are read without
/// parsing the rest of each line, and only the wanted lines are parsed), in file order. A
/// truncated last line is skipped; a malformed line that is wanted is an error naming it. The
/// file is assumed checked already ([`scan`]): nothing else is validated. `in_order`: the
/// file's indices increase line by line (`HistorySummary::indices_increasing`), so reading stops
/// after the last wanted index.
pub fn read_ops(
    path: &Path,
    wanted: &std::collections::BTreeSet<u64>,
    in_order: bool,
) -> Result<Vec<Op>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    let Some(&last) = wanted.last() else {
        return Ok(out);
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        n += 1;
        let complete_line = line.ends_with(b"\n");
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let malformed = |e: serde_json::Error| HistoryError::Malformed {
            path: path.to_path_buf(),
            line: n,
            message: format!("not a history op: {e}"),
        };
        let index = match leading_index(text)
            .ok_or(())
            .or_else(|()| serde_json::from_slice::<RawOp>(text).map(|op| op.index))
        {
            Ok(i) => i,
            Err(_) if !complete_line => break,
            Err(e) => return Err(malformed(e)),
        };
        if wanted.contains(&index) {
            match serde_json::from_slice::<Op>(text) {
                Ok(op) => out.push(op),
                Err(_) if !complete_line => break,
                Err(e) => return Err(malformed(e)),
            }
        }
        if in_order && index >= last {
            break;
        }
    }
    Ok(out)
}

/// Reads a whole history into memory (see [`scan`] for what is checked).
pub fn read_history(path: &Path) -> Result<History, HistoryError> {
    let mut ops = Vec::new();
    let warnings = scan(path, |raw| {
        ops.push(raw.into_op()?);
        Ok(())
    })?;
    Ok(History { ops, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn processes_read_as_numbers_or_names() {
        let p: Process = serde_json::from_str("7").expect("number");
        assert_eq!(p, Process::Client(7));
        let p: Process = serde_json::from_str("\"nemesis\"").expect("name");
        assert!(p.is_nemesis());
        assert!(serde_json::from_str::<Process>("-1").is_err());
        assert!(serde_json::from_str::<Process>("[1]").is_err());
        assert_eq!(
            serde_json::to_string(&Process::Client(7)).expect("json"),
            "7"
        );
    }

    #[test]
    fn written_histories_read_back_identically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        let w = HistoryWriter::create(&path).expect("create");
        w.invoke(3, "send", json!([["send", "k2", 41]]))
            .expect("write");
        w.nemesis("start-partition", json!({"isolated": ["n1"]}))
            .expect("write");
        w.complete(3, OpType::Ok, "send", json!([["send", "k2", [412, 41]]]))
            .expect("write");
        let h = read_history(&path).expect("read");
        assert_eq!(h.ops.len(), 3);
        assert_eq!(h.ops[0].index, 0);
        assert_eq!(h.ops[1].process, Process::nemesis());
        assert_eq!(h.ops[2].value, json!([["send", "k2", [412, 41]]]));
        assert!(h.ops[2].time_ns >= h.ops[0].time_ns);
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(text.starts_with(r#"{"index":0,"time_ns":"#), "{text}");
    }

    #[test]
    fn malformed_lines_are_named_and_a_truncated_tail_is_tolerated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("h.jsonl");
        let good =
            r#"{"index":0,"time_ns":1,"process":1,"type":"invoke","f":"poll","value":[["poll"]]}"#;
        std::fs::write(&p, format!("{good}\n{{\"index\":1,\"time_ns\"")).expect("write");
        let h = read_history(&p).expect("truncated tail tolerated");
        assert_eq!(h.ops.len(), 1);
        assert!(h.warnings[0].contains("line 2"));
        std::fs::write(&p, format!("{good}\nnot json\n")).expect("write");
        let e = read_history(&p).expect_err("bad line").to_string();
        assert!(e.contains(":2:"), "{e}");
        let orphan = r#"{"index":0,"time_ns":1,"process":2,"type":"ok","f":"poll","value":null}"#;
        std::fs::write(&p, format!("{orphan}\n")).expect("write");
        let e = read_history(&p).expect_err("orphan").to_string();
        assert!(
            e.contains("without a matching invoke") && e.contains(":1:"),
            "{e}"
        );
        std::fs::write(&p, "{\"index\":0}\n").expect("write");
        let e = read_history(&p).expect_err("missing fields").to_string();
        assert!(e.contains("missing field"), "{e}");
    }
}
