//! The simulated GPUs and the files that stand in for the NVIDIA driver.
//!
//! A simulated GPU is a device node backed by `/dev/null` plus one line in an inventory
//! file; the simulated `nvidia-smi` (a busybox `sh` script, see `nvidia-smi.sh`) reads the
//! inventory and reports exactly the GPUs whose nodes CDI injected, so a check that
//! passes here proves the engine applied the spec's per-device edits, not just that a
//! command ran.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::SimError;

/// Product name every simulated GPU reports (an H100 SXM, as on the machines the
/// harness targets), so outputs look like the real thing.
pub const SIM_GPU_NAME: &str = "NVIDIA H100 80GB HBM3";
/// Total memory, in MiB, that `nvidia-smi` reports for [`SIM_GPU_NAME`].
pub const SIM_GPU_MEMORY_MIB: u64 = 81559;
/// Driver version the simulated `nvidia-smi` reports (a real 580 release).
pub const SIM_DRIVER_VERSION: &str = "580.95.05";
/// NVML version matching [`SIM_DRIVER_VERSION`].
pub const SIM_NVML_VERSION: &str = "580.95";
/// CUDA version matching [`SIM_DRIVER_VERSION`].
pub const SIM_CUDA_VERSION: &str = "13.0";
/// Name of the script in the support directory (mounted as [`NVIDIA_SMI_CONTAINER_PATH`]).
pub const NVIDIA_SMI_FILE: &str = "nvidia-smi";
/// Name of the inventory in the support directory (mounted as [`INVENTORY_CONTAINER_PATH`]).
pub const INVENTORY_FILE: &str = "gpus";
/// Where the simulated spec mounts the script inside containers.
pub const NVIDIA_SMI_CONTAINER_PATH: &str = "/usr/bin/nvidia-smi";
/// Where the simulated spec mounts the inventory inside containers; the script reads it
/// from here unless `NVIDIA_SIM_INVENTORY` says otherwise.
pub const INVENTORY_CONTAINER_PATH: &str = "/run/nvidia-sim/gpus";

/// The simulated `nvidia-smi`, with `@…@` placeholders filled in by [`nvidia_smi_script`].
const SCRIPT_TEMPLATE: &str = include_str!("nvidia-smi.sh");

/// One simulated GPU; UUIDs are deterministic (derived from the index) so snapshots are
/// stable and tests can predict them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SimGpu {
    /// Minor number of its device node (`/dev/nvidia<index>`), as on a real host.
    pub index: u32,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case hex, like NVML's.
    pub uuid: String,
    /// Product name, as `nvidia-smi -L` prints it.
    pub name: String,
    /// PCI bus id in NVML's long form, e.g. `00000000:18:00.0`.
    pub pci_bus_id: String,
}

/// SplitMix64: a fixed, well-mixed function of its input, so that UUIDs look random but
/// never change between runs or machines.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The UUID simulated GPU `index` always gets.
pub fn sim_gpu_uuid(index: u32) -> String {
    // "cdih" in ASCII, so these never coincide with another generator's fixed UUIDs.
    let a = splitmix64(u64::from(index) ^ 0x6364_6968_0000_0000);
    let b = splitmix64(a);
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The PCI bus id simulated GPU `index` always gets: bus 0x18 for GPU 0 (as on an HGX
/// board), then a stride coprime with 256 so that every index has its own bus.
fn sim_pci_bus_id(index: u32) -> String {
    let domain = index / 256;
    let bus = (0x18 + 0x11 * (index % 256)) % 256;
    format!("{domain:08X}:{bus:02X}:00.0")
}

/// `count` simulated GPUs with indices `0..count`.
pub fn sim_gpus(count: u32) -> Vec<SimGpu> {
    (0..count)
        .map(|index| SimGpu {
            index,
            uuid: sim_gpu_uuid(index),
            name: SIM_GPU_NAME.to_string(),
            pci_bus_id: sim_pci_bus_id(index),
        })
        .collect()
}

/// What the simulated (and the real) `nvidia-smi -L` prints when exactly `visible` are
/// in the container: numbered from 0 in minor order, whatever their host indices.
pub fn expected_smi_list(visible: &[SimGpu]) -> String {
    let mut sorted: Vec<&SimGpu> = visible.iter().collect();
    sorted.sort_by_key(|g| g.index);
    let mut out = String::new();
    for (n, gpu) in sorted.iter().enumerate() {
        let _ = writeln!(out, "GPU {n}: {} (UUID: {})", gpu.name, gpu.uuid);
    }
    out
}

/// The `nvidia-smi` script text, reading its inventory from [`INVENTORY_CONTAINER_PATH`].
pub fn nvidia_smi_script() -> String {
    SCRIPT_TEMPLATE
        .replace("@INVENTORY@", INVENTORY_CONTAINER_PATH)
        .replace("@DRIVER@", SIM_DRIVER_VERSION)
        .replace("@NVML@", SIM_NVML_VERSION)
        .replace("@CUDA@", SIM_CUDA_VERSION)
}

/// The inventory text: a comment line, then one tab-separated line per GPU sorted by
/// index: minor, UUID, name, PCI bus id, memory in MiB.
pub fn inventory_text(gpus: &[SimGpu]) -> Result<String, SimError> {
    let mut sorted: Vec<&SimGpu> = gpus.iter().collect();
    sorted.sort_by_key(|g| g.index);
    let mut out = String::from(
        "# cdi-harness simulated GPUs: minor\tuuid\tname\tpci.bus_id\tmemory.total MiB\n",
    );
    for pair in sorted.windows(2) {
        if pair[0].index == pair[1].index {
            return Err(SimError::InvalidGpu {
                index: pair[0].index,
                detail: "the index appears twice".to_string(),
            });
        }
    }
    for gpu in sorted {
        for (field, value) in [
            ("uuid", &gpu.uuid),
            ("name", &gpu.name),
            ("pci_bus_id", &gpu.pci_bus_id),
        ] {
            if value.is_empty() || value.contains(['\t', '\n', '\r']) {
                return Err(SimError::InvalidGpu {
                    index: gpu.index,
                    detail: format!("{field} {value:?} is empty or holds a tab or line break"),
                });
            }
        }
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            gpu.index, gpu.uuid, gpu.name, gpu.pci_bus_id, SIM_GPU_MEMORY_MIB
        );
    }
    Ok(out)
}

/// Writes the nvidia-smi script (mode 0755) and the inventory file into `dir`, creating
/// `dir` if needed; the simulated spec mounts both into every container.
pub fn write_support_files(dir: &Path, gpus: &[SimGpu]) -> Result<(), SimError> {
    let inventory = inventory_text(gpus)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| SimError::io(format!("creating {}", dir.display()), e))?;
    let script_path = dir.join(NVIDIA_SMI_FILE);
    std::fs::write(&script_path, nvidia_smi_script())
        .map_err(|e| SimError::io(format!("writing {}", script_path.display()), e))?;
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| SimError::io(format!("chmod 0755 {}", script_path.display()), e))?;
    let inventory_path = dir.join(INVENTORY_FILE);
    std::fs::write(&inventory_path, inventory)
        .map_err(|e| SimError::io(format!("writing {}", inventory_path.display()), e))?;
    std::fs::set_permissions(&inventory_path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| SimError::io(format!("chmod 0644 {}", inventory_path.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::{Command, Output};

    /// A fake `/dev` and support dir: `nodes` are the files created in the dev dir.
    struct Fixture {
        _tmp: tempfile::TempDir,
        dev: PathBuf,
        support: PathBuf,
    }

    fn fixture(gpus: &[SimGpu], nodes: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("dev");
        let support = tmp.path().join("support");
        std::fs::create_dir_all(&dev).unwrap();
        for node in nodes {
            std::fs::write(dev.join(node), b"").unwrap();
        }
        write_support_files(&support, gpus).unwrap();
        Fixture {
            _tmp: tmp,
            dev,
            support,
        }
    }

    /// Runs the simulated `nvidia-smi` under the static busybox the sim's image is built
    /// from (its `sh` is the one the script meets in containers). `None` only when
    /// there is none and `CDI_HARNESS_ALLOW_SKIP=1` allows the test to skip; without
    /// it, a missing busybox fails the test (see [`crate::testutil::cannot_run`]).
    fn run_smi(fx: &Fixture, args: &[&str]) -> Option<Output> {
        let busybox = match crate::sim::find_static_busybox() {
            Ok(path) => path,
            Err(e) => {
                crate::testutil::cannot_run(&format!(
                    "the simulated nvidia-smi runs under busybox sh: {e}"
                ));
                return None;
            }
        };
        Some(
            Command::new(busybox)
                .arg("sh")
                .arg(fx.support.join(NVIDIA_SMI_FILE))
                .args(args)
                .env("NVIDIA_SIM_DEV_DIR", &fx.dev)
                .env("NVIDIA_SIM_INVENTORY", fx.support.join(INVENTORY_FILE))
                .output()
                .unwrap(),
        )
    }

    fn stdout(o: &Output) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// [`run_smi`] in a container that was given every GPU's node and `nvidiactl`.
    fn smi_with_all_nodes(gpus: &[SimGpu], args: &[&str]) -> Option<Output> {
        let nodes = nodes_for(gpus);
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        run_smi(&fixture(gpus, &nodes), args)
    }

    fn nodes_for(gpus: &[SimGpu]) -> Vec<String> {
        let mut v: Vec<String> = gpus.iter().map(|g| format!("nvidia{}", g.index)).collect();
        v.push("nvidiactl".into());
        v
    }

    #[test]
    fn uuids_are_deterministic_distinct_and_shaped_like_nvml() {
        let a = sim_gpus(64);
        assert_eq!(a, sim_gpus(64));
        let re = regex::Regex::new(
            r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        )
        .unwrap();
        let mut seen = std::collections::HashSet::new();
        for g in &a {
            assert!(re.is_match(&g.uuid), "{}", g.uuid);
            assert!(seen.insert(g.uuid.clone()));
        }
        assert_eq!(a[0].pci_bus_id, "00000000:18:00.0");
        let buses: std::collections::HashSet<_> =
            sim_gpus(300).into_iter().map(|g| g.pci_bus_id).collect();
        assert_eq!(buses.len(), 300);
    }

    #[test]
    fn script_file_is_executable_and_filled_in() {
        let fx = fixture(&sim_gpus(1), &[]);
        let path = fx.support.join(NVIDIA_SMI_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"));
        for placeholder in ["@INVENTORY@", "@DRIVER@", "@NVML@", "@CUDA@"] {
            assert!(!text.contains(placeholder), "{placeholder} left in script");
        }
        assert!(text.contains("driver=580.95.05\n"));
    }

    #[test]
    fn list_one_gpu_in_real_format() {
        let gpus = sim_gpus(1);
        let Some(out) = smi_with_all_nodes(&gpus, &["-L"]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            stdout(&out),
            format!("GPU 0: NVIDIA H100 80GB HBM3 (UUID: {})\n", sim_gpu_uuid(0))
        );
        assert_eq!(stdout(&out), expected_smi_list(&gpus));
    }

    #[test]
    fn list_four_gpus_in_minor_order() {
        let gpus = sim_gpus(4);
        let Some(out) = smi_with_all_nodes(&gpus, &["-L"]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 4);
        for (n, line) in text.lines().enumerate() {
            assert_eq!(
                line,
                format!(
                    "GPU {n}: NVIDIA H100 80GB HBM3 (UUID: {})",
                    sim_gpu_uuid(n as u32)
                )
            );
        }
    }

    #[test]
    fn only_injected_gpus_are_visible_and_renumbered_from_zero() {
        // Minors 2 and 10 only: 10 must come after 2 (numeric, not glob order).
        let gpus = sim_gpus(11);
        let fx = fixture(&gpus, &["nvidiactl", "nvidia2", "nvidia10", "nvidia-uvm"]);
        let Some(out) = run_smi(&fx, &["-L"]) else {
            return;
        };
        let visible = vec![gpus[2].clone(), gpus[10].clone()];
        assert_eq!(stdout(&out), expected_smi_list(&visible));
        assert!(
            stdout(&out).starts_with(&format!("GPU 0: {} (UUID: {})", SIM_GPU_NAME, gpus[2].uuid))
        );
    }

    #[test]
    fn no_nvidiactl_fails_like_a_missing_driver() {
        let gpus = sim_gpus(2);
        let fx = fixture(&gpus, &["nvidia0", "nvidia1"]);
        for args in [&["-L"][..], &[][..]] {
            let Some(out) = run_smi(&fx, args) else {
                return;
            };
            assert_eq!(out.status.code(), Some(9));
            assert_eq!(
                stdout(&out),
                "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. \
                 Make sure that the latest NVIDIA driver is installed and running.\n\n"
            );
        }
    }

    #[test]
    fn no_gpu_node_means_no_devices_found() {
        let gpus = sim_gpus(2);
        let fx = fixture(&gpus, &["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]);
        let Some(out) = run_smi(&fx, &["-L"]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(6));
        assert_eq!(stdout(&out), "No devices were found\n");
    }

    #[test]
    fn missing_inventory_fails_like_a_missing_nvml() {
        let gpus = sim_gpus(1);
        let fx = fixture(&gpus, &["nvidiactl", "nvidia0"]);
        std::fs::remove_file(fx.support.join(INVENTORY_FILE)).unwrap();
        let Some(out) = run_smi(&fx, &[]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(12));
        assert!(stdout(&out).starts_with("NVIDIA-SMI couldn't find libnvidia-ml.so library"));
    }

    #[test]
    fn table_resembles_the_real_one() {
        let gpus = sim_gpus(2);
        let Some(out) = smi_with_all_nodes(&gpus, &[]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(0));
        let text = stdout(&out);
        assert!(
            text.contains(
                "| NVIDIA-SMI 580.95.05              Driver Version: 580.95.05      CUDA Version: 13.0     |"
            ),
            "{text}"
        );
        for g in &gpus {
            assert!(text.contains(SIM_GPU_NAME));
            assert!(text.contains(&g.pci_bus_id), "{text}");
        }
        assert!(
            text.contains("|   1  NVIDIA H100 80GB HBM3          On  |   00000000:29:00.0 Off |"),
            "{text}"
        );
        // Every box line has the real width (91 columns); the first line is the date.
        for line in text.lines().skip(1).filter(|l| l.starts_with(['|', '+'])) {
            assert_eq!(line.chars().count(), 91, "{line:?}");
        }
        assert!(text.contains("No running processes found"));
    }

    #[test]
    fn query_uuid_csv_noheader() {
        let gpus = sim_gpus(3);
        let Some(out) = smi_with_all_nodes(&gpus, &["--query-gpu=uuid", "--format=csv,noheader"])
        else {
            return;
        };
        assert_eq!(out.status.code(), Some(0));
        let want: String = gpus.iter().map(|g| format!("{}\n", g.uuid)).collect();
        assert_eq!(stdout(&out), want);

        let out = smi_with_all_nodes(
            &gpus,
            &["--query-gpu=index,name,pci.bus_id", "--format=csv"],
        )
        .unwrap();
        assert_eq!(stdout(&out).lines().next(), Some("index, name, pci.bus_id"));
        assert_eq!(
            stdout(&out).lines().nth(1),
            Some("0, NVIDIA H100 80GB HBM3, 00000000:18:00.0")
        );
        let out = smi_with_all_nodes(&gpus, &["--query-gpu=bogus", "--format=csv"]).unwrap();
        assert_eq!(out.status.code(), Some(2));
    }

    #[test]
    fn unknown_option_is_rejected_like_real_nvidia_smi() {
        let fx = fixture(&sim_gpus(1), &["nvidiactl", "nvidia0"]);
        let Some(out) = run_smi(&fx, &["--frobnicate"]) else {
            return;
        };
        assert_eq!(out.status.code(), Some(2));
        assert!(stdout(&out).starts_with("Invalid combination of input arguments."));
    }

    #[test]
    fn inventory_rejects_tabs_and_duplicates() {
        let mut gpus = sim_gpus(2);
        gpus[1].name = "bad\tname".into();
        assert!(matches!(
            inventory_text(&gpus),
            Err(SimError::InvalidGpu { index: 1, .. })
        ));
        let mut gpus = sim_gpus(2);
        gpus[1].index = 0;
        assert!(matches!(
            inventory_text(&gpus),
            Err(SimError::InvalidGpu { index: 0, .. })
        ));
    }
}
