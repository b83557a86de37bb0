//! The `sim` backend against a real engine: start a private dockerd, import the busybox
//! image, run containers with CDI devices, stop, and prove nothing is left behind.
//!
//! Needs root, a CDI-capable dockerd (`.ci/install-engine`) and a static busybox; where
//! one is missing each test prints `skipped: <why>` to stderr and returns.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use cdi_harness::sim::{
    EngineOptions, PrivateEngine, SIM_IMAGE, SPEC_FILE_NAME, STALE_SPEC_FILE_NAME,
    busybox_rootfs_tar, expected_smi_list, find_dockerd, find_static_busybox, import_image,
    sim_gpus, sim_spec_json, stale_spec_yaml, write_support_files,
};
use futures_util::StreamExt as _;

/// Why this machine cannot run the engine tests, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the private engine needs root".to_string());
    }
    if let Err(e) = find_dockerd(None) {
        return Some(e.to_string());
    }
    if let Err(e) = find_static_busybox() {
        return Some(e.to_string());
    }
    None
}

/// Live processes whose arguments carry `marker` (the engine's unique temp dir name).
fn processes_with(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if cmdline.contains(marker) && !zombie {
            out.push(format!("{name}: {cmdline}"));
        }
    }
    out
}

fn mounts_with(marker: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(marker))
        .map(str::to_string)
        .collect()
}

/// Runs `cmd` in the sim image with these CDI devices; `Err` if the engine refuses the
/// container (e.g. an unresolvable device), else the exit code and the output.
async fn run(
    docker: &Docker,
    name: &str,
    cmd: &[&str],
    devices: &[&str],
) -> Result<(i64, String), String> {
    let body = ContainerCreateBody {
        image: Some(SIM_IMAGE.to_string()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            device_requests: Some(vec![DeviceRequest {
                driver: Some("cdi".to_string()),
                device_ids: Some(devices.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            body,
        )
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut code = 0;
        let mut wait = docker.wait_container(&created.id, None);
        while let Some(item) = wait.next().await {
            match item {
                Ok(r) => code = r.status_code,
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
                Err(e) => return Err(e.to_string()),
            }
        }
        let mut logs = docker.logs(
            &created.id,
            Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
        );
        let mut text = String::new();
        while let Some(chunk) = logs.next().await {
            text.push_str(&chunk.map_err(|e| e.to_string())?.to_string());
        }
        Ok((code, text))
    }
    .await;
    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .map_err(|e| e.to_string())?;
    result
}

/// Retries `run` for up to 10 s while the engine has not yet picked up a spec change
/// (it watches its spec dirs and reloads within about a second).
async fn run_when<F>(
    docker: &Docker,
    name: &str,
    cmd: &[&str],
    devices: &[&str],
    done: F,
) -> Result<(i64, String), String>
where
    F: Fn(&Result<(i64, String), String>) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let r = run(docker, &format!("{name}-{n}"), cmd, devices).await;
        if done(&r) || Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_gone(root: &Path, socket: &Path, marker: &str) {
    assert!(!socket.exists(), "socket {} left behind", socket.display());
    assert!(!root.exists(), "temp dir {} left behind", root.display());
    let procs = processes_with(marker);
    assert!(procs.is_empty(), "processes left behind: {procs:#?}");
    let mounts = mounts_with(marker);
    assert!(mounts.is_empty(), "mounts left behind: {mounts:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_engine_runs_cdi_containers_and_leaves_nothing() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let t0 = Instant::now();
    let mut engine = PrivateEngine::start(EngineOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start_time = t0.elapsed();
    let root: PathBuf = engine.root().to_path_buf();
    let socket = engine.socket_path().to_path_buf();
    let marker = engine.marker().to_string();
    assert!(engine.docker_host().starts_with("unix:///tmp/cdih-"));
    assert!(socket.exists());
    assert!(socket.as_os_str().len() < 108);
    assert!(!processes_with(&marker).is_empty());

    let gpus = sim_gpus(4);
    let support = root.join("support");
    write_support_files(&support, &gpus).unwrap();
    let spec_dir = engine.spec_dirs()[0].clone();
    std::fs::write(
        spec_dir.join(SPEC_FILE_NAME),
        sim_spec_json(&gpus, &support),
    )
    .unwrap();

    let docker = engine.client().await.unwrap_or_else(|e| panic!("{e}"));
    let t1 = Instant::now();
    import_image(
        &docker,
        SIM_IMAGE,
        busybox_rootfs_tar().unwrap(),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let import_time = t1.elapsed();

    let t2 = Instant::now();
    let all = run_when(
        &docker,
        "all",
        &["nvidia-smi", "-L"],
        &["nvidia.com/gpu=all"],
        |r| r.is_ok(),
    )
    .await;
    let run_time = t2.elapsed();
    let (code, out) = all.unwrap_or_else(|e| {
        panic!(
            "run with nvidia.com/gpu=all failed: {e}\n{}",
            engine.log_tail(20)
        )
    });
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, expected_smi_list(&gpus));

    // One device: only GPU 2 is visible, numbered 0 as on a real host.
    let (code, out) = run(&docker, "one", &["nvidia-smi", "-L"], &["nvidia.com/gpu=2"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, expected_smi_list(&gpus[2..3]));
    assert!(out.starts_with(&format!(
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: {})",
        gpus[2].uuid
    )));

    // The full table works inside a container too.
    let (code, out) = run(&docker, "table", &["nvidia-smi"], &["nvidia.com/gpu=0"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NVIDIA-SMI 580.95.05"), "{out}");
    assert!(out.contains(&gpus[0].pci_bus_id), "{out}");

    // A device the spec does not define: the engine's own error.
    let err = run(
        &docker,
        "seven",
        &["nvidia-smi", "-L"],
        &["nvidia.com/gpu=7"],
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("unresolvable CDI devices nvidia.com/gpu=7"),
        "{err}"
    );

    // A stale second spec redefining "0" and "all": both drop out (measured behaviour).
    std::fs::write(
        spec_dir.join(STALE_SPEC_FILE_NAME),
        stale_spec_yaml(&gpus, &support),
    )
    .unwrap();
    let stale = run_when(
        &docker,
        "stale",
        &["nvidia-smi", "-L"],
        &["nvidia.com/gpu=all"],
        |r| r.is_err(),
    )
    .await;
    let err = stale.expect_err("`all` must become unresolvable with a conflicting spec");
    assert!(
        err.contains("unresolvable CDI devices nvidia.com/gpu=all"),
        "{err}"
    );
    let (code, out) = run(
        &docker,
        "stale-one",
        &["nvidia-smi", "-L"],
        &["nvidia.com/gpu=1"],
    )
    .await
    .unwrap();
    assert_eq!((code, out), (0, expected_smi_list(&gpus[1..2])));

    // A running container at stop time: the engine must take it down too.
    let body = ContainerCreateBody {
        image: Some(SIM_IMAGE.to_string()),
        cmd: Some(vec!["sleep".into(), "300".into()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sleeper = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name("sleeper").build()),
            body,
        )
        .await
        .unwrap();
    docker.start_container(&sleeper.id, None).await.unwrap();
    drop(docker);

    let t3 = Instant::now();
    engine.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let stop_time = t3.elapsed();
    assert_gone(&root, &socket, &marker);
    assert!(
        engine.log_tail(5).lines().count() > 0,
        "log kept after stop"
    );
    engine.stop().await.unwrap(); // idempotent
    eprintln!(
        "timings ({}): start {start_time:?}, import {import_time:?}, first CDI run {run_time:?}, stop with a running container {stop_time:?}",
        engine.dockerd_path().display()
    );
}

// The default current-thread runtime: the engine must work there too.
#[tokio::test]
async fn dropping_the_engine_cleans_up() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let engine = PrivateEngine::start(EngineOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let root = engine.root().to_path_buf();
    let socket = engine.socket_path().to_path_buf();
    let marker = engine.marker().to_string();
    let t = Instant::now();
    drop(engine);
    eprintln!("drop took {:?}", t.elapsed());
    assert_gone(&root, &socket, &marker);
}

// The default current-thread runtime: the engine must work there too.
#[tokio::test]
async fn a_failing_start_reports_the_log_and_cleans_up() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    // A runtime named like a built-in one makes dockerd refuse its configuration.
    let mut opts = EngineOptions::default();
    opts.runtimes
        .insert("runc".into(), serde_json::json!({"path": "/bin/true"}));
    let err = PrivateEngine::start(opts)
        .await
        .expect_err("dockerd must refuse this config");
    let text = err.to_string();
    eprintln!("start error as reported:\n{text}");
    assert!(
        matches!(err, cdi_harness::sim::SimError::EngineStart(ref f) if f.exit_status.is_some()),
        "{text}"
    );
    assert!(text.contains("dockerd exited during start-up"), "{text}");
    assert!(text.contains("is reserved"), "{text}");
    assert!(text.contains("rename it"), "{text}");
    assert!(text.contains("hint:"), "{text}");
    // The command line in the error names the temp dir; it must be gone.
    let at = text.find("/tmp/cdih-").expect("temp dir in the error");
    let root: String = text[at..].chars().take("/tmp/cdih-XXXXXX".len()).collect();
    assert!(!Path::new(&root).exists(), "{root} left behind");
    let marker = root.trim_start_matches("/tmp/");
    assert!(processes_with(marker).is_empty());
}
