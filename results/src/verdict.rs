//! Verdicts and the nightly exit codes: 0 when every run is valid, 1 when any finding
//! invalidates a run, 2 when the harness could not run (or a verdict is unknown).

use serde::{Deserialize, Serialize};

/// The outcome of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Checked, nothing invalidating found.
    Valid,
    /// A finding invalidates the run.
    Invalid,
    /// The checker could not decide (e.g. the history is incomplete).
    Unknown,
    /// The harness could not run the test.
    Crashed,
}

impl Verdict {
    /// From results.json's `valid` field (`true`, `false` or `"unknown"`).
    pub fn from_valid(valid: &serde_json::Value) -> Verdict {
        match valid {
            serde_json::Value::Bool(true) => Verdict::Valid,
            serde_json::Value::Bool(false) => Verdict::Invalid,
            _ => Verdict::Unknown,
        }
    }
}

/// The process exit code for a set of runs: 1 if any run is invalid, else 2 if any could not
/// run or is unknown, else 0.
pub fn exit_code(verdicts: &[Verdict]) -> u8 {
    if verdicts.contains(&Verdict::Invalid) {
        1
    } else if verdicts.is_empty()
        || verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Crashed | Verdict::Unknown))
    {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_nightly_contract() {
        assert_eq!(exit_code(&[Verdict::Valid, Verdict::Valid]), 0);
        assert_eq!(
            exit_code(&[Verdict::Valid, Verdict::Invalid, Verdict::Crashed]),
            1
        );
        assert_eq!(exit_code(&[Verdict::Valid, Verdict::Crashed]), 2);
        assert_eq!(exit_code(&[Verdict::Unknown]), 2);
        assert_eq!(exit_code(&[]), 2);
        assert_eq!(
            Verdict::from_valid(&serde_json::json!(false)),
            Verdict::Invalid
        );
        assert_eq!(
            Verdict::from_valid(&serde_json::json!("unknown")),
            Verdict::Unknown
        );
    }
}
