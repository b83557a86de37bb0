//! Scenario files: a machine's NixOS configuration and what must hold on it.
//!
//! A scenario is a TOML file in `scenarios/`. Its `[machine]` table is written with
//! NixOS option paths as keys so that Nix can import the very same file with
//! `builtins.fromTOML` as a NixOS module; the harness reads from it only the facts it
//! needs ([`MachineFacts`]); a value in its `[machine.force]` table is applied with
//! `lib.mkForce` and is the effective one. Everything else in the file is the harness's
//! own and is parsed strictly: an unknown key, a wrong type, an invalid CDI device name
//! or image reference is rejected with the file, the key and the reason, so a typo can
//! never silently turn a check off.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cdi::QualifiedName;
use crate::check_id::CheckId;
use crate::outcome::Cause;

/// The error text of `docker run --gpus all` on an engine without an NVIDIA runtime
/// hook, verbatim (measured on engines 20.10, 26.1 and 28.5).
pub const GPUS_FLAG_ERROR: &str = r#"could not select device driver "" with capabilities: [[gpu]]"#;

/// The spec file name NixOS's `nvidia-container-toolkit-cdi-generator` writes.
pub const GENERATED_SPEC_FILE: &str = "nvidia-container-toolkit.json";

/// Why a scenario file was rejected. Every variant names the file; field errors name
/// the key path too, so the user can go straight to the line.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read at all.
    #[error("{path}: cannot read scenario file: {source} (check the path and its permissions)")]
    Read {
        /// The scenario file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type, as located by the TOML parser.
    #[error("{path}: {message}")]
    Parse {
        /// The scenario file.
        path: PathBuf,
        /// The parser's message, with line, column and the offending key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        /// The scenario file.
        path: PathBuf,
        /// Dotted key path, e.g. `run[1].devices[0]`.
        key: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A directory of scenarios could not be listed.
    #[error("{path}: cannot list scenario directory: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path is not a regular file (a FIFO, a device, a socket): reading it could
    /// block forever or never end.
    #[error("{path}: is {kind}, not a scenario file: pass a regular .toml file")]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        kind: String,
    },
    /// The file is larger than any scenario (hostile or wrong input, e.g. a log).
    #[error(
        "{path}: larger than {limit} bytes, which no scenario file is: pass the scenario's .toml file"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not UTF-8 text (TOML must be).
    #[error(
        "{path}: not valid UTF-8 (first invalid byte at offset {offset}): TOML files must be UTF-8 text; re-save it as UTF-8"
    )]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A directory given as scenarios holds no `*.toml` file.
    #[error(
        "{path}: no scenario files (*.toml) in this directory: pass a directory with scenarios or a .toml file"
    )]
    EmptyDir {
        /// The directory.
        path: PathBuf,
    },
    /// Two scenario files would produce the same trial names.
    #[error(
        "{path}: scenario name `{name}` is already used by {other}; trial names must be unique"
    )]
    Duplicate {
        /// The second file.
        path: PathBuf,
        /// The clashing name.
        name: String,
        /// The first file.
        other: PathBuf,
    },
}

/// What a `docker run` of the scenario is expected to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expectation {
    /// The container starts and its command exits 0.
    Success,
    /// The engine refuses the container (or the command exits non-zero) with the declared error.
    Failure,
}

/// One declared `docker run` invocation and its expected outcome; it becomes a check
/// named after it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Check name, e.g. `gpus_flag`.
    pub name: String,
    /// CDI devices requested, as with `--device`.
    pub devices: Vec<QualifiedName>,
    /// `--gpus` value, e.g. `all`.
    pub gpus: Option<String>,
    /// `--runtime` value, e.g. `nvidia`.
    pub runtime: Option<String>,
    /// The command run in the container.
    pub command: Vec<String>,
    /// Success or failure.
    pub expect: Expectation,
    /// For a failure: the engine's error message must equal this exactly.
    pub error: Option<String>,
    /// For a failure: the engine's error message (or the output) must contain this.
    pub error_contains: Option<String>,
    /// For a success: the output must contain each of these.
    pub stdout_contains: Vec<String>,
    /// For a failure: the cause the engine's error must have (classified as
    /// [`crate::hints::classify`] does), when declared.
    pub cause: Option<Cause>,
    /// Why this is expected: shown when the expectation no longer holds.
    pub why: Option<String>,
}

/// A check that must fail on the `sim` backend because the scenario models a broken
/// machine, and how to recognise that failure. On `host` the check reports what is
/// there, and `cdi-harness report judge` applies the same rules to the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedFailure {
    /// The check's name.
    pub check: String,
    /// The cause the failure must have, when declared: a failure with another cause
    /// never counts.
    pub cause: Option<Cause>,
    /// Each of these must appear in the check's message (never its fix).
    pub message_contains: Vec<String>,
    /// Each of these must appear in the check's fix.
    pub fix_contains: Vec<String>,
}

/// How the `sim` backend lays out the specs before the engine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimSpecState {
    /// The generator ran: the simulated spec is written.
    #[default]
    Generated,
    /// The generator did not run: no spec at all.
    Missing,
}

/// The broken state the `sim` backend builds for this scenario.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimSetup {
    /// Whether the generated spec exists.
    pub spec: SimSpecState,
    /// File name of a stale, hand-made second NVIDIA spec placed beside the generated one.
    pub stale_spec: Option<String>,
    /// A known regression built into the generated spec (`fault = "…"`), so that its
    /// checks and fix hints run against a real engine.
    pub fault: Option<crate::sim::SpecFault>,
}

/// The facts the harness reads from the `[machine]` NixOS configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MachineFacts {
    /// `virtualisation.docker.enable`.
    pub docker_enabled: bool,
    /// `virtualisation.docker.rootless.enable`.
    pub rootless_enabled: bool,
    /// `virtualisation.docker.rootless.setSocketVariable`: the rootless engine is the
    /// user's default `DOCKER_HOST`.
    pub rootless_default: bool,
    /// `hardware.nvidia-container-toolkit.enable`.
    pub toolkit_enabled: bool,
    /// `hardware.nvidia-container-toolkit.device-name-strategy` (default `index`).
    pub device_name_strategy: String,
    /// `virtualisation.docker.daemon.settings.runtimes`: the seed's pitfall when non-empty.
    pub manual_runtimes: serde_json::Map<String, serde_json::Value>,
    /// `virtualisation.docker.daemon.settings.default-runtime`.
    pub default_runtime: Option<String>,
    /// `virtualisation.docker.daemon.settings.features.cdi`, when set explicitly.
    pub cdi_feature: Option<bool>,
    /// `virtualisation.docker.enableNvidia` (deprecated).
    pub enable_nvidia: bool,
    /// `users.extraGroups.docker.members`.
    pub docker_group_members: Vec<String>,
}

impl MachineFacts {
    /// Whether the engine on this machine has CDI switched on: the toolkit module sets
    /// `features.cdi = true` for docker >= 25 unless the user overrides it.
    pub fn cdi_enabled(&self) -> bool {
        self.cdi_feature.unwrap_or(self.toolkit_enabled)
    }

    /// Problems in the machine configuration itself: the pitfalls of the seed write-up.
    /// Each entry is (problem, fix).
    pub fn pitfalls(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.toolkit_enabled {
            out.push((
                "hardware.nvidia-container-toolkit.enable is not true: nothing generates the CDI spec".to_string(),
                "set hardware.nvidia-container-toolkit.enable = true".to_string(),
            ));
        }
        if !self.docker_enabled {
            out.push((
                "virtualisation.docker.enable is not true".to_string(),
                "set virtualisation.docker.enable = true".to_string(),
            ));
        }
        for (name, value) in &self.manual_runtimes {
            let text = value.to_string();
            let nvidia = name.contains("nvidia") || text.contains("nvidia");
            if nvidia {
                out.push((
                    format!(
                        "virtualisation.docker.daemon.settings.runtimes.{name} = {text}: a manual NVIDIA runtime (the old pkgs.nvidia-docker way) that breaks after `nix flake update`"
                    ),
                    "remove virtualisation.docker.daemon.settings.runtimes (and any pkgs.nvidia-docker) and rely solely on hardware.nvidia-container-toolkit.enable = true; run containers with --device nvidia.com/gpu=all".to_string(),
                ));
            }
        }
        if let Some(rt) = &self.default_runtime {
            if rt.contains("nvidia") {
                out.push((
                    format!("virtualisation.docker.daemon.settings.default-runtime = \"{rt}\": the legacy NVIDIA runtime as default"),
                    "remove default-runtime; CDI needs no runtime".to_string(),
                ));
            }
        }
        if self.cdi_feature == Some(false) {
            out.push((
                "virtualisation.docker.daemon.settings.features.cdi = false: the engine ignores CDI devices (`could not select device driver \"cdi\"`)".to_string(),
                "remove features.cdi = false; the toolkit module turns CDI on for docker >= 25".to_string(),
            ));
        }
        if self.enable_nvidia {
            out.push((
                "virtualisation.docker.enableNvidia is deprecated and uses the legacy runtime"
                    .to_string(),
                "remove it and set hardware.nvidia-container-toolkit.enable = true".to_string(),
            ));
        }
        out
    }
}

/// How many GPUs a scenario declares (`[gpus] count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuCount {
    /// `count = "auto"` (the default): the GPUs the driver reports on a host; on `sim`
    /// and in a simulated VM, [`SIM_AUTO_GPU_COUNT`] (or as many as `gpus.pci` lists).
    Auto,
    /// A fixed count: the scenario models a machine with exactly this many GPUs, and a
    /// host with another count is not that machine.
    Fixed(u32),
}

impl GpuCount {
    /// As written in the scenario file and its export: `"auto"` or the number.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            GpuCount::Auto => serde_json::Value::from("auto"),
            GpuCount::Fixed(n) => serde_json::Value::from(n),
        }
    }
}

/// How many simulated GPUs `count = "auto"` means where no driver says: on `sim` and in
/// a scenario's simulated NixOS VM (`nixos-tests/lib/scenario.nix` has the same number).
/// Two, so that `device_isolation` compares two different GPUs.
pub const SIM_AUTO_GPU_COUNT: u32 = 2;

/// Where a scenario applies (`applies-to`): the backends and test kinds whose verdicts
/// mean something for the machine it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place {
    /// The `sim` backend: a private engine with simulated GPUs, built in the scenario's state.
    Sim,
    /// The scenario's own NixOS VM test (`nixos-tests/`), which builds its machine.
    Vm,
    /// A real machine's own engine and GPUs (`--backend host`, `cargo test` on a GPU host).
    Host,
}

impl Place {
    /// Every place, in the order `applies-to` lists them by default.
    pub const ALL: [Place; 3] = [Place::Sim, Place::Vm, Place::Host];

    /// The name in `applies-to`.
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Sim => "sim",
            Place::Vm => "vm",
            Place::Host => "host",
        }
    }

    /// The place of this name.
    pub fn parse(name: &str) -> Option<Place> {
        Place::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// GPUs the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpus {
    /// How many this run checks: a fixed count as declared; for `count = "auto"`
    /// [`SIM_AUTO_GPU_COUNT`] (or the length of `pci`) until
    /// [`Scenario::with_inventory`] sets the driver's count for a host.
    pub count: u32,
    /// What the file declares.
    pub declared: GpuCount,
    /// PCI addresses for VM passthrough (may be empty).
    pub pci: Vec<String>,
    /// Model name the `sim` backend gives its GPUs.
    pub model: String,
}

/// A parsed, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// File stem: the prefix of every trial name.
    pub name: String,
    /// Where it came from.
    pub path: PathBuf,
    /// One paragraph: what machine this is and why it matters.
    pub description: String,
    /// The `[machine]` table verbatim: a NixOS module for Nix (its `[machine.force]`
    /// table's values applied with `lib.mkForce`, see `nixos-tests/lib/machine-module.nix`).
    pub machine: toml::Table,
    /// What the harness reads from `machine`.
    pub facts: MachineFacts,
    /// The GPUs.
    pub gpus: Gpus,
    /// Image the containers run on `host` (the seed's CUDA image by default).
    pub image: String,
    /// CDI devices that must be in the spec and in `docker info`.
    pub expected_devices: Vec<QualifiedName>,
    /// File name of the generated spec.
    pub spec_file: String,
    /// Declared `docker run` invocations.
    pub runs: Vec<RunSpec>,
    /// Checks that must fail on `sim` (the scenario models a broken machine).
    pub expected_failures: Vec<ExpectedFailure>,
    /// The broken state `sim` builds.
    pub sim: SimSetup,
    /// Where the scenario's verdicts mean something (`applies-to`; all places by default).
    pub applies_to: Vec<Place>,
}

impl Scenario {
    /// The expected failure declared for `check`, if any.
    pub fn expected_failure(&self, check: &str) -> Option<&ExpectedFailure> {
        self.expected_failures.iter().find(|f| f.check == check)
    }

    /// Every check of this scenario, in report order.
    pub fn check_ids(&self) -> Vec<CheckId> {
        crate::check_id::ids_for(self.gpus.count, self.runs.iter().map(|r| r.name.as_str()))
    }

    /// The names of [`Scenario::check_ids`], as reports and trials use them.
    pub fn check_names(&self) -> Vec<String> {
        self.check_ids().iter().map(CheckId::name).collect()
    }

    /// Whether the scenario declares that it applies at `place`.
    pub fn applies_at(&self, place: Place) -> bool {
        self.applies_to.contains(&place)
    }

    /// The scenario on a machine whose driver reports `inv`: with `count = "auto"` its
    /// GPU count and expected devices become the machine's (named by the scenario's
    /// `device-name-strategy`, MIG devices included); a fixed count is left as declared
    /// (whether it matches the machine is [`crate::select::plan`]'s question).
    pub fn with_inventory(&self, inv: &crate::gpu::Inventory) -> Result<Scenario, String> {
        let mut out = self.clone();
        if self.gpus.declared == GpuCount::Auto {
            out.gpus.count = u32::try_from(inv.gpus.len())
                .map_err(|_| format!("{} GPUs is more than a u32", inv.gpus.len()))?;
            out.expected_devices = devices_for_inventory(inv, &self.facts.device_name_strategy)?;
        }
        Ok(out)
    }
}

/// The CDI devices nvidia-ctk generates for the GPUs `inv` lists, named by `strategy`
/// (`index`: `nvidia.com/gpu=0` and MIG devices `0:1`; `uuid`: `GPU-…` and `MIG-…`;
/// `type-index`: `gpu0` and `mig0:1`), then `all`; none without GPUs.
pub fn devices_for_inventory(
    inv: &crate::gpu::Inventory,
    strategy: &str,
) -> Result<Vec<QualifiedName>, String> {
    if inv.gpus.is_empty() {
        return Ok(Vec::new());
    }
    if !["index", "uuid", "type-index"].contains(&strategy) {
        return Err(format!(
            "device-name-strategy {strategy:?} is not one nvidia-ctk knows (index, uuid, type-index)"
        ));
    }
    let mut names = Vec::new();
    for g in &inv.gpus {
        names.push(format!(
            "nvidia.com/gpu={}",
            match strategy {
                "uuid" => g.uuid.clone(),
                "type-index" => format!("gpu{}", g.index),
                _ => g.index.to_string(),
            }
        ));
        for m in &g.mig_devices {
            names.push(format!(
                "nvidia.com/gpu={}",
                match strategy {
                    "uuid" => m.uuid.clone(),
                    "type-index" => format!("mig{}:{}", g.index, m.index),
                    _ => format!("{}:{}", g.index, m.index),
                }
            ));
        }
    }
    names.push("nvidia.com/gpu=all".to_string());
    names.iter().map(|n| parse_device(n)).collect()
}

impl Scenario {
    /// The scenario as JSON, in the shape `nixos-tests/lib/scenario.nix` computes from
    /// the same file with `builtins.fromTOML`: CI evaluates both and requires them equal,
    /// so Nix and the harness can never read a scenario differently.
    pub fn export_json(&self) -> serde_json::Value {
        let f = &self.facts;
        serde_json::json!({
            "name": self.name,
            "machine": serde_json::to_value(&self.machine).unwrap_or(serde_json::Value::Null),
            "facts": {
                "dockerEnabled": f.docker_enabled,
                "rootlessEnabled": f.rootless_enabled,
                "rootlessDefault": f.rootless_default,
                "toolkitEnabled": f.toolkit_enabled,
                "cdiEnabled": f.cdi_enabled(),
                "deviceNameStrategy": f.device_name_strategy,
                "manualRuntimes": f.manual_runtimes,
                "dockerGroupMembers": f.docker_group_members,
            },
            "gpus": {
                "count": self.gpus.count,
                "declared": self.gpus.declared.to_json(),
                "pci": self.gpus.pci,
            },
            "appliesTo": self.applies_to.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "image": self.image,
            "expectedDevices": self.expected_devices.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.path.display())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawScenario {
    description: String,
    image: Option<String>,
    machine: toml::Table,
    #[serde(default)]
    gpus: RawGpus,
    // Strings, validated in `parse`, so that a bad value is rejected naming its index.
    applies_to: Option<Vec<String>>,
    #[serde(default)]
    expect: RawExpect,
    #[serde(default)]
    run: Vec<RawRun>,
    #[serde(default)]
    sim: RawSim,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGpus {
    // A number or "auto" (the default), validated in `parse`.
    count: Option<toml::Value>,
    /// `none = true`: the machine has no GPU on purpose, the only way `count = 0` is
    /// accepted (a forgotten count must not pass as a machine without GPUs).
    #[serde(default)]
    none: bool,
    #[serde(default)]
    pci: Vec<String>,
    model: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawExpect {
    devices: Option<Vec<String>>,
    spec_file: Option<String>,
    #[serde(default)]
    fail: Vec<RawExpectedFailure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawExpectedFailure {
    check: String,
    cause: Option<String>,
    message_contains: Option<Vec<String>>,
    fix_contains: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRun {
    name: String,
    #[serde(default)]
    devices: Vec<String>,
    gpus: Option<String>,
    runtime: Option<String>,
    command: Option<Vec<String>>,
    expect: Expectation,
    error: Option<String>,
    error_contains: Option<String>,
    #[serde(default)]
    stdout_contains: Vec<String>,
    cause: Option<String>,
    why: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSim {
    #[serde(default)]
    spec: SimSpecState,
    stale_spec: Option<String>,
    // A string, validated in `parse`, so that a bad value is rejected naming `sim.fault`.
    fault: Option<String>,
}

/// The seed write-up's image.
pub const DEFAULT_IMAGE: &str = "nvidia/cuda:13.1.1-base-ubuntu24.04";

/// Loads and validates one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = read_scenario_text(path)?;
    parse(path, &text)
}

/// The largest scenario file read; real ones are a few kilobytes.
pub const MAX_SCENARIO_BYTES: u64 = 1024 * 1024;

/// A scenario file's text, read so that hostile input cannot hang or flood the
/// harness: only a regular file (a FIFO or a device is refused before it is opened,
/// and the open itself never blocks), at most [`MAX_SCENARIO_BYTES`], valid UTF-8.
fn read_scenario_text(path: &Path) -> Result<String, ScenarioError> {
    use crate::safe_read::{SafeReadError, read_regular_file};
    let bytes = read_regular_file(path, MAX_SCENARIO_BYTES).map_err(|e| match e {
        SafeReadError::Io(source) => ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        },
        SafeReadError::NotRegular(kind) => ScenarioError::NotAFile {
            path: path.to_path_buf(),
            kind: kind.to_string(),
        },
        SafeReadError::TooLarge { limit, .. } => ScenarioError::TooLarge {
            path: path.to_path_buf(),
            limit,
        },
    })?;
    String::from_utf8(bytes).map_err(|e| ScenarioError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Loads every `*.toml` in `dir`, sorted by name, rejecting duplicate names.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    load_paths(&[dir.to_path_buf()]).map(|(scenarios, _)| scenarios)
}

/// Scenario files and directories as a user names them on a command line: a directory
/// stands for its `*.toml` files in name order. Also returns the directory of the first
/// path, where the nearest `snapshots/` is looked for.
pub fn load_paths(paths: &[PathBuf]) -> Result<(Vec<Scenario>, PathBuf), ScenarioError> {
    let mut files = Vec::new();
    for p in paths {
        if !p.is_dir() {
            files.push(p.clone());
            continue;
        }
        let read_dir = |source| ScenarioError::ReadDir {
            path: p.clone(),
            source,
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(p).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                found.push(path);
            }
        }
        if found.is_empty() {
            return Err(ScenarioError::EmptyDir { path: p.clone() });
        }
        found.sort();
        files.extend(found);
    }
    let base = match paths.first() {
        Some(p) if p.is_dir() => p.clone(),
        Some(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => PathBuf::new(),
    };
    Ok((load_all(&files)?, base))
}

/// Loads several files, rejecting two that share a scenario name.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Scenario>, ScenarioError> {
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut out = Vec::new();
    for p in paths {
        let s = load(p)?;
        if let Some(other) = seen.get(&s.name) {
            return Err(ScenarioError::Duplicate {
                path: p.clone(),
                name: s.name,
                other: other.clone(),
            });
        }
        seen.insert(s.name.clone(), p.clone());
        out.push(s);
    }
    Ok(out)
}

/// A rejected value: the key it is under and why, turned into [`ScenarioError::Invalid`]
/// by [`parse`], which knows the file.
type Rejection = (String, String);

/// Parses scenario text; `path` names the file in errors and gives the scenario its name.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    parse_raw(path, raw).map_err(|(key, reason)| ScenarioError::Invalid {
        path: path.to_path_buf(),
        key,
        reason,
    })
}

/// The checks of [`parse`] in their order (the first problem found is the one
/// reported), each part of the file read by its own function.
fn parse_raw(path: &Path, raw: RawScenario) -> Result<Scenario, Rejection> {
    let name = scenario_name(path)?;
    if raw.description.trim().is_empty() {
        return Err(("description".into(), "must say what machine this is".into()));
    }
    let facts = machine_facts(&raw.machine)?;
    let (declared, count) = parse_gpu_count(&raw.gpus)?;
    let image = raw.image.unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    validate_image(&image).map_err(|reason| ("image".to_string(), reason))?;
    let expected_devices = expected_devices(raw.expect.devices, declared, count, &facts)?;
    let spec_file = spec_file_name(raw.expect.spec_file)?;
    let runs = parse_runs(raw.run)?;
    let sim = parse_sim(raw.sim, &spec_file)?;
    let applies_to = parse_applies_to(raw.applies_to.as_deref(), !raw.expect.fail.is_empty())?;
    let mut scenario = Scenario {
        name,
        path: path.to_path_buf(),
        description: raw.description.trim().to_string(),
        machine: raw.machine,
        facts,
        gpus: Gpus {
            count,
            declared,
            pci: raw.gpus.pci,
            model: raw
                .gpus
                .model
                .unwrap_or_else(|| "NVIDIA H100 80GB HBM3".to_string()),
        },
        image,
        expected_devices,
        spec_file,
        runs,
        expected_failures: Vec::new(),
        sim,
        applies_to,
    };
    scenario.expected_failures = parse_failures(raw.expect.fail, &scenario.check_names())?;
    Ok(scenario)
}

/// The scenario's name, its file's stem: it prefixes trial names, so it is limited to
/// characters that read well there.
fn scenario_name(path: &Path) -> Result<String, Rejection> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err((
            "(file name)".into(),
            format!(
                "scenario name {name:?} must be letters, digits, '-' or '_' (it prefixes trial names)"
            ),
        ));
    }
    Ok(name)
}

/// The `[gpus]` table's count as declared and as used (`"auto"` is the PCI list's
/// length, or the sim's default), with `none` and `pci` checked against it.
fn parse_gpu_count(gpus: &RawGpus) -> Result<(GpuCount, u32), Rejection> {
    let declared = match &gpus.count {
        None => GpuCount::Auto,
        Some(toml::Value::String(s)) if s == "auto" => GpuCount::Auto,
        Some(toml::Value::Integer(n)) if (0..=64).contains(n) => GpuCount::Fixed(*n as u32),
        Some(toml::Value::Integer(n)) if *n > 64 => {
            return Err((
                "gpus.count".into(),
                format!("{n} GPUs is more than any machine has (at most 64)"),
            ));
        }
        Some(other) => {
            return Err((
                "gpus.count".into(),
                format!(
                    "must be \"auto\" (the GPUs the driver reports) or a number of GPUs from 0 to 64, found {other}"
                ),
            ));
        }
    };
    check_gpus_none(declared, gpus.none)?;
    let count = match declared {
        GpuCount::Fixed(n) => n,
        GpuCount::Auto if !gpus.pci.is_empty() => gpus.pci.len() as u32,
        GpuCount::Auto => SIM_AUTO_GPU_COUNT,
    };
    for (i, pci) in gpus.pci.iter().enumerate() {
        if !is_pci_address(pci) {
            return Err((
                format!("gpus.pci[{i}]"),
                format!("{pci:?} is not a PCI address like \"0000:01:00.0\""),
            ));
        }
    }
    if !gpus.pci.is_empty() && gpus.pci.len() != count as usize {
        return Err((
            "gpus.pci".into(),
            format!(
                "lists {} addresses but gpus.count is {}",
                gpus.pci.len(),
                count
            ),
        ));
    }
    Ok((declared, count))
}

/// `none = true` is the only way to a machine without GPUs, and only with `count = 0`:
/// a forgotten count must not pass as one.
fn check_gpus_none(declared: GpuCount, none: bool) -> Result<(), Rejection> {
    match (declared, none) {
        (GpuCount::Fixed(0), false) => Err((
            "gpus.count".into(),
            "is 0: a machine without GPUs must say so with `none = true` in [gpus]; otherwise give the number of GPUs, or \"auto\"".into(),
        )),
        (GpuCount::Fixed(n), true) if n > 0 => Err((
            "gpus.none".into(),
            format!("is true but gpus.count is {n}: remove `none` or set count = 0"),
        )),
        (GpuCount::Auto, true) => Err((
            "gpus.none".into(),
            "is true but gpus.count is \"auto\" (the default): a machine without GPUs sets count = 0 with none = true".into(),
        )),
        _ => Ok(()),
    }
}

/// `expect.devices`, or the devices the machine's naming strategy gives its GPUs (the
/// driver's, with `count = "auto"`, where a fixed list cannot be right).
fn expected_devices(
    listed: Option<Vec<String>>,
    declared: GpuCount,
    count: u32,
    facts: &MachineFacts,
) -> Result<Vec<QualifiedName>, Rejection> {
    if declared == GpuCount::Auto && listed.is_some() {
        return Err((
            "expect.devices".into(),
            "a fixed list of devices needs a fixed gpus.count; with count = \"auto\" the devices are the driver's GPUs (remove expect.devices or set a count)".into(),
        ));
    }
    let strategy_key = |r: String| {
        (
            "machine.hardware.nvidia-container-toolkit.device-name-strategy".to_string(),
            r,
        )
    };
    match listed {
        Some(list) => {
            let mut out = Vec::new();
            for (i, d) in list.iter().enumerate() {
                out.push(parse_device(d).map_err(|r| (format!("expect.devices[{i}]"), r))?);
            }
            Ok(out)
        }
        None if declared == GpuCount::Auto => devices_for_inventory(
            &crate::gpu::sim_inventory(count),
            &facts.device_name_strategy,
        )
        .map_err(strategy_key),
        None => default_devices(count, &facts.device_name_strategy).map_err(strategy_key),
    }
}

/// `expect.spec-file`, or the generator's file: a bare name the engine would read.
fn spec_file_name(given: Option<String>) -> Result<String, Rejection> {
    let spec_file = given.unwrap_or_else(|| GENERATED_SPEC_FILE.to_string());
    if spec_file.contains('/') || !(spec_file.ends_with(".json") || spec_file.ends_with(".yaml")) {
        return Err((
            "expect.spec-file".into(),
            format!(
                "{spec_file:?} must be a file name ending in .json or .yaml (the engine reads no other)"
            ),
        ));
    }
    Ok(spec_file)
}

/// The `[[run]]`s, each with a unique name that is no built-in check's.
fn parse_runs(raw: Vec<RawRun>) -> Result<Vec<RunSpec>, Rejection> {
    let mut runs = Vec::new();
    let mut run_names = BTreeSet::new();
    for (i, mut r) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("run[{i}].{field}");
        check_run_name(&r.name, &mut run_names).map_err(|reason| (key("name"), reason))?;
        let mut devices = Vec::new();
        for (j, d) in r.devices.iter().enumerate() {
            devices
                .push(parse_device(d).map_err(|reason| (key(&format!("devices[{j}]")), reason))?);
        }
        if let Some(g) = &r.gpus {
            if g.trim().is_empty() {
                return Err((
                    key("gpus"),
                    "must be a --gpus value such as \"all\" or \"device=0\"".into(),
                ));
            }
        }
        let command = run_command(r.command.take(), &key)?;
        let cause = run_expectation(&r, &key)?;
        runs.push(RunSpec {
            name: r.name,
            devices,
            gpus: r.gpus,
            runtime: r.runtime,
            command,
            expect: r.expect,
            error: r.error,
            error_contains: r.error_contains,
            stdout_contains: r.stdout_contains,
            cause,
            why: r.why,
        });
    }
    Ok(runs)
}

/// A run's name becomes a check name: the same characters, and neither a built-in
/// check's name nor another run's.
fn check_run_name(name: &str, taken: &mut BTreeSet<String>) -> Result<(), String> {
    if !is_check_name(name) {
        return Err(format!(
            "{name:?} must be lower-case letters, digits and '_', starting with a letter"
        ));
    }
    if crate::check_id::is_builtin(name) {
        return Err(format!(
            "{name:?} is the name of a built-in check; choose another"
        ));
    }
    if !taken.insert(name.to_string()) {
        return Err(format!("{name:?} is used by another [[run]]"));
    }
    Ok(())
}

/// A run's command (`nvidia-smi` when not given), which must name a program.
fn run_command(
    command: Option<Vec<String>>,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<String>, Rejection> {
    let command = command.unwrap_or_else(|| vec!["nvidia-smi".to_string()]);
    let Some(program) = command.first() else {
        return Err((
            key("command"),
            "must name at least the program to run".into(),
        ));
    };
    if program.trim().is_empty() {
        return Err((
            key("command[0]"),
            "is empty: the first element must name the program to run, e.g. \"nvidia-smi\"".into(),
        ));
    }
    Ok(command)
}

/// What a run expects: an expected failure says which error (and may give its cause),
/// a success names none; no text is empty, since an empty text matches everything.
/// Returns the cause.
fn run_expectation(r: &RawRun, key: &dyn Fn(&str) -> String) -> Result<Option<Cause>, Rejection> {
    for (field, value) in [("error", &r.error), ("error-contains", &r.error_contains)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err((
                key(field),
                "is empty, and an empty text matches every error; give the engine's message (or a part of it)".into(),
            ));
        }
    }
    texts_not_empty(&r.stdout_contains, &key("stdout-contains"), false)?;
    let cause = parse_cause(r.cause.as_deref()).map_err(|reason| (key("cause"), reason))?;
    if cause.is_some() && r.expect != Expectation::Failure {
        return Err((
            key("cause"),
            "only an expected failure has a cause; remove it or set expect = \"failure\"".into(),
        ));
    }
    match r.expect {
        Expectation::Failure if r.error.is_none() && r.error_contains.is_none() => Err((
            key("error"),
            "an expected failure must say which error: set `error` (exact engine message) or `error-contains`".into(),
        )),
        Expectation::Success if r.error.is_some() || r.error_contains.is_some() => Err((
            key("error"),
            "only an expected failure has an error; remove it or set expect = \"failure\"".into(),
        )),
        _ => Ok(cause),
    }
}

/// The `[sim]` table: a known fault (only on a generated spec) and a stale spec file
/// that is not the generated one.
fn parse_sim(raw: RawSim, spec_file: &str) -> Result<SimSetup, Rejection> {
    let fault = match &raw.fault {
        None => None,
        Some(f) => Some(crate::sim::SpecFault::parse(f).ok_or_else(|| {
            let known: Vec<String> = crate::sim::SpecFault::ALL
                .iter()
                .map(|(n, _)| format!("{n:?}"))
                .collect();
            (
                "sim.fault".to_string(),
                format!(
                    "{f:?} is not a known fault; use one of {}",
                    known.join(", ")
                ),
            )
        })?),
    };
    if fault.is_some() && raw.spec == SimSpecState::Missing {
        return Err((
            "sim.fault".into(),
            "needs a generated spec to break, but sim.spec = \"missing\"".into(),
        ));
    }
    if let Some(f) = &raw.stale_spec {
        if f.contains('/') || !(f.ends_with(".json") || f.ends_with(".yaml")) || f == spec_file {
            return Err((
                "sim.stale-spec".into(),
                format!(
                    "{f:?} must be a file name ending in .json or .yaml, other than the generated spec"
                ),
            ));
        }
    }
    Ok(SimSetup {
        spec: raw.spec,
        stale_spec: raw.stale_spec,
        fault,
    })
}

/// `applies-to` (all places when absent), each place once; a scenario that declares
/// failures models a broken machine, so it cannot apply to a healthy host.
fn parse_applies_to(
    listed: Option<&[String]>,
    declares_failures: bool,
) -> Result<Vec<Place>, Rejection> {
    let applies_to = match listed {
        None => Place::ALL.to_vec(),
        Some(list) => {
            let mut places = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let place = Place::parse(p).ok_or_else(|| {
                    (
                        format!("applies-to[{i}]"),
                        format!(
                            "{p:?} is not a place a scenario runs; use \"sim\", \"vm\" or \"host\""
                        ),
                    )
                })?;
                if places.contains(&place) {
                    return Err((format!("applies-to[{i}]"), format!("{p:?} is listed twice")));
                }
                places.push(place);
            }
            if places.is_empty() {
                return Err((
                    "applies-to".into(),
                    "is an empty list, so the scenario would run nowhere; list \"sim\", \"vm\" and/or \"host\", or remove the key (all three)".into(),
                ));
            }
            places.sort();
            places
        }
    };
    if declares_failures && applies_to.contains(&Place::Host) {
        return Err((
            "applies-to".into(),
            "includes \"host\", but the scenario declares failures ([[expect.fail]]): it models a broken machine, and a healthy host would fail or pass its checks for meaningless reasons; set applies-to = [\"sim\", \"vm\"]".into(),
        ));
    }
    Ok(applies_to)
}

/// The `[[expect.fail]]`s: each names a check of this scenario (`known`), once.
fn parse_failures(
    raw: Vec<RawExpectedFailure>,
    known: &[String],
) -> Result<Vec<ExpectedFailure>, Rejection> {
    let mut failures: Vec<ExpectedFailure> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        if !known.contains(&f.check) {
            return Err((
                format!("expect.fail[{i}].check"),
                format!(
                    "{:?} is not a check of this scenario; its checks are: {}",
                    f.check,
                    known.join(", ")
                ),
            ));
        }
        if failures.iter().any(|x| x.check == f.check) {
            return Err((
                format!("expect.fail[{i}].check"),
                format!("{:?} is declared twice", f.check),
            ));
        }
        failures.push(parse_failure(i, f)?);
    }
    Ok(failures)
}

/// One declared failure: how to recognise it (a cause, texts of its message, or both;
/// otherwise any failure would count) and, optionally, texts of its fix.
fn parse_failure(i: usize, f: RawExpectedFailure) -> Result<ExpectedFailure, Rejection> {
    let key = |field: &str| format!("expect.fail[{i}].{field}");
    let cause = parse_cause(f.cause.as_deref()).map_err(|reason| (key("cause"), reason))?;
    let given = (f.message_contains.is_some(), f.fix_contains.is_some());
    let message_contains = f.message_contains.unwrap_or_default();
    let fix_contains = f.fix_contains.unwrap_or_default();
    for (field, texts, given) in [
        ("message-contains", &message_contains, given.0),
        ("fix-contains", &fix_contains, given.1),
    ] {
        texts_not_empty(texts, &key(field), given)?;
    }
    if cause.is_none() && message_contains.is_empty() {
        return Err((
            key("cause"),
            "a declared failure must say how to recognise it: set `cause` (e.g. \"spec-missing\") or `message-contains`, or both; otherwise any failure would count".into(),
        ));
    }
    Ok(ExpectedFailure {
        check: f.check,
        cause,
        message_contains,
        fix_contains,
    })
}

/// Declared texts must each say something: an empty text (or, where the key is given,
/// an empty list) would match every failure and make the declaration meaningless.
fn texts_not_empty(texts: &[String], key: &str, given: bool) -> Result<(), (String, String)> {
    if given && texts.is_empty() {
        return Err((
            key.to_string(),
            "is an empty list, which matches every failure; name at least one text, or remove the key".into(),
        ));
    }
    for (j, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err((
                format!("{key}[{j}]"),
                "is empty, and an empty text matches every failure; give a text the check must print".into(),
            ));
        }
    }
    Ok(())
}

/// A declared cause by its scenario-file name.
fn parse_cause(name: Option<&str>) -> Result<Option<Cause>, String> {
    let Some(name) = name else {
        return Ok(None);
    };
    Cause::parse(name).map(Some).ok_or_else(|| {
        format!(
            "{name:?} is not a cause the harness knows; use one of: {}",
            Cause::ALL
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn parse_device(s: &str) -> Result<QualifiedName, String> {
    QualifiedName::parse(s)
        .map_err(|e| format!("{s:?} is not a CDI device name like \"nvidia.com/gpu=0\": {e}"))
}

fn default_devices(count: u32, strategy: &str) -> Result<Vec<QualifiedName>, String> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if strategy != "index" {
        return Err(format!(
            "device-name-strategy {strategy:?} names devices by UUID; list the expected names in expect.devices"
        ));
    }
    let mut names: Vec<String> = (0..count).map(|i| format!("nvidia.com/gpu={i}")).collect();
    names.push("nvidia.com/gpu=all".to_string());
    names.iter().map(|n| parse_device(n)).collect()
}

fn is_check_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_pci_address(s: &str) -> bool {
    // domain:bus:device.function, e.g. 0000:01:00.0 (domain may be omitted).
    static RE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^([0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\.[0-7]$").ok()
    });
    RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// The reference grammar of docker/distribution (`reference/regexp.go`), which the
/// engine uses: `[domain[:port]/]path[:tag][@digest]`. Go's `\w` is ASCII, so the
/// classes are spelled out and the regex is compiled without Unicode: that is both the
/// engine's behaviour and about fifty times cheaper to compile than a Unicode `\w`
/// (oci-spec's parser cost every `cdi-harness` invocation 50 ms).
const REFERENCE_GRAMMAR: &str = concat!(
    r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*",
    r"(?::[0-9]+)?/)?",
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*",
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?",
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$",
);

/// Checks an image reference the way the engine's reference grammar does.
pub fn validate_image(image: &str) -> Result<(), String> {
    static RE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::RegexBuilder::new(REFERENCE_GRAMMAR)
            .unicode(false)
            .build()
            .ok()
    });
    if image.is_empty() || image.trim() != image {
        return Err(format!(
            "{image:?} is not an image reference (empty or surrounded by spaces)"
        ));
    }
    let Some(re) = RE.as_ref() else {
        return Err("internal error: the image reference grammar did not compile".into());
    };
    if !re.is_match(image) {
        return Err(format!(
            "{image:?} is not a valid image reference ([registry[:port]/]name[:tag][@digest], name in lower case)"
        ));
    }
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    // As the engine normalizes names: the first component is a registry only when it
    // looks like one (a dot, a port or `localhost`); otherwise it is part of the
    // repository name, which must be lower case (`Nvidia/cuda` is refused).
    if let Some((first, _)) = name.split_once('/') {
        let registry = first.contains('.') || first.contains(':') || first == "localhost";
        if !registry && first.to_ascii_lowercase() != first {
            return Err(format!("{image:?}: the repository name must be lower case"));
        }
    }
    if name.len() > 255 {
        return Err(format!(
            "{image:?}: the repository name is longer than 255 characters"
        ));
    }
    Ok(())
}

/// The `[machine]` table as NixOS merges it: the table itself and its `[machine.force]`
/// table, whose leaves NixOS applies with `lib.mkForce`
/// (`nixos-tests/lib/machine-module.nix`) and which therefore win over the same option set at normal priority (the scenario's
/// own or a NixOS module's). A forced leaf replaces; tables merge key by key, so forcing
/// `features.cdi` leaves the other `features` keys as they are.
struct MachineView<'a> {
    plain: &'a toml::Table,
    force: Option<&'a toml::Table>,
}

/// Where forced values live in `[machine]`.
const FORCE_KEY: &str = "force";

impl<'a> MachineView<'a> {
    fn new(machine: &'a toml::Table) -> Result<Self, (String, String)> {
        let force = match machine.get(FORCE_KEY) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(other) => {
                return Err((
                    format!("machine.{FORCE_KEY}"),
                    format!(
                        "must be a table of NixOS options whose values are forced (lib.mkForce), found {}",
                        other.type_str()
                    ),
                ));
            }
        };
        Ok(MachineView {
            plain: machine,
            force,
        })
    }

    /// The effective value at an option path: the forced one merged over the plain one.
    /// Both are walked (plain first), so a non-table on either path is an error naming it.
    fn get(&self, path: &[&str]) -> Result<Option<toml::Value>, (String, String)> {
        let plain = walk(self.plain, path, "machine")?;
        let forced = match self.force {
            Some(f) => walk(f, path, &format!("machine.{FORCE_KEY}"))?,
            None => None,
        };
        Ok(match (plain, forced) {
            (p, None) => p.cloned(),
            (None, Some(f)) => Some(f.clone()),
            (Some(p), Some(f)) => Some(merge_forced(p, f)),
        })
    }

    /// The key a problem with the value at `path` is reported under: in `[machine.force]`
    /// when the value is forced there, else in `[machine]`.
    fn key(&self, path: &[&str]) -> String {
        let forced = self
            .force
            .is_some_and(|f| walk(f, path, "").ok().flatten().is_some());
        if forced {
            format!("machine.{FORCE_KEY}.{}", path.join("."))
        } else {
            format!("machine.{}", path.join("."))
        }
    }

    fn get_bool(&self, path: &[&str]) -> Result<Option<bool>, (String, String)> {
        match self.get(path)? {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(b)),
            Some(other) => Err((
                self.key(path),
                format!("must be true or false, found {}", other.type_str()),
            )),
        }
    }
}

/// `forced` over `plain` as the module system merges a `lib.mkForce`d leaf: tables merge
/// key by key, anything else is replaced.
fn merge_forced(plain: &toml::Value, forced: &toml::Value) -> toml::Value {
    match (plain, forced) {
        (toml::Value::Table(p), toml::Value::Table(f)) => {
            let mut out = p.clone();
            for (k, fv) in f {
                let merged = match p.get(k) {
                    Some(pv) => merge_forced(pv, fv),
                    None => fv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            toml::Value::Table(out)
        }
        _ => forced.clone(),
    }
}

/// Reads the facts the harness needs from the NixOS configuration, checking the type
/// of every option it reads. Returns (key path, reason) on a bad value. A value in
/// `[machine.force]` is the effective one ([`MachineView`]).
fn machine_facts(machine: &toml::Table) -> Result<MachineFacts, (String, String)> {
    let m = MachineView::new(machine)?;
    let mut facts = MachineFacts {
        device_name_strategy: "index".to_string(),
        ..MachineFacts::default()
    };
    engine_and_toolkit(&m, &mut facts)?;
    daemon_settings(&m, &mut facts)?;
    docker_group(&m, &mut facts)?;
    Ok(facts)
}

/// The engine (rootful, rootless, which one the socket variable points at) and the
/// container toolkit with its device naming.
fn engine_and_toolkit(
    m: &MachineView<'_>,
    facts: &mut MachineFacts,
) -> Result<(), (String, String)> {
    facts.docker_enabled = m
        .get_bool(&["virtualisation", "docker", "enable"])?
        .unwrap_or(false);
    facts.rootless_enabled = m
        .get_bool(&["virtualisation", "docker", "rootless", "enable"])?
        .unwrap_or(false);
    let socket_variable = ["virtualisation", "docker", "rootless", "setSocketVariable"];
    facts.rootless_default = m.get_bool(&socket_variable)?.unwrap_or(false);
    if facts.rootless_default && !facts.rootless_enabled {
        return Err((
            m.key(&socket_variable),
            "is true but rootless.enable is not: there is no rootless engine to point at".into(),
        ));
    }
    m.get_bool(&["virtualisation", "docker", "enableOnBoot"])?;
    facts.toolkit_enabled = m
        .get_bool(&["hardware", "nvidia-container-toolkit", "enable"])?
        .unwrap_or(false);
    m.get_bool(&[
        "hardware",
        "nvidia-container-toolkit",
        "suppressNvidiaDriverAssertion",
    ])?;
    let strategy = [
        "hardware",
        "nvidia-container-toolkit",
        "device-name-strategy",
    ];
    if let Some(v) = m.get(&strategy)? {
        let s = v.as_str().ok_or_else(|| {
            (
                m.key(&strategy),
                format!("must be a string, found {}", v.type_str()),
            )
        })?;
        if !["index", "uuid", "type-index"].contains(&s) {
            return Err((
                m.key(&strategy),
                format!("{s:?} is not one of \"index\", \"uuid\", \"type-index\""),
            ));
        }
        facts.device_name_strategy = s.to_string();
    }
    facts.enable_nvidia = m
        .get_bool(&["virtualisation", "docker", "enableNvidia"])?
        .unwrap_or(false);
    Ok(())
}

/// The engine's `daemon.json` as NixOS writes it: manual runtimes, the default runtime,
/// the CDI feature flag.
fn daemon_settings(m: &MachineView<'_>, facts: &mut MachineFacts) -> Result<(), (String, String)> {
    let settings = ["virtualisation", "docker", "daemon", "settings"];
    let runtimes = [&settings[..], &["runtimes"]].concat();
    if let Some(v) = m.get(&runtimes)? {
        let table = v.as_table().ok_or_else(|| {
            (
                m.key(&runtimes),
                format!("must be a table of runtimes, found {}", v.type_str()),
            )
        })?;
        for (name, rt) in table {
            let key = || m.key(&[&runtimes[..], &[name.as_str()]].concat());
            let json = serde_json::to_value(rt).map_err(|e| (key(), e.to_string()))?;
            if json.get("path").and_then(|p| p.as_str()).is_none() {
                return Err((
                    key(),
                    "a runtime needs a string `path` (as dockerd's daemon.json does)".into(),
                ));
            }
            facts.manual_runtimes.insert(name.clone(), json);
        }
    }
    let default_runtime = [&settings[..], &["default-runtime"]].concat();
    if let Some(v) = m.get(&default_runtime)? {
        facts.default_runtime = Some(
            v.as_str()
                .ok_or_else(|| {
                    (
                        m.key(&default_runtime),
                        format!("must be a string, found {}", v.type_str()),
                    )
                })?
                .to_string(),
        );
    }
    facts.cdi_feature = m.get_bool(&[&settings[..], &["features", "cdi"]].concat())?;
    Ok(())
}

/// The members of the `docker` group (who may use the rootful socket).
fn docker_group(m: &MachineView<'_>, facts: &mut MachineFacts) -> Result<(), (String, String)> {
    let members = ["users", "extraGroups", "docker", "members"];
    if let Some(v) = m.get(&members)? {
        let list = v.as_array().ok_or_else(|| {
            (
                m.key(&members),
                format!("must be a list of user names, found {}", v.type_str()),
            )
        })?;
        for (i, member) in list.iter().enumerate() {
            let s = member.as_str().ok_or_else(|| {
                (
                    format!("{}[{i}]", m.key(&members)),
                    format!("must be a user name string, found {}", member.type_str()),
                )
            })?;
            facts.docker_group_members.push(s.to_string());
        }
    }
    Ok(())
}

/// The value at `path` in `table`, if any; an intermediate value that is not a table is
/// an error naming its key under `prefix`.
fn walk<'a>(
    table: &'a toml::Table,
    path: &[&str],
    prefix: &str,
) -> Result<Option<&'a toml::Value>, (String, String)> {
    let mut cur = table;
    for (i, key) in path.iter().enumerate() {
        match cur.get(*key) {
            None => return Ok(None),
            Some(v) if i + 1 == path.len() => return Ok(Some(v)),
            Some(toml::Value::Table(t)) => cur = t,
            Some(other) => {
                return Err((
                    format!("{prefix}.{}", path[..=i].join(".")),
                    format!(
                        "must be a table (it holds option {}), found {}",
                        path[i + 1],
                        other.type_str()
                    ),
                ));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const SEED: &str = r#"
description = "the seed"
image = "nvidia/cuda:13.1.1-base-ubuntu24.04"

[machine.virtualisation.docker]
enable = true
enableOnBoot = false
rootless = { enable = true, setSocketVariable = false }

[machine.hardware.nvidia-container-toolkit]
enable = true

[machine.users.extraGroups.docker]
members = ["ryan"]

[gpus]
count = 1

[[run]]
name = "gpus_flag"
gpus = "all"
expect = "failure"
error = 'could not select device driver "" with capabilities: [[gpu]]'
"#;

    fn parse_seed(text: &str) -> Result<Scenario, ScenarioError> {
        // Declared failures model a broken machine, which no host is: such texts (in
        // the cases below) run on sim and in VMs only, unless they say otherwise.
        if text.contains("[[expect.fail]]") && !text.contains("applies-to") {
            let text = format!("applies-to = [\"sim\", \"vm\"]\n{text}");
            return parse(Path::new("scenarios/seed.toml"), &text);
        }
        parse(Path::new("scenarios/seed.toml"), text)
    }

    #[test]
    fn seed_parses_with_facts_and_default_devices() {
        let s = parse_seed(SEED).expect("seed parses");
        assert_eq!(s.name, "seed");
        assert!(s.facts.docker_enabled && s.facts.toolkit_enabled && s.facts.rootless_enabled);
        assert!(!s.facts.rootless_default);
        assert_eq!(s.facts.docker_group_members, vec!["ryan"]);
        let devs: Vec<String> = s.expected_devices.iter().map(|d| d.to_string()).collect();
        assert_eq!(devs, vec!["nvidia.com/gpu=0", "nvidia.com/gpu=all"]);
        assert_eq!(s.runs[0].command, vec!["nvidia-smi"]);
        assert!(s.facts.pitfalls().is_empty());
        assert!(s.check_names().contains(&"gpus_flag".to_string()));
    }

    #[test]
    fn unknown_keys_are_rejected_with_file_and_key() {
        let err = parse_seed(&format!("colour = 1\n{SEED}"))
            .expect_err("rejected")
            .to_string();
        assert!(err.starts_with("scenarios/seed.toml"), "{err}");
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err =
            parse_seed(&SEED.replace("name = \"gpus_flag\"", "name = \"gpus_flag\"\ndevice = []"))
                .expect_err("rejected")
                .to_string();
        assert!(err.contains("unknown field `device`"), "{err}");
    }

    #[test]
    fn wrong_types_are_rejected_with_file_and_key() {
        let err = parse_seed(&SEED.replace("count = 1", "count = \"one\""))
            .expect_err("rejected")
            .to_string();
        assert!(err.starts_with("scenarios/seed.toml"), "{err}");
        assert!(err.contains("count"), "{err}");
    }

    #[rstest]
    #[case::bad_device(
        SEED.replace("gpus = \"all\"", "devices = [\"nvidia.com/gpu=a b\"]"),
        "run[0].devices[0]"
    )]
    #[case::unqualified(SEED.replace("gpus = \"all\"", "devices = [\"nvidia.com/gpu\"]"), "run[0].devices[0]")]
    #[case::bad_image(SEED.replace("nvidia/cuda:13.1.1", "Nvidia/CUDA::13"), "`image`")]
    #[case::toolkit_not_bool(SEED.replace("[machine.hardware.nvidia-container-toolkit]\nenable = true", "[machine.hardware.nvidia-container-toolkit]\nenable = \"yes\""), "machine.hardware.nvidia-container-toolkit.enable")]
    #[case::members_not_list(SEED.replace("members = [\"ryan\"]", "members = \"ryan\""), "machine.users.extraGroups.docker.members")]
    #[case::failure_without_error(SEED.replace("error = 'could not select device driver \"\" with capabilities: [[gpu]]'", ""), "run[0].error")]
    #[case::builtin_name(SEED.replace("name = \"gpus_flag\"", "name = \"device_all\""), "run[0].name")]
    #[case::unknown_expected_failure(format!("{SEED}\n[[expect.fail]]\ncheck = \"nope\"\n"), "expect.fail[0].check")]
    #[case::expectation_empty_list(format!("{SEED}\n[[expect.fail]]\ncheck = \"spec_present\"\nmessage-contains = []\n"), "`expect.fail[0].message-contains`: is an empty list")]
    #[case::expectation_empty_text(format!("{SEED}\n[[expect.fail]]\ncheck = \"spec_present\"\nmessage-contains = [\"x\", \"\"]\n"), "`expect.fail[0].message-contains[1]`: is empty")]
    #[case::expectation_empty_fix_text(format!("{SEED}\n[[expect.fail]]\ncheck = \"spec_present\"\ncause = \"spec-missing\"\nfix-contains = [\" \"]\n"), "`expect.fail[0].fix-contains[0]`")]
    #[case::expectation_matching_anything(format!("{SEED}\n[[expect.fail]]\ncheck = \"spec_present\"\n"), "`expect.fail[0].cause`: a declared failure must say how to recognise it")]
    #[case::expectation_unknown_cause(format!("{SEED}\n[[expect.fail]]\ncheck = \"spec_present\"\ncause = \"gone\"\n"), "\"gone\" is not a cause the harness knows; use one of: spec-missing")]
    #[case::run_empty_error_contains(SEED.replace("error = 'could not select device driver \"\" with capabilities: [[gpu]]'", "error-contains = ''"), "`run[0].error-contains`: is empty")]
    #[case::run_empty_error(SEED.replace("error = 'could not select device driver \"\" with capabilities: [[gpu]]'", "error = ''"), "`run[0].error`: is empty")]
    #[case::run_unknown_cause(SEED.replace("error = 'could not select", "cause = \"nope\"\nerror = 'could not select"), "`run[0].cause`")]
    #[case::bad_pci(SEED.replace("count = 1", "count = 1\npci = [\"01:00\"]"), "gpus.pci[0]")]
    #[case::socket_without_rootless(SEED.replace("rootless = { enable = true, setSocketVariable = false }", "rootless = { enable = false, setSocketVariable = true }"), "setSocketVariable")]
    #[case::unknown_fault(format!("{SEED}\n[sim]\nfault = \"broken-driver\"\n"), "`sim.fault`: \"broken-driver\" is not a known fault")]
    #[case::fault_without_spec(format!("{SEED}\n[sim]\nspec = \"missing\"\nfault = \"failing-hook\"\n"), "`sim.fault`")]
    #[case::fault_not_string(format!("{SEED}\n[sim]\nfault = 1\n"), "fault")]
    #[case::runtime_without_path(format!("{SEED}\n[machine.virtualisation.docker.daemon.settings.runtimes.nvidia]\nargs = []\n"), "runtimes.nvidia")]
    #[case::count_word(SEED.replace("count = 1", "count = \"all\""), "`gpus.count`: must be \"auto\"")]
    #[case::count_negative(SEED.replace("count = 1", "count = -1"), "`gpus.count`")]
    #[case::auto_with_devices(SEED.replace("count = 1", "count = \"auto\"\n[expect]\ndevices = [\"nvidia.com/gpu=0\"]"), "`expect.devices`: a fixed list of devices needs a fixed gpus.count")]
    #[case::applies_unknown(format!("applies-to = [\"sim\", \"cloud\"]\n{SEED}"), "`applies-to[1]`: \"cloud\" is not a place")]
    #[case::applies_twice(format!("applies-to = [\"vm\", \"vm\"]\n{SEED}"), "`applies-to[1]`: \"vm\" is listed twice")]
    #[case::applies_empty(format!("applies-to = []\n{SEED}"), "`applies-to`: is an empty list")]
    #[case::applies_not_list(format!("applies-to = \"sim\"\n{SEED}"), "applies-to")]
    #[case::broken_on_host(format!("applies-to = [\"sim\", \"host\"]\n{SEED}\n[[expect.fail]]\ncheck = \"spec_present\"\ncause = \"spec-missing\"\n"), "`applies-to`: includes \"host\", but the scenario declares failures")]
    fn invalid_values_name_the_key(#[case] text: String, #[case] key: &str) {
        let err = parse_seed(&text).expect_err("rejected").to_string();
        assert!(err.starts_with("scenarios/seed.toml"), "{err}");
        assert!(err.contains(key), "expected key {key} in: {err}");
    }

    #[test]
    fn count_auto_is_the_default_with_the_sim_count_until_a_host_resolves_it() {
        for text in [
            SEED.replace("count = 1", "count = \"auto\""),
            SEED.replace("[gpus]\ncount = 1\n", ""),
        ] {
            let s = parse_seed(&text).expect("parses");
            assert_eq!(s.gpus.declared, GpuCount::Auto);
            assert_eq!(s.gpus.count, SIM_AUTO_GPU_COUNT);
            assert_eq!(s.expected_devices.len(), SIM_AUTO_GPU_COUNT as usize + 1);
            assert_eq!(s.export_json()["gpus"]["declared"], "auto");
            assert_eq!(s.export_json()["gpus"]["count"], SIM_AUTO_GPU_COUNT);
        }
        let pci = SEED.replace(
            "count = 1",
            "count = \"auto\"\npci = [\"0000:01:00.0\", \"0000:02:00.0\", \"0000:03:00.0\"]",
        );
        assert_eq!(parse_seed(&pci).expect("parses").gpus.count, 3);
        let fixed = parse_seed(SEED).expect("parses");
        assert_eq!(fixed.gpus.declared, GpuCount::Fixed(1));
        assert_eq!(fixed.export_json()["gpus"]["declared"], 1);
    }

    #[test]
    fn applies_to_defaults_to_everywhere_and_is_exported_in_order() {
        let s = parse_seed(SEED).expect("parses");
        assert_eq!(s.applies_to, Place::ALL.to_vec());
        let s = parse_seed(&format!("applies-to = [\"vm\", \"sim\"]\n{SEED}")).expect("parses");
        assert!(s.applies_at(Place::Sim) && s.applies_at(Place::Vm));
        assert!(!s.applies_at(Place::Host));
        assert_eq!(
            s.export_json()["appliesTo"],
            serde_json::json!(["sim", "vm"])
        );
    }

    #[test]
    fn manual_runtime_is_a_pitfall_with_the_seed_fix() {
        let text = format!(
            "{SEED}\n[machine.virtualisation.docker.daemon.settings.runtimes.nvidia]\npath = \"nvidia-container-runtime\"\n"
        );
        let s = parse_seed(&text).expect("parses");
        let pitfalls = s.facts.pitfalls();
        assert_eq!(pitfalls.len(), 1);
        assert!(pitfalls[0].0.contains("daemon.settings.runtimes.nvidia"));
        assert!(
            pitfalls[0]
                .1
                .contains("hardware.nvidia-container-toolkit.enable = true")
        );
    }

    #[test]
    fn known_faults_parse() {
        for (text, fault) in [
            (
                "missing-mount-host-path",
                crate::sim::SpecFault::MissingMountHostPath,
            ),
            ("failing-hook", crate::sim::SpecFault::FailingHook),
        ] {
            let s = parse_seed(&format!("{SEED}\n[sim]\nfault = \"{text}\"\n")).expect("parses");
            assert_eq!(s.sim.fault, Some(fault));
            assert_eq!(fault.as_str(), text);
        }
        assert_eq!(parse_seed(SEED).expect("parses").sim.fault, None);
    }

    #[test]
    fn expected_devices_follow_gpu_count() {
        let s = parse_seed(&SEED.replace("count = 1", "count = 4")).expect("parses");
        let devs: Vec<String> = s.expected_devices.iter().map(|d| d.to_string()).collect();
        assert_eq!(devs.len(), 5);
        assert_eq!(devs[3], "nvidia.com/gpu=3");
        assert!(s.check_names().contains(&"device_3".to_string()));
    }

    #[rstest]
    #[case("nvidia/cuda:13.1.1-base-ubuntu24.04", true)]
    #[case("localhost:5000/team/cuda:12", true)]
    #[case("cdi-harness/busybox:sim", true)]
    #[case(
        "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        true
    )]
    #[case("Nvidia/cuda", false)]
    #[case("nvidia/cuda::13", false)]
    #[case("nvidia/cuda:tag with space", false)]
    #[case("nvidia/cuda:t\u{e9}g", false)]
    #[case("", false)]
    fn image_references_follow_the_engine_grammar(#[case] image: &str, #[case] ok: bool) {
        assert_eq!(
            validate_image(image).is_ok(),
            ok,
            "{image}: {:?}",
            validate_image(image)
        );
    }

    #[test]
    fn export_carries_machine_verbatim_and_the_facts() {
        let text = format!(
            "{SEED}\n[machine.virtualisation.docker.daemon.settings.runtimes.nvidia]\npath = \"nvidia-container-runtime\"\n"
        );
        let v = parse_seed(&text).expect("parses").export_json();
        assert_eq!(v["name"], "seed");
        assert_eq!(
            v["machine"]["virtualisation"]["docker"]["rootless"]["setSocketVariable"],
            false
        );
        assert_eq!(v["facts"]["rootlessDefault"], false);
        assert_eq!(v["facts"]["cdiEnabled"], true);
        assert_eq!(
            v["facts"]["manualRuntimes"]["nvidia"]["path"],
            "nvidia-container-runtime"
        );
        assert_eq!(v["facts"]["dockerGroupMembers"][0], "ryan");
        assert_eq!(
            v["expectedDevices"],
            serde_json::json!(["nvidia.com/gpu=0", "nvidia.com/gpu=all"])
        );
    }

    const CDI_FORCED_OFF: &str =
        "\n[machine.force.virtualisation.docker.daemon.settings.features]\ncdi = false\n";

    #[test]
    fn a_forced_value_is_the_effective_one() {
        let s = parse_seed(&format!("{SEED}{CDI_FORCED_OFF}")).expect("parses");
        assert_eq!(s.facts.cdi_feature, Some(false));
        assert!(!s.facts.cdi_enabled());
        // It wins over the same option set plainly, as lib.mkForce does.
        let both = format!(
            "{SEED}\n[machine.virtualisation.docker.daemon.settings.features]\ncdi = true\n{CDI_FORCED_OFF}"
        );
        assert_eq!(
            parse_seed(&both).expect("parses").facts.cdi_feature,
            Some(false)
        );
        let v = parse_seed(&format!("{SEED}{CDI_FORCED_OFF}"))
            .expect("parses")
            .export_json();
        assert_eq!(v["facts"]["cdiEnabled"], false);
        assert_eq!(
            v["machine"]["force"]["virtualisation"]["docker"]["daemon"]["settings"]["features"]["cdi"],
            false
        );
    }

    #[test]
    fn forced_leaves_merge_into_plain_tables() {
        let text = format!(
            "{SEED}\n[machine.virtualisation.docker.daemon.settings.runtimes.nvidia]\npath = \"nvidia-container-runtime\"\n\
             [machine.force.virtualisation.docker.daemon.settings.runtimes.nvidia]\nargs = [\"--debug\"]\n"
        );
        let s = parse_seed(&text).expect("parses");
        assert_eq!(
            s.facts.manual_runtimes["nvidia"],
            serde_json::json!({ "path": "nvidia-container-runtime", "args": ["--debug"] })
        );
    }

    #[rstest]
    #[case::force_not_a_table("[machine]\nforce = 1\n", "machine.force")]
    #[case::forced_wrong_type(
        "[machine.force.virtualisation.docker]\nenable = \"yes\"\n",
        "machine.force.virtualisation.docker.enable"
    )]
    #[case::forced_runtime_without_path(
        "[machine.force.virtualisation.docker.daemon.settings.runtimes.nvidia]\nargs = []\n",
        "machine.force.virtualisation.docker.daemon.settings.runtimes.nvidia"
    )]
    #[case::forced_intermediate_not_a_table(
        "[machine.force.virtualisation]\ndocker = 3\n",
        "machine.force.virtualisation.docker"
    )]
    fn bad_forced_values_name_the_force_key(#[case] extra: &str, #[case] key: &str) {
        let text = format!("description = \"d\"\n[gpus]\ncount = 1\n{}", extra);
        match parse_seed(&text).expect_err("rejected") {
            ScenarioError::Invalid { key: k, .. } => assert_eq!(k, key),
            other => panic!("not an Invalid error: {other}"),
        }
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        std::fs::write(a.join("seed.toml"), SEED).expect("write");
        std::fs::write(b.join("seed.toml"), SEED).expect("write");
        let err = load_all(&[a.join("seed.toml"), b.join("seed.toml")]).expect_err("duplicate");
        assert!(matches!(err, ScenarioError::Duplicate { .. }), "{err}");
    }

    /// The scenario text with `[gpus]` replaced.
    fn with_gpus(gpus: &str) -> String {
        format!(
            "description = \"d\"\n[machine.virtualisation.docker]\nenable = true\n[gpus]\n{gpus}\n"
        )
    }

    #[test]
    fn zero_gpus_needs_none_true_and_none_needs_zero() {
        match parse_seed(&with_gpus("count = 0")).expect_err("rejected") {
            ScenarioError::Invalid { key, reason, .. } => {
                assert_eq!(key, "gpus.count");
                assert!(reason.contains("none = true"), "{reason}");
            }
            other => panic!("not an Invalid error: {other}"),
        }
        let s = parse_seed(&with_gpus("count = 0\nnone = true")).expect("a machine without GPUs");
        assert_eq!(s.gpus.count, 0);
        match parse_seed(&with_gpus("count = 2\nnone = true")).expect_err("rejected") {
            ScenarioError::Invalid { key, .. } => assert_eq!(key, "gpus.none"),
            other => panic!("not an Invalid error: {other}"),
        }
    }

    #[test]
    fn an_empty_program_is_rejected_naming_the_file_and_key() {
        let text = format!(
            "{}[[run]]\nname = \"x\"\ncommand = [\"\"]\nexpect = \"success\"\n",
            with_gpus("count = 1")
        );
        let err = parse_seed(&text).expect_err("rejected");
        let msg = err.to_string();
        assert!(
            msg.starts_with("scenarios/seed.toml: `run[0].command[0]`: is empty"),
            "{msg}"
        );
    }

    #[test]
    fn hostile_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A FIFO with no writer would block a plain open forever.
        let fifo = dir.path().join("fifo.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let t = std::time::Instant::now();
        let err = load(&fifo).expect_err("a FIFO is refused");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            err.to_string()
                .contains("is a FIFO (named pipe), not a scenario file"),
            "{err}"
        );
        let err = load(Path::new("/dev/zero")).expect_err("a device is refused");
        assert!(
            err.to_string().contains("/dev/zero: is a character device"),
            "{err}"
        );

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_SCENARIO_BYTES as usize + 1]).expect("write");
        let err = load(&big).expect_err("too large");
        assert!(
            err.to_string().contains("larger than 1048576 bytes"),
            "{err}"
        );

        let latin1 = dir.path().join("latin1.toml");
        std::fs::write(&latin1, b"description = \"caf\xe9\"\n").expect("write");
        let err = load(&latin1).expect_err("not UTF-8");
        assert!(
            err.to_string()
                .contains("not valid UTF-8 (first invalid byte at offset 18)"),
            "{err}"
        );

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let err = load_paths(std::slice::from_ref(&empty)).expect_err("empty dir");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: no scenario files", empty.display())),
            "{err}"
        );
    }
}
