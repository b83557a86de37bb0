//! The result model shared by the runner, the reports and the test harness.
//!
//! Kept free of engine or scenario types so that reports can be read back (for
//! diffs and history) without any engine present.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Version of the JSON report layout; bump it when a field changes meaning.
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// The verdict of one check. A skip always carries its reason in the message:
/// a check that could not run is never reported as passed, and a check that failed
/// as a broken-machine scenario declares is `Xfail`, never a plain pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check held on evidence it compared.
    Pass,
    /// The check did not hold (or a declared failure did not happen as declared).
    Fail,
    /// The check could not run here; the message says why.
    Skip,
    /// The check failed, for the cause and with the texts the scenario declares: the
    /// harness diagnosed the broken machine it models. Does not fail a run.
    Xfail,
    /// A first snapshot was recorded (`.snap.new`) and awaits review; nothing was
    /// compared. Does not fail a run outside CI (in CI it is a `Fail`).
    New,
}

impl Status {
    /// Lower-case name, as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Xfail => "xfail",
            Status::New => "new",
        }
    }

    /// Whether this status fails a run (exit 1, a failed trial).
    pub fn is_failure(self) -> bool {
        self == Status::Fail
    }
}

/// Where a result's evidence came from, so that a reader can tell a machine fact from
/// a restated scenario or something the simulator built on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// Read from the engine or the machine in this run.
    Measured,
    /// Restated from the scenario file; proves nothing about the machine.
    Declared,
    /// Built by the `sim` backend itself (it wrote both sides of the comparison), so it
    /// shows the harness's own consistency, not a machine's.
    Constructed,
}

impl Evidence {
    /// Lower-case name, as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Measured => "measured",
            Evidence::Declared => "declared",
            Evidence::Constructed => "constructed",
        }
    }
}

/// Why a check failed, when the harness knows: scenarios declare the cause a broken
/// machine must fail with (`cause = "spec-missing"`), and a failure with another cause
/// never counts as the declared one. Names are the scenario file's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The generated spec file is not in any spec directory.
    SpecMissing,
    /// A spec file does not load or does not validate.
    SpecInvalid,
    /// Two spec files define the same devices; the engine drops them.
    SpecConflict,
    /// The spec does not match the driver or the GPUs (written before this boot, for
    /// another driver version, for other GPUs, or listing the wrong devices).
    SpecStale,
    /// The engine has CDI off (no spec dirs; `could not select device driver "cdi"`).
    CdiDisabled,
    /// The engine does not know a requested CDI device.
    DeviceUnresolvable,
    /// A CDI hook failed at container start.
    HookFailed,
    /// A spec mount names a host path that is gone.
    MountMissing,
    /// A spec device node is missing on the host.
    DeviceNodeMissing,
    /// A manual NVIDIA runtime is configured, or its binary is gone.
    ManualRuntime,
    /// `--gpus` has no device driver (`could not select device driver ""`).
    NoGpuDriver,
    /// The image is not on the engine.
    ImageMissing,
    /// The engine could not be reached (socket missing, refused, not answering).
    EngineUnreachable,
    /// The engine's socket (or a file the check needs) may not be used by this user.
    PermissionDenied,
    /// An engine call or a container ran past its time limit.
    Timeout,
    /// The engine the checks reached is not the machine's default one.
    WrongEngine,
    /// A container ran but its output or exit status was not the expected one.
    WrongOutput,
    /// The machine's configuration has a known pitfall.
    ConfigPitfall,
    /// A `--restart always` GPU container did not come back after an engine restart.
    RestartRegression,
    /// The engine died during the run without being asked to restart.
    EngineDied,
    /// The stored snapshot differs, or there is none in CI.
    SnapshotChanged,
    /// Containers of this run were left on the engine.
    Leftovers,
    /// The engine warns about refused spec files.
    EngineWarning,
    /// The run was interrupted before this check finished.
    Interrupted,
    /// The harness itself failed (a panic, a crash): a bug to report.
    HarnessBug,
}

impl Cause {
    /// Every cause, for messages that list the valid names.
    pub const ALL: &'static [Cause] = &[
        Cause::SpecMissing,
        Cause::SpecInvalid,
        Cause::SpecConflict,
        Cause::SpecStale,
        Cause::CdiDisabled,
        Cause::DeviceUnresolvable,
        Cause::HookFailed,
        Cause::MountMissing,
        Cause::DeviceNodeMissing,
        Cause::ManualRuntime,
        Cause::NoGpuDriver,
        Cause::ImageMissing,
        Cause::EngineUnreachable,
        Cause::PermissionDenied,
        Cause::Timeout,
        Cause::WrongEngine,
        Cause::WrongOutput,
        Cause::ConfigPitfall,
        Cause::RestartRegression,
        Cause::EngineDied,
        Cause::SnapshotChanged,
        Cause::Leftovers,
        Cause::EngineWarning,
        Cause::Interrupted,
        Cause::HarnessBug,
    ];

    /// The scenario-file spelling, e.g. `spec-missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::SpecMissing => "spec-missing",
            Cause::SpecInvalid => "spec-invalid",
            Cause::SpecConflict => "spec-conflict",
            Cause::SpecStale => "spec-stale",
            Cause::CdiDisabled => "cdi-disabled",
            Cause::DeviceUnresolvable => "device-unresolvable",
            Cause::HookFailed => "hook-failed",
            Cause::MountMissing => "mount-missing",
            Cause::DeviceNodeMissing => "device-node-missing",
            Cause::ManualRuntime => "manual-runtime",
            Cause::NoGpuDriver => "no-gpu-driver",
            Cause::ImageMissing => "image-missing",
            Cause::EngineUnreachable => "engine-unreachable",
            Cause::PermissionDenied => "permission-denied",
            Cause::Timeout => "timeout",
            Cause::WrongEngine => "wrong-engine",
            Cause::WrongOutput => "wrong-output",
            Cause::ConfigPitfall => "config-pitfall",
            Cause::RestartRegression => "restart-regression",
            Cause::EngineDied => "engine-died",
            Cause::SnapshotChanged => "snapshot-changed",
            Cause::Leftovers => "leftovers",
            Cause::EngineWarning => "engine-warning",
            Cause::Interrupted => "interrupted",
            Cause::HarnessBug => "harness-bug",
        }
    }

    /// Parses the scenario-file spelling.
    pub fn parse(name: &str) -> Option<Cause> {
        Cause::ALL.iter().copied().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which engine the checks ran against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The machine's own Docker engine and CDI specs: what is really there.
    Host,
    /// A private engine started by the harness with a simulated NVIDIA spec.
    Sim,
}

impl BackendKind {
    /// Lower-case name, as written in reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Host => "host",
            BackendKind::Sim => "sim",
        }
    }

    /// What `--backend auto` means on this machine: the machine's own engine when the
    /// NVIDIA driver reports GPUs and the default engine is reachable with CDI on, else
    /// the simulated backend ([`crate::select::choose`] says why; use it to print that).
    pub fn auto() -> BackendKind {
        crate::select::choose(Some("auto"), &crate::host::SystemHost)
            .map(|c| c.backend)
            .unwrap_or(BackendKind::Sim)
    }

    /// Whether results from this backend come from a simulation and must be labelled so.
    pub fn simulated(self) -> bool {
        matches!(self, BackendKind::Sim)
    }
}

/// The outcome of one check of one scenario: one libtest-mimic trial, one JSON record,
/// one JUnit test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Scenario name (the file stem), e.g. `seed`.
    pub scenario: String,
    /// Check name, e.g. `device_all`; the trial is `<scenario>::<check>`.
    pub check: String,
    /// The verdict.
    pub status: Status,
    /// What was seen; for a skip, why it was skipped.
    pub message: String,
    /// What the user should do about a failure, when the harness knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Why it failed (or, for `xfail`, the cause it failed with), when the harness knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Where the evidence came from (absent in reports older than schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Wall time the check took.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    /// The backend it ran on.
    pub backend: BackendKind,
    /// True when the result comes from the `sim` backend.
    pub simulated: bool,
}

impl CheckResult {
    /// The libtest-mimic trial name, `<scenario>::<check>`.
    pub fn trial_name(&self) -> String {
        format!("{}::{}", self.scenario, self.check)
    }
}

/// Facts about the engine a run talked to, for the report header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineFacts {
    /// `docker version` server version, e.g. `28.5.2+dfsg4`.
    pub version: Option<String>,
    /// Negotiated API version.
    pub api_version: Option<String>,
    /// Where the harness reached it (`unix:///…`).
    pub endpoint: Option<String>,
    /// The NVIDIA driver and GPUs behind the engine, when known: on `sim` the simulated
    /// ones (labelled so), on `host` only what is cheaply known. A diff between two
    /// nights can then tell a driver change from a toolkit or engine change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareFacts>,
}

/// The driver and GPU inventory a scenario ran against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HardwareFacts {
    /// NVIDIA driver version, e.g. `580.95.05`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// The GPUs, by index.
    #[serde(default)]
    pub gpus: Vec<GpuRecord>,
    /// True when driver and GPUs are the `sim` backend's inventions, not real hardware.
    pub simulated: bool,
}

/// One GPU as `nvidia-smi -L` and NVML name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    /// Device index (`nvidia.com/gpu=<index>`).
    pub index: u32,
    /// `GPU-…` UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// PCI bus id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
}

/// One locked flake input (a node of `flake.lock`), as `cdi-harness nightly` records it so
/// that a regression can be traced to the input update that caused it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlakeInput {
    /// Source type (`github`, `git`, `path`, `tarball`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    /// GitHub (or GitLab, sourcehut) owner, for `github`-like inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Repository name, for `github`-like inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// URL, for `git`, `tarball` and similar inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Locked revision (commit hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// Locked NAR hash (`sha256-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nar_hash: Option<String>,
    /// Unix time of the locked revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<i64>,
}

/// One whole run: every check of every scenario selected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`REPORT_SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// The backend of every result in this report.
    pub backend: BackendKind,
    /// True when the results come from the `sim` backend.
    pub simulated: bool,
    /// RFC 3339 start time (UTC).
    pub started_at: String,
    /// Total wall time.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    /// Engine facts per scenario name (each sim scenario has its own private engine).
    #[serde(default)]
    pub engines: BTreeMap<String, EngineFacts>,
    /// Every check result, in scenario then check order.
    pub results: Vec<CheckResult>,
    /// The flake inputs the run was built from, by `flake.lock` node name, when known
    /// (`cdi-harness nightly` fills it; `run` does not know them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake_inputs: Option<BTreeMap<String, FlakeInput>>,
    /// The normalized CDI spec (`cdi-harness cdi normalize` form) per scenario, when the
    /// scenario's spec file was found, so `report diff` can show how the spec changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub specs: BTreeMap<String, serde_json::Value>,
    /// True when the run was cut short (Ctrl-C, SIGTERM, a crash): its results are
    /// incomplete and `report diff` refuses to judge against it.
    #[serde(default)]
    pub interrupted: bool,
}

impl RunReport {
    /// How many results have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    /// Counts of (pass, fail, skip).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.count(Status::Pass),
            self.count(Status::Fail),
            self.count(Status::Skip),
        )
    }

    /// True when no check failed (skips, xfails and new snapshots do not fail a run).
    pub fn succeeded(&self) -> bool {
        self.results.iter().all(|r| !r.status.is_failure())
    }
}

/// Durations are written as fractional seconds: readable in JSON and by any tool.
mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// A check's verdict as its evaluator gives it, before the scenario's declared
/// expectations are applied and before it becomes a [`CheckResult`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Pass, fail or skip (an evaluator never gives `Xfail` or `New` itself: the
    /// expectation and the snapshot mapping do).
    pub status: Status,
    /// What was seen (for a skip: why).
    pub message: String,
    /// What to do about a failure.
    pub fix: Option<String>,
    /// Why it failed, when known: what a scenario's `cause = …` is matched against.
    pub cause: Option<Cause>,
    /// Where its evidence came from; `None` lets the catalogue give the check's default.
    pub evidence: Option<Evidence>,
}

impl Verdict {
    /// A pass.
    pub fn pass(message: impl Into<String>) -> Verdict {
        Verdict::new(Status::Pass, message, None)
    }

    /// A failure with an optional fix.
    pub fn fail(message: impl Into<String>, fix: Option<String>) -> Verdict {
        Verdict::new(Status::Fail, message, fix)
    }

    /// A skip; the reason is mandatory.
    pub fn skip(reason: impl Into<String>) -> Verdict {
        Verdict::new(Status::Skip, reason, None)
    }

    /// A first snapshot recorded for review: nothing compared, nothing failed.
    pub fn recorded(message: impl Into<String>) -> Verdict {
        Verdict::new(Status::New, message, None)
    }

    fn new(status: Status, message: impl Into<String>, fix: Option<String>) -> Verdict {
        Verdict {
            status,
            message: message.into(),
            fix,
            cause: None,
            evidence: None,
        }
    }

    /// The same verdict with its cause known.
    pub fn because(mut self, cause: Cause) -> Verdict {
        self.cause = Some(cause);
        self
    }

    /// The same verdict with its cause, when one is known.
    pub fn because_of(mut self, cause: Option<Cause>) -> Verdict {
        if cause.is_some() {
            self.cause = cause;
        }
        self
    }

    /// The same verdict with its evidence stated.
    pub fn with_evidence(mut self, evidence: Evidence) -> Verdict {
        self.evidence = Some(evidence);
        self
    }
}
