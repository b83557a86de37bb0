//! The checks: one catalogue entry per [`CheckId`] gives what the check needs gathered,
//! the backends where it means something, where its evidence comes from, and its
//! evaluator, a pure function of the gathered [`Facts`]. The runner gathers what the
//! catalogue asks for and calls [`evaluate`]; nothing else decides a verdict.
//!
//! To add a check: a [`CheckId`] variant (in `check_id`), its entry in [`entry`], and
//! its evaluator in the module of its kind (`spec`, `info`, `containers`, `restart`,
//! `machine`); a row in README's check table.

mod compare;
mod containers;
pub mod expect;
mod facts;
mod info;
mod machine;
mod restart;
mod spec;

use std::collections::BTreeSet;

pub use crate::check_id::{CheckId, ids_for, is_builtin};
pub use crate::outcome::Verdict;
pub use facts::{FactError, Facts, MachineProbe, RestartOutcome};
pub use restart::RESTART_HOST_REASON;

use crate::outcome::{BackendKind, Evidence, Status};
use crate::scenario::Scenario;

/// A fact the runner gathers for the checks that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The spec dirs loaded as the engine loads them, with the spec file's copies.
    Specs,
    /// `GET /info`.
    Info,
    /// The `docker info` CLI text.
    Cli,
    /// This check's own container (device checks, declared runs).
    OwnContainer,
    /// Every device container (`device_all` and each `device_<N>`).
    AllDeviceContainers,
    /// The normalized spec compared with its snapshot.
    Snapshot,
    /// The GPU inventory (NVML, or the sim's) and the boot time.
    Gpu,
    /// The engine-restart flow.
    Restart,
    /// This run's containers listed after every other check.
    Leftovers,
    /// The machine's generator unit and daemon config (host only).
    Machine,
}

/// Whether a check means something on a backend, and if not, why.
#[derive(Debug, Clone, Copy)]
pub enum Applies {
    /// It runs there.
    Yes,
    /// It is skipped there with this reason.
    No(&'static str),
}

/// A check's catalogue entry.
pub struct Entry {
    /// What it proves, in one line (for `list` and the docs).
    pub summary: &'static str,
    /// What the runner must gather for it.
    pub needs: &'static [Need],
    /// Where it means something on `host`.
    pub on_host: Applies,
    /// Where it means something on `sim`.
    pub on_sim: Applies,
    /// Where its evidence comes from on `host`.
    pub host_evidence: Evidence,
    /// Where its evidence comes from on `sim`: `constructed` where the sim built both
    /// sides of the comparison.
    pub sim_evidence: Evidence,
    /// The verdict from the facts.
    pub evaluate: fn(&Scenario, &Facts, &CheckId) -> Verdict,
}

use Evidence::{Constructed, Declared, Measured};

const fn entry_of(
    summary: &'static str,
    needs: &'static [Need],
    sim_evidence: Evidence,
    evaluate: fn(&Scenario, &Facts, &CheckId) -> Verdict,
) -> Entry {
    Entry {
        summary,
        needs,
        on_host: Applies::Yes,
        on_sim: Applies::Yes,
        host_evidence: Measured,
        sim_evidence,
        evaluate,
    }
}

static MACHINE_CONFIG: Entry = Entry {
    host_evidence: Measured,
    ..entry_of(
        "the NixOS configuration has none of the write-up's pitfalls; on a host, the machine runs what it declares",
        &[Need::Info, Need::Machine],
        Declared,
        machine::machine_config,
    )
};
static SPEC_PRESENT: Entry = entry_of(
    "the generated spec file is in a spec directory",
    &[Need::Specs],
    Constructed,
    spec::spec_present,
);
static SPEC_VALID: Entry = entry_of(
    "every spec file loads and validates",
    &[Need::Specs],
    Constructed,
    spec::spec_valid,
);
static SPEC_FRESH: Entry = entry_of(
    "the spec was written this boot, for the loaded driver",
    &[Need::Specs, Need::Gpu],
    Constructed,
    spec::gpu_cross_check,
);
static SPEC_DEVICES: Entry = entry_of(
    "the spec dirs resolve exactly the expected devices",
    &[Need::Specs],
    Constructed,
    spec::spec_devices,
);
static GPU_SPEC: Entry = entry_of(
    "the spec's GPUs are the driver's GPUs",
    &[Need::Specs, Need::Gpu],
    Constructed,
    spec::gpu_cross_check,
);
static SPEC_SNAPSHOT: Entry = entry_of(
    "the normalized spec equals its stored snapshot",
    &[Need::Specs, Need::Snapshot],
    Constructed,
    spec::spec_snapshot,
);
static INFO_SPEC_DIRS: Entry = entry_of(
    "docker info reports spec directories holding the spec",
    &[Need::Info, Need::Specs],
    Measured,
    info::info_spec_dirs,
);
static INFO_DEVICES: Entry = entry_of(
    "docker info discovers exactly the expected devices",
    &[Need::Info],
    Measured,
    info::info_devices,
);
static INFO_WARNINGS: Entry = entry_of(
    "docker info reports no refused spec file",
    &[Need::Info],
    Measured,
    info::info_warnings,
);
static INFO_CLI: Entry = entry_of(
    "docker info's CLI text shows the CDI lines the write-up greps for",
    &[Need::Info, Need::Cli],
    Measured,
    info::info_cli,
);
static DAEMON_RUNTIMES: Entry = entry_of(
    "the engine has no manual NVIDIA runtime",
    &[Need::Info],
    Measured,
    info::daemon_runtimes,
);
static ENGINE_MODE: Entry = entry_of(
    "the engine reached is the machine's default one",
    &[Need::Info],
    Constructed,
    info::engine_mode,
);
static DEVICE_ALL: Entry = entry_of(
    "--device nvidia.com/gpu=all runs nvidia-smi listing every GPU",
    &[Need::OwnContainer],
    Measured,
    containers::device_all,
);
static DEVICE_N: Entry = entry_of(
    "--device nvidia.com/gpu=N sees exactly one GPU",
    &[Need::OwnContainer],
    Measured,
    containers::device_n,
);
static DEVICE_ISOLATION: Entry = entry_of(
    "each single-GPU device sees its own GPU, together those of `all`",
    &[Need::AllDeviceContainers],
    Measured,
    containers::device_isolation,
);
static RESTART_ALWAYS: Entry = Entry {
    on_host: Applies::No(RESTART_HOST_REASON),
    ..entry_of(
        "a --restart always GPU container comes back after an engine restart",
        &[Need::Restart],
        Measured,
        restart::restart_always,
    )
};
static GPU_CONTAINERS: Entry = entry_of(
    "the containers see the driver's GPUs",
    &[Need::AllDeviceContainers, Need::Gpu],
    Constructed,
    spec::gpu_cross_check,
);
static DECLARED_RUN: Entry = entry_of(
    "a docker run the scenario declares behaves as declared",
    &[Need::OwnContainer],
    Measured,
    containers::declared_run,
);
static NO_LEFTOVERS: Entry = entry_of(
    "no container of this run is left on the engine",
    &[Need::Leftovers],
    Measured,
    containers::no_leftovers,
);

impl Entry {
    /// Where this check's evidence comes from on `backend`, by default.
    pub fn evidence_on(&self, backend: BackendKind) -> Evidence {
        match backend {
            BackendKind::Host => self.host_evidence,
            BackendKind::Sim => self.sim_evidence,
        }
    }
}

/// The catalogue entry of a check.
pub fn entry(id: &CheckId) -> &'static Entry {
    match id {
        CheckId::MachineConfig => &MACHINE_CONFIG,
        CheckId::SpecPresent => &SPEC_PRESENT,
        CheckId::SpecValid => &SPEC_VALID,
        CheckId::SpecFresh => &SPEC_FRESH,
        CheckId::SpecDevices => &SPEC_DEVICES,
        CheckId::GpuSpec => &GPU_SPEC,
        CheckId::SpecSnapshot => &SPEC_SNAPSHOT,
        CheckId::InfoSpecDirs => &INFO_SPEC_DIRS,
        CheckId::InfoDevices => &INFO_DEVICES,
        CheckId::InfoWarnings => &INFO_WARNINGS,
        CheckId::InfoCli => &INFO_CLI,
        CheckId::DaemonRuntimes => &DAEMON_RUNTIMES,
        CheckId::EngineMode => &ENGINE_MODE,
        CheckId::DeviceAll => &DEVICE_ALL,
        CheckId::Device(_) => &DEVICE_N,
        CheckId::DeviceIsolation => &DEVICE_ISOLATION,
        CheckId::RestartAlways => &RESTART_ALWAYS,
        CheckId::GpuContainers => &GPU_CONTAINERS,
        CheckId::Run(_) => &DECLARED_RUN,
        CheckId::NoLeftovers => &NO_LEFTOVERS,
    }
}

/// Everything the runner must gather for `ids`.
pub fn needs<'a>(ids: impl IntoIterator<Item = &'a CheckId>) -> BTreeSet<Need> {
    ids.into_iter()
        .flat_map(|id| entry(id).needs.iter().copied())
        .collect()
}

/// The verdict of `id` on `backend` from the gathered facts: skipped with the entry's
/// reason where the check means nothing on that backend, its evidence stated (the
/// entry's default unless the evaluator said otherwise), and never a pass that carries
/// a failure's cause.
pub fn evaluate(s: &Scenario, facts: &Facts, id: &CheckId) -> Verdict {
    let e = entry(id);
    let backend = facts.backend.unwrap_or(BackendKind::Sim);
    let (applies, evidence) = match backend {
        BackendKind::Host => (e.on_host, e.host_evidence),
        BackendKind::Sim => (e.on_sim, e.sim_evidence),
    };
    let mut v = match applies {
        Applies::No(why) => Verdict::skip(why),
        Applies::Yes => (e.evaluate)(s, facts, id),
    };
    if v.evidence.is_none() {
        v.evidence = Some(evidence);
    }
    // A cause explains a failure (or, for a declared run, the refusal that passed);
    // a skip carries none, so a declaration can never match one.
    if v.status == Status::Skip {
        v.cause = None;
    }
    v
}

#[cfg(test)]
mod tests;
