//! How `check` prints its [`Report`]: a table with one line per check and
//! a summary (coloured on a terminal), or one JSON document (`--json`),
//! whose shape is stable:
//!
//! ```json
//! {"url": "...", "connected": true,
//!  "checks": [{"name": "status", "status": "pass", "reason": "200 OK"}, ...],
//!  "summary": {"pass": 11, "warn": 1, "fail": 0, "skip": 0},
//!  "exit": 0}
//! ```

use std::io::{self, Write};

use serde::Serialize;

use super::{Check, Level, Report};
use crate::output::escaped;

impl Level {
    /// The word in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Self::Pass => "\x1b[1;32m",
            Self::Warn => "\x1b[1;33m",
            Self::Fail => "\x1b[1;31m",
            Self::Skip => "\x1b[2m",
        }
    }
}

/// Writes the table and the summary line.
///
/// # Errors
///
/// Writing to `out` failed.
pub fn write_table(out: &mut impl Write, report: &Report, color: bool) -> io::Result<()> {
    writeln!(out, "sse-cli check {}", escaped(&report.url))?;
    writeln!(out)?;
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for Check {
        name,
        status,
        reason,
    } in &report.checks
    {
        let label = status.label();
        let label = if color {
            format!("{}{label}\x1b[0m", status.color())
        } else {
            label.to_string()
        };
        writeln!(out, "  {label}  {name:<width$}  {}", escaped(reason))?;
    }
    writeln!(out)?;
    writeln!(out, "{}", summary(report))?;
    out.flush()
}

/// `12 checks: 10 passed, 1 warning, 1 failed, 0 skipped` and what it means.
pub fn summary(report: &Report) -> String {
    let (pass, warn, fail, skip) = (
        report.count(Level::Pass),
        report.count(Level::Warn),
        report.count(Level::Fail),
        report.count(Level::Skip),
    );
    let verdict = match report.exit_code() {
        0 if warn == 0 => "ready for browsers",
        0 => "works, with warnings",
        1 => "broken for browsers",
        _ => "could not connect",
    };
    format!(
        "{} checks: {pass} passed, {warn} {}, {fail} failed, {skip} skipped: {verdict}",
        report.checks.len(),
        if warn == 1 { "warning" } else { "warnings" },
    )
}

#[derive(Serialize)]
struct Summary {
    pass: usize,
    warn: usize,
    fail: usize,
    skip: usize,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    url: &'a str,
    connected: bool,
    checks: &'a [Check],
    summary: Summary,
    exit: u8,
}

/// Writes the report as one JSON document and a newline.
///
/// # Errors
///
/// Writing to `out` failed.
pub fn write_json(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let json = JsonReport {
        url: &report.url,
        connected: report.connected,
        checks: &report.checks,
        summary: Summary {
            pass: report.count(Level::Pass),
            warn: report.count(Level::Warn),
            fail: report.count(Level::Fail),
            skip: report.count(Level::Skip),
        },
        exit: report.exit_code(),
    };
    serde_json::to_writer(&mut *out, &json)?;
    writeln!(out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(levels: &[Level], connected: bool) -> Report {
        Report {
            url: "http://h/sse".into(),
            connected,
            checks: levels
                .iter()
                .map(|&l| Check::new("x", l, "because"))
                .collect(),
        }
    }

    #[test]
    fn exit_codes_and_summaries() {
        let r = report(&[Level::Pass, Level::Pass], true);
        assert_eq!(r.exit_code(), 0);
        assert_eq!(
            summary(&r),
            "2 checks: 2 passed, 0 warnings, 0 failed, 0 skipped: ready for browsers"
        );
        let r = report(&[Level::Pass, Level::Warn, Level::Skip], true);
        assert_eq!(r.exit_code(), 0);
        assert!(summary(&r).ends_with("1 warning, 0 failed, 1 skipped: works, with warnings"));
        let r = report(&[Level::Fail, Level::Warn], true);
        assert_eq!(r.exit_code(), 1);
        let r = report(&[Level::Fail, Level::Skip], false);
        assert_eq!(r.exit_code(), 2);
        assert!(summary(&r).ends_with("could not connect"));
    }

    #[test]
    fn table_and_json_shapes() {
        let r = report(&[Level::Pass, Level::Fail], true);
        let mut table = Vec::new();
        write_table(&mut table, &r, false).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("  PASS  x  because\n  FAIL  x  because\n"),
            "{table}"
        );
        let mut json = Vec::new();
        write_json(&mut json, &r).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["checks"][1]["status"], "fail");
        assert_eq!(value["summary"]["fail"], 1);
        assert_eq!(value["exit"], 1);
        assert_eq!(value["connected"], true);
    }
}
