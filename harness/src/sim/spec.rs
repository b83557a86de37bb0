//! The simulated NVIDIA CDI spec, and the stale second spec a user leaves behind.
//!
//! Shaped like what `nvidia-ctk cdi generate` writes (kind `nvidia.com/gpu`, one device
//! per GPU plus `all`, common nodes and mounts at the spec level), so that the engine's
//! CDI code takes the same paths it takes on a real host. What differs: every device
//! node is backed by `/dev/null` (`hostPath`), the only "driver file" mounted is the
//! simulated `nvidia-smi` and its inventory, and there are no hooks (a hook needs
//! `nvidia-cdi-hook` on the host).

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
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    path: String,
    host_path: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Mount {
    host_path: String,
    container_path: String,
    options: Vec<&'static str>,
}

fn node(path: impl Into<String>) -> Node {
    Node {
        path: path.into(),
        host_path: NULL_DEVICE.to_string(),
    }
}

fn gpu_node(gpu: &SimGpu) -> Node {
    node(format!("/dev/nvidia{}", gpu.index))
}

fn ro_bind(host: &Path, container: &str) -> Mount {
    Mount {
        host_path: host.display().to_string(),
        container_path: container.to_string(),
        options: vec!["ro", "nosuid", "nodev", "bind"],
    }
}

fn common_edits(support_dir: &Path) -> Edits {
    Edits {
        // nvidia-ctk sets this so that a legacy NVIDIA hook in the same container does
        // not inject GPUs a second time.
        env: vec!["NVIDIA_VISIBLE_DEVICES=void".to_string()],
        device_nodes: COMMON_NODES.iter().map(|p| node(*p)).collect(),
        mounts: vec![
            ro_bind(
                &support_dir.join(NVIDIA_SMI_FILE),
                NVIDIA_SMI_CONTAINER_PATH,
            ),
            ro_bind(&support_dir.join(INVENTORY_FILE), INVENTORY_CONTAINER_PATH),
        ],
    }
}

fn sorted(gpus: &[SimGpu]) -> Vec<&SimGpu> {
    let mut v: Vec<&SimGpu> = gpus.iter().collect();
    v.sort_by_key(|g| g.index);
    v
}

fn all_device(gpus: &[&SimGpu]) -> Device {
    Device {
        name: "all".to_string(),
        container_edits: Edits {
            device_nodes: gpus.iter().map(|g| gpu_node(g)).collect(),
            ..Edits::default()
        },
    }
}

fn build_spec(gpus: &[SimGpu], support_dir: &Path, uuid_names: bool) -> Spec {
    let gpus = sorted(gpus);
    let mut devices = Vec::new();
    for gpu in &gpus {
        devices.push(Device {
            name: gpu.index.to_string(),
            container_edits: Edits {
                device_nodes: vec![gpu_node(gpu)],
                ..Edits::default()
            },
        });
    }
    if uuid_names {
        for gpu in &gpus {
            devices.push(Device {
                name: gpu.uuid.clone(),
                container_edits: Edits {
                    device_nodes: vec![gpu_node(gpu)],
                    ..Edits::default()
                },
            });
        }
    }
    devices.push(all_device(&gpus));
    Spec {
        cdi_version: SIM_CDI_VERSION,
        kind: SIM_CDI_KIND,
        devices,
        container_edits: common_edits(support_dir),
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
    to_json(&build_spec(gpus, support_dir, false))
}

/// Like [`sim_spec_json`], but also names every GPU by its UUID
/// (`nvidia.com/gpu=GPU-…`), as `nvidia-ctk cdi generate --device-name-strategy=index
/// --device-name-strategy=uuid` (and the toolkit's refresh service) do.
pub fn sim_spec_json_with_uuids(gpus: &[SimGpu], support_dir: &Path) -> String {
    to_json(&build_spec(gpus, support_dir, true))
}

/// A stale hand-made second spec (YAML, as `nvidia-ctk cdi generate
/// --output=/etc/cdi/nvidia.yaml` writes it) that defines "0" and "all" again. It is a
/// valid spec on its own; in the same spec dir as [`sim_spec_json`]'s, the engine drops
/// both conflicting devices from both files (measured: `--device nvidia.com/gpu=all`
/// becomes "unresolvable"), which is the failure a check must explain. With no GPUs it
/// still defines "0" (for `/dev/nvidia0`), so that it always conflicts.
pub fn stale_spec_yaml(gpus: &[SimGpu], support_dir: &Path) -> String {
    let sorted_gpus = sorted(gpus);
    let first = sorted_gpus.first().map(|g| g.index).unwrap_or(0);
    let spec = Spec {
        cdi_version: SIM_CDI_VERSION,
        kind: SIM_CDI_KIND,
        devices: vec![
            Device {
                name: "0".to_string(),
                container_edits: Edits {
                    device_nodes: vec![node(format!("/dev/nvidia{first}"))],
                    ..Edits::default()
                },
            },
            if sorted_gpus.is_empty() {
                Device {
                    name: "all".to_string(),
                    container_edits: Edits {
                        device_nodes: vec![node("/dev/nvidia0")],
                        ..Edits::default()
                    },
                }
            } else {
                all_device(&sorted_gpus)
            },
        ],
        container_edits: common_edits(support_dir),
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
}
