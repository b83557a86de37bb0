//! `restart_always` (moby#49989 / nixpkgs#353059): a `--restart always` GPU container
//! must come back with its GPUs after the engine restarts.

use std::collections::BTreeSet;

use crate::check_id::CheckId;
use crate::hints::{RESTART_FIX, classify, fix_for};
use crate::outcome::{Cause, Verdict};
use crate::scenario::Scenario;
use crate::smi::ListedGpu;

use super::containers::first_lines;
use super::facts::{Facts, RestartOutcome};

/// Why `restart_always` is skipped on `host`.
pub const RESTART_HOST_REASON: &str = "restarting the machine's own Docker engine is not something a check may do; run the sim backend, or restart docker yourself and see that such containers come back";

fn last_lines_of(s: &str, n: usize) -> String {
    let all: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

fn uuids(l: &[ListedGpu]) -> BTreeSet<String> {
    l.iter().map(|g| g.uuid.clone()).collect()
}

fn uuid_list(l: &[ListedGpu]) -> String {
    l.iter()
        .map(|g| g.uuid.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn restart_always(_: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    match &facts.restart_always {
        None => Verdict::skip("the engine restart was not attempted in this run"),
        Some(RestartOutcome::NotRun(why)) => Verdict::skip(why.clone()),
        Some(RestartOutcome::FirstStartFailed(why)) => Verdict::skip(format!(
            "the `--restart always --device nvidia.com/gpu=all` container did not run before the engine restart, so whether it comes back cannot be told (device_all says why): {why}"
        )),
        Some(RestartOutcome::EngineRestartFailed(why)) => {
            Verdict::fail(format!("the engine could not be restarted: {why}"), None)
                .because(Cause::EngineDied)
        }
        Some(RestartOutcome::Error(e)) => {
            // The runner's interruption texts (its own, and a cancelled engine call's).
            let cause = classify(e).or_else(|| {
                (e.starts_with("interrupted (")
                    || e.ends_with("was cancelled: the run was interrupted"))
                .then_some(Cause::Interrupted)
            });
            Verdict::fail(
                format!("the restart check could not finish: {e}"),
                cause.and_then(fix_for).map(str::to_string),
            )
            .because_of(cause)
        }
        Some(RestartOutcome::Back {
            before,
            after,
            first_start,
            engine_restart,
            back_after,
        }) => {
            if uuids(before) == uuids(after) && !after.is_empty() {
                Verdict::pass(format!(
                    "the `--restart always` container with --device nvidia.com/gpu=all ran again {back_after:.1?} after the engine restart ({engine_restart:.1?}) and lists the same {} GPU(s) (first start {first_start:.1?})",
                    after.len()
                ))
            } else {
                Verdict::fail(
                    format!(
                        "the `--restart always` container came back after the engine restart but lists {} GPU(s) ({}) instead of {} ({})",
                        after.len(),
                        uuid_list(after),
                        before.len(),
                        uuid_list(before)
                    ),
                    Some(RESTART_FIX.into()),
                )
                .because(Cause::RestartRegression)
            }
        }
        Some(RestartOutcome::NotBack { waited, state, log }) => {
            let mut message = format!(
                "the `--restart always` container with --device nvidia.com/gpu=all was not running again with its GPUs {waited:.1?} after the engine restarted: state {}{}, exit code {}, restarts {}",
                if state.status.is_empty() {
                    "unknown"
                } else {
                    state.status.as_str()
                },
                if state.running {
                    " (but no new nvidia-smi -L listing)"
                } else {
                    ""
                },
                state.exit_code,
                state.restart_count
            );
            if !state.error.is_empty() {
                message.push_str(&format!(", error: {}", state.error));
            }
            let tail = first_lines(&last_lines_of(log, 3), 3);
            if !tail.is_empty() {
                message.push_str(&format!("; its log ends: {tail}"));
            }
            // The container ran with its GPUs before the restart, so CDI was on then: a
            // CDI error now means the engine restored the container before its CDI
            // driver or cache was ready. Measured: engine 26.1 fails so with
            // `could not select device driver "cdi"`, engine 28.5 brings it back.
            let cause = classify(&state.error);
            let after_restart_cdi_error =
                matches!(cause, Some(Cause::DeviceUnresolvable | Cause::CdiDisabled));
            let fix = match cause.and_then(fix_for) {
                Some(_) if after_restart_cdi_error => format!(
                    "the container had its GPUs before the engine restarted, and the restarted engine could not give them back: this is {RESTART_FIX}"
                ),
                Some(h) => {
                    format!("{h}; if it only happens after an engine restart: {RESTART_FIX}")
                }
                None => RESTART_FIX.to_string(),
            };
            Verdict::fail(message, Some(fix)).because(Cause::RestartRegression)
        }
    }
}
