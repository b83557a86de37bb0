//! `cdi-harness report diff OLD NEW`: what changed between two JSON reports, check by
//! check, plus the normalized CDI specs and the flake inputs when the reports carry them.
//!
//! This is what tells a nightly run after `nix flake update` apart from noise: a check
//! that passed and now fails is a regression (the run that caused it must not be taken),
//! while a check that is merely skipped now is listed but does not count as one, because
//! a skip says "could not run here", not "broken".
//!
//! Pure functions of two [`RunReport`]s: no engine, no Nix, so diffs work anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::outcome::{CheckResult, FlakeInput, RunReport, Status};

/// How one check (`scenario::check`) changed between the two reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// It passed (or was skipped) before and fails now.
    Regressed,
    /// It passed or failed before and is skipped now: listed, but not a regression.
    NowSkipped,
    /// It failed before and fails now.
    StillFailing,
    /// It failed before and passes now.
    Fixed,
    /// Only the new report has it.
    New,
    /// Only the old report has it.
    Gone,
    /// Same status (a skip that now passes counts here too: nothing was broken before).
    Unchanged,
}

impl ChangeKind {
    /// Every kind, in the order the summary lists them (most urgent first).
    pub const ALL: [ChangeKind; 7] = [
        ChangeKind::Regressed,
        ChangeKind::NowSkipped,
        ChangeKind::StillFailing,
        ChangeKind::Fixed,
        ChangeKind::New,
        ChangeKind::Gone,
        ChangeKind::Unchanged,
    ];

    /// Heading used in the text summary.
    pub fn title(self) -> &'static str {
        match self {
            ChangeKind::Regressed => "regressed",
            ChangeKind::NowSkipped => "now skipped",
            ChangeKind::StillFailing => "still failing",
            ChangeKind::Fixed => "fixed",
            ChangeKind::New => "new",
            ChangeKind::Gone => "gone",
            ChangeKind::Unchanged => "unchanged",
        }
    }

    /// Classifies a check from its old and new status (`None`: absent from that report).
    pub fn classify(old: Option<Status>, new: Option<Status>) -> Option<ChangeKind> {
        use Status::{Fail, Pass, Skip};
        // An xfail is a scenario's expected state (a pass of its diagnosis); a new
        // snapshot compared nothing, like a skip.
        let plain = |s: Status| match s {
            Status::Xfail => Pass,
            Status::New => Skip,
            other => other,
        };
        let (old, new) = (old.map(plain), new.map(plain));
        Some(match (old, new) {
            (None, None) => return None,
            (None, Some(_)) => ChangeKind::New,
            (Some(_), None) => ChangeKind::Gone,
            (Some(Fail), Some(Fail)) => ChangeKind::StillFailing,
            (Some(Pass | Skip), Some(Fail)) => ChangeKind::Regressed,
            (Some(Fail), Some(Pass)) => ChangeKind::Fixed,
            (Some(Pass | Fail), Some(Skip)) => ChangeKind::NowSkipped,
            (Some(Pass | Skip), Some(Pass)) | (Some(Skip), Some(Skip)) => ChangeKind::Unchanged,
            (Some(Status::Xfail | Status::New), _) | (_, Some(Status::Xfail | Status::New)) => {
                ChangeKind::Unchanged
            }
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
    /// Every check of either report, sorted by key.
    pub checks: Vec<CheckChange>,
    /// Scenarios whose normalized spec changed (only where both reports carry one).
    pub spec_changes: Vec<SpecChange>,
    /// Flake inputs that changed (only where both reports carry them).
    pub input_changes: Vec<InputChange>,
}

impl ReportDiff {
    /// True when some check regressed: what makes `report diff` exit 1.
    pub fn has_regressions(&self) -> bool {
        self.count(ChangeKind::Regressed) > 0
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

/// Compares two reports check by check (keyed `scenario::check`).
pub fn diff_reports(old: &RunReport, new: &RunReport) -> ReportDiff {
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
    ReportDiff {
        old_started_at: old.started_at.clone(),
        new_started_at: new.started_at.clone(),
        counts,
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

/// The readable summary `report diff` prints: counts, then each non-empty kind with its
/// checks and messages (unchanged ones only counted), input changes, spec diffs.
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
    for kind in ChangeKind::ALL {
        if kind == ChangeKind::Unchanged || diff.count(kind) == 0 {
            continue;
        }
        let _ = writeln!(out, "\n{} ({}):", kind.title(), diff.count(kind));
        for c in diff.of_kind(kind) {
            let status = |s: Option<Status>| s.map(Status::as_str).unwrap_or("-");
            let _ = writeln!(
                out,
                "  {}  [{} → {}]",
                c.key,
                status(c.old_status),
                status(c.new_status)
            );
            let message = match kind {
                ChangeKind::Gone => c.old_message.as_deref(),
                _ => c.new_message.as_deref(),
            };
            if let Some(m) = message.map(first_line).filter(|m| !m.is_empty()) {
                let _ = writeln!(out, "      {m}");
            }
            if kind == ChangeKind::Regressed {
                if let Some(fix) = &c.fix {
                    let _ = writeln!(out, "      fix: {}", first_line(fix));
                }
            }
        }
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
        ];
        for (o, n, want) in cases {
            assert_eq!(ChangeKind::classify(o, n), Some(want), "{o:?} → {n:?}");
        }
        assert_eq!(ChangeKind::classify(None, None), None);
    }

    #[test]
    fn skip_is_not_a_regression() {
        let old = report(vec![check("seed", "a", Status::Pass, "ok")]);
        let new = report(vec![check("seed", "a", Status::Skip, "engine too old")]);
        let d = diff_reports(&old, &new);
        assert!(!d.has_regressions());
        assert_eq!(d.count(ChangeKind::NowSkipped), 1);
        let text = render_text(&d, "old.json", "new.json");
        assert!(
            text.contains("now skipped (1):\n  seed::a  [pass → skip]\n      engine too old"),
            "{text}"
        );
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
        let d = diff_reports(&old, &new);
        assert!(d.has_regressions());
        assert_eq!(d.count(ChangeKind::Regressed), 1);
        assert_eq!(d.count(ChangeKind::Fixed), 1);
        assert_eq!(d.count(ChangeKind::New), 1);
        let text = render_text(&d, "o", "n");
        assert!(
            text.contains(
                "1 regressed, 0 now skipped, 0 still failing, 1 fixed, 1 new, 0 gone, 0 unchanged"
            ),
            "{text}"
        );
        assert!(
            text.contains("  seed::a  [pass → fail]\n      gone wrong\n      fix: fix a\n"),
            "{text}"
        );
        assert!(!text.contains("detail"), "{text}");
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
        let d = diff_reports(&old, &new);
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
