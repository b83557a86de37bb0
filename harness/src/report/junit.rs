//! JUnit XML for CI dashboards: a suite per scenario, a case per check.

#[allow(unused_imports)]
use super::*;

/// The marker put on suite (and report) names of simulated results, so that dashboards
/// that show only names still never mistake a simulation for real hardware.
pub(super) const SIMULATED_MARKER: &str = "[simulated]";

/// JUnit XML via the `quick-junit` crate, written atomically: CI systems (GitLab, Jenkins,
/// GitHub test reporters) ingest JUnit, so this is how results reach dashboards. See
/// [`junit_string`] for the layout.
pub fn write_junit(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    let xml = build_junit(report)
        .to_string()
        .map_err(|source| ReportError::EncodeJunit {
            path: Some(path.to_path_buf()),
            source,
        })?;
    write_atomically(path, |w| w.write_all(xml.as_bytes()))
}

/// The JUnit XML as a string, for callers that ship it somewhere other than a file.
///
/// Layout: one `<testsuite>` per scenario, one `<testcase name="<check>"
/// classname="<scenario>">` per check, so dashboards group checks the way scenario files
/// do. A failure carries its first message line in `message` and the full message plus
/// the fix in the element text; a skip carries its reason in `message`. Simulated results
/// get `[simulated]` appended to the suite and report names and a `simulated=true`
/// property on suite and test case.
pub fn junit_string(report: &RunReport) -> Result<String, ReportError> {
    build_junit(report)
        .to_string()
        .map_err(|source| ReportError::EncodeJunit { path: None, source })
}

pub(super) fn build_junit(report: &RunReport) -> quick_junit::Report {
    let run_simulated = report.simulated || report.results.iter().any(|r| r.simulated);
    let mut junit = quick_junit::Report::new(if run_simulated {
        format!("cdi-harness {SIMULATED_MARKER}")
    } else {
        "cdi-harness".to_owned()
    });
    junit.set_time(report.duration);

    for (scenario, results) in group_by_scenario(&report.results) {
        let simulated = report.simulated || results.iter().any(|r| r.simulated);
        let mut suite = TestSuite::new(if simulated {
            format!("{scenario} {SIMULATED_MARKER}")
        } else {
            scenario.to_owned()
        });
        suite.set_time(results.iter().map(|r| r.duration).sum());
        suite.add_property(("backend", report.backend.as_str()));
        suite.add_property(("simulated", bool_str(simulated)));
        suite.add_property(("started_at", report.started_at.as_str()));
        if let Some(engine) = report.engines.get(scenario) {
            let facts = [
                ("engine.version", &engine.version),
                ("engine.api_version", &engine.api_version),
                ("engine.endpoint", &engine.endpoint),
            ];
            for (name, value) in facts {
                if let Some(value) = value {
                    suite.add_property((name, value.as_str()));
                }
            }
            if let Some(hw) = &engine.hardware {
                if let Some(driver) = &hw.driver_version {
                    suite.add_property(("driver.version", driver.as_str()));
                }
                suite.add_property(("driver.simulated", bool_str(hw.simulated)));
            }
        }
        for result in results {
            suite.add_test_case(junit_case(result));
        }
        junit.add_test_suite(suite);
    }
    junit
}

pub(super) fn junit_case(result: &CheckResult) -> TestCase {
    let status = match result.status {
        Status::Pass | Status::Xfail => TestCaseStatus::success(),
        Status::Fail => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(non_empty(first_line(&result.message), "check failed"));
            status.set_type("check failed");
            let mut text = result.message.trim_end().to_owned();
            if let Some(fix) = &result.fix {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str("fix: ");
                text.push_str(fix.trim_end());
            }
            if !text.is_empty() {
                status.set_description(text);
            }
            status
        }
        Status::Skip | Status::New => {
            let mut status = TestCaseStatus::skipped();
            let what = if result.status == Status::New {
                "new snapshot recorded, awaiting review"
            } else {
                "skipped"
            };
            status.set_message(non_empty(first_line(&result.message), what));
            if result.message.trim_end().contains('\n') {
                status.set_description(result.message.trim_end());
            }
            status
        }
    };
    let mut case = TestCase::new(result.check.as_str(), status);
    case.set_classname(result.scenario.as_str());
    case.set_time(result.duration);
    case.add_property(("status", result.status.as_str()));
    case.add_property(("backend", result.backend.as_str()));
    case.add_property(("simulated", bool_str(result.simulated)));
    if let Some(evidence) = result.evidence {
        case.add_property(("evidence", evidence.as_str()));
    }
    if let Some(cause) = result.cause {
        case.add_property(("cause", cause.as_str()));
    }
    if result.status == Status::Xfail {
        // JUnit has no expected-failure state: the case passes, and says so loudly.
        case.set_system_out(format!("xfail (failed as declared): {}", result.message));
    }
    case
}

/// Groups results by scenario in order of first appearance (results arrive in scenario
/// order, but a stray interleaving must not split or reorder suites).
pub(super) fn group_by_scenario(results: &[CheckResult]) -> Vec<(&str, Vec<&CheckResult>)> {
    let mut groups: Vec<(&str, Vec<&CheckResult>)> = Vec::new();
    for result in results {
        match groups.iter_mut().find(|(s, _)| *s == result.scenario) {
            Some((_, members)) => members.push(result),
            None => groups.push((result.scenario.as_str(), vec![result])),
        }
    }
    groups
}

pub(super) fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}
