//! The history model (`history`: ops, JSON Lines writer and reader) and the checkers (`queue`:
//! Jepsen's Kafka queue anomalies). Pure over a history: nothing here knows brokers, nodes or
//! networks. Dependency-cycle search (G0, G1c), statistics and the synthetic history generator
//! are still to come (issue "Checkers").

pub mod history;
pub mod queue;

use std::path::Path;

pub use history::{read_history, History, HistoryError, HistoryWriter, Op, OpType, Process};
pub use queue::{check, CheckOptions, CheckResult, Finding};

/// Reads a history file and checks it.
pub fn check_file(path: &Path, options: &CheckOptions) -> Result<CheckResult, HistoryError> {
    Ok(check(&read_history(path)?, options))
}
