//! The JSON record: written atomically, read back (schema checked) for diffs, history
//! and `report judge`.

#[allow(unused_imports)]
use super::*;

/// Writes the JSON report atomically (write to a temp file in the same dir, fsync, rename)
/// so an interrupted run never leaves a half-written report: the JSON is the record that
/// `read_json`, diffs and history rely on, so it must be either the old one or the new one.
/// Missing parent directories are created, so `--json out/run.json` just works.
pub fn write_json(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    let mut bytes =
        serde_json::to_vec_pretty(report).map_err(|source| ReportError::EncodeJson {
            path: path.to_path_buf(),
            source,
        })?;
    bytes.push(b'\n');
    write_atomically(path, |w| w.write_all(&bytes))
}

/// Only the field needed to decide whether the rest of the file can be trusted.
#[derive(Deserialize)]
pub(super) struct SchemaProbe {
    schema_version: Option<u64>,
}

/// Reads a report back (for diffs, re-rendering and history) and refuses one written by a
/// newer cdi-harness, whose fields may have changed meaning, rather than misreading it.
pub fn read_json(path: &Path) -> Result<RunReport, ReportError> {
    let bytes = fs::read(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // The version is checked before the full parse so that a newer layout is reported as
    // "too new" rather than as a confusing missing-field error.
    let found = serde_json::from_slice::<SchemaProbe>(&bytes)
        .ok()
        .and_then(|probe| probe.schema_version);
    if let Some(found) = found.filter(|v| *v > u64::from(REPORT_SCHEMA_VERSION)) {
        return Err(ReportError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: REPORT_SCHEMA_VERSION,
        });
    }
    serde_json::from_slice(&bytes).map_err(|source| ReportError::Parse {
        path: path.to_path_buf(),
        source,
    })
}
