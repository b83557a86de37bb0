//! The checks of what the engine reports: `docker info` through the API and as the
//! CLI prints it, its runtimes, and which engine (rootless or rootful) was reached.

use std::collections::BTreeSet;
use std::path::Path;

use crate::check_id::CheckId;
use crate::engine::EngineInfo;
use crate::hints::SPEC_MISSING_FIX;
use crate::outcome::{Cause, Verdict};
use crate::scenario::Scenario;

use super::compare::{DeviceComparison, join};
use super::facts::Facts;

/// `docker info` from the API, or the verdict for a check that needs it.
pub(super) fn with_info(facts: &Facts) -> Result<&EngineInfo, Verdict> {
    match &facts.info {
        None => Err(Verdict::skip("the engine was not queried")),
        Some(Err(e)) => {
            Err(Verdict::fail(format!("`docker info` failed: {e}"), None).because_of(e.cause))
        }
        Some(Ok(i)) => Ok(i),
    }
}

pub(super) fn info_spec_dirs(_: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    if info.cdi_spec_dirs.is_empty() {
        return Verdict::fail(
            format!(
                "engine {} reports no CDI spec directories: CDI is off, so `--device nvidia.com/gpu=…` fails with `could not select device driver \"cdi\"`",
                info.server_version
            ),
            Some("CDI needs docker >= 25 with features.cdi = true; hardware.nvidia-container-toolkit.enable = true sets it (remove any features.cdi = false), then sudo systemctl restart docker".into()),
        )
        .because(Cause::CdiDisabled);
    }
    let dirs = info.cdi_spec_dirs.join(", ");
    if let Some(why) = &facts.specs_unreachable {
        return Verdict::skip(format!(
            "the engine reads CDI specs from {dirs}; {why}, so whether they hold the spec is not known"
        ));
    }
    let Some(p) = facts.spec_files.first() else {
        return Verdict::skip(format!(
            "the engine reads CDI specs from {dirs}, but there is no spec file whose directory could be compared with them (see spec_present)"
        ));
    };
    let covered = info.cdi_spec_dirs.iter().any(|d| {
        p.parent()
            .is_some_and(|pp| facts.canonical(pp) == facts.canonical(Path::new(d)))
    });
    if covered {
        Verdict::pass(format!(
            "CDI spec directories: {dirs} (holding {})",
            p.display()
        ))
    } else {
        Verdict::fail(
            format!(
                "the engine reads CDI specs from {dirs}, which does not hold {}",
                p.display()
            ),
            Some(
                "put the spec where the engine looks, or add its directory to cdi-spec-dirs".into(),
            ),
        )
        .because(Cause::SpecMissing)
    }
}

fn conflict_explanation(info: &EngineInfo) -> String {
    let w = info.cdi_warnings();
    if w.is_empty() {
        String::new()
    } else {
        format!(" (the engine's warnings: {})", w.join(" | "))
    }
}

pub(super) fn info_devices(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let Some(found) = &info.discovered_devices else {
        return Verdict::skip(format!(
            "engine {} does not list discovered CDI devices (engines older than 28.2 have no `Discovered Devices`)",
            info.server_version
        ));
    };
    let cmp = DeviceComparison::new(s, found);
    if cmp.matches() && !cmp.expects_any() {
        return Verdict::skip(
            "the scenario expects no device, and docker info discovers none: nothing to compare",
        );
    }
    if cmp.matches() {
        return Verdict::pass(format!(
            "docker info discovers {}{}",
            join(&cmp.actual),
            cmp.alias_note()
        ));
    }
    let mut msg = format!("docker info discovers {}", cmp.describe("no NVIDIA device"));
    msg.push_str(&conflict_explanation(info));
    if info.cdi_spec_dirs.is_empty() {
        return Verdict::fail(msg, Some("CDI is off in the engine: features.cdi = true (hardware.nvidia-container-toolkit.enable sets it), then sudo systemctl restart docker".into()))
            .because(Cause::CdiDisabled);
    }
    if !info.cdi_warnings().is_empty() {
        return Verdict::fail(
            msg,
            Some(
                "fix or remove the spec files the warnings name, then check `docker info` again"
                    .into(),
            ),
        )
        .because(Cause::SpecConflict);
    }
    let cause = if cmp.actual.is_empty() {
        Cause::SpecMissing
    } else {
        Cause::SpecStale
    };
    Verdict::fail(msg, Some(SPEC_MISSING_FIX.into())).because(cause)
}

pub(super) fn info_warnings(_: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let w = info.cdi_warnings();
    if w.is_empty() {
        // Measured: engine 26.1 loads the same conflicting specs silently, 28.5 reports
        // them; an engine that cannot report a problem must not pass for not reporting it.
        if info.version().is_some_and(|v| v < (28, 2)) {
            return Verdict::skip(format!(
                "engine {} does not report refused CDI spec files in `docker info` (engines older than 28.2 load them silently)",
                info.server_version
            ));
        }
        return Verdict::pass("the engine reports no CDI warnings");
    }
    Verdict::fail(
        format!("the engine refused CDI spec files: {}", w.join(" | ")),
        Some("fix or remove the spec files named; a stale second NVIDIA spec beside the generated one makes the engine drop the devices both define".into()),
    )
    .because(Cause::EngineWarning)
}

fn grep_lines(cli: &crate::engine::CliInfo) -> String {
    cli.grep_lines
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" / ")
}

pub(super) fn info_cli(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let cli = match &facts.cli {
        None => return Verdict::skip("no `docker` CLI on PATH (pass --docker-cli)"),
        Some(Err(e)) => {
            return Verdict::fail(format!("`docker info` failed: {e}"), None).because_of(e.cause);
        }
        Some(Ok(c)) => c,
    };
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let mut problems = Vec::new();
    if cli.spec_dirs != info.cdi_spec_dirs {
        problems.push(format!(
            "`CDI spec directories:` shows [{}] but the API says [{}]",
            cli.spec_dirs.join(", "),
            info.cdi_spec_dirs.join(", ")
        ));
    }
    let Some(api) = &info.discovered_devices else {
        if problems.is_empty() {
            return Verdict::skip(format!(
                "engine {} lists no discovered devices, so the `cdi: nvidia.com/gpu=…` lines the seed greps for cannot appear (the CDI spec directories the CLI shows do match the API)",
                info.server_version
            ));
        }
        return Verdict::fail(problems.join("; "), None).because(Cause::WrongOutput);
    };
    // Engine 28 prints no `Discovered Devices:` section when it discovered nothing.
    let c: BTreeSet<&String> = cli.devices.iter().flatten().collect();
    let a: BTreeSet<&String> = api.iter().collect();
    if c != a {
        problems.push("the `cdi:` lines differ from the API's discovered devices".to_string());
    }
    let mut missing_lines = false;
    for d in &s.expected_devices {
        let d = d.to_string();
        if !c.contains(&d) {
            missing_lines = true;
            problems.push(format!(
                "no line `cdi: {d}` (the seed's troubleshooting expects it)"
            ));
        }
    }
    if problems.is_empty() {
        if s.expected_devices.is_empty() {
            return Verdict::skip(format!(
                "the scenario expects no device, so no `cdi:` line is compared; the CLI agrees with the API: {}",
                grep_lines(cli)
            ));
        }
        return Verdict::pass(format!(
            "`docker info | grep -i cdi` shows: {}",
            grep_lines(cli)
        ));
    }
    let cause = if c != a {
        Cause::WrongOutput
    } else if missing_lines && info.cdi_spec_dirs.is_empty() {
        Cause::CdiDisabled
    } else if missing_lines && !info.cdi_warnings().is_empty() {
        Cause::SpecConflict
    } else if missing_lines && api.is_empty() {
        Cause::SpecMissing
    } else {
        Cause::SpecStale
    };
    Verdict::fail(
        format!(
            "{}; grep -i cdi shows: {}",
            problems.join("; "),
            grep_lines(cli)
        ),
        Some(SPEC_MISSING_FIX.into()),
    )
    .because(cause)
}

pub(super) fn daemon_runtimes(_: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let nvidia: Vec<String> = info
        .runtimes
        .iter()
        .filter(|(n, p)| n.contains("nvidia") || p.contains("nvidia"))
        .map(|(n, p)| format!("{n} ({})", if p.is_empty() { "no path" } else { p }))
        .collect();
    let names: Vec<&str> = info.runtimes.iter().map(|(n, _)| n.as_str()).collect();
    let mut problems = Vec::new();
    if !nvidia.is_empty() {
        problems.push(format!(
            "docker info lists a manual NVIDIA runtime: {}: this is the daemon.settings.runtimes / pkgs.nvidia-docker pitfall that breaks after `nix flake update`",
            nvidia.join(", ")
        ));
    }
    if info.default_runtime.contains("nvidia") {
        problems.push(format!("the default runtime is {}", info.default_runtime));
    }
    if problems.is_empty() {
        return Verdict::pass(format!(
            "runtimes: {} (no manual NVIDIA runtime)",
            names.join(" ")
        ));
    }
    Verdict::fail(
        problems.join("; "),
        Some("remove virtualisation.docker.daemon.settings.runtimes and any pkgs.nvidia-docker; rely solely on hardware.nvidia-container-toolkit.enable = true and use --device nvidia.com/gpu=all".into()),
    )
    .because(Cause::ManualRuntime)
}

/// The engine the checks reach must be the one the machine's users get by default:
/// the rootless one when `rootless.setSocketVariable = true`, else the rootful one.
pub(super) fn engine_mode(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let info = match with_info(facts) {
        Ok(i) => i,
        Err(v) => return v,
    };
    let mode = |rootless: bool| if rootless { "rootless" } else { "rootful" };
    if info.rootless == s.facts.rootless_default {
        return Verdict::pass(format!(
            "the engine is {}, as the machine's default Docker is",
            mode(info.rootless)
        ));
    }
    let fix = if s.facts.rootless_default {
        "point DOCKER_HOST at the rootless socket ($XDG_RUNTIME_DIR/docker.sock), as setSocketVariable = true does at login"
    } else {
        "unset DOCKER_HOST (or point it at /var/run/docker.sock): with setSocketVariable = false the rootful engine is the default"
    };
    Verdict::fail(
        format!(
            "the engine reached is {} but this machine's default Docker is {}",
            mode(info.rootless),
            mode(s.facts.rootless_default)
        ),
        Some(fix.into()),
    )
    .because(Cause::WrongEngine)
}
