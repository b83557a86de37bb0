//! Probes of the machine itself: the CDI generator's systemd unit, the spec files with
//! their owner and mode, the Docker daemon's effective configuration, its sockets and
//! whether this user may use them.
//!
//! These are the things the write-up's Troubleshooting section looks at by hand
//! (`systemctl status …`, `ls -la /run/cdi`, `docker info`). They sit behind
//! [`HostSource`] so that `doctor` is tested against recorded states of broken
//! machines without systemd, Docker or a GPU; [`SystemHost`] is the real machine.
//! Only stable interfaces are read: `systemctl show -p …` (key=value), `journalctl`,
//! `/proc/stat`, file metadata, and the engine API.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use wait_timeout::ChildExt;

use crate::engine::EngineInfo;
use crate::gpu::{GpuError, GpuSource, Inventory, NvmlSource};

/// The unit that writes `/run/cdi/nvidia-container-toolkit.json` on NixOS.
pub const GENERATOR_UNIT: &str = "nvidia-container-toolkit-cdi-generator";
/// The properties read from it (a stable `systemctl show` interface).
pub const UNIT_PROPERTIES: &[&str] = &[
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "ExecMainStatus",
    "ExecMainExitTimestamp",
];
/// How long one probe command may take: `doctor` must answer on a sick machine too.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a probe could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The command is not installed (no systemd, no journalctl: not a systemd host).
    #[error("{command} is not available on this machine: {message}")]
    Missing {
        /// The command.
        command: String,
        /// What the OS said.
        message: String,
    },
    /// The command ran and failed, or took longer than [`PROBE_TIMEOUT`].
    #[error("`{command}` failed: {message}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status and stderr, or the timeout.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {message} (run doctor as root to see root-only files)", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        message: String,
    },
}

/// A systemd unit's state, from `systemctl show -p …`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    /// `loaded`, or `not-found` when the unit does not exist (not NixOS, toolkit off).
    pub load_state: String,
    /// `active`, `failed`, `inactive`, …
    pub active_state: String,
    /// `exited`, `running`, `failed`, `dead`, `listening`, …
    pub sub_state: String,
    /// `success`, `exit-code`, …
    pub result: String,
    /// The main process's exit status.
    pub exec_main_status: Option<i32>,
    /// When the main process exited (as systemd prints it), when it did.
    pub exec_main_exit_timestamp: Option<String>,
}

/// `key=value` lines of `systemctl show`, as a map (values may contain `=`).
pub fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl UnitState {
    /// From `systemctl show -p LoadState,ActiveState,…` output.
    pub fn parse(text: &str) -> UnitState {
        let kv = parse_key_values(text);
        let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
        UnitState {
            load_state: get("LoadState"),
            active_state: get("ActiveState"),
            sub_state: get("SubState"),
            result: get("Result"),
            exec_main_status: kv.get("ExecMainStatus").and_then(|s| s.parse().ok()),
            exec_main_exit_timestamp: kv
                .get("ExecMainExitTimestamp")
                .filter(|s| !s.is_empty() && s.as_str() != "n/a")
                .cloned(),
        }
    }

    /// Whether the unit does not exist on this machine.
    pub fn absent(&self) -> bool {
        self.load_state == "not-found"
    }

    /// A oneshot that did its job: `active (exited)` with status 0.
    pub fn oneshot_ok(&self) -> bool {
        self.active_state == "active"
            && self.sub_state == "exited"
            && self.exec_main_status.unwrap_or(0) == 0
    }

    /// `active (exited), status 0, exited Thu 2026-11-26 13:20:01 UTC`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({})", self.active_state, self.sub_state);
        if !self.result.is_empty() && self.result != "success" {
            s.push_str(&format!(", result {}", self.result));
        }
        if let Some(st) = self.exec_main_status {
            s.push_str(&format!(", status {st}"));
        }
        if let Some(t) = &self.exec_main_exit_timestamp {
            s.push_str(&format!(", exited {t}"));
        }
        s
    }
}

/// A file's metadata, as `ls -la` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileInfo {
    /// The path.
    pub path: PathBuf,
    /// A directory?
    pub is_dir: bool,
    /// A unix socket?
    pub is_socket: bool,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (`0o644`).
    pub mode: u32,
    /// Last modification.
    #[serde(skip)]
    pub mtime: Option<SystemTime>,
}

impl FileInfo {
    /// `/run/cdi/nvidia-container-toolkit.json (0644, uid 0, gid 0)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:04o}, uid {}, gid {})",
            self.path.display(),
            self.mode & 0o7777,
            self.uid,
            self.gid
        )
    }
}

/// Who runs the doctor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserInfo {
    /// uid.
    pub uid: u32,
    /// Login name.
    pub name: String,
    /// Group names the process has (`id -Gn`).
    pub groups: Vec<String>,
    /// Their gids.
    pub gids: Vec<u32>,
}

/// The sockets a Docker client tries when `DOCKER_HOST` is not set, in its order: the
/// rootful engine's, then the rootless one of this user (`$XDG_RUNTIME_DIR`, else
/// `/run/user/<uid>`). One list for `doctor`, the backend choice and `scenario init`.
pub fn default_sockets(host: &dyn HostSource) -> [(&'static str, PathBuf); 2] {
    let runtime_dir = host
        .env("XDG_RUNTIME_DIR")
        .unwrap_or_else(|| format!("/run/user/{}", host.user().uid));
    [
        ("rootful", PathBuf::from("/run/docker.sock")),
        ("rootless", PathBuf::from(runtime_dir).join("docker.sock")),
    ]
}

/// Everything `doctor` reads from the machine.
pub trait HostSource {
    /// `systemctl show -p <props> <unit>` output.
    fn systemctl_show(&self, unit: &str, props: &[&str]) -> Result<String, HostError>;
    /// The last `lines` of `journalctl -u <unit> -n <lines> --no-pager`.
    fn journal_tail(&self, unit: &str, lines: u32) -> Result<String, HostError>;
    /// Metadata of a path, `None` when it does not exist.
    fn file_info(&self, path: &Path) -> Option<FileInfo>;
    /// Entries of a directory (empty when it is missing or unreadable).
    fn list_dir(&self, path: &Path) -> Vec<PathBuf>;
    /// A text file.
    fn read_to_string(&self, path: &Path) -> Result<String, HostError>;
    /// The current boot's time.
    fn boot_time(&self) -> Option<SystemTime>;
    /// Who runs this.
    fn user(&self) -> UserInfo;
    /// An environment variable.
    fn env(&self, key: &str) -> Option<String>;
    /// `GET /info` of the engine at this unix socket.
    fn docker_info(&self, socket: &Path) -> Result<EngineInfo, String>;
    /// The GPU inventory (NVML).
    fn gpus(&self) -> Result<Inventory, GpuError>;
    /// Runs a repair command (only `doctor --fix` calls this).
    fn run_fix(&self, argv: &[&str]) -> Result<String, HostError>;
    /// `nvidia-smi -L`: the driver's GPU list where NVML itself cannot be loaded (the
    /// GPU count of `count = "auto"` still has an answer then). None by default.
    fn nvidia_smi_list(&self) -> Result<String, HostError> {
        Err(HostError::Missing {
            command: "nvidia-smi".into(),
            message: "not probed on this host".into(),
        })
    }
}

/// The real machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemHost;

/// Runs a command with [`PROBE_TIMEOUT`], returning stdout.
fn run_cmd(argv: &[&str], timeout: Duration) -> Result<String, HostError> {
    let line = argv.join(" ");
    let Some((prog, args)) = argv.split_first() else {
        return Err(HostError::Failed {
            command: line,
            message: "empty command".into(),
        });
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("SYSTEMD_PAGER", "")
        .spawn()
        .map_err(|e| HostError::Missing {
            command: (*prog).to_string(),
            message: e.to_string(),
        })?;
    // Both pipes are drained while the command runs: a command that prints more than
    // a pipe holds (a long journal) would otherwise block until the time-out.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HostError::Failed {
                command: line,
                message: format!("no answer within {}s", timeout.as_secs()),
            });
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HostError::Failed {
                command: line,
                message: e.to_string(),
            });
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(HostError::Failed {
            command: line,
            message: format!(
                "{status}: {}",
                String::from_utf8_lossy(&stderr).trim().replace('\n', " / ")
            ),
        })
    }
}

impl HostSource for SystemHost {
    fn systemctl_show(&self, unit: &str, props: &[&str]) -> Result<String, HostError> {
        let p = props.join(",");
        run_cmd(&["systemctl", "show", "-p", &p, unit], PROBE_TIMEOUT)
    }

    fn journal_tail(&self, unit: &str, lines: u32) -> Result<String, HostError> {
        let n = lines.to_string();
        run_cmd(
            &["journalctl", "-u", unit, "-n", &n, "--no-pager"],
            PROBE_TIMEOUT,
        )
    }

    fn file_info(&self, path: &Path) -> Option<FileInfo> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(path).ok()?;
        Some(FileInfo {
            path: path.to_path_buf(),
            is_dir: m.is_dir(),
            is_socket: m.file_type().is_socket(),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
            mtime: m.modified().ok(),
        })
    }

    fn list_dir(&self, path: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    fn read_to_string(&self, path: &Path) -> Result<String, HostError> {
        std::fs::read_to_string(path).map_err(|e| HostError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn boot_time(&self) -> Option<SystemTime> {
        crate::gpu::boot_time()
    }

    fn user(&self) -> UserInfo {
        // The owner of /proc/self is this process's uid: no unsafe call needed.
        let uid = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self")
                .map(|m| m.uid())
                .unwrap_or(u32::MAX)
        };
        let name = run_cmd(&["id", "-un"], PROBE_TIMEOUT)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| std::env::var("USER").unwrap_or_default());
        let groups = run_cmd(&["id", "-Gn"], PROBE_TIMEOUT)
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let gids = run_cmd(&["id", "-G"], PROBE_TIMEOUT)
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        UserInfo {
            uid,
            name,
            groups,
            gids,
        }
    }

    fn env(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }

    fn docker_info(&self, socket: &Path) -> Result<EngineInfo, String> {
        let rt = crate::rt::current_thread()?;
        rt.block_on(async {
            let timeouts = crate::engine::Timeouts {
                call: PROBE_TIMEOUT,
                ..Default::default()
            };
            // The source reads in messages as "chosen from …".
            let endpoint = crate::engine::Endpoint::unix(
                socket,
                "this machine's socket order (DOCKER_HOST, rootful, rootless)",
            );
            let engine = crate::engine::Engine::connect(endpoint, timeouts, "probe")
                .await
                .map_err(|e| e.to_string())?;
            engine.info().await.map_err(|e| e.to_string())
        })
    }

    fn gpus(&self) -> Result<Inventory, GpuError> {
        NvmlSource.inventory()
    }

    fn run_fix(&self, argv: &[&str]) -> Result<String, HostError> {
        // Restarting docker can take a while (containers stop): a longer limit.
        run_cmd(argv, Duration::from_secs(90))
    }

    fn nvidia_smi_list(&self) -> Result<String, HostError> {
        run_cmd(&["nvidia-smi", "-L"], PROBE_TIMEOUT)
    }
}

/// What the machine itself runs, probed on `host` as `doctor` probes it, so that
/// `machine_config` compares the scenario with the machine instead of restating it.
#[derive(Debug, Clone, Default)]
pub struct MachineProbe {
    /// The generator unit: `Some(true)` it exists, `Some(false)` systemd does not know
    /// it, `None` systemd could not be asked (with why in `notes`).
    pub generator_unit: Option<bool>,
    /// The daemon's effective config file and what it sets, when it could be read.
    pub daemon_config: Option<(PathBuf, DaemonConfig)>,
    /// What could not be probed, and why.
    pub notes: Vec<String>,
}

/// The daemon's effective config file (from `docker.service`'s `ExecStart`, else the
/// default `/etc/docker/daemon.json`) and its parsed content; `None` when systemd
/// does not know `docker.service`.
pub fn daemon_config(host: &dyn HostSource) -> Option<(PathBuf, Result<DaemonConfig, String>)> {
    host.systemctl_show("docker.service", &["ExecStart"])
        .ok()
        .map(|t| {
            let path = config_file_from_exec_start(&t)
                .unwrap_or_else(|| PathBuf::from("/etc/docker/daemon.json"));
            let parsed = match host.read_to_string(&path) {
                Ok(text) => parse_daemon_config(&text),
                Err(e) => Err(e.to_string()),
            };
            (path, parsed)
        })
}

/// Probes the generator unit and the daemon's config for `machine_config`.
pub fn probe_machine(host: &dyn HostSource) -> MachineProbe {
    let mut probe = MachineProbe::default();
    // Elsewhere the spec comes from `nvidia-ctk` and no unit is expected: not NixOS is
    // not a difference from the scenario, only something not compared.
    if host.file_info(Path::new("/etc/NIXOS")).is_none() {
        probe
            .notes
            .push("the generator unit (this is not NixOS: no /etc/NIXOS)".into());
    } else {
        match host.systemctl_show(GENERATOR_UNIT, UNIT_PROPERTIES) {
            Ok(text) => probe.generator_unit = Some(!UnitState::parse(&text).absent()),
            Err(e) => probe.notes.push(format!("the generator unit ({e})")),
        }
    }
    match daemon_config(host) {
        Some((path, Ok(cfg))) => probe.daemon_config = Some((path, cfg)),
        Some((path, Err(e))) => probe
            .notes
            .push(format!("the daemon's config {} ({e})", path.display())),
        None => probe
            .notes
            .push("the daemon's config (systemd does not know docker.service)".into()),
    }
    probe
}

/// The daemon's config file from `systemctl show -p ExecStart docker.service`:
/// `--config-file=/nix/store/…-daemon.json` or `--config-file /…`; `None` when the
/// engine runs with the default `/etc/docker/daemon.json`.
pub fn config_file_from_exec_start(text: &str) -> Option<PathBuf> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if let Some(p) = w.strip_prefix("--config-file=") {
            return Some(PathBuf::from(p.trim_end_matches(';')));
        }
        if w == "--config-file" {
            return words.next().map(|p| PathBuf::from(p.trim_end_matches(';')));
        }
    }
    None
}

/// What matters in `daemon.json` for CDI.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DaemonConfig {
    /// Runtimes configured by hand (`runtimes` keys with their `path`).
    pub runtimes: Vec<(String, String)>,
    /// `default-runtime`.
    pub default_runtime: Option<String>,
    /// `features.cdi`.
    pub cdi_feature: Option<bool>,
    /// `cdi-spec-dirs`.
    pub cdi_spec_dirs: Vec<String>,
}

/// Parses `daemon.json`.
pub fn parse_daemon_config(text: &str) -> Result<DaemonConfig, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let runtimes = v
        .get("runtimes")
        .and_then(|r| r.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let path = v
                        .get("path")
                        .and_then(|p| p.as_str())
                        .unwrap_or_default()
                        .to_string();
                    (k.clone(), path)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(DaemonConfig {
        runtimes,
        default_runtime: v
            .get("default-runtime")
            .and_then(|d| d.as_str())
            .map(str::to_string),
        cdi_feature: v
            .get("features")
            .and_then(|f| f.get("cdi"))
            .and_then(|c| c.as_bool()),
        cdi_spec_dirs: v
            .get("cdi-spec-dirs")
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    #[test]
    fn a_command_printing_more_than_a_pipe_holds_finishes() {
        let t = Instant::now();
        let out = run_cmd(
            &["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"],
            Duration::from_secs(20),
        )
        .expect("runs");
        assert_eq!(out.len(), 300_000);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn a_command_past_its_limit_is_stopped_and_named() {
        let t = Instant::now();
        let err = run_cmd(&["sleep", "30"], Duration::from_millis(300)).expect_err("times out");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(err.to_string().contains("no answer within"), "{err}");
        let err = run_cmd(
            &["sh", "-c", "echo broken >&2; exit 3"],
            Duration::from_secs(5),
        )
        .expect_err("fails");
        assert!(err.to_string().contains("broken"), "{err}");
    }

    use super::*;

    #[test]
    fn unit_states_from_systemctl_show() {
        let ok = UnitState::parse(
            "LoadState=loaded\nActiveState=active\nSubState=exited\nResult=success\nExecMainStatus=0\nExecMainExitTimestamp=Thu 2026-11-26 13:20:01 UTC\n",
        );
        assert!(ok.oneshot_ok());
        assert!(ok.describe().contains("exited Thu 2026-11-26"));
        let failed = UnitState::parse(
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nExecMainStatus=1\nExecMainExitTimestamp=\n",
        );
        assert!(!failed.oneshot_ok());
        assert_eq!(failed.exec_main_exit_timestamp, None);
        assert!(failed.describe().contains("result exit-code, status 1"));
        let absent = UnitState::parse("LoadState=not-found\nActiveState=inactive\nSubState=dead\n");
        assert!(absent.absent());
        assert!(!absent.oneshot_ok());
    }

    #[test]
    fn config_file_from_nixos_exec_start() {
        let t = "ExecStart={ path=/nix/store/abc-docker-28.5.2/bin/dockerd ; argv[]=/nix/store/abc-docker-28.5.2/bin/dockerd --config-file=/nix/store/xyz-daemon.json ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }";
        assert_eq!(
            config_file_from_exec_start(t),
            Some(PathBuf::from("/nix/store/xyz-daemon.json"))
        );
        assert_eq!(
            config_file_from_exec_start(
                "argv[]=/usr/bin/dockerd --config-file /etc/d.json -H fd://"
            ),
            Some(PathBuf::from("/etc/d.json"))
        );
        assert_eq!(
            config_file_from_exec_start("argv[]=/usr/bin/dockerd -H fd://"),
            None
        );
    }

    #[test]
    fn daemon_config_pitfalls_parse() {
        let c = parse_daemon_config(
            r#"{"features":{"cdi":true},"runtimes":{"nvidia":{"path":"nvidia-container-runtime","args":[]}},"default-runtime":"nvidia"}"#,
        )
        .expect("parses");
        assert_eq!(c.cdi_feature, Some(true));
        assert_eq!(
            c.runtimes,
            vec![("nvidia".to_string(), "nvidia-container-runtime".to_string())]
        );
        assert_eq!(c.default_runtime.as_deref(), Some("nvidia"));
        assert!(parse_daemon_config("{not json").is_err());
    }
}
