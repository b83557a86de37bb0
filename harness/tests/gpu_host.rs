//! `cargo test` on a GPU host, proven without one: a private engine made to look like a
//! GPU host (the simulated CDI spec of two GPUs in its spec dirs), chosen by the auto
//! choice ([`select::choose`], probing that engine) and checked by the `host` backend, with the matching simulated inventory given through the runner's labelled
//! stand-in seam (`RunOptions::stand_in_gpus`) instead of NVML. The plan is the one
//! `tests/scenarios.rs` and `run --backend auto` make ([`select::plan_for`]): the seed
//! (`count = "auto"`) runs with the machine's two GPUs and passes, the broken-machine
//! models, `multi-gpu` (four GPUs) and `rootless-default` (the engine is rootful) are
//! skipped with their reasons, and every result
//! and the report say simulated. A second test builds `--image local`'s kind of image
//! (busybox plus the glibc a host program needs) and runs that program in it.
//!
//! Needs root, a CDI-capable dockerd (`.ci/install-engine`) and a static busybox; where
//! they are missing these tests FAIL and say why (a test that did not run must not be
//! counted as passed), unless `CDI_HARNESS_ALLOW_SKIP=1`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cdi_harness::engine::{Endpoint, Engine, EngineInfo, RunOutcome, RunRequest, Timeouts};
use cdi_harness::gpu::{GpuError, sim_inventory};
use cdi_harness::host::{FileInfo, HostError, HostSource, SystemHost, UserInfo};
use cdi_harness::outcome::{BackendKind, Status};
use cdi_harness::runner::{self, RunOptions};
use cdi_harness::scenario::{self, Place};
use cdi_harness::select;

mod common;

fn shipped() -> Vec<scenario::Scenario> {
    scenario::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios"))
        .expect("the shipped scenarios load")
}

/// This machine, except that NVML's answer is the simulated inventory and
/// `DOCKER_HOST` names the private engine: what `select::choose` sees on a GPU host.
struct SimulatedGpuHost {
    socket: PathBuf,
    gpus: cdi_harness::gpu::Inventory,
}

impl HostSource for SimulatedGpuHost {
    fn systemctl_show(&self, unit: &str, props: &[&str]) -> Result<String, HostError> {
        SystemHost.systemctl_show(unit, props)
    }
    fn journal_tail(&self, unit: &str, lines: u32) -> Result<String, HostError> {
        SystemHost.journal_tail(unit, lines)
    }
    fn file_info(&self, path: &Path) -> Option<FileInfo> {
        SystemHost.file_info(path)
    }
    fn list_dir(&self, path: &Path) -> Vec<PathBuf> {
        SystemHost.list_dir(path)
    }
    fn read_to_string(&self, path: &Path) -> Result<String, HostError> {
        SystemHost.read_to_string(path)
    }
    fn boot_time(&self) -> Option<std::time::SystemTime> {
        SystemHost.boot_time()
    }
    fn user(&self) -> UserInfo {
        SystemHost.user()
    }
    fn env(&self, key: &str) -> Option<String> {
        if key == "DOCKER_HOST" {
            return Some(format!("unix://{}", self.socket.display()));
        }
        SystemHost.env(key)
    }
    fn docker_info(&self, socket: &Path) -> Result<EngineInfo, String> {
        SystemHost.docker_info(socket)
    }
    fn gpus(&self) -> Result<cdi_harness::gpu::Inventory, GpuError> {
        Ok(self.gpus.clone())
    }
    fn run_fix(&self, _: &[&str]) -> Result<String, HostError> {
        Err(HostError::Missing {
            command: "run_fix".into(),
            message: "never in this test".into(),
        })
    }
}

const BROKEN: [&str; 6] = [
    "spec-missing",
    "cdi-disabled",
    "conflicting-specs",
    "legacy-runtime",
    "stale-mount",
    "failing-hook",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_two_gpu_host_passes_what_applies_and_skips_the_rest_with_reasons() {
    if let Some(why) = common::engine_skip_reason() {
        common::cannot_run("this simulated GPU host test", &why);
        return;
    }
    // The machine: two GPUs as the driver would report them (simulated, labelled so).
    let inventory = sim_inventory(2);
    let scenarios = shipped();
    let seed = scenarios
        .iter()
        .find(|s| s.name == "seed")
        .expect("seed")
        .with_inventory(&inventory)
        .expect("resolved");
    assert_eq!(seed.gpus.count, 2, "count = \"auto\" is the machine's");

    // The engine that looks like this GPU host: the seed's simulated spec for two GPUs.
    let mut env = match runner::start_sim(&seed, None, Timeouts::default()).await {
        Ok(env) => env,
        Err(e) => panic!("a private engine could not start: {e}"),
    };
    // The auto choice on this machine, probing the real engine: host, with the reason.
    let machine = SimulatedGpuHost {
        socket: env.engine.socket_path().to_path_buf(),
        gpus: inventory.clone(),
    };
    let socket = machine.socket.clone();
    let choice = tokio::task::spawn_blocking(move || select::choose(None, &machine))
        .await
        .expect("the probe ran")
        .expect("auto chooses");
    assert_eq!(choice.backend, BackendKind::Host, "{}", choice.why);
    assert!(choice.why.contains("2 GPU(s)"), "{}", choice.why);
    assert!(choice.why.contains("has CDI on"), "{}", choice.why);
    assert!(
        choice.why.contains(&socket.display().to_string()),
        "{}",
        choice.why
    );
    assert_eq!(choice.engine.as_ref().map(|e| e.rootless), Some(false));

    // The plan `cargo test` makes from that choice.
    let plan = select::plan_for(
        &scenarios,
        Place::Host,
        choice.gpus.as_ref(),
        choice.engine.as_ref(),
    );
    let skipped: BTreeSet<&str> = plan.skipped.keys().map(String::as_str).collect();
    let mut want: BTreeSet<&str> = BROKEN.into_iter().collect();
    want.insert("multi-gpu");
    want.insert("rootless-default");
    assert_eq!(skipped, want, "{:#?}", plan.skipped);
    let snapshots = tempfile::tempdir().expect("tempdir");
    let mut opts = RunOptions::new(BackendKind::Host, snapshots.path().to_path_buf());
    opts.host_endpoint = Some(Endpoint::unix(
        env.engine.socket_path(),
        "the simulated GPU host",
    ));
    opts.image_override = Some(runner::SIM_IMAGE.to_string());
    opts.stand_in_gpus = Some(inventory);
    opts.not_applicable = plan.skipped.clone();
    // No stored host snapshot for this engine: a first one is recorded, not a failure.
    opts.ci = false;
    // Every shipped scenario: the seed runs, the rest are skipped with their reasons.
    let report = runner::run_scenarios(&plan.scenarios, &opts).await;
    env.stop().await;

    assert!(report.simulated, "the report must say simulated");
    assert_eq!(report.backend, BackendKind::Host);
    for r in &report.results {
        assert!(
            r.simulated,
            "{}::{} is not labelled simulated",
            r.scenario, r.check
        );
        assert_ne!(
            r.status,
            Status::Fail,
            "{}::{} failed: {} (fix: {:?})",
            r.scenario,
            r.check,
            r.message,
            r.fix
        );
    }
    for e in report.engines.values() {
        assert!(
            e.hardware.as_ref().is_none_or(|h| h.simulated),
            "stand-in GPUs reported as real hardware: {e:?}"
        );
    }
    let status = |scenario: &str, check: &str| {
        report
            .results
            .iter()
            .find(|r| r.scenario == scenario && r.check == check)
            .unwrap_or_else(|| panic!("no result for {scenario}::{check}"))
    };
    for check in [
        "spec_present",
        "spec_valid",
        "spec_fresh",
        "spec_devices",
        "gpu_spec",
        "info_spec_dirs",
        "info_devices",
        "engine_mode",
        "device_all",
        "device_0",
        "device_1",
        "device_isolation",
        "gpu_containers",
        "gpus_flag",
        "no_leftovers",
    ] {
        let r = status("seed", check);
        assert_eq!(r.status, Status::Pass, "seed::{check}: {}", r.message);
    }
    assert_eq!(status("seed", "spec_snapshot").status, Status::New);
    for name in BROKEN {
        let r = status(name, "spec_present");
        assert_eq!(r.status, Status::Skip);
        assert!(
            r.message.contains("does not apply to this host"),
            "{}",
            r.message
        );
    }
    let rootless = status("rootless-default", "engine_mode");
    assert_eq!(rootless.status, Status::Skip);
    assert!(
        rootless
            .message
            .contains("default Docker is rootless; this one's"),
        "{}",
        rootless.message
    );
    let multi = status("multi-gpu", "device_all");
    assert_eq!(multi.status, Status::Skip);
    assert!(
        multi.message.contains("4 GPU(s); this one has 2"),
        "{}",
        multi.message
    );
}

/// `ldd`'s libraries of a dynamic host program, copied at their own paths next to the
/// static busybox, run that program in a container: what `--image local` does for the
/// host's `nvidia-smi` (whose own files the CDI spec mounts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_with_the_hosts_glibc_runs_a_host_program() {
    if let Some(why) = common::engine_skip_reason() {
        common::cannot_run("this simulated GPU host test", &why);
        return;
    }
    let Some(program) = ["/usr/bin/env", "/bin/env"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        common::cannot_run(
            "this simulated GPU host test",
            "no dynamic /usr/bin/env to build the image for",
        );
        return;
    };
    let libs = cdi_harness::local_image::libraries_of(std::slice::from_ref(&program))
        .expect("ldd lists the libraries");
    let mut files = libs.clone();
    files.push(program.clone());
    let tar = cdi_harness::local_image::rootfs_tar(&files).expect("rootfs tar");

    let s = shipped()
        .into_iter()
        .find(|s| s.name == "seed")
        .expect("seed");
    let mut env = match runner::start_sim(&s, None, Timeouts::default()).await {
        Ok(env) => env,
        Err(e) => panic!("a private engine could not start: {e}"),
    };
    let engine = Engine::connect(
        Endpoint::unix(env.engine.socket_path(), "test"),
        Timeouts::default(),
        "local-image",
    )
    .await
    .expect("connect");
    let reference = "cdi-harness/glibc-test:local";
    let imported =
        cdi_harness::sim::import_image(engine.client(), reference, tar, Timeouts::default().call)
            .await;
    let outcome = match imported {
        Ok(()) => {
            engine
                .run(&RunRequest {
                    image: reference.to_string(),
                    command: vec![program.display().to_string(), "MARK=glibc-ok".into()],
                    cdi_devices: Vec::new(),
                    gpus: None,
                    runtime: None,
                    check: "local_image".into(),
                })
                .await
        }
        Err(e) => {
            env.stop().await;
            panic!("import failed: {e}");
        }
    };
    let _ = engine.remove_labelled().await;
    env.stop().await;
    match outcome {
        Ok(RunOutcome::Exited {
            exit_code: 0,
            stdout,
            ..
        }) => assert!(stdout.contains("MARK=glibc-ok"), "{stdout}"),
        other => panic!(
            "{} did not run in the image ({libs:?}): {other:?}",
            program.display()
        ),
    }
}
