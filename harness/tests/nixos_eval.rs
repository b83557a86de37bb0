//! `cdi-harness scenario nixos-eval` against nixpkgs' real modules (the evaluation kit at
//! `../shared/nixpkgs-eval`, or `$CDI_HARNESS_NIXPKGS_KIT`), through `nix-instantiate`:
//! configurations the project has never shipped, with a misspelled option, a wrong type
//! or a conflicting definition, are rejected with nixpkgs' own message naming the file.
//!
//! Needs `nix-instantiate` (Debian: `apt-get install nix-bin`) and the kit. Where one is
//! missing each test fails and says why: a test that cannot run must not count as
//! passed. `CDI_HARNESS_ALLOW_SKIP=1` turns that into a printed `skipped: <why>`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root exists")
}

/// The kit and nix-instantiate, or why this machine cannot run these tests.
fn setup() -> Result<PathBuf, String> {
    let kit = std::env::var_os("CDI_HARNESS_NIXPKGS_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/nixpkgs-eval"));
    if !kit.join("lib/default.nix").is_file() {
        return Err(format!(
            "no evaluation kit at {} (set CDI_HARNESS_NIXPKGS_KIT)",
            kit.display()
        ));
    }
    match Command::new("nix-instantiate").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(kit),
        Ok(o) => Err(format!("nix-instantiate --version failed: {:?}", o.status)),
        Err(e) => Err(format!(
            "cannot run nix-instantiate: {e} (apt-get install nix-bin)"
        )),
    }
}

/// The kit, or `None` after saying why the test skips; panics unless skipping is allowed.
fn kit_or_skip() -> Option<PathBuf> {
    match setup() {
        Ok(k) => Some(k),
        Err(reason) => {
            if std::env::var_os("CDI_HARNESS_ALLOW_SKIP").is_some_and(|v| v == "1") {
                eprintln!("skipped: {reason}");
                None
            } else {
                panic!(
                    "cannot run the nixpkgs evaluation tests here: {reason} (set CDI_HARNESS_ALLOW_SKIP=1 to skip knowingly)"
                );
            }
        }
    }
}

fn nixos_eval(kit: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
        .current_dir(repo_root())
        .args(["scenario", "nixos-eval", "--kit"])
        .arg(kit)
        .args(args)
        .output()
        .expect("cdi-harness runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SCENARIO_HEAD: &str = "description = \"a machine the project never shipped\"\n\
[machine.virtualisation.docker]\nenable = true\n\
[machine.hardware.nvidia-container-toolkit]\nenable = true\n";

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write the test file");
    p
}

#[test]
fn a_misspelled_option_is_rejected_with_nixpkgs_message_and_the_file() {
    let Some(kit) = kit_or_skip() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = write(
        dir.path(),
        "typo.toml",
        &format!(
            "{SCENARIO_HEAD}[machine.virtualisation.docker.rootless]\nenabel = true\n[gpus]\ncount = 1\n"
        ),
    );
    let nix = write(
        dir.path(),
        "typo.nix",
        "{ hardware.nvidia-container-toolkit.enable = true; hardware.nvidia-container-toolkit.suppressNvidiaDriverAssertion = true; virtualisation.docker.enable = true; virtualisation.docker.daemon.setings.features.cdi = true; }\n",
    );
    for (file, option) in [
        (&toml, "virtualisation.docker.rootless.enabel"),
        (&nix, "virtualisation.docker.daemon.setings"),
    ] {
        let o = nixos_eval(&kit, &[file.to_str().expect("utf-8 path")]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(
            t.contains(&format!("The option `{option}' does not exist")),
            "{t}"
        );
        assert!(t.contains(&format!("In `{}'", file.display())), "{t}");
    }
}

#[test]
fn a_conflicting_definition_is_rejected_and_forcing_it_wins() {
    let Some(kit) = kit_or_skip() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = write(
        dir.path(),
        "cdi-off.toml",
        &format!(
            "{SCENARIO_HEAD}[machine.virtualisation.docker.daemon.settings.features]\ncdi = false\n[gpus]\ncount = 1\n"
        ),
    );
    let o = nixos_eval(&kit, &[plain.to_str().expect("utf-8 path")]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("The option `virtualisation.docker.daemon.settings.features.cdi' has conflicting definition values"),
        "{t}"
    );
    assert!(
        t.contains("nvidia-container-toolkit/default.nix': true"),
        "{t}"
    );
    assert!(
        t.contains(&format!("In `{}': false", plain.display())),
        "{t}"
    );

    let forced = write(
        dir.path(),
        "cdi-forced-off.toml",
        &format!(
            "{SCENARIO_HEAD}[machine.force.virtualisation.docker.daemon.settings.features]\ncdi = false\n[gpus]\ncount = 1\n"
        ),
    );
    let o = nixos_eval(
        &kit,
        &[
            "--json",
            "--against-sim",
            forced.to_str().expect("utf-8 path"),
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        v[0]["summary"]["docker"]["settings"]["features"]["cdi"], false,
        "{t}"
    );
    assert_eq!(
        v[0]["sim"]["simDaemonJson"]["features"]["cdi"], false,
        "{t}"
    );
    assert_eq!(v[0]["sim"]["differences"], serde_json::json!([]), "{t}");
}

#[test]
fn a_wrong_type_and_a_unit_conflict_are_rejected() {
    let Some(kit) = kit_or_skip() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = write(
        dir.path(),
        "wrong.nix",
        "{ virtualisation.docker.enable = true; virtualisation.docker.enableOnBoot = \"no\"; }\n",
    );
    let o = nixos_eval(&kit, &[wrong.to_str().expect("utf-8 path")]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(
            "A definition for option `virtualisation.docker.enableOnBoot' is not of type `boolean'"
        ),
        "{t}"
    );
    // Two modules giving the docker unit different Types conflict, as on NixOS (the
    // stubs type serviceConfig as nixpkgs' systemd options).
    let unit = write(
        dir.path(),
        "unit.nix",
        "{ virtualisation.docker.enable = true; systemd.services.docker.serviceConfig.Type = \"simple\"; }\n",
    );
    let o = nixos_eval(&kit, &[unit.to_str().expect("utf-8 path")]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("The option `systemd.services.docker.serviceConfig.Type' has conflicting definition values"),
        "{t}"
    );
}

#[test]
fn every_shipped_scenario_and_the_nightly_module_evaluate_and_agree_with_the_sim() {
    let Some(kit) = kit_or_skip() else { return };
    let o = nixos_eval(
        &kit,
        &[
            "--json",
            "--flavour",
            "simulated",
            "--flavour",
            "passthrough",
            "--against-sim",
            "--nightly",
            "scenarios",
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let all = v.as_array().expect("a list");
    let scenarios = std::fs::read_dir(repo_root().join("scenarios"))
        .expect("scenarios/")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    assert_eq!(all.len(), scenarios * 2 + 2, "{t}");
    for e in all {
        assert_eq!(e["ok"], true, "{e}");
    }
    // The generator exists and docker requires it, except where the scenario's broken
    // state drops that (spec-missing).
    let seed = all
        .iter()
        .find(|e| {
            e["target"]
                .as_str()
                .is_some_and(|t| t.contains("seed.toml (simulated)"))
        })
        .expect("seed evaluated");
    assert_eq!(
        seed["summary"]["generator"]["requiredBy"],
        serde_json::json!(["docker.service"])
    );
    // The nightly unit's arguments are quoted for systemd: `%` and `$` doubled.
    let full = all
        .iter()
        .find(|e| {
            e["target"]
                .as_str()
                .is_some_and(|t| t.contains("every option set"))
        })
        .expect("nightly evaluated");
    let exec = full["summary"]["nightly"]["service"]["ExecStart"]
        .as_str()
        .expect("ExecStart");
    assert!(
        exec.contains("$$CDI_HARNESS_VERDICT") && exec.contains("100%%.toml"),
        "{exec}"
    );
    assert_eq!(
        full["summary"]["nightly"]["service"]["environment"]["HOME"],
        "/srv/cdi-harness"
    );
}

#[test]
fn without_nixpkgs_or_a_kit_it_exits_2_and_says_how_to_get_one() {
    // Needs neither Nix nor the kit: nothing is found before anything runs.
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = repo_root().join("scenarios/seed.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
        .current_dir(dir.path())
        .args(["scenario", "nixos-eval"])
        .arg(&scenario)
        .output()
        .expect("cdi-harness runs");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("no nixpkgs to evaluate against"), "{t}");
    assert!(
        t.contains("--nixpkgs DIR") && t.contains("--kit DIR"),
        "{t}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
        .args(["scenario", "nixos-eval", "--nixpkgs"])
        .arg(dir.path())
        .arg(&scenario)
        .output()
        .expect("cdi-harness runs");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("has no nixos/lib/eval-config.nix"), "{t}");
}

#[test]
fn a_fake_nixpkgs_tree_is_evaluated_through_its_eval_config() {
    // The --nixpkgs path end to end on a tree that only has what evaluate.nix calls:
    // `import nixpkgs {}` and nixos/lib/eval-config.nix, here backed by the kit.
    let Some(kit) = kit_or_skip() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("nixos/lib")).expect("mkdir");
    std::fs::create_dir_all(root.join("nixos/modules/virtualisation")).expect("mkdir");
    let kit_s = kit.display();
    let eval_nix = repo_root().join("nixos-tests/eval/kit.nix");
    std::fs::write(
        root.join("default.nix"),
        format!("{{ ... }}: (import {} {kit_s}).pkgs\n", eval_nix.display()),
    )
    .expect("write");
    std::fs::write(
        root.join("nixos/lib/eval-config.nix"),
        format!(
            "{{ system, modules }}: (import {} {kit_s}).eval modules\n",
            eval_nix.display()
        ),
    )
    .expect("write");
    std::fs::write(
        root.join("nixos/modules/virtualisation/qemu-vm.nix"),
        "{ }\n",
    )
    .expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
        .current_dir(repo_root())
        .args(["scenario", "nixos-eval", "--json", "--nixpkgs"])
        .arg(root)
        .arg("scenarios/legacy-runtime.toml")
        .output()
        .expect("cdi-harness runs");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(
        v[0]["target"]
            .as_str()
            .is_some_and(|s| s.contains("nixpkgs ")),
        "{t}"
    );
    assert_eq!(
        v[0]["summary"]["docker"]["settings"]["runtimes"]["nvidia"]["path"],
        "nvidia-container-runtime",
        "{t}"
    );
}

#[test]
fn the_polyfill_gives_nix_2_8_what_lib_25_11_reads() {
    // lib.filesystem.pathType is builtins.readFileType (Nix >= 2.14); the evaluator's
    // lib answers it on any Nix, as Nix itself would.
    let Some(kit) = kit_or_skip() else { return };
    let root = repo_root();
    let expr = format!(
        "let lib = import {}/nixos-tests/eval/polyfill.nix (import {}/lib); in \
         [ (lib.filesystem.pathType {}/flake.nix) (lib.pathIsDirectory {}/harness) \
           (lib.pathIsRegularFile {}/harness) (lib.filesystem.pathType /.) ]",
        root.display(),
        kit.display(),
        root.display(),
        root.display(),
        root.display()
    );
    let store = tempfile::tempdir().expect("tempdir");
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .env(
            "NIX_REMOTE",
            format!("local?root={}", store.path().display()),
        )
        .output()
        .expect("nix-instantiate runs");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!(["regular", true, false, "directory"]),
        "{t}"
    );
}

#[test]
fn sim_daemon_json_prints_what_the_sim_gives_the_scenario_engine() {
    // Needs neither Nix nor the kit: the sim's daemon.json comes from sim::daemon_json.
    let run = |file: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
            .current_dir(repo_root())
            .args(["scenario", "sim-daemon-json", file])
            .output()
            .expect("cdi-harness runs");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("JSON")
    };
    let off = run("scenarios/cdi-disabled.toml");
    assert_eq!(off["features"]["cdi"], false);
    assert!(off.get("runtimes").is_none());
    let legacy = run("scenarios/legacy-runtime.toml");
    assert_eq!(legacy["features"]["cdi"], true);
    assert_eq!(
        legacy["runtimes"],
        serde_json::json!({ "nvidia": { "path": "nvidia-container-runtime" } })
    );
    assert_eq!(
        legacy["cdi-spec-dirs"],
        serde_json::json!(["/etc/cdi", "/var/run/cdi"])
    );
}
