//! `cdi-harness nightly`: after `nix flake update`, does the machine still give containers
//! their GPUs? Updates a scratch copy of the flake, rebuilds, runs the suite, compares it
//! with the last good report, and only then applies the updated `flake.lock`.
//!
//! Order of effects, chosen so an interrupted night never corrupts anything: the run's own
//! files first (a fresh `runs/<id>/`), then the flake's lock, then `last-good.json`, then
//! the history index, each written atomically. A crash at any point leaves the last good
//! report and the index as they were (or fully updated), and the flake's lock either old
//! or new, never half.

pub mod cli;
pub mod flake;
pub mod history;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::diff::{self, ChangeKind, InputChange, ReportDiff};
use crate::outcome::{FlakeInput, RunReport, Status};
use crate::report::{self, ReportError};
use crate::runner::{self, RunOptions};
use crate::scenario::Scenario;

pub use history::{History, Night, Verdict};

/// The last good report in the state directory.
pub const LAST_GOOD_FILE: &str = "last-good.json";
/// Where each night's files go, under the state directory.
pub const RUNS_DIR: &str = "runs";
/// The default state directory (the NixOS module's `StateDirectory`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cdi-harness";

/// Why a nightly run could not reach a verdict. The flake's lock is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum NightlyError {
    /// `flake.lock` is missing or unreadable.
    #[error("cannot read {}: {source}; pass the flake directory with --flake, and create its lock once with `nix flake lock`", .path.display())]
    ReadLock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `flake.lock` is not a lock file.
    #[error("{} is not a valid flake.lock ({reason}); restore it with `git checkout flake.lock`", .path.display())]
    ParseLock {
        /// The lock file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Copying the flake to the scratch directory failed.
    #[error("cannot copy the flake to a scratch directory at {}: {source}; check the free space in $TMPDIR", .path.display())]
    CopyFlake {
        /// The file being copied.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Nix could not be started.
    #[error("cannot run {}: {source}; install Nix (2.4 or newer) or pass its path with --nix", .nix.display())]
    NixStart {
        /// The Nix binary.
        nix: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Nix command failed.
    #[error(
        "`{command}` failed with exit status {status}; the flake's lock was not changed. Nix said:\n{stderr}"
    )]
    NixFailed {
        /// The command, without the feature flags.
        command: String,
        /// Its exit status.
        status: i32,
        /// The tail of its stderr.
        stderr: String,
    },
    /// The history index is unreadable.
    #[error("cannot read the nightly history {}: {reason}; move it aside to start a new history", .path.display())]
    ReadHistory {
        /// The index file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file of the state directory could not be written or read.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A directory of the state directory could not be created.
    #[error("cannot create {}: {source}; check that the state directory (--state-dir) is writable", .path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Stopped on purpose after `step` (crash simulation in tests).
    #[error("stopped after step {step:?} (simulated crash)")]
    Interrupted {
        /// The last completed step.
        step: Step,
    },
}

/// The steps of a night whose effects persist, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The scratch flake was updated (nothing persistent yet).
    Updated,
    /// `runs/<id>/` holds the report, JUnit, summary and the updated lock.
    RunWritten,
    /// The updated lock was copied to the flake (accepted nights only).
    LockApplied,
    /// `last-good.json` was replaced (accepted nights only).
    LastGoodWritten,
}

/// How to run one night.
pub struct NightlyOptions {
    /// The flake directory (holding `flake.nix` and `flake.lock`).
    pub flake: PathBuf,
    /// Where last good report, history and runs live.
    pub state_dir: PathBuf,
    /// The Nix binary (a fake one in tests).
    pub nix: PathBuf,
    /// Whether to `nix build <scratch>#default` when the flake has one.
    pub build: bool,
    /// How many nights of history to keep.
    pub keep: usize,
    /// A shell command run after the night (`sh -c`), with `CDI_HARNESS_VERDICT`,
    /// `CDI_HARNESS_SUMMARY`, `CDI_HARNESS_REPORT` and `CDI_HARNESS_RUN_DIR` set.
    pub notify: Option<String>,
    /// The scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// How to run them.
    pub run: RunOptions,
    /// Test hook: stop with [`NightlyError::Interrupted`] right after this step.
    #[doc(hidden)]
    pub crash_after: Option<Step>,
}

/// What a night concluded.
#[derive(Debug)]
pub struct NightlyOutcome {
    /// The run's id (directory under `runs/`).
    pub id: String,
    /// Accepted or regressed.
    pub verdict: Verdict,
    /// `runs/<id>/`.
    pub run_dir: PathBuf,
    /// The human summary (also `runs/<id>/summary.txt`).
    pub summary: String,
    /// The run's report.
    pub report: RunReport,
    /// The diff against the last good report, when there was one.
    pub diff: Option<ReportDiff>,
    /// Inputs the update changed.
    pub input_changes: Vec<InputChange>,
    /// Checks that blocked the update.
    pub regressions: Vec<String>,
    /// Whether the updated lock was written to the flake.
    pub lock_applied: bool,
    /// Problems that did not change the verdict (a failed notify command, an old run
    /// directory that could not be removed).
    pub warnings: Vec<String>,
}

fn checkpoint(opts: &NightlyOptions, step: Step) -> Result<(), NightlyError> {
    if opts.crash_after == Some(step) {
        return Err(NightlyError::Interrupted { step });
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<(), NightlyError> {
    std::fs::create_dir_all(path).map_err(|source| NightlyError::StateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// A run id from the start time (`20250102T030405Z`), made unique in `runs/`.
fn run_id(started_at: &str, runs: &Path) -> String {
    let base: String = started_at
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut id = base.clone();
    let mut n = 2;
    while runs.join(&id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// The flake reference pinning `name` at its old revision, for `--override-input`.
fn pinned_ref(input: &FlakeInput) -> Option<String> {
    let rev = input.rev.as_deref()?;
    match input.source_type.as_deref() {
        Some("github") | Some("gitlab") | Some("sourcehut") => Some(format!(
            "{}:{}/{}/{rev}",
            input.source_type.as_deref()?,
            input.owner.as_deref()?,
            input.repo.as_deref()?
        )),
        Some("git") => Some(format!("git+{}?rev={rev}", input.url.as_deref()?)),
        _ => None,
    }
}

/// Runs one night. `Ok` carries the verdict (regressed nights are `Ok` too); `Err` means
/// no verdict was reached, and the flake's lock was not touched.
pub async fn run(opts: &NightlyOptions) -> Result<NightlyOutcome, NightlyError> {
    let lock = flake::lock_path(&opts.flake);
    let old_inputs = flake::read_lock(&lock)?;

    let scratch = tempfile::Builder::new()
        .prefix("cdih-nightly-")
        .tempdir()
        .map_err(|source| NightlyError::CopyFlake {
            path: std::env::temp_dir(),
            source,
        })?;
    flake::copy_flake(&opts.flake, scratch.path())?;
    flake::nix(&opts.nix, scratch.path(), &["flake", "update"])?;
    let scratch_lock = flake::lock_path(scratch.path());
    let new_inputs = flake::read_lock(&scratch_lock)?;
    let new_lock_bytes = std::fs::read(&scratch_lock).map_err(|source| NightlyError::ReadLock {
        path: scratch_lock.clone(),
        source,
    })?;
    let input_changes = diff::input_changes(&old_inputs, &new_inputs);
    checkpoint(opts, Step::Updated)?;

    if opts.build {
        let flake_dir = format!("path:{}", scratch.path().display());
        let show = flake::nix(
            &opts.nix,
            scratch.path(),
            &["flake", "show", "--json", &flake_dir],
        )?;
        if flake::has_default_package(&show) {
            let target = flake::flake_ref(scratch.path(), "default");
            flake::nix(&opts.nix, scratch.path(), &["build", "--no-link", &target])?;
        }
    }

    let mut report = runner::run_scenarios(&opts.scenarios, &opts.run).await;
    report.flake_inputs = Some(new_inputs);

    mkdir(&opts.state_dir)?;
    let last_good_path = opts.state_dir.join(LAST_GOOD_FILE);
    let last_good = if last_good_path.exists() {
        Some(report::read_json(&last_good_path)?)
    } else {
        None
    };
    let diff = last_good
        .as_ref()
        .map(|old| diff::diff_reports(old, &report));
    // Without a baseline every failure blocks; with one, regressions and new checks that
    // fail do (a check failing on both sides is already known and does not block).
    let regressions: Vec<String> = match &diff {
        Some(d) => d
            .checks
            .iter()
            .filter(|c| {
                c.kind == ChangeKind::Regressed
                    || (c.kind == ChangeKind::New && c.new_status == Some(Status::Fail))
            })
            .map(|c| c.key.clone())
            .collect(),
        None => report
            .results
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| r.trial_name())
            .collect(),
    };
    let verdict = if regressions.is_empty() {
        Verdict::Accepted
    } else {
        Verdict::Regressed
    };

    let runs = opts.state_dir.join(RUNS_DIR);
    mkdir(&runs)?;
    let id = run_id(&report.started_at, &runs);
    let run_dir = runs.join(&id);
    mkdir(&run_dir)?;
    let summary = summary(
        opts,
        &id,
        verdict,
        &report,
        &input_changes,
        &regressions,
        diff.as_ref(),
        &old_inputs,
    );
    report::write_json(&report, &run_dir.join("report.json"))?;
    report::write_junit(&report, &run_dir.join("junit.xml"))?;
    report::write_bytes_atomically(&run_dir.join("flake.lock.updated"), &new_lock_bytes)?;
    report::write_bytes_atomically(&run_dir.join("summary.txt"), summary.as_bytes())?;
    checkpoint(opts, Step::RunWritten)?;

    let mut lock_applied = false;
    if verdict == Verdict::Accepted {
        let current = std::fs::read(&lock).unwrap_or_default();
        if current != new_lock_bytes {
            report::write_bytes_atomically(&lock, &new_lock_bytes)?;
            lock_applied = true;
        }
        checkpoint(opts, Step::LockApplied)?;
        report::write_json(&report, &last_good_path)?;
        checkpoint(opts, Step::LastGoodWritten)?;
    }

    let mut hist = history::load(&opts.state_dir)?;
    let (pass, fail, skip) = report.counts();
    let dropped = history::push(
        &mut hist,
        Night {
            id: id.clone(),
            started_at: report.started_at.clone(),
            backend: report.backend.as_str().to_string(),
            simulated: report.simulated,
            verdict,
            counts: [pass, fail, skip],
            checks: report
                .results
                .iter()
                .map(|r| (r.trial_name(), r.status))
                .collect(),
            changed_inputs: input_changes.clone(),
            regressions: regressions.clone(),
        },
        opts.keep,
    );
    history::save(&opts.state_dir, &hist)?;
    history::write_html(&hist, &opts.state_dir.join("history.html"))?;

    let mut warnings = Vec::new();
    for old in dropped {
        let dir = runs.join(&old);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warnings.push(format!("cannot remove old run {}: {e}", dir.display()));
            }
        }
    }
    if let Some(cmd) = &opts.notify {
        if let Err(w) = notify(cmd, verdict, &run_dir) {
            warnings.push(w);
        }
    }
    Ok(NightlyOutcome {
        id,
        verdict,
        run_dir,
        summary,
        report,
        diff,
        input_changes,
        regressions,
        lock_applied,
        warnings,
    })
}

/// Runs the notify command; its failure is a warning, never a changed verdict.
fn notify(cmd: &str, verdict: Verdict, run_dir: &Path) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("CDI_HARNESS_VERDICT", verdict.as_str())
        .env("CDI_HARNESS_SUMMARY", run_dir.join("summary.txt"))
        .env("CDI_HARNESS_REPORT", run_dir.join("report.json"))
        .env("CDI_HARNESS_RUN_DIR", run_dir)
        .status()
        .map_err(|e| format!("cannot run the notify command `{cmd}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the notify command `{cmd}` failed with {status}"))
    }
}

/// The night's summary: verdict, inputs that changed (with compare links), the checks that
/// blocked the update with their messages, and how to roll back.
#[allow(clippy::too_many_arguments)]
fn summary(
    opts: &NightlyOptions,
    id: &str,
    verdict: Verdict,
    report: &RunReport,
    input_changes: &[InputChange],
    regressions: &[String],
    diff: Option<&ReportDiff>,
    old_inputs: &BTreeMap<String, FlakeInput>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cdi-harness nightly {id}: {} ({} backend{})",
        verdict.as_str().to_uppercase(),
        report.backend.as_str(),
        if report.simulated {
            ", simulated GPUs"
        } else {
            ""
        }
    );
    if input_changes.is_empty() {
        out.push_str("flake inputs: none changed\n");
    } else {
        let _ = writeln!(out, "flake inputs changed ({}):", input_changes.len());
        out.push_str(&diff::render_inputs(input_changes));
    }
    let lock = flake::lock_path(&opts.flake);
    if verdict == Verdict::Regressed {
        let _ = writeln!(
            out,
            "\nchecks that block the update ({}):",
            regressions.len()
        );
        for key in regressions {
            if let Some(r) = report.results.iter().find(|r| &r.trial_name() == key) {
                let _ = writeln!(out, "  {key}: {}", r.message.lines().next().unwrap_or(""));
                if let Some(fix) = &r.fix {
                    let _ = writeln!(out, "    fix: {}", fix.lines().next().unwrap_or(""));
                }
            }
        }
        let _ = writeln!(
            out,
            "\nThe previous lock was kept: {} is unchanged (the updated lock is {}).",
            lock.display(),
            opts.state_dir
                .join(RUNS_DIR)
                .join(id)
                .join("flake.lock.updated")
                .display()
        );
        out.push_str("To roll back a lock you updated by hand: `git checkout flake.lock`.\n");
        let overrides: Vec<String> = input_changes
            .iter()
            .filter_map(|c| {
                let pinned = pinned_ref(old_inputs.get(&c.name)?)?;
                Some(format!("--override-input {} {pinned}", c.name))
            })
            .collect();
        if !overrides.is_empty() {
            let _ = writeln!(
                out,
                "To update the other inputs but keep these at their last good revision: `nix flake lock {}` (or `nix flake update` then the same overrides).",
                overrides.join(" ")
            );
        }
    } else {
        let _ = writeln!(
            out,
            "no regressions: the updated lock is applied to {} and this report is the last good one",
            lock.display()
        );
    }
    if let Some(d) = diff {
        out.push('\n');
        out.push_str(&diff::render_text(d, "last good", "tonight"));
    }
    out
}
