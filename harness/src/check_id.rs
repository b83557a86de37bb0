//! The names of the checks, typed: every check a scenario can have is a [`CheckId`], and
//! its report name (`device_0`, `gpus_flag`) is derived from it, never the other way
//! round. A leaf module, so the scenario parser (which must reject a `[[run]]` named
//! like a built-in check) and the checks (which evaluate them) both depend on it
//! without depending on each other.

use std::fmt;

/// One check of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckId {
    /// The scenario's NixOS configuration against the write-up's pitfalls (and, on a
    /// host, against what the machine really runs).
    MachineConfig,
    /// The generated spec file exists in a spec directory.
    SpecPresent,
    /// Every spec file loads and validates as the engine's CDI library would.
    SpecValid,
    /// The spec was written for this boot, this driver and these GPUs.
    SpecFresh,
    /// The spec directories resolve exactly the expected devices.
    SpecDevices,
    /// The spec's GPUs are the driver's GPUs.
    GpuSpec,
    /// The normalized spec equals the stored snapshot.
    SpecSnapshot,
    /// `docker info` reports spec directories holding the spec.
    InfoSpecDirs,
    /// `docker info` discovers exactly the expected devices.
    InfoDevices,
    /// `docker info` reports no refused spec file.
    InfoWarnings,
    /// The `docker info` CLI text shows the CDI lines the write-up greps for.
    InfoCli,
    /// No manual NVIDIA runtime in the engine.
    DaemonRuntimes,
    /// The engine reached is the machine's default one (rootless or rootful).
    EngineMode,
    /// `--device nvidia.com/gpu=all` runs `nvidia-smi -L` listing every GPU.
    DeviceAll,
    /// `--device nvidia.com/gpu=N` sees exactly one GPU.
    Device(u32),
    /// The single-GPU devices see different GPUs, together those of `all`.
    DeviceIsolation,
    /// A `--restart always` GPU container comes back after an engine restart.
    RestartAlways,
    /// The containers saw the driver's GPUs.
    GpuContainers,
    /// A `[[run]]` declared by the scenario, by its name.
    Run(String),
    /// No container of this run is left on the engine.
    NoLeftovers,
}

/// The built-in checks in report order, with `device_<N>` and declared runs inserted by
/// [`ids_for`]. Each name here is what [`CheckId::name`] returns.
const ORDER: &[(&str, CheckId)] = &[
    ("machine_config", CheckId::MachineConfig),
    ("spec_present", CheckId::SpecPresent),
    ("spec_valid", CheckId::SpecValid),
    ("spec_fresh", CheckId::SpecFresh),
    ("spec_devices", CheckId::SpecDevices),
    ("gpu_spec", CheckId::GpuSpec),
    ("spec_snapshot", CheckId::SpecSnapshot),
    ("info_spec_dirs", CheckId::InfoSpecDirs),
    ("info_devices", CheckId::InfoDevices),
    ("info_warnings", CheckId::InfoWarnings),
    ("info_cli", CheckId::InfoCli),
    ("daemon_runtimes", CheckId::DaemonRuntimes),
    ("engine_mode", CheckId::EngineMode),
    ("device_all", CheckId::DeviceAll),
    ("device_isolation", CheckId::DeviceIsolation),
    ("restart_always", CheckId::RestartAlways),
    ("gpu_containers", CheckId::GpuContainers),
    ("no_leftovers", CheckId::NoLeftovers),
];

impl CheckId {
    /// The report name: `spec_present`, `device_3`, or a `[[run]]`'s name.
    pub fn name(&self) -> String {
        match self {
            CheckId::Device(n) => format!("device_{n}"),
            CheckId::Run(name) => name.clone(),
            other => ORDER
                .iter()
                .find(|(_, id)| id == other)
                .map(|(n, _)| (*n).to_string())
                .unwrap_or_default(),
        }
    }

    /// The built-in check of this name (`device_<N>` included); `None` for anything
    /// else, which may be a declared run.
    pub fn builtin(name: &str) -> Option<CheckId> {
        if let Some((_, id)) = ORDER.iter().find(|(n, _)| *n == name) {
            return Some(id.clone());
        }
        let n = name.strip_prefix("device_")?;
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        n.parse().ok().map(CheckId::Device)
    }

    /// Whether this is a container check that runs `nvidia-smi` with a CDI device.
    pub fn is_device(&self) -> bool {
        matches!(self, CheckId::DeviceAll | CheckId::Device(_))
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Whether `name` is the name of a built-in check (`device_<N>` included), which a
/// `[[run]]` may not take.
pub fn is_builtin(name: &str) -> bool {
    CheckId::builtin(name).is_some()
}

/// Every check of a scenario with `gpus` GPUs and these declared runs, in report order:
/// `device_<N>` between `device_all` and `device_isolation` (none of the three without
/// GPUs, nor `restart_always`), declared runs before `no_leftovers`.
pub fn ids_for<'a>(gpus: u32, runs: impl IntoIterator<Item = &'a str>) -> Vec<CheckId> {
    let mut runs = runs.into_iter();
    let mut out = Vec::new();
    for (_, id) in ORDER {
        match id {
            CheckId::DeviceIsolation => {
                out.extend((0..gpus).map(CheckId::Device));
                if gpus > 0 {
                    out.push(CheckId::DeviceIsolation);
                }
            }
            CheckId::DeviceAll | CheckId::RestartAlways if gpus == 0 => {}
            CheckId::NoLeftovers => {
                out.extend(runs.by_ref().map(|r| CheckId::Run(r.to_string())));
                out.push(CheckId::NoLeftovers);
            }
            other => out.push(other.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_builtin() {
        for id in ids_for(3, ["gpus_flag"]) {
            match &id {
                CheckId::Run(n) => assert_eq!(CheckId::builtin(n), None),
                _ => assert_eq!(CheckId::builtin(&id.name()), Some(id.clone()), "{id}"),
            }
        }
    }

    #[test]
    fn order_places_devices_and_runs() {
        let names: Vec<String> = ids_for(2, ["gpus_flag"])
            .iter()
            .map(CheckId::name)
            .collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap_or(usize::MAX);
        assert!(pos("device_all") < pos("device_0"));
        assert!(pos("device_1") < pos("device_isolation"));
        assert!(pos("gpus_flag") < pos("no_leftovers"));
        assert_eq!(names.last().map(String::as_str), Some("no_leftovers"));
        let none: Vec<String> = ids_for(0, []).iter().map(CheckId::name).collect();
        assert!(
            !none
                .iter()
                .any(|n| n.starts_with("device_") || n == "restart_always")
        );
    }

    #[test]
    fn device_names_need_digits() {
        assert_eq!(CheckId::builtin("device_12"), Some(CheckId::Device(12)));
        assert_eq!(CheckId::builtin("device_"), None);
        assert_eq!(CheckId::builtin("device_x"), None);
        assert!(is_builtin("no_leftovers"));
        assert!(!is_builtin("gpus_flag"));
    }
}
