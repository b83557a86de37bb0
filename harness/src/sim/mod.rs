//! The `sim` backend: every check, against a real Docker engine, on a machine without a GPU.
//!
//! CI runners and a newcomer's laptop have no NVIDIA GPU, yet the checks must run there
//! against the same engine code paths a GPU host exercises. So the harness starts a
//! private dockerd with CDI enabled ([`PrivateEngine`]), writes a simulated NVIDIA CDI
//! spec for N GPUs into its spec dir ([`sim_spec_json`], device nodes backed by
//! `/dev/null`), mounts a simulated `nvidia-smi` that reports exactly the GPUs CDI
//! injected ([`write_support_files`]), and imports a tiny image built from the host's
//! static busybox ([`busybox_rootfs_tar`], [`import_image`]). Results from this backend
//! prove the engine's CDI handling, never that real GPUs work; reports label them so.
//!
//! The engine can also be a *rootless* one ([`EngineOptions::rootless`]: dockerd under
//! rootlesskit, as NixOS's `virtualisation.docker.rootless` runs it). It cannot create
//! device nodes, so it takes the spec without `hostPath` ([`sim_spec_json_rootless`])
//! and creates the nodes [`device_node_paths`] lists in its own namespace.
//!
//! Typical use:
//! ```no_run
//! # async fn demo() -> Result<(), cdi_harness::sim::SimError> {
//! use cdi_harness::sim::*;
//! let mut engine = PrivateEngine::start(EngineOptions::default()).await?;
//! let gpus = sim_gpus(2);
//! let support = engine.root().join("support");
//! write_support_files(&support, &gpus)?;
//! let spec = engine.spec_dirs()[0].join(SPEC_FILE_NAME);
//! std::fs::write(&spec, sim_spec_json(&gpus, &support)).map_err(|e| SimError::Io {
//!     what: format!("writing {}", spec.display()),
//!     source: e,
//! })?;
//! let docker = engine.client().await?;
//! import_image(&docker, SIM_IMAGE, busybox_rootfs_tar()?, std::time::Duration::from_secs(60)).await?;
//! // … run checks against engine.docker_host() …
//! engine.stop().await?;
//! # Ok(()) }
//! ```

mod config;
mod diagnosis;
pub(crate) use diagnosis::last_lines;
mod discovery;
mod error;
mod gpu;
mod image;
mod paths;
mod process;
mod rootless;
mod spec;

pub use config::{EngineOptions, daemon_json};
pub use discovery::{DEFAULT_DOCKERD, ENV_DOCKERD, MIN_CDI_ENGINE_MAJOR, find_dockerd};
pub use error::{EngineStartFailure, SimError};
pub use gpu::{
    INVENTORY_CONTAINER_PATH, INVENTORY_FILE, NVIDIA_SMI_CONTAINER_PATH, NVIDIA_SMI_FILE,
    SIM_CUDA_VERSION, SIM_DRIVER_VERSION, SIM_GPU_MEMORY_MIB, SIM_GPU_NAME, SIM_NVML_VERSION,
    SimGpu, expected_smi_list, inventory_text, nvidia_smi_script, sim_gpu_uuid, sim_gpus,
    write_support_files,
};
pub use image::{
    SIM_IMAGE, busybox_rootfs_tar, busybox_rootfs_tar_with, find_static_busybox, import_image,
};
pub use process::{PrivateEngine, remove_stale_engine_dirs};
pub use rootless::{DEFAULT_ROOTLESS_USER, ENV_ROOTLESS_USER, ROOTLESS_SCRIPT, RootlessOptions};
pub use spec::{
    FAILING_HOOK_FILE, FAILING_HOOK_MESSAGE, FAILING_HOOK_SCRIPT, SIM_CDI_KIND, SIM_CDI_VERSION,
    SPEC_FILE_NAME, STALE_MOUNT_CONTAINER_PATH, STALE_MOUNT_HOST_PATH, STALE_SPEC_FILE_NAME,
    SpecFault, device_node_paths, sim_spec_json, sim_spec_json_rootless,
    sim_spec_json_rootless_with_uuids, sim_spec_json_with_fault, sim_spec_json_with_uuids,
    stale_spec_yaml, stale_spec_yaml_rootless, write_fault_files,
};
