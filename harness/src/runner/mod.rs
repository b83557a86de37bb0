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
