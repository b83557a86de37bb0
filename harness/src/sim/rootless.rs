//! Rootless mode of the private engine: dockerd inside rootlesskit's user namespace, as
//! a NixOS machine with `virtualisation.docker.rootless` runs it.
//!
//! The harness runs the engine's own `dockerd-rootless.sh`, both halves: the parent
//! half picks slirp4netns and the builtin port driver and execs rootlesskit, the child
//! half binds `/etc/cdi` and `/var/run/cdi` and execs dockerd, exactly as for users.
//! (rootlesskit with `--net=host` would avoid slirp4netns, but dockerd 28.5 then
//! panics on `GET /version`: it dereferences rootlesskit's network and port driver
//! info, which host networking leaves empty; every API client negotiates through
//! `/version`.) Three environment variables adapt it:
//! - `DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS=--copy-up=/dev`: the namespace gets a
//!   writable `/dev` (a tmpfs of symlinks to the host's entries);
//! - `DOCKERD` points at a small wrapper that, inside the namespace, replaces each CDI
//!   device node path in that `/dev` by a bind mount of `/dev/null` before it execs
//!   dockerd: a rootless engine cannot create device nodes, so runc bind-mounts each
//!   one from the path equal to its container path. The host's `/dev` is not touched;
//! - `DOCKERD_ROOTLESS_ROOTLESSKIT_STATE_DIR`, `XDG_RUNTIME_DIR`, `HOME`: all under the
//!   engine's temp dir.
//!
//! slirp4netns needs `/dev/net/tun`, which is root-only (0600) on a fresh machine. A
//! root harness therefore starts the engine in a private mount namespace where a tun
//! node of the same device number, owned by the engine's user, is bound over
//! `/dev/net/tun`; the host's node keeps its mode. A non-root harness needs a usable
//! `/dev/net/tun` (0666, the usual mode where udev manages /dev).
//!
//! As root, the engine runs as a dedicated user (default [`DEFAULT_ROOTLESS_USER`],
//! which `.ci/install-engine` creates); as any other user, as that user. Everything is
//! checked before anything starts, because rootlesskit's own errors rarely name the
//! cause (a missing subordinate id range shows as "write to uid_map failed").

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::SimError;
use super::paths::{is_executable_file, which_in};

/// The user a root harness runs the rootless engine as; `.ci/install-engine` creates it.
pub const DEFAULT_ROOTLESS_USER: &str = "cdih-rootless";
/// Environment variable naming another user for the rootless engine.
pub const ENV_ROOTLESS_USER: &str = "CDI_HARNESS_ROOTLESS_USER";
/// The engine's rootless launcher, shipped with dockerd (Debian: docker.io's
/// `usr/share/docker.io/contrib/`; upstream static builds: next to dockerd).
pub const ROOTLESS_SCRIPT: &str = "dockerd-rootless.sh";
/// File name of the wrapper the script runs as dockerd; its name starts with
/// "dockerd" so that leftover searches by program name find it.
pub(crate) const WRAPPER_FILE: &str = "dockerd-cdih-wrap";
/// How long `rootlesskit rm -rf` may take when a non-root harness removes files that
/// the engine created as subordinate ids.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often helper processes are polled.
const POLL: Duration = Duration::from_millis(20);
/// The tun device slirp4netns opens.
const TUN: &str = "/dev/net/tun";
/// Directory under the engine's root where a root harness mounts a tmpfs (in the
/// engine's private mount namespace only) holding the engine user's tun node.
const TUN_DIR: &str = "tun";

/// How to run the private engine rootless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootlessOptions {
    /// The user the engine runs as when the harness is root (it needs ranges in
    /// /etc/subuid and /etc/subgid). Ignored when the harness is not root: then the
    /// engine runs as the harness's own user, which cannot become anyone else.
    pub user: String,
    /// Absolute `/dev/NAME` paths to create in the engine's namespace (as bind mounts
    /// of `/dev/null`): every device node the CDI specs name, since a rootless engine
    /// bind-mounts each from the same path where it runs. Fill it with
    /// [`super::device_node_paths`] for the simulated spec.
    pub device_nodes: Vec<String>,
}

impl Default for RootlessOptions {
    /// [`DEFAULT_ROOTLESS_USER`] and no device nodes; not influenced by the environment
    /// (see [`RootlessOptions::from_env`]).
    fn default() -> Self {
        RootlessOptions {
            user: DEFAULT_ROOTLESS_USER.to_string(),
            device_nodes: Vec::new(),
        }
    }
}

impl RootlessOptions {
    /// The user from `CDI_HARNESS_ROOTLESS_USER` when set and not empty, else
    /// [`DEFAULT_ROOTLESS_USER`]; no device nodes.
    pub fn from_env() -> Self {
        let user = std::env::var(ENV_ROOTLESS_USER)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ROOTLESS_USER.to_string());
        RootlessOptions {
            user,
            device_nodes: Vec::new(),
        }
    }

    /// The same options with these device nodes (see [`RootlessOptions::device_nodes`]).
    pub fn with_device_nodes(mut self, nodes: Vec<String>) -> Self {
        self.device_nodes = nodes;
        self
    }
}

/// A user account as the password database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Everything checked and found before a rootless engine starts.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Who the engine runs as.
    pub account: Account,
    /// True when the harness is root and must drop to `account` to start it.
    pub switch_user: bool,
    /// The rootlesskit binary (run by the script; the harness uses it directly only to
    /// remove files as subordinate ids).
    pub rootlesskit: PathBuf,
    /// The engine's `dockerd-rootless.sh`: the program the harness starts.
    pub script: PathBuf,
    /// `st_rdev` of the host's `/dev/net/tun`, for the private node (root only).
    pub tun_rdev: Option<rustix::fs::Dev>,
    /// Validated device node paths.
    pub device_nodes: Vec<String>,
    /// PATH for rootlesskit and everything below it.
    pub path_env: OsString,
}

/// Paths of the rootless engine's private directories.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// `XDG_RUNTIME_DIR`: owned by the engine's user, mode 0700; holds the socket,
    /// data and exec roots, the pid file and rootlesskit's state.
    pub xdg: PathBuf,
    /// `HOME`: private, so that the user's own dotfiles never influence the engine.
    pub home: PathBuf,
    /// The wrapper run as dockerd.
    pub wrapper: PathBuf,
    /// Mount point for the private tun node's tmpfs (root harness only).
    pub tun_dir: Option<PathBuf>,
}

/// Checks everything a rootless engine needs, before anything is created.
pub(crate) fn plan(
    opts: &RootlessOptions,
    euid: u32,
    dockerd: &Path,
    path_env: &OsString,
) -> Result<Plan, SimError> {
    let switch_user = euid == 0;
    let account = if switch_user {
        let name = opts.user.trim();
        match lookup_user(name) {
            Some(a) if a.uid == 0 => {
                return Err(SimError::Rootless {
                    problem: format!("user `{name}` is root (uid 0)"),
                    fix: format!(
                        "name an ordinary user in {ENV_ROOTLESS_USER} (default \
                         `{DEFAULT_ROOTLESS_USER}`, created by `.ci/install-engine`)"
                    ),
                });
            }
            Some(a) => a,
            None => return Err(user_missing(name)),
        }
    } else {
        lookup_uid(euid).unwrap_or_else(|| Account {
            name: euid.to_string(),
            uid: euid,
            gid: rustix::process::getegid().as_raw(),
        })
    };
    check_user_namespaces()?;
    check_subids(&account)?;
    let path = path_env.to_string_lossy().into_owned();
    let mut tools = Vec::new();
    for tool in ["rootlesskit", "newuidmap", "newgidmap", "slirp4netns"] {
        match which_in(path_env, tool) {
            Some(p) => tools.push(p),
            None => return Err(missing_tool(tool, path)),
        }
    }
    let rootlesskit = tools.swap_remove(0);
    let script = find_rootless_script(dockerd, path_env)?;
    let device_nodes = validate_device_nodes(&opts.device_nodes)?;
    let tun_rdev = check_tun(switch_user)?;
    Ok(Plan {
        account,
        switch_user,
        rootlesskit,
        script,
        tun_rdev,
        device_nodes,
        path_env: path_env.clone(),
    })
}

fn missing_tool(tool: &str, path: String) -> SimError {
    SimError::MissingTool {
        tool: tool.to_string(),
        path,
        hint: "the rootless engine needs rootlesskit, the uidmap tools and slirp4netns \
               (its network, as dockerd-rootless.sh sets it up): `apt-get install \
               rootlesskit uidmap slirp4netns` (or run `.ci/install-engine`)"
            .to_string(),
    }
}

/// The host's tun device number when a root harness will give the engine a private
/// node; for a non-root harness, checks that the user can open `/dev/net/tun` itself.
fn check_tun(switch_user: bool) -> Result<Option<rustix::fs::Dev>, SimError> {
    use std::os::unix::fs::FileTypeExt as _;
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::metadata(TUN) {
        Ok(m) if m.file_type().is_char_device() => m,
        _ => {
            return Err(SimError::Rootless {
                problem: format!(
                    "{TUN} does not exist (slirp4netns, the engine's network, needs it)"
                ),
                fix: "load the tun module (`modprobe tun`); in a container, pass the device \
                      (`--device /dev/net/tun`)"
                    .into(),
            });
        }
    };
    if switch_user {
        return Ok(Some(meta.rdev()));
    }
    // access(2): checked with the real ids, as the engine's user will open it.
    let usable = rustix::fs::access(
        TUN,
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    )
    .is_ok();
    if usable {
        Ok(None)
    } else {
        Err(SimError::Rootless {
            problem: format!("{TUN} is not readable and writable by this user"),
            fix: format!(
                "`chmod 0666 {TUN}` (its usual mode where udev manages /dev), or run the \
                 harness as root: it then gives the engine a private tun node"
            ),
        })
    }
}

fn user_missing(name: &str) -> SimError {
    SimError::Rootless {
        problem: format!("user `{name}` does not exist"),
        fix: format!(
            "run `.ci/install-engine` (creates `{DEFAULT_ROOTLESS_USER}`), or `useradd -m \
             {name}` (useradd also gives it /etc/subuid and /etc/subgid ranges), or name \
             an existing user in {ENV_ROOTLESS_USER}"
        ),
    }
}

/// The subordinate id ranges (start, count) `text` (an /etc/subuid or /etc/subgid)
/// grants to the user `name` with id `id`: lines `owner:start:count`, where the owner
/// is a name or a numeric id.
pub(crate) fn subid_ranges(text: &str, name: &str, id: u32) -> Vec<(u64, u64)> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut parts = line.split(':');
            let owner = parts.next()?;
            let start = parts.next()?.trim().parse().ok()?;
            let count: u64 = parts.next()?.trim().parse().ok()?;
            ((owner == name || owner == id) && count > 0).then_some((start, count))
        })
        .collect()
}

fn check_subids(account: &Account) -> Result<(), SimError> {
    // Both files name the owner by user name or by *user* id.
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if subid_ranges(&text, &account.name, account.uid).is_empty() {
            return Err(no_subids(&account.name, file));
        }
    }
    Ok(())
}

fn no_subids(name: &str, file: &str) -> SimError {
    SimError::Rootless {
        problem: format!("user `{name}` has no subordinate id range in {file}"),
        fix: format!(
            "add one: `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 \
             {name}` (or a line `{name}:100000:65536` in /etc/subuid and /etc/subgid); \
             `useradd` adds them itself for a new user, `.ci/install-engine` creates \
             `{DEFAULT_ROOTLESS_USER}` with them"
        ),
    }
}

/// Fails when the kernel refuses unprivileged user namespaces.
fn check_user_namespaces() -> Result<(), SimError> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Err(SimError::Rootless {
            problem: "user namespaces are disabled (user.max_user_namespaces = 0)".into(),
            fix: "`sysctl -w user.max_user_namespaces=28633`".into(),
        });
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Err(SimError::Rootless {
            problem: "unprivileged user namespaces are disabled \
                      (kernel.unprivileged_userns_clone = 0)"
                .into(),
            fix: "`sysctl -w kernel.unprivileged_userns_clone=1`".into(),
        });
    }
    Ok(())
}

/// Where `dockerd-rootless.sh` is looked for: next to dockerd (upstream static builds,
/// docker-ce-rootless-extras), Debian's `<prefix>/share/docker.io/contrib/` for a
/// dockerd in `<prefix>/sbin` or `<prefix>/bin`, then PATH.
pub(crate) fn script_candidates(dockerd: &Path, path_env: &OsString) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = dockerd.parent() {
        out.push(dir.join(ROOTLESS_SCRIPT));
        if let Some(prefix) = dir.parent() {
            out.push(prefix.join("share/docker.io/contrib").join(ROOTLESS_SCRIPT));
            out.push(
                prefix
                    .join("share/doc/docker.io/contrib")
                    .join(ROOTLESS_SCRIPT),
            );
            // nixpkgs' docker package (the flake's dev shell).
            out.push(prefix.join("libexec/docker").join(ROOTLESS_SCRIPT));
        }
    }
    out.extend(std::env::split_paths(path_env).map(|d| d.join(ROOTLESS_SCRIPT)));
    out.dedup();
    out
}

fn find_rootless_script(dockerd: &Path, path_env: &OsString) -> Result<PathBuf, SimError> {
    let candidates = script_candidates(dockerd, path_env);
    if let Some(found) = candidates.iter().find(|p| is_executable_file(p)) {
        return Ok(found.clone());
    }
    Err(SimError::Rootless {
        problem: format!(
            "{ROOTLESS_SCRIPT} not found for {} (tried {})",
            dockerd.display(),
            candidates
                .iter()
                .take(3)
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        fix: "it ships with the engine: Debian's docker.io package has it under \
              usr/share/docker.io/contrib/ (`.ci/install-engine` unpacks that), upstream \
              static builds next to dockerd"
            .into(),
    })
}

/// Accepts only `/dev/NAME` with a plain file name: the wrapper replaces exactly that
/// entry of the namespace's copied-up `/dev`. A nested path (`/dev/dri/card0`) would
/// need its directory, a symlink to the host's, replaced too, which nothing here needs.
pub(crate) fn validate_device_nodes(nodes: &[String]) -> Result<Vec<String>, SimError> {
    let mut out: Vec<String> = Vec::new();
    for node in nodes {
        let ok = node.strip_prefix("/dev/").is_some_and(|name| {
            !name.is_empty()
                && name != "."
                && name != ".."
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
        if !ok {
            return Err(SimError::Rootless {
                problem: format!("device node {node:?} is not of the form /dev/NAME"),
                fix: "list only /dev/NAME paths in RootlessOptions::device_nodes (NAME of \
                      letters, digits, `.`, `_`, `-`), e.g. from `device_node_paths`"
                    .into(),
            });
        }
        if !out.contains(node) {
            out.push(node.clone());
        }
    }
    Ok(out)
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script `dockerd-rootless.sh` runs as dockerd (`DOCKERD`): creates `nodes` in
/// the namespace's `/dev`, then execs `dockerd` with the script's arguments.
pub(crate) fn wrapper_script(dockerd: &Path, nodes: &[String]) -> String {
    let list = nodes
        .iter()
        .map(|n| sh_quote(n))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"#!/bin/sh
# Written by cdi-harness; run by dockerd-rootless.sh as dockerd, inside rootlesskit's
# namespaces. A rootless engine cannot create device nodes: runc bind-mounts every CDI
# device node from the path equal to its container path. /dev here is rootlesskit's
# copy-up (a tmpfs of symlinks to the host's entries), so each listed entry is replaced
# by a bind mount of /dev/null; the host's /dev is never touched.
set -e
for n in {list}; do
	rm -f "$n"
	: >"$n"
	mount --bind /dev/null "$n" || {{
		echo "cdi-harness: cannot bind /dev/null onto $n in the rootless engine's namespace" >&2
		exit 1
	}}
done
exec {dockerd} "$@"
"#,
        dockerd = sh_quote(&dockerd.to_string_lossy()),
    )
}

/// What the forked child of a root harness does before it execs the script: enter a
/// private mount namespace, bind a tun node owned by the engine's user over
/// `/dev/net/tun` there, drop to the user. Everything is prepared before the fork; the
/// child only makes system calls.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    tun_dir: std::ffi::CString,
    tun_node: std::ffi::CString,
    tun: std::ffi::CString,
    tmpfs: std::ffi::CString,
    tmpfs_options: std::ffi::CString,
    slash: std::ffi::CString,
    rdev: rustix::fs::Dev,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl ChildSetup {
    /// Runs in the forked child, before exec: only async-signal-safe system calls.
    /// nix's wrappers make them directly: its paths here are `CStr`s (no allocation),
    /// and its `setuid`/`setgid`/`setgroups` are the POSIX calls (rustix's per-thread
    /// raw ones on purpose are not).
    ///
    /// # Safety
    /// Call only between fork and exec (from `pre_exec`): it changes the calling
    /// process's mount namespace and credentials for good.
    pub unsafe fn apply(&self) -> std::io::Result<()> {
        use nix::mount::{MsFlags, mount};
        let none = None::<&std::ffi::CStr>;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
        // Receive the host's mounts, send none back.
        mount(
            none,
            self.slash.as_c_str(),
            none,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            none,
        )?;
        // A tmpfs of our own: the engine's directory may be on a nodev mount.
        mount(
            Some(self.tmpfs.as_c_str()),
            self.tun_dir.as_c_str(),
            Some(self.tmpfs.as_c_str()),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(self.tmpfs_options.as_c_str()),
        )?;
        nix::sys::stat::mknod(
            self.tun_node.as_c_str(),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            self.rdev,
        )?;
        nix::unistd::chown(self.tun_node.as_c_str(), Some(self.uid), Some(self.gid))?;
        mount(
            Some(self.tun_node.as_c_str()),
            self.tun.as_c_str(),
            none,
            MsFlags::MS_BIND,
            none,
        )?;
        // What `setpriv --reuid --regid --clear-groups` does.
        nix::unistd::setgroups(&[])?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)?;
        Ok(())
    }
}

impl Plan {
    /// The set-up a root harness's child runs before exec; `None` when the harness is
    /// not root (the engine then runs as the harness's user, in its mount namespace).
    pub fn child_setup(&self, layout: &Layout) -> Result<Option<ChildSetup>, SimError> {
        let (Some(rdev), Some(dir)) = (self.tun_rdev, layout.tun_dir.as_ref()) else {
            return Ok(None);
        };
        let c = |s: &std::ffi::OsStr| {
            std::ffi::CString::new(s.as_encoded_bytes()).map_err(|e| {
                SimError::io(
                    format!("path {} holds a NUL byte", s.to_string_lossy()),
                    std::io::Error::other(e),
                )
            })
        };
        Ok(Some(ChildSetup {
            tun_dir: c(dir.as_os_str())?,
            tun_node: c(dir.join("tun").as_os_str())?,
            tun: c(TUN.as_ref())?,
            tmpfs: c("tmpfs".as_ref())?,
            tmpfs_options: c("mode=0755,size=64k".as_ref())?,
            slash: c("/".as_ref())?,
            rdev,
            uid: nix::unistd::Uid::from_raw(self.account.uid),
            gid: nix::unistd::Gid::from_raw(self.account.gid),
        }))
    }

    /// Creates the engine's private directories and the wrapper under `root` (which
    /// must be mode 0755 and short: the socket lives in `<root>/xdg`).
    pub fn prepare(&self, root: &Path, dockerd: &Path) -> Result<Layout, SimError> {
        let xdg = root.join("xdg");
        let home = root.join("home");
        for dir in [&xdg, &home] {
            std::fs::create_dir(dir)
                .map_err(|e| SimError::io(format!("creating {}", dir.display()), e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| SimError::io(format!("chmod 0700 {}", dir.display()), e))?;
            if self.switch_user {
                std::os::unix::fs::chown(dir, Some(self.account.uid), Some(self.account.gid))
                    .map_err(|e| {
                        SimError::io(format!("chown {} {}", self.account.name, dir.display()), e)
                    })?;
            }
        }
        let wrapper = root.join(WRAPPER_FILE);
        std::fs::write(&wrapper, wrapper_script(dockerd, &self.device_nodes))
            .map_err(|e| SimError::io(format!("writing {}", wrapper.display()), e))?;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SimError::io(format!("chmod 0755 {}", wrapper.display()), e))?;
        let tun_dir = if self.tun_rdev.is_some() {
            let dir = root.join(TUN_DIR);
            std::fs::create_dir(&dir)
                .map_err(|e| SimError::io(format!("creating {}", dir.display()), e))?;
            Some(dir)
        } else {
            None
        };
        Ok(Layout {
            xdg,
            home,
            wrapper,
            tun_dir,
        })
    }

    /// The script's whole environment (it starts from an empty one).
    pub fn env(&self, layout: &Layout) -> Vec<(String, OsString)> {
        vec![
            ("HOME".into(), layout.home.clone().into()),
            ("XDG_RUNTIME_DIR".into(), layout.xdg.clone().into()),
            ("PATH".into(), self.path_env.clone()),
            ("USER".into(), self.account.name.clone().into()),
            ("LOGNAME".into(), self.account.name.clone().into()),
            (
                "DOCKERD_ROOTLESS_ROOTLESSKIT_STATE_DIR".into(),
                layout.xdg.join("rk").into(),
            ),
            // A writable /dev in the namespace, for the wrapper's device nodes.
            (
                "DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS".into(),
                "--copy-up=/dev".into(),
            ),
            ("DOCKERD".into(), layout.wrapper.clone().into()),
        ]
    }

    /// The whole command as a shell line, to reproduce the engine by hand (as root:
    /// with the private tun node; run it from a root shell).
    pub fn command_line(&self, layout: &Layout, dockerd_args: &[OsString]) -> String {
        let mut words: Vec<String> = Vec::new();
        if self.switch_user {
            words.push(format!(
                "setpriv --reuid={0} --regid={1} --clear-groups",
                self.account.uid, self.account.gid
            ));
        }
        words.push("env -i".into());
        for (k, v) in self.env(layout) {
            words.push(format!("{k}={}", sh_quote(&v.to_string_lossy())));
        }
        words.push(sh_quote(&self.script.to_string_lossy()));
        for a in dockerd_args {
            words.push(sh_quote(&a.to_string_lossy()));
        }
        let run = words.join(" ");
        match (&layout.tun_dir, self.switch_user) {
            (Some(dir), true) => {
                let dir = dir.to_string_lossy();
                let node = format!("{dir}/tun");
                let setup = format!(
                    "mount -t tmpfs -o mode=0755,size=64k tmpfs {d} && mknod -m 0600 {n} c \
                     $(stat -c '0x%t 0x%T' {TUN}) && chown {u}:{g} {n} && mount --bind {n} \
                     {TUN} && cd / && exec {run}",
                    d = sh_quote(&dir),
                    n = sh_quote(&node),
                    u = self.account.uid,
                    g = self.account.gid,
                );
                format!(
                    "unshare --mount --propagation slave sh -c {}",
                    sh_quote(&setup)
                )
            }
            _ => format!("cd / && {run}"),
        }
    }

    /// Fails with a fix hint unless the engine's user can search and read each of
    /// `dirs` (and read the files directly in them) and can run each of `programs`.
    /// Tested as that user, so every directory above counts, as it will for dockerd.
    pub fn check_access(&self, dirs: &[PathBuf], programs: &[PathBuf]) -> Result<(), SimError> {
        let mut readable: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            readable.push(dir.clone());
            if let Ok(entries) = std::fs::read_dir(dir) {
                readable.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        }
        // One shell for all paths: print the first that fails.
        let script = "for p in \"$@\"; do case $p in r:*) p=${p#r:}; [ -r \"$p\" ] || { echo \"r:$p\"; exit 1; }; [ ! -d \"$p\" ] || [ -x \"$p\" ] || { echo \"r:$p\"; exit 1; } ;; x:*) p=${p#x:}; [ -x \"$p\" ] || { echo \"x:$p\"; exit 1; } ;; esac; done";
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg("sh");
        for p in &readable {
            let mut a = OsString::from("r:");
            a.push(p);
            cmd.arg(a);
        }
        for p in programs {
            let mut a = OsString::from("x:");
            a.push(p);
            cmd.arg(a);
        }
        cmd.current_dir("/")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if self.switch_user {
            cmd.uid(self.account.uid).gid(self.account.gid);
        }
        let out = cmd
            .output()
            .map_err(|e| SimError::io("running /bin/sh to check file access", e))?;
        if out.status.success() {
            return Ok(());
        }
        let failed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Err(not_accessible(&self.account.name, &failed))
    }
}

/// The error for a path the engine's user cannot use; `failed` is `r:PATH` (must be
/// readable) or `x:PATH` (must be executable), as `check_access`'s shell prints it.
pub(crate) fn not_accessible(user: &str, failed: &str) -> SimError {
    let (kind, path) = failed.split_at(failed.find(':').map_or(0, |i| i + 1));
    let what = if kind == "x:" {
        "run"
    } else {
        "read (and search, for a directory)"
    };
    SimError::Rootless {
        problem: format!("the engine's user `{user}` cannot {what} {path}"),
        fix: format!(
            "the rootless dockerd reads its CDI spec dirs, specs and the files they mount \
             as `{user}`: make them and every directory above them readable by it \
             (`chmod 0755` on the directories, 0644 on the files; `mktemp -d` makes \
             0700 directories)"
        ),
    }
}

/// Removes `dir` with rootlesskit's help when the harness is not root: files the
/// engine created as subordinate ids (image layers, containerd state) are out of
/// reach of the user outside the namespace, but not of the user as root inside one.
pub(crate) fn remove_in_namespace(
    rootlesskit: &Path,
    path_env: &OsString,
    dir: &Path,
) -> Result<(), String> {
    let mut child = std::process::Command::new(rootlesskit)
        .arg("--net=host")
        .arg("--port-driver=none")
        .arg("rm")
        .arg("-rf")
        .arg("--")
        .arg(dir)
        .env("PATH", path_env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("running {} rm -rf: {e}", rootlesskit.display()))?;
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "`rootlesskit rm -rf {}` failed ({status}): {}",
                        dir.display(),
                        err.trim()
                    ))
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`rootlesskit rm -rf {}` did not finish within {REMOVE_TIMEOUT:?}",
                    dir.display()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A fix hint for a rootless engine that did not come up, from the log line that says
/// why; `None` when the generic hints apply.
pub(crate) fn rootless_start_hint(cause: &str) -> Option<String> {
    let l = cause.to_lowercase();
    let hint = if l.contains("uid_map") || l.contains("gid_map") || l.contains("newuidmap") {
        "rootlesskit could not map the user's subordinate ids: check the user's lines in \
         /etc/subuid and /etc/subgid (`useradd` adds them; `.ci/install-engine` creates \
         `cdih-rootless` with them) and that newuidmap/newgidmap are setuid root (Debian's \
         `uidmap` package)"
    } else if l.contains("rootlesskit needs to be installed") {
        "install rootlesskit: `apt-get install rootlesskit uidmap`"
    } else if l.contains("cdi-harness: cannot bind") {
        "the wrapper could not create a device node in the engine's /dev; rootlesskit must \
         run with --copy-up=/dev (the harness passes it): look at the log above"
    } else if (l.contains("operation not permitted") || l.contains("permission denied"))
        && (l.contains("unshare") || l.contains("clone") || l.contains("namespace"))
    {
        "the kernel refused an unprivileged user namespace: check \
         `sysctl kernel.unprivileged_userns_clone user.max_user_namespaces` and, on Ubuntu \
         24.04 and later, `kernel.apparmor_restrict_unprivileged_userns` (rootlesskit needs \
         an AppArmor profile there); in a container, run it privileged"
    } else if l.contains("/dev/net/tun") || l.contains("tun") && l.contains("slirp4netns") {
        "slirp4netns could not open /dev/net/tun: as root the harness binds a private tun \
         node for the engine's user (is the tun module loaded, `modprobe tun`?); as an \
         ordinary user it needs `chmod 0666 /dev/net/tun`"
    } else if l.contains("xdg_runtime_dir") || l.contains("home needs to be set") {
        "the engine's private XDG_RUNTIME_DIR or HOME is not usable by its user: is /tmp \
         mounted noexec or nosuid, or its directories not searchable?"
    } else if l.contains("permission denied") {
        "the engine's user lacks access to a file it needs: the spec dirs, specs and the \
         files they mount must be readable by it (0755 directories, 0644 files)"
    } else {
        return None;
    };
    Some(hint.to_string())
}

/// The password database entry for `name` (nix's `User`: glibc's `getpwnam_r`, so
/// NSS sources such as LDAP or systemd's dynamic users are seen too).
pub(crate) fn lookup_user(name: &str) -> Option<Account> {
    account(nix::unistd::User::from_name(name))
}

/// The password database entry for `uid`.
pub(crate) fn lookup_uid(uid: u32) -> Option<Account> {
    account(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)))
}

/// An entry found (a lookup error counts as not found: the caller says which user it
/// looked for and how to create it).
fn account(found: nix::Result<Option<nix::unistd::User>>) -> Option<Account> {
    let user = found.ok().flatten()?;
    Some(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_and_env() {
        let d = RootlessOptions::default();
        assert_eq!(d.user, "cdih-rootless");
        assert!(d.device_nodes.is_empty());
        let with = d.with_device_nodes(vec!["/dev/nvidia0".into()]);
        assert_eq!(with.device_nodes, vec!["/dev/nvidia0".to_string()]);
        // from_env: only the user comes from the environment (not modified here: tests
        // run in parallel); without the variable it is the default.
        if std::env::var_os(ENV_ROOTLESS_USER).is_none() {
            assert_eq!(RootlessOptions::from_env(), RootlessOptions::default());
        }
    }

    #[test]
    fn subid_lines_match_by_name_or_id() {
        let text = "# comment\nalice:100000:65536\n1001:200000:65536\nbob:300000:0\n\
                    broken\ncarol:x:1\n";
        assert_eq!(subid_ranges(text, "alice", 1000), vec![(100000, 65536)]);
        assert_eq!(subid_ranges(text, "dave", 1001), vec![(200000, 65536)]);
        assert!(
            subid_ranges(text, "bob", 1002).is_empty(),
            "count 0 is no range"
        );
        assert!(subid_ranges(text, "carol", 1003).is_empty());
        assert!(subid_ranges("", "alice", 1000).is_empty());
    }

    #[test]
    fn error_hints_name_the_fix() {
        let e = user_missing("cdih-rootless").to_string();
        assert!(e.contains("user `cdih-rootless` does not exist"), "{e}");
        assert!(e.contains("useradd -m cdih-rootless"), "{e}");
        assert!(e.contains(".ci/install-engine"), "{e}");
        let e = no_subids("u", "/etc/subgid").to_string();
        assert!(e.contains("no subordinate id range in /etc/subgid"), "{e}");
        assert!(e.contains("usermod --add-subuids"), "{e}");
        let e = not_accessible("u", "r:/tmp/x/cdi").to_string();
        assert!(
            e.contains("cannot read (and search, for a directory) /tmp/x/cdi"),
            "{e}"
        );
        assert!(e.contains("chmod 0755"), "{e}");
        let e = not_accessible("u", "x:/opt/e/dockerd").to_string();
        assert!(e.contains("cannot run /opt/e/dockerd"), "{e}");
        let h = rootless_start_hint(
            "[rootlesskit:parent] error: failed to setup UID/GID map: newuidmap 33 [0 1001 1] \
             failed: newuidmap: write to uid_map failed: Operation not permitted",
        )
        .unwrap();
        assert!(h.contains("/etc/subuid"), "{h}");
        assert!(
            rootless_start_hint("rootlesskit needs to be installed")
                .unwrap()
                .contains("apt-get install rootlesskit uidmap")
        );
        assert!(rootless_start_hint("failed to start daemon: something else").is_none());
        let h = rootless_start_hint("open(\"/dev/net/tun\"): Permission denied").unwrap();
        assert!(h.contains("chmod 0666 /dev/net/tun"), "{h}");
        let e = missing_tool("slirp4netns", "/usr/bin".into()).to_string();
        assert!(
            e.contains("apt-get install rootlesskit uidmap slirp4netns"),
            "{e}"
        );
    }

    #[test]
    fn missing_tools_and_script_are_reported_with_the_package() {
        let empty = tempfile::tempdir().unwrap();
        let path: OsString = empty.path().as_os_str().to_owned();
        let fake_dockerd = empty.path().join("usr/sbin/dockerd");
        let e = find_rootless_script(&fake_dockerd, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dockerd-rootless.sh not found"), "{e}");
        assert!(e.contains("usr/share/docker.io/contrib/"), "{e}");
        assert!(e.contains("docker.io package"), "{e}");
        // The Debian layout is found.
        let contrib = empty.path().join("usr/share/docker.io/contrib");
        std::fs::create_dir_all(&contrib).unwrap();
        let script = contrib.join(ROOTLESS_SCRIPT);
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_rootless_script(&fake_dockerd, &path).unwrap(), script);
        // No rootlesskit on PATH: MissingTool with the apt line. Run as whoever we are:
        // the user checks pass or fail first with their own message.
        let euid = rustix::process::geteuid().as_raw();
        let opts = RootlessOptions::default();
        match plan(&opts, euid, &fake_dockerd, &path) {
            Err(SimError::MissingTool { tool, hint, .. }) => {
                assert_eq!(tool, "rootlesskit");
                assert!(
                    hint.contains("apt-get install rootlesskit uidmap"),
                    "{hint}"
                );
            }
            Err(SimError::Rootless { problem, .. }) => {
                // No user, no ranges or no user namespaces on this machine: the tool
                // lookup this test is about was never reached.
                crate::testutil::cannot_run(&format!(
                    "the rootless plan stops before its tool lookup: {problem} \
                     (`.ci/install-engine` sets the machine up)"
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// `plan` is given euid 0, so it takes the root path (look the engine's user up)
    /// whoever runs the test: the lookup needs no privilege, and both errors come
    /// before anything that would.
    #[test]
    fn a_missing_user_is_named() {
        let opts = RootlessOptions {
            user: "cdih-no-such-user-zz9".into(),
            device_nodes: Vec::new(),
        };
        let e = plan(
            &opts,
            0,
            Path::new("/x/dockerd"),
            &OsString::from("/nonexistent"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("user `cdih-no-such-user-zz9` does not exist"),
            "{e}"
        );
        let e = plan(
            &RootlessOptions {
                user: "root".into(),
                device_nodes: Vec::new(),
            },
            0,
            Path::new("/x/dockerd"),
            &OsString::from("/nonexistent"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is root"), "{e}");
    }

    #[test]
    fn users_are_looked_up() {
        let root = lookup_uid(0).unwrap();
        assert_eq!((root.name.as_str(), root.uid), ("root", 0));
        assert_eq!(lookup_user("root"), Some(root));
        assert_eq!(lookup_user("cdih-no-such-user-zz9"), None);
        assert_eq!(lookup_user("bad\0name"), None);
    }

    #[test]
    fn device_nodes_must_be_plain_dev_entries() {
        let ok = validate_device_nodes(&[
            "/dev/nvidia0".into(),
            "/dev/nvidia-uvm".into(),
            "/dev/nvidia0".into(),
        ])
        .unwrap();
        assert_eq!(ok, vec!["/dev/nvidia0", "/dev/nvidia-uvm"]);
        for bad in [
            "/dev/dri/card0",
            "/dev/",
            "/dev/..",
            "nvidia0",
            "/tmp/x",
            "/dev/a b",
            "/dev/$(x)",
        ] {
            let e = validate_device_nodes(&[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("not of the form /dev/NAME"), "{bad}: {e}");
        }
    }

    #[test]
    fn wrapper_creates_each_node_then_execs_dockerd() {
        let text = wrapper_script(
            Path::new("/opt/e's/usr/sbin/dockerd"),
            &["/dev/nvidia0".into(), "/dev/nvidiactl".into()],
        );
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(
            text.contains("for n in '/dev/nvidia0' '/dev/nvidiactl'; do"),
            "{text}"
        );
        assert!(text.contains("mount --bind /dev/null \"$n\""), "{text}");
        assert!(
            text.contains(r#"exec '/opt/e'\''s/usr/sbin/dockerd' "$@""#),
            "{text}"
        );
        // It is valid shell.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w");
        std::fs::write(&f, &text).unwrap();
        let st = std::process::Command::new("/bin/sh")
            .arg("-n")
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn command_line_reproduces_the_engine() {
        let plan = Plan {
            account: Account {
                name: "cdih-rootless".into(),
                uid: 1001,
                gid: 1001,
            },
            switch_user: true,
            rootlesskit: "/usr/bin/rootlesskit".into(),
            script: "/e/usr/share/docker.io/contrib/dockerd-rootless.sh".into(),
            tun_rdev: Some(0),
            device_nodes: vec!["/dev/nvidia0".into()],
            path_env: "/e/usr/sbin:/usr/bin".into(),
        };
        let layout = Layout {
            xdg: "/tmp/cdih-abc123/xdg".into(),
            home: "/tmp/cdih-abc123/home".into(),
            wrapper: "/tmp/cdih-abc123/dockerd-cdih-wrap".into(),
            tun_dir: Some("/tmp/cdih-abc123/tun".into()),
        };
        let line = plan.command_line(&layout, &["--iptables=false".into()]);
        assert!(
            line.starts_with("unshare --mount --propagation slave sh -c "),
            "{line}"
        );
        for want in [
            "mount --bind '\\''/tmp/cdih-abc123/tun/tun'\\'' /dev/net/tun",
            "exec setpriv --reuid=1001 --regid=1001 --clear-groups env -i ",
            "XDG_RUNTIME_DIR='\\''/tmp/cdih-abc123/xdg'\\''",
            "DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS='\\''--copy-up=/dev'\\''",
            "DOCKERD_ROOTLESS_ROOTLESSKIT_STATE_DIR='\\''/tmp/cdih-abc123/xdg/rk'\\''",
            "DOCKERD='\\''/tmp/cdih-abc123/dockerd-cdih-wrap'\\''",
            "'\\''/e/usr/share/docker.io/contrib/dockerd-rootless.sh'\\'' '\\''--iptables=false'\\''",
        ] {
            assert!(line.contains(want), "{want} not in {line}");
        }
        // The inner command is valid shell.
        let st = std::process::Command::new("/bin/sh")
            .arg("-n")
            .arg("-c")
            .arg(&line)
            .status()
            .unwrap();
        assert!(st.success(), "{line}");
        let plain = Plan {
            switch_user: false,
            tun_rdev: None,
            ..plan
        };
        let layout = Layout {
            tun_dir: None,
            ..layout
        };
        let line = plain.command_line(&layout, &[]);
        assert!(line.starts_with("cd / && env -i HOME="), "{line}");
        assert!(!line.contains("setpriv"), "{line}");
    }

    #[test]
    fn quoting_survives_the_shell() {
        for s in ["plain", "it's", "a b", "$(x)", ""] {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }
}
