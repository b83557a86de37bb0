use rstest::rstest;

use std::path::Path;

use super::*;
use crate::engine::{ContainerStateFacts, EngineInfo, RunOutcome};
use crate::outcome::{Cause, Evidence};
use crate::smi::ListedGpu;

/// Evaluates a check by its report name.
fn eval(s: &Scenario, f: &Facts, name: &str) -> Verdict {
    let id = CheckId::builtin(name).unwrap_or_else(|| CheckId::Run(name.to_string()));
    evaluate(s, f, &id)
}

fn scenario(gpus: u32) -> Scenario {
    // A machine without GPUs must say so (`none = true`).
    let none = if gpus == 0 { "none = true" } else { "" };
    let text = format!(
        "description = \"t\"\n[machine.virtualisation.docker]\nenable = true\n[machine.hardware.nvidia-container-toolkit]\nenable = true\n[gpus]\ncount = {gpus}\n{none}\n[[run]]\nname = \"gpus_flag\"\ngpus = \"all\"\nexpect = \"failure\"\nerror = 'could not select device driver \"\" with capabilities: [[gpu]]'\n"
    );
    crate::scenario::parse(Path::new("t.toml"), &text).expect("test scenario parses")
}

fn smi(lines: &[(u32, &str)]) -> Result<RunOutcome, FactError> {
    let stdout = lines
        .iter()
        .map(|(i, u)| format!("GPU {i}: NVIDIA H100 80GB HBM3 (UUID: {u})\n"))
        .collect::<String>();
    Ok(RunOutcome::Exited {
        exit_code: 0,
        stdout,
        stderr: String::new(),
    })
}

#[test]
fn isolation_passes_when_each_device_sees_its_own_gpu() {
    let s = scenario(2);
    let mut f = Facts::default();
    f.runs
        .insert("device_all".into(), smi(&[(0, "GPU-a"), (1, "GPU-b")]));
    f.runs.insert("device_0".into(), smi(&[(0, "GPU-a")]));
    f.runs.insert("device_1".into(), smi(&[(0, "GPU-b")]));
    assert_eq!(eval(&s, &f, "device_all").status, Status::Pass);
    assert_eq!(eval(&s, &f, "device_1").status, Status::Pass);
    assert_eq!(eval(&s, &f, "device_isolation").status, Status::Pass);
}

#[rstest]
#[case::same_gpu_twice(&[(0, "GPU-a")], &[(0, "GPU-a")], "both give")]
#[case::outside_all(&[(0, "GPU-a")], &[(0, "GPU-c")], "single-GPU devices give")]
fn isolation_fails(#[case] d0: &[(u32, &str)], #[case] d1: &[(u32, &str)], #[case] needle: &str) {
    let s = scenario(2);
    let mut f = Facts::default();
    f.runs
        .insert("device_all".into(), smi(&[(0, "GPU-a"), (1, "GPU-b")]));
    f.runs.insert("device_0".into(), smi(d0));
    f.runs.insert("device_1".into(), smi(d1));
    let v = eval(&s, &f, "device_isolation");
    assert_eq!(v.status, Status::Fail);
    assert!(v.message.contains(needle), "{}", v.message);
}

#[test]
fn single_device_seeing_two_gpus_fails() {
    let s = scenario(2);
    let mut f = Facts::default();
    f.runs
        .insert("device_0".into(), smi(&[(0, "GPU-a"), (1, "GPU-b")]));
    let v = eval(&s, &f, "device_0");
    assert_eq!(v.status, Status::Fail);
    assert!(v.message.contains("not isolated"));
}

#[test]
fn gpus_flag_expected_error_passes_and_success_is_changed_behaviour() {
    let s = scenario(1);
    let mut f = Facts::default();
    f.runs.insert(
        "gpus_flag".into(),
        Ok(RunOutcome::Refused {
            message: crate::scenario::GPUS_FLAG_ERROR.into(),
        }),
    );
    assert_eq!(eval(&s, &f, "gpus_flag").status, Status::Pass);
    f.runs.insert("gpus_flag".into(), smi(&[(0, "GPU-a")]));
    let v = eval(&s, &f, "gpus_flag");
    assert_eq!(v.status, Status::Fail);
    assert!(v.message.starts_with("changed behaviour"));
    assert!(v.message.contains("nvidia.cdi"));
    f.runs.insert(
        "gpus_flag".into(),
        Ok(RunOutcome::Refused {
            message: "something else".into(),
        }),
    );
    assert!(
        eval(&s, &f, "gpus_flag")
            .message
            .contains("different error")
    );
}

#[test]
fn old_engine_skips_discovered_devices_with_reason() {
    let s = scenario(1);
    let f = Facts {
        info: Some(Ok(EngineInfo {
            server_version: "26.1.5".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into()],
            discovered_devices: None,
            ..Default::default()
        })),
        ..Default::default()
    };
    let v = eval(&s, &f, "info_devices");
    assert_eq!(v.status, Status::Skip);
    assert!(v.message.contains("older than 28.2"));
}

#[test]
fn cdi_off_is_reported_with_fix() {
    let s = scenario(1);
    let f = Facts {
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let v = eval(&s, &f, "info_spec_dirs");
    assert_eq!(v.status, Status::Fail);
    assert!(v.fix.as_deref().is_some_and(|f| f.contains("features.cdi")));
}

#[test]
fn manual_runtime_in_engine_is_the_pitfall() {
    let f = Facts {
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            runtimes: vec![
                ("nvidia".into(), "nvidia-container-runtime".into()),
                ("runc".into(), "runc".into()),
            ],
            ..Default::default()
        })),
        ..Default::default()
    };
    let v = eval(&scenario(1), &f, "daemon_runtimes");
    assert_eq!(v.status, Status::Fail);
    assert!(v.message.contains("nvidia (nvidia-container-runtime)"));
    assert!(
        v.fix
            .as_deref()
            .is_some_and(|f| f.contains("hardware.nvidia-container-toolkit.enable = true"))
    );
}

#[test]
fn uuid_named_aliases_do_not_fail_the_device_checks() {
    let s = scenario(1);
    let f = Facts {
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into()],
            discovered_devices: Some(vec![
                "nvidia.com/gpu=0".into(),
                "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c".into(),
                "nvidia.com/gpu=all".into(),
            ]),
            ..Default::default()
        })),
        ..Default::default()
    };
    let v = eval(&s, &f, "info_devices");
    assert_eq!(v.status, Status::Pass, "{}", v.message);
    assert!(v.message.contains("also by UUID"));
    // A missing index device still fails, alias or not.
    let f = Facts {
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            discovered_devices: Some(vec![
                "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c".into(),
                "nvidia.com/gpu=all".into(),
            ]),
            ..Default::default()
        })),
        ..Default::default()
    };
    let v = eval(&s, &f, "info_devices");
    assert_eq!(v.status, Status::Fail);
    assert!(
        v.message.contains("missing nvidia.com/gpu=0"),
        "{}",
        v.message
    );
}

#[test]
fn engine_mode_must_match_the_default_socket() {
    let info = |rootless| {
        Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            rootless,
            ..Default::default()
        }))
    };
    let rootful_machine = scenario(1);
    let f = Facts {
        info: info(false),
        ..Default::default()
    };
    assert_eq!(
        eval(&rootful_machine, &f, "engine_mode").status,
        Status::Pass
    );
    let f = Facts {
        info: info(true),
        ..Default::default()
    };
    let v = eval(&rootful_machine, &f, "engine_mode");
    assert_eq!(v.status, Status::Fail);
    assert!(v.message.contains("reached is rootless"), "{}", v.message);
    assert!(
        v.fix
            .as_deref()
            .is_some_and(|f| f.contains("unset DOCKER_HOST"))
    );
}

fn listed(n: u32) -> Vec<ListedGpu> {
    (0..n)
        .map(|i| ListedGpu {
            index: i,
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: format!("GPU-{i}"),
        })
        .collect()
}

fn restart_facts(outcome: RestartOutcome) -> Facts {
    Facts {
        backend: Some(BackendKind::Sim),
        restart_always: Some(outcome),
        ..Default::default()
    }
}

#[test]
fn restart_always_passes_when_the_container_is_back_with_its_gpus() {
    let f = restart_facts(RestartOutcome::Back {
        before: listed(2),
        after: listed(2),
        first_start: std::time::Duration::from_millis(400),
        engine_restart: std::time::Duration::from_millis(2300),
        back_after: std::time::Duration::from_millis(150),
    });
    let v = eval(&scenario(2), &f, "restart_always");
    assert_eq!(v.status, Status::Pass, "{v:?}");
    assert!(v.message.contains("same 2 GPU(s)"), "{}", v.message);
    let f = restart_facts(RestartOutcome::Back {
        before: listed(2),
        after: listed(1),
        first_start: std::time::Duration::ZERO,
        engine_restart: std::time::Duration::ZERO,
        back_after: std::time::Duration::ZERO,
    });
    assert_eq!(
        eval(&scenario(2), &f, "restart_always").status,
        Status::Fail
    );
}

#[test]
fn restart_always_not_restarted_names_the_state_and_the_fix() {
    // The container stayed exited after the daemon restart (killed at shutdown).
    let f = restart_facts(RestartOutcome::NotBack {
        waited: std::time::Duration::from_secs(20),
        state: ContainerStateFacts {
            status: "exited".into(),
            running: false,
            exit_code: 137,
            ..Default::default()
        },
        log: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n".into(),
    });
    let v = eval(&scenario(1), &f, "restart_always");
    assert_eq!(v.status, Status::Fail);
    assert!(v.message.contains("state exited"), "{}", v.message);
    assert!(v.message.contains("exit code 137"), "{}", v.message);
    assert!(v.fix.as_deref().is_some_and(|f| f.contains("moby#49989")));
}

#[test]
fn restart_always_cdi_driver_missing_after_restart_is_the_regression_measured_on_26_1() {
    // Verbatim from engine 26.1.5 (Debian trixie) after a daemon restart: the
    // container had listed its GPU before.
    let f = restart_facts(RestartOutcome::NotBack {
        waited: std::time::Duration::from_secs(20),
        state: ContainerStateFacts {
            status: "exited".into(),
            exit_code: 137,
            error: r#"could not select device driver "cdi" with capabilities: []"#.into(),
            ..Default::default()
        },
        log: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n".into(),
    });
    let v = eval(&scenario(1), &f, "restart_always");
    assert_eq!(v.status, Status::Fail);
    let fix = v.fix.unwrap_or_default();
    assert!(fix.contains("this is moby#49989"), "{fix}");
    assert!(
        !fix.contains("CDI is off"),
        "the engine had CDI before the restart: {fix}"
    );
}

#[test]
fn restart_always_unresolvable_devices_after_restart_is_the_regression() {
    // The engine's message for a CDI device it cannot resolve (measured at create);
    // moby#49989 leaves it as the container's error after the daemon restart.
    let error = "unresolvable CDI devices nvidia.com/gpu=all";
    let f = restart_facts(RestartOutcome::NotBack {
        waited: std::time::Duration::from_secs(20),
        state: ContainerStateFacts {
            status: "exited".into(),
            exit_code: 128,
            error: error.into(),
            ..Default::default()
        },
        log: String::new(),
    });
    let v = eval(&scenario(1), &f, "restart_always");
    assert_eq!(v.status, Status::Fail);
    assert!(
        v.message.contains("unresolvable CDI devices"),
        "{}",
        v.message
    );
    let fix = v.fix.unwrap_or_default();
    assert!(fix.contains("this is moby#49989"), "{fix}");
    assert!(fix.contains("systemctl restart"), "{fix}");
    let f = restart_facts(RestartOutcome::Error(
        "the engine at unix:///x did not answer `inspect container` within 20 s".into(),
    ));
    assert_eq!(
        eval(&scenario(1), &f, "restart_always").status,
        Status::Fail
    );
}

#[test]
fn restart_always_skips_on_host_and_without_a_first_run() {
    let f = Facts {
        backend: Some(BackendKind::Host),
        ..Default::default()
    };
    let v = eval(&scenario(1), &f, "restart_always");
    assert_eq!(v.status, Status::Skip);
    assert_eq!(v.message, RESTART_HOST_REASON);
    let f = restart_facts(RestartOutcome::NotRun(
        "restarting a rootless private engine is not supported yet".into(),
    ));
    let v = eval(&scenario(1), &f, "restart_always");
    assert_eq!(v.status, Status::Skip);
    assert!(v.message.contains("rootless"));
    let f = restart_facts(RestartOutcome::FirstStartFailed(
        "unresolvable CDI devices nvidia.com/gpu=all".into(),
    ));
    assert_eq!(
        eval(&scenario(1), &f, "restart_always").status,
        Status::Skip
    );
    let f = restart_facts(RestartOutcome::EngineRestartFailed("dockerd exited".into()));
    assert_eq!(
        eval(&scenario(1), &f, "restart_always").status,
        Status::Fail
    );
}

// ---- Expectations: one judge, message-only texts, declared causes, skips never count ----

fn broken(decl: &str) -> Scenario {
    let text = format!(
        "description = \"t\"\napplies-to = [\"sim\", \"vm\"]\n[machine.virtualisation.docker]\nenable = true\n[machine.hardware.nvidia-container-toolkit]\nenable = true\n[gpus]\ncount = 1\n[[expect.fail]]\ncheck = \"spec_present\"\n{decl}\n"
    );
    crate::scenario::parse(Path::new("t.toml"), &text).expect("parses")
}

fn result_of(v: Verdict) -> crate::outcome::CheckResult {
    crate::outcome::CheckResult {
        scenario: "t".into(),
        check: "spec_present".into(),
        status: v.status,
        message: v.message,
        fix: v.fix,
        cause: v.cause,
        evidence: v.evidence,
        duration: std::time::Duration::ZERO,
        backend: BackendKind::Sim,
        simulated: true,
    }
}

fn judged(s: &Scenario, v: Verdict) -> crate::outcome::CheckResult {
    let mut r = result_of(v);
    expect::apply(
        s.expected_failure("spec_present").expect("declared"),
        &mut r,
    );
    r
}

#[test]
fn a_declared_failure_is_xfail_never_pass() {
    let s = broken(
        "cause = \"spec-missing\"\nmessage-contains = [\"no CDI spec\"]\nfix-contains = [\"systemctl restart\"]",
    );
    let v = Verdict::fail(
        "no CDI spec x.json",
        Some("sudo systemctl restart it".into()),
    )
    .because(Cause::SpecMissing);
    assert_eq!(judged(&s, v).status, Status::Xfail);
}

#[test]
fn a_declared_failure_that_skipped_is_a_failure_that_says_why() {
    let s = broken("cause = \"spec-missing\"");
    let r = judged(&s, Verdict::skip("the spec directories were not read"));
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("was skipped"), "{}", r.message);
    assert!(r.message.contains("never made"), "{}", r.message);
    let r = judged(&s, Verdict::pass("fine"));
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("but it passed"), "{}", r.message);
}

#[test]
fn declared_texts_match_the_message_only() {
    // The text is in the fix (a shared constant), not in the message: no match.
    let s = broken("message-contains = [\"sudo systemctl restart\"]");
    let v = Verdict::fail(
        "executable file not found",
        Some("sudo systemctl restart x".into()),
    );
    let r = judged(&s, v);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("its message lacks"), "{}", r.message);
    // fix-contains is matched against the fix.
    let s = broken("cause = \"spec-missing\"\nfix-contains = [\"nope\"]");
    let v = Verdict::fail("m", Some("sudo systemctl restart x".into())).because(Cause::SpecMissing);
    let r = judged(&s, v);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("its fix lacks"), "{}", r.message);
}

#[test]
fn a_failure_with_another_cause_never_counts() {
    let s = broken("cause = \"spec-missing\"\nmessage-contains = [\"x.json\"]");
    let r = judged(
        &s,
        Verdict::fail("x.json unreadable: permission denied", None)
            .because(Cause::PermissionDenied),
    );
    assert_eq!(r.status, Status::Fail);
    assert!(
        r.message
            .contains("its cause is permission-denied, not the declared spec-missing"),
        "{}",
        r.message
    );
    let r = judged(&s, Verdict::fail("x.json and something", None));
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("cause is not known"), "{}", r.message);
}

#[test]
fn the_judge_finds_declared_checks_without_a_result() {
    let s = broken("cause = \"spec-missing\"");
    let (_, problems) = expect::judge(&s, &[], false);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("not run"), "{:?}", problems);
    // An undeclared failure is a problem; an undeclared new snapshot only in CI.
    let mut other = result_of(Verdict::fail("broken", None));
    other.check = "device_all".into();
    let mut new = result_of(Verdict::pass("recorded"));
    new.check = "spec_snapshot".into();
    new.status = Status::New;
    let mut declared = result_of(Verdict::fail("no CDI spec", None).because(Cause::SpecMissing));
    declared.check = "spec_present".into();
    let (judged, problems) =
        expect::judge(&s, &[other.clone(), new.clone(), declared.clone()], false);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].trial, "t::device_all");
    assert!(judged.iter().any(|r| r.status == Status::Xfail));
    let (_, problems) = expect::judge(&s, &[other, new, declared], true);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

// ---- Nothing compared is never a pass ----

#[test]
fn info_spec_dirs_without_a_spec_file_skips() {
    let f = Facts {
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
            ..Default::default()
        })),
        ..Default::default()
    };
    let v = eval(&scenario(1), &f, "info_spec_dirs");
    assert_eq!(v.status, Status::Skip, "{}", v.message);
}

#[test]
fn device_checks_with_no_expected_device_skip() {
    let f = Facts {
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into()],
            discovered_devices: Some(Vec::new()),
            ..Default::default()
        })),
        registry: Some(crate::cdi::load_dirs(&[])),
        ..Default::default()
    };
    let s = scenario(0);
    assert_eq!(eval(&s, &f, "info_devices").status, Status::Skip);
    assert_eq!(eval(&s, &f, "spec_devices").status, Status::Skip);
}

#[test]
fn a_single_gpu_device_listing_no_gpu_fails() {
    let mut f = Facts::default();
    f.runs.insert("device_0".into(), smi(&[]));
    let v = eval(&scenario(1), &f, "device_0");
    assert_eq!(v.status, Status::Fail, "{}", v.message);
}

// ---- Evidence ----

#[test]
fn evidence_says_where_a_verdict_came_from() {
    let s = scenario(1);
    let sim = Facts {
        backend: Some(BackendKind::Sim),
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    // The sim built the engine from the scenario: restating and constructing, not measuring.
    assert_eq!(
        eval(&s, &sim, "machine_config").evidence,
        Some(Evidence::Declared)
    );
    assert_eq!(
        eval(&s, &sim, "engine_mode").evidence,
        Some(Evidence::Constructed)
    );
    assert_eq!(
        eval(&s, &sim, "daemon_runtimes").evidence,
        Some(Evidence::Measured)
    );
    // On a host, machine_config compares the machine when it can...
    let host = Facts {
        backend: Some(BackendKind::Host),
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into()],
            ..Default::default()
        })),
        machine: Some(MachineProbe::default()),
        ..Default::default()
    };
    let v = eval(&s, &host, "machine_config");
    assert_eq!(
        (v.status, v.evidence),
        (Status::Pass, Some(Evidence::Measured)),
        "{}",
        v.message
    );
    assert!(v.message.contains("CDI on in the engine"), "{}", v.message);
    // ...fails on a real difference...
    let off = Facts {
        backend: Some(BackendKind::Host),
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let v = eval(&s, &off, "machine_config");
    assert_eq!(v.status, Status::Fail, "{}", v.message);
    assert!(
        v.message.contains("differs from the scenario"),
        "{}",
        v.message
    );
    // ...and says plainly when it could compare nothing.
    let blind = Facts {
        backend: Some(BackendKind::Host),
        ..Default::default()
    };
    let v = eval(&s, &blind, "machine_config");
    assert_eq!(
        (v.status, v.evidence),
        (Status::Skip, Some(Evidence::Declared)),
        "{}",
        v.message
    );
}

// ---- Remote engines ----

#[test]
fn a_remote_engine_skips_the_spec_checks_with_the_reason() {
    let why = "the engine at tcp://gpu-box:2376 is remote: its CDI spec files are on its own machine, not this one";
    let f = Facts {
        backend: Some(BackendKind::Host),
        specs_unreachable: Some(why.into()),
        registry: Some(crate::cdi::load_dirs(&[])),
        info: Some(Ok(EngineInfo {
            server_version: "28.5.2".into(),
            cdi_spec_dirs: vec!["/etc/cdi".into()],
            ..Default::default()
        })),
        ..Default::default()
    };
    for check in [
        "spec_present",
        "spec_valid",
        "spec_devices",
        "spec_snapshot",
        "spec_fresh",
        "gpu_spec",
        "info_spec_dirs",
    ] {
        let v = eval(&scenario(1), &f, check);
        assert_eq!(v.status, Status::Skip, "{check}: {}", v.message);
        assert!(v.message.contains("is remote"), "{check}: {}", v.message);
    }
}

#[test]
fn a_crashed_spec_loader_fails_the_spec_checks_as_a_harness_bug() {
    let f = Facts {
        specs_error: Some(FactError::new(
            "reading the spec directories crashed",
            Some(Cause::HarnessBug),
        )),
        ..Default::default()
    };
    for check in ["spec_present", "spec_valid", "spec_devices"] {
        let v = eval(&scenario(1), &f, check);
        assert_eq!(
            (v.status, v.cause),
            (Status::Fail, Some(Cause::HarnessBug)),
            "{check}"
        );
    }
}
