//! Turning a [`RunReport`] into the artefacts people and machines read: the JSON record,
//! JUnit XML for CI dashboards, a Markdown summary, the terminal table and the per-check
//! progress lines.
//!
//! Every renderer labels simulated results as such, because a green run against the
//! `sim` backend says nothing about real GPUs and must never be mistaken for one.
//! Files are written atomically so that an interrupted run cannot leave a truncated
//! report that a later `read_json` (or a dashboard) would choke on.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use serde::Deserialize;

use crate::outcome::{CheckResult, Evidence, REPORT_SCHEMA_VERSION, RunReport, Status};

/// Why a report could not be written or read back. Each message names the file involved
/// and says what to do, because these errors are shown to users as-is at the end of a run.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing a report file failed at `step`; the previous file, if any, is left untouched.
    #[error(
        "could not write {}: {step} failed: {source}; check that the directory is writable and the disk is not full",
        .path.display()
    )]
    Write {
        /// The report file that was being written.
        path: PathBuf,
        /// What the writer was doing when it failed, e.g. `creating a temporary file`.
        step: &'static str,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The report file could not be read at all.
    #[error(
        "could not read the report {}: {source}; check the path, or produce a report first with `cdi-harness run`",
        .path.display()
    )]
    Read {
        /// The report file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The file was read but is not a cdi-harness JSON report of a layout this build knows.
    #[error(
        "{} is not a valid cdi-harness JSON report ({source}); it may be truncated, hand-edited or another tool's file: run `cdi-harness run` again to regenerate it",
        .path.display()
    )]
    Parse {
        /// The report file that was being read.
        path: PathBuf,
        /// Where and why parsing failed.
        source: serde_json::Error,
    },

    /// The report was written by a newer cdi-harness whose layout this build cannot promise
    /// to understand; reading it anyway could silently misreport results.
    #[error(
        "{} uses report schema version {found}, but this cdi-harness reads only versions up to {supported}; read it with the newer cdi-harness that wrote it, or regenerate it with this one",
        .path.display()
    )]
    NewerSchema {
        /// The report file that was being read.
        path: PathBuf,
        /// The `schema_version` found in the file.
        found: u64,
        /// The newest version this build understands ([`REPORT_SCHEMA_VERSION`]).
        supported: u32,
    },

    /// The report could not be encoded as JSON; nothing was written.
    #[error(
        "could not encode the report as JSON for {}: {source}; nothing was written, this is a bug in cdi-harness, please report it",
        .path.display()
    )]
    EncodeJson {
        /// The report file that was to be written.
        path: PathBuf,
        /// The encoder's error.
        source: serde_json::Error,
    },

    /// The JUnit XML could not be rendered; nothing was written.
    #[error(
        "could not render the JUnit XML report{}: {source}; nothing was written, this is a bug in cdi-harness, please report it",
        for_path(.path.as_deref())
    )]
    EncodeJunit {
        /// The file that was to be written, when rendering for a file.
        path: Option<PathBuf>,
        /// The renderer's error.
        source: quick_junit::SerializeError,
    },
}

/// ` for <path>` when there is a path, so in-memory rendering errors read naturally too.
fn for_path(path: Option<&Path>) -> String {
    path.map(|p| format!(" for {}", p.display()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

/// Writes the JSON report atomically (write to a temp file in the same dir, fsync, rename)
/// so an interrupted run never leaves a half-written report: the JSON is the record that
/// `read_json`, diffs and history rely on, so it must be either the old one or the new one.
/// Missing parent directories are created, so `--json out/run.json` just works.
pub fn write_json(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    let mut bytes =
        serde_json::to_vec_pretty(report).map_err(|source| ReportError::EncodeJson {
            path: path.to_path_buf(),
            source,
        })?;
    bytes.push(b'\n');
    write_atomically(path, |w| w.write_all(&bytes))
}

/// Only the field needed to decide whether the rest of the file can be trusted.
#[derive(Deserialize)]
struct SchemaProbe {
    schema_version: Option<u64>,
}

/// Reads a report back (for diffs, re-rendering and history) and refuses one written by a
/// newer cdi-harness, whose fields may have changed meaning, rather than misreading it.
pub fn read_json(path: &Path) -> Result<RunReport, ReportError> {
    let bytes = fs::read(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // The version is checked before the full parse so that a newer layout is reported as
    // "too new" rather than as a confusing missing-field error.
    let found = serde_json::from_slice::<SchemaProbe>(&bytes)
        .ok()
        .and_then(|probe| probe.schema_version);
    if let Some(found) = found.filter(|v| *v > u64::from(REPORT_SCHEMA_VERSION)) {
        return Err(ReportError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: REPORT_SCHEMA_VERSION,
        });
    }
    serde_json::from_slice(&bytes).map_err(|source| ReportError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------
// JUnit
// ---------------------------------------------------------------------------------------

/// The marker put on suite (and report) names of simulated results, so that dashboards
/// that show only names still never mistake a simulation for real hardware.
const SIMULATED_MARKER: &str = "[simulated]";

/// JUnit XML via the `quick-junit` crate, written atomically: CI systems (GitLab, Jenkins,
/// GitHub test reporters) ingest JUnit, so this is how results reach dashboards. See
/// [`junit_string`] for the layout.
pub fn write_junit(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    let xml = build_junit(report)
        .to_string()
        .map_err(|source| ReportError::EncodeJunit {
            path: Some(path.to_path_buf()),
            source,
        })?;
    write_atomically(path, |w| w.write_all(xml.as_bytes()))
}

/// The Markdown summary ([`markdown`]) written atomically, like every report file: a
/// full disk or an interrupted write leaves the previous summary whole, and a missing
/// parent directory is created as for `--json`.
pub fn write_markdown(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    write_bytes_atomically(path, markdown(report).as_bytes())
}

/// The JUnit XML as a string, for callers that ship it somewhere other than a file.
///
/// Layout: one `<testsuite>` per scenario, one `<testcase name="<check>"
/// classname="<scenario>">` per check, so dashboards group checks the way scenario files
/// do. A failure carries its first message line in `message` and the full message plus
/// the fix in the element text; a skip carries its reason in `message`. Simulated results
/// get `[simulated]` appended to the suite and report names and a `simulated=true`
/// property on suite and test case.
pub fn junit_string(report: &RunReport) -> Result<String, ReportError> {
    build_junit(report)
        .to_string()
        .map_err(|source| ReportError::EncodeJunit { path: None, source })
}

fn build_junit(report: &RunReport) -> quick_junit::Report {
    let run_simulated = report.simulated || report.results.iter().any(|r| r.simulated);
    let mut junit = quick_junit::Report::new(if run_simulated {
        format!("cdi-harness {SIMULATED_MARKER}")
    } else {
        "cdi-harness".to_owned()
    });
    junit.set_time(report.duration);

    for (scenario, results) in group_by_scenario(&report.results) {
        let simulated = report.simulated || results.iter().any(|r| r.simulated);
        let mut suite = TestSuite::new(if simulated {
            format!("{scenario} {SIMULATED_MARKER}")
        } else {
            scenario.to_owned()
        });
        suite.set_time(results.iter().map(|r| r.duration).sum());
        suite.add_property(("backend", report.backend.as_str()));
        suite.add_property(("simulated", bool_str(simulated)));
        suite.add_property(("started_at", report.started_at.as_str()));
        if let Some(engine) = report.engines.get(scenario) {
            let facts = [
                ("engine.version", &engine.version),
                ("engine.api_version", &engine.api_version),
                ("engine.endpoint", &engine.endpoint),
            ];
            for (name, value) in facts {
                if let Some(value) = value {
                    suite.add_property((name, value.as_str()));
                }
            }
            if let Some(hw) = &engine.hardware {
                if let Some(driver) = &hw.driver_version {
                    suite.add_property(("driver.version", driver.as_str()));
                }
                suite.add_property(("driver.simulated", bool_str(hw.simulated)));
            }
        }
        for result in results {
            suite.add_test_case(junit_case(result));
        }
        junit.add_test_suite(suite);
    }
    junit
}

fn junit_case(result: &CheckResult) -> TestCase {
    let status = match result.status {
        Status::Pass | Status::Xfail => TestCaseStatus::success(),
        Status::Fail => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(non_empty(first_line(&result.message), "check failed"));
            status.set_type("check failed");
            let mut text = result.message.trim_end().to_owned();
            if let Some(fix) = &result.fix {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str("fix: ");
                text.push_str(fix.trim_end());
            }
            if !text.is_empty() {
                status.set_description(text);
            }
            status
        }
        Status::Skip | Status::New => {
            let mut status = TestCaseStatus::skipped();
            let what = if result.status == Status::New {
                "new snapshot recorded, awaiting review"
            } else {
                "skipped"
            };
            status.set_message(non_empty(first_line(&result.message), what));
            if result.message.trim_end().contains('\n') {
                status.set_description(result.message.trim_end());
            }
            status
        }
    };
    let mut case = TestCase::new(result.check.as_str(), status);
    case.set_classname(result.scenario.as_str());
    case.set_time(result.duration);
    case.add_property(("status", result.status.as_str()));
    case.add_property(("backend", result.backend.as_str()));
    case.add_property(("simulated", bool_str(result.simulated)));
    if let Some(evidence) = result.evidence {
        case.add_property(("evidence", evidence.as_str()));
    }
    if let Some(cause) = result.cause {
        case.add_property(("cause", cause.as_str()));
    }
    if result.status == Status::Xfail {
        // JUnit has no expected-failure state: the case passes, and says so loudly.
        case.set_system_out(format!("xfail (failed as declared): {}", result.message));
    }
    case
}

/// Groups results by scenario in order of first appearance (results arrive in scenario
/// order, but a stray interleaving must not split or reorder suites).
fn group_by_scenario(results: &[CheckResult]) -> Vec<(&str, Vec<&CheckResult>)> {
    let mut groups: Vec<(&str, Vec<&CheckResult>)> = Vec::new();
    for result in results {
        match groups.iter_mut().find(|(s, _)| *s == result.scenario) {
            Some((_, members)) => members.push(result),
            None => groups.push((result.scenario.as_str(), vec![result])),
        }
    }
    groups
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

// ---------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------

/// Markdown summary for humans (CI step summaries, PR comments): a heading naming the
/// backend with a loud "simulated" label where it applies, the counts, one table row per
/// check, and every failure with its full message and fix so a reader knows what to do
/// without downloading the JSON.
pub fn markdown(report: &RunReport) -> String {
    let simulated = report.simulated || report.results.iter().any(|r| r.simulated);
    let failed = report.count(Status::Fail);
    let mut md = String::new();

    let label = if simulated { " (simulated)" } else { "" };
    let _ = writeln!(
        md,
        "# cdi-harness report: {} backend{label}\n",
        report.backend.as_str()
    );
    if simulated {
        md.push_str(
            "> **Simulated results.** These checks ran against a private engine with a \
             simulated NVIDIA CDI spec; they prove the harness and the CDI wiring, not real \
             GPU hardware.\n\n",
        );
    }
    let _ = writeln!(
        md,
        "Started {} · took {} · report schema v{}\n",
        md_inline(&report.started_at),
        format_duration(report.duration),
        report.schema_version
    );
    let verdict = if failed > 0 { "❌" } else { "✅" };
    let _ = writeln!(md, "{verdict} **{}**\n", count_words(report));

    if report.results.is_empty() {
        md.push_str("No checks ran.\n");
    } else {
        md.push_str("| Scenario | Check | Status | Evidence | Time | Message |\n");
        md.push_str("|---|---|---|---|---:|---|\n");
        for r in &report.results {
            let status = match r.status {
                Status::Pass => "✅ pass",
                Status::Fail => "❌ **fail**",
                Status::Skip => "⏭️ skip",
                Status::Xfail => "☑️ xfail (failed as declared)",
                Status::New => "🆕 new snapshot",
            };
            let _ = writeln!(
                md,
                "| {} | {} | {status} | {} | {} | {} |",
                md_cell(&r.scenario),
                md_cell(&r.check),
                r.evidence.map(|e| e.as_str()).unwrap_or("-"),
                format_duration(r.duration),
                md_cell(first_line(&r.message)),
            );
        }
    }

    let failures: Vec<&CheckResult> = report
        .results
        .iter()
        .filter(|r| r.status == Status::Fail)
        .collect();
    if !failures.is_empty() {
        md.push_str("\n## Failures\n");
        for r in failures {
            let _ = writeln!(md, "\n### `{}`\n", r.trial_name().replace('`', "'"));
            md.push_str(&fenced(non_empty(r.message.trim_end(), "(no message)")));
            match &r.fix {
                Some(fix) => {
                    md.push_str("\n**Fix:**\n\n");
                    md.push_str(&fenced(fix.trim_end()));
                }
                None => md.push_str("\nNo fix is known for this failure.\n"),
            }
        }
    }

    if !report.engines.is_empty() {
        md.push_str("\n## Engines\n\n");
        md.push_str("| Scenario | Version | API | Endpoint |\n");
        md.push_str("|---|---|---|---|\n");
        for (scenario, engine) in &report.engines {
            let cell = |v: &Option<String>| v.as_deref().map(md_cell).unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                md_cell(scenario),
                cell(&engine.version),
                cell(&engine.api_version),
                cell(&engine.endpoint),
            );
        }
    }
    md
}

/// A table cell: pipes escaped and line breaks flattened so the row stays one row.
fn md_cell(s: &str) -> String {
    let s = clean(s).replace('|', "\\|");
    if s.is_empty() { "—".to_owned() } else { s }
}

/// Inline text outside a table: line breaks flattened.
fn md_inline(s: &str) -> String {
    clean(s)
}

/// A fenced code block long enough that backticks inside `text` cannot close it.
fn fenced(text: &str) -> String {
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    format!("{fence}text\n{text}\n{fence}\n")
}

// ---------------------------------------------------------------------------------------
// Terminal
// ---------------------------------------------------------------------------------------

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// Columns between table cells.
const GAP: &str = "  ";
/// The message column never shrinks below this, even on a very narrow terminal: a
/// slightly too wide line is better than a message cut to nothing.
const MIN_MESSAGE_WIDTH: usize = 16;
/// Indentation of a failure's full message and fix under its table row.
const DETAIL_INDENT: &str = "    ";

/// The terminal summary table printed at the end of `cdi-harness run`: one row per check
/// (SCENARIO, CHECK, STATUS, TIME, MESSAGE, the message's first line cut with '…' to fit
/// `width` columns), each failed row followed by its full message and `fix:` line,
/// indented, so a user sees what to do without opening the JSON; then a totals line such
/// as `12 passed, 1 failed, 2 skipped (simulated: sim backend)` that says whether the
/// results are simulated. With `color`, PASS is green, FAIL red and SKIP yellow (plain ANSI
/// codes; the caller decides whether the terminal wants them).
///
/// Widths are counted in `char`s, which matches the terminal for the ASCII names and
/// messages the harness produces; the table is only a view, the JSON is the record.
pub fn summary_table(report: &RunReport, width: usize, color: bool) -> String {
    struct Row<'a> {
        result: &'a CheckResult,
        scenario: String,
        check: String,
        time: String,
        message: String,
    }
    let rows: Vec<Row<'_>> = report
        .results
        .iter()
        .map(|r| Row {
            result: r,
            scenario: clean(&r.scenario),
            check: clean(&r.check),
            time: format_duration(r.duration),
            message: clean(&evidence_marked(r)),
        })
        .collect();

    let col = |header: &str, cell: &dyn Fn(&Row<'_>) -> usize| {
        rows.iter().map(cell).max().unwrap_or(0).max(chars(header))
    };
    let w_scenario = col("SCENARIO", &|r| chars(&r.scenario));
    let w_check = col("CHECK", &|r| chars(&r.check));
    let w_status = chars("STATUS").max(chars("XFAIL"));
    let w_time = col("TIME", &|r| chars(&r.time));
    let prefix = w_scenario + w_check + w_status + w_time + 4 * GAP.len();
    let w_message = width.saturating_sub(prefix).max(MIN_MESSAGE_WIDTH);

    let mut out = String::new();
    let header = format!(
        "{:<w_scenario$}{GAP}{:<w_check$}{GAP}{:<w_status$}{GAP}{:>w_time$}{GAP}MESSAGE",
        "SCENARIO", "CHECK", "STATUS", "TIME"
    );
    out.push_str(&header);
    out.push('\n');

    for row in &rows {
        let status = row.result.status;
        let label = status_label(status);
        let padding = " ".repeat(w_status - label.len());
        let line = format!(
            "{:<w_scenario$}{GAP}{:<w_check$}{GAP}{}{padding}{GAP}{:>w_time$}{GAP}{}",
            row.scenario,
            row.check,
            paint(label, status_color(status), color),
            row.time,
            truncate(&row.message, w_message),
        );
        out.push_str(line.trim_end());
        out.push('\n');
        // The whole message goes under the row only when the row could not show it all
        // (or there is a fix to show): a short failure is not printed twice.
        let shown_whole =
            !row.result.message.trim_end().contains('\n') && chars(&row.message) <= w_message;
        if status == Status::Fail && (!shown_whole || row.result.fix.is_some()) {
            push_failure_details(&mut out, row.result, shown_whole);
        }
    }

    out.push('\n');
    out.push_str(&totals_line(report, color));
    out.push('\n');
    out
}

/// A failure's whole message and its fix, indented under its row.
fn push_failure_details(out: &mut String, result: &CheckResult, message_shown: bool) {
    let message = if message_shown {
        ""
    } else {
        result.message.as_str()
    };
    for line in message.trim_end().lines() {
        let line = clean(line);
        out.push_str(format!("{DETAIL_INDENT}{line}").trim_end());
        out.push('\n');
    }
    // No fix known: say nothing rather than print an empty promise.
    if let Some(fix) = &result.fix {
        let continuation = format!("{DETAIL_INDENT}{}", " ".repeat("fix: ".len()));
        for (i, line) in fix.trim_end().lines().enumerate() {
            let lead = if i == 0 {
                format!("{DETAIL_INDENT}fix: ")
            } else {
                continuation.clone()
            };
            out.push_str(format!("{lead}{}", clean(line)).trim_end());
            out.push('\n');
        }
    }
}

/// `12 passed, 1 failed, 2 skipped (simulated: sim backend)`: the counts plus which
/// backend produced them, so a screenshot of the last line alone cannot be misread.
fn totals_line(report: &RunReport, color: bool) -> String {
    let simulated = report.simulated || report.results.iter().any(|r| r.simulated);
    let count = |n: usize, what: &str, colour: &str| {
        let text = format!("{n} {what}");
        if n > 0 {
            paint(&text, colour, color)
        } else {
            text
        }
    };
    let backend = report.backend.as_str();
    let origin = if simulated {
        format!("simulated: {backend} backend")
    } else {
        format!("{backend} backend")
    };
    let mut parts = vec![
        count(report.count(Status::Pass), "passed", GREEN),
        count(report.count(Status::Fail), "failed", RED),
        count(report.count(Status::Skip), "skipped", YELLOW),
    ];
    // Shown only when present, so the common line stays the familiar three counts.
    for (status, what) in [
        (Status::Xfail, "failed as declared (xfail)"),
        (Status::New, "new snapshot(s)"),
    ] {
        let n = report.count(status);
        if n > 0 {
            parts.push(count(n, what, status_color(status)));
        }
    }
    let interrupted = if report.interrupted {
        "; INTERRUPTED: incomplete"
    } else {
        ""
    };
    format!("{} ({origin}{interrupted})", parts.join(", "))
}

/// `3 passed, 1 failed, 0 skipped` plus xfail and new counts where present.
fn count_words(report: &RunReport) -> String {
    let mut text = format!(
        "{} passed, {} failed, {} skipped",
        report.count(Status::Pass),
        report.count(Status::Fail),
        report.count(Status::Skip)
    );
    for (status, what) in [
        (Status::Xfail, "failed as declared (xfail)"),
        (Status::New, "new snapshot(s)"),
    ] {
        let n = report.count(status);
        if n > 0 {
            text.push_str(&format!(", {n} {what}"));
        }
    }
    if report.interrupted {
        text.push_str(" — interrupted, incomplete");
    }
    text
}

/// The first line of a result's message, marked with its evidence where that is not a
/// measurement, so a restated or constructed PASS cannot be mistaken for a machine fact.
fn evidence_marked(result: &CheckResult) -> String {
    let first = first_line(&result.message);
    match result.evidence {
        Some(e @ (Evidence::Declared | Evidence::Constructed)) => {
            format!("[{}] {first}", e.as_str())
        }
        _ => first.to_string(),
    }
}

/// One progress line printed as each check finishes (`  PASS  seed::device_all (0.21s)`),
/// so a long run shows life and a failure is visible the moment it happens; failures and
/// skips add ` — <first line of message>` because that is what the user wants to know next.
pub fn progress_line(result: &CheckResult, color: bool) -> String {
    let status = result.status;
    let mut line = format!(
        "  {}  {} ({})",
        paint(status_label(status), status_color(status), color),
        clean(&result.trial_name()),
        format_duration(result.duration),
    );
    let message = clean(first_line(&result.message));
    if status != Status::Pass && !message.is_empty() {
        line.push_str(" — ");
        line.push_str(&message);
    }
    line
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skip => "SKIP",
        Status::Xfail => "XFAIL",
        Status::New => "NEW",
    }
}

fn status_color(status: Status) -> &'static str {
    match status {
        Status::Pass | Status::Xfail => GREEN,
        Status::Fail => RED,
        Status::Skip | Status::New => YELLOW,
    }
}

fn paint(text: &str, colour: &str, enabled: bool) -> String {
    if enabled {
        format!("{colour}{text}{RESET}")
    } else {
        text.to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// Short human durations: `0.21s`, `12.3s`, `2m05s`.
/// `0.21s`, `12.3s`, `2m05s`: short and of steady width for the table's TIME column.
/// Kept by hand on purpose: humantime (a dependency) writes `210ms` or `12s 345ms`,
/// which is exact but ragged in a column and noisy at a glance.
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

fn first_line(s: &str) -> &str {
    s.trim_start().lines().next().unwrap_or("").trim_end()
}

fn non_empty<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.trim().is_empty() { fallback } else { s }
}

/// Makes text safe for one terminal or table line: tabs and line breaks become spaces and
/// other control characters (stray ANSI escapes from container output) are dropped, so a
/// message cannot break the layout or recolour the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Cuts `s` to at most `max` chars, marking the cut with '…'.
fn truncate(s: &str, max: usize) -> String {
    if chars(s) <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------------
// Atomic file writing
// ---------------------------------------------------------------------------------------

/// Writes a file so that readers only ever see the old content or the complete new one:
/// the bytes go to a hidden temporary file in the same directory (same filesystem, so the
/// rename is atomic), are flushed to disk, and the temporary file is then renamed over
/// `path`. On any error the temporary file is removed and `path` is left as it was.
/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename),
/// for the other files whose readers must never see half of one: history indexes, HTML
/// pages, copied `flake.lock`s.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    write_atomically(path, |w| w.write_all(bytes))
}

fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), ReportError> {
    let fail = |step: &'static str| {
        move |source: io::Error| ReportError::Write {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(fail("creating its directory"))?;

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".to_owned());
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail("creating a temporary file"))?;

    // The temporary file is private (0600); give the report the permissions of the file it
    // replaces, or ordinary ones, so CI artefact uploads and other users can read it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = fs::metadata(path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| fs::Permissions::from_mode(0o644));
        temp.as_file()
            .set_permissions(permissions)
            .map_err(fail("setting permissions"))?;
    }

    let mut writer = BufWriter::new(temp);
    write(&mut writer).map_err(fail("writing"))?;
    let temp = writer
        .into_inner()
        .map_err(|e| fail("writing")(e.into_error()))?;
    temp.as_file()
        .sync_all()
        .map_err(fail("flushing to disk"))?;
    temp.persist(path)
        .map_err(|e| fail("replacing the old file")(e.error))?;

    // Make the rename itself durable. Some filesystems refuse to sync a directory; the
    // report is complete and in place by now, so that is not worth failing the run for.
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::outcome::{BackendKind, EngineFacts};

    fn check(
        scenario: &str,
        check: &str,
        status: Status,
        message: &str,
        fix: Option<&str>,
        millis: u64,
    ) -> CheckResult {
        CheckResult {
            scenario: scenario.to_owned(),
            check: check.to_owned(),
            status,
            message: message.to_owned(),
            fix: fix.map(str::to_owned),
            cause: None,
            evidence: Some(crate::outcome::Evidence::Measured),
            duration: Duration::from_millis(millis),
            backend: BackendKind::Sim,
            simulated: true,
        }
    }

    #[test]
    fn a_short_failure_without_fix_is_printed_once_and_a_long_one_in_full() {
        let mut r = sample();
        r.results = vec![
            check("seed", "a", Status::Fail, "short reason", None, 1),
            check(
                "seed",
                "b",
                Status::Fail,
                &"long reason ".repeat(20),
                None,
                1,
            ),
        ];
        let table = summary_table(&r, 100, false);
        assert_eq!(table.matches("short reason").count(), 1, "{table}");
        assert!(!table.contains("fix:"), "{table}");
        // The long one is cut in its row, so it follows in full.
        assert!(
            table.contains(&"long reason ".repeat(20).trim_end().to_string()),
            "{table}"
        );
    }

    /// A small fixed report: two scenarios, every status, a multi-line failure with a fix.
    fn sample() -> RunReport {
        let mut engines = BTreeMap::new();
        engines.insert(
            "seed".to_owned(),
            EngineFacts {
                version: Some("28.5.2".to_owned()),
                api_version: Some("1.51".to_owned()),
                endpoint: Some("unix:///run/cdi-harness/seed/docker.sock".to_owned()),
                ..EngineFacts::default()
            },
        );
        RunReport {
            schema_version: REPORT_SCHEMA_VERSION,
            backend: BackendKind::Sim,
            simulated: true,
            started_at: "2025-01-02T03:04:05Z".to_owned(),
            duration: Duration::from_millis(3420),
            engines,
            flake_inputs: None,
            specs: BTreeMap::new(),
            interrupted: false,
            results: vec![
                check(
                    "seed",
                    "device_all",
                    Status::Pass,
                    "saw 2 GPUs in the container",
                    None,
                    210,
                ),
                check(
                    "seed",
                    "device_index",
                    Status::Fail,
                    "expected /dev/nvidia1 in the container, found none\ncontainer output:\n  ls: /dev/nvidia1: No such file",
                    Some(
                        "regenerate the CDI spec: nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml",
                    ),
                    1234,
                ),
                check(
                    "legacy",
                    "runtime_flag",
                    Status::Skip,
                    "the nvidia runtime is not installed | legacy path",
                    None,
                    0,
                ),
            ],
        }
    }

    fn host_report() -> RunReport {
        let mut r = sample();
        r.backend = BackendKind::Host;
        r.simulated = false;
        for c in &mut r.results {
            c.backend = BackendKind::Host;
            c.simulated = false;
        }
        r
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    // ---- JSON ----

    #[test]
    fn json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let report = sample();
        write_json(&report, &path).unwrap();
        let back = read_json(&path).unwrap();
        assert_eq!(back, report);
        assert_eq!(dir_entries(dir.path()), vec!["run.json"]);
    }

    #[test]
    fn write_json_creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/nested/run.json");
        write_json(&sample(), &path).unwrap();
        assert_eq!(read_json(&path).unwrap(), sample());
    }

    #[test]
    fn read_json_on_corrupt_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        fs::write(
            &path,
            b"{\"schema_version\": 1, \"backend\": \"sim\", \"resu",
        )
        .unwrap();
        let err = read_json(&path).unwrap_err();
        assert!(matches!(err, ReportError::Parse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("regenerate"), "{msg}");
    }

    #[test]
    fn read_json_on_empty_file_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.json");
        fs::write(&path, b"").unwrap();
        let err = read_json(&path).unwrap_err();
        assert!(matches!(err, ReportError::Parse { .. }), "{err:?}");
    }

    #[test]
    fn read_json_on_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.json");
        let err = read_json(&path).unwrap_err();
        assert!(matches!(err, ReportError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.json");
        let newer = u64::from(REPORT_SCHEMA_VERSION) + 1;
        // A future layout: fields renamed, so a plain parse would fail confusingly.
        let text = format!(r#"{{"schema_version": {newer}, "verdicts": []}}"#);
        fs::write(&path, text).unwrap();
        let err = read_json(&path).unwrap_err();
        match &err {
            ReportError::NewerSchema {
                found, supported, ..
            } => {
                assert_eq!(*found, newer);
                assert_eq!(*supported, REPORT_SCHEMA_VERSION);
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("version {newer}")), "{msg}");
        assert!(msg.contains("newer cdi-harness"), "{msg}");
    }

    #[test]
    fn newer_schema_with_otherwise_valid_layout_is_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.json");
        let mut report = sample();
        report.schema_version = REPORT_SCHEMA_VERSION + 1;
        fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
        assert!(matches!(
            read_json(&path),
            Err(ReportError::NewerSchema { .. })
        ));
    }

    // ---- atomic writing ----

    #[test]
    fn overwrite_replaces_completely_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        // An old file much longer than the new report: any leftover tail would show.
        fs::write(&path, "x".repeat(100_000)).unwrap();
        let mut report = sample();
        report.results.truncate(1);
        write_json(&report, &path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("xxxxxxxxxx"));
        assert_eq!(read_json(&path).unwrap(), report);
        assert_eq!(dir_entries(dir.path()), vec!["run.json"]);
    }

    #[test]
    fn interrupted_write_leaves_old_file_intact_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        fs::write(&path, "old report").unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(b"{\"half\": ")?;
            w.flush()?;
            Err(io::Error::other("interrupted"))
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::Write {
                    step: "writing",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(fs::read_to_string(&path).unwrap(), "old report");
        assert_eq!(dir_entries(dir.path()), vec!["run.json"]);
    }

    #[test]
    fn failed_rename_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory, so the final rename must fail.
        let path = dir.path().join("report.xml");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "kept").unwrap();
        let err = write_junit(&sample(), &path).unwrap_err();
        assert!(
            matches!(
                err,
                ReportError::Write {
                    step: "replacing the old file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(dir_entries(dir.path()), vec!["report.xml"]);
        assert_eq!(fs::read_to_string(path.join("keep")).unwrap(), "kept");
    }

    #[cfg(unix)]
    #[test]
    fn written_report_is_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        write_json(&sample(), &path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    // ---- JUnit ----

    #[test]
    fn junit_has_failure_skip_counts_and_simulated_marker() {
        let xml = junit_string(&sample()).unwrap();
        assert!(
            xml.contains(r#"<testsuites name="cdi-harness [simulated]" tests="3" skipped="1" failures="1" errors="0""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testsuite name="seed [simulated]" tests="2" skipped="0" errors="0" failures="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testsuite name="legacy [simulated]" tests="1" skipped="1" errors="0" failures="0""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="device_index" classname="seed""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<failure message="expected /dev/nvidia1 in the container, found none" type="check failed">"#),
            "{xml}"
        );
        assert!(
            xml.contains("fix: regenerate the CDI spec: nvidia-ctk cdi generate"),
            "{xml}"
        );
        assert!(
            xml.contains(
                r#"<skipped message="the nvidia runtime is not installed | legacy path"/>"#
            ),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="simulated" value="true"/>"#),
            "{xml}"
        );
        assert!(!xml.contains(r#"value="false""#), "{xml}");
    }

    #[test]
    fn junit_parses_back_with_the_same_structure() {
        let xml = junit_string(&sample()).unwrap();
        let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        assert_eq!((parsed.tests, parsed.failures, parsed.skipped), (3, 1, 1));
        let names: Vec<&str> = parsed.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["seed [simulated]", "legacy [simulated]"]);
        let seed = &parsed.test_suites[0];
        let case = &seed.test_cases[1];
        assert_eq!(case.name.as_str(), "device_index");
        assert_eq!(case.classname.as_deref(), Some("seed"));
        match &case.status {
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Failure,
                message,
                description,
                ..
            } => {
                assert_eq!(
                    message.as_deref(),
                    Some("expected /dev/nvidia1 in the container, found none")
                );
                let description = description.as_deref().unwrap();
                assert!(description.contains("ls: /dev/nvidia1: No such file"));
                assert!(description.contains("fix: regenerate the CDI spec"));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(matches!(
            parsed.test_suites[1].test_cases[0].status,
            TestCaseStatus::Skipped { .. }
        ));
    }

    #[test]
    fn junit_for_host_has_no_simulated_marker() {
        let xml = junit_string(&host_report()).unwrap();
        assert!(!xml.contains(SIMULATED_MARKER), "{xml}");
        assert!(xml.contains(r#"<testsuite name="seed" "#), "{xml}");
        assert!(
            xml.contains(r#"<property name="simulated" value="false"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="backend" value="host"/>"#),
            "{xml}"
        );
    }

    #[test]
    fn one_simulated_result_marks_its_suite() {
        let mut report = host_report();
        report.results[0].simulated = true;
        let xml = junit_string(&report).unwrap();
        assert!(
            xml.contains(r#"<testsuite name="seed [simulated]""#),
            "{xml}"
        );
        assert!(xml.contains(r#"<testsuite name="legacy" "#), "{xml}");
    }

    #[test]
    fn write_junit_writes_the_same_xml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        fs::write(&path, "<old/>".repeat(10_000)).unwrap();
        write_junit(&sample(), &path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            junit_string(&sample()).unwrap()
        );
        assert_eq!(dir_entries(dir.path()), vec!["junit.xml"]);
    }

    // ---- terminal ----

    #[test]
    fn table_lists_every_check_and_totals() {
        let table = summary_table(&sample(), 120, false);
        for name in ["device_all", "device_index", "runtime_flag"] {
            assert!(table.contains(name), "{table}");
        }
        let last = table.lines().last().unwrap();
        assert_eq!(
            last,
            "1 passed, 1 failed, 1 skipped (simulated: sim backend)"
        );
        let host = summary_table(&host_report(), 120, false);
        assert_eq!(
            host.lines().last().unwrap(),
            "1 passed, 1 failed, 1 skipped (host backend)"
        );
    }

    #[test]
    fn table_truncates_long_messages_to_width() {
        let mut report = sample();
        report.results[0].message = "m".repeat(500);
        for width in [60, 80, 100] {
            let table = summary_table(&report, width, false);
            let row = table.lines().find(|l| l.contains("device_all")).unwrap();
            assert_eq!(row.chars().count(), width, "{row}");
            assert!(row.ends_with('…'), "{row}");
            for line in table.lines().take(4) {
                assert!(line.chars().count() <= width, "{line:?} wider than {width}");
            }
        }
        // Short messages are not touched.
        let table = summary_table(&sample(), 200, false);
        assert!(table.contains("saw 2 GPUs in the container\n"), "{table}");
    }

    #[test]
    fn table_shows_full_failure_message_and_fix() {
        let table = summary_table(&sample(), 60, false);
        let lines: Vec<&str> = table.lines().collect();
        let row = lines
            .iter()
            .position(|l| l.contains("device_index"))
            .unwrap();
        assert!(lines[row].contains("FAIL"));
        assert_eq!(
            lines[row + 1],
            "    expected /dev/nvidia1 in the container, found none"
        );
        assert_eq!(lines[row + 2], "    container output:");
        assert_eq!(lines[row + 3], "      ls: /dev/nvidia1: No such file");
        assert_eq!(
            lines[row + 4],
            "    fix: regenerate the CDI spec: nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml"
        );
        // The passing and skipped checks get no details.
        assert!(!table.contains("    saw 2 GPUs"));
    }

    #[test]
    fn table_colors_statuses_only_when_asked() {
        let plain = summary_table(&sample(), 100, false);
        assert!(!plain.contains('\x1b'));
        let colored = summary_table(&sample(), 100, true);
        assert!(colored.contains(&format!("{GREEN}PASS{RESET}")));
        assert!(colored.contains(&format!("{RED}FAIL{RESET}")));
        assert!(colored.contains(&format!("{YELLOW}SKIP{RESET}")));
        // Colour codes must not shift the columns.
        let strip = |s: &str| {
            s.replace(GREEN, "")
                .replace(RED, "")
                .replace(YELLOW, "")
                .replace(RESET, "")
        };
        assert_eq!(strip(&colored), plain);
    }

    #[test]
    fn messages_cannot_inject_control_characters() {
        let mut report = sample();
        report.results[0].message = "ok\x1b[2J\ttabbed".to_owned();
        let table = summary_table(&report, 120, false);
        assert!(!table.contains('\x1b'));
        assert!(table.contains("ok[2J tabbed"), "{table}");
    }

    #[test]
    fn progress_lines() {
        let report = sample();
        assert_eq!(
            progress_line(&report.results[0], false),
            "  PASS  seed::device_all (0.21s)"
        );
        assert_eq!(
            progress_line(&report.results[1], false),
            "  FAIL  seed::device_index (1.23s) — expected /dev/nvidia1 in the container, found none"
        );
        assert_eq!(
            progress_line(&report.results[2], false),
            "  SKIP  legacy::runtime_flag (0.00s) — the nvidia runtime is not installed | legacy path"
        );
        assert_eq!(
            progress_line(&report.results[1], true),
            format!(
                "  {RED}FAIL{RESET}  seed::device_index (1.23s) — expected /dev/nvidia1 in the container, found none"
            )
        );
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(Duration::from_millis(210)), "0.21s");
        assert_eq!(format_duration(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn truncate_counts_chars_not_bytes() {
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(truncate("short", 5), "short");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn empty_report_renders() {
        let mut report = sample();
        report.results.clear();
        report.engines.clear();
        let table = summary_table(&report, 80, false);
        assert!(table.ends_with("0 passed, 0 failed, 0 skipped (simulated: sim backend)\n"));
        assert!(markdown(&report).contains("No checks ran."));
        let xml = junit_string(&report).unwrap();
        assert!(xml.contains(r#"tests="0""#), "{xml}");
    }

    // ---- Markdown ----

    #[test]
    fn markdown_escapes_pipes_and_labels_simulation() {
        let md = markdown(&sample());
        assert!(md.starts_with("# cdi-harness report: sim backend (simulated)\n"));
        assert!(md.contains("not installed \\| legacy path"), "{md}");
        let host = markdown(&host_report());
        assert!(!host.contains("imulated"), "{host}");
    }

    #[test]
    fn fence_outgrows_backticks_in_content() {
        assert_eq!(fenced("a ```` b"), "`````text\na ```` b\n`````\n");
        assert_eq!(fenced("plain"), "```text\nplain\n```\n");
    }

    #[test]
    fn snapshot_markdown() {
        insta::assert_snapshot!(markdown(&sample()));
    }

    #[test]
    fn snapshot_table() {
        insta::assert_snapshot!(summary_table(&sample(), 100, false));
    }
}
