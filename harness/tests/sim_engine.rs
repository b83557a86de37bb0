//! The `sim` backend against a real engine: start a private dockerd, import the busybox
//! image, run containers with CDI devices, stop, and prove nothing is left behind.
//!
//! Needs root, a CDI-capable dockerd (`.ci/install-engine`) and a static busybox; where
//! one is missing each test fails and says why, because a test that cannot run must not
//! be counted as passed. `CDI_HARNESS_ALLOW_SKIP=1` turns that into a printed
//! `skipped: <why>` for machines that knowingly lack them. The rootless
//! test also needs rootlesskit, uidmap and the `cdih-rootless` user (all from
//! `.ci/install-engine`), or runs as a non-root user that has subordinate id ranges.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use cdi_harness::sim::{
    EngineOptions, PrivateEngine, RootlessOptions, SIM_IMAGE, SPEC_FILE_NAME, STALE_SPEC_FILE_NAME,
    SimError, busybox_rootfs_tar, device_node_paths, expected_smi_list, find_dockerd,
    find_static_busybox, import_image, sim_gpus, sim_spec_json, sim_spec_json_rootless,
    stale_spec_yaml, write_support_files,
};
use futures_util::StreamExt as _;

mod common;

/// Serializes the tests that start rootless engines: one asserts that no process of
/// the engine's user is left, which another test's engine would break.
static ROOTLESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Why this machine cannot run the rootless engine tests, if it cannot.
fn rootless_skip_reason() -> Option<String> {
    if let Err(e) = find_dockerd(None) {
        return Some(e.to_string());
    }
    if let Err(e) = find_static_busybox() {
        return Some(e.to_string());
    }
    let on_path = |tool: &str| {
        ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists())
    };
    for tool in ["rootlesskit", "newuidmap", "newgidmap", "slirp4netns"] {
        if !on_path(tool) {
            return Some(format!(
                "{tool} missing (`apt-get install rootlesskit uidmap slirp4netns` or \
                 `.ci/install-engine`)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun (slirp4netns needs it: `modprobe tun`)".to_string());
    }
    if euid() == 0 {
        let user = RootlessOptions::from_env().user;
        let known = std::process::Command::new("id")
            .arg("-u")
            .arg(&user)
            .output()
            .is_ok_and(|o| o.status.success());
        if !known {
            return Some(format!(
                "user {user} missing (`useradd -m {user}` or `.ci/install-engine`)"
            ));
        }
    } else {
        let me = std::process::Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let ranges = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        let uid = euid().to_string();
        let has = ranges.lines().any(|l| {
            let owner = l.split(':').next().unwrap_or_default();
            owner == me || owner == uid
        });
        if !has {
            return Some(format!(
                "not root, and the current user {me} has no range in /etc/subuid"
            ));
        }
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_err()
        {
            return Some("not root, and /dev/net/tun is not usable by this user".to_string());
        }
    }
    None
}

/// Live processes (`pid stat args`) owned by `user`. Zombies count only while they
/// last: one whose parent died (a shim after containerd) waits for PID 1 to reap it,
/// which takes a moment; a zombie is dead already, so after 3 s it is only reported.
fn processes_of(user: &str) -> Vec<String> {
    let list = || -> Vec<String> {
        let out = std::process::Command::new("ps")
            .args(["-u", user, "-o", "pid=,stat=,args="])
            .output()
            .expect("ps (procps) must be installed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let is_zombie = |l: &String| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('Z'))
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = list();
        if !now.iter().any(is_zombie) || Instant::now() >= deadline {
            let (zombies, live): (Vec<String>, Vec<String>) = now.into_iter().partition(is_zombie);
            if !zombies.is_empty() {
                eprintln!("note: zombies of {user} not yet reaped by PID 1: {zombies:?}");
            }
            return live;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let request = DeviceRequest {
        driver: Some("cdi".to_string()),
        device_ids: Some(devices.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    run_with(docker, name, cmd, request).await
}

/// `docker run --gpus all`'s request: any driver, all devices, capability `gpu`.
fn gpus_all() -> DeviceRequest {
    DeviceRequest {
        driver: Some(String::new()),
        count: Some(-1),
        capabilities: Some(vec![vec!["gpu".to_string()]]),
        ..Default::default()
    }
}

/// [`run`] with any device request.
async fn run_with(
    docker: &Docker,
    name: &str,
    cmd: &[&str],
    request: DeviceRequest,
) -> Result<(i64, String), String> {
    let body = ContainerCreateBody {
        image: Some(SIM_IMAGE.to_string()),
        cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            device_requests: Some(vec![request]),
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

/// Starts a container that runs for 5 minutes: stop must take it down too.
async fn start_sleeper(docker: &Docker) {
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
}

fn assert_gone(root: &Path, socket: &Path, marker: &str) {
    assert!(!socket.exists(), "socket {} left behind", socket.display());
    assert!(!root.exists(), "temp dir {} left behind", root.display());
    let procs = processes_with(marker);
    assert!(procs.is_empty(), "processes left behind: {procs:#?}");
    let mounts = mounts_with(marker);
    assert!(mounts.is_empty(), "mounts left behind: {mounts:#?}");
}

/// Imports the busybox image, runs `nvidia-smi -L` with `nvidia.com/gpu=all` and asserts
/// it lists exactly `gpus`; returns the import and run times and the listing.
async fn import_and_list_all(
    docker: &Docker,
    engine: &PrivateEngine,
    gpus: &[cdi_harness::sim::SimGpu],
) -> (Duration, Duration, String) {
    let t1 = Instant::now();
    import_image(
        docker,
        SIM_IMAGE,
        busybox_rootfs_tar().unwrap(),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let import_time = t1.elapsed();
    let t2 = Instant::now();
    let all = run_when(
        docker,
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
            engine.log_tail(30)
        )
    });
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, expected_smi_list(gpus));
    (import_time, run_time, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_engine_runs_cdi_containers_and_leaves_nothing() {
    if let Some(reason) = common::engine_skip_reason() {
        common::cannot_run("this engine test", &reason);
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
    // A rootful engine keeps its layers and runtime state on memory file systems of its
    // own (the suite's largest cost on disk): both are there while it runs.
    for dir in ["data", "exec"] {
        let at = format!(" {}/{dir} ", root.display());
        let mounts = mounts_with(&marker);
        assert!(
            mounts
                .iter()
                .any(|m| m.contains(&at) && m.contains(" - tmpfs ")),
            "{dir} is not on a tmpfs: {mounts:#?}"
        );
    }

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
    let (import_time, run_time, _) = import_and_list_all(&docker, &engine, &gpus).await;

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
    start_sleeper(&docker).await;
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
    if let Some(reason) = common::engine_skip_reason() {
        common::cannot_run("this engine test", &reason);
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
    if let Some(reason) = common::engine_skip_reason() {
        common::cannot_run("this engine test", &reason);
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

/// A running container's state and log (`running`, `StartedAt`, its whole log).
async fn state_and_log(docker: &Docker, id: &str) -> (bool, String, String) {
    let c = docker.inspect_container(id, None).await.unwrap();
    let st = c.state.unwrap_or_default();
    let mut logs = docker.logs(
        id,
        Some(LogsOptionsBuilder::new().stdout(true).stderr(true).build()),
    );
    let mut text = String::new();
    while let Some(chunk) = logs.next().await {
        text.push_str(&chunk.unwrap().to_string());
    }
    (
        st.running.unwrap_or(false),
        st.started_at.unwrap_or_default(),
        text,
    )
}

/// Polls until the container runs and its log holds `listings` copies of `expected`.
async fn await_listings(
    docker: &Docker,
    id: &str,
    expected: &str,
    listings: usize,
    limit: Duration,
) -> (String, String) {
    let deadline = Instant::now() + limit;
    loop {
        let (running, started, log) = state_and_log(docker, id).await;
        if running && log.matches(expected).count() >= listings {
            return (started, log);
        }
        assert!(
            Instant::now() < deadline,
            "not running with {listings} listing(s) within {limit:?}: running {running}, log {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// moby#49989: a `--restart always` container with a CDI device must come back after the
// engine restarts, and the restarted engine must be taken down completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_engine_brings_back_restart_always_cdi_containers() {
    if let Some(reason) = common::engine_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    let mut engine = PrivateEngine::start(EngineOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let root: PathBuf = engine.root().to_path_buf();
    let socket = engine.socket_path().to_path_buf();
    let marker = engine.marker().to_string();
    let command_line = engine.command_line().to_string();
    let gpus = sim_gpus(2);
    let support = root.join("support");
    write_support_files(&support, &gpus).unwrap();
    std::fs::write(
        engine.spec_dirs()[0].join(SPEC_FILE_NAME),
        sim_spec_json(&gpus, &support),
    )
    .unwrap();
    let docker = engine.client().await.unwrap_or_else(|e| panic!("{e}"));
    import_image(
        &docker,
        SIM_IMAGE,
        busybox_rootfs_tar().unwrap(),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The engine may need a moment to pick up the spec written after its start.
    let probe = run_when(
        &docker,
        "probe",
        &["nvidia-smi", "-L"],
        &["nvidia.com/gpu=all"],
        |r| r.is_ok(),
    )
    .await;
    probe.unwrap_or_else(|e| panic!("{e}\n{}", engine.log_tail(20)));

    let body = ContainerCreateBody {
        image: Some(SIM_IMAGE.to_string()),
        cmd: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "nvidia-smi -L && sleep 600".into(),
        ]),
        stop_timeout: Some(1),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            device_requests: Some(vec![DeviceRequest {
                driver: Some("cdi".to_string()),
                device_ids: Some(vec!["nvidia.com/gpu=all".to_string()]),
                ..Default::default()
            }]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name("always").build()),
            body,
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let expected = expected_smi_list(&gpus);
    let (started_before, _) =
        await_listings(&docker, &created.id, &expected, 1, Duration::from_secs(20)).await;
    let old_pid = engine.pid().expect("running");
    drop(docker);

    let t = Instant::now();
    engine.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let restart_time = t.elapsed();
    let new_pid = engine.pid().expect("running again");
    assert_ne!(old_pid, new_pid);
    assert!(
        !Path::new(&format!("/proc/{old_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{old_pid}/cmdline"))
                .map_or(true, |c| !c.contains(&marker)),
        "the old dockerd {old_pid} still runs"
    );
    assert_eq!(engine.command_line(), command_line);
    assert!(socket.exists());

    let docker = engine.client().await.unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let (started_after, log) =
        await_listings(&docker, &created.id, &expected, 2, Duration::from_secs(20)).await;
    let back_time = t.elapsed();
    assert_ne!(started_before, started_after, "{log}");
    drop(docker);

    let t = Instant::now();
    engine.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let stop_time = t.elapsed();
    assert_gone(&root, &socket, &marker);
    eprintln!(
        "timings: engine restart (SIGTERM with a running --restart always container, start, ping) {restart_time:?}, container back {back_time:?}, stop {stop_time:?}"
    );
}

// A restart whose dockerd cannot start again: the error says why, stop still removes all.
#[tokio::test]
async fn a_failed_restart_reports_why_and_stop_cleans_up() {
    if let Some(reason) = common::engine_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    let mut engine = PrivateEngine::start(EngineOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let root: PathBuf = engine.root().to_path_buf();
    let socket = engine.socket_path().to_path_buf();
    let marker = engine.marker().to_string();
    // The same command line now reads a configuration dockerd refuses.
    std::fs::write(
        root.join("daemon.json"),
        r#"{"runtimes": {"runc": {"path": "/bin/true"}}}"#,
    )
    .unwrap();
    let err = engine
        .restart()
        .await
        .expect_err("dockerd must refuse the changed config");
    let text = err.to_string();
    assert!(
        matches!(err, SimError::EngineStart(ref f) if f.exit_status.is_some()),
        "{text}"
    );
    assert!(text.contains("is reserved"), "{text}");
    engine.stop().await.unwrap_or_else(|e| panic!("{e}"));
    assert_gone(&root, &socket, &marker);
    assert!(
        engine.restart().await.is_err(),
        "a stopped engine must not restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootless_engine_runs_cdi_containers_and_leaves_nothing() {
    if let Some(reason) = rootless_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    let _serial = ROOTLESS.lock().await;
    let gpus = sim_gpus(2);
    let opts = EngineOptions {
        rootless: Some(RootlessOptions::from_env().with_device_nodes(device_node_paths(&gpus))),
        ..EngineOptions::default()
    };
    let t0 = Instant::now();
    let mut engine = PrivateEngine::start(opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start_time = t0.elapsed();
    let user = engine
        .rootless_user()
        .expect("a rootless engine")
        .to_string();
    let root = engine.root().to_path_buf();
    let socket = engine.socket_path().to_path_buf();
    let marker = engine.marker().to_string();
    assert!(socket.starts_with(&root), "{}", socket.display());
    assert!(socket.as_os_str().len() < 108);
    assert!(!processes_with(&marker).is_empty());
    if euid() == 0 {
        assert_eq!(user, RootlessOptions::from_env().user);
        assert!(!processes_of(&user).is_empty(), "the engine runs as {user}");
    }

    let support = root.join("support");
    write_support_files(&support, &gpus).unwrap();
    let spec_dir = engine.spec_dirs()[0].clone();
    let spec = sim_spec_json_rootless(&gpus, &support);
    assert!(!spec.contains("hostPath\": \"/dev/null"), "{spec}");
    std::fs::write(spec_dir.join(SPEC_FILE_NAME), spec).unwrap();

    let docker = engine
        .client()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", engine.log_tail(40)));
    let info = docker.info().await.unwrap();
    let security = info.security_options.clone().unwrap_or_default();
    assert!(
        security.iter().any(|o| o.contains("rootless")),
        "security options: {security:?}"
    );
    let cdi_dirs = info.cdi_spec_dirs.clone().unwrap_or_default();
    assert_eq!(cdi_dirs, vec![spec_dir.display().to_string()]);

    let (import_time, run_time, out) = import_and_list_all(&docker, &engine, &gpus).await;
    assert_eq!(out.lines().count(), 2, "{out}");

    // One device: only GPU 1, numbered 0 as on a real host.
    let (code, out) = run(&docker, "one", &["nvidia-smi", "-L"], &["nvidia.com/gpu=1"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!("GPU 0: NVIDIA H100 80GB HBM3 (UUID: {})\n", gpus[1].uuid)
    );

    // The nodes are what a rootless runc can give: bind mounts of /dev/null.
    let (code, out) = run(
        &docker,
        "nodes",
        &["sh", "-c", "ls -l /dev/nvidia0 /dev/nvidiactl; ls /dev"],
        &["nvidia.com/gpu=0"],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1,   3") || out.contains("1, 3"), "{out}");
    assert!(!out.contains("nvidia1"), "only GPU 0 injected: {out}");

    // `--gpus all`: no NVIDIA runtime and no CDI mapping for it, as on a real host.
    let err = run_with(&docker, "gpus-all", &["nvidia-smi", "-L"], gpus_all())
        .await
        .expect_err("--gpus all must fail");
    assert!(
        err.contains(r#"could not select device driver "" with capabilities: [[gpu]]"#),
        "{err}"
    );

    start_sleeper(&docker).await;
    drop(docker);

    let t3 = Instant::now();
    engine.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let stop_time = t3.elapsed();
    assert_gone(&root, &socket, &marker);
    if euid() == 0 {
        let left = processes_of(&user);
        assert!(
            left.is_empty(),
            "processes of {user} left behind: {left:#?}"
        );
    }
    engine.stop().await.unwrap(); // idempotent
    eprintln!(
        "rootless timings (user {user}): start {start_time:?}, import {import_time:?}, \
         first CDI run {run_time:?}, stop with a running container {stop_time:?}"
    );
}

#[tokio::test]
async fn rootless_start_refuses_a_spec_dir_its_user_cannot_read() {
    if let Some(reason) = rootless_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    if euid() != 0 {
        common::cannot_run(
            "this engine test",
            "as an ordinary user the engine's user is the owner of every dir",
        );
        return;
    }
    // A 0700 directory above the spec dir (as `mktemp -d` makes): the mistake this
    // check is for.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let spec_dir = private.path().join("cdi");
    std::fs::create_dir(&spec_dir).unwrap();
    let opts = EngineOptions {
        spec_dirs: vec![spec_dir.clone()],
        rootless: Some(RootlessOptions::from_env()),
        ..EngineOptions::default()
    };
    let err = PrivateEngine::start(opts)
        .await
        .expect_err("the engine's user cannot read the spec dir");
    let text = err.to_string();
    assert!(matches!(err, SimError::Rootless { .. }), "{text}");
    assert!(text.contains("cannot read"), "{text}");
    assert!(text.contains(&spec_dir.display().to_string()), "{text}");
    assert!(text.contains("chmod 0755"), "{text}");
}

// The default current-thread runtime: the engine must work there too.
#[tokio::test]
async fn a_failing_rootless_start_reports_the_log_and_cleans_up() {
    if let Some(reason) = rootless_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    let _serial = ROOTLESS.lock().await;
    let mut opts = EngineOptions {
        rootless: Some(RootlessOptions::from_env()),
        ..EngineOptions::default()
    };
    opts.runtimes
        .insert("runc".into(), serde_json::json!({"path": "/bin/true"}));
    let t = Instant::now();
    let err = PrivateEngine::start(opts)
        .await
        .expect_err("dockerd must refuse this config");
    let took = t.elapsed();
    let text = err.to_string();
    eprintln!("rootless start error as reported (after {took:?}):\n{text}");
    assert!(
        matches!(err, SimError::EngineStart(ref f) if f.exit_status.is_some()),
        "{text}"
    );
    assert!(text.contains("is reserved"), "{text}");
    assert!(text.contains("rename it"), "{text}");
    assert!(
        text.contains("dockerd-rootless.sh"),
        "the command line: {text}"
    );
    let at = text.find("/tmp/cdih-").expect("temp dir in the error");
    let root: String = text[at..].chars().take("/tmp/cdih-XXXXXX".len()).collect();
    assert!(!Path::new(&root).exists(), "{root} left behind");
    let marker = root.trim_start_matches("/tmp/");
    assert!(processes_with(marker).is_empty());
}

// Two rootless engines at once (own namespaces, tun nodes, slirp4netns each), both
// dropped without `stop`: everything must still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_two_rootless_engines_cleans_up() {
    if let Some(reason) = rootless_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    let _serial = ROOTLESS.lock().await;
    let opts = || EngineOptions {
        rootless: Some(
            RootlessOptions::from_env().with_device_nodes(device_node_paths(&sim_gpus(1))),
        ),
        ..EngineOptions::default()
    };
    let (a, b) = tokio::join!(PrivateEngine::start(opts()), PrivateEngine::start(opts()));
    let a = a.unwrap_or_else(|e| panic!("{e}"));
    let b = b.unwrap_or_else(|e| panic!("{e}"));
    let user = a.rootless_user().unwrap_or_default().to_string();
    let mut gone = Vec::new();
    for engine in [a, b] {
        let docker = engine.client().await.unwrap_or_else(|e| panic!("{e}"));
        docker.ping().await.unwrap();
        let version = docker.version().await.unwrap();
        let components: Vec<String> = version
            .components
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(
            components.iter().any(|c| c == "rootlesskit"),
            "{components:?}"
        );
        gone.push((
            engine.root().to_path_buf(),
            engine.socket_path().to_path_buf(),
            engine.marker().to_string(),
        ));
        let t = Instant::now();
        drop(engine);
        eprintln!("rootless drop took {:?}", t.elapsed());
    }
    for (root, socket, marker) in &gone {
        assert_gone(root, socket, marker);
    }
    if euid() == 0 {
        let left = processes_of(&user);
        assert!(
            left.is_empty(),
            "processes of {user} left behind: {left:#?}"
        );
    }
}

/// `cdi-harness run --backend sim --quiet` on one scenario's checks matching `filter`,
/// with its snapshots in `snapshots`, outside CI (the caller adds what the case needs).
fn quiet_sim_run(scenario: &Path, filter: &str, snapshots: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cdi-harness"));
    c.args([
        "run",
        "--backend",
        "sim",
        "--quiet",
        "--filter",
        filter,
        "--scenario",
    ])
    .arg(scenario)
    .arg("--snapshots")
    .arg(snapshots)
    .env_remove("CI");
    c
}

/// The verdicts of a whole run, through the binary, where issue #9 found them wrong: a
/// changed spec with insta's escape hatches set in the environment, and a declared
/// failure that the scenario says must fail for another cause.
#[test]
fn run_verdicts_ignore_insta_variables_and_demand_the_declared_cause() {
    if let Some(reason) = common::engine_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = tempfile::tempdir().expect("tempdir");
    // The stored seed snapshot, with one line of its body changed.
    let snaps = work.path().join("snapshots/sim");
    std::fs::create_dir_all(&snaps).expect("mkdir");
    let stored = std::fs::read_to_string(root.join("snapshots/sim/seed.snap")).expect("seed.snap");
    let tampered = stored.replacen("\"nvidia.com/gpu\"", "\"nvidia.com/gpu-tampered\"", 1);
    assert_ne!(stored, tampered, "the snapshot names the kind");
    std::fs::write(snaps.join("seed.snap"), tampered).expect("write");
    let run = |scenario: &Path, filter: &str| {
        quiet_sim_run(scenario, filter, &work.path().join("snapshots"))
            .env("INSTA_FORCE_PASS", "1")
            .env("INSTA_UPDATE", "always")
            .output()
            .expect("cdi-harness runs")
    };
    let out = run(&root.join("scenarios/seed.toml"), "spec_snapshot");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("differs"), "{text}");
    assert_eq!(
        std::fs::read_to_string(snaps.join("seed.snap")).expect("still there"),
        stored.replacen("\"nvidia.com/gpu\"", "\"nvidia.com/gpu-tampered\"", 1),
        "the stored snapshot must not be rewritten"
    );

    // spec-missing with spec_present declared to fail for another cause: not an xfail.
    let text = std::fs::read_to_string(root.join("scenarios/spec-missing.toml")).expect("scenario");
    let wrong = text.replacen(
        "cause = \"spec-missing\"",
        "cause = \"permission-denied\"",
        1,
    );
    assert_ne!(text, wrong);
    let scenario = work.path().join("spec-missing.toml");
    std::fs::write(&scenario, wrong).expect("write");
    let out = run(&scenario, "spec_present");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not the declared permission-denied"),
        "{text}"
    );
}

/// A first run without a stored snapshot records `.snap.new` and reports `new` (exit 0,
/// nothing compared); in CI mode the same run fails, as insta does in CI.
#[test]
fn a_first_snapshot_is_new_outside_ci_and_a_failure_in_ci() {
    if let Some(reason) = common::engine_skip_reason() {
        common::cannot_run("this engine test", &reason);
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = tempfile::tempdir().expect("tempdir");
    let json = work.path().join("report.json");
    let run = |ci: bool| {
        let mut c = quiet_sim_run(
            &root.join("scenarios/seed.toml"),
            "spec_snapshot",
            &work.path().join("snapshots"),
        );
        c.arg("--json").arg(&json);
        if ci {
            c.arg("--ci");
        }
        c.output().expect("cdi-harness runs")
    };
    let out = run(false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = cdi_harness::report::read_json(&json).expect("report");
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].status, cdi_harness::outcome::Status::New);
    let pending = work.path().join("snapshots/sim/seed.snap.new");
    assert!(
        pending.is_file(),
        "the first run records {}",
        pending.display()
    );
    assert!(!work.path().join("snapshots/sim/seed.snap").exists());
    let out = run(true);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = cdi_harness::report::read_json(&json).expect("report");
    assert_eq!(report.results[0].status, cdi_harness::outcome::Status::Fail);
}
