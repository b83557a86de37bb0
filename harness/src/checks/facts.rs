//! What the runner gathers for one scenario: the only input of the evaluators. Every
//! read of the file system or the engine happens in the runner and lands here, so each
//! verdict is a pure function that tests drive with recorded outputs. Errors stay typed
//! ([`FactError`] carries its [`Cause`]) so that fixes and declared causes follow the
//! kind of error, never a substring of its text.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cdi::Registry;
use crate::engine::{CliInfo, ContainerStateFacts, EngineError, EngineInfo, RunOutcome};
use crate::outcome::{BackendKind, Cause, Verdict};
use crate::smi::ListedGpu;

/// Why a fact could not be gathered: the text for the user and, when the harness knows
/// it from the kind of error, its cause.
#[derive(Debug, Clone, PartialEq)]
pub struct FactError {
    /// What went wrong, with the error's own advice.
    pub message: String,
    /// The cause, from the error's kind.
    pub cause: Option<Cause>,
}

impl FactError {
    /// An error with a known (or no) cause.
    pub fn new(message: impl Into<String>, cause: Option<Cause>) -> FactError {
        FactError {
            message: message.into(),
            cause,
        }
    }
}

impl std::fmt::Display for FactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&EngineError> for FactError {
    fn from(e: &EngineError) -> FactError {
        let cause = match e {
            EngineError::NoSocket { .. }
            | EngineError::Transport { .. }
            | EngineError::Refused { .. }
            | EngineError::ConnectionLost { .. } => Some(Cause::EngineUnreachable),
            EngineError::PermissionDenied { .. } => Some(Cause::PermissionDenied),
            EngineError::Timeout { .. } => Some(Cause::Timeout),
            EngineError::Interrupted { .. } => Some(Cause::Interrupted),
            EngineError::NoExitCode { .. } => Some(Cause::EngineDied),
            EngineError::Daemon { message, .. } => crate::hints::classify(message),
            EngineError::Cli { .. } => None,
        };
        FactError::new(e.to_string(), cause)
    }
}

impl From<EngineError> for FactError {
    fn from(e: EngineError) -> FactError {
        FactError::from(&e)
    }
}

pub use crate::host::MachineProbe;

/// Everything the runner gathered for one scenario; the input of every evaluator.
#[derive(Debug, Default)]
pub struct Facts {
    /// The backend.
    pub backend: Option<BackendKind>,
    /// Spec dirs searched, in engine priority order.
    pub spec_dirs: Vec<PathBuf>,
    /// Where those dirs came from, for messages.
    pub spec_dirs_source: String,
    /// Why the spec files cannot be read from here (a remote engine's files are on its
    /// own machine); the spec checks skip with this reason.
    pub specs_unreachable: Option<String>,
    /// Why the spec files could not be read at all (the loader crashed): the spec
    /// checks fail with it rather than skip as if nothing had been asked.
    pub specs_error: Option<FactError>,
    /// The specs as the engine would load them.
    pub registry: Option<Registry>,
    /// The copies of the scenario's spec file that exist, in spec-dir order.
    pub spec_files: Vec<PathBuf>,
    /// The modification time of the loaded spec file, when known.
    pub spec_mtime: Option<SystemTime>,
    /// Canonical forms of the spec dirs and of the engine's reported dirs (symlinks
    /// such as `/var/run` → `/run` resolved), for comparing them.
    pub canonical_dirs: BTreeMap<PathBuf, PathBuf>,
    /// `GET /info`, or why it failed.
    pub info: Option<Result<EngineInfo, FactError>>,
    /// CLI `docker info`, or why it could not run (`Err`), or no CLI (`None`).
    pub cli: Option<Result<CliInfo, FactError>>,
    /// Container runs by check name (`device_all`, `device_0`, declared runs).
    pub runs: BTreeMap<String, Result<RunOutcome, FactError>>,
    /// Snapshot verdict, computed by the runner (it needs the file system).
    pub snapshot: Option<Verdict>,
    /// Containers of this run still present after every check.
    pub leftovers: Option<Result<Vec<String>, FactError>>,
    /// The driver's GPUs (NVML on `host`, the simulated ones on `sim`) and the boot
    /// time, for the cross-checks `gpu_spec`, `gpu_containers` and `spec_fresh`.
    pub gpu: Option<crate::gpu::GpuFacts>,
    /// What the `restart_always` flow saw (only `sim` runs it).
    pub restart_always: Option<RestartOutcome>,
    /// What the machine runs (only `host` probes it).
    pub machine: Option<MachineProbe>,
}

impl Facts {
    /// The canonical form of `dir` as the runner resolved it, else `dir` itself.
    pub fn canonical<'a>(&'a self, dir: &'a std::path::Path) -> &'a std::path::Path {
        self.canonical_dirs
            .get(dir)
            .map(PathBuf::as_path)
            .unwrap_or(dir)
    }
}

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
        first_start: Duration,
        /// The engine's SIGTERM, exit, start and first `/_ping`.
        engine_restart: Duration,
        /// From the engine answering again until the container ran and listed GPUs.
        back_after: Duration,
    },
    /// Not running again (or without a new listing) within `waited` of the engine
    /// answering.
    NotBack {
        /// How long the harness waited.
        waited: Duration,
        /// Its state at the end.
        state: ContainerStateFacts,
        /// The last lines of its log.
        log: String,
    },
    /// An engine call failed during the flow.
    Error(String),
}
