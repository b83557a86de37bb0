//! The `host` backend's preparation: the machine's own engine connected, leftovers of
//! runs that died swept, the image chosen; and the real hardware for the report header.

use std::time::Duration;

use super::{RunOptions, Session};
use crate::checks::FactError;
use crate::engine::{Endpoint, Engine};
use crate::outcome::{GpuRecord, HardwareFacts};
use crate::scenario::Scenario;

/// A container of a dead run is removed only when older than this, so that a run
/// starting as its owner exits does not race its last removals.
const DEAD_RUN_GRACE: Duration = Duration::from_secs(5);

/// The real driver and GPUs on `host`, from the NVML inventory this run already read
/// for the GPU cross-checks, so a diff between two nights can tell a driver change from
/// a toolkit or engine change. `None` when there is no real inventory (the GPU checks
/// did not run, NVML is absent or failed, or it is the sim's): a second NVML init just
/// for the header would cost up to a second per scenario.
pub(super) fn host_hardware(gpu: Option<&crate::gpu::GpuFacts>) -> Option<HardwareFacts> {
    let inv = gpu?.inventory.as_ref().ok().filter(|inv| !inv.simulated)?;
    Some(HardwareFacts {
        driver_version: Some(inv.driver_version.clone()),
        gpus: inv
            .gpus
            .iter()
            .map(|g| GpuRecord {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                pci_bus_id: g.pci_bus_id.clone(),
            })
            .collect(),
        simulated: false,
    })
}

/// Connects to the machine's engine (or the one `--host-endpoint` names), removes the
/// containers of harness runs that died, and picks the image the containers use.
pub(super) async fn prepare_host(
    s: &Scenario,
    opts: &RunOptions,
    run_id: &str,
) -> Result<Session, FactError> {
    let endpoint = opts
        .host_endpoint
        .clone()
        .unwrap_or_else(|| Endpoint::for_host(s.facts.rootless_default));
    let engine = Engine::connect(endpoint, opts.timeouts, run_id)
        .await
        .map_err(FactError::from)?;
    // Scenarios of a run that died (SIGKILL, OOM, a lost machine) left their
    // containers: removed here, and said.
    match engine.remove_dead_runs(DEAD_RUN_GRACE).await {
        Ok(removed) => {
            for c in removed {
                opts.notify(&format!(
                    "removed container {} ({}) left on {} by a harness run that died ({})",
                    c.id.chars().take(12).collect::<String>(),
                    c.check,
                    engine.endpoint().uri,
                    c.owner
                ));
            }
        }
        Err(e) => opts.notify(&format!("could not look for leftovers of dead runs: {e}")),
    }
    let image = match opts.image_override.as_deref() {
        // Built from the host's nvidia-smi and imported before the first container.
        Some(crate::local_image::LOCAL) => crate::local_image::LOCAL_IMAGE.to_string(),
        Some(other) => other.to_string(),
        None => s.image.clone(),
    };
    Ok(Session {
        engine,
        image,
        spec_dirs: Vec::new(),
        spec_dirs_source: "docker info".into(),
        redactions: Vec::new(),
        private: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The inventory NVML gave on the recorded H100 machine.
    fn recorded_h100() -> crate::gpu::Inventory {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/h100/nvml/inventory.json");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    #[test]
    fn host_hardware_comes_from_the_runs_nvml_inventory() {
        let facts = crate::gpu::GpuFacts {
            inventory: Ok(recorded_h100()),
            boot_time: None,
        };
        let hw = host_hardware(Some(&facts)).expect("a real inventory fills the facts");
        assert_eq!(hw.driver_version.as_deref(), Some("580.159.04"));
        assert!(!hw.simulated);
        assert_eq!(
            hw.gpus,
            [GpuRecord {
                index: 0,
                uuid: "GPU-a00daf1f-6e35-3a97-0e7c-846edbc9f780".into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                pci_bus_id: Some("00000000:00:06.0".into()),
            }]
        );

        // No NVML, no probe, or the sim's GPUs: nothing claimed about real hardware.
        let absent = crate::gpu::GpuFacts {
            inventory: Err(crate::gpu::GpuError::Unavailable {
                reason: "libnvidia-ml.so.1 not found".into(),
            }),
            boot_time: None,
        };
        assert_eq!(host_hardware(Some(&absent)), None);
        assert_eq!(host_hardware(None), None);
        let sim = crate::gpu::GpuFacts {
            inventory: Ok(crate::gpu::sim_inventory(2)),
            boot_time: None,
        };
        assert_eq!(host_hardware(Some(&sim)), None);
    }
}
