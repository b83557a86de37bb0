//! Runs scenarios: prepares the backend (the machine's engine, or a private simulated
//! one), gathers the facts every check needs with as much concurrency as the engine
//! allows, evaluates the checks, and always cleans up: every container of the run is
//! removed and a private engine stopped, also after a timeout, a panic or Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::check_id::CheckId;
use crate::checks::{self, FactError, Facts, Need, Verdict};
use crate::engine::{self, Endpoint, Engine, RunOutcome, RunRequest, Timeouts};
use crate::outcome::{
    BackendKind, Cause, CheckResult, EngineFacts, GpuRecord, HardwareFacts, REPORT_SCHEMA_VERSION,
    RunReport, Status,
};
use crate::scenario::{Scenario, SimSpecState};
use crate::sim;

/// The image the `sim` backend imports from the host's static busybox.
pub use crate::sim::SIM_IMAGE;

/// Called with each result as soon as it is known (progress on a terminal).
pub type Progress = Arc<dyn Fn(&CheckResult) + Send + Sync>;

/// Called with what the run did besides checking (leftovers of dead runs removed).
pub type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// The trial of a scenario whose engine could not be prepared (or died during the
/// run): the failure with its cause, so that it is not filed under a check.
pub const SETUP_CHECK: &str = "setup";
/// After an interruption, how long the in-flight work gets to wind down (its engine
/// calls are cancelled at once) before it is abandoned.
const INTERRUPT_WIND_DOWN: Duration = Duration::from_secs(3);
/// After an interruption, the cleanup's own deadline (container removal); the private
/// engine's stop has its own short grace.
const INTERRUPT_CLEANUP: Duration = Duration::from_secs(5);
/// How long a stopped or hung private engine gets to exit after an interruption before
/// it is killed.
const INTERRUPT_STOP_GRACE: Duration = Duration::from_secs(3);
/// A container of a dead run is removed only when older than this, so that a run
/// starting as its owner exits does not race its last removals.
const DEAD_RUN_GRACE: Duration = Duration::from_secs(5);

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Which engine.
    pub backend: BackendKind,
    /// Replaces every scenario's image on `host`.
    pub image_override: Option<String>,
    /// The engine of the `host` backend; `None` chooses as `Endpoint::for_host` does.
    pub host_endpoint: Option<Endpoint>,
    /// Root of the insta snapshots (`snapshots/`).
    pub snapshot_dir: PathBuf,
    /// The `docker` CLI for the `info_cli` check; `None` skips that check with a reason.
    pub docker_cli: Option<PathBuf>,
    /// dockerd for `sim` (else found as `sim::find_dockerd` says).
    pub dockerd: Option<PathBuf>,
    /// Engine call limits.
    pub timeouts: Timeouts,
    /// Trial names (`<scenario>::<check>`) to run; `None` runs all.
    pub selection: Option<BTreeSet<String>>,
    /// Progress callback.
    pub progress: Option<Progress>,
    /// How many scenarios run at once.
    pub scenario_concurrency: usize,
    /// How many containers run at once per scenario.
    pub container_concurrency: usize,
    /// Ctrl-C: stop starting work, clean up, report what finished.
    pub cancel: CancellationToken,
    /// Running in CI (`--ci`, or `CI` set as insta reads it): a first snapshot with no
    /// stored one fails instead of being recorded for review.
    pub ci: bool,
    /// Scenarios that do not apply to the machine checked, by name, with why
    /// ([`crate::select::plan`]): each of their checks is reported skipped with the reason,
    /// and nothing is started for them.
    pub not_applicable: BTreeMap<String, String>,
    /// TEST SEAM, never set by the command line: on `host`, this GPU inventory instead
    /// of NVML's, for a private engine made to look like a GPU host (simulated spec and
    /// inventory) in CI. Every result and the report are then labelled simulated, and
    /// the inventory itself is marked simulated, so nothing it produces can pass for
    /// real hardware.
    pub stand_in_gpus: Option<crate::gpu::Inventory>,
    /// Where notices go (what leftovers of dead runs were removed); `None` drops them.
    pub notice: Option<Notice>,
}

impl RunOptions {
    /// Defaults for `backend`, with snapshots in `snapshot_dir`.
    pub fn new(backend: BackendKind, snapshot_dir: PathBuf) -> RunOptions {
        RunOptions {
            backend,
            image_override: None,
            host_endpoint: None,
            snapshot_dir,
            docker_cli: engine::find_cli(),
            dockerd: None,
            timeouts: Timeouts::default(),
            selection: None,
            progress: None,
            scenario_concurrency: 3,
            container_concurrency: 4,
            cancel: CancellationToken::new(),
            ci: crate::snapshot::ci_from_env(),
            not_applicable: BTreeMap::new(),
            stand_in_gpus: None,
            notice: None,
        }
    }

    fn notify(&self, text: &str) {
        if let Some(n) = &self.notice {
            n(text);
        }
    }

    fn selected(&self, scenario: &str, check: &str) -> bool {
        self.selection
            .as_ref()
            .is_none_or(|set| set.contains(&format!("{scenario}::{check}")))
    }
}

/// A unique id for this run: the value of every container's run label.
pub fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{:x}", std::process::id(), nanos)
}

/// Runs every selected check of every scenario and returns the report.
pub async fn run_scenarios(scenarios: &[Scenario], opts: &RunOptions) -> RunReport {
    let started = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let run_id = new_run_id();
    if opts.backend == BackendKind::Sim {
        for dir in sweep_dead_sim_dirs() {
            opts.notify(&format!(
                "removed {} left by a harness run that died",
                dir.display()
            ));
        }
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(
        opts.scenario_concurrency.max(1),
    ));
    let mut set = JoinSet::new();
    for (i, s) in scenarios.iter().enumerate() {
        let s = s.clone();
        let opts = opts.clone();
        let run_id = run_id.clone();
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let out = run_one(&s, &opts, &run_id).await;
            (i, out)
        });
    }
    let mut per: Vec<Option<ScenarioOutput>> = vec![None; scenarios.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, out)) = joined {
            per[i] = Some(out);
        }
    }
    let mut results = Vec::new();
    let mut engines = BTreeMap::new();
    let mut specs = BTreeMap::new();
    for (s, out) in scenarios.iter().zip(per) {
        match out {
            Some((r, e, spec)) => {
                results.extend(r);
                if let Some(e) = e {
                    engines.insert(s.name.clone(), e);
                }
                if let Some(spec) = spec {
                    specs.insert(s.name.clone(), spec);
                }
            }
            None => results.push(result(
                s,
                "harness",
                opts.backend,
                Verdict::fail(
                    "the harness crashed while running this scenario (a bug: please report it)",
                    None,
                ),
                Duration::ZERO,
            )),
        }
    }
    RunReport {
        schema_version: REPORT_SCHEMA_VERSION,
        backend: opts.backend,
        simulated: opts.backend.simulated() || opts.stand_in_gpus.is_some(),
        started_at,
        duration: started.elapsed(),
        engines,
        results,
        flake_inputs: None,
        specs,
        interrupted: opts.cancel.is_cancelled(),
    }
}

/// One scenario's results, its engine facts and its normalized spec (for diffs).
type ScenarioOutput = (
    Vec<CheckResult>,
    Option<EngineFacts>,
    Option<serde_json::Value>,
);

fn result(
    s: &Scenario,
    check: &str,
    backend: BackendKind,
    v: Verdict,
    duration: Duration,
) -> CheckResult {
    CheckResult {
        scenario: s.name.clone(),
        check: check.to_string(),
        status: v.status,
        message: v.message,
        fix: v.fix,
        cause: v.cause,
        evidence: v.evidence,
        duration,
        backend,
        simulated: backend.simulated(),
    }
}

/// A prepared backend for one scenario.
struct Session {
    engine: Engine,
    image: String,
    spec_dirs: Vec<PathBuf>,
    spec_dirs_source: String,
    /// Path prefixes replaced in snapshots (the sim's temp dir).
    redactions: Vec<(String, String)>,
    private: Option<SimEnvironment>,
}

async fn run_one(s: &Scenario, opts: &RunOptions, run_id: &str) -> ScenarioOutput {
    let ids: Vec<CheckId> = s
        .check_ids()
        .into_iter()
        .filter(|c| opts.selected(&s.name, &c.name()))
        .collect();
    if ids.is_empty() {
        return (Vec::new(), None, None);
    }
    if let Some(why) = opts.not_applicable.get(&s.name) {
        let out: Vec<CheckResult> = ids
            .iter()
            .map(|id| {
                let mut r = result(
                    s,
                    &id.name(),
                    opts.backend,
                    Verdict::skip(why.clone()),
                    Duration::ZERO,
                );
                r.simulated |= opts.stand_in_gpus.is_some();
                if let Some(p) = &opts.progress {
                    p(&r);
                }
                r
            })
            .collect();
        return (out, None, None);
    }
    let mut facts = Facts {
        backend: Some(opts.backend),
        ..Facts::default()
    };
    let mut timings: BTreeMap<String, Duration> = BTreeMap::new();
    let mut engine_facts = None;
    let mut spec_value = None;
    // Why the engine-dependent checks could not run: setup failed or Ctrl-C.
    let mut blocked: Option<FactError> = None;

    // Scenarios share the host's engine: each labels (and sweeps) only its own containers.
    let scope = format!("{run_id}.{}", s.name);
    let prep = tokio::select! {
        _ = opts.cancel.cancelled() => Err(interrupted("before the engine was ready")),
        p = prepare(s, opts, &scope) => p,
    };
    let mut session = match prep {
        Ok(sess) => Some(sess),
        Err(e) => {
            blocked = Some(e);
            None
        }
    };

    // Set when the private engine died during the run without being asked to restart.
    let mut died: Option<FactError> = None;
    if let Some(sess) = session.as_mut() {
        sess.engine = sess.engine.clone().cancelled_by(opts.cancel.clone());
        engine_facts = Some(EngineFacts {
            version: None,
            api_version: Some(sess.engine.api_version()),
            endpoint: Some(sess.engine.endpoint().uri.clone()),
            hardware: sim_hardware(s, opts.backend),
        });
        // Ctrl-C cancels the engine calls in flight, so the gathering ends at once and
        // what had finished keeps its verdict; only work that does not wind down in
        // time is abandoned, and then every check says it was interrupted.
        let work = gather(s, opts, sess, &ids, &mut facts, &mut timings);
        let abandon = async {
            opts.cancel.cancelled().await;
            tokio::time::sleep(INTERRUPT_WIND_DOWN).await;
        };
        tokio::select! {
            _ = abandon => {
                blocked = Some(interrupted("before this check finished"));
            }
            _ = work => {}
        }
        spec_value = facts
            .registry
            .as_ref()
            .and_then(|reg| normalized_spec(s, reg, &sess.redactions));
        if let (Some(Ok(info)), Some(ef)) = (&facts.info, engine_facts.as_mut()) {
            ef.version = Some(info.server_version.clone());
        }
        if let Some(ef) = engine_facts.as_mut() {
            ef.hardware = ef
                .hardware
                .take()
                .or_else(|| host_hardware(facts.gpu.as_ref()));
        }
        // The safety net: whatever happened above, no container of this run survives.
        // After an interruption it runs on calls no interruption cancels, under its own
        // short deadline (a hung engine must not hold the operator).
        let cancelled = opts.cancel.is_cancelled();
        let cleaner = sess.engine.uncancelled();
        let cleanup = async {
            let left = cleaner.labelled_containers().await;
            for id in left.iter().flatten() {
                let _ = cleaner.remove(id).await;
            }
            if blocked.is_none() && ids.contains(&CheckId::NoLeftovers) {
                facts.leftovers = Some(if cancelled {
                    Err(interrupted("before the leftovers were looked for"))
                } else {
                    left.map_err(FactError::from)
                });
            }
        };
        let deadline = if cancelled {
            INTERRUPT_CLEANUP
        } else {
            opts.timeouts.call * 3
        };
        // An interrupted private engine is taken down whole (its containers with it):
        // asking a possibly hung engine for its containers would only cost the deadline.
        let swept = if cancelled && sess.private.is_some() {
            drop(cleanup);
            if blocked.is_none() && ids.contains(&CheckId::NoLeftovers) {
                facts.leftovers = Some(Err(interrupted("before the leftovers were looked for")));
            }
            Ok(())
        } else {
            tokio::time::timeout(deadline, cleanup).await
        };
        if swept.is_err() && cancelled {
            opts.notify(&format!(
                "{}: the engine did not answer the cleanup within {} s: containers labelled {}={} may be left on it; the next run removes them",
                s.name,
                deadline.as_secs(),
                engine::OWNER_LABEL,
                engine::owner_value()
            ));
        }
        if let Some(private) = sess.private.as_mut() {
            // Checked last, so that a death at any point of the run is seen.
            if let Some(status) = private.engine.died().await {
                died = Some(FactError::new(
                    format!(
                        "the private engine died during the run ({status}) without being asked to restart: the results after its death are not the machine's; its log ends: {}",
                        private
                            .engine
                            .log_tail(5)
                            .lines()
                            .collect::<Vec<_>>()
                            .join(" / ")
                    ),
                    Some(Cause::EngineDied),
                ));
            }
            if cancelled {
                private.stop_within(INTERRUPT_STOP_GRACE).await;
            } else {
                private.stop().await;
            }
        }
    }

    // When the engine could not be prepared at all (or died under the run), the
    // `setup` result carries the whole reason and its cause, and the checks that could
    // not run point at it, so the summary says it once and no check is blamed for it.
    let mut out = Vec::new();
    let setup_failure = match (&blocked, &died) {
        (Some(why), _) if session.is_none() && why.cause != Some(Cause::Interrupted) => {
            Some(why.clone())
        }
        (_, Some(why)) => Some(why.clone()),
        _ => None,
    };
    if let Some(why) = &setup_failure {
        let fix = match why.cause {
            Some(Cause::EngineDied) => Some("the private engine is the harness's own: run again; if it keeps dying, its log (above) says why".to_string()),
            _ => None,
        };
        let r = result(
            s,
            SETUP_CHECK,
            opts.backend,
            Verdict::fail(why.message.clone(), fix).because_of(why.cause),
            Duration::ZERO,
        );
        if let Some(p) = &opts.progress {
            p(&r);
        }
        out.push(r);
    }
    for id in &ids {
        let t = Instant::now();
        let verdict = match &blocked {
            Some(why) if session.is_none() && *id != CheckId::MachineConfig => {
                if why.cause == Some(Cause::Interrupted) {
                    Verdict::fail(why.message.clone(), None).because_of(why.cause)
                } else {
                    Verdict::fail(
                        format!(
                            "not run: the engine for this scenario could not be prepared (see {}::{SETUP_CHECK})",
                            s.name
                        ),
                        None,
                    )
                    .because_of(why.cause)
                }
            }
            Some(why) if *id != CheckId::MachineConfig => {
                Verdict::fail(why.message.clone(), None).because_of(why.cause)
            }
            _ => {
                let eval = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    checks::evaluate(s, &facts, id)
                }));
                match eval {
                    Ok(v) => v,
                    Err(_) => Verdict::fail(
                        format!("the check `{id}` panicked (a harness bug: please report it)"),
                        None,
                    )
                    .because(Cause::HarnessBug),
                }
            }
        };
        let name = id.name();
        let took = timings
            .get(name.as_str())
            .copied()
            .unwrap_or_else(|| t.elapsed());
        let mut r = result(s, &name, opts.backend, verdict, took);
        r.simulated |= opts.stand_in_gpus.is_some();
        if r.evidence.is_none() {
            r.evidence = Some(checks::entry(id).evidence_on(opts.backend));
        }
        // On `sim` the scenario's broken machine is what was built, so its declared
        // failures are judged here; on `host` the verdicts stand as the machine gives
        // them (`report judge` applies the same rules to a host report).
        if opts.backend == BackendKind::Sim {
            if let Some(expected) = s.expected_failure(&name) {
                checks::expect::apply(expected, &mut r);
            }
        }
        if let Some(p) = &opts.progress {
            p(&r);
        }
        out.push(r);
    }
    drop(session);
    (out, engine_facts, spec_value)
}

/// The reason (and cause) of checks that Ctrl-C stopped.
fn interrupted(when: &str) -> FactError {
    FactError::new(
        format!("interrupted (Ctrl-C, SIGTERM or SIGHUP) {when}"),
        Some(Cause::Interrupted),
    )
}

/// The `sim` backend's invented driver and GPUs, labelled simulated; `None` on `host`,
/// whose real ones [`host_hardware`] takes from the run's NVML probe.
fn sim_hardware(s: &Scenario, backend: BackendKind) -> Option<HardwareFacts> {
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

/// The real driver and GPUs on `host`, from the NVML inventory this run already read
/// for the GPU cross-checks, so a diff between two nights can tell a driver change from
/// a toolkit or engine change. `None` when there is no real inventory (the GPU checks
/// did not run, NVML is absent or failed, or it is the sim's): a second NVML init just
/// for the header would cost up to a second per scenario.
fn host_hardware(gpu: Option<&crate::gpu::GpuFacts>) -> Option<HardwareFacts> {
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

/// The scenario's spec file (the highest-priority copy) normalized and redacted as the
/// snapshot holds it, or `None` when there is none.
fn normalized_spec(
    s: &Scenario,
    reg: &crate::cdi::Registry,
    redactions: &[(String, String)],
) -> Option<serde_json::Value> {
    let loaded = reg.spec_named(&s.spec_file)?;
    let value = crate::cdi::normalize(&loaded.spec);
    Some(if redactions.is_empty() {
        value
    } else {
        redact(value, redactions)
    })
}

/// Starts or connects to the engine and lays out what the scenario needs.
async fn prepare(s: &Scenario, opts: &RunOptions, run_id: &str) -> Result<Session, FactError> {
    match opts.backend {
        BackendKind::Host => prepare_host(s, opts, run_id).await,
        BackendKind::Sim => prepare_sim(s, opts, run_id).await,
    }
}

async fn prepare_host(s: &Scenario, opts: &RunOptions, run_id: &str) -> Result<Session, FactError> {
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

async fn prepare_sim(s: &Scenario, opts: &RunOptions, run_id: &str) -> Result<Session, FactError> {
    let mut env = start_sim(s, opts.dockerd.clone(), opts.timeouts)
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

/// Gathers every fact the selected checks need (as the catalogue says); containers
/// run concurrently with the `docker info` calls and the spec loading. Every read of
/// the file system happens here, so the evaluators stay pure.
async fn gather(
    s: &Scenario,
    opts: &RunOptions,
    sess: &mut Session,
    ids: &[CheckId],
    facts: &mut Facts,
    timings: &mut BTreeMap<String, Duration>,
) {
    let needs = checks::needs(ids);
    let engine = sess.engine.clone();

    // Containers: the device checks' own, every device for isolation and the GPU
    // cross-check, and the declared runs.
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

    let runs_fut = run_containers(
        engine.clone(),
        sess.image.clone(),
        requests,
        opts.container_concurrency,
        opts.backend,
    );
    // `docker info`, then (on the host, where the engine says where specs live) the
    // spec dirs as the engine loads them and the snapshot: one chain, concurrent with
    // the containers and the CLI. A remote engine's spec files are on its machine:
    // they are not read from this one's paths.
    let backend = opts.backend;
    let sim_dirs = sess.spec_dirs.clone();
    let redactions = sess.redactions.clone();
    let snapshot_dir = opts.snapshot_dir.clone();
    let remote = remote_reason(engine.endpoint());
    let want_specs = needs.contains(&Need::Specs) && remote.is_none();
    let spec_chain = async {
        let t = Instant::now();
        let info = engine.info().await.map_err(FactError::from);
        let info_time = t.elapsed();
        let (dirs, source) = match (backend, &info) {
            (BackendKind::Sim, _) => (sim_dirs, "the simulated engine's cdi-spec-dirs".to_string()),
            (BackendKind::Host, Ok(i)) if !i.cdi_spec_dirs.is_empty() => (
                i.cdi_spec_dirs.iter().map(PathBuf::from).collect(),
                "docker info".to_string(),
            ),
            (BackendKind::Host, _) => (
                vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
                "the CDI default, since the engine reports none".to_string(),
            ),
        };
        let t = Instant::now();
        let mut files = SpecFiles::default();
        if want_specs {
            let load_dirs = dirs.clone();
            let reported: Vec<PathBuf> = match &info {
                Ok(i) => i.cdi_spec_dirs.iter().map(PathBuf::from).collect(),
                Err(_) => Vec::new(),
            };
            // The specs are judged by the CDI library the connected engine bundles, so
            // `spec_valid` and the engine's own warnings (`info_warnings`) agree.
            let rules = match &info {
                Ok(i) => crate::cdi::Rules::for_connected_engine(
                    &i.server_version,
                    &engine.endpoint().uri,
                ),
                Err(_) => crate::cdi::Rules::default_engine(),
            };
            let scenario = s.clone();
            files = tokio::task::spawn_blocking(move || {
                read_spec_files(&scenario, &load_dirs, &reported, &rules)
            })
            .await
            .unwrap_or_else(|e| SpecFiles {
                error: Some(FactError::new(
                    format!("reading the spec directories crashed (a harness bug: please report it): {e}"),
                    Some(Cause::HarnessBug),
                )),
                ..SpecFiles::default()
            });
        }
        let spec_time = t.elapsed();
        let snapshot = if want_specs && needs.contains(&Need::Snapshot) {
            let t = Instant::now();
            let v = snapshot_verdict(
                s,
                backend,
                &snapshot_dir,
                &redactions,
                files.registry.as_ref(),
                opts.ci,
            )
            .await;
            Some((v, t.elapsed()))
        } else {
            None
        };
        (info, info_time, dirs, source, files, spec_time, snapshot)
    };
    let cli_fut = async {
        match (&opts.docker_cli, needs.contains(&Need::Cli)) {
            (Some(cli), true) => {
                let t = Instant::now();
                let r = tokio::select! {
                    r = engine::cli_info(cli, engine.endpoint(), opts.timeouts.call) => r.map_err(FactError::from),
                    _ = opts.cancel.cancelled() => Err(interrupted("before `docker info` answered")),
                };
                Some((r, t.elapsed()))
            }
            _ => None,
        }
    };
    // NVML's init takes up to a second on a real GPU host: it runs beside the rest.
    let gpu_fut = async {
        if needs.contains(&Need::Gpu) && remote.is_none() {
            Some(gpu_facts(s, opts.backend, opts.stand_in_gpus.clone()).await)
        } else {
            None
        }
    };
    // The machine's own units and daemon config, as `doctor` reads them (host only).
    let machine_fut = async {
        if needs.contains(&Need::Machine) && backend == BackendKind::Host && remote.is_none() {
            tokio::task::spawn_blocking(|| crate::host::probe_machine(&crate::host::SystemHost))
                .await
                .ok()
        } else {
            None
        }
    };
    let ((info, info_time, dirs, source, files, spec_time, snapshot), cli, runs, gpu, machine) =
        tokio::join!(spec_chain, cli_fut, runs_fut, gpu_fut, machine_fut);
    facts.gpu = gpu;
    facts.machine = machine;
    facts.specs_unreachable = remote;

    for n in [
        "info_spec_dirs",
        "info_devices",
        "info_warnings",
        "daemon_runtimes",
        "engine_mode",
    ] {
        timings.insert(n.into(), info_time);
    }
    facts.info = Some(info);
    sess.spec_dirs = dirs.clone();
    sess.spec_dirs_source = source.clone();
    facts.spec_dirs = dirs;
    facts.spec_dirs_source = source;
    facts.specs_error = files.error;
    facts.registry = files.registry;
    facts.spec_files = files.present;
    facts.spec_mtime = files.mtime;
    facts.canonical_dirs = files.canonical;
    for n in ["spec_present", "spec_valid", "spec_devices"] {
        timings.insert(n.into(), spec_time);
    }
    if let Some((v, t)) = snapshot {
        timings.insert("spec_snapshot".into(), t);
        facts.snapshot = Some(v);
    }
    if let Some((cli, t)) = cli {
        timings.insert("info_cli".into(), t);
        facts.cli = Some(cli);
    }
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
    // Last, when every other container is done: it restarts the engine.
    if needs.contains(&Need::Restart) && s.gpus.count > 0 && opts.backend == BackendKind::Sim {
        let t = Instant::now();
        let outcome = if opts.cancel.is_cancelled() {
            checks::RestartOutcome::Error(interrupted("before the restart flow").message)
        } else {
            restart_always(s, opts, sess).await
        };
        timings.insert("restart_always".into(), t.elapsed());
        facts.restart_always = Some(outcome);
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

/// How long a `--restart always` container gets to run again (with a new GPU listing)
/// after the restarted engine answers.
const RESTART_BACK_WITHIN: Duration = Duration::from_secs(20);
/// The test container's stop timeout, so the engine's shutdown does not wait 10 s for
/// a PID 1 that ignores SIGTERM.
const RESTART_STOP_TIMEOUT_S: i64 = 1;

/// The `restart_always` flow on `sim` (moby#49989): a labelled `--restart always
/// --device nvidia.com/gpu=all` container that lists the GPUs and sleeps, the private
/// engine restarted (SIGTERM, same command line), the client reconnected, the
/// container awaited with a new listing; then removed (the label sweep is the net).
async fn restart_always(
    s: &Scenario,
    opts: &RunOptions,
    sess: &mut Session,
) -> checks::RestartOutcome {
    use checks::RestartOutcome as R;
    let Some(private) = sess.private.as_ref() else {
        return R::NotRun("no private engine to restart".into());
    };
    if private.engine.rootless_user().is_some() {
        return R::NotRun(
            "restarting a rootless private engine is not supported yet (rootlesskit would have to be restarted with dockerd); the rootful scenarios cover the engine's restart path".into(),
        );
    }
    let req = RunRequest {
        image: sess.image.clone(),
        command: ["/bin/sh", "-c", "nvidia-smi -L && sleep 600"]
            .iter()
            .map(|a| a.to_string())
            .collect(),
        cdi_devices: vec!["nvidia.com/gpu=all".into()],
        gpus: None,
        runtime: None,
        check: format!("{}::restart_always", s.name),
    };
    let t0 = Instant::now();
    let id = match sess
        .engine
        .start_detached(&req, true, Some(RESTART_STOP_TIMEOUT_S))
        .await
    {
        Ok(Ok(id)) => id,
        Ok(Err(refused)) => return R::FirstStartFailed(format!("refused: {refused}")),
        Err(e) => return R::Error(e.to_string()),
    };
    let outcome = restart_and_await(opts, sess, &id, t0).await;
    let _ = sess.engine.remove(&id).await;
    outcome
}

async fn restart_and_await(
    opts: &RunOptions,
    sess: &mut Session,
    id: &str,
    t0: Instant,
) -> checks::RestartOutcome {
    use checks::RestartOutcome as R;
    let before = match await_listing(&sess.engine, id, 0, 1, opts.timeouts.call).await {
        Listing::Seen(gpus, log) => (gpus, log.lines().count()),
        Listing::Timeout { state, log, waited } => {
            return R::FirstStartFailed(format!(
                "not running with an nvidia-smi -L listing within {waited:.1?}: state {}, exit code {}{}; log: {}",
                state.status,
                state.exit_code,
                if state.error.is_empty() {
                    String::new()
                } else {
                    format!(", error: {}", state.error)
                },
                log.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
            ));
        }
        Listing::Engine(e) => return R::Error(e),
    };
    let (before, before_lines) = before;
    let first_start = t0.elapsed();
    let t1 = Instant::now();
    let Some(private) = sess.private.as_mut() else {
        return R::NotRun("no private engine to restart".into());
    };
    // A hung engine does not exit on SIGTERM: Ctrl-C must not wait out the grace.
    let restarted = tokio::select! {
        r = private.engine.restart() => r,
        _ = opts.cancel.cancelled() => {
            return R::Error(interrupted("while the engine restarted").message);
        }
    };
    match restarted {
        Ok(()) => {}
        Err(sim::SimError::RestartUnsupported { reason }) => return R::NotRun(reason),
        Err(e) => return R::EngineRestartFailed(e.to_string()),
    }
    let engine_restart = t1.elapsed();
    let endpoint = sess.engine.endpoint().clone();
    let run_id = sess.engine.run_id().to_string();
    match Engine::connect(endpoint, opts.timeouts, &run_id).await {
        Ok(e) => sess.engine = e.cancelled_by(opts.cancel.clone()),
        Err(e) => return R::Error(format!("reconnecting after the engine restart: {e}")),
    }
    let t2 = Instant::now();
    match await_listing(
        &sess.engine,
        id,
        before_lines,
        before.len(),
        RESTART_BACK_WITHIN,
    )
    .await
    {
        Listing::Seen(after, _) => R::Back {
            before,
            after,
            first_start,
            engine_restart,
            back_after: t2.elapsed(),
        },
        Listing::Timeout { state, log, waited } => {
            let new: String = log
                .lines()
                .skip(before_lines)
                .collect::<Vec<_>>()
                .join("\n");
            let after = crate::smi::parse_nvidia_smi_list(&new);
            if state.running && !after.is_empty() {
                R::Back {
                    before,
                    after,
                    first_start,
                    engine_restart,
                    back_after: waited,
                }
            } else {
                R::NotBack { waited, state, log }
            }
        }
        Listing::Engine(e) => R::Error(e),
    }
}

/// How waiting for a container's `nvidia-smi -L` listing ended.
enum Listing {
    /// Running, and its log after the first `skip` lines lists at least `want` GPUs.
    Seen(Vec<crate::smi::ListedGpu>, String),
    /// Not so within the limit: its last state and log.
    Timeout {
        state: engine::ContainerStateFacts,
        log: String,
        waited: Duration,
    },
    /// The engine never answered (the last error).
    Engine(String),
}

/// Polls the container's state and log until it runs and its log, past its first
/// `skip` lines (an earlier run's output), lists at least `want` GPUs; bounded by
/// `limit`. Engine errors are retried until then.
async fn await_listing(
    engine: &Engine,
    id: &str,
    skip: usize,
    want: usize,
    limit: Duration,
) -> Listing {
    let start = Instant::now();
    let mut last: Option<(engine::ContainerStateFacts, String)> = None;
    let mut last_error = String::new();
    loop {
        match engine.container_state(id).await {
            Ok(state) => {
                let log = engine.container_logs(id).await.unwrap_or_default();
                let new: String = log.lines().skip(skip).collect::<Vec<_>>().join("\n");
                let gpus = crate::smi::parse_nvidia_smi_list(&new);
                if state.running && gpus.len() >= want.max(1) {
                    return Listing::Seen(gpus, log);
                }
                last = Some((state, log));
            }
            // Interrupted: no point polling a cancelled engine until the limit.
            Err(e @ engine::EngineError::Interrupted { .. }) => {
                return Listing::Engine(e.to_string());
            }
            Err(e) => last_error = e.to_string(),
        }
        if start.elapsed() >= limit {
            return match last {
                Some((state, log)) => Listing::Timeout {
                    state,
                    log,
                    waited: start.elapsed(),
                },
                None => Listing::Engine(last_error),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
            let r = engine.run(&req).await.map_err(FactError::from);
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
fn redact(value: serde_json::Value, with: &[(String, String)]) -> serde_json::Value {
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

/// Finds `snapshots/` for scenarios in `scenario_dir`: the nearest ancestor that has one,
/// else `snapshots` beside the scenario directory.
pub fn default_snapshot_dir(scenario_dir: &Path) -> PathBuf {
    let start = std::fs::canonicalize(scenario_dir).unwrap_or_else(|_| scenario_dir.to_path_buf());
    for dir in start.ancestors() {
        let cand = dir.join("snapshots");
        if cand.is_dir() {
            return cand;
        }
    }
    start.parent().unwrap_or(&start).join("snapshots")
}

/// Counts of statuses, for callers that summarise.
pub fn count(results: &[CheckResult], status: Status) -> usize {
    results.iter().filter(|r| r.status == status).count()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn redaction_reaches_nested_strings() {
        let v = serde_json::json!({"a": ["/tmp/cdih-x/support/nvidia-smi"], "b": {"c": "/tmp/cdih-x"}, "n": 1});
        let r = redact(v, &[("/tmp/cdih-x".into(), "[SIM_DIR]".into())]);
        assert_eq!(r["a"][0], "[SIM_DIR]/support/nvidia-smi");
        assert_eq!(r["b"]["c"], "[SIM_DIR]");
        assert_eq!(r["n"], 1);
    }

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

    #[test]
    fn selection_filters_by_trial_name() {
        let mut o = RunOptions::new(BackendKind::Sim, PathBuf::from("snapshots"));
        assert!(o.selected("seed", "device_all"));
        o.selection = Some(BTreeSet::from(["seed::device_all".to_string()]));
        assert!(o.selected("seed", "device_all"));
        assert!(!o.selected("seed", "spec_valid"));
        assert!(!o.selected("multi-gpu", "device_all"));
    }
}
