//! The CDI corpus (`tests/fixtures/cdi-corpus/*.toml`): cases re-expressed from the Go
//! CDI library's own tests, each with the verdict the library's test asserts and the
//! verdicts of older releases where their source differs. Shared by the `cdi_corpus`
//! test (the harness's rules) and `cdi_engine_parity` (the real engines).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cdi_harness::cdi::{Library, Outcome, Report, Rules, Verdict, check_bytes};
use serde::Deserialize;

/// One corpus file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusFile {
    /// The cases, in file order.
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// One spec and what each library makes of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The library test it comes from (`TestNewSpec/invalid, invalid vendor`), or the
    /// measured behaviour it records.
    pub test: String,
    /// The file name to write it as (its extension matters to the engine).
    pub file: String,
    /// The verdict of the library's main branch (what its test asserts).
    pub expect: Expected,
    /// v0.7.x (engine 26.1), where it differs.
    pub v0_7: Option<Expected>,
    /// v1.0.x (engine 28.5), where it differs.
    pub v1_0: Option<Expected>,
    /// v1.1.0 (engine 29), where it differs.
    pub v1_1: Option<Expected>,
    /// Whether loading comes with SPEC.md warnings.
    #[serde(default)]
    pub warnings: bool,
    /// Whether the engine parity run may write it to a real engine (no crash, a
    /// device name to probe).
    #[serde(default = "yes")]
    pub engine: bool,
    /// Why not, when `engine = false`.
    pub why: Option<String>,
    /// The device name to ask the engine for, when the spec text has none that the
    /// harness can read (e.g. it does not parse).
    pub probe: Option<String>,
    /// The spec text.
    pub spec: String,
    /// The corpus file it is in (set when loading).
    #[serde(skip)]
    pub source: String,
}

fn yes() -> bool {
    true
}

/// A library's verdict on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    /// It loads (with or without SPEC.md warnings).
    Loads,
    /// It is refused.
    Refused,
    /// The library panics on it.
    Crash,
}

impl Case {
    /// The verdict `library` should give.
    pub fn expected(&self, library: Library) -> Expected {
        let over = match library {
            Library::V0_7 => self.v0_7,
            Library::V1_0 => self.v1_0,
            Library::V1_1 => self.v1_1,
            Library::Main => None,
        };
        over.unwrap_or(self.expect)
    }

    /// `file:test`, for messages.
    pub fn label(&self) -> String {
        format!("{}: {}", self.source, self.test)
    }

    /// The harness's verdict under `rules`.
    pub fn judge(&self, rules: &Rules) -> (Expected, Report) {
        let v = check_bytes(Path::new(&self.file), self.spec.as_bytes(), rules);
        let got = match v.verdict {
            Verdict::Loads | Verdict::LoadsWithWarnings => Expected::Loads,
            Verdict::Refused if v.report.crashes() => Expected::Crash,
            Verdict::Refused | Verdict::Unreadable => Expected::Refused,
        };
        (got, v.report)
    }

    /// The qualified name of the first device, as the engine would list it: what the
    /// parity run asks the engine to resolve. Read from the raw tree (field names in
    /// any case), so specs the decoder refuses still have one.
    pub fn probe(&self) -> Option<String> {
        if let Some(p) = &self.probe {
            return Some(p.clone());
        }
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&self.spec).ok()?;
        let field = |m: &serde_yaml_ng::Value, name: &str| -> Option<serde_yaml_ng::Value> {
            m.as_mapping()?
                .iter()
                .find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.clone())
        };
        let text = |v: serde_yaml_ng::Value| -> Option<String> {
            match v {
                serde_yaml_ng::Value::String(s) => Some(s),
                serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let kind = text(field(&v, "kind")?)?;
        let devices = field(&v, "devices")?;
        let first = devices.as_sequence()?.first()?.clone();
        let name = text(field(&first, "name")?)?;
        let qualified = format!("{kind}={name}");
        cdi_harness::cdi::QualifiedName::parse(&qualified).ok()?;
        Some(qualified)
    }
}

/// The corpus directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdi-corpus")
}

/// Every case of every corpus file, files in name order.
pub fn load() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("corpus file");
        let parsed: CorpusFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let source = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for mut c in parsed.cases {
            c.source = source.clone();
            cases.push(c);
        }
    }
    cases
}

/// Whether a harness outcome matches an expectation, warnings included.
pub fn matches(case: &Case, expected: Expected, got: Expected, report: &Report) -> bool {
    if expected != got {
        return false;
    }
    if got != Expected::Loads {
        return true;
    }
    let outcome = report.outcome();
    if case.warnings {
        outcome == Outcome::LoadsWithWarnings
    } else {
        outcome == Outcome::Loads
    }
}
