//! The checks of the spec files themselves: present, valid, the devices they resolve,
//! their snapshot, and the cross-checks against the driver's GPUs.

use crate::cdi::{LoadedSpec, Notice, Registry};
use crate::check_id::CheckId;
use crate::hints::SPEC_MISSING_FIX;
use crate::outcome::{Cause, Verdict};
use crate::scenario::Scenario;

use super::compare::{DeviceComparison, join};
use super::facts::Facts;

/// The spec file the scenario names, as loaded (the highest-priority copy).
pub(super) fn the_spec<'a>(s: &Scenario, facts: &'a Facts) -> Option<&'a LoadedSpec> {
    facts.registry.as_ref()?.spec_named(&s.spec_file)
}

/// The registry, or the skip for a check that needs the spec files.
fn registry(facts: &Facts) -> Result<&Registry, Verdict> {
    if let Some(why) = &facts.specs_unreachable {
        return Err(Verdict::skip(why.clone()));
    }
    if let Some(e) = &facts.specs_error {
        return Err(Verdict::fail(e.message.clone(), None).because_of(e.cause));
    }
    facts
        .registry
        .as_ref()
        .ok_or_else(|| Verdict::skip("the spec directories were not read"))
}

pub(super) fn dirs_list(facts: &Facts) -> String {
    facts
        .spec_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn missing(s: &Scenario, facts: &Facts, what: &str) -> Verdict {
    Verdict::fail(
        format!(
            "{what} {} in the spec directories ({}; from {}): the generator did not run or failed",
            s.spec_file,
            dirs_list(facts),
            facts.spec_dirs_source
        ),
        Some(SPEC_MISSING_FIX.into()),
    )
    .because(Cause::SpecMissing)
}

pub(super) fn spec_present(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let reg = match registry(facts) {
        Ok(r) => r,
        Err(v) => return v,
    };
    let Some(p) = facts.spec_files.first() else {
        return missing(s, facts, "no CDI spec");
    };
    let nvidia = reg
        .devices
        .keys()
        .filter(|d| d.starts_with("nvidia.com/gpu="))
        .count();
    Verdict::pass(format!(
        "{} exists; the engine resolves {nvidia} nvidia.com/gpu device(s)",
        p.display()
    ))
}

pub(super) fn spec_valid(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let reg = match registry(facts) {
        Ok(r) => r,
        Err(v) => return v,
    };
    let mut problems = Vec::new();
    for n in &reg.notices {
        match n {
            // The engine uses the winner silently / skips the file by design: a note, not a fault.
            Notice::Shadowed { .. } | Notice::Ignored { .. } => {}
            other => problems.push(other.to_string()),
        }
    }
    // What the engine's own CDI library (its version's rules) says of the spec: errors
    // refuse it; SPEC.md warnings and other engines' verdicts are noted, not failed, so
    // this check and the engine's warnings (`info_warnings`) never disagree.
    let mut remarks = Vec::new();
    match the_spec(s, facts) {
        Some(loaded) => {
            let report = reg
                .report_for(&loaded.path)
                .cloned()
                .unwrap_or_else(|| crate::cdi::validate_spec(&loaded.spec, &reg.rules));
            for p in &report.errors {
                problems.push(format!("{}: {p}", loaded.path.display()));
            }
            for w in &report.warnings {
                remarks.push(format!("warning: {}: {w}", loaded.path.display()));
            }
            for n in &report.notes {
                remarks.push(format!("note: {}: {n}", loaded.path.display()));
            }
        }
        None if facts.spec_files.is_empty() => {
            return missing(s, facts, "there is no");
        }
        None => {}
    }
    if reg.specs.is_empty() && problems.is_empty() {
        return Verdict::skip(format!("no spec file in {} to validate", dirs_list(facts)));
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        let shadowed: Vec<String> = reg
            .notices
            .iter()
            .filter(|n| matches!(n, Notice::Shadowed { .. } | Notice::Ignored { .. }))
            .map(|n| n.to_string())
            .collect();
        let mut msg = format!(
            "{} spec file(s) load and validate ({})",
            reg.specs.len(),
            reg.rules.describe()
        );
        if !shadowed.is_empty() {
            msg.push_str(&format!(" (note: {})", shadowed.join("; ")));
        }
        if !remarks.is_empty() {
            msg.push_str(&format!("; {}", remarks.join("; ")));
        }
        return Verdict::pass(msg);
    }
    let conflict = reg
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Conflict { .. }));
    let (fix, cause) = if conflict {
        (
            "remove the stale hand-made spec (NixOS generates /run/cdi/nvidia-container-toolkit.json at boot; a leftover /etc/cdi/nvidia.yaml from `nvidia-ctk cdi generate` conflicts with it), then check `docker info` again",
            Cause::SpecConflict,
        )
    } else {
        (
            "regenerate the spec: sudo systemctl restart nvidia-container-toolkit-cdi-generator; remove spec files you wrote by hand",
            Cause::SpecInvalid,
        )
    };
    Verdict::fail(problems.join("; "), Some(fix.into())).because(cause)
}

fn notices_text(reg: &Registry) -> Vec<String> {
    reg.notices.iter().map(|n| n.to_string()).collect()
}

pub(super) fn spec_devices(s: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    let reg = match registry(facts) {
        Ok(r) => r,
        Err(v) => return v,
    };
    let cmp = DeviceComparison::new(s, reg.devices.keys());
    if cmp.matches() && !cmp.expects_any() {
        return Verdict::skip(
            "the scenario expects no device, and the spec dirs resolve none: nothing to compare",
        );
    }
    if cmp.matches() {
        return Verdict::pass(format!(
            "the engine resolves exactly {}{}",
            join(&cmp.actual),
            cmp.alias_note()
        ));
    }
    let mut msg = format!("the spec directories resolve {}", cmp.describe("no device"));
    let notes = notices_text(reg);
    if !notes.is_empty() {
        msg.push_str(&format!(" (because: {})", notes.join("; ")));
    }
    let (fix, cause) = if reg
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Conflict { .. }))
    {
        (
            "remove the stale spec file named above; the engine drops devices that two spec files in one directory define",
            Cause::SpecConflict,
        )
    } else if cmp.actual.is_empty() && facts.spec_files.is_empty() {
        (SPEC_MISSING_FIX, Cause::SpecMissing)
    } else {
        (
            "regenerate the spec (sudo systemctl restart nvidia-container-toolkit-cdi-generator) and check gpus.count in the scenario",
            Cause::SpecStale,
        )
    };
    Verdict::fail(msg, Some(fix.into())).because(cause)
}

pub(super) fn spec_snapshot(_: &Scenario, facts: &Facts, _: &CheckId) -> Verdict {
    if let Some(why) = &facts.specs_unreachable {
        return Verdict::skip(why.clone());
    }
    facts
        .snapshot
        .clone()
        .unwrap_or_else(|| Verdict::skip("the snapshot was not taken in this run"))
}

/// The NVML cross-checks (see [`crate::gpu`]): skipped with the reason when the
/// inventory was not read, there is no NVML, or the engine's files are not this
/// machine's; never passed without it.
pub(super) fn gpu_cross_check(s: &Scenario, facts: &Facts, id: &CheckId) -> Verdict {
    if let Some(why) = &facts.specs_unreachable {
        return Verdict::skip(format!(
            "{why}; this machine's GPUs are not the engine's, so they are not compared"
        ));
    }
    let Some(g) = &facts.gpu else {
        return Verdict::skip("the GPU inventory was not read in this run");
    };
    let spec = the_spec(s, facts);
    let v = match id {
        CheckId::SpecFresh => crate::gpu::check_spec_fresh(
            spec,
            facts.spec_mtime,
            g.boot_time,
            g.inventory.as_ref().ok(),
        ),
        CheckId::GpuSpec => match g.need() {
            Ok(inv) => crate::gpu::check_spec_against(inv, spec),
            Err(v) => v,
        },
        _ => match g.need() {
            Ok(inv) => crate::gpu::check_containers(inv, &facts.runs),
            Err(v) => v,
        },
    };
    if v.status == crate::outcome::Status::Fail && v.cause.is_none() {
        return v.because(Cause::SpecStale);
    }
    v
}
