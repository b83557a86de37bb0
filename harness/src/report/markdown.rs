//! The Markdown summary for humans (CI step summaries, PR comments).

#[allow(unused_imports)]
use super::*;

/// The Markdown summary ([`markdown`]) written atomically, like every report file: a
/// full disk or an interrupted write leaves the previous summary whole, and a missing
/// parent directory is created as for `--json`.
pub fn write_markdown(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    write_bytes_atomically(path, markdown(report).as_bytes())
}

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
pub(super) fn md_cell(s: &str) -> String {
    let s = clean(s).replace('|', "\\|");
    if s.is_empty() { "—".to_owned() } else { s }
}

/// Inline text outside a table: line breaks flattened.
pub(super) fn md_inline(s: &str) -> String {
    clean(s)
}

/// A fenced code block long enough that backticks inside `text` cannot close it.
pub(super) fn fenced(text: &str) -> String {
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    format!("{fence}text\n{text}\n{fence}\n")
}
