//! The spec snapshot check: the normalized spec is compared with
//! `snapshots/<backend>/<scenario>.snap`, so a nightly run notices when the generated
//! spec changes structure, and `cargo insta review` is how a user accepts a change.
//!
//! The harness reads the stored snapshot and compares its body itself instead of asking
//! insta's assertion, because insta lets the environment decide: `INSTA_FORCE_PASS=1` or
//! `INSTA_UPDATE=always` made a changed spec pass. Here no environment variable changes
//! the outcome; the only choice is [`SnapshotMode`], whether a pending `.snap.new` may
//! be written. The files keep insta's format byte for byte (the body as
//! `insta::assert_json_snapshot!` serializes it, the header as insta 1.x writes it), so
//! the stored snapshots keep matching and `cargo insta review` / `cargo insta accept`
//! keep working on what this module records.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::outcome::BackendKind;

/// Whether [`check`] may record a pending `<name>.snap.new` for `cargo insta review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Outside CI: a new or changed spec is written beside the stored snapshot as
    /// `.snap.new`, and a stale `.snap.new` is removed when the spec matches again,
    /// as insta does, so that `cargo insta review` only offers what this run saw.
    WritePending,
    /// In CI: nothing is written (insta writes nothing there either), the checkout
    /// stays as it was.
    CompareOnly,
}

impl SnapshotMode {
    /// The mode insta would use: [`SnapshotMode::CompareOnly`] in CI, else
    /// [`SnapshotMode::WritePending`].
    pub fn for_ci(ci: bool) -> SnapshotMode {
        if ci {
            SnapshotMode::CompareOnly
        } else {
            SnapshotMode::WritePending
        }
    }
}

/// What the comparison with the stored snapshot found. A verdict is the caller's
/// business: a new snapshot is acceptable on a first run and a failure in CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// The stored body equals the normalized spec.
    Matches {
        /// The stored snapshot.
        file: PathBuf,
    },
    /// No snapshot is stored yet.
    New {
        /// Where the snapshot belongs once accepted.
        file: PathBuf,
        /// The `.snap.new` recorded for review; `None` in [`SnapshotMode::CompareOnly`].
        pending: Option<PathBuf>,
    },
    /// The stored body differs from the normalized spec.
    Changed {
        /// The stored snapshot.
        file: PathBuf,
        /// The `.snap.new` recorded for review; `None` in [`SnapshotMode::CompareOnly`].
        pending: Option<PathBuf>,
        /// A unified diff from the stored body to the current one, cut to a readable size.
        diff: String,
    },
}

impl SnapshotOutcome {
    /// The stored snapshot's path (existing or not).
    pub fn file(&self) -> &Path {
        match self {
            SnapshotOutcome::Matches { file }
            | SnapshotOutcome::New { file, .. }
            | SnapshotOutcome::Changed { file, .. } => file,
        }
    }

    /// A one-paragraph description for reports (the diff included for a change).
    pub fn message(&self) -> String {
        let recorded = |pending: &Option<PathBuf>| match pending {
            Some(p) => format!("; recorded {} for review", p.display()),
            None => String::new(),
        };
        match self {
            SnapshotOutcome::Matches { file } => {
                format!("normalized spec matches {}", file.display())
            }
            SnapshotOutcome::New { file, pending } => {
                format!(
                    "no stored snapshot {} yet{}",
                    file.display(),
                    recorded(pending)
                )
            }
            SnapshotOutcome::Changed {
                file,
                pending,
                diff,
            } => format!(
                "the normalized spec differs from {}{}:\n{diff}",
                file.display(),
                recorded(pending)
            ),
        }
    }

    /// What to do about a new or changed snapshot; `None` when it matches.
    pub fn fix(&self) -> Option<&'static str> {
        match self {
            SnapshotOutcome::Matches { .. } => None,
            SnapshotOutcome::New { .. } => Some(
                "review the recorded snapshot with `cargo insta review` (or `cargo insta accept`) \
                 and commit it; in CI nothing is recorded, so run the harness once outside CI",
            ),
            SnapshotOutcome::Changed { .. } => Some(
                "if the change is intended (a new toolkit or driver layout), accept it with \
                 `cargo insta review` and commit the snapshot",
            ),
        }
    }
}

/// Why the snapshot could not be compared or recorded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The stored snapshot exists but cannot be read (permissions, a directory, not UTF-8).
    #[error("cannot read the stored snapshot {}: {source}", .file.display())]
    Read {
        /// The stored snapshot.
        file: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The stored file is not a text snapshot in insta's format.
    #[error("{} is not an insta text snapshot: {problem}", .file.display())]
    Malformed {
        /// The stored snapshot.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The pending `.snap.new` could not be written.
    #[error("cannot record the pending snapshot {}: {source}", .file.display())]
    WritePending {
        /// The `.snap.new` that was being written.
        file: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

impl SnapshotError {
    /// What the user can do about the error, for reports that print a "fix:" line.
    pub fn fix_hint(&self) -> &'static str {
        match self {
            SnapshotError::Read { .. } => {
                "make the snapshot readable by the user running the harness (or restore it \
                 with `git checkout -- snapshots/`)"
            }
            SnapshotError::Malformed { .. } => {
                "restore it with `git checkout -- snapshots/`, or delete it, run the harness \
                 once outside CI and accept the recorded snapshot with `cargo insta accept`"
            }
            SnapshotError::WritePending { .. } => {
                "make the snapshot directory writable (it is the harness's `--snapshots` \
                 directory), or run with `--ci` / `CI=true`, which records nothing"
            }
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            SnapshotError::Read { file, .. }
            | SnapshotError::Malformed { file, .. }
            | SnapshotError::WritePending { file, .. } => file,
        }
    }
}

/// Whether the environment says this is CI, exactly as insta 1.x decides it (its
/// `is_ci`): `CI` set to anything but `false`, `0` or empty; or, with no `CI`, Azure
/// Pipelines' `TF_BUILD` set. Only the caller's choice of [`SnapshotMode`] and of the
/// verdict for [`SnapshotOutcome::New`] may follow it, never the comparison.
pub fn ci_from_env() -> bool {
    ci_from(
        std::env::var("CI").ok().as_deref(),
        std::env::var("TF_BUILD").is_ok(),
    )
}

/// [`ci_from_env`] on given values, so the rule is testable without the environment.
fn ci_from(ci: Option<&str>, tf_build: bool) -> bool {
    match ci {
        Some("false" | "0" | "") => false,
        None => tf_build,
        Some(_) => true,
    }
}

/// Compares `value` with the stored snapshot of `scenario` for `backend` under `dir`
/// (`dir/<backend>/<scenario>.snap`). A new or changed spec is recorded as
/// `<scenario>.snap.new` when `mode` allows it. Reads no environment variable.
pub fn check(
    dir: &Path,
    backend: BackendKind,
    scenario: &str,
    value: &serde_json::Value,
    mode: SnapshotMode,
) -> Result<SnapshotOutcome, SnapshotError> {
    let snap_dir = dir.join(backend.as_str());
    let file = snap_dir.join(format!("{scenario}.snap"));
    let pending_path = snap_dir.join(format!("{scenario}.snap.new"));
    let body = json_body(value);
    let stored = match std::fs::read_to_string(&file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(SnapshotError::Read { file, source }),
    };
    let record = |pending: &Path| -> Result<Option<PathBuf>, SnapshotError> {
        match mode {
            SnapshotMode::CompareOnly => Ok(None),
            SnapshotMode::WritePending => {
                let text = pending_file_text(&header(backend, scenario), &body);
                write_atomically(pending, &text)?;
                Ok(Some(pending.to_path_buf()))
            }
        }
    };
    let Some(stored) = stored else {
        let pending = record(&pending_path)?;
        return Ok(SnapshotOutcome::New { file, pending });
    };
    let old = stored_body(&stored).map_err(|problem| SnapshotError::Malformed {
        file: file.clone(),
        problem,
    })?;
    if normalize(&old) == normalize(&body) {
        if mode == SnapshotMode::WritePending {
            // As insta does on a pass: a `.snap.new` left by an earlier run no longer
            // describes this spec. Failing to remove it changes nothing about the
            // comparison, so the result of the removal is not the verdict's business.
            let _ = std::fs::remove_file(&pending_path);
        }
        return Ok(SnapshotOutcome::Matches { file });
    }
    let diff = compact_diff(&normalize(&old), &normalize(&body));
    let pending = record(&pending_path)?;
    Ok(SnapshotOutcome::Changed {
        file,
        pending,
        diff,
    })
}

/// Accepts the pending `<scenario>.snap.new` as `cargo insta accept` does: its metadata
/// without the assertion line, then its body, stored as `<scenario>.snap` (replacing any
/// stored one), and the pending file removed. For programs that record a snapshot
/// on purpose and cannot run cargo-insta (`bench`, the GPU end-to-end script's first
/// run); users review with `cargo insta review`.
pub fn accept_pending(
    dir: &Path,
    backend: BackendKind,
    scenario: &str,
) -> Result<PathBuf, SnapshotError> {
    let snap_dir = dir.join(backend.as_str());
    let file = snap_dir.join(format!("{scenario}.snap"));
    let pending = snap_dir.join(format!("{scenario}.snap.new"));
    let text = std::fs::read_to_string(&pending).map_err(|source| SnapshotError::Read {
        file: pending.clone(),
        source,
    })?;
    let body = stored_body(&text).map_err(|problem| SnapshotError::Malformed {
        file: pending.clone(),
        problem,
    })?;
    // The header is the text before the body's closing `---` line; only its
    // `assertion_line` goes (insta's `trim_for_persistence`).
    let header_end = text
        .match_indices("\n---\n")
        .next()
        .map_or(0, |(i, _)| i + 1);
    let header: String = text[..header_end]
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("assertion_line:"))
        .collect();
    let accepted = format!("{header}---\n{}\n", normalize(&body));
    write_atomically(&file, &accepted).map_err(|e| match e {
        SnapshotError::WritePending { source, .. } => SnapshotError::WritePending {
            file: file.clone(),
            source,
        },
        other => other,
    })?;
    std::fs::remove_file(&pending).map_err(|source| SnapshotError::WritePending {
        file: pending.clone(),
        source,
    })?;
    Ok(file)
}

/// The metadata insta writes for this snapshot: `source` (the file holding the
/// comparison, relative to the workspace as insta records it), `assertion_line` (kept
/// only in `.snap.new`; `cargo insta accept` drops it from the stored `.snap`) and the
/// description. The expression is omitted, as the previous insta settings did.
struct Header {
    source: &'static str,
    assertion_line: u32,
    description: String,
}

fn header(backend: BackendKind, scenario: &str) -> Header {
    Header {
        source: file!(),
        assertion_line: line!(),
        description: format!(
            "normalized CDI spec of scenario `{scenario}` on the {} backend (cdi-harness cdi normalize)",
            backend.as_str()
        ),
    }
}

/// A `.snap.new` exactly as insta 1.x writes one (`Snapshot::save_new`): the YAML
/// metadata document (`---`, one `key: value` line per field, in insta's field order),
/// a closing `---`, the normalized body and a final newline.
fn pending_file_text(h: &Header, body: &str) -> String {
    format!(
        "---\nsource: {}\nassertion_line: {}\ndescription: {}\n---\n{}\n",
        yaml_scalar(h.source),
        h.assertion_line,
        yaml_scalar(&h.description),
        normalize(body)
    )
}

/// Writes through a temporary file in the same directory, so that `cargo insta review`
/// never sees half a snapshot.
fn write_atomically(path: &Path, text: &str) -> Result<(), SnapshotError> {
    let fail = |source| SnapshotError::WritePending {
        file: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".snap.new.")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// The body of a stored snapshot as insta reads it (`Snapshot::from_file`): the lines
/// after the YAML header, joined with `\n`. A binary snapshot or a header that never
/// closes is not something this check can compare.
fn stored_body(text: &str) -> Result<String, String> {
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return Err("it does not start with a `---` metadata header".into());
    }
    let mut meta = String::new();
    let mut closed = false;
    for line in lines.by_ref() {
        if line.trim_end() == "---" {
            closed = true;
            break;
        }
        meta.push_str(line);
    }
    if !closed {
        return Err("its metadata header has no closing `---`".into());
    }
    if !meta.trim().is_empty() {
        let meta: serde_yaml_ng::Value = serde_yaml_ng::from_str(&meta)
            .map_err(|e| format!("its metadata header is not YAML: {e}"))?;
        if meta
            .get("snapshot_kind")
            .and_then(serde_yaml_ng::Value::as_str)
            == Some("binary")
        {
            return Err("it is a binary snapshot".into());
        }
    }
    let body: Vec<&str> = lines
        .map(|l| {
            let l = l.strip_suffix('\n').unwrap_or(l);
            l.strip_suffix('\r').unwrap_or(l)
        })
        .collect();
    Ok(body.join("\n"))
}

/// insta's normalization of file snapshot contents before comparing and writing:
/// trailing whitespace trimmed, CRLF turned into LF.
fn normalize(contents: &str) -> String {
    contents.trim_end().replace("\r\n", "\n")
}

/// `value` as `insta::assert_json_snapshot!` serializes it (insta's own pretty JSON
/// writer, `content::json::to_string_pretty`, not serde_json's): two-space indents,
/// `": "` between key and value, `[]`/`{}` for empty containers, floats always with a
/// fraction, the same escapes. Keys come in the map's order, as through insta.
fn json_body(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value, 0);
    out
}

fn write_json(out: &mut String, value: &serde_json::Value, depth: usize) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() => {
                        let text = f.to_string();
                        let whole = !text.contains('.');
                        out.push_str(&text);
                        if whole {
                            out.push_str(".0");
                        }
                    }
                    _ => out.push_str("null"),
                }
            }
        }
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(out, depth + 1);
                write_json(out, item, depth + 1);
            }
            if !items.is_empty() {
                out.push('\n');
                indent(out, depth);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                indent(out, depth + 1);
                write_json_str(out, key);
                out.push_str(": ");
                write_json(out, item, depth + 1);
            }
            if !map.is_empty() {
                out.push('\n');
                indent(out, depth);
            }
            out.push('}');
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// A JSON string with insta's escapes: `"` and `\`, the short forms `\b \t \n \f \r`,
/// every other byte below 0x20 as `\u00xx` (lower-case hex); nothing else.
fn write_json_str(out: &mut String, s: &str) {
    push_quoted(out, s, false);
}

/// A YAML scalar as insta's vendored emitter writes a string: plain unless it needs
/// quotes (`need_quotes`), then double-quoted with `escape_str`'s escapes (JSON's, and
/// DEL as `\u007f` too).
fn yaml_scalar(s: &str) -> String {
    if !yaml_needs_quotes(s) {
        return s.to_string();
    }
    let mut out = String::new();
    push_quoted(&mut out, s, true);
    out
}

/// `s` double-quoted with the escapes insta's JSON and YAML writers share; `del` also
/// escapes 0x7f (the YAML emitter does, the JSON one does not).
fn push_quoted(out: &mut String, s: &str, del: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 || (del && c == '\u{7f}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// insta's `need_quotes` (its vendored yaml-rust emitter), rule for rule.
fn yaml_needs_quotes(s: &str) -> bool {
    const WORDS: [&str; 22] = [
        "yes", "Yes", "YES", "no", "No", "NO", "True", "TRUE", "true", "False", "FALSE", "false",
        "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
    ];
    s.is_empty()
        || s.starts_with(' ')
        || s.ends_with(' ')
        || s.starts_with(['&', '*', '?', '|', '-', '<', '>', '=', '!', '%', '@'])
        || s.contains(|c: char| {
            matches!(c, ':' | '{' | '}' | '[' | ']' | ',' | '#' | '`' | '"' | '\'' | '\\'
                | '\0'..='\x06' | '\t' | '\n' | '\r' | '\x0e'..='\x1a' | '\x1c'..='\x1f')
        })
        || WORDS.contains(&s)
        || s.starts_with('.')
        || s.starts_with("0x")
        || s.parse::<i64>().is_ok()
        || s.parse::<f64>().is_ok()
}

/// A unified diff limited to a readable size.
fn compact_diff(old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old.trim_end(), new.trim_end());
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header("stored", "now")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > 40 {
        format!(
            "{}\n… ({} more diff lines)",
            lines[..40].join("\n"),
            lines.len() - 40
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1() -> serde_json::Value {
        json!({"kind": "nvidia.com/gpu", "devices": ["0", "all"]})
    }

    fn v2() -> serde_json::Value {
        json!({"kind": "nvidia.com/gpu", "devices": ["0", "1", "all"]})
    }

    /// Stores `value` as `cargo insta accept` would store the `.snap.new` this module
    /// writes: insta itself reads the pending file and saves it as the `.snap`.
    fn accept(dir: &Path, scenario: &str, value: &serde_json::Value) -> PathBuf {
        let out = check(
            dir,
            BackendKind::Sim,
            scenario,
            value,
            SnapshotMode::WritePending,
        )
        .expect("check");
        let (SnapshotOutcome::New { file, pending }
        | SnapshotOutcome::Changed { file, pending, .. }) = out
        else {
            panic!("nothing to accept: {out:?}");
        };
        let pending = pending.expect("a .snap.new was recorded");
        let snap = insta::Snapshot::from_file(&pending).expect("insta reads the .snap.new");
        snap.save(&file).expect("insta saves the .snap");
        std::fs::remove_file(&pending).expect("remove .snap.new");
        file
    }

    #[test]
    fn a_first_run_records_a_snap_new_in_insta_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = check(
            dir.path(),
            BackendKind::Sim,
            "t",
            &v1(),
            SnapshotMode::WritePending,
        )
        .expect("check");
        let file = dir.path().join("sim/t.snap");
        let pending = dir.path().join("sim/t.snap.new");
        assert_eq!(
            out,
            SnapshotOutcome::New {
                file: file.clone(),
                pending: Some(pending.clone())
            }
        );
        assert!(!file.exists(), "nothing is accepted on the user's behalf");
        assert!(
            out.message().contains("no stored snapshot"),
            "{}",
            out.message()
        );
        assert!(out.fix().is_some_and(|f| f.contains("cargo insta review")));
        // Byte for byte what insta 1.x writes for a `.snap.new` (metadata with the
        // assertion line, `---`, body, newline).
        let text = std::fs::read_to_string(&pending).expect("read .snap.new");
        let h = header(BackendKind::Sim, "t");
        assert_eq!(
            text,
            format!(
                "---\nsource: harness/src/snapshot.rs\nassertion_line: {}\ndescription: \"normalized CDI spec of scenario `t` on the sim backend (cdi-harness cdi normalize)\"\n---\n{{\n  \"devices\": [\n    \"0\",\n    \"all\"\n  ],\n  \"kind\": \"nvidia.com/gpu\"\n}}\n",
                h.assertion_line
            )
        );
        // And insta reads it back as the snapshot it is (what `cargo insta review` shows).
        let snap = insta::Snapshot::from_file(&pending).expect("insta parses it");
        assert_eq!(snap.metadata().source(), Some("harness/src/snapshot.rs"));
        assert_eq!(snap.metadata().assertion_line(), Some(h.assertion_line));
        assert_eq!(snap.metadata().description(), Some(h.description.as_str()));
        assert_eq!(
            snap.contents().as_text().map(ToString::to_string),
            Some(json_body(&v1()))
        );
    }

    #[test]
    fn compare_only_records_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = check(
            dir.path(),
            BackendKind::Host,
            "t",
            &v1(),
            SnapshotMode::CompareOnly,
        )
        .expect("check");
        assert_eq!(
            out,
            SnapshotOutcome::New {
                file: dir.path().join("host/t.snap"),
                pending: None
            }
        );
        assert!(!dir.path().join("host").exists());
        let file = accept(dir.path(), "t", &v1());
        let out = check(
            dir.path(),
            BackendKind::Sim,
            "t",
            &v2(),
            SnapshotMode::CompareOnly,
        )
        .expect("check");
        assert!(
            matches!(&out, SnapshotOutcome::Changed { pending: None, file: f, .. } if *f == file),
            "{out:?}"
        );
        assert!(!dir.path().join("sim/t.snap.new").exists());
    }

    #[test]
    fn accepted_then_matching_then_changed_with_a_diff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = accept(dir.path(), "t", &v1());
        // Accepted as insta accepts: the assertion line is dropped from the `.snap`,
        // exactly the form of the snapshots stored in the repository.
        let stored = std::fs::read_to_string(&file).expect("read .snap");
        assert!(
            stored.starts_with("---\nsource: harness/src/snapshot.rs\ndescription: \"normalized CDI spec of scenario `t` on the sim backend (cdi-harness cdi normalize)\"\n---\n{\n"),
            "{stored}"
        );
        // A stale `.snap.new` goes away once the spec matches again.
        std::fs::write(dir.path().join("sim/t.snap.new"), "stale").expect("write");
        let out = check(
            dir.path(),
            BackendKind::Sim,
            "t",
            &v1(),
            SnapshotMode::WritePending,
        )
        .expect("check");
        assert_eq!(out, SnapshotOutcome::Matches { file: file.clone() });
        assert_eq!(out.fix(), None);
        assert!(!dir.path().join("sim/t.snap.new").exists());
        // A structural change: a diff naming the changed line, a pending file, and the
        // stored snapshot untouched.
        let out = check(
            dir.path(),
            BackendKind::Sim,
            "t",
            &v2(),
            SnapshotMode::WritePending,
        )
        .expect("check");
        let SnapshotOutcome::Changed {
            file: f,
            pending,
            diff,
        } = &out
        else {
            panic!("{out:?}");
        };
        assert_eq!(f, &file);
        assert!(diff.contains("+    \"1\","), "{diff}");
        assert!(
            diff.contains("--- stored") && diff.contains("+++ now"),
            "{diff}"
        );
        assert!(out.message().contains(diff.as_str()));
        let pending = pending.as_ref().expect("pending");
        let snap = insta::Snapshot::from_file(pending).expect("insta parses it");
        assert_eq!(
            snap.contents().as_text().map(ToString::to_string),
            Some(json_body(&v2()))
        );
        assert_eq!(std::fs::read_to_string(&file).expect("read"), stored);
    }

    #[test]
    fn accept_pending_stores_what_insta_accept_stores() {
        let ours = tempfile::tempdir().expect("tempdir");
        let theirs = tempfile::tempdir().expect("tempdir");
        let by_insta = accept(theirs.path(), "t", &v2());
        check(
            ours.path(),
            BackendKind::Sim,
            "t",
            &v2(),
            SnapshotMode::WritePending,
        )
        .expect("check");
        let file = accept_pending(ours.path(), BackendKind::Sim, "t").expect("accept");
        assert_eq!(file, ours.path().join("sim/t.snap"));
        assert!(!ours.path().join("sim/t.snap.new").exists());
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            std::fs::read_to_string(&by_insta).expect("read")
        );
        let out = check(
            ours.path(),
            BackendKind::Sim,
            "t",
            &v2(),
            SnapshotMode::CompareOnly,
        )
        .expect("check");
        assert_eq!(out, SnapshotOutcome::Matches { file });
        // Nothing pending: a typed error naming the missing file.
        let e = accept_pending(ours.path(), BackendKind::Sim, "t").expect_err("none");
        assert!(
            matches!(&e, SnapshotError::Read { file, .. } if file.ends_with("sim/t.snap.new")),
            "{e:?}"
        );
    }

    #[test]
    fn a_body_differing_only_in_trailing_space_or_crlf_matches_as_in_insta() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = accept(dir.path(), "t", &v1());
        let text = std::fs::read_to_string(&file).expect("read");
        std::fs::write(&file, format!("{}\n\n", text.replace('\n', "\r\n"))).expect("write");
        let out = check(
            dir.path(),
            BackendKind::Sim,
            "t",
            &v1(),
            SnapshotMode::CompareOnly,
        )
        .expect("check");
        assert!(matches!(out, SnapshotOutcome::Matches { .. }), "{out:?}");
    }

    #[test]
    fn unreadable_and_malformed_snapshots_are_typed_errors_with_a_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = dir.path().join("sim");
        // A directory where the file should be: unreadable.
        std::fs::create_dir_all(sim.join("d.snap")).expect("mkdir");
        let e = check(
            dir.path(),
            BackendKind::Sim,
            "d",
            &v1(),
            SnapshotMode::CompareOnly,
        )
        .expect_err("unreadable");
        assert!(matches!(e, SnapshotError::Read { .. }), "{e:?}");
        assert_eq!(e.file(), sim.join("d.snap"));
        assert!(
            e.to_string().contains("cannot read the stored snapshot"),
            "{e}"
        );
        assert!(e.fix_hint().contains("git checkout"));
        for (name, text, problem) in [
            ("nohead", "{}\n", "does not start"),
            ("open", "---\nsource: x\n{}\n", "no closing"),
            (
                "bin",
                "---\nextension: png\nsnapshot_kind: binary\n---\n",
                "binary",
            ),
        ] {
            std::fs::write(sim.join(format!("{name}.snap")), text).expect("write");
            let e = check(
                dir.path(),
                BackendKind::Sim,
                name,
                &v1(),
                SnapshotMode::WritePending,
            )
            .expect_err(name);
            assert!(
                matches!(&e, SnapshotError::Malformed { problem: p, .. } if p.contains(problem)),
                "{name}: {e:?}"
            );
            assert!(e.fix_hint().contains("cargo insta accept"));
        }
    }

    #[test]
    fn an_unwritable_pending_file_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A non-empty directory where the `.snap.new` should go: nothing can replace
        // it, whoever runs the test (root included).
        let blocker = dir.path().join("sim/t.snap.new");
        std::fs::create_dir_all(&blocker).expect("mkdir");
        std::fs::write(blocker.join("x"), "").expect("write");
        let e = check(
            dir.path(),
            BackendKind::Sim,
            "t",
            &v1(),
            SnapshotMode::WritePending,
        )
        .expect_err("unwritable");
        assert!(
            matches!(&e, SnapshotError::WritePending { file, .. } if *file == blocker),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("cannot record the pending snapshot"),
            "{e}"
        );
        assert!(e.fix_hint().contains("writable"));
        // No temporary file is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sim"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("t.snap.new")]);
        // Comparing only writes nothing, so the same place gives an outcome.
        assert!(matches!(
            check(
                dir.path(),
                BackendKind::Sim,
                "t",
                &v1(),
                SnapshotMode::CompareOnly
            ),
            Ok(SnapshotOutcome::New { pending: None, .. })
        ));
    }

    /// The body equals what `insta::assert_json_snapshot!` serializes (insta's own
    /// serializer, reached through its macro support), on values that exercise every
    /// rule: escapes, unicode, floats, big integers, empty and nested containers.
    #[test]
    fn the_body_is_serialized_exactly_as_insta_does() {
        let values = [
            v1(),
            json!({}),
            json!([]),
            json!(null),
            json!("plain"),
            json!({"a": [], "b": {}, "c": [[], [{}]], "d": {"e": {"f": [1, -2, 3.5]}}}),
            json!({
                "quote\"back\\slash": "tab\tnl\ncr\rbs\u{8}ff\u{c}nul\u{0}esc\u{1b}del\u{7f}",
                "unicode": "GPU — ü 😀 /slash",
                "floats": [0.1, 1.0, -0.0, 1e16, 1e-7, 2.5e300, -3.25],
                "ints": [0, u64::MAX, i64::MIN, -1],
                "bools": [true, false, null]
            }),
        ];
        for v in &values {
            let insta = insta::_macro_support::serialize_value(
                v,
                insta::_macro_support::SerializationFormat::Json,
            );
            assert_eq!(json_body(v), insta, "{v}");
        }
    }

    /// Every snapshot stored in the repository: its body is exactly the re-serialized
    /// value (so today's specs keep matching), its header is the one this module
    /// produces once accepted, and `check` says it matches.
    #[test]
    fn stored_snapshots_keep_matching() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshots");
        let mut seen = 0;
        for backend in [BackendKind::Sim, BackendKind::Host] {
            let Ok(entries) = std::fs::read_dir(root.join(backend.as_str())) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("dir entry").path();
                if path.extension().and_then(|e| e.to_str()) != Some("snap") {
                    continue;
                }
                let scenario = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("utf-8 name")
                    .to_string();
                let text = std::fs::read_to_string(&path).expect("read");
                let body = stored_body(&text).expect("insta format");
                let value: serde_json::Value = serde_json::from_str(&body).expect("json body");
                assert_eq!(json_body(&value), body, "{}", path.display());
                let h = header(backend, &scenario);
                assert_eq!(
                    text,
                    format!(
                        "---\nsource: {}\ndescription: {}\n---\n{body}\n",
                        h.source,
                        yaml_scalar(&h.description)
                    ),
                    "{}",
                    path.display()
                );
                let out = check(&root, backend, &scenario, &value, SnapshotMode::CompareOnly)
                    .expect("check");
                assert_eq!(
                    out,
                    SnapshotOutcome::Matches {
                        file: root.join(backend.as_str()).join(format!("{scenario}.snap"))
                    }
                );
                seen += 1;
            }
        }
        assert!(
            seen >= 8,
            "only {seen} stored snapshots found under {}",
            root.display()
        );
    }

    #[test]
    fn yaml_scalars_follow_insta_emitter() {
        assert_eq!(
            yaml_scalar("harness/src/snapshot.rs"),
            "harness/src/snapshot.rs"
        );
        assert_eq!(yaml_scalar("a `b`"), "\"a `b`\"");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("12"), "\"12\"");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("x: \"y\"\n"), "\"x: \\\"y\\\"\\n\"");
        assert_eq!(yaml_scalar("a\u{b}b:"), "\"a\\u000bb:\"");
    }

    #[test]
    fn ci_is_read_as_insta_reads_it() {
        assert!(!ci_from(None, false));
        assert!(ci_from(None, true), "Azure Pipelines' TF_BUILD");
        for off in ["false", "0", ""] {
            assert!(!ci_from(Some(off), true), "CI={off:?}");
        }
        for on in ["true", "1", "yes", "woodpecker"] {
            assert!(ci_from(Some(on), false), "CI={on:?}");
        }
        assert_eq!(SnapshotMode::for_ci(true), SnapshotMode::CompareOnly);
        assert_eq!(SnapshotMode::for_ci(false), SnapshotMode::WritePending);
    }

    /// Set in the child process of the next test.
    const CHILD: &str = "CDI_HARNESS_SNAPSHOT_ENV_CHILD";

    /// insta's variables that made a changed spec pass (`INSTA_FORCE_PASS=1`,
    /// `INSTA_UPDATE=always`) are set in a child process (the environment of this one
    /// is shared by concurrent tests), which then checks a changed and a new value.
    #[test]
    fn insta_environment_variables_change_no_outcome() {
        if std::env::var_os(CHILD).is_some() {
            in_insta_environment();
            return;
        }
        let name = "snapshot::tests::insta_environment_variables_change_no_outcome";
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("INSTA_FORCE_PASS", "1")
            .env("INSTA_UPDATE", "always")
            .env_remove("CI")
            .env_remove("TF_BUILD")
            .output()
            .expect("run the child");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        // The child really ran this test (a filter matching nothing also exits 0).
        assert!(text.contains("1 passed"), "{text}");
        assert!(
            text.contains("child: insta passed a changed value"),
            "{text}"
        );
    }

    fn in_insta_environment() {
        assert_eq!(std::env::var("INSTA_FORCE_PASS").as_deref(), Ok("1"));
        assert_eq!(std::env::var("INSTA_UPDATE").as_deref(), Ok("always"));
        // Control: insta's own assertion passes a changed value here, which is how the
        // previous implementation was fooled.
        let control = tempfile::tempdir().expect("tempdir");
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(control.path());
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| {
            insta::assert_json_snapshot!("control", v1());
            insta::assert_json_snapshot!("control", v2());
        });
        println!("child: insta passed a changed value");
        // This module is not: changed stays changed, new stays new, nothing accepted.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = accept(dir.path(), "t", &v1());
        let stored = std::fs::read_to_string(&file).expect("read");
        for mode in [SnapshotMode::WritePending, SnapshotMode::CompareOnly] {
            let out = check(dir.path(), BackendKind::Sim, "t", &v2(), mode).expect("check");
            assert!(matches!(out, SnapshotOutcome::Changed { .. }), "{out:?}");
            assert_eq!(std::fs::read_to_string(&file).expect("read"), stored);
            let out = check(dir.path(), BackendKind::Sim, "n", &v1(), mode).expect("check");
            assert!(matches!(out, SnapshotOutcome::New { .. }), "{out:?}");
            assert!(!dir.path().join("sim/n.snap").exists());
        }
    }
}
