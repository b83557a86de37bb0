//! `report diff`, `report history` and `nightly`, end to end: recorded reports for the
//! diff, and nights on the `sim` backend with a fake `nix` (a shell script passed with
//! `--nix`) whose `flake update` rewrites the scratch lock's nixpkgs revision. Also the
//! crash-safety of a night: an interrupted run never corrupts the last good report, the
//! history or the flake's lock.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{bin, repo, text};

use cdi_harness::nightly::{
    self, NightVerdict, NightlyError, NightlyOptions, Step, flake, history,
};
use cdi_harness::outcome::BackendKind;
use cdi_harness::report;
use cdi_harness::runner::RunOptions;

fn reports(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reports")
        .join(name)
}

const REV_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn lock_text(rev: &str) -> String {
    format!(
        r#"{{
  "nodes": {{
    "nixpkgs": {{
      "locked": {{
        "lastModified": 1748700000,
        "narHash": "sha256-{rev}",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "{rev}",
        "type": "github"
      }},
      "original": {{ "owner": "NixOS", "ref": "nixos-unstable", "repo": "nixpkgs", "type": "github" }}
    }},
    "root": {{ "inputs": {{ "nixpkgs": "nixpkgs" }} }}
  }},
  "root": "root",
  "version": 7
}}
"#
    )
}

/// A flake dir with a lock at `REV_A`, and a fake nix whose `flake update` sets the rev
/// to the contents of `<dir>/next-rev` and whose `flake show` prints `<dir>/show.json`.
struct FakeFlake {
    dir: tempfile::TempDir,
}

impl FakeFlake {
    /// Makes `flake show` list a default package, so that the night builds it.
    fn with_default_package(&self) {
        std::fs::write(
            self.dir.path().join("show.json"),
            r#"{"packages":{"x86_64-linux":{"default":{"type":"derivation"}}}}"#,
        )
        .unwrap();
    }

    fn new() -> FakeFlake {
        let dir = tempfile::tempdir().unwrap();
        let flake = dir.path().join("flake");
        std::fs::create_dir(&flake).unwrap();
        std::fs::write(flake.join("flake.nix"), "{ outputs = _: { }; }\n").unwrap();
        std::fs::write(flake.join("flake.lock"), lock_text(REV_A)).unwrap();
        std::fs::write(dir.path().join("show.json"), "{}").unwrap();
        let d = dir.path().display();
        let script = format!(
            r#"#!/bin/sh
echo "$*" >> "{d}/nix.log"
[ "$1" = "--extra-experimental-features" ] && [ "$2" = "nix-command flakes" ] || {{ echo "no feature flags" >&2; exit 3; }}
shift 2
case "$1 $2" in
  "flake update")
    [ -f "{d}/fail-update" ] && {{ echo "error: unable to download" >&2; exit 1; }}
    rev=$(cat "{d}/next-rev")
    sed -i "s/\"rev\": \"[0-9a-f]*\"/\"rev\": \"$rev\"/" flake.lock ;;
  "flake show") cat "{d}/show.json" ;;
  "build --no-link")
    [ -f "{d}/interrupt-build" ] && kill -TERM $$
    [ -f "{d}/fail-build" ] && {{
      for i in $(seq 1 60); do echo "building step $i" >&2; done
      echo "error: builder for '/nix/store/x-cdi-harness.drv' failed with exit code 2" >&2
      exit 1
    }}
    : ;;
  *) echo "unexpected nix call: $*" >&2; exit 4 ;;
esac
"#
        );
        let nix = dir.path().join("nix");
        std::fs::write(&nix, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&nix, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeFlake { dir }
    }
    fn flake(&self) -> PathBuf {
        self.dir.path().join("flake")
    }
    fn nix(&self) -> PathBuf {
        self.dir.path().join("nix")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn next_rev(&self, rev: &str) {
        std::fs::write(self.dir.path().join("next-rev"), rev).unwrap();
    }
    fn lock_rev(&self) -> String {
        let inputs = flake::read_lock(&self.flake().join("flake.lock")).unwrap();
        inputs["nixpkgs"].rev.clone().unwrap()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nix.log")).unwrap_or_default()
    }
}

// ---- report diff on recorded reports ----

#[test]
fn diff_of_a_regression_exits_1_and_names_the_check_input_and_spec_change() {
    let out = bin()
        .args(["report", "diff"])
        .arg(reports("base.json"))
        .arg(reports("regressed.json"))
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(
            "1 regressed, 1 now skipped, 0 gone, 0 expectation changed, 0 still failing, 0 fixed, 0 new, 14 unchanged"
        ),
        "{t}"
    );
    assert!(t.contains("seed::device_all  [pass → fail]"), "{t}");
    assert!(
        t.contains("couldn't communicate with the NVIDIA driver"),
        "{t}"
    );
    assert!(t.contains("seed::info_devices  [pass → skip]"), "{t}");
    assert!(
        t.contains(&format!(
            "https://github.com/NixOS/nixpkgs/compare/{REV_A}...{}",
            "b".repeat(40)
        )),
        "{t}"
    );
    assert!(
        t.contains("+      \"NVIDIA_CTK_LIBCUDA_DIR=/nix/store/[HASH]-nvidia-x11/lib\""),
        "{t}"
    );
}

#[test]
fn diff_of_a_fix_exits_0_and_json_is_machine_readable() {
    let out = bin()
        .args(["report", "diff", "--json"])
        .arg(reports("regressed.json"))
        .arg(reports("fixed.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["counts"]["fixed"], 1);
    assert_eq!(v["counts"]["regressed"], 0);
    // pass→skip→pass: the skip that passes again is not a fix of a failure.
    assert_eq!(v["counts"]["unchanged"], 15);
    let fixed: Vec<&serde_json::Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "fixed")
        .collect();
    assert_eq!(fixed[0]["key"], "seed::device_all");
    assert_eq!(v["input_changes"][0]["name"], "nixpkgs");
    assert_eq!(v["spec_changes"][0]["scenario"], "seed");
}

#[test]
fn diff_of_unreadable_reports_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"schema_version\": 1, \"results\": [").unwrap();
    for (old, new) in [
        (reports("base.json"), dir.path().join("missing.json")),
        (garbage.clone(), reports("base.json")),
    ] {
        let out = bin()
            .args(["report", "diff"])
            .arg(&old)
            .arg(&new)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("error:"), "{}", text(&out));
    }
}

#[test]
fn recorded_reports_read_back_with_their_optional_fields() {
    let r = report::read_json(&reports("base.json")).unwrap();
    let hw = r.engines["seed"].hardware.as_ref().unwrap();
    assert!(hw.simulated);
    assert_eq!(
        hw.driver_version.as_deref(),
        Some(cdi_harness::sim::SIM_DRIVER_VERSION)
    );
    assert_eq!(hw.gpus.len(), 1);
    assert!(r.specs.contains_key("seed"));
    assert_eq!(
        r.flake_inputs.unwrap()["nixpkgs"].rev.as_deref(),
        Some(REV_A)
    );
}

/// A copy of a recorded report with `edit` applied, written to `dir/name`.
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports("base.json")).unwrap()).unwrap();
    edit(&mut v);
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

fn diff_cli(old: &Path, new: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["report", "diff"])
        .args(extra)
        .arg(old)
        .arg(new)
        .output()
        .unwrap()
}

#[test]
fn diff_blocks_on_a_skip_or_a_vanished_check_unless_skips_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let skipped = edited(dir.path(), "skipped.json", |v| {
        v["results"][1]["status"] = "skip".into();
        v["results"][1]["message"] = "skipped: the engine is too old".into();
    });
    let vanished = edited(dir.path(), "vanished.json", |v| {
        v["results"].as_array_mut().unwrap().remove(2);
    });
    let base = reports("base.json");
    for (new, key) in [(&skipped, "[pass → skip]"), (&vanished, "[pass → -]")] {
        let out = diff_cli(&base, new, &[]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains("0 regressed"), "{t}");
        assert!(
            t.contains("needs attention (1, blocks acceptance; pass --allow-skips to accept):"),
            "{t}"
        );
        assert!(t.contains(key), "{t}");

        let out = diff_cli(&base, new, &["--allow-skips"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{t}");
        assert!(
            t.contains("needs attention (1, accepted with --allow-skips):"),
            "{t}"
        );
    }
    let out = diff_cli(&base, &skipped, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blocked"], true);
    assert_eq!(v["allow_skips"], false);
    assert_eq!(v["needs_attention"].as_array().unwrap().len(), 1);
    assert_eq!(v["regressions"].as_array().unwrap().len(), 0);
    // A regression blocks even with --allow-skips.
    let out = diff_cli(&base, &reports("regressed.json"), &["--allow-skips"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn diff_refuses_an_interrupted_report_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cut = edited(dir.path(), "cut.json", |v| {
        v["schema_version"] = 2.into();
        v["interrupted"] = true.into();
        v["results"].as_array_mut().unwrap().truncate(1);
    });
    let out = diff_cli(&reports("base.json"), &cut, &["--allow-skips"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!(
            "error: cannot judge: {} (started 2025-06-01T02:00:00Z, 1 results) was interrupted",
            cut.display()
        )),
        "{t}"
    );
    assert!(out.stdout.is_empty(), "no verdict is printed: {t}");
    // As the old report too.
    let out = diff_cli(&cut, &reports("base.json"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&cut.display().to_string()),
        "{}",
        text(&out)
    );
}

// ---- nightly without an engine (no scenarios): Nix calls and crash safety ----

fn options(f: &FakeFlake) -> NightlyOptions {
    NightlyOptions {
        flake: f.flake(),
        state_dir: f.state(),
        nix: f.nix(),
        build: true,
        keep: 30,
        allow_skips: false,
        notify: None,
        scenarios: Vec::new(),
        run: RunOptions::new(BackendKind::Sim, f.dir.path().join("snapshots")),
        crash_after: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    cdi_harness::rt::runtime().expect("runtime")
}

fn temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                out.push(e.path().display().to_string());
            }
            if e.path().is_dir() {
                out.extend(temp_files(&e.path()));
            }
        }
    }
    out
}

#[test]
fn nix_gets_feature_flags_and_builds_default_only_when_the_flake_has_one() {
    let f = FakeFlake::new();
    f.next_rev(&"b".repeat(40));
    let o = rt().block_on(nightly::run(&options(&f))).unwrap();
    assert_eq!(o.verdict, NightVerdict::Accepted);
    let log = f.log();
    assert!(
        log.contains("--extra-experimental-features nix-command flakes flake update"),
        "{log}"
    );
    assert!(log.contains("flake show --json path:"), "{log}");
    assert!(!log.contains(" build "), "{log}");

    f.with_default_package();
    f.next_rev(&"c".repeat(40));
    rt().block_on(nightly::run(&options(&f))).unwrap();
    assert!(f.log().contains("build --no-link path:"), "{}", f.log());
    assert!(f.log().contains("#default"), "{}", f.log());

    // --no-build: neither show nor build.
    let before = f.log().lines().count();
    let mut opts = options(&f);
    opts.build = false;
    f.next_rev(&"d".repeat(40));
    rt().block_on(nightly::run(&opts)).unwrap();
    let new_lines: Vec<String> = f.log().lines().skip(before).map(str::to_owned).collect();
    assert_eq!(new_lines.len(), 1, "{new_lines:?}");
}

#[test]
fn a_failed_update_reaches_no_verdict_and_keeps_the_lock() {
    let f = FakeFlake::new();
    f.next_rev(&"b".repeat(40));
    std::fs::write(f.dir.path().join("fail-update"), "").unwrap();
    let err = rt().block_on(nightly::run(&options(&f))).unwrap_err();
    assert!(matches!(err, NightlyError::NixFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("unable to download"), "{err}");
    assert!(err.to_string().contains("lock was not changed"), "{err}");
    assert_eq!(f.lock_rev(), REV_A);
    assert!(!f.state().join(nightly::LAST_GOOD_FILE).exists());
}

#[test]
fn an_interrupted_night_never_corrupts_last_good_history_or_lock() {
    let f = FakeFlake::new();
    // A first, complete night: lock at b, a last good report, one history entry.
    f.next_rev(&"b".repeat(40));
    rt().block_on(nightly::run(&options(&f))).unwrap();
    let last_good_path = f.state().join(nightly::LAST_GOOD_FILE);
    let good = std::fs::read(&last_good_path).unwrap();
    let hist = history::load(&f.state()).unwrap();
    assert_eq!(hist.nights.len(), 1);

    for (i, step) in [
        Step::Updated,
        Step::RunWritten,
        Step::LockApplied,
        Step::LastGoodWritten,
    ]
    .into_iter()
    .enumerate()
    {
        let rev = format!("{i}").repeat(40);
        f.next_rev(&rev);
        let mut opts = options(&f);
        opts.crash_after = Some(step);
        let err = rt().block_on(nightly::run(&opts)).unwrap_err();
        assert!(
            matches!(err, NightlyError::Interrupted { step: s } if s == step),
            "{err:?}"
        );

        // Last good: readable, and the old one unless its replacement finished.
        let now = report::read_json(&last_good_path).unwrap();
        if step == Step::LastGoodWritten {
            assert_ne!(std::fs::read(&last_good_path).unwrap(), good);
            assert_eq!(
                now.flake_inputs.unwrap()["nixpkgs"].rev.as_deref(),
                Some(rev.as_str())
            );
        } else {
            assert_eq!(std::fs::read(&last_good_path).unwrap(), good, "{step:?}");
        }
        // History: untouched (it is written last) and readable.
        assert_eq!(history::load(&f.state()).unwrap(), hist, "{step:?}");
        // Lock: parses, and old until the lock step completed.
        let expected = if matches!(step, Step::LockApplied | Step::LastGoodWritten) {
            rev.clone()
        } else {
            "b".repeat(40)
        };
        assert_eq!(f.lock_rev(), expected, "{step:?}");
        if step == Step::LastGoodWritten {
            break;
        }
        // Restore the lock for the next step's expectations.
        std::fs::write(f.flake().join("flake.lock"), lock_text(&"b".repeat(40))).unwrap();
    }
    assert!(
        temp_files(&f.state()).is_empty(),
        "{:?}",
        temp_files(&f.state())
    );
    assert!(temp_files(&f.flake()).is_empty());

    // The next complete night works on what the interruptions left.
    f.next_rev(&"e".repeat(40));
    let o = rt().block_on(nightly::run(&options(&f))).unwrap();
    assert_eq!(o.verdict, NightVerdict::Accepted);
    assert_eq!(history::load(&f.state()).unwrap().nights.len(), 2);
}

/// A report with one passing check, as a previous night's last good report.
fn baseline_with(state: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    std::fs::create_dir_all(state).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports("base.json")).unwrap()).unwrap();
    v["results"].as_array_mut().unwrap().truncate(1);
    edit(&mut v);
    std::fs::write(
        state.join(nightly::LAST_GOOD_FILE),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_vanished_check_keeps_the_lock_unless_skips_are_allowed() {
    let f = FakeFlake::new();
    // The last good night ran seed::machine_config; tonight runs nothing.
    baseline_with(&f.state(), |_| {});
    f.next_rev(&"b".repeat(40));
    let o = rt().block_on(nightly::run(&options(&f))).unwrap();
    assert_eq!(o.verdict, NightVerdict::NeedsAttention);
    assert_eq!(o.verdict.exit_code(), 1);
    assert!(o.regressions.is_empty());
    assert_eq!(o.attention, ["seed::machine_config"]);
    assert!(!o.lock_applied);
    assert_eq!(f.lock_rev(), REV_A);
    assert!(o.summary.contains("NEEDS-ATTENTION"), "{}", o.summary);
    assert!(
        o.summary
            .contains("rerun with --allow-skips to accept them"),
        "{}",
        o.summary
    );
    assert!(
        o.summary
            .contains("  seed::machine_config: not in tonight's report"),
        "{}",
        o.summary
    );
    let hist = history::load(&f.state()).unwrap();
    assert_eq!(hist.nights[0].verdict, NightVerdict::NeedsAttention);
    assert_eq!(hist.nights[0].attention, ["seed::machine_config"]);

    let mut opts = options(&f);
    opts.allow_skips = true;
    let o = rt().block_on(nightly::run(&opts)).unwrap();
    assert_eq!(o.verdict, NightVerdict::Accepted);
    assert_eq!(o.attention, ["seed::machine_config"], "listed, accepted");
    assert!(
        o.summary.contains("accepted with --allow-skips"),
        "{}",
        o.summary
    );
    assert_eq!(f.lock_rev(), "b".repeat(40));
}

#[test]
fn interrupted_reports_give_no_verdict_and_change_nothing() {
    let f = FakeFlake::new();
    f.next_rev(&"b".repeat(40));
    // The baseline was cut short.
    baseline_with(&f.state(), |v| v["interrupted"] = true.into());
    let err = rt().block_on(nightly::run(&options(&f))).unwrap_err();
    assert!(matches!(err, NightlyError::Incomplete(_)), "{err:?}");
    let last_good = f.state().join(nightly::LAST_GOOD_FILE);
    assert!(
        err.to_string().contains(&format!(
            "{} (started 2025-06-01T02:00:00Z, 1 results) was interrupted",
            last_good.display()
        )),
        "{err}"
    );
    // Tonight's run is cut short (no baseline).
    std::fs::remove_file(&last_good).unwrap();
    let opts = options(&f);
    opts.run.cancel.cancel();
    let err = rt().block_on(nightly::run(&opts)).unwrap_err();
    assert!(err.to_string().contains("tonight's run (started"), "{err}");
    assert_eq!(f.lock_rev(), REV_A);
    assert!(!last_good.exists());
    assert!(history::load(&f.state()).unwrap().nights.is_empty());
}

#[test]
fn a_build_stopped_by_a_signal_is_no_verdict_and_not_a_failed_night() {
    let f = FakeFlake::new();
    f.with_default_package();
    std::fs::write(f.dir.path().join("interrupt-build"), "").unwrap();
    f.next_rev(&"b".repeat(40));
    let err = rt().block_on(nightly::run(&options(&f))).unwrap_err();
    assert!(
        matches!(&err, NightlyError::BuildInterrupted { command } if command.starts_with("nix build")),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing recorded"), "{err}");
    assert!(history::load(&f.state()).unwrap().nights.is_empty());
    assert_eq!(f.lock_rev(), REV_A);
}

#[test]
fn a_failed_build_is_a_recorded_night_with_its_log_tail() {
    let f = FakeFlake::new();
    f.with_default_package();
    std::fs::write(f.dir.path().join("fail-build"), "").unwrap();
    f.next_rev(&"b".repeat(40));
    let notified = f.dir.path().join("notified");
    let out = bin()
        .arg("nightly")
        .arg("--flake")
        .arg(f.flake())
        .arg("--state-dir")
        .arg(f.state())
        .args(["--backend", "sim", "--quiet"])
        .arg("--scenario")
        .arg(repo().join("scenarios/seed.toml"))
        .arg("--nix")
        .arg(f.nix())
        .arg("--notify")
        .arg(format!(
            "echo \"$CDI_HARNESS_VERDICT ${{CDI_HARNESS_REPORT:-no report}}\" > {}",
            notified.display()
        ))
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("BUILD-FAILED"), "{t}");
    assert!(t.contains("failed with exit status 1; no check ran"), "{t}");
    assert!(
        t.contains("  | error: builder for '/nix/store/x-cdi-harness.drv' failed with exit code 2"),
        "{t}"
    );
    assert!(
        t.contains("nix flake lock --override-input nixpkgs github:NixOS/nixpkgs/"),
        "{t}"
    );
    assert_eq!(f.lock_rev(), REV_A, "the lock is kept");
    assert!(!f.state().join(nightly::LAST_GOOD_FILE).exists());
    assert_eq!(
        std::fs::read_to_string(&notified).unwrap(),
        "build-failed no report\n"
    );

    let hist = history::load(&f.state()).unwrap();
    assert_eq!(hist.nights.len(), 1);
    let night = &hist.nights[0];
    assert_eq!(night.verdict, NightVerdict::BuildFailed);
    let b = night.build_failure.as_ref().unwrap();
    assert!(
        b.command.starts_with("nix build --no-link path:"),
        "{}",
        b.command
    );
    // Bounded: the last lines only.
    assert_eq!(b.log_tail.lines().count(), flake::LOG_TAIL_LINES);
    assert!(!b.log_tail.contains("building step 1\n"), "{}", b.log_tail);
    assert!(b.log_tail.contains("building step 60"), "{}", b.log_tail);
    let run_dir = f.state().join(nightly::RUNS_DIR).join(&night.id);
    assert!(
        std::fs::read_to_string(run_dir.join("build.log"))
            .unwrap()
            .contains("error: builder")
    );
    assert!(run_dir.join("flake.lock.updated").is_file());

    let html = f.dir.path().join("history.html");
    let out = bin()
        .args(["report", "history", "--state-dir"])
        .arg(f.state())
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("build-failed"), "{t}");
    assert!(
        t.contains("build failed (exit 1): error: builder for"),
        "{t}"
    );
    assert!(t.contains("  | building step 60"), "{t}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("class=\"build-failed\""), "{page}");
    assert!(
        page.contains("error: builder for &#39;") || page.contains("error: builder for '"),
        "{page}"
    );
}

/// `nightly` on the host backend with an engine that is not there: every engine check
/// fails the same way each night, deterministically and without an engine, so the
/// verdict turns on the baseline only. The scenario must apply to this machine: the
/// seed (`count = "auto"`) where the driver reports GPUs, else one with a fixed count
/// (an "auto" count is skipped on a host whose driver reports none).
fn unreachable_night(f: &FakeFlake, extra: &[&str]) -> Output {
    let has_gpus = bin()
        .args(["gpu", "inventory"])
        .output()
        .is_ok_and(|o| o.status.success());
    let scenario = if has_gpus { "seed" } else { "multi-gpu" };
    bin()
        .arg("nightly")
        .arg("--flake")
        .arg(f.flake())
        .arg("--state-dir")
        .arg(f.state())
        .args(["--backend", "host", "--quiet", "--no-build"])
        .arg("--scenario")
        .arg(repo().join(format!("scenarios/{scenario}.toml")))
        .arg("--nix")
        .arg(f.nix())
        .args(extra)
        .env("DOCKER_HOST", "unix:///nonexistent/cdih-test.sock")
        .output()
        .unwrap()
}

#[test]
fn nightly_cli_blocks_a_vanished_check_with_exit_1_unless_allow_skips() {
    let f = FakeFlake::new();
    f.next_rev(&"b".repeat(40));
    // Night 1: no baseline, failures block.
    let out = unreachable_night(&f, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Make a baseline of that night's report plus a passing check tonight will not run.
    let hist = history::load(&f.state()).unwrap();
    let first = f
        .state()
        .join(nightly::RUNS_DIR)
        .join(&hist.nights[0].id)
        .join("report.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    let mut ghost = v["results"][0].clone();
    ghost["scenario"] = "ghost".into();
    ghost["check"] = "device_all".into();
    ghost["status"] = "pass".into();
    v["results"].as_array_mut().unwrap().push(ghost);
    std::fs::write(
        f.state().join(nightly::LAST_GOOD_FILE),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();

    // Night 2: the failures are known (still failing), the ghost check vanished.
    let out = unreachable_night(&f, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("NEEDS-ATTENTION (host backend)"), "{t}");
    assert!(
        t.contains("  ghost::device_all: not in tonight's report"),
        "{t}"
    );
    assert!(t.contains("  ghost::device_all  [pass → -]  gone"), "{t}");
    assert_eq!(f.lock_rev(), REV_A);

    // Night 3: --allow-skips accepts it.
    let out = unreachable_night(&f, &["--allow-skips"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("ACCEPTED (host backend)"), "{t}");
    assert!(t.contains("accepted with --allow-skips"), "{t}");
    assert_eq!(f.lock_rev(), "b".repeat(40));
    let verdicts: Vec<NightVerdict> = history::load(&f.state())
        .unwrap()
        .nights
        .iter()
        .map(|n| n.verdict)
        .collect();
    assert_eq!(
        verdicts,
        [
            NightVerdict::Regressed,
            NightVerdict::NeedsAttention,
            NightVerdict::Accepted
        ]
    );
}

// ---- nightly end to end on sim ----

fn sim_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the private engine needs root".into());
    }
    if let Err(e) = cdi_harness::sim::find_dockerd(None) {
        return Some(e.to_string());
    }
    None
}

fn night(f: &FakeFlake, snapshots: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("nightly")
        .arg("--flake")
        .arg(f.flake())
        .arg("--state-dir")
        .arg(f.state())
        .args(["--backend", "sim", "--quiet"])
        .arg("--scenario")
        .arg(repo().join("scenarios/seed.toml"))
        .arg("--snapshots")
        .arg(snapshots)
        .arg("--nix")
        .arg(f.nix())
        .args(extra)
        .env("CI", "true")
        .output()
        .unwrap()
}

#[test]
fn nightly_on_sim_accepts_blocks_a_regression_and_recovers() {
    if let Some(why) = sim_skip_reason() {
        if std::env::var_os("CDI_HARNESS_ALLOW_SKIP").is_some_and(|v| v == "1") {
            eprintln!("skipped: {why}");
            return;
        }
        panic!(
            "cannot run the sim nightly test here: {why} (set CDI_HARNESS_ALLOW_SKIP=1 to skip knowingly)"
        );
    }
    let f = FakeFlake::new();
    let snapshots = f.dir.path().join("snapshots");
    std::fs::create_dir_all(snapshots.join("sim")).unwrap();
    let good_snap = std::fs::read_to_string(repo().join("snapshots/sim/seed.snap")).unwrap();
    std::fs::write(snapshots.join("sim/seed.snap"), &good_snap).unwrap();
    let (b, c, d) = ("b".repeat(40), "c".repeat(40), "d".repeat(40));

    // Night 1: nothing to compare with, every check passes: the update is applied.
    f.next_rev(&b);
    let notified = f.dir.path().join("notified");
    let notify = format!(
        "echo \"$CDI_HARNESS_VERDICT $CDI_HARNESS_REPORT\" >> {}",
        notified.display()
    );
    let out = night(&f, &snapshots, &["--notify", &notify]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("ACCEPTED (sim backend, simulated GPUs)"), "{t}");
    assert!(t.contains(&format!("nixpkgs: aaaaaaaaaaaa → bbbbbbbbbbbb  https://github.com/NixOS/nixpkgs/compare/{REV_A}...{b}")), "{t}");
    assert_eq!(f.lock_rev(), b);
    let n = std::fs::read_to_string(&notified).unwrap();
    assert!(
        n.starts_with("accepted ") && n.contains("report.json"),
        "{n}"
    );

    // Night 2: the update changes the spec (the stored snapshot no longer matches):
    // spec_snapshot regresses, the lock stays at b, exit 1, rollback advice.
    let broken = good_snap.replace("NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_VISIBLE_DEVICES=all");
    assert_ne!(
        broken, good_snap,
        "the snapshot fixture changed: adapt this test"
    );
    std::fs::write(snapshots.join("sim/seed.snap"), &broken).unwrap();
    f.next_rev(&c);
    let out = night(&f, &snapshots, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("REGRESSED"), "{t}");
    assert!(t.contains("seed::spec_snapshot"), "{t}");
    assert!(t.contains(&format!("compare/{b}...{c}")), "{t}");
    assert!(t.contains("git checkout flake.lock"), "{t}");
    assert!(
        t.contains(&format!(
            "nix flake lock --override-input nixpkgs github:NixOS/nixpkgs/{b}"
        )),
        "{t}"
    );
    assert_eq!(
        f.lock_rev(),
        b,
        "the scratch lock must not be copied back on a regression"
    );
    let last_good = report::read_json(&f.state().join(nightly::LAST_GOOD_FILE)).unwrap();
    assert_eq!(
        last_good.flake_inputs.unwrap()["nixpkgs"].rev.as_deref(),
        Some(b.as_str())
    );

    // Night 3: fixed again; keep only 2 nights.
    std::fs::write(snapshots.join("sim/seed.snap"), &good_snap).unwrap();
    f.next_rev(&d);
    let junit = f.dir.path().join("out/junit.xml");
    let html = f.dir.path().join("out/history.html");
    let out = night(
        &f,
        &snapshots,
        &[
            "--keep",
            "2",
            "--junit",
            junit.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    // Compared with the last good night (night 1), not the regressed one.
    assert!(
        // Every seed check unchanged, however many checks the seed scenario has.
        t.contains(
            "0 regressed, 0 now skipped, 0 gone, 0 expectation changed, 0 still failing, 0 fixed, 0 new, "
        ) && !t.contains("new, 0 unchanged"),
        "{t}"
    );
    assert_eq!(f.lock_rev(), d);
    assert!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .contains("[simulated]")
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("class=\"cell fail\"") && page.contains("class=\"cell pass\""));

    let hist = history::load(&f.state()).unwrap();
    let verdicts: Vec<NightVerdict> = hist.nights.iter().map(|n| n.verdict).collect();
    assert_eq!(verdicts, [NightVerdict::Regressed, NightVerdict::Accepted]);
    let runs: Vec<_> = std::fs::read_dir(f.state().join(nightly::RUNS_DIR))
        .unwrap()
        .collect();
    assert_eq!(
        runs.len(),
        2,
        "old run directories are pruned with the history"
    );

    let out = bin()
        .args(["report", "history", "--state-dir"])
        .arg(f.state())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("regressed: seed::spec_snapshot"), "{t}");
    assert_eq!(
        t.lines().filter(|l| l.contains("sim (sim)")).count(),
        2,
        "{t}"
    );
}

// ---- the schema document `report diff` users read ----

#[test]
fn report_schema_doc_lists_every_status_cause_and_change_kind() {
    use cdi_harness::diff::ChangeKind;
    use cdi_harness::outcome::{Cause, REPORT_SCHEMA_VERSION, Status};
    let doc = std::fs::read_to_string(repo().join("docs/report-schema.md")).unwrap();
    assert!(
        doc.starts_with(&format!(
            "# cdi-harness JSON report, schema version {REPORT_SCHEMA_VERSION}\n"
        )),
        "docs/report-schema.md names another schema version"
    );
    for s in [
        Status::Pass,
        Status::Fail,
        Status::Skip,
        Status::Xfail,
        Status::New,
    ] {
        assert!(
            doc.contains(&format!("| `{}` |", s.as_str())),
            "status {s:?}"
        );
    }
    for c in Cause::ALL {
        assert!(
            doc.contains(&format!("`{c}`")),
            "cause {c} is not documented"
        );
    }
    for k in ChangeKind::ALL {
        let name = serde_json::to_value(k).unwrap();
        let name = name.as_str().unwrap();
        assert!(doc.contains(&format!("| `{name}` |")), "kind {name}");
    }
    for word in [
        "`interrupted`",
        "`evidence`",
        "`measured`",
        "`declared`",
        "`constructed`",
    ] {
        assert!(doc.contains(word), "{word}");
    }
}
