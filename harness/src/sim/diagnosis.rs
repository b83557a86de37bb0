//! Turning a failed engine start into its cause and a fix hint.
//!
//! Why a module of its own: dockerd (and rootlesskit, containerd) explain a failure
//! somewhere in a log of hundreds of lines; picking the decisive line and the hint
//! that fixes it is pure text work, tested on real logs, apart from the processes.

use std::path::Path;

/// The line of dockerd's log that says why it failed: the last `failed to start
/// daemon` line, else the harness wrapper's own complaint, else the last fatal or
/// error entry (its `msg` and `error` fields), else (rootless) rootlesskit's or
/// dockerd-rootless.sh's own error; rootlesskit's "command … exited" only repeats that
/// its child failed, so it comes last.
pub(super) fn failure_cause(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let last = |pred: &dyn Fn(&str) -> bool| lines.iter().rev().find(|l| pred(l)).copied();
    if let Some(l) = last(&|l| l.contains("failed to start daemon"))
        .or_else(|| last(&|l| l.starts_with("cdi-harness:")))
    {
        return l.trim().to_string();
    }
    if let Some(l) = lines
        .iter()
        .rev()
        .find(|l| l.contains("level=fatal") || l.contains("level=error"))
    {
        let field = |name: &str| -> Option<String> {
            let at = l.find(&format!("{name}="))? + name.len() + 1;
            let rest = &l[at..];
            Some(if let Some(quoted) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut escaped = false;
                for c in quoted.chars() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {
                            out.push(c);
                            escaped = false;
                        }
                    }
                }
                out
            } else {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        };
        return match (field("msg"), field("error")) {
            (Some(m), Some(e)) => format!("{m}: {e}"),
            (Some(m), None) => m,
            _ => l.trim().to_string(),
        };
    }
    let rootlesskit_error = |l: &str| l.starts_with("[rootlesskit:") && l.contains("error");
    if let Some(l) = last(&|l| rootlesskit_error(l) && !l.contains("exited"))
        .or_else(|| {
            last(&|l| {
                !l.starts_with('+')
                    && (l.contains("needs to be installed") || l.contains("needs to be set"))
            })
        })
        .or_else(|| last(&|l| rootlesskit_error(l)))
    {
        return l.trim().to_string();
    }
    "no error line in its log".to_string()
}

/// The last `lines` lines of the log without logrus `info`/`debug` entries (containerd
/// logs ~50 plugin lines at start that bury the error) and without the `+ …` trace
/// that `dockerd-rootless.sh` (`set -x`) writes; all lines if none are left.
pub(super) fn significant_tail(log: &str, lines: usize) -> String {
    let kept: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("level=info") && !l.contains("level=debug") && !l.starts_with("+ "))
        .collect();
    if kept.is_empty() {
        last_lines(log, lines)
    } else {
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }
}

/// A fix hint from the line that says why dockerd failed.
pub(super) fn start_failure_hint(cause: &str) -> String {
    let l = cause.to_lowercase();
    let hint = if l.contains("address already in use") {
        "another process holds the socket or a port dockerd needs; stop it (or another \
         private engine) and retry"
    } else if l.contains("containerd")
        && (l.contains("executable file not found") || l.contains("no such file"))
    {
        "containerd is missing: run `.ci/install-engine`, which puts containerd next to \
         dockerd, or install `containerd`"
    } else if l.contains("pid file found") {
        "a stale pid file: another dockerd with the same --pidfile is running"
    } else if l.contains("is reserved") {
        "a runtime in EngineOptions::runtimes uses a name the engine reserves (runc, \
         io.containerd.runc.v2): rename it"
    } else if l.contains("don't match any configuration option")
        || l.contains("unable to configure the docker daemon")
    {
        "this dockerd does not understand the generated daemon.json: it is too old; use a \
         dockerd 25 or later (`.ci/install-engine`)"
    } else if l.contains("operation not permitted") || l.contains("permission denied") {
        "dockerd lacks privileges: run the harness as root on the host or in a privileged \
         container (mounts and device nodes are needed)"
    } else if l.contains("overlay") {
        "the storage driver failed: /tmp must be on a filesystem that supports overlayfs \
         (ext4, xfs, tmpfs), not on overlayfs itself"
    } else if l.contains("iptables") {
        "an iptables problem although the harness disables iptables: check the dockerd version"
    } else {
        "the line above says why; run the command above by hand to see dockerd's full output"
    };
    hint.to_string()
}

pub(super) fn read_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), lines),
        Err(_) => String::new(),
    }
}

/// The last `lines` lines of `text` (a log tail for a message).
pub(crate) fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_the_log() {
        assert!(
            start_failure_hint("listen unix /x: bind: address already in use").contains("socket")
        );
        assert!(
            start_failure_hint("failed to start containerd: exec: \"containerd\": executable file not found in $PATH")
                .contains("install-engine")
        );
        assert!(start_failure_hint("nothing useful").contains("by hand"));
        assert!(
            start_failure_hint("failed to start daemon: runtime name 'runc' is reserved")
                .contains("rename")
        );
    }

    #[test]
    fn the_failure_cause_is_the_decisive_line() {
        let log = "time=\"t\" level=info msg=\"loading plugin\" id=io.containerd.snapshotter.v1.overlayfs\n\
                   time=\"t\" level=error msg=\"failed to mount\" error=\"permission denied\"\n\
                   failed to start daemon: runtime name 'runc' is reserved\n";
        assert_eq!(
            failure_cause(log),
            "failed to start daemon: runtime name 'runc' is reserved"
        );
        let log = "time=\"t\" level=fatal msg=\"cannot start\" error=\"exec: \\\"containerd\\\": executable file not found in $PATH\"\n";
        assert_eq!(
            failure_cause(log),
            "cannot start: exec: \"containerd\": executable file not found in $PATH"
        );
        assert_eq!(
            failure_cause("level=info msg=x\n"),
            "no error line in its log"
        );
        assert_eq!(significant_tail(log, 5).lines().count(), 1);
        assert!(!significant_tail("level=info a\nlevel=warning b\n", 5).contains("info"));
        assert_eq!(
            significant_tail("+ exec wrap\nlevel=warning b\n+ rm -f x\n", 5),
            "level=warning b"
        );
    }

    #[test]
    fn rootless_failure_causes_name_the_real_error() {
        let uid_map = "+ exec rootlesskit --net=slirp4netns\n\
            [rootlesskit:parent] error: failed to setup UID/GID map: newuidmap 42 [0 1001 1 1 100000 65536] failed: newuidmap: write to uid_map failed: Operation not permitted\n\
            [rootlesskit:child ] error: command [x] exited: exit status 1\n";
        assert!(failure_cause(uid_map).contains("write to uid_map failed"));
        let wrapper = "cdi-harness: cannot bind /dev/null onto /dev/nvidia0 in the rootless engine's namespace\n\
            [rootlesskit:child ] error: command [x] exited: exit status 1\n\
            [rootlesskit:parent] error: child exited: exit status 1\n";
        assert!(failure_cause(wrapper).starts_with("cdi-harness: cannot bind"));
        let script =
            "+ echo rootlesskit needs to be installed\nrootlesskit needs to be installed\n";
        assert_eq!(failure_cause(script), "rootlesskit needs to be installed");
        let only_exit = "[rootlesskit:parent] error: child exited: exit status 1\n";
        assert_eq!(failure_cause(only_exit), only_exit.trim());
    }

    #[test]
    fn tails_are_bounded() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }
}
