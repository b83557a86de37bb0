//! The command-line side of `cdi-harness report …` and `cdi-harness nightly`: argument
//! structs (clap) and the functions that print and choose exit codes. Kept here rather
//! than in `main.rs` so the binary only dispatches, and so other subcommands can be added
//! there without touching this code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::outcome::BackendKind;
use crate::runner::{self, RunOptions};
use crate::{diff, report, scenario};

use super::{DEFAULT_STATE_DIR, NightlyOptions, history};

/// `cdi-harness report …`.
#[derive(clap::Subcommand)]
pub enum ReportCommand {
    /// Compare two JSON reports check by check (`scenario::check`): regressed; needs
    /// attention (now skipped, gone, expectation changed); still failing, fixed, new,
    /// unchanged; spec changes as a unified diff. Exit 0: accepted; 1: a check regressed,
    /// or a change needs attention (without --allow-skips); 2: a report is unreadable or
    /// was interrupted.
    Diff {
        /// The older report (e.g. the last good one).
        old: PathBuf,
        /// The newer report.
        new: PathBuf,
        /// Print the diff as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Accept the changes that need attention (checks now skipped or new snapshots,
        /// vanished checks, checks moved into or out of xfail): listed, but exit 0.
        #[arg(long)]
        allow_skips: bool,
    },
    /// Judge a report (a host run, a NixOS VM test's) against a scenario's declared
    /// failures, with the rules the sim backend applies: one line per problem.
    /// Exit 0: the verdicts are the scenario's; 1: a problem; 2: unreadable input.
    Judge(crate::judge::JudgeArgs),
    /// Show the nightly history kept in the state directory.
    History {
        /// The nightly state directory.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Also write a self-contained HTML page with a pass/fail timeline per check.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

/// `cdi-harness nightly`.
#[derive(clap::Args)]
pub struct NightlyArgs {
    /// The flake directory (with flake.nix and flake.lock) to update.
    #[arg(long, value_name = "PATH")]
    pub flake: PathBuf,
    /// Where the last good report, the history and each night's files are kept.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Which engine to check (default: `host` when /dev/nvidiactl exists, else `sim`).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Scenario files or directories (default: the flake's `scenarios/`, else ./scenarios).
    #[arg(long = "scenario", value_name = "PATH")]
    pub scenarios: Vec<PathBuf>,
    /// Nights of history to keep.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub keep: usize,
    /// Shell command run after each night (env: CDI_HARNESS_VERDICT, CDI_HARNESS_SUMMARY,
    /// CDI_HARNESS_REPORT (unset when the build failed), CDI_HARNESS_RUN_DIR).
    #[arg(long, value_name = "CMD")]
    pub notify: Option<String>,
    /// The Nix binary.
    #[arg(long, value_name = "PATH", default_value = "nix")]
    pub nix: PathBuf,
    /// Do not `nix build <flake>#default` after the update.
    #[arg(long)]
    pub no_build: bool,
    /// Accept changes that need attention (checks now skipped, vanished, or moved into or
    /// out of xfail since the last good night) instead of keeping the old lock.
    #[arg(long)]
    pub allow_skips: bool,
    /// Snapshot directory (default: the nearest `snapshots/` above the scenarios).
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,
    /// dockerd for `sim`.
    #[arg(long, value_name = "PATH")]
    pub dockerd: Option<PathBuf>,
    /// Also copy the night's JUnit XML here (for CI artefacts).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Also write the history as HTML here (for CI artefacts).
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `report …`; returns the exit code.
pub fn report_command(command: ReportCommand) -> u8 {
    match command {
        ReportCommand::Diff {
            old,
            new,
            json,
            allow_skips,
        } => report_diff(&old, &new, json, allow_skips),
        ReportCommand::History { state_dir, html } => report_history(&state_dir, html.as_deref()),
        ReportCommand::Judge(args) => crate::judge::judge_command(&args),
    }
}

fn report_diff(old: &Path, new: &Path, json: bool, allow_skips: bool) -> u8 {
    let (old_report, new_report) = match (report::read_json(old), report::read_json(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let judged = diff::compare(
        &old_report,
        &old.display().to_string(),
        &new_report,
        &new.display().to_string(),
        allow_skips,
    );
    let d = match judged {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if json {
        match serde_json::to_string_pretty(&d) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot print the diff as JSON: {e}");
                return 2;
            }
        }
    } else {
        print!(
            "{}",
            diff::render_text(&d, &old.display().to_string(), &new.display().to_string())
        );
    }
    u8::from(d.blocked)
}

fn report_history(state_dir: &Path, html: Option<&Path>) -> u8 {
    let hist = match history::load(state_dir) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    print!("{}", history::table(&hist));
    if let Some(path) = html {
        if let Err(e) = history::write_html(&hist, path) {
            eprintln!("error: {e}");
            return 2;
        }
        eprintln!("wrote {}", path.display());
    }
    0
}

/// Scenario files from paths (files or directories, `*.toml` sorted).
/// Runs `nightly`; returns the exit code: 0 accepted, 1 regressed, 2 no verdict.
pub fn nightly_command(args: NightlyArgs) -> u8 {
    let paths = if !args.scenarios.is_empty() {
        args.scenarios.clone()
    } else if args.flake.join("scenarios").is_dir() {
        vec![args.flake.join("scenarios")]
    } else {
        vec![PathBuf::from("scenarios")]
    };
    let (scenarios, base) = match scenario::load_paths(&paths) {
        Ok((s, _)) if s.is_empty() => {
            eprintln!("error: no scenario files found in {paths:?}; pass --scenario PATH");
            return 2;
        }
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // The backend and the scenarios that apply to this machine, as `run` decides them.
    let choice = match crate::select::choose(
        Some(args.backend.map_or("auto", BackendKind::as_str)),
        &crate::host::SystemHost,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let backend = choice.backend;
    let plan = crate::select::plan_for(
        &scenarios,
        crate::select::place_of(backend, false),
        choice.gpus.as_ref(),
        choice.engine.as_ref(),
    );
    let scenarios = plan.scenarios;
    if !args.quiet {
        eprintln!("cdi-harness nightly: backend {}", choice.why);
    }
    let snapshot_dir = args
        .snapshots
        .clone()
        .unwrap_or_else(|| runner::default_snapshot_dir(&base));
    let mut run = RunOptions::new(backend, snapshot_dir);
    run.not_applicable = plan.skipped;
    run.dockerd = args.dockerd.clone();
    if !args.quiet {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        run.progress = Some(Arc::new(move |r| {
            eprintln!("{}", report::progress_line(r, color))
        }));
    }
    let opts = NightlyOptions {
        flake: args.flake.clone(),
        state_dir: args.state_dir.clone(),
        nix: args.nix.clone(),
        build: !args.no_build,
        keep: args.keep,
        allow_skips: args.allow_skips,
        notify: args.notify.clone(),
        scenarios,
        run,
        crash_after: None,
    };
    let rt = match crate::rt::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // Ctrl-C or SIGTERM (`systemctl stop`): the run stops, removes its containers, and
    // its report says `interrupted`, which the night refuses to judge (exit 2, lock kept).
    let cancel = opts.run.cancel.clone();
    let outcome = match rt.block_on(async {
        tokio::spawn(async move {
            // A signal whose handler cannot be installed just never arrives.
            let int = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = int => {}
                _ = term => {}
            }
            eprintln!("\ninterrupted: removing this night's containers; no verdict will be drawn…");
            cancel.cancel();
        });
        super::run(&opts).await
    }) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    print!("{}", outcome.summary);
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    let mut code = outcome.verdict.exit_code();
    if let (Some(path), Some(r)) = (&args.junit, &outcome.report) {
        if let Err(e) = report::write_junit(r, path) {
            eprintln!("error: {e}");
            code = 2;
        }
    }
    if let Some(path) = &args.html {
        let written = history::load(&opts.state_dir).and_then(|h| history::write_html(&h, path));
        if let Err(e) = written {
            eprintln!("error: {e}");
            code = 2;
        }
    }
    code
}
