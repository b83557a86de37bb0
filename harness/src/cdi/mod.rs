//! CDI (Container Device Interface) specs as the Docker engine sees them.
//!
//! The engine resolves `--device nvidia.com/gpu=0` through the Go reference library
//! `tags.cncf.io/container-device-interface`. To prove that a machine hands its GPUs to
//! containers, the harness must predict what that library makes of the spec files on
//! the machine, explain it in words a user can act on, and snapshot the specs in a form
//! that only changes when their structure does. The parts:
//!
//! - [`name`]: qualified device names (`vendor.com/class=name`) and their syntax rules;
//! - [`spec`]: the spec file format, parsed as strictly as the engine parses it;
//! - [`decode`]: spec bytes read as the engine's Go decoder reads them (YAML 1.1,
//!   case-insensitive field names), in linear time;
//! - [`rules`]: which CDI library, hence which load-time rules, an engine version has;
//! - [`validate`]: every problem in a spec under one engine's rules, each with its
//!   field path, split into errors, SPEC.md warnings and notes about other engines;
//! - [`check`]: the whole verdict on a file (`cdi validate`): loads, loads with
//!   warnings, refused, or unreadable;
//! - [`normalize`]: a host- and night-independent JSON form for insta snapshots;
//! - [`registry`]: loading spec directories with the engine's priority and conflict rules.

pub mod check;
pub mod decode;
pub mod name;
pub mod normalize;
pub mod registry;
pub mod rules;
pub mod spec;
pub mod validate;

use std::io;
use std::path::PathBuf;

pub use check::{FileVerdict, Verdict, check_bytes, check_file};
pub use name::{
    NameError, NamePart, QualifiedName, validate_class, validate_device_name, validate_kind,
    validate_vendor,
};
pub use normalize::{normalize, normalize_value};
pub use registry::{LoadedSpec, Notice, Registry, load_dirs, load_dirs_with};
pub use rules::{ENGINES, Library, Rules, RulesError};
pub use spec::{
    ContainerEdits, Device, DeviceNode, Hook, IntelRdt, LinuxNetDevice, Mount, Spec,
    load_spec_file, parse_spec, read_spec_file,
};
pub use validate::{
    Finding, KNOWN_CDI_VERSIONS, LATEST_CDI_VERSION, Outcome, Problem, Report, Requirement,
    Severity, minimum_version, validate, validate_spec,
};

/// Why a spec file could not be turned into a [`Spec`]. Every message names the file,
/// because a machine usually has several spec files and the user must know which to fix.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// The file could not be read.
    #[error("cannot read CDI spec {}: {source} ({})", .path.display(), read_hint(.source))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON/YAML, or does not have the shape of a CDI spec
    /// (unknown field, wrong type, …).
    #[error("cannot parse CDI spec {}: {reason}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field where it can and usually the position.
        reason: String,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<usize>,
    },
    /// The file holds no document (empty, whitespace, comments only, or `null`).
    #[error("CDI spec {} is empty (no spec data)", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Not a regular file (a FIFO, a directory, a device): the engine's reader would
    /// block on a FIFO or fail, and the harness refuses it at once.
    #[error("CDI spec {} is {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than [`spec::MAX_SPEC_BYTES`].
    #[error("CDI spec {} is {size} bytes, over the limit of {limit} bytes", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Nested deeper than [`decode::MAX_DEPTH`] levels of `[`/`{`.
    #[error("CDI spec {} nests deeper than {limit} levels: no CDI spec field nests that deep, and the engine refuses it", .path.display())]
    TooDeep {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// The extension is neither `.json` nor `.yaml`/`.yml`, so the format is unknown.
    #[error("CDI spec {} has an unsupported extension: use .json or .yaml", .path.display())]
    UnsupportedExtension {
        /// The file.
        path: PathBuf,
    },
}

impl CdiError {
    /// What the user can do about the error, for reports that print a "fix:" line.
    pub fn fix_hint(&self) -> Option<&'static str> {
        match self {
            CdiError::Read { source, .. } => Some(read_hint(source)),
            CdiError::Parse { .. } => Some(
                "check the syntax and the field names (cdiVersion, kind, devices, containerEdits, deviceNodes, \
                 hostPath, containerPath, hookName): unknown fields are refused just as the engine refuses them",
            ),
            CdiError::Empty { .. } => Some(
                "regenerate the spec (e.g. `nvidia-ctk cdi generate --output=<file>`) or delete the empty file",
            ),
            CdiError::NotRegular { .. } => Some(
                "point at the spec file itself; the engine only loads regular *.json and *.yaml files",
            ),
            CdiError::TooLarge { .. } => Some(
                "this is not a CDI spec: a generated spec is a few kilobytes; check that the right file is named",
            ),
            CdiError::TooDeep { .. } => Some(
                "a CDI spec nests 7 levels at most (spec, devices, device, containerEdits, deviceNodes, node): fix the brackets",
            ),
            CdiError::UnsupportedExtension { .. } => Some(
                "rename the file to *.json or *.yaml: the engine loads no other extension, not even .yml",
            ),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            CdiError::Read { path, .. }
            | CdiError::Parse { path, .. }
            | CdiError::Empty { path }
            | CdiError::NotRegular { path, .. }
            | CdiError::TooLarge { path, .. }
            | CdiError::TooDeep { path, .. }
            | CdiError::UnsupportedExtension { path } => path,
        }
    }

    /// Whether the harness could not read the file at all (exit 2 in `cdi validate`),
    /// as opposed to having read it and found what the engine refuses (exit 1).
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            CdiError::Read { .. }
                | CdiError::NotRegular { .. }
                | CdiError::TooLarge { .. }
                | CdiError::UnsupportedExtension { .. }
        )
    }
}

/// The fix hint for a read error, chosen by what went wrong.
fn read_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound => {
            "check the path: the file does not exist, or is a dangling symlink"
        }
        io::ErrorKind::PermissionDenied => {
            "check the file's permissions: the engine reads specs as root, this harness may not run as root"
        }
        io::ErrorKind::IsADirectory => "the path is a directory; point at a spec file inside it",
        _ => "check that the file exists and is readable",
    }
}
