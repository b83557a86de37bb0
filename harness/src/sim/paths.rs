//! Finding programs on a PATH: what starting dockerd and rootlesskit both need. A leaf
//! of `sim`, so that `discovery` and `rootless` share it without depending on each other.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Whether `p` is a regular file someone may execute.
pub(crate) fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `tool` on the given PATH value.
pub(crate) fn which_in(path_env: &OsString, tool: &str) -> Option<PathBuf> {
    std::env::split_paths(path_env)
        .map(|d| d.join(tool))
        .find(|p| is_executable_file(p))
}
