//! JUnit XML for CI systems: one test case per run (or matrix cell), failed when its finding
//! invalidates it, errored when the harness could not run it.

use std::fmt::Write;

use crate::verdict::Verdict;

/// One test case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Case name (run or cell).
    pub name: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Seconds it took.
    pub seconds: f64,
    /// Explanation shown on failure (findings, or the error).
    pub message: String,
    /// A link or path to the report.
    pub report: String,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML document for `suite`.
pub fn render(suite: &str, cases: &[Case]) -> String {
    let failures = cases
        .iter()
        .filter(|c| c.verdict == Verdict::Invalid)
        .count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Crashed | Verdict::Unknown))
        .count();
    let total: f64 = cases.iter().map(|c| c.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total:.3}\">",
        esc(suite),
        cases.len()
    );
    for c in cases {
        let _ = write!(
            x,
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            esc(suite),
            esc(&c.name),
            c.seconds
        );
        match c.verdict {
            Verdict::Valid => {}
            Verdict::Invalid => {
                let _ = write!(
                    x,
                    "<failure message=\"{}\">{}</failure>",
                    esc(&c.message),
                    esc(&c.report)
                );
            }
            Verdict::Crashed | Verdict::Unknown => {
                let _ = write!(
                    x,
                    "<error message=\"{}\">{}</error>",
                    esc(&c.message),
                    esc(&c.report)
                );
            }
        }
        let _ = writeln!(x, "<system-out>{}</system-out></testcase>", esc(&c.report));
    }
    x.push_str("</testsuite>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_map_to_failures_and_errors_and_text_is_escaped() {
        let cases = vec![
            Case {
                name: "acks=all mi=2".into(),
                verdict: Verdict::Valid,
                seconds: 1.5,
                message: String::new(),
                report: "r1/report.html".into(),
            },
            Case {
                name: "acks=1 <mi=1>".into(),
                verdict: Verdict::Invalid,
                seconds: 2.0,
                message: "lost-write: 3 & more".into(),
                report: "r2".into(),
            },
            Case {
                name: "x".into(),
                verdict: Verdict::Crashed,
                seconds: 0.0,
                message: "broker failed to start".into(),
                report: String::new(),
            },
        ];
        let xml = render("matrix", &cases);
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"acks=1 &lt;mi=1&gt;\""));
        assert!(xml.contains("<failure message=\"lost-write: 3 &amp; more\">"));
        assert!(xml.contains("<error message=\"broker failed to start\">"));
        assert_eq!(xml.matches("<testcase").count(), 3);
    }
}
