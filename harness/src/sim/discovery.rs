//! Finding the dockerd to run, the PATH it runs with, and the tools it will need.
//!
//! Why a module of its own: which engine a run tests is decided here, before any
//! directory or process exists, so its errors ([`SimError::DockerdNotFound`],
//! [`SimError::MissingTool`]) list every place tried and carry the fix.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::SimError;
use super::paths::{is_executable_file, which_in};
use super::process::POLL;

/// Environment variable naming the dockerd to use, overriding the search.
pub const ENV_DOCKERD: &str = "CDI_HARNESS_DOCKERD";
/// Where `.ci/install-engine` unpacks a CDI-capable dockerd (Debian unstable's).
pub const DEFAULT_DOCKERD: &str = "/opt/cdi-harness/engines/unstable/usr/sbin/dockerd";
/// First engine major version with CDI support (`features.cdi`).
pub const MIN_CDI_ENGINE_MAJOR: u32 = 25;
/// The socket of a system containerd; when it exists dockerd uses that containerd
/// instead of starting its own (and needs no `containerd` binary of its own).
const SYSTEM_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// PATH for dockerd: its own directory and the sibling `bin` of an `sbin` (where a
/// Debian layout puts containerd), then the harness's PATH, then the standard dirs
/// (runc is in /usr/sbin on Debian, which a non-login PATH may lack).
pub(super) fn engine_path(dockerd: &Path) -> OsString {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = dockerd.parent() {
        dirs.push(dir.to_path_buf());
        if dir.file_name().is_some_and(|n| n == "sbin")
            && let Some(up) = dir.parent()
        {
            dirs.push(up.join("bin"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let mut seen = Vec::new();
    dirs.retain(|d| {
        if seen.contains(d) {
            false
        } else {
            seen.push(d.clone());
            true
        }
    });
    std::env::join_paths(dirs).unwrap_or_else(|_| OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// Checks the programs dockerd will need before starting it, for a precise error.
/// `own_containerd`: dockerd will start its own containerd even if the system has one.
pub(super) fn preflight_tools(path_env: &OsString, own_containerd: bool) -> Result<(), SimError> {
    let path = path_env.to_string_lossy().into_owned();
    let mut needed = vec![(
        "runc",
        "install Debian's `runc` package (`apt-get install runc`, or run `.ci/install-engine`)",
    )];
    if own_containerd || !Path::new(SYSTEM_CONTAINERD_SOCKET).exists() {
        needed.push((
            "containerd",
            "dockerd starts its own containerd from its PATH: run `.ci/install-engine`, which \
             unpacks containerd next to dockerd (…/usr/bin), or install `containerd`",
        ));
        needed.push((
            "containerd-shim-runc-v2",
            "it ships with containerd: run `.ci/install-engine` or install `containerd`",
        ));
    }
    for (tool, hint) in needed {
        if which_in(path_env, tool).is_none() {
            return Err(SimError::MissingTool {
                tool: tool.to_string(),
                path,
                hint: hint.to_string(),
            });
        }
    }
    Ok(())
}

/// Where dockerd is found, in this order: the explicit path; env `CDI_HARNESS_DOCKERD`;
/// `dockerd` on PATH if its version supports CDI (>= 25); [`DEFAULT_DOCKERD`] (what
/// `.ci/install-engine` installs). An explicit path or the variable is used as given
/// (a scenario may want an engine without CDI), but must exist. The error lists every
/// place tried and says to run `.ci/install-engine`.
pub fn find_dockerd(explicit: Option<&Path>) -> Result<PathBuf, SimError> {
    find_dockerd_in(
        explicit,
        std::env::var_os(ENV_DOCKERD),
        std::env::var_os("PATH"),
        Path::new(DEFAULT_DOCKERD),
    )
}

fn find_dockerd_in(
    explicit: Option<&Path>,
    env: Option<OsString>,
    path: Option<OsString>,
    fallback: &Path,
) -> Result<PathBuf, SimError> {
    let mut tried = Vec::new();
    match explicit {
        Some(p) if is_executable_file(p) => return Ok(p.to_path_buf()),
        Some(p) => {
            tried.push(format!(
                "explicit path {}: not an executable file",
                p.display()
            ));
            return Err(SimError::DockerdNotFound { tried });
        }
        None => tried.push("explicit path: none given".to_string()),
    }
    match env.filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = PathBuf::from(&v);
            if is_executable_file(&p) {
                return Ok(p);
            }
            tried.push(format!(
                "{ENV_DOCKERD}={}: not an executable file",
                p.display()
            ));
            return Err(SimError::DockerdNotFound { tried });
        }
        None => tried.push(format!("{ENV_DOCKERD}: not set")),
    }
    let mut on_path = false;
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("dockerd");
            if !is_executable_file(&p) {
                continue;
            }
            on_path = true;
            match dockerd_version(&p) {
                Ok((major, _)) if major >= MIN_CDI_ENGINE_MAJOR => return Ok(p),
                Ok((_, text)) => tried.push(format!(
                    "{} on PATH: version {text} has no CDI (needs {MIN_CDI_ENGINE_MAJOR} or later)",
                    p.display()
                )),
                Err(e) => tried.push(format!(
                    "{} on PATH: could not read its version: {e}",
                    p.display()
                )),
            }
        }
    }
    if !on_path {
        tried.push("`dockerd` on PATH: not found".to_string());
    }
    if is_executable_file(fallback) {
        return Ok(fallback.to_path_buf());
    }
    tried.push(format!(
        "{}: not found (`.ci/install-engine` puts it there)",
        fallback.display()
    ));
    Err(SimError::DockerdNotFound { tried })
}

/// `dockerd --version`, bounded to 10 s: the major version and the version text.
fn dockerd_version(dockerd: &Path) -> Result<(u32, String), String> {
    let mut child = std::process::Command::new(dockerd)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("`--version` did not answer within 10 s".to_string());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    parse_docker_version(&out).ok_or_else(|| format!("unexpected output {:?}", out.trim()))
}

/// Parses `Docker version 28.5.2+dfsg4, build …` into (28, "28.5.2+dfsg4").
fn parse_docker_version(out: &str) -> Option<(u32, String)> {
    let rest = out.split("version").nth(1)?.trim_start();
    let text: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',')
        .collect();
    let major = text.split('.').next()?.parse().ok()?;
    Some((major, text))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn find_dockerd_error_lists_every_place() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_dockerd_in(
            None,
            None,
            Some(empty.path().as_os_str().to_owned()),
            &empty.path().join("no-dockerd"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("explicit path: none given"), "{text}");
        assert!(text.contains("CDI_HARNESS_DOCKERD: not set"), "{text}");
        assert!(text.contains("`dockerd` on PATH: not found"), "{text}");
        assert!(text.contains("no-dockerd: not found"), "{text}");
        assert!(text.contains(".ci/install-engine"), "{text}");
    }

    #[test]
    fn find_dockerd_rejects_an_old_engine_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("dockerd");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'Docker version 20.10.24+dfsg1, build 297e128'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = find_dockerd_in(
            None,
            None,
            Some(dir.path().as_os_str().to_owned()),
            &dir.path().join("none"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("version 20.10.24+dfsg1 has no CDI"), "{text}");

        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'Docker version 28.5.2+dfsg4, build x'\n",
        )
        .unwrap();
        let found = find_dockerd_in(
            None,
            None,
            Some(dir.path().as_os_str().to_owned()),
            &dir.path().join("none"),
        )
        .unwrap();
        assert_eq!(found, fake);
    }

    #[test]
    fn explicit_and_env_paths_win_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("my-dockerd");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fb = dir.path().join("fallback");
        assert_eq!(find_dockerd_in(Some(&fake), None, None, &fb).unwrap(), fake);
        assert_eq!(
            find_dockerd_in(None, Some(fake.clone().into()), None, &fb).unwrap(),
            fake
        );
        let missing = dir.path().join("missing");
        let e = find_dockerd_in(Some(&missing), None, None, &fb).unwrap_err();
        assert!(e.to_string().contains("explicit path"), "{e}");
        let e = find_dockerd_in(None, Some(missing.into()), None, &fb).unwrap_err();
        assert!(e.to_string().contains("CDI_HARNESS_DOCKERD="), "{e}");
    }

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_docker_version("Docker version 28.5.2+dfsg4, build 3ef3c07\n"),
            Some((28, "28.5.2+dfsg4".to_string()))
        );
        assert_eq!(
            parse_docker_version("Docker version 26.1.5+dfsg1, build 411e817"),
            Some((26, "26.1.5+dfsg1".to_string()))
        );
        assert_eq!(parse_docker_version("garbage"), None);
    }

    #[test]
    fn engine_path_adds_the_sibling_bin_of_sbin() {
        let p = engine_path(Path::new("/opt/e/usr/sbin/dockerd"));
        let dirs: Vec<PathBuf> = std::env::split_paths(&p).collect();
        assert_eq!(dirs[0], PathBuf::from("/opt/e/usr/sbin"));
        assert_eq!(dirs[1], PathBuf::from("/opt/e/usr/bin"));
        assert!(dirs.contains(&PathBuf::from("/usr/sbin")));
    }

    #[test]
    fn preflight_names_the_missing_tool() {
        let empty = tempfile::tempdir().unwrap();
        let err = preflight_tools(&empty.path().as_os_str().to_owned(), true).unwrap_err();
        match err {
            SimError::MissingTool { tool, hint, .. } => {
                assert_eq!(tool, "runc");
                assert!(hint.contains("apt-get install runc"));
            }
            other => panic!("unexpected {other}"),
        }
    }
}
