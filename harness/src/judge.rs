//! `cdi-harness report judge REPORT.json --scenario FILE`: judges a report (a host run,
//! a NixOS VM test's) against a scenario's declared failures with the same rules the
//! `sim` backend applies while running ([`crate::checks::expect`]), so a broken-machine
//! scenario means the same thing wherever it ran.

use std::path::{Path, PathBuf};

use crate::checks::expect::{self, Problem};
use crate::outcome::Status;

/// What `report judge` takes.
#[derive(clap::Args, Debug)]
pub struct JudgeArgs {
    /// The JSON report (`cdi-harness run --json`).
    pub report: PathBuf,
    /// The scenario file whose expectations apply.
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// CI mode (also when CI is set): a new snapshot, which compared nothing, is a problem.
    #[arg(long)]
    pub ci: bool,
}

/// The judgement of one scenario's results.
#[derive(Debug)]
pub struct Judgement {
    /// Results judged: declared failures as `xfail` or `fail`.
    pub results: Vec<crate::outcome::CheckResult>,
    /// Everything wrong, one entry per check.
    pub problems: Vec<Problem>,
}

/// Judges `report` against `scenario`; `Err` when either cannot be read.
pub fn judge_files(report: &Path, scenario: &Path, ci: bool) -> Result<Judgement, String> {
    let report = crate::report::read_json(report).map_err(|e| e.to_string())?;
    let scenario = crate::scenario::load(scenario).map_err(|e| e.to_string())?;
    if report.interrupted {
        return Err(format!(
            "the report was cut short (interrupted: true): its missing checks would be judged as not run; run `cdi-harness run` again to the end ({} results present)",
            report.results.len()
        ));
    }
    let (results, problems) = expect::judge(&scenario, &report.results, ci);
    if results.is_empty() {
        return Err(format!(
            "the report has no results for scenario {:?}: was it run with this scenario?",
            scenario.name
        ));
    }
    Ok(Judgement { results, problems })
}

/// Runs `report judge`; returns the exit code: 0 the verdicts are the scenario's, 1 a
/// problem (one line each on stdout), 2 unreadable input.
pub fn judge_command(args: &JudgeArgs) -> u8 {
    let ci = args.ci || crate::snapshot::ci_from_env();
    let j = match judge_files(&args.report, &args.scenario, ci) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let count = |s: Status| j.results.iter().filter(|r| r.status == s).count();
    for p in &j.problems {
        println!("{}: {}", p.trial, p.message);
    }
    for r in j.results.iter().filter(|r| r.status == Status::New) {
        if !ci {
            println!(
                "note: {}: a new snapshot was recorded, nothing compared: {}",
                r.trial_name(),
                r.message
            );
        }
    }
    println!(
        "{}: {} checks: {} passed, {} failed as declared (xfail), {} skipped, {} new; {} problem(s)",
        if j.problems.is_empty() {
            "ok"
        } else {
            "FAILED"
        },
        j.results.len(),
        count(Status::Pass),
        count(Status::Xfail),
        count(Status::Skip),
        count(Status::New),
        j.problems.len()
    );
    u8::from(!j.problems.is_empty())
}
