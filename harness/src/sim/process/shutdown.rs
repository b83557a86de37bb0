//! Waiting for a SIGTERMed dockerd to exit, without its idle last second.
//!
//! Why a module of its own: dockerd stops the containerd it manages by sending it
//! SIGTERM and then polling once a second whether it is gone (moby's
//! `libcontainerd/supervisor` `stopDaemon`: `process.Alive`, then `time.Sleep(time.
//! Second)`), so every stop and restart of a private engine ended with a second in which
//! nothing was left to do: measured here, 1.0 s of each engine's stop and of each
//! `restart_always` restart. Once dockerd has logged that its shutdown is complete and
//! its containerd has exited, dockerd is only sleeping out that poll, and is killed.
//! What it would still have done is remove two pidfiles: a restart removes them
//! ([`Exit::KilledIdle`]), a stop's cleanup removes the whole directory.

use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;

use super::cleanup::{all_procs, descendants};

/// What dockerd logs once its own shutdown is done (seen here from engines 26.1 and
/// 28.5); what follows it is the stop of its managed containerd. An engine that logs
/// otherwise is only waited for, as before.
const SHUTDOWN_COMPLETE: &str = "Daemon shutdown complete";
/// How often the exit is polled: a restart waits on it, so finer than readiness.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// How the wait for a SIGTERMed engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// It exited by itself.
    Exited,
    /// Its shutdown was complete and only the idle poll was left: it was killed, so
    /// what dockerd removes after that poll (its pidfile, its containerd's pidfile) is
    /// still there, naming dead processes.
    KilledIdle,
    /// It did not exit within the limit.
    TimedOut,
}

/// Waits up to `limit` for the engine's first process (`child`: dockerd, or rootlesskit
/// around it) to exit after SIGTERM. `log` is dockerd's log and `log_from` its length
/// when the SIGTERM was sent, so that an earlier shutdown's line (before a restart) is
/// not taken for this one's.
pub(super) async fn await_exit(
    child: &mut tokio::process::Child,
    log: &Path,
    log_from: u64,
    limit: Duration,
) -> Exit {
    let mut killed = false;
    let watch = async {
        loop {
            tokio::select! {
                // An error waiting means there is no child left to wait for.
                _ = child.wait() => return,
                _ = tokio::time::sleep(EXIT_POLL) => {}
            }
            if !killed
                && let Some(first) = child.id()
                && shutdown_logged(log, log_from)
                && let Some(dockerd) = only_sleeping(first)
            {
                killed = kill_exactly(dockerd);
            }
        }
    };
    match tokio::time::timeout(limit, watch).await {
        Err(_) => Exit::TimedOut,
        Ok(()) if killed => Exit::KilledIdle,
        Ok(()) => Exit::Exited,
    }
}

/// Whether `log`, past its first `from` bytes, says dockerd's shutdown is complete.
fn shutdown_logged(log: &Path, from: u64) -> bool {
    use std::io::{Read as _, Seek as _};
    let Ok(mut file) = std::fs::File::open(log) else {
        return false;
    };
    if file.seek(std::io::SeekFrom::Start(from)).is_err() {
        return false;
    }
    // dockerd logs a few dozen lines while it shuts down; the bound keeps a runaway
    // log from being read whole every poll.
    let mut text = Vec::new();
    let _ = file.take(1 << 20).read_to_end(&mut text);
    String::from_utf8_lossy(&text).contains(SHUTDOWN_COMPLETE)
}

/// SIGKILL to exactly the process `(pid, start time)`: a rootless engine's dockerd is
/// not the harness's own child, so its pid alone could name another process by the
/// time the signal goes. A pidfd pins the process; its start time, read after the pidfd
/// was opened, proves it is the one that was seen. False if it is gone or not it.
fn kill_exactly((pid, start): (i32, u64)) -> bool {
    use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};
    let Some(raw) = Pid::from_raw(pid) else {
        return false;
    };
    let Ok(fd) = pidfd_open(raw, PidfdFlags::empty()) else {
        return false;
    };
    let same = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|st| st.starttime == start);
    same && pidfd_send_signal(&fd, Signal::KILL).is_ok()
}

/// The pid of the dockerd at or under `first` once it has no child process left, not
/// even an unreaped one (its containerd gone: what remains of its shutdown is the
/// poll); `None` while any child is there, or when no dockerd is found (then the wait
/// goes on as before). Any child counts, whatever its name (a wrapped containerd), and
/// an unreaped one too: killed then, dockerd would hand the zombie to init, and until
/// init reaps it the next dockerd takes it for a running containerd (moby's
/// `process.Alive` is `kill(pid, 0)`) and waits 10 s for it (measured here).
fn only_sleeping(first: u32) -> Option<(i32, u64)> {
    let procs = all_procs();
    let dockerd = descendants(&procs, first)
        .into_iter()
        .find(|p| p.comm == "dockerd" && !p.zombie)?;
    let child_left = procs.iter().any(|p| p.ppid == dockerd.pid);
    (!child_left).then_some((dockerd.pid, dockerd.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_shutdown_after_the_offset_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dockerd.log");
        let earlier =
            format!("level=info msg=\"{SHUTDOWN_COMPLETE}\"\nlevel=info msg=\"Starting up\"\n");
        std::fs::write(&log, &earlier).unwrap();
        assert!(shutdown_logged(&log, 0));
        assert!(!shutdown_logged(&log, earlier.len() as u64));
        std::fs::write(
            &log,
            format!("{earlier}level=info msg=\"Processing signal 'terminated'\"\n"),
        )
        .unwrap();
        assert!(!shutdown_logged(&log, earlier.len() as u64));
        std::fs::write(
            &log,
            format!("{earlier}level=info msg=\"{SHUTDOWN_COMPLETE}\"\n"),
        )
        .unwrap();
        assert!(shutdown_logged(&log, earlier.len() as u64));
        assert!(!shutdown_logged(&dir.path().join("missing.log"), 0));
    }

    #[test]
    fn only_the_process_seen_is_killed() {
        use std::os::unix::process::ExitStatusExt as _;
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = i32::try_from(sleeper.id()).unwrap();
        let start = procfs::process::Process::new(pid)
            .unwrap()
            .stat()
            .unwrap()
            .starttime;
        // Another start time: another process that got the same pid. Left alone.
        assert!(!kill_exactly((pid, start + 1)));
        assert!(
            sleeper.try_wait().unwrap().is_none(),
            "killed the wrong one"
        );
        assert!(kill_exactly((pid, start)));
        assert_eq!(sleeper.wait().unwrap().signal(), Some(9));
        // Gone: nothing to kill.
        assert!(!kill_exactly((pid, start)));
    }

    #[test]
    fn a_process_that_is_not_dockerd_is_never_taken_for_one() {
        // This test process has no dockerd at or under it: the wait must not kill.
        assert_eq!(only_sleeping(std::process::id()), None);
    }
}
