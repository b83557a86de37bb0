//! Turning a [`RunReport`] into the artefacts people and machines read: the JSON record,
//! JUnit XML for CI dashboards, a Markdown summary, the terminal table and the per-check
//! progress lines.
//!
//! Every renderer labels simulated results as such, because a green run against the
//! `sim` backend says nothing about real GPUs and must never be mistaken for one.
//! Files are written atomically so that an interrupted run cannot leave a truncated
//! report that a later `read_json` (or a dashboard) would choke on.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use serde::Deserialize;

use crate::outcome::{CheckResult, Evidence, REPORT_SCHEMA_VERSION, RunReport, Status};

/// Why a report could not be written or read back. Each message names the file involved
/// and says what to do, because these errors are shown to users as-is at the end of a run.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing a report file failed at `step`; the previous file, if any, is left untouched.
    #[error(
        "could not write {}: {step} failed: {source}; check that the directory is writable and the disk is not full",
        .path.display()
    )]
    Write {
        /// The report file that was being written.
        path: PathBuf,
        /// What the writer was doing when it failed, e.g. `creating a temporary file`.
        step: &'static str,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The report file could not be read at all.
    #[error(
        "could not read the report {}: {source}; check the path, or produce a report first with `cdi-harness run`",
        .path.display()
    )]
    Read {
        /// The report file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The file was read but is not a cdi-harness JSON report of a layout this build knows.
    #[error(
        "{} is not a valid cdi-harness JSON report ({source}); it may be truncated, hand-edited or another tool's file: run `cdi-harness run` again to regenerate it",
        .path.display()
    )]
    Parse {
        /// The report file that was being read.
        path: PathBuf,
        /// Where and why parsing failed.
        source: serde_json::Error,
    },

    /// The report was written by a newer cdi-harness whose layout this build cannot promise
    /// to understand; reading it anyway could silently misreport results.
    #[error(
        "{} uses report schema version {found}, but this cdi-harness reads only versions up to {supported}; read it with the newer cdi-harness that wrote it, or regenerate it with this one",
        .path.display()
    )]
    NewerSchema {
        /// The report file that was being read.
        path: PathBuf,
        /// The `schema_version` found in the file.
        found: u64,
        /// The newest version this build understands ([`REPORT_SCHEMA_VERSION`]).
        supported: u32,
    },

    /// The report could not be encoded as JSON; nothing was written.
    #[error(
        "could not encode the report as JSON for {}: {source}; nothing was written, this is a bug in cdi-harness, please report it",
        .path.display()
    )]
    EncodeJson {
        /// The report file that was to be written.
        path: PathBuf,
        /// The encoder's error.
        source: serde_json::Error,
    },

    /// The JUnit XML could not be rendered; nothing was written.
    #[error(
        "could not render the JUnit XML report{}: {source}; nothing was written, this is a bug in cdi-harness, please report it",
        for_path(.path.as_deref())
    )]
    EncodeJunit {
        /// The file that was to be written, when rendering for a file.
        path: Option<PathBuf>,
        /// The renderer's error.
        source: quick_junit::SerializeError,
    },
}

/// ` for <path>` when there is a path, so in-memory rendering errors read naturally too.
pub(super) fn for_path(path: Option<&Path>) -> String {
    path.map(|p| format!(" for {}", p.display()))
        .unwrap_or_default()
}

mod atomic;
mod json;
mod junit;
mod live;
mod markdown;
mod table;
mod text;

#[allow(unused_imports)]
use atomic::*;
#[allow(unused_imports)]
use json::*;
#[allow(unused_imports)]
use junit::*;
#[allow(unused_imports)]
use markdown::*;
#[allow(unused_imports)]
use table::*;
#[allow(unused_imports)]
use text::*;

pub use atomic::write_bytes_atomically;
pub use json::{read_json, write_json};
pub use junit::{junit_string, write_junit};
pub use live::LiveView;
pub use markdown::{markdown, write_markdown};
pub use table::{progress_line, summary_table};

#[cfg(test)]
mod tests;
