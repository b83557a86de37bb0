//! The result model shared by the runner, the reports and the test harness.
//!
//! Kept free of engine or scenario types so that reports can be read back (for
//! diffs and history) without any engine present.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Version of the JSON report layout; bump it when a field changes meaning.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// The verdict of one check. A skip always carries its reason in the message:
/// a check that could not run is never reported as passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check held (or, for a check the scenario declares must fail, it failed as declared).
    Pass,
    /// The check did not hold.
    Fail,
    /// The check could not run here; the message says why.
    Skip,
}

impl Status {
    /// Lower-case name, as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
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

    /// What `--backend auto` means: the machine's own engine where an NVIDIA driver is
    /// loaded (`/dev/nvidiactl` exists), else the simulated backend.
    pub fn auto() -> BackendKind {
        if std::path::Path::new("/dev/nvidiactl").exists() {
            BackendKind::Host
        } else {
            BackendKind::Sim
        }
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
    pub gpus: Vec<GpuFacts>,
    /// True when driver and GPUs are the `sim` backend's inventions, not real hardware.
    pub simulated: bool,
}

/// One GPU as `nvidia-smi -L` and NVML name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuFacts {
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
}

impl RunReport {
    /// Counts of (pass, fail, skip).
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |s| self.results.iter().filter(|r| r.status == s).count();
        (
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip),
        )
    }

    /// True when no check failed (skips do not fail a run).
    pub fn succeeded(&self) -> bool {
        self.results.iter().all(|r| r.status != Status::Fail)
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
