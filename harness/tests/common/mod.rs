//! Helpers the integration test targets share. Each target compiles this module on its
//! own and uses only part of it, hence `dead_code` is allowed here.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built `cdi-harness` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cdi-harness"))
}

/// stdout then stderr of a finished command, for assertions and their messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The repository root (scenarios/, snapshots/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A test that cannot run here fails with the reason, because a test that could not
/// run must not be counted as passed; `CDI_HARNESS_ALLOW_SKIP=1` turns that into a
/// printed `skipped: <why>` for machines that knowingly lack what it needs.
pub fn cannot_run(what: &str, reason: &str) {
    if std::env::var_os("CDI_HARNESS_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        return;
    }
    panic!("cannot run {what} here: {reason} (set CDI_HARNESS_ALLOW_SKIP=1 to skip knowingly)");
}

/// Why this machine cannot start a private engine (root, a CDI-capable dockerd from
/// `.ci/install-engine`, a static busybox), if it cannot.
pub fn engine_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the private engine needs root".to_string());
    }
    if let Err(e) = cdi_harness::sim::find_dockerd(None) {
        return Some(e.to_string());
    }
    if let Err(e) = cdi_harness::sim::find_static_busybox() {
        return Some(e.to_string());
    }
    None
}
