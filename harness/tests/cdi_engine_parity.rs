//! The CDI corpus through the real engines CI installs: every case the corpus marks
//! `engine = true` is written to a private engine's spec dirs, the engine's verdict is
//! read back, and it must equal the harness's verdict for that engine version
//! (`Rules::for_engine`). A row of the engine table that drifts from what its engine
//! does fails here.
//!
//! - Engine 28.5 reports every refused spec file in `docker info`'s `Warnings`: all
//!   cases go in at once, each in a spec dir of its own (a device defined in several
//!   dirs is shadowed, never a conflict), with one engine start.
//! - Engine 26.1 reports nothing about refused files, so each case is probed with a
//!   container that asks for its first device: "unresolvable CDI devices" means the
//!   file was refused. Cases defining the same device would conflict, so they go in
//!   batches with distinct device names, in one spec dir the engine watches.
//!
//! Needs root, the engines of `.ci/install-engine trixie` and `.ci/install-engine
//! unstable` under /opt/cdi-harness/engines (or `CDI_PARITY_PREFIX`), and a static
//! busybox; where one is missing the test fails and says why, unless
//! `CDI_HARNESS_ALLOW_SKIP=1`. Each engine's verdicts are written to
//! `$CARGO_TARGET_TMPDIR/cdi-engine-parity-<engine>.json`.

#[path = "support/cdi_corpus.rs"]
mod corpus;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use cdi_harness::cdi::Rules;
use cdi_harness::sim::{
    EngineOptions, PrivateEngine, SIM_IMAGE, busybox_rootfs_tar, find_static_busybox, import_image,
};

/// A test that cannot run here fails with the reason, unless the user opted out.
fn cannot_run(reason: &str) {
    if std::env::var_os("CDI_HARNESS_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        return;
    }
    panic!(
        "cannot run the CDI engine parity test here: {reason} (set CDI_HARNESS_ALLOW_SKIP=1 to skip knowingly)"
    );
}

/// The dockerd of a Debian suite as `.ci/install-engine SUITE` unpacks it.
fn dockerd_of(suite: &str) -> PathBuf {
    let prefix = std::env::var_os("CDI_PARITY_PREFIX")
        .map_or_else(|| PathBuf::from("/opt/cdi-harness/engines"), PathBuf::from);
    prefix.join(suite).join("usr/sbin/dockerd")
}

fn skip_reason(suite: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the private engine needs root".to_owned());
    }
    let d = dockerd_of(suite);
    if !d.exists() {
        return Some(format!(
            "{} does not exist: run .ci/install-engine {suite}",
            d.display()
        ));
    }
    if let Err(e) = find_static_busybox() {
        return Some(e.to_string());
    }
    None
}

/// What the engine did with one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Loaded,
    Refused,
}

/// One case's verdicts, for the failure list and the recorded JSON.
struct Row {
    label: String,
    harness: Seen,
    engine: Option<Seen>,
    evidence: String,
}

fn harness_verdict(case: &corpus::Case, rules: &Rules) -> Seen {
    match case.judge(rules).0 {
        corpus::Expected::Loads => Seen::Loaded,
        _ => Seen::Refused,
    }
}

/// The device names a case defines (for batching), or its probe alone.
fn defined_names(case: &corpus::Case) -> BTreeSet<String> {
    let v = cdi_harness::cdi::check_bytes(
        Path::new(&case.file),
        case.spec.as_bytes(),
        &Rules::for_library(cdi_harness::cdi::Library::Main),
    );
    let mut names: BTreeSet<String> = v
        .spec
        .map(|s| s.device_names().into_iter().collect())
        .unwrap_or_default();
    names.extend(case.probe());
    names
}

async fn start(suite: &str, spec_dirs: Vec<PathBuf>) -> (PrivateEngine, Docker) {
    let engine = PrivateEngine::start(EngineOptions {
        dockerd: Some(dockerd_of(suite)),
        spec_dirs,
        start_timeout: Duration::from_secs(60),
        ..EngineOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let docker = engine.client().await.unwrap_or_else(|e| panic!("{e}"));
    (engine, docker)
}

/// Asserts the engine is the version the table row is about, and that `cdi validate`
/// picks that engine's rules from `DOCKER_HOST` by itself.
async fn assert_version(docker: &Docker, engine: &PrivateEngine, label: &str) {
    let host = engine.docker_host();
    let found = cdi_harness::cdi::rules::engine_version_at(&host, Duration::from_secs(5)).await;
    let rules = found.as_deref().map(Rules::for_engine);
    assert_eq!(
        rules.and_then(Result::ok).map(|r| r.library),
        Rules::for_engine(label).ok().map(|r| r.library),
        "engine_version_at({host}) gave {found:?}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
        .args(["cdi", "validate"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdi/nvidia.yaml"))
        .env("DOCKER_HOST", &host)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        first.starts_with(&format!("rules: engine {label}'s CDI library"))
            && first.contains(&format!("(the engine at {host})")),
        "cdi validate with DOCKER_HOST={host} printed {first:?}"
    );

    let v = docker.version().await.unwrap_or_else(|e| panic!("{e}"));
    let got = v.version.unwrap_or_default();
    let mm = cdi_harness::cdi::rules::parse_engine_version(&got);
    let want = cdi_harness::cdi::rules::parse_engine_version(label);
    assert_eq!(
        mm, want,
        "the installed engine is {got}, not {label}: update the parity test and the engine table together"
    );
}

fn write_record(label: &str, rows: &[Row]) {
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "case": r.label,
                "harness": format!("{:?}", r.harness),
                "engine": r.engine.map(|s| format!("{s:?}")),
                "evidence": r.evidence,
            })
        })
        .collect();
    let path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cdi-engine-parity-{label}.json"));
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("cannot record {}: {e}", path.display());
    } else {
        eprintln!("engine {label}: verdicts recorded in {}", path.display());
    }
}

fn assert_rows(label: &str, rows: &[Row]) {
    let compared = rows.iter().filter(|r| r.engine.is_some()).count();
    let drift: Vec<String> = rows
        .iter()
        .filter(|r| r.engine.is_some_and(|e| e != r.harness))
        .map(|r| {
            format!(
                "{}: harness says {:?}, engine {label} {:?} ({})",
                r.label,
                r.harness,
                r.engine.unwrap_or(Seen::Refused),
                r.evidence
            )
        })
        .collect();
    write_record(label, rows);
    eprintln!(
        "engine {label}: {compared} cases compared, {} differ",
        drift.len()
    );
    assert!(
        compared >= 50,
        "only {compared} cases reached engine {label}"
    );
    assert!(
        drift.is_empty(),
        "engine {label} disagrees with the harness's table on {} cases:\n{}",
        drift.len(),
        drift.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_28_5_refuses_exactly_what_the_table_says() {
    let (label, suite) = ("28.5", "unstable");
    if let Some(reason) = skip_reason(suite) {
        cannot_run(&reason);
        return;
    }
    let rules = Rules::for_engine(label).expect("in the table");
    let cases: Vec<corpus::Case> = corpus::load().into_iter().filter(|c| c.engine).collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    // One dir per case, then one for the sentinel that says the engine has read them.
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("c{i:03}"));
        std::fs::create_dir_all(&dir).expect("case dir");
        let file = dir.join(&case.file);
        std::fs::write(&file, &case.spec).expect("case spec");
        dirs.push(dir);
        files.push(file);
    }
    let sentinel_dir = tmp.path().join("sentinel");
    std::fs::create_dir_all(&sentinel_dir).expect("sentinel dir");
    std::fs::write(
        sentinel_dir.join("sentinel.yaml"),
        "cdiVersion: 0.5.0\nkind: parity.test/sentinel\ndevices: [{name: ready, containerEdits: {env: [A=1]}}]\n",
    )
    .expect("sentinel");
    dirs.push(sentinel_dir);
    let t0 = Instant::now();
    let (mut engine, docker) = start(suite, dirs).await;
    assert_version(&docker, &engine, label).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = docker.info().await.unwrap_or_else(|e| panic!("{e}"));
        let ready = info
            .discovered_devices
            .iter()
            .flatten()
            .any(|d| d.id.as_deref() == Some("parity.test/sentinel=ready"));
        if ready || Instant::now() > deadline {
            assert!(ready, "engine {label} never listed the sentinel device");
            break info;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let warnings = info.warnings.unwrap_or_default();
    let rows: Vec<Row> = cases
        .iter()
        .zip(&files)
        .map(|(case, file)| {
            let needle = format!("spec file {}", file.display());
            let hit = warnings.iter().find(|w| w.contains(&needle));
            Row {
                label: case.label(),
                harness: harness_verdict(case, &rules),
                engine: Some(if hit.is_some() {
                    Seen::Refused
                } else {
                    Seen::Loaded
                }),
                evidence: hit.cloned().unwrap_or_else(|| "no warning".to_owned()),
            }
        })
        .collect();
    engine.stop().await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "engine {label}: {} cases in {:?}",
        cases.len(),
        t0.elapsed()
    );
    assert_rows(label, &rows);
}

/// Runs a container asking for `device` and returns the start error, if any.
async fn probe(docker: &Docker, device: &str) -> Result<(), String> {
    let body = ContainerCreateBody {
        image: Some(SIM_IMAGE.to_owned()),
        cmd: Some(vec!["true".to_owned()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            device_requests: Some(vec![DeviceRequest {
                driver: Some("cdi".to_owned()),
                device_ids: Some(vec![device.to_owned()]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(None, body)
        .await
        .map_err(|e| e.to_string())?;
    let started = docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| e.to_string());
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    started
}

fn unresolvable(result: &Result<(), String>) -> bool {
    result
        .as_ref()
        .err()
        .is_some_and(|e| e.contains("unresolvable CDI devices"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_26_1_resolves_exactly_what_the_table_says() {
    let (label, suite) = ("26.1", "trixie");
    if let Some(reason) = skip_reason(suite) {
        cannot_run(&reason);
        return;
    }
    let rules = Rules::for_engine(label).expect("in the table");
    let cases: Vec<corpus::Case> = corpus::load()
        .into_iter()
        .filter(|c| c.engine && c.probe().is_some())
        .collect();
    // Batches whose cases define distinct device names, so none conflict.
    let mut batches: Vec<(BTreeSet<String>, Vec<usize>)> = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let names = defined_names(case);
        match batches
            .iter_mut()
            .find(|(used, _)| used.is_disjoint(&names))
        {
            Some((used, members)) => {
                used.extend(names);
                members.push(i);
            }
            None => batches.push((names, vec![i])),
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cdi");
    std::fs::create_dir_all(&dir).expect("spec dir");
    let t0 = Instant::now();
    let (mut engine, docker) = start(suite, vec![dir.clone()]).await;
    assert_version(&docker, &engine, label).await;
    import_image(
        &docker,
        SIM_IMAGE,
        busybox_rootfs_tar().unwrap_or_else(|e| panic!("{e}")),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut rows: Vec<Option<Row>> = (0..cases.len()).map(|_| None).collect();
    for (b, (_, members)) in batches.iter().enumerate() {
        for entry in std::fs::read_dir(&dir).expect("spec dir").flatten() {
            std::fs::remove_file(entry.path()).expect("clear spec dir");
        }
        for &i in members {
            std::fs::write(
                dir.join(format!("c{i:03}-{}", cases[i].file)),
                &cases[i].spec,
            )
            .expect("case spec");
        }
        let sentinel = format!("parity.test/sentinel=b{b}");
        std::fs::write(
            dir.join("zz-sentinel.yaml"),
            format!(
                "cdiVersion: 0.5.0\nkind: parity.test/sentinel\ndevices: [{{name: b{b}, containerEdits: {{env: [A=1]}}}}]\n"
            ),
        )
        .expect("sentinel");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !unresolvable(&probe(&docker, &sentinel).await) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "engine {label} never resolved {sentinel}\n{}",
                engine.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for &i in members {
            let case = &cases[i];
            let device = case.probe().unwrap_or_default();
            let result = probe(&docker, &device).await;
            rows[i] = Some(Row {
                label: case.label(),
                harness: harness_verdict(case, &rules),
                engine: Some(if unresolvable(&result) {
                    Seen::Refused
                } else {
                    Seen::Loaded
                }),
                evidence: format!(
                    "--device {device}: {}",
                    result.err().unwrap_or_else(|| "ran".to_owned())
                ),
            });
        }
    }
    engine.stop().await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "engine {label}: {} cases in {} batches in {:?}",
        cases.len(),
        batches.len(),
        t0.elapsed()
    );
    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    assert_rows(label, &rows);
}
