//! Progress on a terminal: one indicatif spinner per run showing the phase (deploy, run, heal,
//! final reads, check), and during the main phase the elapsed time, completed operations and
//! the latest fault. Hidden when stderr is not a terminal (CI logs keep the plain
//! `harness: ...` lines).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The run's spinner (a no-op when stderr is not a terminal).
pub struct Progress {
    bar: ProgressBar,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A spinner on stderr when it is a terminal, hidden otherwise.
    pub fn new() -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            b.set_draw_target(ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
                b.set_style(style);
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Shows `phase` as the current step.
    pub fn phase(&self, phase: &str) {
        self.bar.set_message(phase.to_string());
    }

    /// Prints a line above the spinner (or plainly when hidden), and into the run's log.
    pub fn line(&self, text: &str) {
        crate::runlog::write_line(text);
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Updates the message every 200 ms with the main phase's progress until the returned
    /// guard is dropped: elapsed of `limit`, `ops` completed, and the `fault` last applied.
    pub fn watch_run(
        &self,
        limit: Duration,
        ops: Arc<AtomicU64>,
        fault: Arc<Mutex<String>>,
    ) -> RunWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = (!self.bar.is_hidden()).then(|| {
            let (bar, stop) = (self.bar.clone(), stop.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let f = fault.lock().map(|f| f.clone()).unwrap_or_default();
                    bar.set_message(format!(
                        "run {:>3}/{} s  {} ops  {}",
                        start.elapsed().as_secs(),
                        limit.as_secs(),
                        ops.load(Ordering::Relaxed),
                        if f.is_empty() {
                            "no fault yet".to_string()
                        } else {
                            format!("last fault: {f}")
                        }
                    ));
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        });
        RunWatch { stop, handle }
    }

    /// Clears the spinner.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Stops the main-phase display when dropped.
pub struct RunWatch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
