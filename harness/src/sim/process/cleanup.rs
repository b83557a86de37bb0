//! Taking down what a private engine leaves: its processes (found in `/proc`), its
//! mounts, its temporary directory; and the sweep of directories whose harness died.
//!
//! Why a module of its own: these run after dockerd is gone (or was never stopped,
//! the harness having been killed), blocking and bounded, and must never touch a
//! process that is not the engine's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::rootless;
use rustix::process::Signal;

use super::{POLL, RootlessRun, send};

/// How long processes left behind by the engine get to exit on their own before SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// How long killed leftovers get to disappear.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(3);
/// Program names (as in `/proc/<pid>/comm`, at most 15 bytes) of the processes an
/// engine starts; only these (and their descendants) are ever killed at cleanup.
/// A rootless engine adds `rootlesskit` and its re-executed child (`/proc/self/exe`,
/// so `exe`); `dockerd` also covers `dockerd-rootless.sh` and the harness's wrapper.
const ENGINE_COMMS: [&str; 7] = [
    "dockerd",
    "containerd",
    "runc",
    "docker-proxy",
    "docker-init",
    "rootlesskit",
    "exe",
];

#[derive(Debug, Clone)]
pub(super) struct ProcInfo {
    pub(super) pid: i32,
    pub(super) ppid: i32,
    pub(super) zombie: bool,
    pub(super) comm: String,
    cmdline: String,
    /// Start time in clock ticks since boot: with the pid, names a process for good.
    pub(super) start: u64,
}

/// One process as cleanup needs it, read with procfs (`/proc/<pid>/stat` and
/// `cmdline`); `None` when it vanished meanwhile. A command line procfs cannot read
/// (not UTF-8, or a zombie's) counts as empty: no engine process of ours has one,
/// since the marker and every path it is given are ASCII.
fn read_proc(process: &procfs::process::Process) -> Option<ProcInfo> {
    let stat = process.stat().ok()?;
    let cmdline = process
        .cmdline()
        .map(|args| args.join(" "))
        .unwrap_or_default();
    Some(ProcInfo {
        pid: stat.pid,
        ppid: stat.ppid,
        zombie: matches!(stat.state, 'Z' | 'X'),
        comm: stat.comm,
        cmdline,
        start: stat.starttime,
    })
}

/// `pid` and all its descendants, as (pid, start time): what a rootless engine runs
/// includes processes without the marker in their arguments (slirp4netns), found
/// this way while rootlesskit still lives and killed at cleanup if they outlive it.
pub(super) fn process_tree(pid: u32) -> Vec<(i32, u64)> {
    descendants(&all_procs(), pid)
        .into_iter()
        .map(|p| (p.pid, p.start))
        .collect()
}

/// `pid` and all its descendants among `procs` (one reading of /proc), `pid` first.
pub(super) fn descendants(procs: &[ProcInfo], pid: u32) -> Vec<&ProcInfo> {
    let mut found: Vec<&ProcInfo> = procs.iter().filter(|p| p.pid == pid as i32).collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].pid;
        for p in procs {
            if p.ppid == parent && !found.iter().any(|f| f.pid == p.pid) {
                found.push(p);
            }
        }
        i += 1;
    }
    found
}

/// Every process procfs can read now; empty if `/proc` itself cannot be read.
pub(super) fn all_procs() -> Vec<ProcInfo> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| read_proc(&p.ok()?)).collect()
}

/// Live processes of the engine marked `marker`: engine programs whose arguments carry
/// the marker, and all their descendants (container processes under a shim). Never the
/// harness itself.
pub(super) fn engine_processes(marker: &str) -> Vec<ProcInfo> {
    let procs = all_procs();
    let me = std::process::id() as i32;
    let mut found: Vec<i32> = procs
        .iter()
        .filter(|p| {
            !p.zombie
                && p.pid != me
                && ENGINE_COMMS.iter().any(|c| p.comm.starts_with(c))
                && p.cmdline.contains(marker)
        })
        .map(|p| p.pid)
        .collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for p in &procs {
            if p.ppid == parent && p.pid != me && !found.contains(&p.pid) {
                found.push(p.pid);
            }
        }
        i += 1;
    }
    procs
        .into_iter()
        .filter(|p| found.contains(&p.pid) && !p.zombie)
        .collect()
}

/// Mount points at or under `root`, deepest first, from /proc/self/mountinfo (read
/// with procfs; its mount points still carry the kernel's octal escapes, undone by
/// [`unescape_mountinfo`]).
pub(super) fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = procfs::process::Process::myself().and_then(|me| me.mountinfo()) else {
        return Vec::new();
    };
    let root_s = root.to_string_lossy().into_owned();
    let prefix = format!("{root_s}/");
    let mut out: Vec<PathBuf> = info
        .into_iter()
        .map(|m| unescape_mountinfo(&m.mount_point.to_string_lossy()))
        .filter(|m| *m == root_s || m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space). Kept hand-written: procfs
/// 0.18's `MountInfo::mount_point` is the field as the kernel wrote it, escapes and all,
/// and a mount under a path with a space would otherwise never be found and unmounted.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `umount2(path, MNT_DETACH)`: a lazy unmount, so a mount still busy (a dying shim
/// holds it) goes from the tree at once and the directory can be removed.
fn umount_detach(path: &Path) -> std::io::Result<()> {
    rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH)?;
    Ok(())
}

/// After dockerd is gone: waits for the engine's other processes (then kills them),
/// unmounts what is left under `root`, removes `root`. Blocking; bounded to ~6 s (plus
/// up to 30 s for a non-root harness's `rootlesskit rm -rf`).
/// `tree`: processes of the engine seen before it was stopped (see [`process_tree`]);
/// those still alive (same pid and start time) count as left over too.
pub(super) fn cleanup(
    root: &Path,
    marker: &str,
    rootless: Option<&RootlessRun>,
    tree: &[(i32, u64)],
) -> Result<(), String> {
    let mut problems = Vec::new();
    if !marker.is_empty() {
        let start = Instant::now();
        let mut killed = false;
        loop {
            let mut left = engine_processes(marker);
            let me = std::process::id() as i32;
            for p in all_procs() {
                if !p.zombie
                    && p.pid != me
                    && tree.contains(&(p.pid, p.start))
                    && !left.iter().any(|l| l.pid == p.pid)
                {
                    left.push(p);
                }
            }
            if left.is_empty() {
                break;
            }
            let waited = start.elapsed();
            if !killed && waited >= LEFTOVER_GRACE {
                for p in &left {
                    // The pids were just read from /proc and belong to this engine
                    // (engine program with the marker, or a descendant).
                    send(p.pid as u32, Signal::KILL);
                }
                killed = true;
            }
            if waited >= LEFTOVER_GRACE + LEFTOVER_KILL_WAIT {
                problems.push(format!(
                    "processes still running: {}",
                    left.iter()
                        .map(|p| format!("{} ({})", p.pid, p.comm))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    for _pass in 0..3 {
        let mounts = mounts_under(root);
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            let _ = umount_detach(&m);
        }
    }
    let still = mounts_under(root);
    if !still.is_empty() {
        problems.push(format!(
            "still mounted: {}",
            still
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if root.exists()
        && let Err(e) = std::fs::remove_dir_all(root)
    {
        match rootless.filter(|r| r.needs_namespace_rm) {
            // Layers and containerd state belong to subordinate ids: only root inside
            // a user namespace of the same user can remove them.
            Some(r) => {
                if let Err(ns) = rootless::remove_in_namespace(&r.rootlesskit, &r.path_env, root) {
                    problems.push(format!("removing {}: {e}; then {ns}", root.display()));
                } else if root.exists() {
                    problems.push(format!("{} still exists after rm -rf", root.display()));
                }
            }
            None => problems.push(format!("removing {}: {e}", root.display())),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// How old an engine directory without a live engine must be before it is swept.
const STALE_AGE: Duration = Duration::from_secs(600);
/// The file in an engine directory naming the pid of the harness that made it.
pub(super) const OWNER_FILE: &str = "owner";

/// Whether the directory's owner (its `owner` file) is a process that is gone.
fn owner_gone(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(crate::engine::process_gone)
}

/// Removes `/tmp/cdih-*` directories that harness runs killed outright (SIGKILL, OOM)
/// left behind: their dockerd died with them (`PR_SET_PDEATHSIG`) but nobody removed
/// the directory. Only directories whose owner process is gone (their `owner` file) or,
/// for those without one, untouched for 10 minutes, and with no live process of their
/// engine, are removed: what is still mounted under them (the memory file systems of a
/// rootful engine's state, a container's layers) is unmounted first, since nothing of
/// that engine uses it any more. Called by
/// [`PrivateEngine::start`](super::PrivateEngine::start); returns what it removed.
pub fn remove_stale_engine_dirs() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir("/tmp") else {
        return removed;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // Exactly what `start` creates: "cdih-" and six random alphanumerics (the
        // runner's own "cdih-spec-…" scratch dirs do not match).
        let shaped = name.len() == "cdih-XXXXXX".len()
            && name
                .strip_prefix("cdih-")
                .is_some_and(|r| r.chars().all(|c| c.is_ascii_alphanumeric()));
        if !shaped {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let newest = [path.clone(), path.join("dockerd.log")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok()?.modified().ok())
            .max();
        let old_enough = newest
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AGE);
        if !(old_enough || owner_gone(&path)) || !engine_processes(&name).is_empty() {
            continue;
        }
        for m in mounts_under(&path) {
            let _ = umount_detach(&m);
        }
        if mounts_under(&path).is_empty() && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn fresh_or_live_engine_dirs_are_not_swept() {
        // A fresh directory with the right shape must survive the sweep.
        let dir = tempfile::Builder::new()
            .prefix("cdih-")
            .rand_bytes(6)
            .tempdir_in("/tmp")
            .unwrap();
        let removed = remove_stale_engine_dirs();
        assert!(!removed.contains(&dir.path().to_path_buf()));
        assert!(dir.path().exists());
    }

    #[test]
    fn own_process_is_never_an_engine_process() {
        // The marker is in no process's arguments: nothing may be found.
        assert!(engine_processes("cdih-no-such-marker-zz9").is_empty());
    }

    #[test]
    fn procfs_mount_points_keep_the_escapes_we_undo() {
        let line = r"36 35 98:0 /mnt1 /tmp/a\040b rw,noatime master:1 - ext3 /dev/root rw";
        let m = procfs::process::MountInfo::from_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from(r"/tmp/a\040b"));
        assert_eq!(
            unescape_mountinfo(&m.mount_point.to_string_lossy()),
            "/tmp/a b"
        );
    }

    #[test]
    fn this_process_reads_back_with_its_parent_and_start() {
        let me = procfs::process::Process::myself().unwrap();
        let info = read_proc(&me).unwrap();
        assert_eq!(info.pid, std::process::id() as i32);
        assert_eq!(info.ppid, std::os::unix::process::parent_id() as i32);
        assert!(!info.zombie);
        assert!(info.start > 0);
        assert!(!info.comm.is_empty());
        assert!(
            all_procs()
                .iter()
                .any(|p| p.pid == info.pid && p.start == info.start)
        );
        let tree = process_tree(std::process::id());
        assert_eq!(tree.first(), Some(&(info.pid, info.start)));
    }
}
