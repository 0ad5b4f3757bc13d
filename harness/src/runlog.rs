//! The run's own log, `harness.log` in the run folder: every line the terminal showed (the
//! `harness: ...` lines, warnings, the final summary) and the harness's debug detail (tracing
//! events of the harness and nemesis at debug level), so a nightly run can be read the next
//! morning without its terminal. One log file is open at a time (runs in a series follow each
//! other); lines written while none is open reach the terminal only.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

static LOG: Mutex<Option<File>> = Mutex::new(None);

fn with_log(f: impl FnOnce(&mut File)) {
    if let Ok(mut guard) = LOG.lock() {
        if let Some(file) = guard.as_mut() {
            f(file);
        }
    }
}

/// Opens `path` (appending) as the current run's log; the previous one, if any, is closed.
pub fn open(path: &Path) -> std::io::Result<()> {
    let file = File::options().create(true).append(true).open(path)?;
    if let Ok(mut guard) = LOG.lock() {
        *guard = Some(file);
    }
    Ok(())
}

/// Closes the current run's log.
pub fn close() {
    if let Ok(mut guard) = LOG.lock() {
        if let Some(mut f) = guard.take() {
            let _ = f.flush();
        }
    }
}

/// Writes `text` (one or more lines) to the run's log only.
pub fn write_line(text: &str) {
    with_log(|f| {
        let _ = writeln!(f, "{text}");
    });
}

/// Shows `text` on the terminal (stderr) and writes it to the run's log.
pub fn say(text: &str) {
    eprintln!("{text}");
    write_line(text);
}

/// A `tracing` writer into the run's log (events are dropped while no log is open).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        with_log(|f| {
            let _ = f.write_all(buf);
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        with_log(|f| {
            let _ = f.flush();
        });
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// Installs the process's tracing: `RUST_LOG` (default `info`, librdkafka quiet) to stderr,
/// and debug detail of the harness and nemesis into the run's log.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let terminal = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=off,rdkafka=off")),
        );
    let file = tracing_subscriber::fmt::layer()
        .with_writer(LogWriter)
        .with_ansi(false)
        .with_filter(EnvFilter::new(
            "info,harness=debug,nemesis=debug,librdkafka=off,rdkafka=off",
        ));
    let _ = tracing_subscriber::registry()
        .with(terminal)
        .with(file)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_open_log_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("harness.log");
        write_line("before: dropped");
        open(&path).expect("open");
        say("harness: shown and kept");
        let _ = LogWriter.write(b"a tracing event\n");
        close();
        write_line("after: dropped");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "harness: shown and kept\na tracing event\n");
    }
}
