//! Comparing the devices a source names (the spec files, the engine) with the devices
//! the scenario expects: what `spec_devices` and `info_devices` share.

use std::collections::BTreeSet;

use crate::scenario::Scenario;

/// Names joined with `, ` in order.
pub(super) fn join(set: &BTreeSet<String>) -> String {
    set.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn set_diff(expected: &BTreeSet<String>, actual: &BTreeSet<String>) -> String {
    let missing: BTreeSet<String> = expected.difference(actual).cloned().collect();
    let extra: BTreeSet<String> = actual.difference(expected).cloned().collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", join(&missing)));
    }
    if !extra.is_empty() {
        parts.push(format!("unexpected {}", join(&extra)));
    }
    parts.join("; ")
}

/// The devices of the scenario's kinds among a list of names, against the expected set.
pub(super) struct DeviceComparison {
    pub(super) actual: BTreeSet<String>,
    expected: BTreeSet<String>,
    /// UUID-named aliases (`nvidia.com/gpu=GPU-…`, as nvidia-ctk's `uuid` naming adds):
    /// not wrong, not expected, reported beside the verdict.
    aliases: BTreeSet<String>,
}

impl DeviceComparison {
    pub(super) fn new<'a>(
        s: &Scenario,
        names: impl IntoIterator<Item = &'a String>,
    ) -> DeviceComparison {
        let prefixes: BTreeSet<String> = s
            .expected_devices
            .iter()
            .map(|d| format!("{}=", d.kind()))
            .collect();
        let expected: BTreeSet<String> = s.expected_devices.iter().map(|d| d.to_string()).collect();
        let (aliases, actual): (BTreeSet<String>, BTreeSet<String>) = names
            .into_iter()
            .filter(|d| prefixes.iter().any(|p| d.starts_with(p.as_str())))
            .cloned()
            .partition(|d| !expected.contains(d) && is_uuid_alias(d));
        DeviceComparison {
            actual,
            expected,
            aliases,
        }
    }

    /// " (also by UUID: …)" when the names include UUID aliases.
    pub(super) fn alias_note(&self) -> String {
        if self.aliases.is_empty() {
            String::new()
        } else {
            format!(" (also by UUID: {})", join(&self.aliases))
        }
    }

    /// Equal sets, and something to compare: a scenario that expects no device and
    /// finds none compared nothing.
    pub(super) fn matches(&self) -> bool {
        self.actual == self.expected
    }

    /// Whether the scenario expects any device at all.
    pub(super) fn expects_any(&self) -> bool {
        !self.expected.is_empty()
    }

    /// "<actual> instead of <expected>: missing …; unexpected …"
    pub(super) fn describe(&self, none: &str) -> String {
        let actual = if self.actual.is_empty() {
            none.to_string()
        } else {
            join(&self.actual)
        };
        format!(
            "{actual} instead of {}: {}",
            join(&self.expected),
            set_diff(&self.expected, &self.actual)
        )
    }
}

/// Whether a device name is a GPU or MIG UUID (`nvidia.com/gpu=GPU-…`).
fn is_uuid_alias(device: &str) -> bool {
    device
        .split_once('=')
        .is_some_and(|(_, name)| name.starts_with("GPU-") || name.starts_with("MIG-"))
}
