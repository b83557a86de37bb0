//! The flake side of a nightly run: reading `flake.lock`, copying the flake to a scratch
//! directory (so `nix flake update` never touches the real lock until the run is good),
//! and calling Nix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::NightlyError;
use crate::outcome::FlakeInput;

/// The flags every Nix call gets, because flakes are still experimental and a nightly
/// machine must not depend on `nix.conf` enabling them.
pub const NIX_FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// Reads the locked inputs of `flake.lock`: every node except the root, keyed by node
/// name, with its source, revision, NAR hash and time.
pub fn read_lock(path: &Path) -> Result<BTreeMap<String, FlakeInput>, NightlyError> {
    let text = std::fs::read_to_string(path).map_err(|source| NightlyError::ReadLock {
        path: path.to_path_buf(),
        source,
    })?;
    parse_lock(&text).map_err(|reason| NightlyError::ParseLock {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses `flake.lock` text (format version 7; older versions have the same node layout).
pub fn parse_lock(text: &str) -> Result<BTreeMap<String, FlakeInput>, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let nodes = json
        .get("nodes")
        .and_then(Value::as_object)
        .ok_or("no `nodes` object")?;
    let root = json.get("root").and_then(Value::as_str).unwrap_or("root");
    let mut out = BTreeMap::new();
    for (name, node) in nodes {
        if name == root {
            continue;
        }
        let Some(locked) = node.get("locked").and_then(Value::as_object) else {
            continue;
        };
        let s = |k: &str| locked.get(k).and_then(Value::as_str).map(str::to_owned);
        out.insert(
            name.clone(),
            FlakeInput {
                source_type: s("type"),
                owner: s("owner"),
                repo: s("repo"),
                url: s("url").or_else(|| s("path")),
                rev: s("rev"),
                nar_hash: s("narHash"),
                last_modified: locked.get("lastModified").and_then(Value::as_i64),
            },
        );
    }
    Ok(out)
}

/// Names never copied into the scratch flake: VCS metadata, build outputs and `result`
/// links are not part of what `nix flake update` needs and can be huge.
fn skipped(name: &str) -> bool {
    name == ".git" || name == "target" || name == "result" || name.starts_with("result-")
}

/// Copies the flake directory `from` into `to` (which must exist), keeping symlinks as
/// links, so the update and build happen on a copy.
pub fn copy_flake(from: &Path, to: &Path) -> Result<(), NightlyError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NightlyError::CopyFlake { path, source }
    };
    for entry in std::fs::read_dir(from).map_err(err(from))? {
        let entry = entry.map_err(err(from))?;
        let name = entry.file_name();
        if skipped(&name.to_string_lossy()) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let kind = entry.file_type().map_err(err(&src))?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(err(&src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(err(&dst))?;
        } else if kind.is_dir() {
            std::fs::create_dir(&dst).map_err(err(&dst))?;
            copy_flake(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(err(&src))?;
        }
    }
    Ok(())
}

/// Runs `nix <features> <args…>` in `dir` and returns stdout; a failure carries stderr.
pub fn nix(nix: &Path, dir: &Path, args: &[&str]) -> Result<String, NightlyError> {
    let out = Command::new(nix)
        .args(NIX_FEATURES)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|source| NightlyError::NixStart {
            nix: nix.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(NightlyError::NixFailed {
            command: format!("nix {}", args.join(" ")),
            status: out.status.code().unwrap_or(-1),
            stderr: log_tail(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lines of a failed Nix command's log kept in errors and in the history.
pub const LOG_TAIL_LINES: usize = 20;
/// Bytes of a failed Nix command's log kept: one evaluation error line can run to
/// megabytes (a derivation's whole environment), and the history keeps one per night.
pub const LOG_TAIL_BYTES: usize = 4096;

/// The end of a log, bounded by [`LOG_TAIL_LINES`] and [`LOG_TAIL_BYTES`] (cut at a
/// character boundary, marked with `…` where cut): the last lines are where Nix says
/// what failed.
pub fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.trim_end().lines().rev().take(LOG_TAIL_LINES).collect();
    let tail = lines.into_iter().rev().collect::<Vec<_>>().join("\n");
    if tail.len() <= LOG_TAIL_BYTES {
        return tail;
    }
    let mut start = tail.len() - (LOG_TAIL_BYTES - '…'.len_utf8());
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &tail[start..])
}

/// Whether `nix flake show --json` lists a `default` package (or the legacy
/// `defaultPackage`) for any system: only then is there something to build.
pub fn has_default_package(show_json: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(show_json) else {
        return false;
    };
    let in_systems = |key: &str| {
        v.get(key)
            .and_then(Value::as_object)
            .is_some_and(|systems| {
                systems
                    .values()
                    .any(|s| key == "defaultPackage" || s.get("default").is_some())
            })
    };
    in_systems("packages") || in_systems("defaultPackage")
}

/// The scratch copy's path as a flake reference (`path:` so an untracked copy works).
pub fn flake_ref(dir: &Path, attr: &str) -> String {
    format!("path:{}#{attr}", dir.display())
}

/// The lock file of a flake directory.
pub fn lock_path(flake: &Path) -> PathBuf {
    flake.join("flake.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"{
      "nodes": {
        "nixpkgs": {
          "locked": {"lastModified": 1700000000, "narHash": "sha256-abc", "owner": "NixOS",
                     "repo": "nixpkgs", "rev": "1111111111111111111111111111111111111111", "type": "github"},
          "original": {"owner": "NixOS", "ref": "nixos-unstable", "repo": "nixpkgs", "type": "github"}
        },
        "local": {"locked": {"narHash": "sha256-def", "path": "/src/x", "type": "path"}, "original": {}},
        "root": {"inputs": {"nixpkgs": "nixpkgs", "local": "local"}}
      },
      "root": "root",
      "version": 7
    }"#;

    #[test]
    fn parses_nodes() {
        let inputs = parse_lock(LOCK).unwrap();
        assert_eq!(inputs.len(), 2);
        let n = &inputs["nixpkgs"];
        assert_eq!(n.source_type.as_deref(), Some("github"));
        assert_eq!(
            n.rev.as_deref(),
            Some("1111111111111111111111111111111111111111")
        );
        assert_eq!(n.last_modified, Some(1_700_000_000));
        assert_eq!(inputs["local"].url.as_deref(), Some("/src/x"));
        assert_eq!(inputs["local"].rev, None);
    }

    #[test]
    fn rejects_non_lock() {
        assert!(parse_lock("{}").is_err());
        assert!(parse_lock("not json").is_err());
    }

    #[test]
    fn default_package_detection() {
        assert!(has_default_package(
            r#"{"packages":{"x86_64-linux":{"default":{}}}}"#
        ));
        assert!(has_default_package(
            r#"{"defaultPackage":{"x86_64-linux":{}}}"#
        ));
        assert!(!has_default_package(
            r#"{"packages":{"x86_64-linux":{"other":{}}}}"#
        ));
        assert!(!has_default_package("{}"));
    }

    #[test]
    fn copy_skips_git_and_keeps_links() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("flake.nix"), "{}").unwrap();
        std::fs::create_dir_all(from.path().join(".git/objects")).unwrap();
        std::fs::create_dir_all(from.path().join("sub")).unwrap();
        std::fs::write(from.path().join("sub/a"), "a").unwrap();
        std::os::unix::fs::symlink("sub/a", from.path().join("link")).unwrap();
        copy_flake(from.path(), to.path()).unwrap();
        assert!(to.path().join("flake.nix").is_file());
        assert!(!to.path().join(".git").exists());
        assert_eq!(
            std::fs::read_to_string(to.path().join("sub/a")).unwrap(),
            "a"
        );
        assert_eq!(
            std::fs::read_link(to.path().join("link")).unwrap(),
            Path::new("sub/a")
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines_within_the_byte_bound() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = log_tail(&log);
        assert_eq!(t.lines().count(), LOG_TAIL_LINES);
        assert!(t.starts_with("line 80\n") && t.ends_with("line 99"), "{t}");

        let huge = format!("start\n{}é\nerror: builder failed", "é".repeat(10_000));
        let t = log_tail(&huge);
        assert!(t.len() <= LOG_TAIL_BYTES, "{}", t.len());
        assert!(
            t.starts_with('…') && t.ends_with("error: builder failed"),
            "{t}"
        );
        assert!(!t.contains("start"));
    }
}
