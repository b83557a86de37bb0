//! Gathering the facts the selected checks need: the containers, the `docker info`
//! and spec chain (files, snapshot), the CLI, the GPU inventory and the machine probe,
//! all concurrent; every read of the file system happens here so the evaluators stay
//! pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::restart::restart_always;
use super::{RunOptions, Session, interrupted};
use crate::check_id::CheckId;
use crate::checks::{self, FactError, Facts, Need, Verdict};
use crate::engine::{self, CliInfo, Endpoint, Engine, EngineInfo, RunOutcome, RunRequest};
use crate::outcome::{BackendKind, Cause};
use crate::scenario::Scenario;

/// Gathers every fact the selected checks need (as the catalogue says); containers
/// run concurrently with the `docker info` calls and the spec loading. Every read of
/// the file system happens here, so the evaluators stay pure.
pub(super) async fn gather(
    s: &Scenario,
    opts: &RunOptions,
    sess: &mut Session,
    ids: &[CheckId],
    facts: &mut Facts,
    timings: &mut BTreeMap<String, Duration>,
) {
    let needs = checks::needs(ids);
    let engine = sess.engine.clone();
    let requests = container_requests(s, sess, ids, &needs);
    let runs_fut = run_containers(
        engine.clone(),
        sess.image.clone(),
        requests,
        opts.container_concurrency,
        opts.backend,
    );
    // A remote engine's spec files are on its machine: they are not read from this
    // one's paths.
    let remote = remote_reason(engine.endpoint());
    let want_specs = needs.contains(&Need::Specs) && remote.is_none();
    let spec_chain = spec_chain(
        s,
        opts,
        &engine,
        sess.spec_dirs.clone(),
        sess.redactions.clone(),
        want_specs,
        want_specs && needs.contains(&Need::Snapshot),
    );
    let cli_fut = cli_probe(opts, &engine, needs.contains(&Need::Cli));
    // NVML's init takes up to a second on a real GPU host: it runs beside the rest.
    let gpu_fut = async {
        if needs.contains(&Need::Gpu) && remote.is_none() {
            Some(gpu_facts(s, opts.backend, opts.stand_in_gpus.clone()).await)
        } else {
            None
        }
    };
    let machine_fut = machine_probe(
        needs.contains(&Need::Machine) && opts.backend == BackendKind::Host && remote.is_none(),
    );
    let (chain, cli, runs, gpu, machine) =
        tokio::join!(spec_chain, cli_fut, runs_fut, gpu_fut, machine_fut);
    facts.gpu = gpu;
    facts.machine = machine;
    facts.specs_unreachable = remote;
    store_spec_chain(chain, sess, facts, timings);
    if let Some((cli, t)) = cli {
        timings.insert("info_cli".into(), t);
        facts.cli = Some(cli);
    }
    store_runs(s, ids, runs, facts, timings);
    // Last, when every other container is done: it restarts the engine.
    if needs.contains(&Need::Restart) && s.gpus.count > 0 && opts.backend == BackendKind::Sim {
        let t = Instant::now();
        let outcome = if opts.cancel.is_cancelled() {
            checks::RestartOutcome::Error(interrupted("before the restart flow").message)
        } else {
            opts.enter(&s.name, super::Phase::RestartingEngine);
            restart_always(s, opts, sess).await
        };
        timings.insert("restart_always".into(), t.elapsed());
        facts.restart_always = Some(outcome);
    }
}

/// The containers the selected checks need: the device checks' own, every device for
/// isolation and the GPU cross-check, and the declared runs.
fn container_requests(
    s: &Scenario,
    sess: &Session,
    ids: &[CheckId],
    needs: &BTreeSet<Need>,
) -> Vec<(String, RunRequest)> {
    let all_devices = needs.contains(&Need::AllDeviceContainers);
    let mut requests: Vec<(String, RunRequest)> = Vec::new();
    let smi_list = vec!["nvidia-smi".to_string(), "-L".to_string()];
    let wanted = |id: &CheckId| all_devices || ids.contains(id);
    if s.gpus.count > 0 && wanted(&CheckId::DeviceAll) {
        requests.push((
            "device_all".into(),
            device_request(s, sess, "device_all", "nvidia.com/gpu=all", &smi_list),
        ));
    }
    for n in 0..s.gpus.count {
        let id = CheckId::Device(n);
        if wanted(&id) {
            let dev = format!("nvidia.com/gpu={n}");
            let check = id.name();
            requests.push((
                check.clone(),
                device_request(s, sess, &check, &dev, &smi_list),
            ));
        }
    }
    for r in &s.runs {
        if ids.contains(&CheckId::Run(r.name.clone())) {
            requests.push((
                r.name.clone(),
                RunRequest {
                    image: sess.image.clone(),
                    command: r.command.clone(),
                    cdi_devices: r.devices.iter().map(|d| d.to_string()).collect(),
                    gpus: r.gpus.clone(),
                    runtime: r.runtime.clone(),
                    check: format!("{}::{}", s.name, r.name),
                },
            ));
        }
    }
    requests
}

/// What the `docker info` → spec dirs → spec files → snapshot chain found, with the
/// time of each link (the checks fed by a link report its time).
struct SpecChain {
    info: Result<EngineInfo, FactError>,
    info_time: Duration,
    dirs: Vec<PathBuf>,
    source: String,
    files: SpecFiles,
    spec_time: Duration,
    snapshot: Option<(Verdict, Duration)>,
}

/// `docker info`, then the spec dirs (on the host the engine says where specs live),
/// the spec files as the engine loads them and the snapshot: one chain, since each link
/// needs the one before, concurrent with the containers and the CLI.
async fn spec_chain(
    s: &Scenario,
    opts: &RunOptions,
    engine: &Engine,
    sim_dirs: Vec<PathBuf>,
    redactions: Vec<(String, String)>,
    want_specs: bool,
    want_snapshot: bool,
) -> SpecChain {
    let t = Instant::now();
    let info = engine.info().await.map_err(FactError::from);
    let info_time = t.elapsed();
    let (dirs, source) = spec_dirs(opts.backend, sim_dirs, &info);
    let t = Instant::now();
    let files = if want_specs {
        load_spec_files(s, engine, &info, &dirs).await
    } else {
        SpecFiles::default()
    };
    let spec_time = t.elapsed();
    let snapshot = if want_snapshot {
        let t = Instant::now();
        let v = snapshot_verdict(
            s,
            opts.backend,
            &opts.snapshot_dir,
            &redactions,
            files.registry.as_ref(),
            opts.ci,
        )
        .await;
        Some((v, t.elapsed()))
    } else {
        None
    };
    SpecChain {
        info,
        info_time,
        dirs,
        source,
        files,
        spec_time,
        snapshot,
    }
}

/// The spec dirs the engine reads and where that was learnt: the sim's own, else what
/// `docker info` reports, else the CDI default.
fn spec_dirs(
    backend: BackendKind,
    sim_dirs: Vec<PathBuf>,
    info: &Result<EngineInfo, FactError>,
) -> (Vec<PathBuf>, String) {
    match (backend, info) {
        (BackendKind::Sim, _) => (sim_dirs, "the simulated engine's cdi-spec-dirs".to_string()),
        (BackendKind::Host, Ok(i)) if !i.cdi_spec_dirs.is_empty() => (
            i.cdi_spec_dirs.iter().map(PathBuf::from).collect(),
            "docker info".to_string(),
        ),
        (BackendKind::Host, _) => (
            vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            "the CDI default, since the engine reports none".to_string(),
        ),
    }
}

/// Reads the spec dirs off the async threads, under the rules of the connected engine.
async fn load_spec_files(
    s: &Scenario,
    engine: &Engine,
    info: &Result<EngineInfo, FactError>,
    dirs: &[PathBuf],
) -> SpecFiles {
    let load_dirs = dirs.to_vec();
    let reported: Vec<PathBuf> = match info {
        Ok(i) => i.cdi_spec_dirs.iter().map(PathBuf::from).collect(),
        Err(_) => Vec::new(),
    };
    // The specs are judged by the CDI library the connected engine bundles, so
    // `spec_valid` and the engine's own warnings (`info_warnings`) agree.
    let rules = match info {
        Ok(i) => crate::cdi::Rules::for_connected_engine(&i.server_version, &engine.endpoint().uri),
        Err(_) => crate::cdi::Rules::default_engine(),
    };
    let scenario = s.clone();
    tokio::task::spawn_blocking(move || read_spec_files(&scenario, &load_dirs, &reported, &rules))
        .await
        .unwrap_or_else(|e| SpecFiles {
            error: Some(FactError::new(
                format!(
                    "reading the spec directories crashed (a harness bug: please report it): {e}"
                ),
                Some(Cause::HarnessBug),
            )),
            ..SpecFiles::default()
        })
}

/// `docker info` through the CLI, when the `info_cli` check runs and a CLI was found;
/// Ctrl-C does not wait for it.
async fn cli_probe(
    opts: &RunOptions,
    engine: &Engine,
    wanted: bool,
) -> Option<(Result<CliInfo, FactError>, Duration)> {
    let cli = opts.docker_cli.as_ref().filter(|_| wanted)?;
    let t = Instant::now();
    let r = tokio::select! {
        r = engine::cli_info(cli, engine.endpoint(), opts.timeouts.call) => r.map_err(FactError::from),
        _ = opts.cancel.cancelled() => Err(interrupted("before `docker info` answered")),
    };
    Some((r, t.elapsed()))
}

/// The machine's own units and daemon config, as `doctor` reads them (host only; off
/// the async threads: it runs `systemctl`).
async fn machine_probe(wanted: bool) -> Option<crate::host::MachineProbe> {
    if !wanted {
        return None;
    }
    tokio::task::spawn_blocking(|| crate::host::probe_machine(&crate::host::SystemHost))
        .await
        .ok()
}

/// Files the chain's findings into the facts (and the session, whose spec dirs the
/// report shows), with the time of the link each check depends on.
fn store_spec_chain(
    chain: SpecChain,
    sess: &mut Session,
    facts: &mut Facts,
    timings: &mut BTreeMap<String, Duration>,
) {
    for n in [
        "info_spec_dirs",
        "info_devices",
        "info_warnings",
        "daemon_runtimes",
        "engine_mode",
    ] {
        timings.insert(n.into(), chain.info_time);
    }
    facts.info = Some(chain.info);
    sess.spec_dirs = chain.dirs.clone();
    sess.spec_dirs_source = chain.source.clone();
    facts.spec_dirs = chain.dirs;
    facts.spec_dirs_source = chain.source;
    facts.specs_error = chain.files.error;
    facts.registry = chain.files.registry;
    facts.spec_files = chain.files.present;
    facts.spec_mtime = chain.files.mtime;
    facts.canonical_dirs = chain.files.canonical;
    for n in ["spec_present", "spec_valid", "spec_devices"] {
        timings.insert(n.into(), chain.spec_time);
    }
    if let Some((v, t)) = chain.snapshot {
        timings.insert("spec_snapshot".into(), t);
        facts.snapshot = Some(v);
    }
}

/// Files each container's outcome under its check; `device_isolation` (which compares
/// the per-device containers) takes the slowest of them.
fn store_runs(
    s: &Scenario,
    ids: &[CheckId],
    runs: RunResults,
    facts: &mut Facts,
    timings: &mut BTreeMap<String, Duration>,
) {
    for (name, (outcome, took)) in runs {
        timings.insert(name.clone(), took);
        facts.runs.insert(name, outcome);
    }
    if ids.contains(&CheckId::DeviceIsolation) {
        let slowest: Duration = (0..s.gpus.count)
            .filter_map(|n| timings.get(&format!("device_{n}")).copied())
            .max()
            .unwrap_or_default();
        timings.insert("device_isolation".into(), slowest);
    }
}

/// Why the spec files cannot be read from this machine: the engine is reached over
/// the network (`tcp://`, `ssh://`, …), so its spec dirs are paths on another machine.
fn remote_reason(endpoint: &Endpoint) -> Option<String> {
    if endpoint.uri.starts_with("unix://") || endpoint.uri.starts_with('/') {
        return None;
    }
    Some(format!(
        "the engine at {} is remote: its CDI spec files are on its own machine, not this one",
        endpoint.uri
    ))
}

/// What the spec checks need from the file system, read in one blocking pass.
#[derive(Default)]
struct SpecFiles {
    error: Option<FactError>,
    registry: Option<crate::cdi::Registry>,
    present: Vec<PathBuf>,
    mtime: Option<std::time::SystemTime>,
    canonical: BTreeMap<PathBuf, PathBuf>,
}

fn read_spec_files(
    s: &Scenario,
    dirs: &[PathBuf],
    reported: &[PathBuf],
    rules: &crate::cdi::Rules,
) -> SpecFiles {
    let registry = crate::cdi::load_dirs_with(dirs, rules);
    // The existing copies of the scenario's spec file, in spec-dir order.
    let present = dirs
        .iter()
        .map(|d| d.join(&s.spec_file))
        .filter(|p| p.exists())
        .collect();
    let mtime = registry
        .spec_named(&s.spec_file)
        .and_then(|l| std::fs::metadata(&l.path).ok())
        .and_then(|m| m.modified().ok());
    let canonical = dirs
        .iter()
        .chain(reported)
        .filter_map(|d| std::fs::canonicalize(d).ok().map(|c| (d.clone(), c)))
        .collect();
    SpecFiles {
        error: None,
        registry: Some(registry),
        present,
        mtime,
        canonical,
    }
}

/// The GPU inventory the cross-checks compare against: NVML on `host` (off the async
/// threads: loading the library can take a second), the simulated GPUs on `sim`.
async fn gpu_facts(
    s: &Scenario,
    backend: BackendKind,
    stand_in: Option<crate::gpu::Inventory>,
) -> crate::gpu::GpuFacts {
    use crate::gpu::GpuSource;
    let inventory = match (backend, stand_in) {
        (BackendKind::Sim, _) => Ok(crate::gpu::sim_inventory(s.gpus.count)),
        (BackendKind::Host, Some(mut inv)) => {
            inv.simulated = true;
            Ok(inv)
        }
        (BackendKind::Host, None) => {
            tokio::task::spawn_blocking(|| crate::gpu::NvmlSource.inventory())
                .await
                .unwrap_or_else(|e| {
                    Err(crate::gpu::GpuError::Call {
                        call: "nvmlInit".into(),
                        message: format!("the NVML probe crashed: {e}"),
                    })
                })
        }
    };
    crate::gpu::GpuFacts {
        inventory,
        boot_time: crate::gpu::boot_time(),
    }
}

/// A device check's container: one CDI device and `nvidia-smi -L`, labelled with its check.
fn device_request(
    s: &Scenario,
    sess: &Session,
    check: &str,
    device: &str,
    cmd: &[String],
) -> RunRequest {
    RunRequest {
        image: sess.image.clone(),
        command: cmd.to_vec(),
        cdi_devices: vec![device.to_string()],
        gpus: None,
        runtime: None,
        check: format!("{}::{check}", s.name),
    }
}

/// Each container's outcome (or why it did not run) and how long it took, by check name.
type RunResults = Vec<(String, (Result<RunOutcome, FactError>, Duration))>;

/// Without the image no container runs: the first check says why and how to load it,
/// the others point at it, so the reason is read once and not once per container.
fn image_missing(requests: Vec<(String, RunRequest)>, e: FactError) -> RunResults {
    let first = requests.first().map(|(_, r)| r.check.clone());
    requests
        .into_iter()
        .enumerate()
        .map(|(i, (n, _))| {
            let err = match (&first, i) {
                (Some(first), 1..) => FactError::new(
                    format!("not run: the image is missing (see {first})"),
                    e.cause,
                ),
                _ => e.clone(),
            };
            (n, (Err(err), Duration::ZERO))
        })
        .collect()
}

/// Runs the containers, a few at a time. On `host` a missing image is pulled once first;
/// if that fails every run reports why and how to load the image.
async fn run_containers(
    engine: Engine,
    image: String,
    requests: Vec<(String, RunRequest)>,
    concurrency: usize,
    backend: BackendKind,
) -> RunResults {
    if requests.is_empty() {
        return Vec::new();
    }
    if backend == BackendKind::Host && image == crate::local_image::LOCAL_IMAGE {
        let built =
            crate::local_image::build_and_import(engine.client(), engine.timeouts().pull).await;
        if let Err(e) = built {
            return image_missing(
                requests,
                FactError::new(e.to_string(), Some(Cause::ImageMissing)),
            );
        }
    } else if backend == BackendKind::Host {
        let ready = match engine.image_present(&image).await {
            Ok(true) => Ok(()),
            Ok(false) => engine.pull(&image).await.map_err(|e| {
                FactError::new(
                    format!(
                        "image {image} is not present and could not be pulled ({e}): load it with `docker pull {image}`, or `docker load -i FILE.tar` on an offline machine, or pass --image local (CDI_HARNESS_IMAGE=local for cargo test) to build one from this host's nvidia-smi"
                    ),
                    Some(Cause::ImageMissing),
                )
            }),
            Err(e) => Err(FactError::from(e)),
        };
        if let Err(e) = ready {
            return image_missing(requests, e);
        }
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    // Task ids name the check of a task that panics, so its failure is filed under
    // that check and not lost.
    let mut names = BTreeMap::new();
    for (name, req) in requests {
        let engine = engine.clone();
        let limit = limit.clone();
        let check = name.clone();
        let handle = set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let t = Instant::now();
            let mut r = engine.run(&req).await.map_err(FactError::from);
            if output_lost(&req, &r) {
                r = engine.run(&req).await.map_err(FactError::from);
            }
            (check, (r, t.elapsed()))
        });
        names.insert(handle.id(), name);
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next_with_id().await {
        match joined {
            Ok((_, item)) => out.push(item),
            Err(e) => {
                // A panicked run task: its container is removed by the label sweep.
                let name = names.get(&e.id()).cloned().unwrap_or_default();
                let msg = format!(
                    "the container run of `{name}` panicked or was cancelled (a harness bug: please report it): {e}"
                );
                out.push((
                    name,
                    (
                        Err(FactError::new(msg, Some(Cause::HarnessBug))),
                        Duration::ZERO,
                    ),
                ));
            }
        }
    }
    out
}

/// An `nvidia-smi` run that exited 0 without a single byte of output: nvidia-smi always
/// prints (with no GPU it says "No devices were found" and exits 6), so the engine lost
/// what it wrote. Measured on engine 28.5 on 2 loaded cores, about one such run in 150:
/// dockerd logs `copy stream failed … reading from a closed fifo` and `docker logs`
/// stays empty. Such a run is no evidence either way and is run once more; judged as
/// it came, it read as a spec that injects no GPU.
fn output_lost(req: &RunRequest, r: &Result<RunOutcome, FactError>) -> bool {
    req.command.first().is_some_and(|c| c == "nvidia-smi")
        && matches!(
            r,
            Ok(RunOutcome::Exited { exit_code: 0, stdout, stderr })
                if stdout.is_empty() && stderr.is_empty()
        )
}

/// The `spec_snapshot` verdict: the scenario's spec, normalized and redacted, compared
/// with the stored snapshot (off the async threads: it reads and may write files).
async fn snapshot_verdict(
    s: &Scenario,
    backend: BackendKind,
    snapshot_dir: &Path,
    redactions: &[(String, String)],
    registry: Option<&crate::cdi::Registry>,
    ci: bool,
) -> Verdict {
    let Some(reg) = registry else {
        return Verdict::skip("the spec directories were not read");
    };
    let Some(loaded) = reg.spec_named(&s.spec_file) else {
        return Verdict::fail(
            format!("there is no {} to snapshot", s.spec_file),
            Some(crate::hints::SPEC_MISSING_FIX.into()),
        )
        .because(Cause::SpecMissing);
    };
    let mut value = crate::cdi::normalize(&loaded.spec);
    if !redactions.is_empty() {
        value = redact(value, redactions);
    }
    let dir = snapshot_dir.to_path_buf();
    let name = s.name.clone();
    use crate::snapshot::{SnapshotMode, SnapshotOutcome};
    tokio::task::spawn_blocking(move || {
        match crate::snapshot::check(&dir, backend, &name, &value, SnapshotMode::for_ci(ci)) {
            Ok(o @ SnapshotOutcome::Matches { .. }) => Verdict::pass(o.message()),
            // Outside CI a first snapshot is recorded for review: visible, compared
            // nothing, fails nothing. In CI there is no one to review it: a failure.
            Ok(o @ SnapshotOutcome::New { .. }) if !ci => Verdict::recorded(o.message()),
            Ok(o) => {
                Verdict::fail(o.message(), o.fix().map(Into::into)).because(Cause::SnapshotChanged)
            }
            Err(e) => Verdict::fail(e.to_string(), Some(e.fix_hint().into())),
        }
    })
    .await
    .unwrap_or_else(|e| Verdict::fail(format!("the snapshot check crashed: {e}"), None))
}

/// Replaces path prefixes in every string of a JSON value.
pub(super) fn redact(value: serde_json::Value, with: &[(String, String)]) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(mut s) => {
            for (from, to) in with {
                s = s.replace(from.as_str(), to);
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|v| redact(v, with)).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, redact(v, with))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_nvidia_smi_run_with_no_output_at_all_counts_as_lost() {
        let req = |cmd: &[&str]| RunRequest {
            image: "i".into(),
            command: cmd.iter().map(|c| c.to_string()).collect(),
            cdi_devices: vec!["nvidia.com/gpu=0".into()],
            gpus: None,
            runtime: None,
            check: "t::device_0".into(),
        };
        let exited = |code: i64, out: &str, err: &str| {
            Ok(RunOutcome::Exited {
                exit_code: code,
                stdout: out.into(),
                stderr: err.into(),
            })
        };
        let smi = req(&["nvidia-smi", "-L"]);
        assert!(output_lost(&smi, &exited(0, "", "")));
        // What nvidia-smi really says is evidence, whatever it says.
        assert!(!output_lost(
            &smi,
            &exited(0, "GPU 0: X (UUID: GPU-1)\n", "")
        ));
        assert!(!output_lost(&smi, &exited(6, "", "")));
        assert!(!output_lost(&smi, &exited(0, "", "warning\n")));
        let refused: Result<RunOutcome, FactError> = Ok(RunOutcome::Refused {
            message: "unresolvable CDI devices".into(),
        });
        assert!(!output_lost(&smi, &refused));
        // Another command may well print nothing.
        assert!(!output_lost(&req(&["true"]), &exited(0, "", "")));
    }

    #[test]
    fn redaction_reaches_nested_strings() {
        let v = serde_json::json!({"a": ["/tmp/cdih-x/support/nvidia-smi"], "b": {"c": "/tmp/cdih-x"}, "n": 1});
        let r = redact(v, &[("/tmp/cdih-x".into(), "[SIM_DIR]".into())]);
        assert_eq!(r["a"][0], "[SIM_DIR]/support/nvidia-smi");
        assert_eq!(r["b"]["c"], "[SIM_DIR]");
        assert_eq!(r["n"], 1);
    }

    #[test]
    fn only_a_local_socket_lets_the_spec_files_be_read_here() {
        let at = |uri: &str| Endpoint {
            uri: uri.into(),
            source: "test".into(),
        };
        assert_eq!(remote_reason(&at("unix:///var/run/docker.sock")), None);
        for uri in [
            "tcp://gpu-box:2376",
            "ssh://me@gpu-box",
            "http://10.0.0.1:2375",
        ] {
            let why = remote_reason(&at(uri)).expect("remote");
            assert!(why.contains(uri) && why.contains("remote"), "{why}");
        }
    }
}
