//! The one judge of a broken-machine scenario's declared failures (`[[expect.fail]]`):
//! the runner applies it to each result on `sim`, and `cdi-harness report judge`
//! applies it to a report from any backend (a host run, a NixOS VM test), so there is
//! exactly one place that decides whether a failure is the declared one.
//!
//! A declared failure counts only when the check failed, for the declared cause (when
//! one is declared), with each declared text in its message (`message-contains`) and
//! its fix (`fix-contains`). A declared check that passed, was skipped, recorded a new
//! snapshot, or has no result is a failure that says why: a diagnosis that was never
//! made proves nothing.

use crate::outcome::{CheckResult, Status};
use crate::scenario::{ExpectedFailure, Scenario};

/// Applies `expected` to `result`: `Xfail` when it failed as declared, else `Fail`
/// with why; the message keeps the check's own text after the judgement.
pub fn apply(expected: &ExpectedFailure, result: &mut CheckResult) {
    let check = &result.check;
    match result.status {
        Status::Xfail => {}
        Status::Fail => {
            let mut wrong = Vec::new();
            if let Some(want) = expected.cause {
                match result.cause {
                    Some(got) if got == want => {}
                    Some(got) => wrong.push(format!("its cause is {got}, not the declared {want}")),
                    None => wrong.push(format!(
                        "its cause is not known, so it cannot be the declared {want}"
                    )),
                }
            }
            let lacks = |texts: &[String], hay: &str| -> Vec<String> {
                texts
                    .iter()
                    .filter(|t| !hay.contains(t.as_str()))
                    .map(|t| format!("{t:?}"))
                    .collect()
            };
            let missing = lacks(&expected.message_contains, &result.message);
            if !missing.is_empty() {
                wrong.push(format!("its message lacks {}", missing.join(", ")));
            }
            let fix = result.fix.as_deref().unwrap_or("");
            let missing = lacks(&expected.fix_contains, fix);
            if !missing.is_empty() {
                wrong.push(format!("its fix lacks {}", missing.join(", ")));
            }
            if wrong.is_empty() {
                result.status = Status::Xfail;
            } else {
                result.message = format!(
                    "`{check}` failed, but not as the scenario declares: {}. It said: {}",
                    wrong.join("; "),
                    result.message
                );
            }
        }
        Status::Pass => {
            result.status = Status::Fail;
            result.message = format!(
                "this scenario models a broken machine and declares that `{check}` must fail, but it passed: {}",
                result.message
            );
            result.fix = Some(
                "the harness no longer detects this breakage; see the scenario's [[expect.fail]]"
                    .into(),
            );
            result.cause = None;
        }
        Status::Skip | Status::New => {
            let what = if result.status == Status::Skip {
                "was skipped"
            } else {
                "only recorded a new snapshot"
            };
            result.status = Status::Fail;
            result.message = format!(
                "this scenario declares that `{check}` must fail, but it {what}, so the diagnosis was never made: {}",
                result.message
            );
            result.fix = Some("make the check run on this backend (see why above), or remove the declaration if the check cannot run here".into());
            result.cause = None;
        }
    }
}

/// One thing wrong with a report's verdicts, as `report judge` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `scenario::check`.
    pub trial: String,
    /// What is wrong.
    pub message: String,
}

/// Judges the results of `scenario` in a report as the `sim` backend judges them while
/// running: a declared failure must be the declared one, every other check must not
/// fail, and every declared check must have a result. `ci`: a new snapshot is a
/// problem too (as it is in CI). Returns the judged results and the problems.
pub fn judge(
    scenario: &Scenario,
    results: &[CheckResult],
    ci: bool,
) -> (Vec<CheckResult>, Vec<Problem>) {
    let mut judged = Vec::new();
    let mut problems = Vec::new();
    for r in results.iter().filter(|r| r.scenario == scenario.name) {
        let mut r = r.clone();
        if let Some(expected) = scenario.expected_failure(&r.check) {
            apply(expected, &mut r);
        }
        let bad = match r.status {
            Status::Fail => true,
            Status::New => ci,
            _ => false,
        };
        if bad {
            let mut message = r.message.clone();
            if let Some(fix) = &r.fix {
                message.push_str(&format!(" (fix: {fix})"));
            }
            if r.status == Status::New {
                message = format!("a new snapshot in CI, nothing compared: {message}");
            }
            problems.push(Problem {
                trial: r.trial_name(),
                message,
            });
        }
        judged.push(r);
    }
    for f in &scenario.expected_failures {
        if !judged.iter().any(|r| r.check == f.check) {
            problems.push(Problem {
                trial: format!("{}::{}", scenario.name, f.check),
                message: format!(
                    "the scenario declares that `{}` must fail, but the report has no result for it: it was not run",
                    f.check
                ),
            });
        }
    }
    (judged, problems)
}
