//! A private, throw-away dockerd with CDI enabled, for the `sim` backend.
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

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::SimError;
use super::error::EngineStartFailure;
use super::paths::{is_executable_file, which_in};
use super::rootless::{self, RootlessOptions};

/// Environment variable naming the dockerd to use, overriding the search.
pub const ENV_DOCKERD: &str = "CDI_HARNESS_DOCKERD";
/// Where `.ci/install-engine` unpacks a CDI-capable dockerd (Debian unstable's).
pub const DEFAULT_DOCKERD: &str = "/opt/cdi-harness/engines/unstable/usr/sbin/dockerd";
/// First engine major version with CDI support (`features.cdi`).
pub const MIN_CDI_ENGINE_MAJOR: u32 = 25;
/// The socket of a system containerd; when it exists dockerd uses that containerd
/// instead of starting its own (and needs no `containerd` binary of its own).
const SYSTEM_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// How long dockerd gets to shut down after SIGTERM (it stops containers first,
/// waiting `shutdown-timeout` = 5 s for each to exit) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// The same bound when cleaning up from `Drop`, where nobody should wait long.
const DROP_GRACE: Duration = Duration::from_secs(10);
/// How long processes left behind by the engine get to exit on their own before SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// How long killed leftovers get to disappear.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(3);
/// How often readiness and exits are polled.
const POLL: Duration = Duration::from_millis(50);
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

/// What the private engine is started with.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The dockerd to run; `None` searches as [`find_dockerd`] does.
    pub dockerd: Option<PathBuf>,
    /// `features.cdi` in daemon.json (false reproduces an engine without CDI enabled).
    pub cdi: bool,
    /// `cdi-spec-dirs` in daemon.json, used as given (not created); empty means one
    /// directory `<root>/cdi`, created by the harness.
    pub spec_dirs: Vec<PathBuf>,
    /// daemon.json `runtimes` (the legacy-runtime scenario puts
    /// `{"nvidia":{"path":"nvidia-container-runtime"}}` here); empty writes none.
    pub runtimes: serde_json::Map<String, serde_json::Value>,
    /// How long to wait for `/_ping` to answer.
    pub start_timeout: Duration,
    /// `Some`: start a *rootless* engine (dockerd-rootless.sh under rootlesskit, as a
    /// NixOS machine with `virtualisation.docker.rootless` runs it) instead of a rootful
    /// one. Its specs must not use `hostPath` on device nodes (write
    /// [`super::sim_spec_json_rootless`]) and every node they name must be listed in
    /// [`RootlessOptions::device_nodes`] ([`super::device_node_paths`]). Works as root
    /// (the engine runs as [`RootlessOptions::user`]) and as an ordinary user with
    /// subordinate id ranges (the engine runs as that user).
    pub rootless: Option<RootlessOptions>,
}

impl Default for EngineOptions {
    /// CDI on, one spec dir of the harness's own, no extra runtimes, 30 s to start.
    fn default() -> Self {
        EngineOptions {
            dockerd: None,
            cdi: true,
            spec_dirs: Vec::new(),
            runtimes: serde_json::Map::new(),
            start_timeout: Duration::from_secs(30),
            rootless: None,
        }
    }
}

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
struct RootlessRun {
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
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
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
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Some(status.to_string()));
            }
            let socket = self.socket.clone();
            let up = tokio::task::spawn_blocking(move || ping(&socket))
                .await
                .unwrap_or(false);
            if up {
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
                if let Some(pid) = child.id() {
                    self.earlier_trees.extend(process_tree(pid));
                    // SAFETY: plain kill(2) on our own, not yet reaped, child.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGTERM);
                    }
                }
                if tokio::time::timeout(STOP_GRACE, child.wait())
                    .await
                    .is_err()
                {
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
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on our own, not yet reaped, child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
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
                // SAFETY: plain kill(2) on our own, not yet reaped, child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
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
/// Only for `pre_exec`: it calls prctl, getppid and raise, all async-signal-safe.
fn die_with_parent(parent: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls without memory arguments.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // The parent may have died before prctl took effect.
        if libc::getppid() as u32 != parent {
            libc::raise(libc::SIGTERM);
        }
    }
    Ok(())
}

/// Removes the temp dir if `start` fails before the engine owns it.
struct RootGuard(Option<PathBuf>);

impl Drop for RootGuard {
    fn drop(&mut self) {
        if let Some(root) = self.0.take() {
            let _ = std::fs::remove_dir_all(root);
        }
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
        // SAFETY: kill(2) on the process group of our own unreaped child (spawned with
        // process_group(0), so its pgid is its pid).
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
    }
}

/// Sends SIGCONT to the engine's process group: an engine someone stopped (SIGSTOP,
/// a debugger, a frozen cgroup) cannot act on the SIGTERM that takes it down, and a
/// stop that waits out its grace for nothing holds an interrupted run up.
fn resume(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the process group of our own unreaped child (spawned with
        // process_group(0)), and on the child itself; SIGCONT harms no running process.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGCONT);
            libc::kill(pid as libc::pid_t, libc::SIGCONT);
        }
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

/// `GET /_ping`; true on `200 OK`.
fn ping(socket: &Path) -> bool {
    http(socket, "GET", "/_ping").is_some_and(|(code, body)| code == 200 && body.trim() == "OK")
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

/// daemon.json for the private engine.
fn daemon_config(opts: &EngineOptions, spec_dirs: &[PathBuf], marker: &str) -> String {
    serde_json::to_string_pretty(&daemon_json(opts, spec_dirs, marker)).unwrap_or_default()
}

/// The daemon.json a private engine started with `opts` reads, `spec_dirs` being its
/// `cdi-spec-dirs` and `marker` its containerd namespace. Public so that what the sim
/// backend gives an engine can be compared with what NixOS would (`cdi-harness
/// scenario nixos-eval --against-sim`) without starting one.
pub fn daemon_json(opts: &EngineOptions, spec_dirs: &[PathBuf], marker: &str) -> serde_json::Value {
    let mut config = serde_json::Map::new();
    config.insert("features".into(), serde_json::json!({ "cdi": opts.cdi }));
    config.insert(
        "cdi-spec-dirs".into(),
        serde_json::Value::Array(
            spec_dirs
                .iter()
                .map(|d| serde_json::Value::String(d.display().to_string()))
                .collect(),
        ),
    );
    if !opts.runtimes.is_empty() {
        config.insert(
            "runtimes".into(),
            serde_json::Value::Object(opts.runtimes.clone()),
        );
    }
    // Own containerd namespaces: if dockerd picks up a system containerd (it does when
    // /run/containerd/containerd.sock exists), its containers stay apart from the host
    // engine's, and the shims carry the marker in their arguments.
    config.insert("containerd-namespace".into(), marker.into());
    config.insert(
        "containerd-plugins-namespace".into(),
        format!("{marker}-plugins").into(),
    );
    config.insert("shutdown-timeout".into(), 5.into());
    serde_json::Value::Object(config)
}

/// PATH for dockerd: its own directory and the sibling `bin` of an `sbin` (where a
/// Debian layout puts containerd), then the harness's PATH, then the standard dirs
/// (runc is in /usr/sbin on Debian, which a non-login PATH may lack).
fn engine_path(dockerd: &Path) -> OsString {
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

/// Checks the programs dockerd will need before starting it, for a precise error.
/// `own_containerd`: dockerd will start its own containerd even if the system has one.
fn preflight_tools(path_env: &OsString, own_containerd: bool) -> Result<(), SimError> {
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

/// The line of dockerd's log that says why it failed: the last `failed to start
/// daemon` line, else the harness wrapper's own complaint, else the last fatal or
/// error entry (its `msg` and `error` fields), else (rootless) rootlesskit's or
/// dockerd-rootless.sh's own error; rootlesskit's "command … exited" only repeats that
/// its child failed, so it comes last.
fn failure_cause(log: &str) -> String {
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
fn significant_tail(log: &str, lines: usize) -> String {
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
fn start_failure_hint(cause: &str) -> String {
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

fn read_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), lines),
        Err(_) => String::new(),
    }
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Finding dockerd
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Cleaning up
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ProcInfo {
    pid: i32,
    ppid: i32,
    zombie: bool,
    comm: String,
    cmdline: String,
    /// Start time in clock ticks since boot: with the pid, names a process for good.
    start: u64,
}

fn read_proc(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: the state follows the last ')'.
    let close = stat.rfind(')')?;
    let open = stat.find('(')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    // Field 22 of stat; `rest` is at field 5 now.
    let start = rest.nth(17)?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        ppid,
        zombie: state == "Z" || state == "X",
        comm,
        cmdline,
        start,
    })
}

/// `pid` and all its descendants, as (pid, start time): what a rootless engine runs
/// includes processes without the marker in their arguments (slirp4netns), found
/// this way while rootlesskit still lives and killed at cleanup if they outlive it.
fn process_tree(pid: u32) -> Vec<(i32, u64)> {
    let procs = all_procs();
    let mut found: Vec<(i32, u64)> = procs
        .iter()
        .filter(|p| p.pid == pid as i32)
        .map(|p| (p.pid, p.start))
        .collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].0;
        for p in &procs {
            if p.ppid == parent && !found.iter().any(|f| f.0 == p.pid) {
                found.push((p.pid, p.start));
            }
        }
        i += 1;
    }
    found
}

fn all_procs() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect()
}

/// Live processes of the engine marked `marker`: engine programs whose arguments carry
/// the marker, and all their descendants (container processes under a shim). Never the
/// harness itself.
fn engine_processes(marker: &str) -> Vec<ProcInfo> {
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

/// Mount points at or under `root`, deepest first, from /proc/self/mountinfo.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let root_s = root.to_string_lossy().into_owned();
    let prefix = format!("{root_s}/");
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| *m == root_s || m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
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

fn umount_detach(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// After dockerd is gone: waits for the engine's other processes (then kills them),
/// unmounts what is left under `root`, removes `root`. Blocking; bounded to ~6 s (plus
/// up to 30 s for a non-root harness's `rootlesskit rm -rf`).
/// `tree`: processes of the engine seen before it was stopped (see [`process_tree`]);
/// those still alive (same pid and start time) count as left over too.
fn cleanup(
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
                    // SAFETY: kill(2); the pids were just read from /proc and belong to
                    // this engine (engine program with the marker, or a descendant).
                    unsafe {
                        libc::kill(p.pid, libc::SIGKILL);
                    }
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
const OWNER_FILE: &str = "owner";

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
/// for those without one, untouched for 10 minutes, with no live process of their
/// engine and nothing mounted under them, are removed. Called by
/// [`PrivateEngine::start`]; returns what it removed.
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
        if (old_enough || owner_gone(&path))
            && engine_processes(&name).is_empty()
            && mounts_under(&path).is_empty()
            && std::fs::remove_dir_all(&path).is_ok()
        {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
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
    fn daemon_json_has_cdi_dirs_and_runtimes() {
        let mut opts = EngineOptions::default();
        opts.runtimes.insert(
            "nvidia".into(),
            serde_json::json!({"path": "nvidia-container-runtime"}),
        );
        let text = daemon_config(&opts, &[PathBuf::from("/tmp/cdih-x/cdi")], "cdih-x");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["features"]["cdi"], true);
        assert_eq!(v["cdi-spec-dirs"], serde_json::json!(["/tmp/cdih-x/cdi"]));
        assert_eq!(v["runtimes"]["nvidia"]["path"], "nvidia-container-runtime");
        assert_eq!(v["containerd-namespace"], "cdih-x");
        let plain = daemon_config(&EngineOptions::default(), &[], "m");
        assert!(!plain.contains("runtimes"));
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
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

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
    fn tails_are_bounded() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn own_process_is_never_an_engine_process() {
        // The marker is in no process's arguments: nothing may be found.
        assert!(engine_processes("cdih-no-such-marker-zz9").is_empty());
    }
}
