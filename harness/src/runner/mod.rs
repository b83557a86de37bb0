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
use crate::checks::{self, FactError, Facts, Verdict};
use crate::engine::{self, Endpoint, Engine, Timeouts};
use crate::outcome::{
    BackendKind, Cause, CheckResult, EngineFacts, REPORT_SCHEMA_VERSION, RunReport, Status,
};
use crate::scenario::Scenario;

mod gather;
mod host_env;
mod restart;
mod sim_env;

use gather::{gather, redact};
use host_env::{host_hardware, prepare_host};
pub use sim_env::{
    SPEC_DIR_PREFIX, SimEnvironment, sim_engine_config, start_sim, sweep_dead_sim_dirs,
};
use sim_env::{prepare_sim, sim_hardware};

/// The image the `sim` backend imports from the host's static busybox.
pub use crate::sim::SIM_IMAGE;

/// Called with each result as soon as it is known (progress on a terminal).
pub type Progress = Arc<dyn Fn(&CheckResult) + Send + Sync>;

/// Called with what the run did besides checking (leftovers of dead runs removed).
pub type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// Called when a scenario starts a new part of its work (a live view of long work).
pub type PhaseSink = Arc<dyn Fn(&str, Phase) + Send + Sync>;

/// What a scenario is busy with: the events of a live view (nextest's reporter events
/// are the model), emitted in this order; parts that do not apply are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Starting its private engine (`sim`) or connecting to the machine's (`host`).
    Preparing,
    /// Importing the busybox image into its private engine.
    ImportingImage,
    /// Reading the engine and the specs, running the check containers.
    Checking,
    /// The `restart_always` flow: a GPU container, the private engine restarted.
    RestartingEngine,
    /// Removing its containers, stopping its private engine.
    CleaningUp,
    /// Done: every result of the scenario has been reported.
    Finished,
}

impl Phase {
    /// A few words for the live view.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Preparing => "starting or connecting to its engine",
            Phase::ImportingImage => "importing the test image",
            Phase::Checking => "checking (docker info, specs, containers)",
            Phase::RestartingEngine => "restart_always: restarting the engine",
            Phase::CleaningUp => "removing its containers, stopping its engine",
            Phase::Finished => "done",
        }
    }
}

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
    /// Where phase events go (a live view); `None` drops them.
    pub phase: Option<PhaseSink>,
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
            phase: None,
        }
    }

    fn enter(&self, scenario: &str, phase: Phase) {
        if let Some(sink) = &self.phase {
            sink(scenario, phase);
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
    // Random (uuid v4): unique across machines and pid namespaces sharing an engine,
    // which pid and time were not; who owns a run is its own label (`OWNER_LABEL`).
    uuid::Uuid::new_v4().simple().to_string()
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
    // The longest scenarios start first, so that none of them is left to run alone at
    // the end while the others' slots stand idle (reports keep the scenarios' order).
    let mut order: Vec<usize> = (0..scenarios.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(expected_length(&scenarios[i], opts)));
    for i in order {
        let s = scenarios[i].clone();
        let opts = opts.clone();
        let run_id = run_id.clone();
        // Taken here, in that order, rather than inside the task: tasks are not
        // polled in the order they were spawned.
        let permit = limit.clone().acquire_owned().await;
        set.spawn(async move {
            let _permit = permit;
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

/// A rough rank of how long a scenario takes, for the order in which scenarios start:
/// an engine restart costs most (`restart_always` on a rootful private engine, where
/// the GPU container is not declared to fail: else the check skips without one), a
/// rootless engine's start next, then each GPU's containers.
fn expected_length(s: &Scenario, opts: &RunOptions) -> (u8, u32) {
    let sim = opts.backend == BackendKind::Sim;
    let restarts = sim
        && !s.facts.rootless_default
        && opts.selected(&s.name, &CheckId::RestartAlways.name())
        && s.check_ids().contains(&CheckId::RestartAlways)
        && s.expected_failure(&CheckId::DeviceAll.name()).is_none();
    let rank = if restarts {
        2
    } else if sim && s.facts.rootless_default {
        1
    } else {
        0
    };
    (rank, s.gpus.count)
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
        return (not_applicable(s, opts, &ids, why), None, None);
    }
    opts.enter(&s.name, Phase::Preparing);
    // Scenarios share the host's engine: each labels (and sweeps) only its own containers.
    let scope = format!("{run_id}.{}", s.name);
    let prep = tokio::select! {
        _ = opts.cancel.cancelled() => Err(interrupted("before the engine was ready")),
        p = prepare(s, opts, &scope) => p,
    };
    let mut run = ScenarioRun {
        facts: Facts {
            backend: Some(opts.backend),
            ..Facts::default()
        },
        timings: BTreeMap::new(),
        engine_facts: None,
        spec_value: None,
        blocked: None,
        died: None,
        prepared: prep.is_ok(),
    };
    match prep {
        Ok(mut sess) => {
            opts.enter(&s.name, Phase::Checking);
            run.check_on(s, opts, &ids, &mut sess).await;
        }
        Err(e) => run.blocked = Some(e),
    }
    let out = run.verdicts(s, opts, &ids);
    opts.enter(&s.name, Phase::Finished);
    (out, run.engine_facts, run.spec_value)
}

/// Every selected check of a scenario the plan skipped, skipped with the plan's reason.
fn not_applicable(s: &Scenario, opts: &RunOptions, ids: &[CheckId], why: &str) -> Vec<CheckResult> {
    ids.iter()
        .map(|id| {
            let mut r = result(
                s,
                &id.name(),
                opts.backend,
                Verdict::skip(why.to_string()),
                Duration::ZERO,
            );
            r.simulated |= opts.stand_in_gpus.is_some();
            if let Some(p) = &opts.progress {
                p(&r);
            }
            r
        })
        .collect()
}

/// What one scenario's run has gathered and met so far.
struct ScenarioRun {
    facts: Facts,
    timings: BTreeMap<String, Duration>,
    engine_facts: Option<EngineFacts>,
    spec_value: Option<serde_json::Value>,
    /// Why the engine-dependent checks could not run: setup failed or Ctrl-C.
    blocked: Option<FactError>,
    /// Set when the private engine died during the run without being asked to restart.
    died: Option<FactError>,
    /// Whether the engine was prepared at all.
    prepared: bool,
}

impl ScenarioRun {
    /// Gathers the facts on a prepared engine, then cleans up whatever happened: no
    /// container of the run survives, and a private engine is stopped.
    async fn check_on(
        &mut self,
        s: &Scenario,
        opts: &RunOptions,
        ids: &[CheckId],
        sess: &mut Session,
    ) {
        sess.engine = sess.engine.clone().cancelled_by(opts.cancel.clone());
        self.engine_facts = Some(EngineFacts {
            version: None,
            api_version: Some(sess.engine.api_version()),
            endpoint: Some(sess.engine.endpoint().uri.clone()),
            hardware: sim_hardware(s, opts.backend),
        });
        // Ctrl-C cancels the engine calls in flight, so the gathering ends at once and
        // what had finished keeps its verdict; only work that does not wind down in
        // time is abandoned, and then every check says it was interrupted.
        let work = gather(s, opts, sess, ids, &mut self.facts, &mut self.timings);
        let abandon = async {
            opts.cancel.cancelled().await;
            tokio::time::sleep(INTERRUPT_WIND_DOWN).await;
        };
        tokio::select! {
            _ = abandon => {
                self.blocked = Some(interrupted("before this check finished"));
            }
            _ = work => {}
        }
        self.spec_value = self
            .facts
            .registry
            .as_ref()
            .and_then(|reg| normalized_spec(s, reg, &sess.redactions));
        if let Some(ef) = self.engine_facts.as_mut() {
            if let Some(Ok(info)) = &self.facts.info {
                ef.version = Some(info.server_version.clone());
            }
            ef.hardware = ef
                .hardware
                .take()
                .or_else(|| host_hardware(self.facts.gpu.as_ref()));
        }
        opts.enter(&s.name, Phase::CleaningUp);
        self.sweep_containers(s, opts, ids, sess).await;
        if let Some(private) = sess.private.as_mut() {
            self.died = stop_private(private, opts.cancel.is_cancelled()).await;
        }
    }

    /// The safety net: whatever happened, no container of this run survives. After an
    /// interruption it runs on calls no interruption cancels, under its own short
    /// deadline (a hung engine must not hold the operator); an interrupted private
    /// engine is taken down whole instead (asking a possibly hung engine for its
    /// containers would only cost the deadline).
    async fn sweep_containers(
        &mut self,
        s: &Scenario,
        opts: &RunOptions,
        ids: &[CheckId],
        sess: &Session,
    ) {
        let cancelled = opts.cancel.is_cancelled();
        let wants_leftovers = self.blocked.is_none() && ids.contains(&CheckId::NoLeftovers);
        if cancelled && sess.private.is_some() {
            if wants_leftovers {
                self.facts.leftovers =
                    Some(Err(interrupted("before the leftovers were looked for")));
            }
            return;
        }
        let cleaner = sess.engine.uncancelled();
        let cleanup = async {
            let left = cleaner.labelled_containers().await;
            for id in left.iter().flatten() {
                let _ = cleaner.remove(id).await;
            }
            left
        };
        let deadline = if cancelled {
            INTERRUPT_CLEANUP
        } else {
            opts.timeouts.call * 3
        };
        match tokio::time::timeout(deadline, cleanup).await {
            Ok(left) if wants_leftovers => {
                self.facts.leftovers = Some(if cancelled {
                    Err(interrupted("before the leftovers were looked for"))
                } else {
                    left.map_err(FactError::from)
                });
            }
            Ok(_) => {}
            Err(_) if cancelled => opts.notify(&format!(
                "{}: the engine did not answer the cleanup within {} s: containers labelled {}={} may be left on it; the next run removes them",
                s.name,
                deadline.as_secs(),
                engine::OWNER_LABEL,
                engine::owner_value()
            )),
            Err(_) => {}
        }
    }

    /// The results: a `setup` failure when the engine could not be prepared (or died
    /// under the run), then each check's verdict, judged against the scenario's declared
    /// failures on `sim`; each is reported as soon as it is known.
    fn verdicts(&self, s: &Scenario, opts: &RunOptions, ids: &[CheckId]) -> Vec<CheckResult> {
        let report = |r: CheckResult| {
            if let Some(p) = &opts.progress {
                p(&r);
            }
            r
        };
        let mut out: Vec<CheckResult> = self
            .setup_failure(s, opts)
            .into_iter()
            .map(report)
            .collect();
        for id in ids {
            let t = Instant::now();
            let verdict = self.verdict(s, id);
            let name = id.name();
            let took = self
                .timings
                .get(name.as_str())
                .copied()
                .unwrap_or_else(|| t.elapsed());
            let mut r = result(s, &name, opts.backend, verdict, took);
            r.simulated |= opts.stand_in_gpus.is_some();
            if r.evidence.is_none() {
                r.evidence = Some(checks::entry(id).evidence_on(opts.backend));
            }
            // On `sim` the scenario's broken machine is what was built, so its declared
            // failures are judged here; on `host` the verdicts stand as the machine
            // gives them (`report judge` applies the same rules to a host report).
            if opts.backend == BackendKind::Sim
                && let Some(expected) = s.expected_failure(&name)
            {
                checks::expect::apply(expected, &mut r);
            }
            out.push(report(r));
        }
        out
    }

    /// When the engine could not be prepared at all (or died under the run), the `setup`
    /// result carries the whole reason and its cause, and the checks that could not run
    /// point at it, so the summary says it once and no check is blamed for it.
    fn setup_failure(&self, s: &Scenario, opts: &RunOptions) -> Option<CheckResult> {
        let why = match (&self.blocked, &self.died) {
            (Some(why), _) if !self.prepared && why.cause != Some(Cause::Interrupted) => why,
            (_, Some(why)) => why,
            _ => return None,
        };
        let fix = (why.cause == Some(Cause::EngineDied)).then(|| {
            "the private engine is the harness's own: run again; if it keeps dying, its log (above) says why".to_string()
        });
        Some(result(
            s,
            SETUP_CHECK,
            opts.backend,
            Verdict::fail(why.message.clone(), fix).because_of(why.cause),
            Duration::ZERO,
        ))
    }

    /// One check's verdict: evaluated on the gathered facts, unless the engine was not
    /// there for it (then it fails pointing at the reason).
    fn verdict(&self, s: &Scenario, id: &CheckId) -> Verdict {
        match &self.blocked {
            Some(why) if !self.prepared && *id != CheckId::MachineConfig => {
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
                    checks::evaluate(s, &self.facts, id)
                }));
                eval.unwrap_or_else(|_| {
                    Verdict::fail(
                        format!("the check `{id}` panicked (a harness bug: please report it)"),
                        None,
                    )
                    .because(Cause::HarnessBug)
                })
            }
        }
    }
}

/// Stops a private engine (with a short grace after an interruption); first, whether
/// it died during the run without being asked to restart (checked last, so that a
/// death at any point of the run is seen): that failure, with its log's last lines.
async fn stop_private(private: &mut SimEnvironment, cancelled: bool) -> Option<FactError> {
    let died = private.engine.died().await.map(|status| {
        FactError::new(
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
        )
    });
    if cancelled {
        private.stop_within(INTERRUPT_STOP_GRACE).await;
    } else {
        private.stop().await;
    }
    died
}

/// The reason (and cause) of checks that Ctrl-C stopped.
fn interrupted(when: &str) -> FactError {
    FactError::new(
        format!("interrupted (Ctrl-C, SIGTERM or SIGHUP) {when}"),
        Some(Cause::Interrupted),
    )
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
