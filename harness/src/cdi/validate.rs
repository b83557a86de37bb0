//! Spec validation that reports every problem at once, each with its field path.
//!
//! The engine's Go library stops at the first problem and refuses the whole file, so a
//! user fixing a spec by trial and error restarts the daemon once per mistake. This
//! module lists them all, and marks which ones the engine refuses
//! ([`Severity::Rejected`]: the checks of `pkg/cdi/spec.go`,
//! `pkg/cdi/container-edits.go`, `api/producer/validator-default.go`,
//! `specs-go/version.go` and the annotation rules of `internal/validation`) and which
//! ones it lets through although SPEC.md or the OCI runtime spec forbid them
//! ([`Severity::Violation`]: relative paths, a non-positive hook timeout), which then
//! fail only when a container starts.

use std::collections::HashMap;
use std::fmt;

use super::name::{validate_device_name, validate_kind};
use super::spec::{ContainerEdits, Spec};

/// Every `cdiVersion` the newest Go library accepts (`specs-go/version.go`). 0.1.0 and
/// 0.2.0 are in its table too, so it accepts them; an engine built with an older
/// library may refuse the newest entries (1.0.0, 1.1.0).
pub const KNOWN_CDI_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// The newest spec version this module knows; what a generator should write when in doubt.
pub const LATEST_CDI_VERSION: &str = "1.1.0";

/// The OCI hook points a CDI hook may name (`validHookNames` in the Go library).
const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Total size limit of a set of annotations, keys plus values, as in Kubernetes.
const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// How bad a [`Problem`] is, which decides whether the engine loads the file at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The engine's CDI library refuses the spec: the file is skipped, none of its
    /// devices exist, and `docker info` shows a warning naming the file.
    Rejected,
    /// The engine loads the spec, but it breaks SPEC.md or the OCI runtime spec, so a
    /// container that uses the device fails or misbehaves when it starts.
    Violation,
}

/// One validation problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field path, e.g. `devices[1].containerEdits.deviceNodes[0].path`.
    pub path: String,
    /// What is wrong and, where it helps, what is allowed.
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

/// Lists every problem of the spec; an empty list means the engine loads it and SPEC.md
/// has no objection.
pub fn validate(spec: &Spec) -> Vec<Problem> {
    let mut v = Validator::default();
    v.version(spec);
    v.kind(&spec.kind);
    if let Some(annotations) = &spec.annotations {
        v.annotations("annotations", annotations);
    }
    if let Some(edits) = &spec.container_edits {
        v.edits("containerEdits", edits);
    }
    if spec.devices.is_empty() {
        v.reject(
            "devices",
            "no devices: a spec must define at least one device".to_owned(),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, device) in spec.devices.iter().enumerate() {
        let at = format!("devices[{i}]");
        if let Err(e) = validate_device_name(&device.name) {
            v.reject(&format!("{at}.name"), e.to_string());
        }
        if let Some(first) = seen.insert(device.name.as_str(), i) {
            // Keep the first index so a third copy also points at the original.
            seen.insert(device.name.as_str(), first);
            v.reject(
                &format!("{at}.name"),
                format!(
                    "duplicate device name {:?} (also devices[{first}]): the engine refuses the whole file",
                    device.name
                ),
            );
        }
        if let Some(annotations) = &device.annotations {
            v.annotations(&format!("{at}.annotations"), annotations);
        }
        let edits_at = format!("{at}.containerEdits");
        if device.container_edits.is_empty() {
            v.reject(
                &edits_at,
                "empty containerEdits: a device needs at least one of env, deviceNodes, hooks, mounts, \
                 additionalGids, intelRdt or netDevices"
                    .to_owned(),
            );
        }
        v.edits(&edits_at, &device.container_edits);
    }
    v.problems
}

/// The lowest `cdiVersion` the spec's features need, with the feature that needs it;
/// `None` when the earliest supported version (0.3.0) suffices. Mirrors the
/// `requiresV0x0` functions of `specs-go/version.go`.
pub fn minimum_version(spec: &Spec) -> Option<Requirement> {
    let req = |version: &'static str, feature: &str, path: String| Requirement {
        version,
        feature: feature.to_owned(),
        path,
    };
    let levels = edit_levels(spec);

    // 1.1.0: netDevices, intelRdt.schemata, intelRdt.enableMonitoring.
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
    // 0.7.0: intelRdt, additionalGids.
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
    // 0.6.0: annotations, a dot in the class.
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
        .is_some_and(|(_, class)| class.contains('.'))
    {
        return Some(req(
            "0.6.0",
            "a '.' in the class part of kind",
            "kind".to_owned(),
        ));
    }
    // 0.5.0: device names starting with a digit, deviceNodes[].hostPath.
    for (i, d) in spec.devices.iter().enumerate() {
        if d.name.starts_with(|c: char| c.is_ascii_digit()) {
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
    // 0.4.0: mounts[].type.
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

/// Parses a known version string (optionally with a leading `v`, which the Go library
/// strips) into comparable numbers; `None` for anything not in [`KNOWN_CDI_VERSIONS`].
fn known_version(v: &str) -> Option<(u64, u64, u64)> {
    let bare = v.strip_prefix('v').unwrap_or(v);
    if !KNOWN_CDI_VERSIONS.contains(&bare) {
        return None;
    }
    numeric_version(bare)
}

/// `x.y.z` as numbers.
fn numeric_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split('.').map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Some((a, b, c)),
        _ => None,
    }
}

/// Collects problems while walking the spec.
#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn push(&mut self, path: &str, message: String, severity: Severity) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message,
            severity,
        });
    }

    fn reject(&mut self, path: &str, message: String) {
        self.push(path, message, Severity::Rejected);
    }

    fn violation(&mut self, path: &str, message: String) {
        self.push(path, message, Severity::Violation);
    }

    fn version(&mut self, spec: &Spec) {
        let known = KNOWN_CDI_VERSIONS.join(", ");
        if spec.cdi_version.is_empty() {
            self.reject(
                "cdiVersion",
                format!("cdiVersion is required (known: {known})"),
            );
            return;
        }
        let Some(declared) = known_version(&spec.cdi_version) else {
            self.reject(
                "cdiVersion",
                format!("unknown cdiVersion {:?} (known: {known})", spec.cdi_version),
            );
            return;
        };
        if let Some(req) = minimum_version(spec)
            && numeric_version(req.version).is_some_and(|needed| needed > declared)
        {
            self.reject(
                "cdiVersion",
                format!(
                    "cdiVersion {:?} is too old: {} (at {}) needs at least {}",
                    spec.cdi_version, req.feature, req.path, req.version
                ),
            );
        }
        // Since 1.1.0 the monitoring switches are one field; the old ones are refused.
        if declared >= (1, 1, 0) {
            for (at, edits) in edit_levels(spec) {
                if let Some(rdt) = &edits.intel_rdt {
                    for (field, set) in
                        [("enableCMT", rdt.enable_cmt), ("enableMBM", rdt.enable_mbm)]
                    {
                        if set.is_some() {
                            self.reject(
                                &format!("{at}.intelRdt.{field}"),
                                format!(
                                    "{field} is not valid for cdiVersion {} (use enableMonitoring)",
                                    spec.cdi_version
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    fn kind(&mut self, kind: &str) {
        if kind.is_empty() {
            self.reject(
                "kind",
                "kind is required (vendor/class, e.g. nvidia.com/gpu)".to_owned(),
            );
        } else if let Err(e) = validate_kind(kind) {
            self.reject("kind", e.to_string());
        }
    }

    fn annotations(&mut self, at: &str, annotations: &std::collections::BTreeMap<String, String>) {
        let mut size = 0usize;
        for (key, value) in annotations {
            size += key.len() + value.len();
            if let Err(why) = annotation_key(key) {
                self.reject(
                    &format!("{at}[{key:?}]"),
                    format!("annotation key {key:?} {why}"),
                );
            }
        }
        if size > ANNOTATIONS_SIZE_LIMIT {
            self.reject(
                at,
                format!(
                    "annotations take {size} bytes, more than the limit of {ANNOTATIONS_SIZE_LIMIT}"
                ),
            );
        }
    }

    fn env(&mut self, at: &str, env: Option<&Vec<String>>) {
        for (i, entry) in env.into_iter().flatten().enumerate() {
            if entry.find('=').is_none_or(|pos| pos == 0) {
                self.reject(
                    &format!("{at}[{i}]"),
                    format!("environment entry {entry:?} is not KEY=VALUE"),
                );
            }
        }
    }

    fn edits(&mut self, at: &str, edits: &ContainerEdits) {
        self.env(&format!("{at}.env"), edits.env.as_ref());

        for (i, node) in edits.device_nodes.iter().flatten().enumerate() {
            let node_at = format!("{at}.deviceNodes[{i}]");
            if node.path.is_empty() {
                self.reject(
                    &format!("{node_at}.path"),
                    "path is required: where the node appears in the container, e.g. /dev/nvidia0"
                        .to_owned(),
                );
            } else if !node.path.starts_with('/') {
                self.violation(
                    &format!("{node_at}.path"),
                    format!(
                        "path {:?} is not absolute; the OCI runtime needs an absolute device path",
                        node.path
                    ),
                );
            }
            if let Some(host) = node
                .host_path
                .as_deref()
                .filter(|h| !h.is_empty() && !h.starts_with('/'))
            {
                self.violation(
                    &format!("{node_at}.hostPath"),
                    format!("hostPath {host:?} is not absolute; the engine would resolve it against its own working directory"),
                );
            }
            if let Some(t) = node
                .r#type
                .as_deref()
                .filter(|t| !matches!(*t, "" | "b" | "c" | "u" | "p"))
            {
                self.reject(
                    &format!("{node_at}.type"),
                    format!("type {t:?} is not one of b (block), c or u (character), p (FIFO)"),
                );
            }
            for (field, number) in [("major", node.major), ("minor", node.minor)] {
                if let Some(n) = number.filter(|n| *n < 0) {
                    self.reject(
                        &format!("{node_at}.{field}"),
                        format!("{field} {n} is negative (-1 would be read as a wildcard)"),
                    );
                }
            }
            if let Some(p) = node.permissions.as_deref()
                && p != "none"
                && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            {
                self.reject(
                    &format!("{node_at}.permissions"),
                    format!("permissions {p:?} may only contain r, w and m (or be \"none\")"),
                );
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
                self.reject(
                    &format!("{hook_at}.hookName"),
                    format!("{what} (one of {})", HOOK_NAMES.join(", ")),
                );
            }
            if hook.path.is_empty() {
                self.reject(
                    &format!("{hook_at}.path"),
                    "path is required: the hook executable".to_owned(),
                );
            } else if !hook.path.starts_with('/') {
                self.violation(
                    &format!("{hook_at}.path"),
                    format!(
                        "path {:?} is not absolute, which SPEC.md requires for hooks",
                        hook.path
                    ),
                );
            }
            self.env(&format!("{hook_at}.env"), hook.env.as_ref());
            if let Some(t) = hook.timeout.filter(|t| *t <= 0) {
                self.violation(
                    &format!("{hook_at}.timeout"),
                    format!("timeout {t} must be greater than zero (SPEC.md); leave it out to wait forever"),
                );
            }
        }

        for (i, mount) in edits.mounts.iter().flatten().enumerate() {
            let mount_at = format!("{at}.mounts[{i}]");
            if mount.host_path.is_empty() {
                self.reject(
                    &format!("{mount_at}.hostPath"),
                    "hostPath is required: the source on the host".to_owned(),
                );
            }
            if mount.container_path.is_empty() {
                self.reject(
                    &format!("{mount_at}.containerPath"),
                    "containerPath is required: the destination in the container".to_owned(),
                );
            } else if !mount.container_path.starts_with('/') {
                self.violation(
                    &format!("{mount_at}.containerPath"),
                    format!(
                        "containerPath {:?} is not absolute; the OCI runtime needs an absolute mount destination",
                        mount.container_path
                    ),
                );
            }
        }

        if let Some(clos) = edits.intel_rdt.as_ref().and_then(|r| r.clos_id.as_deref())
            && clos != "/"
            && (clos.len() >= 4096 || clos == "." || clos == ".." || clos.contains(['/', '\n']))
        {
            self.reject(
                &format!("{at}.intelRdt.closID"),
                format!("closID {clos:?} is not a valid resctrl group name (a file name, or \"/\" for the root group)"),
            );
        }

        let mut hosts: HashMap<&str, usize> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, dev) in edits.net_devices.iter().flatten().enumerate() {
            let dev_at = format!("{at}.netDevices[{i}]");
            if dev.host_interface_name.is_empty() {
                self.reject(
                    &format!("{dev_at}.hostInterfaceName"),
                    "hostInterfaceName is required".to_owned(),
                );
            } else if let Some(first) = hosts.get(dev.host_interface_name.as_str()) {
                self.reject(
                    &format!("{dev_at}.hostInterfaceName"),
                    format!(
                        "duplicate hostInterfaceName {:?} (also netDevices[{first}])",
                        dev.host_interface_name
                    ),
                );
            } else {
                hosts.insert(&dev.host_interface_name, i);
            }
            if dev.name.is_empty() {
                self.reject(&format!("{dev_at}.name"), "name is required".to_owned());
            } else if let Some(first) = names.get(dev.name.as_str()) {
                self.reject(
                    &format!("{dev_at}.name"),
                    format!("duplicate name {:?} (also netDevices[{first}])", dev.name),
                );
            } else {
                names.insert(&dev.name, i);
            }
        }
    }
}

/// Checks an annotation key with Kubernetes' qualified-name rule (case-insensitive), as
/// the Go library does; the error completes "annotation key "k" …".
fn annotation_key(key: &str) -> Result<(), String> {
    let lower = key.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err("has an empty prefix before '/'".to_owned());
            }
            if prefix.len() > 253 || !is_dns_subdomain(prefix) {
                return Err(format!(
                    "has prefix {prefix:?}, which is not a DNS subdomain (lower-case letters, digits, '-', '.', at most 253)"
                ));
            }
            *name
        }
        _ => return Err("has more than one '/'".to_owned()),
    };
    if name.is_empty() {
        return Err("has an empty name part".to_owned());
    }
    if name.len() > 63 {
        return Err("has a name part longer than 63 characters".to_owned());
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_chars || !ends_ok {
        return Err(
            "has a name part that is not letters, digits, '-', '_', '.' starting and ending with a letter or digit"
                .to_owned(),
        );
    }
    Ok(())
}

/// RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`, not starting or ending with `-`.
fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
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

    #[test]
    fn base_spec_and_fixtures_are_valid() {
        assert_eq!(validate(&base()), []);
        for name in ["nvidia-1gpu.json", "nvidia-multi-gpu.json", "nvidia.yaml"] {
            let spec = load_spec_file(&fixture(name)).expect("fixture parses");
            assert_eq!(validate(&spec), [], "{name}");
        }
    }

    #[rstest]
    #[case::unknown_version(|s: &mut Spec| s.cdi_version = "0.9.0".into(), "cdiVersion", Severity::Rejected)]
    #[case::missing_version(|s: &mut Spec| s.cdi_version.clear(), "cdiVersion", Severity::Rejected)]
    #[case::version_too_old_for_digit_name(|s: &mut Spec| s.cdi_version = "0.4.0".into(), "cdiVersion", Severity::Rejected)]
    #[case::bad_kind(|s: &mut Spec| s.kind = "nvidia.com".into(), "kind", Severity::Rejected)]
    #[case::no_devices(|s: &mut Spec| s.devices.clear(), "devices", Severity::Rejected)]
    #[case::bad_device_name(|s: &mut Spec| s.devices[0].name = "a b".into(), "devices[0].name", Severity::Rejected)]
    #[case::duplicate_device(|s: &mut Spec| { let d = s.devices[0].clone(); s.devices.push(d); }, "devices[1].name", Severity::Rejected)]
    #[case::empty_device_edits(|s: &mut Spec| *dev_edits(s) = ContainerEdits::default(), "devices[0].containerEdits", Severity::Rejected)]
    #[case::node_without_path(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode::default()]), "devices[0].containerEdits.deviceNodes[0].path", Severity::Rejected)]
    #[case::node_relative_path(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "dev/nvidia0".into(), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].path", Severity::Violation)]
    #[case::node_bad_type(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "/dev/x".into(), r#type: Some("x".into()), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].type", Severity::Rejected)]
    #[case::node_negative_major(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "/dev/x".into(), major: Some(-1), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].major", Severity::Rejected)]
    #[case::node_bad_permissions(|s: &mut Spec| dev_edits(s).device_nodes = Some(vec![DeviceNode { path: "/dev/x".into(), permissions: Some("rwx".into()), ..DeviceNode::default() }]), "devices[0].containerEdits.deviceNodes[0].permissions", Severity::Rejected)]
    #[case::bad_env(|s: &mut Spec| spec_edits(s).env = Some(vec!["OK=1".into(), "NOEQUALS".into()]), "containerEdits.env[1]", Severity::Rejected)]
    #[case::env_empty_key(|s: &mut Spec| spec_edits(s).env = Some(vec!["=1".into()]), "containerEdits.env[0]", Severity::Rejected)]
    #[case::bad_hook_name(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "preStart".into(), path: "/bin/true".into(), ..Hook::default() }]), "containerEdits.hooks[0].hookName", Severity::Rejected)]
    #[case::hook_without_path(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), ..Hook::default() }]), "containerEdits.hooks[0].path", Severity::Rejected)]
    #[case::hook_relative_path(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), path: "nvidia-cdi-hook".into(), ..Hook::default() }]), "containerEdits.hooks[0].path", Severity::Violation)]
    #[case::hook_bad_env(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), path: "/bin/true".into(), env: Some(vec!["X".into()]), ..Hook::default() }]), "containerEdits.hooks[0].env[0]", Severity::Rejected)]
    #[case::hook_zero_timeout(|s: &mut Spec| spec_edits(s).hooks = Some(vec![Hook { hook_name: "poststop".into(), path: "/bin/true".into(), timeout: Some(0), ..Hook::default() }]), "containerEdits.hooks[0].timeout", Severity::Violation)]
    #[case::mount_without_host_path(|s: &mut Spec| dev_edits(s).mounts = Some(vec![Mount { container_path: "/x".into(), ..Mount::default() }]), "devices[0].containerEdits.mounts[0].hostPath", Severity::Rejected)]
    #[case::mount_without_container_path(|s: &mut Spec| dev_edits(s).mounts = Some(vec![Mount { host_path: "/x".into(), ..Mount::default() }]), "devices[0].containerEdits.mounts[0].containerPath", Severity::Rejected)]
    #[case::mount_relative_container_path(|s: &mut Spec| dev_edits(s).mounts = Some(vec![Mount { host_path: "/x".into(), container_path: "x".into(), ..Mount::default() }]), "devices[0].containerEdits.mounts[0].containerPath", Severity::Violation)]
    #[case::bad_annotation_key(|s: &mut Spec| { s.cdi_version = "0.6.0".into(); s.annotations = Some([("a/b/c".to_owned(), "v".to_owned())].into()); }, "annotations[\"a/b/c\"]", Severity::Rejected)]
    #[case::annotations_need_0_6(|s: &mut Spec| s.devices[0].annotations = Some([("k".to_owned(), "v".to_owned())].into()), "cdiVersion", Severity::Rejected)]
    #[case::bad_clos_id(|s: &mut Spec| { s.cdi_version = "0.7.0".into(); spec_edits(s).intel_rdt = Some(IntelRdt { clos_id: Some("..".into()), ..IntelRdt::default() }); }, "containerEdits.intelRdt.closID", Severity::Rejected)]
    #[case::old_rdt_field_in_1_1(|s: &mut Spec| { s.cdi_version = "1.1.0".into(); spec_edits(s).intel_rdt = Some(IntelRdt { enable_cmt: Some(true), ..IntelRdt::default() }); }, "containerEdits.intelRdt.enableCMT", Severity::Rejected)]
    #[case::net_device_without_name(|s: &mut Spec| { s.cdi_version = "1.1.0".into(); dev_edits(s).net_devices = Some(vec![LinuxNetDevice { host_interface_name: "eth1".into(), name: String::new() }]); }, "devices[0].containerEdits.netDevices[0].name", Severity::Rejected)]
    #[case::net_devices_need_1_1(|s: &mut Spec| dev_edits(s).net_devices = Some(vec![LinuxNetDevice { host_interface_name: "eth1".into(), name: "net0".into() }]), "cdiVersion", Severity::Rejected)]
    fn each_broken_case_reports_exactly_its_path(
        #[case] breaker: fn(&mut Spec),
        #[case] path: &str,
        #[case] severity: Severity,
    ) {
        let mut spec = base();
        breaker(&mut spec);
        let problems = validate(&spec);
        assert_eq!(
            problems
                .iter()
                .map(|p| (p.path.as_str(), p.severity))
                .collect::<Vec<_>>(),
            [(path, severity)],
            "{problems:#?}"
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
        let text: Vec<String> = validate(&spec).iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "cdiVersion: cdiVersion \"0.3.0\" is too old: a device name starting with a digit (at devices[0].name) needs at least 0.5.0",
                "containerEdits.hooks[0].hookName: hookName \"preStart\" is not an OCI hook (one of prestart, createRuntime, createContainer, startContainer, poststart, poststop)",
            ]
        );
    }

    #[test]
    fn all_problems_are_listed_not_just_the_first() {
        let spec =
            load_spec_file(&fixture("broken-invalid.json")).expect("parses; only validation fails");
        let paths: Vec<String> = validate(&spec).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "containerEdits.env[1]",
                "containerEdits.hooks[0].hookName",
                "containerEdits.mounts[0].containerPath",
                "devices[0].containerEdits.deviceNodes[0].type",
                "devices[1].containerEdits",
                "devices[2].name",
            ]
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
        assert_eq!(validate(&spec), []);
    }

    #[test]
    fn every_known_version_parses() {
        for v in KNOWN_CDI_VERSIONS {
            assert!(known_version(v).is_some(), "{v}");
        }
        assert_eq!(KNOWN_CDI_VERSIONS.last(), Some(&LATEST_CDI_VERSION));
    }
}
