//! The JSON form of a spec that insta snapshots hold.
//!
//! A snapshot must change when the spec's *structure* changes (a mount more or less, a
//! hook in another order) and must not change between hosts or nights. Two things vary
//! legitimately, and both are handled here:
//!
//! **Order that carries no meaning** is made canonical:
//! - devices are sorted by name in natural order: runs of digits compare as numbers, so
//!   `0, 1, 2, 10` come in numeric order and before names starting with a letter, which
//!   sort bytewise (upper-case first: `GPU-…`, `MIG-…`, then `all`). The engine keeps
//!   devices in a map, so their order in the file means nothing. Equal names (two
//!   `GPU-[UUID]` after redaction) are ordered by their whole normalized content;
//! - device nodes by `path`, mounts by `containerPath`, env by key (the part before
//!   `=`), net devices by `hostInterfaceName`, additional GIDs numerically. The sorts
//!   are stable: entries with the same key keep their order, because for those the
//!   order does matter (the engine lets the last device node or mount for a path win,
//!   and the last `KEY=` wins in the environment);
//! - hooks are **not** sorted: they run in spec order, and `update-ldcache` before
//!   `create-symlinks` is a different container than the reverse. Hook `args` and mount
//!   `options` keep their order too, for the same reason.
//!
//! **Values that differ per host or driver release** are replaced by placeholders, in
//! every string of the spec (paths, hook args, env values, annotation values, names):
//! - `/nix/store/<32-char hash>-<name>-<version>…` → `/nix/store/[HASH]-<name>-[VERSION]…`
//!   (an output suffix such as `-bin` is kept);
//! - GPU and MIG UUIDs `GPU-xxxxxxxx-xxxx-…` → `GPU-[UUID]` (`MIG-[UUID]`);
//! - PCI bus ids `0000:3b:00.0` / `00000000:3B:00.0` → `[PCI_BUS_ID]`;
//! - NVIDIA driver versions (`570.86.15`, as in `libcuda.so.570.86.15`) → `[DRIVER_VERSION]`;
//! - device `major`/`minor` numbers → `"[MAJOR]"`/`"[MINOR]"` (the kernel assigns some of
//!   them dynamically, e.g. for `nvidia-uvm`).
//!
//! Everything else is kept verbatim. Normalizing is idempotent:
//! `normalize_value(&normalize(s)) == normalize(s)`.

use std::cmp::Ordering;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

use super::spec::Spec;

/// A `/nix/store` path element: the hash (or its placeholder) and the name after it.
static NIX_STORE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"/nix/store/(?:[0-9a-df-np-sv-z]{32}|\[HASH\])-([0-9A-Za-z+._?=-]+)").ok()
});

/// Splits a store name into name, version (dash-separated chunks starting with a digit)
/// and the rest (an output suffix like `-bin`).
static STORE_NAME_VERSION: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(.+?)-[0-9][^-]*(?:-[0-9][^-]*)*((?:-[^-]*)*)$").ok());

/// GPU and MIG UUIDs as NVML prints them.
static GPU_UUID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b(GPU|MIG)-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b").ok()
});

/// PCI bus ids, with the 4-digit (sysfs) or 8-digit (NVML) domain.
static PCI_BUS_ID: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\b(?:[0-9a-fA-F]{8}|[0-9a-fA-F]{4}):[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\b").ok()
});

/// Candidate NVIDIA driver versions; [`redact_driver_versions`] checks the surroundings.
static DRIVER_VERSION: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"[0-9]{3}\.[0-9]{2,3}(?:\.[0-9]{2,3})?").ok());

/// The snapshot form of a spec; see the module docs for what is sorted and redacted.
pub fn normalize(spec: &Spec) -> Value {
    match serde_json::to_value(spec) {
        Ok(value) => normalize_value(&value),
        // Cannot happen: every field serializes to JSON. Keep the failure visible in
        // the snapshot rather than panicking.
        Err(e) => Value::String(format!("[UNSERIALIZABLE SPEC: {e}]")),
    }
}

/// Normalizes a spec already in JSON form (for example one read back from a snapshot,
/// where `major` is the string `"[MAJOR]"` and no longer fits [`Spec`]); this is what
/// makes normalizing idempotent.
pub fn normalize_value(value: &Value) -> Value {
    let mut v = value.clone();
    redact_all_strings(&mut v);
    if let Some(obj) = v.as_object_mut() {
        if let Some(edits) = obj.get_mut("containerEdits") {
            normalize_edits(edits);
        }
        if let Some(Value::Array(devices)) = obj.get_mut("devices") {
            for device in devices.iter_mut() {
                if let Some(edits) = device.get_mut("containerEdits") {
                    normalize_edits(edits);
                }
            }
            devices.sort_by(|a, b| {
                natural_cmp(str_field(a, "name"), str_field(b, "name"))
                    .then_with(|| a.to_string().cmp(&b.to_string()))
            });
        }
    }
    v
}

/// Replaces host- and release-specific parts of one string with placeholders.
pub fn redact(s: &str) -> String {
    let mut out = s.to_owned();
    if let (Some(store), Some(name_version)) = (NIX_STORE.as_ref(), STORE_NAME_VERSION.as_ref()) {
        out = store
            .replace_all(&out, |c: &Captures<'_>| {
                let name = &c[1];
                let name = match name_version.captures(name) {
                    Some(n) => format!("{}-[VERSION]{}", &n[1], &n[2]),
                    None => name.to_owned(),
                };
                format!("/nix/store/[HASH]-{name}")
            })
            .into_owned();
    }
    if let Some(re) = GPU_UUID.as_ref() {
        out = re.replace_all(&out, "$1-[UUID]").into_owned();
    }
    if let Some(re) = PCI_BUS_ID.as_ref() {
        out = re.replace_all(&out, "[PCI_BUS_ID]").into_owned();
    }
    redact_driver_versions(&out)
}

/// Replaces driver versions that stand alone: not glued to more digits or to a further
/// `.digit` (so `192.168.100.1` or `1.1.17` stay as they are).
fn redact_driver_versions(s: &str) -> String {
    let Some(re) = DRIVER_VERSION.as_ref() else {
        return s.to_owned();
    };
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for m in re.find_iter(s) {
        let before = bytes[..m.start()].last().copied();
        let before2 = m.start().checked_sub(2).map(|i| bytes[i]);
        let after = bytes.get(m.end()).copied();
        let after2 = bytes.get(m.end() + 1).copied();
        let glued_before = before.is_some_and(|b| b.is_ascii_digit())
            || (before == Some(b'.') && before2.is_some_and(|b| b.is_ascii_digit()));
        let glued_after = after.is_some_and(|b| b.is_ascii_digit())
            || (after == Some(b'.') && after2.is_some_and(|b| b.is_ascii_digit()));
        if glued_before || glued_after {
            continue;
        }
        out.push_str(&s[last..m.start()]);
        out.push_str("[DRIVER_VERSION]");
        last = m.end();
    }
    out.push_str(&s[last..]);
    out
}

/// Applies [`redact`] to every string value (not to object keys, which are structure).
fn redact_all_strings(v: &mut Value) {
    match v {
        Value::String(s) => {
            let r = redact(s);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_all_strings),
        Value::Object(map) => map.values_mut().for_each(redact_all_strings),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Sorts and redacts one `containerEdits` object in place.
fn normalize_edits(edits: &mut Value) {
    let Some(obj) = edits.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(nodes)) = obj.get_mut("deviceNodes") {
        for node in nodes.iter_mut() {
            if let Some(node) = node.as_object_mut() {
                for (field, placeholder) in [("major", "[MAJOR]"), ("minor", "[MINOR]")] {
                    if let Some(n) = node.get_mut(field) {
                        *n = Value::String(placeholder.to_owned());
                    }
                }
            }
        }
        nodes.sort_by(|a, b| str_field(a, "path").cmp(str_field(b, "path")));
    }
    if let Some(Value::Array(mounts)) = obj.get_mut("mounts") {
        mounts.sort_by(|a, b| str_field(a, "containerPath").cmp(str_field(b, "containerPath")));
    }
    if let Some(Value::Array(env)) = obj.get_mut("env") {
        env.sort_by(|a, b| env_key(a).cmp(env_key(b)));
    }
    if let Some(Value::Array(net)) = obj.get_mut("netDevices") {
        net.sort_by(|a, b| {
            str_field(a, "hostInterfaceName").cmp(str_field(b, "hostInterfaceName"))
        });
    }
    if let Some(Value::Array(gids)) = obj.get_mut("additionalGids") {
        gids.sort_by_key(Value::as_u64);
    }
}

/// A string field of an object, or `""`, as a sort key.
fn str_field<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

/// The `KEY` of a `KEY=VALUE` env entry, as a sort key.
fn env_key(v: &Value) -> &str {
    let s = v.as_str().unwrap_or("");
    s.split_once('=').map_or(s, |(k, _)| k)
}

/// One run of a name for natural ordering: digits compare as numbers and before text.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Chunk<'a> {
    /// A run of digits: (length without leading zeros, those digits, full length).
    Number(usize, &'a str, usize),
    /// A run of anything else, compared bytewise.
    Text(&'a str),
}

/// Splits a name into digit and non-digit runs.
fn chunks(s: &str) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(first) = rest.chars().next() {
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        if digit {
            let trimmed = run.trim_start_matches('0');
            out.push(Chunk::Number(trimmed.len(), trimmed, run.len()));
        } else {
            out.push(Chunk::Text(run));
        }
        rest = tail;
    }
    out
}

/// Natural order of device names (see the module docs).
fn natural_cmp(a: &str, b: &str) -> Ordering {
    chunks(a).cmp(&chunks(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::spec::{load_spec_file, parse_spec};
    use rstest::rstest;
    use std::path::{Path, PathBuf};

    fn fixture_path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cdi")
            .join(name)
    }

    fn fixture_text(name: &str) -> String {
        std::fs::read_to_string(fixture_path(name)).expect("fixture readable")
    }

    fn parse_json(text: &str) -> Spec {
        parse_spec(Path::new("variant.json"), text.as_bytes()).expect("variant parses")
    }

    /// The multi-GPU fixture as another host on another night would generate it:
    /// new driver, kernel, store hashes, UUIDs, PCI addresses and device numbers.
    fn other_host(text: &str) -> String {
        let mut t = text
            .replace("570.86.15", "575.64.03")
            .replace("6.12.10", "6.12.19")
            .replace(
                "k3v8jd1w6sjmpx0ag7dr2dwrzp7kq5yv",
                "9q7w3z2y1x0v5s4r8p6n2m1l0k9j8h7g",
            )
            .replace(
                "2b4d6f8h0j2l4n6p8r0s2v4x6z8a0c2d",
                "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r",
            )
            .replace(
                "4x9p1lfh0c8m2s7n5q3r6w1yzg0bdk9j",
                "zzzzyyyyxxxxwwwwvvvvssssrrrrqqqq",
            )
            .replace("1.17.6-tools", "1.18.0-tools")
            .replace("glibc-2.40-66", "glibc-2.41-1")
            .replace(
                "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
                "GPU-00000000-1111-2222-3333-444444444444",
            )
            .replace(
                "GPU-9b1e3c77-52a4-4a0f-8e0b-2d6f5c1a7e93",
                "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            )
            .replace("0000:3b:00.0", "0000:17:00.0")
            .replace("00000000:3B:00.0", "00000000:17:00.0")
            .replace("0000:86:00.0", "0000:ca:00.0")
            .replace("00000000:86:00.0", "00000000:CA:00.0");
        for (from, to) in [
            ("\"major\": 195", "\"major\": 234"),
            ("\"major\": 510", "\"major\": 507"),
        ] {
            t = t.replace(from, to);
        }
        t.replace("\"minor\": 254", "\"minor\": 0")
    }

    #[test]
    fn all_patterns_compile() {
        for (name, re) in [
            ("NIX_STORE", &NIX_STORE),
            ("STORE_NAME_VERSION", &STORE_NAME_VERSION),
            ("GPU_UUID", &GPU_UUID),
            ("PCI_BUS_ID", &PCI_BUS_ID),
            ("DRIVER_VERSION", &DRIVER_VERSION),
        ] {
            assert!(
                re.is_some(),
                "{name} must compile, or its redaction would silently not happen"
            );
        }
    }

    #[rstest]
    #[case::driver_lib(
        "/usr/lib/libnvidia-ml.so.570.86.15",
        "/usr/lib/libnvidia-ml.so.[DRIVER_VERSION]"
    )]
    #[case::driver_two_part("libcuda.so.390.157", "libcuda.so.[DRIVER_VERSION]")]
    #[case::driver_arg(
        "--host-driver-version=570.86.15",
        "--host-driver-version=[DRIVER_VERSION]"
    )]
    #[case::firmware_dir(
        "/lib/firmware/nvidia/535.104.05/gsp_tu10x.bin",
        "/lib/firmware/nvidia/[DRIVER_VERSION]/gsp_tu10x.bin"
    )]
    #[case::soname_kept("libcuda.so.1", "libcuda.so.1")]
    #[case::other_versions_kept(
        "libnvidia-egl-wayland.so.1.1.17",
        "libnvidia-egl-wayland.so.1.1.17"
    )]
    #[case::ip_kept("192.168.100.1", "192.168.100.1")]
    #[case::nix_store(
        "/nix/store/k3v8jd1w6sjmpx0ag7dr2dwrzp7kq5yv-nvidia-x11-570.86.15-6.12.10/lib/libcuda.so.570.86.15",
        "/nix/store/[HASH]-nvidia-x11-[VERSION]/lib/libcuda.so.[DRIVER_VERSION]"
    )]
    #[case::nix_store_output_suffix(
        "/nix/store/4x9p1lfh0c8m2s7n5q3r6w1yzg0bdk9j-nvidia-container-toolkit-1.17.6-tools/bin/nvidia-cdi-hook",
        "/nix/store/[HASH]-nvidia-container-toolkit-[VERSION]-tools/bin/nvidia-cdi-hook"
    )]
    #[case::nix_store_in_link_arg(
        "libcuda.so.1::/nix/store/k3v8jd1w6sjmpx0ag7dr2dwrzp7kq5yv-nvidia-x11-570.86.15-6.12.10/lib/libcuda.so",
        "libcuda.so.1::/nix/store/[HASH]-nvidia-x11-[VERSION]/lib/libcuda.so"
    )]
    #[case::nix_store_unversioned(
        "/nix/store/k3v8jd1w6sjmpx0ag7dr2dwrzp7kq5yv-source",
        "/nix/store/[HASH]-source"
    )]
    #[case::gpu_uuid("GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "GPU-[UUID]")]
    #[case::mig_uuid("MIG-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "MIG-[UUID]")]
    #[case::old_mig_form(
        "MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c/1/0",
        "MIG-GPU-[UUID]/1/0"
    )]
    #[case::pci_sysfs(
        "/proc/driver/nvidia/gpus/0000:3b:00.0",
        "/proc/driver/nvidia/gpus/[PCI_BUS_ID]"
    )]
    #[case::pci_nvml("00000000:3B:00.0", "[PCI_BUS_ID]")]
    #[case::pci_in_symlink_arg(
        "../card1::/dev/dri/by-path/pci-0000:3b:00.0-card",
        "../card1::/dev/dri/by-path/pci-[PCI_BUS_ID]-card"
    )]
    #[case::mig_device_name_kept("0:1", "0:1")]
    #[case::plain_kept("/dev/nvidia-uvm", "/dev/nvidia-uvm")]
    fn redacts_only_what_varies(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(redact(input), expected);
        assert_eq!(redact(expected), expected, "redaction is idempotent");
    }

    #[test]
    fn normalize_is_idempotent_on_fixtures() {
        for name in ["nvidia-1gpu.json", "nvidia-multi-gpu.json", "nvidia.yaml"] {
            let once = normalize(&load_spec_file(&fixture_path(name)).expect("fixture parses"));
            assert_eq!(normalize_value(&once), once, "{name}");
        }
    }

    #[test]
    fn host_and_night_differences_normalize_identically() {
        let text = fixture_text("nvidia-multi-gpu.json");
        let other = other_host(&text);
        assert_ne!(text, other, "the variant really differs");
        let (a, b) = (parse_json(&text), parse_json(&other));
        assert_ne!(a, b);
        assert_eq!(normalize(&a), normalize(&b));
    }

    #[test]
    fn device_order_in_the_file_does_not_matter() {
        let mut spec =
            load_spec_file(&fixture_path("nvidia-multi-gpu.json")).expect("fixture parses");
        let before = normalize(&spec);
        spec.devices.reverse();
        assert_eq!(normalize(&spec), before);
    }

    #[test]
    fn an_extra_mount_changes_the_normal_form() {
        let text = fixture_text("nvidia-multi-gpu.json");
        let mut spec = parse_json(&other_host(&text));
        let mounts = spec
            .container_edits
            .as_mut()
            .and_then(|e| e.mounts.as_mut())
            .expect("fixture has mounts");
        let mut extra = mounts[0].clone();
        extra.host_path = extra.host_path.replace("libcuda.so", "libnvidia-encode.so");
        extra.container_path = extra
            .container_path
            .replace("libcuda.so", "libnvidia-encode.so");
        mounts.push(extra);
        assert_ne!(normalize(&spec), normalize(&parse_json(&text)));
    }

    #[test]
    fn hook_order_is_kept_because_it_matters() {
        let mut spec = load_spec_file(&fixture_path("nvidia-1gpu.json")).expect("fixture parses");
        let before = normalize(&spec);
        let hooks = spec
            .container_edits
            .as_mut()
            .and_then(|e| e.hooks.as_mut())
            .expect("fixture has hooks");
        hooks.swap(0, 2);
        assert_ne!(normalize(&spec), before);
    }

    #[test]
    fn devices_come_in_natural_order_and_numbers_are_redacted() {
        let spec = load_spec_file(&fixture_path("nvidia-multi-gpu.json")).expect("fixture parses");
        let n = normalize(&spec);
        let names: Vec<&str> = n["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| d["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, ["0", "1", "GPU-[UUID]", "GPU-[UUID]", "all"]);
        let node = &n["devices"][0]["containerEdits"]["deviceNodes"][0];
        assert_eq!(
            node["path"], "/dev/dri/card1",
            "device nodes sorted by path"
        );
        assert_eq!(
            (&node["major"], &node["minor"]),
            (&Value::from("[MAJOR]"), &Value::from("[MINOR]"))
        );
        assert_eq!(
            n["devices"][0]["annotations"]["nvidia.com/pci-bus-id"],
            "[PCI_BUS_ID]"
        );
    }

    #[rstest]
    #[case(&["all", "10", "2", "GPU-b", "1", "0", "0:1", "MIG-a"], &["0", "0:1", "1", "2", "10", "GPU-b", "MIG-a", "all"])]
    #[case(&["gpu10", "gpu9", "gpu09"], &["gpu9", "gpu09", "gpu10"])]
    fn natural_order(#[case] input: &[&str], #[case] expected: &[&str]) {
        let mut v = input.to_vec();
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, expected);
    }

    #[test]
    fn stable_sort_keeps_same_key_order() {
        let v = serde_json::json!({
            "cdiVersion": "0.5.0", "kind": "a.com/b", "devices": [],
            "containerEdits": {"env": ["B=1", "A=2", "B=0"], "mounts": [
                {"hostPath": "/y", "containerPath": "/m"}, {"hostPath": "/x", "containerPath": "/m"},
                {"hostPath": "/z", "containerPath": "/a"}]}
        });
        let n = normalize_value(&v);
        assert_eq!(
            n["containerEdits"]["env"],
            serde_json::json!(["A=2", "B=1", "B=0"])
        );
        let hosts: Vec<&str> = n["containerEdits"]["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| str_field(m, "hostPath"))
            .collect();
        assert_eq!(hosts, ["/z", "/y", "/x"]);
    }

    #[test]
    fn snapshot_of_multi_gpu_fixture() {
        let spec = load_spec_file(&fixture_path("nvidia-multi-gpu.json")).expect("fixture parses");
        insta::assert_json_snapshot!("nvidia_multi_gpu_normalized", normalize(&spec));
    }
}
