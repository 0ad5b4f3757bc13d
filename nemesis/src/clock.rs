//! Per-process clock faults with libfaketime: the service is started with `LD_PRELOAD` of
//! libfaketime and a per-node `FAKETIME_TIMESTAMP_FILE`; bumping writes an offset (`+N`/`-N`
//! seconds) into that file, which the process re-reads on every clock call
//! (`FAKETIME_NO_CACHE=1`). The monotonic clock is left alone (`DONT_FAKE_MONOTONIC=1`), like a
//! real wall-clock step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::NemesisError;

/// Finds libfaketime's multi-threaded library (`dpkg -L libfaketime`, then known paths).
pub fn libfaketime_path() -> Result<PathBuf, NemesisError> {
    if let Ok(out) = std::process::Command::new("dpkg")
        .args(["-L", "libfaketime"])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        for want in ["libfaketimeMT.so.1", "libfaketime.so.1"] {
            if let Some(line) = text.lines().find(|l| l.ends_with(want)) {
                return Ok(PathBuf::from(line.trim()));
            }
        }
    }
    for p in [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    Err(NemesisError::Invalid(
        "libfaketime not found: install the Debian package `libfaketime` for clock faults".into(),
    ))
}

/// The environment a service needs for clock faults through `file`.
pub fn faketime_env(lib: &Path, file: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
        ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// Creates `file` with a zero offset when it does not exist yet.
pub fn ensure_clock_file(file: &Path) -> std::io::Result<()> {
    if !file.exists() {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, "+0\n")?;
    }
    Ok(())
}

/// The libfaketime offset text for `offset_ms` (seconds with millisecond decimals).
pub fn offset_text(offset_ms: i64) -> String {
    let sign = if offset_ms < 0 { '-' } else { '+' };
    let abs = offset_ms.unsigned_abs();
    if abs.is_multiple_of(1000) {
        format!("{sign}{}\n", abs / 1000)
    } else {
        format!("{sign}{}.{:03}\n", abs / 1000, abs % 1000)
    }
}

/// Writes an offset of `offset_ms` milliseconds into `file` (atomically, via rename).
pub fn set_offset(file: &Path, offset_ms: i64) -> Result<(), NemesisError> {
    let tmp = file.with_extension("tmp");
    let io = |source| NemesisError::Io {
        path: file.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, offset_text(offset_ms)).map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}

/// A running strobe: flips a clock file between `+delta` and `0` every period until stopped
/// or until its duration ends; always leaves the offset at 0.
#[derive(Debug)]
pub struct Strobe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Strobe {
    /// Starts strobing `files` by `delta_ms` every `period` for `duration`.
    pub fn start(files: Vec<PathBuf>, delta_ms: i64, period: Duration, duration: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + duration;
            let mut high = false;
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                high = !high;
                for f in &files {
                    let _ = set_offset(f, if high { delta_ms } else { 0 });
                }
                std::thread::sleep(period);
            }
            for f in &files {
                let _ = set_offset(f, 0);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the strobe and waits until the offsets are back at 0.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Strobe {
    fn drop(&mut self) {
        self.stop();
    }
}
