//! `cdi-harness report diff OLD NEW`: what changed between two JSON reports, check by
//! check, plus the normalized CDI specs and the flake inputs when the reports carry them.
//!
//! This is what tells a nightly run after `nix flake update` apart from noise. Three
//! grades, most urgent first:
//! - **regressed** (always blocks): a check that held, failed as declared, or could not
//!   run before, fails now;
//! - **needs attention** (blocks unless `--allow-skips`): a check that gave a verdict
//!   before gives none now (pass, fail or xfail → skip or new snapshot), vanished from
//!   the report, or moved into or out of `xfail`. A skip is not a failure, but a check
//!   that stops running is how a real regression hides: the run that lost it must not
//!   be accepted silently;
//! - the rest (still failing, fixed, new, unchanged) is listed and never blocks.
//!
//! A report cut short (`interrupted: true`) is refused by [`compare`]: its missing checks
//! would read as vanished or regressed.
//!
//! Pure functions of two [`RunReport`]s: no engine, no Nix, so diffs work anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::outcome::{CheckResult, FlakeInput, RunReport, Status};

/// Why two reports cannot be judged against each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// A report was cut short (Ctrl-C, SIGTERM, a crash): the checks it lacks would
    /// read as vanished or regressed, so no verdict is drawn from it.
    #[error(
        "cannot judge: {} was interrupted (its results are incomplete, so missing checks would read as vanished or regressed); rerun the suite to completion and compare complete reports",
        .reports.join(" and ")
    )]
    Interrupted {
        /// Each interrupted report: its name (the path, or "tonight's run") and start time.
        reports: Vec<String>,
    },
}

/// How one check (`scenario::check`) changed between the two reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// It passed, failed as declared, was skipped or was a new snapshot before, and
    /// fails now. Always blocks.
    Regressed,
    /// It gave a verdict before (pass, fail, xfail) and gives none now (skip, or a new
    /// snapshot that compared nothing). Needs attention.
    NowSkipped,
    /// Only the old report has it: the check or its scenario vanished. Needs attention.
    Gone,
    /// It moved into or out of `xfail`: xfail → pass (the declared diagnosis no longer
    /// happens) or pass/fail → xfail (a result is now excused by a declaration). Either
    /// way the scenario's declarations and the machine disagree with the last report.
    /// Needs attention.
    ExpectationChanged,
    /// It failed before and fails now.
    StillFailing,
    /// It failed before and passes now.
    Fixed,
    /// Only the new report has it.
    New,
    /// Same status, or a check that could not run before and now passes or fails as
    /// declared (nothing was lost: a verdict was gained).
    Unchanged,
}

impl ChangeKind {
    /// Every kind, in the order the summary lists them (most urgent first).
    pub const ALL: [ChangeKind; 8] = [
        ChangeKind::Regressed,
        ChangeKind::NowSkipped,
        ChangeKind::Gone,
        ChangeKind::ExpectationChanged,
        ChangeKind::StillFailing,
        ChangeKind::Fixed,
        ChangeKind::New,
        ChangeKind::Unchanged,
    ];

    /// Heading used in the text summary.
    pub fn title(self) -> &'static str {
        match self {
            ChangeKind::Regressed => "regressed",
            ChangeKind::NowSkipped => "now skipped",
            ChangeKind::Gone => "gone",
            ChangeKind::ExpectationChanged => "expectation changed",
            ChangeKind::StillFailing => "still failing",
            ChangeKind::Fixed => "fixed",
            ChangeKind::New => "new",
            ChangeKind::Unchanged => "unchanged",
        }
    }

    /// Whether a change of this kind needs attention: it blocks acceptance unless
    /// skips are allowed (`--allow-skips`).
    pub fn needs_attention(self) -> bool {
        matches!(
            self,
            ChangeKind::NowSkipped | ChangeKind::Gone | ChangeKind::ExpectationChanged
        )
    }

    /// Classifies a check from its old and new status (`None`: absent from that report).
    pub fn classify(old: Option<Status>, new: Option<Status>) -> Option<ChangeKind> {
        use Status::{Fail, New, Pass, Skip, Xfail};
        Some(match (old, new) {
            (None, None) => return None,
            (None, Some(_)) => ChangeKind::New,
            (Some(_), None) => ChangeKind::Gone,
            (Some(Fail), Some(Fail)) => ChangeKind::StillFailing,
            (Some(Pass | Xfail | Skip | New), Some(Fail)) => ChangeKind::Regressed,
            (Some(Fail), Some(Pass)) => ChangeKind::Fixed,
            (Some(Pass | Fail | Xfail), Some(Skip | New)) => ChangeKind::NowSkipped,
            (Some(Xfail), Some(Pass)) | (Some(Pass | Fail), Some(Xfail)) => {
                ChangeKind::ExpectationChanged
            }
            (Some(Pass), Some(Pass))
            | (Some(Xfail), Some(Xfail))
            | (Some(Skip | New), Some(Pass | Xfail | Skip | New)) => ChangeKind::Unchanged,
        })
    }
}

/// One check's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckChange {
    /// `scenario::check`.
    pub key: String,
    /// The classification.
    pub kind: ChangeKind,
    /// Status in the old report.
    pub old_status: Option<Status>,
    /// Status in the new report.
    pub new_status: Option<Status>,
    /// Message in the old report.
    pub old_message: Option<String>,
    /// Message in the new report.
    pub new_message: Option<String>,
    /// Fix hint in the new report.
    pub fix: Option<String>,
}

/// A scenario whose normalized CDI spec differs between the reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecChange {
    /// Scenario name.
    pub scenario: String,
    /// A unified diff of the pretty-printed normalized specs (`--- old` / `+++ new`).
    pub unified_diff: String,
}

/// A flake input whose locked revision (or hash) differs between the reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InputChange {
    /// `flake.lock` node name, e.g. `nixpkgs`.
    pub name: String,
    /// Old locked revision (or NAR hash when there is no revision); `None`: input added.
    pub old: Option<String>,
    /// New locked revision (or NAR hash); `None`: input removed.
    pub new: Option<String>,
    /// `https://github.com/OWNER/REPO/compare/OLD...NEW` for GitHub inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_url: Option<String>,
}

/// Everything that changed between two reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportDiff {
    /// Start time of the old report.
    pub old_started_at: String,
    /// Start time of the new report.
    pub new_started_at: String,
    /// Count per kind (every kind present, zeros included).
    pub counts: BTreeMap<ChangeKind, usize>,
    /// Keys of the checks that regressed: they always block.
    pub regressions: Vec<String>,
    /// Keys of the checks that need attention (now skipped, gone, expectation changed):
    /// they block unless `allow_skips`.
    pub needs_attention: Vec<String>,
    /// Whether the changes that need attention were accepted (`--allow-skips`).
    pub allow_skips: bool,
    /// Whether the new report is blocked: a regression, or a change that needs attention
    /// without `--allow-skips`. What makes `report diff` exit 1.
    pub blocked: bool,
    /// Every check of either report, sorted by key.
    pub checks: Vec<CheckChange>,
    /// Scenarios whose normalized spec changed (only where both reports carry one).
    pub spec_changes: Vec<SpecChange>,
    /// Flake inputs that changed (only where both reports carry them).
    pub input_changes: Vec<InputChange>,
}

impl ReportDiff {
    /// True when some check regressed.
    pub fn has_regressions(&self) -> bool {
        !self.regressions.is_empty()
    }

    /// True when some change needs attention (accepted or not).
    pub fn has_attention(&self) -> bool {
        !self.needs_attention.is_empty()
    }

    /// How many checks are of `kind`.
    pub fn count(&self, kind: ChangeKind) -> usize {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// The checks of `kind`.
    pub fn of_kind(&self, kind: ChangeKind) -> impl Iterator<Item = &CheckChange> {
        self.checks.iter().filter(move |c| c.kind == kind)
    }
}

/// `Some(description)` when `report` was cut short; `name` says which one.
fn complete(report: &RunReport, name: &str) -> Option<String> {
    report.interrupted.then(|| {
        format!(
            "{name} (started {}, {} results)",
            report.started_at,
            report.results.len()
        )
    })
}

/// Refuses a report that was cut short, naming it (`name`: a path, or "tonight's run"):
/// for a verdict on one report alone (a night without a last good report).
pub fn ensure_complete(report: &RunReport, name: &str) -> Result<(), DiffError> {
    match complete(report, name) {
        Some(described) => Err(DiffError::Interrupted {
            reports: vec![described],
        }),
        None => Ok(()),
    }
}

/// Compares two reports for a verdict: refuses interrupted ones (naming them), then
/// classifies check by check. `allow_skips` accepts the changes that need attention.
/// This is what `report diff` and `nightly` call; [`diff_reports`] alone does not look
/// at completeness.
pub fn compare(
    old: &RunReport,
    old_name: &str,
    new: &RunReport,
    new_name: &str,
    allow_skips: bool,
) -> Result<ReportDiff, DiffError> {
    let reports: Vec<String> = [complete(old, old_name), complete(new, new_name)]
        .into_iter()
        .flatten()
        .collect();
    if !reports.is_empty() {
        return Err(DiffError::Interrupted { reports });
    }
    Ok(diff_reports(old, new, allow_skips))
}

/// Classifies two reports check by check (keyed `scenario::check`), without checking
/// that they are complete (see [`compare`]).
pub fn diff_reports(old: &RunReport, new: &RunReport, allow_skips: bool) -> ReportDiff {
    let index = |r: &RunReport| -> BTreeMap<String, CheckResult> {
        r.results
            .iter()
            .map(|c| (c.trial_name(), c.clone()))
            .collect()
    };
    let (old_checks, new_checks) = (index(old), index(new));
    let keys: BTreeSet<&String> = old_checks.keys().chain(new_checks.keys()).collect();
    let mut counts: BTreeMap<ChangeKind, usize> = ChangeKind::ALL.iter().map(|k| (*k, 0)).collect();
    let mut checks = Vec::new();
    for key in keys {
        let (o, n) = (old_checks.get(key), new_checks.get(key));
        let Some(kind) = ChangeKind::classify(o.map(|c| c.status), n.map(|c| c.status)) else {
            continue;
        };
        *counts.entry(kind).or_insert(0) += 1;
        checks.push(CheckChange {
            key: key.clone(),
            kind,
            old_status: o.map(|c| c.status),
            new_status: n.map(|c| c.status),
            old_message: o.map(|c| c.message.clone()),
            new_message: n.map(|c| c.message.clone()),
            fix: n.and_then(|c| c.fix.clone()),
        });
    }
    let keys_where = |f: fn(ChangeKind) -> bool| -> Vec<String> {
        checks
            .iter()
            .filter(|c| f(c.kind))
            .map(|c| c.key.clone())
            .collect()
    };
    let regressions = keys_where(|k| k == ChangeKind::Regressed);
    let needs_attention = keys_where(ChangeKind::needs_attention);
    let blocked = !regressions.is_empty() || (!needs_attention.is_empty() && !allow_skips);
    ReportDiff {
        old_started_at: old.started_at.clone(),
        new_started_at: new.started_at.clone(),
        counts,
        regressions,
        needs_attention,
        allow_skips,
        blocked,
        checks,
        spec_changes: spec_changes(&old.specs, &new.specs),
        input_changes: match (&old.flake_inputs, &new.flake_inputs) {
            (Some(o), Some(n)) => input_changes(o, n),
            _ => Vec::new(),
        },
    }
}

/// Unified diffs of the specs of scenarios present in both maps that differ.
fn spec_changes(
    old: &BTreeMap<String, serde_json::Value>,
    new: &BTreeMap<String, serde_json::Value>,
) -> Vec<SpecChange> {
    let mut out = Vec::new();
    for (scenario, new_spec) in new {
        let Some(old_spec) = old.get(scenario) else {
            continue;
        };
        if old_spec == new_spec {
            continue;
        }
        let pretty = |v: &serde_json::Value| {
            let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{e}"));
            s.push('\n');
            s
        };
        let (a, b) = (pretty(old_spec), pretty(new_spec));
        let unified_diff = similar::TextDiff::from_lines(&a, &b)
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("old/{scenario}.spec.json"),
                &format!("new/{scenario}.spec.json"),
            )
            .to_string();
        out.push(SpecChange {
            scenario: scenario.clone(),
            unified_diff,
        });
    }
    out
}

/// The version a lock pins: the revision, else the NAR hash (path inputs have no rev).
fn pinned(input: &FlakeInput) -> Option<String> {
    input.rev.clone().or_else(|| input.nar_hash.clone())
}

/// Inputs whose pinned version differs, with a GitHub compare link where one exists.
pub fn input_changes(
    old: &BTreeMap<String, FlakeInput>,
    new: &BTreeMap<String, FlakeInput>,
) -> Vec<InputChange> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let (o, n) = (old.get(name), new.get(name));
        let (ov, nv) = (o.and_then(pinned), n.and_then(pinned));
        if ov == nv && o.is_some() == n.is_some() {
            continue;
        }
        let compare_url = match (o, n) {
            (Some(o), Some(n)) => compare_url(o, n),
            _ => None,
        };
        out.push(InputChange {
            name: name.clone(),
            old: ov,
            new: nv,
            compare_url,
        });
    }
    out
}

/// `https://github.com/OWNER/REPO/compare/OLD...NEW` when both locks are the same GitHub
/// repository at two revisions: the fastest way to see what an update brought in.
pub fn compare_url(old: &FlakeInput, new: &FlakeInput) -> Option<String> {
    let github = |i: &FlakeInput| i.source_type.as_deref() == Some("github");
    if !(github(old) && github(new)) || old.owner != new.owner || old.repo != new.repo {
        return None;
    }
    Some(format!(
        "https://github.com/{}/{}/compare/{}...{}",
        new.owner.as_deref()?,
        new.repo.as_deref()?,
        old.rev.as_deref()?,
        new.rev.as_deref()?
    ))
}

/// A short revision for text output.
pub fn short_rev(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

/// The first line of a message, for lists.
fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or("")
}

/// Why a change needs attention, in words, for the text summary.
fn attention_reason(c: &CheckChange) -> &'static str {
    match (c.kind, c.old_status, c.new_status) {
        (ChangeKind::Gone, ..) => "vanished from the new report",
        (ChangeKind::NowSkipped, _, Some(Status::New)) => {
            "gave a verdict before; now a new snapshot that compared nothing"
        }
        (ChangeKind::NowSkipped, ..) => "gave a verdict before; could not run now",
        (ChangeKind::ExpectationChanged, Some(Status::Xfail), _) => {
            "failed as declared before; the declared diagnosis no longer happens"
        }
        (ChangeKind::ExpectationChanged, ..) => "now excused as a declared failure (xfail)",
        _ => "",
    }
}

/// `[old → new]` for a listed check.
fn transition(c: &CheckChange) -> String {
    let status = |s: Option<Status>| s.map(Status::as_str).unwrap_or("-");
    format!("[{} → {}]", status(c.old_status), status(c.new_status))
}

/// The readable summary `report diff` prints: counts; the regressed checks; a "needs
/// attention" section (now skipped, gone, expectation changed) saying whether it blocks;
/// the other non-empty kinds (unchanged ones only counted); input changes; spec diffs.
pub fn render_text(diff: &ReportDiff, old_name: &str, new_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "report diff: {old_name} ({}) → {new_name} ({})",
        diff.old_started_at, diff.new_started_at
    );
    let counts: Vec<String> = ChangeKind::ALL
        .iter()
        .map(|k| format!("{} {}", diff.count(*k), k.title()))
        .collect();
    let _ = writeln!(out, "{}", counts.join(", "));
    let message_of = |c: &CheckChange| -> Option<String> {
        let m = match c.kind {
            ChangeKind::Gone => c.old_message.as_deref(),
            _ => c.new_message.as_deref(),
        };
        m.map(first_line)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
    };
    let section = |out: &mut String, kind: ChangeKind| {
        if diff.count(kind) == 0 {
            return;
        }
        let _ = writeln!(out, "\n{} ({}):", kind.title(), diff.count(kind));
        for c in diff.of_kind(kind) {
            let _ = writeln!(out, "  {}  {}", c.key, transition(c));
            if let Some(m) = message_of(c) {
                let _ = writeln!(out, "      {m}");
            }
            if kind == ChangeKind::Regressed {
                if let Some(fix) = &c.fix {
                    let _ = writeln!(out, "      fix: {}", first_line(fix));
                }
            }
        }
    };
    section(&mut out, ChangeKind::Regressed);
    if diff.has_attention() {
        let verdict = if diff.allow_skips {
            "accepted with --allow-skips"
        } else {
            "blocks acceptance; pass --allow-skips to accept"
        };
        let _ = writeln!(
            out,
            "\nneeds attention ({}, {verdict}):",
            diff.needs_attention.len()
        );
        for c in diff.checks.iter().filter(|c| c.kind.needs_attention()) {
            let _ = writeln!(
                out,
                "  {}  {}  {}: {}",
                c.key,
                transition(c),
                c.kind.title(),
                attention_reason(c)
            );
            if let Some(m) = message_of(c) {
                let _ = writeln!(out, "      {m}");
            }
        }
    }
    for kind in [ChangeKind::StillFailing, ChangeKind::Fixed, ChangeKind::New] {
        section(&mut out, kind);
    }
    if !diff.input_changes.is_empty() {
        let _ = writeln!(
            out,
            "\nflake inputs changed ({}):",
            diff.input_changes.len()
        );
        out.push_str(&render_inputs(&diff.input_changes));
    }
    for spec in &diff.spec_changes {
        let _ = writeln!(
            out,
            "\nnormalized CDI spec of `{}` changed:\n{}",
            spec.scenario, spec.unified_diff
        );
    }
    out
}

/// One line per input change: `name: old → new  <compare link>`.
pub fn render_inputs(changes: &[InputChange]) -> String {
    let mut out = String::new();
    for c in changes {
        let rev = |r: &Option<String>| r.as_deref().map(short_rev).unwrap_or("(none)").to_string();
        let _ = write!(out, "  {}: {} → {}", c.name, rev(&c.old), rev(&c.new));
        if let Some(url) = &c.compare_url {
            let _ = write!(out, "  {url}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{BackendKind, REPORT_SCHEMA_VERSION};
    use std::time::Duration;

    fn check(scenario: &str, check: &str, status: Status, message: &str) -> CheckResult {
        CheckResult {
            scenario: scenario.into(),
            check: check.into(),
            status,
            message: message.into(),
            fix: (status == Status::Fail).then(|| format!("fix {check}")),
            cause: None,
            evidence: None,
            duration: Duration::from_millis(10),
            backend: BackendKind::Sim,
            simulated: true,
        }
    }

    fn report(results: Vec<CheckResult>) -> RunReport {
        RunReport {
            schema_version: REPORT_SCHEMA_VERSION,
            backend: BackendKind::Sim,
            simulated: true,
            started_at: "2025-01-01T00:00:00Z".into(),
            duration: Duration::from_secs(1),
            engines: BTreeMap::new(),
            results,
            flake_inputs: None,
            specs: BTreeMap::new(),
            interrupted: false,
        }
    }

    #[test]
    fn classification_table() {
        use Status::*;
        let cases = [
            (Some(Pass), Some(Pass), ChangeKind::Unchanged),
            (Some(Pass), Some(Fail), ChangeKind::Regressed),
            (Some(Skip), Some(Fail), ChangeKind::Regressed),
            (Some(Fail), Some(Pass), ChangeKind::Fixed),
            (Some(Fail), Some(Fail), ChangeKind::StillFailing),
            (Some(Pass), Some(Skip), ChangeKind::NowSkipped),
            (Some(Fail), Some(Skip), ChangeKind::NowSkipped),
            (Some(Skip), Some(Skip), ChangeKind::Unchanged),
            (Some(Skip), Some(Pass), ChangeKind::Unchanged),
            (None, Some(Fail), ChangeKind::New),
            (Some(Pass), None, ChangeKind::Gone),
            // xfail is a broken-machine scenario's expected state.
            (Some(Xfail), Some(Xfail), ChangeKind::Unchanged),
            (Some(Xfail), Some(Fail), ChangeKind::Regressed),
            (Some(Xfail), Some(Pass), ChangeKind::ExpectationChanged),
            (Some(Pass), Some(Xfail), ChangeKind::ExpectationChanged),
            (Some(Fail), Some(Xfail), ChangeKind::ExpectationChanged),
            (Some(Xfail), Some(Skip), ChangeKind::NowSkipped),
            (Some(Skip), Some(Xfail), ChangeKind::Unchanged),
            // A new snapshot compared nothing: like a skip.
            (Some(Pass), Some(New), ChangeKind::NowSkipped),
            (Some(Xfail), Some(New), ChangeKind::NowSkipped),
            (Some(New), Some(Pass), ChangeKind::Unchanged),
            (Some(New), Some(New), ChangeKind::Unchanged),
            (Some(New), Some(Fail), ChangeKind::Regressed),
        ];
        for (o, n, want) in cases {
            assert_eq!(ChangeKind::classify(o, n), Some(want), "{o:?} → {n:?}");
        }
        assert_eq!(ChangeKind::classify(None, None), None);
    }

    #[test]
    fn every_pair_of_statuses_is_classified_and_only_lost_verdicts_need_attention() {
        use Status::*;
        let all = [Pass, Fail, Skip, Xfail, New];
        for o in all {
            for n in all {
                let kind = ChangeKind::classify(Some(o), Some(n)).unwrap();
                // A check that had a verdict (pass, fail, xfail) and has none now.
                let lost = matches!(o, Pass | Fail | Xfail) && matches!(n, Skip | New);
                let moved_xfail =
                    (o == Xfail && n == Pass) || (matches!(o, Pass | Fail) && n == Xfail);
                assert_eq!(
                    kind.needs_attention(),
                    lost || moved_xfail,
                    "{o:?} → {n:?}: {kind:?}"
                );
            }
        }
        assert!(ChangeKind::Gone.needs_attention());
        assert!(!ChangeKind::Regressed.needs_attention());
        assert!(!ChangeKind::New.needs_attention());
    }

    #[test]
    fn pass_to_skip_blocks_unless_skips_are_allowed() {
        let old = report(vec![check("seed", "a", Status::Pass, "ok")]);
        let new = report(vec![check("seed", "a", Status::Skip, "engine too old")]);
        let d = diff_reports(&old, &new, false);
        assert!(!d.has_regressions());
        assert!(d.blocked, "a check that stopped running must block");
        assert_eq!(d.needs_attention, ["seed::a"]);
        assert_eq!(d.count(ChangeKind::NowSkipped), 1);
        let text = render_text(&d, "old.json", "new.json");
        assert!(
            text.contains(
                "needs attention (1, blocks acceptance; pass --allow-skips to accept):\n  seed::a  [pass → skip]  now skipped: gave a verdict before; could not run now\n      engine too old"
            ),
            "{text}"
        );

        let allowed = diff_reports(&old, &new, true);
        assert!(!allowed.blocked);
        assert_eq!(allowed.needs_attention, ["seed::a"], "still listed");
        let text = render_text(&allowed, "old.json", "new.json");
        assert!(
            text.contains("needs attention (1, accepted with --allow-skips):"),
            "{text}"
        );
    }

    #[test]
    fn a_vanished_check_blocks_unless_skips_are_allowed() {
        let old = report(vec![
            check("seed", "a", Status::Pass, "ok"),
            check("other", "b", Status::Pass, "it held"),
        ]);
        let new = report(vec![check("seed", "a", Status::Pass, "ok")]);
        let d = diff_reports(&old, &new, false);
        assert!(d.blocked);
        assert_eq!(d.needs_attention, ["other::b"]);
        let text = render_text(&d, "o", "n");
        assert!(
            text.contains(
                "  other::b  [pass → -]  gone: vanished from the new report\n      it held"
            ),
            "{text}"
        );
        assert!(!diff_reports(&old, &new, true).blocked);
    }

    #[test]
    fn xfail_rules() {
        let xfail = |s| report(vec![check("cdi-off", "info_spec_dirs", s, "m")]);
        // xfail → xfail: the broken machine is still diagnosed.
        let d = diff_reports(&xfail(Status::Xfail), &xfail(Status::Xfail), false);
        assert!(!d.blocked && d.needs_attention.is_empty());
        // xfail → fail: the diagnosis no longer matches the declaration.
        let d = diff_reports(&xfail(Status::Xfail), &xfail(Status::Fail), true);
        assert!(d.blocked, "a regression blocks even with --allow-skips");
        assert_eq!(d.regressions, ["cdi-off::info_spec_dirs"]);
        // xfail → pass: the declared diagnosis no longer happens.
        let d = diff_reports(&xfail(Status::Xfail), &xfail(Status::Pass), false);
        assert!(d.blocked && !d.has_regressions());
        let text = render_text(&d, "o", "n");
        assert!(
            text.contains("[xfail → pass]  expectation changed: failed as declared before; the declared diagnosis no longer happens"),
            "{text}"
        );
        // xfail → skip / new: the diagnosis was not made at all.
        for now in [Status::Skip, Status::New] {
            let d = diff_reports(&xfail(Status::Xfail), &xfail(now), false);
            assert!(d.blocked, "{now:?}");
            assert_eq!(d.count(ChangeKind::NowSkipped), 1);
        }
        // pass → new snapshot: nothing compared any more.
        let d = diff_reports(&xfail(Status::Pass), &xfail(Status::New), false);
        assert!(d.blocked);
        assert!(
            render_text(&d, "o", "n").contains("now a new snapshot that compared nothing"),
            "{}",
            render_text(&d, "o", "n")
        );
    }

    #[test]
    fn interrupted_reports_are_refused_by_name() {
        let done = report(vec![check("seed", "a", Status::Pass, "ok")]);
        let mut cut = report(vec![]);
        cut.interrupted = true;
        cut.started_at = "2025-01-02T03:04:05Z".into();
        let err = compare(&done, "old.json", &cut, "new.json", true).unwrap_err();
        assert_eq!(
            err,
            DiffError::Interrupted {
                reports: vec!["new.json (started 2025-01-02T03:04:05Z, 0 results)".into()]
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("new.json (started 2025-01-02T03:04:05Z, 0 results) was interrupted"),
            "{msg}"
        );
        assert!(msg.contains("rerun the suite to completion"), "{msg}");
        let err = compare(&cut, "old.json", &cut, "new.json", false).unwrap_err();
        assert!(err.to_string().contains("old.json (started"), "{err}");
        assert!(err.to_string().contains(" and new.json (started"), "{err}");
        assert!(compare(&done, "old.json", &done, "new.json", false).is_ok());
    }

    #[test]
    fn schema_1_reports_read_and_diff() {
        // A schema-1 report: no cause, evidence or interrupted.
        let json = r#"{"schema_version":1,"backend":"sim","simulated":true,
            "started_at":"2025-01-01T00:00:00Z","duration":1.0,"engines":{},
            "results":[{"scenario":"seed","check":"a","status":"pass","message":"ok",
            "duration":0.1,"backend":"sim","simulated":true}]}"#;
        let old: RunReport = serde_json::from_str(json).unwrap();
        assert!(!old.interrupted);
        let new = report(vec![check("seed", "a", Status::Skip, "no engine")]);
        let d = compare(&old, "v1.json", &new, "v2.json", false).unwrap();
        assert_eq!(d.needs_attention, ["seed::a"]);
    }

    #[test]
    fn regression_lists_message_and_fix() {
        let old = report(vec![
            check("seed", "a", Status::Pass, "ok"),
            check("seed", "b", Status::Fail, "broken\nmore"),
        ]);
        let new = report(vec![
            check("seed", "a", Status::Fail, "gone wrong\ndetail"),
            check("seed", "b", Status::Pass, "ok now"),
            check("seed", "c", Status::Pass, "new one"),
        ]);
        let d = diff_reports(&old, &new, true);
        assert!(d.has_regressions());
        assert!(d.blocked);
        assert_eq!(d.count(ChangeKind::Regressed), 1);
        assert_eq!(d.count(ChangeKind::Fixed), 1);
        assert_eq!(d.count(ChangeKind::New), 1);
        let text = render_text(&d, "o", "n");
        assert!(
            text.contains(
                "1 regressed, 0 now skipped, 0 gone, 0 expectation changed, 0 still failing, 1 fixed, 1 new, 0 unchanged"
            ),
            "{text}"
        );
        assert!(
            text.contains("  seed::a  [pass → fail]\n      gone wrong\n      fix: fix a\n"),
            "{text}"
        );
        assert!(!text.contains("detail"), "{text}");
        assert!(!text.contains("needs attention"), "{text}");
    }

    #[test]
    fn spec_change_is_a_unified_diff() {
        let mut old = report(vec![]);
        let mut new = report(vec![]);
        old.specs.insert(
            "seed".into(),
            serde_json::json!({"kind": "nvidia.com/gpu", "devices": ["0"]}),
        );
        new.specs.insert(
            "seed".into(),
            serde_json::json!({"kind": "nvidia.com/gpu", "devices": ["0", "1"]}),
        );
        new.specs.insert("other".into(), serde_json::json!({}));
        let d = diff_reports(&old, &new, false);
        assert_eq!(d.spec_changes.len(), 1);
        let u = &d.spec_changes[0].unified_diff;
        assert!(u.contains("--- old/seed.spec.json"), "{u}");
        assert!(u.contains("+    \"1\""), "{u}");
        assert!(u.contains("-    \"0\"\n"), "{u}");
    }

    #[test]
    fn github_inputs_get_compare_links() {
        let gh = |rev: &str| FlakeInput {
            source_type: Some("github".into()),
            owner: Some("NixOS".into()),
            repo: Some("nixpkgs".into()),
            rev: Some(rev.into()),
            ..FlakeInput::default()
        };
        let path = |hash: &str| FlakeInput {
            source_type: Some("path".into()),
            nar_hash: Some(hash.into()),
            ..FlakeInput::default()
        };
        let old = BTreeMap::from([
            ("nixpkgs".to_string(), gh("aaa")),
            ("local".to_string(), path("sha256-x")),
            ("same".to_string(), gh("ccc")),
        ]);
        let new = BTreeMap::from([
            ("nixpkgs".to_string(), gh("bbb")),
            ("local".to_string(), path("sha256-y")),
            ("same".to_string(), gh("ccc")),
        ]);
        let changes = input_changes(&old, &new);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].name, "local");
        assert_eq!(changes[0].compare_url, None);
        assert_eq!(
            changes[1].compare_url.as_deref(),
            Some("https://github.com/NixOS/nixpkgs/compare/aaa...bbb")
        );
    }
}
