//! Nemesis op descriptions: what the harness writes into the history for each fault start
//! and stop (`process: "nemesis"`, `type: "info"`, `f`, `value`).

use serde::{Deserialize, Serialize};

/// One nemesis event for the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NemesisOp {
    /// The op's function, e.g. `start-partition`, `stop-partition`, `kill`, `start`.
    pub f: String,
    /// Targets and details, e.g. `{"isolated": ["n1"], "topology": "isolate-one"}`.
    pub value: serde_json::Value,
}

impl NemesisOp {
    /// A new op.
    pub fn new(f: impl Into<String>, value: serde_json::Value) -> Self {
        Self { f: f.into(), value }
    }
}
