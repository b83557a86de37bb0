//! The `cdi-harness` command line (the binary is a thin shell over [`main`]). Turns library errors into messages and exit codes:
//! 0 when every check passes, 1 when one fails (or a spec is invalid), 2 on a usage or
//! configuration error (bad flag, bad scenario file, unreadable input); 128 + the signal
//! when a run was interrupted (Ctrl-C 130, SIGTERM 143, SIGHUP 129).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::outcome::{BackendKind, RunReport};
use crate::runner::{self, RunOptions};
use crate::scenario::Scenario;
use crate::{cdi, report, scenario};

#[derive(Parser)]
#[command(
    name = "cdi-harness",
    version,
    about = "Proves that Docker containers get the machine's NVIDIA GPUs through CDI, the way NixOS does it.",
    after_help = "Exit codes: 0 all checks pass, 1 a check fails, 2 usage or configuration error; a run stopped by Ctrl-C, SIGTERM or SIGHUP: 130, 143, 129."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenarios' checks against an engine.
    Run(Box<RunArgs>),
    /// List the checks (trial names) the scenarios define, without running anything.
    List {
        /// Scenario files or directories (default: ./scenarios).
        #[arg(long = "scenario", value_name = "PATH")]
        scenarios: Vec<PathBuf>,
    },
    /// Time `cdi-harness run` on the seed scenario against the seed's manual checklist
    /// script, both on the same private engine, and print the ratio.
    Bench {
        /// Timed runs of each side.
        #[arg(long, default_value_t = 5)]
        iterations: usize,
        /// The seed scenario file.
        #[arg(long, default_value = "scenarios/seed.toml")]
        scenario: PathBuf,
        /// dockerd for the private engine.
        #[arg(long, value_name = "PATH")]
        dockerd: Option<PathBuf>,
        /// Also time the whole `sim` suite in this directory once and report the
        /// harness's peak RSS (`--suite none` skips it).
        #[arg(long, value_name = "DIR", default_value = "scenarios")]
        suite: PathBuf,
    },
    /// Work with scenario files.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
    /// Work with CDI spec files.
    Cdi {
        #[command(subcommand)]
        command: CdiCommand,
    },
    /// Compare JSON reports (`report diff`) or show the nightly history (`report history`).
    Report {
        #[command(subcommand)]
        command: crate::nightly::cli::ReportCommand,
    },
    /// Update a scratch copy of a flake (`nix flake update`), rebuild, run the checks and
    /// apply the new flake.lock only if no check regressed against the last good report.
    /// Exit 0 accepted, 1 regressed (the old lock is kept), 2 no verdict.
    Nightly(Box<crate::nightly::cli::NightlyArgs>),
    /// Check NixOS configuration files for the write-up's pitfalls (manual nvidia runtime,
    /// nvidia-docker, enableNvidia, CDI off, `--gpus`, …): one `FILE:LINE:COL: problem
    /// (fix: …)` line each. Exit 0 clean, 1 a pitfall found, 2 a file unreadable or not Nix.
    Lint {
        /// NixOS configuration files (.nix).
        #[arg(required = true, value_name = "FILE.nix")]
        files: Vec<PathBuf>,
    },
    /// Run the write-up's troubleshooting on this machine: driver, spec, socket, `docker
    /// info`, generator unit, manual-runtime pitfall; each step with what it saw and the
    /// fix. Exit 0 healthy, 1 a problem, 2 usage.
    Doctor {
        /// Print the steps as JSON.
        #[arg(long)]
        json: bool,
        /// Run the write-up's two restarts (generator, then docker) where they help, as
        /// root, then check again. Nothing else is ever changed.
        #[arg(long)]
        fix: bool,
    },
    /// The NVIDIA GPUs as the driver (NVML) reports them.
    Gpu {
        #[command(subcommand)]
        command: GpuCommand,
    },
}

#[derive(Subcommand)]
enum GpuCommand {
    /// Driver and CUDA version, and each GPU's index, UUID, name, minor, PCI bus id and
    /// MIG devices. Exit 0, 1 when NVML fails, 3 when there is no NVML on this machine.
    Inventory {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CdiCommand {
    /// Say whether the engine will load CDI spec files, and why not: one line per
    /// problem, naming the field. Exit 0 loads (also with warnings), 1 refused (or
    /// warnings with --strict), 2 unreadable.
    Validate {
        /// Spec files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Judge with this engine version's CDI library (e.g. 28.5). Default: the engine
        /// at DOCKER_HOST if it answers within 2 s, else the newest engine CI measures.
        #[arg(long, value_name = "VERSION")]
        engine: Option<String>,
        /// Exit 1 on SPEC.md warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Print the normalized JSON that snapshots hold.
    Normalize {
        /// A spec file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Check scenario files and print nothing but errors (exit 2 on the first bad one).
    Check {
        /// Scenario files or directories (default: ./scenarios).
        paths: Vec<PathBuf>,
    },
    /// Print a scenario as JSON: its machine module and the facts the harness reads,
    /// in the shape nixos-tests/lib/scenario.nix evaluates the same file to.
    Export {
        /// A scenario file.
        file: PathBuf,
    },
    /// Evaluate scenario machines (or NixOS modules, or the nightly module) through
    /// nixpkgs' own module system: effective Docker daemon settings, the rootless
    /// engine's, the CDI generator unit, failed assertions and warnings; nixpkgs' own
    /// error on an unknown option, a wrong type or a conflict. Exit 0 all evaluate, 1 one
    /// is rejected, 2 no nixpkgs (or kit) or no Nix.
    NixosEval(Box<crate::nixos_eval::cli::NixosEvalArgs>),
    /// Print the daemon.json the `sim` backend gives a scenario's private engine (its
    /// spec dirs shown as the machine directories they stand for), without starting one.
    SimDaemonJson {
        /// A scenario file.
        file: PathBuf,
    },
    /// Write a scenario that describes this machine: GPU count "auto", the rootful or
    /// rootless default (sockets, DOCKER_HOST, docker info), the docker group's members,
    /// the CDI spec dirs docker info reports. Prints it without PATH; never overwrites.
    Init {
        /// Describe this machine (the only source so far).
        #[arg(long, required = true)]
        from_host: bool,
        /// Where to write it (e.g. scenarios/my-machine.toml; its name names the scenario).
        path: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// The machine's own engine and specs.
    Host,
    /// A private engine with a simulated NVIDIA spec.
    Sim,
    /// `host` when the NVIDIA driver reports GPUs and the default engine is reachable
    /// with CDI on, else `sim` (the reason is printed).
    Auto,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Which engine to check.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Scenario files or directories (default: ./scenarios).
    #[arg(long = "scenario", value_name = "PATH")]
    scenarios: Vec<PathBuf>,
    /// Only run checks whose trial name (`<scenario>::<check>`) contains this text;
    /// given more than once, checks that match any of them.
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// Image for the containers on `host`, instead of each scenario's image; `local`
    /// builds one from this host's nvidia-smi and its glibc and imports it (no registry).
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// This host is a scenario's own NixOS VM test: scenarios apply where their
    /// applies-to lists `vm`, and count = "auto" without a driver is the VM's
    /// simulated GPUs.
    #[arg(long)]
    in_vm: bool,
    /// Engine for `host` (`unix:///path` or `tcp://host:port`); default: DOCKER_HOST, the
    /// rootless socket when the scenario makes it the default, else /var/run/docker.sock.
    #[arg(long, value_name = "URI")]
    docker_host: Option<String>,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Write a Markdown summary here.
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
    /// Snapshot directory (default: the nearest `snapshots/` above the scenarios).
    #[arg(long, value_name = "DIR")]
    snapshots: Option<PathBuf>,
    /// dockerd binary for `sim` (default: $CDI_HARNESS_DOCKERD, a CDI-capable dockerd on PATH, or .ci/install-engine's).
    #[arg(long, value_name = "PATH")]
    dockerd: Option<PathBuf>,
    /// docker CLI for the `info_cli` check (default: `docker` on PATH).
    #[arg(long, value_name = "PATH")]
    docker_cli: Option<PathBuf>,
    /// Seconds each engine call may take.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    call_timeout: u64,
    /// Seconds a container may run.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    container_timeout: u64,
    /// No progress lines, only the summary.
    #[arg(long, short)]
    quiet: bool,
    /// CI mode (also when CI is set): a scenario without a stored snapshot fails instead
    /// of recording `.snap.new` for review.
    #[arg(long)]
    ci: bool,
}

/// The whole command line: parses the arguments, runs the command, and returns its
/// exit code. The binary is only this call, so every command is library code that
/// tests and other front ends can drive.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run(args) => run(*args),
        Command::List { scenarios } => list(&scenarios),
        Command::Bench {
            iterations,
            scenario,
            dockerd,
            suite,
        } => bench(&scenario, dockerd, iterations, &suite),
        Command::Scenario { command } => match command {
            ScenarioCommand::Check { paths } => match load_scenarios(&paths) {
                Ok((s, _)) => {
                    println!("{} scenario(s) are valid", s.len());
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(e),
            },
            ScenarioCommand::Export { file } => match scenario::load(&file) {
                Ok(s) => match serde_json::to_string_pretty(&s.export_json()) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => config_error(format!("{}: cannot print JSON: {e}", file.display())),
                },
                Err(e) => config_error(e),
            },
            ScenarioCommand::NixosEval(args) => ExitCode::from(crate::nixos_eval::cli::run(*args)),
            ScenarioCommand::Init { from_host: _, path } => init_scenario(path.as_deref()),
            ScenarioCommand::SimDaemonJson { file } => match scenario::load(&file) {
                Ok(s) => {
                    let json = crate::nixos_eval::sim_daemon_json(&s);
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(e),
            },
        },
        Command::Cdi { command } => match command {
            CdiCommand::Validate {
                files,
                engine,
                strict,
            } => validate(&files, engine.as_deref(), strict),
            CdiCommand::Normalize { file } => normalize(&file),
        },
        Command::Report { command } => ExitCode::from(crate::nightly::cli::report_command(command)),
        Command::Nightly(args) => ExitCode::from(crate::nightly::cli::nightly_command(*args)),
        Command::Lint { files } => lint(&files),
        Command::Doctor { json, fix } => doctor(json, fix),
        Command::Gpu {
            command: GpuCommand::Inventory { json },
        } => gpu_inventory(json),
    }
}

/// The diagnosis on stdout (text or JSON); the exit code is the report's.
fn doctor(json: bool, fix: bool) -> ExitCode {
    let report = crate::doctor::run_with_fix(&crate::host::SystemHost, fix);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(t) => println!("{t}"),
            Err(e) => return config_error(format!("cannot print JSON: {e}")),
        }
    } else {
        print!("{}", report.render());
    }
    ExitCode::from(report.exit_code())
}

/// NVML's inventory; no NVML is its own exit code (3) so scripts can tell "no GPU
/// stack here" from "the driver is broken" (1).
fn gpu_inventory(json: bool) -> ExitCode {
    use crate::gpu::GpuSource;
    match crate::gpu::NvmlSource.inventory() {
        Ok(inv) => {
            if json {
                match serde_json::to_string_pretty(&inv) {
                    Ok(t) => println!("{t}"),
                    Err(e) => return config_error(format!("cannot print JSON: {e}")),
                }
            } else {
                println!("{}", inv.summary());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_unavailable() { 3 } else { 1 })
        }
    }
}

/// Findings on stdout (one line each), unreadable or unparsable files on stderr, a
/// summary on stderr; the exit code is the report's.
fn lint(files: &[PathBuf]) -> ExitCode {
    let report = crate::lint::lint_paths(files);
    for finding in &report.findings {
        println!("{finding}");
    }
    for error in &report.errors {
        eprintln!("{error}");
    }
    eprintln!("cdi-harness lint: {}", report.summary());
    ExitCode::from(report.exit_code())
}

fn config_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Scenarios from the given files or directories; `./scenarios` when none is given.
fn load_scenarios(
    paths: &[PathBuf],
) -> Result<(Vec<scenario::Scenario>, PathBuf), scenario::ScenarioError> {
    if paths.is_empty() {
        scenario::load_paths(&[PathBuf::from("scenarios")])
    } else {
        scenario::load_paths(paths)
    }
}

fn list(paths: &[PathBuf]) -> ExitCode {
    let (scenarios, _) = match load_scenarios(paths) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    for s in &scenarios {
        for c in s.check_names() {
            println!("{}::{c}", s.name);
        }
    }
    ExitCode::SUCCESS
}

/// `scenario init --from-host`: the text on stdout, or in a new file at `path`.
fn init_scenario(path: Option<&Path>) -> ExitCode {
    let machine = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".to_string());
    let named = path.unwrap_or(Path::new("this-machine.toml"));
    let text = match crate::init::from_host(&crate::host::SystemHost, named, &machine) {
        Ok(t) => t,
        // The file name names the scenario: a name the format refuses is the user's to change.
        Err(e @ scenario::ScenarioError::Invalid { .. })
            if e.to_string().contains("(file name)") =>
        {
            return config_error(e);
        }
        Err(e) => {
            return config_error(format!(
                "the scenario written for this host does not load (a bug: please report it): {e}"
            ));
        }
    };
    let Some(path) = path else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    match written {
        Ok(()) => {
            eprintln!(
                "wrote {}: `cdi-harness run --scenario {}` (or put it in scenarios/ for cargo test)",
                path.display(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => config_error(format!(
            "cannot write {}: {e} (an existing file is never overwritten: choose another path)",
            path.display()
        )),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let (scenarios, base) = match checked_inputs(&args) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let choice = match crate::select::choose(
        Some(match args.backend {
            BackendArg::Host => "host",
            BackendArg::Sim => "sim",
            BackendArg::Auto => "auto",
        }),
        &crate::host::SystemHost,
    ) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    let backend = choice.backend;
    // Which scenarios apply to the machine checked, with count = "auto" resolved.
    let plan = crate::select::plan_for(
        &scenarios,
        crate::select::place_of(backend, args.in_vm),
        choice.gpus.as_ref(),
        // An explicit --docker-host is the engine checked: the default one says nothing.
        choice
            .engine
            .as_ref()
            .filter(|_| args.docker_host.is_none()),
    );
    let scenarios = plan.scenarios;
    let snapshot_dir = args
        .snapshots
        .clone()
        .unwrap_or_else(|| runner::default_snapshot_dir(&base));
    let mut opts = run_options(&args, backend, snapshot_dir, &scenarios);
    if opts.selection.as_ref().is_some_and(|s| s.is_empty()) {
        // A run that checks nothing must not exit 0 as if all had passed.
        return config_error(format!(
            "--filter {}: matches no check (trials are named <scenario>::<check>; `cdi-harness list` shows them)",
            args.filter.join(" --filter ")
        ));
    }
    opts.not_applicable = plan.skipped;
    let view = attach_live_view(&mut opts, args.quiet);
    if backend == BackendKind::Sim && args.image.is_some() {
        eprintln!(
            "note: --image applies to the host backend; sim runs its own busybox image with a simulated nvidia-smi"
        );
    }
    if !args.quiet {
        print_run_header(scenarios.len(), backend, &choice.why, &opts.not_applicable);
    }

    let rt = match crate::rt::runtime() {
        Ok(rt) => rt,
        Err(e) => return config_error(e),
    };
    let signalled = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let report = rt.block_on(async {
        tokio::spawn(watch_signals(
            opts.cancel.clone(),
            signalled.clone(),
            view.clone(),
        ));
        runner::run_scenarios(&scenarios, &opts).await
    });
    view.clear();

    // The report files first: they must not depend on the terminal (a closed stdout,
    // a second signal while the table prints).
    let code = write_report_files(&report, &args);
    let width = terminal_width();
    print!(
        "{}",
        report::summary_table(&report, width, wants_color(&std::io::stdout()))
    );
    if opts.cancel.is_cancelled() {
        return ExitCode::from(match signalled.load(std::sync::atomic::Ordering::SeqCst) {
            0 => 130,
            n => n,
        });
    }
    code
}

/// The run's scenarios (and the directory they came from) once every path and value
/// the command line names is known good: a bad one is a configuration error (exit 2)
/// before any engine is touched.
fn checked_inputs(args: &RunArgs) -> Result<(Vec<Scenario>, PathBuf), String> {
    let (scenarios, base) = load_scenarios(&args.scenarios).map_err(|e| e.to_string())?;
    if scenarios.is_empty() {
        return Err(
            "no scenario files found (pass --scenario PATH or run from the repository root)".into(),
        );
    }
    if let Some(image) = &args.image {
        scenario::validate_image(image).map_err(|reason| format!("--image: {reason}"))?;
    }
    for (flag, path) in [
        ("--dockerd", &args.dockerd),
        ("--docker-cli", &args.docker_cli),
    ] {
        if let Some(p) = path
            && !p.is_file()
        {
            return Err(format!("{flag} {}: no such file", p.display()));
        }
    }
    if let Some(uri) = &args.docker_host
        && !(uri.starts_with("unix://") || uri.starts_with("tcp://") || uri.starts_with("http://"))
    {
        return Err(format!(
            "--docker-host {uri}: use unix:///path/to/docker.sock or tcp://host:port"
        ));
    }
    Ok((scenarios, base))
}

/// The runner's options from the command line: engine, limits, the `--filter`
/// selection over `scenarios`' trial names.
fn run_options(
    args: &RunArgs,
    backend: BackendKind,
    snapshot_dir: PathBuf,
    scenarios: &[Scenario],
) -> RunOptions {
    let mut opts = RunOptions::new(backend, snapshot_dir);
    opts.image_override = args.image.clone();
    opts.ci = opts.ci || args.ci;
    opts.host_endpoint = args
        .docker_host
        .as_ref()
        .map(|uri| crate::engine::Endpoint {
            uri: uri.clone(),
            source: "--docker-host".into(),
        });
    opts.dockerd = args.dockerd.clone();
    if args.docker_cli.is_some() {
        opts.docker_cli = args.docker_cli.clone();
    }
    opts.timeouts.call = std::time::Duration::from_secs(args.call_timeout.max(1));
    opts.timeouts.container = std::time::Duration::from_secs(args.container_timeout.max(1));
    if !args.filter.is_empty() {
        let filters = &args.filter;
        opts.selection = Some(
            scenarios
                .iter()
                .flat_map(|s| {
                    s.check_names()
                        .into_iter()
                        .map(move |c| format!("{}::{c}", s.name))
                })
                .filter(|t| filters.iter().any(|f| t.contains(f.as_str())))
                .collect(),
        );
    }
    opts
}

/// The live view of the run on stderr, fed by the runner's events: spinners for the
/// long work (engine starts, image imports, engine restarts) on a terminal only, the
/// per-check lines through the same view so they never tear; with `quiet`, only the
/// notices (removing what a dead run left is always worth a line).
fn attach_live_view(opts: &mut RunOptions, quiet: bool) -> Arc<report::LiveView> {
    // anstream decides as terminal programs agree: a terminal, and neither NO_COLOR nor
    // TERM=dumb (CLICOLOR_FORCE forces colour on).
    let color = wants_color(&std::io::stderr());
    let view = Arc::new(report::LiveView::stderr(!quiet));
    if !quiet {
        let v = view.clone();
        opts.progress = Some(Arc::new(move |r| v.line(&report::progress_line(r, color))));
        let v = view.clone();
        opts.phase = Some(Arc::new(move |scenario, phase| v.phase(scenario, phase)));
    }
    let v = view.clone();
    opts.notice = Some(Arc::new(move |text: &str| v.line(&format!("note: {text}"))));
    view
}

/// What is about to be checked, where, and why there.
fn print_run_header(
    count: usize,
    backend: BackendKind,
    why: &str,
    not_applicable: &std::collections::BTreeMap<String, String>,
) {
    eprintln!(
        "cdi-harness: {count} scenario(s) on the {} backend{}",
        backend.as_str(),
        if backend.simulated() {
            " (simulated GPUs: no real hardware is checked)"
        } else {
            ""
        }
    );
    eprintln!("cdi-harness: backend {why}");
    for (name, why) in not_applicable {
        eprintln!("cdi-harness: {name} is skipped: {why}");
    }
}

/// Writes the report files the command line asks for: exit 1 when a check failed, 2
/// when a file could not be written (each failure said on stderr).
fn write_report_files(report: &RunReport, args: &RunArgs) -> ExitCode {
    let mut code = if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    let writers: [(&Option<PathBuf>, ReportWriter); 3] = [
        (&args.json, report::write_json),
        (&args.junit, report::write_junit),
        (&args.markdown, report::write_markdown),
    ];
    for (path, write) in writers {
        if let Some(p) = path
            && let Err(e) = write(report, p)
        {
            eprintln!("error: {e}");
            code = ExitCode::from(2);
        }
    }
    code
}

/// One report file's writer.
type ReportWriter = fn(&RunReport, &Path) -> Result<(), report::ReportError>;

/// Ctrl-C, SIGTERM (`systemctl stop`, CI time-outs) and SIGHUP (a closed terminal) all
/// stop a run alike: the first cancels the in-flight engine calls, the run cleans up
/// under its own short deadline and reports `interrupted`; its exit code (128 + the
/// signal) goes to `code`. A second signal exits at once, saying what may be left,
/// because an operator who presses Ctrl-C twice will not wait for a hung engine.
async fn watch_signals(
    cancel: tokio_util::sync::CancellationToken,
    code: Arc<std::sync::atomic::AtomicU8>,
    view: Arc<report::LiveView>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term, mut hup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!(
                "warning: cannot handle Ctrl-C, SIGTERM or SIGHUP ({e}): an interrupted run will not clean up"
            );
            return;
        }
    };
    let mut next = async || -> (&'static str, u8) {
        tokio::select! {
            _ = int.recv() => ("Ctrl-C", 130),
            _ = term.recv() => ("SIGTERM", 143),
            _ = hup.recv() => ("SIGHUP", 129),
        }
    };
    let (name, n) = next().await;
    code.store(n, std::sync::atomic::Ordering::SeqCst);
    view.line(&format!(
        "\ninterrupted ({name}): cancelling engine calls, removing this run's containers and stopping private engines (again to exit at once)…"
    ));
    cancel.cancel();
    let (again, n) = next().await;
    view.clear();
    eprintln!(
        "\n{again} again: exiting now without cleaning up. May be left: containers labelled {}={} on the engine, and private engines (their dockerd is sent SIGTERM as this process exits) with their /tmp/cdih-* and cdih-spec-* directories; the next `cdi-harness run` finds and removes them.",
        crate::engine::OWNER_LABEL,
        crate::engine::owner_value(),
    );
    std::process::exit(i32::from(n));
}

fn bench(file: &Path, dockerd: Option<PathBuf>, iterations: usize, suite: &Path) -> ExitCode {
    let seed = match scenario::load(file) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return config_error(format!("cannot find this program's own path: {e}")),
    };
    let rt = match crate::rt::runtime() {
        Ok(rt) => rt,
        Err(e) => return config_error(e),
    };
    eprintln!(
        "benchmarking {} ({iterations} runs each side)…",
        file.display()
    );
    match rt.block_on(crate::bench::run(
        &seed,
        file,
        &exe,
        dockerd.clone(),
        iterations,
    )) {
        Ok(r) => {
            print!("{}", r.render());
            if suite == Path::new("none") {
                return ExitCode::SUCCESS;
            }
            eprintln!("timing the whole sim suite in {} once…", suite.display());
            match rt.block_on(crate::bench::suite(&exe, suite, dockerd.as_deref())) {
                Ok(m) => {
                    print!("{}", m.render());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Whether output to `stream` gets colours (anstream's rules: NO_COLOR, CLICOLOR,
/// CLICOLOR_FORCE, TERM=dumb, and whether it is a terminal).
fn wants_color<S: anstream::stream::RawStream>(stream: &S) -> bool {
    anstream::AutoStream::choice(stream) != anstream::ColorChoice::Never
}

/// The table's width: the terminal's (terminal_size), else `COLUMNS`, else 120 (a
/// pipe or a file: wide enough to keep most messages whole).
fn terminal_width() -> usize {
    terminal_size::terminal_size()
        .map(|(w, _)| usize::from(w.0))
        .or_else(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()))
        .unwrap_or(120)
}

/// The rules `cdi validate` judges by: `--engine`, else the engine at DOCKER_HOST
/// when it answers quickly, else the default engine.
fn validate_rules(engine: Option<&str>) -> Result<cdi::Rules, cdi::RulesError> {
    if let Some(v) = engine {
        return cdi::Rules::for_engine(v);
    }
    let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) else {
        return Ok(cdi::Rules::default_engine());
    };
    let version = crate::rt::runtime().ok().and_then(|rt| {
        rt.block_on(cdi::rules::engine_version_at(
            &host,
            std::time::Duration::from_secs(2),
        ))
    });
    match version.map(|v| cdi::Rules::for_engine(&v)) {
        Some(Ok(rules)) => Ok(cdi::Rules {
            source: cdi::rules::RulesSource::Connected(host),
            ..rules
        }),
        Some(Err(e)) => {
            eprintln!("note: {e}; judging with the default engine's rules instead");
            Ok(cdi::Rules::default_engine())
        }
        None => Ok(cdi::Rules::default_engine()),
    }
}

fn validate(files: &[PathBuf], engine: Option<&str>, strict: bool) -> ExitCode {
    let rules = match validate_rules(engine) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}\nfix: {}", e.fix_hint());
            return ExitCode::from(2);
        }
    };
    println!("{}", rules.describe());
    let mut code = 0u8;
    for f in files {
        let v = cdi::check_file(f, &rules);
        let file = f.display();
        for e in &v.report.errors {
            let crash = if e.crash {
                " [crashes the library]"
            } else {
                ""
            };
            println!("{file}: {}: {}{crash}", e.path, e.message);
        }
        for w in &v.report.warnings {
            println!("{file}: warning: {}: {}", w.path, w.message);
        }
        for n in &v.report.notes {
            println!("{file}: note: {}: {}", n.path, n.message);
        }
        if let Some(hint) = v.error.as_ref().and_then(|e| e.fix_hint()) {
            println!("{file}: fix: {hint}");
        }
        let detail = match (&v.verdict, &v.spec) {
            (cdi::Verdict::Loads | cdi::Verdict::LoadsWithWarnings, Some(spec)) => format!(
                " ({} devices: {})",
                spec.devices.len(),
                spec.device_names().join(", ")
            ),
            (cdi::Verdict::Refused, _) if v.report.crashes() => {
                format!(" (the parser of {} crashes on it)", rules.decider())
            }
            (cdi::Verdict::Refused, _) => format!(" by {}", rules.decider()),
            _ => String::new(),
        };
        println!("{file}: {}{detail}", v.verdict.word());
        code = code.max(v.verdict.exit_code(strict));
    }
    ExitCode::from(code)
}

fn normalize(file: &Path) -> ExitCode {
    match cdi::load_spec_file(file) {
        Err(e) => config_error(e),
        Ok(spec) => match serde_json::to_string_pretty(&cdi::normalize(&spec)) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(format!(
                "{}: cannot print normalized JSON: {e}",
                file.display()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(argv).expect("parses");
        match cli.command {
            Command::Run(args) => *args,
            _ => panic!("not `run`"),
        }
    }

    #[test]
    fn filters_given_twice_select_what_matches_either() {
        let scenarios: Vec<Scenario> = ["seed", "multi-gpu"]
            .iter()
            .map(|n| {
                scenario::load(
                    &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{n}.toml")),
                )
                .expect("scenario loads")
            })
            .collect();
        let args = run_args(&[
            "cdi-harness",
            "run",
            "--filter",
            "seed::device_all",
            "--filter",
            "::gpus_flag",
        ]);
        let opts = run_options(
            &args,
            BackendKind::Sim,
            PathBuf::from("snapshots"),
            &scenarios,
        );
        let selected: Vec<String> = opts.selection.expect("a selection").into_iter().collect();
        assert_eq!(
            selected,
            [
                "multi-gpu::gpus_flag",
                "seed::device_all",
                "seed::gpus_flag"
            ]
        );
        let none = run_args(&["cdi-harness", "run"]);
        assert!(
            run_options(&none, BackendKind::Sim, PathBuf::from("s"), &scenarios)
                .selection
                .is_none()
        );
    }

    #[test]
    fn a_bad_docker_host_is_refused_before_anything_runs() {
        let args = run_args(&[
            "cdi-harness",
            "run",
            "--scenario",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/seed.toml"),
            "--docker-host",
            "ssh-ish://x",
        ]);
        let err = checked_inputs(&args).expect_err("refused");
        assert!(err.contains("--docker-host ssh-ish://x"), "{err}");
    }
}
