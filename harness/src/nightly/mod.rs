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

use crate::diff::{self, ChangeKind, DiffError, InputChange, ReportDiff};
use crate::outcome::{FlakeInput, RunReport, Status};
use crate::report::{self, ReportError};
use crate::runner::{self, RunOptions};
use crate::scenario::Scenario;

pub use history::{BuildFailure, History, Night, NightVerdict};

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
    /// Tonight's report or the last good one was cut short: no verdict is drawn from
    /// an incomplete report (the error names which).
    #[error(transparent)]
    Incomplete(#[from] DiffError),
    /// A directory of the state directory could not be created.
    #[error("cannot create {}: {source}; check that the state directory (--state-dir) is writable", .path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Nix was stopped by a signal (Ctrl-C, SIGTERM) during the build: that says nothing
    /// about the update, so no night is recorded.
    #[error(
        "`{command}` was interrupted (Ctrl-C or SIGTERM): no verdict, nothing recorded, the flake's lock was not changed; run the night again"
    )]
    BuildInterrupted {
        /// The Nix command that was stopped.
        command: String,
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
    /// Accept changes that need attention (checks now skipped, gone, or moved into or
    /// out of xfail) instead of blocking the update on them (`--allow-skips`).
    pub allow_skips: bool,
    /// A shell command run after the night (`sh -c`), with `CDI_HARNESS_VERDICT`,
    /// `CDI_HARNESS_SUMMARY`, `CDI_HARNESS_REPORT` (not on a build-failed night, which has
    /// no report) and `CDI_HARNESS_RUN_DIR` set.
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
    pub verdict: NightVerdict,
    /// `runs/<id>/`.
    pub run_dir: PathBuf,
    /// The human summary (also `runs/<id>/summary.txt`).
    pub summary: String,
    /// The run's report (`None` when the build failed and no check ran).
    pub report: Option<RunReport>,
    /// The diff against the last good report, when there was one.
    pub diff: Option<ReportDiff>,
    /// Inputs the update changed.
    pub input_changes: Vec<InputChange>,
    /// Checks that regressed (they always block the update).
    pub regressions: Vec<String>,
    /// Checks that need attention (they block the update unless `allow_skips`).
    pub attention: Vec<String>,
    /// Why the build of the updated flake failed (verdict `BuildFailed`); no check ran.
    pub build_failure: Option<BuildFailure>,
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

/// Runs one night. `Ok` carries the verdict (regressed, needs-attention and build-failed
/// nights are `Ok` too, and recorded in the history); `Err` means no verdict was reached
/// (Nix could not update, the state is unreadable, a report was cut short), and nothing
/// but possibly the run directory was written. The flake's lock is only ever changed on
/// an accepted night.
pub async fn run(opts: &NightlyOptions) -> Result<NightlyOutcome, NightlyError> {
    let lock = flake::lock_path(&opts.flake);
    let old_inputs = flake::read_lock(&lock)?;
    let night_started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();

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

    let build_failure = if opts.build {
        build(opts, scratch.path())?
    } else {
        None
    };
    if let Some(failure) = build_failure {
        return record_build_failure(
            opts,
            &night_started,
            failure,
            input_changes,
            &new_lock_bytes,
            &old_inputs,
        );
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
    // An incomplete report, tonight's or the baseline, gives no verdict: its missing
    // checks would read as vanished (or, against it, as new).
    let tonight = "tonight's run";
    let diff = match &last_good {
        Some(old) => Some(diff::compare(
            old,
            &last_good_path.display().to_string(),
            &report,
            tonight,
            opts.allow_skips,
        )?),
        None => {
            diff::ensure_complete(&report, tonight)?;
            None
        }
    };
    // Without a baseline every failure blocks; with one, regressions and new checks that
    // fail do (a check failing on both sides is already known and does not block), and
    // changes that need attention do unless --allow-skips.
    let (regressions, attention): (Vec<String>, Vec<String>) = match &diff {
        Some(d) => (
            d.checks
                .iter()
                .filter(|c| {
                    c.kind == ChangeKind::Regressed
                        || (c.kind == ChangeKind::New && c.new_status == Some(Status::Fail))
                })
                .map(|c| c.key.clone())
                .collect(),
            d.needs_attention.clone(),
        ),
        None => (
            report
                .results
                .iter()
                .filter(|r| r.status.is_failure())
                .map(|r| r.trial_name())
                .collect(),
            Vec::new(),
        ),
    };
    let verdict = if !regressions.is_empty() {
        NightVerdict::Regressed
    } else if !attention.is_empty() && !opts.allow_skips {
        NightVerdict::NeedsAttention
    } else {
        NightVerdict::Accepted
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
        Tonight::Ran {
            report: &report,
            regressions: &regressions,
            attention: &attention,
            diff: diff.as_ref(),
        },
        &input_changes,
        &old_inputs,
    );
    report::write_json(&report, &run_dir.join("report.json"))?;
    report::write_junit(&report, &run_dir.join("junit.xml"))?;
    report::write_bytes_atomically(&run_dir.join("flake.lock.updated"), &new_lock_bytes)?;
    report::write_bytes_atomically(&run_dir.join("summary.txt"), summary.as_bytes())?;
    checkpoint(opts, Step::RunWritten)?;

    let mut lock_applied = false;
    if verdict == NightVerdict::Accepted {
        let current = std::fs::read(&lock).unwrap_or_default();
        if current != new_lock_bytes {
            report::write_bytes_atomically(&lock, &new_lock_bytes)?;
            lock_applied = true;
        }
        checkpoint(opts, Step::LockApplied)?;
        report::write_json(&report, &last_good_path)?;
        checkpoint(opts, Step::LastGoodWritten)?;
    }

    let (pass, fail, skip) = report.counts();
    let night = Night {
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
        attention: attention.clone(),
        build_failure: None,
    };
    let warnings = finish(opts, night, &run_dir)?;
    Ok(NightlyOutcome {
        id,
        verdict,
        run_dir,
        summary,
        report: Some(report),
        diff,
        input_changes,
        regressions,
        attention,
        build_failure: None,
        lock_applied,
        warnings,
    })
}

/// Evaluates and builds the updated flake (`nix flake show`, then `nix build` of its
/// default package when it has one). A failing Nix command is the night's verdict, not
/// an error: the update broke the build. `Err` only when Nix cannot be started.
fn build(opts: &NightlyOptions, scratch: &Path) -> Result<Option<BuildFailure>, NightlyError> {
    let failed = |e: NightlyError| match e {
        // Killed by a signal (no exit code), the night being cancelled, or Nix's own
        // message for SIGINT/SIGTERM: Nix was stopped with us, the build did not fail.
        NightlyError::NixFailed {
            command,
            status,
            stderr,
        } if status == -1
            || opts.run.cancel.is_cancelled()
            || stderr.contains("interrupted by the user") =>
        {
            Err(NightlyError::BuildInterrupted { command })
        }
        NightlyError::NixFailed {
            command,
            status,
            stderr,
        } => Ok(Some(BuildFailure {
            command,
            status,
            log_tail: stderr,
        })),
        other => Err(other),
    };
    let flake_dir = format!("path:{}", scratch.display());
    let show = match flake::nix(&opts.nix, scratch, &["flake", "show", "--json", &flake_dir]) {
        Ok(show) => show,
        Err(e) => return failed(e),
    };
    if flake::has_default_package(&show) {
        let target = flake::flake_ref(scratch, "default");
        if let Err(e) = flake::nix(&opts.nix, scratch, &["build", "--no-link", &target]) {
            return failed(e);
        }
    }
    Ok(None)
}

/// Records a night whose build failed: its run directory (summary, build log, the
/// updated lock that was not applied), then the history entry. The lock and the last
/// good report are untouched.
fn record_build_failure(
    opts: &NightlyOptions,
    started_at: &str,
    failure: BuildFailure,
    input_changes: Vec<InputChange>,
    new_lock_bytes: &[u8],
    old_inputs: &BTreeMap<String, FlakeInput>,
) -> Result<NightlyOutcome, NightlyError> {
    mkdir(&opts.state_dir)?;
    let runs = opts.state_dir.join(RUNS_DIR);
    mkdir(&runs)?;
    let id = run_id(started_at, &runs);
    let run_dir = runs.join(&id);
    mkdir(&run_dir)?;
    let verdict = NightVerdict::BuildFailed;
    let summary = summary(
        opts,
        &id,
        verdict,
        Tonight::BuildFailed(&failure),
        &input_changes,
        old_inputs,
    );
    let mut log = failure.log_tail.clone();
    log.push('\n');
    report::write_bytes_atomically(&run_dir.join("build.log"), log.as_bytes())?;
    report::write_bytes_atomically(&run_dir.join("flake.lock.updated"), new_lock_bytes)?;
    report::write_bytes_atomically(&run_dir.join("summary.txt"), summary.as_bytes())?;
    checkpoint(opts, Step::RunWritten)?;

    let night = Night {
        id: id.clone(),
        started_at: started_at.to_string(),
        backend: opts.run.backend.as_str().to_string(),
        simulated: opts.run.backend.simulated(),
        verdict,
        counts: [0, 0, 0],
        checks: BTreeMap::new(),
        changed_inputs: input_changes.clone(),
        regressions: Vec::new(),
        attention: Vec::new(),
        build_failure: Some(failure.clone()),
    };
    let warnings = finish(opts, night, &run_dir)?;
    Ok(NightlyOutcome {
        id,
        verdict,
        run_dir,
        summary,
        report: None,
        diff: None,
        input_changes,
        regressions: Vec::new(),
        attention: Vec::new(),
        build_failure: Some(failure),
        lock_applied: false,
        warnings,
    })
}

/// The last steps of every recorded night: the history entry (index and page), old run
/// directories pruned only after the new index is safely written, then the notify
/// command. Returns the warnings (problems that do not change the verdict).
fn finish(
    opts: &NightlyOptions,
    night: Night,
    run_dir: &Path,
) -> Result<Vec<String>, NightlyError> {
    let verdict = night.verdict;
    let mut hist = history::load(&opts.state_dir)?;
    let dropped = history::push(&mut hist, night, opts.keep);
    history::save(&opts.state_dir, &hist)?;
    history::write_html(&hist, &opts.state_dir.join("history.html"))?;

    let mut warnings = Vec::new();
    let runs = opts.state_dir.join(RUNS_DIR);
    for old in dropped {
        let dir = runs.join(&old);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warnings.push(format!("cannot remove old run {}: {e}", dir.display()));
            }
        }
    }
    if let Some(cmd) = &opts.notify {
        if let Err(w) = notify(cmd, verdict, run_dir) {
            warnings.push(w);
        }
    }
    Ok(warnings)
}

/// Runs the notify command; its failure is a warning, never a changed verdict.
fn notify(cmd: &str, verdict: NightVerdict, run_dir: &Path) -> Result<(), String> {
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .env("CDI_HARNESS_VERDICT", verdict.as_str())
        .env("CDI_HARNESS_SUMMARY", run_dir.join("summary.txt"))
        .env("CDI_HARNESS_RUN_DIR", run_dir);
    // A build-failed night ran no check and has no report: the variable is unset rather
    // than naming a file that does not exist.
    let report = run_dir.join("report.json");
    if report.is_file() {
        command.env("CDI_HARNESS_REPORT", report);
    } else {
        command.env_remove("CDI_HARNESS_REPORT");
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run the notify command `{cmd}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the notify command `{cmd}` failed with {status}"))
    }
}

/// What the night got to: a run of the checks, or a failed build.
enum Tonight<'a> {
    /// The checks ran.
    Ran {
        report: &'a RunReport,
        regressions: &'a [String],
        attention: &'a [String],
        diff: Option<&'a ReportDiff>,
    },
    /// The build of the updated flake failed; no check ran.
    BuildFailed(&'a BuildFailure),
}

/// The night's summary: verdict, inputs that changed (with compare links), what blocked
/// the update (regressed checks with their messages, checks that need attention, or the
/// failed build's log), and how to roll back.
fn summary(
    opts: &NightlyOptions,
    id: &str,
    verdict: NightVerdict,
    tonight: Tonight<'_>,
    input_changes: &[InputChange],
    old_inputs: &BTreeMap<String, FlakeInput>,
) -> String {
    let mut out = String::new();
    let simulated = opts.run.backend.simulated();
    let _ = writeln!(
        out,
        "cdi-harness nightly {id}: {} ({} backend{})",
        verdict.as_str().to_uppercase(),
        opts.run.backend.as_str(),
        if simulated { ", simulated GPUs" } else { "" }
    );
    if input_changes.is_empty() {
        out.push_str("flake inputs: none changed\n");
    } else {
        let _ = writeln!(out, "flake inputs changed ({}):", input_changes.len());
        out.push_str(&diff::render_inputs(input_changes));
    }
    let lock = flake::lock_path(&opts.flake);
    match &tonight {
        Tonight::BuildFailed(b) => {
            let _ = writeln!(
                out,
                "\nthe updated flake does not build: `{}` failed with exit status {}; no check ran. The end of its log:",
                b.command, b.status
            );
            for line in b.log_tail.lines() {
                let _ = writeln!(out, "  | {line}");
            }
        }
        Tonight::Ran {
            report,
            regressions,
            attention,
            ..
        } => {
            let line = |out: &mut String, key: &str, with_fix: bool| {
                if let Some(r) = report.results.iter().find(|r| r.trial_name() == key) {
                    let _ = writeln!(out, "  {key}: {}", r.message.lines().next().unwrap_or(""));
                    if let (true, Some(fix)) = (with_fix, &r.fix) {
                        let _ = writeln!(out, "    fix: {}", fix.lines().next().unwrap_or(""));
                    }
                } else {
                    let _ = writeln!(out, "  {key}: not in tonight's report");
                }
            };
            if !regressions.is_empty() {
                let _ = writeln!(
                    out,
                    "\nchecks that block the update ({}):",
                    regressions.len()
                );
                for key in regressions.iter() {
                    line(&mut out, key, true);
                }
            }
            if !attention.is_empty() {
                let how = if opts.allow_skips {
                    "accepted with --allow-skips"
                } else {
                    "they block the update; rerun with --allow-skips to accept them"
                };
                let _ = writeln!(
                    out,
                    "\nchecks that need attention ({}: now skipped, gone, or moved into or out of xfail; {how}):",
                    attention.len()
                );
                for key in attention.iter() {
                    line(&mut out, key, false);
                }
            }
        }
    }
    if verdict == NightVerdict::Accepted {
        let _ = writeln!(
            out,
            "no regressions: the updated lock is applied to {} and this report is the last good one",
            lock.display()
        );
    } else {
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
    }
    if let Tonight::Ran { diff: Some(d), .. } = tonight {
        out.push('\n');
        out.push_str(&diff::render_text(d, "last good", "tonight"));
    }
    out
}
