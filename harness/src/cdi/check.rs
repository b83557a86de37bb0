//! The whole verdict on one spec file under one engine's rules: what `cdi validate`
//! prints and what the registry uses to decide which files the engine loads.

use std::path::{Path, PathBuf};

use super::CdiError;
use super::rules::Rules;
use super::spec::{Spec, decode_spec, read_spec_file};
use super::validate::{Finding, Outcome, Report, validate_spec};

/// The four answers to "will my engine load this file?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// It loads (exit 0).
    Loads,
    /// It loads but breaks SPEC.md (exit 0; 1 with `--strict`).
    LoadsWithWarnings,
    /// The engine refuses it (exit 1).
    Refused,
    /// The harness cannot read it: missing, not a regular file, too large, wrong
    /// extension (exit 2).
    Unreadable,
}

impl Verdict {
    /// The word printed on the summary line.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Loads => "loads",
            Verdict::LoadsWithWarnings => "loads with warnings",
            Verdict::Refused => "refused",
            Verdict::Unreadable => "unreadable",
        }
    }

    /// `cdi validate`'s exit code for this verdict.
    pub fn exit_code(self, strict: bool) -> u8 {
        match self {
            Verdict::Loads => 0,
            Verdict::LoadsWithWarnings => u8::from(strict),
            Verdict::Refused => 1,
            Verdict::Unreadable => 2,
        }
    }
}

impl From<Outcome> for Verdict {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Loads => Verdict::Loads,
            Outcome::LoadsWithWarnings => Verdict::LoadsWithWarnings,
            Outcome::Refused => Verdict::Refused,
        }
    }
}

/// One file's verdict with its reasons.
#[derive(Debug)]
pub struct FileVerdict {
    /// The file.
    pub path: PathBuf,
    /// The answer.
    pub verdict: Verdict,
    /// Errors, warnings and notes with field paths (for an unparsable file one error
    /// with path `-`).
    pub report: Report,
    /// The spec, when it could be decoded without problems.
    pub spec: Option<Spec>,
    /// The read or parse error, when there was one (its fix hint is worth printing).
    pub error: Option<CdiError>,
}

/// Reads `path` safely ([`read_spec_file`]) and judges it with `rules`.
pub fn check_file(path: &Path, rules: &Rules) -> FileVerdict {
    match read_spec_file(path) {
        Ok(bytes) => check_bytes(path, &bytes, rules),
        Err(e) => from_error(path, e),
    }
}

/// Judges spec bytes (named `path`, whose extension picks nothing but is checked).
pub fn check_bytes(path: &Path, bytes: &[u8], rules: &Rules) -> FileVerdict {
    let decoded = match decode_spec(path, bytes) {
        Ok(d) => d,
        Err(e) => return from_error(path, e),
    };
    if !decoded.problems.is_empty() {
        // The Go decoder fails before validation runs, the same way in every library.
        let report = Report {
            errors: decoded
                .problems
                .into_iter()
                .map(|p| Finding {
                    path: if p.path.is_empty() {
                        "-".to_owned()
                    } else {
                        p.path
                    },
                    message: p.message,
                    crash: p.crash,
                })
                .collect(),
            ..Report::default()
        };
        return FileVerdict {
            path: path.to_path_buf(),
            verdict: Verdict::Refused,
            report,
            spec: None,
            error: None,
        };
    }
    let mut report = validate_spec(&decoded.spec, rules);
    if path.extension().is_some_and(|e| e == "yml") {
        report.warnings.push(Finding {
            path: "-".to_owned(),
            message: "the engine reads only *.json and *.yaml from its spec dirs, never *.yml: rename the file to *.yaml"
                .to_owned(),
            crash: false,
        });
    }
    FileVerdict {
        path: path.to_path_buf(),
        verdict: report.outcome().into(),
        report,
        spec: Some(decoded.spec),
        error: None,
    }
}

/// The verdict for a file that could not be read or parsed.
fn from_error(path: &Path, e: CdiError) -> FileVerdict {
    let verdict = if e.is_unreadable() {
        Verdict::Unreadable
    } else {
        Verdict::Refused
    };
    let message = match &e {
        CdiError::Parse { reason, line, .. } => match line {
            Some(l) => format!("cannot parse (line {l}): {reason}"),
            None => format!("cannot parse: {reason}"),
        },
        CdiError::Empty { .. } => {
            "the file holds no spec (\"no Spec data\"): it defines no devices".to_owned()
        }
        other => other.to_string(),
    };
    FileVerdict {
        path: path.to_path_buf(),
        verdict,
        report: Report {
            errors: vec![Finding {
                path: "-".to_owned(),
                message,
                crash: false,
            }],
            ..Report::default()
        },
        spec: None,
        error: Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::rules::Library;

    fn engine(v: &str) -> Rules {
        Rules::for_engine(v).expect("in the table")
    }

    #[test]
    fn a_fifo_is_unreadable_at_once_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("pipe.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let v = check_file(&fifo, &engine("28.5"));
        assert_eq!(v.verdict, Verdict::Unreadable);
        assert!(
            v.report.errors[0].message.contains("FIFO"),
            "{:?}",
            v.report
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_deeply_nested_file_is_refused_in_linear_time() {
        let text = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        let started = std::time::Instant::now();
        let v = check_bytes(Path::new("deep.json"), text.as_bytes(), &engine("28.5"));
        assert_eq!(v.verdict, Verdict::Refused);
        assert!(
            v.report.errors[0].message.contains("deeper than 64"),
            "{:?}",
            v.report
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn engine_version_changes_the_verdict_and_notes_say_so() {
        let spec = br#"{"cdiVersion":"1.1.0","kind":"a.com/gpu","devices":[{"name":"x","containerEdits":{"env":["A=1"]}}]}"#;
        let on_28 = check_bytes(Path::new("s.json"), spec, &engine("28.5"));
        assert_eq!(on_28.verdict, Verdict::Refused);
        let on_29 = check_bytes(Path::new("s.json"), spec, &engine("29.0"));
        assert_eq!(on_29.verdict, Verdict::Loads, "{:?}", on_29.report);
        let notes: Vec<String> = on_29.report.notes.iter().map(ToString::to_string).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("cdiVersion: refused by engine 28.5's CDI library v1.0.x")),
            "{notes:?}"
        );
    }

    #[test]
    fn single_character_vendor_crashes_older_engines_only() {
        let spec =
            b"cdiVersion: 0.5.0\nkind: a/b\ndevices: [{name: x, containerEdits: {env: [A=1]}}]\n";
        let v = check_bytes(
            Path::new("s.yaml"),
            spec,
            &Rules::for_library(Library::Main),
        );
        assert_eq!(v.verdict, Verdict::Loads);
        let notes: Vec<String> = v.report.notes.iter().map(|n| n.message.clone()).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("crashes the parser of engine 28.5")
                    && n.contains("use a vendor of at least two characters")),
            "{notes:?}"
        );
        let old = check_bytes(Path::new("s.yaml"), spec, &engine("28.5"));
        assert!(old.report.crashes());
    }

    #[test]
    fn a_yml_file_is_read_but_warned_about() {
        let spec = b"cdiVersion: 0.5.0\nkind: a.com/gpu\ndevices: [{name: x, containerEdits: {env: [A=1]}}]\n";
        let v = check_bytes(Path::new("nvidia.yml"), spec, &engine("28.5"));
        assert_eq!(v.verdict, Verdict::LoadsWithWarnings);
        assert!(
            v.report.warnings[0]
                .message
                .contains("rename the file to *.yaml")
        );
    }

    #[test]
    fn warnings_are_not_refusals() {
        let spec = b"cdiVersion: 0.5.0\nkind: a.com/gpu\ndevices: [{name: x, containerEdits: {deviceNodes: [{path: dev/x}], hooks: [{hookName: poststop, path: /bin/true, timeout: 0}]}}]\n";
        let v = check_bytes(Path::new("s.yaml"), spec, &engine("28.5"));
        assert_eq!(v.verdict, Verdict::LoadsWithWarnings, "{:?}", v.report);
        assert_eq!(v.verdict.exit_code(false), 0);
        assert_eq!(v.verdict.exit_code(true), 1);
        let paths: Vec<&str> = v.report.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "devices[0].containerEdits.deviceNodes[0].path",
                "devices[0].containerEdits.hooks[0].timeout"
            ]
        );
    }
}
