//! `cdi-harness doctor`: the write-up's Troubleshooting section, run for you.
//!
//! The steps follow the write-up's order (the spec exists, Docker sees the CDI devices,
//! the generator ran, the manual-runtime pitfall), preceded by what the driver reports
//! and the socket this user must reach. Each step says what it saw, whether that is
//! right, and the exact fix. Probes are gathered once through [`HostSource`] and the
//! verdicts computed from them, so every broken state is tested from recordings.
//! `--fix` runs only the two restarts the write-up names, then diagnoses again.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::cdi::LoadedSpec;
use crate::engine::EngineInfo;
use crate::gpu::{self, GpuError, Inventory};
use crate::host::{
    self, DaemonConfig, FileInfo, GENERATOR_UNIT, HostError, HostSource, UNIT_PROPERTIES,
    UnitState, UserInfo,
};
use crate::outcome::Status;

/// The spec file NixOS's generator writes.
pub const GENERATED_SPEC: &str = "nvidia-container-toolkit.json";
/// Where NixOS's generator writes it.
pub const GENERATED_DIR: &str = "/run/cdi";
/// The write-up's fix for a missing or stale spec.
pub const RESTART_GENERATOR: &str = "sudo systemctl restart nvidia-container-toolkit-cdi-generator";
/// The write-up's second step: the engine re-reads its configuration.
pub const RESTART_DOCKER: &str = "sudo systemctl restart docker";
/// The fix for the write-up's pitfall.
pub const REMOVE_MANUAL_RUNTIME: &str = "remove virtualisation.docker.daemon.settings.runtimes (and any pkgs.nvidia-docker / enableNvidia) from the NixOS configuration; rely solely on hardware.nvidia-container-toolkit.enable = true, then nixos-rebuild switch";
/// How to use the devices, always worth saying.
pub const USE_DEVICE_FLAG: &str = "use `docker run --device nvidia.com/gpu=all …` (or `=0`, `=1`, …) instead of `--gpus all`, which needs the legacy runtime hook NixOS does not install";

/// A step's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// What was seen is right.
    Ok,
    /// What was seen is wrong; `fix` says what to do.
    Problem,
    /// The step could not look (the reason is in `saw`).
    Skipped,
    /// Advice, not a verdict.
    Info,
}

impl StepStatus {
    fn label(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Problem => "PROBLEM",
            StepStatus::Skipped => "skipped",
            StepStatus::Info => "info",
        }
    }
}

/// One troubleshooting step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Stable name, e.g. `spec_present`.
    pub name: &'static str,
    /// The verdict.
    pub status: StepStatus,
    /// What was seen.
    pub saw: String,
    /// The exact fix, for a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Supporting lines (journal tail, file listing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl Step {
    fn new(name: &'static str, status: StepStatus, saw: impl Into<String>) -> Step {
        Step {
            name,
            status,
            saw: saw.into(),
            fix: None,
            details: Vec::new(),
        }
    }
    fn ok(name: &'static str, saw: impl Into<String>) -> Step {
        Step::new(name, StepStatus::Ok, saw)
    }
    fn skipped(name: &'static str, why: impl Into<String>) -> Step {
        Step::new(name, StepStatus::Skipped, why)
    }
    fn problem(name: &'static str, saw: impl Into<String>, fix: impl Into<String>) -> Step {
        Step {
            fix: Some(fix.into()),
            ..Step::new(name, StepStatus::Problem, saw)
        }
    }
    fn from_verdict(name: &'static str, v: crate::checks::Verdict) -> Step {
        match v.status {
            Status::Pass => Step::ok(name, v.message),
            // A doctor step never carries a scenario's expectation or a snapshot.
            Status::Skip | Status::New => Step::skipped(name, v.message),
            Status::Fail | Status::Xfail => Step {
                fix: v.fix,
                ..Step::new(name, StepStatus::Problem, v.message)
            },
        }
    }
}

/// A repair `--fix` ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixApplied {
    /// The command.
    pub command: String,
    /// `ok`, or why it failed.
    pub outcome: String,
}

/// The whole diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Repairs `--fix` ran (empty without it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixes_applied: Vec<FixApplied>,
    /// The diagnosis before the repairs, when `--fix` ran any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_fix: Option<Vec<Step>>,
    /// No step found a problem.
    pub healthy: bool,
}

impl DoctorReport {
    fn from_steps(steps: Vec<Step>) -> DoctorReport {
        let healthy = steps.iter().all(|s| s.status != StepStatus::Problem);
        DoctorReport {
            steps,
            fixes_applied: Vec::new(),
            before_fix: None,
            healthy,
        }
    }

    /// 0 healthy, 1 a problem.
    pub fn exit_code(&self) -> u8 {
        if self.healthy { 0 } else { 1 }
    }

    /// The problems, one line each with its fix.
    pub fn problem_lines(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Problem)
            .map(|s| {
                format!(
                    "PROBLEM {}: {} — fix: {}",
                    s.name,
                    s.saw,
                    s.fix.as_deref().unwrap_or("(no known fix)")
                )
            })
            .collect()
    }

    /// The text form: one line per step (problems with their fix on the same line),
    /// details indented below, then the repairs and a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            match s.status {
                StepStatus::Problem => out.push_str(&format!(
                    "PROBLEM {}: {} — fix: {}\n",
                    s.name,
                    s.saw,
                    s.fix.as_deref().unwrap_or("(no known fix)")
                )),
                other => out.push_str(&format!("{:<7} {}: {}\n", other.label(), s.name, s.saw)),
            }
            for d in &s.details {
                out.push_str(&format!("          {d}\n"));
            }
        }
        for f in &self.fixes_applied {
            out.push_str(&format!("fixed:  ran `{}`: {}\n", f.command, f.outcome));
        }
        let problems = self
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Problem)
            .count();
        if problems == 0 {
            out.push_str("healthy: Docker containers can get this machine's GPUs through CDI\n");
        } else {
            out.push_str(&format!("{problems} problem(s) found\n"));
        }
        out
    }
}

/// Everything read from the machine, before any verdict.
#[derive(Debug, Clone)]
pub struct Probes {
    /// NVML's answer.
    pub gpus: Result<Inventory, GpuError>,
    /// The generator unit, or why systemctl could not say.
    pub generator: Result<UnitState, HostError>,
    /// Its last journal lines (read only when it is not healthy).
    pub generator_journal: Option<String>,
    /// Spec dirs looked at, with their metadata (`None`: missing).
    pub spec_dirs: Vec<(PathBuf, Option<FileInfo>)>,
    /// Spec files found in them, with metadata.
    pub spec_files: Vec<FileInfo>,
    /// The NVIDIA spec chosen (the generated one, else another `nvidia.com/gpu` spec), or
    /// why it could not be loaded.
    pub spec: Option<Result<LoadedSpec, String>>,
    /// Boot time.
    pub boot_time: Option<SystemTime>,
    /// `docker.service`'s config file and its parsed content.
    pub daemon_config: Option<(PathBuf, Result<DaemonConfig, String>)>,
    /// `docker.socket`'s state (socket activation when enableOnBoot = false).
    pub docker_socket_unit: Option<UnitState>,
    /// Sockets considered: (what, path, metadata).
    pub sockets: Vec<(String, PathBuf, Option<FileInfo>)>,
    /// The socket used for `docker info`, with how it was chosen.
    pub chosen_socket: Option<(String, PathBuf)>,
    /// The user.
    pub user: UserInfo,
    /// `docker info` through the chosen socket.
    pub engine: Option<Result<EngineInfo, String>>,
}

/// The spec dirs looked at: the CDI defaults (NixOS's generator writes /run/cdi), plus
/// those the daemon config adds.
fn spec_dirs(daemon: Option<&DaemonConfig>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/cdi"), PathBuf::from(GENERATED_DIR)];
    for d in daemon.map(|d| d.cdi_spec_dirs.clone()).unwrap_or_default() {
        let p = PathBuf::from(d);
        if !dirs.contains(&p) && p != Path::new("/var/run/cdi") {
            dirs.push(p);
        }
    }
    dirs
}

/// Reads every probe. Cheap and bounded: each command has a timeout.
pub fn gather(host: &dyn HostSource) -> Probes {
    let gpus = host.gpus();
    let generator = host
        .systemctl_show(GENERATOR_UNIT, UNIT_PROPERTIES)
        .map(|t| UnitState::parse(&t));
    let generator_journal = match &generator {
        Ok(u) if !u.absent() && !u.oneshot_ok() => Some(
            host.journal_tail(GENERATOR_UNIT, 10)
                .unwrap_or_else(|e| e.to_string()),
        ),
        _ => None,
    };
    let daemon_config = host::daemon_config(host);
    let dirs = spec_dirs(daemon_config.as_ref().and_then(|(_, c)| c.as_ref().ok()));
    let mut spec_files = Vec::new();
    let mut spec_dirs_seen = Vec::new();
    let mut candidates: Vec<(PathBuf, Result<crate::cdi::Spec, String>)> = Vec::new();
    for d in &dirs {
        spec_dirs_seen.push((d.clone(), host.file_info(d)));
        for f in host.list_dir(d) {
            let ext_ok = f.extension().is_some_and(|e| e == "json" || e == "yaml");
            if !ext_ok {
                continue;
            }
            if let Some(info) = host.file_info(&f) {
                spec_files.push(info);
            }
            let parsed = host
                .read_to_string(&f)
                .map_err(|e| e.to_string())
                .and_then(|t| crate::cdi::parse_spec(&f, t.as_bytes()).map_err(|e| e.to_string()));
            candidates.push((f, parsed));
        }
    }
    // The generated spec first, else any spec of kind nvidia.com/gpu (nvidia-ctk's
    // /etc/cdi/nvidia.yaml on other distributions).
    let spec = candidates
        .iter()
        .find(|(p, _)| p.file_name().is_some_and(|n| n == GENERATED_SPEC))
        .or_else(|| {
            candidates
                .iter()
                .find(|(_, s)| s.as_ref().is_ok_and(|s| s.kind == "nvidia.com/gpu"))
        })
        .map(|(p, s)| {
            s.clone().map(|spec| LoadedSpec {
                path: p.clone(),
                dir_index: 0,
                spec,
                problems: Vec::new(),
            })
        });
    let docker_socket_unit = host
        .systemctl_show("docker.socket", UNIT_PROPERTIES)
        .ok()
        .map(|t| UnitState::parse(&t))
        .filter(|u| !u.absent());
    let mut sockets: Vec<(String, PathBuf, _)> = crate::host::default_sockets(host)
        .into_iter()
        .map(|(what, path)| {
            let info = host.file_info(&path);
            (what.to_string(), path, info)
        })
        .collect();
    let chosen_socket = match host.env("DOCKER_HOST") {
        Some(h) => h
            .strip_prefix("unix://")
            .map(|p| ("DOCKER_HOST".to_string(), PathBuf::from(p))),
        None => sockets
            .iter()
            .find(|(_, _, i)| i.is_some())
            .map(|(what, p, _)| (format!("the {what} socket"), p.clone())),
    };
    if let Some((what, p)) = &chosen_socket {
        if !sockets.iter().any(|(_, q, _)| q == p) {
            sockets.push((what.clone(), p.clone(), host.file_info(p)));
        }
    }
    let engine = chosen_socket.as_ref().map(|(_, p)| host.docker_info(p));
    Probes {
        gpus,
        generator,
        generator_journal,
        spec_dirs: spec_dirs_seen,
        spec_files,
        spec,
        boot_time: host.boot_time(),
        daemon_config,
        docker_socket_unit,
        sockets,
        chosen_socket,
        user: host.user(),
        engine,
    }
}

/// The nixpkgs issue behind the generator's best-known failure.
fn generator_hint(journal: &str) -> Option<&'static str> {
    if journal.contains("failed to initialize NVML: Driver Not Loaded")
        || journal.contains("Driver Not Loaded")
    {
        Some(
            "the generator ran before the NVIDIA kernel module was loaded (nixpkgs#451912): check `lsmod | grep nvidia`, then sudo systemctl restart nvidia-container-toolkit-cdi-generator && sudo systemctl restart docker",
        )
    } else {
        None
    }
}

/// The verdicts, in the write-up's troubleshooting order.
pub fn diagnose(p: &Probes) -> Vec<Step> {
    let mut steps = Vec::new();
    // 0. The driver: everything else is about handing its GPUs over.
    steps.push(match &p.gpus {
        Ok(inv) => Step::ok("nvidia_driver", inv.summary()),
        Err(e) if e.is_unavailable() => Step::skipped("nvidia_driver", e.to_string()),
        Err(e) => Step::problem(
            "nvidia_driver",
            e.to_string(),
            "check `nvidia-smi` and `dmesg | grep -i nvrm`; the driver must work before CDI can",
        ),
    });
    let generator_absent = matches!(&p.generator, Ok(u) if u.absent()) || p.generator.is_err();

    // 1. "Verify CDI spec exists" (ls -la /run/cdi/).
    let listing: Vec<String> = p
        .spec_dirs
        .iter()
        .map(|(d, i)| match i {
            Some(i) => i.describe(),
            None => format!("{} (missing)", d.display()),
        })
        .chain(p.spec_files.iter().map(FileInfo::describe))
        .collect();
    let mut spec_step = match &p.spec {
        Some(Ok(l)) => {
            let generated = l.path.file_name().is_some_and(|n| n == GENERATED_SPEC)
                && l.path.starts_with(GENERATED_DIR);
            let mut saw = format!(
                "{} ({} devices: {})",
                l.path.display(),
                l.spec.devices.len(),
                l.spec.device_names().join(", ")
            );
            if !generated {
                saw.push_str(&format!(
                    "; not NixOS's generated {GENERATED_DIR}/{GENERATED_SPEC} but a spec made by hand or by nvidia-ctk (fine on other distributions; regenerate it yourself after driver updates)"
                ));
            }
            Step::ok("spec_present", saw)
        }
        Some(Err(e)) => Step::problem(
            "spec_present",
            format!("the NVIDIA spec cannot be loaded: {e}"),
            format!("{RESTART_GENERATOR} && {RESTART_DOCKER}"),
        ),
        None => {
            let fix = if generator_absent {
                "enable hardware.nvidia-container-toolkit.enable = true and nixos-rebuild switch (NixOS), or elsewhere: sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml".to_string()
            } else {
                format!("{RESTART_GENERATOR} && {RESTART_DOCKER}")
            };
            Step::problem(
                "spec_present",
                format!("no NVIDIA CDI spec in {}", spec_dir_names(p)),
                fix,
            )
        }
    };
    spec_step.details = listing;
    steps.push(spec_step);

    // 1b. The spec describes the GPUs the driver has, and is fresh.
    let loaded = p.spec.as_ref().and_then(|s| s.as_ref().ok());
    steps.push(match &p.gpus {
        Ok(inv) => Step::from_verdict("spec_matches_gpus", gpu::check_spec_against(inv, loaded)),
        Err(e) => Step::skipped("spec_matches_gpus", e.to_string()),
    });
    let mtime = loaded.and_then(|l| {
        p.spec_files
            .iter()
            .find(|f| f.path == l.path)
            .and_then(|f| f.mtime)
    });
    steps.push(Step::from_verdict(
        "spec_fresh",
        gpu::check_spec_fresh(loaded, mtime, p.boot_time, p.gpus.as_ref().ok()),
    ));

    // 2. The socket this user reaches, and whether they may.
    steps.push(socket_step(p));

    // 3. "Verify Docker sees CDI devices" (docker info | grep -i cdi).
    steps.push(docker_cdi_step(p));

    // 4. "Verify the generator service ran".
    steps.push(generator_step(p, loaded.is_some()));

    // 5. "Common pitfall after nix flake update": manual runtimes, in the config and
    //    in the running engine.
    steps.push(daemon_config_step(p));
    steps.push(engine_runtimes_step(p));

    steps.push(Step::new("usage", StepStatus::Info, USE_DEVICE_FLAG));
    steps
}

fn spec_dir_names(p: &Probes) -> String {
    p.spec_dirs
        .iter()
        .map(|(d, _)| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn socket_step(p: &Probes) -> Step {
    let seen: Vec<String> = p
        .sockets
        .iter()
        .map(|(what, path, i)| {
            format!(
                "{what} {}: {}",
                path.display(),
                i.as_ref()
                    .map(|i| i.describe())
                    .unwrap_or_else(|| "absent".into())
            )
        })
        .collect();
    let activation = p
        .docker_socket_unit
        .as_ref()
        .map(|u| format!("; docker.socket is {}", u.describe()))
        .unwrap_or_default();
    let Some((how, path)) = &p.chosen_socket else {
        let mut s = Step::problem(
            "docker_socket",
            format!("no Docker socket exists{activation}"),
            "start the engine: sudo systemctl start docker.socket docker (with virtualisation.docker.enableOnBoot = false the socket unit starts it on first use), or for rootless: systemctl --user start docker",
        );
        s.details = seen;
        return s;
    };
    let info = p
        .sockets
        .iter()
        .find(|(_, q, _)| q == path)
        .and_then(|(_, _, i)| i.clone());
    let mut step = match info {
        None => Step::problem(
            "docker_socket",
            format!("{how} points at {}, which does not exist", path.display()),
            "unset DOCKER_HOST or start that engine",
        ),
        Some(i) => {
            let u = &p.user;
            let may = u.uid == 0
                || u.uid == i.uid
                || (u.gids.contains(&i.gid) && i.mode & 0o060 == 0o060)
                || i.mode & 0o006 == 0o006;
            if may {
                Step::ok(
                    "docker_socket",
                    format!("{} ({how}), usable by {}{activation}", i.describe(), u.name),
                )
            } else {
                Step::problem(
                    "docker_socket",
                    format!(
                        "{} ({how}) is not usable by {} (groups: {}): not in the socket's group",
                        i.describe(),
                        u.name,
                        u.groups.join(" ")
                    ),
                    format!(
                        "add the user to the docker group: users.extraGroups.docker.members = [ \"{}\" ]; then nixos-rebuild switch and log in again (elsewhere: sudo usermod -aG docker {})",
                        u.name, u.name
                    ),
                )
            }
        }
    };
    step.details = seen;
    step
}

fn docker_cdi_step(p: &Probes) -> Step {
    let info = match &p.engine {
        None => return Step::skipped("docker_cdi", "no Docker socket to ask (see docker_socket)"),
        Some(Err(e)) => {
            return Step::problem(
                "docker_cdi",
                format!("the engine does not answer: {e}"),
                format!(
                    "{RESTART_DOCKER} (see `systemctl status docker` and `journalctl -u docker -n 20`)"
                ),
            );
        }
        Some(Ok(i)) => i,
    };
    if info.cdi_spec_dirs.is_empty() {
        return Step::problem(
            "docker_cdi",
            format!(
                "engine {} reports no CDI spec directories: CDI is off",
                info.server_version
            ),
            format!(
                "CDI needs docker >= 25 with features.cdi = true; hardware.nvidia-container-toolkit.enable = true sets it (remove any features.cdi = false, see nixpkgs#305312), then {RESTART_DOCKER}"
            ),
        );
    }
    let dirs = info.cdi_spec_dirs.join(" ");
    let warnings = info.cdi_warnings();
    match &info.discovered_devices {
        None => Step::ok(
            "docker_cdi",
            format!(
                "CDI spec directories: {dirs} (engine {} does not list discovered devices)",
                info.server_version
            ),
        ),
        Some(devs) => {
            let nvidia: Vec<&String> = devs
                .iter()
                .filter(|d| d.starts_with("nvidia.com/gpu="))
                .collect();
            let mut want: Vec<String> = vec!["nvidia.com/gpu=all".into()];
            if let Ok(inv) = &p.gpus {
                want.extend(
                    inv.gpus
                        .iter()
                        .map(|g| format!("nvidia.com/gpu={}", g.index)),
                );
            }
            let missing: Vec<&String> = want.iter().filter(|w| !devs.contains(w)).collect();
            if missing.is_empty() && warnings.is_empty() {
                Step::ok(
                    "docker_cdi",
                    format!(
                        "CDI spec directories: {dirs}; cdi: {}",
                        nvidia
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            } else {
                let mut saw = format!(
                    "docker info discovers [{}], missing {}",
                    nvidia
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if !warnings.is_empty() {
                    saw.push_str(&format!(
                        "; the engine's warnings: {}",
                        warnings.join(" | ")
                    ));
                }
                let fix = if warnings.is_empty() {
                    format!("{RESTART_GENERATOR} && {RESTART_DOCKER}")
                } else {
                    "fix or remove the spec files the warnings name (a stale /etc/cdi/nvidia.yaml beside the generated spec makes the engine drop both's devices)".to_string()
                };
                Step::problem("docker_cdi", saw, fix)
            }
        }
    }
}

fn generator_step(p: &Probes, have_spec: bool) -> Step {
    match &p.generator {
        Err(HostError::Missing { .. }) => Step::skipped(
            "cdi_generator",
            "no systemctl here: not a systemd host, the generator cannot be inspected",
        ),
        Err(e) => Step::skipped("cdi_generator", e.to_string()),
        Ok(u) if u.absent() => {
            let saw = format!(
                "{GENERATOR_UNIT}.service does not exist (not NixOS, or hardware.nvidia-container-toolkit.enable is off)"
            );
            if have_spec {
                Step::new(
                    "cdi_generator",
                    StepStatus::Info,
                    format!(
                        "{saw}; the spec above was made another way, so nothing regenerates it at boot or after a driver update"
                    ),
                )
            } else {
                Step::problem(
                    "cdi_generator",
                    saw,
                    "set hardware.nvidia-container-toolkit.enable = true and nixos-rebuild switch (elsewhere: sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)",
                )
            }
        }
        Ok(u) if u.oneshot_ok() => Step::ok(
            "cdi_generator",
            format!("{GENERATOR_UNIT}: {}", u.describe()),
        ),
        Ok(u) => {
            let journal = p.generator_journal.clone().unwrap_or_default();
            let fix = generator_hint(&journal)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{RESTART_GENERATOR} && {RESTART_DOCKER}; if it fails again, read `journalctl -u {GENERATOR_UNIT}`"));
            let mut s = Step::problem(
                "cdi_generator",
                format!(
                    "{GENERATOR_UNIT}: {} (healthy is active (exited), status 0)",
                    u.describe()
                ),
                fix,
            );
            s.details = journal
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            s
        }
    }
}

fn manual_runtimes(runtimes: &[(String, String)]) -> Vec<String> {
    runtimes
        .iter()
        .filter(|(n, p)| n.contains("nvidia") || p.contains("nvidia"))
        .map(|(n, p)| format!("{n} ({})", if p.is_empty() { "no path" } else { p }))
        .collect()
}

fn daemon_config_step(p: &Probes) -> Step {
    let Some((path, parsed)) = &p.daemon_config else {
        return Step::skipped(
            "daemon_config",
            "docker.service is not known to systemd here: its configuration was not read",
        );
    };
    let c = match parsed {
        Ok(c) => c,
        Err(e) if e.contains("No such file") => {
            return Step::ok(
                "daemon_config",
                format!("{}: absent (engine defaults)", path.display()),
            );
        }
        Err(e) => return Step::skipped("daemon_config", format!("{}: {e}", path.display())),
    };
    let mut problems = Vec::new();
    let manual = manual_runtimes(&c.runtimes);
    if !manual.is_empty() {
        problems.push(format!("manual NVIDIA runtime {}", manual.join(", ")));
    }
    if c.default_runtime
        .as_deref()
        .is_some_and(|d| d.contains("nvidia"))
    {
        problems.push(format!(
            "default-runtime = {:?}",
            c.default_runtime.as_deref().unwrap_or_default()
        ));
    }
    if c.cdi_feature == Some(false) {
        return Step::problem(
            "daemon_config",
            format!("{}: features.cdi = false", path.display()),
            format!(
                "remove virtualisation.docker.daemon.settings.features.cdi = false (nixpkgs#305312), nixos-rebuild switch, then {RESTART_DOCKER}"
            ),
        );
    }
    if problems.is_empty() {
        Step::ok(
            "daemon_config",
            format!(
                "{}: no manual runtime{}",
                path.display(),
                match c.cdi_feature {
                    Some(true) => ", features.cdi = true",
                    _ => "",
                }
            ),
        )
    } else {
        Step::problem(
            "daemon_config",
            format!(
                "{}: {} (the write-up's pitfall: breaks after `nix flake update`)",
                path.display(),
                problems.join("; ")
            ),
            REMOVE_MANUAL_RUNTIME,
        )
    }
}

fn engine_runtimes_step(p: &Probes) -> Step {
    let Some(Ok(info)) = &p.engine else {
        return Step::skipped(
            "engine_runtimes",
            "the engine was not reached (see docker_cdi)",
        );
    };
    let manual = manual_runtimes(&info.runtimes);
    if manual.is_empty() && !info.default_runtime.contains("nvidia") {
        let names: Vec<&str> = info.runtimes.iter().map(|(n, _)| n.as_str()).collect();
        return Step::ok(
            "engine_runtimes",
            format!("runtimes: {} (no NVIDIA runtime)", names.join(" ")),
        );
    }
    Step::problem(
        "engine_runtimes",
        format!(
            "docker info lists a manual NVIDIA runtime: {} (default runtime {})",
            manual.join(", "),
            info.default_runtime
        ),
        REMOVE_MANUAL_RUNTIME,
    )
}

/// Diagnoses the machine.
pub fn run(host: &dyn HostSource) -> DoctorReport {
    DoctorReport::from_steps(diagnose(&gather(host)))
}

/// The restarts `--fix` would run for these steps: the generator when the spec or the
/// generator is wrong, docker when the engine must re-read or is down. Nothing else is
/// ever repaired automatically (configuration changes are the user's).
pub fn planned_fixes(steps: &[Step]) -> Vec<Vec<&'static str>> {
    let bad = |n: &str| {
        steps
            .iter()
            .any(|s| s.name == n && s.status == StepStatus::Problem)
    };
    let generator_unit_exists = !steps
        .iter()
        .any(|s| s.name == "cdi_generator" && s.saw.contains("does not exist"));
    let mut out = Vec::new();
    let regenerate = generator_unit_exists
        && (bad("spec_present")
            || bad("spec_matches_gpus")
            || bad("spec_fresh")
            || bad("cdi_generator"));
    if regenerate {
        out.push(vec!["systemctl", "restart", GENERATOR_UNIT]);
    }
    let engine_down = steps.iter().any(|s| {
        s.name == "docker_cdi"
            && s.status == StepStatus::Problem
            && s.saw.starts_with("the engine does not answer")
    });
    if regenerate || engine_down || bad("docker_cdi") {
        out.push(vec!["systemctl", "restart", "docker"]);
    }
    out
}

/// Diagnoses, and with `fix` runs [`planned_fixes`] (as root only) and diagnoses again.
pub fn run_with_fix(host: &dyn HostSource, fix: bool) -> DoctorReport {
    let first = run(host);
    if !fix || first.healthy {
        return first;
    }
    let plan = planned_fixes(&first.steps);
    if plan.is_empty() {
        return first;
    }
    if host.user().uid != 0 {
        let mut r = first;
        r.fixes_applied.push(FixApplied {
            command: plan
                .iter()
                .map(|c| c.join(" "))
                .collect::<Vec<_>>()
                .join(" && "),
            outcome: "not run: --fix needs root (sudo cdi-harness doctor --fix)".into(),
        });
        return r;
    }
    let mut applied = Vec::new();
    for argv in &plan {
        let outcome = match host.run_fix(argv) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        applied.push(FixApplied {
            command: argv.join(" "),
            outcome,
        });
    }
    let mut after = run(host);
    after.fixes_applied = applied;
    after.before_fix = Some(first.steps);
    after
}
