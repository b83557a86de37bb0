//! The checks that run containers: `nvidia-smi -L` with every GPU and with each GPU
//! alone, their isolation, the scenario's declared `docker run`s, and that no container
//! of the run is left behind.

use std::collections::{BTreeMap, BTreeSet};

use crate::check_id::CheckId;
use crate::engine::RunOutcome;
use crate::hints::{classify, fix_for};
use crate::outcome::{Cause, Verdict};
use crate::scenario::{Expectation, RunSpec, Scenario};
use crate::smi::{ListedGpu, parse_nvidia_smi_list};

use super::facts::{FactError, Facts};

/// A failure from an engine error text: its cause and fix follow from the text.
pub(super) fn engine_failure(message: String, error: &str) -> Verdict {
    let cause = classify(error);
    Verdict::fail(message, cause.and_then(fix_for).map(str::to_string)).because_of(cause)
}

fn run_of<'a>(facts: &'a Facts, check: &str) -> Result<&'a RunOutcome, Verdict> {
    match facts.runs.get(check) {
        None => Err(Verdict::skip(
            "the container was not run (the engine or the image was not available; see the other checks)",
        )),
        Some(Err(FactError { message, cause })) => {
            let fix = cause
                .and_then(fix_for)
                .map(str::to_string)
                .or_else(|| crate::hints::hint_for(message));
            Err(Verdict::fail(message.clone(), fix).because_of(*cause))
        }
        Some(Ok(o)) => Ok(o),
    }
}

/// A container that had to run nvidia-smi: its listing, or the failing verdict.
fn smi_listing(facts: &Facts, check: &str, device: &str) -> Result<Vec<ListedGpu>, Verdict> {
    match run_of(facts, check)? {
        RunOutcome::Refused { message } => Err(engine_failure(
            format!("`docker run --device {device} … nvidia-smi -L` was refused: {message}"),
            message,
        )),
        RunOutcome::Exited {
            exit_code,
            stdout,
            stderr,
        } if *exit_code != 0 => Err(Verdict::fail(
            format!(
                "`nvidia-smi -L` with --device {device} exited {exit_code}: {}",
                first_lines(&format!("{stdout}{stderr}"), 3)
            ),
            Some("the container got the device but nvidia-smi could not use it: check that the spec matches the loaded driver (sudo systemctl restart nvidia-container-toolkit-cdi-generator)".into()),
        )
        .because(Cause::WrongOutput)),
        RunOutcome::Exited { stdout, .. } => Ok(parse_nvidia_smi_list(stdout)),
    }
}

pub(super) fn first_lines(s: &str, n: usize) -> String {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" / ")
}

pub(super) fn device_all(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let gpus = match smi_listing(facts, "device_all", "nvidia.com/gpu=all") {
        Ok(g) => g,
        Err(v) => return v,
    };
    let uuids: BTreeSet<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    if gpus.len() as u32 != s.gpus.count || uuids.len() != gpus.len() {
        return Verdict::fail(
            format!(
                "nvidia-smi -L inside --device nvidia.com/gpu=all lists {} GPU(s) ({} distinct UUIDs); the machine has {}",
                gpus.len(),
                uuids.len(),
                s.gpus.count
            ),
            Some("the `all` device of the spec does not cover every GPU: regenerate the spec (sudo systemctl restart nvidia-container-toolkit-cdi-generator)".into()),
        )
        .because(Cause::SpecStale);
    }
    Verdict::pass(format!(
        "nvidia-smi exits 0 and lists {} GPU(s): {}",
        gpus.len(),
        gpus.iter()
            .map(|g| g.uuid.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

pub(super) fn device_n(_: &Scenario, facts: &Facts, id: &CheckId) -> Verdict {
    let CheckId::Device(n) = id else {
        return Verdict::fail(
            format!("{id} is not a single-GPU device check (a harness bug)"),
            None,
        )
        .because(Cause::HarnessBug);
    };
    let device = format!("nvidia.com/gpu={n}");
    let gpus = match smi_listing(facts, &id.name(), &device) {
        Ok(g) => g,
        Err(v) => return v,
    };
    match gpus.as_slice() {
        [] => Verdict::fail(
            format!("--device {device} ran nvidia-smi -L, which lists no GPU"),
            Some("the spec's per-GPU device injects no GPU: regenerate the spec (sudo systemctl restart nvidia-container-toolkit-cdi-generator)".into()),
        )
        .because(Cause::SpecStale),
        [one] if one.index == 0 => {
            Verdict::pass(format!("sees exactly one GPU, {} ({})", one.uuid, one.name))
        }
        [one] => Verdict::fail(
            format!(
                "sees one GPU but numbered {} (a single visible GPU is always GPU 0)",
                one.index
            ),
            None,
        )
        .because(Cause::WrongOutput),
        many => Verdict::fail(
            format!(
                "--device {device} sees {} GPUs ({}): the device is not isolated",
                many.len(),
                many.iter()
                    .map(|g| g.uuid.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some("the spec's per-GPU device injects more than its own /dev/nvidiaN: regenerate the spec".into()),
        )
        .because(Cause::SpecStale),
    }
}

pub(super) fn device_isolation(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let all = match smi_listing(facts, "device_all", "nvidia.com/gpu=all") {
        Ok(g) => g,
        Err(_) => {
            return Verdict::skip("device_all did not list GPUs, so isolation cannot be compared");
        }
    };
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for n in 0..s.gpus.count {
        match smi_listing(
            facts,
            &format!("device_{n}"),
            &format!("nvidia.com/gpu={n}"),
        ) {
            Ok(g) if g.len() == 1 => {
                if let Some(prev) = seen.insert(g[0].uuid.clone(), n) {
                    return Verdict::fail(
                        format!(
                            "nvidia.com/gpu={prev} and nvidia.com/gpu={n} both give GPU {}",
                            g[0].uuid
                        ),
                        Some("two device names map to one GPU: regenerate the spec".into()),
                    )
                    .because(Cause::SpecStale);
                }
            }
            _ => {
                return Verdict::skip(format!(
                    "device_{n} did not see exactly one GPU, so isolation cannot be compared"
                ));
            }
        }
    }
    if seen.is_empty() {
        return Verdict::skip("the scenario has no single-GPU device to compare");
    }
    let singles: BTreeSet<String> = seen.keys().cloned().collect();
    let all_set: BTreeSet<String> = all.iter().map(|g| g.uuid.clone()).collect();
    if singles != all_set {
        return Verdict::fail(
            format!(
                "the single-GPU devices give {{{}}} but `all` gives {{{}}}",
                super::compare::join(&singles),
                super::compare::join(&all_set)
            ),
            Some(
                "the spec's `all` device and its per-GPU devices disagree: regenerate the spec"
                    .into(),
            ),
        )
        .because(Cause::SpecStale);
    }
    Verdict::pass(format!(
        "each of the {} single-GPU devices sees a different GPU, and together exactly the GPUs of `all`",
        seen.len()
    ))
}

pub(super) fn no_leftovers(_: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    match &facts.leftovers {
        None => Verdict::skip("containers were not listed (the engine was not reached)"),
        Some(Err(e)) => Verdict::fail(format!("could not list this run's containers: {e}"), None)
            .because_of(e.cause),
        Some(Ok(ids)) if ids.is_empty() => Verdict::pass("no container of this run is left"),
        Some(Ok(ids)) => Verdict::fail(
            format!(
                "{} container(s) of this run were still present: {}",
                ids.len(),
                ids.join(", ")
            ),
            Some("the harness removed them afterwards; report this as a harness bug".into()),
        )
        .because(Cause::Leftovers),
    }
}

fn describe_run(run: &RunSpec) -> String {
    let mut parts = vec!["docker run".to_string()];
    for d in &run.devices {
        parts.push(format!("--device {d}"));
    }
    if let Some(g) = &run.gpus {
        parts.push(format!("--gpus {g}"));
    }
    if let Some(r) = &run.runtime {
        parts.push(format!("--runtime {r}"));
    }
    parts.push("IMAGE".into());
    parts.extend(run.command.iter().cloned());
    parts.join(" ")
}

/// The expected error of a run, for messages.
fn expected_error(run: &RunSpec) -> &str {
    run.error
        .as_ref()
        .or(run.error_contains.as_ref())
        .map(|s| s.as_str())
        .unwrap_or_default()
}

pub(super) fn declared_run(s: &Scenario, facts: &Facts, id: &CheckId) -> Verdict {
    let Some(run) = s.runs.iter().find(|r| r.name == id.name()) else {
        return Verdict::fail(
            format!("the scenario declares no run {id} (a harness bug)"),
            None,
        )
        .because(Cause::HarnessBug);
    };
    let outcome = match run_of(facts, &run.name) {
        Ok(o) => o,
        Err(v) => return v,
    };
    let cmd = describe_run(run);
    match (run.expect, outcome) {
        (
            Expectation::Success,
            RunOutcome::Exited {
                exit_code: 0,
                stdout,
                stderr,
            },
        ) => {
            let text = format!("{stdout}{stderr}");
            let missing: Vec<&String> = run
                .stdout_contains
                .iter()
                .filter(|m| !text.contains(m.as_str()))
                .collect();
            if missing.is_empty() {
                Verdict::pass(format!("`{cmd}` exits 0: {}", first_lines(stdout, 2)))
            } else {
                Verdict::fail(
                    format!(
                        "`{cmd}` exits 0 but its output lacks {missing:?}: {}",
                        first_lines(&text, 3)
                    ),
                    None,
                )
                .because(Cause::WrongOutput)
            }
        }
        (
            Expectation::Success,
            RunOutcome::Exited {
                exit_code,
                stdout,
                stderr,
            },
        ) => {
            let text = format!("{stdout}{stderr}");
            let v = engine_failure(
                format!("`{cmd}` exited {exit_code}: {}", first_lines(&text, 3)),
                &text,
            );
            if v.cause.is_none() {
                return v.because(Cause::WrongOutput);
            }
            v
        }
        (Expectation::Success, RunOutcome::Refused { message }) => {
            engine_failure(format!("`{cmd}` was refused: {message}"), message)
        }
        (Expectation::Failure, RunOutcome::Refused { message }) => {
            let exact_ok = run
                .error
                .as_ref()
                .is_none_or(|e| message.trim() == e.trim());
            let contains_ok = run
                .error_contains
                .as_ref()
                .is_none_or(|e| message.contains(e.as_str()));
            let cause = classify(message);
            let cause_ok = run.cause.is_none_or(|want| cause == Some(want));
            if exact_ok && contains_ok && cause_ok {
                let mut msg = format!("`{cmd}` fails as expected: {message}");
                if let Some(h) = cause.and_then(fix_for) {
                    msg.push_str(&format!(" ({h})"));
                }
                Verdict::pass(msg).because_of(cause)
            } else {
                let mut got = format!("got {message:?}");
                if let Some(want) = run.cause.filter(|_| !cause_ok) {
                    got.push_str(&format!(
                        " (cause {}, declared {want})",
                        cause.map(|c| c.as_str()).unwrap_or("unknown")
                    ));
                }
                Verdict::fail(
                    format!(
                        "`{cmd}` fails, but with a different error: {got}, expected {:?}",
                        expected_error(run)
                    ),
                    Some("the engine's behaviour changed; update the scenario's expected error if the new one is right".into()),
                )
                .because(Cause::WrongOutput)
            }
        }
        (
            Expectation::Failure,
            RunOutcome::Exited {
                exit_code,
                stdout,
                stderr,
            },
        ) if *exit_code != 0 => {
            let text = format!("{stdout}{stderr}");
            let cause = classify(&text);
            let cause_ok = run.cause.is_none_or(|want| cause == Some(want));
            match &run.error_contains {
                Some(e) if run.error.is_none() && text.contains(e.as_str()) && cause_ok => {
                    Verdict::pass(format!(
                        "`{cmd}` fails as expected (exit {exit_code}): {}",
                        first_lines(&text, 2)
                    ))
                    .because_of(cause)
                }
                _ => Verdict::fail(
                    format!(
                        "`{cmd}` started and exited {exit_code} instead of being refused with {:?}: {}",
                        expected_error(run),
                        first_lines(&text, 3)
                    ),
                    None,
                )
                .because(Cause::WrongOutput),
            }
        }
        (Expectation::Failure, RunOutcome::Exited { stdout, .. }) => {
            let mut msg = format!(
                "changed behaviour: `{cmd}` was expected to fail but now succeeds ({})",
                first_lines(stdout, 2)
            );
            if run.gpus.is_some() {
                msg.push_str(
                    "; moby maps --gpus to CDI through its `nvidia.cdi` device driver when `nvidia-cdi-hook` is on dockerd's PATH, so after an update --gpus can work: confirm that this is intended and change the scenario's expectation",
                );
            }
            if let Some(why) = &run.why {
                msg.push_str(&format!(" (the scenario expected failure because: {why})"));
            }
            Verdict::fail(
                msg,
                Some(
                    "if the new behaviour is right, set expect = \"success\" in the scenario"
                        .into(),
                ),
            )
            .because(Cause::WrongOutput)
        }
    }
}
