//! Which backend a run uses and which scenarios apply to the machine it checks: the one
//! decision `cdi-harness run --backend auto` and `cargo test` (`tests/scenarios.rs`)
//! share, so that the two can never check different things on the same machine.
//!
//! `auto` means the machine's own engine ([`BackendKind::Host`]) when the NVIDIA driver
//! answers with at least one GPU *and* the default engine is reachable with CDI on;
//! anything less is the simulated backend, with the reason printed, because checking a
//! machine that cannot run a GPU container would only report its absence. Then
//! [`plan`] decides scenario by scenario: a scenario that models another machine (its
//! `applies-to` lacks the place), or declares a GPU count the machine does not have, is
//! skipped with that reason; `count = "auto"` becomes the driver's GPUs.
//!
//! Every probe goes through [`HostSource`], so the choice and the plan are tested with
//! inventories recorded on real machines (1 H100, 8 H100s, MIG) without a GPU.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::engine::EngineInfo;
use crate::gpu::{GpuError, Inventory};
use crate::host::HostSource;
use crate::outcome::BackendKind;
use crate::scenario::{GpuCount, Place, Scenario};

/// The environment variable that overrides the choice (`sim`, `host` or `auto`), for
/// `cargo test`, where there are no flags.
pub const BACKEND_ENV: &str = "CDI_HARNESS_BACKEND";

/// Why a backend could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// `CDI_HARNESS_BACKEND` holds something else than a backend name.
    #[error("{BACKEND_ENV}={value:?} is not a backend: use `sim`, `host` or `auto` (or unset it)")]
    BadOverride {
        /// The value found.
        value: String,
    },
}

/// The backend of a run and why it was chosen.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The backend.
    pub backend: BackendKind,
    /// One sentence for the user: what was found, and how to choose otherwise.
    pub why: String,
    /// The driver's answer, when it was asked (the auto choice and `host` ask it):
    /// [`plan`] needs it for `count = "auto"` and the GPU-count rule.
    pub gpus: Option<Result<Inventory, GpuError>>,
    /// The default engine, when it answered: where it is and whether it runs rootless.
    /// [`plan_for`] skips on a host the scenarios whose default engine is the other kind.
    pub engine: Option<DefaultEngine>,
}

/// The machine's default engine as `docker` would reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultEngine {
    /// Its socket.
    pub socket: PathBuf,
    /// How it was chosen (`DOCKER_HOST`, the rootful socket, the rootless socket).
    pub how: String,
    /// Whether it runs rootless (`docker info`).
    pub rootless: bool,
}

/// `docker info` of the default engine, with where it is.
fn probe_engine(host: &dyn HostSource) -> Result<(String, PathBuf, EngineInfo), String> {
    default_engine_socket(host).and_then(|(how, path)| {
        host.docker_info(&path)
            .map(|info| (how, path.clone(), info))
            .map_err(|e| format!("{}: {e}", path.display()))
    })
}

fn default_engine(probed: &Result<(String, PathBuf, EngineInfo), String>) -> Option<DefaultEngine> {
    probed.as_ref().ok().map(|(how, path, info)| DefaultEngine {
        socket: path.clone(),
        how: how.clone(),
        rootless: info.rootless,
    })
}

/// The engine `host` would reach by default, as `docker` itself chooses it:
/// `DOCKER_HOST`, else the rootful socket when it exists, else the user's rootless one.
/// Returns how it was chosen and the socket path; `Err` for a `DOCKER_HOST` that is not
/// a unix socket (it cannot be probed here).
pub fn default_engine_socket(host: &dyn HostSource) -> Result<(String, PathBuf), String> {
    if let Some(h) = host.env("DOCKER_HOST") {
        return match h.strip_prefix("unix://") {
            Some(p) => Ok(("DOCKER_HOST".to_string(), PathBuf::from(p))),
            None => Err(format!(
                "DOCKER_HOST={h} is not a unix socket, so it was not probed"
            )),
        };
    }
    // The first that exists, else the last (the rootless one: its absence is then what
    // the probe reports).
    let [rootful, rootless] = crate::host::default_sockets(host);
    let (what, path) = if host.file_info(&rootful.1).is_some() {
        rootful
    } else {
        rootless
    };
    Ok((format!("the {what} socket"), path))
}

/// The `auto` choice from what the driver and the default engine answered: `host` only
/// when both are usable, else `sim` with the reason and the override.
pub fn decide(
    gpus: &Result<Inventory, GpuError>,
    engine: &Result<(String, PathBuf, EngineInfo), String>,
) -> (BackendKind, String) {
    let to_host =
        format!("set {BACKEND_ENV}=host (or --backend host) to check this machine anyway");
    let inv = match gpus {
        Ok(inv) if !inv.gpus.is_empty() => inv,
        Ok(_) => {
            return (
                BackendKind::Sim,
                format!("sim: the NVIDIA driver reports no GPU; {to_host}"),
            );
        }
        Err(e) => {
            return (
                BackendKind::Sim,
                format!("sim: no usable NVIDIA driver ({e})"),
            );
        }
    };
    let gpus = format!(
        "{} GPU(s) ({}, driver {})",
        inv.gpus.len(),
        inv.gpus
            .first()
            .map(|g| g.name.as_str())
            .unwrap_or_default(),
        inv.driver_version
    );
    match engine {
        Err(e) => (
            BackendKind::Sim,
            format!("sim: the driver reports {gpus}, but no engine was reached ({e}); {to_host}"),
        ),
        Ok((how, path, info)) if info.cdi_spec_dirs.is_empty() => (
            BackendKind::Sim,
            format!(
                "sim: the driver reports {gpus}, but the engine at {} ({how}, Docker {}) has CDI off (no CDISpecDirs in docker info); {to_host}",
                path.display(),
                info.server_version
            ),
        ),
        Ok((how, path, info)) => (
            BackendKind::Host,
            format!(
                "host: the driver reports {gpus} and the engine at {} ({how}, Docker {}) has CDI on (spec dirs {})",
                path.display(),
                info.server_version,
                info.cdi_spec_dirs.join(", ")
            ),
        ),
    }
}

/// The driver's GPUs: NVML's inventory; where NVML cannot be loaded but `nvidia-smi -L`
/// lists GPUs, that listing (source `nvidia-smi -L`, driver version unknown), so that
/// `count = "auto"` has the driver's answer. The GPU cross-checks still need NVML and
/// say so; NVML present but failing stays an error.
pub fn driver_gpus(host: &dyn HostSource) -> Result<Inventory, GpuError> {
    let nvml = host.gpus();
    let Err(e) = &nvml else {
        return nvml;
    };
    if !e.is_unavailable() {
        return nvml;
    }
    match host.nvidia_smi_list() {
        Ok(text) => {
            let gpus = crate::gpu::parse_smi_list_with_mig(&text);
            if gpus.is_empty() {
                return nvml;
            }
            Ok(Inventory {
                driver_version: "unknown (NVML could not be loaded)".into(),
                cuda_version: None,
                gpus,
                source: "nvidia-smi -L".into(),
                simulated: false,
            })
        }
        Err(_) => nvml,
    }
}

/// Chooses the backend: `value` is `CDI_HARNESS_BACKEND` (or `--backend`) when set;
/// `auto` or nothing probes the machine through `host` ([`decide`]). An explicit `host`
/// still reads the driver, for [`plan`].
pub fn choose(value: Option<&str>, host: &dyn HostSource) -> Result<Choice, SelectError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some("sim") => Ok(Choice {
            backend: BackendKind::Sim,
            why: format!("sim: {BACKEND_ENV}=sim or --backend sim"),
            gpus: None,
            engine: None,
        }),
        Some("host") => Ok(Choice {
            backend: BackendKind::Host,
            why: format!("host: {BACKEND_ENV}=host or --backend host"),
            gpus: Some(driver_gpus(host)),
            engine: default_engine(&probe_engine(host)),
        }),
        None | Some("auto") => {
            let gpus = driver_gpus(host);
            let engine = if matches!(&gpus, Ok(inv) if !inv.gpus.is_empty()) {
                probe_engine(host)
            } else {
                Err("not probed".to_string())
            };
            let (backend, why) = decide(&gpus, &engine);
            Ok(Choice {
                backend,
                why,
                gpus: Some(gpus),
                engine: default_engine(&engine),
            })
        }
        Some(other) => Err(SelectError::BadOverride {
            value: other.to_string(),
        }),
    }
}

/// The scenarios of a run on one machine: each resolved for it, or skipped with why.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every scenario, in the order given; `count = "auto"` resolved where the driver
    /// answered.
    pub scenarios: Vec<Scenario>,
    /// Scenarios whose checks are skipped on this machine, by name, with the reason
    /// (`RunOptions::not_applicable` reports each check as skipped with it).
    pub skipped: BTreeMap<String, String>,
}

impl Plan {
    /// On a host, the skipped scenarios that model other machines and apply on `sim`
    /// (the broken-machine models): what `cargo test` with `CDI_HARNESS_SIM_TOO=1` runs
    /// on the sim backend in the same run, labelled simulated.
    pub fn for_sim_instead(&self) -> Vec<String> {
        self.scenarios
            .iter()
            .filter(|s| self.skipped.contains_key(&s.name))
            .filter(|s| !s.applies_at(Place::Host) && s.applies_at(Place::Sim))
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Decides scenario by scenario what a run at `place` checks, with the driver's answer
/// `gpus` (`None`: not asked, as on `sim`):
/// - a scenario whose `applies-to` lacks `place` is skipped (it models another machine:
///   on a host, a broken one that `sim` and its NixOS VM test build);
/// - `count = "auto"` becomes the driver's GPUs; on a host without an answer the
///   scenario is skipped with the driver's error; in a VM without one it keeps the VM's
///   simulated count;
/// - a fixed count that differs from the driver's is skipped: that is another machine.
pub fn plan(
    scenarios: &[Scenario],
    place: Place,
    gpus: Option<&Result<Inventory, GpuError>>,
) -> Plan {
    plan_for(scenarios, place, gpus, None)
}

/// [`plan`] for a run that knows the machine's default engine (`engine`, from
/// [`Choice::engine`]): on a host, a scenario whose default Docker is rootless where the
/// machine's is rootful (or the other way round) models another machine and is skipped
/// too; in a scenario's own VM that is a failure for `engine_mode` to report, not a skip.
pub fn plan_for(
    scenarios: &[Scenario],
    place: Place,
    gpus: Option<&Result<Inventory, GpuError>>,
    engine: Option<&DefaultEngine>,
) -> Plan {
    let mut out = Plan::default();
    for s in scenarios {
        let mut resolved = s.clone();
        let reason = if !s.applies_at(place) {
            Some(format!(
                "{} does not apply to {}: it models another machine and declares applies-to = [{}]",
                s.name,
                place_words(place),
                s.applies_to
                    .iter()
                    .map(|p| format!("\"{}\"", p.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else if place == Place::Sim {
            None
        } else if let Some(e) =
            engine.filter(|e| place == Place::Host && e.rootless != s.facts.rootless_default)
        {
            let mode = |rootless: bool| if rootless { "rootless" } else { "rootful" };
            Some(format!(
                "{} models a machine whose default Docker is {}; this one's ({}, {}) is {}",
                s.name,
                mode(s.facts.rootless_default),
                e.socket.display(),
                e.how,
                mode(e.rootless)
            ))
        } else {
            match (s.gpus.declared, gpus) {
                (GpuCount::Auto, Some(Ok(inv))) => match s.with_inventory(inv) {
                    Ok(r) => {
                        resolved = r;
                        None
                    }
                    Err(e) => Some(format!("gpus.count = \"auto\": {e}")),
                },
                (GpuCount::Auto, Some(Err(e))) if place == Place::Host => Some(format!(
                    "gpus.count = \"auto\" needs the driver's GPUs, and there are none to count: {e}"
                )),
                (GpuCount::Fixed(n), Some(Ok(inv))) if inv.gpus.len() != n as usize => {
                    Some(format!(
                        "{} models a machine with {n} GPU(s); this one has {} ({}): set gpus.count = \"auto\" to check this machine's GPUs",
                        s.name,
                        inv.gpus.len(),
                        if inv.simulated {
                            "simulated"
                        } else {
                            "reported by the driver"
                        }
                    ))
                }
                _ => None,
            }
        };
        if let Some(r) = reason {
            out.skipped.insert(s.name.clone(), r);
        }
        out.scenarios.push(resolved);
    }
    out
}

fn place_words(place: Place) -> &'static str {
    match place {
        Place::Sim => "the sim backend",
        Place::Vm => "its NixOS VM test",
        Place::Host => "this host",
    }
}

/// The place a run checks: `sim`, or a host (a scenario's NixOS VM when `in_vm`).
pub fn place_of(backend: BackendKind, in_vm: bool) -> Place {
    match backend {
        BackendKind::Sim => Place::Sim,
        BackendKind::Host if in_vm => Place::Vm,
        BackendKind::Host => Place::Host,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::gpu::parse_smi_list_with_mig;
    use crate::testutil::FakeMachine as Machine;

    use crate::testutil::fixture;

    /// The H100 machine, as NVML reported it (tests/fixtures/h100/nvml).
    fn h100() -> Inventory {
        serde_json::from_str(&fixture("h100/nvml/inventory.json")).expect("inventory")
    }

    /// An inventory from a recorded `nvidia-smi -L` (8 H100s, or MIG).
    fn from_smi(rel: &str) -> Inventory {
        Inventory {
            driver_version: "580.159.04".into(),
            cuda_version: None,
            gpus: parse_smi_list_with_mig(&fixture(rel)),
            source: rel.into(),
            simulated: false,
        }
    }

    /// A [`Machine`] whose `nvidia-smi -L` answers (or not).
    struct FakeMachineWithSmi {
        inner: Machine,
        smi: Option<String>,
    }

    impl HostSource for FakeMachineWithSmi {
        fn systemctl_show(&self, u: &str, p: &[&str]) -> Result<String, crate::host::HostError> {
            self.inner.systemctl_show(u, p)
        }
        fn journal_tail(&self, u: &str, n: u32) -> Result<String, crate::host::HostError> {
            self.inner.journal_tail(u, n)
        }
        fn file_info(&self, p: &Path) -> Option<crate::host::FileInfo> {
            self.inner.file_info(p)
        }
        fn list_dir(&self, p: &Path) -> Vec<PathBuf> {
            self.inner.list_dir(p)
        }
        fn read_to_string(&self, p: &Path) -> Result<String, crate::host::HostError> {
            self.inner.read_to_string(p)
        }
        fn boot_time(&self) -> Option<std::time::SystemTime> {
            None
        }
        fn user(&self) -> crate::host::UserInfo {
            self.inner.user()
        }
        fn env(&self, k: &str) -> Option<String> {
            self.inner.env(k)
        }
        fn docker_info(&self, s: &Path) -> Result<EngineInfo, String> {
            self.inner.docker_info(s)
        }
        fn gpus(&self) -> Result<Inventory, GpuError> {
            self.inner.gpus()
        }
        fn run_fix(&self, a: &[&str]) -> Result<String, crate::host::HostError> {
            self.inner.run_fix(a)
        }
        fn nvidia_smi_list(&self) -> Result<String, crate::host::HostError> {
            self.smi.clone().ok_or(crate::host::HostError::Missing {
                command: "nvidia-smi".into(),
                message: "not installed".into(),
            })
        }
    }

    fn no_nvml() -> Result<Inventory, GpuError> {
        Err(GpuError::Unavailable {
            reason: "libnvidia-ml.so.1: cannot open shared object file".into(),
        })
    }

    #[test]
    fn auto_is_host_with_a_driver_and_a_cdi_engine() {
        for inv in [
            h100(),
            from_smi("gpu/h100x8-nvidia-smi-L.txt"),
            from_smi("gpu/a100-mig-nvidia-smi-L.txt"),
        ] {
            let n = inv.gpus.len();
            let c = choose(None, &Machine::new(Ok(inv), true)).expect("chosen");
            assert_eq!(c.backend, BackendKind::Host, "{}", c.why);
            assert!(c.why.contains(&format!("{n} GPU(s)")), "{}", c.why);
            assert!(c.why.contains("/run/docker.sock"), "{}", c.why);
            assert!(matches!(c.gpus, Some(Ok(_))));
        }
    }

    #[test]
    fn auto_is_sim_without_driver_engine_or_cdi_and_says_why() {
        let c = choose(Some("auto"), &Machine::new(no_nvml(), true)).expect("chosen");
        assert_eq!(c.backend, BackendKind::Sim);
        assert!(c.why.contains("no usable NVIDIA driver"), "{}", c.why);

        let c = choose(None, &Machine::new(Ok(h100()), false)).expect("chosen");
        assert_eq!(c.backend, BackendKind::Sim);
        assert!(c.why.contains("CDI off"), "{}", c.why);
        assert!(c.why.contains("CDI_HARNESS_BACKEND=host"), "{}", c.why);

        let mut m = Machine::new(Ok(h100()), true);
        m.sockets.clear();
        let c = choose(None, &m).expect("chosen");
        assert_eq!(c.backend, BackendKind::Sim);
        assert!(c.why.contains("no engine was reached"), "{}", c.why);
        assert!(c.why.contains("/run/user/1000/docker.sock"), "{}", c.why);

        let mut empty = h100();
        empty.gpus.clear();
        let c = choose(None, &Machine::new(Ok(empty), true)).expect("chosen");
        assert_eq!(c.backend, BackendKind::Sim);
        assert!(c.why.contains("no GPU"), "{}", c.why);
    }

    #[test]
    fn without_nvml_the_smi_listing_counts_the_gpus() {
        let mut m = FakeMachineWithSmi {
            inner: Machine::new(no_nvml(), true),
            smi: Some(fixture("gpu/h100x8-nvidia-smi-L.txt")),
        };
        let inv = driver_gpus(&m).expect("listed");
        assert_eq!(inv.gpus.len(), 8);
        assert_eq!(inv.source, "nvidia-smi -L");
        let c = choose(None, &m).expect("chosen");
        assert_eq!(c.backend, BackendKind::Host, "{}", c.why);
        m.smi = None;
        assert!(driver_gpus(&m).is_err());
        // NVML present but failing is not papered over by the listing.
        m.inner.gpus = Err(GpuError::Call {
            call: "nvmlDeviceGetCount".into(),
            message: "Unknown Error".into(),
        });
        m.smi = Some(fixture("gpu/h100x8-nvidia-smi-L.txt"));
        assert!(driver_gpus(&m).is_err());
    }

    #[test]
    fn auto_follows_docker_host() {
        let mut m = Machine::new(Ok(h100()), true);
        m.sockets = vec![PathBuf::from("/run/user/1000/docker.sock")];
        m.env.insert(
            "DOCKER_HOST".into(),
            "unix:///run/user/1000/docker.sock".into(),
        );
        let c = choose(None, &m).expect("chosen");
        assert_eq!(c.backend, BackendKind::Host, "{}", c.why);
        assert!(c.why.contains("DOCKER_HOST"), "{}", c.why);
        m.env
            .insert("DOCKER_HOST".into(), "tcp://10.0.0.1:2375".into());
        let c = choose(None, &m).expect("chosen");
        assert_eq!(c.backend, BackendKind::Sim);
        assert!(c.why.contains("not a unix socket"), "{}", c.why);
    }

    #[test]
    fn the_override_wins_and_a_bad_one_is_an_error() {
        let m = Machine::new(Ok(h100()), true);
        assert_eq!(
            choose(Some("sim"), &m).expect("chosen").backend,
            BackendKind::Sim
        );
        let m = Machine::new(no_nvml(), false);
        let c = choose(Some("host"), &m).expect("chosen");
        assert_eq!(c.backend, BackendKind::Host);
        assert!(matches!(c.gpus, Some(Err(_))));
        let e = choose(Some("gpu"), &m).expect_err("rejected");
        assert!(e.to_string().contains("use `sim`, `host` or `auto`"), "{e}");
    }

    fn scenarios() -> Vec<Scenario> {
        crate::scenario::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios"))
            .expect("the shipped scenarios load")
    }

    const BROKEN: [&str; 6] = [
        "spec-missing",
        "cdi-disabled",
        "conflicting-specs",
        "legacy-runtime",
        "stale-mount",
        "failing-hook",
    ];

    #[test]
    fn on_a_one_gpu_host_broken_models_and_multi_gpu_are_skipped() {
        let all = scenarios();
        let p = plan(&all, Place::Host, Some(&Ok(h100())));
        for name in BROKEN {
            let why = p.skipped.get(name).map(String::as_str).unwrap_or_default();
            assert!(
                why.contains("applies-to = [\"sim\", \"vm\"]"),
                "{name}: {why}"
            );
        }
        let multi = p.skipped.get("multi-gpu").cloned().unwrap_or_default();
        assert!(multi.contains("4 GPU(s); this one has 1"), "{multi}");
        // The broken models (not multi-gpu, a healthy machine) are what sim may run instead.
        let mut instead = p.for_sim_instead();
        instead.sort();
        let mut broken = BROKEN.map(String::from).to_vec();
        broken.sort();
        assert_eq!(instead, broken);
        for name in ["seed", "rootless-default"] {
            assert!(!p.skipped.contains_key(name), "{name}: {:?}", p.skipped);
            let s = p
                .scenarios
                .iter()
                .find(|s| s.name == name)
                .expect("planned");
            assert_eq!(s.gpus.count, 1);
            let devs: Vec<String> = s.expected_devices.iter().map(|d| d.to_string()).collect();
            assert_eq!(devs, ["nvidia.com/gpu=0", "nvidia.com/gpu=all"]);
            assert!(s.check_names().contains(&"device_0".to_string()));
            assert!(!s.check_names().contains(&"device_1".to_string()));
        }
    }

    #[test]
    fn the_default_engines_mode_decides_between_seed_and_rootless_default_on_a_host() {
        let all = scenarios();
        let inv = Ok(h100());
        let rootful = DefaultEngine {
            socket: PathBuf::from("/run/docker.sock"),
            how: "the rootful socket".into(),
            rootless: false,
        };
        let p = plan_for(&all, Place::Host, Some(&inv), Some(&rootful));
        assert!(!p.skipped.contains_key("seed"), "{:?}", p.skipped);
        let why = p
            .skipped
            .get("rootless-default")
            .cloned()
            .unwrap_or_default();
        assert!(
            why.contains("default Docker is rootless; this one's (/run/docker.sock, the rootful socket) is rootful"),
            "{why}"
        );
        let rootless = DefaultEngine {
            rootless: true,
            ..rootful
        };
        let p = plan_for(&all, Place::Host, Some(&inv), Some(&rootless));
        assert!(p.skipped.contains_key("seed"));
        assert!(!p.skipped.contains_key("rootless-default"));
        // In a scenario's own VM a mismatch is engine_mode's failure, not a skip.
        let p = plan_for(&all, Place::Vm, Some(&inv), Some(&rootless));
        assert!(!p.skipped.contains_key("seed"));
    }

    #[test]
    fn choose_reports_the_default_engine() {
        let c = choose(Some("host"), &Machine::new(Ok(h100()), true)).expect("chosen");
        let e = c.engine.expect("probed");
        assert_eq!(e.socket, PathBuf::from("/run/docker.sock"));
        assert!(!e.rootless);
        let mut m = Machine::new(Ok(h100()), true);
        m.sockets.clear();
        assert!(choose(None, &m).expect("chosen").engine.is_none());
    }

    #[test]
    fn on_an_eight_gpu_host_auto_is_eight_and_four_is_another_machine() {
        let inv = from_smi("gpu/h100x8-nvidia-smi-L.txt");
        let p = plan(&scenarios(), Place::Host, Some(&Ok(inv)));
        let seed = p.scenarios.iter().find(|s| s.name == "seed").expect("seed");
        assert_eq!(seed.gpus.count, 8);
        assert_eq!(seed.expected_devices.len(), 9);
        assert!(seed.check_names().contains(&"device_7".to_string()));
        assert!(
            p.skipped
                .get("multi-gpu")
                .is_some_and(|w| w.contains("this one has 8"))
        );
    }

    #[test]
    fn mig_devices_and_uuid_names_follow_the_inventory() {
        let inv = from_smi("gpu/a100-mig-nvidia-smi-L.txt");
        let mig = inv.gpus[0].mig_devices.len();
        assert!(mig > 0);
        let seed = scenarios()
            .into_iter()
            .find(|s| s.name == "seed")
            .expect("seed");
        let r = seed.with_inventory(&inv).expect("resolved");
        let devs: Vec<String> = r.expected_devices.iter().map(|d| d.to_string()).collect();
        assert_eq!(devs[0], "nvidia.com/gpu=0");
        assert_eq!(devs[1], "nvidia.com/gpu=0:0");
        assert_eq!(devs.len(), inv.gpus.len() + mig + 1);
        assert_eq!(devs.last().map(String::as_str), Some("nvidia.com/gpu=all"));

        let by_uuid = crate::scenario::devices_for_inventory(&inv, "uuid").expect("uuid names");
        assert_eq!(
            by_uuid[0].to_string(),
            format!("nvidia.com/gpu={}", inv.gpus[0].uuid)
        );
        assert!(by_uuid[1].to_string().contains("MIG-"));
        assert!(crate::scenario::devices_for_inventory(&inv, "serial").is_err());
    }

    #[test]
    fn without_a_driver_auto_is_skipped_on_a_host_and_kept_in_a_vm() {
        let all = scenarios();
        let p = plan(&all, Place::Host, Some(&no_nvml()));
        assert!(
            p.skipped
                .get("seed")
                .is_some_and(|w| w.contains("needs the driver's GPUs")),
            "{:?}",
            p.skipped
        );
        // A fixed count without a driver runs: its GPU checks say why they skip.
        assert!(!p.skipped.contains_key("multi-gpu"));

        let p = plan(&all, Place::Vm, Some(&no_nvml()));
        assert!(!p.skipped.contains_key("seed"));
        assert!(!p.skipped.contains_key("spec-missing"), "{:?}", p.skipped);
        let seed = p.scenarios.iter().find(|s| s.name == "seed").expect("seed");
        assert_eq!(seed.gpus.count, crate::scenario::SIM_AUTO_GPU_COUNT);
    }

    #[test]
    fn on_sim_every_shipped_scenario_applies_with_the_sim_count() {
        let p = plan(&scenarios(), Place::Sim, None);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let seed = p.scenarios.iter().find(|s| s.name == "seed").expect("seed");
        assert_eq!(seed.gpus.count, crate::scenario::SIM_AUTO_GPU_COUNT);
    }
}
