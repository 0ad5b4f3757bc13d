//! Verdicts and the nightly exit codes, as Jepsen's `test-all` gives them: 255 when any run
//! crashed (the harness could not run it), else 2 when any verdict is unknown, else 1 when any
//! finding invalidates a run, else 0.

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
    /// From a run's verdict word as `store::run_verdict` and the run summary give it:
    /// `valid`, `invalid`, `unchecked` (no results.json: the run did not finish) or anything
    /// else (unknown).
    pub fn from_word(word: &str) -> Verdict {
        match word {
            "valid" => Verdict::Valid,
            "invalid" => Verdict::Invalid,
            "unchecked" => Verdict::Crashed,
            _ => Verdict::Unknown,
        }
    }

    /// From results.json's `valid` field (`true`, `false` or `"unknown"`).
    pub fn from_valid(valid: &serde_json::Value) -> Verdict {
        match valid {
            serde_json::Value::Bool(true) => Verdict::Valid,
            serde_json::Value::Bool(false) => Verdict::Invalid,
            _ => Verdict::Unknown,
        }
    }
}

/// Exit code: every run valid.
pub const EXIT_VALID: u8 = 0;
/// Exit code: a finding invalidated a run.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: a verdict could not be decided.
pub const EXIT_UNKNOWN: u8 = 2;
/// Exit code: interrupted (SIGINT/SIGTERM), as shells report 128 + SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code: bad arguments or spec.
pub const EXIT_BAD_ARGS: u8 = 254;
/// Exit code: the harness failed (a run crashed).
pub const EXIT_CRASHED: u8 = 255;

impl Verdict {
    /// The exit code of a single run with this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Valid => EXIT_VALID,
            Verdict::Invalid => EXIT_INVALID,
            Verdict::Unknown => EXIT_UNKNOWN,
            Verdict::Crashed => EXIT_CRASHED,
        }
    }
}

/// The process exit code for a set of runs, Jepsen's order: 255 if any crashed, else 2 if any
/// is unknown, else 1 if any is invalid, else 0; no runs at all is unknown (2).
pub fn exit_code(verdicts: &[Verdict]) -> u8 {
    if verdicts.contains(&Verdict::Crashed) {
        EXIT_CRASHED
    } else if verdicts.is_empty() || verdicts.contains(&Verdict::Unknown) {
        EXIT_UNKNOWN
    } else if verdicts.contains(&Verdict::Invalid) {
        EXIT_INVALID
    } else {
        EXIT_VALID
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
            255
        );
        assert_eq!(exit_code(&[Verdict::Valid, Verdict::Invalid]), 1);
        assert_eq!(exit_code(&[Verdict::Invalid, Verdict::Unknown]), 2);
        assert_eq!(exit_code(&[Verdict::Valid, Verdict::Crashed]), 255);
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
