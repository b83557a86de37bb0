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
//! - [`validate`]: every problem in a spec, each with its field path;
//! - [`normalize`]: a host- and night-independent JSON form for insta snapshots;
//! - [`registry`]: loading spec directories with the engine's priority and conflict rules.

pub mod name;
pub mod normalize;
pub mod registry;
pub mod spec;
pub mod validate;

use std::io;
use std::path::PathBuf;

pub use name::{
    NameError, NamePart, QualifiedName, validate_class, validate_device_name, validate_kind,
    validate_vendor,
};
pub use normalize::{normalize, normalize_value};
pub use registry::{LoadedSpec, Notice, Registry, load_dirs};
pub use spec::{
    ContainerEdits, Device, DeviceNode, Hook, IntelRdt, LinuxNetDevice, Mount, Spec,
    load_spec_file, parse_spec,
};
pub use validate::{
    KNOWN_CDI_VERSIONS, LATEST_CDI_VERSION, Problem, Requirement, Severity, minimum_version,
    validate,
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
                "check the syntax and the field names: they are case-sensitive camelCase as in the CDI spec \
                 (cdiVersion, kind, devices, containerEdits, deviceNodes, hostPath, containerPath, hookName), \
                 and unknown fields are refused just as the engine refuses them",
            ),
            CdiError::Empty { .. } => Some(
                "regenerate the spec (e.g. `nvidia-ctk cdi generate --output=<file>`) or delete the empty file",
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
            | CdiError::UnsupportedExtension { path } => path,
        }
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
