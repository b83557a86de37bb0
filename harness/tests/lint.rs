//! `cdi-harness lint`: every pitfall of the seed write-up found at its exact place in the
//! fixtures under `tests/fixtures/nix/`, whatever shape the NixOS configuration takes, and
//! the binary's exit codes (0 clean, 1 a pitfall, 2 unreadable or not Nix).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cdi_harness::lint::{self, Finding, LintError, Pitfall, Severity};
use rstest::rstest;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nix")
        .join(name)
}

fn lint_fixture(name: &str) -> Vec<Finding> {
    lint::lint_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (line, column, pitfall, problem) of each finding.
fn brief(findings: &[Finding]) -> Vec<(usize, usize, Pitfall, String)> {
    findings
        .iter()
        .map(|f| (f.line, f.column, f.pitfall, f.problem.clone()))
        .collect()
}

fn src(source: &str) -> Vec<Finding> {
    lint::lint_source(Path::new("inline.nix"), source).unwrap_or_else(|e| panic!("{e}"))
}

fn ids(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.pitfall.id()).collect()
}

// The exact problem texts, one helper per pitfall.

fn runtime(name: &str) -> String {
    format!(
        "`virtualisation.docker.daemon.settings.runtimes.{name}`: manual NVIDIA runtime, breaks after `nix flake update`"
    )
}

fn nvidia_docker(expr: &str) -> String {
    format!(
        "`{expr}`: the legacy nvidia-docker wrapper and runtime, breaks after `nix flake update`"
    )
}

const ENABLE_NVIDIA: &str = "`virtualisation.docker.enableNvidia = true` is deprecated: it registers the legacy `nvidia` runtime as Docker's default-runtime (nixpkgs warns for docker >= 25)";
const PODMAN_ENABLE_NVIDIA: &str = "`virtualisation.podman.enableNvidia = true` is deprecated and has no effect (nixpkgs warns it will be removed)";
const DOCKER_WITHOUT_TOOLKIT: &str = "`virtualisation.docker.enable = true` without `hardware.nvidia-container-toolkit.enable = true` in this file: no CDI spec is generated, so containers get no GPU";
const CDI_FALSE: &str = "`virtualisation.docker.daemon.settings.features.cdi = false` turns CDI off: `--device nvidia.com/gpu=all` fails with could not select device driver \"cdi\" (nixpkgs#305312)";
const DOCKER_24: &str = "`virtualisation.docker.package = pkgs.docker_24`: Docker 24 predates CDI, so the toolkit module leaves `features.cdi` off (it sets it for docker >= 25; nixpkgs#305312)";
const DEFAULT_RUNTIME: &str = "`virtualisation.docker.daemon.settings.default-runtime = \"nvidia\"`: every container goes through the legacy NVIDIA runtime instead of CDI";
const NO_DRIVER: &str = "`hardware.nvidia-container-toolkit.enable = true` but this file configures no NVIDIA driver the toolkit module accepts (\"nvidia\" in `services.xserver.videoDrivers`, or `hardware.nvidia.datacenter.enable`): its assertion fails the build unless another file of this machine configures the driver";
const NO_DRIVER_PACKAGE_ONLY: &str = "`hardware.nvidia-container-toolkit.enable = true` but this file configures no NVIDIA driver the toolkit module accepts (\"nvidia\" in `services.xserver.videoDrivers`, or `hardware.nvidia.datacenter.enable`); `hardware.nvidia.package` alone does not count: its assertion fails the build unless another file of this machine configures the driver";
const GPUS: &str = "`--gpus` asks Docker for the legacy NVIDIA runtime, which a CDI machine lacks: could not select device driver \"\" with capabilities: [[gpu]]";

#[rstest]
#[case::seed("seed-docker.nix", vec![])]
#[case::lookalikes("clean-lookalikes.nix", vec![])]
#[case::manual_runtime("manual-runtime.nix", vec![
    (8, 16, Pitfall::ManualRuntime, runtime("nvidia")),
    (13, 16, Pitfall::ManualRuntime, runtime("gpu")),
])]
#[case::nvidia_docker("nvidia-docker.nix", vec![
    (10, 5, Pitfall::NvidiaDocker, nvidia_docker("nvidia-docker")),
    (13, 36, Pitfall::NvidiaDocker, nvidia_docker("pkgs.nvidia-docker")),
])]
#[case::enable_nvidia("enable-nvidia.nix", vec![
    (7, 5, Pitfall::EnableNvidia, ENABLE_NVIDIA.to_string()),
    (9, 25, Pitfall::EnableNvidia, PODMAN_ENABLE_NVIDIA.to_string()),
])]
#[case::docker_without_toolkit("docker-without-toolkit.nix", vec![
    (6, 5, Pitfall::DockerWithoutToolkit, DOCKER_WITHOUT_TOOLKIT.to_string()),
])]
#[case::cdi_off("cdi-off.nix", vec![(6, 50, Pitfall::CdiOff, CDI_FALSE.to_string())])]
#[case::docker_24("docker-24.nix", vec![(7, 5, Pitfall::CdiOff, DOCKER_24.to_string())])]
#[case::default_runtime("default-runtime.nix", vec![
    (6, 41, Pitfall::DefaultRuntime, DEFAULT_RUNTIME.to_string()),
])]
#[case::no_driver("no-driver.nix", vec![
    (11, 37, Pitfall::NoDriver, NO_DRIVER_PACKAGE_ONLY.to_string()),
])]
#[case::gpus_flag("gpus-flag.nix", vec![
    (10, 23, Pitfall::GpusFlag, GPUS.to_string()),
    (17, 42, Pitfall::GpusFlag, GPUS.to_string()),
    (19, 62, Pitfall::GpusFlag, GPUS.to_string()),
])]
#[case::combined("combined.nix", vec![
    (6, 28, Pitfall::GpusFlag, GPUS.to_string()),
    (13, 5, Pitfall::EnableNvidia, ENABLE_NVIDIA.to_string()),
    (14, 5, Pitfall::CdiOff, DOCKER_24.to_string()),
    (16, 7, Pitfall::DefaultRuntime, DEFAULT_RUNTIME.to_string()),
    (17, 16, Pitfall::CdiOff, CDI_FALSE.to_string()),
    (18, 16, Pitfall::ManualRuntime, runtime("nvidia")),
    (18, 33, Pitfall::NvidiaDocker, nvidia_docker("pkgs.nvidia-docker")),
    (22, 45, Pitfall::NvidiaDocker, nvidia_docker("nvidia-docker")),
    (25, 37, Pitfall::NoDriver, NO_DRIVER.to_string()),
])]
#[case::wrappers("wrappers.nix", vec![
    (12, 45, Pitfall::DefaultRuntime, DEFAULT_RUNTIME.to_string()),
    (26, 29, Pitfall::EnableNvidia, ENABLE_NVIDIA.to_string()),
    (28, 30, Pitfall::ManualRuntime, runtime("nvidia")),
])]
fn fixture_findings_are_exact(
    #[case] name: &str,
    #[case] expected: Vec<(usize, usize, Pitfall, String)>,
) {
    let findings = lint_fixture(name);
    assert_eq!(brief(&findings), expected, "{name}");
}

#[test]
fn every_pitfall_has_a_broken_fixture_and_the_combined_one_holds_all_but_one() {
    let all = [
        Pitfall::ManualRuntime,
        Pitfall::NvidiaDocker,
        Pitfall::EnableNvidia,
        Pitfall::DockerWithoutToolkit,
        Pitfall::CdiOff,
        Pitfall::DefaultRuntime,
        Pitfall::NoDriver,
        Pitfall::GpusFlag,
    ];
    for p in all {
        let file = match p {
            Pitfall::CdiOff => "cdi-off.nix".to_string(),
            other => format!("{}.nix", other.id()),
        };
        let found = lint_fixture(&file);
        assert!(!found.is_empty(), "{file}");
        assert!(found.iter().all(|f| f.pitfall == p), "{file}: {found:#?}");
    }
    // `docker-without-toolkit` needs the toolkit off, `no-driver` needs it on.
    let combined: Vec<Pitfall> = lint_fixture("combined.nix")
        .iter()
        .map(|f| f.pitfall)
        .collect();
    for p in all {
        assert_eq!(
            combined.contains(&p),
            p != Pitfall::DockerWithoutToolkit,
            "{p:?}"
        );
    }
}

#[test]
fn findings_print_as_file_line_col_problem_fix_and_are_sorted() {
    let findings = lint_fixture("no-driver.nix");
    let path = fixture("no-driver.nix");
    assert_eq!(
        findings[0].to_string(),
        format!(
            "{}:11:37: warning: {NO_DRIVER_PACKAGE_ONLY} (fix: add `services.xserver.videoDrivers = [ \"nvidia\" ];` (or `hardware.nvidia.datacenter.enable = true;`), or set `hardware.nvidia-container-toolkit.suppressNvidiaDriverAssertion = true` when the driver comes from elsewhere (WSL))",
            path.display()
        )
    );
    assert_eq!(findings[0].severity, Severity::Warning);

    let manual = lint_fixture("manual-runtime.nix");
    assert_eq!(
        manual[0].fix,
        "remove it and rely solely on `hardware.nvidia-container-toolkit.enable = true`"
    );
    let combined = lint_fixture("combined.nix");
    let positions: Vec<(usize, usize)> = combined.iter().map(|f| (f.line, f.column)).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
}

#[test]
fn nested_dotted_and_mixed_forms_give_the_same_findings() {
    let what = |name: &str| -> Vec<(Pitfall, String, String)> {
        lint_fixture(name)
            .into_iter()
            .map(|f| (f.pitfall, f.problem, f.fix))
            .collect()
    };
    let nested = what("style-nested.nix");
    assert_eq!(
        nested.iter().map(|f| f.0).collect::<Vec<_>>(),
        [
            Pitfall::EnableNvidia,
            Pitfall::DefaultRuntime,
            Pitfall::CdiOff,
            Pitfall::ManualRuntime
        ]
    );
    assert_eq!(what("style-dotted.nix"), nested);
    assert_eq!(what("style-mixed.nix"), nested);
    // Each points at the option's own name wherever the file writes it.
    assert_eq!(
        brief(&lint_fixture("style-dotted.nix"))
            .iter()
            .map(|f| (f.0, f.1))
            .collect::<Vec<_>>(),
        [(3, 25), (4, 41), (5, 50), (6, 50)]
    );
    assert_eq!(
        brief(&lint_fixture("style-nested.nix"))
            .iter()
            .map(|f| (f.0, f.1))
            .collect::<Vec<_>>(),
        [(5, 7), (8, 11), (10, 13), (13, 13)]
    );
}

#[rstest]
#[case::mk_force("{ virtualisation.docker.daemon.settings.features.cdi = lib.mkForce false; }")]
#[case::mk_default("{ virtualisation.docker.daemon.settings.features.cdi = mkDefault false; }")]
#[case::mk_if_value(
    "{ virtualisation.docker.daemon.settings.features.cdi = lib.mkIf cfg.off false; }"
)]
#[case::mk_if_set(
    "{ virtualisation.docker = lib.mkIf cfg.on { daemon.settings.features.cdi = false; }; }"
)]
#[case::mk_merge(
    "{ virtualisation.docker.daemon.settings = lib.mkMerge [ { } { features.cdi = false; } ]; }"
)]
#[case::mk_override(
    "{ virtualisation.docker.daemon.settings.features.cdi = lib.mkOverride 10 (false); }"
)]
#[case::if_else(
    "{ virtualisation.docker.daemon.settings.features.cdi = if x then true else false; }"
)]
#[case::explicit_config(
    "{ lib, ... }: { options.a = lib.mkOption { }; config = lib.mkIf true { virtualisation.docker.daemon.settings.features.cdi = false; }; }"
)]
#[case::config_dotted("{ config.virtualisation.docker.daemon.settings.features.cdi = false; }")]
#[case::let_with_function(
    "{ pkgs, lib, ... }: let off = false; in with lib; { virtualisation.docker.daemon.settings.features.cdi = mkForce false; }"
)]
#[case::inline_import(
    "{ imports = [ ({ lib, ... }: { virtualisation.docker.daemon.settings.features.cdi = lib.mkForce false; }) ]; }"
)]
#[case::rootless("{ virtualisation.docker.rootless.daemon.settings.features.cdi = false; }")]
fn wrappers_and_module_shapes_are_looked_through(#[case] source: &str) {
    assert_eq!(ids(&src(source)), ["cdi-off"], "{source}");
}

#[rstest]
#[case::options_are_not_config(
    "{ options.virtualisation.docker.daemon.settings.features.cdi = false; config = { }; }"
)]
#[case::partial_application("{ virtualisation.docker.daemon.settings.features.cdi = lib.mkIf c; }")]
#[case::cdi_true("{ virtualisation.docker.daemon.settings.features.cdi = lib.mkForce true; }")]
#[case::docker_25("{ virtualisation.docker.package = pkgs.docker_25; }")]
#[case::docker_default("{ virtualisation.docker.package = pkgs.docker; }")]
#[case::no_docker_no_finding("{ services.openssh.enable = true; }")]
#[case::docker_off("{ virtualisation.docker.enable = false; }")]
#[case::toolkit_conditional(
    "{ config, ... }: { virtualisation.docker.enable = true; hardware.nvidia-container-toolkit.enable = config.hasGpu; }"
)]
#[case::toolkit_mk_default(
    "{ virtualisation.docker.enable = true; hardware.nvidia-container-toolkit.enable = lib.mkDefault true; }"
)]
#[case::gpus_like_words("{ x = \"--gpus-per-task=1 foo--gpus\"; }")]
#[case::gpus_in_comment("{ # docker run --gpus all\n x = 1; }")]
#[case::runtime_not_nvidia(
    "{ virtualisation.docker.daemon.settings.runtimes.crun.path = \"crun\"; }"
)]
#[case::default_runtime_runc(
    "{ virtualisation.docker.daemon.settings.default-runtime = \"runc\"; }"
)]
#[case::enable_nvidia_false("{ virtualisation.docker.enableNvidia = false; }")]
#[case::has_attr("{ x = pkgs ? nvidia-docker; }")]
#[case::parameter("{ nvidia-docker ? null, ... }: { }")]
#[case::binding_name("{ environment.etc.nvidia-docker.text = \"\"; }")]
fn lookalikes_are_not_reported(#[case] source: &str) {
    assert_eq!(src(source), vec![], "{source}");
}

#[rstest]
#[case::rootless_docker(
    "{ virtualisation.docker.rootless.enable = true; }",
    "docker-without-toolkit"
)]
#[case::docker_20_10("{ virtualisation.docker.package = pkgs.docker_20_10; }", "cdi-off")]
#[case::docker_24_with_pkgs(
    "{ pkgs, ... }: { virtualisation.docker.package = with pkgs; docker_24; }",
    "cdi-off"
)]
#[case::rootless_package(
    "{ virtualisation.docker.rootless.package = pkgs.docker_24; }",
    "cdi-off"
)]
#[case::renamed_toolkit_option(
    "{ virtualisation.containers.cdi.dynamic.nvidia.enable = true; }",
    "enable-nvidia"
)]
#[case::quoted_select("{ x = [ pkgs.\"nvidia-docker\" ]; }", "nvidia-docker")]
#[case::inherit("let inherit (pkgs) nvidia-docker; in { }", "nvidia-docker")]
#[case::interpolation("{ x = \"${nvidia-docker}/bin/nvidia-docker\"; }", "nvidia-docker")]
#[case::opaque_runtimes(
    "{ virtualisation.docker.daemon.settings.runtimes = import ./nvidia-runtime.nix; }",
    "manual-runtime"
)]
#[case::rootless_runtime(
    "{ virtualisation.docker.rootless.daemon.settings.runtimes.nvidia = { }; }",
    "manual-runtime"
)]
#[case::default_runtime_rootless(
    "{ virtualisation.docker.rootless.daemon.settings.default-runtime = \"nvidia\"; }",
    "default-runtime"
)]
#[case::gpus_list_item("{ extraOptions = [ \"--gpus\" \"all\" ]; }", "gpus-flag")]
#[case::gpus_in_let("let s = ''\n  docker run --gpus=all x\n''; in { }", "gpus-flag")]
fn single_pitfalls_in_other_shapes(#[case] source: &str, #[case] id: &str) {
    assert_eq!(ids(&src(source)), [id], "{source}");
}

#[rstest]
#[case::video_drivers(r#"services.xserver.videoDrivers = [ "nvidia" ];"#)]
#[case::video_drivers_forced(
    r#"services.xserver.videoDrivers = lib.mkForce ([ "modesetting" ] ++ [ "nvidia" ]);"#
)]
#[case::datacenter("hardware.nvidia.datacenter.enable = true;")]
#[case::suppressed("hardware.nvidia-container-toolkit.suppressNvidiaDriverAssertion = true;")]
fn a_driver_the_assertion_accepts_clears_the_warning(#[case] driver: &str) {
    let base = "hardware.nvidia-container-toolkit.enable = true; system.stateVersion = \"25.05\";";
    assert_eq!(ids(&src(&format!("{{ {base} }}"))), ["no-driver"]);
    assert_eq!(src(&format!("{{ {base} {driver} }}")), vec![], "{driver}");
}

#[test]
fn a_fragment_without_driver_or_machine_settings_gets_no_driver_warning() {
    // The seed's machines/docker.nix is such a fragment: the driver lives elsewhere.
    assert_eq!(
        src(
            "{ hardware.nvidia-container-toolkit.enable = true; virtualisation.docker.enable = true; }"
        ),
        vec![]
    );
    // Configuring the driver in the file, but not the way the assertion checks, warns.
    assert_eq!(
        ids(&src(
            "{ hardware.nvidia-container-toolkit.enable = true; hardware.nvidia.open = true; }"
        )),
        ["no-driver"]
    );
}

#[test]
fn a_parse_error_names_file_line_and_column() {
    let path = fixture("parse-error.nix");
    let err = lint::lint_file(&path).expect_err("parse error");
    match &err {
        LintError::Syntax { problem, .. } => {
            assert_eq!((problem.line, problem.column), (5, 44));
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "{}:5:44: syntax error: unexpected `=`, expected `;` (a `;` missing at the end of the binding before shows up here) (fix: correct the Nix syntax here; `nix-instantiate --parse` shows the same place)",
            path.display()
        )
    );
    let empty = lint::lint_source(Path::new("e.nix"), "").expect_err("empty");
    assert!(
        empty
            .to_string()
            .starts_with("e.nix:1:1: syntax error: unexpected end of file"),
        "{empty}"
    );
    let missing = lint::lint_file(Path::new("/nonexistent/machine.nix")).expect_err("missing");
    assert!(matches!(missing, LintError::Read { .. }), "{missing}");
    assert!(
        missing.to_string().contains("fix: check the path"),
        "{missing}"
    );
}

#[test]
fn report_exit_codes_follow_run() {
    assert_eq!(
        lint::lint_paths(&[fixture("seed-docker.nix")]).exit_code(),
        0
    );
    assert_eq!(lint::lint_paths(&[fixture("no-driver.nix")]).exit_code(), 1);
    let mixed = lint::lint_paths(&[fixture("combined.nix"), fixture("parse-error.nix")]);
    assert_eq!(mixed.exit_code(), 2);
    assert_eq!(mixed.findings.len(), 9);
    assert_eq!(mixed.errors.len(), 1);
}

// The binary.

fn bin(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
        .arg("lint")
        .args(args)
        .output()
        .expect("run cdi-harness")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn binary_exit_0_on_the_seed() {
    let out = bin(&[&fixture("seed-docker.nix")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn binary_exit_1_with_one_line_per_finding() {
    let path = fixture("combined.nix");
    let out = bin(&[&fixture("seed-docker.nix"), &path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert_eq!(
        lines[0],
        format!(
            "{}:6:28: {GPUS} (fix: use `--device nvidia.com/gpu=all` (or `nvidia.com/gpu=N` for one GPU))",
            path.display()
        )
    );
    assert!(lines[8].contains(":25:37: warning: "), "{}", lines[8]);
    assert!(
        stderr(&out).contains("9 pitfall(s) (1 warning(s)) in 2 file(s)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn binary_exit_2_on_parse_errors_unreadable_files_and_usage() {
    let bad = fixture("parse-error.nix");
    let out = bin(&[&bad, &fixture("docker-24.nix")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}:5:44: syntax error", bad.display())),
        "{}",
        stderr(&out)
    );
    // The other file is still linted.
    assert!(
        stdout(&out).contains("docker-24.nix:7:5: "),
        "{}",
        stdout(&out)
    );

    let out = bin(&[Path::new("/nonexistent/machine.nix")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/machine.nix: cannot read"));

    let out = bin(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
