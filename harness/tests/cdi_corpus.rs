//! The CDI corpus through the harness's rules: every case re-expressed from the Go CDI
//! library's tests must get the verdict the library's test asserts (main branch), and
//! the verdict of each older release (v0.7.x in engine 26.1, v1.0.x in engine 28.5,
//! v1.1.0 in engine 29) where its source decides differently. The same cases go
//! through the real engines in `cdi_engine_parity`.

#[path = "support/cdi_corpus.rs"]
mod corpus;

use cdi_harness::cdi::{Library, Rules};

#[test]
fn every_corpus_case_gets_each_librarys_verdict() {
    let cases = corpus::load();
    assert!(
        cases.len() >= 100,
        "the corpus shrank to {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        for library in Library::ALL {
            let expected = case.expected(library);
            let (got, report) = case.judge(&Rules::for_library(library));
            if !corpus::matches(case, expected, got, &report) {
                failures.push(format!(
                    "{} on {library}: expected {expected:?}, got {got:?} ({} warnings)\n    errors: {:?}",
                    case.label(),
                    report.warnings.len(),
                    report.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} verdicts differ:\n{}",
        failures.len(),
        cases.len() * Library::ALL.len(),
        failures.join("\n")
    );
}

#[test]
fn every_case_names_its_source_and_engine_exclusions_say_why() {
    for case in corpus::load() {
        assert!(!case.test.is_empty(), "{}", case.label());
        assert!(
            case.engine || case.why.is_some(),
            "{}: engine = false needs a why",
            case.label()
        );
        let crashes = Library::ALL
            .iter()
            .any(|l| case.expected(*l) == corpus::Expected::Crash);
        assert!(
            !(crashes && case.engine),
            "{}: a case that crashes a library must not go to a real engine",
            case.label()
        );
    }
}

#[test]
fn notes_mark_the_engines_that_decide_differently() {
    // Every case whose expected verdict differs between engine 28.5 and the newest
    // library must carry a note when judged with 28.5's rules.
    for case in corpus::load() {
        let differs = case.expected(Library::V1_0) != case.expected(Library::Main);
        if !differs {
            continue;
        }
        let rules = Rules::for_engine("28.5").expect("in the table");
        let (_, report) = case.judge(&rules);
        assert!(
            !report.notes.is_empty(),
            "{}: 28.5 and main differ but no note says so",
            case.label()
        );
    }
}
