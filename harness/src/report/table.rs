//! The terminal: the summary table and the progress lines.

#[allow(unused_imports)]
use super::*;

use anstyle::{AnsiColor, Style};

/// The statuses' colours (anstyle renders the escape codes).
pub(super) const GREEN: Style = AnsiColor::Green.on_default();
pub(super) const RED: Style = AnsiColor::Red.on_default().bold();
pub(super) const YELLOW: Style = AnsiColor::Yellow.on_default();

/// Columns between table cells.
pub(super) const GAP: &str = "  ";
/// The message column never shrinks below this, even on a very narrow terminal: a
/// slightly too wide line is better than a message cut to nothing.
pub(super) const MIN_MESSAGE_WIDTH: usize = 16;
/// Indentation of a failure's full message and fix under its table row.
pub(super) const DETAIL_INDENT: &str = "    ";

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
///
/// Laid out by hand on purpose: comfy-table (tried for issue #13) cannot put a failure's
/// full message and fix under its own row, and measuring cells that hold colour codes
/// needs its `custom_styling`/`tty` features (crossterm) for what is five fixed columns.
/// Colours (anstyle), the colour decision (anstream) and the width (terminal_size) come
/// from crates.
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
pub(super) fn push_failure_details(out: &mut String, result: &CheckResult, message_shown: bool) {
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
pub(super) fn totals_line(report: &RunReport, color: bool) -> String {
    let simulated = report.simulated || report.results.iter().any(|r| r.simulated);
    let count = |n: usize, what: &str, colour: Style| {
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
pub(super) fn count_words(report: &RunReport) -> String {
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
pub(super) fn evidence_marked(result: &CheckResult) -> String {
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

pub(super) fn status_label(status: Status) -> &'static str {
    match status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skip => "SKIP",
        Status::Xfail => "XFAIL",
        Status::New => "NEW",
    }
}

pub(super) fn status_color(status: Status) -> Style {
    match status {
        Status::Pass | Status::Xfail => GREEN,
        Status::Fail => RED,
        Status::Skip | Status::New => YELLOW,
    }
}

pub(super) fn paint(text: &str, colour: Style, enabled: bool) -> String {
    if enabled {
        format!("{colour}{text}{colour:#}")
    } else {
        text.to_owned()
    }
}
