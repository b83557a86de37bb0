//! The Docker engine as the checks see it: a bollard client in which every call has
//! a timeout, every container is labelled with the run's id and removed again, and
//! engine errors become typed errors with a fix hint.
//!
//! The CLI's `docker info` text is parsed here too, because the seed write-up checks
//! the machine with `docker info | grep -i cdi`, and that text is what users look at.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

/// Label every container the harness creates carries; its value is the run id.
pub const RUN_LABEL: &str = "io.cdi-harness.run";
/// Label naming the scenario and check that created the container.
pub const CHECK_LABEL: &str = "io.cdi-harness.check";
/// Label naming the process that created the container (`<hostname>/<pid>`), so that a
/// later run can tell a dead run's leftovers (owner gone) from a live run's containers.
pub const OWNER_LABEL: &str = "io.cdi-harness.owner";
/// The [`Endpoint::source`] of the `sim` backend's private engine: errors about it must
/// not send the user to the machine's own Docker service.
pub const PRIVATE_ENGINE_SOURCE: &str = "the private simulated engine";

/// This process as [`OWNER_LABEL`] names it: `<hostname>/<pid>`.
pub fn owner_value() -> String {
    format!("{}/{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Whether the process `pid` of this machine is gone (no such process; a zombie counts
/// as gone). A process of another user is alive: kill(2) answers EPERM for it.
pub fn process_gone(pid: u32) -> bool {
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    // kill(2) with signal 0 only checks whether the process exists.
    if rustix::process::test_kill_process(target) == Err(rustix::io::Errno::SRCH) {
        return true;
    }
    // It exists (kill succeeded, or EPERM: another user's): gone only if a zombie.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Time limits for engine calls. Every call is bounded: a hung engine becomes a failed
/// check with a message, never a hung harness.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Ping, info, create, start, remove, logs.
    pub call: Duration,
    /// From container start until it exits.
    pub container: Duration,
    /// Pulling a missing image.
    pub pull: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: Duration::from_secs(20),
            container: Duration::from_secs(60),
            pull: Duration::from_secs(600),
        }
    }
}

/// Why the engine could not be used. Each message ends with what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The socket does not exist.
    #[error("no Docker engine socket at {path}: {hint}")]
    NoSocket {
        /// The socket path.
        path: PathBuf,
        /// What to do.
        hint: String,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on {path}: add the user to the docker group (NixOS: users.extraGroups.docker.members) and log in again, or run as root"
    )]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The engine did not answer in time.
    #[error(
        "the engine at {endpoint} stopped answering: it did not answer `{call}` within {secs} s: {hint}"
    )]
    Timeout {
        /// Where.
        endpoint: String,
        /// Which call.
        call: String,
        /// The limit.
        secs: u64,
        /// What to do (differs for the machine's engine and the harness's private one).
        hint: String,
    },
    /// Nothing listens on the socket (ECONNREFUSED): the engine is not running.
    #[error(
        "the engine at {endpoint} refused the connection (`{call}`): it is not running: {hint}"
    )]
    Refused {
        /// Where.
        endpoint: String,
        /// Which call.
        call: String,
        /// What to do.
        hint: String,
    },
    /// The engine closed the connection without an answer (reset, EOF): it crashed,
    /// was killed or restarted during the call.
    #[error(
        "the engine at {endpoint} closed the connection during `{call}` without an answer: it stopped or crashed: {hint}"
    )]
    ConnectionLost {
        /// Where.
        endpoint: String,
        /// Which call.
        call: String,
        /// What to do.
        hint: String,
    },
    /// The run was interrupted (Ctrl-C, SIGTERM, SIGHUP) while the call was in flight;
    /// the call was abandoned.
    #[error("`{call}` was cancelled: the run was interrupted")]
    Interrupted {
        /// Which call.
        call: String,
    },
    /// The engine refused a request.
    #[error("{call}: {message}")]
    Daemon {
        /// Which call.
        call: String,
        /// The engine's message, verbatim.
        message: String,
        /// HTTP status code.
        status: u16,
    },
    /// Transport or protocol failure.
    #[error("{call} at {endpoint} failed: {message}: {hint}")]
    Transport {
        /// Where.
        endpoint: String,
        /// Which call.
        call: String,
        /// What bollard said.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The engine's wait for a container ended without an exit status.
    #[error(
        "the engine at {endpoint} ended its wait for container {id} without an exit status: the engine stopped or restarted under it: {hint}"
    )]
    NoExitCode {
        /// Where.
        endpoint: String,
        /// The container.
        id: String,
        /// What to do.
        hint: String,
    },
    /// The `docker` CLI could not be run.
    #[error("cannot run the docker CLI {cli}: {message}")]
    Cli {
        /// The binary.
        cli: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Where to reach an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///path` or `tcp://host:port`.
    pub uri: String,
    /// How it was chosen, for messages (`DOCKER_HOST`, `rootless socket`, …).
    pub source: String,
}

impl Endpoint {
    /// The engine of the `host` backend: `DOCKER_HOST` when set, else the rootless
    /// socket when the machine makes it the default (`setSocketVariable = true`), else
    /// the rootful socket.
    pub fn for_host(rootless_default: bool) -> Endpoint {
        if let Ok(h) = std::env::var("DOCKER_HOST") {
            if !h.is_empty() {
                return Endpoint {
                    uri: h,
                    source: "DOCKER_HOST".into(),
                };
            }
        }
        if rootless_default {
            let dir = std::env::var("XDG_RUNTIME_DIR")
                .unwrap_or_else(|_| format!("/run/user/{}", current_uid()));
            return Endpoint {
                uri: format!("unix://{dir}/docker.sock"),
                source:
                    "the rootless socket (virtualisation.docker.rootless.setSocketVariable = true)"
                        .into(),
            };
        }
        Endpoint {
            uri: "unix:///var/run/docker.sock".into(),
            source: "the rootful socket".into(),
        }
    }

    /// A unix socket path.
    pub fn unix(path: &Path, source: &str) -> Endpoint {
        Endpoint {
            uri: format!("unix://{}", path.display()),
            source: source.into(),
        }
    }

    fn socket_path(&self) -> Option<PathBuf> {
        self.uri.strip_prefix("unix://").map(PathBuf::from)
    }
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// The CDI-related facts of `GET /info`, plus what the pitfall checks need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineInfo {
    /// Server version, e.g. `28.5.2+dfsg4`.
    pub server_version: String,
    /// `CDISpecDirs`; empty when CDI is off.
    pub cdi_spec_dirs: Vec<String>,
    /// `DiscoveredDevices` ids with source `cdi`; `None` when the engine has no such field
    /// (engines before 28.2).
    pub discovered_devices: Option<Vec<String>>,
    /// Every warning; CDI ones start with `CDI:`.
    pub warnings: Vec<String>,
    /// Runtime name → path.
    pub runtimes: Vec<(String, String)>,
    /// Default runtime.
    pub default_runtime: String,
    /// Whether the engine runs rootless (`name=rootless` in its security options).
    pub rootless: bool,
}

impl EngineInfo {
    /// The warnings the engine's CDI cache produced (refused or conflicting spec files).
    pub fn cdi_warnings(&self) -> Vec<&str> {
        self.warnings
            .iter()
            .map(|w| w.as_str())
            .filter(|w| w.starts_with("CDI:") || w.contains("CDI spec"))
            .collect()
    }

    /// (major, minor) of the server version, if it parses.
    pub fn version(&self) -> Option<(u32, u32)> {
        parse_version(&self.server_version)
    }
}

/// Parses the leading `major.minor` of an engine version like `28.5.2+dfsg4`.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// One container to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Image reference.
    pub image: String,
    /// Command.
    pub command: Vec<String>,
    /// CDI devices (`--device nvidia.com/gpu=0`).
    pub cdi_devices: Vec<String>,
    /// `--gpus` value.
    pub gpus: Option<String>,
    /// `--runtime` value.
    pub runtime: Option<String>,
    /// `<scenario>::<check>`, recorded as a label.
    pub check: String,
}

/// What happened to a container run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// It ran; the command exited with `exit_code`.
    Exited {
        /// Exit code.
        exit_code: i64,
        /// Standard output.
        stdout: String,
        /// Standard error.
        stderr: String,
    },
    /// The engine refused to create or start it; `message` is the engine's, verbatim
    /// (what the CLI prints after `Error response from daemon: `).
    Refused {
        /// The engine's message.
        message: String,
    },
}

/// A connected engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    endpoint: Endpoint,
    timeouts: Timeouts,
    run_id: String,
    /// Cancels every call in flight at once (the run's Ctrl-C); see [`Engine::cancelled_by`].
    cancel: tokio_util::sync::CancellationToken,
}

impl Engine {
    /// Connects, pings and negotiates the API version (older engines such as 26.1 speak
    /// an older API than bollard's default).
    pub async fn connect(
        endpoint: Endpoint,
        timeouts: Timeouts,
        run_id: &str,
    ) -> Result<Engine, EngineError> {
        if let Some(path) = endpoint.socket_path() {
            match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let hint = if endpoint.source == PRIVATE_ENGINE_SOURCE {
                        down_hint(&endpoint)
                    } else {
                        format!(
                            "chosen from {}; start the engine (`sudo systemctl start docker`; with enableOnBoot = false the socket unit starts it on first use) or set DOCKER_HOST",
                            endpoint.source
                        )
                    };
                    return Err(EngineError::NoSocket { path, hint });
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(EngineError::PermissionDenied { path });
                }
                _ => {}
            }
        }
        let secs = timeouts.call.as_secs().max(1);
        let docker = if endpoint.uri.starts_with("unix://") {
            Docker::connect_with_socket(&endpoint.uri, secs, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(&endpoint.uri, secs, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| EngineError::Transport {
            endpoint: endpoint.uri.clone(),
            call: "connect".into(),
            message: e.to_string(),
            hint: down_hint(&endpoint),
        })?;
        let mut engine = Engine {
            docker,
            endpoint,
            timeouts,
            run_id: run_id.to_string(),
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        engine.call("ping", engine.docker.ping()).await?;
        let negotiated = engine
            .call("version", engine.docker.clone().negotiate_version())
            .await?;
        engine.docker = negotiated;
        Ok(engine)
    }

    /// The endpoint, e.g. for the CLI's `--host`.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The raw client, for helpers (image import) that need it.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The call limits this client was made with (an image import takes the pull limit).
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The run id every container of this run is labelled with.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// This engine with its calls cancelled by `token`: once it fires, every call in
    /// flight or to come ends at once with [`EngineError::Interrupted`], so that an
    /// interrupted run never waits out a hung engine's timeouts.
    pub fn cancelled_by(mut self, token: tokio_util::sync::CancellationToken) -> Engine {
        self.cancel = token;
        self
    }

    /// A copy whose calls no interruption cancels: the cleanup after Ctrl-C uses it
    /// (under its own short deadline).
    pub fn uncancelled(&self) -> Engine {
        let mut e = self.clone();
        e.cancel = tokio_util::sync::CancellationToken::new();
        e
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// Bounds one call by the call timeout and maps its error.
    async fn call<T>(
        &self,
        name: &str,
        fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, EngineError> {
        self.bounded(name, self.timeouts.call, fut).await
    }

    async fn bounded<T>(
        &self,
        name: &str,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, EngineError> {
        let timed = tokio::time::timeout(limit, fut);
        let result = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(EngineError::Interrupted { call: name.into() }),
            r = timed => r,
        };
        match result {
            Err(_) => Err(EngineError::Timeout {
                endpoint: self.endpoint.uri.clone(),
                call: name.into(),
                secs: limit.as_secs(),
                hint: down_hint(&self.endpoint),
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_error(name, e)),
        }
    }

    fn map_error(&self, call: &str, e: bollard::errors::Error) -> EngineError {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Daemon {
                call: call.into(),
                message,
                status: status_code,
            },
            B::RequestTimeoutError => EngineError::Timeout {
                endpoint: self.endpoint.uri.clone(),
                call: call.into(),
                secs: self.timeouts.call.as_secs(),
                hint: down_hint(&self.endpoint),
            },
            other => {
                let endpoint = self.endpoint.uri.clone();
                let hint = down_hint(&self.endpoint);
                match transport_failure(&other) {
                    TransportFailure::PermissionDenied => {
                        if let Some(path) = self.endpoint.socket_path() {
                            return EngineError::PermissionDenied { path };
                        }
                    }
                    TransportFailure::NoSocket => {
                        if let Some(path) = self.endpoint.socket_path() {
                            return EngineError::NoSocket { path, hint };
                        }
                    }
                    TransportFailure::Refused => {
                        return EngineError::Refused {
                            endpoint,
                            call: call.into(),
                            hint,
                        };
                    }
                    TransportFailure::Lost => {
                        return EngineError::ConnectionLost {
                            endpoint,
                            call: call.into(),
                            hint,
                        };
                    }
                    TransportFailure::Other => {}
                }
                EngineError::Transport {
                    endpoint,
                    call: call.into(),
                    message: other.to_string(),
                    hint,
                }
            }
        }
    }

    /// `GET /info`, reduced to what the checks need.
    pub async fn info(&self) -> Result<EngineInfo, EngineError> {
        let info = self.call("info", self.docker.info()).await?;
        let discovered = info.discovered_devices.map(|list| {
            list.into_iter()
                .filter(|d| d.source.as_deref().is_none_or(|s| s == "cdi"))
                .filter_map(|d| d.id)
                .collect::<Vec<_>>()
        });
        let mut runtimes: Vec<(String, String)> = info
            .runtimes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, rt)| (name, rt.path.unwrap_or_default()))
            .collect();
        runtimes.sort();
        let rootless = info
            .security_options
            .unwrap_or_default()
            .iter()
            .any(|o| o.split(',').any(|kv| kv == "name=rootless"));
        let server_version = info.server_version.unwrap_or_default();
        // Engines before 28.2 (API 1.50) have no DiscoveredDevices; bollard then reads
        // an absent field, which must not be mistaken for "no devices".
        let discovered = match parse_version(&server_version) {
            Some(v) if v < (28, 2) => None,
            _ => Some(discovered.unwrap_or_default()),
        };
        Ok(EngineInfo {
            server_version,
            cdi_spec_dirs: info.cdi_spec_dirs.unwrap_or_default(),
            discovered_devices: discovered,
            warnings: info.warnings.unwrap_or_default(),
            runtimes,
            default_runtime: info.default_runtime.unwrap_or_default(),
            rootless,
        })
    }

    /// Whether the image is present locally.
    pub async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        match self
            .call("inspect image", self.docker.inspect_image(image))
            .await
        {
            Ok(_) => Ok(true),
            Err(EngineError::Daemon { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pulls an image, bounded by the pull timeout.
    pub async fn pull(&self, image: &str) -> Result<(), EngineError> {
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let docker = self.docker.clone();
        let fut = async move {
            let mut stream = docker.create_image(Some(opts), None, None);
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok(())
        };
        self.bounded("pull", self.timeouts.pull, fut).await
    }

    /// The create body of a labelled container for `req` (network none, its devices).
    fn create_body(&self, req: &RunRequest) -> ContainerCreateBody {
        let mut device_requests = Vec::new();
        if !req.cdi_devices.is_empty() {
            // What the CLI sends for `--device vendor.com/class=name`.
            device_requests.push(DeviceRequest {
                driver: Some("cdi".into()),
                device_ids: Some(req.cdi_devices.clone()),
                ..Default::default()
            });
        }
        if let Some(g) = &req.gpus {
            device_requests.push(gpus_request(g));
        }
        let labels = HashMap::from([
            (RUN_LABEL.to_string(), self.run_id.clone()),
            (CHECK_LABEL.to_string(), req.check.clone()),
            (OWNER_LABEL.to_string(), owner_value()),
        ]);
        ContainerCreateBody {
            image: Some(req.image.clone()),
            cmd: Some(req.command.clone()),
            labels: Some(labels),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            host_config: Some(HostConfig {
                device_requests: if device_requests.is_empty() {
                    None
                } else {
                    Some(device_requests)
                },
                runtime: req.runtime.clone(),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs one container to completion and removes it, whatever happens. An engine
    /// refusal (the `--gpus` and unresolvable-device errors) is an outcome, not an error.
    pub async fn run(&self, req: &RunRequest) -> Result<RunOutcome, EngineError> {
        let body = self.create_body(req);
        // Not cancelled: a create abandoned mid-flight would still create the
        // container after the cleanup looked, and nobody would remove it.
        let settle = self.uncancelled();
        let created = match settle
            .call(
                "create container",
                settle.docker.create_container(None, body),
            )
            .await
        {
            Ok(c) => c,
            Err(EngineError::Daemon {
                message, status, ..
            }) if status != 404 || !message.contains("No such image") => {
                return Ok(RunOutcome::Refused { message });
            }
            Err(e) => return Err(e),
        };
        let id = created.id;
        let result = self.start_wait_logs(&id).await;
        let removed = self.remove(&id).await;
        let outcome = result?;
        removed?;
        Ok(outcome)
    }

    async fn start_wait_logs(&self, id: &str) -> Result<RunOutcome, EngineError> {
        match self
            .call("start container", self.docker.start_container(id, None))
            .await
        {
            Ok(()) => {}
            Err(EngineError::Daemon { message, .. }) => return Ok(RunOutcome::Refused { message }),
            Err(e) => return Err(e),
        }
        let docker = self.docker.clone();
        let wait_id = id.to_string();
        let exit_code = self
            .bounded("wait container", self.timeouts.container, async move {
                let mut stream = docker.wait_container(&wait_id, None);
                let mut code = None;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(r) => code = Some(r.status_code),
                        Err(bollard::errors::Error::DockerContainerWaitError {
                            code: c, ..
                        }) => code = Some(c),
                        Err(e) => return Err(e),
                    }
                }
                Ok(code)
            })
            .await?;
        // A wait that ends without a status is not an exit 0: the engine went away (or
        // restarted) under the container, and nothing says the command succeeded.
        let Some(exit_code) = exit_code else {
            return Err(EngineError::NoExitCode {
                endpoint: self.endpoint.uri.clone(),
                id: id.to_string(),
                hint: down_hint(&self.endpoint),
            });
        };
        let docker = self.docker.clone();
        let log_id = id.to_string();
        let (stdout, stderr) = self
            .call("container logs", async move {
                let opts = LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build();
                let mut stream = docker.logs(&log_id, Some(opts));
                let (mut out, mut err) = (String::new(), String::new());
                while let Some(item) = stream.next().await {
                    match item? {
                        bollard::container::LogOutput::StdErr { message } => {
                            err.push_str(&String::from_utf8_lossy(&message))
                        }
                        other => out.push_str(&String::from_utf8_lossy(&other.into_bytes())),
                    }
                }
                Ok((out, err))
            })
            .await?;
        Ok(RunOutcome::Exited {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Creates and starts a labelled container that keeps running (`docker run -d
    /// --restart always --stop-timeout 1 …` when `restart_always`), without waiting for
    /// it. `Ok(Err(message))`: the engine refused to create or start it (a created
    /// container is removed again). The caller removes it; the label sweep is the
    /// safety net.
    pub async fn start_detached(
        &self,
        req: &RunRequest,
        restart_always: bool,
        stop_timeout: Option<i64>,
    ) -> Result<Result<String, String>, EngineError> {
        let mut body = self.create_body(req);
        body.stop_timeout = stop_timeout;
        if restart_always && let Some(hc) = body.host_config.as_mut() {
            hc.restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            });
        }
        // Not cancelled: a create abandoned mid-flight would still create the
        // container after the cleanup looked, and nobody would remove it.
        let settle = self.uncancelled();
        let id = match settle
            .call(
                "create container",
                settle.docker.create_container(None, body),
            )
            .await
        {
            Ok(c) => c.id,
            Err(EngineError::Daemon {
                message, status, ..
            }) if status != 404 || !message.contains("No such image") => {
                return Ok(Err(message));
            }
            Err(e) => return Err(e),
        };
        match self
            .call("start container", self.docker.start_container(&id, None))
            .await
        {
            Ok(()) => Ok(Ok(id)),
            Err(e) => {
                let _ = self.remove(&id).await;
                match e {
                    EngineError::Daemon { message, .. } => Ok(Err(message)),
                    other => Err(other),
                }
            }
        }
    }

    /// A container's state as `docker inspect` shows it.
    pub async fn container_state(&self, id: &str) -> Result<ContainerStateFacts, EngineError> {
        let c = self
            .call("inspect container", self.docker.inspect_container(id, None))
            .await?;
        let st = c.state.unwrap_or_default();
        Ok(ContainerStateFacts {
            status: st.status.map(|s| s.to_string()).unwrap_or_default(),
            running: st.running.unwrap_or(false),
            restarting: st.restarting.unwrap_or(false),
            exit_code: st.exit_code.unwrap_or(0),
            error: st.error.unwrap_or_default(),
            started_at: st.started_at.unwrap_or_default(),
            restart_count: c.restart_count.unwrap_or(0),
        })
    }

    /// A container's whole log so far (stdout and stderr), without following it.
    pub async fn container_logs(&self, id: &str) -> Result<String, EngineError> {
        let docker = self.docker.clone();
        let log_id = id.to_string();
        self.call("container logs", async move {
            let opts = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build();
            let mut stream = docker.logs(&log_id, Some(opts));
            let mut out = String::new();
            while let Some(item) = stream.next().await {
                out.push_str(&String::from_utf8_lossy(&item?.into_bytes()));
            }
            Ok(out)
        })
        .await
    }

    /// Force-removes one container (and its anonymous volumes); a container already gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        // Not cancelled: removal is the cleanup an interruption must still get
        // (bounded by the call timeout and by the interrupted run's own deadline).
        let settle = self.uncancelled();
        match settle
            .call(
                "remove container",
                settle.docker.remove_container(id, Some(opts)),
            )
            .await
        {
            Ok(()) | Err(EngineError::Daemon { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Ids of every container (running or not) labelled with this run's id.
    pub async fn labelled_containers(&self) -> Result<Vec<String>, EngineError> {
        let list = self
            .containers_labelled(&format!("{RUN_LABEL}={}", self.run_id))
            .await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Every container (running or not) matching a `label` filter (`key` or `key=value`).
    async fn containers_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.call("list containers", self.docker.list_containers(Some(opts)))
            .await
    }

    /// Removes the containers that harness runs which died (SIGKILL, OOM, a crash) left
    /// on this engine: labelled by this harness, owned ([`OWNER_LABEL`]) by a process of
    /// this machine that is gone, and created more than `grace` ago. Containers of live
    /// runs, of other machines, or without an owner label are left alone. Returns what
    /// it removed.
    pub async fn remove_dead_runs(
        &self,
        grace: Duration,
    ) -> Result<Vec<DeadRunContainer>, EngineError> {
        let list = self.containers_labelled(RUN_LABEL).await?;
        let host = format!("{}/", hostname());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut removed = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let Some(owner) = labels.get(OWNER_LABEL) else {
                continue;
            };
            let Some(pid) = owner
                .strip_prefix(&host)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let created = u64::try_from(c.created.unwrap_or(0)).unwrap_or(0);
            let old_enough = now.saturating_sub(created) >= grace.as_secs();
            if pid == std::process::id() || !old_enough || !process_gone(pid) {
                continue;
            }
            let Some(id) = c.id else { continue };
            self.remove(&id).await?;
            removed.push(DeadRunContainer {
                id,
                check: labels.get(CHECK_LABEL).cloned().unwrap_or_default(),
                owner: owner.clone(),
            });
        }
        Ok(removed)
    }

    /// Removes every container of this run: the safety net after a timeout, a panic or
    /// Ctrl-C interrupted a run between create and remove. Returns how many it removed.
    pub async fn remove_labelled(&self) -> Result<usize, EngineError> {
        let ids = self.labelled_containers().await?;
        for id in &ids {
            self.remove(id).await?;
        }
        Ok(ids.len())
    }
}

/// What a transport error (bollard's "error in the hyper legacy client …") was, found in
/// its chain of sources: the I/O error's kind where there is one, hyper's words else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransportFailure {
    Refused,
    NoSocket,
    PermissionDenied,
    /// Reset, broken pipe, or closed before the answer was complete.
    Lost,
    Other,
}

fn transport_failure(e: &(dyn std::error::Error + 'static)) -> TransportFailure {
    use std::io::ErrorKind as K;
    let mut cur = Some(e);
    let mut words = String::new();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                K::ConnectionRefused => return TransportFailure::Refused,
                K::NotFound => return TransportFailure::NoSocket,
                K::PermissionDenied => return TransportFailure::PermissionDenied,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    return TransportFailure::Lost;
                }
                _ => {}
            }
        }
        words.push_str(&format!("{err} {err:?} ").to_lowercase());
        cur = err.source();
    }
    if words.contains("connection refused") {
        TransportFailure::Refused
    } else if words.contains("no such file or directory") {
        TransportFailure::NoSocket
    } else if words.contains("permission denied") {
        TransportFailure::PermissionDenied
    } else if words.contains("connection closed before message completed")
        || words.contains("incompletemessage")
        || words.contains("connection reset")
        || words.contains("broken pipe")
        || words.contains("unexpected end of file")
    {
        TransportFailure::Lost
    } else {
        TransportFailure::Other
    }
}

/// What to do when an engine fails to answer: the machine's engine is the user's to
/// look at (systemd); the harness's private engine is not, and has its own log.
fn down_hint(endpoint: &Endpoint) -> String {
    if endpoint.source == PRIVATE_ENGINE_SOURCE {
        let dir = endpoint
            .socket_path()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/tmp/cdih-*".into());
        format!(
            "this is the harness's own private engine (under {dir}): it died, hung or was stopped; its log is {dir}/dockerd.log while the run lasts; run again, and report it if it keeps happening"
        )
    } else {
        format!(
            "check that dockerd is running (`systemctl status docker`, `journalctl -u docker`) and that the endpoint ({}) is right",
            endpoint.source
        )
    }
}

/// A container a dead harness run left, as [`Engine::remove_dead_runs`] removed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRunContainer {
    /// Its id.
    pub id: String,
    /// Its check label (`<scenario>::<check>`).
    pub check: String,
    /// Its owner label (`<hostname>/<pid>`).
    pub owner: String,
}

/// What `docker inspect` says of a container's state (the fields the checks read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerStateFacts {
    /// `created`, `running`, `restarting`, `exited`, …
    pub status: String,
    /// Whether it runs.
    pub running: bool,
    /// Whether the engine is about to restart it.
    pub restarting: bool,
    /// The last exit code.
    pub exit_code: i64,
    /// The engine's error from the last start attempt (e.g. `unresolvable CDI devices`).
    pub error: String,
    /// When it was last started (RFC 3339).
    pub started_at: String,
    /// How often the engine restarted it by its policy.
    pub restart_count: i64,
}

/// What the CLI sends for `--gpus VALUE` (`all`, `2`, `device=0,1`).
fn gpus_request(value: &str) -> DeviceRequest {
    let mut req = DeviceRequest {
        driver: Some(String::new()),
        capabilities: Some(vec![vec!["gpu".to_string()]]),
        ..Default::default()
    };
    if value == "all" {
        req.count = Some(-1);
    } else if let Some(ids) = value.strip_prefix("device=") {
        req.device_ids = Some(ids.split(',').map(|s| s.trim().to_string()).collect());
    } else if let Ok(n) = value.parse::<i64>() {
        req.count = Some(n);
    } else {
        req.count = Some(-1);
    }
    req
}

/// The CDI lines of the CLI's `docker info`, as the seed write-up greps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CliInfo {
    /// Dirs under `CDI spec directories:` (one per line on engine 28; one line on older CLIs).
    pub spec_dirs: Vec<String>,
    /// `cdi: …` lines under `Discovered Devices:`; `None` when the section is absent.
    pub devices: Option<Vec<String>>,
    /// Warning lines that mention CDI.
    pub cdi_warnings: Vec<String>,
    /// Every line of the output that matches `grep -i cdi`, for messages.
    pub grep_lines: Vec<String>,
}

/// Parses `docker info` output (stdout and stderr together).
pub fn parse_cli_info(text: &str) -> CliInfo {
    let mut info = CliInfo::default();
    #[derive(PartialEq)]
    enum Section {
        None,
        Dirs,
        Devices,
    }
    let mut section = Section::None;
    for line in text.lines() {
        if line.to_lowercase().contains("cdi") {
            info.grep_lines.push(line.trim_end().to_string());
        }
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("CDI spec directories:") {
            section = Section::Dirs;
            info.spec_dirs
                .extend(rest.split_whitespace().map(str::to_string));
            continue;
        }
        if trimmed == "Discovered Devices:" {
            section = Section::Devices;
            info.devices.get_or_insert_with(Vec::new);
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        match section {
            Section::Dirs if indent >= 2 && trimmed.starts_with('/') => {
                info.spec_dirs.push(trimmed.to_string());
                continue;
            }
            Section::Devices if indent >= 2 && trimmed.starts_with("cdi:") => {
                if let Some(list) = info.devices.as_mut() {
                    list.push(trimmed.trim_start_matches("cdi:").trim().to_string());
                }
                continue;
            }
            _ => section = Section::None,
        }
        if (trimmed.starts_with("CDI:") || trimmed.starts_with("WARNING:"))
            && trimmed.contains("CDI")
        {
            info.cdi_warnings.push(trimmed.to_string());
        }
    }
    info
}

/// Runs `docker --host ENDPOINT info` with a timeout and parses its CDI lines.
pub async fn cli_info(
    cli: &Path,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<CliInfo, EngineError> {
    let mut cmd = tokio::process::Command::new(cli);
    cmd.arg("--host").arg(&endpoint.uri).arg("info");
    cmd.env_remove("DOCKER_CONTEXT");
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| EngineError::Cli {
            cli: cli.to_path_buf(),
            message: format!(
                "`docker info` did not finish within {} s",
                timeout.as_secs()
            ),
        })?
        .map_err(|e| EngineError::Cli {
            cli: cli.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success()
        && !text.contains("CDI spec directories")
        && !text.contains("Server Version")
    {
        return Err(EngineError::Cli {
            cli: cli.to_path_buf(),
            message: format!("`docker info` exited with {}: {}", out.status, text.trim()),
        });
    }
    Ok(parse_cli_info(&text))
}

/// The `docker` CLI on PATH, if any.
pub fn find_cli() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_28: &str = "Client:\n Version:    28.2.2\n\nServer:\n Containers: 0\n CDI spec directories:\n  /etc/cdi\n  /var/run/cdi\n Discovered Devices:\n  cdi: nvidia.com/gpu=0\n  cdi: nvidia.com/gpu=all\n Swarm: inactive\n Runtimes: io.containerd.runc.v2 runc\nWARNING: IPv4 forwarding is disabled\nCDI: Error associated with spec file /x/bad.json: failed to load CDI Spec invalid CDI Spec: invalid spec, multiple device \"0\"\n";

    #[test]
    fn parses_engine_28_layout() {
        let i = parse_cli_info(INFO_28);
        assert_eq!(i.spec_dirs, vec!["/etc/cdi", "/var/run/cdi"]);
        assert_eq!(
            i.devices,
            Some(vec![
                "nvidia.com/gpu=0".to_string(),
                "nvidia.com/gpu=all".to_string()
            ])
        );
        assert_eq!(i.cdi_warnings.len(), 1);
        assert!(i.cdi_warnings[0].contains("/x/bad.json"));
        assert!(
            i.grep_lines
                .iter()
                .any(|l| l.contains("cdi: nvidia.com/gpu=0"))
        );
    }

    #[test]
    fn parses_one_line_dirs_and_missing_devices_section() {
        // The seed write-up shows the dirs on one line; engine 26.1 prints no devices section.
        let i = parse_cli_info(" CDI spec directories: /etc/cdi /run/cdi\n Swarm: inactive\n");
        assert_eq!(i.spec_dirs, vec!["/etc/cdi", "/run/cdi"]);
        assert_eq!(i.devices, None);
    }

    #[test]
    fn version_parsing() {
        assert_eq!(parse_version("28.5.2+dfsg4"), Some((28, 5)));
        assert_eq!(parse_version("26.1.5+dfsg1"), Some((26, 1)));
        assert_eq!(parse_version("dev"), None);
    }

    #[test]
    fn gpus_all_matches_cli_request() {
        let r = gpus_request("all");
        assert_eq!(r.count, Some(-1));
        assert_eq!(r.driver.as_deref(), Some(""));
        assert_eq!(r.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert_eq!(
            gpus_request("device=0,1").device_ids,
            Some(vec!["0".into(), "1".into()])
        );
    }

    #[test]
    fn host_endpoint_prefers_docker_host_then_rootless() {
        // Reads the process environment: only assert the branch that does not depend on it.
        if std::env::var_os("DOCKER_HOST").is_none() {
            let e = Endpoint::for_host(false);
            assert_eq!(e.uri, "unix:///var/run/docker.sock");
            let r = Endpoint::for_host(true);
            assert!(
                r.uri.ends_with("/docker.sock") && r.uri != e.uri,
                "{}",
                r.uri
            );
        }
    }
}

/// The engine's wait ending without a status, against a stand-in API server: a
/// container whose wait stream ends empty (the engine died or restarted under it) is
/// an error, never an exit 0.
#[cfg(test)]
mod wait_tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;

    /// Answers the calls `Engine::connect` and `Engine::run` make; `wait` with an empty
    /// body, as a connection cut by a dying engine leaves it.
    fn serve(listener: UnixListener) {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let path = request.split_whitespace().nth(1).unwrap_or("");
                    let (status, body) = if path.ends_with("/_ping") {
                        ("200 OK", "OK".to_string())
                    } else if path.ends_with("/version") {
                        (
                            "200 OK",
                            r#"{"Version":"28.5.2","ApiVersion":"1.51","MinAPIVersion":"1.24"}"#
                                .to_string(),
                        )
                    } else if path.contains("/containers/create") {
                        (
                            "201 Created",
                            r#"{"Id":"c0ffee","Warnings":[]}"#.to_string(),
                        )
                    } else if path.contains("/start") {
                        ("204 No Content", String::new())
                    } else if path.contains("/wait") {
                        ("200 OK", String::new())
                    } else {
                        ("204 No Content", String::new())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if reader.get_mut().write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    }

    #[test]
    fn a_wait_without_exit_status_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        std::thread::spawn(move || serve(listener));
        let rt = crate::rt::current_thread().expect("runtime");
        let outcome = rt.block_on(async {
            let engine = Engine::connect(Endpoint::unix(&socket, "test"), Timeouts::default(), "t")
                .await
                .expect("the stand-in engine answers");
            engine
                .run(&RunRequest {
                    image: "busybox".into(),
                    command: vec!["true".into()],
                    cdi_devices: Vec::new(),
                    gpus: None,
                    runtime: None,
                    check: "t::c".into(),
                })
                .await
        });
        match outcome {
            Err(e @ EngineError::NoExitCode { .. }) => {
                assert!(e.to_string().contains("without an exit status"), "{e}");
            }
            other => panic!("a wait without a status must be an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_socket_says_so_with_advice_for_its_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("d.sock");
        // The socket file stays, nobody listens: ECONNREFUSED.
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
        let timeouts = Timeouts {
            call: Duration::from_secs(2),
            ..Timeouts::default()
        };
        let private = Engine::connect(Endpoint::unix(&sock, PRIVATE_ENGINE_SOURCE), timeouts, "t")
            .await
            .expect_err("refused");
        let text = private.to_string();
        assert!(
            matches!(private, EngineError::Refused { .. }),
            "{private:?}"
        );
        assert!(text.contains("refused the connection (`ping`)"), "{text}");
        assert!(text.contains("the harness's own private engine"), "{text}");
        for wrong in ["systemctl", "docker -H", "hyper", "DOCKER_HOST"] {
            assert!(!text.contains(wrong), "{wrong} in {text}");
        }
        let machine = Engine::connect(Endpoint::unix(&sock, "the rootful socket"), timeouts, "t")
            .await
            .expect_err("refused");
        assert!(
            machine.to_string().contains("systemctl status docker"),
            "{machine}"
        );
    }

    #[test]
    fn a_gone_process_is_told_from_a_live_one() {
        assert!(!process_gone(std::process::id()));
        assert!(!process_gone(1), "init is alive (EPERM counts as alive)");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(process_gone(pid));
        assert!(owner_value().ends_with(&format!("/{}", std::process::id())));
    }
}
