//! The machine's NVIDIA GPUs as the driver itself reports them (NVML), and the
//! cross-checks that hold the CDI spec and the containers to that truth.
//!
//! Every other check compares the spec with the scenario's declared `gpus.count`; only
//! the driver knows which GPUs the machine really has, their UUIDs and their
//! `/dev/nvidia<minor>` nodes. So the inventory comes from NVML (`libnvidia-ml`, loaded at
//! run time by `nvml-wrapper`, so the harness builds and runs on machines without it),
//! behind [`GpuSource`] so that every consumer is tested with inventories recorded on
//! real machines. Without the library the GPU checks are skipped with that reason,
//! never passed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::cdi::{LoadedSpec, Spec};
use crate::engine::RunOutcome;
use crate::hints::SPEC_MISSING_FIX;
use crate::outcome::Verdict;
use crate::smi::parse_nvidia_smi_list;

/// The driver and its GPUs, as NVML (or a recording of it) reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Driver version, e.g. `580.159.04`; the spec's library mounts carry it.
    pub driver_version: String,
    /// Highest CUDA version the driver supports, e.g. `13.0` (`None` when NVML did not say).
    #[serde(default)]
    pub cuda_version: Option<String>,
    /// The GPUs in NVML index order.
    pub gpus: Vec<Gpu>,
    /// Where the inventory came from (`nvml`, `sim`, a fixture name).
    pub source: String,
    /// True when the GPUs are the `sim` backend's inventions, not hardware.
    #[serde(default)]
    pub simulated: bool,
}

/// One physical GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// NVML index (what `nvidia.com/gpu=<index>` names with nvidia-ctk's default naming).
    pub index: u32,
    /// `GPU-…` UUID.
    pub uuid: String,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Minor number of its node `/dev/nvidia<minor>`; `None` when unknown (a listing
    /// recorded with `nvidia-smi -L`, which does not print it).
    #[serde(default)]
    pub minor: Option<u32>,
    /// PCI bus id, e.g. `00000000:00:06.0`.
    #[serde(default)]
    pub pci_bus_id: Option<String>,
    /// Whether MIG mode is on (`None`: the GPU does not support MIG or NVML did not say).
    #[serde(default)]
    pub mig_enabled: Option<bool>,
    /// MIG devices carved out of this GPU, in NVML order.
    #[serde(default)]
    pub mig_devices: Vec<MigDevice>,
}

impl Gpu {
    /// `/dev/nvidia<minor>`, when the minor is known.
    pub fn node(&self) -> Option<String> {
        self.minor.map(|m| format!("/dev/nvidia{m}"))
    }
}

/// One MIG device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigDevice {
    /// Index among its parent's MIG devices (`nvidia.com/gpu=<gpu>:<index>`).
    pub index: u32,
    /// `MIG-…` UUID.
    pub uuid: String,
    /// Profile as `nvidia-smi -L` prints it, e.g. `1g.10gb`, when known.
    #[serde(default)]
    pub profile: Option<String>,
}

impl Inventory {
    /// The GPU UUIDs, in index order.
    pub fn uuids(&self) -> Vec<&str> {
        self.gpus.iter().map(|g| g.uuid.as_str()).collect()
    }

    /// One line for reports: `driver 580.159.04, CUDA 13.0, 1 GPU: 0 NVIDIA H100 … (GPU-…)`.
    pub fn summary(&self) -> String {
        let gpus = self
            .gpus
            .iter()
            .map(|g| {
                let mut s = format!("{} {} ({})", g.index, g.name, g.uuid);
                if let Some(n) = g.node() {
                    s.push_str(&format!(" {n}"));
                }
                if g.mig_enabled == Some(true) {
                    s.push_str(&format!(", MIG on, {} MIG device(s)", g.mig_devices.len()));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; ");
        format!(
            "{}driver {}, CUDA {}, {} GPU(s): {gpus}",
            if self.simulated { "simulated " } else { "" },
            self.driver_version,
            self.cuda_version.as_deref().unwrap_or("unknown"),
            self.gpus.len()
        )
    }
}

/// Why no inventory could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No NVML library, or no driver loaded: the GPU checks cannot run here (skip).
    #[error(
        "no NVML on this machine ({reason}): GPU checks skipped (install the NVIDIA driver, or on NixOS set hardware.nvidia.* and reboot so that libnvidia-ml.so.1 is found)"
    )]
    Unavailable {
        /// What NVML or the loader said.
        reason: String,
    },
    /// NVML is there but a call failed: the driver is in trouble (a failure, not a skip).
    #[error("NVML call {call} failed: {message} (check `nvidia-smi` and `dmesg | grep -i nvrm`)")]
    Call {
        /// The NVML function.
        call: String,
        /// Its error.
        message: String,
    },
}

impl GpuError {
    /// Whether the checks that need the inventory should be skipped (no NVML here)
    /// rather than failed (NVML present but broken).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, GpuError::Unavailable { .. })
    }
}

/// Where an [`Inventory`] comes from: NVML on a real host, a recording in tests, the
/// simulated GPUs on `sim`.
pub trait GpuSource: Send + Sync {
    /// Reads the inventory.
    fn inventory(&self) -> Result<Inventory, GpuError>;
}

/// The real thing: NVML through `nvml-wrapper`, loaded at run time.
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmlSource;

impl GpuSource for NvmlSource {
    fn inventory(&self) -> Result<Inventory, GpuError> {
        let nvml = init_nvml()?;
        let driver_version = nvml
            .sys_driver_version()
            .map_err(|e| call_err("nvmlSystemGetDriverVersion", e))?;
        let cuda_version = nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        let count = nvml
            .device_count()
            .map_err(|e| call_err("nvmlDeviceGetCount", e))?;
        let mut gpus = Vec::new();
        for index in 0..count {
            let dev = nvml
                .device_by_index(index)
                .map_err(|e| call_err("nvmlDeviceGetHandleByIndex", e))?;
            let uuid = dev.uuid().map_err(|e| call_err("nvmlDeviceGetUUID", e))?;
            let name = dev.name().map_err(|e| call_err("nvmlDeviceGetName", e))?;
            let minor = dev.minor_number().ok();
            let pci_bus_id = dev.pci_info().ok().map(|p| p.bus_id);
            // NotSupported on GPUs without MIG: unknown, not an error.
            let mig_enabled = dev.mig_mode().ok().map(|m| m.current == 1);
            let mut mig_devices = Vec::new();
            if mig_enabled == Some(true) {
                let slots = dev.mig_device_count().unwrap_or(0);
                for slot in 0..slots {
                    // Empty slots answer NotFound: only the carved-out instances count.
                    if let Ok(mig) = dev.mig_device_by_index(slot) {
                        if let Ok(uuid) = mig.uuid() {
                            mig_devices.push(MigDevice {
                                index: mig_devices.len() as u32,
                                uuid,
                                profile: None,
                            });
                        }
                    }
                }
            }
            gpus.push(Gpu {
                index,
                uuid,
                name,
                minor,
                pci_bus_id,
                mig_enabled,
                mig_devices,
            });
        }
        Ok(Inventory {
            driver_version,
            cuda_version,
            gpus,
            source: "nvml".into(),
            simulated: false,
        })
    }
}

/// Where the driver's NVML lives when the loader's default search does not find it:
/// NixOS puts it in /run/opengl-driver/lib (on no default search path), some GPU VMs in
/// /usr/local/nvidia/lib64 (the recorded H100 machine).
pub const NVML_FALLBACK_PATHS: &[&str] = &[
    "/run/opengl-driver/lib/libnvidia-ml.so.1",
    "/usr/local/nvidia/lib64/libnvidia-ml.so.1",
    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    "/usr/lib64/libnvidia-ml.so.1",
    "/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1",
];

/// NVML from the loader's search path, else from [`NVML_FALLBACK_PATHS`]; a missing
/// library or driver is [`GpuError::Unavailable`], anything else a failed call.
fn init_nvml() -> Result<nvml_wrapper::Nvml, GpuError> {
    use nvml_wrapper::Nvml;
    use nvml_wrapper::error::NvmlError;
    let classify = |e: NvmlError| match e {
        NvmlError::LibloadingError(_)
        | NvmlError::LibraryNotFound
        | NvmlError::DriverNotLoaded
        | NvmlError::FailedToLoadSymbol(_) => GpuError::Unavailable {
            reason: e.to_string(),
        },
        other => call_err("nvmlInit", other),
    };
    let first = match Nvml::init() {
        Ok(n) => return Ok(n),
        Err(e) => classify(e),
    };
    if !first.is_unavailable() {
        return Err(first);
    }
    for path in NVML_FALLBACK_PATHS {
        if !std::path::Path::new(path).exists() {
            continue;
        }
        match Nvml::builder().lib_path(std::ffi::OsStr::new(path)).init() {
            Ok(n) => return Ok(n),
            Err(e) => return Err(classify(e)),
        }
    }
    Err(first)
}

fn call_err(call: &str, e: nvml_wrapper::error::NvmlError) -> GpuError {
    GpuError::Call {
        call: call.into(),
        message: e.to_string(),
    }
}

/// A fixed answer: a recorded inventory (tests, `doctor` fixtures) or an error.
#[derive(Debug, Clone)]
pub struct StaticSource(pub Result<Inventory, GpuError>);

impl GpuSource for StaticSource {
    fn inventory(&self) -> Result<Inventory, GpuError> {
        self.0.clone()
    }
}

/// The `sim` backend's GPUs as an inventory, labelled simulated: minors equal indices,
/// as the simulated spec's `/dev/nvidia<index>` nodes are.
pub fn sim_inventory(count: u32) -> Inventory {
    Inventory {
        driver_version: crate::sim::SIM_DRIVER_VERSION.into(),
        cuda_version: Some(crate::sim::SIM_CUDA_VERSION.into()),
        gpus: crate::sim::sim_gpus(count)
            .into_iter()
            .map(|g| Gpu {
                index: g.index,
                uuid: g.uuid,
                name: g.name,
                minor: Some(g.index),
                pci_bus_id: Some(g.pci_bus_id),
                mig_enabled: None,
                mig_devices: Vec::new(),
            })
            .collect(),
        source: "sim".into(),
        simulated: true,
    }
}

/// GPUs and their MIG devices from `nvidia-smi -L`. GPU lines go through
/// [`parse_nvidia_smi_list`]; a line `  MIG 1g.10gb     Device  0: (UUID: MIG-…)` belongs
/// to the GPU above it. Minors are unknown (`None`): `-L` does not print them.
pub fn parse_smi_list_with_mig(text: &str) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = Vec::new();
    for line in text.lines() {
        if let Some(listed) = parse_nvidia_smi_list(line).into_iter().next() {
            gpus.push(Gpu {
                index: listed.index,
                uuid: listed.uuid,
                name: listed.name,
                minor: None,
                pci_bus_id: None,
                mig_enabled: None,
                mig_devices: Vec::new(),
            });
            continue;
        }
        let Some(rest) = line.trim_start().strip_prefix("MIG ") else {
            continue;
        };
        let Some((head, uuid)) = rest.split_once("(UUID:") else {
            continue;
        };
        let Some((profile, dev)) = head.split_once("Device") else {
            continue;
        };
        let Ok(index) = dev.trim().trim_end_matches(':').trim().parse::<u32>() else {
            continue;
        };
        if let Some(gpu) = gpus.last_mut() {
            gpu.mig_enabled = Some(true);
            gpu.mig_devices.push(MigDevice {
                index,
                uuid: uuid.trim().trim_end_matches(')').trim().to_string(),
                profile: Some(profile.trim().to_string()),
            });
        }
    }
    gpus
}

/// `/dev/nvidia<N>` (a GPU node, not nvidiactl, nvidia-uvm, nvidia-caps/…): its minor.
fn gpu_node_minor(path: &str) -> Option<u32> {
    let n = path.strip_prefix("/dev/nvidia")?;
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The GPU nodes (by minor) a spec device injects: its own edits, as the engine applies
/// them (the spec-level edits hold only control nodes on real specs, and are added too).
fn device_minors(spec: &Spec, device: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let edits = spec
        .devices
        .iter()
        .filter(|d| d.name == device)
        .map(|d| &d.container_edits)
        .chain(spec.container_edits.iter());
    for e in edits {
        for n in e.device_nodes.iter().flatten() {
            if let Some(m) = gpu_node_minor(&n.path) {
                out.insert(m);
            }
        }
    }
    out
}

fn list_minors(m: &BTreeSet<u32>) -> String {
    if m.is_empty() {
        return "no /dev/nvidiaN node".into();
    }
    m.iter()
        .map(|m| format!("/dev/nvidia{m}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The regeneration fix every cross-check failure shares.
pub const REGENERATE_FIX: &str = "the spec does not describe the GPUs the driver has: sudo systemctl restart nvidia-container-toolkit-cdi-generator && sudo systemctl restart docker (elsewhere: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)";

/// `gpu_spec`: the spec's devices are exactly the GPUs NVML sees, by index (`0`…),
/// by UUID where the spec names devices so, and by `<gpu>:<mig>` for MIG devices; each
/// per-GPU device injects exactly that GPU's `/dev/nvidia<minor>`; `all` injects every one.
pub fn check_spec_against(inv: &Inventory, spec: Option<&LoadedSpec>) -> Verdict {
    let Some(loaded) = spec else {
        return Verdict::skip(
            "there is no generated spec to compare with the driver's GPUs (see spec_present)",
        );
    };
    let spec = &loaded.spec;
    let label = if inv.simulated {
        "the simulated NVML"
    } else {
        "NVML"
    };
    let by_index: BTreeMap<String, &Gpu> =
        inv.gpus.iter().map(|g| (g.index.to_string(), g)).collect();
    let by_uuid: BTreeMap<&str, &Gpu> = inv.gpus.iter().map(|g| (g.uuid.as_str(), g)).collect();
    let mig: BTreeMap<String, &MigDevice> = inv
        .gpus
        .iter()
        .flat_map(|g| {
            g.mig_devices
                .iter()
                .map(move |m| (format!("{}:{}", g.index, m.index), m))
        })
        .collect();
    let mig_uuids: BTreeSet<&str> = inv
        .gpus
        .iter()
        .flat_map(|g| g.mig_devices.iter().map(|m| m.uuid.as_str()))
        .collect();
    let names: BTreeSet<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    let mut problems = Vec::new();
    let mut uuid_named = 0;
    for name in &names {
        if *name == "all" || by_index.contains_key(*name) || mig.contains_key(*name) {
            continue;
        }
        if by_uuid.contains_key(name) || mig_uuids.contains(name) {
            uuid_named += 1;
            continue;
        }
        problems.push(format!(
            "the spec defines nvidia.com/gpu={name}, which is no GPU {label} reports"
        ));
    }
    for (idx, gpu) in &by_index {
        if !names.contains(idx.as_str()) {
            problems.push(format!(
                "GPU {idx} ({}) has no device nvidia.com/gpu={idx} in the spec",
                gpu.uuid
            ));
        }
    }
    // UUID naming (`--device-name-strategy=uuid`) must then cover every GPU.
    if uuid_named > 0 {
        for gpu in &inv.gpus {
            if !names.contains(gpu.uuid.as_str()) {
                problems.push(format!(
                    "the spec names devices by UUID but not GPU {} ({})",
                    gpu.index, gpu.uuid
                ));
            }
        }
    }
    for (key, m) in &mig {
        if !names.contains(key.as_str()) && !names.contains(m.uuid.as_str()) {
            problems.push(format!(
                "MIG device {key} ({}) has no device in the spec",
                m.uuid
            ));
        }
    }
    // Nodes: each GPU's device must inject its own node and no other GPU's.
    let all_minors: BTreeSet<u32> = inv.gpus.iter().filter_map(|g| g.minor).collect();
    for gpu in &inv.gpus {
        let Some(minor) = gpu.minor else { continue };
        for name in [gpu.index.to_string(), gpu.uuid.clone()] {
            if !names.contains(name.as_str()) {
                continue;
            }
            let got = device_minors(spec, &name);
            if got != BTreeSet::from([minor]) {
                problems.push(format!(
                    "nvidia.com/gpu={name} injects {} but GPU {} is /dev/nvidia{minor}",
                    list_minors(&got),
                    gpu.index
                ));
            }
        }
    }
    if names.contains("all") {
        let got = device_minors(spec, "all");
        if !all_minors.is_subset(&got) {
            let missing: BTreeSet<u32> = all_minors.difference(&got).copied().collect();
            problems.push(format!(
                "nvidia.com/gpu=all does not inject {}",
                list_minors(&missing)
            ));
        }
    } else if !inv.gpus.is_empty() {
        problems.push("the spec has no nvidia.com/gpu=all device".into());
    }
    if problems.is_empty() {
        let nodes = if all_minors.is_empty() {
            " (minors unknown: nodes not compared)".to_string()
        } else {
            format!(", each with its own node ({})", list_minors(&all_minors))
        };
        return Verdict::pass(format!(
            "{} defines exactly the {} GPU(s) {label} reports{nodes}, and `all` covers them",
            loaded.path.display(),
            inv.gpus.len()
        ));
    }
    Verdict::fail(
        format!("{}: {}", loaded.path.display(), problems.join("; ")),
        Some(REGENERATE_FIX.into()),
    )
}

/// `gpu_containers`: `nvidia-smi -L` inside `--device nvidia.com/gpu=all` lists exactly
/// the UUIDs NVML reports, and inside `gpu=N` exactly GPU N's UUID.
pub fn check_containers<E>(
    inv: &Inventory,
    runs: &BTreeMap<String, Result<RunOutcome, E>>,
) -> Verdict {
    let label = if inv.simulated {
        "the simulated NVML"
    } else {
        "NVML"
    };
    let listing = |check: &str| -> Option<BTreeSet<String>> {
        match runs.get(check)? {
            Ok(RunOutcome::Exited {
                exit_code: 0,
                stdout,
                ..
            }) => Some(
                parse_nvidia_smi_list(stdout)
                    .into_iter()
                    .map(|g| g.uuid)
                    .collect(),
            ),
            _ => None,
        }
    };
    let Some(all) = listing("device_all") else {
        return Verdict::skip(
            "no nvidia-smi listing from --device nvidia.com/gpu=all to compare with the driver's GPUs (see device_all)",
        );
    };
    let want: BTreeSet<String> = inv.gpus.iter().map(|g| g.uuid.clone()).collect();
    let mut problems = Vec::new();
    if all != want {
        let missing: Vec<&String> = want.difference(&all).collect();
        let extra: Vec<&String> = all.difference(&want).collect();
        problems.push(format!(
            "--device nvidia.com/gpu=all shows {} GPU(s), {label} {} (missing {missing:?}, not known to {label} {extra:?})",
            all.len(),
            want.len()
        ));
    }
    let mut compared = 0;
    for gpu in &inv.gpus {
        let Some(one) = listing(&format!("device_{}", gpu.index)) else {
            continue;
        };
        compared += 1;
        if one != BTreeSet::from([gpu.uuid.clone()]) {
            problems.push(format!(
                "--device nvidia.com/gpu={} shows {:?}, but GPU {} is {}",
                gpu.index, one, gpu.index, gpu.uuid
            ));
        }
    }
    if want.is_empty() && problems.is_empty() {
        return Verdict::skip(format!("{label} reports no GPU: nothing to compare"));
    }
    if problems.is_empty() && compared < inv.gpus.len() {
        // `all` matched, but some GPUs were not seen alone: the per-GPU half of the
        // check was not made for them.
        return Verdict::skip(format!(
            "`all` shows exactly the {} GPU(s) {label} reports, but only {compared} of them were listed through their single-GPU device, so the per-GPU comparison is incomplete",
            want.len()
        ));
    }
    if problems.is_empty() {
        return Verdict::pass(format!(
            "`all` shows exactly the {} GPU(s) {label} reports, and each of the {compared} single-GPU devices its own UUID",
            want.len()
        ));
    }
    Verdict::fail(problems.join("; "), Some(REGENERATE_FIX.into()))
}

/// Driver versions in the spec's library mounts: `…/libnvidia-ml.so.580.159.04` → `580.159.04`.
pub fn spec_driver_versions(spec: &Spec) -> BTreeSet<String> {
    let mounts = spec
        .devices
        .iter()
        .map(|d| &d.container_edits)
        .chain(spec.container_edits.iter())
        .flat_map(|e| e.mounts.iter().flatten());
    let mut out = BTreeSet::new();
    for m in mounts {
        let file = m.host_path.rsplit('/').next().unwrap_or_default();
        if !(file.starts_with("libnvidia") || file.starts_with("libcuda")) {
            continue;
        }
        if let Some((_, v)) = file.split_once(".so.") {
            // Only full driver versions (`580.159.04`), not sonames (`.so.1`).
            if v.split('.').count() >= 2
                && v.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                out.insert(v.to_string());
            }
        }
    }
    out
}

/// `spec_fresh`: the spec was written after the current boot (`/proc/stat` btime vs
/// its mtime) and for the loaded driver (the version in its library mounts). A spec
/// from before the boot or for another driver makes containers fail in odd ways
/// (missing libraries, `failed to stat CDI host device`).
pub fn check_spec_fresh(
    spec: Option<&LoadedSpec>,
    spec_mtime: Option<SystemTime>,
    boot_time: Option<SystemTime>,
    inv: Option<&Inventory>,
) -> Verdict {
    let Some(loaded) = spec else {
        return Verdict::skip(
            "there is no generated spec whose age could be checked (see spec_present)",
        );
    };
    let path = loaded.path.display();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    // How many of the two comparisons (age, driver) were made: none means nothing was
    // compared, which is a skip, never a pass.
    let mut compared = 0;
    match (spec_mtime, boot_time) {
        (Some(m), Some(b)) if m < b => problems.push(format!(
            "{path} was written {} before the current boot ({}): the generator did not run this boot",
            humantime::format_duration(b.duration_since(m).unwrap_or_default()),
            humantime::format_rfc3339_seconds(b)
        )),
        (Some(_), Some(b)) => {
            compared += 1;
            seen.push(format!(
                "written after the current boot ({})",
                humantime::format_rfc3339_seconds(b)
            ))
        }
        _ => seen.push("boot time or spec time unknown: age not compared".into()),
    }
    match inv {
        Some(inv) => {
            let versions = spec_driver_versions(&loaded.spec);
            if versions.is_empty() {
                seen.push("no versioned driver library among its mounts".into());
            } else if versions.len() == 1 && versions.contains(&inv.driver_version) {
                compared += 1;
                seen.push(format!("for driver {}", inv.driver_version));
            } else {
                problems.push(format!(
                    "{path} mounts libraries of driver {} but the loaded driver is {}",
                    versions.iter().cloned().collect::<Vec<_>>().join(", "),
                    inv.driver_version
                ));
            }
        }
        None => seen.push("driver version unknown (no NVML): libraries not compared".into()),
    }
    if !problems.is_empty() {
        Verdict::fail(problems.join("; "), Some(SPEC_MISSING_FIX.into()))
    } else if compared == 0 {
        Verdict::skip(format!(
            "{path}: nothing could be compared: {}",
            seen.join("; ")
        ))
    } else {
        Verdict::pass(format!("{path}: {}", seen.join("; ")))
    }
}

/// What the runner gathered about the GPUs for the cross-checks.
#[derive(Debug, Clone)]
pub struct GpuFacts {
    /// The inventory, or why there is none.
    pub inventory: Result<Inventory, GpuError>,
    /// The current boot's time (`/proc/stat` btime), when known.
    pub boot_time: Option<SystemTime>,
}

impl GpuFacts {
    /// The inventory, or the verdict for a check that needs one: a skip without NVML,
    /// a failure when NVML is present but broken.
    pub fn need(&self) -> Result<&Inventory, Verdict> {
        match &self.inventory {
            Ok(i) => Ok(i),
            Err(e) if e.is_unavailable() => Err(Verdict::skip(e.to_string())),
            Err(e) => Err(Verdict::fail(e.to_string(), None)),
        }
    }
}

/// Boot time from `/proc/stat`'s `btime` line (seconds since the epoch).
pub fn parse_btime(proc_stat: &str) -> Option<SystemTime> {
    let secs: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// This machine's boot time, when `/proc/stat` says.
pub fn boot_time() -> Option<SystemTime> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_btime(&s))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::outcome::Status;

    use crate::testutil::fixture;

    /// The H100 recorded in tests/fixtures/h100: minor 0, driver 580.159.04.
    fn h100() -> Inventory {
        let mut gpus = parse_smi_list_with_mig(&fixture("h100/nvidia-smi-L.txt"));
        gpus[0].minor = Some(0);
        gpus[0].pci_bus_id = Some("00000000:00:06.0".into());
        Inventory {
            driver_version: "580.159.04".into(),
            cuda_version: None,
            gpus,
            source: "fixture h100".into(),
            simulated: false,
        }
    }

    fn loaded(rel: &str) -> LoadedSpec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        let spec = crate::cdi::load_spec_file(&path).expect("fixture spec loads");
        LoadedSpec {
            path: PathBuf::from(rel),
            dir_index: 0,
            spec,
            problems: Vec::new(),
        }
    }

    fn listing(stdout: &str) -> Result<RunOutcome, String> {
        Ok(RunOutcome::Exited {
            exit_code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        })
    }

    #[test]
    fn parses_real_mig_listing() {
        let gpus = parse_smi_list_with_mig(&fixture("gpu/a100-mig-nvidia-smi-L.txt"));
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].mig_enabled, Some(true));
        assert_eq!(gpus[0].mig_devices.len(), 7);
        assert_eq!(gpus[0].mig_devices[6].index, 6);
        assert_eq!(gpus[0].mig_devices[0].profile.as_deref(), Some("1g.10gb"));
        assert_eq!(
            gpus[0].mig_devices[0].uuid,
            "MIG-feb88891-0321-5fef-9c87-d4af3b54259e"
        );
    }

    #[test]
    fn parses_real_mixed_mig_and_eight_gpu_listings() {
        let mixed = parse_smi_list_with_mig(&fixture("gpu/a100x4-one-mig-nvidia-smi-L.txt"));
        assert_eq!(mixed.len(), 4);
        assert_eq!(mixed[0].mig_devices.len(), 4);
        assert!(mixed[1].mig_devices.is_empty());
        let eight = parse_smi_list_with_mig(&fixture("gpu/h100x8-nvidia-smi-L.txt"));
        assert_eq!(eight.len(), 8);
        assert_eq!(eight[7].index, 7);
        let uuids: BTreeSet<&str> = eight.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(uuids.len(), 8);
    }

    /// An inventory as NVML would give it for a recorded `nvidia-smi -L` listing.
    fn inventory_from(listing: &str) -> Inventory {
        let mut gpus = parse_smi_list_with_mig(listing);
        for g in &mut gpus {
            g.minor = Some(g.index);
        }
        Inventory {
            driver_version: "580.159.04".into(),
            cuda_version: None,
            gpus,
            source: "fixture".into(),
            simulated: false,
        }
    }

    /// What `nvidia-smi -L` prints inside a container that sees only `gpu`.
    fn single(gpu: &Gpu) -> String {
        format!("GPU 0: {} (UUID: {})\n", gpu.name, gpu.uuid)
    }

    #[rstest::rstest]
    #[case::eight_h100("gpu/h100x8-nvidia-smi-L.txt", 8)]
    #[case::four_a100_one_in_mig("gpu/a100x4-one-mig-nvidia-smi-L.txt", 4)]
    #[case::one_a100_in_mig("gpu/a100-mig-nvidia-smi-L.txt", 1)]
    fn containers_cross_check_recorded_machines(#[case] rel: &str, #[case] count: usize) {
        let text = fixture(rel);
        let inv = inventory_from(&text);
        assert_eq!(inv.gpus.len(), count);
        // `all` prints the host's listing (MIG lines included); each gpu=N only GPU N.
        let mut runs = BTreeMap::from([("device_all".to_string(), listing(&text))]);
        for g in &inv.gpus {
            runs.insert(format!("device_{}", g.index), listing(&single(g)));
        }
        let v = check_containers(&inv, &runs);
        assert_eq!(v.status, Status::Pass, "{}", v.message);
        assert!(
            v.message
                .contains(&format!("each of the {count} single-GPU")),
            "{}",
            v.message
        );
        // Without the single-GPU listings only half was compared: never a pass.
        let only_all = BTreeMap::from([("device_all".to_string(), listing(&text))]);
        assert_eq!(check_containers(&inv, &only_all).status, Status::Skip);
        if count > 1 {
            // gpu=0 showing GPU 1 is caught by UUID, though nvidia-smi calls both "GPU 0".
            runs.insert("device_0".into(), listing(&single(&inv.gpus[1])));
            let v = check_containers(&inv, &runs);
            assert_eq!(v.status, Status::Fail);
            assert!(
                v.message.contains("nvidia.com/gpu=0 shows"),
                "{}",
                v.message
            );
        }
        // A GPU missing from `all` is caught too.
        let fewer: String = text
            .lines()
            .filter(|l| !l.contains(&inv.gpus[0].uuid))
            .map(|l| format!("{l}\n"))
            .collect();
        runs.insert("device_all".into(), listing(&fewer));
        assert_eq!(check_containers(&inv, &runs).status, Status::Fail);
    }

    #[test]
    fn an_eight_gpu_spec_is_checked_against_the_recorded_eight_gpus() {
        let inv = inventory_from(&fixture("gpu/h100x8-nvidia-smi-L.txt"));
        let dir = tempfile::tempdir().expect("tempdir");
        let support = dir.path().join("support");
        let write = |gpus: u32| {
            let path = dir.path().join(format!("spec{gpus}.json"));
            std::fs::write(
                &path,
                crate::sim::sim_spec_json(&crate::sim::sim_gpus(gpus), &support),
            )
            .expect("write");
            let spec = crate::cdi::load_spec_file(&path).expect("spec loads");
            LoadedSpec {
                path,
                dir_index: 0,
                spec,
                problems: Vec::new(),
            }
        };
        let v = check_spec_against(&inv, Some(&write(8)));
        assert_eq!(v.status, Status::Pass, "{}", v.message);
        // A spec generated before two GPUs were added misses them by name.
        let v = check_spec_against(&inv, Some(&write(6)));
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.message.contains("GPU 6") && v.message.contains("GPU 7"),
            "{}",
            v.message
        );
    }

    #[test]
    fn real_h100_spec_matches_its_gpu() {
        let v = check_spec_against(&h100(), Some(&loaded("h100/nvidia-container-toolkit.json")));
        assert_eq!(v.status, Status::Pass, "{}", v.message);
        assert!(v.message.contains("/dev/nvidia0"));
    }

    #[test]
    fn spec_for_fewer_gpus_than_nvml_fails_with_regenerate() {
        let mut inv = h100();
        let mut second = inv.gpus[0].clone();
        second.index = 1;
        second.minor = Some(1);
        second.uuid = "GPU-00000000-0000-0000-0000-000000000001".into();
        inv.gpus.push(second);
        let v = check_spec_against(&inv, Some(&loaded("h100/nvidia-container-toolkit.json")));
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains("GPU 1"), "{}", v.message);
        assert!(
            v.message.contains("does not inject /dev/nvidia1"),
            "{}",
            v.message
        );
        assert!(
            v.fix
                .as_deref()
                .is_some_and(|f| f.contains("cdi-generator"))
        );
    }

    #[test]
    fn device_node_of_another_gpu_fails() {
        let mut inv = h100();
        inv.gpus[0].minor = Some(3);
        let v = check_spec_against(&inv, Some(&loaded("h100/nvidia-container-toolkit.json")));
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.message
                .contains("injects /dev/nvidia0 but GPU 0 is /dev/nvidia3"),
            "{}",
            v.message
        );
    }

    #[test]
    fn sim_spec_matches_sim_inventory() {
        let gpus = crate::sim::sim_gpus(4);
        let text = crate::sim::sim_spec_json(&gpus, Path::new("/tmp/support"));
        let spec =
            crate::cdi::parse_spec(Path::new("s.json"), text.as_bytes()).expect("sim spec parses");
        let l = LoadedSpec {
            path: "s.json".into(),
            dir_index: 0,
            spec,
            problems: Vec::new(),
        };
        let v = check_spec_against(&sim_inventory(4), Some(&l));
        assert_eq!(v.status, Status::Pass, "{}", v.message);
        assert!(v.message.contains("simulated NVML"));
        // A fifth GPU the spec lacks is caught.
        let v = check_spec_against(&sim_inventory(5), Some(&l));
        assert_eq!(v.status, Status::Fail);
    }

    #[test]
    fn containers_must_show_nvml_uuids() {
        let inv = h100();
        let smi = fixture("h100/nvidia-smi-L.txt");
        let mut runs = BTreeMap::new();
        runs.insert("device_all".to_string(), listing(&smi));
        runs.insert("device_0".to_string(), listing(&smi));
        assert_eq!(check_containers(&inv, &runs).status, Status::Pass);
        runs.insert(
            "device_0".to_string(),
            listing(
                "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaaaaaa-0000-0000-0000-000000000000)\n",
            ),
        );
        let v = check_containers(&inv, &runs);
        assert_eq!(v.status, Status::Fail);
        assert!(v.message.contains("GPU 0 is GPU-7755d06d"), "{}", v.message);
        runs.clear();
        runs.insert("device_all".to_string(), Err("refused".into()));
        assert_eq!(check_containers(&inv, &runs).status, Status::Skip);
    }

    #[test]
    fn driver_version_from_mounts_and_staleness() {
        let l = loaded("h100/nvidia-container-toolkit.json");
        assert_eq!(
            spec_driver_versions(&l.spec),
            BTreeSet::from(["580.159.04".to_string()])
        );
        let boot = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let after = boot + std::time::Duration::from_secs(5);
        let before = boot - std::time::Duration::from_secs(3600);
        let inv = h100();
        let v = check_spec_fresh(Some(&l), Some(after), Some(boot), Some(&inv));
        assert_eq!(v.status, Status::Pass, "{}", v.message);
        let v = check_spec_fresh(Some(&l), Some(before), Some(boot), Some(&inv));
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.message.contains("before the current boot"),
            "{}",
            v.message
        );
        let mut newer = inv.clone();
        newer.driver_version = "580.95.05".into();
        let v = check_spec_fresh(Some(&l), Some(after), Some(boot), Some(&newer));
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.message.contains("loaded driver is 580.95.05"),
            "{}",
            v.message
        );
        // Neither the age nor the driver known: nothing was compared, so no pass.
        let v = check_spec_fresh(Some(&l), None, Some(boot), None);
        assert_eq!(v.status, Status::Skip, "{}", v.message);
        assert!(
            v.message.contains("nothing could be compared"),
            "{}",
            v.message
        );
        // One of the two is enough to pass on.
        let v = check_spec_fresh(Some(&l), None, None, Some(&inv));
        assert_eq!(v.status, Status::Pass, "{}", v.message);
    }

    #[test]
    fn no_nvml_skips_and_broken_nvml_fails() {
        let f = GpuFacts {
            inventory: StaticSource(Err(GpuError::Unavailable {
                reason: "libnvidia-ml.so.1: cannot open shared object file".into(),
            }))
            .inventory(),
            boot_time: None,
        };
        let v = f.need().expect_err("no inventory");
        assert_eq!(v.status, Status::Skip);
        assert!(v.message.contains("no NVML"));
        let f = GpuFacts {
            inventory: Err(GpuError::Call {
                call: "nvmlDeviceGetCount".into(),
                message: "Unknown".into(),
            }),
            boot_time: None,
        };
        assert_eq!(f.need().expect_err("broken").status, Status::Fail);
    }

    #[test]
    fn btime_parses() {
        let t = parse_btime("cpu  1 2 3\nbtime 1764163200\nprocesses 5\n").expect("btime");
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .ok(),
            Some(1_764_163_200)
        );
        assert!(parse_btime("cpu 1\n").is_none());
    }

    #[test]
    fn nvml_source_without_library_is_unavailable_or_real() {
        // On this machine there is usually no libnvidia-ml: that must be a skip, not a
        // failure. On a GPU host the real inventory must have UUIDs.
        match NvmlSource.inventory() {
            Err(e) => assert!(e.is_unavailable(), "{e}"),
            Ok(inv) => assert!(inv.gpus.iter().all(|g| g.uuid.starts_with("GPU-"))),
        }
    }
}
