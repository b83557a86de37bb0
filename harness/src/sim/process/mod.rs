//! A private, throw-away dockerd with CDI enabled, for the `sim` backend: spawning it,
//! waiting for it, restarting it, noticing its death and stopping it.
//!
//! It lives entirely under one short temporary directory (`/tmp/cdih-XXXXXX`: unix
//! socket paths are limited to 108 bytes), never touches the host's own engine, and is
//! taken down with everything it started: [`PrivateEngine::stop`] on the normal path,
//! the [`Drop`] impl on unwinding, `PR_SET_PDEATHSIG` if the harness dies outright.
//!
//! The directory's random name (the *marker*, e.g. `cdih-a1B2c3`) is also the engine's
//! containerd namespace, so every process the engine starts (dockerd, containerd, shims,
//! runc) carries it in its arguments; that is how leftovers are found at stop.
//!
//! With [`EngineOptions::rootless`] the engine is a rootless one instead (dockerd in
//! rootlesskit's user namespace, see the `rootless` module): the same directory, the
//! same stop and cleanup, with rootlesskit as the process the harness starts and
//! signals (it forwards signals to dockerd).

//!
//! Finding dockerd is `discovery`'s job, its configuration `config`'s, explaining a
//! failed start `diagnosis`'s; what is left behind after it stops is [`cleanup`]'s.

mod cleanup;
mod shutdown;

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::SimError;
use super::config::{EngineOptions, daemon_config};
use super::diagnosis::{
    failure_cause, last_lines, read_tail, significant_tail, start_failure_hint,
};
use super::discovery::{engine_path, find_dockerd, preflight_tools};
use super::error::EngineStartFailure;
use super::rootless;
pub use cleanup::remove_stale_engine_dirs;
use cleanup::{OWNER_FILE, cleanup, process_tree};
use rustix::process::{Pid, Signal};

/// How long dockerd gets to shut down after SIGTERM (it stops containers first,
/// waiting `shutdown-timeout` = 5 s for each to exit) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// The same bound when cleaning up from `Drop`, where nobody should wait long.
const DROP_GRACE: Duration = Duration::from_secs(10);
/// How often readiness and exits are polled.
pub(super) const POLL: Duration = Duration::from_millis(50);

/// Keeps the thread that spawned dockerd alive while dockerd runs: `PR_SET_PDEATHSIG`
/// fires when the *thread* that forked the child exits, so spawning from a tokio worker
/// (or a blocking-pool thread that idles out) could kill dockerd at a random moment.
#[derive(Debug)]
struct Keeper {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn release(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What cleanup needs to know about a rootless engine.
#[derive(Debug, Clone)]
pub(super) struct RootlessRun {
    /// The user the engine runs as.
    user: String,
    /// True when the harness is not root: then files the engine created as
    /// subordinate ids can only be removed from inside a user namespace.
    needs_namespace_rm: bool,
    rootlesskit: PathBuf,
    path_env: OsString,
}

/// A running private dockerd, its temporary directory and the way to take it down.
#[derive(Debug)]
pub struct PrivateEngine {
    root: PathBuf,
    marker: String,
    socket: PathBuf,
    spec_dirs: Vec<PathBuf>,
    dockerd: PathBuf,
    command_line: String,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    keeper: Keeper,
    stopped: bool,
    final_log: String,
    rootless: Option<RootlessRun>,
    /// How to start dockerd again ([`PrivateEngine::restart`]); `None` for a rootless
    /// engine, which cannot be restarted yet.
    relaunch: Option<Relaunch>,
    /// Processes of engine runs before a restart (see [`process_tree`]): cleanup kills
    /// those still alive too.
    earlier_trees: Vec<(i32, u64)>,
    /// A [`PrivateEngine::restart`] failed: the engine is down because the restart
    /// failed (its caller reports that), not because it died on its own.
    restart_failed: bool,
}

/// What a rootful dockerd was started with, to start it again exactly so.
#[derive(Debug, Clone)]
struct Relaunch {
    program: PathBuf,
    args: Vec<OsString>,
    path_env: OsString,
    log_path: PathBuf,
    start_timeout: Duration,
    /// The pidfiles dockerd removes at the very end of its exit (its own, its
    /// containerd's): removed by the harness when it cut that end short, so that the
    /// next dockerd never takes a reused pid in them for its own or its containerd.
    pidfiles: Vec<PathBuf>,
}

impl PrivateEngine {
    /// Starts dockerd in a fresh short temp dir (`/tmp/cdih-XXXXXX`), waits until
    /// `/_ping` answers (bounded by `start_timeout`) and, on failure, returns an error
    /// carrying the last lines of dockerd's log and a fix hint, after removing
    /// everything it started.
    ///
    /// Rootless ([`EngineOptions::rootless`]): checks the user, its subordinate ids,
    /// rootlesskit, the uidmap tools, `dockerd-rootless.sh` and that the user can read
    /// the spec dirs first (each a [`SimError::Rootless`] or [`SimError::MissingTool`]
    /// with the fix), then starts `rootlesskit … dockerd-rootless.sh …` with the socket
    /// at `<root>/xdg/docker.sock`.
    pub async fn start(opts: EngineOptions) -> Result<PrivateEngine, SimError> {
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 && opts.rootless.is_none() {
            return Err(SimError::NotRoot { euid });
        }
        let dockerd = find_dockerd(opts.dockerd.as_deref())?;
        let path_env = engine_path(&dockerd);
        // A rootless dockerd always starts its own containerd: the system's socket is
        // neither visible (rootlesskit copies /run up) nor usable to it.
        preflight_tools(&path_env, opts.rootless.is_some())?;
        let plan = match &opts.rootless {
            Some(r) => Some(rootless::plan(r, euid, &dockerd, &path_env)?),
            None => None,
        };

        remove_stale_engine_dirs();
        let root = tempfile::Builder::new()
            .prefix("cdih-")
            .tempdir_in("/tmp")
            .map_err(|e| SimError::io("creating the engine directory under /tmp", e))?
            .keep();
        // From here on, an early return must remove `root`: the guard does it.
        let mut guard = RootGuard(Some(root.clone()));
        let marker = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SimError::io(format!("chmod {}", root.display()), e))?;
        // Who owns the directory: a later run removes it as soon as this process is
        // gone (and its engine with it), not only after STALE_AGE.
        let owner_path = root.join(OWNER_FILE);
        std::fs::write(&owner_path, format!("{}\n", std::process::id()))
            .map_err(|e| SimError::io(format!("writing {}", owner_path.display()), e))?;

        let spec_dirs = if opts.spec_dirs.is_empty() {
            let dir = root.join("cdi");
            std::fs::create_dir(&dir)
                .map_err(|e| SimError::io(format!("creating {}", dir.display()), e))?;
            vec![dir]
        } else {
            opts.spec_dirs.clone()
        };
        let config_path = root.join("daemon.json");
        let config = daemon_config(&opts, &spec_dirs, &marker);
        std::fs::write(&config_path, config)
            .map_err(|e| SimError::io(format!("writing {}", config_path.display()), e))?;
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| SimError::io(format!("chmod {}", config_path.display()), e))?;

        // Rootless: the engine's user owns <root>/xdg (socket, data, exec root) and reads
        // everything else, so its directories live there.
        let layout = match &plan {
            Some(p) => {
                let layout = p.prepare(&root, &dockerd)?;
                let mut dirs = spec_dirs.clone();
                dirs.push(root.clone());
                p.check_access(
                    &dirs,
                    &[dockerd.clone(), p.script.clone(), layout.wrapper.clone()],
                )?;
                Some(layout)
            }
            None => None,
        };
        let state_dir = layout.as_ref().map_or(root.clone(), |l| l.xdg.clone());
        if plan.is_none() {
            on_memory(&state_dir);
        }
        let socket = match &layout {
            Some(l) => l.xdg.join("docker.sock"),
            None => root.join("d.sock"),
        };
        let log_path = root.join("dockerd.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| SimError::io(format!("creating {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| SimError::io(format!("opening {}", log_path.display()), e))?;
        let args: Vec<OsString> = vec![
            "--config-file".into(),
            config_path.into(),
            "--host".into(),
            format!("unix://{}", socket.display()).into(),
            "--data-root".into(),
            state_dir.join("data").into(),
            "--exec-root".into(),
            state_dir.join("exec").into(),
            "--pidfile".into(),
            state_dir.join("d.pid").into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--bridge=none".into(),
        ];
        let relaunch = plan.is_none().then(|| Relaunch {
            program: dockerd.clone(),
            args: args.clone(),
            path_env: path_env.clone(),
            log_path: log_path.clone(),
            start_timeout: opts.start_timeout,
            pidfiles: vec![
                state_dir.join("d.pid"),
                state_dir.join("exec/containerd/containerd.pid"),
            ],
        });
        let (program, command_line) = match (&plan, &layout) {
            (Some(p), Some(l)) => (p.script.clone(), p.command_line(l, &args)),
            _ => (
                dockerd.clone(),
                format!(
                    "PATH={} {} {}",
                    path_env.to_string_lossy(),
                    dockerd.display(),
                    args.iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ),
        };

        let mut cmd = tokio::process::Command::new(&program);
        let mut child_setup = None;
        match (&plan, &layout) {
            (Some(p), Some(l)) => {
                // dockerd-rootless.sh execs rootlesskit, so the child *is* rootlesskit.
                cmd.args(&args)
                    .env_clear()
                    .envs(p.env(l))
                    // The harness's working directory may be closed to the engine's user.
                    .current_dir("/");
                // Root: private tun node and the switch to the user, done by the forked
                // child itself (not by setpriv) so that PR_SET_PDEATHSIG, set below
                // after the switch (which would clear it), still holds.
                child_setup = p.child_setup(l)?;
            }
            _ => {
                cmd.args(&args).env("PATH", &path_env);
            }
        }
        detach_into_log(&mut cmd, log, log2);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes system calls
        // (ChildSetup::apply: unshare, mount, mknod, chown, setgroups, setgid, setuid;
        // then prctl, getppid, raise), all async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(setup) = &child_setup {
                    setup.apply()?;
                }
                die_with_parent(parent)
            });
        }

        let (child, keeper) = spawn_kept(cmd)
            .await
            .map_err(|e| SimError::io(format!("starting {}", program.display()), e))?;
        let pid = child.id();
        guard.0 = None; // the engine's own stop/drop cleans up from here
        let mut engine = PrivateEngine {
            root,
            marker,
            socket,
            spec_dirs,
            dockerd,
            command_line,
            child: Some(child),
            pid,
            keeper,
            stopped: false,
            final_log: String::new(),
            rootless: plan.map(|p| RootlessRun {
                user: p.account.name.clone(),
                needs_namespace_rm: !p.switch_user,
                rootlesskit: p.rootlesskit.clone(),
                path_env: p.path_env.clone(),
            }),
            relaunch,
            earlier_trees: Vec::new(),
            restart_failed: false,
        };

        match engine.wait_ready(opts.start_timeout).await {
            Ok(()) => Ok(engine),
            Err(exit_status) => {
                let _ = engine.stop().await;
                let full_log = engine.log_tail(400);
                let cause = failure_cause(&full_log);
                let log_tail = significant_tail(&full_log, 25);
                let hint = match engine.rootless {
                    Some(_) => rootless::rootless_start_hint(&cause)
                        .unwrap_or_else(|| start_failure_hint(&cause)),
                    None => start_failure_hint(&cause),
                };
                Err(SimError::EngineStart(Box::new(EngineStartFailure {
                    exit_status,
                    waited: opts.start_timeout,
                    socket: engine.socket.clone(),
                    cause,
                    command: engine.command_line.clone(),
                    log_tail,
                    hint,
                })))
            }
        }
    }

    /// Polls `/_ping` until it answers; `Err(Some(status))` if dockerd exited first,
    /// `Err(None)` on timeout.
    async fn wait_ready(&mut self, limit: Duration) -> Result<(), Option<String>> {
        let deadline = Instant::now() + limit;
        // One client once the socket exists (bollard refuses to make one for a missing
        // socket, and dockerd creates it only after starting up), reused for every ping.
        let mut client = None;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Some(status.to_string()));
            }
            if client.is_none() {
                client = ping_client(&self.socket);
            }
            if let Some(docker) = &client
                && ping(docker).await
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The `DOCKER_HOST` value for this engine, e.g. `unix:///tmp/cdih-…/d.sock`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The engine's API socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The CDI spec directories the engine watches (the harness writes specs here).
    pub fn spec_dirs(&self) -> &[PathBuf] {
        &self.spec_dirs
    }

    /// The engine's temporary directory, also the place for support files; removed at
    /// stop.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The dockerd binary running, so reports can say which engine was tested.
    pub fn dockerd_path(&self) -> &Path {
        &self.dockerd
    }

    /// dockerd's process id while it runs; for a rootless engine, rootlesskit's (the
    /// process the harness started, which runs dockerd in its namespaces).
    pub fn pid(&self) -> Option<u32> {
        if self.stopped { None } else { self.pid }
    }

    /// The user a rootless engine runs as; `None` for a rootful engine.
    pub fn rootless_user(&self) -> Option<&str> {
        self.rootless.as_ref().map(|r| r.user.as_str())
    }

    /// The unique name of the temp dir, which is also the containerd namespace and
    /// appears in the arguments of every process of this engine.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The full command line dockerd was started with, to reproduce by hand.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// The last `lines` lines dockerd (and its containerd) logged; after [`Self::stop`]
    /// this is what was captured before the log was removed.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = if self.stopped {
            self.final_log.clone()
        } else {
            read_tail(&self.root.join("dockerd.log"), 200)
        };
        last_lines(&text, lines)
    }

    /// A Docker API client for this engine, with the API version negotiated (the stubs
    /// are newer than most engines).
    pub async fn client(&self) -> Result<bollard::Docker, SimError> {
        let host = self.docker_host();
        let socket = self.socket.to_string_lossy().into_owned();
        let docker = bollard::Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| SimError::Client {
                host: host.clone(),
                detail: e.to_string(),
            })?;
        docker
            .negotiate_version()
            .await
            .map_err(|e| SimError::Client {
                host,
                detail: e.to_string(),
            })
    }

    /// Restarts dockerd the way `systemctl restart docker` does: SIGTERM (its containers
    /// are *not* killed first, so the daemon's own shutdown stops them and records that
    /// it did), waits for it to exit (bounded by the stop grace; killed and an error
    /// after it), starts it again with exactly the same command line (config, socket,
    /// data root, exec root) and waits for `/_ping` (bounded by the start timeout).
    /// Containers with a restart policy are then the daemon's to bring back. API
    /// clients must reconnect (the socket path is the same).
    ///
    /// Whatever fails, [`Self::stop`] and `Drop` still take everything down.
    /// A rootless engine answers [`SimError::RestartUnsupported`].
    pub async fn restart(&mut self) -> Result<(), SimError> {
        if self.stopped {
            return Err(SimError::Restart {
                detail: "the engine was already stopped".into(),
            });
        }
        let Some(relaunch) = self.relaunch.clone() else {
            return Err(SimError::RestartUnsupported {
                reason: "restarting a rootless private engine is not supported yet \
                         (rootlesskit would have to be restarted with dockerd)"
                    .into(),
            });
        };
        if let Some(status) = self.exited() {
            return Err(SimError::DiedBeforeRestart {
                status,
                log_tail: significant_tail(&self.log_tail(200), 5)
                    .lines()
                    .collect::<Vec<_>>()
                    .join(" / "),
            });
        }
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let log_from = std::fs::metadata(&relaunch.log_path).map_or(0, |m| m.len());
                if let Some(pid) = child.id() {
                    self.earlier_trees.extend(process_tree(pid));
                    // Our own, not yet reaped, child: the pid is still its.
                    send(pid, Signal::TERM);
                }
                let exit =
                    shutdown::await_exit(child, &relaunch.log_path, log_from, STOP_GRACE).await;
                if exit == shutdown::Exit::KilledIdle {
                    for stale in &relaunch.pidfiles {
                        let _ = std::fs::remove_file(stale);
                    }
                }
                if exit == shutdown::Exit::TimedOut {
                    kill_group(child);
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    self.pid = None;
                    self.restart_failed = true;
                    return Err(SimError::Restart {
                        detail: format!(
                            "dockerd did not exit within {} s of SIGTERM and was killed; its \
                             log:\n{}",
                            STOP_GRACE.as_secs(),
                            significant_tail(&self.log_tail(200), 15)
                        ),
                    });
                }
            }
        }
        // The old dockerd is gone: its spawning thread may go too. Until the new one
        // answers, the engine is down because of this restart.
        self.keeper.release();
        self.restart_failed = true;
        let log_start = std::fs::metadata(&relaunch.log_path).map_or(0, |m| m.len());
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&relaunch.log_path)
            .map_err(|e| SimError::io(format!("opening {}", relaunch.log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| SimError::io(format!("opening {}", relaunch.log_path.display()), e))?;
        let mut cmd = tokio::process::Command::new(&relaunch.program);
        cmd.args(&relaunch.args).env("PATH", &relaunch.path_env);
        detach_into_log(&mut cmd, log, log2);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes the
        // async-signal-safe calls of `die_with_parent` (prctl, getppid, raise).
        unsafe {
            cmd.pre_exec(move || die_with_parent(parent));
        }
        let (child, keeper) = spawn_kept(cmd).await.map_err(|e| {
            SimError::io(format!("starting {} again", relaunch.program.display()), e)
        })?;
        self.pid = child.id();
        self.child = Some(child);
        self.keeper = keeper;
        match self.wait_ready(relaunch.start_timeout).await {
            Ok(()) => {
                self.restart_failed = false;
                Ok(())
            }
            Err(exit_status) => {
                // Only what the new dockerd logged says why it failed.
                let full = std::fs::read(&relaunch.log_path)
                    .map(|b| {
                        let from = (log_start as usize).min(b.len());
                        last_lines(&String::from_utf8_lossy(&b[from..]), 400)
                    })
                    .unwrap_or_default();
                let cause = failure_cause(&full);
                let hint = start_failure_hint(&cause);
                Err(SimError::EngineStart(Box::new(EngineStartFailure {
                    exit_status,
                    waited: relaunch.start_timeout,
                    socket: self.socket.clone(),
                    cause,
                    command: self.command_line.clone(),
                    log_tail: significant_tail(&full, 25),
                    hint,
                })))
            }
        }
    }

    /// Kills the engine's running containers (it is disposable; this saves dockerd's
    /// 10 s per-container stop timeout), then SIGTERM, wait (bounded), SIGKILL if
    /// needed, wait for containerd and shims, kill what is left of this engine, unmount
    /// anything left under the temp dir (overlay mounts), remove the temp dir.
    /// Idempotent: a second call does nothing.
    pub async fn stop(&mut self) -> Result<(), SimError> {
        self.stop_within(STOP_GRACE).await
    }

    /// How the engine's process exited, if it did without being stopped (it died, was
    /// killed or crashed); `None` while it runs, once [`Self::stop`] took it down, or
    /// after a [`Self::restart`] that failed (whose error says why it is down).
    pub fn exited(&mut self) -> Option<String> {
        if self.stopped || self.restart_failed {
            return None;
        }
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// [`Self::exited`], allowing for the moment a dying engine has already closed its
    /// socket but cannot be reaped yet: when nothing listens on the socket any more, the
    /// exit gets up to 2 s to show. A live (or stopped) engine costs one connect.
    pub async fn died(&mut self) -> Option<String> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        if self.stopped || self.restart_failed || self.child.is_none() {
            return None;
        }
        let gone = matches!(
            std::os::unix::net::UnixStream::connect(&self.socket),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound)
        );
        if !gone {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            if let Some(status) = self.exited() {
                return Some(status);
            }
        }
        None
    }

    /// [`Self::stop`] giving dockerd only `grace` to exit after SIGTERM (and SIGCONT,
    /// so that a stopped engine can act on it) before it is killed: the interrupted
    /// run's short deadline.
    pub async fn stop_within(&mut self, grace: Duration) -> Result<(), SimError> {
        if self.stopped {
            return Ok(());
        }
        let mut tree = Vec::new();
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            resume(&child);
            let socket = self.socket.clone();
            // Bounded by the grace too: a hung engine must not hold a short stop up
            // (the blocking task ends on its own socket timeouts).
            let _ = tokio::time::timeout(
                grace,
                tokio::task::spawn_blocking(move || kill_all_containers(&socket)),
            )
            .await;
            if let Some(pid) = child.id() {
                tree = process_tree(pid);
            }
            let log = self.root.join("dockerd.log");
            let log_from = std::fs::metadata(&log).map_or(0, |m| m.len());
            if let Some(pid) = child.id() {
                // Our own, not yet reaped, child: the pid is still its.
                send(pid, Signal::TERM);
            }
            if shutdown::await_exit(&mut child, &log, log_from, grace).await
                == shutdown::Exit::TimedOut
            {
                kill_group(&child);
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
        tree.extend(self.earlier_trees.iter().copied());
        self.final_log = read_tail(&self.root.join("dockerd.log"), 200);
        self.stopped = true;
        self.keeper.release();
        let root = self.root.clone();
        let marker = self.marker.clone();
        let rootless = self.rootless.clone();
        let result =
            tokio::task::spawn_blocking(move || cleanup(&root, &marker, rootless.as_ref(), &tree))
                .await
                .unwrap_or_else(|e| Err(format!("cleanup task failed: {e}")));
        result.map_err(|detail| SimError::Cleanup {
            root: self.root.clone(),
            marker: self.marker.clone(),
            detail,
        })
    }
}

impl Drop for PrivateEngine {
    /// Best-effort synchronous version of [`PrivateEngine::stop`] for when it was not
    /// called (a panic, an early `?`, Ctrl-C unwinding): never leave a dockerd running.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut tree = Vec::new();
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            resume(&child);
            kill_all_containers(&self.socket);
            if let Some(pid) = child.id() {
                tree = process_tree(pid);
            }
            if let Some(pid) = child.id() {
                // Our own, not yet reaped, child: the pid is still its.
                send(pid, Signal::TERM);
            }
            if !wait_child_sync(&mut child, DROP_GRACE) {
                kill_group(&child);
                let _ = child.start_kill();
                let _ = wait_child_sync(&mut child, Duration::from_secs(2));
            }
        }
        tree.extend(self.earlier_trees.iter().copied());
        self.keeper.release();
        if let Err(detail) = cleanup(&self.root, &self.marker, self.rootless.as_ref(), &tree) {
            eprintln!(
                "cdi-harness: cleaning up the private engine in {} on drop: {detail}",
                self.root.display()
            );
        }
    }
}

/// The forked child's half of `PR_SET_PDEATHSIG`: SIGTERM when the spawning thread
/// goes, not SIGKILL, so dockerd still stops its containers (rootlesskit forwards it).
/// Only for `pre_exec`: rustix makes the prctl, getppid, getpid and kill system calls
/// directly (no allocation, no locks), so they are async-signal-safe.
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    // The parent may have died before prctl took effect. (kill of our own pid is
    // raise(3) here: the forked child has a single thread.)
    if Pid::as_raw(rustix::process::getppid()) as u32 != parent {
        rustix::process::kill_process(rustix::process::getpid(), Signal::TERM)?;
    }
    Ok(())
}

/// Removes the temp dir (and unmounts what [`on_memory`] mounted in it) if `start`
/// fails before the engine owns it.
struct RootGuard(Option<PathBuf>);

impl Drop for RootGuard {
    fn drop(&mut self) {
        if let Some(root) = self.0.take() {
            let _ = cleanup(&root, "", None, &[]);
        }
    }
}

/// The size limit of each memory file system of a rootful engine: the busybox image
/// and the checks' containers take a few MB; a container that writes more than this
/// gets ENOSPC instead of filling the machine's memory.
const STATE_TMPFS_OPTIONS: &std::ffi::CStr = c"size=1g,mode=0755";

/// Puts a rootful engine's data root and exec root (`<state>/data`, `<state>/exec`) on
/// memory file systems (tmpfs), as a real engine's exec root (`/run/docker`) is.
/// Why: the busybox import (hundreds of links per engine), every container's layers
/// and containerd's synced database were the suite's largest CPU cost on disk (a
/// quarter of it was ext4 allocating inodes, measured with `perf`), and nothing the
/// checks compare depends on where the engine keeps its layers. Best effort: where
/// mounting is refused (no CAP_SYS_ADMIN), the engine keeps its state on disk, only
/// slower. Unmounted by [`cleanup`] with everything else under the engine's directory.
fn on_memory(state_dir: &Path) {
    for name in ["data", "exec"] {
        let dir = state_dir.join(name);
        if std::fs::create_dir(&dir).is_err() {
            continue;
        }
        let _ = rustix::mount::mount(
            "cdi-harness",
            &dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(STATE_TMPFS_OPTIONS),
        );
    }
}

/// Spawns `cmd` from a dedicated thread that lives until the engine releases it (see
/// [`Keeper`]); the child is registered with the current tokio runtime.
async fn spawn_kept(
    mut cmd: tokio::process::Command,
) -> std::io::Result<(tokio::process::Child, Keeper)> {
    let handle = tokio::runtime::Handle::current();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cdih-dockerd".to_string())
        .spawn(move || {
            let spawned = {
                let _entered = handle.enter();
                cmd.spawn()
            };
            let ok = spawned.is_ok();
            // If the receiver is gone the child is dropped here and killed (kill_on_drop).
            if ready_tx.send(spawned).is_ok() && ok {
                // Returns when the engine drops the sender (after dockerd is gone).
                let _ = stop_rx.recv();
            }
        })?;
    let mut keeper = Keeper {
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    match ready_rx.await {
        Ok(Ok(child)) => Ok((child, keeper)),
        Ok(Err(e)) => {
            keeper.release();
            Err(e)
        }
        Err(_) => {
            keeper.release();
            Err(std::io::Error::other("the thread spawning dockerd died"))
        }
    }
}

/// SIGKILLs the process group the engine's first process leads (dockerd, or
/// rootlesskit with its child and dockerd). Only called while that process is not yet
/// reaped, so the group id cannot have been reused by anyone else.
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // The process group of our own unreaped child (spawned with process_group(0),
        // so its pgid is its pid).
        send_group(pid, Signal::KILL);
    }
}

/// Sends SIGCONT to the engine's process group: an engine someone stopped (SIGSTOP,
/// a debugger, a frozen cgroup) cannot act on the SIGTERM that takes it down, and a
/// stop that waits out its grace for nothing holds an interrupted run up.
fn resume(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // The process group of our own unreaped child (spawned with process_group(0)),
        // and the child itself; SIGCONT harms no running process.
        send_group(pid, Signal::CONT);
        send(pid, Signal::CONT);
    }
}

/// Sends `signal` to process `pid`; a process already gone (or a pid that is not one)
/// is not an error here: every caller goes on to wait for the exit either way.
fn send(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// [`send`] to the process group `pgid`.
fn send_group(pgid: u32, signal: Signal) {
    if let Some(pgid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pgid, signal);
    }
}

/// Polls a child until it exits or `limit` passes; true if it exited.
fn wait_child_sync(child: &mut tokio::process::Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// One HTTP/1.0 request without body over the engine's unix socket (the server closes
/// the connection after the response, so no chunking or keep-alive to handle):
/// the status code and the body. Unversioned paths, so any engine version answers.
///
/// Kept hand-written (readiness uses bollard's ping, see [`ping`]) because
/// [`kill_all_containers`] also runs from `Drop`, synchronously: bollard is async only,
/// and `Drop` may run on a runtime's worker thread (where blocking on a future panics)
/// or after the runtime is gone, so it cannot drive bollard there.
fn http(socket: &Path, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let timeout = Some(Duration::from_secs(3));
    s.set_read_timeout(timeout).ok()?;
    s.set_write_timeout(timeout).ok()?;
    let request = format!("{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Length: 0\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let code = status_line.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// How long one readiness ping may take: a starting dockerd that accepted the
/// connection but does not answer yet must not hold the wait past its deadline.
const PING_TIMEOUT_SECS: u64 = 3;

/// A bollard client for readiness pings on `socket`; `None` while the socket does not
/// exist yet (bollard checks), or if bollard rejects the path (then the wait times out
/// and the start error shows the log).
fn ping_client(socket: &Path) -> Option<bollard::Docker> {
    bollard::Docker::connect_with_unix(
        &socket.to_string_lossy(),
        PING_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
    .ok()
}

/// bollard's `GET /_ping`; true when the engine answers `OK` (a 2xx; any error, a
/// refused connection, a missing socket or a timeout, is "not ready yet").
async fn ping(docker: &bollard::Docker) -> bool {
    docker.ping().await.is_ok_and(|body| body.trim() == "OK")
}

/// Kills every running container of the engine (SIGKILL through the API). The engine is
/// disposable, and dockerd's own shutdown waits each container's stop timeout (10 s by
/// default, which `shutdown-timeout` cannot shorten) for processes that, as PID 1,
/// ignore SIGTERM.
fn kill_all_containers(socket: &Path) {
    let Some((200, body)) = http(socket, "GET", "/containers/json") else {
        return;
    };
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&body) else {
        return;
    };
    for c in list {
        if let Some(id) = c.get("Id").and_then(|v| v.as_str())
            && id.chars().all(|ch| ch.is_ascii_hexdigit())
        {
            let _ = http(socket, "POST", &format!("/containers/{id}/kill"));
        }
    }
}

/// How dockerd is spawned, at start and at restart: output to its log, killed with the
/// harness, and in its own process group, so that Ctrl-C in the harness's terminal does
/// not reach dockerd before the harness has removed its containers.
fn detach_into_log(cmd: &mut tokio::process::Command, log: std::fs::File, log2: std::fs::File) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(true)
        .process_group(0);
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};

    use super::*;

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn signals_reach_the_process_and_its_group() {
        let mut child = sleeper();
        send(child.id(), Signal::TERM);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        let mut child = sleeper();
        send_group(child.id(), Signal::KILL);
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn pids_that_name_no_single_process_are_never_signalled() {
        // kill(0, …) would signal the harness's own group, kill(-1, …) every process:
        // neither pid 0 nor one beyond i32 may ever reach kill(2).
        send(0, Signal::TERM);
        send_group(0, Signal::TERM);
        send(u32::MAX, Signal::TERM);
        send_group(u32::MAX, Signal::TERM);
    }
}
