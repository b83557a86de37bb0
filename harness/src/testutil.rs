//! Helpers shared by the unit tests.

/// A test that cannot run here (a program missing, not root) fails with `reason`,
/// because a test that did not run must not be counted as passed; with
/// `CDI_HARNESS_ALLOW_SKIP=1`, the opt-out for machines that knowingly lack it, it
/// prints `skipped: <reason>` and returns, and the caller returns too. The same rule as
/// the engine tests (`harness/tests/sim_engine.rs`).
pub(crate) fn cannot_run(reason: &str) {
    if std::env::var_os("CDI_HARNESS_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        return;
    }
    panic!("cannot run this test here: {reason} (set CDI_HARNESS_ALLOW_SKIP=1 to skip knowingly)");
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The text of `harness/tests/fixtures/<rel>` (recorded outputs of real machines).
pub(crate) fn fixture(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

use crate::engine::EngineInfo;
use crate::gpu::{GpuError, Inventory};
use crate::host::{FileInfo, HostError, HostSource, UserInfo};

/// A machine for the backend choice and `scenario init`: NVML's answer, the
/// environment, which sockets exist and what `docker info` says on them; user `ryan`
/// (uid 1000), in a `docker` group with `alice`.
pub(crate) struct FakeMachine {
    /// What NVML answers.
    pub(crate) gpus: Result<Inventory, GpuError>,
    /// The environment.
    pub(crate) env: BTreeMap<String, String>,
    /// The sockets that exist (and answer `docker info`).
    pub(crate) sockets: Vec<PathBuf>,
    /// What `docker info` answers on them.
    pub(crate) engine: Result<EngineInfo, String>,
}

impl FakeMachine {
    /// A rootful engine at /run/docker.sock, CDI on or off.
    pub(crate) fn new(gpus: Result<Inventory, GpuError>, cdi: bool) -> FakeMachine {
        FakeMachine {
            gpus,
            env: BTreeMap::new(),
            sockets: vec![PathBuf::from("/run/docker.sock")],
            engine: Ok(EngineInfo {
                server_version: "28.5.2".into(),
                cdi_spec_dirs: if cdi {
                    vec!["/etc/cdi".into(), "/var/run/cdi".into()]
                } else {
                    Vec::new()
                },
                ..Default::default()
            }),
        }
    }
}

impl HostSource for FakeMachine {
    fn systemctl_show(&self, _: &str, _: &[&str]) -> Result<String, HostError> {
        Err(HostError::Missing {
            command: "systemctl".into(),
            message: "not in this test".into(),
        })
    }
    fn journal_tail(&self, _: &str, _: u32) -> Result<String, HostError> {
        Ok(String::new())
    }
    fn file_info(&self, path: &Path) -> Option<FileInfo> {
        self.sockets.iter().any(|s| s == path).then(|| FileInfo {
            path: path.to_path_buf(),
            is_dir: false,
            is_socket: true,
            uid: 0,
            gid: 0,
            mode: 0o140660,
            mtime: None,
        })
    }
    fn list_dir(&self, _: &Path) -> Vec<PathBuf> {
        Vec::new()
    }
    fn read_to_string(&self, path: &Path) -> Result<String, HostError> {
        if path == Path::new("/etc/group") {
            return Ok("root:x:0:\ndocker:x:131:ryan,alice\nusers:x:100:\n".into());
        }
        Err(HostError::Read {
            path: path.to_path_buf(),
            message: "not in this test".into(),
        })
    }
    fn boot_time(&self) -> Option<std::time::SystemTime> {
        None
    }
    fn user(&self) -> UserInfo {
        UserInfo {
            uid: 1000,
            name: "ryan".into(),
            ..Default::default()
        }
    }
    fn env(&self, key: &str) -> Option<String> {
        self.env.get(key).cloned()
    }
    fn docker_info(&self, socket: &Path) -> Result<EngineInfo, String> {
        if self.sockets.iter().any(|s| s == socket) {
            self.engine.clone()
        } else {
            Err(format!("{}: connection refused", socket.display()))
        }
    }
    fn gpus(&self) -> Result<Inventory, GpuError> {
        self.gpus.clone()
    }
    fn run_fix(&self, _: &[&str]) -> Result<String, HostError> {
        unreachable!("never called")
    }
}
