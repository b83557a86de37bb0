//! The harness under bad conditions, against real private engines: a container that
//! outlives its timeout, Ctrl-C in the middle of a run, an unreachable engine, a
//! missing image. In every case the checks fail with a message and a fix, and no
//! container of the run is left behind.
//!
//! Needs root and a CDI-capable dockerd (`.ci/install-engine`), like the `sim` backend;
//! without them these tests fail and say so, rather than pass without running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cdi_harness::engine::{Endpoint, Engine, RUN_LABEL, Timeouts};
use cdi_harness::outcome::{BackendKind, CheckResult, Status};
use cdi_harness::runner::{self, RunOptions, SimEnvironment};
use cdi_harness::scenario::{self, Scenario};

const BASE: &str = r#"
description = "reliability test machine"
[machine.virtualisation.docker]
enable = true
[machine.hardware.nvidia-container-toolkit]
enable = true
[gpus]
count = 1
"#;

fn scenario_with(extra: &str) -> Scenario {
    scenario::parse(Path::new("reliability.toml"), &format!("{BASE}{extra}"))
        .expect("test scenario parses")
}

async fn engine_for(s: &Scenario) -> SimEnvironment {
    match runner::start_sim(s, None, Timeouts::default()).await {
        Ok(env) => env,
        Err(e) => panic!("these tests need a private engine (root and `.ci/install-engine`): {e}"),
    }
}

fn host_opts(env: &SimEnvironment, snapshots: &Path) -> RunOptions {
    let mut o = RunOptions::new(BackendKind::Host, snapshots.to_path_buf());
    o.host_endpoint = Some(Endpoint::unix(env.engine.socket_path(), "test"));
    o.image_override = Some(runner::SIM_IMAGE.to_string());
    o
}

fn find<'a>(results: &'a [CheckResult], check: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|r| r.check == check)
        .unwrap_or_else(|| panic!("no result for {check}: {results:#?}"))
}

/// Every container the engine has that carries the harness's run label, of any run.
async fn harness_containers(env: &SimEnvironment) -> Vec<String> {
    let engine = Engine::connect(
        Endpoint::unix(env.engine.socket_path(), "test"),
        Timeouts::default(),
        "probe",
    )
    .await
    .expect("connect");
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![RUN_LABEL.to_string()])]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    engine
        .client()
        .list_containers(Some(opts))
        .await
        .expect("list")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_timeout_fails_the_check_and_is_removed() {
    let s = scenario_with(
        "[[run]]\nname = \"hangs\"\ncommand = [\"/bin/busybox\", \"sleep\", \"60\"]\nexpect = \"success\"\n",
    );
    let mut env = engine_for(&s).await;
    let snaps = tempfile::tempdir().expect("tempdir");
    let mut opts = host_opts(&env, snaps.path());
    opts.timeouts.container = Duration::from_secs(2);
    opts.selection = Some(
        [
            "reliability::hangs".to_string(),
            "reliability::no_leftovers".to_string(),
        ]
        .into(),
    );
    let t = Instant::now();
    let report = runner::run_scenarios(std::slice::from_ref(&s), &opts).await;
    let took = t.elapsed();
    let hangs = find(&report.results, "hangs");
    assert_eq!(hangs.status, Status::Fail, "{hangs:?}");
    assert!(
        hangs
            .message
            .contains("did not answer `wait container` within 2 s"),
        "{}",
        hangs.message
    );
    assert!(
        took < Duration::from_secs(30),
        "the timeout did not bound the run: {took:?}"
    );
    let left = harness_containers(&env).await;
    env.stop().await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_reports_interrupted_and_removes_containers() {
    let s = scenario_with(
        "[[run]]\nname = \"long\"\ncommand = [\"/bin/busybox\", \"sleep\", \"60\"]\nexpect = \"success\"\n",
    );
    let mut env = engine_for(&s).await;
    let snaps = tempfile::tempdir().expect("tempdir");
    let opts = host_opts(&env, snaps.path());
    let cancel = opts.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cancel.cancel();
    });
    let t = Instant::now();
    let report = runner::run_scenarios(std::slice::from_ref(&s), &opts).await;
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "cancellation did not stop the run"
    );
    let long = find(&report.results, "long");
    assert_eq!(long.status, Status::Fail);
    assert!(long.message.contains("interrupted"), "{}", long.message);
    // The configuration check still reports what it knows, and says what it could not
    // compare: on a host it never passes on the scenario's word alone.
    let config = find(&report.results, "machine_config");
    assert_ne!(config.status, Status::Fail, "{config:?}");
    assert!(
        config.message.contains("no known pitfall") || config.status == Status::Pass,
        "{config:?}"
    );
    let left = harness_containers(&env).await;
    env.stop().await;
    assert!(
        left.is_empty(),
        "containers left behind after Ctrl-C: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_runs_with_how_to_load_it() {
    let s = scenario_with("");
    let mut env = engine_for(&s).await;
    let snaps = tempfile::tempdir().expect("tempdir");
    let mut opts = host_opts(&env, snaps.path());
    opts.image_override = Some("localhost:1/cdi-harness/absent:1".to_string());
    opts.timeouts.pull = Duration::from_secs(15);
    let report = runner::run_scenarios(std::slice::from_ref(&s), &opts).await;
    env.stop().await;
    let all = find(&report.results, "device_all");
    assert_eq!(all.status, Status::Fail);
    assert!(
        all.message
            .contains("is not present and could not be pulled"),
        "{}",
        all.message
    );
    assert!(all.message.contains("docker load -i"), "{}", all.message);
    assert!(all.message.contains("--image local"), "{}", all.message);
    // Said once: the other container checks point at it.
    let one = find(&report.results, "device_0");
    assert_eq!(one.status, Status::Fail);
    assert!(
        one.message
            .contains("the image is missing (see reliability::device_all)"),
        "{}",
        one.message
    );
    // Checks that need no container still ran against the engine.
    assert_eq!(find(&report.results, "info_devices").status, Status::Pass);
}

#[tokio::test]
async fn an_unreachable_engine_fails_every_engine_check_with_a_fix() {
    let s = scenario_with("");
    let snaps = tempfile::tempdir().expect("tempdir");
    let mut opts = RunOptions::new(BackendKind::Host, snaps.path().to_path_buf());
    opts.host_endpoint = Some(Endpoint::unix(
        &PathBuf::from("/nonexistent/docker.sock"),
        "test",
    ));
    let report = runner::run_scenarios(std::slice::from_ref(&s), &opts).await;
    assert!(!report.succeeded());
    // The reason is given once, in the `setup` result with its cause; the checks point
    // at it.
    let first = find(&report.results, "setup");
    assert_eq!(
        first.cause,
        Some(cdi_harness::outcome::Cause::EngineUnreachable)
    );
    assert_eq!(first.status, Status::Fail);
    assert!(
        first
            .message
            .contains("no Docker engine socket at /nonexistent/docker.sock"),
        "{}",
        first.message
    );
    assert!(
        first.message.contains("systemctl start docker"),
        "{}",
        first.message
    );
    for r in &report.results {
        match r.check.as_str() {
            // Nothing of the machine could be compared: a skip saying so, not a pass.
            "machine_config" => {
                assert_eq!(r.status, Status::Skip, "{r:?}");
                assert!(r.message.contains("no known pitfall"), "{}", r.message);
            }
            "setup" => {}
            _ => {
                assert_eq!(r.status, Status::Fail, "{r:?}");
                assert!(
                    r.message.contains("see reliability::setup"),
                    "{}",
                    r.message
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_sharing_one_engine_sweep_only_their_own_containers() {
    // `quick` finishes (and sweeps) while `slow`'s container still runs on the same engine.
    let quick = scenario::parse(
        Path::new("quick.toml"),
        "description = \"q\"\n[machine.virtualisation.docker]\nenable = true\n[machine.hardware.nvidia-container-toolkit]\nenable = true\n[gpus]\ncount = 0\nnone = true\n[[run]]\nname = \"brief\"\ncommand = [\"/bin/busybox\", \"sleep\", \"1\"]\nexpect = \"success\"\n",
    )
    .expect("parses");
    let slow = scenario_with(
        "[[run]]\nname = \"slow\"\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 3; echo done\"]\nexpect = \"success\"\nstdout-contains = [\"done\"]\n",
    );
    let mut env = engine_for(&slow).await;
    let snaps = tempfile::tempdir().expect("tempdir");
    let mut opts = host_opts(&env, snaps.path());
    opts.selection = Some(
        [
            "quick::no_leftovers",
            "quick::brief",
            "reliability::slow",
            "reliability::no_leftovers",
        ]
        .map(String::from)
        .into(),
    );
    let report = runner::run_scenarios(&[quick, slow], &opts).await;
    let left = harness_containers(&env).await;
    env.stop().await;
    let slow_result = report
        .results
        .iter()
        .find(|r| r.scenario == "reliability" && r.check == "slow")
        .expect("slow ran");
    assert_eq!(slow_result.status, Status::Pass, "{slow_result:?}");
    for r in report.results.iter().filter(|r| r.check == "no_leftovers") {
        assert_eq!(r.status, Status::Pass, "{r:?}");
    }
    assert!(left.is_empty(), "{left:?}");
}
