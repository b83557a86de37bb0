//! The checks: what each one means and how its verdict follows from the facts the
//! runner gathered (the spec dirs, `docker info` from the API and the CLI, container
//! runs).
//!
//! Verdicts are pure functions of those facts so each can be tested against recorded
//! outputs without an engine; the runner does all I/O. To add a check: add its name to
//! [`check_names`], compute its verdict in [`evaluate`], and document it in README.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cdi::{Notice, Registry};
use crate::engine::{CliInfo, ContainerStateFacts, EngineInfo, RunOutcome};
use crate::outcome::{BackendKind, Status};
use crate::scenario::{Expectation, RunSpec, Scenario};

/// Built-in checks, in report order; `device_<N>` checks sit between `device_all` and
/// `device_isolation`, declared `[[run]]`s after them, `no_leftovers` last.
pub const BUILTIN: &[&str] = &[
    "machine_config",
    "spec_present",
    "spec_valid",
    "spec_fresh",
    "spec_devices",
    "gpu_spec",
    "spec_snapshot",
    "info_spec_dirs",
    "info_devices",
    "info_warnings",
    "info_cli",
    "daemon_runtimes",
    "engine_mode",
    "device_all",
    "device_isolation",
    "restart_always",
    "gpu_containers",
    "no_leftovers",
];

/// The fix the seed write-up gives when the spec is missing.
pub const SPEC_MISSING_FIX: &str = "sudo systemctl restart nvidia-container-toolkit-cdi-generator && sudo systemctl restart docker (check `systemctl status nvidia-container-toolkit-cdi-generator` for why it did not write the spec)";

/// Whether `name` is a built-in check name (including `device_<N>`).
pub fn is_builtin(name: &str) -> bool {
    BUILTIN.contains(&name)
        || name
            .strip_prefix("device_")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Every check of a scenario, in report order.
pub fn check_names(s: &Scenario) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in BUILTIN {
        match *name {
            "device_isolation" => {
                for i in 0..s.gpus.count {
                    out.push(format!("device_{i}"));
                }
                if s.gpus.count > 0 {
                    out.push("device_isolation".into());
                }
            }
            "device_all" | "restart_always" if s.gpus.count == 0 => {}
            "no_leftovers" => {
                out.extend(s.runs.iter().map(|r| r.name.clone()));
                out.push("no_leftovers".into());
            }
            other => out.push(other.to_string()),
        }
    }
    out
}

/// A check's verdict before the scenario's declared expectations are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Pass, fail or skip.
    pub status: Status,
    /// What was seen (for a skip: why).
    pub message: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Verdict {
    /// A pass.
    pub fn pass(message: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Pass,
            message: message.into(),
            fix: None,
        }
    }

    /// A failure with an optional fix.
    pub fn fail(message: impl Into<String>, fix: Option<String>) -> Verdict {
        Verdict {
            status: Status::Fail,
            message: message.into(),
            fix,
        }
    }

    /// A skip; the reason is mandatory.
    pub fn skip(reason: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Skip,
            message: reason.into(),
            fix: None,
        }
    }
}

/// One GPU as `nvidia-smi -L` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedGpu {
    /// The index nvidia-smi gives it (counted from 0 among the visible GPUs).
    pub index: u32,
    /// Model name.
    pub name: String,
    /// `GPU-…` UUID.
    pub uuid: String,
}

/// Parses `nvidia-smi -L` output: `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)`. MIG lines
/// (`  MIG 1g.10gb Device 0: (UUID: MIG-…)`) belong to the GPU above them and are not GPUs.
pub fn parse_nvidia_smi_list(text: &str) -> Vec<ListedGpu> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("GPU ") else {
            continue;
        };
        let Some((idx, rest)) = rest.split_once(':') else {
            continue;
        };
        let Ok(index) = idx.trim().parse() else {
            continue;
        };
        let Some((name, uuid)) = rest.rsplit_once("(UUID:") else {
            continue;
        };
        out.push(ListedGpu {
            index,
            name: name.trim().to_string(),
            uuid: uuid.trim().trim_end_matches(')').trim().to_string(),
        });
    }
    out
}

/// Everything the runner gathered for one scenario; the input of [`evaluate`].
#[derive(Debug, Default)]
pub struct Facts {
    /// The backend.
    pub backend: Option<BackendKind>,
    /// Spec dirs searched, in engine priority order.
    pub spec_dirs: Vec<PathBuf>,
    /// Where those dirs came from, for messages.
    pub spec_dirs_source: String,
    /// The specs as the engine would load them.
    pub registry: Option<Registry>,
    /// `GET /info`, or why it failed.
    pub info: Option<Result<EngineInfo, String>>,
    /// CLI `docker info`, or why it could not run (`Err`), or no CLI (`None`).
    pub cli: Option<Result<CliInfo, String>>,
    /// Container runs by check name (`device_all`, `device_0`, declared runs).
    pub runs: BTreeMap<String, Result<RunOutcome, String>>,
    /// Snapshot verdict, computed by the runner (it needs insta and the file system).
    pub snapshot: Option<Verdict>,
    /// Containers of this run still present after every check.
    pub leftovers: Option<Result<Vec<String>, String>>,
    /// The driver's GPUs (NVML on `host`, the simulated ones on `sim`) and the boot
    /// time, for the cross-checks `gpu_spec`, `gpu_containers` and `spec_fresh`.
    pub gpu: Option<crate::gpu::GpuFacts>,
    /// What the `restart_always` flow saw (only `sim` runs it).
    pub restart_always: Option<RestartOutcome>,
}

/// Why `restart_always` is skipped on `host`.
pub const RESTART_HOST_REASON: &str = "restarting the machine's own Docker engine is not something a check may do; run the sim backend, or restart docker yourself and see that such containers come back";

/// The fix for a `--restart always` CDI container that does not come back.
pub const RESTART_FIX: &str = "moby#49989 / nixpkgs#353059: upgrade Docker (on NixOS: update nixpkgs so virtualisation.docker.package has the fix); workaround until then: `sudo systemctl restart` the container's unit (e.g. docker-<name>.service of virtualisation.oci-containers) after docker is up, or `docker start <container>`";

/// What the `restart_always` flow saw: a container started with `--restart always`
/// and `--device nvidia.com/gpu=all`, the engine restarted, the container awaited.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartOutcome {
    /// The flow did not run; why (e.g. a rootless engine).
    NotRun(String),
    /// The container did not start, or did not list GPUs, before the restart.
    FirstStartFailed(String),
    /// The engine could not be restarted.
    EngineRestartFailed(String),
    /// Running again after the restart, with a new `nvidia-smi -L` listing.
    Back {
        /// The listing before the restart.
        before: Vec<ListedGpu>,
        /// The listing after it.
        after: Vec<ListedGpu>,
        /// From create until it ran and listed the GPUs.
        first_start: std::time::Duration,
        /// The engine's SIGTERM, exit, start and first `/_ping`.
        engine_restart: std::time::Duration,
        /// From the engine answering again until the container ran and listed GPUs.
        back_after: std::time::Duration,
    },
    /// Not running again (or without a new listing) within `waited` of the engine
    /// answering.
    NotBack {
        /// How long the harness waited.
        waited: std::time::Duration,
        /// Its state at the end.
        state: ContainerStateFacts,
        /// The last lines of its log.
        log: String,
    },
    /// An engine call failed during the flow.
    Error(String),
}

/// The verdict of `check` from the gathered facts.
pub fn evaluate(s: &Scenario, facts: &Facts, check: &str) -> Verdict {
    match check {
        "machine_config" => machine_config(s),
        "spec_present" => spec_present(s, facts),
        "spec_valid" => spec_valid(s, facts),
        "spec_devices" => spec_devices(s, facts),
        "gpu_spec" | "gpu_containers" | "spec_fresh" => gpu_cross_check(s, facts, check),
        "spec_snapshot" => facts
            .snapshot
            .clone()
            .unwrap_or_else(|| Verdict::skip("the snapshot was not taken in this run")),
        "info_spec_dirs" => info_spec_dirs(s, facts),
        "info_devices" => info_devices(s, facts),
        "info_warnings" => info_warnings(facts),
        "info_cli" => info_cli(s, facts),
        "daemon_runtimes" => daemon_runtimes(facts),
        "engine_mode" => engine_mode(s, facts),
        "device_all" => device_all(s, facts),
        "device_isolation" => device_isolation(s, facts),
        "restart_always" => restart_always(facts),
        "no_leftovers" => match &facts.leftovers {
            None => Verdict::skip("containers were not listed (the engine was not reached)"),
            Some(Err(e)) => {
                Verdict::fail(format!("could not list this run's containers: {e}"), None)
            }
            Some(Ok(ids)) if ids.is_empty() => Verdict::pass("no container of this run is left"),
            Some(Ok(ids)) => Verdict::fail(
                format!(
                    "{} container(s) of this run were still present: {}",
                    ids.len(),
                    ids.join(", ")
                ),
                Some("the harness removed them afterwards; report this as a harness bug".into()),
            ),
        },
        other => {
            if let Some(n) = other
                .strip_prefix("device_")
                .and_then(|n| n.parse::<u32>().ok())
            {
                return device_n(facts, n);
            }
            match s.runs.iter().find(|r| r.name == other) {
                Some(run) => declared_run(run, facts),
                None => Verdict::fail(format!("unknown check {other:?}"), None),
            }
        }
    }
}

/// The NVML cross-checks (see [`crate::gpu`]): skipped with the reason when the
/// inventory was not read or there is no NVML; never passed without it.
fn gpu_cross_check(s: &Scenario, facts: &Facts, check: &str) -> Verdict {
    let Some(g) = &facts.gpu else {
        return Verdict::skip("the GPU inventory was not read in this run");
    };
    let spec = the_spec(s, facts);
    match check {
        "spec_fresh" => {
            let mtime = spec
                .and_then(|l| std::fs::metadata(&l.path).ok())
                .and_then(|m| m.modified().ok());
            crate::gpu::check_spec_fresh(spec, mtime, g.boot_time, g.inventory.as_ref().ok())
        }
        "gpu_spec" => match g.need() {
            Ok(inv) => crate::gpu::check_spec_against(inv, spec),
            Err(v) => v,
        },
        _ => match g.need() {
            Ok(inv) => crate::gpu::check_containers(inv, &facts.runs),
            Err(v) => v,
        },
    }
}

/// Applies a scenario's declared expected failure on `sim`: the trial passes only when
/// the check fails and says what the scenario declares, so the harness's diagnosis of
/// a broken machine is itself what is tested. On `host` verdicts stand as they are.
pub fn apply_expectation(s: &Scenario, backend: BackendKind, check: &str, v: Verdict) -> Verdict {
    let Some(expected) = s.expected_failure(check) else {
        return v;
    };
    if backend != BackendKind::Sim {
        return v;
    }
    let text = format!("{}\n{}", v.message, v.fix.as_deref().unwrap_or(""));
    match v.status {
        Status::Skip | Status::Xfail | Status::New => v,
        Status::Pass => Verdict::fail(
            format!(
                "this scenario models a broken machine and declares that `{check}` must fail, but it passed: {}",
                v.message
            ),
            Some(
                "the harness no longer detects this breakage; see the scenario's [[expect.fail]]"
                    .into(),
            ),
        ),
        Status::Fail => {
            let missing: Vec<&String> = expected
                .message_contains
                .iter()
                .filter(|m| !text.contains(m.as_str()))
                .collect();
            if missing.is_empty() {
                Verdict::pass(format!("failed as the scenario declares: {}", v.message))
            } else {
                Verdict::fail(
                    format!(
                        "failed as declared, but the message lacks {}: {}",
                        missing
                            .iter()
                            .map(|m| format!("{m:?}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        v.message
                    ),
                    v.fix,
                )
            }
        }
    }
}

fn machine_config(s: &Scenario) -> Verdict {
    let pitfalls = s.facts.pitfalls();
    if pitfalls.is_empty() {
        return Verdict::pass(
            "hardware.nvidia-container-toolkit.enable = true and docker enabled, with no manual NVIDIA runtime",
        );
    }
    let message = pitfalls
        .iter()
        .map(|(p, _)| p.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let fix = pitfalls
        .iter()
        .map(|(_, f)| f.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Verdict::fail(message, Some(fix))
}

fn dirs_list(facts: &Facts) -> String {
    facts
        .spec_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spec file the scenario names, as loaded (the highest-priority copy).
fn the_spec<'a>(s: &Scenario, facts: &'a Facts) -> Option<&'a crate::cdi::LoadedSpec> {
    facts.registry.as_ref()?.spec_named(&s.spec_file)
}

fn spec_file_paths(s: &Scenario, facts: &Facts) -> Vec<PathBuf> {
    facts
        .spec_dirs
        .iter()
        .map(|d| d.join(&s.spec_file))
        .filter(|p| p.exists())
        .collect()
}

fn spec_present(s: &Scenario, facts: &Facts) -> Verdict {
    let found = spec_file_paths(s, facts);
    if let Some(p) = found.first() {
        let nvidia = facts
            .registry
            .as_ref()
            .map(|r| {
                r.devices
                    .keys()
                    .filter(|d| d.starts_with("nvidia.com/gpu="))
                    .count()
            })
            .unwrap_or(0);
        return Verdict::pass(format!(
            "{} exists; the engine resolves {nvidia} nvidia.com/gpu device(s)",
            p.display()
        ));
    }
    Verdict::fail(
        format!(
            "no CDI spec {} in the spec directories ({}; from {}): the generator did not run or failed",
            s.spec_file,
            dirs_list(facts),
            facts.spec_dirs_source
        ),
        Some(SPEC_MISSING_FIX.into()),
    )
}

fn notices_text(reg: &Registry) -> Vec<String> {
    reg.notices.iter().map(|n| n.to_string()).collect()
}

fn spec_valid(s: &Scenario, facts: &Facts) -> Verdict {
    let Some(reg) = facts.registry.as_ref() else {
        return Verdict::skip("the spec directories were not read");
    };
    let mut problems = Vec::new();
    for n in &reg.notices {
        match n {
            // The engine uses the winner silently / skips the file by design: a note, not a fault.
            Notice::Shadowed { .. } | Notice::Ignored { .. } => {}
            other => problems.push(other.to_string()),
        }
    }
    match the_spec(s, facts) {
        Some(loaded) => {
            for p in crate::cdi::validate(&loaded.spec) {
                problems.push(format!("{}: {p}", loaded.path.display()));
            }
        }
        None => {
            let present = spec_file_paths(s, facts);
            if present.is_empty() {
                return Verdict::fail(
                    format!(
                        "there is no {} to validate (spec dirs: {})",
                        s.spec_file,
                        dirs_list(facts)
                    ),
                    Some(SPEC_MISSING_FIX.into()),
                );
            }
        }
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        let shadowed: Vec<String> = reg
            .notices
            .iter()
            .filter(|n| matches!(n, Notice::Shadowed { .. } | Notice::Ignored { .. }))
            .map(|n| n.to_string())
            .collect();
        let mut msg = format!("{} spec file(s) load and validate", reg.specs.len());
        if !shadowed.is_empty() {
            msg.push_str(&format!(" (note: {})", shadowed.join("; ")));
        }
        return Verdict::pass(msg);
    }
    let conflict = reg
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Conflict { .. }));
    let fix = if conflict {
        "remove the stale hand-made spec (NixOS generates /run/cdi/nvidia-container-toolkit.json at boot; a leftover /etc/cdi/nvidia.yaml from `nvidia-ctk cdi generate` conflicts with it), then check `docker info` again"
    } else {
        "regenerate the spec: sudo systemctl restart nvidia-container-toolkit-cdi-generator; remove spec files you wrote by hand"
    };
    Verdict::fail(problems.join("; "), Some(fix.into()))
}

fn expected_set(s: &Scenario) -> BTreeSet<String> {
    s.expected_devices.iter().map(|d| d.to_string()).collect()
}

fn set_diff(expected: &BTreeSet<String>, actual: &BTreeSet<String>) -> String {
    let missing: Vec<&String> = expected.difference(actual).collect();
    let extra: Vec<&String> = actual.difference(expected).collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "missing {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !extra.is_empty() {
        parts.push(format!(
            "unexpected {}",
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    parts.join("; ")
}

/// The devices of the scenario's kinds among a list of names, against the expected set:
/// what `spec_devices` (from the spec files) and `info_devices` (from the engine) compare.
struct DeviceComparison {
    actual: BTreeSet<String>,
    expected: BTreeSet<String>,
    /// UUID-named aliases (`nvidia.com/gpu=GPU-…`, as nvidia-ctk's `uuid` naming adds):
    /// not wrong, not expected, reported beside the verdict.
    aliases: BTreeSet<String>,
}

impl DeviceComparison {
    fn new<'a>(s: &Scenario, names: impl IntoIterator<Item = &'a String>) -> DeviceComparison {
        let prefixes: BTreeSet<String> = s
            .expected_devices
            .iter()
            .map(|d| format!("{}=", d.kind()))
            .collect();
        let expected = expected_set(s);
        let (aliases, actual): (BTreeSet<String>, BTreeSet<String>) = names
            .into_iter()
            .filter(|d| prefixes.iter().any(|p| d.starts_with(p.as_str())))
            .cloned()
            .partition(|d| !expected.contains(d) && is_uuid_alias(d));
        DeviceComparison {
            actual,
            expected,
            aliases,
        }
    }

    /// " (also by UUID: …)" when the names include UUID aliases.
    fn alias_note(&self) -> String {
        if self.aliases.is_empty() {
            String::new()
        } else {
            format!(" (also by UUID: {})", join(&self.aliases))
        }
    }

    fn matches(&self) -> bool {
        self.actual == self.expected
    }

    /// "<actual> instead of <expected>: missing …; unexpected …"
    fn describe(&self, none: &str) -> String {
        let actual = if self.actual.is_empty() {
            none.to_string()
        } else {
            join(&self.actual)
        };
        format!(
            "{actual} instead of {}: {}",
            join(&self.expected),
            set_diff(&self.expected, &self.actual)
        )
    }
}

/// Whether a device name is a GPU or MIG UUID (`nvidia.com/gpu=GPU-…`).
fn is_uuid_alias(device: &str) -> bool {
    device
        .split_once('=')
        .is_some_and(|(_, name)| name.starts_with("GPU-") || name.starts_with("MIG-"))
}

fn spec_devices(s: &Scenario, facts: &Facts) -> Verdict {
    let Some(reg) = facts.registry.as_ref() else {
        return Verdict::skip("the spec directories were not read");
    };
    let cmp = DeviceComparison::new(s, reg.devices.keys());
    if cmp.matches() {
        return Verdict::pass(format!(
            "the engine resolves exactly {}{}",
            join(&cmp.actual),
            cmp.alias_note()
        ));
    }
    let mut msg = format!("the spec directories resolve {}", cmp.describe("no device"));
    let notes = notices_text(reg);
    if !notes.is_empty() {
        msg.push_str(&format!(" (because: {})", notes.join("; ")));
    }
    let fix = if reg
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Conflict { .. }))
    {
        "remove the stale spec file named above; the engine drops devices that two spec files in one directory define"
    } else if cmp.actual.is_empty() {
        SPEC_MISSING_FIX
    } else {
        "regenerate the spec (sudo systemctl restart nvidia-container-toolkit-cdi-generator) and check gpus.count in the scenario"
    };
    Verdict::fail(msg, Some(fix.into()))
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn with_info(facts: &Facts) -> Result<&EngineInfo, Verdict> {
    match &facts.info {
        None => Err(Verdict::skip("the engine was not queried")),
        Some(Err(e)) => Err(Verdict::fail(format!("`docker info` failed: {e}"), None)),
        Some(Ok(i)) => Ok(i),
    }
}

fn info_spec_dirs(s: &Scenario, facts: &Facts) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    if info.cdi_spec_dirs.is_empty() {
        return Verdict::fail(
            format!(
                "engine {} reports no CDI spec directories: CDI is off, so `--device nvidia.com/gpu=…` fails with `could not select device driver \"cdi\"`",
                info.server_version
            ),
            Some("CDI needs docker >= 25 with features.cdi = true; hardware.nvidia-container-toolkit.enable = true sets it (remove any features.cdi = false), then sudo systemctl restart docker".into()),
        );
    }
    let dirs = info.cdi_spec_dirs.join(", ");
    match spec_file_paths(s, facts).first() {
        Some(p) => {
            let covered = info
                .cdi_spec_dirs
                .iter()
                .any(|d| p.parent().is_some_and(|pp| same_dir(pp, Path::new(d))));
            if covered {
                Verdict::pass(format!(
                    "CDI spec directories: {dirs} (holding {})",
                    p.display()
                ))
            } else {
                Verdict::fail(
                    format!("the engine reads CDI specs from {dirs}, which does not hold {}", p.display()),
                    Some("put the spec where the engine looks, or add its directory to cdi-spec-dirs".into()),
                )
            }
        }
        None => Verdict::pass(format!("CDI spec directories: {dirs}")),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

fn conflict_explanation(info: &EngineInfo) -> String {
    let w = info.cdi_warnings();
    if w.is_empty() {
        String::new()
    } else {
        format!(" (the engine's warnings: {})", w.join(" | "))
    }
}

fn info_devices(s: &Scenario, facts: &Facts) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let Some(found) = &info.discovered_devices else {
        return Verdict::skip(format!(
            "engine {} does not list discovered CDI devices (engines older than 28.2 have no `Discovered Devices`)",
            info.server_version
        ));
    };
    let cmp = DeviceComparison::new(s, found);
    if cmp.matches() {
        return Verdict::pass(format!(
            "docker info discovers {}{}",
            join(&cmp.actual),
            cmp.alias_note()
        ));
    }
    let mut msg = format!("docker info discovers {}", cmp.describe("no NVIDIA device"));
    msg.push_str(&conflict_explanation(info));
    let fix = if !info.cdi_warnings().is_empty() {
        "fix or remove the spec files the warnings name, then check `docker info` again"
    } else {
        SPEC_MISSING_FIX
    };
    Verdict::fail(msg, Some(fix.into()))
}

fn info_warnings(facts: &Facts) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let w = info.cdi_warnings();
    if w.is_empty() {
        // Measured: engine 26.1 loads the same conflicting specs silently, 28.5 reports
        // them; an engine that cannot report a problem must not pass for not reporting it.
        if info.version().is_some_and(|v| v < (28, 2)) {
            return Verdict::skip(format!(
                "engine {} does not report refused CDI spec files in `docker info` (engines older than 28.2 load them silently)",
                info.server_version
            ));
        }
        return Verdict::pass("the engine reports no CDI warnings");
    }
    Verdict::fail(
        format!("the engine refused CDI spec files: {}", w.join(" | ")),
        Some("fix or remove the spec files named; a stale second NVIDIA spec beside the generated one makes the engine drop the devices both define".into()),
    )
}

fn info_cli(s: &Scenario, facts: &Facts) -> Verdict {
    let cli = match &facts.cli {
        None => return Verdict::skip("no `docker` CLI on PATH (pass --docker-cli)"),
        Some(Err(e)) => return Verdict::fail(format!("`docker info` failed: {e}"), None),
        Some(Ok(c)) => c,
    };
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let mut problems = Vec::new();
    if cli.spec_dirs != info.cdi_spec_dirs {
        problems.push(format!(
            "`CDI spec directories:` shows [{}] but the API says [{}]",
            cli.spec_dirs.join(", "),
            info.cdi_spec_dirs.join(", ")
        ));
    }
    let Some(api) = &info.discovered_devices else {
        if problems.is_empty() {
            return Verdict::skip(format!(
                "engine {} lists no discovered devices, so the `cdi: nvidia.com/gpu=…` lines the seed greps for cannot appear (the CDI spec directories the CLI shows do match the API)",
                info.server_version
            ));
        }
        return Verdict::fail(problems.join("; "), None);
    };
    // Engine 28 prints no `Discovered Devices:` section when it discovered nothing.
    {
        let c: BTreeSet<&String> = cli.devices.iter().flatten().collect();
        let a: BTreeSet<&String> = api.iter().collect();
        if c != a {
            problems.push("the `cdi:` lines differ from the API's discovered devices".to_string());
        }
        for d in &s.expected_devices {
            let d = d.to_string();
            if !c.contains(&d) {
                problems.push(format!(
                    "no line `cdi: {d}` (the seed's troubleshooting expects it)"
                ));
            }
        }
    }
    if problems.is_empty() {
        Verdict::pass(format!(
            "`docker info | grep -i cdi` shows: {}",
            cli.grep_lines
                .iter()
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" / ")
        ))
    } else {
        Verdict::fail(
            format!(
                "{}; grep -i cdi shows: {}",
                problems.join("; "),
                cli.grep_lines
                    .iter()
                    .map(|l| l.trim())
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
            Some(SPEC_MISSING_FIX.into()),
        )
    }
}

fn daemon_runtimes(facts: &Facts) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let nvidia: Vec<String> = info
        .runtimes
        .iter()
        .filter(|(n, p)| n.contains("nvidia") || p.contains("nvidia"))
        .map(|(n, p)| format!("{n} ({})", if p.is_empty() { "no path" } else { p }))
        .collect();
    let names: Vec<&str> = info.runtimes.iter().map(|(n, _)| n.as_str()).collect();
    let mut problems = Vec::new();
    if !nvidia.is_empty() {
        problems.push(format!(
            "docker info lists a manual NVIDIA runtime: {}: this is the daemon.settings.runtimes / pkgs.nvidia-docker pitfall that breaks after `nix flake update`",
            nvidia.join(", ")
        ));
    }
    if info.default_runtime.contains("nvidia") {
        problems.push(format!("the default runtime is {}", info.default_runtime));
    }
    if problems.is_empty() {
        return Verdict::pass(format!(
            "runtimes: {} (no manual NVIDIA runtime)",
            names.join(" ")
        ));
    }
    Verdict::fail(
        problems.join("; "),
        Some("remove virtualisation.docker.daemon.settings.runtimes and any pkgs.nvidia-docker; rely solely on hardware.nvidia-container-toolkit.enable = true and use --device nvidia.com/gpu=all".into()),
    )
}

/// The engine the checks reach must be the one the machine's users get by default:
/// the rootless one when `rootless.setSocketVariable = true`, else the rootful one.
fn engine_mode(s: &Scenario, facts: &Facts) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let mode = |rootless: bool| if rootless { "rootless" } else { "rootful" };
    if info.rootless == s.facts.rootless_default {
        return Verdict::pass(format!(
            "the engine is {}, as the machine's default Docker is",
            mode(info.rootless)
        ));
    }
    let fix = if s.facts.rootless_default {
        "point DOCKER_HOST at the rootless socket ($XDG_RUNTIME_DIR/docker.sock), as setSocketVariable = true does at login"
    } else {
        "unset DOCKER_HOST (or point it at /var/run/docker.sock): with setSocketVariable = false the rootful engine is the default"
    };
    Verdict::fail(
        format!(
            "the engine reached is {} but this machine's default Docker is {}",
            mode(info.rootless),
            mode(s.facts.rootless_default)
        ),
        Some(fix.into()),
    )
}

/// A fix hint for the engine errors users meet with CDI.
pub fn hint_for(message: &str) -> Option<String> {
    let m = message;
    let hint = if m.contains("unresolvable CDI devices") {
        "the engine does not know this device: check `docker info` (Discovered Devices and warnings); a stale second spec or a missing spec causes this — sudo systemctl restart nvidia-container-toolkit-cdi-generator"
    } else if m.contains(r#"could not select device driver "cdi""#) {
        "CDI is off in the engine: features.cdi must be true (hardware.nvidia-container-toolkit.enable sets it for docker >= 25); then sudo systemctl restart docker"
    } else if m.contains(r#"could not select device driver """#) {
        "`--gpus` needs the legacy NVIDIA runtime hook, which NixOS's CDI setup does not install: use --device nvidia.com/gpu=all"
    } else if m.contains("error running hook")
        || m.contains("error executing hook")
        || m.contains("nvidia-cdi-hook")
    {
        // nixpkgs#411150. runc: `error running hook #0: error running hook: exit status 1,
        // stdout: , stderr: …`; crun and nvidia-container-runtime name the hook's path.
        "a CDI hook (nvidia-cdi-hook, from the spec's containerEdits.hooks) failed at container start: the spec no longer matches the driver or the toolkit (nixpkgs#411150) — regenerate it: sudo systemctl restart nvidia-container-toolkit-cdi-generator; if it persists, update nixpkgs (nvidia-container-toolkit) and check `journalctl -u nvidia-container-toolkit-cdi-generator`"
    } else if m.contains("error mounting") && m.contains("no such file or directory") {
        // nixpkgs#319201: runc `error mounting "<hostPath>" to rootfs at "<path>": stat
        // <hostPath>: no such file or directory` — a driver file of the old driver.
        "a mount in the CDI spec names a host file that is gone: the spec was generated for a driver that is no longer installed (nixpkgs#319201) — regenerate it: sudo systemctl restart nvidia-container-toolkit-cdi-generator (a reboot after a driver update does the same)"
    } else if m.contains("failed to stat CDI host device")
        || m.contains("error creating device nodes")
    {
        "the spec names a device node that does not exist on the host: the spec is stale (driver changed or GPU gone) — sudo systemctl restart nvidia-container-toolkit-cdi-generator"
    } else if m.contains("executable file not found") && m.contains("nvidia") {
        "a manual NVIDIA runtime points at a binary that is gone (typical after `nix flake update`): remove daemon.settings.runtimes and use --device nvidia.com/gpu=all"
    } else if m.contains("No such image") || m.contains("not found: manifest unknown") {
        "load the image first: docker pull IMAGE, or docker load -i IMAGE.tar on an offline machine"
    } else {
        return None;
    };
    Some(hint.to_string())
}

fn run_of<'a>(facts: &'a Facts, check: &str) -> Result<&'a RunOutcome, Verdict> {
    match facts.runs.get(check) {
        None => Err(Verdict::skip(
            "the container was not run (the engine or the image was not available; see the other checks)",
        )),
        Some(Err(e)) => Err(Verdict::fail(e.clone(), hint_for(e))),
        Some(Ok(o)) => Ok(o),
    }
}

/// A container that had to run nvidia-smi: its listing, or the failing verdict.
fn smi_listing(facts: &Facts, check: &str, device: &str) -> Result<Vec<ListedGpu>, Verdict> {
    match run_of(facts, check)? {
        RunOutcome::Refused { message } => Err(Verdict::fail(
            format!("`docker run --device {device} … nvidia-smi -L` was refused: {message}"),
            hint_for(message),
        )),
        RunOutcome::Exited { exit_code, stdout, stderr } if *exit_code != 0 => Err(Verdict::fail(
            format!(
                "`nvidia-smi -L` with --device {device} exited {exit_code}: {}",
                first_lines(&format!("{stdout}{stderr}"), 3)
            ),
            Some("the container got the device but nvidia-smi could not use it: check that the spec matches the loaded driver (sudo systemctl restart nvidia-container-toolkit-cdi-generator)".into()),
        )),
        RunOutcome::Exited { stdout, .. } => Ok(parse_nvidia_smi_list(stdout)),
    }
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn device_all(s: &Scenario, facts: &Facts) -> Verdict {
    let gpus = match smi_listing(facts, "device_all", "nvidia.com/gpu=all") {
        Ok(g) => g,
        Err(v) => return v,
    };
    let uuids: BTreeSet<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    if gpus.len() as u32 != s.gpus.count || uuids.len() != gpus.len() {
        return Verdict::fail(
            format!(
                "nvidia-smi -L inside --device nvidia.com/gpu=all lists {} GPU(s) ({} distinct UUIDs); the machine has {}",
                gpus.len(),
                uuids.len(),
                s.gpus.count
            ),
            Some("the `all` device of the spec does not cover every GPU: regenerate the spec (sudo systemctl restart nvidia-container-toolkit-cdi-generator)".into()),
        );
    }
    Verdict::pass(format!(
        "nvidia-smi exits 0 and lists {} GPU(s): {}",
        gpus.len(),
        gpus.iter()
            .map(|g| g.uuid.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn device_n(facts: &Facts, n: u32) -> Verdict {
    let check = format!("device_{n}");
    let device = format!("nvidia.com/gpu={n}");
    let gpus = match smi_listing(facts, &check, &device) {
        Ok(g) => g,
        Err(v) => return v,
    };
    match gpus.as_slice() {
        [one] if one.index == 0 => Verdict::pass(format!("sees exactly one GPU, {} ({})", one.uuid, one.name)),
        [one] => Verdict::fail(
            format!("sees one GPU but numbered {} (a single visible GPU is always GPU 0)", one.index),
            None,
        ),
        many => Verdict::fail(
            format!(
                "--device {device} sees {} GPUs ({}): the device is not isolated",
                many.len(),
                many.iter().map(|g| g.uuid.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Some("the spec's per-GPU device injects more than its own /dev/nvidiaN: regenerate the spec".into()),
        ),
    }
}

fn restart_always(facts: &Facts) -> Verdict {
    if facts.backend == Some(BackendKind::Host) {
        return Verdict::skip(RESTART_HOST_REASON);
    }
    let uuids =
        |l: &[ListedGpu]| -> BTreeSet<String> { l.iter().map(|g| g.uuid.clone()).collect() };
    match &facts.restart_always {
        None => Verdict::skip("the engine restart was not attempted in this run"),
        Some(RestartOutcome::NotRun(why)) => Verdict::skip(why.clone()),
        Some(RestartOutcome::FirstStartFailed(why)) => Verdict::skip(format!(
            "the `--restart always --device nvidia.com/gpu=all` container did not run before the engine restart, so whether it comes back cannot be told (device_all says why): {why}"
        )),
        Some(RestartOutcome::EngineRestartFailed(why)) => {
            Verdict::fail(format!("the engine could not be restarted: {why}"), None)
        }
        Some(RestartOutcome::Error(e)) => Verdict::fail(
            format!("the restart check could not finish: {e}"),
            hint_for(e),
        ),
        Some(RestartOutcome::Back {
            before,
            after,
            first_start,
            engine_restart,
            back_after,
        }) => {
            if uuids(before) == uuids(after) && !after.is_empty() {
                Verdict::pass(format!(
                    "the `--restart always` container with --device nvidia.com/gpu=all ran again {back_after:.1?} after the engine restart ({engine_restart:.1?}) and lists the same {} GPU(s) (first start {first_start:.1?})",
                    after.len()
                ))
            } else {
                Verdict::fail(
                    format!(
                        "the `--restart always` container came back after the engine restart but lists {} GPU(s) ({}) instead of {} ({})",
                        after.len(),
                        after
                            .iter()
                            .map(|g| g.uuid.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        before.len(),
                        before
                            .iter()
                            .map(|g| g.uuid.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(RESTART_FIX.into()),
                )
            }
        }
        Some(RestartOutcome::NotBack { waited, state, log }) => {
            let mut message = format!(
                "the `--restart always` container with --device nvidia.com/gpu=all was not running again with its GPUs {waited:.1?} after the engine restarted: state {}{}, exit code {}, restarts {}",
                if state.status.is_empty() {
                    "unknown"
                } else {
                    state.status.as_str()
                },
                if state.running {
                    " (but no new nvidia-smi -L listing)"
                } else {
                    ""
                },
                state.exit_code,
                state.restart_count
            );
            if !state.error.is_empty() {
                message.push_str(&format!(", error: {}", state.error));
            }
            let tail = first_lines(&last_lines_of(log, 3), 3);
            if !tail.is_empty() {
                message.push_str(&format!("; its log ends: {tail}"));
            }
            // The container ran with its GPUs before the restart, so CDI was on then: a
            // CDI error now means the engine restored the container before its CDI
            // driver or cache was ready. Measured: engine 26.1 fails so with
            // `could not select device driver "cdi"`, engine 28.5 brings it back.
            let after_restart_cdi_error = state.error.contains("unresolvable CDI devices")
                || state
                    .error
                    .contains(r#"could not select device driver "cdi""#);
            let fix = match hint_for(&state.error) {
                Some(_) if after_restart_cdi_error => format!(
                    "the container had its GPUs before the engine restarted, and the restarted engine could not give them back: this is {RESTART_FIX}"
                ),
                Some(h) => {
                    format!("{h}; if it only happens after an engine restart: {RESTART_FIX}")
                }
                None => RESTART_FIX.to_string(),
            };
            Verdict::fail(message, Some(fix))
        }
    }
}

fn last_lines_of(s: &str, n: usize) -> String {
    let all: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

fn device_isolation(s: &Scenario, facts: &Facts) -> Verdict {
    let all = match smi_listing(facts, "device_all", "nvidia.com/gpu=all") {
        Ok(g) => g,
        Err(_) => {
            return Verdict::skip("device_all did not list GPUs, so isolation cannot be compared");
        }
    };
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for n in 0..s.gpus.count {
        match smi_listing(
            facts,
            &format!("device_{n}"),
            &format!("nvidia.com/gpu={n}"),
        ) {
            Ok(g) if g.len() == 1 => {
                if let Some(prev) = seen.insert(g[0].uuid.clone(), n) {
                    return Verdict::fail(
                        format!(
                            "nvidia.com/gpu={prev} and nvidia.com/gpu={n} both give GPU {}",
                            g[0].uuid
                        ),
                        Some("two device names map to one GPU: regenerate the spec".into()),
                    );
                }
            }
            _ => {
                return Verdict::skip(format!(
                    "device_{n} did not see exactly one GPU, so isolation cannot be compared"
                ));
            }
        }
    }
    let singles: BTreeSet<&String> = seen.keys().collect();
    let all_set: BTreeSet<&String> = all.iter().map(|g| &g.uuid).collect();
    if singles != all_set {
        return Verdict::fail(
            format!(
                "the single-GPU devices give {{{}}} but `all` gives {{{}}}",
                singles
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                all_set
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(
                "the spec's `all` device and its per-GPU devices disagree: regenerate the spec"
                    .into(),
            ),
        );
    }
    Verdict::pass(format!(
        "each of the {} single-GPU devices sees a different GPU, and together exactly the GPUs of `all`",
        s.gpus.count
    ))
}

fn describe_run(run: &RunSpec) -> String {
    let mut parts = vec!["docker run".to_string()];
    for d in &run.devices {
        parts.push(format!("--device {d}"));
    }
    if let Some(g) = &run.gpus {
        parts.push(format!("--gpus {g}"));
    }
    if let Some(r) = &run.runtime {
        parts.push(format!("--runtime {r}"));
    }
    parts.push("IMAGE".into());
    parts.extend(run.command.iter().cloned());
    parts.join(" ")
}

fn declared_run(run: &RunSpec, facts: &Facts) -> Verdict {
    let outcome = match run_of(facts, &run.name) {
        Ok(o) => o,
        Err(v) => return v,
    };
    let cmd = describe_run(run);
    match (run.expect, outcome) {
        (
            Expectation::Success,
            RunOutcome::Exited {
                exit_code: 0,
                stdout,
                stderr,
            },
        ) => {
            let text = format!("{stdout}{stderr}");
            let missing: Vec<&String> = run
                .stdout_contains
                .iter()
                .filter(|m| !text.contains(m.as_str()))
                .collect();
            if missing.is_empty() {
                Verdict::pass(format!("`{cmd}` exits 0: {}", first_lines(stdout, 2)))
            } else {
                Verdict::fail(
                    format!(
                        "`{cmd}` exits 0 but its output lacks {missing:?}: {}",
                        first_lines(&text, 3)
                    ),
                    None,
                )
            }
        }
        (
            Expectation::Success,
            RunOutcome::Exited {
                exit_code,
                stdout,
                stderr,
            },
        ) => Verdict::fail(
            format!(
                "`{cmd}` exited {exit_code}: {}",
                first_lines(&format!("{stdout}{stderr}"), 3)
            ),
            hint_for(&format!("{stdout}{stderr}")),
        ),
        (Expectation::Success, RunOutcome::Refused { message }) => {
            Verdict::fail(format!("`{cmd}` was refused: {message}"), hint_for(message))
        }
        (Expectation::Failure, RunOutcome::Refused { message }) => {
            let exact_ok = run
                .error
                .as_ref()
                .is_none_or(|e| message.trim() == e.trim());
            let contains_ok = run
                .error_contains
                .as_ref()
                .is_none_or(|e| message.contains(e.as_str()));
            if exact_ok && contains_ok {
                let mut msg = format!("`{cmd}` fails as expected: {message}");
                if let Some(h) = hint_for(message) {
                    msg.push_str(&format!(" ({h})"));
                }
                Verdict::pass(msg)
            } else {
                Verdict::fail(
                    format!(
                        "`{cmd}` fails, but with a different error: got {message:?}, expected {:?}",
                        run.error.as_ref().or(run.error_contains.as_ref()).map(|s| s.as_str()).unwrap_or_default()
                    ),
                    Some("the engine's behaviour changed; update the scenario's expected error if the new one is right".into()),
                )
            }
        }
        (
            Expectation::Failure,
            RunOutcome::Exited {
                exit_code,
                stdout,
                stderr,
            },
        ) if *exit_code != 0 => {
            let text = format!("{stdout}{stderr}");
            match &run.error_contains {
                Some(e) if run.error.is_none() && text.contains(e.as_str()) => {
                    Verdict::pass(format!(
                        "`{cmd}` fails as expected (exit {exit_code}): {}",
                        first_lines(&text, 2)
                    ))
                }
                _ => Verdict::fail(
                    format!(
                        "`{cmd}` started and exited {exit_code} instead of being refused with {:?}: {}",
                        run.error
                            .as_ref()
                            .or(run.error_contains.as_ref())
                            .map(|s| s.as_str())
                            .unwrap_or_default(),
                        first_lines(&text, 3)
                    ),
                    None,
                ),
            }
        }
        (Expectation::Failure, RunOutcome::Exited { stdout, .. }) => {
            let mut msg = format!(
                "changed behaviour: `{cmd}` was expected to fail but now succeeds ({})",
                first_lines(stdout, 2)
            );
            if run.gpus.is_some() {
                msg.push_str(
                    "; moby maps --gpus to CDI through its `nvidia.cdi` device driver when `nvidia-cdi-hook` is on dockerd's PATH, so after an update --gpus can work: confirm that this is intended and change the scenario's expectation",
                );
            }
            if let Some(why) = &run.why {
                msg.push_str(&format!(" (the scenario expected failure because: {why})"));
            }
            Verdict::fail(
                msg,
                Some(
                    "if the new behaviour is right, set expect = \"success\" in the scenario"
                        .into(),
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn scenario(gpus: u32) -> Scenario {
        let text = format!(
            "description = \"t\"\n[machine.virtualisation.docker]\nenable = true\n[machine.hardware.nvidia-container-toolkit]\nenable = true\n[gpus]\ncount = {gpus}\n\n[[run]]\nname = \"gpus_flag\"\ngpus = \"all\"\nexpect = \"failure\"\nerror = 'could not select device driver \"\" with capabilities: [[gpu]]'\n"
        );
        crate::scenario::parse(Path::new("t.toml"), &text).expect("test scenario parses")
    }

    /// The engine's answers for the known regressions, verbatim (engine 28.5.2 with
    /// containerd 2.1.9 and runc, measured by hand against a private engine).
    const CDI_OFF_ERROR: &str = r#"could not select device driver "cdi" with capabilities: []"#;
    const STALE_MOUNT_ERROR: &str = r#"failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting "/nix/store/00000000000000000000000000000000-nvidia-x11-570.00/lib/libcuda.so.1" to rootfs at "/usr/lib/libcuda.so.1": stat /nix/store/00000000000000000000000000000000-nvidia-x11-570.00/lib/libcuda.so.1: no such file or directory"#;
    const FAILING_HOOK_ERROR: &str = "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error running hook #0: error running hook: exit status 1, stdout: , stderr: error running create-symlinks hook: failed to create link [libcuda.so.1 /usr/lib/libcuda.so]: no such file or directory (simulated by cdi-harness)";

    #[rstest]
    #[case::cdi_off_305312(CDI_OFF_ERROR, &["features.cdi", "hardware.nvidia-container-toolkit.enable", "sudo systemctl restart docker"])]
    #[case::stale_mount_319201(STALE_MOUNT_ERROR, &["nixpkgs#319201", "sudo systemctl restart nvidia-container-toolkit-cdi-generator"])]
    #[case::failing_hook_411150(FAILING_HOOK_ERROR, &["nixpkgs#411150", "nvidia-cdi-hook", "sudo systemctl restart nvidia-container-toolkit-cdi-generator"])]
    #[case::hook_by_path("error executing hook `/nix/store/x-nvidia-container-toolkit-1.17.6-tools/bin/nvidia-cdi-hook` (exit code: 1)", &["nixpkgs#411150"])]
    fn known_regressions_get_their_fix(#[case] error: &str, #[case] wanted: &[&str]) {
        let hint = hint_for(error).unwrap_or_default();
        for w in wanted {
            assert!(hint.contains(w), "hint for {error:?} lacks {w:?}: {hint:?}");
        }
    }

    #[test]
    fn a_missing_device_node_is_not_taken_for_a_missing_mount() {
        let hint = hint_for(r#"CDI device injection failed: failed to inject devices: failed to stat CDI host device "/dev/nvidiactl": no such file or directory"#).unwrap_or_default();
        assert!(hint.contains("device node"), "{hint}");
        assert!(!hint.contains("nixpkgs#319201"), "{hint}");
    }

    fn smi(lines: &[(u32, &str)]) -> Result<RunOutcome, String> {
        let stdout = lines
            .iter()
            .map(|(i, u)| format!("GPU {i}: NVIDIA H100 80GB HBM3 (UUID: {u})\n"))
            .collect::<String>();
        Ok(RunOutcome::Exited {
            exit_code: 0,
            stdout,
            stderr: String::new(),
        })
    }

    #[test]
    fn parses_real_nvidia_smi_list_with_mig() {
        let text = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5c1d8a3e-2f7a-4b0e-9c1d-0a1b2c3d4e5f)\n  MIG 1g.5gb      Device  0: (UUID: MIG-0e3b9c1a-aaaa-bbbb-cccc-123456789abc)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-6d2e9b4f-3a8b-4c1f-8d2e-1b2c3d4e5f60)\n";
        let g = parse_nvidia_smi_list(text);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].index, 1);
        assert_eq!(g[1].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(g[0].uuid, "GPU-5c1d8a3e-2f7a-4b0e-9c1d-0a1b2c3d4e5f");
    }

    #[test]
    fn isolation_passes_when_each_device_sees_its_own_gpu() {
        let s = scenario(2);
        let mut f = Facts::default();
        f.runs
            .insert("device_all".into(), smi(&[(0, "GPU-a"), (1, "GPU-b")]));
        f.runs.insert("device_0".into(), smi(&[(0, "GPU-a")]));
        f.runs.insert("device_1".into(), smi(&[(0, "GPU-b")]));
        assert_eq!(evaluate(&s, &f, "device_all").status, Status::Pass);
        assert_eq!(evaluate(&s, &f, "device_1").status, Status::Pass);
        assert_eq!(evaluate(&s, &f, "device_isolation").status, Status::Pass);
    }

    #[rstest]
    #[case::same_gpu_twice(&[(0, "GPU-a")], &[(0, "GPU-a")], "both give")]
    #[case::outside_all(&[(0, "GPU-a")], &[(0, "GPU-c")], "single-GPU devices give")]
    fn isolation_fails(
        #[case] d0: &[(u32, &str)],
        #[case] d1: &[(u32, &str)],
        #[case] needle: &str,
    ) {
        let s = scenario(2);
        let mut f = Facts::default();
        f.runs
            .insert("device_all".into(), smi(&[(0, "GPU-a"), (1, "GPU-b")]));
        f.runs.insert("device_0".into(), smi(d0));
        f.runs.insert("device_1".into(), smi(d1));
        let v = evaluate(&s, &f, "device_isolation");
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains(needle), "{}", v.message);
    }

    #[test]
    fn single_device_seeing_two_gpus_fails() {
        let s = scenario(2);
        let mut f = Facts::default();
        f.runs
            .insert("device_0".into(), smi(&[(0, "GPU-a"), (1, "GPU-b")]));
        let v = evaluate(&s, &f, "device_0");
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains("not isolated"));
    }

    #[test]
    fn gpus_flag_expected_error_passes_and_success_is_changed_behaviour() {
        let s = scenario(1);
        let mut f = Facts::default();
        f.runs.insert(
            "gpus_flag".into(),
            Ok(RunOutcome::Refused {
                message: crate::scenario::GPUS_FLAG_ERROR.into(),
            }),
        );
        assert_eq!(evaluate(&s, &f, "gpus_flag").status, Status::Pass);
        f.runs.insert("gpus_flag".into(), smi(&[(0, "GPU-a")]));
        let v = evaluate(&s, &f, "gpus_flag");
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.starts_with("changed behaviour"));
        assert!(v.message.contains("nvidia.cdi"));
        f.runs.insert(
            "gpus_flag".into(),
            Ok(RunOutcome::Refused {
                message: "something else".into(),
            }),
        );
        assert!(
            evaluate(&s, &f, "gpus_flag")
                .message
                .contains("different error")
        );
    }

    #[test]
    fn old_engine_skips_discovered_devices_with_reason() {
        let s = scenario(1);
        let f = Facts {
            info: Some(Ok(EngineInfo {
                server_version: "26.1.5".into(),
                cdi_spec_dirs: vec!["/etc/cdi".into()],
                discovered_devices: None,
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = evaluate(&s, &f, "info_devices");
        assert_eq!(v.status, Status::Skip);
        assert!(v.message.contains("older than 28.2"));
    }

    #[test]
    fn cdi_off_is_reported_with_fix() {
        let s = scenario(1);
        let f = Facts {
            info: Some(Ok(EngineInfo {
                server_version: "28.5.2".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = evaluate(&s, &f, "info_spec_dirs");
        assert_eq!(v.status, Status::Fail);
        assert!(v.fix.as_deref().is_some_and(|f| f.contains("features.cdi")));
    }

    #[test]
    fn manual_runtime_in_engine_is_the_pitfall() {
        let f = Facts {
            info: Some(Ok(EngineInfo {
                server_version: "28.5.2".into(),
                runtimes: vec![
                    ("nvidia".into(), "nvidia-container-runtime".into()),
                    ("runc".into(), "runc".into()),
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = evaluate(&scenario(1), &f, "daemon_runtimes");
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains("nvidia (nvidia-container-runtime)"));
        assert!(
            v.fix
                .as_deref()
                .is_some_and(|f| f.contains("hardware.nvidia-container-toolkit.enable = true"))
        );
    }

    #[test]
    fn expectations_invert_only_on_sim_and_demand_the_text() {
        let text = "description = \"t\"\n[machine.virtualisation.docker]\nenable = true\n[gpus]\ncount = 1\n[[expect.fail]]\ncheck = \"machine_config\"\nmessage-contains = [\"nvidia-container-toolkit.enable\"]\n";
        let s = crate::scenario::parse(Path::new("t.toml"), text).expect("parses");
        let v = evaluate(&s, &Facts::default(), "machine_config");
        assert_eq!(v.status, Status::Fail);
        assert_eq!(
            apply_expectation(&s, BackendKind::Sim, "machine_config", v.clone()).status,
            Status::Pass
        );
        assert_eq!(
            apply_expectation(&s, BackendKind::Host, "machine_config", v).status,
            Status::Fail
        );
        let passed = Verdict::pass("fine");
        assert_eq!(
            apply_expectation(&s, BackendKind::Sim, "machine_config", passed).status,
            Status::Fail
        );
        let wrong_text = Verdict::fail("something unrelated", None);
        let v = apply_expectation(&s, BackendKind::Sim, "machine_config", wrong_text);
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains("lacks"));
    }

    #[test]
    fn uuid_named_aliases_do_not_fail_the_device_checks() {
        let s = scenario(1);
        let f = Facts {
            info: Some(Ok(EngineInfo {
                server_version: "28.5.2".into(),
                cdi_spec_dirs: vec!["/etc/cdi".into()],
                discovered_devices: Some(vec![
                    "nvidia.com/gpu=0".into(),
                    "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c".into(),
                    "nvidia.com/gpu=all".into(),
                ]),
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = evaluate(&s, &f, "info_devices");
        assert_eq!(v.status, Status::Pass, "{}", v.message);
        assert!(v.message.contains("also by UUID"));
        // A missing index device still fails, alias or not.
        let f = Facts {
            info: Some(Ok(EngineInfo {
                server_version: "28.5.2".into(),
                discovered_devices: Some(vec![
                    "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c".into(),
                    "nvidia.com/gpu=all".into(),
                ]),
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = evaluate(&s, &f, "info_devices");
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.message.contains("missing nvidia.com/gpu=0"),
            "{}",
            v.message
        );
    }

    #[test]
    fn engine_mode_must_match_the_default_socket() {
        let info = |rootless| {
            Some(Ok(EngineInfo {
                server_version: "28.5.2".into(),
                rootless,
                ..Default::default()
            }))
        };
        let rootful_machine = scenario(1);
        let f = Facts {
            info: info(false),
            ..Default::default()
        };
        assert_eq!(
            evaluate(&rootful_machine, &f, "engine_mode").status,
            Status::Pass
        );
        let f = Facts {
            info: info(true),
            ..Default::default()
        };
        let v = evaluate(&rootful_machine, &f, "engine_mode");
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains("reached is rootless"), "{}", v.message);
        assert!(
            v.fix
                .as_deref()
                .is_some_and(|f| f.contains("unset DOCKER_HOST"))
        );
    }

    #[test]
    fn check_names_follow_gpus_and_runs() {
        let names = check_names(&scenario(2));
        let i = |n: &str| names.iter().position(|x| x == n).expect(n);
        assert!(i("device_all") < i("device_0") && i("device_1") < i("device_isolation"));
        assert!(i("device_isolation") < i("gpus_flag") && i("gpus_flag") < i("no_leftovers"));
        assert!(i("device_isolation") + 1 == i("restart_always"));
        assert!(!check_names(&scenario(0)).contains(&"device_all".to_string()));
        assert!(!check_names(&scenario(0)).contains(&"restart_always".to_string()));
    }

    fn listed(n: u32) -> Vec<ListedGpu> {
        (0..n)
            .map(|i| ListedGpu {
                index: i,
                name: "NVIDIA H100 80GB HBM3".into(),
                uuid: format!("GPU-{i}"),
            })
            .collect()
    }

    fn restart_facts(outcome: RestartOutcome) -> Facts {
        Facts {
            backend: Some(BackendKind::Sim),
            restart_always: Some(outcome),
            ..Default::default()
        }
    }

    #[test]
    fn restart_always_passes_when_the_container_is_back_with_its_gpus() {
        let f = restart_facts(RestartOutcome::Back {
            before: listed(2),
            after: listed(2),
            first_start: std::time::Duration::from_millis(400),
            engine_restart: std::time::Duration::from_millis(2300),
            back_after: std::time::Duration::from_millis(150),
        });
        let v = evaluate(&scenario(2), &f, "restart_always");
        assert_eq!(v.status, Status::Pass, "{v:?}");
        assert!(v.message.contains("same 2 GPU(s)"), "{}", v.message);
        let f = restart_facts(RestartOutcome::Back {
            before: listed(2),
            after: listed(1),
            first_start: std::time::Duration::ZERO,
            engine_restart: std::time::Duration::ZERO,
            back_after: std::time::Duration::ZERO,
        });
        assert_eq!(
            evaluate(&scenario(2), &f, "restart_always").status,
            Status::Fail
        );
    }

    #[test]
    fn restart_always_not_restarted_names_the_state_and_the_fix() {
        // The container stayed exited after the daemon restart (killed at shutdown).
        let f = restart_facts(RestartOutcome::NotBack {
            waited: std::time::Duration::from_secs(20),
            state: ContainerStateFacts {
                status: "exited".into(),
                running: false,
                exit_code: 137,
                ..Default::default()
            },
            log: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n".into(),
        });
        let v = evaluate(&scenario(1), &f, "restart_always");
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains("state exited"), "{}", v.message);
        assert!(v.message.contains("exit code 137"), "{}", v.message);
        assert!(v.fix.as_deref().is_some_and(|f| f.contains("moby#49989")));
    }

    #[test]
    fn restart_always_cdi_driver_missing_after_restart_is_the_regression_measured_on_26_1() {
        // Verbatim from engine 26.1.5 (Debian trixie) after a daemon restart: the
        // container had listed its GPU before.
        let f = restart_facts(RestartOutcome::NotBack {
            waited: std::time::Duration::from_secs(20),
            state: ContainerStateFacts {
                status: "exited".into(),
                exit_code: 137,
                error: r#"could not select device driver "cdi" with capabilities: []"#.into(),
                ..Default::default()
            },
            log: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n".into(),
        });
        let v = evaluate(&scenario(1), &f, "restart_always");
        assert_eq!(v.status, Status::Fail);
        let fix = v.fix.unwrap_or_default();
        assert!(fix.contains("this is moby#49989"), "{fix}");
        assert!(
            !fix.contains("CDI is off"),
            "the engine had CDI before the restart: {fix}"
        );
    }

    #[test]
    fn restart_always_unresolvable_devices_after_restart_is_the_regression() {
        // The engine's message for a CDI device it cannot resolve (measured at create);
        // moby#49989 leaves it as the container's error after the daemon restart.
        let error = "unresolvable CDI devices nvidia.com/gpu=all";
        let f = restart_facts(RestartOutcome::NotBack {
            waited: std::time::Duration::from_secs(20),
            state: ContainerStateFacts {
                status: "exited".into(),
                exit_code: 128,
                error: error.into(),
                ..Default::default()
            },
            log: String::new(),
        });
        let v = evaluate(&scenario(1), &f, "restart_always");
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.message.contains("unresolvable CDI devices"),
            "{}",
            v.message
        );
        let fix = v.fix.unwrap_or_default();
        assert!(fix.contains("this is moby#49989"), "{fix}");
        assert!(fix.contains("systemctl restart"), "{fix}");
        let f = restart_facts(RestartOutcome::Error(
            "the engine at unix:///x did not answer `inspect container` within 20 s".into(),
        ));
        assert_eq!(
            evaluate(&scenario(1), &f, "restart_always").status,
            Status::Fail
        );
    }

    #[test]
    fn restart_always_skips_on_host_and_without_a_first_run() {
        let f = Facts {
            backend: Some(BackendKind::Host),
            ..Default::default()
        };
        let v = evaluate(&scenario(1), &f, "restart_always");
        assert_eq!(v.status, Status::Skip);
        assert_eq!(v.message, RESTART_HOST_REASON);
        let f = restart_facts(RestartOutcome::NotRun(
            "restarting a rootless private engine is not supported yet".into(),
        ));
        let v = evaluate(&scenario(1), &f, "restart_always");
        assert_eq!(v.status, Status::Skip);
        assert!(v.message.contains("rootless"));
        let f = restart_facts(RestartOutcome::FirstStartFailed(
            "unresolvable CDI devices nvidia.com/gpu=all".into(),
        ));
        assert_eq!(
            evaluate(&scenario(1), &f, "restart_always").status,
            Status::Skip
        );
        let f = restart_facts(RestartOutcome::EngineRestartFailed("dockerd exited".into()));
        assert_eq!(
            evaluate(&scenario(1), &f, "restart_always").status,
            Status::Fail
        );
    }
}
