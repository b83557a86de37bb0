//! The history of nightly runs in the state directory: `history.json` (an index, newest
//! last, bounded by `--keep`), shown by `cdi-harness report history` as a table or as a
//! self-contained HTML page with a pass/fail timeline per check.
//!
//! The index is rewritten atomically, so an interrupted night leaves the previous index
//! whole; each entry names its run directory, whose files were written before the entry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use maud::{DOCTYPE, PreEscaped, html};
use serde::{Deserialize, Serialize};

use super::NightlyError;
use crate::diff::InputChange;
use crate::outcome::Status;
use crate::report;

/// File name of the index in the state directory.
pub const INDEX_FILE: &str = "history.json";
/// Version of the index layout. 2 added the `needs-attention` and `build-failed`
/// verdicts and the `attention` and `build_failure` fields; version 1 indexes still read.
pub const HISTORY_VERSION: u32 = 2;

/// What a night concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NightVerdict {
    /// No regression: the updated lock was applied and the report became the last good.
    Accepted,
    /// A check regressed (or a new check fails): the previous lock was kept.
    Regressed,
    /// No regression, but checks need attention (now skipped, gone, expectation
    /// changed) and `--allow-skips` was not given: the previous lock was kept.
    NeedsAttention,
    /// `nix build` (or the evaluation before it) of the updated flake failed: no check
    /// ran, the previous lock was kept, the night carries the build log's tail.
    BuildFailed,
}

impl NightVerdict {
    /// Name as written in the history (kebab-case).
    pub fn as_str(self) -> &'static str {
        match self {
            NightVerdict::Accepted => "accepted",
            NightVerdict::Regressed => "regressed",
            NightVerdict::NeedsAttention => "needs-attention",
            NightVerdict::BuildFailed => "build-failed",
        }
    }

    /// The exit code of `cdi-harness nightly` for this verdict: 0 accepted, 1 blocked by
    /// the checks, 2 no verdict on the checks (the build failed).
    pub fn exit_code(self) -> u8 {
        match self {
            NightVerdict::Accepted => 0,
            NightVerdict::Regressed | NightVerdict::NeedsAttention => 1,
            NightVerdict::BuildFailed => 2,
        }
    }
}

/// A failed build of the updated flake, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFailure {
    /// The Nix command that failed, e.g. `nix build --no-link path:/tmp/…#default`.
    pub command: String,
    /// Its exit status.
    pub status: i32,
    /// The end of its log, bounded (`flake::LOG_TAIL_LINES` lines, `flake::LOG_TAIL_BYTES`
    /// bytes) so a month of failed nights stays a small index.
    pub log_tail: String,
}

/// One night.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Night {
    /// The run's id, also its directory under `runs/`.
    pub id: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// `host` or `sim`.
    pub backend: String,
    /// True for `sim`.
    pub simulated: bool,
    /// What the night concluded.
    pub verdict: NightVerdict,
    /// Checks passed, failed, skipped.
    pub counts: [usize; 3],
    /// Status of every check, by `scenario::check`.
    pub checks: BTreeMap<String, Status>,
    /// Inputs the update changed.
    #[serde(default)]
    pub changed_inputs: Vec<InputChange>,
    /// Checks that blocked the update.
    #[serde(default)]
    pub regressions: Vec<String>,
    /// Checks that needed attention (blocking unless `--allow-skips` was given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attention: Vec<String>,
    /// Why the build of the updated flake failed (verdict `build-failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_failure: Option<BuildFailure>,
}

/// The index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// [`HISTORY_VERSION`].
    pub version: u32,
    /// Oldest first.
    pub nights: Vec<Night>,
}

impl Default for History {
    fn default() -> Self {
        History {
            version: HISTORY_VERSION,
            nights: Vec::new(),
        }
    }
}

/// The index path in `state_dir`.
pub fn index_path(state_dir: &Path) -> PathBuf {
    state_dir.join(INDEX_FILE)
}

/// Reads the index; a missing one is an empty history.
pub fn load(state_dir: &Path) -> Result<History, NightlyError> {
    let path = index_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::default()),
        Err(source) => {
            return Err(NightlyError::ReadHistory {
                path,
                reason: source.to_string(),
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| NightlyError::ReadHistory {
        path,
        reason: e.to_string(),
    })
}

/// Writes the index atomically.
pub fn save(state_dir: &Path, history: &History) -> Result<(), NightlyError> {
    let mut bytes = serde_json::to_vec_pretty(history).map_err(|e| NightlyError::ReadHistory {
        path: index_path(state_dir),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(report::write_bytes_atomically(
        &index_path(state_dir),
        &bytes,
    )?)
}

/// Appends `night` and drops the oldest beyond `keep`; returns the ids dropped (whose run
/// directories the caller removes only after the new index is safely written).
pub fn push(history: &mut History, night: Night, keep: usize) -> Vec<String> {
    // The index now holds entries of this layout (a version 1 index is read as is).
    history.version = HISTORY_VERSION;
    history.nights.push(night);
    let excess = history.nights.len().saturating_sub(keep.max(1));
    history.nights.drain(..excess).map(|n| n.id).collect()
}

/// The terminal table: one row per night, newest last.
pub fn table(history: &History) -> String {
    let mut out = String::new();
    if history.nights.is_empty() {
        out.push_str("no nightly runs recorded yet (run `cdi-harness nightly --flake PATH`)\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<22} {:<10} {:<15} {:>5} {:>5} {:>5}  changed inputs / regressions",
        "started", "backend", "verdict", "pass", "fail", "skip"
    );
    for n in &history.nights {
        let inputs: Vec<String> = n
            .changed_inputs
            .iter()
            .map(|c| {
                format!(
                    "{} {}→{}",
                    c.name,
                    c.old.as_deref().map(crate::diff::short_rev).unwrap_or("-"),
                    c.new.as_deref().map(crate::diff::short_rev).unwrap_or("-")
                )
            })
            .collect();
        let mut notes = inputs.join(", ");
        let mut note = |text: String| {
            if !notes.is_empty() {
                notes.push_str("; ");
            }
            notes.push_str(&text);
        };
        if !n.regressions.is_empty() {
            note(format!("regressed: {}", n.regressions.join(", ")));
        }
        if !n.attention.is_empty() {
            note(format!("needs attention: {}", n.attention.join(", ")));
        }
        if let Some(b) = &n.build_failure {
            note(format!(
                "build failed (exit {}): {}",
                b.status,
                b.log_tail.lines().last().unwrap_or("")
            ));
        }
        let backend = if n.simulated {
            format!("{} (sim)", n.backend)
        } else {
            n.backend.clone()
        };
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:<15} {:>5} {:>5} {:>5}  {}",
            n.started_at,
            backend.chars().take(10).collect::<String>(),
            n.verdict.as_str(),
            n.counts[0],
            n.counts[1],
            n.counts[2],
            notes
        );
    }
    // The build logs of failed nights, below the table so its rows stay one line each.
    for n in &history.nights {
        if let Some(b) = &n.build_failure {
            let _ = writeln!(
                out,
                "\nbuild of {} failed: `{}` exited {}; the end of its log:",
                n.started_at, b.command, b.status
            );
            for line in b.log_tail.lines() {
                let _ = writeln!(out, "  | {line}");
            }
        }
    }
    out
}

/// A self-contained HTML page (inline CSS, no scripts): a row per night with its verdict
/// and changed inputs, and a grid with a row per check and a cell per night, coloured by
/// status, so when a check started failing is visible at a glance.
pub fn html(history: &History) -> String {
    let keys: BTreeSet<&String> = history
        .nights
        .iter()
        .flat_map(|n| n.checks.keys())
        .collect();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "cdi-harness nightly history" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "cdi-harness nightly history" }
                @if history.nights.iter().any(|n| n.simulated) {
                    p {
                        strong { "Simulated:" }
                        " nights on the " code { "sim" }
                        " backend checked simulated GPUs, not real hardware."
                    }
                }
                h2 { "Nights" }
                table {
                    tr {
                        th { "#" } th { "started" } th { "backend" } th { "verdict" }
                        th { "pass" } th { "fail" } th { "skip" } th { "changed inputs" }
                        th { "regressions / needs attention / build log" }
                    }
                    @for (i, n) in history.nights.iter().enumerate() {
                        tr {
                            td { (i + 1) }
                            td { (n.started_at) }
                            td { (n.backend) @if n.simulated { " (simulated)" } }
                            td class=(n.verdict.as_str()) { (n.verdict.as_str()) }
                            td { (n.counts[0]) } td { (n.counts[1]) } td { (n.counts[2]) }
                            td {
                                @for (j, c) in n.changed_inputs.iter().enumerate() {
                                    @if j > 0 { br; }
                                    @let text = format!(
                                        "{} {} → {}",
                                        c.name,
                                        c.old.as_deref().map(crate::diff::short_rev).unwrap_or("-"),
                                        c.new.as_deref().map(crate::diff::short_rev).unwrap_or("-")
                                    );
                                    @match &c.compare_url {
                                        Some(url) => a href=(url) { (text) },
                                        None => (text),
                                    }
                                }
                            }
                            td {
                                (n.regressions.join(", "))
                                @if !n.attention.is_empty() {
                                    @if !n.regressions.is_empty() { br; }
                                    "needs attention: " (n.attention.join(", "))
                                }
                                @if let Some(b) = &n.build_failure {
                                    details open {
                                        summary {
                                            "build failed: " code { (b.command) } " exited " (b.status)
                                        }
                                        pre { (b.log_tail) }
                                    }
                                }
                            }
                        }
                    }
                }
                h2 { "Timeline per check" }
                table {
                    tr {
                        th { "check" }
                        @for i in 0..history.nights.len() { th { (i + 1) } }
                    }
                    @for key in &keys {
                        tr {
                            td { (key) }
                            @for n in &history.nights {
                                @let (class, label) = match (n.checks.get(*key), &n.build_failure) {
                                    (Some(s), _) => (s.as_str(), s.as_str()),
                                    (None, Some(_)) => ("none", "not run: the build failed"),
                                    (None, None) => ("none", "not run"),
                                };
                                td class={ "cell " (class) } title={ (n.started_at) ": " (label) } {}
                            }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

/// The page's inline style sheet (no scripts, no external files: the page is one file).
const STYLE: &str = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}.pass{background:#3c3}.fail{background:#e33}.skip{background:#ec3}.xfail{background:#9c9}.new{background:#9cf}.none{background:#eee}.accepted{color:#080}.regressed,.build-failed{color:#c00;font-weight:bold}.needs-attention{color:#b60;font-weight:bold}td.cell{width:14px}pre{margin:0;font-size:12px;white-space:pre-wrap}";

/// Writes [`html`] atomically.
pub fn write_html(history: &History, path: &Path) -> Result<(), NightlyError> {
    Ok(report::write_bytes_atomically(
        path,
        html(history).as_bytes(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn night(id: &str, verdict: NightVerdict, status: Status) -> Night {
        Night {
            id: id.into(),
            started_at: format!("2025-01-0{id}T00:00:00Z"),
            backend: "sim".into(),
            simulated: true,
            verdict,
            counts: [1, 0, 0],
            checks: BTreeMap::from([("seed::<device>".to_string(), status)]),
            changed_inputs: vec![InputChange {
                name: "nixpkgs".into(),
                old: Some("aaaaaaaaaaaaaaaa".into()),
                new: Some("bbbbbbbbbbbbbbbb".into()),
                compare_url: Some("https://github.com/NixOS/nixpkgs/compare/a...b".into()),
            }],
            regressions: vec![],
            attention: vec![],
            build_failure: None,
        }
    }

    #[test]
    fn push_bounds_history() {
        let mut h = History::default();
        for i in 1..=5 {
            let dropped = push(
                &mut h,
                night(&i.to_string(), NightVerdict::Accepted, Status::Pass),
                3,
            );
            if i <= 3 {
                assert!(dropped.is_empty());
            } else {
                assert_eq!(dropped, vec![(i - 3).to_string()]);
            }
        }
        let ids: Vec<&str> = h.nights.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["3", "4", "5"]);
    }

    #[test]
    fn html_is_escaped_and_has_timeline() {
        let mut h = History::default();
        push(&mut h, night("1", NightVerdict::Accepted, Status::Pass), 10);
        push(
            &mut h,
            night("2", NightVerdict::Regressed, Status::Fail),
            10,
        );
        let page = html(&h);
        assert!(page.contains("seed::&lt;device&gt;"), "{page}");
        assert!(!page.contains("<device>"));
        assert!(!page.contains("<script"));
        assert!(page.contains("class=\"cell pass\""));
        assert!(page.contains("class=\"cell fail\""));
        assert!(page.contains("href=\"https://github.com/NixOS/nixpkgs/compare/a...b\""));
        assert!(page.contains("Simulated"));
    }

    #[test]
    fn table_rows() {
        let mut h = History::default();
        assert!(table(&h).contains("no nightly runs"));
        let mut n = night("1", NightVerdict::Regressed, Status::Fail);
        n.regressions = vec!["seed::device_all".into()];
        push(&mut h, n, 10);
        let t = table(&h);
        assert!(t.contains("regressed"), "{t}");
        assert!(
            t.contains("nixpkgs aaaaaaaaaaaa→bbbbbbbbbbbb; regressed: seed::device_all"),
            "{t}"
        );
    }

    #[test]
    fn index_round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), History::default());
        let mut h = History::default();
        push(&mut h, night("1", NightVerdict::Accepted, Status::Pass), 10);
        save(dir.path(), &h).unwrap();
        assert_eq!(load(dir.path()).unwrap(), h);
        std::fs::write(index_path(dir.path()), "{trunc").unwrap();
        assert!(load(dir.path()).is_err());
    }

    fn failed_build() -> Night {
        let mut n = night("3", NightVerdict::BuildFailed, Status::Pass);
        n.checks.clear();
        n.counts = [0, 0, 0];
        n.build_failure = Some(BuildFailure {
            command: "nix build --no-link path:/tmp/x#default".into(),
            status: 1,
            log_tail: "building <drv>\nerror: builder for '/nix/store/x-cdi-harness.drv' failed"
                .into(),
        });
        n
    }

    #[test]
    fn a_failed_build_shows_its_log_in_table_and_html() {
        let mut h = History::default();
        push(&mut h, night("1", NightVerdict::Accepted, Status::Pass), 10);
        push(&mut h, failed_build(), 10);
        let t = table(&h);
        assert!(t.contains("build-failed"), "{t}");
        assert!(
            t.contains(
                "build failed (exit 1): error: builder for '/nix/store/x-cdi-harness.drv' failed"
            ),
            "{t}"
        );
        assert!(
            t.contains("`nix build --no-link path:/tmp/x#default` exited 1; the end of its log:\n  | building <drv>\n  | error: builder"),
            "{t}"
        );
        let page = html(&h);
        assert!(
            page.contains("class=\"build-failed\">build-failed<"),
            "{page}"
        );
        assert!(
            page.contains("<pre>building &lt;drv&gt;\nerror: builder"),
            "{page}"
        );
        assert!(
            page.contains("title=\"2025-01-03T00:00:00Z: not run: the build failed\""),
            "{page}"
        );
    }

    #[test]
    fn verdicts_round_trip_and_version_1_indexes_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::default();
        let mut attention = night("2", NightVerdict::NeedsAttention, Status::Skip);
        attention.attention = vec!["seed::<device>".into()];
        push(&mut h, attention, 10);
        push(&mut h, failed_build(), 10);
        save(dir.path(), &h).unwrap();
        let text = std::fs::read_to_string(index_path(dir.path())).unwrap();
        assert!(text.contains("\"verdict\": \"needs-attention\""), "{text}");
        assert!(text.contains("\"verdict\": \"build-failed\""), "{text}");
        assert_eq!(load(dir.path()).unwrap(), h);
        assert!(table(&h).contains("needs attention: seed::<device>"));

        let v1 = r#"{"version":1,"nights":[{"id":"1","started_at":"t","backend":"sim",
            "simulated":true,"verdict":"regressed","counts":[1,1,0],
            "checks":{"seed::a":"fail"},"changed_inputs":[],"regressions":["seed::a"]}]}"#;
        std::fs::write(index_path(dir.path()), v1).unwrap();
        let old = load(dir.path()).unwrap();
        assert_eq!(old.nights[0].verdict, NightVerdict::Regressed);
        assert!(old.nights[0].build_failure.is_none() && old.nights[0].attention.is_empty());
    }
}
