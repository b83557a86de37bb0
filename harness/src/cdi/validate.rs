//! Spec validation with the load-time rules of the CDI library an engine bundles, every
//! problem at once, each with its field path.
//!
//! The engine's Go library stops at the first problem and refuses the whole file, so a
//! user fixing a spec by trial and error restarts the daemon once per mistake. This
//! module lists them all, in three kinds ([`Report`]):
//! - **errors**: what the chosen library refuses (`pkg/cdi/spec.go` `validate`,
//!   `pkg/cdi/device.go`, `pkg/cdi/container-edits.go`, `specs-go/version.go`
//!   `ValidateVersion`, `pkg/parser`), and the fields its spec structs lack (the YAML
//!   decoder is strict, so an unknown field refuses the file). Some of them crash the
//!   library instead ([`Finding::crash`]);
//! - **warnings**: what the engine loads although SPEC.md forbids it (relative paths, a
//!   hook timeout ≤ 0), which then fails or misbehaves when a container starts;
//! - **notes**: where another library version, i.e. another engine, decides differently.
//!
//! What the library does *not* check is not checked here either: annotation keys (the
//! library hands `map[string]string` to a check that only inspects `map[string]any`, so
//! it never runs on specs), the sign of `major`/`minor`, absolute paths.

use std::collections::HashMap;
use std::fmt;

use super::rules::{Library, Rules, other_deciders};
use super::spec::{ContainerEdits, Spec};

/// The newest spec version any modelled library knows; what a generator should write
/// for the newest engines.
pub const LATEST_CDI_VERSION: &str = "1.1.0";

/// Every `cdiVersion` the newest modelled library accepts (`specs-go/version.go`).
/// Older engines know fewer: see [`Library::known_versions`].
pub const KNOWN_CDI_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// The OCI hook points a CDI hook may name (`validHookNames` in the Go library).
const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// One problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The field path, e.g. `devices[1].containerEdits.deviceNodes[0].path`.
    pub path: String,
    /// What is wrong and, where it helps, what is allowed.
    pub message: String,
    /// For errors: the library panics on this input rather than refusing it.
    pub crash: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What one library makes of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The engine loads it and SPEC.md has no objection.
    Loads,
    /// The engine loads it, but it breaks SPEC.md (exit 0, or 1 with `--strict`).
    LoadsWithWarnings,
    /// The engine refuses the file: none of its devices exist.
    Refused,
}

impl Outcome {
    /// The word the CLI prints.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Loads => "loads",
            Outcome::LoadsWithWarnings => "loads with warnings",
            Outcome::Refused => "refused",
        }
    }
}

/// Everything one set of rules says about a spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Why the engine refuses the file; empty when it loads it.
    pub errors: Vec<Finding>,
    /// SPEC.md violations the engine lets through.
    pub warnings: Vec<Finding>,
    /// Where another engine's library decides differently (path `-` when the note is
    /// about the whole file).
    pub notes: Vec<Finding>,
}

impl Report {
    /// The verdict: refused if any error, else loads (with warnings if any).
    pub fn outcome(&self) -> Outcome {
        if !self.errors.is_empty() {
            Outcome::Refused
        } else if !self.warnings.is_empty() {
            Outcome::LoadsWithWarnings
        } else {
            Outcome::Loads
        }
    }

    /// Whether the library would panic rather than refuse.
    pub fn crashes(&self) -> bool {
        self.errors.iter().any(|e| e.crash)
    }
}

/// The verdict of `rules` on a parsed spec, with notes where another modelled library
/// decides differently. This is the function the harness's own checks call with the
/// connected engine's rules, so they and `cdi validate` cannot disagree.
pub fn validate_spec(spec: &Spec, rules: &Rules) -> Report {
    let mut report = validate_without_notes(spec, rules.library);
    report.notes = compare_with_others(spec, rules, &report, |s, lib| {
        validate_without_notes(s, lib)
    });
    report
}

/// The notes for `report` (made under `rules`): one per other decider whose verdict
/// differs, saying what it does. `judge` gives that decider's report.
pub(crate) fn compare_with_others(
    spec: &Spec,
    rules: &Rules,
    report: &Report,
    judge: impl Fn(&Spec, Library) -> Report,
) -> Vec<Finding> {
    let mine = (report.outcome() == Outcome::Refused, report.crashes());
    let mut notes = Vec::new();
    for other in other_deciders(rules) {
        let theirs = judge(spec, other.library);
        if (theirs.outcome() == Outcome::Refused, theirs.crashes()) == mine {
            continue;
        }
        notes.push(note_for(&other, &theirs));
    }
    notes
}

/// One note: what `other` does with the spec, naming its first reason.
fn note_for(other: &Rules, theirs: &Report) -> Finding {
    let who = other.decider();
    let first = theirs.errors.iter().find(|e| e.crash == theirs.crashes());
    match first {
        Some(e) if e.crash => Finding {
            path: e.path.clone(),
            message: match &other.engine {
                Some(engine) => format!("crashes the parser of engine {engine}: {}", e.message),
                None => format!("crashes {who}: {}", e.message),
            },
            crash: false,
        },
        Some(e) => Finding {
            path: e.path.clone(),
            message: format!("refused by {who}: {}", e.message),
            crash: false,
        },
        None => Finding {
            path: "-".to_owned(),
            message: format!("loads with {who}"),
            crash: false,
        },
    }
}

/// The library's verdict alone.
pub(crate) fn validate_without_notes(spec: &Spec, library: Library) -> Report {
    let mut v = Validator {
        library,
        report: Report::default(),
    };
    v.fields(spec);
    v.version(spec);
    v.kind(&spec.kind);
    if let Some(edits) = &spec.container_edits {
        v.edits("containerEdits", edits);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, device) in spec.devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        if let Err(why) = device_name(&device.name) {
            v.error(&format!("{at}.name"), why);
        }
        let edits_at = format!("{at}.containerEdits");
        if device.container_edits.is_empty() {
            v.error(
                &edits_at,
                "empty containerEdits (\"invalid device, empty device edits\"): a device needs at least one of env, \
                 deviceNodes, hooks, mounts, additionalGids, intelRdt or netDevices"
                    .to_owned(),
            );
        }
        v.edits(&edits_at, &device.container_edits);
        if let Some(first) = seen.get(device.name.as_str()) {
            v.error(
                &format!("{at}.name"),
                format!(
                    "duplicate device name {:?} (also devices[{first}]): \"invalid spec, multiple device\"",
                    device.name
                ),
            );
        } else {
            seen.insert(device.name.as_str(), i);
        }
    }
    if spec.devices.is_empty() && library.requires_devices() {
        v.error(
            "devices",
            "no devices (\"invalid spec, no devices\"): a spec must define at least one device"
                .to_owned(),
        );
    }
    v.report
}

/// Compatibility wrapper: the problems under the default engine's rules
/// ([`Rules::default_engine`]), errors as [`Severity::Rejected`] and warnings as
/// [`Severity::Violation`]. New code calls [`validate_spec`] with the engine's rules.
pub fn validate(spec: &Spec) -> Vec<Problem> {
    let report = validate_spec(spec, &Rules::default_engine());
    let as_problem = |f: Finding, severity| Problem {
        path: f.path,
        message: f.message,
        severity,
    };
    let mut out: Vec<Problem> = report
        .errors
        .into_iter()
        .map(|f| as_problem(f, Severity::Rejected))
        .collect();
    out.extend(
        report
            .warnings
            .into_iter()
            .map(|f| as_problem(f, Severity::Violation)),
    );
    out
}

/// How bad a [`Problem`] is (the compatibility form of [`Report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The engine's CDI library refuses the spec.
    Rejected,
    /// The engine loads the spec, but it breaks SPEC.md.
    Violation,
}

/// One problem in the compatibility form returned by [`validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field path.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Whether the engine refuses the file for it.
    pub severity: Severity,
}

impl Problem {
    /// Whether the engine refuses the whole file because of this problem.
    pub fn is_rejected(&self) -> bool {
        self.severity == Severity::Rejected
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a spec needs a given minimum `cdiVersion`: the newest feature it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The minimum version, e.g. `0.5.0`.
    pub version: &'static str,
    /// The feature, in words, e.g. `a device name starting with a digit`.
    pub feature: String,
    /// Where the feature is used, e.g. `devices[0].name`.
    pub path: String,
}

/// The lowest `cdiVersion` the spec's features need under the newest library, with the
/// feature that needs it; `None` when 0.3.0 (the earliest the library accepts) suffices.
pub fn minimum_version(spec: &Spec) -> Option<Requirement> {
    minimum_version_for(spec, Library::Main)
}

/// [`minimum_version`] as one library computes it (the `requiresV0x0` functions of its
/// `version.go`); features a library does not know cannot raise its minimum.
pub fn minimum_version_for(spec: &Spec, library: Library) -> Option<Requirement> {
    let req = |version: &'static str, feature: &str, path: String| Requirement {
        version,
        feature: feature.to_owned(),
        path,
    };
    let levels = edit_levels(spec);

    if library.has_v1_1_fields() {
        for (at, edits) in &levels {
            if edits.net_devices.as_ref().is_some_and(|n| !n.is_empty()) {
                return Some(req("1.1.0", "netDevices", format!("{at}.netDevices")));
            }
            if let Some(rdt) = &edits.intel_rdt {
                if rdt.schemata.is_some() {
                    return Some(req(
                        "1.1.0",
                        "intelRdt.schemata",
                        format!("{at}.intelRdt.schemata"),
                    ));
                }
                if rdt.enable_monitoring == Some(true) {
                    return Some(req(
                        "1.1.0",
                        "intelRdt.enableMonitoring",
                        format!("{at}.intelRdt.enableMonitoring"),
                    ));
                }
            }
        }
    }
    for (at, edits) in &levels {
        if edits.intel_rdt.is_some() {
            return Some(req("0.7.0", "intelRdt", format!("{at}.intelRdt")));
        }
        if edits
            .additional_gids
            .as_ref()
            .is_some_and(|g| !g.is_empty())
        {
            return Some(req(
                "0.7.0",
                "additionalGids",
                format!("{at}.additionalGids"),
            ));
        }
    }
    if spec.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        return Some(req("0.6.0", "annotations", "annotations".to_owned()));
    }
    for (i, d) in spec.devices.iter().enumerate() {
        if d.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
            return Some(req(
                "0.6.0",
                "annotations",
                format!("devices[{i}].annotations"),
            ));
        }
    }
    if spec
        .kind
        .split_once('/')
        .is_some_and(|(vendor, class)| class.contains('.') && !vendor.is_empty())
    {
        return Some(req(
            "0.6.0",
            "a '.' in the class part of kind",
            "kind".to_owned(),
        ));
    }
    for (i, d) in spec.devices.iter().enumerate() {
        let first = d.name.bytes().next();
        let needs = if library.digit_rule_is_non_letter() {
            first.is_some_and(|c| !c.is_ascii_alphabetic())
        } else {
            first.is_some_and(|c| c.is_ascii_digit())
        };
        if needs {
            return Some(req(
                "0.5.0",
                "a device name starting with a digit",
                format!("devices[{i}].name"),
            ));
        }
    }
    for (at, edits) in &levels {
        for (j, node) in edits.device_nodes.iter().flatten().enumerate() {
            if node.host_path.as_deref().is_some_and(|p| !p.is_empty()) {
                return Some(req(
                    "0.5.0",
                    "deviceNodes[].hostPath",
                    format!("{at}.deviceNodes[{j}].hostPath"),
                ));
            }
        }
    }
    for (at, edits) in &levels {
        for (j, mount) in edits.mounts.iter().flatten().enumerate() {
            if mount.r#type.as_deref().is_some_and(|t| !t.is_empty()) {
                return Some(req(
                    "0.4.0",
                    "mounts[].type",
                    format!("{at}.mounts[{j}].type"),
                ));
            }
        }
    }
    None
}

/// Device-level edits in device order, then the spec-level ones, with their paths.
fn edit_levels(spec: &Spec) -> Vec<(String, &ContainerEdits)> {
    let mut levels: Vec<(String, &ContainerEdits)> = spec
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("devices[{i}].containerEdits"), &d.container_edits))
        .collect();
    if let Some(edits) = &spec.container_edits {
        levels.push(("containerEdits".to_owned(), edits));
    }
    levels
}

/// A version as the library normalizes it: one leading `v` dropped (`newVersion`).
fn bare_version(v: &str) -> &str {
    v.strip_prefix('v').unwrap_or(v)
}

/// `x.y.z` as numbers, for ordering known versions.
fn numeric_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() {
        return None;
    }
    Some(t)
}

/// The library's `ValidateDeviceName`: letters, digits, `_-.:`, starting and ending
/// with a letter or digit.
pub(crate) fn device_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let Some((&first, rest)) = b.split_first() else {
        return Err("device name is empty (\"invalid (empty) device name\")".to_owned());
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "device name {name:?} must start with a letter or digit"
        ));
    }
    let Some((&last, middle)) = rest.split_last() else {
        return Ok(());
    };
    if let Some(&bad) = middle
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':')))
    {
        return Err(format!(
            "device name {name:?} contains {} (allowed: letters, digits, '_', '-', '.', ':')",
            describe_byte(bad)
        ));
    }
    if !last.is_ascii_alphanumeric() {
        return Err(format!(
            "device name {name:?} must end with a letter or digit"
        ));
    }
    Ok(())
}

/// A byte of a name for messages: the character when ASCII, else "a non-ASCII character".
fn describe_byte(b: u8) -> String {
    if b.is_ascii() {
        format!("{:?}", b as char)
    } else {
        "a non-ASCII character".to_owned()
    }
}

/// Collects the findings of one library.
struct Validator {
    library: Library,
    report: Report,
}

impl Validator {
    fn error(&mut self, path: &str, message: String) {
        self.report.errors.push(Finding {
            path: path.to_owned(),
            message,
            crash: false,
        });
    }

    fn crash(&mut self, path: &str, message: String) {
        self.report.errors.push(Finding {
            path: path.to_owned(),
            message,
            crash: true,
        });
    }

    fn warning(&mut self, path: &str, message: String) {
        self.report.warnings.push(Finding {
            path: path.to_owned(),
            message,
            crash: false,
        });
    }

    /// Fields the library's spec structs do not have: the strict decoder refuses them.
    fn fields(&mut self, spec: &Spec) {
        let lib = self.library;
        for (at, edits) in edit_levels(spec) {
            if lib.has_v1_1_fields() {
                if let Some(rdt) = &edits.intel_rdt {
                    for (field, present) in [
                        ("enableCMT", rdt.enable_cmt.is_some()),
                        ("enableMBM", rdt.enable_mbm.is_some()),
                    ] {
                        if present {
                            self.error(
                                &format!("{at}.intelRdt.{field}"),
                                format!(
                                    "unknown field {field:?}: CDI library {lib} removed it (spec 1.1.0 replaced it with enableMonitoring)"
                                ),
                            );
                        }
                    }
                }
            } else {
                if edits.net_devices.is_some() {
                    self.error(
                        &format!("{at}.netDevices"),
                        format!(
                            "unknown field \"netDevices\": CDI library {lib} does not know it (it needs cdiVersion 1.1.0 and CDI library v1.1.0, engine 29 or later)"
                        ),
                    );
                }
                if let Some(rdt) = &edits.intel_rdt {
                    for (field, present) in [
                        ("schemata", rdt.schemata.is_some()),
                        ("enableMonitoring", rdt.enable_monitoring.is_some()),
                    ] {
                        if present {
                            self.error(
                                &format!("{at}.intelRdt.{field}"),
                                format!(
                                    "unknown field {field:?}: CDI library {lib} does not know it (added in v1.1.0)"
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    /// `ValidateVersion`: a known version, and at least what the features need.
    fn version(&mut self, spec: &Spec) {
        let lib = self.library;
        let known = lib.known_versions();
        let bare = bare_version(&spec.cdi_version);
        if !known.contains(&bare) {
            let what = if spec.cdi_version.is_empty() {
                "cdiVersion is missing".to_owned()
            } else {
                format!("cdiVersion {:?} is unknown", spec.cdi_version)
            };
            let first_knowing = Library::ALL
                .iter()
                .find(|l| l.known_versions().contains(&bare));
            let message = match first_knowing {
                Some(newer) => format!(
                    "cdiVersion {:?} needs CDI library {newer} or later ({lib} knows {}–{})",
                    spec.cdi_version,
                    known.first().copied().unwrap_or("?"),
                    lib.newest_spec_version()
                ),
                None => format!("{what} (CDI library {lib} knows {})", known.join(", ")),
            };
            self.error("cdiVersion", message);
            return;
        }
        let required = minimum_version_for(spec, lib);
        let min = required.as_ref().map_or("0.3.0", |r| r.version);
        if numeric_version(min) > numeric_version(bare) {
            let why = match &required {
                Some(r) => format!("{} (at {}) needs at least {}", r.feature, r.path, r.version),
                None => "the library accepts no spec older than 0.3.0".to_owned(),
            };
            self.error(
                "cdiVersion",
                format!(
                    "cdiVersion {:?} is too old (\"the spec version must be at least v{min}\"): {why}",
                    spec.cdi_version
                ),
            );
        }
    }

    /// `ParseQualifier` then `ValidateVendorName`/`ValidateClassName` on `kind`.
    fn kind(&mut self, kind: &str) {
        let (vendor, class) = match kind.split_once('/') {
            Some((v, c)) if !v.is_empty() && !c.is_empty() => (v, c),
            _ => {
                self.error(
                    "kind",
                    format!(
                        "kind {kind:?} is not of the form vendor/class (e.g. nvidia.com/gpu): \"invalid vendor. empty name\""
                    ),
                );
                return;
            }
        };
        for (part, value) in [("vendor", vendor), ("class", class)] {
            let b = value.as_bytes();
            if !b[0].is_ascii_alphabetic() {
                self.error(
                    "kind",
                    format!("{part} {value:?} in kind must start with a letter"),
                );
                return;
            }
            if b.len() == 1 {
                if self.library.panics_on_single_char_kind() {
                    self.crash(
                        "kind",
                        format!(
                            "one-character {part} {value:?} (slice bounds out of range in validateVendorOrClassName): use a {part} of at least two characters"
                        ),
                    );
                    return;
                }
                continue;
            }
            let middle = &b[1..b.len() - 1];
            if let Some(&bad) = middle
                .iter()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')))
            {
                self.error(
                    "kind",
                    format!(
                        "{part} {value:?} in kind contains {} (allowed: letters, digits, '_', '-', '.')",
                        describe_byte(bad)
                    ),
                );
                return;
            }
            if !b[b.len() - 1].is_ascii_alphanumeric() {
                self.error(
                    "kind",
                    format!("{part} {value:?} in kind must end with a letter or digit"),
                );
                return;
            }
        }
    }

    /// `ValidateEnv`: every entry has a `=` after a non-empty name.
    fn env(&mut self, at: &str, env: Option<&Vec<String>>) {
        for (i, entry) in env.into_iter().flatten().enumerate() {
            if entry.find('=').is_none_or(|p| p == 0) {
                self.error(
                    &format!("{at}[{i}]"),
                    format!("env entry {entry:?} is not KEY=VALUE with a non-empty KEY"),
                );
            }
        }
    }

    fn edits(&mut self, at: &str, edits: &ContainerEdits) {
        self.env(&format!("{at}.env"), edits.env.as_ref());

        for (i, node) in edits.device_nodes.iter().flatten().enumerate() {
            let node_at = format!("{at}.deviceNodes[{i}]");
            if node.path.is_empty() {
                self.error(
                    &format!("{node_at}.path"),
                    "path is required (\"invalid (empty) device path\"): where the node appears in the container, e.g. /dev/nvidia0"
                        .to_owned(),
                );
            } else if !node.path.starts_with('/') {
                self.warning(
                    &format!("{node_at}.path"),
                    format!(
                        "path {:?} is not absolute (SPEC.md): the OCI runtime needs an absolute device path",
                        node.path
                    ),
                );
            }
            if let Some(host) = node
                .host_path
                .as_deref()
                .filter(|h| !h.is_empty() && !h.starts_with('/'))
            {
                self.warning(
                    &format!("{node_at}.hostPath"),
                    format!("hostPath {host:?} is not absolute (SPEC.md): the engine would resolve it against its own working directory"),
                );
            }
            if let Some(t) = node
                .r#type
                .as_deref()
                .filter(|t| !matches!(*t, "" | "b" | "c" | "u" | "p"))
            {
                self.error(
                    &format!("{node_at}.type"),
                    format!("type {t:?} is not one of b (block), c or u (character), p (FIFO)"),
                );
            }
            if let Some(p) = node.permissions.as_deref() {
                let none_ok = self.library.accepts_no_permissions() && p == "none";
                if !none_ok && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                    let also = if p == "none" {
                        format!(
                            "; \"none\" needs CDI library {} (no engine bundles it yet)",
                            Library::Main
                        )
                    } else {
                        String::new()
                    };
                    self.error(
                        &format!("{node_at}.permissions"),
                        format!("permissions {p:?} may only contain r, w and m{also}"),
                    );
                }
            }
        }

        for (i, hook) in edits.hooks.iter().flatten().enumerate() {
            let hook_at = format!("{at}.hooks[{i}]");
            if !HOOK_NAMES.contains(&hook.hook_name.as_str()) {
                let what = if hook.hook_name.is_empty() {
                    "hookName is required".to_owned()
                } else {
                    format!("hookName {:?} is not an OCI hook", hook.hook_name)
                };
                self.error(
                    &format!("{hook_at}.hookName"),
                    format!("{what} (one of {})", HOOK_NAMES.join(", ")),
                );
            }
            if hook.path.is_empty() {
                self.error(
                    &format!("{hook_at}.path"),
                    "path is required: the hook executable".to_owned(),
                );
            } else if !hook.path.starts_with('/') {
                self.warning(
                    &format!("{hook_at}.path"),
                    format!(
                        "path {:?} is not absolute, which SPEC.md requires for hooks",
                        hook.path
                    ),
                );
            }
            self.env(&format!("{hook_at}.env"), hook.env.as_ref());
            if let Some(t) = hook.timeout.filter(|t| *t <= 0) {
                self.warning(
                    &format!("{hook_at}.timeout"),
                    format!("timeout {t} must be greater than zero (SPEC.md); leave it out to wait forever"),
                );
            }
        }

        for (i, mount) in edits.mounts.iter().flatten().enumerate() {
            let mount_at = format!("{at}.mounts[{i}]");
            if mount.host_path.is_empty() {
                self.error(
                    &format!("{mount_at}.hostPath"),
                    "hostPath is required (\"invalid mount, empty host path\"): the source on the host".to_owned(),
                );
            }
            if mount.container_path.is_empty() {
                self.error(
                    &format!("{mount_at}.containerPath"),
                    "containerPath is required (\"invalid mount, empty container path\"): the destination in the container".to_owned(),
                );
            } else if !mount.container_path.starts_with('/') {
                self.warning(
                    &format!("{mount_at}.containerPath"),
                    format!(
                        "containerPath {:?} is not absolute (SPEC.md): the OCI runtime needs an absolute mount destination",
                        mount.container_path
                    ),
                );
            }
        }

        if let Some(rdt) = &edits.intel_rdt {
            let clos = rdt.clos_id.as_deref().unwrap_or("");
            let root_ok = clos == "/" && self.library.accepts_root_clos_id();
            if !root_ok
                && (clos.len() >= 4096 || clos == "." || clos == ".." || clos.contains(['/', '\n']))
            {
                let also = if clos == "/" {
                    " (\"/\", the root group, needs CDI library v1.1.0)"
                } else {
                    ""
                };
                self.error(
                    &format!("{at}.intelRdt.closID"),
                    format!("closID {clos:?} is not a valid resctrl group name (\"invalid ClosID\"){also}"),
                );
            }
        }

        if self.library.has_v1_1_fields() {
            self.net_devices(at, edits);
        }
    }

    /// `ValidateNetDevices` (v1.1.0 on).
    fn net_devices(&mut self, at: &str, edits: &ContainerEdits) {
        let mut hosts: HashMap<&str, usize> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, dev) in edits.net_devices.iter().flatten().enumerate() {
            let dev_at = format!("{at}.netDevices[{i}]");
            if dev.host_interface_name.is_empty() {
                self.error(
                    &format!("{dev_at}.hostInterfaceName"),
                    "hostInterfaceName is required".to_owned(),
                );
                continue;
            }
            if dev.name.is_empty() {
                self.error(&format!("{dev_at}.name"), "name is required".to_owned());
                continue;
            }
            if let Some(first) = hosts.get(dev.host_interface_name.as_str()) {
                self.error(
                    &format!("{dev_at}.hostInterfaceName"),
                    format!(
                        "duplicate hostInterfaceName {:?} (also netDevices[{first}])",
                        dev.host_interface_name
                    ),
                );
            } else {
                hosts.insert(&dev.host_interface_name, i);
            }
            if let Some(first) = names.get(dev.name.as_str()) {
                self.error(
                    &format!("{dev_at}.name"),
                    format!("duplicate name {:?} (also netDevices[{first}])", dev.name),
                );
            } else {
                names.insert(&dev.name, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::spec::{
        Device, DeviceNode, Hook, IntelRdt, LinuxNetDevice, Mount, load_spec_file, parse_spec,
    };
    use rstest::rstest;
    use std::path::{Path, PathBuf};

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cdi")
            .join(name)
    }

    fn lib(l: Library) -> Rules {
        Rules::for_library(l)
    }

    /// A minimal valid spec the cases below break in one place each.
    fn base() -> Spec {
        Spec {
            cdi_version: "0.5.0".to_owned(),
            kind: "nvidia.com/gpu".to_owned(),
            annotations: None,
            devices: vec![Device {
                name: "0".to_owned(),
                annotations: None,
                container_edits: ContainerEdits {
                    device_nodes: Some(vec![DeviceNode {
                        path: "/dev/nvidia0".to_owned(),
                        ..DeviceNode::default()
                    }]),
                    ..ContainerEdits::default()
                },
            }],
            container_edits: Some(ContainerEdits {
                env: Some(vec!["NVIDIA_VISIBLE_DEVICES=void".to_owned()]),
                hooks: Some(vec![Hook {
                    hook_name: "createContainer".to_owned(),
                    path: "/usr/bin/nvidia-cdi-hook".to_owned(),
                    args: Some(vec![
                        "nvidia-cdi-hook".to_owned(),
                        "update-ldcache".to_owned(),
                    ]),
                    ..Hook::default()
                }]),
                mounts: Some(vec![Mount {
                    host_path: "/usr/lib/libcuda.so.1".to_owned(),
                    container_path: "/usr/lib/libcuda.so.1".to_owned(),
                    r#type: None,
                    options: Some(vec!["ro".to_owned(), "bind".to_owned()]),
                }]),
                ..ContainerEdits::default()
            }),
        }
    }

    fn dev_edits(s: &mut Spec) -> &mut ContainerEdits {
        &mut s.devices[0].container_edits
    }

    fn spec_edits(s: &mut Spec) -> &mut ContainerEdits {
        s.container_edits
            .get_or_insert_with(ContainerEdits::default)
    }

    fn paths(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn base_spec_and_fixtures_load_on_every_library() {
        for l in Library::ALL {
            assert_eq!(validate_spec(&base(), &lib(l)), Report::default(), "{l}");
            for name in ["nvidia-1gpu.json", "nvidia-multi-gpu.json", "nvidia.yaml"] {
                let spec = load_spec_file(&fixture(name)).expect("fixture parses");
                let r = validate_spec(&spec, &lib(l));
                assert_eq!(r.outcome(), Outcome::Loads, "{name} on {l}: {r:?}");
            }
        }
    }

    #[rstest]
    #[case::unknown_version(|s: &mut Spec| s.cdi_version = "0.9.0".into(), "cdiVersion", false)]
    #[case::missing_version(|s: &mut Spec| s.cdi_version.clear(), "cdiVersion", false)]
    #[case::version_too_old_for_digit_name(|s: &mut Spec| s.cdi_version = "0.4.0".into(), "cdiVersion", false)]
    #[case::version_below_0_3(|s: &mut Spec| { s.cdi_version = "0.2.0".into(); s.devices[0].name = "a".into(); }, "cdiVersion", false)]
    #[case::bad_kind(|s: &mut Spec| s.kind = "nvidia.com".into(), "kind", false)]
    #[case::no_devices(|s: &mut Spec| s.devices.clear(), "devices", false)]
    #[case::bad_device_name(|s: &mut Spec| s.devices[0].name = "a b".into(), "devices[0].name", false)]
    #[case::duplicate_device(|s: &mut Spec| { let d = s.devices[0].clone(); s.devices.push(d); }, "devices[1].name", false)]
    #[case::empty_device_edits(|s: &mut Spec| *dev_edits(s) = ContainerEdits::default(), "devices[0].containerEdits", false)]
    #[case::node_without_path(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode::default()]), "devices[0].containerEdits.deviceNodes[0].path", false)]
    #[case::node_bad_type(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "/dev/x".into(), r#type: Some("x".into()), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].type", false)]
    #[case::node_bad_permissions(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "/dev/x".into(), permissions: Some("rwx".into()), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].permissions", false)]
    #[case::node_no_permissions_on_1_0(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "/dev/x".into(), permissions: Some("none".into()), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].permissions", false)]
    #[case::bad_env(|s: &mut Spec| spec_edits(s).env = Some(vec!["OK=1".into(), "NOEQUALS".into()]), "containerEdits.env[1]", false)]
    #[case::env_empty_key(|s: &mut Spec| spec_edits(s).env = Some(vec!["=1".into()]), "containerEdits.env[0]", false)]
    #[case::bad_hook_name(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "preStart".into(), path: "/bin/true".into(), ..Hook::default() }]), "containerEdits.hooks[0].hookName", false)]
    #[case::hook_without_path(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), ..Hook::default() }]), "containerEdits.hooks[0].path", false)]
    #[case::hook_bad_env(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), path: "/bin/true".into(), env: Some(vec!["X".into()]), ..Hook::default() }]), "containerEdits.hooks[0].env[0]", false)]
    #[case::mount_without_host_path(|s: &mut Spec| dev_edits(s).mounts = Some(vec![Mount { container_path: "/x".into(), ..Mount::default() }]), "devices[0].containerEdits.mounts[0].hostPath", false)]
    #[case::mount_without_container_path(|s: &mut Spec| dev_edits(s).mounts = Some(vec![Mount { host_path: "/x".into(), ..Mount::default() }]), "devices[0].containerEdits.mounts[0].containerPath", false)]
    #[case::annotations_need_0_6(|s: &mut Spec| s.devices[0].annotations = Some([("k".to_owned(), "v".to_owned())].into()), "cdiVersion", false)]
    #[case::bad_clos_id(|s: &mut Spec| { s.cdi_version = "0.7.0".into(); spec_edits(s).intel_rdt = Some(IntelRdt { clos_id: Some("..".into()), ..IntelRdt::default() }); }, "containerEdits.intelRdt.closID", false)]
    #[case::net_devices_unknown_before_1_1(|s: &mut Spec| dev_edits(s).net_devices = Some(vec![LinuxNetDevice { host_interface_name: "eth1".into(), name: "net0".into() }]), "devices[0].containerEdits.netDevices", false)]
    #[case::single_char_vendor_crashes(|s: &mut Spec| s.kind = "a/gpu".into(), "kind", true)]
    fn each_refused_case_reports_exactly_its_path_on_engine_28_5(
        #[case] breaker: fn(&mut Spec),
        #[case] path: &str,
        #[case] crash: bool,
    ) {
        let mut spec = base();
        breaker(&mut spec);
        let report = validate_spec(&spec, &lib(Library::V1_0));
        let got: Vec<(&str, bool)> = report
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.crash))
            .collect();
        assert_eq!(got, [(path, crash)], "{report:#?}");
    }

    #[rstest]
    #[case::node_relative_path(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "dev/nvidia0".into(), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].path")]
    #[case::hook_relative_path(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), path: "nvidia-cdi-hook".into(), ..Hook::default() }]), "containerEdits.hooks[0].path")]
    #[case::hook_zero_timeout(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), path: "/bin/true".into(), timeout: Some(0), ..Hook::default() }]), "containerEdits.hooks[0].timeout")]
    #[case::mount_relative_container_path(|s: &mut Spec| dev_edits(s).mounts = Some(vec![Mount { host_path: "/x".into(), container_path: "x".into(), ..Mount::default() }]), "devices[0].containerEdits.mounts[0].containerPath")]
    fn spec_md_violations_are_warnings_not_refusals(
        #[case] breaker: fn(&mut Spec),
        #[case] path: &str,
    ) {
        let mut spec = base();
        breaker(&mut spec);
        for l in Library::ALL {
            let report = validate_spec(&spec, &lib(l));
            assert_eq!(
                report.outcome(),
                Outcome::LoadsWithWarnings,
                "{l}: {report:?}"
            );
            assert_eq!(paths(&report.warnings), [path]);
        }
    }

    #[rstest]
    #[case::negative_major(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "/dev/x".into(), major: Some(-1), ..DeviceNode::default() }]))]
    #[case::annotation_key_with_two_slashes(|s: &mut Spec| { s.cdi_version = "0.6.0".into(); s.annotations = Some([("a/b/c".to_owned(), "v".to_owned())].into()); })]
    #[case::enable_cmt_at_0_7(|s: &mut Spec| { s.cdi_version = "0.7.0".into(); spec_edits(s).intel_rdt = Some(IntelRdt { enable_cmt: Some(true), ..IntelRdt::default() }); })]
    fn what_the_library_does_not_check_loads_on_engine_28_5(#[case] breaker: fn(&mut Spec)) {
        let mut spec = base();
        breaker(&mut spec);
        let report = validate_spec(&spec, &lib(Library::V1_0));
        assert_eq!(report.outcome(), Outcome::Loads, "{report:#?}");
    }

    #[test]
    fn library_versions_differ_where_the_source_differs() {
        let verdict = |s: &Spec, l| validate_spec(s, &lib(l)).outcome();
        let mut v = base();
        v.cdi_version = "1.1.0".into();
        assert_eq!(verdict(&v, Library::V1_0), Outcome::Refused);
        assert_eq!(verdict(&v, Library::V1_1), Outcome::Loads);
        v.cdi_version = "0.8.0".into();
        assert_eq!(verdict(&v, Library::V0_7), Outcome::Refused);
        assert_eq!(verdict(&v, Library::V1_0), Outcome::Loads);
        let mut none = base();
        none.devices.clear();
        assert_eq!(verdict(&none, Library::V0_7), Outcome::Loads);
        assert_eq!(verdict(&none, Library::V1_0), Outcome::Refused);
        let mut rdt = base();
        rdt.cdi_version = "0.7.0".into();
        spec_edits(&mut rdt).intel_rdt = Some(IntelRdt {
            enable_cmt: Some(true),
            ..IntelRdt::default()
        });
        assert_eq!(verdict(&rdt, Library::V1_0), Outcome::Loads);
        assert_eq!(verdict(&rdt, Library::V1_1), Outcome::Refused);
        let mut root = base();
        root.cdi_version = "0.7.0".into();
        spec_edits(&mut root).intel_rdt = Some(IntelRdt {
            clos_id: Some("/".into()),
            ..IntelRdt::default()
        });
        assert_eq!(verdict(&root, Library::V1_0), Outcome::Refused);
        assert_eq!(verdict(&root, Library::V1_1), Outcome::Loads);
    }

    #[test]
    fn notes_name_the_engine_that_decides_differently() {
        let mut spec = base();
        spec.cdi_version = "1.0.0".into();
        let report = validate_spec(&spec, &lib(Library::V1_0));
        assert_eq!(report.outcome(), Outcome::Loads);
        let notes: Vec<String> = report.notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("cdiVersion: refused by engine 26.1's CDI library v0.7.x"),
            "{notes:?}"
        );
    }

    #[test]
    fn messages_say_what_is_allowed() {
        let mut spec = base();
        spec_edits(&mut spec).hooks = Some(vec![Hook {
            hook_name: "preStart".into(),
            path: "/bin/true".into(),
            ..Hook::default()
        }]);
        spec.cdi_version = "0.3.0".into();
        let text: Vec<String> = validate_spec(&spec, &lib(Library::V1_0))
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "cdiVersion: cdiVersion \"0.3.0\" is too old (\"the spec version must be at least v0.5.0\"): a device name starting with a digit (at devices[0].name) needs at least 0.5.0",
                "containerEdits.hooks[0].hookName: hookName \"preStart\" is not an OCI hook (one of prestart, createRuntime, createContainer, startContainer, poststart, poststop)",
            ]
        );
    }

    #[test]
    fn all_problems_are_listed_not_just_the_first() {
        let spec =
            load_spec_file(&fixture("broken-invalid.json")).expect("parses; only validation fails");
        let report = validate_spec(&spec, &lib(Library::V1_0));
        assert_eq!(
            paths(&report.errors),
            [
                "containerEdits.env[1]",
                "containerEdits.hooks[0].hookName",
                "devices[0].containerEdits.deviceNodes[0].type",
                "devices[1].containerEdits",
                "devices[2].name",
            ]
        );
        assert_eq!(
            paths(&report.warnings),
            ["containerEdits.mounts[0].containerPath"]
        );
    }

    #[rstest]
    #[case::none(
        "cdiVersion: 0.3.0\nkind: a.com/b\ndevices: [{name: x, containerEdits: {env: [A=1]}}]\n",
        None
    )]
    #[case::mount_type("cdiVersion: 0.3.0\nkind: a.com/b\ndevices: [{name: x, containerEdits: {mounts: [{hostPath: /a, containerPath: /a, type: bind}]}}]\n", Some(("0.4.0", "devices[0].containerEdits.mounts[0].type")))]
    #[case::host_path("cdiVersion: 0.3.0\nkind: a.com/b\ndevices: [{name: x, containerEdits: {deviceNodes: [{path: /dev/a, hostPath: /dev/b}]}}]\n", Some(("0.5.0", "devices[0].containerEdits.deviceNodes[0].hostPath")))]
    #[case::dotted_class("cdiVersion: 0.3.0\nkind: a.com/b.c\ndevices: [{name: x, containerEdits: {env: [A=1]}}]\n", Some(("0.6.0", "kind")))]
    #[case::additional_gids("cdiVersion: 0.3.0\nkind: a.com/b\ndevices: [{name: x, containerEdits: {additionalGids: [44]}}]\n", Some(("0.7.0", "devices[0].containerEdits.additionalGids")))]
    #[case::schemata("cdiVersion: 0.3.0\nkind: a.com/b\ncontainerEdits: {intelRdt: {schemata: [\"L3:0=f\"]}}\ndevices: [{name: x, containerEdits: {env: [A=1]}}]\n", Some(("1.1.0", "containerEdits.intelRdt.schemata")))]
    fn minimum_version_names_the_newest_feature(
        #[case] yaml: &str,
        #[case] expected: Option<(&str, &str)>,
    ) {
        let spec = parse_spec(Path::new("m.yaml"), yaml.as_bytes()).expect("parses");
        let got = minimum_version(&spec);
        assert_eq!(got.as_ref().map(|r| (r.version, r.path.as_str())), expected);
    }

    #[test]
    fn leading_v_in_version_is_accepted_like_the_go_library() {
        let mut spec = base();
        spec.cdi_version = "v0.5.0".into();
        assert_eq!(validate_spec(&spec, &lib(Library::V1_0)), Report::default());
        spec.cdi_version = "vv0.5.0".into();
        assert_eq!(
            validate_spec(&spec, &lib(Library::V1_0)).outcome(),
            Outcome::Refused
        );
    }

    #[test]
    fn known_versions_end_with_the_latest() {
        assert_eq!(KNOWN_CDI_VERSIONS.last(), Some(&LATEST_CDI_VERSION));
        assert_eq!(Library::Main.known_versions(), KNOWN_CDI_VERSIONS);
        for v in KNOWN_CDI_VERSIONS {
            assert!(numeric_version(v).is_some(), "{v}");
        }
    }

    #[test]
    fn compatibility_wrapper_keeps_severities() {
        let mut spec = base();
        spec.devices[0].name = "a b".into();
        spec_edits(&mut spec).hooks = Some(vec![Hook {
            hook_name: "poststop".into(),
            path: "x".into(),
            ..Hook::default()
        }]);
        let got: Vec<(String, Severity)> = validate(&spec)
            .into_iter()
            .map(|p| (p.path, p.severity))
            .collect();
        assert_eq!(
            got,
            [
                ("devices[0].name".to_owned(), Severity::Rejected),
                (
                    "containerEdits.hooks[0].path".to_owned(),
                    Severity::Violation
                )
            ]
        );
    }
}
