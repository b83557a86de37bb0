//! The simulated NVIDIA CDI spec, and the stale second spec a user leaves behind.
//!
//! Shaped like what `nvidia-ctk cdi generate` writes (kind `nvidia.com/gpu`, one device
//! per GPU plus `all`, common nodes and mounts at the spec level), so that the engine's
//! CDI code takes the same paths it takes on a real host. What differs: every device
//! node is backed by `/dev/null` (`hostPath`), the only "driver file" mounted is the
//! simulated `nvidia-smi` and its inventory, and there are no hooks (a hook needs
//! `nvidia-cdi-hook` on the host) unless a [`SpecFault`] asks for a failing one.
//!
//! The rootless variants ([`sim_spec_json_rootless`]) omit `hostPath`, like a real spec
//! on a GPU host: a rootless engine cannot create device nodes, so runc bind-mounts each
//! node from the host path equal to its container path, and inside rootlesskit's
//! namespace `/dev/null` is a symlink that CDI refuses as a host device ("not a device
//! node"). The private rootless engine creates the nodes [`device_node_paths`] lists in
//! its own namespace instead (see `RootlessOptions::device_nodes`).

use std::path::Path;

use serde::Serialize;

use super::gpu::{
    INVENTORY_CONTAINER_PATH, INVENTORY_FILE, NVIDIA_SMI_CONTAINER_PATH, NVIDIA_SMI_FILE, SimGpu,
};

/// The CDI kind NVIDIA's generator uses; devices are `nvidia.com/gpu=<name>`.
pub const SIM_CDI_KIND: &str = "nvidia.com/gpu";
/// The `cdiVersion` written. `nvidia-ctk` writes the lowest version its content needs;
/// for this content (device names starting with a digit, `hostPath` on device nodes)
/// that is 0.5.0, which is also what every engine with CDI (25 and later) can parse.
pub const SIM_CDI_VERSION: &str = "0.5.0";
/// File name of the simulated spec, as the NVIDIA toolkit's refresh service names it.
pub const SPEC_FILE_NAME: &str = "nvidia-container-toolkit.json";
/// File name of the stale hand-made spec (what `nvidia-ctk cdi generate
/// --output=/etc/cdi/nvidia.yaml`, as documented, leaves behind).
pub const STALE_SPEC_FILE_NAME: &str = "nvidia.yaml";
/// The node every simulated device node is backed by: exists everywhere, harmless.
const NULL_DEVICE: &str = "/dev/null";
/// Control and UVM nodes nvidia-ctk puts in the spec-level edits (when the host has them).
const COMMON_NODES: [&str; 4] = [
    "/dev/nvidia-modeset",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-uvm",
    "/dev/nvidiactl",
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    cdi_version: &'static str,
    kind: &'static str,
    devices: Vec<Device>,
    container_edits: Edits,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    container_edits: Edits,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Edits {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    device_nodes: Vec<Node>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<Mount>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hooks: Vec<HookEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HookEntry {
    hook_name: &'static str,
    path: String,
    args: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_path: Option<String>,
}

/// What backs the spec's device nodes on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backing {
    /// `hostPath: /dev/null` on every node: a rootful engine creates the node in the
    /// container from /dev/null's type and numbers; no node needs to exist on the host.
    DevNull,
    /// No `hostPath`: the node must exist on the host under its container path, which
    /// the private rootless engine arranges in its own namespace.
    SamePath,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Mount {
    host_path: String,
    container_path: String,
    options: Vec<&'static str>,
}

fn node(path: impl Into<String>, backing: Backing) -> Node {
    Node {
        path: path.into(),
        host_path: match backing {
            Backing::DevNull => Some(NULL_DEVICE.to_string()),
            Backing::SamePath => None,
        },
    }
}

fn gpu_node_path(index: u32) -> String {
    format!("/dev/nvidia{index}")
}

fn gpu_node(gpu: &SimGpu, backing: Backing) -> Node {
    node(gpu_node_path(gpu.index), backing)
}

fn ro_bind(host: &Path, container: &str) -> Mount {
    Mount {
        host_path: host.display().to_string(),
        container_path: container.to_string(),
        options: vec!["ro", "nosuid", "nodev", "bind"],
    }
}

fn common_edits(support_dir: &Path, backing: Backing) -> Edits {
    Edits {
        // nvidia-ctk sets this so that a legacy NVIDIA hook in the same container does
        // not inject GPUs a second time.
        env: vec!["NVIDIA_VISIBLE_DEVICES=void".to_string()],
        device_nodes: COMMON_NODES.iter().map(|p| node(*p, backing)).collect(),
        mounts: vec![
            ro_bind(
                &support_dir.join(NVIDIA_SMI_FILE),
                NVIDIA_SMI_CONTAINER_PATH,
            ),
            ro_bind(&support_dir.join(INVENTORY_FILE), INVENTORY_CONTAINER_PATH),
        ],
        hooks: Vec::new(),
    }
}

fn sorted(gpus: &[SimGpu]) -> Vec<&SimGpu> {
    let mut v: Vec<&SimGpu> = gpus.iter().collect();
    v.sort_by_key(|g| g.index);
    v
}

fn all_device(gpus: &[&SimGpu], backing: Backing) -> Device {
    Device {
        name: "all".to_string(),
        container_edits: Edits {
            device_nodes: gpus.iter().map(|g| gpu_node(g, backing)).collect(),
            ..Edits::default()
        },
    }
}

fn build_spec(gpus: &[SimGpu], support_dir: &Path, uuid_names: bool, backing: Backing) -> Spec {
    let gpus = sorted(gpus);
    let mut devices = Vec::new();
    for gpu in &gpus {
        devices.push(Device {
            name: gpu.index.to_string(),
            container_edits: Edits {
                device_nodes: vec![gpu_node(gpu, backing)],
                ..Edits::default()
            },
        });
    }
    if uuid_names {
        for gpu in &gpus {
            devices.push(Device {
                name: gpu.uuid.clone(),
                container_edits: Edits {
                    device_nodes: vec![gpu_node(gpu, backing)],
                    ..Edits::default()
                },
            });
        }
    }
    devices.push(all_device(&gpus, backing));
    Spec {
        cdi_version: SIM_CDI_VERSION,
        kind: SIM_CDI_KIND,
        devices,
        container_edits: common_edits(support_dir, backing),
    }
}

fn to_json(spec: &Spec) -> String {
    // Serializing these plain structs cannot fail; the fallback keeps the API total.
    serde_json::to_string_pretty(spec).unwrap_or_default() + "\n"
}

/// The simulated spec for these GPUs: devices "0".."N-1" and "all", as JSON text ready
/// to write to `<specdir>/nvidia-container-toolkit.json` ([`SPEC_FILE_NAME`]).
/// `support_dir` is where [`super::write_support_files`] put the script and inventory.
pub fn sim_spec_json(gpus: &[SimGpu], support_dir: &Path) -> String {
    to_json(&build_spec(gpus, support_dir, false, Backing::DevNull))
}

/// Like [`sim_spec_json`], but also names every GPU by its UUID
/// (`nvidia.com/gpu=GPU-…`), as `nvidia-ctk cdi generate --device-name-strategy=index
/// --device-name-strategy=uuid` (and the toolkit's refresh service) do.
pub fn sim_spec_json_with_uuids(gpus: &[SimGpu], support_dir: &Path) -> String {
    to_json(&build_spec(gpus, support_dir, true, Backing::DevNull))
}

/// [`sim_spec_json`] for the private *rootless* engine: the same devices, edits and
/// mounts, but no `hostPath` on any device node (a real GPU host's spec has none
/// either). Only a rootless engine started with [`device_node_paths`] as its
/// `RootlessOptions::device_nodes` can use it: every node must exist, under its
/// container path, where the engine runs.
pub fn sim_spec_json_rootless(gpus: &[SimGpu], support_dir: &Path) -> String {
    to_json(&build_spec(gpus, support_dir, false, Backing::SamePath))
}

/// [`sim_spec_json_with_uuids`] for the private rootless engine (no `hostPath`, see
/// [`sim_spec_json_rootless`]).
pub fn sim_spec_json_rootless_with_uuids(gpus: &[SimGpu], support_dir: &Path) -> String {
    to_json(&build_spec(gpus, support_dir, true, Backing::SamePath))
}

/// A known regression the generated spec can be given, so that the harness's checks and
/// fix hints for it are exercised against a real engine (`[sim] fault` in a scenario).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFault {
    /// nixpkgs#319201: after a driver update the spec still mounts a driver file of the
    /// old driver's store path, which is gone ([`STALE_MOUNT_HOST_PATH`]).
    MissingMountHostPath,
    /// nixpkgs#411150: a `createContainer` hook (`nvidia-cdi-hook`) fails at container
    /// start; here a script in the support dir ([`FAILING_HOOK_FILE`]) that exits 1.
    FailingHook,
}

impl SpecFault {
    /// Every fault with its scenario-file spelling, for parsing and error messages.
    pub const ALL: [(&'static str, SpecFault); 2] = [
        ("missing-mount-host-path", SpecFault::MissingMountHostPath),
        ("failing-hook", SpecFault::FailingHook),
    ];

    /// The fault spelled as in a scenario file (`missing-mount-host-path`, `failing-hook`).
    pub fn parse(s: &str) -> Option<SpecFault> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, f)| *f)
    }

    /// The scenario-file spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| *n)
    }
}

/// The driver file a stale spec mounts: the libcuda of a previous driver's store path,
/// as the generator wrote it before `nixos-rebuild` switched drivers (the hash is not a
/// real one, so the path exists on no machine). `lib/sim.nix` writes the same path.
pub const STALE_MOUNT_HOST_PATH: &str = "/nix/store/00000000000000000000000000000000-nvidia-x11-570.86.16-6.12.30/lib/libcuda.so.570.86.16";
/// Where the stale spec mounts [`STALE_MOUNT_HOST_PATH`] in the container.
pub const STALE_MOUNT_CONTAINER_PATH: &str = "/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.16";
/// File name of the failing hook in the support dir: named like the real hook so the
/// spec reads as the generator's does.
pub const FAILING_HOOK_FILE: &str = "nvidia-cdi-hook";
/// The failing hook script (also installed by `nixos-tests/make-test.nix`).
pub const FAILING_HOOK_SCRIPT: &str = include_str!("failing-hook.sh");
/// What the failing hook prints on stderr; the engine passes it on verbatim.
pub const FAILING_HOOK_MESSAGE: &str = "failed to create link [libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so]: no such file or directory (simulated by cdi-harness)";

/// [`sim_spec_json`] (or [`sim_spec_json_rootless`] when `rootless`) with `fault` added
/// to the spec-level edits: a mount of [`STALE_MOUNT_HOST_PATH`], or a
/// `createContainer` hook running `<support_dir>/nvidia-cdi-hook create-symlinks …`
/// (write it with [`write_fault_files`]). Every device then carries the fault, as with
/// a real stale spec.
pub fn sim_spec_json_with_fault(
    gpus: &[SimGpu],
    support_dir: &Path,
    rootless: bool,
    fault: Option<SpecFault>,
) -> String {
    let backing = if rootless {
        Backing::SamePath
    } else {
        Backing::DevNull
    };
    let mut spec = build_spec(gpus, support_dir, false, backing);
    match fault {
        None => {}
        Some(SpecFault::MissingMountHostPath) => spec.container_edits.mounts.push(Mount {
            host_path: STALE_MOUNT_HOST_PATH.to_string(),
            container_path: STALE_MOUNT_CONTAINER_PATH.to_string(),
            options: vec!["ro", "nosuid", "nodev", "bind"],
        }),
        Some(SpecFault::FailingHook) => spec.container_edits.hooks.push(HookEntry {
            hook_name: "createContainer",
            path: support_dir.join(FAILING_HOOK_FILE).display().to_string(),
            args: vec![
                "nvidia-cdi-hook",
                "create-symlinks",
                "--link",
                "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
            ],
        }),
    }
    to_json(&spec)
}

/// Writes what `fault` needs in the support dir: the failing hook script (mode 0755)
/// for [`SpecFault::FailingHook`]; nothing for the others.
pub fn write_fault_files(support_dir: &Path, fault: Option<SpecFault>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if fault == Some(SpecFault::FailingHook) {
        let path = support_dir.join(FAILING_HOOK_FILE);
        std::fs::write(&path, FAILING_HOOK_SCRIPT)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Every device node path the simulated specs for these GPUs name (`/dev/nvidiaN` per
/// GPU in index order, then the control and UVM nodes): what a rootless engine must
/// find on its host, so what `RootlessOptions::device_nodes` should hold. The stale
/// spec names a subset (with no GPUs it names `/dev/nvidia0`, but the devices holding
/// it are dropped as conflicting, so the node is never looked up).
pub fn device_node_paths(gpus: &[SimGpu]) -> Vec<String> {
    let mut out: Vec<String> = sorted(gpus)
        .iter()
        .map(|g| gpu_node_path(g.index))
        .collect();
    out.dedup();
    out.extend(COMMON_NODES.iter().map(|p| p.to_string()));
    out
}

/// A stale hand-made second spec (YAML, as `nvidia-ctk cdi generate
/// --output=/etc/cdi/nvidia.yaml` writes it) that defines "0" and "all" again. It is a
/// valid spec on its own; in the same spec dir as [`sim_spec_json`]'s, the engine drops
/// both conflicting devices from both files (measured: `--device nvidia.com/gpu=all`
/// becomes "unresolvable"), which is the failure a check must explain. With no GPUs it
/// still defines "0" (for `/dev/nvidia0`), so that it always conflicts.
pub fn stale_spec_yaml(gpus: &[SimGpu], support_dir: &Path) -> String {
    stale_yaml(gpus, support_dir, Backing::DevNull)
}

/// [`stale_spec_yaml`] for the private rootless engine (no `hostPath`, see
/// [`sim_spec_json_rootless`]).
pub fn stale_spec_yaml_rootless(gpus: &[SimGpu], support_dir: &Path) -> String {
    stale_yaml(gpus, support_dir, Backing::SamePath)
}

fn stale_yaml(gpus: &[SimGpu], support_dir: &Path, backing: Backing) -> String {
    let sorted_gpus = sorted(gpus);
    let first = sorted_gpus.first().map(|g| g.index).unwrap_or(0);
    let spec = Spec {
        cdi_version: SIM_CDI_VERSION,
        kind: SIM_CDI_KIND,
        devices: vec![
            Device {
                name: "0".to_string(),
                container_edits: Edits {
                    device_nodes: vec![node(gpu_node_path(first), backing)],
                    ..Edits::default()
                },
            },
            if sorted_gpus.is_empty() {
                Device {
                    name: "all".to_string(),
                    container_edits: Edits {
                        device_nodes: vec![node(gpu_node_path(0), backing)],
                        ..Edits::default()
                    },
                }
            } else {
                all_device(&sorted_gpus, backing)
            },
        ],
        container_edits: common_edits(support_dir, backing),
    };
    // nvidia-ctk's YAML starts with a document marker; plain structs always serialize.
    let body = serde_yaml_ng::to_string(&spec).unwrap_or_default();
    format!("---\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::gpu::sim_gpus;
    use serde_json::Value;

    fn device_names(spec: &Value) -> Vec<String> {
        spec["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn nodes_of(dev: &Value) -> Vec<(String, String)> {
        dev["containerEdits"]["deviceNodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["path"].as_str().unwrap().to_string(),
                    n["hostPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn faults_add_the_stale_mount_or_the_failing_hook_and_nothing_else() {
        let gpus = sim_gpus(1);
        let support = Path::new("/tmp/cdih-x/support");
        assert_eq!(
            sim_spec_json_with_fault(&gpus, support, false, None),
            sim_spec_json(&gpus, support)
        );
        assert_eq!(
            sim_spec_json_with_fault(&gpus, support, true, None),
            sim_spec_json_rootless(&gpus, support)
        );
        let plain: Value = serde_json::from_str(&sim_spec_json(&gpus, support)).unwrap();
        let stale: Value = serde_json::from_str(&sim_spec_json_with_fault(
            &gpus,
            support,
            false,
            Some(SpecFault::MissingMountHostPath),
        ))
        .unwrap();
        let mounts = stale["containerEdits"]["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[2]["hostPath"], STALE_MOUNT_HOST_PATH);
        assert!(!Path::new(STALE_MOUNT_HOST_PATH).exists());
        assert_eq!(stale["devices"], plain["devices"]);
        let hooked: Value = serde_json::from_str(&sim_spec_json_with_fault(
            &gpus,
            support,
            false,
            Some(SpecFault::FailingHook),
        ))
        .unwrap();
        let hooks = hooked["containerEdits"]["hooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0]["hookName"], "createContainer");
        assert_eq!(hooks[0]["path"], "/tmp/cdih-x/support/nvidia-cdi-hook");
        assert_eq!(
            hooked["containerEdits"]["mounts"],
            plain["containerEdits"]["mounts"]
        );
        assert!(FAILING_HOOK_SCRIPT.contains(FAILING_HOOK_MESSAGE));
        assert!(FAILING_HOOK_SCRIPT.contains("exit 1"));
    }

    #[test]
    fn spec_has_one_device_per_gpu_and_all() {
        for count in [1u32, 2, 4, 8] {
            let gpus = sim_gpus(count);
            let text = sim_spec_json(&gpus, Path::new("/tmp/cdih-x/support"));
            let spec: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(spec["cdiVersion"], "0.5.0");
            assert_eq!(spec["kind"], "nvidia.com/gpu");
            let mut want: Vec<String> = (0..count).map(|i| i.to_string()).collect();
            want.push("all".into());
            assert_eq!(device_names(&spec), want, "count {count}");
            let devices = spec["devices"].as_array().unwrap();
            for (i, device) in devices.iter().take(count as usize).enumerate() {
                assert_eq!(
                    nodes_of(device),
                    vec![(format!("/dev/nvidia{i}"), "/dev/null".to_string())]
                );
            }
            let all = nodes_of(&devices[count as usize]);
            assert_eq!(all.len(), count as usize);
            assert!(all.iter().all(|(_, host)| host == "/dev/null"));
        }
    }

    #[test]
    fn spec_level_edits_have_control_nodes_and_the_smi_mount() {
        let text = sim_spec_json(&sim_gpus(2), Path::new("/s"));
        let spec: Value = serde_json::from_str(&text).unwrap();
        let common = &spec["containerEdits"];
        let nodes: Vec<&str> = common["deviceNodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["path"].as_str().unwrap())
            .collect();
        for want in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] {
            assert!(nodes.contains(&want), "{nodes:?}");
        }
        let mounts = common["mounts"].as_array().unwrap();
        assert_eq!(mounts[0]["hostPath"], "/s/nvidia-smi");
        assert_eq!(mounts[0]["containerPath"], "/usr/bin/nvidia-smi");
        assert_eq!(mounts[1]["hostPath"], "/s/gpus");
        assert_eq!(mounts[1]["containerPath"], "/run/nvidia-sim/gpus");
        assert_eq!(
            mounts[0]["options"],
            serde_json::json!(["ro", "nosuid", "nodev", "bind"])
        );
    }

    #[test]
    fn uuid_variant_adds_uuid_devices() {
        let gpus = sim_gpus(2);
        let spec: Value =
            serde_json::from_str(&sim_spec_json_with_uuids(&gpus, Path::new("/s"))).unwrap();
        assert_eq!(
            device_names(&spec),
            vec![
                "0".to_string(),
                "1".to_string(),
                gpus[0].uuid.clone(),
                gpus[1].uuid.clone(),
                "all".to_string()
            ]
        );
    }

    #[test]
    fn stale_yaml_redefines_zero_and_all() {
        let gpus = sim_gpus(4);
        let text = stale_spec_yaml(&gpus, Path::new("/s"));
        assert!(text.starts_with("---\n"));
        let spec: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(spec["kind"], "nvidia.com/gpu");
        assert_eq!(spec["cdiVersion"], "0.5.0");
        // The name must stay the string "0" (a bare 0 would be an integer in YAML).
        assert_eq!(
            device_names(&spec),
            vec!["0".to_string(), "all".to_string()]
        );
        assert_eq!(nodes_of(&spec["devices"][1]).len(), 4);
        let empty: Value = serde_yaml_ng::from_str(&stale_spec_yaml(&[], Path::new("/s"))).unwrap();
        assert_eq!(
            device_names(&empty),
            vec!["0".to_string(), "all".to_string()]
        );
    }

    /// Every `hostPath` anywhere in a spec value (device nodes and mounts).
    fn node_host_paths(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(nodes) = map.get("deviceNodes").and_then(Value::as_array) {
                    for n in nodes {
                        if let Some(h) = n.get("hostPath") {
                            out.push(h.to_string());
                        }
                    }
                }
                for child in map.values() {
                    node_host_paths(child, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| node_host_paths(i, out)),
            _ => {}
        }
    }

    #[test]
    fn rootless_specs_have_no_host_path_on_any_node() {
        let gpus = sim_gpus(3);
        let support = Path::new("/tmp/cdih-x/support");
        let texts = [
            serde_json::from_str::<Value>(&sim_spec_json_rootless(&gpus, support)).unwrap(),
            serde_json::from_str(&sim_spec_json_rootless_with_uuids(&gpus, support)).unwrap(),
            serde_yaml_ng::from_str(&stale_spec_yaml_rootless(&gpus, support)).unwrap(),
        ];
        for spec in &texts {
            let mut found = Vec::new();
            node_host_paths(spec, &mut found);
            assert!(
                found.is_empty(),
                "hostPath on a device node: {found:?}\n{spec:#}"
            );
            // Mounts keep theirs: the support files must still come from the host.
            assert_eq!(
                spec["containerEdits"]["mounts"][0]["hostPath"],
                "/tmp/cdih-x/support/nvidia-smi"
            );
        }
        let text = sim_spec_json_rootless(&gpus, support);
        assert!(!text.contains("/dev/null"), "{text}");
        // The same devices and node paths as the rootful spec.
        let rootful: Value = serde_json::from_str(&sim_spec_json(&gpus, support)).unwrap();
        let rootless = &texts[0];
        assert_eq!(device_names(rootless), device_names(&rootful));
        let paths = |v: &Value| -> Vec<String> {
            let mut out = Vec::new();
            for n in v["containerEdits"]["deviceNodes"].as_array().unwrap() {
                out.push(n["path"].as_str().unwrap().to_string());
            }
            for d in v["devices"].as_array().unwrap() {
                for n in d["containerEdits"]["deviceNodes"].as_array().unwrap() {
                    out.push(n["path"].as_str().unwrap().to_string());
                }
            }
            out
        };
        assert_eq!(paths(rootless), paths(&rootful));
        // The rootful spec still backs every node with /dev/null.
        let mut found = Vec::new();
        node_host_paths(&rootful, &mut found);
        assert!(!found.is_empty() && found.iter().all(|h| h == "\"/dev/null\""));
    }

    #[test]
    fn device_node_paths_cover_every_node_the_specs_name() {
        let gpus = sim_gpus(3);
        let nodes = device_node_paths(&gpus);
        assert_eq!(
            nodes,
            vec![
                "/dev/nvidia0",
                "/dev/nvidia1",
                "/dev/nvidia2",
                "/dev/nvidia-modeset",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia-uvm",
                "/dev/nvidiactl",
            ]
        );
        for text in [
            sim_spec_json_rootless_with_uuids(&gpus, Path::new("/s")),
            sim_spec_json(&gpus, Path::new("/s")),
        ] {
            let spec: Value = serde_json::from_str(&text).unwrap();
            for d in spec["devices"].as_array().unwrap() {
                for n in d["containerEdits"]["deviceNodes"].as_array().unwrap() {
                    assert!(nodes.contains(&n["path"].as_str().unwrap().to_string()));
                }
            }
        }
        let stale: Value =
            serde_yaml_ng::from_str(&stale_spec_yaml_rootless(&gpus, Path::new("/s"))).unwrap();
        for d in stale["devices"].as_array().unwrap() {
            for n in d["containerEdits"]["deviceNodes"].as_array().unwrap() {
                assert!(nodes.contains(&n["path"].as_str().unwrap().to_string()));
            }
        }
        // Unsorted input still gives index order.
        let mut shuffled = sim_gpus(2);
        shuffled.reverse();
        assert_eq!(device_node_paths(&shuffled)[0], "/dev/nvidia0");
        assert_eq!(device_node_paths(&[]).len(), 4);
    }
}
