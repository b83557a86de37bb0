//! `cargo test` runs every scenario in `scenarios/` as libtest-mimic trials named
//! `<scenario>::<check>`, so `cargo test -- seed::` runs only the seed scenario.
//!
//! Backend: chosen as `cdi-harness run --backend auto` chooses it
//! ([`cdi_harness::select::choose`]): on a machine whose NVIDIA driver reports GPUs and
//! whose default engine is reachable with CDI on, the machine itself (`host`); anywhere
//! else the private engine with simulated GPUs (`sim`, what CI runs). The choice and its
//! reason are printed before the first trial; `CDI_HARNESS_BACKEND=sim|host|auto`
//! overrides it. On a host, a scenario that models another machine (a broken one,
//! `applies-to` without `host`) or another GPU count is listed as ignored with the
//! reason, and `count = "auto"` checks the driver's GPUs; with `CDI_HARNESS_SIM_TOO=1`
//! the scenarios that do not apply to the host run on `sim` in the same run, labelled
//! simulated. `CDI_HARNESS_IMAGE` replaces the scenarios' image on a host (`local`
//! builds one from the host's `nvidia-smi`, for an offline machine). Only the selected
//! trials run; `--list` runs nothing. A check that cannot run is reported as ignored
//! with its reason, never as passed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use cdi_harness::outcome::{BackendKind, CheckResult, Status};
use cdi_harness::runner::{self, RunOptions};
use cdi_harness::scenario::{self, Place};
use cdi_harness::select;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenarios = match scenario::load_dir(&root.join("scenarios")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let env_backend = std::env::var(select::BACKEND_ENV).ok();
    let choice = match select::choose(env_backend.as_deref(), &cdi_harness::host::SystemHost) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let backend = choice.backend;
    let image = std::env::var("CDI_HARNESS_IMAGE")
        .ok()
        .filter(|i| !i.is_empty());
    if let Some(i) = &image {
        if let Err(reason) = scenario::validate_image(i) {
            eprintln!("error: CDI_HARNESS_IMAGE: {reason}");
            std::process::exit(2);
        }
    }
    let place = select::place_of(backend, false);
    let plan = select::plan_for(
        &scenarios,
        place,
        choice.gpus.as_ref(),
        choice.engine.as_ref(),
    );
    // On a host, the scenarios that model other machines may run on sim alongside.
    let sim_too = backend == BackendKind::Host
        && std::env::var("CDI_HARNESS_SIM_TOO").is_ok_and(|v| v == "1");
    let on_sim: BTreeSet<String> = if sim_too {
        plan.for_sim_instead().into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let sim_plan = select::plan(&scenarios, Place::Sim, None);

    // Trial names come from the scenarios as planned for this machine: `count = "auto"`
    // has the driver's GPUs, a scenario run on sim its sim count.
    let planned = |s: &scenario::Scenario| -> scenario::Scenario {
        if on_sim.contains(&s.name) {
            sim_plan
                .scenarios
                .iter()
                .find(|x| x.name == s.name)
                .cloned()
                .unwrap_or_else(|| s.clone())
        } else {
            s.clone()
        }
    };
    let trial_scenarios: Vec<scenario::Scenario> = plan.scenarios.iter().map(planned).collect();
    let names: Vec<String> = trial_scenarios
        .iter()
        .flat_map(|s| {
            s.check_names()
                .into_iter()
                .map(move |c| format!("{}::{c}", s.name))
        })
        .collect();
    // Which trials libtest would run, decided with its own filter rules.
    let selected: BTreeSet<String> = names
        .iter()
        .filter(|n| {
            let probe = Trial::test(n.as_str(), || Ok(()));
            !args.is_filtered_out(&probe) && !args.is_ignored(&probe)
        })
        .cloned()
        .collect();

    let results: BTreeMap<String, CheckResult> = if args.list || selected.is_empty() {
        BTreeMap::new()
    } else {
        eprintln!(
            "cdi-harness: running the scenarios on the {} backend{}: {}",
            backend.as_str(),
            if backend.simulated() {
                " (simulated GPUs: no real hardware is checked)"
            } else {
                ""
            },
            choice.why
        );
        for (name, why) in &plan.skipped {
            if on_sim.contains(name) {
                eprintln!("cdi-harness: {name} runs on sim (CDI_HARNESS_SIM_TOO=1): {why}");
            } else {
                eprintln!("cdi-harness: {name} is ignored: {why}");
            }
        }
        let rt = match cdi_harness::rt::runtime() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
        let progress: runner::Progress =
            Arc::new(|r| eprintln!("{}", cdi_harness::report::progress_line(r, false)));
        let mut opts = RunOptions::new(backend, root.join("snapshots"));
        opts.selection = Some(selected.clone());
        if let Ok(d) = std::env::var("CDI_HARNESS_DOCKERD") {
            opts.dockerd = Some(PathBuf::from(d));
        }
        opts.progress = Some(progress.clone());
        opts.image_override = image.clone();
        opts.not_applicable = plan
            .skipped
            .iter()
            .filter(|(n, _)| !on_sim.contains(*n))
            .map(|(n, w)| (n.clone(), w.clone()))
            .collect();
        let mine: Vec<scenario::Scenario> = plan
            .scenarios
            .iter()
            .filter(|s| !on_sim.contains(&s.name))
            .cloned()
            .collect();
        let mut report = rt.block_on(runner::run_scenarios(&mine, &opts));
        if !on_sim.is_empty() {
            let mut sim_opts = RunOptions::new(BackendKind::Sim, root.join("snapshots"));
            sim_opts.selection = Some(selected);
            sim_opts.dockerd = opts.dockerd.clone();
            sim_opts.progress = Some(progress);
            let theirs: Vec<scenario::Scenario> = trial_scenarios
                .iter()
                .filter(|s| on_sim.contains(&s.name))
                .cloned()
                .collect();
            let sim_report = rt.block_on(runner::run_scenarios(&theirs, &sim_opts));
            report.results.extend(sim_report.results);
        }
        report
            .results
            .into_iter()
            .map(|r| (r.trial_name(), r))
            .collect()
    };

    // Results the scenarios' check lists do not name (a scenario's `setup` when its
    // engine could not be prepared or died, `harness` when the runner crashed) get a
    // trial of their own, so what the other checks point at is in the summary too.
    let mut names = names;
    let extra: Vec<String> = results
        .keys()
        .filter(|k| !names.contains(k))
        .cloned()
        .collect();
    names.extend(extra);
    let trials = names
        .into_iter()
        .map(|name| {
            let r = results.get(&name).cloned();
            let trial = name.clone();
            Trial::ignorable_test(name, move || match r {
                None => Err(Failed::from(
                    "the check produced no result (the harness did not run it)",
                )),
                Some(r) => {
                    let label = if r.simulated { "[simulated] " } else { "" };
                    match r.status {
                        Status::Pass => Ok(Completion::Completed),
                        Status::Skip => {
                            Ok(Completion::ignored_with(format!("{label}{}", r.message)))
                        }
                        // libtest has no expected-failure state: the trial passes and says
                        // so in its output, so an xfail is never mistaken for a plain pass.
                        Status::Xfail => {
                            eprintln!("xfail {trial}: {label}failed as declared: {}", r.message);
                            Ok(Completion::Completed)
                        }
                        Status::New => Ok(Completion::ignored_with(format!(
                            "{label}new snapshot, nothing compared: {}",
                            r.message
                        ))),
                        Status::Fail => {
                            let mut msg = format!("{label}{}", r.message);
                            if let Some(f) = &r.fix {
                                msg.push_str(&format!("\nfix: {f}"));
                            }
                            Err(Failed::from(msg))
                        }
                    }
                }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
