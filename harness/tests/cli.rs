//! The binary as a user meets it: exit codes (0 pass, 1 fail, 2 usage or config error)
//! and messages that name the file and the field. None of these need an engine.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{bin, text};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cdi")
        .join(name)
}

#[test]
fn validate_accepts_a_real_spec_and_rejects_broken_ones_naming_the_field() {
    let ok = bin()
        .args(["cdi", "validate"])
        .arg(fixture("nvidia-1gpu.json"))
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let t = text(&ok);
    assert!(
        t.starts_with("rules: engine 28.5's CDI library v1.0.x (no engine answered"),
        "{t}"
    );
    assert!(t.contains("nvidia-1gpu.json: loads (3 devices"), "{t}");

    let bad = bin()
        .args(["cdi", "validate", "--engine", "28.5"])
        .arg(fixture("nvidia.yaml"))
        .arg(fixture("broken-invalid.json"))
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(1));
    let t = text(&bad);
    assert!(
        t.contains("broken-invalid.json: containerEdits.hooks[0].hookName"),
        "{t}"
    );
    assert!(
        t.contains("devices[2].name: duplicate device name \"0\""),
        "{t}"
    );
    // A SPEC.md violation in the same file is a warning, not a refusal.
    assert!(
        t.contains("broken-invalid.json: warning: containerEdits.mounts[0].containerPath"),
        "{t}"
    );
    assert!(
        t.contains("broken-invalid.json: refused by engine 28.5's CDI library v1.0.x"),
        "{t}"
    );
    // The valid file in the same call is still reported as loading.
    assert!(t.contains("nvidia.yaml: loads"), "{t}");

    let unknown = bin()
        .args(["cdi", "validate", "--engine", "28.5"])
        .arg(fixture("broken-unknown-field.yaml"))
        .output()
        .expect("run");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains(
            "broken-unknown-field.yaml: devices[0].containerEdit: unknown field \"containerEdit\""
        ),
        "{}",
        text(&unknown)
    );
}

#[test]
fn validate_has_three_outcomes_with_their_own_exit_codes_and_engine_notes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let warn = dir.path().join("warn.yaml");
    std::fs::write(
        &warn,
        "cdiVersion: 0.5.0\nkind: vendor.com/gpu\ndevices: [{name: x, containerEdits: {hooks: [{hookName: poststop, path: bin/true}]}}]\n",
    )
    .expect("write");
    let run = |args: &[&str], file: &Path| {
        bin()
            .args(["cdi", "validate"])
            .args(args)
            .arg(file)
            .env_remove("DOCKER_HOST")
            .output()
            .expect("run")
    };
    let loose = run(&[], &warn);
    assert_eq!(loose.status.code(), Some(0), "{}", text(&loose));
    assert!(
        text(&loose).contains("warn.yaml: warning: devices[0].containerEdits.hooks[0].path"),
        "{}",
        text(&loose)
    );
    assert!(text(&loose).contains("warn.yaml: loads with warnings"));
    assert_eq!(run(&["--strict"], &warn).status.code(), Some(1));

    let missing = run(&[], &dir.path().join("absent.json"));
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("absent.json: unreadable"));

    let v11 = dir.path().join("v11.json");
    std::fs::write(
        &v11,
        r#"{"cdiVersion":"1.1.0","kind":"vendor.com/gpu","devices":[{"name":"x","containerEdits":{"env":["A=1"]}}]}"#,
    )
    .expect("write");
    let on_28 = run(&["--engine", "28.5"], &v11);
    assert_eq!(on_28.status.code(), Some(1), "{}", text(&on_28));
    let on_29 = run(&["--engine", "29.0"], &v11);
    assert_eq!(on_29.status.code(), Some(0), "{}", text(&on_29));
    assert!(
        text(&on_29)
            .contains("v11.json: note: cdiVersion: refused by engine 28.5's CDI library v1.0.x"),
        "{}",
        text(&on_29)
    );
    let no_cdi = run(&["--engine", "20.10"], &v11);
    assert_eq!(no_cdi.status.code(), Some(2));
    assert!(text(&no_cdi).contains("engine 20.10 has no CDI support"));
}

#[test]
fn normalize_prints_redacted_json() {
    let out = bin()
        .args(["cdi", "normalize"])
        .arg(fixture("nvidia-1gpu.json"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("normalize prints JSON");
    assert_eq!(v["kind"], "nvidia.com/gpu");
    let s = v.to_string();
    assert!(
        !s.contains("4cf8db2d"),
        "a GPU UUID survived normalization: {s}"
    );
    assert!(
        s.contains("[HASH]"),
        "nix store hashes are not redacted: {s}"
    );
}

#[test]
fn a_bad_scenario_is_a_config_error_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.toml");
    std::fs::write(
        &file,
        "description = \"x\"\n[machine.hardware.nvidia-container-toolkit]\nenable = true\n[gpus]\ncount = 1\n[[run]]\nname = \"r\"\ndevices = [\"nvidia.com/gpu=a b\"]\nexpect = \"success\"\n",
    )
    .expect("write");
    let out = bin()
        .args(["run", "--backend", "sim", "--scenario"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains("typo.toml"), "{t}");
    assert!(t.contains("run[0].devices[0]"), "{t}");
}

#[test]
fn usage_errors_exit_2_and_list_needs_no_engine() {
    let out = bin()
        .args(["run", "--backend", "gpu"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let out = bin()
        .arg("list")
        .arg("--scenario")
        .arg(&scenarios)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    for trial in [
        "seed::device_all",
        "multi-gpu::device_3",
        "seed::gpus_flag",
        "spec-missing::spec_present",
    ] {
        assert!(t.lines().any(|l| l == trial), "{trial} not listed:\n{t}");
    }
}

/// Outputs recorded on a real H100 (harness/tests/fixtures/h100/README.md).
mod recorded_on_h100 {
    use super::*;

    fn h100(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/h100")
            .join(name)
    }

    #[test]
    fn the_real_spec_validates() {
        let out = bin()
            .args(["cdi", "validate", "--engine", "28.5"])
            .arg(h100("nvidia-container-toolkit.json"))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains("nvidia.com/gpu=0, nvidia.com/gpu=all"),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn real_nvidia_smi_list_parses_to_the_gpu() {
        let text = std::fs::read_to_string(h100("nvidia-smi-L.txt")).expect("fixture");
        let gpus = cdi_harness::smi::parse_nvidia_smi_list(&text);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].uuid, "GPU-7755d06d-7211-c7cb-1e76-f5852eb82b19");
        // The plain table lists no UUIDs: nothing in it may be mistaken for a GPU line.
        let table = std::fs::read_to_string(h100("nvidia-smi.txt")).expect("fixture");
        assert!(table.contains("NVIDIA-SMI 580.159.04"));
        assert!(cdi_harness::smi::parse_nvidia_smi_list(&table).is_empty());
    }

    #[test]
    fn the_recorded_report_reads_back_and_passed_on_the_host() {
        let report = cdi_harness::report::read_json(&h100("report.json")).expect("report reads");
        assert_eq!(report.backend, cdi_harness::outcome::BackendKind::Host);
        assert!(!report.simulated);
        assert!(report.succeeded());
        assert_eq!(report.counts(), (16, 0, 0));
    }
}

/// NVML data recorded on a real H100 (harness/tests/fixtures/h100/README.md, `nvml/`).
mod recorded_nvml_on_h100 {
    use std::collections::BTreeMap;

    use cdi_harness::engine::RunOutcome;
    use cdi_harness::gpu::{self, Inventory};
    use cdi_harness::outcome::Status;

    use super::*;

    fn nvml(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/h100/nvml")
            .join(name)
    }

    fn inventory() -> Inventory {
        serde_json::from_str(&std::fs::read_to_string(nvml("inventory.json")).expect("fixture"))
            .expect("inventory parses")
    }

    #[test]
    fn the_real_inventory_matches_the_real_spec() {
        let inv = inventory();
        assert!(!inv.simulated);
        assert_eq!(inv.gpus.len(), 1);
        assert_eq!(inv.gpus[0].minor, Some(0));
        let spec = cdi_harness::cdi::load_dirs(&[nvml("")]);
        let loaded = spec.spec_named("nvidia-container-toolkit.json");
        let v = gpu::check_spec_against(&inv, loaded);
        assert_eq!(v.status, Status::Pass, "{}", v.message);
    }

    #[test]
    fn the_real_listing_inside_containers_matches_nvml() {
        let inv = inventory();
        let listing = std::fs::read_to_string(nvml("nvidia-smi-L.txt")).expect("fixture");
        let ran = || -> Result<RunOutcome, String> {
            Ok(RunOutcome::Exited {
                exit_code: 0,
                stdout: listing.clone(),
                stderr: String::new(),
            })
        };
        let runs = BTreeMap::from([
            ("device_all".to_string(), ran()),
            ("device_0".to_string(), ran()),
        ]);
        let v = gpu::check_containers(&inv, &runs);
        assert_eq!(v.status, Status::Pass, "{}", v.message);
        // Another machine's GPU in the container is caught.
        let other = std::fs::read_to_string(h100_first("nvidia-smi-L.txt")).expect("fixture");
        let wrong: BTreeMap<String, Result<RunOutcome, String>> = BTreeMap::from([(
            "device_all".to_string(),
            Ok(RunOutcome::Exited {
                exit_code: 0,
                stdout: other,
                stderr: String::new(),
            }),
        )]);
        assert_eq!(gpu::check_containers(&inv, &wrong).status, Status::Fail);
    }

    fn h100_first(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/h100")
            .join(name)
    }

    #[test]
    fn the_recorded_nvml_run_passed_every_check() {
        let report = cdi_harness::report::read_json(&nvml("report.json")).expect("report reads");
        assert!(report.succeeded());
        for check in ["gpu_spec", "gpu_containers", "spec_fresh"] {
            let r = report
                .results
                .iter()
                .find(|r| r.check == check)
                .expect(check);
            assert_eq!(r.status, Status::Pass, "{r:?}");
        }
    }
}

mod judge {
    use super::*;
    use cdi_harness::outcome::{
        BackendKind, Cause, CheckResult, REPORT_SCHEMA_VERSION, RunReport, Status,
    };

    fn scenarios() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
    }

    fn result(check: &str, status: Status, message: &str, cause: Option<Cause>) -> CheckResult {
        CheckResult {
            scenario: "spec-missing".into(),
            check: check.into(),
            status,
            message: message.into(),
            fix: Some("sudo systemctl restart nvidia-container-toolkit-cdi-generator && sudo systemctl restart docker".into()),
            cause,
            evidence: None,
            duration: std::time::Duration::ZERO,
            backend: BackendKind::Host,
            simulated: false,
        }
    }

    /// A host run of the spec-missing machine: every declared check failed as the
    /// harness fails it there (the host backend applies no expectation itself).
    fn host_report() -> RunReport {
        let scenario =
            cdi_harness::scenario::load(&scenarios().join("spec-missing.toml")).expect("scenario");
        let mut results = Vec::new();
        for f in &scenario.expected_failures {
            let message = format!(
                "{} (there is no nvidia-container-toolkit.json in the spec directories)",
                f.message_contains.join(" ")
            );
            results.push(result(&f.check, Status::Fail, &message, f.cause));
        }
        results.push(result(
            "no_leftovers",
            Status::Pass,
            "no container of this run is left",
            None,
        ));
        RunReport {
            schema_version: REPORT_SCHEMA_VERSION,
            backend: BackendKind::Host,
            simulated: false,
            started_at: "2026-11-30T00:00:00Z".into(),
            duration: std::time::Duration::ZERO,
            engines: Default::default(),
            results,
            flake_inputs: None,
            specs: Default::default(),
            interrupted: false,
        }
    }

    fn judge(report: &RunReport) -> Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("report.json");
        cdi_harness::report::write_json(report, &path).expect("write");
        bin()
            .args(["report", "judge"])
            .arg(&path)
            .arg("--scenario")
            .arg(scenarios().join("spec-missing.toml"))
            .env_remove("CI")
            .output()
            .expect("run")
    }

    #[test]
    fn declared_failures_of_a_host_run_are_xfail() {
        let out = judge(&host_report());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains("failed as declared (xfail)"),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn a_failure_for_another_cause_a_skip_and_a_missing_check_are_problems() {
        let mut r = host_report();
        r.results[0].cause = Some(Cause::PermissionDenied);
        r.results[1].status = Status::Skip;
        let gone = r.results.remove(2).check;
        r.results
            .push(result("device_all_extra", Status::Fail, "unexpected", None));
        let out = judge(&r);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains("not the declared spec-missing"), "{t}");
        assert!(t.contains("was skipped"), "{t}");
        assert!(
            t.contains(&format!("spec-missing::{gone}: the scenario declares")),
            "{t}"
        );
        assert!(
            t.contains("spec-missing::device_all_extra: unexpected"),
            "{t}"
        );
    }

    #[test]
    fn an_interrupted_report_is_not_judged() {
        let mut r = host_report();
        r.interrupted = true;
        let out = judge(&r);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("cut short"), "{}", text(&out));
    }
}

#[test]
fn scenario_init_from_host_writes_a_loadable_scenario_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("this-box.toml");
    let out = bin()
        .args(["scenario", "init", "--from-host"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(&path).expect("written");
    assert!(written.contains("count = \"auto\""), "{written}");
    let s = cdi_harness::scenario::load(&path).expect("the written scenario loads");
    assert_eq!(s.name, "this-box");
    // Never overwritten.
    let again = bin()
        .args(["scenario", "init", "--from-host"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains("never overwritten"),
        "{}",
        text(&again)
    );
    // A file name that cannot name a scenario is the user's to change, said so.
    let bad = bin()
        .args(["scenario", "init", "--from-host"])
        .arg(dir.path().join("my box.toml"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("(file name)"), "{}", text(&bad));
    assert!(!text(&bad).contains("a bug"), "{}", text(&bad));
}

/// Runs the binary with `args` and its stdout closed at once: it must end without the
/// "failed printing to stdout" panic (exit 101).
fn ends_quietly_on_a_closed_stdout(args: &[String]) {
    use std::process::Stdio;
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

/// Commands whose printing lives in the library end quietly on a closed stdout.
#[test]
fn library_commands_survive_a_closed_stdout() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let dir_arg = scenarios.display().to_string();
    ends_quietly_on_a_closed_stdout(&["scenario".into(), "check".into(), dir_arg.clone()]);
    ends_quietly_on_a_closed_stdout(&["list".into(), "--scenario".into(), dir_arg]);
    // A report long enough to overflow a pipe: 2000 failed checks.
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("r.json");
    let r = cdi_harness::outcome::RunReport {
        schema_version: cdi_harness::outcome::REPORT_SCHEMA_VERSION,
        backend: cdi_harness::outcome::BackendKind::Sim,
        simulated: true,
        started_at: "2026-11-30T00:00:00Z".into(),
        duration: std::time::Duration::ZERO,
        engines: Default::default(),
        results: (0..2000)
            .map(|i| cdi_harness::outcome::CheckResult {
                scenario: "seed".into(),
                check: format!("check_{i}"),
                status: cdi_harness::outcome::Status::Fail,
                message: "x".repeat(200),
                fix: None,
                cause: None,
                evidence: None,
                duration: std::time::Duration::ZERO,
                backend: cdi_harness::outcome::BackendKind::Sim,
                simulated: true,
            })
            .collect(),
        flake_inputs: None,
        specs: Default::default(),
        interrupted: false,
    };
    cdi_harness::report::write_json(&r, &report).expect("write");
    let report = report.display().to_string();
    let seed = scenarios.join("seed.toml").display().to_string();
    ends_quietly_on_a_closed_stdout(&[
        "report".into(),
        "judge".into(),
        report.clone(),
        "--scenario".into(),
        seed,
    ]);
    ends_quietly_on_a_closed_stdout(&["report".into(), "diff".into(), report.clone(), report]);
}

#[test]
fn a_filter_that_matches_no_check_is_a_usage_error_not_a_pass() {
    let out = bin()
        .args([
            "run",
            "--backend",
            "sim",
            "--scenario",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/seed.toml"),
            "--filter",
            "seed::no_such_check",
            "--filter",
            "other::device_all",
        ])
        .output()
        .expect("run");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("--filter seed::no_such_check --filter other::device_all: matches no check"),
        "{t}"
    );
    // Refused before any engine was started.
    assert!(!t.contains("scenario(s) on the sim backend"), "{t}");
}
