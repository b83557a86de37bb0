//! `machine_config`: the scenario's NixOS configuration against the write-up's
//! pitfalls, and on a host, against what the machine really runs (the engine's CDI
//! state and runtimes, the generator unit, the daemon's effective config). Where
//! nothing of the machine could be compared, the verdict says that it only restates
//! the scenario: its evidence is `declared`, never `measured`.

use crate::check_id::CheckId;
use crate::outcome::{BackendKind, Cause, Evidence, Verdict};
use crate::scenario::Scenario;

use super::facts::Facts;

/// What the machine was seen to run, compared with what the scenario declares.
struct Comparison {
    compared: Vec<String>,
    differences: Vec<String>,
    not_compared: Vec<String>,
}

fn compare_with_machine(s: &Scenario, facts: &Facts) -> Comparison {
    let mut c = Comparison {
        compared: Vec::new(),
        differences: Vec::new(),
        not_compared: Vec::new(),
    };
    let declared_cdi = s.facts.cdi_enabled();
    match &facts.info {
        Some(Ok(info)) => {
            let cdi_on = !info.cdi_spec_dirs.is_empty();
            if cdi_on == declared_cdi {
                c.compared.push(format!(
                    "CDI {} in the engine",
                    if cdi_on { "on" } else { "off" }
                ));
            } else {
                c.differences.push(format!(
                    "the scenario has CDI {} but engine {} has it {}",
                    if declared_cdi { "on" } else { "off" },
                    info.server_version,
                    if cdi_on { "on" } else { "off" }
                ));
            }
            let declared_nvidia = s.facts.manual_runtimes.keys().any(|k| k.contains("nvidia"));
            let engine_nvidia = info
                .runtimes
                .iter()
                .any(|(n, p)| n.contains("nvidia") || p.contains("nvidia"));
            if declared_nvidia == engine_nvidia {
                c.compared.push(format!(
                    "{} manual NVIDIA runtime",
                    if engine_nvidia { "a" } else { "no" }
                ));
            } else {
                c.differences.push(format!(
                    "the scenario declares {} manual NVIDIA runtime but the engine has {}",
                    if declared_nvidia { "a" } else { "no" },
                    if engine_nvidia { "one" } else { "none" }
                ));
            }
        }
        Some(Err(e)) => c.not_compared.push(format!("the engine ({e})")),
        None => c.not_compared.push("the engine (not queried)".into()),
    }
    match &facts.machine {
        Some(probe) => {
            match probe.generator_unit {
                Some(exists) if exists == s.facts.toolkit_enabled => c.compared.push(format!(
                    "the generator unit {}",
                    if exists { "exists" } else { "is absent" }
                )),
                Some(exists) => c.differences.push(format!(
                    "the scenario has hardware.nvidia-container-toolkit.enable = {} but nvidia-container-toolkit-cdi-generator.service {}",
                    s.facts.toolkit_enabled,
                    if exists { "exists" } else { "does not exist" }
                )),
                None => {}
            }
            if let Some((path, cfg)) = &probe.daemon_config {
                if let Some(cdi) = cfg.cdi_feature {
                    if cdi == declared_cdi {
                        c.compared
                            .push(format!("features.cdi = {cdi} in {}", path.display()));
                    } else {
                        c.differences.push(format!(
                            "{} sets features.cdi = {cdi}, the scenario {declared_cdi}",
                            path.display()
                        ));
                    }
                }
            }
            c.not_compared.extend(probe.notes.iter().cloned());
        }
        None => c
            .not_compared
            .push("the generator unit and the daemon's config (not probed)".into()),
    }
    c
}

pub(super) fn machine_config(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let pitfalls = s.facts.pitfalls();
    let lint = if pitfalls.is_empty() {
        Ok(
            "hardware.nvidia-container-toolkit.enable = true and docker enabled, with no manual NVIDIA runtime",
        )
    } else {
        Err(pitfalls)
    };
    // On sim the engine is built from the scenario: comparing it would compare the
    // scenario with itself. Only a host's machine is compared.
    if facts.backend != Some(BackendKind::Host) || facts.specs_unreachable.is_some() {
        return match lint {
            Ok(text) => Verdict::pass(format!("the scenario declares {text}")),
            Err(p) => pitfall_failure(&p),
        }
        .with_evidence(Evidence::Declared);
    }
    let cmp = compare_with_machine(s, facts);
    if let Err(p) = lint {
        return pitfall_failure(&p).with_evidence(Evidence::Declared);
    }
    if !cmp.differences.is_empty() {
        return Verdict::fail(
            format!("this machine differs from the scenario: {}", cmp.differences.join("; ")),
            Some("describe this machine in the scenario (cdi-harness scenario init --from-host), or fix the machine's configuration and rebuild it".into()),
        )
        .because(Cause::ConfigPitfall)
        .with_evidence(Evidence::Measured);
    }
    let unseen = if cmp.not_compared.is_empty() {
        String::new()
    } else {
        format!(" (not compared: {})", cmp.not_compared.join("; "))
    };
    if cmp.compared.is_empty() {
        return Verdict::skip(format!(
            "nothing of this machine could be compared with the scenario{unseen}; the scenario itself has no known pitfall"
        ))
        .with_evidence(Evidence::Declared);
    }
    Verdict::pass(format!(
        "the machine runs what the scenario declares: {}{unseen}",
        cmp.compared.join(", ")
    ))
    .with_evidence(Evidence::Measured)
}

fn pitfall_failure(pitfalls: &[(String, String)]) -> Verdict {
    let message = pitfalls
        .iter()
        .map(|(p, _)| p.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let fix = pitfalls
        .iter()
        .map(|(_, f)| f.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let has = |text: &str| pitfalls.iter().any(|(p, _)| p.contains(text));
    let cause = if has("NVIDIA runtime") {
        Cause::ManualRuntime
    } else if has("features.cdi = false") {
        Cause::CdiDisabled
    } else {
        Cause::ConfigPitfall
    };
    Verdict::fail(message, Some(fix)).because(cause)
}
