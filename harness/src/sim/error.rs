//! The one error type of the `sim` backend.
//!
//! The simulation is what a newcomer runs first, on a machine the harness knows nothing
//! about, so every variant says what failed *and* what to do about it: the message is
//! meant to be printed as is.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while preparing or running the simulated GPU engine.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file or directory operation failed; `what` names the operation and the path.
    #[error("{what}: {source} (check that the path is writable and the disk is not full)")]
    Io {
        /// The operation and the path it was applied to.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The private engine needs root: it mounts overlays and creates device nodes.
    #[error(
        "the simulated engine must run as root (effective uid is {euid}): dockerd mounts \
         overlay filesystems and creates device nodes; rerun the harness with sudo, or use \
         the `host` backend against an engine that is already running"
    )]
    NotRoot {
        /// The effective user id the harness runs with.
        euid: u32,
    },

    /// The rootless engine cannot be set up on this machine (a missing user, subordinate
    /// id range, program, or a file the engine's user cannot read): checked before
    /// anything starts, because rootlesskit's own errors name none of these causes.
    #[error("cannot start the rootless private engine: {problem}\nfix: {fix}")]
    Rootless {
        /// What is missing or wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },

    /// No CDI-capable dockerd was found in any of the places searched.
    #[error(
        "no CDI-capable dockerd (version 25 or later) found; tried:\n{}\nfix: run \
         `.ci/install-engine` (unpacks Debian's docker.io into \
         /opt/cdi-harness/engines/unstable), or point CDI_HARNESS_DOCKERD at a dockerd \
         25 or later",
        .tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n")
    )]
    DockerdNotFound {
        /// One line per place searched, with the reason it did not qualify.
        tried: Vec<String>,
    },

    /// A program dockerd needs (containerd, its shim, runc) is not on the PATH it gets.
    #[error("`{tool}` not found on the PATH given to dockerd ({path}); {hint}")]
    MissingTool {
        /// The program that is missing.
        tool: String,
        /// The PATH that was searched.
        path: String,
        /// How to install it.
        hint: String,
    },

    /// dockerd did not come up: it exited during start-up, or never answered `/_ping`
    /// in time (then it was stopped). Boxed: the details are large.
    #[error("{0}")]
    EngineStart(Box<EngineStartFailure>),

    /// Stopping the engine left something behind.
    #[error(
        "stopping the private engine in {root} left something behind: {detail}; clean up \
         by hand (`ps -ef | grep {marker}`, `umount` what `grep {marker} /proc/mounts` \
         lists, then `rm -rf {root}`)"
    )]
    Cleanup {
        /// The engine's temporary directory.
        root: PathBuf,
        /// The unique marker in the engine's paths and process arguments.
        marker: String,
        /// What is left.
        detail: String,
    },

    /// [`super::PrivateEngine::restart`] is not available for this engine.
    #[error("{reason}")]
    RestartUnsupported {
        /// Why, e.g. the engine is rootless.
        reason: String,
    },

    /// The engine had already exited when the check came to restart it: it died on its
    /// own, and restarting it would hide that.
    #[error(
        "the private engine had died before the harness restarted it ({status}): an engine \
         that dies on its own is a failure, not a restart; its log ends: {log_tail}"
    )]
    DiedBeforeRestart {
        /// How it exited.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },

    /// Restarting the private engine failed before it was started again.
    #[error(
        "restarting the private engine failed: {detail}; `stop` (or dropping the engine) \
         still removes everything it started"
    )]
    Restart {
        /// What went wrong.
        detail: String,
    },

    /// No busybox binary was found to build the test image from.
    #[error(
        "no busybox found (tried {}); install Debian's `busybox-static` package \
         (`apt-get install busybox-static`) or run `.ci/install-engine`",
        .tried.join(", ")
    )]
    BusyboxNotFound {
        /// The places searched.
        tried: Vec<String>,
    },

    /// The busybox found is dynamically linked, so it would not run in an empty image.
    #[error(
        "{path} is dynamically linked ({detail}); the test image has no libc, so it needs a \
         static busybox: install Debian's `busybox-static` package (`apt-get install \
         busybox-static`), which replaces /bin/busybox with a static build"
    )]
    BusyboxDynamic {
        /// The binary that was refused.
        path: PathBuf,
        /// Why it was judged dynamic.
        detail: String,
    },

    /// The engine refused or failed the image import.
    #[error(
        "importing the test image {reference} failed: {detail}; the harness's private \
         engine died or refused it: check its dockerd.log (in its /tmp/cdih-* directory) \
         and that /tmp has space"
    )]
    Import {
        /// The image reference that was being created.
        reference: String,
        /// The engine's error.
        detail: String,
    },

    /// The image import did not finish in time.
    #[error(
        "importing the test image {reference} did not finish within {timeout:?}; the \
         engine may be overloaded or stuck: look at its log (`PrivateEngine::log_tail`)"
    )]
    ImportTimeout {
        /// The image reference that was being created.
        reference: String,
        /// The limit that passed.
        timeout: Duration,
    },

    /// A simulated GPU description cannot be written into the inventory.
    #[error(
        "simulated GPU {index} cannot be written to the inventory: {detail}; use names and \
         ids without tabs or line breaks (or build the list with `sim_gpus`)"
    )]
    InvalidGpu {
        /// The GPU's index.
        index: u32,
        /// What is wrong with it.
        detail: String,
    },

    /// Connecting a Docker API client to the private engine failed.
    #[error(
        "could not connect a Docker client to {host}: {detail}; the engine may have \
         stopped: look at its log (`PrivateEngine::log_tail`)"
    )]
    Client {
        /// The `DOCKER_HOST` value.
        host: String,
        /// The client's error.
        detail: String,
    },
}

/// Why the private dockerd did not come up, with what is needed to fix or reproduce it.
#[derive(Debug, Clone)]
pub struct EngineStartFailure {
    /// dockerd's exit status as text, or `None` if it was still running at the timeout.
    pub exit_status: Option<String>,
    /// How long the harness waited for `/_ping`.
    pub waited: Duration,
    /// The socket that was polled.
    pub socket: PathBuf,
    /// The log line that says why (the last error), or a note that there was none.
    pub cause: String,
    /// The full command line, to reproduce by hand.
    pub command: String,
    /// The last lines dockerd logged, without its info and debug entries.
    pub log_tail: String,
    /// What to do about it.
    pub hint: String,
}

impl std::fmt::Display for EngineStartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.exit_status {
            Some(status) => write!(
                f,
                "dockerd exited during start-up ({status}): {}",
                self.cause
            )?,
            None => write!(
                f,
                "dockerd did not answer /_ping on {} within {:?} (last error in its log: {})",
                self.socket.display(),
                self.waited,
                self.cause
            )?,
        }
        write!(
            f,
            "\ncommand: {}\nlast warnings and errors in its log:\n{}\nhint: {}",
            self.command, self.log_tail, self.hint
        )
    }
}

impl SimError {
    /// Wraps an I/O error with the operation and path it came from.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SimError::Io {
            what: what.into(),
            source,
        }
    }
}
