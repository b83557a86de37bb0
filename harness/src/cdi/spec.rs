//! Typed CDI spec files, mirroring the Go structs in
//! `tags.cncf.io/container-device-interface/specs-go/config.go` field for field, so a
//! file that the engine parses parses here too, and one it refuses is refused here.
//!
//! How the engine reads a spec (`pkg/cdi/spec.go`): it parses *every* file, `.json`
//! included, with `sigs.k8s.io/yaml`'s `UnmarshalStrict`. Three consequences are
//! reproduced here:
//! - unknown fields and duplicate keys are errors (`deny_unknown_fields`);
//! - a YAML scalar where a string is expected (`name: 0`) is turned into that string
//!   rather than refused, and `null` reads as the empty value;
//! - a `.json` file that is not JSON but is YAML still loads.
//!
//! The field set is the union over spec versions 0.3.0–1.1.0 (`netDevices`,
//! `intelRdt.schemata` and `intelRdt.enableMonitoring` arrived in 1.1.0); which
//! `cdiVersion` a field needs is checked by [`crate::cdi::validate`], not by parsing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use super::CdiError;
use super::decode::{Decoded, MAX_DEPTH, decode_value, flow_depth, mark_scalar_styles};

/// One CDI spec file: a `kind` (vendor/class) and the devices it defines.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// `cdiVersion`: the spec version the file claims; the engine refuses unknown ones
    /// and ones too old for the fields used.
    #[serde(default, deserialize_with = "scalar_string")]
    pub cdi_version: String,
    /// `kind`: `vendor/class`, e.g. `nvidia.com/gpu`; prefixes every device name.
    #[serde(default, deserialize_with = "scalar_string")]
    pub kind: String,
    /// `annotations`: free-form metadata (spec version 0.6.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// `devices`: what `--device kind=name` can select; at least one is required.
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: Vec<Device>,
    /// `containerEdits`: edits applied once whenever any device of this spec is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_edits: Option<ContainerEdits>,
}

/// One device of a spec, selectable as `kind=name`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    /// `name`: the part after `=` in the qualified name (`0`, `all`, a GPU UUID, …).
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
    /// `annotations`: free-form metadata (spec version 0.6.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// `containerEdits`: what selecting this device does to the container; required and
    /// must not be empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub container_edits: ContainerEdits,
}

/// Edits to the container's OCI spec (`containerEdits`), at spec or device level.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerEdits {
    /// `env`: `KEY=VALUE` entries added to the process environment.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_scalar_strings"
    )]
    pub env: Option<Vec<String>>,
    /// `deviceNodes`: device nodes created in the container (and allowed in its cgroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_nodes: Option<Vec<DeviceNode>>,
    /// `hooks`: OCI hooks to run, in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Vec<Hook>>,
    /// `mounts`: bind mounts (driver libraries, binaries, firmware, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Mount>>,
    /// `intelRdt`: Intel RDT class of service (spec version 0.7.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<IntelRdt>,
    /// `additionalGids`: extra groups for the container process (0.7.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_gids: Option<Vec<u32>>,
    /// `netDevices`: host network interfaces moved into the container (1.1.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_devices: Option<Vec<LinuxNetDevice>>,
}

impl ContainerEdits {
    /// Whether these edits do nothing; a device with empty edits is refused by the
    /// engine (`empty container edits`), while empty spec-level edits are fine.
    pub fn is_empty(&self) -> bool {
        fn none_or_empty<T>(v: &Option<Vec<T>>) -> bool {
            v.as_ref().is_none_or(Vec::is_empty)
        }
        none_or_empty(&self.env)
            && none_or_empty(&self.device_nodes)
            && none_or_empty(&self.hooks)
            && none_or_empty(&self.mounts)
            && none_or_empty(&self.additional_gids)
            && none_or_empty(&self.net_devices)
            && self.intel_rdt.is_none()
    }
}

/// A device node (`deviceNodes[]`) to create in the container.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceNode {
    /// `path`: where the node appears in the container; required.
    #[serde(default, deserialize_with = "scalar_string")]
    pub path: String,
    /// `hostPath`: the node on the host if it differs from `path` (0.5.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `type`: `b`, `c`, `u` or `p`; looked up on the host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// `major`: device major number; looked up on the host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// `minor`: device minor number; looked up on the host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// `fileMode`: the Go `os.FileMode` bits of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// `permissions`: cgroup access, any of `r`, `w`, `m` (default `rwm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// `uid`: owner of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `gid`: group of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount (`mounts[]`), usually a read-only bind of a driver file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// `hostPath`: source on the host; required.
    #[serde(default, deserialize_with = "scalar_string")]
    pub host_path: String,
    /// `containerPath`: destination in the container; required.
    #[serde(default, deserialize_with = "scalar_string")]
    pub container_path: String,
    /// `type`: filesystem type (0.4.0 and later), often `bind` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// `options`: mount options such as `ro`, `nosuid`, `rbind`; order is kept.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_scalar_strings"
    )]
    pub options: Option<Vec<String>>,
}

/// An OCI hook (`hooks[]`), e.g. `nvidia-cdi-hook update-ldcache`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// `hookName`: the OCI hook point (`createContainer`, `prestart`, …).
    #[serde(default, deserialize_with = "scalar_string")]
    pub hook_name: String,
    /// `path`: the executable; required, and absolute per SPEC.md.
    #[serde(default, deserialize_with = "scalar_string")]
    pub path: String,
    /// `args`: full argv including argv\[0\]; order matters.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_scalar_strings"
    )]
    pub args: Option<Vec<String>>,
    /// `env`: `KEY=VALUE` environment of the hook.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_scalar_strings"
    )]
    pub env: Option<Vec<String>>,
    /// `timeout`: seconds before the hook is killed; must be positive per SPEC.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// Intel RDT settings (`intelRdt`). Holds the fields of every spec version: the 0.7.0
/// ones (`enableCMT`, `enableMBM`) and the 1.1.0 ones (`schemata`, `enableMonitoring`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntelRdt {
    /// `closID`: name of the class of service.
    #[serde(rename = "closID", default, skip_serializing_if = "Option::is_none")]
    pub clos_id: Option<String>,
    /// `l3CacheSchema`: L3 cache allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l3_cache_schema: Option<String>,
    /// `memBwSchema`: memory bandwidth allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bw_schema: Option<String>,
    /// `schemata`: resctrl schemata lines (1.1.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemata: Option<Vec<String>>,
    /// `enableCMT`: cache monitoring (before 1.1.0).
    #[serde(rename = "enableCMT", default, skip_serializing_if = "Option::is_none")]
    pub enable_cmt: Option<bool>,
    /// `enableMBM`: memory bandwidth monitoring (before 1.1.0).
    #[serde(rename = "enableMBM", default, skip_serializing_if = "Option::is_none")]
    pub enable_mbm: Option<bool>,
    /// `enableMonitoring`: monitoring (1.1.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_monitoring: Option<bool>,
}

/// A host network interface to move into the container (`netDevices[]`, 1.1.0 and later).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinuxNetDevice {
    /// `hostInterfaceName`: the interface on the host; required.
    #[serde(default, deserialize_with = "scalar_string")]
    pub host_interface_name: String,
    /// `name`: its name in the container; required.
    #[serde(default, deserialize_with = "scalar_string")]
    pub name: String,
}

impl Spec {
    /// The fully qualified names (`kind=name`, e.g. `nvidia.com/gpu=0`) in spec order,
    /// exactly as the engine lists them; built from `kind` verbatim, like the Go
    /// library's `GetQualifiedName`, even when `kind` is invalid.
    pub fn device_names(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| format!("{}={}", self.kind, d.name))
            .collect()
    }
}

/// The largest spec file read: generated specs for 8 GPUs with MIG are well below
/// 1 MiB; anything far larger is not a spec, and reading it whole would only cost memory.
pub const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// Parses spec bytes as the engine does (see [`crate::cdi::decode`]): every file as
/// YAML 1.1, `.json` included, with Go's decoding rules. Errors name the file and,
/// where known, the line and column; the first decoder problem is the reason. Use
/// [`decode_spec`] to get every decoder problem with its field path.
pub fn parse_spec(path: &Path, bytes: &[u8]) -> Result<Spec, CdiError> {
    let decoded = decode_spec(path, bytes)?;
    match decoded.problems.first() {
        None => Ok(decoded.spec),
        Some(p) => Err(CdiError::Parse {
            path: path.to_path_buf(),
            reason: if p.path.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.path, p.message)
            },
            line: line_of_key(bytes, p.path.rsplit('.').next().unwrap_or_default()),
            column: None,
        }),
    }
}

/// Parses spec bytes into a spec plus every problem the Go decoder would refuse it
/// for (unknown fields, wrong types, null list entries), each with its field path.
/// Syntax errors, empty documents, too deep nesting and unknown extensions are errors.
pub fn decode_spec(path: &Path, bytes: &[u8]) -> Result<Decoded, CdiError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json" | "yaml" | "yml") => {}
        _ => {
            return Err(CdiError::UnsupportedExtension {
                path: path.to_path_buf(),
            });
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CdiError::Empty {
            path: path.to_path_buf(),
        });
    }
    let depth = flow_depth(bytes, MAX_DEPTH);
    if depth > MAX_DEPTH {
        return Err(CdiError::TooDeep {
            path: path.to_path_buf(),
            limit: MAX_DEPTH,
        });
    }
    // yaml.v2 reads the first document of a stream and ignores the rest.
    let first = serde_yaml_ng::Deserializer::from_slice(bytes)
        .next()
        .map(serde_yaml_ng::Value::deserialize);
    let first = first.unwrap_or(Ok(serde_yaml_ng::Value::Null));
    let value: serde_yaml_ng::Value = match first {
        Ok(mut v) => {
            // Before merging, while the tree still matches the event stream: whether
            // each YAML 1.1-only number or bool spelling was quoted.
            mark_scalar_styles(&mut v, bytes);
            // `<<: *anchor` merges, which yaml.v2 applies while decoding; in strict mode
            // it refuses a key that a merge and another entry both set.
            let merged = match merge_duplicate(&v) {
                Some(key) => Err(format!(
                    "key {key:?} already set in map: a merge key (<<) and another entry both set it, which the engine's strict YAML decoder refuses"
                )),
                None => v.apply_merge().map_err(|e| e.to_string()),
            };
            if let Err(reason) = merged {
                return Err(CdiError::Parse {
                    path: path.to_path_buf(),
                    reason,
                    line: None,
                    column: None,
                });
            }
            v
        }
        Err(e) => {
            let location = e.location();
            return Err(CdiError::Parse {
                path: path.to_path_buf(),
                reason: with_utf8_note(e.to_string(), bytes),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
            });
        }
    };
    decode_value(&value).ok_or_else(|| CdiError::Empty {
        path: path.to_path_buf(),
    })
}

/// The decoder's words for bad bytes ("incomplete UTF-8 octet sequence") do not say
/// that the file is not text: say it, with where.
fn with_utf8_note(reason: String, bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(_) => reason,
        Err(e) => format!(
            "{reason} (the file is not valid UTF-8: first invalid byte at offset {}; CDI specs are UTF-8 JSON or YAML)",
            e.valid_up_to()
        ),
    }
}

/// The first key that a mapping sets twice through merge keys (`<<`) and its own
/// entries, which `yaml.v2`'s strict decoder refuses ("already set in map").
fn merge_duplicate(v: &serde_yaml_ng::Value) -> Option<String> {
    use serde_yaml_ng::Value;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Mapping(m) => {
                let mut seen: std::collections::BTreeSet<String> =
                    std::collections::BTreeSet::new();
                let mut sources: Vec<&serde_yaml_ng::Mapping> = Vec::new();
                for (k, val) in m {
                    if k.as_str() == Some("<<") {
                        match val {
                            Value::Mapping(merged) => sources.push(merged),
                            Value::Sequence(items) => {
                                sources.extend(items.iter().filter_map(Value::as_mapping));
                            }
                            _ => {}
                        }
                    }
                }
                if !sources.is_empty() {
                    let explicit = m.iter().filter(|(k, _)| k.as_str() != Some("<<"));
                    let merged = sources.iter().flat_map(|src| src.iter());
                    for (k, _) in merged.chain(explicit) {
                        let key = serde_yaml_ng::to_string(k).unwrap_or_default();
                        let key = key.trim_end().to_owned();
                        if !seen.insert(key.clone()) {
                            return Some(key);
                        }
                    }
                }
                stack.extend(m.values());
            }
            Value::Sequence(items) => stack.extend(items.iter()),
            Value::Tagged(t) => stack.push(&t.value),
            _ => {}
        }
    }
    None
}

/// Reads and parses one spec file; a read failure names the file and says what to check.
pub fn load_spec_file(path: &Path) -> Result<Spec, CdiError> {
    parse_spec(path, &read_spec_file(path)?)
}

/// Reads a spec file's bytes safely: only a regular file (checked on the open handle,
/// which is opened non-blocking so a FIFO cannot hang the harness), at most
/// [`MAX_SPEC_BYTES`].
pub fn read_spec_file(path: &Path) -> Result<Vec<u8>, CdiError> {
    use crate::safe_read::{SafeReadError, read_regular_file};
    read_regular_file(path, MAX_SPEC_BYTES).map_err(|e| match e {
        SafeReadError::Io(source) => CdiError::Read {
            path: path.to_path_buf(),
            source,
        },
        SafeReadError::NotRegular(kind) => CdiError::NotRegular {
            path: path.to_path_buf(),
            kind,
        },
        SafeReadError::TooLarge { size, limit } => CdiError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        },
    })
}

/// The 1-based line where `key` first appears as a mapping key, to point an unknown
/// field error at a line (the decoder's tree has no positions).
fn line_of_key(bytes: &[u8], key: &str) -> Option<usize> {
    let key = key.split('[').next().unwrap_or(key);
    if key.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .position(|l| {
            let t = l
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches(['{', '"', '\'', ' ']);
            t.starts_with(key)
                && t[key.len()..]
                    .trim_start_matches(['"', '\''])
                    .trim_start()
                    .starts_with(':')
        })
        .map(|i| i + 1)
}

/// Reads a string the way `sigs.k8s.io/yaml` fills a Go string field: strings as
/// they are, numbers and booleans as their text, `null` as empty.
fn scalar_string<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    Ok(Scalar::deserialize(de)?.0)
}

/// Like [`scalar_string`], for an optional list of strings (`args`, `env`, `options`).
fn opt_scalar_strings<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<String>>, D::Error> {
    let items: Option<Vec<Scalar>> = Option::deserialize(de)?;
    Ok(items.map(|v| v.into_iter().map(|s| s.0).collect()))
}

/// Treats an explicit `null` like an absent field, as Go does for non-pointer fields.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A scalar read as text; see [`scalar_string`].
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        de.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cdi")
            .join(name)
    }

    #[test]
    fn loads_single_gpu_json_fixture_with_exact_field_names() {
        let spec = load_spec_file(&fixture("nvidia-1gpu.json")).expect("fixture parses");
        assert_eq!(spec.cdi_version, "0.5.0");
        assert_eq!(spec.kind, "nvidia.com/gpu");
        assert_eq!(
            spec.device_names(),
            [
                "nvidia.com/gpu=0",
                "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
                "nvidia.com/gpu=all"
            ]
        );
        let edits = spec.container_edits.as_ref().expect("spec-level edits");
        let hooks = edits.hooks.as_ref().expect("hooks");
        assert_eq!(hooks[0].hook_name, "createContainer");
        assert!(hooks[0].path.ends_with("/bin/nvidia-cdi-hook"));
        let node = &spec.devices[0]
            .container_edits
            .device_nodes
            .as_ref()
            .expect("nodes")[0];
        assert_eq!(node.path, "/dev/nvidia0");
        assert_eq!(node.host_path.as_deref(), Some("/dev/nvidia0"));
        let mount = &edits.mounts.as_ref().expect("mounts")[0];
        assert_eq!(mount.options.as_deref().map(<[String]>::len), Some(5));
    }

    #[test]
    fn serializes_back_with_go_json_names_and_omits_absent_fields() {
        let spec = load_spec_file(&fixture("nvidia-multi-gpu.json")).expect("fixture parses");
        let value = serde_json::to_value(&spec).expect("serializes");
        let node = &value["devices"][0]["containerEdits"]["deviceNodes"][0];
        assert_eq!(node["path"], "/dev/nvidia0");
        assert_eq!(node["type"], "c");
        assert_eq!(node["major"], 195);
        assert!(
            node.get("uid").is_none(),
            "absent optional fields stay absent: {node}"
        );
        assert!(value["containerEdits"].get("intelRdt").is_none());
        // And the round trip through the Go names is lossless.
        let back: Spec = serde_json::from_value(value).expect("parses back");
        assert_eq!(back, spec);
    }

    #[test]
    fn yaml_fixture_parses_like_its_json_twin() {
        let yaml = load_spec_file(&fixture("nvidia.yaml")).expect("yaml parses");
        let json = load_spec_file(&fixture("nvidia-1gpu.json")).expect("json parses");
        assert_eq!(yaml, json);
    }

    #[test]
    fn unknown_field_is_refused_with_line_and_field_name() {
        let err = load_spec_file(&fixture("broken-unknown-field.yaml")).expect_err("must fail");
        let CdiError::Parse { line, reason, .. } = &err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert!(
            reason.contains("unknown field \"containerEdit\""),
            "{reason}"
        );
        assert_eq!(*line, Some(6), "{reason}");
        assert!(
            err.to_string().contains("broken-unknown-field.yaml"),
            "{err}"
        );
    }

    #[test]
    fn json_syntax_error_reports_line_and_column() {
        let err = load_spec_file(&fixture("broken-syntax.json")).expect_err("must fail");
        let CdiError::Parse { line, column, .. } = &err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert!(line.is_some_and(|l| l > 1), "{err}");
        assert!(column.is_some(), "{err}");
        assert!(
            err.to_string().starts_with("cannot parse CDI spec "),
            "{err}"
        );
    }

    #[test]
    fn yaml_scalars_become_strings_like_sigs_k8s_yaml_does() {
        let yaml = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: 0\n  containerEdits:\n    env: [A=1]\n";
        let spec = parse_spec(Path::new("x.yaml"), yaml.as_bytes()).expect("parses");
        assert_eq!(spec.devices[0].name, "0");
        let json = r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":1,"containerEdits":{"env":["A=1"]}}]}"#;
        let spec = parse_spec(Path::new("x.json"), json.as_bytes()).expect("parses");
        assert_eq!(spec.devices[0].name, "1");
    }

    #[test]
    fn json_file_holding_yaml_still_parses_because_the_engine_reads_yaml() {
        let yaml = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: a\n  containerEdits:\n    env: [A=1]\n";
        let spec = parse_spec(Path::new("nvidia.json"), yaml.as_bytes()).expect("parses");
        assert_eq!(spec.device_names(), ["nvidia.com/gpu=a"]);
    }

    #[test]
    fn json_trailing_comma_is_accepted_because_yaml_flow_syntax_allows_it() {
        // Not JSON, but valid YAML flow syntax: the engine, which reads every spec as
        // YAML, loads it, so refusing it here would predict a failure that never comes.
        let text = r#"{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"name": "0", "containerEdits": {"env": ["A=1"]}},]}"#;
        assert!(
            serde_json::from_str::<serde_json::Value>(text).is_err(),
            "really not JSON"
        );
        let spec = parse_spec(Path::new("t.json"), text.as_bytes()).expect("parses as YAML");
        assert_eq!(spec.device_names(), ["nvidia.com/gpu=0"]);
    }

    #[test]
    fn empty_and_null_documents_are_reported_as_empty() {
        for body in ["", "  \n", "---\n", "# nothing\n", "null"] {
            let err = parse_spec(Path::new("/x/e.yaml"), body.as_bytes()).expect_err(body);
            assert!(matches!(err, CdiError::Empty { .. }), "{body:?}: {err:?}");
        }
    }

    #[test]
    fn unsupported_extension_is_refused() {
        let err = parse_spec(Path::new("/x/nvidia.txt"), b"{}").expect_err("must fail");
        assert!(
            matches!(err, CdiError::UnsupportedExtension { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_like_unmarshal_strict() {
        let yaml = "cdiVersion: 0.5.0\nkind: a.com/b\nkind: c.com/d\ndevices: []\n";
        let err = parse_spec(Path::new("d.yaml"), yaml.as_bytes()).expect_err("must fail");
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn read_error_names_file_and_gives_hint() {
        let err = load_spec_file(Path::new("/nonexistent/dir/nvidia.json")).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/dir/nvidia.json"), "{msg}");
        assert!(err.fix_hint().is_some());
        assert!(msg.contains(err.fix_hint().unwrap_or_default()), "{msg}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_called_so() {
        let err = parse_spec(
            Path::new("x.yaml"),
            b"cdiVersion: \"0.6.0\"\nkind: nvidia.com/gpu\n# caf\xe9\n",
        )
        .expect_err("not UTF-8");
        let msg = err.to_string();
        assert!(
            msg.contains("not valid UTF-8: first invalid byte at offset 46"),
            "{msg}"
        );
    }
}
