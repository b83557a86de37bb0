//! `cargo test` runs every scenario in `scenarios/` as libtest-mimic trials named
//! `<scenario>::<check>`, so `cargo test -- seed::` runs only the seed scenario.
//!
//! Backend: `CDI_HARNESS_BACKEND=sim` (default: a private engine with simulated GPUs,
//! what CI runs) or `host` (the machine's own engine and GPUs). Only the selected trials
//! run; `--list` runs nothing. A check that cannot run is reported as ignored with its
//! reason, never as passed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use cdi_harness::outcome::{BackendKind, Status};
use cdi_harness::runner::{self, RunOptions};
use cdi_harness::scenario;
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
    let backend = match std::env::var("CDI_HARNESS_BACKEND").as_deref() {
        Ok("host") => BackendKind::Host,
        Ok("sim") | Err(_) => BackendKind::Sim,
        Ok(other) => {
            eprintln!("error: CDI_HARNESS_BACKEND={other:?}: use `sim` or `host`");
            std::process::exit(2);
        }
    };

    let names: Vec<String> = scenarios
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

    let results = if args.list || selected.is_empty() {
        BTreeMap::new()
    } else {
        let mut opts = RunOptions::new(backend, root.join("snapshots"));
        opts.selection = Some(selected);
        if let Ok(d) = std::env::var("CDI_HARNESS_DOCKERD") {
            opts.dockerd = Some(PathBuf::from(d));
        }
        opts.progress = Some(Arc::new(|r| {
            eprintln!("{}", cdi_harness::report::progress_line(r, false))
        }));
        eprintln!(
            "running the scenarios on the {} backend{}",
            backend.as_str(),
            if backend.simulated() {
                " (simulated GPUs)"
            } else {
                ""
            }
        );
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                std::process::exit(2);
            }
        };
        let report = rt.block_on(runner::run_scenarios(&scenarios, &opts));
        report
            .results
            .into_iter()
            .map(|r| (r.trial_name(), r))
            .collect()
    };

    let trials = names
        .into_iter()
        .map(|name| {
            let r = results.get(&name).cloned();
            let label = if backend.simulated() {
                "[simulated] "
            } else {
                ""
            };
            let trial = name.clone();
            Trial::ignorable_test(name, move || match r {
                None => Err(Failed::from(
                    "the check produced no result (the harness did not run it)",
                )),
                Some(r) => match r.status {
                    Status::Pass => Ok(Completion::Completed),
                    Status::Skip => Ok(Completion::ignored_with(format!("{label}{}", r.message))),
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
                },
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
