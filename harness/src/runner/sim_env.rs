//! The `sim` backend's environment: a private engine in the state a scenario
//! describes (specs, support files, image), shared with the benchmark; the scratch
//! directories of runs that died swept; the simulated hardware for the report header.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Phase, RunOptions, SIM_IMAGE, Session};
use crate::checks::FactError;
use crate::engine::{self, Endpoint, Engine, Timeouts};
use crate::outcome::{BackendKind, Cause, GpuRecord, HardwareFacts};
use crate::scenario::{Scenario, SimSpecState};
use crate::sim;

/// The `sim` backend's invented driver and GPUs, labelled simulated; `None` on `host`,
/// whose real ones [`super::host_env::host_hardware`] takes from the run's NVML probe.
pub(super) fn sim_hardware(s: &Scenario, backend: BackendKind) -> Option<HardwareFacts> {
    (backend == BackendKind::Sim).then(|| HardwareFacts {
        driver_version: Some(sim::SIM_DRIVER_VERSION.to_string()),
        gpus: scenario_sim_gpus(s)
            .into_iter()
            .map(|g| GpuRecord {
                index: g.index,
                uuid: g.uuid,
                name: g.name,
                pci_bus_id: Some(g.pci_bus_id),
            })
            .collect(),
        simulated: true,
    })
}

/// The scenario's simulated GPUs, named as its `gpus.model` says.
fn scenario_sim_gpus(s: &Scenario) -> Vec<sim::SimGpu> {
    let mut gpus = sim::sim_gpus(s.gpus.count);
    for g in &mut gpus {
        g.name.clone_from(&s.gpus.model);
    }
    gpus
}

/// A private engine laid out for one scenario (specs, support files, image): what the
/// `sim` backend and the benchmark share.
pub struct SimEnvironment {
    /// The running engine.
    pub engine: sim::PrivateEngine,
    /// The spec dirs it reads, in priority order (NixOS's /etc/cdi and /run/cdi).
    pub spec_dirs: Vec<PathBuf>,
    scratch: tempfile::TempDir,
}

impl SimEnvironment {
    /// The temporary directory holding the specs and support files.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The directory the generator would write into (`/run/cdi` on NixOS).
    pub fn generated_spec_dir(&self) -> &Path {
        self.spec_dirs
            .last()
            .map(PathBuf::as_path)
            .unwrap_or(self.scratch.path())
    }

    /// Stops the engine; the scratch directory goes when this value is dropped.
    pub async fn stop(&mut self) {
        let _ = self.engine.stop().await;
    }

    /// [`Self::stop`] with a short grace for dockerd (after an interruption).
    pub async fn stop_within(&mut self, grace: Duration) {
        let _ = self.engine.stop_within(grace).await;
    }
}

/// Starts a private engine in the state the scenario describes: the simulated spec for
/// its GPUs (or none, or with a stale second spec, or with a known regression built in:
/// `[sim] fault`), its manual runtimes, CDI on or off,
/// and the busybox image imported.
pub async fn start_sim(
    s: &Scenario,
    dockerd: Option<PathBuf>,
    timeouts: Timeouts,
) -> Result<SimEnvironment, String> {
    start_sim_reporting(s, dockerd, timeouts, &|_| {}).await
}

/// [`start_sim`], telling `on_phase` when the image import begins (the live view).
async fn start_sim_reporting(
    s: &Scenario,
    dockerd: Option<PathBuf>,
    timeouts: Timeouts,
    on_phase: &(dyn Fn(Phase) + Send + Sync),
) -> Result<SimEnvironment, String> {
    // The owner's pid in the name lets a later run sweep it once its owner is gone.
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{SPEC_DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory for the simulated specs: {e}"))?;
    // The engine (rootless: another user) must read the specs and support files.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make {} readable: {e}", scratch.path().display()))?;
    }
    // The two directories NixOS's engine reads: the generator writes into the second.
    let etc = scratch.path().join("etc/cdi");
    let run = scratch.path().join("run/cdi");
    let support = scratch.path().join("support");
    for d in [&etc, &run, &support] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let gpus = scenario_sim_gpus(s);
    sim::write_support_files(&support, &gpus).map_err(|e| e.to_string())?;
    // A rootless engine cannot create device nodes: its spec names the nodes by path
    // only, and the engine's namespace provides them (see sim::rootless).
    let rootless = s.facts.rootless_default;
    // A machine without GPUs (`[gpus] none = true`) gets no spec: one without devices
    // is one the engine itself would refuse.
    if s.sim.spec == SimSpecState::Generated && !gpus.is_empty() {
        let path = run.join(&s.spec_file);
        let spec = sim::sim_spec_json_with_fault(&gpus, &support, rootless, s.sim.fault);
        sim::write_fault_files(&support, s.sim.fault)
            .map_err(|e| format!("cannot write the files of the simulated fault: {e}"))?;
        std::fs::write(&path, spec).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(stale) = &s.sim.stale_spec {
        let path = run.join(stale);
        let spec = if rootless {
            sim::stale_spec_yaml_rootless(&gpus, &support)
        } else {
            sim::stale_spec_yaml(&gpus, &support)
        };
        std::fs::write(&path, spec).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let engine_opts = sim::EngineOptions {
        dockerd,
        spec_dirs: vec![etc.clone(), run.clone()],
        start_timeout: timeouts.call,
        rootless: rootless.then(|| {
            sim::RootlessOptions::from_env().with_device_nodes(sim::device_node_paths(&gpus))
        }),
        ..sim_engine_config(s)
    };
    let engine = sim::PrivateEngine::start(engine_opts)
        .await
        .map_err(|e| e.to_string())?;
    on_phase(Phase::ImportingImage);
    let client = engine.client().await.map_err(|e| e.to_string())?;
    let tar = sim::busybox_rootfs_tar().map_err(|e| e.to_string())?;
    sim::import_image(&client, SIM_IMAGE, tar, timeouts.call)
        .await
        .map_err(|e| e.to_string())?;
    Ok(SimEnvironment {
        engine,
        spec_dirs: vec![etc, run],
        scratch,
    })
}

/// What a scenario's machine makes of its engine's configuration (CDI on or off, its
/// manual runtimes), as the sim's private engine gets it: one place, so the engine the
/// sim starts and the `daemon.json` compared with NixOS's (`scenario nixos-eval
/// --against-sim`) cannot drift apart.
pub fn sim_engine_config(s: &Scenario) -> sim::EngineOptions {
    sim::EngineOptions {
        cdi: s.facts.cdi_enabled(),
        runtimes: s.facts.manual_runtimes.clone(),
        ..sim::EngineOptions::default()
    }
}

/// Starts the scenario's private engine and connects to it; the engine is stopped
/// again when the connection fails, so nothing is left running.
pub(super) async fn prepare_sim(
    s: &Scenario,
    opts: &RunOptions,
    run_id: &str,
) -> Result<Session, FactError> {
    let on_phase = |p: Phase| opts.enter(&s.name, p);
    let mut env = start_sim_reporting(s, opts.dockerd.clone(), opts.timeouts, &on_phase)
        .await
        .map_err(|e| FactError::new(e, Some(Cause::EngineUnreachable)))?;
    let endpoint = Endpoint::unix(env.engine.socket_path(), engine::PRIVATE_ENGINE_SOURCE);
    let engine = match Engine::connect(endpoint, opts.timeouts, run_id).await {
        Ok(e) => e,
        Err(e) => {
            env.stop().await;
            return Err(FactError::from(e));
        }
    };
    let root = env.scratch_dir().display().to_string();
    Ok(Session {
        engine,
        image: SIM_IMAGE.to_string(),
        spec_dirs: env.spec_dirs.clone(),
        spec_dirs_source: "the simulated engine's cdi-spec-dirs".into(),
        redactions: vec![(root, "[SIM_DIR]".into())],
        private: Some(env),
    })
}

/// The name prefix of the sim's spec scratch directories (`cdih-spec-<pid>-XXXXXX` in
/// the temp dir).
pub const SPEC_DIR_PREFIX: &str = "cdih-spec-";

/// Removes what runs that died left in the temp dirs: spec scratch dirs whose owner
/// process (named in the directory) is gone, and private engine dirs
/// ([`sim::remove_stale_engine_dirs`]). Returns what it removed.
pub fn sweep_dead_sim_dirs() -> Vec<PathBuf> {
    let mut removed = sim::remove_stale_engine_dirs();
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(SPEC_DIR_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir && engine::process_gone(owner) && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn simulated_gpus_carry_the_scenario_model() {
        let text = "description = \"t\"\n[machine.virtualisation.docker]\nenable = true\n[gpus]\ncount = 2\nmodel = \"NVIDIA A100-SXM4-80GB\"\n";
        let s = crate::scenario::parse(Path::new("t.toml"), text).expect("parses");
        let gpus = scenario_sim_gpus(&s);
        assert_eq!(gpus.len(), 2);
        assert!(
            gpus.iter().all(|g| g.name == "NVIDIA A100-SXM4-80GB"),
            "{gpus:?}"
        );
    }
}
